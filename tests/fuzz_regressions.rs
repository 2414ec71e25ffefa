//! Replays every stored fuzz input (fuzz/corpus/<target>/ and fuzz/regressions/<target>/)
//! through the same checks the fuzz targets make (fuzz/src/harness.rs: no panic, the
//! allocation bound, the time bound, bounded outputs), without instrumentation.
//!
//! The inputs run in child processes (this test binary re-run with `--exact
//! fuzz_replay_child`), so that an input that aborts (the counting allocator aborts at
//! the first allocation past the bound, before asking the system for it) or hangs is
//! reported by name and the others still run. Inputs in fuzz/regressions/pending/<target>/
//! exercise defects that are being fixed elsewhere: they are run and reported, but do not
//! fail this test; once one passes, move it to fuzz/regressions/<target>/.
//!
//! `LOGGATE_FUZZ_WRITE_SEEDS=<dir> cargo test --release --test fuzz_regressions
//! write_seeds` writes the seed inputs each target's corpus started from (FUZZING.md).

#[path = "../fuzz/src/alloc.rs"]
mod alloc;
#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::Target;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

const CHILD_ENV: &str = "LOGGATE_FUZZ_REPLAY";
/// A child that prints nothing for this long is running an input that hangs.
const HANG: Duration = Duration::from_secs(20);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files of `dir/<target>/` for every target, sorted.
fn inputs(dir: &Path) -> Vec<(Target, PathBuf)> {
    let mut out = Vec::new();
    for &t in harness::TARGETS {
        let Ok(rd) = std::fs::read_dir(dir.join(t.name())) else { continue };
        let mut files: Vec<PathBuf> =
            rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        out.extend(files.into_iter().map(|p| (t, p)));
    }
    out
}

/// Why one input failed.
#[derive(Debug)]
struct Failure {
    target: Target,
    path: PathBuf,
    why: String,
}

