"""Produce corners real clients hit, sent as raw frames to a real gateway: an empty
transactional id, zstd record batches in Produce v3-v6 (sarama before 1.23), and the v5+/v8+
answer fields (log_start_offset, record_errors, error_message)."""

import struct
import time

import zstandard

from gateway import Gateway, contents
from wire import (connect, message_v1, parse_produce_v2_response, produce_v2, read_frame, record, record_batch,
                  request, string, varint)


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


def answer_v5(sock):
    """The single partition of a Produce v5-v8 answer: (error, base_offset, log_start_offset,
    record_errors, error_message); the last two are None below v8."""
    frame = read_frame(sock)
    version = answer_v5.version
    off = 4 + 4 + 2 + struct.unpack(">h", frame[8:10])[0] + 4 + 4
    error, base, _append_time, start = struct.unpack(">hqqq", frame[off:off + 26])
    off += 26
    if version < 8:
        return error, base, start, None, None

    def nullable_string():
        nonlocal off
        (n,) = struct.unpack(">h", frame[off:off + 2])
        off += 2
        if n < 0:
            return None
        text = frame[off:off + n].decode()
        off += n
        return text

    (count,) = struct.unpack(">i", frame[off:off + 4])
    off += 4
    record_errors = []
    for _ in range(count):
        (index,) = struct.unpack(">i", frame[off:off + 4])
        off += 4
        record_errors.append((index, nullable_string()))
    return error, base, start, record_errors, nullable_string()


def produce_answer(sock, version, topic, records, correlation_id):
    answer_v5.version = version
    sock.sendall(produce(version, topic, records, correlation_id=correlation_id))
    return answer_v5(sock)


def batch_of(values):
    return record_batch(b"".join(record(v, i) for i, v in enumerate(values)), len(values))


def test_produce_v5_to_v8_answers_carry_the_log_start_offset_and_no_error(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    for n, version in enumerate((5, 7, 8)):
        error, base, start, record_errors, message = produce_answer(s, version, "one", batch_of([b"v%d" % version]), n)
        assert (error, base, start) == (0, n, 0), version
        if version >= 8:
            assert (record_errors, message) == ([], None)
    assert contents(gateway.wait_logs("one", 3)) == ["v5", "v7", "v8"]


def test_produce_v8_names_the_corrupt_record_and_why(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    good = record(b"good-0", 0) + record(b"good-1", 1)
    # The third record's length says 40 bytes but 6 follow: the batch's CRC is right, the
    # record is not.
    bad = varint(40) + b"\x00" + varint(0) + varint(2) + b"abc"
    for version in (7, 8):
        error, base, start, record_errors, message = produce_answer(s, version, "one", record_batch(good + bad, 3), version)
        assert (error, base, start) == (2, -1, -1), version  # CORRUPT_MESSAGE
        if version == 8:
            assert [i for i, _ in record_errors] == [2], record_errors
            assert "record 2" in message and "corrupt" in message, message
            assert record_errors[0][1] == message
    # Nothing of the refused batches was stored; the connection goes on.
    error, base, *_ = produce_answer(s, 8, "one", batch_of([b"after"]), 9)
    assert (error, base) == (0, 0)
    assert contents(gateway.wait_logs("one", 1)) == ["after"]


def test_produce_v8_names_the_record_too_large_to_store(tmp_path):
    gw = Gateway(tmp_path, storage={"max_log_bytes": 1024}).start()
    try:
        s = connect(gw.ports["PLAINTEXT"])
        error, base, start, record_errors, message = produce_answer(
            s, 8, "one", batch_of([b"small", b"x" * 2000, b"small-2"]), 1)
        assert (error, base, start) == (10, -1, -1)  # MESSAGE_TOO_LARGE
        assert [i for i, _ in record_errors] == [1], record_errors
        assert "record 1 too large to store" in message and "max_log_bytes" in message, message
        # Storage faults are not detailed to clients; reasons of the client's own making are.
        error, *_ = produce_answer(s, 8, "nosuch", batch_of([b"x"]), 2)
        assert error == 3
    finally:
        gw.stop()
    assert gw.logs("one") == []


def test_log_start_offset_follows_retention(tmp_path):
    gw = Gateway(tmp_path, storage={"segment_bytes": 4096},
                 logstore_options={"one": {"retention_bytes": 20000}}).start()
    try:
        s = connect(gw.ports["PLAINTEXT"])
        n = 0
        # One request at a time, so segments roll between them and retention has old ones.
        while True:
            values = [b"retained-%05d-%s" % (n * 10 + i, b"y" * 80) for i in range(10)]
            error, base, start, _, _ = produce_answer(s, 8, "one", batch_of(values), n)
            assert (error, base) == (0, n * 10)
            n += 1
            if start > 0 or n > 400:
                break
        assert start > 0, "retention never deleted a segment"
        # Once retention is quiet, the answer's start is the first log `loggate logs` shows (a
        # write that rolls a segment may start another pass: then ask again).
        for attempt in range(5):
            time.sleep(1.5)
            error, base, start, _, _ = produce_answer(s, 8, "one", batch_of([b"last-%d" % attempt]), n + attempt)
            logs = gw.logs("one")
            assert logs[-1]["content"] == "last-%d" % attempt and logs[-1]["__offset__"] == base
            if logs[0]["__offset__"] == start:
                break
        assert logs[0]["__offset__"] == start, (logs[0]["__offset__"], start)
    finally:
        gw.stop()
