//! What each fuzz target does with one input, and what it checks.
//!
//! Shared by the libFuzzer binaries (`fuzz/fuzz_targets/*.rs`, through the `loggate-fuzz`
//! library) and by the replay test of the main package (`tests/fuzz_regressions.rs`,
//! which includes this file with `#[path]`), so a stored input is judged the same way in
//! both. Besides "no panic", every target checks:
//!
//! - memory: the live bytes allocated while one input runs stay under [`Target::bound`],
//!   a fixed slack plus a multiple of the input's length (plus a multiple of the
//!   configured decompression limit where a codec runs). The counting allocator
//!   (`alloc.rs`, the binary's `#[global_allocator]`) aborts at the first allocation
//!   past it;
//! - time: the fuzzing thread's CPU time for one input stays under [`Target::cpu_bound`]
//!   (a fixed part plus a part per input byte), its wall time under [`TIME_BOUND`], and
//!   libFuzzer's `-timeout` (set by `fuzz/run.sh`) catches inputs that never finish;
//! - output: what the code under test returns is bounded by the input too (records,
//!   response frames, close reasons), and a few target-specific invariants.
//!
//! Every target runs the library code a connection runs: the request header parser,
//! `kafka::dispatch` with a real `Broker` over a temporary local logstore, the PLAIN
//! token check, `loggate_records::decode_batches` (and `decode_records`), and the local
//! logstore's recovery scan (opening a shard whose segment file holds the input).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::alloc;

/// Most wall time one input may take (a backstop against hangs, on a loaded 2-core
/// machine); the tighter check is [`Target::cpu_bound`].
pub const TIME_BOUND: Duration = Duration::from_secs(2);

/// The decompression limit the fuzzed decoders are configured with (per call of
/// `decode_batches`, and `max_decompressed_batch_bytes` of the fuzzed broker).
pub const DECOMPRESS_LIMIT: usize = 1 << 20;
/// Record limit per call / per partition.
pub const MAX_RECORDS: usize = 10_000;

/// The fuzz targets, by the name of their binary and corpus directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `RequestHeader::parse`.
    Header,
    /// `kafka::dispatch` of one frame (api key and version chosen by the first two bytes).
    Dispatch,
    /// `decode_batches` / `decode_records` over message sets and record batches.
    Records,
    /// The input is a gzip payload, wrapped in a batch with a valid CRC.
    CodecGzip,
    /// A snappy payload (raw or xerial), wrapped.
    CodecSnappy,
    /// An LZ4 frame, wrapped.
    CodecLz4,
    /// A zstd frame, wrapped (magic 2 only).
    CodecZstd,
    /// Several frames on one SASL session (`kafka::dispatch` in sequence, from the
    /// start of the SASL state machine).
    Session,
    /// `KeyStore::authenticate_plain`.
    Plain,
    /// `KeyStore::scram_start` and `ScramLogin::finish` (SASL/SCRAM messages).
    Scram,
    /// Opening a shard whose only segment holds the input (recovery scan), reading it all.
    Storage,
}

/// Every target, in the order FUZZING.md lists them.
pub const TARGETS: &[Target] = &[
    Target::Header,
    Target::Dispatch,
    Target::Records,
    Target::CodecGzip,
    Target::CodecSnappy,
    Target::CodecLz4,
    Target::CodecZstd,
    Target::Session,
    Target::Plain,
    Target::Scram,
    Target::Storage,
];

