"""Metadata v10+ topic ids, sent and read as raw flexible-version frames: `L` and `L.json`
have distinct, stable, non-zero ids, and topics asked for by id are answered."""

import hashlib
import os
import struct

from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient

from gateway import Gateway
from wire import connect, read_frame, request, uvarint

ZERO = b"\0" * 16
UNKNOWN_TOPIC_ID = 100


def compact_string(s):
    if s is None:
        return b"\x00"
    b = s.encode()
    return uvarint(len(b) + 1) + b


def metadata_request(version, topics, corr):
    """A Metadata v10-v12 frame; `topics` is None (all) or a list of (name or None, id bytes)."""
    if topics is None:
        body = b"\x00"
    else:
        body = uvarint(len(topics) + 1)
        for name, tid in topics:
            body += tid + compact_string(name) + b"\x00"
    body += b"\x00"  # allow_auto_topic_creation
    if version == 10:
        body += b"\x00"  # include_cluster_authorized_operations (v8-v10)
    body += b"\x00"  # include_topic_authorized_operations
    body += b"\x00"  # tagged fields
    return request(3, version, corr, body, flexible=True)


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        assert self.pos + n <= len(self.data), "answer truncated"
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        values = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return values[0] if len(values) == 1 else values

    def uvarint(self):
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    def compact_string(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def array(self, item):
        n = self.uvarint()
        return None if n == 0 else [item() for _ in range(n - 1)]

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def parse_metadata_response(version, frame):
    """-> (correlation id, [(error, name, topic id bytes, [partition index])])."""
    r = Reader(frame)
    corr = r.unpack(">i")
    r.tags()  # response header v1
    r.unpack(">i")  # throttle

    def broker():
        r.unpack(">i")
        r.compact_string()
        r.unpack(">i")
        r.compact_string()
        r.tags()

    def partition():
        _err, index, _leader, _epoch = r.unpack(">hiii")
        for _ in range(3):  # replicas, isr, offline replicas
            r.array(lambda: r.unpack(">i"))
        r.tags()
        return index

    def topic():
        err = r.unpack(">h")
        name = r.compact_string()
        tid = r.take(16)
        r.take(1)  # is_internal
        parts = r.array(partition)
        r.unpack(">i")  # topic authorized operations
        r.tags()
        return err, name, tid, parts

    r.array(broker)
    r.compact_string()  # cluster id
    r.unpack(">i")  # controller
    topics = r.array(topic)
    if version == 10:
        r.unpack(">i")  # cluster authorized operations
    r.tags()
    assert r.pos == len(frame), "bytes left over in the answer"
    return corr, topics


def ask(gw, version, topics, corr=7):
    s = connect(gw.ports["PLAINTEXT"])
    try:
        s.sendall(metadata_request(version, topics, corr))
        got_corr, answer = parse_metadata_response(version, read_frame(s))
    finally:
        s.close()
    assert got_corr == corr
    return answer


def ids_by_name(gw, version):
    answer = ask(gw, version, [("app", ZERO), ("app.json", ZERO)])
    assert [(e, n) for e, n, _, _ in answer] == [(0, "app"), (0, "app.json")]
    assert all(parts == [0, 1] for _, _, _, parts in answer)  # the two shards of `app`
    return {n: tid for _, n, tid, _ in answer}


def test_raw_and_json_topics_have_distinct_ids_answered_by_id_and_stable(tmp_path):
    gw = Gateway(tmp_path).start()
    try:
        for version in (10, 12):
            ids = ids_by_name(gw, version)
            assert ids["app"] != ZERO and ids["app.json"] != ZERO
            assert ids["app"] != ids["app.json"]
            # Each id, with a null name, is answered with its own name and partitions.
            answer = ask(gw, version, [(None, ids["app.json"]), (None, ids["app"])])
            assert [(e, n, t, p) for e, n, t, p in answer] == [
                (0, "app.json", ids["app.json"], [0, 1]), (0, "app", ids["app"], [0, 1])]
            # An id naming nothing: UNKNOWN_TOPIC_ID, a null name, no partitions.
            unknown = os.urandom(16)
            [(err, name, tid, parts)] = ask(gw, version, [(None, unknown)])
            assert (err, name, tid, parts) == (UNKNOWN_TOPIC_ID, None, unknown, [])
            # Another logstore's ids differ too.
            other = ids_by_name_of(gw, version, "one")
            assert other not in ids.values()
            # The zero id names nothing; nor does another project's logstore id (ops/sys,
            # derived as the gateway documents) on a connection of project demo.
            ops_sys = hashlib.sha256(b"ops\0sys").digest()[:16]
            for tid in (ZERO, ops_sys):
                [(err, name, _, _)] = ask(gw, version, [(None, tid)])
                assert (err, name) == (UNKNOWN_TOPIC_ID, None)
            assert ids["app"] == hashlib.sha256(b"demo\0app").digest()[:16]
        # Listing all topics carries each logstore's raw-topic id.
        listed = {n: t for e, n, t, _ in ask(gw, 12, None)}
        assert listed["app"] == ids["app"]
        # A real client: librdkafka's DescribeTopics (Metadata v12) reads each topic's id.
        admin = AdminClient({"bootstrap.servers": gw.bootstrap("PLAINTEXT")})
        for name, future in admin.describe_topics(TopicCollection(["app", "app.json"]), request_timeout=10).items():
            described = future.result(timeout=15)
            u = described.topic_id
            got = struct.pack(">QQ", u.get_most_significant_bits() & (2**64 - 1), u.get_least_significant_bits() & (2**64 - 1))
            assert (described.name, got, len(described.partitions)) == (name, ids[name], 2)
    finally:
        gw.stop()
    # The same ids after a restart (derived from names, nothing random).
    gw.start()
    try:
        assert ids_by_name(gw, 12) == ids
        [(err, name, _, _)] = ask(gw, 12, [(None, ids["app.json"])])
        assert (err, name) == (0, "app.json")
    finally:
        gw.stop()
    # And on another node with its own data directory: the same ids.
    (tmp_path / "node2").mkdir()
    other_node = Gateway(tmp_path / "node2", node_id=2).start()
    try:
        assert ids_by_name(other_node, 12) == ids
    finally:
        other_node.stop()


def ids_by_name_of(gw, version, logstore):
    [(err, name, tid, _)] = ask(gw, version, [(logstore, ZERO)])
    assert (err, name) == (0, logstore) and tid != ZERO
    return tid

