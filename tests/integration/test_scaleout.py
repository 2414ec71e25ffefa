"""Scale-out: several loggate nodes in one [cluster], sharing one ClickHouse 18.16 (and a
two-shard ClickHouse cluster behind a Distributed table), with real clients.

Each node's file lists every node (`[[cluster.nodes]]`: id, its /readyz address, the
address of each of its listeners); the nodes check one another's /readyz every HEALTH_MS
and leave a node out of Metadata once it has not answered for DOWN_MS.  All nodes serve
one certificate (made with `loggate cert`), so a client that trusts its CA can follow
Metadata to any node.  What is asserted is what a user checks: Metadata as a client sees
it, and the rows in ClickHouse (one per record, counted per unique marker with SQL).

Two tests were written against product bugs they exposed, since fixed:
test_partition_back_on_a_node_that_knew_the_producer (a resent batch was stored twice) and
test_retention_on_a_distributed_table (expired partitions were never dropped).
"""

import collections
import json
import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from faultproxy import CuttingProxy
from confluent_kafka import Producer
from kafka import KafkaProducer

from clickhouse import LOGS_COLUMNS, ClickHouse, encode_rowbinary, free_ports, insert_sql, logs_ddl
from clients import go_binary, node_script, run_client, unique_prefix
from gateway import BIN, Gateway, password

PROTOCOLS = ("SASL_SSL", "SASL_PLAINTEXT", "SSL", "PLAINTEXT")
HEALTH_MS, DOWN_MS = 500, 2000
DB = "loggate"
LOGS = "%s.logs" % DB


# ------------------------------------------------------------------ the cluster

def make_cert(tmp_path):
    """A CA and a server certificate for 127.0.0.1 that every node serves; returns the dir."""
    tls = Path(tmp_path) / "tls"
    subprocess.run([str(BIN), "cert", "--out", str(tls), "--host", "127.0.0.1", "--host", "localhost"],
                   check=True, capture_output=True, timeout=30)
    return tls


def cluster_toml(members):
    """[cluster] for `members` {id: (health port, {protocol: "host:port"})}."""
    lines = ["[cluster]", "health_interval_ms = %d" % HEALTH_MS, "down_after_ms = %d" % DOWN_MS]
    for node_id, (health, advertised) in sorted(members.items()):
        lines += ["[[cluster.nodes]]", "id = %d" % node_id, 'health = "127.0.0.1:%d"' % health,
                  "advertised = { %s }" % ", ".join('%s = "%s"' % kv for kv in sorted(advertised.items()))]
    return "\n".join(lines)


class Cluster:
    """`n` loggate nodes (ids 1..n) on ClickHouse, each knowing all the others.

    `urls`: the [clickhouse] urls, one list for all nodes or {node id: list};
    `advertise`: {node id: {protocol: "host:port"}} overriding what the cluster config says
    clients reach a node at (e.g. a proxy in front of it); `clickhouse`: extra [clickhouse]
    lines; `logstore_options`, `storage` (the [storage] table): as for Gateway."""

    def __init__(self, tmp_path, urls, n=3, advertise=None, clickhouse="", logstore_options=None,
                 storage=(("backend", '"clickhouse"'),)):
        self.dir = Path(tmp_path)
        self.tls = make_cert(tmp_path)
        ports = free_ports(5 * n)
        self.ports = {i: dict(zip(PROTOCOLS, ports[5 * (i - 1):5 * i - 1])) for i in range(1, n + 1)}
        self.metrics_ports = {i: ports[5 * i - 1] for i in range(1, n + 1)}
        self.advertised = {i: {p: "127.0.0.1:%d" % port for p, port in self.ports[i].items()} for i in self.ports}
        for i, over in (advertise or {}).items():
            self.advertised[i].update(over)
        members = {i: (self.metrics_ports[i], self.advertised[i]) for i in self.ports}
        self.nodes = {}
        for i in self.ports:
            node_urls = urls[i] if isinstance(urls, dict) else urls
            extra = "\n".join([
                "[tls]", 'cert = "%s"' % (self.tls / "server.pem"), 'key = "%s"' % (self.tls / "server.key"),
                "generate = false",
                "[clickhouse]", "urls = %s" % json.dumps(node_urls), clickhouse,
                cluster_toml(members),
            ])
            workdir = self.dir / ("node%d" % i)
            workdir.mkdir()
            gw = Gateway(workdir, node_id=i, ports=self.ports[i], metrics_port=self.metrics_ports[i],
                         storage=dict(storage), extra_config=extra,
                         logstore_options=logstore_options)
            gw.ca = self.tls / "ca.pem"
            self.nodes[i] = gw

    def start(self, ids=None, formed=True):
        """Starts the nodes `ids` (all by default); with `formed`, returns once each of them
        lists all of them in Metadata (they check one another every HEALTH_MS)."""
        ids = list(ids or self.nodes)
        for i in ids:
            # fixed ports: the other nodes' files name them, so no retry on other ports
            self.nodes[i].start(attempts=1)
        if formed:
            for i in ids:
                wait_brokers(plaintext_conf(self.nodes[i]), ids, timeout=10)
        return self

    def stop(self):
        for gw in self.nodes.values():
            gw.stop()

    def log_tail(self, n=30):
        return "\n".join("--- node %d\n%s" % (i, "\n".join(gw.log_text().splitlines()[-n:]))
                         for i, gw in self.nodes.items())


