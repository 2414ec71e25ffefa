"""Produce corners real clients hit, sent as raw frames to a real gateway: an empty
transactional id, zstd record batches in Produce v3-v6 (sarama before 1.23)."""

import struct

import zstandard

from gateway import contents
from wire import (connect, message_v1, parse_produce_v2_response, produce_v2, read_frame, record, record_batch,
                  request, string)


def produce(version, topic, records, transactional_id=None, correlation_id=1):
    """A Produce v3-v8 frame (non-flexible) to partition 0 of `topic`."""
    tx = struct.pack(">h", -1) if transactional_id is None else string(transactional_id)
    body = tx + struct.pack(">hi", 1, 10000) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", 1) + struct.pack(">ii", 0, len(records)) + records
    return request(0, version, correlation_id, body)


def answer(sock):
    """(error, base_offset) of the single partition of a Produce v3-v8 answer."""
    frame = read_frame(sock)
    off = 4 + 4 + 2 + struct.unpack(">h", frame[8:10])[0] + 4 + 4
    return struct.unpack(">hq", frame[off:off + 10])


def test_empty_transactional_id_is_no_transaction(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    values = [b"empty-tx-id-%d" % i for i in range(3)]
    blob = b"".join(record(v, i) for i, v in enumerate(values))
    for version in (3, 8):
        s.sendall(produce(version, "one", record_batch(blob, 3), transactional_id="", correlation_id=version))
        assert answer(s) == (0, 0 if version == 3 else 3), version
    # A real transactional id is still refused, and nothing of it stored.
    s.sendall(produce(3, "one", record_batch(record(b"with-tx-id"), 1), transactional_id="tx", correlation_id=9))
    assert answer(s)[0] != 0
    logs = gateway.wait_logs("one", 6)
    assert contents(logs) == sorted([v.decode() for v in values] * 2)


def zstd_batch(values):
    blob = b"".join(record(v, i) for i, v in enumerate(values))
    return record_batch(zstandard.ZstdCompressor(level=3).compress(blob), len(values), attributes=4)


def test_zstd_record_batches_in_produce_v3_to_v6_are_stored(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    expected = []
    for n, version in enumerate((3, 6)):
        values = [b"zstd-v%d-record-%d " % (version, i) * 4 for i in range(4)]
        batch = zstd_batch(values)
        assert batch[22] & 7 == 4
        s.sendall(produce(version, "one", batch, correlation_id=version))
        assert answer(s) == (0, 4 * n), version
        expected += [v.decode() for v in values]
    logs = gateway.wait_logs("one", len(expected))
    assert contents(logs) == sorted(expected)


def test_zstd_codec_in_a_magic_1_message_is_still_refused(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    inner = zstandard.ZstdCompressor().compress(message_v1(b"zstd-in-magic-1"))
    s.sendall(produce_v2("one", 0, message_v1(inner, codec=4), correlation_id=5))
    corr, results = parse_produce_v2_response(read_frame(s))
    assert corr == 5 and results == [("one", 0, 2, -1)]  # CORRUPT_MESSAGE (v2 has no INVALID_RECORD)
    s.sendall(produce_v2("one", 0, message_v1(b"after"), correlation_id=6))
    assert parse_produce_v2_response(read_frame(s))[1] == [("one", 0, 0, 0)]
    assert contents(gateway.wait_logs("one", 1)) == ["after"]
