"""The ClickHouse test infrastructure works with the real components: a clickhouse-server
18.16 per test (clickhouse.py), the recording / fault-injecting HTTP proxy (chproxy.py) and
the replay of recorded inserts on the current engine (chdb)."""

import base64
import http.client
import socket
import time
import urllib.parse

import pytest

from chproxy import HttpProxy
from clickhouse import (LOGS_COLUMNS, LOGS_DDL, ClickHouse, ClickHouseError, check_on_current_engine,
                        chdb_query, encode_rowbinary, insert_sql, logs_ddl, split_insert)

DB, TABLE = "lg", "logs"
FQ = "%s.%s" % (DB, TABLE)


@pytest.fixture
def logs(clickhouse):
    """The server with the logs table created."""
    for stmt in logs_ddl(DB, TABLE):
        clickhouse.query(stmt)
    return clickhouse


@pytest.fixture
def proxy(clickhouse):
    p = HttpProxy(clickhouse.url, upstream_timeout=10)
    try:
        yield p
    finally:
        p.close()


DAY = 1764547200  # 2025-12-01 00:00:00 UTC


def log_row(i, **over):
    row = dict(
        project="demo", logstore="app", shard=i % 2, event_time=DAY + i, event_time_ms=(DAY + i) * 1000 + 7,
        arrival_time=DAY + 60 + i, arrival_time_ms=(DAY + 60 + i) * 1000 + 9, retention_hours=24, node_id=3,
        insert_id=1000 + i, batch_id=77, position=i, producer_id=-1, producer_epoch=-1, producer_lane=0,
        sequence_first=-1, sequence_last=-1, client="test-client", key=None, header_keys=[], header_values=[],
        field_names=[], field_values=[], content="line %d" % i,
    )
    row.update(over)
    return row


def post(port, sql, data=None, conn=None, timeout=5, settings=None, headers=None):
    """(status, body) of one query sent to 127.0.0.1:`port` on `conn` (a new one if None):
    with `data`, the SQL goes in the URL and `data` is the body."""
    params = dict(settings or {})
    if data is None:
        body = sql.encode()
    else:
        params["query"] = sql
        body = data
    path = "/" + ("?" + urllib.parse.urlencode(params) if params else "")
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        if conn is None:
            c.close()


def wait_for(cond, timeout=10):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def closed_by_peer(sock, timeout=5):
    """True if the peer closes `sock` within `timeout` s."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# ------------------------------------------------------------------ the server itself

def test_server_restarts_on_its_data_and_can_hang(tmp_path):
    """start / stop / kill / pause / resume; the data survives a stop and a SIGKILL; users."""
    ch = ClickHouse(tmp_path, name="one")
    try:
        ch.start()
        assert ch.url == "http://127.0.0.1:%d" % ch.http_port
        assert ch.start_seconds < 30
        for stmt in logs_ddl(DB, TABLE):
            ch.query(stmt)
        ch.query(insert_sql(FQ, LOGS_COLUMNS), data=encode_rowbinary(LOGS_COLUMNS, [log_row(0)]))
        port = ch.http_port
        ch.stop()
        assert not ch.ping(timeout=0.5)
        ch.start()
        assert ch.http_port == port and ch.count(FQ) == 1
        ch.kill()
        ch.start()
        assert ch.count(FQ) == 1
        # the loggate user with its password, only with it
        assert ch.query("SELECT 1", user="loggate", password="loggate-pw").strip() == "1"
        with pytest.raises(ClickHouseError) as err:
            ch.query("SELECT 1", user="loggate", password="wrong")
        assert err.value.status == 401 and "Wrong password" in err.value.text
        # errors carry ClickHouse's text
        with pytest.raises(ClickHouseError) as err:
            ch.query("SELECT * FROM nodb.nothing")
        assert "Code: 81" in err.value.text and "nodb" in err.value.text
        # a paused server accepts connections and answers nothing until resumed
        ch.pause()
        with pytest.raises(socket.timeout):
            ch.query("SELECT 1", timeout=0.5)
        ch.resume()
        assert ch.query("SELECT 1").strip() == "1"
        ch.pause()
        ch.stop()  # a stopped (SIGSTOP) server still stops
        assert not ch.running()
    finally:
        ch.stop()


def test_facts_of_18_16(logs):
    """What loggate's backend may rely on (or must avoid) on 18.16."""
    ch = logs
    assert ch.query("SELECT version()").startswith("18.16")
    settings = {r["name"]: r["value"] for r in ch.rows(
        "SELECT name, value FROM system.settings WHERE name LIKE '%distributed%'")}
    assert settings["insert_distributed_sync"] == "0"  # exists, off by default
    assert "insert_distributed_timeout" in settings
    rows = [log_row(0, retention_hours=7, arrival_time=DAY), log_row(1, retention_hours=24, arrival_time=DAY),
            log_row(2, retention_hours=24, arrival_time=DAY + 86400, content="gone")]
    ch.query(insert_sql(FQ, LOGS_COLUMNS), data=encode_rowbinary(LOGS_COLUMNS, rows))
    parts = ch.rows("SELECT partition, partition_id FROM system.parts WHERE database = '%s' AND table = '%s' "
                    "AND active ORDER BY partition_id" % (DB, TABLE))
    # a tuple key shows as "(a,b)" in `partition` and as "a-b" in `partition_id`
    assert parts == [
        {"partition": "(24,20251201)", "partition_id": "24-20251201"},
        {"partition": "(24,20251202)", "partition_id": "24-20251202"},
        {"partition": "(7,20251201)", "partition_id": "7-20251201"},
    ]
    ch.query("ALTER TABLE %s DROP PARTITION (7, 20251201)" % FQ)
    assert ch.count(FQ) == 2
    # ALTER ... DELETE exists (a mutation, done in the background)
    ch.query("ALTER TABLE %s DELETE WHERE content = 'gone'" % FQ)
    deadline = time.monotonic() + 10
    while ch.count(FQ) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ch.count(FQ) == 1
    assert ch.rows("SELECT is_done FROM system.mutations WHERE table = '%s'" % TABLE) == [{"is_done": 1}]
    # SETTINGS inside an INSERT is a syntax error on 18.16: settings go in the URL
    with pytest.raises(ClickHouseError) as err:
        ch.query(insert_sql(FQ, LOGS_COLUMNS, {"insert_distributed_sync": 1}),
                 data=encode_rowbinary(LOGS_COLUMNS, [log_row(9)]))
    assert "Code: 62" in err.value.text
    ch.query(insert_sql(FQ, LOGS_COLUMNS), data=encode_rowbinary(LOGS_COLUMNS, [log_row(9)]),
             settings={"insert_distributed_sync": 1})
    assert ch.count(FQ) == 2