@pytest.fixture
def ch(clickhouse):
    return clickhouse


@pytest.fixture
def cluster(tmp_path, ch):
    c = Cluster(tmp_path, [ch.url])
    try:
        yield c.start()
    finally:
        c.stop()


# ------------------------------------------------------------------ clients

def sasl_ssl_conf(gw, bootstrap_gw=None):
    return {"bootstrap.servers": (bootstrap_gw or gw).bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": password("main"),
            "ssl.ca.location": str(gw.ca)}


def plaintext_conf(gw):
    return {"bootstrap.servers": gw.bootstrap("PLAINTEXT"), "security.protocol": "PLAINTEXT"}


def metadata(conf, topic="pinned", timeout=10):
    """(brokers {id: "host:port"}, leaders {partition: id}, id of the answering broker) of
    `topic` as the node `conf` bootstraps from answers it. A librdkafka client sends
    list_topics to any broker it knows by then (often one it learned from the first
    answer), so new clients ask until the answer is the bootstrap node's own."""
    bootstrap = conf["bootstrap.servers"]
    deadline = time.monotonic() + timeout
    while True:
        p = Producer(dict(conf, **{"socket.timeout.ms": 5000}))
        try:
            md = p.list_topics(topic, timeout=max(1.0, deadline - time.monotonic()))
        finally:
            p.close()
        # "127.0.0.1:9092/bootstrap", "sasl_ssl://127.0.0.1:9093/2"
        if md.orig_broker_name.split("://")[-1].split("/")[0] == bootstrap:
            break
        assert time.monotonic() < deadline, "no Metadata answer from %s itself" % bootstrap
    t = md.topics[topic]
    assert t.error is None, t.error
    return ({b.id: "%s:%d" % (b.host, b.port) for b in md.brokers.values()},
            {pid: pm.leader for pid, pm in t.partitions.items()}, md.orig_broker_id)


def wait_brokers(conf, want, timeout):
    """Seconds until the node of `conf` lists exactly the broker ids `want`; fails after `timeout`."""
    t0 = time.monotonic()
    seen = None
    while time.monotonic() - t0 < timeout:
        brokers, leaders, _ = metadata(conf)
        seen = (brokers, leaders)
        if set(brokers) == set(want) and set(leaders.values()) <= set(want):
            return time.monotonic() - t0
        time.sleep(0.1)
    pytest.fail("brokers %s not seen within %.1f s; last Metadata: %s" % (sorted(want), timeout, seen))


class Deliveries:
    """librdkafka delivery reports: value -> (partition, offset), and the errors."""

    def __init__(self):
        self.acked, self.errors = {}, []

    def __call__(self, err, msg):
        if err is not None:
            self.errors.append((msg.value(), str(err)))
        else:
            self.acked[msg.value().decode()] = (msg.partition(), msg.offset())


def rows(ch, where, columns="content, shard, node_id, batch_id + position AS offset", table=LOGS):
    return ch.rows("SELECT %s FROM %s WHERE %s" % (columns, table, where))


def like(prefix):
    return "content LIKE '%s-%%'" % prefix


def once_each(ch, prefix, expected, table=LOGS):
    """Asserts the rows with `prefix` are `expected` (a set of contents), each exactly once."""
    got = ch.rows("SELECT content, count() AS n FROM %s WHERE %s GROUP BY content" % (table, like(prefix)))
    twice = sorted(r["content"] for r in got if r["n"] != 1)
    stored = {r["content"] for r in got}
    assert not twice, "stored more than once: %s" % twice[:20]
    assert stored == set(expected), "missing %s, unexpected %s" % (
        sorted(set(expected) - stored)[:20], sorted(stored - set(expected))[:20])
    total = ch.rows("SELECT count() AS n, uniqExact(content) AS u FROM %s WHERE %s" % (table, like(prefix)))[0]
    assert total == {"n": len(expected), "u": len(expected)}


# ------------------------------------------------------------------ 1. every client, three nodes

