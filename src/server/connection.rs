//! One client connection: read size-prefixed frames within the limits and timeouts,
//! hand each to the Kafka dispatcher, write replies in request order.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::sync::watch;
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
}

/// Serves one connection until the client leaves, breaks a rule, or the server stops.
pub async fn serve<S>(stream: S, broker: &Broker, mut session: Session, auth_deadline: Instant, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufStream::with_capacity(64 * 1024, 16 * 1024, stream);
    let idle = Duration::from_secs(broker.limits.idle_timeout_secs);
    loop {
        let deadline = match session.auth {
            AuthState::Authenticated(_) => Instant::now() + idle,
            _ => auth_deadline,
        };
        let frame = tokio::select! {
            read = timeout_at(deadline, read_frame(&mut stream, broker.limits.max_request_bytes)) => read,
            _ = shutdown.changed() => {
                debug!(peer = %session.peer, "server shutting down; closing idle connection");
                return;
            }
        };
        let frame = match frame {
            Ok(Ok(frame)) => frame,
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
        match kafka::dispatch(broker, &mut session, frame).await {
            Reply::Frame(bytes) => {
                if let Err(e) = write_frame(&mut stream, &bytes).await {
                    debug!(peer = %session.peer, error = %e, "write failed");
                    return;
                }
            }
            Reply::Nothing => {}
            Reply::FrameThenClose(bytes, reason) => {
                let _ = write_frame(&mut stream, &bytes).await;
                warn!(peer = %session.peer, %reason, "closing connection");
                let _ = stream.shutdown().await;
                return;
            }
            Reply::Close(reason) => {
                warn!(peer = %session.peer, %reason, "closing connection");
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// Reads one `int32 size` + payload frame, growing the buffer only as bytes arrive so a
/// client cannot make the server allocate what it has not sent.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> Result<Bytes, FrameError> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Eof),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size);
    let want = usize::try_from(size).map_err(|_| FrameError::TooLarge(size.into(), max))?;
    if want > max {
        return Err(FrameError::TooLarge(size.into(), max));
    }
    let mut buf = BytesMut::with_capacity(want.min(64 * 1024));
    while buf.len() < want {
        buf.reserve((want - buf.len()).min(1024 * 1024));
        let room = want - buf.len();
        let n = (&mut *stream).take(room as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(FrameError::Truncated { got: buf.len(), want });
        }
    }
    Ok(buf.freeze())
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(payload.len() as u32).to_be_bytes()).await?;
    stream.write_all(payload).await?;
    stream.flush().await
}
