//! `produce_replay`: a very cheap Kafka Produce load source, for measuring loggate's own
//! capacity and how it scales from 1 to 2 cores (`bench/run.py replay-*` workloads).
//!
//! It is NOT a replacement for the real-client benchmark (`bench/loadgen.c` on librdkafka):
//! a real producer costs about 1 µs of CPU per record, more than the server, so on a small
//! machine the client saturates first. This tool builds a pool of distinct Produce v7
//! requests before connecting — each carrying one record batch in the standard Kafka record
//! batch v2 format (magic 2, CRC-32C, no producer id), encoded and lz4-frame-compressed here
//! — then only replays those bytes with fresh correlation ids over a few pipelined
//! connections (TLS and SASL/PLAIN as a client does it), checks every response and reports
//! throughput and round-trip latency in the JSON keys `bench/run.py` reads from loadgen.
//!
//! `cargo run --release --example produce_replay -- --bootstrap 127.0.0.1:9093
//!  --security SASL_SSL --ca data/tls/ca.pem --user demo --password 'KEYID#secret' --duration 10`
//!
//! stdout: `{"event":"ready"}` once every connection is authenticated, then one summary line.
//! Exit status: 0, 1 when some partition answered an error, 2 on a usage, protocol or
//! connection failure.

use std::fmt::Write as _;
use std::io::{BufReader, Write as _};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use common::Rng;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

/// The project's record batch builders and PRNG (xorshift64*, the generator loadgen uses,
/// so the values have the same statistics).
#[path = "../crates/records/tests/common/mod.rs"]
mod common;

#[derive(Parser, Debug)]
#[command(about = "Replays pre-built Produce v7 requests against a Kafka-protocol server (server capacity benchmark)")]
struct Args {
    /// Server address (host:port)
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, value_enum, default_value = "PLAINTEXT")]
    security: Security,
    /// CA certificate (PEM) trusted for SSL / SASL_SSL
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TLS server name checked against the certificate
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// SASL/PLAIN user name
    #[arg(long, default_value = "")]
    user: String,
    /// SASL/PLAIN password
    #[arg(long, default_value = "")]
    password: String,
    /// Topic; a name ending in `.json` gets JSON object values
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions the requests are spread over, round-robin
    #[arg(long, default_value_t = 2)]
    partitions: i32,
    #[arg(long, default_value_t = 2000)]
    records_per_batch: usize,
    /// Record value size in bytes
    #[arg(long, default_value_t = 200)]
    size: usize,
    #[arg(long, value_enum, default_value = "lz4")]
    codec: Codec,
    /// 1 or -1
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = parse_acks)]
    acks: i16,
    /// TCP connections, each pipelining its own requests
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Outstanding requests per connection
    #[arg(long, default_value_t = 4)]
    inflight: usize,
    /// Seconds of sending (ignored with --requests)
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Total requests to send instead of a duration
    #[arg(long)]
    requests: Option<u64>,
    /// Total records/s target; 0 = as fast as the server answers
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Distinct pre-built requests (a multiple of --partitions is best)
    #[arg(long, default_value_t = 16)]
    pool: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Security {
    #[value(name = "PLAINTEXT")]
    Plaintext,
    #[value(name = "SSL")]
    Ssl,
    #[value(name = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[value(name = "SASL_SSL")]
    SaslSsl,
}

impl Security {
    fn tls(self) -> bool {
        matches!(self, Security::Ssl | Security::SaslSsl)
    }
    fn sasl(self) -> bool {
        matches!(self, Security::SaslPlaintext | Security::SaslSsl)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Codec {
    None,
    Lz4,
}

fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "1" => Ok(1),
        "-1" | "all" => Ok(-1),
        _ => Err("acks must be 1 or -1 (acks=0 has no responses to check)".into()),
    }
}

/// A failure that ends the run (exit status 2).
type Fail = String;

const API_PRODUCE: i16 = 0;
const API_SASL_HANDSHAKE: i16 = 17;
const API_SASL_AUTHENTICATE: i16 = 36;
const PRODUCE_VERSION: i16 = 7;
const CLIENT_ID: &str = "produce_replay";
/// Largest response frame accepted.
const MAX_RESPONSE: usize = 16 << 20;
/// Correlation ids 0..16 are used during authentication.
const FIRST_PRODUCE_CORRELATION: i32 = 16;