def test_four_clients_write_through_all_three_nodes(cluster, ch):
    """librdkafka, sarama, kafka-python and kafkajs bootstrap from node 1 only; Metadata
    (from any node) lists the three nodes with the partitions' leaders spread over all of
    them; each client's records are written by the leader of their partition, so by more
    than one node; every acknowledged record is in ClickHouse once, with its fields, at the
    offset the client was told; each node's /metrics counts exactly the rows it wrote."""
    n1 = cluster.nodes[1]
    ssl_ports = {i: "127.0.0.1:%d" % gw.ports["SASL_SSL"] for i, gw in cluster.nodes.items()}
    for asked in (1, 2, 3):
        for topic in ("pinned", "pinned.json"):
            brokers, leaders, answered = metadata(sasl_ssl_conf(cluster.nodes[asked]), topic)
            assert brokers == ssl_ports, "Metadata of node %d lists %s" % (asked, brokers)
            assert sorted(leaders) == [0, 1, 2] and sorted(leaders.values()) == [1, 2, 3], leaders
    brokers, leaders, _ = metadata(sasl_ssl_conf(n1))
    # PLAINTEXT Metadata advertises the PLAINTEXT listeners
    plain, plain_leaders, _ = metadata(plaintext_conf(n1))
    assert plain == {i: "127.0.0.1:%d" % gw.ports["PLAINTEXT"] for i, gw in cluster.nodes.items()}
    assert plain_leaders == leaders

    count = 60
    # librdkafka (confluent-kafka), SASL_SSL, raw and .json
    rdk = unique_prefix("rdk")
    d = Deliveries()
    p = Producer(dict(sasl_ssl_conf(n1), **{"linger.ms": 5, "acks": "all", "compression.codec": "lz4"}))
    # (librdkafka sticks to one partition for records without a key: keyed, they spread)
    for i in range(count):
        p.produce("pinned", value="%s-%d" % (rdk, i), key="k%d" % i, on_delivery=d)
    for i in range(count):
        p.produce("pinned.json", value=json.dumps({"msg": "%s-json-%d" % (rdk, i), "level": "warn", "n": i}),
                  key="k%d" % i, on_delivery=d)
    assert p.flush(30) == 0 and d.errors == []
    p.close()

    # sarama 1.22.1, SASL_SSL (Kafka 2.1.0 protocol)
    srm = unique_prefix("sarama")
    proc = run_client([go_binary("saramaproducer"), "-brokers", n1.bootstrap("SASL_SSL"), "-tls-ca", n1.ca,
                       "-sasl", "-user", "demo", "-password", password("main"), "-version", "2.1.0",
                       "-codec", "snappy", "-acks", "-1", "-topic", "pinned", "-count", str(count), "-prefix", srm])
    assert proc.returncode == 0, "%s\n%s\n%s" % (proc.stdout[-2000:], proc.stderr[-2000:], cluster.log_tail())
    sarama_acked = {}
    for line in proc.stdout.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split())
        sarama_acked[f["value"]] = (int(f["partition"]), int(f["offset"]))

    # kafka-python, SASL_SSL
    kpy = unique_prefix("kpy")
    kp = KafkaProducer(bootstrap_servers=n1.bootstrap("SASL_SSL"), security_protocol="SASL_SSL",
                       sasl_mechanism="PLAIN", sasl_plain_username="demo", sasl_plain_password=password("main"),
                       ssl_cafile=str(n1.ca), acks="all", compression_type="gzip", enable_idempotence=False,
                       request_timeout_ms=10000, max_block_ms=15000)
    try:
        # Partitions named: kafka-python's sticky partitioner may put 60 keyless records on
        # two partitions only.
        futures = {"%s-%d" % (kpy, i): kp.send("pinned", value=("%s-%d" % (kpy, i)).encode(), partition=i % 3)
                   for i in range(count)}
        kp.flush(30)
        kpy_acked = {v: (f.get(timeout=30).partition, f.get(timeout=30).offset) for v, f in futures.items()}
    finally:
        kp.close(5)

    # kafkajs 2.2.4, SASL_SSL, one send() per 10 messages
    kjs = unique_prefix("kafkajs")
    proc = run_client(["node", node_script(), "--brokers", n1.bootstrap("SASL_SSL"), "--ca", n1.ca, "--user", "demo",
                       "--password", password("main"), "--topic", "pinned", "--codec", "gzip", "--acks=-1",
                       "--count", str(count), "--prefix", kjs, "--batch", "10"])
    assert proc.returncode == 0, "%s\n%s\n%s" % (proc.stdout[-2000:], proc.stderr[-2000:], cluster.log_tail())
    kjs_results = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]
    assert kjs_results and all(r["errorCode"] == 0 for r in kjs_results), proc.stdout

    # in ClickHouse: every record once, written by its partition's leader
    raw = {"librdkafka": rdk, "sarama": srm, "kafka-python": kpy, "kafkajs": kjs}
    for client, prefix in raw.items():
        expected = ["%s-%d" % (prefix, i) for i in range(count)]
        once_each(ch, prefix, expected)
        got = rows(ch, "project = 'demo' AND logstore = 'pinned' AND " + like(prefix))
        assert len(got) == count
        for r in got:
            assert r["node_id"] == leaders[r["shard"]], "%s: %s was not written by the leader %s" % (client, r, leaders)
        nodes = {r["node_id"] for r in got}
        # 60 records spread over the 3 partitions: each client wrote through every node
        assert nodes == {1, 2, 3}, "%s wrote through node %s only" % (client, nodes)
        acked = {"librdkafka": d.acked, "sarama": sarama_acked, "kafka-python": kpy_acked}.get(client)
        if acked is not None:
            # the (partition, offset) each record was acknowledged with is where it is stored
            assert {r["content"]: (r["shard"], r["offset"]) for r in got} == {v: acked[v] for v in expected}
    # kafkajs reports each partition's base offset: the smallest offset of that send in that partition
    kjs_rows = rows(ch, like(kjs))
    for r in kjs_results:
        assert int(r["baseOffset"]) in {x["offset"] for x in kjs_rows if x["shard"] == r["partition"]}, r
    # .json: the object's keys are fields; content is empty
    js = ch.rows("SELECT field_values[indexOf(field_names, 'msg')] AS msg, field_values[indexOf(field_names, 'level')] "
                 "AS level, toUInt32(field_values[indexOf(field_names, 'n')]) AS n, content, shard, node_id, "
                 "batch_id + position AS offset FROM %s WHERE logstore = 'pinned' AND has(field_names, 'msg') "
                 "AND msg LIKE '%s-json-%%' ORDER BY n" % (LOGS, rdk))
    assert [(r["msg"], r["level"], r["n"], r["content"]) for r in js] == [
        ("%s-json-%d" % (rdk, i), "warn", i, "") for i in range(count)]
    assert {r["msg"]: (r["shard"], r["offset"]) for r in js} == {
        json.loads(v)["msg"]: o for v, o in d.acked.items() if "-json-" in v}
    assert all(r["node_id"] == leaders[r["shard"]] for r in js)
    assert {r["node_id"] for r in js} == {1, 2, 3}

    # each node's counter is exactly what it wrote; every node wrote some
    per_node = {r["node_id"]: r["n"] for r in ch.rows(
        "SELECT node_id, count() AS n FROM %s WHERE logstore = 'pinned' GROUP BY node_id" % LOGS)}
    assert sum(per_node.values()) == 5 * count
    counted = {i: gw.metric("loggate_logs_written_total", project="demo", logstore="pinned")
               for i, gw in cluster.nodes.items()}
    assert counted == {i: float(per_node.get(i, 0)) for i in cluster.nodes}
    assert all(n > 0 for n in counted.values()), counted
    assert all(gw.metric("loggate_requests_total", api="Produce") > 0 for gw in cluster.nodes.values())
    # and any node reads them back: `loggate logs` with node 3's file
    read = [l["content"] for l in cluster.nodes[3].logs("pinned") if l.get("content", "").startswith(srm + "-")]
    assert sorted(read) == sorted("%s-%d" % (srm, i) for i in range(count))


