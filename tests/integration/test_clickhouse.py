"""loggate on ClickHouse, end to end: real Kafka clients write through one gateway node
into a real clickhouse-server 18.16 (clickhouse.py), sometimes through the recording,
fault-injecting HTTP proxy (chproxy.py); what the user checks is read back with SQL from
ClickHouse itself: the rows of each test's unique marker, each exactly once, with the
right project, logstore, shard, client address, key, headers and fields.

Every gateway here has `[storage] backend = "clickhouse"` (unless a test says otherwise)
and a `[clickhouse]` table pointing at the server or at the proxy in front of it.
"""

import json
import re
import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import KafkaError, Producer

from chproxy import HttpProxy
from clickhouse import LOGS_COLUMNS, LOGS_DDL, ClickHouse, check_on_current_engine, chdb_query, columns_of_create, \
    encode_rowbinary, insert_sql, split_insert
from clients import describe, go_binary, node_script, run_client
import gateway
from gateway import PROJECTS, Gateway, password

DB, TABLE = "loggate", "logs"
FQ = "%s.%s" % (DB, TABLE)
SHARDS = {name: shards for name, shards, _ in PROJECTS["demo"]}
STORAGE_ERROR = "KAFKA_STORAGE_ERROR"


def marker(tag):
    """A unique marker: letters, digits and '-' only (safe inside LIKE and SQL literals)."""
    return "%s-%s" % (tag, uuid.uuid4().hex[:12])


def sql_str(s):
    return "'%s'" % s.replace("\\", "\\\\").replace("'", "\\'")


# ------------------------------------------------------------------ the components

class Rig:
    """One ClickHouse 18.16, optionally a proxy in front of it, and one loggate node on it.
    close() stops them in reverse order (loggate first: it inserts what is pending)."""

    def __init__(self, workdir, proxy=False, clickhouse=None, storage=None, logstore_options=None, limits=None,
                 ch=None):
        self.workdir = workdir
        self.ch = ch or ClickHouse(workdir).start()
        self.own_ch = ch is None
        self.proxy = HttpProxy(self.ch.url, upstream_timeout=30) if proxy else None
        url = self.proxy.url if self.proxy else self.ch.url
        lines = ["[clickhouse]", 'urls = ["%s"]' % url]
        lines += ["%s = %s" % kv for kv in (clickhouse or {}).items()]
        self.gw = Gateway(workdir, storage={"backend": '"clickhouse"'} if storage is None else storage,
                          logstore_options=logstore_options, limits=limits, extra_config="\n".join(lines))

    def start(self):
        self.gw.start()
        return self

    def close(self):
        try:
            self.gw.stop()
        finally:
            try:
                if self.proxy:
                    self.proxy.close()
            finally:
                if self.own_ch:
                    self.ch.stop()


