"""Scale-out: several loggate nodes in one [cluster], sharing one ClickHouse 18.16 (and a
two-shard ClickHouse cluster behind a Distributed table), with real clients.

Each node's file lists every node (`[[cluster.nodes]]`: id, its /readyz address, the
address of each of its listeners); the nodes check one another's /readyz every HEALTH_MS
and leave a node out of Metadata once it has not answered for DOWN_MS.  All nodes serve
one certificate (made with `loggate cert`), so a client that trusts its CA can follow
Metadata to any node.  What is asserted is what a user checks: Metadata as a client sees
it, and the rows in ClickHouse (one per record, counted per unique marker with SQL).
"""

import json
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafka import KafkaProducer

from clickhouse import ClickHouse, free_ports, logs_ddl
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
    lines; `logstore_options`: as for Gateway."""

    def __init__(self, tmp_path, urls, n=3, advertise=None, clickhouse="", logstore_options=None):
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
                         storage={"backend": '"clickhouse"'}, extra_config=extra,
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
def ch(tmp_path):
    server = ClickHouse(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


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
    `topic`, asked by a new librdkafka client of `conf` (so from its bootstrap broker)."""
    p = Producer(dict(conf, **{"socket.timeout.ms": 5000}))
    md = p.list_topics(topic, timeout=timeout)
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
    del p

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
        futures = {"%s-%d" % (kpy, i): kp.send("pinned", value=("%s-%d" % (kpy, i)).encode()) for i in range(count)}
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
