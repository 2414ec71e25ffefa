"""Issue 11, defect 8: a record larger than the storage's log limit (`[storage] max_log_bytes`)
gets MESSAGE_TOO_LARGE, which clients do not retry, instead of a retriable storage error; with
the limit raised the record is stored whole."""

import time

from confluent_kafka import KafkaError, Producer

from gateway import Gateway

BIG = 1536 * 1024  # a 1.5 MiB record value
TOPIC = "one"


def producer(gw, **extra):
    conf = {"bootstrap.servers": gw.bootstrap("PLAINTEXT"), "acks": "all", "linger.ms": 0,
            "enable.idempotence": False,
            # Let the client send what the gateway must judge (librdkafka's default is 1 MB).
            "message.max.bytes": 8 * 1024 * 1024, "batch.size": 8 * 1024 * 1024,
            "message.timeout.ms": 30_000, "retry.backoff.ms": 100}
    conf.update(extra)
    return Producer(conf)


def deliver(p, value):
    """Produces one record and waits for its delivery report: (error or None, seconds, offset)."""
    result = []
    start = time.monotonic()
    p.produce(TOPIC, value=value, on_delivery=lambda err, msg: result.append((err, msg.offset())))
    assert p.flush(45) == 0, "delivery report never came"
    err, offset = result[0]
    return err, time.monotonic() - start, offset


def test_oversized_record_gets_a_non_retriable_message_too_large(tmp_path):
    gw = Gateway(tmp_path).start()
    try:
        p = producer(gw)
        err, took, _ = deliver(p, b"x" * BIG)
        assert err is not None, "a 1.5 MiB record was stored over the default 1 MiB limit"
        assert err.code() == KafkaError.MSG_SIZE_TOO_LARGE, "got %s, not MSG_SIZE_TOO_LARGE" % err.name()
        assert not err.retriable(), err
        # Answered at once, not retried until message.timeout.ms ran out.
        assert took < 10, "the oversized record took %.1f s to fail" % took
        assert "KAFKA_STORAGE_ERROR" not in gw.log_text()
        # The next normal record is stored.
        err, _, offset = deliver(p, b"small-after-big")
        assert err is None, err
        assert [l["content"] for l in gw.logs(TOPIC)] == ["small-after-big"]
        assert offset == 0
    finally:
        gw.stop()


def test_raised_max_log_bytes_stores_the_big_record_whole(tmp_path):
    gw = Gateway(tmp_path, storage={"max_log_bytes": 4 * 1024 * 1024}).start()
    try:
        p = producer(gw)
        value = bytes(b"abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(BIG))
        err, _, offset = deliver(p, value)
        assert err is None, err
        err, _, _ = deliver(p, b"small-after-big")
        assert err is None, err
        logs = gw.logs(TOPIC)
        assert [len(l["content"]) for l in logs] == [BIG, len(b"small-after-big")]
        assert logs[0]["content"].encode() == value
        assert logs[0]["__offset__"] == offset == 0
    finally:
        gw.stop()


def test_max_log_bytes_out_of_range_is_refused_at_start(tmp_path):
    gw = Gateway(tmp_path, storage={"max_log_bytes": 2 * 1024 * 1024 * 1024})
    try:
        gw.start()
        raise AssertionError("started with max_log_bytes above the codec's 1 GiB")
    except RuntimeError as e:
        assert "max_log_bytes must be 1024..=1073741824" in str(e), e
    finally:
        gw.stop()