impl Target {
    /// The binary / directory name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Header => "header",
            Target::Dispatch => "dispatch",
            Target::Records => "records",
            Target::CodecGzip => "codec_gzip",
            Target::CodecSnappy => "codec_snappy",
            Target::CodecLz4 => "codec_lz4",
            Target::CodecZstd => "codec_zstd",
            Target::Session => "session",
            Target::Plain => "plain",
            Target::Scram => "scram",
            Target::Storage => "storage",
        }
    }

    /// The target of a binary / directory name.
    pub fn from_name(name: &str) -> Option<Target> {
        TARGETS.iter().copied().find(|t| t.name() == name)
    }

    /// Most bytes one input of `len` bytes may have live at once (beyond what was live
    /// before it): slack for fixed-size state, plus a multiple of the input, plus (where
    /// a decompressor runs) a multiple of the configured decompression limit (an output
    /// buffer that doubles may hold up to twice the limit while it grows).
    pub fn bound(self, len: usize) -> usize {
        const KIB: usize = 1 << 10;
        let (slack, per_byte, per_limit) = match self {
            Target::Header => (16 * KIB, 4, 0),
            Target::Plain => (16 * KIB, 4, 0),
            // The parsed messages, the server-first message and the auth message.
            Target::Scram => (32 * KIB, 8, 0),
            Target::Records => (256 * KIB, 16, 3),
            Target::CodecGzip | Target::CodecSnappy | Target::CodecLz4 | Target::CodecZstd => {
                (256 * KIB, 16, 3)
            }
            // The request, the decoded partitions, the converted logs (each log carries
            // its source, times and framing) and the storage queue.
            Target::Dispatch | Target::Session => (1024 * KIB, 64, 6),
            // Opening a store: lock file, writer and housekeeper threads, a 1 MiB scan
            // chunk; reading: the entries read back.
            Target::Storage => (4096 * KIB, 16, 0),
        };
        slack + per_byte * len + per_limit * DECOMPRESS_LIMIT
    }
}

impl Target {
    /// Most CPU time the fuzzing thread may spend on one input of `len` bytes: a fixed
    /// part (decompressing up to [`DECOMPRESS_LIMIT`], opening a store) plus a part per
    /// input byte. Work that grows with a size the input declares rather than with its
    /// bytes (zero-filling a declared block size per tiny block) goes over it. Generous
    /// enough for the instrumented build with debug assertions.
    pub fn cpu_bound(self, len: usize) -> Duration {
        let (fixed_ms, per_byte_ns) = match self {
            Target::Header | Target::Plain | Target::Scram => (20, 1_000),
            Target::Records
            | Target::CodecGzip
            | Target::CodecSnappy
            | Target::CodecLz4
            | Target::CodecZstd => (30, 200),
            Target::Dispatch | Target::Session | Target::Storage => (200, 2_000),
        };
        Duration::from_millis(fixed_ms) + Duration::from_nanos(per_byte_ns * len as u64)
    }
}

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), unaffected by the other
/// processes on the machine.
pub fn thread_cpu_time() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec (two 64-bit fields on 64-bit Linux).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What one input cost.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Peak live bytes above the baseline.
    pub peak: usize,
    /// The bound that applied.
    pub bound: usize,
    pub elapsed: Duration,
    /// CPU time of the fuzzing thread.
    pub cpu: Duration,
}

/// Runs one input through `target` and checks it; panics on a violated check (the
/// allocator aborts on a violated memory bound when `armed`).
pub fn run(target: Target, data: &[u8], armed: bool) -> Outcome {
    match target {
        // Built outside the measured window: it is per process, not per input.
        Target::Dispatch | Target::Session => {
            fixture();
        }
        Target::Storage => {
            runtime();
        }
        _ => {}
    }
    let bound = target.bound(data.len());
    alloc::begin(bound, armed);
    let start = Instant::now();
    let cpu_start = thread_cpu_time();
    match target {
        Target::Header => header(data),
        Target::Dispatch => dispatch(data),
        Target::Session => session_frames(data),
        Target::Records => records(data),
        Target::CodecGzip => codec(1, data),
        Target::CodecSnappy => codec(2, data),
        Target::CodecLz4 => codec(3, data),
        Target::CodecZstd => codec(4, data),
        Target::Plain => plain(data),
        Target::Scram => scram(data),
        Target::Storage => storage(data),
    }
    let cpu = thread_cpu_time().saturating_sub(cpu_start);
    let elapsed = start.elapsed();
    let peak = alloc::end();
    assert!(peak <= bound, "{}: peak allocation {peak} bytes over the bound {bound}", target.name());
    assert!(
        elapsed <= TIME_BOUND,
        "{}: input of {} bytes took {elapsed:?}, over {TIME_BOUND:?}",
        target.name(),
        data.len()
    );
    let cpu_bound = target.cpu_bound(data.len());
    assert!(
        cpu <= cpu_bound,
        "{}: input of {} bytes used {cpu:?} of CPU, over {cpu_bound:?}",
        target.name(),
        data.len()
    );
    Outcome { peak, bound, elapsed, cpu }
}

