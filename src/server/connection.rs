//! One client connection: read size-prefixed frames within the limits and timeouts,
//! hand each to the Kafka dispatcher, write replies in request order.

use std::time::Duration;

use bytes::Bytes;
use std::collections::VecDeque;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadHalf};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use super::budget::{Budget, Claim};
use super::frames::{FrameBuffer, FrameBuffers, Loan, MIN_FRAME};
use super::logins::PendingLogin;
use crate::config::MAX_UNAUTHENTICATED_FRAME;
use crate::kafka::{self, AuthState, Broker, Reply, Session};

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("client closed the connection")]
    Eof,
    #[error("no request within the timeout")]
    Idle,
    #[error("frame of {0} bytes exceeds max_request_bytes {1}")]
    TooLarge(i64, usize),
    #[error("truncated frame: connection closed after {got} of {want} bytes")]
    Truncated { got: usize, want: usize },
    #[error("request not received in time: {got} of {want} bytes after {secs} s ({what})")]
    Slow { got: usize, want: usize, secs: u64, what: &'static str },
    #[error("request starved of in-flight budget: waited until its deadline ({secs} s, {what}) with {got} of {want} bytes read")]
    Starved { got: usize, want: usize, secs: u64, what: &'static str },
    #[error("server shutting down")]
    Shutdown,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The budgets request bytes are counted against while they are held (received and not
/// yet answered).
pub struct Budgets {
    /// Requests of authenticated connections (`max_inflight_bytes`).
    pub inflight: Budget,
    /// Requests read before SASL authentication completes
    /// (`max_unauthenticated_inflight_bytes`): a pool of its own, so connections that never
    /// authenticate cannot take what producers need.
    pub unauthenticated: Budget,
    /// Buffers of answered large frames, reused by the next ones.
    pub frames: FrameBuffers,
}

impl Budgets {
    pub fn new(limits: &crate::config::Limits) -> Self {
        Self {
            inflight: Budget::new(limits.max_inflight_bytes),
            unauthenticated: Budget::new(limits.max_unauthenticated_inflight_bytes),
            frames: FrameBuffers::default(),
        }
    }
}

/// How a connection ended, for its close log line.
#[derive(Debug, Default)]
pub struct Summary {
    /// Requests read and dispatched.
    pub requests: u64,
    /// Bytes of request frames received (size prefixes included, after TLS).
    pub bytes_received: u64,
    /// Bytes of response frames written.
    pub bytes_sent: u64,
    /// Why it ended.
    pub reason: String,
    /// Whether the reason is a fault of the client or the server (logged as a warning), not
    /// an ordinary end (the client left, idle timeout, shutdown).
    pub abnormal: bool,
}

impl Summary {
    fn end(mut self, reason: impl Into<String>, abnormal: bool) -> Self {
        self.reason = reason.into();
        self.abnormal = abnormal;
        self
    }
}

/// The `protocol` label of a listener.
pub fn protocol_label(p: crate::config::SecurityProtocol) -> &'static str {
    use crate::config::SecurityProtocol::*;
    match p {
        Plaintext => "PLAINTEXT",
        Ssl => "SSL",
        SaslPlaintext => "SASL_PLAINTEXT",
        SaslSsl => "SASL_SSL",
    }
}

/// Serves one connection until the client leaves, breaks a rule, or the server stops;
/// tells `on_close` what it did and why it ended, before the client can see it end.
///
/// Requests are read and dispatched one after another, each in its turn (a Produce
/// request's logs are queued in storage before the next request is read, so storage keeps
/// them in the order sent), but a Produce that then waits for storage does not hold up the
/// connection: its answer is awaited while the next requests are read and started, up to
/// `max_pipelined_requests` requests and `max_pipelined_bytes` of their bytes. Answers are
/// written in request order.
#[allow(clippy::too_many_arguments)]
pub async fn serve<S>(
    stream: S,
    broker: &Broker,
    session: &mut Session,
    auth_deadline: Instant,
    budgets: &Budgets,
    mut login: Option<PendingLogin>,
    mut shutdown: watch::Receiver<bool>,
    on_close: &(dyn Fn(&Session, &Summary) + Sync),
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let protocol = protocol_label(session.advertised.protocol);
    let mut summary = Summary::default();
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = Some(BufReader::with_capacity(64 * 1024, read_half));
    let mut writer = BufWriter::with_capacity(16 * 1024, write_half);
    let limits = &*broker.limits();
    let request_timeout = Duration::from_secs(limits.request_timeout_secs);
    let mut queue: VecDeque<InFlight<'_>> = VecDeque::new();
    let mut reading: Option<ReadFuture<'_, S>> = None;
    // Why no more requests are read; the connection ends once the queue is answered.
    let mut closing: Option<Stop> = None;
    loop {
        let authenticated = matches!(session.auth, AuthState::Authenticated(_));
        if authenticated {
            // No longer counted among its address's unauthenticated connections.
            drop(login.take());
        }
        let queued_bytes: usize = queue.iter().map(|f| f.bytes).sum();
        // Before authentication each request is answered before the next is read (the
        // next one's limits depend on the answer).
        let room = if authenticated {
            queue.len() < limits.max_pipelined_requests.max(1) && queued_bytes < limits.max_pipelined_bytes.max(1)
        } else {
            queue.is_empty()
        };
        if reading.is_none() && closing.is_none() && room {
            if let Some(r) = reader.take() {
                let throttled = session.throttled_until.take();
                reading = Some(Box::pin(read_request(r, authenticated, auth_deadline, throttled, limits, budgets, shutdown.clone())));
            }
        }
        if queue.is_empty() && reading.is_none() {
            if let Some(stop) = closing.take() {
                let (reason, abnormal) = stop.reason(authenticated);
                // Logged before the client can see the end of the connection.
                on_close(session, &summary.end(reason, abnormal));
                if matches!(stop, Stop::Shutdown) {
                    close_gracefully(&mut writer, reader.take()).await;
                }
                return;
            }
        }
        tokio::select! {
            biased;
            reply = next_reply(&mut queue), if !queue.is_empty() => {
                let Some(done) = queue.pop_front() else { continue };
                let reply = match reply {
                    Reply::Later(_) => Reply::Close("a deferred answer deferred again".into()),
                    reply => reply,
                };
                match reply {
                    Reply::Frame(bytes) => {
                        if let Err(e) = write_frame(&mut writer, &bytes, request_timeout).await {
                            let timed_out = e.kind() == std::io::ErrorKind::TimedOut;
                            on_close(session, &summary.end(format!("write failed: {e}"), timed_out));
                            return;
                        }
                        summary.bytes_sent += 4 + bytes.len() as u64;
                        broker.metrics.request_handled(done.api, done.read, done.started.elapsed());
                    }
                    Reply::Nothing => broker.metrics.request_handled(done.api, done.read, done.started.elapsed()),
                    Reply::FrameThenClose(bytes, reason) => {
                        if write_frame(&mut writer, &bytes, request_timeout).await.is_ok() {
                            summary.bytes_sent += 4 + bytes.len() as u64;
                        }
                        on_close(session, &summary.end(reason, true));
                        let _ = tokio::time::timeout(request_timeout, writer.shutdown()).await;
                        return;
                    }
                    Reply::Close(reason) => {
                        on_close(session, &summary.end(reason, true));
                        let _ = tokio::time::timeout(request_timeout, writer.shutdown()).await;
                        return;
                    }
                    Reply::Later(_) => unreachable!("replaced above"),
                }
                // The request's budget is released once it is answered, and its buffer
                // kept for the next large request if nothing refers to it any more.
                if let Some((frame, lent)) = done.frame {
                    budgets.frames.give_back(frame, lent);
                }
            }
            (r, read) = async { reading.as_mut().expect("only polled while reading").await }, if reading.is_some() => {
                reader = Some(r);
                reading = None;
                let (frame, lent, held, started) = match read {
                    Ok(read) => read,
                    Err(e) => {
                        closing.get_or_insert(Stop::Read(e));
                        continue;
                    }
                };
                let (api, read) = (kafka::api_name(session, &frame), started.elapsed());
                let bytes = frame.len();
                // Only large frames borrow kept buffers or are kept (see `FrameBuffers`).
                let kept = (bytes >= MIN_FRAME).then(|| (frame.clone(), lent));
                summary.requests += 1;
                summary.bytes_received += 4 + bytes as u64;
                broker.metrics.received(protocol, 4 + bytes as u64);
                let started = std::time::Instant::now();
                let reply = match kafka::dispatch(broker, session, frame).await {
                    Reply::Later(answer) => Pending::Spawned(tokio::spawn(answer)),
                    reply => Pending::Ready(Some(reply)),
                };
                // `held` keeps the request's bytes counted as in flight until it is
                // answered (its answer, as large as a Metadata request that names many
                // topics, is memory too); an answer the client does not take in time
                // closes the connection.
                queue.push_back(InFlight { reply, _held: held, frame: kept, bytes, api, read, started });
            }
            _ = shutdown.changed(), if closing.is_none() => {
                // No new request is read: one waited for ends at once (see read_request),
                // one already arriving is read to its end. Every request read is answered.
                closing = Some(Stop::Shutdown);
            }
        }
    }
}

/// A request read and dispatched, waiting for its answer to be written.
struct InFlight<'a> {
    reply: Pending,
    /// The request's in-flight budget, released when the answer is written.
    _held: Claim<'a>,
    /// The frame of a large request and the loan of its buffer (see [`FrameBuffers`]),
    /// given back once it is answered.
    frame: Option<(Bytes, Option<Loan<'a>>)>,
    bytes: usize,
    api: &'static str,
    /// How long the request took to arrive.
    read: Duration,
    /// When it had arrived completely.
    started: std::time::Instant,
}

/// An answer: there already, or to come from a task.
enum Pending {
    Ready(Option<Reply>),
    Spawned(tokio::task::JoinHandle<Reply>),
}

/// The answer of the oldest request (cancel safe: nothing is taken until it is there).
async fn next_reply(queue: &mut VecDeque<InFlight<'_>>) -> Reply {
    let Some(head) = queue.front_mut() else {
        return std::future::pending().await;
    };
    match &mut head.reply {
        Pending::Ready(reply) => reply.take().unwrap_or_else(|| Reply::Close("answer taken twice".into())),
        Pending::Spawned(task) => match task.await {
            Ok(reply) => reply,
            Err(e) => Reply::Close(format!("request handler failed: {e}")),
        },
    }
}

/// Why a connection stops reading requests.
enum Stop {
    Read(FrameError),
    Shutdown,
}

impl Stop {
    /// The close reason, and whether it is abnormal.
    fn reason(&self, authenticated: bool) -> (String, bool) {
        match self {
            Stop::Shutdown => ("server shutting down".into(), false),
            Stop::Read(FrameError::Eof) => ("client disconnected".into(), false),
            Stop::Read(FrameError::Shutdown) => ("server shutting down".into(), false),
            Stop::Read(FrameError::Idle) if authenticated => ("idle timeout".into(), false),
            Stop::Read(FrameError::Idle) => ("authentication not completed in time".into(), true),
            Stop::Read(e) => (e.to_string(), true),
        }
    }
}

type Reader<S> = BufReader<ReadHalf<S>>;

/// How long a connection closed by the server's shutdown waits for its client to close too.
const LINGER: Duration = Duration::from_secs(2);

/// Ends a connection whose answers are all written without losing them: a FIN after the
/// last answer, then whatever the client still sends is read and dropped until it closes
/// its side (or [`LINGER`] passes). Closing a socket with unread bytes would make the
/// kernel reset it, discarding answers it has not yet delivered.
async fn close_gracefully<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(writer: &mut W, reader: Option<R>) {
    let _ = tokio::time::timeout(LINGER, writer.shutdown()).await;
    let Some(mut reader) = reader else { return };
    let mut sink = vec![0u8; 8192];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = reader.read(&mut sink).await {}
    })
    .await;
}