# ------------------------------------------------------------------ through the proxy, then on chdb

def test_rowbinary_insert_through_proxy_replays_the_same_on_chdb(logs, proxy):
    rows = [
        log_row(0),
        log_row(1, key="k-1", header_keys=["trace", "empty"], header_values=["abc", None],
                field_names=["level", "host"], field_values=["warn", "h1"], content="x" * 300),
        log_row(2, retention_hours=168, arrival_time=DAY + 86400 + 5, producer_id=2 ** 62, producer_epoch=-32768,
                insert_id=2 ** 64 - 1, sequence_first=-(2 ** 31), sequence_last=2 ** 31 - 1, node_id=65535,
                content="ünïcødé ✓\nsecond line\ttab", key=""),
    ]
    data = encode_rowbinary(LOGS_COLUMNS, rows)
    sql = insert_sql(FQ, LOGS_COLUMNS)
    # as loggate will send it: SQL in the URL, settings as URL parameters, basic auth
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    auth = {"Authorization": "Basic " + base64.b64encode(b"loggate:loggate-pw").decode()}
    assert post(proxy.port, sql, data, conn=c, settings={"insert_distributed_sync": 1}, headers=auth) == (200, b"")
    # the other form: the statement then the data in the body, chunked
    more = [log_row(3, content="in the body")]
    body = (sql + "\n").encode() + encode_rowbinary(LOGS_COLUMNS, more)
    c.request("POST", "/", body=iter([body[:10], body[10:]]), headers=auth, encode_chunked=True)
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"")
    # a bad password is relayed with ClickHouse's own answer
    status, text = post(proxy.port, "SELECT 1", conn=c, headers={"Authorization": "Basic " + base64.b64encode(b"loggate:no").decode()})
    assert status == 401 and b"Wrong password for user loggate" in text
    c.close()

    assert [r.method for r in proxy.requests] == ["POST"] * 3
    first, second = proxy.requests[0], proxy.requests[1]
    assert first.sql == sql and first.params["insert_distributed_sync"] == "1" and first.body == data
    assert second.sql is None and second.body == body  # chunks joined
    assert {e["conn"] for e in proxy.log} == {1}  # one keep-alive connection
    assert proxy.connections == 1

    want = [dict(r) for r in rows + more]
    for r in want:
        for k in ("event_time", "arrival_time"):
            r[k] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r[k]))
    got_1816 = logs.rows("SELECT * FROM %s ORDER BY position" % FQ)
    assert got_1816 == want

    inserts = [split_insert(r.path_and_query, r.body) for r in proxy.requests[:2]]
    assert inserts[1] == (sql, encode_rowbinary(LOGS_COLUMNS, more))
    counts = check_on_current_engine(logs_ddl(DB, TABLE), inserts)
    assert dict(counts) == {FQ: 4}
    assert not counts.version.startswith("18.")
    assert chdb_query("SELECT * FROM %s ORDER BY position" % FQ) == got_1816
    parts_sql = ("SELECT partition, sum(rows) AS n FROM system.parts WHERE database = '%s' AND table = '%s' "
                 "AND active GROUP BY partition ORDER BY partition" % (DB, TABLE))
    assert chdb_query(parts_sql) == logs.rows(parts_sql) == [
        {"partition": "(168,20251202)", "n": 1}, {"partition": "(24,20251201)", "n": 3}]