// ---------------------------------------------------------------------------------------
// request header

fn header(data: &[u8]) {
    let mut buf = Bytes::copy_from_slice(data);
    if let Ok(h) = loggate::kafka::RequestHeader::parse(&mut buf) {
        assert!(buf.len() + 10 <= data.len(), "header parse left more bytes than it was given");
        if let Some(id) = &h.client_id {
            // Lossy UTF-8: at most 3 bytes (U+FFFD) per input byte.
            assert!(id.len() <= 3 * data.len());
        }
    }
}

// ---------------------------------------------------------------------------------------
// kafka::dispatch

/// The APIs the fuzzer picks from with the first byte (low 3 bits).
const APIS: [i16; 8] = [0, 3, 17, 36, 18, 22, 10, 1];

/// The project, logstores and access key of the fuzzed broker.
pub const PROJECT: &str = "fz";
pub const KEY_ID: &str = "FZKEY";
pub const KEY_SECRET: &str = "fz-secret";

struct Fixture {
    broker: loggate::kafka::Broker,
    /// Kept so the data dir lives as long as the process (removed by `fuzz/run.sh` and
    /// by the replay test, which point TMPDIR at a directory of their own).
    _dir: tempfile::TempDir,
}

/// A current-thread runtime: one fuzzing thread, deterministic scheduling.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
    })
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

/// The configuration the fuzzed broker runs with: small limits so that the bounds are
/// meaningful, no delay after a failed login (it would only slow the fuzzer down).
pub fn fixture_config(data_dir: &Path) -> String {
    let hash = loggate::ingest::auth::SecretHash::new(KEY_SECRET).to_string();
    format!(
        r#"
data_dir = {data_dir:?}
[[listeners]]
bind = "127.0.0.1:9"
protocol = "SASL_PLAINTEXT"
[limits]
max_request_bytes = 1048576
max_inflight_bytes = 1048576
max_batch_bytes = 1048576
max_decompressed_batch_bytes = {DECOMPRESS_LIMIT}
max_records_per_batch = {MAX_RECORDS}
auth_failure_delay_ms = 0
[storage]
segment_bytes = 65536
flush_interval_ms = 0
direct_io = false
[[projects]]
name = "{PROJECT}"
  [[projects.logstores]]
  name = "app"
  shards = 2
  retention_bytes = 262144
  [[projects.logstores]]
  name = "p"
  shards = 3
  routing = "partition"
  retention_bytes = 262144
[[access_keys]]
id = "{KEY_ID}"
secret_hash = "{hash}"
allow = ["{PROJECT}/app"]
"#,
        data_dir = data_dir.display().to_string()
    )
}