@pytest.fixture
def rigs(tmp_path):
    """Makes rigs (rigs(**options) -> a started Rig); all are closed at teardown."""
    made = []

    def make(**kw):
        d = tmp_path / ("rig%d" % len(made))
        d.mkdir()
        rig = Rig(d, **kw)
        made.append(rig)
        return rig.start()

    yield make
    for rig in reversed(made):
        rig.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One ClickHouse and one loggate on it for the client tests (each uses its own marker)."""
    rig = Rig(tmp_path_factory.mktemp("ch-clients"))
    try:
        yield rig.start()
    finally:
        rig.close()


# ------------------------------------------------------------------ what is stored

ROW_COLUMNS = ("project, logstore, shard, client, key, header_keys, header_values, field_names, field_values, "
               "content, batch_id + position AS offset, event_time_ms, arrival_time_ms, toUnixTimestamp(event_time) "
               "AS event_s, toUnixTimestamp(arrival_time) AS arrival_s, retention_hours, node_id, insert_id, "
               "producer_id")


def raw_where(m):
    return "content LIKE %s" % sql_str(m + "-%")


def json_where(m):
    return "field_values[indexOf(field_names, 'marker')] = %s" % sql_str(m)


def stored_rows(ch, where):
    return ch.rows("SELECT %s FROM %s WHERE %s ORDER BY shard, offset" % (ROW_COLUMNS, FQ, where))


def assert_exactly_once(ch, where, expected, column="content"):
    """The rows `where` selects hold exactly the values `expected`, each once: count(),
    count(DISTINCT) and the multiset of values all agree. Returns the rows."""
    # Acknowledged means inserted: a late duplicate would come from a retry in flight, so
    # give one a moment to land before counting.
    time.sleep(0.5)
    n = ch.rows("SELECT count() AS n, count(DISTINCT %s) AS d FROM %s WHERE %s" % (column, FQ, where))[0]
    got = Counter(r["v"] for r in ch.rows("SELECT %s AS v FROM %s WHERE %s" % (column, FQ, where)))
    want = Counter(expected)
    assert got == want, "missing %d: %s...; duplicated %d: %s...; unexpected: %s" % (
        len(want - got), sorted(want - got)[:5], sum(1 for v, c in got.items() if c > 1),
        sorted(v for v, c in got.items() if c > 1)[:5], sorted(set(got) - set(want))[:5])
    assert n == {"n": len(expected), "d": len(set(expected))}, n
    assert len(set(expected)) == len(expected)
    return stored_rows(ch, where)


def check_rows(rows, logstore, t0, key=None, headers=None, retention=0):
    """Every row: project demo, the logstore, a shard in range, the client's loopback address,
    times of this test, the key and headers as sent, and (shard, offset) unique."""
    now_ms = time.time() * 1000
    seen = set()
    for r in rows:
        assert (r["project"], r["logstore"]) == ("demo", logstore), r
        assert 0 <= r["shard"] < SHARDS[logstore], r
        assert re.fullmatch(r"127\.0\.0\.1:\d+", r["client"]), r
        assert t0 * 1000 - 1000 <= r["arrival_time_ms"] <= now_ms + 1000, r
        assert abs(r["event_time_ms"] - r["arrival_time_ms"]) < 60_000, r
        assert r["event_s"] == r["event_time_ms"] // 1000 and r["arrival_s"] == r["arrival_time_ms"] // 1000, r
        assert r["key"] == key, r
        pairs = [list(p) for p in zip(r["header_keys"], r["header_values"])]
        assert pairs == (headers or []), r
        assert r["retention_hours"] == retention, r
        assert r["insert_id"] != 0, r
        assert (r["shard"], r["offset"]) not in seen, "offset given twice: %s" % r
        seen.add((r["shard"], r["offset"]))


# ------------------------------------------------------------------ clients

def rdkafka_conf(gw, proto="PLAINTEXT", **extra):
    return gateway.rdkafka_conf(gw, proto, **{"linger.ms": 20, "message.timeout.ms": 60000, **extra})


class Delivery:
    """Delivery reports and error callbacks of one confluent-kafka Producer."""

    def __init__(self):
        self.ok = {}        # value -> (partition, offset)
        self.failed = []    # (value, KafkaError)
        self.errors = []    # KafkaError of error_cb
        self.lock = threading.Lock()

    def report(self, err, msg):
        with self.lock:
            if err is not None:
                self.failed.append((msg.value().decode(), err))
            else:
                self.ok[msg.value().decode()] = (msg.partition(), msg.offset())

    def error_cb(self, err):
        with self.lock:
            self.errors.append(err)


def rdkafka_produce(conf, topic, values, key=None, headers=None, timeout=60, delivery=None):
    d = delivery or Delivery()
    p = Producer(dict(conf, error_cb=d.error_cb))
    for v in values:
        kw = {"value": v.encode(), "on_delivery": d.report}
        if key is not None:
            kw["key"] = key.encode()
        if headers is not None:
            kw["headers"] = headers
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(timeout) == 0, "records still queued after %s s" % timeout
    return d


@pytest.mark.parametrize("idempotent,codec", [(True, "lz4"), (False, "zstd"), (True, "zstd"), (False, "none")])
def test_librdkafka_records_land_once_with_their_metadata(shared, idempotent, codec):
    """confluent-kafka (librdkafka) over SASL_SSL into the partition-routed logstore: every
    acknowledged record is one row, at the partition and offset librdkafka was told, with the
    key and headers it sent."""
    ch, gw = shared.ch, shared.gw
    t0 = time.time()
    m = marker("rdk-%s-%s" % ("idem" if idempotent else "plain", codec))
    values = ["%s-%d" % (m, i) for i in range(600)]
    conf = rdkafka_conf(gw, "SASL_SSL", **{"enable.idempotence": idempotent, "compression.codec": codec,
                                           "acks": "all"})
    headers = [("trace", b"t-1"), ("empty", None), ("trace", b"t-2")]
    d = rdkafka_produce(conf, "pinned", values, key="k-%s" % codec, headers=headers)
    assert d.failed == [] and len(d.ok) == len(values)
    rows = assert_exactly_once(ch, raw_where(m), values)
    check_rows(rows, "pinned", t0, key="k-%s" % codec, headers=[["trace", "t-1"], ["empty", None], ["trace", "t-2"]])
    # "pinned" routes partition p to shard p: the acknowledged (partition, offset) is the row's
    by_value = {r["content"]: (r["shard"], r["offset"]) for r in rows}
    assert by_value == d.ok
    if idempotent:
        assert all(r["producer_id"] >= 0 for r in rows)
    else:
        assert all(r["producer_id"] == -1 for r in rows)


def test_kafka_python_records_land_once(shared):
    """kafka-python 3.x (idempotent by default) over SASL_SSL into the round-robin logstore,
    with a key and headers."""
    from kafka import KafkaProducer
    ch, gw = shared.ch, shared.gw
    t0 = time.time()
    m = marker("kpy")
    values = ["%s-%d" % (m, i) for i in range(300)]
    p = KafkaProducer(bootstrap_servers=gw.bootstrap("SASL_SSL"), security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                      sasl_plain_username="demo", sasl_plain_password=password("main"), ssl_cafile=str(gw.ca),
                      compression_type="gzip", acks="all", linger_ms=10, max_block_ms=15000)
    try:
        assert p.config["enable_idempotence"] is True
        metas = []
        for part in range(3):  # three flushes: three batches, spread over the shards by round robin
            futures = [p.send("app", value=v.encode(), key=b"kp", headers=[("h", b"v")])
                       for v in values[part * 100:(part + 1) * 100]]
            p.flush(60)
            metas += [f.get(timeout=30) for f in futures]
    finally:
        p.close(5)
    rows = assert_exactly_once(ch, raw_where(m), values)
    check_rows(rows, "app", t0, key="kp", headers=[["h", "v"]])
    # the acknowledged offsets are stored ones (round robin: the shard need not be the partition)
    assert sorted(md.offset for md in metas) == sorted(r["offset"] for r in rows)
    assert {r["shard"] for r in rows} == {0, 1}


@pytest.mark.parametrize("version,codec,idempotent,with_headers", [
    ("2.1.0", "snappy", True, True), ("0.11.0.0", "lz4", False, True), ("0.10.0.0", "lz4", False, False),
    ("0.8.2.0", "gzip", False, False)])
def test_sarama_records_land_once(shared, version, codec, idempotent, with_headers):
    """sarama 1.22.1 (Produce v0, v2 and v3) over SASL_SSL: what it reports as (partition,
    offset) is the stored row's (shard, offset)."""
    ch, gw = shared.ch, shared.gw
    t0 = time.time()
    m = marker("sarama-%s" % codec)
    count = 200
    headers_args = ["-header", "trace=abc", "-header", "env=ch"] if with_headers else []
    cmd = [go_binary("saramaproducer"), "-brokers", gw.bootstrap("SASL_SSL"), "-tls-ca", gw.ca, "-sasl",
           "-user", "demo", "-password", password("main"), "-handshake", "v0" if version.startswith("0.") else "v1",
           "-version", version, "-codec", codec, "-acks", "-1", "-topic", "pinned", "-count", count, "-prefix", m,
           "-key", "sk3", *headers_args] + (["-idempotent"] if idempotent else [])
    proc = run_client(cmd)
    assert proc.returncode == 0, describe(proc, gw)
    values = ["%s-%d" % (m, i) for i in range(count)]
    rows = assert_exactly_once(ch, raw_where(m), values)
    check_rows(rows, "pinned", t0, key="sk3", headers=[["trace", "abc"], ["env", "ch"]] if headers_args else None)
    # sarama's hash partitioner (FNV-1a of the key, modulo 3) puts key "sk3" on partition 2
    assert {r["shard"] for r in rows} == {2}
    reported = {}
    for line in proc.stdout.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split())
        reported[f["value"]] = (int(f["partition"]), int(f["offset"]))
    assert reported == {r["content"]: (r["shard"], r["offset"]) for r in rows}
    assert all((r["producer_id"] >= 0) == idempotent for r in rows)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_kafkajs_records_land_once(shared, codec):
    """kafkajs 2.2.4 over SASL_SSL, several send() calls with a key and headers."""
    ch, gw = shared.ch, shared.gw
    t0 = time.time()
    m = marker("kafkajs-%s" % codec)
    count = 100
    cmd = ["node", node_script(), "--brokers", gw.bootstrap("SASL_SSL"), "--ca", gw.ca, "--user", "demo",
           "--password", password("main"), "--topic", "pinned", "--codec", codec, "--acks=-1", "--count", count,
           "--prefix", m, "--key", "jk", "--header", "a=1", "--header", "b=two", "--batch", "25"]
    proc = run_client(cmd)
    assert proc.returncode == 0, describe(proc, gw)
    values = ["%s-%d" % (m, i) for i in range(count)]
    rows = assert_exactly_once(ch, raw_where(m), values)
    check_rows(rows, "pinned", t0, key="jk", headers=[["a", "1"], ["b", "two"]])
    results = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]
    assert len(results) == 4 and all(r["errorCode"] == 0 for r in results), proc.stdout
    # each send()'s base offset is the first offset of 25 stored rows on that shard
    for r in results:
        batch = [row for row in rows if row["shard"] == r["partition"]
                 and int(r["baseOffset"]) <= row["offset"] < int(r["baseOffset"]) + 25]
        assert len(batch) == 25, (r, rows[:3])


