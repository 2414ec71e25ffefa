"""Idempotent producers: InitProducerId, and retries of batches already written are
answered with their original offsets instead of being stored twice."""

import time

import pytest
from confluent_kafka import Producer

from clients import check_stored, describe, unique_prefix
from faultproxy import CuttingProxy
from gateway import Gateway, contents, free_port, password
from test_kafkajs import kafkajs
from test_sarama import sarama


def produce(bootstrap, protocol, values, idempotent, extra=None, gw=None):
    conf = {"bootstrap.servers": bootstrap, "security.protocol": protocol, "sasl.mechanism": "PLAIN",
            "sasl.username": "demo", "sasl.password": password("main"), "enable.idempotence": idempotent,
            "acks": "all", "linger.ms": 2, "batch.num.messages": 20, "message.timeout.ms": 60000,
            "retry.backoff.ms": 50}
    if protocol == "SASL_SSL":
        conf["ssl.ca.location"] = str(gw.ca)
    conf.update(extra or {})
    errors, delivered = [], []
    p = Producer(conf)
    for v in values:
        p.produce("one", value=v, on_delivery=lambda e, m: errors.append(e) if e else delivered.append(m.offset()))
        p.poll(0)
    assert p.flush(60) == 0
    return delivered, errors


def test_librdkafka_idempotent_producer(gateway):
    values = ["idem-%d" % i for i in range(300)]
    delivered, errors = produce(gateway.bootstrap("SASL_SSL"), "SASL_SSL", values, True, gw=gateway)
    assert errors == [] and sorted(delivered) == list(range(300))
    assert contents(gateway.wait_logs("one", 300)) == sorted(values)
    assert "idempotent producer initialised" in gateway.log_text()


def proxied_gateway(tmp_path, every, max_cuts):
    """A gateway whose SASL_PLAINTEXT listener advertises a cutting proxy in front of it."""
    proxy_port = free_port()
    gw = Gateway(tmp_path, advertised={"SASL_PLAINTEXT": "127.0.0.1:%d" % proxy_port})
    proxy = CuttingProxy(gw.ports["SASL_PLAINTEXT"], every=every, max_cuts=max_cuts, port=proxy_port)
    return gw.start(), proxy


def test_retried_batches_are_stored_once(tmp_path):
    gateway, proxy = proxied_gateway(tmp_path, every=3, max_cuts=5)
    try:
        values = ["retried-%d" % i for i in range(400)]
        delivered, errors = produce("127.0.0.1:%d" % proxy.port, "SASL_PLAINTEXT", values, True)
        assert errors == []
        assert proxy.cuts == 5, "the proxy never cut a Produce response"
        logs = gateway.wait_logs("one", 400)
        time.sleep(0.5)
        logs = gateway.logs("one")
        assert contents(logs) == sorted(values)  # every record exactly once
        assert sorted(l["__offset__"] for l in logs) == list(range(400))
    finally:
        proxy.stop()
        gateway.stop()


def test_without_idempotence_the_same_cuts_duplicate(tmp_path):
    """The control for the test above: the cuts really make clients resend written batches."""
    gateway, proxy = proxied_gateway(tmp_path, every=3, max_cuts=3)
    try:
        values = ["plain-%d" % i for i in range(200)]
        delivered, errors = produce("127.0.0.1:%d" % proxy.port, "SASL_PLAINTEXT", values, False)
        assert errors == [] and proxy.cuts == 3
        time.sleep(0.5)
        stored = contents(gateway.logs("one"))
        assert set(stored) == set(values) and len(stored) > len(values)
    finally:
        proxy.stop()
        gateway.stop()


def test_transactional_producer_is_refused_at_start(gateway):
    conf = {"bootstrap.servers": gateway.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": password("main"),
            "ssl.ca.location": str(gateway.ca), "transactional.id": "tx-1"}
    p = Producer(conf)
    with pytest.raises(Exception) as err:
        p.init_transactions(10)
    assert "TRANSACTIONAL_ID_AUTHORIZATION_FAILED" in str(err.value) or "Transactional" in str(err.value)


def test_sarama_idempotent(gateway):
    t0 = time.time()
    prefix = unique_prefix("sarama-idem")
    proc = sarama(gateway, "2.1.0", "none", prefix, acks=-1, extra=["-idempotent"])
    assert proc.returncode == 0, describe(proc, gateway)
    check_stored(gateway, "pinned", ["%s-%d" % (prefix, i) for i in range(20)], t0)
    assert "idempotent producer initialised" in gateway.log_text()


def test_kafkajs_idempotent(gateway):
    t0 = time.time()
    prefix = unique_prefix("kafkajs-idem")
    proc = kafkajs(gateway, "gzip", -1, prefix, extra=["--idempotent"])
    assert proc.returncode == 0, describe(proc, gateway)
    check_stored(gateway, "pinned", ["%s-%d" % (prefix, i) for i in range(20)], t0)
    assert "idempotent producer initialised" in gateway.log_text()