fn build_fixture() -> Fixture {
    use loggate::config::Config;
    use loggate::ingest::auth::KeyStore;
    use loggate::ingest::catalog::Catalog;
    use loggate::ingest::Ingest;
    use loggate::metrics::Metrics;
    use loggate_storage::local::LocalStore;
    use loggate_storage::{LogStorage, StreamId};

    let dir = tempfile::Builder::new().prefix("loggate-fuzz-").tempdir().expect("temp dir");
    let mut config: Config = toml::from_str(&fixture_config(dir.path())).expect("fixture config");
    config.apply_defaults();
    config.validate().expect("valid fixture config");
    let store = LocalStore::open(&config.data_dir, config.local_store_options()).expect("open store");
    runtime().block_on(async {
        for project in &config.projects {
            for s in &project.logstores {
                store.open_stream(&StreamId::new(&project.name, &s.name), s.shards).await.expect("open stream");
            }
        }
    });
    let storage: Arc<dyn LogStorage> = Arc::new(store);
    let keys = KeyStore::from_config(&config.access_keys).expect("keys");
    let catalog = Catalog::from_config(&config.projects, &config.limits);
    let ingest = Arc::new(Ingest::new(catalog, keys, storage, config.node_id));
    let metrics = Arc::new(Metrics::new());
    metrics.attach(ingest.clone(), ingest.storage().clone());
    let pool = loggate::kafka::pool::DecodePool::new(1, config.limits.max_decoded_inflight_bytes);
    let quotas = Arc::new(loggate::ingest::quota::Quotas::new(&config));
    let broker =
        loggate::kafka::Broker { ingest, limits: Arc::new(config.limits.clone()).into(), metrics, pool, node_id: config.node_id, cluster: None, quotas };
    Fixture { broker, _dir: dir }
}

fn session(auth: loggate::kafka::AuthState) -> loggate::kafka::Session {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    loggate::kafka::Session {
        peer,
        source: Bytes::from(peer.to_string()),
        auth,
        sasl_enabled: true,
        sni: None,
        sni_conflict: false,
        advertised: loggate::kafka::session::Advertised {
            host: "127.0.0.1".into(),
            port: 9092,
            protocol: loggate::config::SecurityProtocol::SaslSsl,
        },
        throttled_until: None,
        client: Default::default(),
    }
}

