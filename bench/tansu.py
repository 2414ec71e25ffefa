"""loggate against Tansu in one invocation (issue 15): `python3 bench/run.py --tansu`.

The same loadgen workload (1 producer unless --producers, 200 B records, lz4, acks=1,
linger.ms=5, batch.size=1000000, --duration seconds, --client-conf on top) runs against:
- loggate: its usual bench setup (SASL_SSL with TLS 1.3, the 2-shard `bench` logstore on the
  local, durable logstore), LOGGATE_BIN or target/release/loggate; --loggate-security
  PLAINTEXT runs it on a PLAINTEXT listener instead, the protocol Tansu is measured on;
- Tansu: `tansu broker --storage-engine memory://tansu/` on a PLAINTEXT loopback listener,
  topic `bench` created with 2 partitions (`tansu topic create`), a fresh broker per run.

The two alternate for --rounds rounds (the first server of a round alternates too: L T, T L,
L T, ...), each run measured by bench/run.py's run_workload (server utime+stime from /proc
between loadgen's "ready" and its last delivery, peak RSS, loadgen's latency histogram).
It prints one row per run, the means, and the loggate/Tansu ratios of records/s and of the
client's p99 delivery latency; the table goes to bench/results/<time>.md as well.

Tansu is not built here. Install it once with
    cargo install tansu --version 0.6.0 --features dynostore --root /work/tansu-bin --locked
and pass its path with --tansu-bin or TANSU_BIN (default /work/tansu-bin/bin/tansu).

Debian's librdkafka 2.0.2 (what bench/build.sh links) fails on Tansu 0.6 at once
("ApiVersionRequest failed: Local: Read underflow"); --librdkafka FILE runs loadgen on another
librdkafka.so.1 for both servers, e.g. the 2.16 that the confluent-kafka wheel bundles:
    python3 bench/run.py --tansu --librdkafka \
      $(python3 -c 'import confluent_kafka,glob,os; print(glob.glob(os.path.dirname(confluent_kafka.__file__) + ".libs/librdkafka*.so*")[0])')
The title line names the librdkafka version used.
"""

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run  # bench/run.py: run_workload, BASE, fmt, ...
from run import gateway

TOPIC = "bench"
INSTALL = "cargo install tansu --version 0.6.0 --features dynostore --root /work/tansu-bin --locked"
# Tansu reads these from the environment (and a .env file in its working directory, which is
# the run's fresh temp dir): none may leak in from the caller's environment.
TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
             "OTEL_EXPORTER_OTLP_ENDPOINT", "DATA_LAKE")


class Tansu:
    """A Tansu broker on 127.0.0.1 with in-memory storage and one topic, for run_workload."""

    ca = None

    def __init__(self, workdir, binary, partitions=run.BENCH_SHARDS, topic=TOPIC):
        self.dir = Path(workdir)
        self.binary = str(binary)
        self.partitions = partitions
        self.topic = topic
        self.port = gateway.free_port()
        self.stderr_path = self.dir / "tansu.log"  # stdout and stderr
        self.proc = None

    def url(self):
        return "tcp://127.0.0.1:%d" % self.port

    def bootstrap(self, proto="PLAINTEXT"):
        if proto != "PLAINTEXT":
            raise ValueError("the Tansu run is PLAINTEXT only, not %s" % proto)
        return "127.0.0.1:%d" % self.port

    def start(self):
        env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV}
        env.setdefault("RUST_LOG", "warn")
        log = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--storage-engine", "memory://tansu/", "--listener-url", self.url(),
             "--advertised-listener-url", self.url(), "--silent"],
            cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("tansu broker exited (%s): %s" % (self.proc.returncode, self.log_text()[-3000:]))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("tansu broker did not listen: " + self.log_text()[-3000:])
                time.sleep(0.05)
        create = subprocess.run([self.binary, "topic", "create", self.topic, "--partitions", str(self.partitions),
                                 "--broker", self.url()], cwd=self.dir, env=env, capture_output=True, text=True,
                                timeout=60)
        if create.returncode != 0:
            raise RuntimeError("tansu topic create failed (%s): %s %s" % (create.returncode, create.stdout, create.stderr))
        return self

    # The same as a loggate Gateway's: terminate, then kill after 15 s; the log file's text.
    stop = gateway.Gateway.stop
    log_text = gateway.Gateway.log_text

    def metrics(self):
        return {}  # no Prometheus endpoint: the server-side latency columns stay empty


COLUMNS = ["round", "server", "records/s", "MB/s", "lat p50 ms", "lat p99 ms", "lat p999 ms", "rtt p99 ms",
           "server ns/record", "server cores used", "server CPU s", "peak RSS MiB", "client CPU s", "errors"]
MEANS = COLUMNS[2:]


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def librdkafka_version(path):
    """rd_kafka_version_str() of a librdkafka shared object (what loadgen will load)."""
    lib = ctypes.CDLL(str(path))
    lib.rd_kafka_version_str.restype = ctypes.c_char_p
    return lib.rd_kafka_version_str().decode()