/// A request read: its frame, the loan of its buffer, its budget and when its first bytes
/// were read.
type Read<'a> = (Bytes, Option<Loan<'a>>, Claim<'a>, std::time::Instant);

/// The reading of one request: gives the reader back with the frame, its budget and when
/// its first bytes were read.
type ReadFuture<'a, S> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Reader<S>, Result<Read<'a>, FrameError>)> + Send + 'a>,
>;

/// Reads the next request with the limits of the connection's state: before
/// authentication only small SASL requests are expected, their bytes come from the small
/// pre-authentication pool and the whole exchange must end by the auth deadline;
/// afterwards the next request may take `idle_timeout_secs` to start, and each must then
/// arrive within `request_timeout_secs` of its first byte.
async fn read_request<'a, S: AsyncRead + Send + Unpin>(
    mut reader: Reader<S>,
    authenticated: bool,
    auth_deadline: Instant,
    throttled_until: Option<Instant>,
    limits: &'a crate::config::Limits,
    budgets: &'a Budgets,
    mut shutdown: watch::Receiver<bool>,
) -> (Reader<S>, Result<Read<'a>, FrameError>) {
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let request_timeout = Duration::from_secs(limits.request_timeout_secs);
    let (wait_until, max_frame, pool, free) = if authenticated {
        (Instant::now() + idle, limits.max_request_bytes, &budgets.inflight, 0)
    } else {
        let max = limits.max_request_bytes.min(MAX_UNAUTHENTICATED_FRAME);
        (auth_deadline, max, &budgets.unauthenticated, UNAUTHENTICATED_FREE_FRAME)
    };
    let read = async {
        // Over quota: nothing more is read until the throttle time has passed. Then wait
        // for the first byte of the next request. A shutdown ends either wait.
        let stopping = async {
            if shutdown.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let first = tokio::select! {
            first = async {
                let mut wait_until = wait_until;
                if let Some(until) = throttled_until {
                    tokio::time::sleep_until(until).await;
                    if authenticated {
                        wait_until = Instant::now() + idle;
                    }
                }
                timeout_at(wait_until, reader.fill_buf()).await
            } => first,
            () = stopping => return Err(FrameError::Shutdown),
        };
        match first {
            Err(_) => return Err(FrameError::Idle),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok([])) => return Err(FrameError::Eof),
            Ok(Ok(_)) => {}
        }
        // The request's time in the server starts when its first bytes are read.
        let started = std::time::Instant::now();
        let by_request = Instant::now() + request_timeout;
        let deadline = if authenticated {
            Deadline { at: by_request, secs: limits.request_timeout_secs, what: "request_timeout_secs" }
        } else if auth_deadline < by_request {
            Deadline { at: auth_deadline, secs: limits.auth_timeout_secs, what: "auth_timeout_secs" }
        } else {
            Deadline { at: by_request, secs: limits.request_timeout_secs, what: "request_timeout_secs" }
        };
        // Kept buffers go to authenticated connections only: one that never logs in
        // cannot hold them.
        let buffer = |want| if authenticated { budgets.frames.take(want) } else { FrameBuffer::default() };
        read_frame(&mut reader, buffer, max_frame, pool, free, &deadline)
            .await
            .map(|(frame, lent, held)| (frame, lent, held, started))
    };
    let result = read.await;
    (reader, result)
}