/// Input layout: byte 0 picks the API (bits 0-2, from [`APIS`]) and the session's state
/// (bits 3-5: 0-3 authenticated with the access key, 4 as a listener without SASL,
/// 5 awaiting SaslHandshake, 6 awaiting SaslAuthenticate, 7 awaiting a raw v0 token);
/// byte 1 is the API version (0-15); the rest is the frame after api key and version
/// (correlation id, client id, tagged fields, body), or the whole raw token.
fn dispatch(data: &[u8]) {
    use loggate::ingest::auth::Principal;
    use loggate::kafka::{AuthState, Reply};

    let (Some(&sel), Some(&version)) = (data.first(), data.get(1)) else { return };
    let rest = &data[2..];
    let api_key = APIS[usize::from(sel & 7)];
    let version = i16::from(version % 16);
    let f = fixture();
    let auth = match (sel >> 3) & 7 {
        0..=3 => {
            let token = format!("\0{PROJECT}\0{KEY_ID}#{KEY_SECRET}");
            let principal = f.broker.ingest.keys().authenticate_plain(token.as_bytes()).0.expect("the fixture's key logs in");
            AuthState::Authenticated(principal)
        }
        4 => AuthState::Authenticated(Principal { project: PROJECT.into(), key_id: None, credential: None }),
        5 => AuthState::AwaitHandshake,
        6 => AuthState::AwaitAuthenticate,
        _ => AuthState::AwaitRawToken,
    };
    let raw = matches!(auth, AuthState::AwaitRawToken);
    let frame = if raw {
        Bytes::copy_from_slice(rest)
    } else {
        let mut f = Vec::with_capacity(4 + rest.len());
        f.extend_from_slice(&api_key.to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(rest);
        Bytes::from(f)
    };
    let mut session = session(auth);
    let reply = runtime().block_on(answer(&f.broker, &mut session, frame));
    // Responses are bounded by the request: Metadata of every logstore, one entry per
    // partition named, error texts.
    let reply_bound = 64 * 1024 + 16 * data.len();
    match &reply {
        Reply::Frame(b) | Reply::FrameThenClose(b, _) => {
            // A raw (SaslHandshake v0) token is answered by a bare frame; everything
            // else starts with the correlation id.
            assert!(raw || b.len() >= 4, "response frame without a correlation id");
            assert!(b.len() <= reply_bound, "response of {} bytes to a {}-byte request", b.len(), data.len());
        }
        Reply::Nothing | Reply::Close(_) => {}
        Reply::Later(_) => panic!("a deferred answer deferred again"),
    }
    if let Reply::FrameThenClose(_, why) | Reply::Close(why) = &reply {
        assert!(why.len() <= 1024 + 4 * data.len(), "close reason of {} bytes", why.len());
    }
}

/// The reply to a frame, a deferred one (a Produce waiting for storage) awaited.
async fn answer(broker: &loggate::kafka::Broker, session: &mut loggate::kafka::Session, frame: Bytes) -> loggate::kafka::Reply {
    match loggate::kafka::dispatch(broker, session, frame).await {
        loggate::kafka::Reply::Later(answer) => answer.await,
        reply => reply,
    }
}

/// Input layout: frames, each a big-endian u16 length and that many bytes (a whole
/// request frame: api key, version, correlation id, client id, ...; or a raw token),
/// handed to `kafka::dispatch` one after the other on one session of a SASL listener
/// that starts awaiting SaslHandshake, until a reply closes the connection.
fn session_frames(data: &[u8]) {
    use loggate::kafka::{AuthState, Reply};

    let f = fixture();
    let mut session = session(AuthState::AwaitHandshake);
    let mut rest = data;
    let mut frames = 0usize;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let frame = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[2 + frame.len()..];
        frames += 1;
        let reply = runtime().block_on(answer(&f.broker, &mut session, Bytes::copy_from_slice(frame)));
        match &reply {
            Reply::Frame(b) | Reply::FrameThenClose(b, _) => {
                assert!(b.len() <= 64 * 1024 + 16 * frame.len(), "response of {} bytes to a {}-byte frame", b.len(), frame.len());
            }
            Reply::Nothing | Reply::Close(_) => {}
            Reply::Later(_) => panic!("a deferred answer deferred again"),
        }
        if let Reply::FrameThenClose(_, why) | Reply::Close(why) = &reply {
            assert!(why.len() <= 1024 + 4 * frame.len(), "close reason of {} bytes", why.len());
            break;
        }
    }
    assert!(frames <= data.len() / 2 + 1);
}

// ---------------------------------------------------------------------------------------
// record decoding

fn decode_options() -> loggate_records::DecodeOptions {
    loggate_records::DecodeOptions {
        max_decompressed_bytes: DECOMPRESS_LIMIT,
        max_records: MAX_RECORDS,
        allow_zstd: true,
    }
}

/// Input layout: byte 0 bit 0 set: the CRC of every top-level entry is recomputed
/// before decoding (so that mutations get past the checksum to the parsers behind it);
/// bit 1 set: also `decode_records` (the owned path). The rest is the partition's data.
fn records(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let mut buf = rest.to_vec();
    if sel & 1 != 0 {
        fix_crcs(&mut buf);
    }
    check_decode(Bytes::from(buf), sel & 2 != 0);
}

/// Decodes `data` as a Produce partition's records and checks what comes out.
fn check_decode(data: Bytes, owned: bool) {
    let len = data.len();
    let opts = decode_options();
    if let Ok(batches) = loggate_records::decode_batches(data.clone(), &opts) {
        let mut records = 0usize;
        let mut bytes = 0usize;
        let mut decompressed = 0usize;
        for b in &batches {
            decompressed += b.data_len();
            let mut n = 0usize;
            for r in b.records() {
                let Ok(r) = r else { break };
                n += 1;
                bytes += r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
                for (k, v) in r.headers {
                    bytes += k.len() + v.map_or(0, <[u8]>::len);
                }
                assert!(n <= b.record_count(), "a batch yielded more records than it declares");
            }
            records += n;
        }
        assert!(records <= MAX_RECORDS, "{records} records over the limit {MAX_RECORDS}");
        assert!(decompressed <= len + DECOMPRESS_LIMIT, "{decompressed} bytes of record data from {len} bytes");
        assert!(bytes <= len + DECOMPRESS_LIMIT, "{bytes} bytes of keys/values/headers from {len} bytes");
    }
    if owned {
        if let Ok(batches) = loggate_records::decode_records(data, &opts) {
            let n: usize = batches.iter().map(|b| b.records.len()).sum();
            assert!(n <= MAX_RECORDS);
        }
    }
}