def idempotent_batch(pid, epoch, first_seq, values):
    from kafka.record.default_records import DefaultRecordBatchBuilder
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=pid,
                                  producer_epoch=epoch, base_sequence=first_seq, batch_size=1 << 20)
    for i, v in enumerate(values):
        b.append(i, timestamp=None, key=None, value=v, headers=[])
    return bytes(b.build())


def init_producer_id(sock):
    import struct
    from wire import read_frame, request
    sock.sendall(request(22, 1, 1, struct.pack(">hi", -1, 60000)))
    throttle, err, pid, epoch = struct.unpack(">ihqh", read_frame(sock)[4:20])
    assert err == 0 and pid > 0 and epoch == 0
    return pid


def test_producer_state_survives_a_crash(tmp_path):
    """A batch written just before a crash and retried after the restart is recognised;
    the producer's next batch follows on without UNKNOWN_PRODUCER_ID."""
    import signal
    from wire import connect, produce_v3_answer
    gw = Gateway(tmp_path).start()
    try:
        s = connect(gw.ports["PLAINTEXT"])
        pid = init_producer_id(s)
        first = idempotent_batch(pid, 0, 0, [b"a0", b"a1", b"a2"])
        second = idempotent_batch(pid, 0, 3, [b"b3", b"b4"])
        assert produce_v3_answer(s, "one", 0, first, 2) == (0, 0)
        assert produce_v3_answer(s, "one", 0, second, 3) == (0, 3)
        assert produce_v3_answer(s, "one", 0, second, 4) == (0, 3)  # a retry: same offset, not stored again
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        gw.start()
        assert "idempotent producer state recovered batches=2" in gw.log_text()
        s = connect(gw.ports["PLAINTEXT"])
        assert produce_v3_answer(s, "one", 0, second, 5) == (0, 3)   # retried after the restart
        assert produce_v3_answer(s, "one", 0, first, 6) == (0, 0)
        third = idempotent_batch(pid, 0, 5, [b"c5"])
        assert produce_v3_answer(s, "one", 0, third, 7) == (0, 5)    # continues in sequence
        gap = idempotent_batch(pid, 0, 9, [b"gap"])
        assert produce_v3_answer(s, "one", 0, gap, 8)[0] == 45       # OUT_OF_ORDER_SEQUENCE_NUMBER
        assert contents(gw.logs("one")) == ["a0", "a1", "a2", "b3", "b4", "c5"]
    finally:
        gw.stop()


def test_librdkafka_idempotent_producer_across_restart(tmp_path):
    gw = Gateway(tmp_path).start()
    try:
        values = ["restart-%d" % i for i in range(2000)]
        conf = {"bootstrap.servers": gw.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
                "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": password("main"),
                "ssl.ca.location": str(gw.ca), "enable.idempotence": True, "linger.ms": 5,
                "batch.num.messages": 50, "message.timeout.ms": 60000, "reconnect.backoff.ms": 50}
        errors, delivered = [], []
        p = Producer(conf)
        for i, v in enumerate(values):
            p.produce("one", value=v, on_delivery=lambda e, m: errors.append(e) if e else delivered.append(m.offset()))
            p.poll(0)
            if i == 1000:
                p.flush(30)
                gw.stop()  # SIGTERM: a graceful restart in the middle of the stream
                gw.start()
        assert p.flush(60) == 0
        assert errors == [] and len(delivered) == len(values)
        assert contents(gw.wait_logs("one", len(values))) == sorted(values)
    finally:
        gw.stop()


def test_one_producers_pipelined_batches_share_fsyncs_and_keep_their_order(gateway):
    """An idempotent producer's next batch is queued before the previous one is stored, so
    batches it pipelines on one partition (as the Java client does, up to 5 in flight)
    share group commits instead of each waiting for the one before it to be fsynced.
    (librdkafka and kafka-python keep one idempotent request per partition in flight, so
    they cannot show it.)"""
    import struct
    from wire import connect, parse_produce_v2_response, produce_v3, read_frame
    s = connect(gateway.ports["PLAINTEXT"])
    pid = init_producer_id(s)
    fsyncs_before = gateway.metric("loggate_storage_fsync_seconds_count")
    requests, per = 60, 5
    frames = b"".join(
        produce_v3("one", [(0, idempotent_batch(pid, 0, r * per, [b"p-%03d-%d" % (r, i) for i in range(per)]))],
                   acks=-1, correlation_id=100 + r)
        for r in range(requests))
    s.sendall(frames)
    answers = []
    for r in range(requests):
        frame = read_frame(s)
        assert struct.unpack(">i", frame[:4])[0] == 100 + r, "answers out of request order"
        _, [(_, _, error, offset)] = parse_produce_v2_response(frame)
        answers.append((error, offset))
    assert answers == [(0, r * per) for r in range(requests)]
    fsyncs = gateway.metric("loggate_storage_fsync_seconds_count") - fsyncs_before
    # One at a time, each acks=all request would have had an fsync of its own.
    assert fsyncs < 0.8 * requests, (fsyncs, requests)
    logs = sorted(gateway.logs("one"), key=lambda l: l["__offset__"])
    assert [l["content"] for l in logs] == ["p-%03d-%d" % (r, i) for r in range(requests) for i in range(per)]