# ------------------------------------------------------------------ 2. a node killed under load

def batches(ch, where):
    """The stored batches of the rows `where` selects: one dict per batch (shard, producer
    columns, node, batch id, rows), by shard and first sequence."""
    return ch.rows(
        "SELECT shard, producer_id, producer_epoch AS epoch, producer_lane AS lane, node_id, batch_id, "
        "sequence_first AS first, sequence_last AS last, count() AS n, min(arrival_time_ms) AS arrival FROM %s "
        "WHERE %s GROUP BY shard, producer_id, producer_epoch, producer_lane, node_id, batch_id, sequence_first, "
        "sequence_last ORDER BY shard, lane, first, arrival" % (LOGS, where))


def assert_gapless(stored):
    """Per shard and lane (a topic-partition: `L` and `L.json` number their sequences
    apart), the batches' sequence ranges follow one another from 0, none twice, each holding
    as many rows as its range. Returns {shard: [batch]} (all lanes)."""
    lanes, by_shard = collections.defaultdict(list), collections.defaultdict(list)
    for b in stored:
        lanes[(b["shard"], b["lane"])].append(b)
        by_shard[b["shard"]].append(b)
    for (shard, lane), bs in lanes.items():
        expect = 0
        for b in bs:
            assert b["first"] == expect, "shard %d: batch %s after sequence %d" % (shard, b, expect - 1)
            assert b["n"] == b["last"] - b["first"] + 1, "shard %d: batch %s holds %d rows" % (shard, b, b["n"])
            expect = b["last"] + 1
    return by_shard


class FatalErrors(list):
    """librdkafka's error_cb, keeping fatal errors only (transport errors are expected here)."""

    def __call__(self, err):
        if err.fatal():
            self.append(str(err))