/// When the request being read must be complete, and which setting said so.
struct Deadline {
    at: Instant,
    secs: u64,
    what: &'static str,
}

/// Before authentication, frames up to this size (every real ApiVersions and SASL
/// request) are read without the pre-authentication pool, so sockets that drain that pool
/// cannot stop clients from logging in. Each connection holds at most one such frame, so
/// this adds at most `max_connections` times this to memory, like the read buffer.
const UNAUTHENTICATED_FREE_FRAME: usize = 16 * 1024;

/// Budget is taken at most this much ahead of the bytes actually received, so a frame's
/// declared size reserves nothing.
const BUDGET_CHUNK_BYTES: usize = 64 * 1024;

/// Reads one `int32 size` + payload frame by `deadline` into the buffer `buffer` gives for
/// its size; returns it with the budget it holds. The budget grows with the bytes
/// received, a chunk at a time, taken from `pool` before each chunk is read (waiting while
/// it is spent, see [`Budget`]), and the buffer grows only as bytes arrive: a client cannot
/// make the server allocate, or reserve budget for, what it has not sent. Frames of at
/// most `free` bytes take no budget.
///
/// Bytes the reader has buffered are taken first; once its buffer is empty the rest of the
/// frame is read from the stream straight into the frame's buffer, not through the
/// reader's.
async fn read_frame<'a, R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buffer: impl FnOnce(usize) -> FrameBuffer<'a>,
    max: usize,
    pool: &'a Budget,
    free: usize,
    deadline: &Deadline,
) -> Result<(Bytes, Option<Loan<'a>>, Claim<'a>), FrameError> {
    let mut size = [0u8; 4];
    match timeout_at(deadline.at, reader.read_exact(&mut size)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Truncated { got: 0, want: 4 })
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(FrameError::Slow { got: 0, want: 4, secs: deadline.secs, what: deadline.what }),
    }
    let size = i32::from_be_bytes(size);
    let want = usize::try_from(size).map_err(|_| FrameError::TooLarge(size.into(), max))?;
    if want > max {
        return Err(FrameError::TooLarge(size.into(), max));
    }
    let mut held = pool.claim(if want <= free { 0 } else { want });
    let FrameBuffer { mut buf, loan } = buffer(want);
    while buf.len() < want {
        let covered = if want <= free { want } else { held.held() };
        if buf.len() == covered {
            if held.grow(BUDGET_CHUNK_BYTES, deadline.at).await.is_err() {
                return Err(FrameError::Starved { got: buf.len(), want, secs: deadline.secs, what: deadline.what });
            }
            continue;
        }
        let room = covered - buf.len();
        let buffered = reader.buffer();
        if !buffered.is_empty() {
            let n = buffered.len().min(room);
            buf.extend_from_slice(&buffered[..n]);
            reader.consume(n);
            continue;
        }
        buf.reserve(room);
        let mut limited = reader.get_mut().take(room as u64);
        match timeout_at(deadline.at, limited.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return Err(FrameError::Truncated { got: buf.len(), want }),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(FrameError::Slow { got: buf.len(), want, secs: deadline.secs, what: deadline.what }),
        }
    }
    Ok((buf.freeze(), loan, held))
}

