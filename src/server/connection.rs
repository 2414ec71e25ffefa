//! One client connection: read size-prefixed frames within the limits and timeouts,
//! hand each to the Kafka dispatcher, write replies in request order.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, warn};

use crate::kafka::{self, AuthState, Broker, Reply, Session};

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("client closed the connection")]
    Eof,
    #[error("frame of {0} bytes exceeds max_request_bytes {1}")]
    TooLarge(i64, usize),
    #[error("truncated frame: connection closed after {got} of {want} bytes")]
    Truncated { got: usize, want: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("server is shutting down")]
    Closed,
}

/// Serves one connection until the client leaves, breaks a rule, or the server stops.
pub async fn serve<S>(
    stream: S,
    broker: &Broker,
    mut session: Session,
    auth_deadline: Instant,
    inflight: &Semaphore,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufStream::with_capacity(64 * 1024, 16 * 1024, stream);
    let idle = Duration::from_secs(broker.limits.idle_timeout_secs);
    loop {
        // Before authentication only small SASL requests are expected (Kafka's
        // sasl.server.max.receive.size is 512 KiB too).
        let (deadline, max_frame) = match session.auth {
            AuthState::Authenticated(_) => (Instant::now() + idle, broker.limits.max_request_bytes),
            _ => (auth_deadline, broker.limits.max_request_bytes.min(MAX_UNAUTHENTICATED_FRAME)),
        };
        let frame = tokio::select! {
            read = timeout_at(deadline, read_frame(&mut stream, max_frame, inflight)) => read,
            _ = shutdown.changed() => {
                debug!(peer = %session.peer, "server shutting down; closing idle connection");
                return;
            }
        };
        // `_held` keeps the request's bytes counted as in flight until it is answered.
        let (frame, _held, started) = match frame {
            Ok(Ok(read)) => read,
            Ok(Err(FrameError::Eof)) => {
                debug!(peer = %session.peer, "client disconnected");
                return;
            }
            Ok(Err(e)) => {
                warn!(peer = %session.peer, state = session.auth.name(), error = %e, "closing connection");
                return;
            }
            Err(_) => {
                let what = if matches!(session.auth, AuthState::Authenticated(_)) {
                    "idle timeout"
                } else {
                    "authentication not completed in time"
                };
                info!(peer = %session.peer, reason = what, "closing connection");
                return;
            }
        };
        let (api, read) = (kafka::api_name(&session, &frame), started.elapsed());
        let started = std::time::Instant::now();
        match kafka::dispatch(broker, &mut session, frame).await {
            Reply::Frame(bytes) => {
                if let Err(e) = write_frame(&mut stream, &bytes).await {
                    debug!(peer = %session.peer, error = %e, "write failed");
                    return;
                }
                broker.metrics.request_handled(api, read, started.elapsed());
            }
            Reply::Nothing => broker.metrics.request_handled(api, read, started.elapsed()),
            Reply::FrameThenClose(bytes, reason) => {
                let _ = write_frame(&mut stream, &bytes).await;
                warn!(peer = %session.peer, reason = reason.as_str(), "closing connection");
                let _ = stream.shutdown().await;
                return;
            }
            Reply::Close(reason) => {
                warn!(peer = %session.peer, reason = reason.as_str(), "closing connection");
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// Largest frame accepted before SASL authentication completes.
const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

/// Size of one in-flight permit.
const PERMIT_BYTES: usize = 1024;

/// Permits for a total in-flight budget of `bytes`.
pub fn inflight_permits(bytes: usize) -> usize {
    (bytes / PERMIT_BYTES).clamp(1, Semaphore::MAX_PERMITS)
}

/// Reads one `int32 size` + payload frame; returns it, its in-flight permits and when its
/// size was read. Before the payload is read, its size is taken
/// from the server-wide in-flight budget (waiting while other connections hold it), and
/// the buffer grows only as bytes arrive, so a client cannot make the server allocate
/// what it has not sent.
async fn read_frame<'a, S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
    inflight: &'a Semaphore,
) -> Result<(Bytes, SemaphorePermit<'a>, std::time::Instant), FrameError> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Eof),
        Err(e) => return Err(e.into()),
    }
    // The request's time in the server starts when its first bytes are read.
    let started = std::time::Instant::now();
    let size = i32::from_be_bytes(size);
    let want = usize::try_from(size).map_err(|_| FrameError::TooLarge(size.into(), max))?;
    if want > max {
        return Err(FrameError::TooLarge(size.into(), max));
    }
    let permits = u32::try_from(want.div_ceil(PERMIT_BYTES).max(1)).unwrap_or(u32::MAX);
    let held = inflight.acquire_many(permits).await.map_err(|_| FrameError::Closed)?;
    let mut buf = BytesMut::with_capacity(want.min(64 * 1024));
    while buf.len() < want {
        buf.reserve((want - buf.len()).min(1024 * 1024));
        let room = want - buf.len();
        let n = (&mut *stream).take(room as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(FrameError::Truncated { got: buf.len(), want });
        }
    }
    Ok((buf.freeze(), held, started))
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(payload.len() as u32).to_be_bytes()).await?;
    stream.write_all(payload).await?;
    stream.flush().await
}
