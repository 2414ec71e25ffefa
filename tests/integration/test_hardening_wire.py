"""Issue 11, defects 4 and 5: requests whose counts and sizes promise more than their bytes.

The gateway runs under an address-space limit (`prlimit --as`), so a decoder that reserves
memory for a declared count (kafka-protocol's arrays did: a 20-byte Produce v3 asked for
~200 GB) aborts the process instead of being saved by overcommit. Every bomb must get a
Kafka error or a closed connection, the process must stay up, and a real client must
still deliver afterwards. The LZ4 bomb (half a million 2-byte blocks in a 4 MiB-block
frame) must be answered in seconds, not the minutes of zero-filling it used to cost.
"""

import struct
import time
import uuid

import pytest
import xxhash
from confluent_kafka import Producer

from gateway import Gateway, contents, password
from wire import (connect, is_closed, parse_produce_v2_response, produce_v3, read_frame, record, record_batch,
                  recv_exact, request, string, uvarint)

# Well above what the gateway maps at start (mimalloc arenas, tokio threads: ~1.3 GiB
# here), far below any count bomb.
ADDRESS_SPACE_LIMIT = 4 << 30
HUGE = 0x7FFFFFFF


@pytest.fixture
def limited(tmp_path):
    gw = Gateway(tmp_path)
    gw.command_prefix = ["prlimit", "--as=%d" % ADDRESS_SPACE_LIMIT, "--"]
    gw.start()
    yield gw
    gw.stop()


# ------------------------------------------------------------------ encoders


def compact_string(s):
    b = s.encode()
    return uvarint(len(b) + 1) + b


def lz4_tiny_blocks(data):
    """An LZ4 frame (4 MiB block maximum) holding `data` one byte per 2-byte block."""
    descriptor = b"\x60\x70"
    out = bytearray(b"\x04\x22\x4d\x18" + descriptor + bytes([(xxhash.xxh32(descriptor).intdigest() >> 8) & 0xFF]))
    for b in data:
        out += b"\x02\x00\x00\x00\x10" + bytes([b])
    return bytes(out + b"\x00\x00\x00\x00")


# ------------------------------------------------------------------ the bombs

PRODUCE, METADATA, API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE, INIT_PRODUCER_ID = 0, 3, 18, 17, 36, 22

COUNT_BOMBS = {
    # Produce v3: null transactional id, acks, timeout, topics count 0x7fffffff (20 bytes).
    "produce v3 topics": request(PRODUCE, 3, 1, struct.pack(">hhii", -1, 1, 10000, HUGE) + bytes(8)),
    # Produce v3: one topic whose partitions count is 0x7fffffff.
    "produce v3 partitions": request(
        PRODUCE, 3, 2, struct.pack(">hhii", -1, 1, 10000, 1) + string("one") + struct.pack(">i", HUGE) + bytes(8)),
    # Produce v9 (flexible): compact topics count 2^32-2, and a partitions count bomb.
    "produce v9 topics": request(
        PRODUCE, 9, 3, b"\x00" + struct.pack(">hi", 1, 10000) + uvarint(0xFFFFFFFF) + bytes(8), flexible=True),
    "produce v9 partitions": request(
        PRODUCE, 9, 4, b"\x00" + struct.pack(">hi", 1, 10000) + uvarint(2) + compact_string("one")
        + uvarint(0xFFFFFFFF) + bytes(8), flexible=True),
    # Produce v9: a tagged-field section claiming 2^32-1 fields.
    "produce v9 tagged fields": request(
        PRODUCE, 9, 5, b"\x00" + struct.pack(">hi", 1, 10000) + uvarint(1) + uvarint(0xFFFFFFFF) + bytes(4),
        flexible=True),
    # Produce v0-v2 (hand-parsed): topics and partitions counts.
    "produce v0 topics": request(PRODUCE, 0, 6, struct.pack(">hii", 1, 10000, HUGE) + bytes(8)),
    "produce v2 partitions": request(
        PRODUCE, 2, 7, struct.pack(">hii", 1, 10000, 1) + string("one") + struct.pack(">i", HUGE) + bytes(8)),
    # Metadata v1 and v12 (flexible): topics count.
    "metadata v1 topics": request(METADATA, 1, 8, struct.pack(">i", HUGE) + bytes(8)),
    "metadata v4 topics": request(METADATA, 4, 9, struct.pack(">i", HUGE) + bytes(8)),
    "metadata v12 topics": request(METADATA, 12, 10, uvarint(0xFFFFFFFF) + bytes(8), flexible=True),
    # InitProducerId v4 (flexible): a transactional id far longer than the request.
    "init producer id v4": request(INIT_PRODUCER_ID, 4, 11, uvarint(0x7FFFFFFF) + bytes(8), flexible=True),
    # ApiVersions v3: a header tagged-field count of 2^32-1.
    "api versions v3 tagged fields": request(API_VERSIONS, 3, 12, uvarint(0xFFFFFFFF) + bytes(4)),
}