def idempotent_conf(gw, **over):
    conf = dict(plaintext_conf(gw), **{
        "enable.idempotence": True, "acks": "all", "linger.ms": 10, "batch.num.messages": 200,
        "topic.metadata.refresh.interval.ms": 1000, "retry.backoff.ms": 100, "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 500, "message.timeout.ms": 60000})
    conf.update(over)
    return conf


def produce_paced(p, d, prefix, start, stop, every=100, pause=0.05):
    """Produces `prefix`-i for i in start..stop (keyed, so spread over the partitions),
    pausing `pause` s after every `every` records."""
    for i in range(start, stop):
        while True:
            try:
                p.produce("pinned", value="%s-%d" % (prefix, i), key="k%d" % i, on_delivery=d)
                break
            except BufferError:
                p.poll(0.05)
        if i % every == every - 1:
            p.poll(0)
            time.sleep(pause)


def kill(gw):
    """SIGKILL: a crash."""
    gw.proc.kill()
    gw.proc.wait()


def test_sigkill_of_a_node_under_idempotent_load(cluster, ch):
    """One idempotent librdkafka producer (acks=all) writes 7000 keyed records over the three
    partitions, bootstrapped from node 1; node 2 is killed with SIGKILL in the middle. The
    survivors leave it out of Metadata once it has not answered for down_after_ms (not on
    the first missed check, not much later), the producer moves its partitions to them and
    finishes with no delivery error, and every record is stored exactly once at the offset
    it was acknowledged with. The producer's batches went through all three nodes with
    each partition's sequence gapless, across the move. Node 2, restarted, is back in
    Metadata by itself, and the same producer goes on through it: the restarted node, which
    never saw the producer, took its sequences from ClickHouse."""
    n1, n2, n3 = (cluster.nodes[i] for i in (1, 2, 3))
    _, leaders_before, _ = metadata(plaintext_conf(n1))
    prefix = unique_prefix("kill")
    d, fatal = Deliveries(), FatalErrors()
    p = Producer(idempotent_conf(n1, error_cb=fatal))
    produce_paced(p, d, prefix, 0, 2000)
    deadline = time.monotonic() + 20
    while n2.metric("loggate_logs_written_total", project="demo", logstore="pinned") == 0:
        assert time.monotonic() < deadline, "node 2 wrote nothing:\n" + cluster.log_tail()
        p.poll(0.05)
    loader = threading.Thread(target=produce_paced, args=(p, d, prefix, 2000, 6000))
    loader.start()
    try:
        # node 2 is busy with the load when it dies, at a moment that differs from run to run
        pause = random.uniform(0.1, 1.0)
        time.sleep(pause)
        kill(n2)
        t_kill = time.monotonic()
        gone = wait_brokers(plaintext_conf(n1), [1, 3], timeout=(DOWN_MS + 2 * HEALTH_MS) / 1000 + 3)
        # dropped after down_after_ms without an answer, not at the first missed check, and
        # not long after (its last answer was at most one health interval before the kill)
        assert (DOWN_MS - HEALTH_MS) / 1000 - 0.1 <= gone <= (DOWN_MS + 2 * HEALTH_MS) / 1000 + 1.5, gone
        wait_brokers(plaintext_conf(n3), [1, 3], timeout=max(0.5, 5 - (time.monotonic() - t_kill)))
    finally:
        loader.join(60)
    left = p.flush(60)
    missing = sorted(set("%s-%d" % (prefix, i) for i in range(6000)) - set(d.acked))
    assert left == 0, "killed %.2f s into the load; %d records unacknowledged (%s...), errors %s\n%s" % (
        pause, left, missing[:5], d.errors[:5], cluster.log_tail(60))
    assert d.errors == [] and fatal == [], (d.errors[:5], fatal)
    assert len(d.acked) == 6000
    # the survivors say so in their logs
    for gw in (n1, n3):
        assert [l for l in gw.log_text().splitlines() if "cluster node is down" in l and "node=2" in l], \
            gw.log_text()[-3000:]

    # restarted, node 2 is listed again by the others without anything else done
    n2.start(attempts=1)
    back = wait_brokers(plaintext_conf(n1), [1, 2, 3], timeout=HEALTH_MS / 1000 + 5)
    wait_brokers(plaintext_conf(n3), [1, 2, 3], timeout=5)
    wait_brokers(plaintext_conf(n2), [1, 2, 3], timeout=5)
    for gw in (n1, n3):
        ups = [l for l in gw.log_text().splitlines() if "cluster node is up" in l and "node=2" in l]
        assert len(ups) == 2, ups  # at the start, and after the restart
    deadline = time.monotonic() + 15
    while 2 not in {pm.leader for pm in p.list_topics("pinned", timeout=5).topics["pinned"].partitions.values()}:
        assert time.monotonic() < deadline, "the producer never saw node 2 lead again"
        time.sleep(0.2)
    t_back = time.time() * 1000
    produce_paced(p, d, prefix, 6000, 7000)
    assert p.flush(30) == 0 and d.errors == [] and fatal == [], (d.errors[:5], fatal, cluster.log_tail())

    # every record exactly once, where the producer was told it is
    expected = ["%s-%d" % (prefix, i) for i in range(7000)]
    once_each(ch, prefix, expected)
    got = rows(ch, like(prefix))
    assert {r["content"]: (r["shard"], r["offset"]) for r in got} == {v: d.acked[v] for v in expected}
    # one producer, its batches through all three nodes, sequences gapless per partition
    stored = batches(ch, like(prefix))
    assert {(b["producer_id"], b["epoch"]) for b in stored} == {(stored[0]["producer_id"], 0)}
    assert stored[0]["producer_id"] >= 0
    by_shard = assert_gapless(stored)
    assert sorted(by_shard) == [0, 1, 2]
    # the partition node 2 led: through node 2, then (while it was down) another node
    led = [s for s, leader in leaders_before.items() if leader == 2]
    assert len(led) == 1
    path = [b["node_id"] for b in by_shard[led[0]]]
    assert path[0] == 2 and any(n != 2 for n in path), path
    # after its restart node 2 continued some partition's sequence (it never saw it before)
    after = [b for b in stored if b["node_id"] == 2 and b["arrival"] >= t_back]
    assert after and all(b["first"] > 0 for b in after), after
    p.close()
    print("node 2 dropped after %.2f s, back after %.2f s; batches per node %s" % (
        gone, back, collections.Counter(b["node_id"] for b in stored)))


# ------------------------------------------------------------------ 3. a cluster on the local logstore

def serve(gw, timeout=10):
    """Runs `loggate serve` on `gw`'s file to its end (it is expected to refuse to start)."""
    return subprocess.run([str(BIN), "serve", "--config", str(gw.config)], capture_output=True, text=True,
                          timeout=timeout)


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_cluster_on_the_local_logstore_is_refused(tmp_path, ch):
    """A [cluster] whose logstores (all, or one of them) are in the local logstore, which one
    node's disk holds: loggate exits at once with an error naming the logstore and saying
    that cluster nodes need shared storage, and opens no listener (nor touches ClickHouse)."""
    every = Cluster(tmp_path / "all", [], storage=())
    one = Cluster(tmp_path / "one", [ch.url], logstore_options={"other": {"storage": '"local"'}})
    for c, logstore in ((every, "demo/app"), (one, "demo/other")):
        for node_id, gw in c.nodes.items():
            t0 = time.monotonic()
            proc = serve(gw)
            out = proc.stdout + proc.stderr
            assert proc.returncode != 0, out
            assert time.monotonic() - t0 < 10
            assert "logstore %s is in the local logstore" % logstore in out, out
            assert 'nodes of a [cluster] need shared storage (storage = "clickhouse")' in out, out
            assert not any(listening(port) for port in [*gw.ports.values(), gw.metrics_port])
    # refused before anything was written to ClickHouse
    assert ch.rows("SELECT name FROM system.databases WHERE name = '%s'" % DB) == []
    # the control: the same cluster with that logstore in ClickHouse too starts, and creates
    # the table
    ok = Cluster(tmp_path / "ok", [ch.url])
    try:
        ok.start([1], formed=False)
        assert ok.nodes[1].alive()
        assert ch.rows("SELECT name FROM system.tables WHERE database = '%s'" % DB) == [{"name": "logs"}]
    finally:
        ok.stop()


# ------------------------------------------------------------------ 4. a two-shard ClickHouse cluster

@pytest.fixture
def shards(tmp_path):
    """Two clickhouse-servers as the two shards of `logs_cluster`, each with loggate's table
    as `logs_local` and a Distributed table `logs` over both (rows spread by rand())."""
    chs = [ClickHouse(tmp_path, "shard1"), ClickHouse(tmp_path, "shard2")]
    members = [("127.0.0.1", c.tcp_port) for c in chs]
    try:
        for c in chs:
            c.set_cluster(members)
            c.start()
        for c in chs:
            for stmt in logs_ddl(DB, "logs_local"):
                c.query(stmt)
            c.query("CREATE TABLE %s.logs AS %s.logs_local ENGINE = Distributed(logs_cluster, %s, logs_local, rand())"
                    % (DB, DB, DB))
        yield chs
    finally:
        for c in chs:
            c.stop()


def per_shard(chs, where):
    return [int(c.query("SELECT count() FROM %s.logs_local WHERE %s" % (DB, where)).strip()) for c in chs]


def test_three_nodes_on_a_distributed_table(tmp_path, shards):
    """The 3-node cluster inserts into the Distributed table (create_tables = false; node 2
    has shard 2's server first in its urls, the others shard 1's): an idempotent librdkafka
    producer's records and .json objects land on both shards, each exactly once (per shard
    counts add up to what was sent), and read back through the Distributed table, by SQL
    and by `loggate logs`."""
    ch1, ch2 = shards
    c = Cluster(tmp_path, {1: [ch1.url, ch2.url], 2: [ch2.url, ch1.url], 3: [ch1.url, ch2.url]},
                clickhouse="create_tables = false")
    try:
        c.start()
        n1 = c.nodes[1]
        prefix = unique_prefix("dist")
        d, fatal = Deliveries(), FatalErrors()
        p = Producer(idempotent_conf(n1, error_cb=fatal))
        produce_paced(p, d, prefix, 0, 3000, every=500)
        for i in range(200):
            p.produce("pinned.json", value=json.dumps({"msg": "%s-json-%d" % (prefix, i), "level": "error"}),
                      key="k%d" % i, on_delivery=d)
        assert p.flush(30) == 0 and d.errors == [] and fatal == [], (d.errors[:5], fatal, c.log_tail())

        # on both shards, sums exact
        raw = per_shard(shards, like(prefix))
        js = per_shard(shards, "field_values[indexOf(field_names, 'msg')] LIKE '%s-json-%%'" % prefix)
        assert sum(raw) == 3000 and all(n > 0 for n in raw), raw
        assert sum(js) == 200 and all(n > 0 for n in js), js
        # no table of loggate's own beside the operator's
        assert [r["name"] for r in ch1.rows("SELECT name FROM system.tables WHERE database = '%s' ORDER BY name" % DB)] \
            == ["logs", "logs_local"]
        # through the Distributed table: each once, where acknowledged, by all three nodes
        for server in shards:
            once_each(server, prefix, ["%s-%d" % (prefix, i) for i in range(3000)])
        got = rows(ch2, like(prefix))
        assert {r["content"]: (r["shard"], r["offset"]) for r in got} == {
            v: o for v, o in d.acked.items() if not v.startswith("{")}
        assert {r["node_id"] for r in got} == {1, 2, 3}
        fields = ch1.rows("SELECT field_values[indexOf(field_names, 'msg')] AS msg, "
                          "field_values[indexOf(field_names, 'level')] AS level, count() AS n FROM %s "
                          "WHERE has(field_names, 'msg') GROUP BY msg, level" % LOGS)
        assert sorted((r["msg"], r["level"], r["n"]) for r in fields) == sorted(
            ("%s-json-%d" % (prefix, i), "error", 1) for i in range(200))
        assert sum(per_shard(shards, "producer_id >= 0 AND position = 0")) == len(batches(ch1, "producer_id >= 0"))
        assert_gapless(batches(ch1, "logstore = 'pinned'"))
        # `loggate logs` reads them back through the Distributed table
        logs = c.nodes[2].logs("pinned")
        assert sorted(l["content"] for l in logs if "content" in l) == sorted("%s-%d" % (prefix, i) for i in range(3000))
        assert sorted(l["msg"] for l in logs if "msg" in l) == sorted("%s-json-%d" % (prefix, i) for i in range(200))
        p.close()
    finally:
        c.stop()


# ------------------------------------------------------------------ a partition moving back after a lost answer

class AnswerEater(CuttingProxy):
    """A TCP proxy for a node's listener. Once `armed`, the first Produce answer coming back
    is swallowed: `on_cut` runs (e.g. the node is killed), and from then on every connection
    is closed, as to a dead node. So a batch is written and its producer never hears so."""

    def __init__(self):
        super().__init__(None)
        self.armed = False
        self.on_cut = lambda: None
        self.cut = threading.Event()

    @property
    def upstream(self):
        return self.upstream_port

    @upstream.setter
    def upstream(self, port):
        self.upstream_port = port

    def should_cut(self):
        if not self.armed or self.cut.is_set():
            return False
        self.dead = True
        self.cut.set()
        self.on_cut()
        return True


def test_partition_back_on_a_node_that_knew_the_producer(tmp_path, ch):
    """A partition p is led by node A while nodes 1 and 2 run; the idempotent producer writes
    to it through A. Node 3 starts and takes p over; the producer's next batch to p is
    stored through node 3, but its answer never comes back (a proxy in front of node 3
    swallows it and node 3 is killed). Once node 3 is left out of Metadata, p is A's again,
    and the producer resends the batch there with the same sequence numbers. A still
    remembers the producer from before, without that batch: it must find the batch in
    ClickHouse and answer it as a duplicate, not store it a second time."""
    eater = AnswerEater()
    c = Cluster(tmp_path, [ch.url], advertise={3: {"PLAINTEXT": "127.0.0.1:%d" % eater.port}})
    eater.upstream = c.ports[3]["PLAINTEXT"]
    try:
        c.start([1, 2])
        _, leaders_12, _ = metadata(plaintext_conf(c.nodes[1]))
        prefix = unique_prefix("moved")
        d, fatal = Deliveries(), FatalErrors()
        p = Producer(idempotent_conf(c.nodes[1], error_cb=fatal, **{"topic.metadata.refresh.interval.ms": 300}))
        for part in range(3):
            for i in range(10):
                p.produce("pinned", value="%s-%d-%d" % (prefix, part, i), partition=part, on_delivery=d)
        assert p.flush(30) == 0 and d.errors == [] and fatal == []

        c.start([3], formed=False)
        for i in (1, 2, 3):
            wait_brokers(plaintext_conf(c.nodes[i]), [1, 2, 3], timeout=10)
        _, leaders_123, _ = metadata(plaintext_conf(c.nodes[1]))
        moved = [part for part, leader in leaders_123.items() if leader == 3]
        assert len(moved) == 1
        part = moved[0]
        a = leaders_12[part]
        deadline = time.monotonic() + 10
        while p.list_topics("pinned", timeout=5).topics["pinned"].partitions[part].leader != 3:
            assert time.monotonic() < deadline, "the producer never saw node 3 lead partition %d" % part
            time.sleep(0.1)

        eater.on_cut = lambda: kill(c.nodes[3])
        eater.armed = True
        lost = "%s-lost" % prefix
        p.produce("pinned", value=lost, partition=part, on_delivery=d)
        assert p.flush(30) == 0, "the resent batch was never answered:\n" + c.log_tail()
        assert eater.cut.is_set(), "the proxy never swallowed an answer"
        assert d.errors == [] and fatal == [], (d.errors, fatal)
        # the batch was stored through node 3 before its answer was lost
        through = ch.rows("SELECT node_id, shard, batch_id + position AS offset FROM %s WHERE content = '%s'"
                          % (LOGS, lost))
        assert {r["node_id"] for r in through} >= {3}, through
        # and the resend went to A, which wrote the partition before
        assert c.nodes[a].metric("loggate_requests_total", api="Produce") > 0
        # then more through A, on every partition
        for part2 in range(3):
            for i in range(10, 20):
                p.produce("pinned", value="%s-%d-%d" % (prefix, part2, i), partition=part2, on_delivery=d)
        assert p.flush(30) == 0 and d.errors == [] and fatal == []

        expected = ["%s-%d-%d" % (prefix, part2, i) for part2 in range(3) for i in range(20)] + [lost]
        once_each(ch, prefix, expected)
        assert through == [{"node_id": 3, "shard": part, "offset": d.acked[lost][1]}]
        assert d.acked[lost][0] == part
        assert_gapless(batches(ch, like(prefix)))
        p.close()
    finally:
        eater.stop()
        c.stop()


def test_a_shard_hung_then_down_during_the_load_on_a_distributed_table(tmp_path, shards):
    """While an idempotent producer writes through the Distributed table of shard 1's
    server, shard 2's server first hangs (SIGSTOP) for longer than loggate's timeout_secs,
    then is killed for a few seconds. The hung inserts are given up on without an answer
    and found complete once the shard goes on (a blind resend would store them twice); the
    inserts that fail while it is down (some of their rows may already be on shard 1) are
    checked and only what is missing is sent again. Every record ends up exactly once over
    the two shards, at the offset the producer was told, with no delivery error."""
    ch1, ch2 = shards
    c = Cluster(tmp_path, [ch1.url], clickhouse="timeout_secs = 2")
    p = None
    try:
        c.start()
        prefix = unique_prefix("outage")
        d, fatal = Deliveries(), FatalErrors()
        p = Producer(idempotent_conf(c.nodes[1], error_cb=fatal))
        produce_paced(p, d, prefix, 0, 500)
        assert p.flush(30) == 0 and len(d.acked) == 500

        def outage(start, stop, fault, heal, seconds):
            loader = threading.Thread(target=produce_paced, args=(p, d, prefix, start, stop))
            loader.start()
            try:
                # inserts are flowing when the shard goes
                deadline = time.monotonic() + 20
                while len(d.acked) < start + 200:
                    assert time.monotonic() < deadline, c.log_tail()
                    p.poll(0.01)  # (delivery reports come in poll)
                fault()
                time.sleep(seconds)
                heal()
            finally:
                loader.join(60)
            assert p.flush(60) == 0, c.log_tail(60)

        outage(500, 3000, ch2.pause, ch2.resume, 4)
        outage(3000, 5000, ch2.kill, ch2.start, 3)
        assert d.errors == [] and fatal == [], (d.errors[:5], fatal)
        counts = per_shard(shards, like(prefix))
        assert sum(counts) == 5000 and all(n > 0 for n in counts), counts
        once_each(ch1, prefix, ["%s-%d" % (prefix, i) for i in range(5000)])
        got = rows(ch1, like(prefix))
        assert {r["content"]: (r["shard"], r["offset"]) for r in got} == d.acked
        assert_gapless(batches(ch1, like(prefix)))
        # both faults were met by inserts (else the above proves little)
        logs = "\n".join(gw.log_text() for gw in c.nodes.values())
        assert "ClickHouse insert found complete on check" in logs, "no hung insert was found complete"
        assert "Connection refused" in logs, "no insert failed while the shard was down"
        checked = [l for l in logs.splitlines() if "ClickHouse insert checked" in l or "found complete on check" in l]
        print("inserts checked:\n" + "\n".join(l[-120:] for l in checked[:10]))
    finally:
        if p is not None:
            p.close()
        c.stop()


def old_and_new_rows(tag, now_s):
    """Two rows of demo/one as loggate writes them with retention_hours = 1: one that arrived
    three days ago (its partition has expired), one that arrived now."""
    def row(content, arrival):
        return dict(project="demo", logstore="one", shard=0, event_time=arrival, event_time_ms=arrival * 1000,
                    arrival_time=arrival, arrival_time_ms=arrival * 1000, retention_hours=1, node_id=1,
                    insert_id=1, batch_id=arrival * 256000, position=0, producer_id=-1, producer_epoch=-1,
                    producer_lane=0, sequence_first=-1, sequence_last=-1, client="127.0.0.1:1", key=None,
                    header_keys=[], header_values=[], field_names=[], field_values=[], content=content)
    return [row("%s-old" % tag, now_s - 3 * 86400), row("%s-new" % tag, now_s)]


def insert_rows(server, table, rows_):
    server.query(insert_sql("%s.%s" % (DB, table), LOGS_COLUMNS), data=encode_rowbinary(LOGS_COLUMNS, rows_))


def wait_gone(servers, table, content, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        left = [int(s.query("SELECT count() FROM %s.%s WHERE content = '%s'" % (DB, table, content)).strip())
                for s in servers]
        if sum(left) == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_retention_on_one_server(tmp_path, ch):
    """The control of the next test: on a MergeTree table loggate drops the expired
    partition of a logstore with retention_hours at start, and keeps the current one."""
    for stmt in logs_ddl(DB, "logs"):
        ch.query(stmt)
    insert_rows(ch, "logs", old_and_new_rows("single", int(time.time())))
    c = Cluster(tmp_path, [ch.url], n=1, logstore_options={"one": {"retention_hours": 1}})
    try:
        c.start()
        assert wait_gone([ch], "logs", "single-old") == [0]
        assert ch.count(LOGS) == 1 and "dropped an expired ClickHouse partition" in c.nodes[1].log_text()
    finally:
        c.stop()


def test_retention_on_a_distributed_table(tmp_path, shards):
    """A logstore with retention_hours = 1 on the Distributed table, the shards' local
    tables named in retention_urls/retention_table: its expired partition is dropped on both
    shards, the current one kept."""
    now_s = int(time.time())
    for i, server in enumerate(shards):
        insert_rows(server, "logs_local", old_and_new_rows("shard%d" % i, now_s))
    retention = 'create_tables = false\nretention_urls = %s\nretention_table = "logs_local"' % json.dumps([s.url for s in shards])
    c = Cluster(tmp_path, [s.url for s in shards], n=1, clickhouse=retention,
                logstore_options={"one": {"retention_hours": 1}})
    try:
        c.start()
        for i in range(2):
            assert wait_gone(shards, "logs_local", "shard%d-old" % i, timeout=5) == [0, 0], c.log_tail()
        assert per_shard(shards, "1") == [1, 1]
    finally:
        c.stop()


def test_a_distributed_target_without_retention_urls_is_warned_about(tmp_path, shards):
    """Without retention_urls loggate cannot reach a Distributed table's partitions: it says so
    at start and drops nothing."""
    now_s = int(time.time())
    for i, server in enumerate(shards):
        insert_rows(server, "logs_local", old_and_new_rows("shard%d" % i, now_s))
    c = Cluster(tmp_path, [s.url for s in shards], n=1, clickhouse="create_tables = false",
                logstore_options={"one": {"retention_hours": 1}})
    try:
        c.start()
        time.sleep(1)
        assert "retention_urls is not set" in c.nodes[1].log_text()
        assert per_shard(shards, "1") == [2, 2]
    finally:
        c.stop()