// ---------------------------------------------------------------- record values

const WORDS: [&str; 32] = [
    "request", "completed", "user", "session", "cache", "miss", "upstream", "timeout", "retry", "order", "payment",
    "queued", "handler", "db", "query", "took", "rows", "connection", "pool", "acquired", "released", "token",
    "refresh", "invalid", "shipping", "inventory", "sku", "warehouse", "region", "eu-west", "us-east", "checkout",
];
const LEVELS: [&str; 8] = ["INFO", "INFO", "INFO", "INFO", "WARN", "DEBUG", "ERROR", "INFO"];
const SERVICES: [&str; 6] = ["checkout", "cart", "auth", "search", "catalog", "billing"];
const PATHS: [&str; 6] =
    ["/api/v1/orders", "/api/v1/cart/items", "/login", "/search", "/api/v2/catalog/products", "/healthz"];

/// A random element of `from`.
fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len())]
}

/// Appends words until `s` is `size` bytes long (the last word cut to fit).
fn pad_words(s: &mut String, size: usize, rng: &mut Rng) {
    while s.len() < size {
        s.push(' ');
        s.push_str(pick(rng, &WORDS));
    }
    s.truncate(size);
}

/// A log line of exactly `size` bytes, built like loadgen's `make_line`.
fn log_line(size: usize, rng: &mut Rng, seq: u64) -> String {
    let r = rng.next();
    let mut s = String::with_capacity(size + 16);
    let _ = write!(
        s,
        "2026-11-23T20:{:02}:{:02}.{:03}Z {} [{}-{}] {} {} status={} bytes={} dur_ms={}.{} trace={:016x} seq={seq}",
        r % 60,
        (r >> 6) % 60,
        (r >> 12) % 1000,
        LEVELS[((r >> 22) % 8) as usize],
        SERVICES[((r >> 25) % 6) as usize],
        (r >> 28) % 16,
        if !(r >> 32).is_multiple_of(5) { "GET" } else { "POST" },
        PATHS[((r >> 35) % 6) as usize],
        if !(r >> 38).is_multiple_of(10) { 200 } else { 503 },
        (r >> 40) % 50000,
        (r >> 50) % 900,
        (r >> 60) % 10,
        rng.next(),
    );
    s.truncate(size);
    pad_words(&mut s, size, rng);
    s
}

/// A JSON object of 8 fields, `size` bytes when size >= ~190, built like loadgen's `make_json`.
fn json_object(size: usize, rng: &mut Rng, seq: u64) -> String {
    let r = rng.next();
    let mut s = String::with_capacity(size + 16);
    let _ = write!(
        s,
        r#"{{"ts":"2026-11-23T20:{:02}:{:02}.{:03}Z","level":"{}","service":"{}","host":"web-{:02}","trace_id":"{:016x}","status":{},"latency_ms":{}.{},"msg":"{} {} seq={seq}"#,
        r % 60,
        (r >> 6) % 60,
        (r >> 12) % 1000,
        LEVELS[((r >> 22) % 8) as usize],
        SERVICES[((r >> 25) % 6) as usize],
        (r >> 28) % 16,
        rng.next(),
        if !(r >> 38).is_multiple_of(10) { 200 } else { 503 },
        (r >> 40) % 900,
        (r >> 50) % 10,
        if !(r >> 32).is_multiple_of(5) { "GET" } else { "POST" },
        PATHS[((r >> 35) % 6) as usize],
    );
    let body = size.saturating_sub(2).max(s.len());
    pad_words(&mut s, body, rng);
    s.push_str("\"}");
    s
}

// ---------------------------------------------------------------- encoding

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// One magic-2 record batch of `values` (no key, no headers, offset deltas 0..n-1, all
/// records at `timestamp_ms`, producer id -1), its records compressed as one blob.
fn record_batch(values: &[String], timestamp_ms: i64, codec: Codec) -> Result<Vec<u8>, Fail> {
    let mut records = Vec::with_capacity(values.iter().map(|v| v.len() + 8).sum());
    for (i, value) in values.iter().enumerate() {
        records.extend(common::v2_record(i as i64, None, Some(value.as_bytes())));
    }
    let (attributes, blob): (i16, Vec<u8>) = match codec {
        Codec::None => (0, records),
        Codec::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(records.len() / 2));
            e.write_all(&records).map_err(|e| format!("lz4: {e}"))?;
            (3, e.finish().map_err(|e| format!("lz4: {e}"))?)
        }
    };
    Ok(common::v2_batch(attributes, values.len() as i32, timestamp_ms, &blob))
}