def test_chdb_check_takes_the_columns_named_in_the_insert():
    """An insert naming a subset of the columns in another order: the rest get defaults."""
    ddl = [s.format(db="x", table="t") for s in LOGS_DDL]
    cols = [("content", "String"), ("key", "Nullable(String)"), ("project", "String")]
    body = encode_rowbinary(cols, [("hello", None, "p1"), ("bye", "k", "p2")])
    counts = check_on_current_engine(ddl, [(insert_sql("x.t", cols), body)])
    assert dict(counts) == {"x.t": 2}
    assert chdb_query("SELECT project, key, content, shard, header_keys FROM x.t ORDER BY project") == [
        {"project": "p1", "key": None, "content": "hello", "shard": 0, "header_keys": []},
        {"project": "p2", "key": "k", "content": "bye", "shard": 0, "header_keys": []},
    ]


# ------------------------------------------------------------------ fault modes

def insert_one(i):
    return insert_sql(FQ, LOGS_COLUMNS), encode_rowbinary(LOGS_COLUMNS, [log_row(i)])


def test_refuse_closes_open_and_new_connections(logs, proxy):
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    assert post(proxy.port, "SELECT 1", conn=c) == (200, b"1\n")
    idle = socket.create_connection(("127.0.0.1", proxy.port))
    wait_for(lambda: proxy.connections == 2)  # accepted
    proxy.mode = "refuse"
    assert closed_by_peer(idle)  # an open connection is closed at once
    with pytest.raises(ConnectionError):
        post(proxy.port, *insert_one(1), conn=c)  # on the old keep-alive connection
    with pytest.raises(ConnectionError):
        post(proxy.port, *insert_one(2))  # on a new one
    assert logs.count(FQ) == 0
    assert proxy.refused >= 1
    # fault_count: only the next new connection is refused
    proxy.set_mode("refuse", fault_count=1)
    with pytest.raises(ConnectionError):
        post(proxy.port, *insert_one(3))
    assert proxy.mode == "pass"
    assert post(proxy.port, *insert_one(4)) == (200, b"")
    assert logs.rows("SELECT position FROM %s" % FQ) == [{"position": 4}]
    idle.close()
    c.close()


def test_hang_reads_and_never_answers_until_the_mode_changes(logs, proxy):
    proxy.mode = "hang"
    with pytest.raises(socket.timeout):
        post(proxy.port, *insert_one(1), timeout=0.5)
    wait_for(lambda: len(proxy.log) == 1)
    raw = socket.create_connection(("127.0.0.1", proxy.port))
    raw.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nSELECT 1")
    wait_for(lambda: len(proxy.log) == 2 and proxy.log[1]["outcome"] == "hang")  # read
    assert proxy.requests[-1].body == b"SELECT 1"
    assert not closed_by_peer(raw, timeout=0.5)  # not answered
    proxy.mode = "pass"
    assert closed_by_peer(raw)  # then closed without an answer
    raw.close()
    assert logs.count(FQ) == 0  # nothing was forwarded
    assert [e["outcome"] for e in proxy.log] == ["hang", "hang"]
    # fault_count=1: one request hangs, the next passes
    proxy.set_mode("hang", fault_count=1)
    with pytest.raises(socket.timeout):
        post(proxy.port, *insert_one(2), timeout=0.5)
    wait_for(lambda: len(proxy.log) == 3 and proxy.log[2]["outcome"] == "hang")
    assert post(proxy.port, *insert_one(3)) == (200, b"")
    assert logs.rows("SELECT position FROM %s" % FQ) == [{"position": 3}]