def use_librdkafka(path):
    """Makes loadgen (started with this process's environment) load `path` as librdkafka.so.1."""
    libdir = Path(tempfile.mkdtemp(prefix="loadgen-librdkafka-"))
    atexit.register(shutil.rmtree, libdir, ignore_errors=True)
    (libdir / "librdkafka.so.1").symlink_to(Path(path).resolve())
    os.environ["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(libdir), os.environ.get("LD_LIBRARY_PATH")]))
    return libdir


def compare(a):
    binary = Path(a.tansu_bin)
    needs = [(gateway.BIN, "cargo build --release -p loggate (or set LOGGATE_BIN)"), (run.LOADGEN, "bench/build.sh"),
             (binary, INSTALL + "  (then --tansu-bin /work/tansu-bin/bin/tansu or TANSU_BIN)")]
    for need, how in needs:
        if not Path(need).exists():
            sys.exit("missing %s: %s" % (need, how))
    if a.librdkafka:
        if not Path(a.librdkafka).exists():
            sys.exit("missing %s (--librdkafka)" % a.librdkafka)
        use_librdkafka(a.librdkafka)
    rdkafka = librdkafka_version(a.librdkafka or "librdkafka.so.1")
    # A SIGTERM runs the finally blocks too, so no broker outlives this process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    common = dict(producers=a.producers or 1, client_conf=list(a.client_conf))
    servers = {
        "loggate": (dict(run.BASE, security=a.loggate_security, **common), None),
        "tansu": (dict(run.BASE, security="PLAINTEXT", **common), lambda work: Tansu(work, binary)),
    }
    server_env = dict(kv.split("=", 1) for kv in a.server_env)
    storage = dict(kv.split("=", 1) for kv in a.storage)
    out = Path(a.out) if a.out else run.HERE / "results" / time.strftime("%Y%m%d-%H%M%S.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    jsonl = out.with_suffix(".jsonl")
    w = servers["loggate"][0]
    title = ("loggate (%s, %s) vs Tansu 0.6 (PLAINTEXT, memory://): loadgen on librdkafka %s, %d producer(s), %d B, "
             "%s, acks=%s, %s s per run, %d rounds; loggate %s, tansu %s; load average %s"
             % (w["security"], w["backend"], rdkafka, w["producers"], w["size"], w["codec"], w["acks"], a.duration,
                a.rounds, gateway.BIN, binary, "%.2f %.2f %.2f" % os.getloadavg()))
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    print(title + "\n\n" + header, flush=True)
    with open(out, "a") as f:
        f.write("\n<!-- %s -->\n%s\n\n%s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), title, header))
    rows = {"loggate": {}, "tansu": {}}
    for r in range(1, a.rounds + 1):
        order = ["loggate", "tansu"] if r % 2 else ["tansu", "loggate"]
        for server in order:
            w, make = servers[server]
            name = "%s-r%d%s" % (server, r, a.label)
            try:
                row, detail = run.run_workload(name, w, a.duration, keep=a.keep, perf=a.perf, callgraph=a.callgraph,
                                               server_env=server_env if make is None else None,
                                               storage=storage if make is None else None, server=make)
            except Exception as e:  # keep going: the other rounds still give a comparison
                print("%s round %d failed: %s" % (server, r, e), file=sys.stderr)
                continue
            row = dict(row, round=r, server=server)
            rows[server][r] = row
            line = "| " + " | ".join(fmt_cell(row.get(c)) for c in COLUMNS) + " |"
            print(line, flush=True)
            with open(out, "a") as f:
                f.write(line + "\n")
            with open(jsonl, "a") as f:
                f.write(json.dumps(dict(detail, server=server, round=r)) + "\n")
    means = {}
    lines = []
    for server in ("loggate", "tansu"):
        done = list(rows[server].values())
        if done:
            means[server] = {c: mean([row[c] for row in done]) for c in MEANS}
            lines.append("| mean (%d) | %s | " % (len(done), server) + " | ".join(
                fmt_cell(round(means[server][c], 2) if means[server][c] is not None else None) for c in MEANS) + " |")
    both = [r for r in rows["loggate"] if r in rows["tansu"]]
    lines.append("")
    for r in both:
        l, t = rows["loggate"][r], rows["tansu"][r]
        lines.append("round %d: loggate/Tansu records/s %s, p99 %s, server ns/record %s"
                     % (r, ratio(l["records/s"], t["records/s"]), ratio(l["lat p99 ms"], t["lat p99 ms"]),
                        ratio(l["server ns/record"], t["server ns/record"])))
    if len(means) == 2:
        l, t = means["loggate"], means["tansu"]
        rps, p99 = ratio(l["records/s"], t["records/s"]), ratio(l["lat p99 ms"], t["lat p99 ms"])
        lines.append("means: loggate/Tansu records/s %s (target >= 1: %s), client p99 %s (target <= 2: %s), "
                     "server ns/record %s"
                     % (rps, "met" if rps >= 1 else "missed", p99, "met" if p99 <= 2 else "missed",
                        ratio(l["server ns/record"], t["server ns/record"])))
    lines.append("load average at the end: %s" % " ".join("%.2f" % x for x in os.getloadavg()))
    text = "\n".join(lines)
    print(text)
    with open(out, "a") as f:
        f.write(text + "\n")
    print("\nrows appended to %s (details in %s)" % (out, jsonl), file=sys.stderr)
    if len(means) < 2:
        sys.exit("no comparison: a server failed in every round")


def fmt_cell(v):
    return "–" if v is None else run.fmt(v)