/// A whole request frame (size prefix, header v1, body); the correlation id is bytes 8..12.
fn frame(api_key: i16, api_version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + CLIENT_ID.len() + body.len());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&api_key.to_be_bytes());
    f.extend_from_slice(&api_version.to_be_bytes());
    f.extend_from_slice(&correlation_id.to_be_bytes());
    put_str(&mut f, CLIENT_ID);
    f.extend_from_slice(body);
    let size = (f.len() - 4) as i32;
    f[..4].copy_from_slice(&size.to_be_bytes());
    f
}

/// A Produce v7 request frame for one partition of one topic.
fn produce_request(args: &Args, partition: i32, batch: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + args.topic.len() + batch.len());
    body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    body.extend_from_slice(&args.acks.to_be_bytes());
    body.extend_from_slice(&30_000i32.to_be_bytes()); // timeout ms
    body.extend_from_slice(&1i32.to_be_bytes()); // topics
    put_str(&mut body, &args.topic);
    body.extend_from_slice(&1i32.to_be_bytes()); // partitions
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);
    frame(API_PRODUCE, PRODUCE_VERSION, 0, &body)
}

/// One pre-built request and what it carries.
#[derive(Clone)]
struct Prebuilt {
    frame: Vec<u8>,
    records: u64,
    value_bytes: u64,
}

/// The pool of distinct requests: values numbered across the whole pool, partitions round-robin.
fn build_pool(args: &Args) -> Result<(Vec<Prebuilt>, u64), Fail> {
    let json = args.topic.ends_with(".json");
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_millis() as i64;
    let mut rng = Rng(0x5eed_1e55_0f10_c5e5);
    let mut seq = 0u64;
    let mut pool = Vec::with_capacity(args.pool);
    let mut wire = 0u64;
    for i in 0..args.pool {
        let values: Vec<String> = (0..args.records_per_batch)
            .map(|_| {
                seq += 1;
                if json {
                    json_object(args.size, &mut rng, seq)
                } else {
                    log_line(args.size, &mut rng, seq)
                }
            })
            .collect();
        let batch = record_batch(&values, now_ms, args.codec)?;
        wire += batch.len() as u64;
        let partition = (i % args.partitions as usize) as i32;
        pool.push(Prebuilt {
            frame: produce_request(args, partition, &batch),
            records: values.len() as u64,
            value_bytes: values.iter().map(|v| v.len() as u64).sum(),
        });
    }
    Ok((pool, wire))
}

// ---------------------------------------------------------------- decoding

/// Bounds-checked big-endian reader over a response body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Fail> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(format!("truncated {} response ({} bytes)", self.what, self.buf.len()));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Fail> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn i16(&mut self) -> Result<i16, Fail> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, Fail> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, Fail> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// A (nullable) string of int16 length.
    fn string(&mut self) -> Result<Option<String>, Fail> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(self.take(n as usize)?).into_owned()))
    }
    /// An array count (-1, null, as 0).
    fn count(&mut self) -> Result<usize, Fail> {
        let n = self.i32()?;
        if n as i64 > self.buf.len() as i64 {
            return Err(format!("{} response: array of {n} entries in {} bytes", self.what, self.buf.len()));
        }
        Ok(n.max(0) as usize)
    }
}

/// Per-partition error codes of a Produce v7 response body (after the correlation id).
fn produce_errors(body: &[u8]) -> Result<Vec<(i32, i16)>, Fail> {
    let mut r = Reader::new(body, "Produce");
    let mut out = Vec::with_capacity(1);
    for _ in 0..r.count()? {
        let _topic = r.string()?;
        for _ in 0..r.count()? {
            let partition = r.i32()?;
            let error = r.i16()?;
            let _base_offset = r.i64()?;
            let _log_append_time = r.i64()?;
            let _log_start_offset = r.i64()?;
            out.push((partition, error));
        }
    }
    let _throttle_ms = r.i32()?;
    Ok(out)
}

// ---------------------------------------------------------------- connections

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Pin<Box<dyn Io>>;

