#!/usr/bin/env python3
"""Benchmark loggate with a real librdkafka client (bench/bin/loadgen).

For each named workload: start target/release/loggate with a generated configuration in a
fresh temp dir (optionally pinned with taskset), run loadgen against it, sample the server's
utime+stime from /proc/<pid>/stat when loadgen reports it is connected and again when it
reports its last delivery (so connection setup is not counted), read the peak RSS (VmHWM)
from /proc/<pid>/status, stop the server, and print a markdown table row.

    cargo build --release -p loggate && bench/build.sh
    cargo build --release --example produce_replay   # for the replay-* workloads
    python3 bench/run.py                    # the default set (about 3 minutes)
    python3 bench/run.py raw-lz4 json-lz4   # chosen workloads
    python3 bench/run.py replay-raw-lz4 replay-raw-lz4-1core replay-raw-lz4-2cores
    python3 bench/run.py --list
    python3 bench/run.py --tansu --rounds 3   # loggate against Tansu, alternating (bench/tansu.py)

Workloads with "client": "replay" (replay-*, not in the default set) load the server with
target/release/examples/produce_replay instead: pre-built Produce requests replayed over 8
pipelined connections, at a client CPU cost per record far below librdkafka's, so they
show the server's capacity and its 1-core to 2-core scaling on a machine where the real
client would saturate first. Their "client CPU s" is the replay tool's.

Rows are also appended to bench/results/<timestamp>.md and the raw JSON to .jsonl beside it.
Numbers from one run are comparable with each other; across runs on a shared machine they
are noisy.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import gateway  # noqa: E402  (tests/integration/gateway.py: config generation, keys, ports)

LOADGEN = HERE / "bin" / "loadgen"
REPLAY = ROOT / "target" / "release" / "examples" / "produce_replay"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_SHARDS = 2

# The benchmark logstore: "bench" (raw) and "bench.json" are the same logstore.
if ("bench", BENCH_SHARDS, "round_robin") not in gateway.PROJECTS["demo"]:
    gateway.PROJECTS["demo"].append(("bench", BENCH_SHARDS, "round_robin"))
if not any(l[0] == "bench1" for l in gateway.PROJECTS["demo"]):
    gateway.PROJECTS["demo"].append(("bench1", 1, "round_robin"))

BASE = dict(topic="bench", size=200, codec="lz4", acks="1", linger_ms=5, batch_size=1_000_000,
            security="SASL_SSL", producers=2, rate=0, idle=0, cpus=None, client_cpus=None, duration=None,
            client="loadgen", records_per_batch=2000, inflight=4, backend="local")

# name -> (description, overrides). "half_of" = run at half the records/s measured by that
# workload earlier in the same invocation.
WORKLOADS = {
    "raw-lz4": ("target: raw topic, lz4, acks=1, SASL_SSL, 200 B", {}),
    "json-lz4": ("`.json` topic, ~8-field objects", {"topic": "bench.json"}),
    "raw-lz4-acks-all": ("acks=-1 (fsync, group commit)", {"acks": "-1"}),
    "raw-none": ("no compression", {"codec": "none"}),
    "raw-gzip": ("gzip", {"codec": "gzip"}),
    "raw-snappy": ("snappy", {"codec": "snappy"}),
    "raw-zstd": ("zstd", {"codec": "zstd"}),
    "idem-1p-10": ("10 idempotent producers, acks=-1, all on one partition", {"topic": "bench1", "producers": 10, "acks": "-1", "client_conf": ["enable.idempotence=true"]}),
    "acks-all-1p-10": ("the same 10 producers without idempotence", {"topic": "bench1", "producers": 10, "acks": "-1"}),
    "raw-lz4-plaintext": ("PLAINTEXT listener (no TLS, no SASL)", {"security": "PLAINTEXT"}),
    "raw-lz4-half": ("acks=1 at half of raw-lz4's peak rate", {"half_of": "raw-lz4"}),
    "raw-lz4-acks-all-half": ("acks=-1 at half of raw-lz4-acks-all's peak", {"acks": "-1", "half_of": "raw-lz4-acks-all"}),
    "json-lz4-half": ("`.json` at half of json-lz4's peak", {"topic": "bench.json", "half_of": "json-lz4"}),
    "raw-lz4-1core": ("server pinned to 1 core (taskset -c 0)", {"cpus": "0"}),
    "raw-lz4-2cores": ("server pinned to 2 cores (taskset -c 0,1)", {"cpus": "0,1"}),
    "raw-lz4-split": ("server on core 0, loadgen on core 1: one core each", {"cpus": "0", "client_cpus": "1"}),
    "conn-1000": ("1,000 idle producers (1 record/s each) + 2 loaded", {"idle": 1000}),
    # Into a ClickHouse 18.16 server started for the run (tests/integration/clickhouse.py):
    # "ClickHouse ns/record" is that server's CPU.
    "ch-raw-lz4": ("raw-lz4 into ClickHouse (one local clickhouse-server)", {"backend": "clickhouse"}),
    "ch-json-lz4": ("json-lz4 into ClickHouse", {"backend": "clickhouse", "topic": "bench.json"}),
    # produce_replay instead of librdkafka: 2,000 records a request, 4 requests in flight per
    # connection, 8 connections. The server answers one connection's requests one at a time
    # and each waits for its storage write, so 2 connections keep it ~1 core busy at most
    # (measured: 0.9-1.1 server cores used with 2 available, 4 connections: 0.9); 8 reach ~1.6
    # (the tool itself takes ~0.2 of the 2 cores); 16 add little.
    "replay-raw-lz4": ("replay client: raw topic, lz4, acks=1, SASL_SSL, 200 B, 8 connections", {"client": "replay", "producers": 8}),
    "replay-json-lz4": ("replay client: `.json` topic", {"client": "replay", "producers": 8, "topic": "bench.json"}),
    "replay-raw-lz4-1core": ("replay client, server pinned to 1 core (taskset -c 0)", {"client": "replay", "producers": 8, "cpus": "0"}),
    "replay-raw-lz4-2cores": ("replay client, server pinned to 2 cores (taskset -c 0,1)", {"client": "replay", "producers": 8, "cpus": "0,1"}),
    "replay-raw-lz4-half": ("replay client at half of replay-raw-lz4's peak rate", {"client": "replay", "producers": 8, "half_of": "replay-raw-lz4"}),
}
# (1-core, 2-core) workload pairs whose throughput ratio is printed when both ran.
SCALING = [("replay-raw-lz4-1core", "replay-raw-lz4-2cores")]
DEFAULT = [name for name, (_, over) in WORKLOADS.items()
           if over.get("client", "loadgen") == "loadgen" and over.get("backend", "local") == "local"]

COLUMNS = ["workload", "records/s", "MB/s", "server CPU s", "server ns/record", "server cores used", "disk B/record",
           "lat p50 ms", "lat p99 ms", "lat p999 ms", "rtt p99 ms", "server p50 ms", "server p99 ms", "read p99 ms", "peak RSS MiB", "client CPU s", "errors",
           "faults/1k records", "split ns/record", "ClickHouse ns/record"]


def stat_cpu_seconds(text):
    """(utime, stime) in seconds from the text of a /proc/<pid>[/task/<tid>]/stat file."""
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_cpu_seconds(pid):
    """utime + stime of a whole process (all threads, live and exited), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        return sum(stat_cpu_seconds(f.read()))