def test_json_topic_fields_are_queryable_and_loggate_logs_prints_them(shared):
    """A `.json` topic: each object's keys are field_names/field_values, filterable and
    aggregatable with SQL; `loggate logs` reads the same logs back from ClickHouse."""
    ch, gw = shared.ch, shared.gw
    t0 = time.time()
    m = marker("json")
    levels = ["info", "warn", "error"]
    docs = [{"marker": m, "level": levels[i % 3], "n": i, "msg": "request %d" % i, "ok": i % 2 == 0,
             "ctx": {"user": "u%d" % (i % 5)}} for i in range(150)]
    d = rdkafka_produce(rdkafka_conf(gw, "PLAINTEXT", **{"acks": "all", "compression.codec": "lz4"}), "app.json",
                        [json.dumps(doc) for doc in docs])
    assert d.failed == [] and len(d.ok) == len(docs)
    rows = assert_exactly_once(ch, json_where(m), ["request %d" % i for i in range(150)],
                               column="field_values[indexOf(field_names, 'msg')]")
    check_rows(rows, "app", t0)
    for r in rows:
        assert r["content"] == "" and sorted(r["field_names"]) == ["ctx", "level", "marker", "msg", "n", "ok"], r
    # filter and aggregate by field values
    by_level = ch.rows("SELECT field_values[indexOf(field_names, 'level')] AS level, count() AS c, "
                       "sum(toInt64(field_values[indexOf(field_names, 'n')])) AS s FROM %s WHERE %s "
                       "GROUP BY level ORDER BY level" % (FQ, json_where(m)))
    assert by_level == [{"level": lv, "c": 50, "s": sum(i for i in range(150) if levels[i % 3] == lv)}
                        for lv in sorted(levels)]
    assert ch.rows("SELECT count() AS c FROM %s WHERE %s AND field_values[indexOf(field_names, 'ok')] = 'true' "
                   "AND toInt64(field_values[indexOf(field_names, 'n')]) >= 100" % (FQ, json_where(m))) == [{"c": 25}]
    # a nested object is kept as its JSON text
    ctx = ch.rows("SELECT DISTINCT field_values[indexOf(field_names, 'ctx')] AS ctx FROM %s WHERE %s ORDER BY ctx"
                  % (FQ, json_where(m)))
    assert [json.loads(r["ctx"]) for r in ctx] == [{"user": "u%d" % u} for u in range(5)]
    # `loggate logs` on the ClickHouse logstore prints the same logs, with the same fields
    printed = gw.logs("app", args=["--where", "marker=%s" % m])
    assert len(printed) == 150
    by_offset = {(r["shard"], r["offset"]): r for r in rows}
    for log in printed:
        r = by_offset[(log["__shard__"], log["__offset__"])]
        assert log["__project__"] == "demo" and log["__logstore__"] == "app", log
        assert log["__source__"] == r["client"] and log["__time_ms__"] == r["event_time_ms"], log
        assert log["__arrival_time_ms__"] == r["arrival_time_ms"], log
        assert {k: log[k] for k in r["field_names"]} == dict(zip(r["field_names"], r["field_values"])), log
    assert len({(l["__shard__"], l["__offset__"]) for l in printed}) == 150
    # and a field filter of the CLI agrees with SQL
    errors = gw.logs("app", args=["--where", "marker=%s" % m, "--where", "level=error"])
    assert sorted(int(l["n"]) for l in errors) == [i for i in range(150) if i % 3 == 2]


def test_loggate_logs_prints_raw_records_with_key_and_headers(shared):
    ch, gw = shared.ch, shared.gw
    m = marker("cli")
    values = ["%s-%d" % (m, i) for i in range(40)]
    d = rdkafka_produce(rdkafka_conf(gw, "PLAINTEXT", acks="1"), "one", values, key="ck",
                        headers=[("h1", b"x")])
    assert d.failed == []
    rows = assert_exactly_once(ch, raw_where(m), values)
    printed = [l for l in gw.logs("one") if l.get("content", "").startswith(m + "-")]
    assert sorted(l["content"] for l in printed) == sorted(values)
    assert {(0, l["__offset__"]) for l in printed} == {(r["shard"], r["offset"]) for r in rows}
    assert all(l["__key__"] == "ck" and l["__headers__"] == [["h1", "x"]] for l in printed)
    # --shard, --from/--to by offset and --limit work on ClickHouse too
    first = min(r["offset"] for r in rows)
    some = gw.logs("one", shard=0, args=["--from", first, "--to", first + 9])
    assert [l["content"] for l in some] == ["%s-%d" % (m, i) for i in range(10)]
    assert len(gw.logs("one", args=["--limit", 5])) == 5