/// Reads one response frame: (correlation id, body).
async fn read_response<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<(i32, Vec<u8>), std::io::Error> {
    let size = r.read_i32().await?;
    if size < 4 || size as usize > MAX_RESPONSE {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("response frame of {size} bytes")));
    }
    let correlation = r.read_i32().await?;
    let mut body = vec![0u8; size as usize - 4];
    r.read_exact(&mut body).await?;
    Ok((correlation, body))
}

/// Sends one request and reads its response body.
async fn call(io: &mut Stream, api_key: i16, version: i16, correlation: i32, body: &[u8]) -> Result<Vec<u8>, Fail> {
    let name = match api_key {
        API_SASL_HANDSHAKE => "SaslHandshake",
        _ => "SaslAuthenticate",
    };
    io.write_all(&frame(api_key, version, correlation, body)).await.map_err(|e| format!("{name}: send: {e}"))?;
    io.flush().await.map_err(|e| format!("{name}: send: {e}"))?;
    let (got, body) = read_response(io).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format!("{name}: the server closed the connection (wrong credentials or not a SASL listener?)")
        } else {
            format!("{name}: {e}")
        }
    })?;
    if got != correlation {
        return Err(format!("{name}: response correlation id {got}, expected {correlation}"));
    }
    Ok(body)
}

/// SaslHandshake v1 (PLAIN) then SaslAuthenticate v1.
async fn authenticate(io: &mut Stream, user: &str, password: &str) -> Result<(), Fail> {
    let mut body = Vec::new();
    put_str(&mut body, "PLAIN");
    let resp = call(io, API_SASL_HANDSHAKE, 1, 1, &body).await?;
    let mut r = Reader::new(&resp, "SaslHandshake");
    let error = r.i16()?;
    if error != 0 {
        let mut mechanisms = Vec::new();
        for _ in 0..r.count()? {
            mechanisms.push(r.string()?.unwrap_or_default());
        }
        return Err(format!("SaslHandshake PLAIN: error code {error}; server mechanisms: {mechanisms:?}"));
    }
    let token = format!("\0{user}\0{password}");
    let mut body = Vec::new();
    body.extend_from_slice(&(token.len() as i32).to_be_bytes());
    body.extend_from_slice(token.as_bytes());
    let resp = call(io, API_SASL_AUTHENTICATE, 1, 2, &body).await?;
    let mut r = Reader::new(&resp, "SaslAuthenticate");
    let error = r.i16()?;
    let message = r.string()?.unwrap_or_default();
    if error != 0 {
        return Err(format!("SASL authentication failed for user {user:?}: error code {error}: {message}"));
    }
    Ok(())
}