def proc_write_bytes(pid):
    """Bytes the process caused to be written to storage (`write_bytes` of /proc/<pid>/io,
    counted when pages are dirtied or direct writes issued; sockets are not in it)."""
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def produce_buckets(gw):
    """{histogram: {upper bound s: cumulative count}} of the server's Produce request
    histograms ("duration": fully read -> answered, "read": first byte -> fully read)."""
    out = {"duration": {}, "read": {}}
    for (name, labels), v in gw.metrics().items():
        labels = dict(labels)
        for key in out:
            if name == "loggate_request_%s_seconds_bucket" % key and labels.get("api") == "Produce":
                out[key][float(labels["le"].replace("+Inf", "inf"))] = v
    return out


def histogram_quantile(q, before, after):
    """Quantile q (ms) of the observations made between two scrapes of a cumulative
    histogram, interpolated linearly within the bucket, as Prometheus' histogram_quantile."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0) for b in bounds]
    total = counts[-1] if counts else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return round(lower * 1e3, 2)
            return round((lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)) * 1e3, 2)
        lower, below = bound, count
    return None


def proc_minor_faults(pid):
    """Minor page faults of a whole process so far (field 10 of stat(5))."""
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def thread_cpu_seconds(pid):
    """(user, system) seconds per thread group of a live process: the storage writers
    ("loggate-wr-*"), the tokio workers and the rest, from /proc/<pid>/task/*/stat."""
    groups = {}
    for task in Path("/proc/%d/task" % pid).iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue  # the thread exited
        comm = text[text.index("(") + 1:text.rindex(")")]
        group = "writer" if comm.startswith("loggate-wr") else "worker" if comm.startswith("tokio") else "other"
        u, s = groups.get(group, (0.0, 0.0))
        du, ds = stat_cpu_seconds(text)
        groups[group] = (u + du, s + ds)
    return groups


def thread_cpu_delta(before, after):
    return {g: (round(u - before.get(g, (0, 0))[0], 3), round(s - before.get(g, (0, 0))[1], 3))
            for g, (u, s) in after.items()}


def proc_status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class BenchGateway(gateway.Gateway):
    """tests/integration's Gateway, started under an optional taskset."""

    default_log_level = "warn"

    def __init__(self, workdir, cpus=None, env=None, storage=None, extra_config=""):
        self.cpus = cpus
        # taskset execs the server, so the pid stays the server's
        self.command_prefix = ("taskset", "-c", cpus) if cpus else ()
        self.extra_env = env or {}
        super().__init__(workdir, limits={"auth_failure_delay_ms": 50, "auth_timeout_secs": 30},
                         storage=storage, extra_config=extra_config)



def loadgen_args(w, gw, duration):
    proto = w["security"]
    args = [str(LOADGEN), "--brokers", gw.bootstrap(proto), "--security", proto, "--topic", w["topic"],
            "--size", str(w["size"]), "--codec", w["codec"], "--acks", w["acks"],
            "--linger-ms", str(w["linger_ms"]), "--batch-size", str(w["batch_size"]),
            "--producers", str(w["producers"]), "--duration", str(w["duration"] or duration)]
    if w["idle"]:
        args += ["--idle", str(w["idle"]), "--idle-interval-ms", "1000"]
    for kv in w.get("client_conf", []):
        args += ["-X", kv]
    return with_common_args(args, w, gw)


def with_common_args(args, w, gw):
    """The options loadgen and replay share: credentials, CA, rate, and the client's taskset."""
    proto = w["security"]
    if "SASL" in proto:
        args += ["--user", "demo", "--password", gateway.password()]
    if "SSL" in proto:
        args += ["--ca", str(gw.ca)]
    if w["rate"]:
        args += ["--rate", str(int(w["rate"]))]
    if w["client_cpus"]:
        args = ["taskset", "-c", w["client_cpus"]] + args
    return args


def replay_args(w, gw, duration):
    """produce_replay's command line for a workload (connections = producers)."""
    proto = w["security"]
    args = [str(REPLAY), "--bootstrap", gw.bootstrap(proto), "--security", proto, "--topic", w["topic"],
            "--size", str(w["size"]), "--codec", w["codec"], "--acks=%s" % w["acks"],
            "--records-per-batch", str(w["records_per_batch"]), "--inflight", str(w["inflight"]),
            "--partitions", str(BENCH_SHARDS), "--connections", str(w["producers"]),
            "--duration", str(w["duration"] or duration)]
    return with_common_args(args, w, gw)


def client_args(w, gw, duration):
    return replay_args(w, gw, duration) if w["client"] == "replay" else loadgen_args(w, gw, duration)


def start_perf(pid, path, callgraph):
    # System-wide (-a): with -p, threads the server starts later (the shard writers, spawned
    # at a shard's first append) are missed. perf_summary.py keeps the server's samples only,
    # by the pid written beside the data.
    Path(str(path) + ".pid").write_text("%d\n" % pid)
    event = os.environ.get("BENCH_PERF_EVENT", "cpu-clock")  # e.g. page-faults
    cmd = ["perf", "record", "-q", "-a", "-e", event, "-o", str(path)]
    if event == "cpu-clock":
        cmd += ["-F", "999"]
    if callgraph:
        cmd += ["--call-graph", "dwarf,16384"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_workload(name, w, duration, keep=False, perf=None, callgraph=False, server_env=None, storage=None,
                 server=None, warmup=None):
    """One workload against a fresh server: a BenchGateway, or `server(workdir)` when given (an
    object with start/stop/bootstrap/proc/log_text/metrics, e.g. bench/tansu.py's Tansu).
    With `warmup` (seconds), the detail also holds the server's Produce histograms scraped
    that long into the load ("buckets_warm") and at its end ("buckets_end"), so that the
    steady part can be told from a fresh server's first requests."""
    work = Path(tempfile.mkdtemp(prefix="loggate-bench-"))
    ch, extra = None, ""
    if w["backend"] == "clickhouse":
        from clickhouse import ClickHouse  # tests/integration/clickhouse.py
        ch = ClickHouse(work)
        ch.start()
        storage = dict(storage or {}, backend='"clickhouse"')
        extra = '[clickhouse]\nurls = ["%s"]' % ch.url
    gw = server(work) if server else BenchGateway(work, cpus=w["cpus"], env=server_env, storage=storage,
                                                  extra_config=extra)
    try:
        gw.start()
        pid = gw.proc.pid
        args = client_args(w, gw, duration)
        lg = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cpu0 = summary = perf_proc = timer = None
        warm = {}
        t0 = time.time()
        for line in lg.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            msg = json.loads(line)
            if msg.get("event") == "ready":
                if perf:
                    perf_proc = start_perf(pid, Path(perf) / ("perf-%s.data" % name), callgraph)
                cpu0, t0 = proc_cpu_seconds(pid), time.time()
                ch0 = proc_cpu_seconds(ch.proc.pid) if ch else None
                faults0 = proc_minor_faults(pid)
                disk0 = proc_write_bytes(pid)
                buckets0 = produce_buckets(gw)
                threads0 = thread_cpu_seconds(pid)
                if warmup:
                    timer = threading.Timer(warmup, lambda: warm.update(produce_buckets(gw)))
                    timer.start()
            else:
                summary = msg
                cpu1, t1 = proc_cpu_seconds(pid), time.time()
                ch1 = proc_cpu_seconds(ch.proc.pid) if ch else None
                faults1 = proc_minor_faults(pid)
                disk1 = proc_write_bytes(pid)
                if timer:
                    timer.join()
                buckets1 = produce_buckets(gw)
                threads1 = thread_cpu_seconds(pid)
                if perf_proc:
                    perf_proc.send_signal(2)
                    perf_proc.wait()
                rss_now = proc_status_kib(pid, "VmRSS")
                hwm = proc_status_kib(pid, "VmHWM")
                threads = proc_status_kib(pid, "Threads")
        _, status, ru = os.wait4(lg.pid, 0)
        lg.returncode = os.waitstatus_to_exitcode(status)
        err = lg.stderr.read()
        if summary is None or cpu0 is None:
            raise RuntimeError("%s failed (exit %s): %s\nserver: %s" % (w["client"], lg.returncode, err[-3000:], gw.log_text()[-3000:]))
        cpu = cpu1 - cpu0
        records = summary["records"]
        row = {
            "workload": name,
            "records/s": summary["records_per_s"],
            "MB/s": summary["mb_per_s"],
            "server CPU s": round(cpu, 2),
            "server ns/record": round(cpu * 1e9 / records) if records else None,
            "server cores used": round(cpu / max(t1 - t0, 1e-9), 2),
            "disk B/record": round((disk1 - disk0) / records) if records else None,
            "lat p50 ms": summary["lat_ms"]["p50"],
            "lat p99 ms": summary["lat_ms"]["p99"],
            "lat p999 ms": summary["lat_ms"]["p999"],
            "rtt p99 ms": summary["rtt_ms"]["p99"],
            "server p50 ms": histogram_quantile(0.5, buckets0["duration"], buckets1["duration"]),
            "server p99 ms": histogram_quantile(0.99, buckets0["duration"], buckets1["duration"]),
            "read p99 ms": histogram_quantile(0.99, buckets0["read"], buckets1["read"]),
            "peak RSS MiB": round(hwm / 1024, 1),
            "client CPU s": round(ru.ru_utime + ru.ru_stime, 2),
            "errors": summary["errors"],
            "faults/1k records": round((faults1 - faults0) * 1000 / records, 2) if records else None,
        }
        split = thread_cpu_delta(threads0, threads1)
        per = lambda sec: round(sec * 1e9 / records) if records else None
        row["ClickHouse ns/record"] = round((ch1 - ch0) * 1e9 / records) if ch and records else None
        if ch:
            stored = int(ch.query("SELECT count() FROM loggate.logs").strip())
            detail_ch = {"clickhouse_rows": stored}
        else:
            detail_ch = {}
        row["split ns/record"] = " ".join("%s %s+%s" % (g, per(u), per(s)) for g, (u, s) in sorted(split.items()))
        detail = dict(summary, thread_cpu_s=split, workload=name, config=w, server_cpu_s=cpu, server_wall_s=t1 - t0,
                      server_rss_end_kib=rss_now, server_hwm_kib=hwm, server_threads=threads,
                      loadgen_stderr=err[-2000:], **detail_ch)
        if warmup:
            detail.update(buckets_warm=warm or None, buckets_end=buckets1)
        return row, detail
    finally:
        gw.stop()
        if ch:
            ch.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def fmt(v):
    if isinstance(v, float):
        return "%.3f" % v if v < 10 else ("%.1f" % v if v < 1000 else "{:,.0f}".format(v))
    if isinstance(v, int):
        return "{:,}".format(v)
    return str(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", help="names (default: all); see --list")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--duration", type=float, default=10, help="seconds of load per workload (10)")
    ap.add_argument("--producers", type=int, help="loaded producer instances (2)")
    ap.add_argument("--peak", type=float, help="records/s to halve for *-half workloads run without their base")
    ap.add_argument("--out", help="markdown file to append rows to (bench/results/<time>.md)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--perf", metavar="DIR", help="perf record (cpu-clock, 999 Hz) the server during the load into DIR/perf-<workload>.data")
    ap.add_argument("--server-env", action="append", default=[], metavar="K=V",
                    help="extra environment for the server (e.g. GLIBC_TUNABLES=...), repeatable")
    ap.add_argument("--storage", action="append", default=[], metavar="K=V",
                    help="a [storage] setting of the server, V in TOML (e.g. flush_interval_ms=0, direct_io=false)")
    ap.add_argument("--client-conf", action="append", default=[], metavar="K=V",
                    help="a librdkafka property for loadgen (-X), repeatable")
    ap.add_argument("--label", default="", help="suffix for the workload names in the table")
    ap.add_argument("--callgraph", action="store_true", help="with --perf: DWARF call graphs (large files)")
    ap.add_argument("--tansu", action="store_true",
                    help="instead of workloads: loggate (SASL_SSL, local logstore) against a Tansu broker (PLAINTEXT, "
                         "memory storage), alternating, 1 producer, and the ratios (bench/tansu.py)")
    ap.add_argument("--tansu-bin", default=os.environ.get("TANSU_BIN", "/work/tansu-bin/bin/tansu"),
                    help="with --tansu: the tansu binary ($TANSU_BIN, else /work/tansu-bin/bin/tansu)")
    ap.add_argument("--rounds", type=int, default=3, help="with --tansu: alternating rounds (3)")
    ap.add_argument("--loggate-security", default="SASL_SSL", choices=["SASL_SSL", "PLAINTEXT"],
                    help="with --tansu: loggate's listener (SASL_SSL; PLAINTEXT is the protocol Tansu runs on)")
    ap.add_argument("--librdkafka", metavar="FILE",
                    help="with --tansu: the librdkafka.so.1 loadgen runs on, for both servers (LD_LIBRARY_PATH); "
                         "Debian's 2.0.2 cannot read Tansu 0.6's ApiVersions v3 answer")
    a = ap.parse_args()
    if a.tansu:
        import tansu  # bench/tansu.py
        return tansu.compare(a)
    if a.list:
        for name, (desc, _) in WORKLOADS.items():
            print("%-24s %s" % (name, desc))
        return
    names = a.workloads or DEFAULT
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        sys.exit("unknown workload(s): %s (see --list)" % ", ".join(unknown))
    clients = {WORKLOADS[n][1].get("client", "loadgen") for n in names}
    needs = [(gateway.BIN, "cargo build --release -p loggate")]
    if "loadgen" in clients:
        needs.append((LOADGEN, "bench/build.sh"))
    if "replay" in clients:
        needs.append((REPLAY, "cargo build --release --example produce_replay"))
    for need, how in needs:
        if not Path(need).exists():
            sys.exit("missing %s: %s" % (need, how))
    out = Path(a.out) if a.out else HERE / "results" / time.strftime("%Y%m%d-%H%M%S.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    jsonl = out.with_suffix(".jsonl")
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    print(header)
    with open(out, "a") as f:
        f.write("\n<!-- %s, %s s per workload -->\n%s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), a.duration, header))
    peaks = {}
    for name in names:
        desc, over = WORKLOADS[name]
        w = dict(BASE, **{k: v for k, v in over.items() if k != "half_of"})
        w["client_conf"] = list(over.get("client_conf", [])) + a.client_conf
        if a.producers:
            w["producers"] = a.producers
        if "half_of" in over:
            peak = peaks.get(over["half_of"]) or a.peak
            if not peak:
                print("skip %s: run %s first or pass --peak" % (name, over["half_of"]), file=sys.stderr)
                continue
            w["rate"] = peak / 2
        try:
            server_env = dict(kv.split("=", 1) for kv in a.server_env)
            storage = dict(kv.split("=", 1) for kv in a.storage)
            row, detail = run_workload(name + a.label, w, a.duration, keep=a.keep, perf=a.perf,
                                       callgraph=a.callgraph, server_env=server_env, storage=storage)
        except Exception as e:  # keep going: one failed workload should not lose the others
            print("workload %s failed: %s" % (name, e), file=sys.stderr)
            continue
        peaks[name] = row["records/s"]
        line = "| " + " | ".join(fmt(row[c]) for c in COLUMNS) + " |"
        print(line, flush=True)
        with open(out, "a") as f:
            f.write(line + "\n")
        with open(jsonl, "a") as f:
            f.write(json.dumps(detail) + "\n")
    for one, two in SCALING:
        if peaks.get(one) and peaks.get(two):
            line = "\n%s / %s records/s: %.2f" % (two, one, peaks[two] / peaks[one])
            print(line)
            with open(out, "a") as f:
                f.write(line + "\n")
    print("\nrows appended to %s (details in %s)" % (out, jsonl), file=sys.stderr)


if __name__ == "__main__":
    main()