/// Recomputes the CRC of every complete top-level entry of a partition's data.
pub fn fix_crcs(buf: &mut [u8]) {
    let mut pos = 0usize;
    while pos + 17 <= buf.len() {
        let size = i32::from_be_bytes(buf[pos + 8..pos + 12].try_into().unwrap());
        let Ok(size) = usize::try_from(size) else { return };
        let Some(end) = pos.checked_add(12).and_then(|p| p.checked_add(size)) else { return };
        if size < 5 || end > buf.len() {
            return;
        }
        match buf[pos + 16] {
            0 | 1 => {
                let crc = crc32fast::hash(&buf[pos + 16..end]);
                buf[pos + 12..pos + 16].copy_from_slice(&crc.to_be_bytes());
            }
            2 if end >= pos + 21 => {
                let crc = crc32c::crc32c(&buf[pos + 21..end]);
                buf[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
            }
            _ => {}
        }
        pos = end;
    }
}

/// A magic-2 record batch (valid CRC) whose records section is `payload`, compressed
/// with `codec` and declaring `count` records.
pub fn v2_batch(codec: u8, count: i32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(61 + payload.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((49 + payload.len()) as i32).to_be_bytes()); // batch length
    b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&[0; 4]); // crc, below
    b.extend_from_slice(&i16::from(codec).to_be_bytes()); // attributes
    b.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // base timestamp
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // max timestamp
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes()); // record count
    b.extend_from_slice(payload);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A message-set entry of magic 0 or 1 (valid CRC) with a null key and `value`.
pub fn legacy_message(magic: u8, codec: u8, value: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(34 + value.len());
    m.extend_from_slice(&0i64.to_be_bytes()); // offset
    m.extend_from_slice(&[0; 4]); // size, below
    m.extend_from_slice(&[0; 4]); // crc, below
    m.push(magic);
    m.push(codec);
    if magic == 1 {
        m.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    }
    m.extend_from_slice(&(-1i32).to_be_bytes()); // null key
    m.extend_from_slice(&(value.len() as i32).to_be_bytes());
    m.extend_from_slice(value);
    let size = (m.len() - 12) as i32;
    m[8..12].copy_from_slice(&size.to_be_bytes());
    let crc = crc32fast::hash(&m[16..]);
    m[12..16].copy_from_slice(&crc.to_be_bytes());
    m
}

/// Input layout: byte 0 bits 0-1 pick the wrapper (0, 1: record batch v2; 2: message v0;
/// 3: message v1; zstd is always v2), bits 2-7 the declared record count of a v2 batch
/// (1-64); the rest is the compressed payload.
fn codec(codec: u8, data: &[u8]) {
    let Some((&sel, payload)) = data.split_first() else { return };
    let wrapped = match sel & 3 {
        2 if codec != 4 => legacy_message(0, codec, payload),
        3 if codec != 4 => legacy_message(1, codec, payload),
        _ => v2_batch(codec, i32::from(sel >> 2) + 1, payload),
    };
    check_decode(Bytes::from(wrapped), false);
}

// ---------------------------------------------------------------------------------------
// SASL/PLAIN

