"""Bad input sent as raw bytes: each gets a Kafka error or a closed connection and a
log line, and the server keeps serving everyone else."""

import gzip
import struct
import time

from gateway import Gateway, contents, password
from wire import (connect, gzip_wrapper_v1, is_closed, message_v1, parse_produce_v2_response, produce_v2,
                  read_frame, request, string)


def produce_ok(gw, value):
    """A well-formed Produce on a fresh PLAINTEXT connection must still succeed."""
    s = connect(gw.ports["PLAINTEXT"])
    s.sendall(produce_v2("one", 0, message_v1(value.encode())))
    _, results = parse_produce_v2_response(read_frame(s))
    s.close()
    assert [r[2] for r in results] == [0], results


def test_bad_crc_is_corrupt_message_for_that_partition_only(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    good = message_v1(b"good-after-bad")
    bad = message_v1(b"flipped", crc=12345)
    s.sendall(produce_v2("one", 0, bad, correlation_id=7))
    corr, results = parse_produce_v2_response(read_frame(s))
    assert corr == 7 and results == [("one", 0, 2, -1)]  # CORRUPT_MESSAGE
    s.sendall(produce_v2("one", 0, good, correlation_id=8))
    corr, results = parse_produce_v2_response(read_frame(s))
    assert corr == 8 and results[0][2] == 0
    assert contents(gateway.wait_logs("one", 1)) == ["good-after-bad"]
    assert "CorruptMessage" in gateway.log_text()


def test_truncated_frame_closes_only_that_connection(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    frame = produce_v2("one", 0, message_v1(b"never-complete"))
    s.sendall(frame[:len(frame) // 2])
    s.close()
    time.sleep(0.3)
    produce_ok(gateway, "still-serving")
    assert contents(gateway.wait_logs("one", 1)) == ["still-serving"]
    assert "truncated frame" in gateway.log_text()


def test_garbage_before_sasl_closes_connection(gateway):
    for port in (gateway.ports["SASL_PLAINTEXT"],):
        s = connect(port)
        s.sendall(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n\r\n")
        assert is_closed(s)
        s = connect(port)
        # A well-formed Produce before authenticating is refused too.
        s.sendall(produce_v2("app", 0, message_v1(b"unauthenticated")))
        assert is_closed(s)
    produce_ok(gateway, "after-garbage")
    assert gateway.logs("app") == []
    assert "not allowed before SASL authentication" in gateway.log_text()


def test_oversized_frame_is_refused_without_allocation(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    s.sendall(struct.pack(">i", 2_000_000_000))
    assert is_closed(s)
    s = connect(gateway.ports["PLAINTEXT"])
    s.sendall(struct.pack(">i", -5))
    assert is_closed(s)
    produce_ok(gateway, "after-oversize")
    assert "exceeds max_request_bytes" in gateway.log_text()


def test_decompression_bomb_is_corrupt_message(tmp_path):
    gw = Gateway(tmp_path, limits={"max_decompressed_batch_bytes": 4 * 1024 * 1024}).start()
    try:
        inner = message_v1(b"\0" * (64 * 1024 * 1024))
        bomb = gzip_wrapper_v1(inner)
        assert len(bomb) < 200_000
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(produce_v2("one", 0, bomb))
        _, results = parse_produce_v2_response(read_frame(s))
        assert results == [("one", 0, 2, -1)]
        produce_ok(gw, "after-bomb")
        assert contents(gw.wait_logs("one", 1)) == ["after-bomb"]
    finally:
        gw.stop()


def test_acks_zero_error_closes_connection(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    s.sendall(produce_v2("no_such_store", 0, message_v1(b"x"), acks=0))
    assert is_closed(s)
    s = connect(gateway.ports["PLAINTEXT"])
    s.sendall(produce_v2("one", 0, message_v1(b"silent-ok"), acks=0))
    s.sendall(produce_v2("one", 0, message_v1(b"answered"), acks=1, correlation_id=2))
    corr, results = parse_produce_v2_response(read_frame(s))  # only the acks=1 request is answered
    assert corr == 2 and results[0][2] == 0
    assert contents(gateway.wait_logs("one", 2)) == ["answered", "silent-ok"]


def test_invalid_acks(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    s.sendall(produce_v2("one", 0, message_v1(b"x"), acks=2))
    _, results = parse_produce_v2_response(read_frame(s))
    assert results == [("one", 0, 21, -1)]  # INVALID_REQUIRED_ACKS


def test_api_versions_newer_than_ours_gets_v0_unsupported_version(gateway):
    s = connect(gateway.ports["SASL_PLAINTEXT"])
    s.sendall(request(18, 9, 42, b""))
    frame = read_frame(s)
    corr, err, n = struct.unpack(">ihi", frame[:10])
    assert (corr, err, n) == (42, 35, 1)
    assert struct.unpack(">hhh", frame[10:16]) == (18, 0, 3)


def test_unknown_api_closes_connection(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    s.sendall(request(11, 0, 1, b""))  # JoinGroup: not served
    assert is_closed(s)


def test_fetch_gets_a_well_formed_empty_answer(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    s.sendall(request(1, 0, 5, struct.pack(">iii", -1, 100, 1) + struct.pack(">i", 0)))
    frame = read_frame(s)
    assert struct.unpack(">ii", frame) == (5, 0)


def sasl_v1_login(sock, user, pw):
    sock.sendall(request(17, 1, 1, string("PLAIN")))
    assert struct.unpack(">ih", read_frame(sock)[:6]) == (1, 0)
    token = b"\0" + user.encode() + b"\0" + pw.encode()
    sock.sendall(request(36, 1, 2, struct.pack(">i", len(token)) + token))
    frame = read_frame(sock)
    return struct.unpack(">h", frame[4:6])[0]


def metadata_v1(sock, topics, corr=3):
    body = struct.pack(">i", len(topics)) + b"".join(string(t) for t in topics)
    sock.sendall(request(3, 1, corr, body))
    return read_frame(sock)


def test_sni_name_is_advertised_and_must_match_the_project(gateway):
    s = connect(gateway.ports["SASL_SSL"], tls_ca=gateway.ca, server_hostname="demo.loggate.localhost")
    assert sasl_v1_login(s, "demo", password("main")) == 0
    frame = metadata_v1(s, ["app"])
    assert b"demo.loggate.localhost" in frame
    # a SNI naming another project hides every topic
    s = connect(gateway.ports["SASL_SSL"], tls_ca=gateway.ca, server_hostname="ops.loggate.localhost")
    assert sasl_v1_login(s, "demo", password("main")) == 0
    frame = metadata_v1(s, ["app"])
    # brokers array, then cluster id, controller, topics: find the topic error code
    assert struct.pack(">h", 3) + string("app") in frame


def test_failed_login_is_logged_without_secret(gateway):
    s = connect(gateway.ports["SASL_PLAINTEXT"])
    assert sasl_v1_login(s, "demo", "LGTESTMAIN#TopSecretGuess") == 58
    assert is_closed(s)
    log = gateway.log_text()
    assert "SASL authentication failed" in log and "TopSecretGuess" not in log


def test_silent_client_is_closed_after_auth_timeout(tmp_path):
    gw = Gateway(tmp_path, limits={"auth_timeout_secs": 1, "idle_timeout_secs": 2}).start()
    try:
        started = time.time()
        s = connect(gw.ports["SASL_PLAINTEXT"])
        assert is_closed(s, timeout=10)
        assert time.time() - started < 5
        # TLS listener: a client that never starts the handshake
        s = connect(gw.ports["SSL"])
        assert is_closed(s, timeout=10)
        # an authenticated (PLAINTEXT) connection that goes quiet is closed after the idle timeout
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(produce_v2("one", 0, message_v1(b"then-silence")))
        read_frame(s)
        assert is_closed(s, timeout=10)
        assert "authentication not completed in time" in gw.log_text()
        assert "idle timeout" in gw.log_text()
    finally:
        gw.stop()


def test_max_connections_refuses_extra_clients(tmp_path):
    gw = Gateway(tmp_path, limits={"max_connections": 2}).start()
    try:
        time.sleep(0.5)  # the start-up probe connections are gone
        held = [connect(gw.ports["PLAINTEXT"]) for _ in range(2)]
        time.sleep(0.2)
        extra = connect(gw.ports["PLAINTEXT"])
        assert is_closed(extra)
        assert "max_connections reached" in gw.log_text()
        for s in held:
            s.close()
        time.sleep(0.3)
        produce_ok(gw, "after-limit")
    finally:
        gw.stop()


def test_zstd_batches_are_accepted_below_produce_v7(gateway):
    from kafka.record.default_records import DefaultRecordBatchBuilder
    b = DefaultRecordBatchBuilder(magic=2, compression_type=4, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    value = b"zstd-in-v3 " * 50  # kafka-python leaves tiny batches uncompressed
    b.append(0, timestamp=None, key=None, value=value, headers=[])
    batch = bytes(b.build())
    assert batch[22] & 7 == 4  # really zstd
    for version, expected in ((3, 0), (7, 0)):
        body = struct.pack(">h", -1) + struct.pack(">hi", 1, 10000) + struct.pack(">i", 1) + string("one")
        body += struct.pack(">i", 1) + struct.pack(">ii", 0, len(batch)) + batch
        s = connect(gateway.ports["PLAINTEXT"])
        s.sendall(request(0, version, 9, body))
        frame = read_frame(s)
        # correlation, topics=1, name, partitions=1, partition, error
        off = 4 + 4 + 2 + len("one") + 4 + 4
        assert struct.unpack(">h", frame[off:off + 2])[0] == expected, version
    assert contents(gateway.wait_logs("one", 2)) == [value.decode()] * 2


def test_record_count_limit_and_unknown_partition(tmp_path):
    gw = Gateway(tmp_path, limits={"max_records_per_batch": 5}).start()
    try:
        s = connect(gw.ports["PLAINTEXT"])
        ten = b"".join(message_v1(b"r%d" % i) for i in range(10))
        s.sendall(produce_v2("one", 0, ten))
        assert parse_produce_v2_response(read_frame(s))[1] == [("one", 0, 10, -1)]  # MESSAGE_TOO_LARGE
        s.sendall(produce_v2("one", 7, message_v1(b"nowhere"), correlation_id=2))
        assert parse_produce_v2_response(read_frame(s))[1] == [("one", 7, 3, -1)]  # no such shard
        five = b"".join(message_v1(b"r%d" % i) for i in range(5))
        s.sendall(produce_v2("one", 0, five, correlation_id=3))
        assert parse_produce_v2_response(read_frame(s))[1] == [("one", 0, 0, 0)]
        assert contents(gw.wait_logs("one", 5)) == ["r%d" % i for i in range(5)]
    finally:
        gw.stop()


def test_in_flight_bytes_are_bounded_across_connections(tmp_path):
    """With max_inflight_bytes = 1 MiB, a second connection's 500 KiB request waits while a
    first connection holds the 800 KiB it has sent of an unfinished 900 KiB request (budget
    follows bytes received, not the declared size), and is served once it is done."""
    gw = Gateway(tmp_path, limits={"max_request_bytes": 1 << 20, "max_inflight_bytes": 1 << 20,
                                   "max_batch_bytes": 1 << 20}).start()
    try:
        big_a = produce_v2("one", 0, message_v1(b"a" * (900 * 1024)), correlation_id=1)
        big_b = produce_v2("one", 0, message_v1(b"b" * (500 * 1024)), correlation_id=2)
        a = connect(gw.ports["PLAINTEXT"])
        a.sendall(big_a[:800 * 1024])
        time.sleep(0.3)
        b = connect(gw.ports["PLAINTEXT"])
        b.sendall(big_b)
        b.settimeout(1.5)
        try:
            b.recv(1)
            raise AssertionError("the second request was served beyond the in-flight budget")
        except OSError:
            pass  # timed out: still waiting for budget
        a.sendall(big_a[800 * 1024:])
        assert parse_produce_v2_response(read_frame(a))[1][0][2] == 0
        b.settimeout(10)
        assert parse_produce_v2_response(read_frame(b))[1][0][2] == 0
        assert len(gw.wait_logs("one", 2)) == 2
        # before authentication, frames over 512 KiB are refused outright
        s = connect(gw.ports["SASL_PLAINTEXT"])
        s.sendall(struct.pack(">i", 600 * 1024))
        assert is_closed(s)
    finally:
        gw.stop()