def produce_ok(gw, value):
    """A well-formed Produce v3 on a fresh PLAINTEXT connection succeeds."""
    s = connect(gw.ports["PLAINTEXT"])
    s.sendall(produce_v3("one", [(0, record_batch(record(value.encode()), 1))]))
    _, results = parse_produce_v2_response(read_frame(s))
    s.close()
    assert [r[2] for r in results] == [0], results


def answered_with_error_or_closed(sock, timeout=10):
    """The connection is closed, or answered by a frame (an error the test inspects)."""
    sock.settimeout(timeout)
    try:
        head = sock.recv(4)
    except (ConnectionResetError, BrokenPipeError):
        return None
    if head == b"":
        return None
    size = struct.unpack(">i", head)[0]
    return recv_exact(sock, size)


def sasl_plaintext_handshaken(gw):
    """A SASL_PLAINTEXT connection after SaslHandshake v1 PLAIN, awaiting SaslAuthenticate."""
    s = connect(gw.ports["SASL_PLAINTEXT"])
    s.sendall(request(SASL_HANDSHAKE, 1, 1, string("PLAIN")))
    frame = read_frame(s)
    assert struct.unpack(">h", frame[4:6])[0] == 0, frame
    return s


def deliver_with_confluent(gw, topic, n):
    values = ["%s-%d" % (uuid.uuid4().hex[:8], i) for i in range(n)]
    errors = []
    p = Producer({
        "bootstrap.servers": gw.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": password(),
        "ssl.ca.location": str(gw.ca), "message.timeout.ms": 15000, "linger.ms": 5,
    })
    for v in values:
        p.produce(topic, value=v, on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(30) == 0
    assert errors == []
    return values


# ------------------------------------------------------------------ tests


def test_count_bombs_under_an_address_space_limit(limited):
    gw = limited
    for name, frame in COUNT_BOMBS.items():
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(frame)
        answer = answered_with_error_or_closed(s)
        s.close()
        assert gw.alive(), "%s killed the gateway:\n%s" % (name, gw.log_text()[-2000:])
        if answer is not None:
            # Only ApiVersions answers at all: with an error (never NONE) or by closing.
            assert name.startswith("api versions"), (name, answer)
            assert struct.unpack(">h", answer[4:6])[0] != 0, (name, answer)
        produce_ok(gw, "after " + name)
    assert "memory allocation" not in gw.log_text()
    assert "cannot fit in the" in gw.log_text()


def test_requests_naming_too_many_entries_are_refused(limited):
    """Bytes that are all there, but 200,000 partition entries (1.6 MB) of one Produce, or
    20,000 topics of one Metadata: each would cost far more memory than its bytes."""
    gw = limited
    partitions = b"".join(struct.pack(">ii", i, -1) for i in range(200_000))
    produce = request(PRODUCE, 3, 31, struct.pack(">hhii", -1, 1, 10000, 1) + string("one")
                      + struct.pack(">i", 200_000) + partitions)
    metadata = request(METADATA, 1, 32, struct.pack(">i", 20_000) + b"".join(string("t%d" % i) for i in range(20_000)))
    for frame in (produce, metadata):
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(frame)
        assert is_closed(s, timeout=10)
        s.close()
    assert gw.alive()
    assert "more than 10000" in gw.log_text()
    produce_ok(gw, "after too many entries")


def test_sasl_authenticate_bombs_before_authentication(limited):
    gw = limited
    bombs = {
        # v2 (flexible): auth bytes of 2^31 bytes declared in a 20-byte request.
        "auth bytes length": uvarint(0x7FFFFFFF) + bytes(8),
        # v2: a tagged-field section claiming 2^32-1 fields after empty auth bytes.
        "tagged fields": uvarint(1) + uvarint(0xFFFFFFFF) + bytes(8),
        # v2: 65 tagged fields that are there (over the per-section bound).
        "65 tagged fields": uvarint(1) + uvarint(65) + b"".join(uvarint(t) + b"\x00" for t in range(65)),
    }
    for name, body in bombs.items():
        s = sasl_plaintext_handshaken(gw)
        s.sendall(request(SASL_AUTHENTICATE, 2, 2, body, flexible=True))
        assert is_closed(s), name
        s.close()
        assert gw.alive(), name
    # v0 (classic): 2^31-1 bytes declared.
    s = sasl_plaintext_handshaken(gw)
    s.sendall(request(SASL_AUTHENTICATE, 0, 2, struct.pack(">i", HUGE) + bytes(8)))
    assert is_closed(s)
    # Metadata before authentication is refused before its body is read.
    s = connect(gw.ports["SASL_PLAINTEXT"])
    s.sendall(COUNT_BOMBS["metadata v1 topics"])
    assert is_closed(s)
    assert gw.alive()
    produce_ok(gw, "after sasl bombs")


def test_record_batch_bombs_get_kafka_errors(limited):
    gw = limited
    # A record count of a million for one 10-byte record.
    s = connect(gw.ports["PLAINTEXT"])
    s.sendall(produce_v3("one", [(0, record_batch(record(b"x"), 1_000_000))], correlation_id=21))
    corr, results = parse_produce_v2_response(read_frame(s))
    assert corr == 21 and results[0][2] == 2, results  # CORRUPT_MESSAGE
    # 500,000 two-byte LZ4 blocks in a 4 MiB-block frame (3 MB): one record of 500 KB.
    value = b"lz4-tiny-blocks-" + bytes(b"abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(499_960))
    blob = record(value)
    frame = produce_v3("one", [(0, record_batch(lz4_tiny_blocks(blob), 1, attributes=3))], correlation_id=22)
    started = time.monotonic()
    s.sendall(frame)
    s.settimeout(20)
    corr, results = parse_produce_v2_response(read_frame(s))
    took = time.monotonic() - started
    assert corr == 22 and results[0][2] == 0, results
    assert took < 10, "an LZ4 batch of %d bytes took %.1f s" % (len(frame), took)
    s.close()
    assert gw.alive()
    stored = [l for l in gw.wait_logs("one", 1) if l.get("content", "").startswith("lz4-tiny-blocks-")]
    assert len(stored) == 1 and len(stored[0]["content"]) == len(value)


def test_real_client_still_delivers_after_the_bombs(limited):
    gw = limited
    for name, frame in COUNT_BOMBS.items():
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(frame)
        answered_with_error_or_closed(s)
        s.close()
    assert gw.alive(), gw.log_text()[-2000:]
    values = deliver_with_confluent(gw, "one", 20)
    stored = contents(gw.wait_logs("one", 20))
    assert sorted(values) == [v for v in stored if v in set(values)]