/// Writes one response frame; a client that does not read it within `limit` (its
/// receive window stays full) gets a `TimedOut` error, and the connection is closed.
async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8], limit: Duration) -> std::io::Result<()> {
    let write = async {
        stream.write_all(&(payload.len() as u32).to_be_bytes()).await?;
        stream.write_all(payload).await?;
        stream.flush().await
    };
    tokio::time::timeout(limit, write).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("response of {} bytes not read by the client within request_timeout_secs ({} s)", payload.len(), limit.as_secs()),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline() -> Deadline {
        Deadline { at: Instant::now() + Duration::from_secs(5), secs: 5, what: "request_timeout_secs" }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn frames_arriving_in_pieces_are_read_whole_and_large_ones_reuse_answered_buffers() {
        let budget = Budget::new(4 << 20);
        let buffers = FrameBuffers::default();
        let payloads: Vec<Vec<u8>> = [10usize, 1 << 20, 20, 300 << 10, 200 << 10, 5]
            .iter()
            .enumerate()
            .map(|(n, &len)| (0..len).map(|i| (i * 31 + n) as u8).collect())
            .collect();
        let wire: Vec<u8> = payloads.iter().flat_map(|p| framed(p)).collect();
        let (mut client, server) = tokio::io::duplex(8 << 10);
        // Written in odd-sized pieces, so frames start and end inside the reader's buffer
        // and inside reads from the stream.
        let writer = tokio::spawn(async move {
            for piece in wire.chunks(7919) {
                client.write_all(piece).await.unwrap();
            }
            client
        });
        let mut reader = BufReader::with_capacity(64 * 1024, server);
        let mut large = Vec::new();
        for payload in &payloads {
            let (frame, loan, held) =
                read_frame(&mut reader, |want| buffers.take(want), 2 << 20, &budget, 0, &deadline()).await.unwrap();
            assert_eq!(frame.len(), payload.len());
            assert!(frame[..] == payload[..], "frame of {} bytes differs", payload.len());
            assert_eq!(held.held(), payload.len());
            if payload.len() >= MIN_FRAME {
                large.push((frame.as_ptr(), loan.is_some()));
            }
            drop(held);
            // Answered: the buffer goes back.
            buffers.give_back(frame, loan);
        }
        // The first large frame had a new buffer; the next ones were read into it.
        assert_eq!(large.len(), 3);
        assert!(!large[0].1 && large[1].1 && large[2].1);
        assert!(large.iter().all(|(at, _)| *at == large[0].0));
        assert_eq!(budget.free(), 4 << 20);
        drop(writer.await.unwrap());
        let end = read_frame(&mut reader, |want| buffers.take(want), 2 << 20, &budget, 0, &deadline()).await;
        assert!(matches!(end, Err(FrameError::Truncated { got: 0, want: 4 })));
    }

    #[tokio::test]
    async fn only_authenticated_connections_borrow_kept_buffers() {
        let limits = crate::config::Limits::default();
        let budgets = Budgets::new(&limits);
        let (_stop, shutdown) = watch::channel(false);
        let payload = vec![5u8; 100 << 10];
        for authenticated in [false, true] {
            budgets.frames.give_back(bytes::BytesMut::zeroed(200 << 10).freeze(), None);
            let (mut client, server) = tokio::io::duplex(1 << 20);
            client.write_all(&framed(&payload)).await.unwrap();
            let reader = BufReader::with_capacity(64 * 1024, tokio::io::split(server).0);
            let soon = Instant::now() + Duration::from_secs(5);
            let (_, read) = read_request(reader, authenticated, soon, None, &limits, &budgets, shutdown.clone()).await;
            let (frame, loan, _held, _) = read.unwrap();
            assert!(frame[..] == payload[..]);
            assert_eq!(loan.is_some(), authenticated);
            budgets.frames.give_back(frame, loan);
        }
    }

    #[tokio::test]
    async fn a_frame_cut_short_loses_no_lent_buffer() {
        let budget = Budget::new(4 << 20);
        let buffers = FrameBuffers::default();
        let kept = bytes::BytesMut::zeroed(100 << 10).freeze();
        buffers.give_back(kept, None);
        let mut wire = framed(&[1u8; 100 << 10]);
        wire.truncate(70 << 10);
        let mut reader = BufReader::new(&wire[..]);
        let cut = read_frame(&mut reader, |want| buffers.take(want), 2 << 20, &budget, 0, &deadline()).await;
        assert!(matches!(cut, Err(FrameError::Truncated { want, .. }) if want == 100 << 10));
        // The buffer lent to the cut frame is freed, and its loan with it.
        assert_eq!(buffers.counts(), (0, 0));
        assert_eq!(budget.free(), 4 << 20);
    }
}