def test_error500_answers_without_forwarding(logs, proxy):
    proxy.set_mode("error500", fault_count=2)
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    for i in (1, 2):
        status, text = post(proxy.port, *insert_one(i), conn=c)
        assert status == 500 and text.startswith(b"Code: ") and b"DB::Exception" in text
    assert logs.count(FQ) == 0
    # the connection stays open; the third request passes on it
    assert post(proxy.port, *insert_one(3), conn=c) == (200, b"")
    assert logs.count(FQ) == 1
    assert [e["outcome"] for e in proxy.log] == ["error500", "error500", "pass"]
    assert {e["conn"] for e in proxy.log} == {1}
    c.close()


def test_drop_after_forward_lands_the_insert_and_closes_the_connection(logs, proxy):
    proxy.mode = "drop_after_forward"
    with pytest.raises(ConnectionError):
        post(proxy.port, *insert_one(1))
    assert logs.rows("SELECT position FROM %s" % FQ) == [{"position": 1}]  # it landed
    proxy.set_mode("drop_after_forward", fault_count=1)
    with pytest.raises(ConnectionError):
        post(proxy.port, *insert_one(2))
    assert post(proxy.port, *insert_one(3)) == (200, b"")
    assert logs.count(FQ) == 3
    assert [e["outcome"] for e in proxy.log] == ["drop_after_forward", "drop_after_forward", "pass"]


def test_pass_with_the_server_down_or_hung(logs):
    """The proxy in front of a killed server closes the connection; in front of a paused one
    it gives up after its upstream timeout."""
    p = HttpProxy(logs.url, upstream_timeout=1)
    try:
        logs.pause()
        t0 = time.monotonic()
        with pytest.raises(ConnectionError):
            post(p.port, "SELECT 1", timeout=5)
        assert time.monotonic() - t0 < 4
        logs.resume()
        assert post(p.port, "SELECT 1") == (200, b"1\n")
        logs.kill()
        with pytest.raises(ConnectionError):
            post(p.port, "SELECT 1")
        assert [e["outcome"] for e in p.log] == ["upstream_error", "pass", "upstream_error"]
        logs.start()
        assert post(p.port, "SELECT count() FROM %s" % FQ) == (200, b"0\n")
    finally:
        p.close()


# ------------------------------------------------------------------ two shards

def test_two_shard_cluster_with_a_distributed_table(tmp_path):
    ch1, ch2 = ClickHouse(tmp_path, "shard1"), ClickHouse(tmp_path, "shard2")
    shards = [("127.0.0.1", ch1.tcp_port), ("127.0.0.1", ch2.tcp_port)]
    ch1.set_cluster(shards)
    ch2.set_cluster(shards)
    try:
        ch1.start()
        ch2.start()
        for ch in (ch1, ch2):
            for stmt in logs_ddl(DB, "logs_local"):
                ch.query(stmt)
        ch1.query("CREATE TABLE %s.logs AS %s.logs_local ENGINE = Distributed(logs_cluster, %s, logs_local, rand())"
                  % (DB, DB, DB))
        assert ch1.rows("SELECT shard_num, port, is_local FROM system.clusters WHERE cluster = 'logs_cluster'") == [
            {"shard_num": 1, "port": ch1.tcp_port, "is_local": 1},
            {"shard_num": 2, "port": ch2.tcp_port, "is_local": 0},
        ]
        rows = [log_row(i) for i in range(200)]
        sql = insert_sql("%s.logs" % DB, LOGS_COLUMNS)
        ch1.query(sql, data=encode_rowbinary(LOGS_COLUMNS, rows), settings={"insert_distributed_sync": 1})
        # synchronous: on both shards as soon as the insert returns
        n1, n2 = ch1.count("%s.logs_local" % DB), ch2.count("%s.logs_local" % DB)
        assert n1 + n2 == 200 and n1 > 0 and n2 > 0
        assert ch1.count("%s.logs" % DB) == 200
        # with a shard down a synchronous insert fails, naming the shard it could not reach
        ch2.stop()
        with pytest.raises(ClickHouseError) as err:
            ch1.query(sql, data=encode_rowbinary(LOGS_COLUMNS, rows), settings={"insert_distributed_sync": 1})
        assert "Connection refused" in err.value.text and str(ch2.tcp_port) in err.value.text
        # an asynchronous one is accepted and queued for the missing shard until it is back
        before = ch1.count("%s.logs_local" % DB)
        ch1.query(sql, data=encode_rowbinary(LOGS_COLUMNS, rows[:100]))
        ch2.start()
        deadline = time.monotonic() + 20
        while ch1.count("%s.logs_local" % DB) + ch2.count("%s.logs_local" % DB) < before + n2 + 100:
            assert time.monotonic() < deadline, "the queued rows never reached shard 2"
            time.sleep(0.1)
        assert ch1.count("%s.logs" % DB) == before + n2 + 100
    finally:
        ch1.stop()
        ch2.stop()