/// Runs `list` in child processes, a new child after each one that dies or hangs.
fn replay(list: &[(Target, PathBuf)], tmp: &Path) -> (usize, Vec<Failure>) {
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut next = 0;
    while next < list.len() {
        let list_file = tmp.join("list");
        let text: String =
            list[next..].iter().map(|(t, p)| format!("{}\t{}\n", t.name(), p.display())).collect();
        std::fs::write(&list_file, text).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "fuzz_replay_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &list_file)
            .env("TMPDIR", tmp)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("re-run the test binary");
        let mut stderr = child.stderr.take().unwrap();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let base = next;
        let mut running: Option<usize> = None;
        let mut done = false;
        let mut hung = false;
        loop {
            match rx.recv_timeout(HANG) {
                Ok(line) => {
                    let mut parts = line.splitn(3, '\t');
                    let (Some(kind), Some(idx)) = (parts.next(), parts.next()) else { continue };
                    let Ok(idx) = idx.parse::<usize>() else { continue };
                    let idx = base + idx;
                    match kind {
                        "RUN" => running = Some(idx),
                        "OK" => {
                            passed += 1;
                            running = None;
                            next = idx + 1;
                        }
                        "FAIL" => {
                            let (t, p) = &list[idx];
                            failures.push(Failure {
                                target: *t,
                                path: p.clone(),
                                why: parts.next().unwrap_or("").to_string(),
                            });
                            running = None;
                            next = idx + 1;
                        }
                        "DONE" => {
                            done = true;
                        }
                        _ => {}
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    hung = true;
                    let _ = child.kill();
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().unwrap();
        let err = err_thread.join().unwrap_or_default();
        if done && running.is_none() {
            next = list.len();
            continue;
        }
        let idx = running.unwrap_or(next);
        if idx >= list.len() {
            break;
        }
        let (t, p) = &list[idx];
        let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("loggate-fuzz:")).collect();
        let tail = if ours.is_empty() {
            let all: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            all[all.len().saturating_sub(3)..].join(" | ")
        } else {
            ours.join(" | ")
        };
        let why = if hung {
            format!("no progress for {HANG:?} (hang); stderr: {tail}")
        } else {
            format!("child died ({status}); stderr: {tail}")
        };
        failures.push(Failure { target: *t, path: p.clone(), why });
        next = idx + 1;
    }
    (passed, failures)
}

#[test]
fn fuzz_regressions() {
    let dir = fuzz_dir();
    let mut enforced = inputs(&dir.join("corpus"));
    enforced.extend(inputs(&dir.join("regressions")));
    let pending = inputs(&dir.join("regressions").join("pending"));
    assert!(!enforced.is_empty(), "no stored fuzz inputs under {}", dir.display());
    // Stores on tmpfs where there is one: the inputs fsync.
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let start = Instant::now();
    let (passed, failures) = replay(&enforced, tmp.path());
    println!("fuzz regressions: {passed} of {} stored inputs passed in {:?}", enforced.len(), start.elapsed());

    let (pending_passed, pending_failures) = replay(&pending, tmp.path());
    for f in &pending_failures {
        println!("pending (known, not failing this test): {} {}: {}", f.target.name(), f.path.display(), f.why);
    }
    if pending_passed > 0 {
        let failing: std::collections::HashSet<&PathBuf> = pending_failures.iter().map(|f| &f.path).collect();
        for (t, p) in &pending {
            if !failing.contains(p) {
                println!(
                    "pending input now passes: {} {} (move it to fuzz/regressions/{}/)",
                    t.name(),
                    p.display(),
                    t.name()
                );
            }
        }
    }
    println!("fuzz regressions: {pending_passed} of {} pending inputs pass", pending.len());

    let report: Vec<String> =
        failures.iter().map(|f| format!("{} {}: {}", f.target.name(), f.path.display(), f.why)).collect();
    assert!(failures.is_empty(), "{} stored fuzz inputs fail:\n{}", failures.len(), report.join("\n"));
}

/// `LOGGATE_FUZZ_TRIAGE=<target>:<dir>`: runs every file of `dir` as an input of
/// `target` (e.g. libFuzzer's findings in fuzz/artifacts/<target>) and prints one line per
/// failing file: why, and where (FUZZING.md). Does nothing when it is unset.
#[test]
fn triage() {
    let Ok(spec) = std::env::var("LOGGATE_FUZZ_TRIAGE") else { return };
    let (t, dir) = spec.split_once(':').expect("LOGGATE_FUZZ_TRIAGE=<target>:<dir>");
    let target = Target::from_name(t).expect("known target");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let list: Vec<(Target, PathBuf)> = files.into_iter().map(|p| (target, p)).collect();
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let (passed, failures) = replay(&list, tmp.path());
    for f in &failures {
        println!("TRIAGE\t{}\t{}", f.path.display(), f.why);
    }
    println!("triage: {passed} of {} pass", list.len());
}

/// The child side of [`fuzz_regressions`]: runs the inputs listed in the file named by
/// `LOGGATE_FUZZ_REPLAY`, one line of output per step. Does nothing when it is unset.
#[test]
fn fuzz_replay_child() {
    let Ok(list) = std::env::var(CHILD_ENV) else { return };
    let text = std::fs::read_to_string(list).unwrap();
    // Panics are reported on stdout; the default hook's message is redundant.
    std::panic::set_hook(Box::new(|_| {}));
    for (i, line) in text.lines().enumerate() {
        let Some((t, p)) = line.split_once('\t') else { continue };
        let target = Target::from_name(t).unwrap();
        let data = std::fs::read(p).unwrap();
        println!("RUN\t{i}");
        match std::panic::catch_unwind(|| harness::run(target, &data, true)) {
            Ok(o) => println!("OK\t{i}\t{} of {} bytes, {:?} ({:?} CPU)", o.peak, o.bound, o.elapsed, o.cpu),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                println!("FAIL\t{i}\tpanic: {}", msg.replace('\n', " "));
            }
        }
    }
    println!("DONE\t0");
}

/// Writes the seed inputs of every target into `$LOGGATE_FUZZ_WRITE_SEEDS/<target>/`
/// (does nothing when it is unset): valid requests of every API and version the server
/// parses, the record fixtures of crates/records, their compressed payloads, PLAIN
/// tokens and a real segment file.
#[test]
fn write_seeds() {
    let Ok(out) = std::env::var("LOGGATE_FUZZ_WRITE_SEEDS") else { return };
    seeds::write_all(Path::new(&out));
}

mod seeds {
    use std::path::Path;

    use bytes::Bytes;

    use super::harness::{self, Target};

    fn put(out: &Path, t: Target, name: &str, data: &[u8]) {
        let dir = out.join(t.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/records/tests/fixtures").join(name);
        std::fs::read(p).unwrap()
    }

    /// The fixture files of crates/records.
    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/records/tests/fixtures");
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    }

    /// Kafka primitive types, classic or compact (flexible versions).
    struct Enc {
        b: Vec<u8>,
        flexible: bool,
    }

    impl Enc {
        fn new(flexible: bool) -> Self {
            Enc { b: Vec::new(), flexible }
        }
        fn uvarint(&mut self, mut v: u32) {
            while v >= 0x80 {
                self.b.push((v as u8) | 0x80);
                v >>= 7;
            }
            self.b.push(v as u8);
        }
        fn i8(&mut self, v: i8) -> &mut Self {
            self.b.push(v as u8);
            self
        }
        fn i16(&mut self, v: i16) -> &mut Self {
            self.b.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(&mut self, v: i32) -> &mut Self {
            self.b.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(&mut self, v: i64) -> &mut Self {
            self.b.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn raw(&mut self, v: &[u8]) -> &mut Self {
            self.b.extend_from_slice(v);
            self
        }
        /// A (nullable) string.
        fn str(&mut self, s: Option<&str>) -> &mut Self {
            match (s, self.flexible) {
                (None, true) => self.uvarint(0),
                (None, false) => {
                    self.i16(-1);
                }
                (Some(s), true) => {
                    self.uvarint(s.len() as u32 + 1);
                    self.b.extend_from_slice(s.as_bytes());
                }
                (Some(s), false) => {
                    self.i16(s.len() as i16);
                    self.b.extend_from_slice(s.as_bytes());
                }
            }
            self
        }
        /// (Nullable) bytes.
        fn bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
            match (v, self.flexible) {
                (None, true) => self.uvarint(0),
                (None, false) => {
                    self.i32(-1);
                }
                (Some(v), true) => {
                    self.uvarint(v.len() as u32 + 1);
                    self.b.extend_from_slice(v);
                }
                (Some(v), false) => {
                    self.i32(v.len() as i32);
                    self.b.extend_from_slice(v);
                }
            }
            self
        }
        /// An array length (`None`: null).
        fn len(&mut self, n: Option<usize>) -> &mut Self {
            match (n, self.flexible) {
                (None, true) => self.uvarint(0),
                (None, false) => {
                    self.i32(-1);
                }
                (Some(n), true) => self.uvarint(n as u32 + 1),
                (Some(n), false) => {
                    self.i32(n as i32);
                }
            }
            self
        }
        /// An empty tagged-field section (flexible versions only).
        fn tags(&mut self) -> &mut Self {
            if self.flexible {
                self.b.push(0);
            }
            self
        }
    }

    /// The frame after api key and version: correlation id, client id, tagged fields
    /// for flexible versions, body.
    fn frame_rest(flexible: bool, body: &[u8]) -> Vec<u8> {
        let mut e = Enc::new(false);
        e.i32(7).str(Some("fuzz-seed"));
        if flexible {
            e.b.push(0);
        }
        e.raw(body);
        e.b
    }

    /// A dispatch input: selector byte (API index, session state), version, frame rest.
    fn dispatch_input(api_index: u8, state: u8, version: i16, flexible: bool, body: &[u8]) -> Vec<u8> {
        let mut v = vec![api_index | (state << 3), version as u8];
        v.extend_from_slice(&frame_rest(flexible, body));
        v
    }

    /// A Produce body of any version: one topic, one partition.
    fn produce(version: i16, topic: &str, partition: i32, records: &[u8], acks: i16) -> Vec<u8> {
        let mut e = Enc::new(version >= 9);
        if version >= 3 {
            e.str(None);
        }
        e.i16(acks).i32(1000).len(Some(1)).str(Some(topic)).len(Some(1)).i32(partition).bytes(Some(records));
        e.tags().tags().tags();
        e.b
    }

    /// The compressed payload of a fixture's first entry: the records section of a v2
    /// batch, the value of a v0/v1 wrapper message.
    fn payload(entry: &[u8]) -> Option<(u8, Vec<u8>)> {
        match *entry.get(16)? {
            2 => Some((2, entry.get(61..)?.to_vec())),
            m @ (0 | 1) => {
                let mut pos = 18 + if m == 1 { 8 } else { 0 };
                let klen = i32::from_be_bytes(entry.get(pos..pos + 4)?.try_into().ok()?);
                pos += 4 + usize::try_from(klen).unwrap_or(0);
                let vlen = i32::from_be_bytes(entry.get(pos..pos + 4)?.try_into().ok()?);
                pos += 4;
                Some((m, entry.get(pos..pos + usize::try_from(vlen).ok()?)?.to_vec()))
            }
            _ => None,
        }
    }

    pub fn write_all(out: &Path) {
        // header
        for (api, version, flexible) in [(0i16, 0i16, false), (0, 9, true), (18, 3, true), (3, 12, true), (17, 1, false), (36, 2, true), (22, 4, true)] {
            let mut h = Vec::new();
            h.extend_from_slice(&api.to_be_bytes());
            h.extend_from_slice(&version.to_be_bytes());
            h.extend_from_slice(&frame_rest(flexible, b""));
            put(out, Target::Header, &format!("api{api}_v{version}"), &h);
        }
        put(out, Target::Header, "null_client_id", &[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff]);
        put(out, Target::Header, "tagged_fields", &[0, 0, 0, 9, 0, 0, 0, 1, 0, 1, b'x', 2, 0, 1, 7, 1, 0]);

        // dispatch: APIs by index into harness::APIS = [0, 3, 17, 36, 18, 22, 10, 1]
        let v2 = fixture("v2_none.bin");
        let v2_json = {
            let rec = b"{\"level\":\"info\",\"msg\":\"hello\",\"n\":[1,2]}";
            let mut r = Vec::new();
            // one record: length, attributes, ts delta, offset delta, key -1, value, 0 headers
            let mut body = vec![0u8, 0, 0, 1];
            body.push((rec.len() as u8) << 1);
            body.extend_from_slice(rec);
            body.push(0);
            r.push((body.len() as u8) << 1);
            r.extend_from_slice(&body);
            harness::v2_batch(0, 1, &r)
        };
        for version in 0..=9i16 {
            let (records, name): (Vec<u8>, &str) = match version {
                0 | 1 => (fixture("m0_none.bin"), "m0"),
                2 => (fixture("m1_gzip.bin"), "m1gz"),
                _ => (v2.clone(), "v2"),
            };
            let body = produce(version, "app", 0, &records, -1);
            put(out, Target::Dispatch, &format!("produce_v{version}_{name}"), &dispatch_input(0, 0, version, version >= 9, &body));
        }
        for (name, topic, records) in [("json", "app.json", v2_json.clone()), ("part", "p", v2.clone())] {
            let body = produce(9, topic, 1, &records, 1);
            put(out, Target::Dispatch, &format!("produce_v9_{name}"), &dispatch_input(0, 0, 9, true, &body));
        }
        for f in ["v2_lz4.bin", "v2_zstd.bin", "v2_snappy.bin", "v2_many_gzip.bin"] {
            let body = produce(7, "app", 0, &fixture(f), 0);
            put(out, Target::Dispatch, &format!("produce_v7_{f}"), &dispatch_input(0, 4, 7, false, &body));
        }
        for version in 0..=12i16 {
            let fl = version >= 9;
            let mut e = Enc::new(fl);
            e.len(Some(2));
            for t in ["app", "app.json"] {
                if version >= 10 {
                    e.raw(&[0; 16]);
                }
                e.str(Some(t)).tags();
            }
            if version >= 4 {
                e.i8(1);
            }
            if (8..=10).contains(&version) {
                e.i8(0);
            }
            if version >= 8 {
                e.i8(0);
            }
            e.tags();
            put(out, Target::Dispatch, &format!("metadata_v{version}"), &dispatch_input(1, 0, version, fl, &e.b));
        }
        {
            let mut e = Enc::new(false);
            e.len(None).i8(1).i8(0).i8(0);
            put(out, Target::Dispatch, "metadata_all_v8", &dispatch_input(1, 0, 8, false, &e.b));
        }
        for version in 0..=1i16 {
            let mut e = Enc::new(false);
            e.str(Some("PLAIN"));
            put(out, Target::Dispatch, &format!("sasl_handshake_v{version}"), &dispatch_input(2, 5, version, false, &e.b));
        }
        let token = format!("\0{}\0{}#{}", harness::PROJECT, harness::KEY_ID, harness::KEY_SECRET);
        for version in 0..=2i16 {
            let mut e = Enc::new(version >= 2);
            e.bytes(Some(token.as_bytes())).tags();
            put(out, Target::Dispatch, &format!("sasl_authenticate_v{version}"), &dispatch_input(3, 6, version, version >= 2, &e.b));
        }
        put(out, Target::Dispatch, "raw_token", &[7 << 3, 0].iter().copied().chain(token.bytes()).collect::<Vec<u8>>());
        for version in 0..=4i16 {
            let mut e = Enc::new(version >= 3);
            if version >= 3 {
                e.str(Some("fuzz")).str(Some("1.0")).tags();
            }
            put(out, Target::Dispatch, &format!("api_versions_v{version}"), &dispatch_input(4, 5, version, version >= 3, &e.b));
        }
        for version in 0..=4i16 {
            let mut e = Enc::new(version >= 2);
            e.str(None).i32(60000);
            if version >= 3 {
                e.i64(-1).i16(-1);
            }
            e.tags();
            put(out, Target::Dispatch, &format!("init_producer_id_v{version}"), &dispatch_input(5, 0, version, version >= 2, &e.b));
        }
        for version in 0..=4i16 {
            let mut e = Enc::new(version >= 3);
            if version <= 3 {
                e.str(Some("g"));
            }
            if version >= 1 {
                e.i8(0);
            }
            if version >= 4 {
                e.len(Some(1)).str(Some("g"));
            }
            e.tags();
            put(out, Target::Dispatch, &format!("find_coordinator_v{version}"), &dispatch_input(6, 0, version, version >= 3, &e.b));
        }
        put(out, Target::Dispatch, "fetch_v4", &dispatch_input(7, 0, 4, false, &[]));

        // session: frames in sequence from the start of SASL
        let whole = |api: i16, version: i16, flexible: bool, body: &[u8]| {
            let mut f = api.to_be_bytes().to_vec();
            f.extend_from_slice(&version.to_be_bytes());
            f.extend_from_slice(&frame_rest(flexible, body));
            f
        };
        let seq = |frames: &[Vec<u8>]| {
            let mut v = Vec::new();
            for f in frames {
                v.extend_from_slice(&(f.len() as u16).to_be_bytes());
                v.extend_from_slice(f);
            }
            v
        };
        let api_versions = whole(18, 3, true, &{
            let mut e = Enc::new(true);
            e.str(Some("fuzz")).str(Some("1.0")).tags();
            e.b
        });
        let handshake = |v: i16| {
            let mut e = Enc::new(false);
            e.str(Some("PLAIN"));
            whole(17, v, false, &e.b)
        };
        let authenticate = {
            let mut e = Enc::new(true);
            e.bytes(Some(token.as_bytes())).tags();
            whole(36, 2, true, &e.b)
        };
        let produce9 = whole(0, 9, true, &produce(9, "app", 0, &v2, -1));
        let produce2 = whole(0, 2, false, &produce(2, "app", 0, &fixture("m1_none.bin"), 1));
        let init = whole(22, 4, true, &{
            let mut e = Enc::new(true);
            e.str(None).i32(60000).i64(-1).i16(-1).tags();
            e.b
        });
        put(out, Target::Session, "v1_authenticate_produce",
            &seq(&[api_versions.clone(), handshake(1), authenticate.clone(), init, produce9.clone()]));
        put(out, Target::Session, "v0_raw_token_produce",
            &seq(&[handshake(0), token.as_bytes().to_vec(), produce2]));
        put(out, Target::Session, "produce_before_auth", &seq(&[api_versions, produce9]));

        // records and codecs
        for (name, data) in fixtures() {
            let mut plain = vec![0u8];
            plain.extend_from_slice(&data);
            put(out, Target::Records, &name, &plain);
            let codec = match name.split('_').nth(1).unwrap_or("") {
                "gzip" => Some(Target::CodecGzip),
                "snappy" => Some(Target::CodecSnappy),
                "lz4" => Some(Target::CodecLz4),
                "zstd" => Some(Target::CodecZstd),
                "big" | "many" => match name.rsplit('_').next().unwrap_or("") {
                    "gzip" => Some(Target::CodecGzip),
                    "snappy" => Some(Target::CodecSnappy),
                    "lz4" => Some(Target::CodecLz4),
                    "zstd" => Some(Target::CodecZstd),
                    _ => None,
                },
                _ => None,
            };
            if let (Some(t), Some((magic, p))) = (codec, payload(&data)) {
                if p.len() > 64 * 1024 {
                    continue;
                }
                let count = std::cmp::min(
                    if magic == 2 { i32::from_be_bytes(data[57..61].try_into().unwrap()) } else { 1 },
                    64,
                );
                let sel = match magic {
                    2 => ((count - 1) as u8) << 2,
                    0 => 2,
                    _ => 3,
                };
                let mut input = vec![sel];
                input.extend_from_slice(&p);
                put(out, t, &name, &input);
            }
        }

        // plain
        for (name, tok) in [
            ("ok", token.clone()),
            ("authzid", format!("{0}\0{0}\0{1}#{2}", harness::PROJECT, harness::KEY_ID, harness::KEY_SECRET)),
            ("wrong_secret", format!("\0{}\0{}#nope", harness::PROJECT, harness::KEY_ID)),
            ("no_hash", format!("\0{}\0password", harness::PROJECT)),
            ("two_parts", format!("{}\0{}#{}", harness::PROJECT, harness::KEY_ID, harness::KEY_SECRET)),
        ] {
            put(out, Target::Plain, name, tok.as_bytes());
        }

        // scram: client-first NUL client-final
        let user = format!("{}#{}", harness::PROJECT, harness::KEY_ID);
        for (name, sel, msg) in [
            ("first_only", 0u8, format!("n,,n={user},r=fyko+d2lbbFgONRv9qkxdawL")),
            ("authzid", 1, format!("n,a={user},n={user},r=abc")),
            ("both", 0, format!("n,,n={user},r=abc\0c=biws,r=abcXYZ,p=dHpiYw==")),
            ("both_512", 1, format!("n,,n={user},r=abc\0c=biws,r=abc,p=AAAA")),
            ("unknown_key", 0, "n,,n=fz#NOPE,r=abc\0c=biws,r=abc,p=AAAA".to_string()),
            ("escaped", 0, "n,,n=fz=2C=3D#FZKEY,r=abc,ext=1".to_string()),
            ("binding", 0, format!("p=tls-unique,,n={user},r=abc")),
        ] {
            let mut input = vec![sel];
            input.extend_from_slice(msg.as_bytes());
            put(out, Target::Scram, name, &input);
        }

        // storage: a real segment written by the local logstore
        segment_seeds(out);
    }

    fn segment_seeds(out: &Path) {
        use loggate_storage::local::{LocalStore, LocalStoreOptions};
        use loggate_storage::{Durability, EntryBatch, LogEntry, LogStorage, StreamId};

        let dir = tempfile::tempdir().unwrap();
        let opts = LocalStoreOptions { direct_io: false, ..LocalStoreOptions::default() };
        let store = LocalStore::open(dir.path(), opts).unwrap();
        let stream = StreamId::new("p", "l");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            store.open_stream(&stream, 1).await.unwrap();
            let mut batch = EntryBatch::new(1 << 20);
            for n in 0..4u8 {
                batch
                    .push(&LogEntry {
                        event_time_ms: 1_700_000_000_000 + i64::from(n),
                        arrival_time_ms: 1_700_000_000_500,
                        source: Bytes::from_static(b"127.0.0.1:1"),
                        key: (n % 2 == 0).then(|| Bytes::from(vec![b'k', n])),
                        headers: vec![(Bytes::from_static(b"h"), (n == 1).then(|| Bytes::from_static(b"v")))],
                        fields: vec![(Bytes::from_static(b"content"), Bytes::from(format!("log line {n}")))],
                        tag: (n == 0).then(|| Bytes::from_static(b"tag")),
                    })
                    .unwrap();
            }
            store.append(&stream, 0, batch, Durability::Synced).await.unwrap();
            store.close().await.unwrap();
        });
        let seg = std::fs::read(dir.path().join("logstores/p/l/shard-0").join(format!("{:020}.log", 0))).unwrap();
        for (sel, name) in [(0u8, "active"), (1, "sealed")] {
            let mut input = vec![sel];
            input.extend_from_slice(&seg);
            put(out, Target::Storage, name, &input);
            // A torn tail.
            put(out, Target::Storage, &format!("{name}_torn"), &input[..input.len() - 5]);
        }
    }
}