fn plain(data: &[u8]) {
    use loggate::config::AccessKeyConfig;
    use loggate::ingest::auth::KeyStore;
    static KEYS: OnceLock<KeyStore> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let hash = loggate::ingest::auth::SecretHash::new(KEY_SECRET).to_string();
        KeyStore::from_config(&[AccessKeyConfig {
            id: KEY_ID.into(),
            secret_hash: hash,
            allow: vec![format!("{PROJECT}/*")],
            quota_bytes_per_sec: None,
            quota_requests_per_sec: None,
            scram_sha256: None,
            scram_sha512: None,
        }])
        .expect("key store")
    });
    let (result, logged_id) = keys.authenticate_plain(data);
    // The key id handed back for logging is the password's part before its first '#',
    // never anything after it (the secret).
    let text = String::from_utf8_lossy(data);
    if let Some(id) = &logged_id {
        let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
        assert_eq!(parts.len(), 3, "a key id logged for a token without three parts");
        let password = std::str::from_utf8(parts[2]).expect("a key id logged for a non-UTF-8 password");
        let (expected, _secret) = password.split_once('#').expect("a key id logged for a password without '#'");
        assert_eq!(id, expected, "the logged key id is not the part before the first '#'");
        // Only a configured id is logged: anything else may be a secret typed in the wrong place.
        assert_eq!(id, KEY_ID, "an unknown key id was logged");
    }
    // The username logged is the middle part of a token of exactly three parts.
    if let Some(user) = KeyStore::plain_username(data) {
        let parts: Vec<&[u8]> = data.split(|&b| b == 0).collect();
        assert_eq!(parts.len(), 3, "a username logged for a token without three parts");
        assert_eq!(user.as_bytes(), parts[1]);
    }
    match result {
        Ok(p) => {
            assert!(text.contains(&format!("{KEY_ID}#{KEY_SECRET}")), "accepted a token without the secret");
            assert!(p.project.len() <= data.len());
            assert_eq!(p.key_id.as_deref(), Some(KEY_ID));
        }
        Err(e) => {
            // The error text is fixed, never the token's.
            assert!(e.to_string().len() < 100);
        }
    }
}

// ---------------------------------------------------------------------------------------
// SASL/SCRAM

/// Input layout: byte 0 bit 0: SCRAM-SHA-256 or -512; rest: the client-first message, a
/// NUL, the client-final message (no NUL: only the client-first message).
fn scram(data: &[u8]) {
    use loggate::config::AccessKeyConfig;
    use loggate::ingest::auth::scram::Mechanism;
    use loggate::ingest::auth::{GeneratedKey, KeyStore, SecretHash};
    static KEYS: OnceLock<KeyStore> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let key = GeneratedKey { id: KEY_ID.into(), secret: KEY_SECRET.into(), hash: SecretHash::new(KEY_SECRET) };
        let creds = key.scram_credentials(loggate::ingest::auth::scram::MIN_ITERATIONS);
        KeyStore::from_config(&[AccessKeyConfig {
            id: KEY_ID.into(),
            secret_hash: key.hash.to_string(),
            allow: vec![format!("{PROJECT}/*")],
            quota_bytes_per_sec: None,
            quota_requests_per_sec: None,
            scram_sha256: Some(creds[0].1.to_string()),
            scram_sha512: Some(creds[1].1.to_string()),
        }])
        .expect("key store")
    });
    let Some((&sel, rest)) = data.split_first() else { return };
    let mechanism = if sel & 1 == 0 { Mechanism::Sha256 } else { Mechanism::Sha512 };
    let (first, last) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    match keys.scram_start(mechanism, first) {
        Ok((login, server_first)) => {
            // server-first repeats the client's nonce, then the server's, salt, iterations.
            let text = std::str::from_utf8(&server_first).expect("server-first is UTF-8");
            let nonce = std::str::from_utf8(first).ok().and_then(|f| f.split(',').find_map(|a| a.strip_prefix("r=")));
            assert!(text.starts_with(&format!("r={}", nonce.expect("accepted without a nonce"))), "{text}");
            assert!(text.contains(",s=") && text.ends_with(",i=4096"), "{text}");
            assert!(server_first.len() <= first.len() + 256);
            if let Some(k) = login.known_key() {
                assert_eq!(k, KEY_ID, "an unknown key id is kept for logging");
            }
            if let Some(last) = last {
                // No input can prove the password: the proof depends on the random server nonce.
                match login.finish(last) {
                    Ok(_) => panic!("a SCRAM login succeeded without the password"),
                    Err(f) => {
                        assert!(f.error.to_string().len() < 120, "error texts are fixed");
                        assert!(f.server_final.as_ref().is_none_or(|e| e.starts_with(b"e=") && e.len() < 64));
                    }
                }
            }
        }
        Err(f) => {
            assert!(f.error.to_string().len() < 120, "error texts are fixed");
            assert!(f.known_key.is_none() && f.server_final.is_none());
        }
    }
}