def test_produce_answers_carry_the_first_offset_clickhouse_keeps(shared):
    # Produce v5+ `log_start_offset`: ClickHouse is asked in the background (never on an
    # append's path), so the first answers may not have it yet (-1).
    from test_produce_corners import batch_of, produce_answer
    from wire import connect
    ch, gw = shared.ch, shared.gw
    s = connect(gw.ports["PLAINTEXT"])
    m = marker("start")
    start, n, deadline = -1, 0, time.time() + 30
    while start < 0 and time.time() < deadline:
        error, base, start, record_errors, message = produce_answer(s, 8, "other", batch_of([b"%s-%d" % (m.encode(), n)]), n)
        assert (error, record_errors, message) == (0, [], None) and base > 0
        n += 1
        time.sleep(0.2)
    assert start >= 0, "no answer carried the first offset"
    first = int(ch.query("SELECT min(batch_id + position) FROM %s "
                         "WHERE project = 'demo' AND logstore = 'other' AND shard = 0" % FQ).strip())
    assert start == first, (start, first)
    assert_exactly_once(ch, raw_where(m), ["%s-%d" % (m, i) for i in range(n)])


# ------------------------------------------------------------------ ClickHouse goes away

def paced_load(conf, topic, values, seconds, events=(), flush_timeout=90, delivery=None, warmup=()):
    """Produces `values` at an even pace over `seconds` (librdkafka, one producer) while a
    thread runs each (at_second, action) of `events` when its time comes, then flushes.
    `warmup` values are produced and flushed first, before the clock starts (so that
    loggate knows an idempotent producer before a fault). Returns the Delivery."""
    d = delivery or Delivery()
    p = Producer(dict(conf, error_cb=d.error_cb))
    for v in warmup:
        p.produce(topic, value=v.encode(), on_delivery=d.report)
    assert p.flush(30) == 0
    t0 = time.monotonic()
    failures = []

    def run_events():
        try:
            for at, action in sorted(events, key=lambda e: e[0]):
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                action()
        except BaseException as e:  # reported by the test below
            failures.append(e)

    runner = threading.Thread(target=run_events, daemon=True)
    runner.start()
    for i, v in enumerate(values):
        due = t0 + seconds * i / len(values)
        while time.monotonic() < due:
            p.poll(min(0.02, max(0.0, due - time.monotonic())))
        while True:
            try:
                p.produce(topic, value=v.encode(), on_delivery=d.report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    runner.join(120)
    assert not failures, failures
    left = p.flush(flush_timeout)
    assert left == 0, "%d records still queued after %s s" % (left, flush_timeout)
    return d


def storage_errors(gw):
    """Produce partitions loggate answered with a storage error (KAFKA_STORAGE_ERROR, or
    NOT_LEADER_FOR_PARTITION for Produce v0-v3), from /metrics."""
    return sum(v for (name, labels), v in gw.metrics().items()
               if name.startswith("loggate_produce_partition_errors")
               and dict(labels).get("error") in (STORAGE_ERROR, "NOT_LEADER_OR_FOLLOWER", "NOT_LEADER_FOR_PARTITION"))


@pytest.mark.parametrize("idempotent,linger_ms", [
    (True, 5),
    (False, 5),
    (False, 1000),
], ids=["idempotent", "not-idempotent", "not-idempotent-linger-1s"])
def test_clickhouse_stopped_and_started_during_a_load(rigs, idempotent, linger_ms):
    """ClickHouse is stopped (SIGTERM, then SIGKILL: see below) in the middle of a librdkafka
    load (acks=all) and started again about 5 s later: nothing is acknowledged while it is
    down, loggate's log shows the failed inserts, a non-idempotent producer is answered
    KAFKA_STORAGE_ERROR meanwhile (loggate's metrics), no delivery fails, and every record is
    stored exactly once."""
    rig = rigs()
    ch, gw = rig.ch, rig.gw
    m = marker("outage-%s" % ("idem" if idempotent else "plain"))
    values = ["%s-%d" % (m, i) for i in range(6000)]
    seen = {}
    d = Delivery()

    def stop():
        seen["errors_before"] = storage_errors(gw)
        t = time.monotonic()
        # SIGTERM; 18.16 then refuses new connections but goes on serving a keep-alive
        # connection that keeps sending (loggate's: seen served for 9.6 s, until the load
        # ended), so after 2 s it gets SIGKILL.
        ch.stop(timeout=2)
        seen["stop_s"] = time.monotonic() - t
        time.sleep(0.5)  # answers already on their way back
        seen["acked_down"] = len(d.ok)

    def start():
        seen["acked_up"] = len(d.ok)
        seen["errors_down"] = storage_errors(gw)
        ch.start()

    conf = rdkafka_conf(gw, "PLAINTEXT", **{"enable.idempotence": idempotent, "acks": "all",
                                            "compression.codec": "lz4", "linger.ms": linger_ms})
    paced_load(conf, "app", values, seconds=12, events=[(3, stop), (9, start)], delivery=d)
    print("stop took %.1f s; storage errors answered while down: %d; acked before/after the outage: %d/%d" % (
        seen["stop_s"], seen["errors_down"], seen["acked_down"], len(d.ok)))
    assert d.failed == [], d.failed[:5]
    assert len(d.ok) == len(values)
    assert 0 < seen["acked_down"] < len(values)
    assert seen["acked_up"] == seen["acked_down"], "records acknowledged while ClickHouse was down"
    assert seen["errors_before"] == 0
    log = gw.log_text()
    assert "ClickHouse insert failed" in log or "ClickHouse unreachable" in log
    if not idempotent and "checking what it stored" not in log:
        # The outage was met by inserts that certainly stored nothing: refused at once.
        # When instead the insert in flight at the kill had an unknown outcome, its requests
        # are answered only once a check can tell what was stored, and the producer's
        # pipelined requests (up to max_pipelined_requests, 32) may all be in it: the
        # connection then reads nothing more and answers nothing until ClickHouse is back
        # (seen in CI: 0 errors). Requests that do arrive meanwhile are refused at once:
        # test_clickhouse_refusing_connections proves that with a second producer.
        # (An idempotent producer's next batch of a partition waits for the one before it,
        # whose outcome is in doubt, so it may see no error at all: 0 and 12 were seen.)
        assert seen["errors_down"] > 0, "no KAFKA_STORAGE_ERROR answered while ClickHouse was down"
    assert_exactly_once(ch, raw_where(m), values)


def test_non_idempotent_pipelining_producer_is_stored_once(rigs):
    """No fault at all: librdkafka without idempotence at its default linger (5 ms) sends
    500 records/s for 6 s over one connection, with up to 1,000,000 requests in flight.
    Every record is delivered and stored once. Before connections pipelined requests
    (main 0137f8e), loggate answered one Produce request per insert window (about 200 ms) on
    a connection: the requests queued up in librdkafka until they timed out (15 s here), and
    the retries of requests loggate did store landed a second time (888 of 3,000 failed and
    3,334 rows were stored in one run)."""
    rig = rigs()
    m = marker("pipeline")
    values = ["%s-%d" % (m, i) for i in range(3000)]
    conf = rdkafka_conf(rig.gw, "PLAINTEXT", **{"enable.idempotence": False, "acks": "all", "linger.ms": 5,
                                                "message.timeout.ms": 15000})
    d = paced_load(conf, "app", values, seconds=6, flush_timeout=40)
    stored = rig.ch.rows("SELECT count() AS n FROM %s WHERE %s" % (FQ, raw_where(m)))[0]["n"]
    print("failed %d of %d; %d rows stored" % (len(d.failed), len(values), stored))
    assert d.failed == []
    assert_exactly_once(rig.ch, raw_where(m), values)


# ------------------------------------------------------------------ faults between loggate and ClickHouse

def wait_for(cond, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def statement(req):
    """The SQL of a recorded request: the `query` parameter of an insert, else the body."""
    return req.sql if req.sql is not None else req.body.decode(errors="replace")


def inserts(proxy):
    """[(log entry, query_id)] of the INSERTs the proxy saw, in order."""
    return [(e, e["request"].params.get("query_id")) for e in list(proxy.log)
            if statement(e["request"]).lstrip().upper().startswith("INSERT")]


def proxied(tmp_rigs, **clickhouse):
    """A rig whose loggate reaches ClickHouse through the proxy, once loggate's start-up
    statements (and the first retention pass) went through, so that a fault set next hits an
    insert."""
    rig = tmp_rigs(proxy=True, clickhouse=clickhouse)
    wait_for(lambda: any("system.parts" in statement(r) for r in list(rig.proxy.requests)), what="retention pass")
    time.sleep(0.2)
    return rig


def one_request(gw, m, n=200, **conf):
    """n records in one Produce request (librdkafka, not idempotent, so loggate's own
    checks alone keep them once), all acknowledged."""
    c = rdkafka_conf(gw, "PLAINTEXT", **dict({"enable.idempotence": False, "acks": "all", "linger.ms": 200}, **conf))
    values = ["%s-%d" % (m, i) for i in range(n)]
    d = rdkafka_produce(c, "one", values)
    assert d.failed == [] and len(d.ok) == n
    return values, d


def test_insert_answer_lost_is_checked_not_resent(rigs):
    """drop_after_forward: the insert reaches ClickHouse and lands, loggate never hears. It
    must ask ClickHouse (system.processes by query_id, then rows by insert_id), find every
    row, and not insert again."""
    rig = proxied(rigs)
    rig.proxy.set_mode("drop_after_forward", fault_count=1)
    m = marker("dropped")
    values, _ = one_request(rig.gw, m)
    rows = assert_exactly_once(rig.ch, raw_where(m), values)
    ins = inserts(rig.proxy)
    assert ins[0][0]["outcome"] == "drop_after_forward", ins
    query_id = ins[0][1]
    assert query_id and query_id.startswith("loggate-")
    insert_id = int(query_id[len("loggate-"):], 16)
    assert {r["insert_id"] for r in rows} == {insert_id}
    after = [statement(e["request"]) for e in rig.proxy.log[rig.proxy.log.index(ins[0][0]) + 1:]]
    assert any("system.processes" in s and query_id in s for s in after), after
    assert any("insert_id = %d" % insert_id in s for s in after), after
    # no second insert of these rows: the check found them all
    assert [q for _, q in ins].count(query_id) == 1, ins
    assert "ClickHouse insert found complete on check" in rig.gw.log_text()


def test_insert_error_answer_is_checked_then_resent_once(rigs):
    """error500 once: nothing was stored, the check says so, and the rows are sent again
    under the same query id: stored once."""
    rig = proxied(rigs)
    rig.proxy.set_mode("error500", fault_count=1)
    m = marker("err500")
    values, _ = one_request(rig.gw, m)
    assert_exactly_once(rig.ch, raw_where(m), values)
    ins = inserts(rig.proxy)
    assert [e["outcome"] for e, _ in ins[:2]] == ["error500", "pass"], ins
    assert ins[0][1] == ins[1][1], "the resent insert keeps its query id"
    assert ins[1][0]["request"].body == ins[0][0]["request"].body  # every row missing: all resent
    first, second = rig.proxy.log.index(ins[0][0]), rig.proxy.log.index(ins[1][0])
    between = [statement(e["request"]) for e in rig.proxy.log[first + 1:second]]
    assert any("system.processes" in s for s in between) and any("insert_id =" in s for s in between), between
    assert "ClickHouse insert checked stored=0 resending=%d" % len(values) in rig.gw.log_text()


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
def test_clickhouse_hanging_longer_than_the_timeout(rigs, idempotent):
    """hang for 6 s with timeout_secs = 2, from the middle of a load of a producer loggate
    already knows: the insert times out, its checks time out, nothing is acknowledged while
    it hangs, and after `pass` every record is stored exactly once."""
    rig = proxied(rigs, timeout_secs=2)
    m = marker("hang")
    warm = ["%s-w%d" % (m, i) for i in range(20)]
    values = ["%s-%d" % (m, i) for i in range(1000)]
    conf = rdkafka_conf(rig.gw, "PLAINTEXT", **{"enable.idempotence": idempotent, "acks": "all",
                                                "linger.ms": 5 if idempotent else 1000})
    seen = {}
    d = Delivery()

    def hang():
        rig.proxy.mode = "hang"
        time.sleep(1)  # answers on their way back
        seen["acked"] = len(d.ok)

    def release():
        seen["acked_end"] = len(d.ok)
        seen["hung"] = sum(1 for e in rig.proxy.log if e["outcome"] == "hang")
        seen["stored"] = rig.ch.rows("SELECT count() AS n FROM %s WHERE %s" % (FQ, raw_where(m)))[0]["n"]
        rig.proxy.mode = "pass"

    paced_load(conf, "app", values, seconds=4, events=[(0.5, hang), (6.5, release)], delivery=d, warmup=warm)
    assert d.failed == [] and len(d.ok) == len(values) + len(warm)
    assert seen["acked_end"] == seen["acked"], "acknowledged while ClickHouse hung"
    assert seen["acked"] < len(values) + len(warm) - 500
    assert seen["hung"] >= 2, "the insert and its checks hang"
    log = rig.gw.log_text()
    assert "no answer within 2s" in log and "ClickHouse insert failed" in log
    assert_exactly_once(rig.ch, raw_where(m), warm + values)


class RdkafkaLog:
    """librdkafka's own log lines (debug contexts msg and protocol), for what a client was
    answered even when it retried."""

    def __init__(self):
        import logging
        self.lines = []
        self.logger = logging.getLogger("rdkafka-%s" % uuid.uuid4().hex[:6])
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        outer = self

        class Handler(logging.Handler):
            def emit(self, record):
                outer.lines.append(record.getMessage())

        self.logger.addHandler(Handler())

    def conf(self):
        return {"debug": "msg,protocol", "logger": self.logger}

    def storage_errors(self):
        """ProduceRequest failures with KAFKA_STORAGE_ERROR (librdkafka's text for it)."""
        return [l for l in self.lines if "Disk error when trying to access log file" in l
                and ("ProduceRequest failed" in l or "encountered error" in l)]


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
def test_clickhouse_refusing_connections(rigs, idempotent):
    """refuse for 4 s (every connection to ClickHouse accepted and closed at once) from the
    middle of a load. The insert in flight then has an unknown outcome: its producer waits
    until a check can tell what was stored. A second producer that sends meanwhile is
    answered KAFKA_STORAGE_ERROR at once (librdkafka, no retries: its delivery fails with it)
    and nothing of it is stored. Once ClickHouse is reachable again every record of the load
    is stored exactly once."""
    rig = proxied(rigs)
    gw = rig.gw
    m = marker("refuse")
    warm = ["%s-w%d" % (m, i) for i in range(20)]
    values = ["%s-%d" % (m, i) for i in range(1000)]
    conf = rdkafka_conf(gw, "PLAINTEXT", **{"enable.idempotence": idempotent, "acks": "all",
                                            "linger.ms": 5 if idempotent else 1000})
    seen = {}
    probe = Delivery()
    probe_log = RdkafkaLog()
    probe_value = marker("refuse-probe")

    def refuse():
        rig.proxy.mode = "refuse"

    def send_probe():
        p = Producer(rdkafka_conf(gw, "PLAINTEXT", **dict({"acks": "all", "retries": 0, "error_cb": probe.error_cb},
                                                          **probe_log.conf())))
        p.produce("one", value=probe_value.encode(), on_delivery=probe.report)
        t = time.monotonic()
        seen["probe_left"] = p.flush(10)
        seen["probe_s"] = time.monotonic() - t

    def release():
        seen["errors"] = storage_errors(gw)
        seen["refused"] = rig.proxy.refused
        rig.proxy.mode = "pass"

    d = paced_load(conf, "app", values, seconds=4, events=[(0.5, refuse), (2, send_probe), (4.5, release)],
                   warmup=warm)
    assert d.failed == [] and len(d.ok) == len(values) + len(warm)
    assert seen["refused"] > 0
    assert_exactly_once(rig.ch, raw_where(m), warm + values)
    # the second producer was told at once
    assert seen["probe_left"] == 0 and seen["probe_s"] < 2, seen
    assert [e.code() for _, e in probe.failed] == [KafkaError.KAFKA_STORAGE_ERROR], (probe.failed, probe.ok)
    # librdkafka would retry it (its delivery failed only because retries = 0)
    assert any("Retry" in l for l in probe_log.storage_errors()), probe_log.storage_errors()
    assert seen["errors"] > 0
    assert "new appends get a retriable error meanwhile" in gw.log_text()
    assert rig.ch.rows("SELECT count() AS n FROM %s WHERE content = %s" % (FQ, sql_str(probe_value))) == [{"n": 0}]


def rss_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


MiB = 1 << 20
# The memory bound test: what loggate may hold, by its configured budgets.
MEM_LIMITS = {"max_inflight_bytes": 32 * MiB, "max_decoded_inflight_bytes": 32 * MiB}
MEM_REQUEST = {"max_request_bytes": 32 * MiB}  # at most max_inflight_bytes
PRODUCERS = 24
MEM_CLICKHOUSE = {"max_pending_bytes": 16 * MiB, "insert_max_bytes": 4 * MiB, "timeout_secs": 2}


def test_memory_stays_bounded_while_clickhouse_hangs(rigs):
    """ClickHouse hangs (proxy `hang`) under a load of 24 librdkafka producers sending
    ~1 KiB records to 3 partitions as fast as they can (8 MB batches, no retries) for at
    least 10 s and until 8x the budgets are offered (at most 30 s). loggate's peak RSS (VmHWM) stays below its budgets (requests
    32 MiB + converted logs 32 MiB + pending inserts 16 MiB) + 150 MiB for the process
    itself (it starts at about 17 MiB); the producers get errors instead; after `pass` every
    acknowledged record is stored and nothing twice. Seen: peak 140 MiB; with the budgets
    set to 1 GiB, 1 GiB and 2 GiB instead the same load took it to 318 MiB."""
    rig = rigs(proxy=True, clickhouse=MEM_CLICKHOUSE, limits=dict(MEM_LIMITS, **MEM_REQUEST))
    wait_for(lambda: any("system.parts" in statement(r) for r in list(rig.proxy.requests)), what="retention pass")
    gw = rig.gw
    pid = gw.proc.pid
    base_kib = rss_kib(pid)
    bound_kib = (sum(MEM_LIMITS.values()) + MEM_CLICKHOUSE["max_pending_bytes"] + 150 * MiB) // 1024
    m = marker("mem")
    pad = "x" * 1000
    # At least 8x the budgets offered, in records of about 1 KiB: the producers go on past
    # 10 s (up to 30 s) until they have offered that much, so a slow machine cannot make
    # the load too small to test anything.
    need = 8 * (sum(MEM_LIMITS.values()) + MEM_CLICKHOUSE["max_pending_bytes"]) // 1000 + 1
    start = time.monotonic()
    counts = [0] * PRODUCERS
    results = []

    def load_wanted():
        elapsed = time.monotonic() - start
        return elapsed < 10 or (elapsed < 30 and sum(counts) < need)

    def producer(n):
        d = Delivery()
        p = Producer(rdkafka_conf(gw, "PLAINTEXT", **{"acks": "1", "retries": 0, "linger.ms": 50,
                                                       "batch.size": 8 * 1000 * 1000, "message.max.bytes": 40 * MiB,
                                                       "queue.buffering.max.kbytes": 64 * 1024,
                                                       "message.timeout.ms": 12000, "error_cb": d.error_cb}))
        i, blocked = 0, False
        while True:
            if blocked or i % 256 == 0:
                counts[n] = i
                if not load_wanted():
                    break
            try:
                p.produce("pinned", value=("%s-%d-%d-%s" % (m, n, i, pad)).encode(), on_delivery=d.report)
                i, blocked = i + 1, False
            except BufferError:
                blocked = True
                p.poll(0.05)
        counts[n] = i
        results.append((d, p, i))

    rig.proxy.mode = "hang"
    threads = [threading.Thread(target=producer, args=(n,), daemon=True) for n in range(PRODUCERS)]
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_kib(pid))
        time.sleep(0.1)
    hwm = rss_kib(pid, "VmHWM")
    rig.proxy.mode = "pass"
    for d, p, _ in results:
        assert p.flush(60) == 0
    sent = sum(i for _, _, i in results)
    failed = sum(len(d.failed) for d, _, _ in results)
    acked = [v for d, _, _ in results for v in d.ok]
    print("loggate RSS: %d MiB at start, peak %d MiB (bound %d MiB); %d records sent (%d MiB), %d failed, %d acked"
          % (base_kib // 1024, hwm // 1024, bound_kib // 1024, sent, sent * 1040 // MiB, failed, len(acked)))
    assert sent >= need, "too little load: %d records sent in %.0f s" % (sent, time.monotonic() - start)
    assert hwm < bound_kib, "loggate peaked at %d MiB" % (hwm // 1024)
    assert failed > 0, "producers got no error while ClickHouse hung"
    assert gw.alive()
    # every acknowledged record once; nothing (acknowledged or not) twice
    time.sleep(1)
    dup = rig.ch.rows("SELECT count() AS n, count(DISTINCT content) AS d FROM %s WHERE %s" % (FQ, raw_where(m)))[0]
    assert dup["n"] == dup["d"], dup
    stored = {r["v"] for r in rig.ch.rows(
        "SELECT arrayStringConcat(arraySlice(splitByChar('-', content), 1, 4), '-') AS v FROM %s WHERE %s"
        % (FQ, raw_where(m)))}
    missing = {v.rsplit("-", 1)[0] for v in acked} - stored
    assert not missing, "acknowledged and not stored: %s" % sorted(missing)[:5]


# ------------------------------------------------------------------ the DDL and inserts on today's engine

def test_ddl_and_recorded_inserts_load_on_the_current_engine(rigs):
    """The DDL loggate ran on 18.16 and the exact INSERT bodies it sent (recorded by the
    proxy) load on the current ClickHouse engine (chdb): the same row count, the same rows."""
    rig = rigs(proxy=True)
    gw, ch, proxy = rig.gw, rig.ch, rig.proxy
    m = marker("replay")
    d = rdkafka_produce(rdkafka_conf(gw, "PLAINTEXT", acks="all"), "app", ["%s-%d" % (m, i) for i in range(50)],
                        key="rk", headers=[("h", b"1"), ("n", None)])
    assert d.failed == []
    docs = [json.dumps({"marker": m, "level": "warn", "i": i, "text": "ünï ✓ \t%d" % i}) for i in range(30)]
    assert rdkafka_produce(rdkafka_conf(gw, "PLAINTEXT", **{"acks": "all", "enable.idempotence": True}),
                           "app.json", docs).failed == []
    assert rdkafka_produce(rdkafka_conf(gw, "SASL_SSL", **{"acks": "all", "enable.idempotence": True}),
                           "pinned", ["%s-p%d" % (m, i) for i in range(20)]).failed == []
    ddl = [statement(r) for r in proxy.requests if statement(r).lstrip().upper().startswith("CREATE")]
    assert len(ddl) == 2, ddl
    shown = ch.query("SHOW CREATE TABLE %s FORMAT TabSeparatedRaw" % FQ).strip()
    assert columns_of_create(shown) == LOGS_COLUMNS == columns_of_create(ddl[1])
    assert "PARTITION BY (retention_hours, toYYYYMMDD(arrival_time))" in shown
    recorded = [split_insert(r.path_and_query, r.body) for r in proxy.requests
                if statement(r).lstrip().upper().startswith("INSERT")]
    assert len(recorded) >= 3
    assert all(params_ok(r) for r in proxy.requests if statement(r).lstrip().upper().startswith("INSERT"))
    total = ch.count(FQ)
    assert total == 100
    everything = "SELECT * FROM %s ORDER BY batch_id, position" % FQ
    on_1816 = ch.rows(everything)
    for stmts in (ddl, [ddl[0], shown]):  # what loggate sent, and the table as 18.16 shows it
        counts = check_on_current_engine(stmts, recorded)
        assert not counts.version.startswith("18."), counts.version
        assert list(counts.values()) == [total], dict(counts)
        assert chdb_query(everything) == on_1816
    # a few values, as a user would query them on both engines
    probe = ("SELECT key, header_keys, header_values, field_values[indexOf(field_names, 'text')] AS text, shard "
             "FROM %s WHERE %s OR %s ORDER BY batch_id, position LIMIT 3" % (FQ, raw_where(m), json_where(m)))
    assert chdb_query(probe) == ch.rows(probe)
    assert ch.rows(probe)[0]["key"] == "rk" and ch.rows(probe)[0]["header_values"] == ["1", None]


def params_ok(req):
    """An insert carries its query id and asks for a synchronous Distributed insert."""
    p = req.params
    return p.get("query_id", "").startswith("loggate-") and p.get("insert_distributed_sync") == "1"


# ------------------------------------------------------------------ retention

DAY_S = 86400


def hand_row(content, arrival_s, retention_hours, logstore="one", i=0):
    return dict(project="demo", logstore=logstore, shard=0, event_time=arrival_s, event_time_ms=arrival_s * 1000,
                arrival_time=arrival_s, arrival_time_ms=arrival_s * 1000, retention_hours=retention_hours, node_id=9,
                insert_id=4242, batch_id=1000 + i, position=0, producer_id=-1, producer_epoch=-1, producer_lane=0,
                sequence_first=-1, sequence_last=-1, client="hand:0", key=None, header_keys=[], header_values=[],
                field_names=[], field_values=[], content=content)


def test_retention_drops_only_expired_partitions_at_start(tmp_path, rigs):
    """Rows put in by hand: retention 1 h and an arrival two days ago (expired), retention 0
    and an arrival 400 days ago (kept forever), retention 1 h arriving now, retention 72 h two
    days ago (not yet expired). loggate, started with a logstore of retention_hours = 1, drops
    the expired partition at start and nothing else; its own rows carry their retention."""
    ch = ClickHouse(tmp_path, "retention-ch").start()
    rig = None
    try:
        for stmt in [s.format(db=DB, table=TABLE) for s in LOGS_DDL]:
            ch.query(stmt)
        now = int(time.time())
        m = marker("ret")
        groups = {"expired": (now - 2 * DAY_S, 1), "forever": (now - 400 * DAY_S, 0), "recent": (now, 1),
                  "later": (now - 2 * DAY_S, 72)}
        rows = [hand_row("%s-%s-%d" % (m, g, i), arrival, hours, i=i)
                for g, (arrival, hours) in groups.items() for i in range(5)]
        ch.query(insert_sql(FQ, LOGS_COLUMNS), data=encode_rowbinary(LOGS_COLUMNS, rows))
        assert ch.count(FQ) == 20
        rig = rigs(ch=ch, logstore_options={"one": {"retention_hours": 1}})
        wait_for(lambda: "dropped an expired ClickHouse partition" in rig.gw.log_text(), what="the partition drop")
        left = Counter(r["g"] for r in ch.rows(
            "SELECT splitByChar('-', content)[3] AS g FROM %s WHERE %s" % (FQ, raw_where(m))))
        assert left == {"forever": 5, "recent": 5, "later": 5}
        day = time.strftime("%Y%m%d", time.gmtime(now - 2 * DAY_S))
        assert "retention_hours=1 day=%s" % day in rig.gw.log_text()
        assert rig.gw.log_text().count("dropped an expired ClickHouse partition") == 1
        # rows loggate writes carry their logstore's retention (0: none configured)
        assert rdkafka_produce(rdkafka_conf(rig.gw, "PLAINTEXT", acks="all"), "one", [m + "-new-1"]).failed == []
        assert rdkafka_produce(rdkafka_conf(rig.gw, "PLAINTEXT", acks="all"), "other", [m + "-new-2"]).failed == []
        assert ch.rows("SELECT logstore, retention_hours FROM %s WHERE content LIKE %s ORDER BY logstore"
                       % (FQ, sql_str(m + "-new-%"))) == [{"logstore": "one", "retention_hours": 1},
                                                          {"logstore": "other", "retention_hours": 0}]
    finally:
        if rig:
            rig.gw.stop()  # first: 18.16 waits for an open keep-alive connection before it stops
        ch.stop()


# ------------------------------------------------------------------ two backends in one gateway

def test_clickhouse_logstore_beside_a_local_one(rigs):
    """`storage = "clickhouse"` on one logstore, the local logstore for the rest: each
    record lands in its own backend only."""
    rig = rigs(storage={}, logstore_options={"app": {"storage": '"clickhouse"'}})
    gw, ch = rig.gw, rig.ch
    m = marker("mixed")
    to_ch = ["%s-ch-%d" % (m, i) for i in range(100)]
    to_local = ["%s-local-%d" % (m, i) for i in range(100)]
    conf = rdkafka_conf(gw, "SASL_SSL", **{"acks": "all", "enable.idempotence": True})
    assert rdkafka_produce(conf, "app", to_ch).failed == []
    assert rdkafka_produce(conf, "one", to_local).failed == []
    assert_exactly_once(ch, raw_where(m), to_ch)
    assert ch.rows("SELECT DISTINCT logstore FROM %s" % FQ) == [{"logstore": "app"}]
    local = gw.logs("one")
    assert sorted(l["content"] for l in local) == sorted(to_local)
    assert sorted(l["content"] for l in gw.logs("app")) == sorted(to_ch)  # read back from ClickHouse
    stores = gw.data / "logstores" / "demo"
    assert (stores / "one").is_dir() and not (stores / "app").exists()
    assert not any(m.encode() + b"-ch-" in f.read_bytes() for f in stores.rglob("*.log"))