async fn connect(args: &Args, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Stream, Fail> {
    let tcp = TcpStream::connect(&args.bootstrap).await.map_err(|e| format!("connect {}: {e}", args.bootstrap))?;
    tcp.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let mut io: Stream = match tls {
        Some(connector) => {
            let name = ServerName::try_from(args.server_name.clone())
                .map_err(|e| format!("server name {:?}: {e}", args.server_name))?;
            let stream = connector.connect(name, tcp).await.map_err(|e| format!("TLS handshake with {}: {e}", args.bootstrap))?;
            Box::pin(stream)
        }
        None => Box::pin(tcp),
    };
    if args.security.sasl() {
        authenticate(&mut io, &args.user, &args.password).await?;
    }
    Ok(io)
}

fn tls_connector(args: &Args) -> Result<tokio_rustls::TlsConnector, Fail> {
    let path = args.ca.as_ref().ok_or("--ca FILE is required with SSL and SASL_SSL")?;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// What one connection sends: until `end` or `requests` requests, one every `interval`.
struct Plan {
    start: Instant,
    end: Option<Instant>,
    requests: Option<u64>,
    interval: Option<Duration>,
    /// This connection's first send, when paced (connections are staggered).
    offset: Duration,
    inflight: usize,
}

#[derive(Default)]
struct Outcome {
    requests: u64,
    records: u64,
    value_bytes: u64,
    error_responses: u64,
    error_records: u64,
    first_errors: Vec<(i32, i16)>,
    /// Round trips in microseconds, one per request.
    rtt_us: Vec<u32>,
    last_response: Option<Instant>,
}

/// Pipelines requests on one connection: a writer keeps `inflight` requests outstanding,
/// a reader matches responses in order by correlation id.
async fn drive(io: Stream, mut pool: Vec<Prebuilt>, plan: Plan, first_correlation: i32) -> Result<Outcome, Fail> {
    let (mut rd, mut wr) = tokio::io::split(io);
    let slots = Semaphore::new(plan.inflight);
    let (tx, mut rx) = mpsc::unbounded_channel::<(i32, usize, Instant)>();
    let mut out = Outcome::default();
    out.rtt_us.reserve(plan.requests.unwrap_or(4096).min(1 << 20) as usize);
    // Records and value bytes per pool entry, for the reader (the writer owns the pool).
    let counts: Vec<(u64, u64)> = pool.iter().map(|p| (p.records, p.value_bytes)).collect();

    let writer = async {
        let mut correlation = first_correlation;
        let mut sent = 0u64;
        loop {
            if plan.requests.is_some_and(|n| sent >= n) {
                break;
            }
            if let Some(interval) = plan.interval {
                let due = plan.start + plan.offset + interval.mul_f64(sent as f64);
                if plan.end.is_some_and(|e| due >= e) {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
            }
            let permit = slots.acquire().await.map_err(|e| e.to_string())?;
            if plan.end.is_some_and(|e| Instant::now() >= e) {
                break;
            }
            permit.forget();
            let k = (sent % pool.len() as u64) as usize;
            let req = &mut pool[k];
            req.frame[8..12].copy_from_slice(&correlation.to_be_bytes());
            let t0 = Instant::now();
            tx.send((correlation, k, t0)).map_err(|_| "response reader ended early".to_string())?;
            wr.write_all(&req.frame).await.map_err(|e| format!("send: {e}"))?;
            wr.flush().await.map_err(|e| format!("send: {e}"))?;
            correlation = correlation.wrapping_add(1).max(FIRST_PRODUCE_CORRELATION);
            sent += 1;
        }
        drop(tx);
        Ok::<_, Fail>(sent)
    };
    let reader = async {
        while let Some((correlation, k, t0)) = rx.recv().await {
            let (got, body) = read_response(&mut rd).await.map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    "connection closed by the server".to_string()
                } else {
                    format!("receive: {e}")
                }
            })?;
            let now = Instant::now();
            if got != correlation {
                return Err(format!("Produce response correlation id {got}, expected {correlation}"));
            }
            let errors = produce_errors(&body)?;
            if errors.is_empty() {
                return Err("Produce response without partitions".into());
            }
            out.requests += 1;
            out.rtt_us.push(now.duration_since(t0).as_micros().min(u32::MAX as u128) as u32);
            out.last_response = Some(now);
            let failed: Vec<_> = errors.into_iter().filter(|&(_, e)| e != 0).collect();
            if failed.is_empty() {
                out.records += counts[k].0;
                out.value_bytes += counts[k].1;
            } else {
                out.error_responses += 1;
                out.error_records += counts[k].0;
                if out.first_errors.len() < 5 {
                    out.first_errors.extend(failed);
                }
            }
            slots.add_permits(1);
        }
        Ok::<_, Fail>(())
    };
    tokio::try_join!(writer, reader)?;
    Ok(out)
}

// ---------------------------------------------------------------- main

/// Value at quantile `q` of sorted microseconds, in milliseconds.
fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted_us.len() as f64) as usize).min(sorted_us.len() - 1);
    sorted_us[i] as f64 / 1000.0
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

fn check(args: &Args) -> Result<(), Fail> {
    let positive = [
        ("--partitions", args.partitions as i64),
        ("--records-per-batch", args.records_per_batch as i64),
        ("--size", args.size as i64),
        ("--connections", args.connections as i64),
        ("--inflight", args.inflight as i64),
        ("--pool", args.pool as i64),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v < 1) {
        return Err(format!("{name} must be at least 1"));
    }
    if args.records_per_batch > i32::MAX as usize / 2 {
        return Err("--records-per-batch is too large".into());
    }
    if args.requests.is_none() && !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be positive".into());
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err("--rate must be 0 or positive".into());
    }
    Ok(())
}