// ---------------------------------------------------------------------------------------
// storage recovery

/// Input layout: byte 0 bit 0 clear: the rest is the only (active) segment of a shard,
/// whose recovery scans it and cuts a bad tail; set: the rest is a sealed segment
/// without an index (loaded by scanning) followed by an empty active segment. Bit 1 set:
/// the CRC-32C of every complete frame is recomputed first (so that mutations reach the
/// payload decoder behind the checksum). Then every entry is read back.
fn storage(data: &[u8]) {
    use loggate_storage::local::{LocalStore, LocalStoreOptions};
    use loggate_storage::{LogStorage, StreamId};

    let Some((&sel, segment)) = data.split_first() else { return };
    let mut owned;
    let segment = if sel & 2 != 0 {
        owned = segment.to_vec();
        fix_frame_crcs(&mut owned);
        &owned[..]
    } else {
        segment
    };
    let dir = tempfile::Builder::new().prefix("loggate-fuzz-st-").tempdir().expect("temp dir");
    let shard: PathBuf = dir.path().join("logstores").join(PROJECT).join("app").join("shard-0");
    std::fs::create_dir_all(&shard).expect("shard dir");
    std::fs::write(shard.join(format!("{:020}.log", 0)), segment).expect("write segment");
    if sel & 1 != 0 {
        // An upper bound of what the sealed segment may hold (a frame is > 8 bytes).
        let next = segment.len() / 8 + 1;
        std::fs::write(shard.join(format!("{next:020}.log")), b"").expect("write segment");
    }
    let opts = LocalStoreOptions { direct_io: false, flush_interval: None, ..LocalStoreOptions::default() };
    let stream = StreamId::new(PROJECT, "app");
    let Ok(store) = LocalStore::open(dir.path(), opts) else { return };
    runtime().block_on(async {
        if store.open_stream(&stream, 1).await.is_ok() {
            let (first, next) = store.offsets(&stream, 0).await.unwrap_or((0, 0));
            assert!(first <= next);
            if let Ok(logs) = store.read(&stream, 0, 0, 100_000).await {
                // Each stored frame is at least a length, a CRC and a few fields.
                assert!(logs.len() <= segment.len() / 8, "{} logs read from {} bytes", logs.len(), segment.len());
                let mut prev = None;
                for l in &logs {
                    assert!(prev.is_none_or(|p| l.offset > p), "offsets not increasing");
                    prev = Some(l.offset);
                }
            }
        }
        let _ = store.close().await;
    });
    drop(store);
    // Recovery may cut the file, never grow it.
    if sel & 1 == 0 {
        if let Ok(m) = std::fs::metadata(shard.join(format!("{:020}.log", 0))) {
            assert!(m.len() <= segment.len() as u64, "recovery grew the segment");
        }
    }
}

/// Recomputes the checksum of every complete local-logstore frame
/// (`u32 LE payload_len | u32 LE crc32c(payload) | payload`).
pub fn fix_frame_crcs(buf: &mut [u8]) {
    let mut pos = 0usize;
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        let Some(end) = (pos + 8).checked_add(len).filter(|&e| e <= buf.len()) else { return };
        let crc = crc32c::crc32c(&buf[pos + 8..end]);
        buf[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}
