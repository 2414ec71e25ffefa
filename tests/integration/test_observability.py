"""Observability: structured log lines for every connection, /healthz from the first moment
and /readyz that follows start-up and storage health, the metrics an operator watches
moving under real clients, and a Grafana dashboard whose every query names a real metric."""

import json
import os
import re
import socket
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import Producer

from clients import check_stored
from gateway import ROOT, Gateway, password, rdkafka_conf
from test_wire_errors import sasl_v1_login
from wire import connect, is_closed, message_v1, parse_produce_v2_response, produce_v2, read_frame, string

SECRET = "main-secret#with-hash"  # the secret of KEYS["main"]


def sasl_ssl(gw, **extra):
    return rdkafka_conf(gw, **{"linger.ms": 5, **extra})


def produce(conf, topic, values, timeout=30):
    errors = []
    p = Producer(conf)
    for v in values:
        p.produce(topic, value=v, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(timeout) == 0 and errors == [], errors


def wait_until(check, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def stored_once(gw, logstore, values):
    """The logstore (any backend) holds exactly `values`, each once."""
    gw.wait_logs(logstore, len(values))
    time.sleep(0.3)  # a late duplicate would show up
    assert sorted(l["content"] for l in gw.logs(logstore)) == sorted(values)


def json_lines(gw):
    """Every stderr line, each parsed as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in gw.log_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------- logs


def test_json_log_lines_describe_each_connection_and_hold_no_secret(tmp_path):
    gw = Gateway(tmp_path, extra_config='[log]\nformat = "json"').start()
    try:
        t0 = time.time()
        values = ["json-log-%d" % i for i in range(20)]
        produce(sasl_ssl(gw), "app", values)
        check_stored(gw, "app", values, t0)
        # A wrong secret, and a secret typed where the key id goes: neither is logged.
        s = connect(gw.ports["SASL_PLAINTEXT"])
        assert sasl_v1_login(s, "demo", "LGTESTMAIN#WrongSecretXyz") == 58
        assert is_closed(s)
        s = connect(gw.ports["SASL_PLAINTEXT"])
        assert sasl_v1_login(s, "demo", "SwappedSecretAbc#LGTESTMAIN") == 58
        assert is_closed(s)
        time.sleep(0.3)
    finally:
        gw.stop()
    lines = json_lines(gw)  # every line is a JSON object
    assert all(isinstance(l, dict) and l["level"] and l["fields"]["message"] for l in lines)
    text = gw.log_text()
    for secret in (SECRET, "WrongSecretXyz", "SwappedSecretAbc"):
        assert secret not in text, secret

    closes = [l["fields"] for l in lines if l["fields"]["message"] == "connection closed"]
    opens = [l["fields"] for l in lines if l["fields"]["message"] == "connection opened"]
    producer = [c for c in closes if c["key_id"] == "LGTESTMAIN" and c["listener"] == "SASL_SSL"]
    assert producer, closes
    for c in producer:
        # librdkafka (via confluent-kafka-python) names itself in ApiVersions v3
        assert c["client_software_name"] == "confluent-kafka-python", c
        assert "rdkafka" in c["client_software_version"], c
        assert c["project"] == "demo" and c["state"] == "authenticated", c
        assert c["bind"] == gw.bootstrap("SASL_SSL"), c
        assert c["reason"] == "client disconnected", c
        assert c["requests"] >= 3 and c["bytes_received"] > 0 and c["bytes_sent"] > 0, c
        assert 0 < c["duration_secs"] < 60, c
        # each close has its open line, for the same peer and listener
        assert any(o["peer"] == c["peer"] and o["listener"] == "SASL_SSL" for o in opens), c
    # the producer connection that sent the Produce requests carried the logs' bytes
    assert max(c["bytes_received"] for c in producer) > sum(len(v) for v in values)
    failed = [c for c in closes if c["listener"] == "SASL_PLAINTEXT" and "SASL authentication failed" in c["reason"]]
    assert len(failed) == 2, closes
    assert all(c["key_id"] == "-" and c["project"] == "-" for c in failed), failed
    assert any(l["level"] == "WARN" for l in lines if l["fields"]["message"] == "connection closed")


def api_versions_v3(name, version, correlation_id=7):
    """An ApiVersions v3 request (flexible header v2) naming the client software."""
    compact = lambda b: bytes([len(b) + 1]) + b  # lengths below 127
    header = struct.pack(">hhi", 18, 3, correlation_id) + string("wire-v3") + b"\x00"
    body = compact(name) + compact(version) + b"\x00"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def test_client_software_from_the_wire_is_escaped_in_human_log_lines(tmp_path):
    gw = Gateway(tmp_path).start()  # the default format: human text lines
    try:
        forged = b"x\n2030-01-01T00:00:00Z  INFO loggate: forged line\x1b[31m"
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(api_versions_v3(forged, b"1.0\"quoted\""))
        frame = read_frame(s)
        assert struct.unpack(">ih", frame[:6]) == (7, 0)
        s.close()
        wait_until(lambda: "forged line" in gw.log_text(), what="the close line")
    finally:
        gw.stop()
    log = gw.log_text()
    line = next(l for l in log.splitlines() if "connection closed" in l and "forged line" in l)
    assert "listener=" in line and "PLAINTEXT" in line
    assert "\nforged line" not in log.replace("\r", "")
    assert "\x1b" not in log
    assert "INFO loggate: forged line" in line  # kept, escaped, on the one line


def test_log_format_env_overrides_the_setting_and_kcat_is_named(tmp_path):
    gw = Gateway(tmp_path, extra_config='[log]\nformat = "human"')
    gw.extra_env = {"LOGGATE_LOG_FORMAT": "json"}
    gw.start()
    try:
        subprocess.run(["kcat", "-P", "-b", gw.bootstrap("PLAINTEXT"), "-t", "one"], input=b"from-kcat\n",
                       check=True, timeout=30)
        assert [l["content"] for l in gw.wait_logs("one", 1)] == ["from-kcat"]
    finally:
        gw.stop()
    lines = json_lines(gw)
    assert any(l["fields"]["message"] == "listening" for l in lines)
    kcat = [l["fields"] for l in lines if l["fields"]["message"] == "connection closed" and l["fields"]["requests"] > 0]
    assert kcat and all(c["client_software_name"] == "librdkafka" and c["client_id"] == "rdkafka" for c in kcat), kcat
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", c["client_software_version"]) for c in kcat), kcat


# --------------------------------------------------------------------- health, readiness


class DelayedForwarder:
    """A loopback TCP forwarder that holds every connection until `release()`, then relays
    it to `upstream`: a ClickHouse that answers only after a delay."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.released = threading.Event()
        self.held = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.held += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        self.released.wait(60)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
        except OSError:
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def release(self):
        self.released.set()

    def close(self):
        self.closed = True
        self.released.set()
        self.sock.close()


def clickhouse_gateway(tmp_path, url, **kw):
    """A gateway whose logstore demo/other is stored in ClickHouse at `url`."""
    return Gateway(tmp_path, logstore_options={"other": {"storage": '"clickhouse"'}},
                   extra_config='[clickhouse]\nurls = ["%s"]' % url, **kw)


def test_healthz_answers_during_a_slow_start_and_readyz_once_storage_is_up(tmp_path, clickhouse):
    forwarder = DelayedForwarder(clickhouse.http_port)
    gw = clickhouse_gateway(tmp_path, "http://127.0.0.1:%d" % forwarder.port)
    starting = threading.Thread(target=gw.start, daemon=True)
    try:
        starting.start()
        wait_until(lambda: forwarder.held > 0, what="loggate connecting to ClickHouse")
        # Storage is not up yet: the process answers health checks, is not ready, and takes
        # no Kafka client.
        for _ in range(3):
            assert gw.http_get("/healthz") == (200, "ok\n")
            status, body = gw.http_get("/readyz")
            assert status == 503 and "starting" in body, (status, body)
            assert gw.http_get("/readyz?scope=serving")[0] == 503
            assert gw.metric("loggate_ready") == 0
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", gw.ports["PLAINTEXT"]), timeout=1).close()
            time.sleep(0.5)
        forwarder.release()
        starting.join(30)
        assert gw.alive()
        wait_until(lambda: gw.http_get("/readyz")[0] == 200, what="/readyz 200")
        assert gw.http_get("/readyz") == (200, "ready\n")
        assert gw.metric("loggate_ready") == 1
        values = ["after-slow-start-%d" % i for i in range(10)]
        produce(sasl_ssl(gw), "other", values)
        stored_once(gw, "other", values)
    finally:
        gw.stop()
        forwarder.close()


def test_readyz_is_503_while_clickhouse_cannot_store_and_200_after(tmp_path, clickhouse):
    gw = clickhouse_gateway(tmp_path, clickhouse.url).start()
    try:
        assert gw.http_get("/readyz") == (200, "ready\n")
        clickhouse.stop()
        errors, delivered = [], []
        p = Producer(sasl_ssl(gw, **{"message.timeout.ms": 120000, "retry.backoff.ms": 200}))
        values = ["during-outage-%d" % i for i in range(5)]
        for v in values:
            p.produce("other", value=v, on_delivery=lambda e, m: (errors if e else delivered).append(m))
        p.flush(0.5)
        wait_until(lambda: (p.poll(0.1) or True) and gw.http_get("/readyz")[0] == 503, timeout=30, what="/readyz 503")
        status, body = gw.http_get("/readyz")
        assert "storage cannot write" in body, body
        assert gw.metric("loggate_ready") == 0
        assert gw.http_get("/healthz") == (200, "ok\n")
        # what cluster nodes ask each other: the node serves, its (shared) storage aside
        assert gw.http_get("/readyz?scope=serving") == (200, "serving\n")
        clickhouse.start()
        assert p.flush(90) == 0 and errors == [], errors
        wait_until(lambda: gw.http_get("/readyz")[0] == 200, what="/readyz 200 again")
        stored_once(gw, "other", values)
    finally:
        gw.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs for the data directory (the test runs as root), unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path):
    """Writes zeros to `path` until the filesystem is full."""
    with open(path, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
    # the last partial write may have left a few bytes free: take them too
    with open(str(path) + ".tail", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass


def test_readyz_is_503_while_the_disk_is_full_and_200_after(tmp_path, small_disk):
    gw = Gateway(tmp_path, data=small_disk / "data").start()
    try:
        t0 = time.time()
        first = ["before-full-%d" % i for i in range(5)]
        produce(sasl_ssl(gw), "one", first)
        assert gw.http_get("/readyz") == (200, "ready\n")
        filler = small_disk / "filler"
        fill(filler)
        errors, delivered = [], []
        p = Producer(sasl_ssl(gw, **{"message.timeout.ms": 120000, "retry.backoff.ms": 200}))
        later = ["while-full-%d-%s" % (i, "z" * 2000) for i in range(50)]
        for v in later:
            p.produce("one", value=v, on_delivery=lambda e, m: (errors if e else delivered).append(m))
        wait_until(lambda: (p.poll(0.1) or True) and gw.http_get("/readyz")[0] == 503, timeout=30, what="/readyz 503")
        status, body = gw.http_get("/readyz")
        assert "storage cannot write" in body, body
        assert gw.metric("loggate_logstore_failing_shards", project="demo", logstore="one") == 1
        assert "logstore write failed" in gw.log_text()
        assert delivered == []
        os.unlink(filler)
        os.unlink(str(filler) + ".tail")
        assert p.flush(90) == 0 and errors == [], errors
        wait_until(lambda: gw.http_get("/readyz")[0] == 200, what="/readyz 200 again")
        assert gw.metric("loggate_logstore_failing_shards", project="demo", logstore="one") == 0
        check_stored(gw, "one", first + later, t0)
    finally:
        gw.stop()


def test_readyz_recovers_from_a_full_disk_without_waiting_for_a_write(tmp_path, small_disk):
    gw = Gateway(tmp_path, data=small_disk / "data").start()
    try:
        t0 = time.time()
        first = ["kept-%d" % i for i in range(5)]
        produce(sasl_ssl(gw), "one", first)
        filler = small_disk / "filler"
        fill(filler)
        errors, delivered = [], []
        p = Producer(sasl_ssl(gw, **{"message.timeout.ms": 3000}))
        for i in range(5):
            p.produce("one", value="given-up-%d-%s" % (i, "z" * 2000),
                      on_delivery=lambda e, m: (errors if e else delivered).append(m))
        assert p.flush(30) == 0
        assert delivered == [] and len(errors) == 5
        del p
        status, body = gw.http_get("/readyz")
        assert status == 503 and "storage cannot write" in body, (status, body)
        time.sleep(2)
        assert gw.http_get("/readyz")[0] == 503, "still full: still not ready"
        os.unlink(filler)
        os.unlink(str(filler) + ".tail")
        # no client writes: the shard finds the room by itself
        wait_until(lambda: gw.http_get("/readyz")[0] == 200, timeout=10, what="/readyz 200 without a write")
        assert "logstore shard has room to write again" in gw.log_text()
        check_stored(gw, "one", first, t0)
    finally:
        gw.stop()


# ---------------------------------------------------------------------------- metrics


def metric_sum(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_new_metrics_move_under_a_real_client_load(tmp_path):
    limits = {"max_inflight_bytes": 200 << 20, "max_unauthenticated_inflight_bytes": 4 << 20,
              "max_decoded_inflight_bytes": 32 << 20}
    gw = Gateway(tmp_path, limits=limits, storage={"segment_bytes": 4096},
                 logstore_options={"one": {"retention_bytes": 20000}}).start()
    try:
        m0 = gw.metrics()
        assert m0[("loggate_inflight_limit_bytes", (("pool", "authenticated"),))] == 200 << 20
        assert m0[("loggate_inflight_limit_bytes", (("pool", "unauthenticated"),))] == 4 << 20
        assert m0[("loggate_inflight_limit_bytes", (("pool", "decoded"),))] == 32 << 20
        assert m0[("loggate_inflight_bytes", (("pool", "authenticated"),))] == 0

        # wire bytes: exactly the frame a raw client sent
        frame = produce_v2("one", 0, message_v1(b"counted-bytes"))
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(frame)
        assert parse_produce_v2_response(read_frame(s))[1][0][2] == 0
        s.close()
        assert gw.metric("loggate_received_bytes_total", protocol="PLAINTEXT") == len(frame)

        # decompressed bytes: a gzip producer of very compressible logs
        t0 = time.time()
        values = ["gz-%04d-%s" % (i, "a" * 1000) for i in range(200)]
        produce(sasl_ssl(gw, **{"compression.codec": "gzip"}), "app", values)
        check_stored(gw, "app", values, t0)
        m = gw.metrics()
        raw = sum(len(v) for v in values)
        unzipped = m[("loggate_decompressed_bytes_total", (("codec", "gzip"),))]
        assert raw <= unzipped < raw * 1.2, (raw, unzipped)
        received = m[("loggate_received_bytes_total", (("protocol", "SASL_SSL"),))]
        assert 0 < received < raw / 5, "the wire carried the compressed bytes: %d" % received
        # fsync latency: acks=all waits for fsyncs, each one timed
        fsyncs = m[("loggate_storage_fsync_seconds_count", ())]
        assert fsyncs >= 1
        assert m[("loggate_storage_fsync_seconds_bucket", (("le", "+Inf"),))] == fsyncs
        assert 0 < m[("loggate_storage_fsync_seconds_sum", ())] < fsyncs * 10
        # write latency: each group's write timed
        writes = m[("loggate_storage_write_seconds_count", ())]
        assert writes >= 1
        assert m[("loggate_storage_write_seconds_bucket", (("le", "+Inf"),))] == writes
        assert 0 < m[("loggate_storage_write_seconds_sum", ())] < writes * 10
        # disk used, in allocated blocks: the raw topic's batches are kept as the client
        # compressed them, so the gzip'd logs take far less than their bytes
        disk = m[("loggate_logstore_disk_bytes", (("logstore", "app"), ("project", "demo")))]
        assert 0 < disk < raw / 2, (disk, raw)
        assert disk == sum(f.stat().st_blocks * 512 for f in (gw.data / "logstores" / "demo" / "app").glob("shard-*/*.log"))

        # retention: 4 KiB segments under a 20 KB limit
        small = ["ret-%05d-%s" % (i, "y" * 60) for i in range(2000)]
        produce(sasl_ssl(gw, **{"acks": "1", "batch.size": 2000, "max.in.flight": 1}), "one", small, timeout=60)
        wait_until(lambda: gw.metric("loggate_retention_deleted_segments_total", project="demo", logstore="one") > 0,
                   what="retention deletions")
        time.sleep(1.5)
        m = gw.metrics()
        labels = (("logstore", "one"), ("project", "demo"))
        deleted = m[("loggate_retention_deleted_segments_total", labels)]
        deleted_bytes = m[("loggate_retention_deleted_bytes_total", labels)]
        assert deleted == gw.log_text().count("retention deleted a segment")
        assert deleted * 1000 < deleted_bytes <= deleted * 4096 * 2, (deleted, deleted_bytes)
        kept = m[("loggate_logstore_disk_bytes", labels)]
        assert 0 < kept < 20000 + 4 * 4096, kept

        # in flight: half a large request holds budget until the connection goes
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(struct.pack(">i", 1 << 20) + b"\0" * (300 << 10))
        wait_until(lambda: gw.metric("loggate_inflight_bytes", pool="authenticated") >= 256 << 10, what="held budget")
        assert gw.metric("loggate_inflight_bytes", pool="authenticated") <= 1 << 20
        s.close()
        wait_until(lambda: gw.metric("loggate_inflight_bytes", pool="authenticated") == 0, what="budget released")

        # auth failures, by reason
        for user, pw in [("demo", "LGNOSUCHKEY#whatever"), ("demo", "LGTESTMAIN#wrong"), ("demo", "no-hash-in-it"),
                         ("ops", password("main"))]:
            s = connect(gw.ports["SASL_PLAINTEXT"])
            assert sasl_v1_login(s, user, pw) == 58
            s.close()
        m = gw.metrics()
        for reason in ("unknown_key", "bad_secret", "malformed", "not_allowed"):
            assert m[("loggate_sasl_authentications_total", (("result", reason),))] == 1, reason
        assert m[("loggate_sasl_authentications_total", (("result", "success"),))] >= 3

        # TLS handshake failures: plain text to the TLS port
        assert gw.metric("loggate_tls_handshake_failures_total") == 0
        s = socket.create_connection(("127.0.0.1", gw.ports["SSL"]), timeout=5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.settimeout(5)
        assert s.recv(100)[:1] == b"\x15"  # a TLS alert, then the end
        assert is_closed(s)
        wait_until(lambda: gw.metric("loggate_tls_handshake_failures_total") == 1, what="TLS failure counted")

        # produce errors carry the configured logstore, or _unknown
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(produce_v2("one", 0, message_v1(b"flipped", crc=12345)))
        assert parse_produce_v2_response(read_frame(s))[1][0][2] == 2
        s.sendall(produce_v2("no-such-%d" % os.getpid(), 0, message_v1(b"lost")))
        assert parse_produce_v2_response(read_frame(s))[1][0][2] == 3
        s.close()
        assert gw.metric("loggate_produce_partition_errors_total", error="CORRUPT_MESSAGE", project="demo", logstore="one") == 1
        assert gw.metric("loggate_produce_partition_errors_total", error="UNKNOWN_TOPIC_OR_PARTITION",
                         project="_unknown", logstore="_unknown") == 1

        # process metrics agree with what the kernel says of the process
        m = gw.metrics()
        pid = gw.proc.pid
        rss = int(open("/proc/%d/statm" % pid).read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        assert 0.5 * rss < m[("process_resident_memory_bytes", ())] < 2 * rss
        fds = len(os.listdir("/proc/%d/fd" % pid))
        assert abs(m[("process_open_fds", ())] - fds) <= 5
        assert m[("process_cpu_seconds_total", ())] > 0
        assert time.time() - 300 < m[("process_start_time_seconds", ())] <= time.time()
        soft = next(int(l.split()[3]) for l in open("/proc/%d/limits" % pid) if l.startswith("Max open files"))
        assert m[("process_max_fds", ())] == soft
    finally:
        gw.stop()


# -------------------------------------------------------------------------- dashboard

DASHBOARD = ROOT / "dashboards" / "loggate.json"


def dashboard_metric_names():
    """Every metric name the dashboard's queries use."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert exprs, "the dashboard has no queries"
    names = set()
    for e in exprs:
        names.update(re.findall(r"\b((?:loggate|process)_[a-z0-9_]+)\b", e))
    return doc, names


def test_dashboard_queries_only_metrics_a_real_scrape_has(tmp_path, clickhouse):
    doc, names = dashboard_metric_names()
    assert doc["title"] and doc["panels"]
    gw = clickhouse_gateway(tmp_path, clickhouse.url).start()
    try:
        values = ["dash-%d" % i for i in range(30)]
        produce(sasl_ssl(gw, **{"compression.codec": "lz4"}), "app", values)
        produce(sasl_ssl(gw), "other", values)
        stored_once(gw, "other", values)
        s = connect(gw.ports["SASL_PLAINTEXT"])
        assert sasl_v1_login(s, "demo", "LGTESTMAIN#wrong") == 58
        s.close()
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(produce_v2("nowhere", 0, message_v1(b"x")))
        read_frame(s)
        s.close()
        scraped = {name for name, _ in gw.metrics()}
    finally:
        gw.stop()
    missing = sorted(n for n in names if n not in scraped)
    assert not missing, "the dashboard queries metrics /metrics does not have: %s" % missing
    # every panel family the operator needs is there
    for needed in ("loggate_received_bytes_total", "loggate_request_duration_seconds_bucket",
                   "loggate_produce_partition_errors_total", "loggate_sasl_authentications_total",
                   "loggate_inflight_bytes", "loggate_inflight_limit_bytes", "loggate_logstore_disk_bytes",
                   "loggate_storage_fsync_seconds_bucket", "process_resident_memory_bytes",
                   "process_cpu_seconds_total", "process_open_fds", "loggate_tls_handshake_failures_total",
                   "loggate_decompressed_bytes_total", "loggate_retention_deleted_bytes_total"):
        assert needed in names, needed