async fn run(args: Args) -> Result<bool, Fail> {
    check(&args)?;
    let tls = if args.security.tls() { Some(tls_connector(&args)?) } else { None };
    let (pool, wire_bytes) = build_pool(&args)?;
    let pool_records: u64 = pool.iter().map(|p| p.records).sum();
    let pool_values: u64 = pool.iter().map(|p| p.value_bytes).sum();
    eprintln!(
        "produce_replay: {} requests of {} records, codec {:?}: {:.1} batch bytes per record, {:.2} of the value bytes",
        pool.len(),
        args.records_per_batch,
        args.codec,
        wire_bytes as f64 / pool_records as f64,
        wire_bytes as f64 / pool_values as f64,
    );
    let connections =
        futures_util::future::try_join_all((0..args.connections).map(|_| connect(&args, tls.as_ref()))).await?;
    println!("{{\"event\":\"ready\"}}");
    std::io::stdout().flush().map_err(|e| format!("stdout: {e}"))?;

    let start = Instant::now();
    let n = args.connections as u64;
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.records_per_batch as f64 * n as f64 / args.rate));
    let drives = connections.into_iter().enumerate().map(|(c, io)| {
        let plan = Plan {
            start,
            end: args.requests.is_none().then(|| start + Duration::from_secs_f64(args.duration)),
            requests: args.requests.map(|r| r / n + u64::from((c as u64) < r % n)),
            interval,
            offset: interval.map(|i| i.mul_f64(c as f64 / n as f64)).unwrap_or_default(),
            inflight: args.inflight,
        };
        drive(io, pool.clone(), plan, FIRST_PRODUCE_CORRELATION)
    });
    let outcomes = futures_util::future::try_join_all(drives).await?;

    let mut total = Outcome::default();
    for o in outcomes {
        total.requests += o.requests;
        total.records += o.records;
        total.value_bytes += o.value_bytes;
        total.error_responses += o.error_responses;
        total.error_records += o.error_records;
        total.first_errors.extend(o.first_errors);
        total.rtt_us.extend(o.rtt_us);
        total.last_response = total.last_response.max(o.last_response);
    }
    total.rtt_us.sort_unstable();
    // From the start to the last response; a paced run spans at least its whole duration.
    let mut seconds = total.last_response.map(|t| t.duration_since(start).as_secs_f64()).unwrap_or(0.0);
    if args.requests.is_none() && args.rate > 0.0 {
        seconds = seconds.max(args.duration);
    }
    let seconds = seconds.max(1e-9);
    if !total.first_errors.is_empty() {
        let shown: Vec<String> = total.first_errors.iter().take(5).map(|(p, e)| format!("partition {p}: error code {e}")).collect();
        eprintln!("produce_replay: {} responses with errors; first: {}", total.error_responses, shown.join(", "));
    }
    let rtt = &total.rtt_us;
    let lat = serde_json::json!({
        "p50": round(quantile_ms(rtt, 0.50), 3),
        "p99": round(quantile_ms(rtt, 0.99), 3),
        "p999": round(quantile_ms(rtt, 0.999), 3),
        "max": round(rtt.last().map_or(0.0, |&v| v as f64 / 1000.0), 3),
    });
    let summary = serde_json::json!({
        "records": total.records,
        "sent": total.requests * args.records_per_batch as u64,
        "errors": total.error_records,
        "error_responses": total.error_responses,
        "seconds": round(seconds, 3),
        "records_per_s": (total.records as f64 / seconds).round(),
        "mb_per_s": round(total.value_bytes as f64 / seconds / 1e6, 2),
        "value_bytes": total.value_bytes,
        "lat_ms": lat,
        "rtt_ms": {"requests": total.requests, "p50": lat["p50"], "p99": lat["p99"]},
        "requests": total.requests,
        "connections": args.connections,
        "inflight": args.inflight,
        "records_per_batch": args.records_per_batch,
        "batch_bytes_per_record": round(wire_bytes as f64 / pool_records as f64, 2),
        "codec": args.codec.to_possible_value().map(|v| v.get_name().to_string()),
        "acks": args.acks.to_string(),
        "size": args.size,
        "json": args.topic.ends_with(".json"),
        "topic": args.topic,
        "security": args.security.to_possible_value().map(|v| v.get_name().to_string()),
        "first_error": total.first_errors.first().map(|(p, e)| format!("partition {p}: error code {e}")).unwrap_or_default(),
    });
    println!("{summary}");
    std::io::stdout().flush().map_err(|e| format!("stdout: {e}"))?;
    Ok(total.error_responses == 0)
}

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("produce_replay: tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("produce_replay: {e}");
            std::process::exit(2);
        }
    }
}
