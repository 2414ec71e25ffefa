"""Idempotent producers under hardening: sequence state is the client's (per topic name
as sent and partition), and a write that outlives the request's deadline is still
recorded, so its retry is not stored twice."""

import json
import os
import subprocess
import time

import pytest
from confluent_kafka import Producer

from gateway import Gateway, password
from test_idempotence import idempotent_batch, init_producer_id
from wire import connect, produce_v3_answer


def idempotent_producer(gw, **extra):
    conf = {"bootstrap.servers": gw.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": password("main"),
            "ssl.ca.location": str(gw.ca), "enable.idempotence": True, "linger.ms": 0,
            "message.timeout.ms": 60000, "reconnect.backoff.ms": 50, "retry.backoff.ms": 50}
    conf.update(extra)
    return Producer(conf)


def produce_one_at_a_time(p, round_, count):
    """`count` records to `one` and `count` to `one.json`, alternating, each flushed alone
    (so every batch holds one record at partition 0); returns the delivery reports."""
    reports = []
    for i in range(count):
        for topic, value in (("one", "raw-%d-%d" % (round_, i)), ("one.json", json.dumps({"n": "%d-%d" % (round_, i)}))):
            p.produce(topic, value=value, partition=0,
                      on_delivery=lambda e, m: reports.append((m.topic(), e, m.offset())))
            assert p.flush(30) == 0
    return reports


def stored_split(gw):
    logs = gw.logs("one")
    raw = sorted(l["content"] for l in logs if "content" in l)
    parsed = sorted(l["n"] for l in logs if "n" in l)
    return raw, parsed, len(logs)


def test_same_logstore_through_raw_and_json_topics_keeps_every_acknowledged_record(tmp_path):
    """One librdkafka idempotent producer writes `one` and `one.json` (the same logstore,
    partition 0 each): each topic has its own sequence numbers, so every acknowledged
    record is stored exactly once, also after the gateway restarts and rebuilds producer
    state from what it stored."""
    gw = Gateway(tmp_path).start()
    try:
        p = idempotent_producer(gw)
        first = produce_one_at_a_time(p, 0, 20)
        assert [e for _, e, _ in first if e] == []
        assert len(first) == 40
        raw, parsed, total = stored_split(gw)
        assert raw == sorted("raw-0-%d" % i for i in range(20))
        assert parsed == sorted("0-%d" % i for i in range(20))
        assert total == 40
        # Offsets given to the client are the stored ones: all distinct.
        assert len({o for _, _, o in first}) == 40

        gw.stop()
        gw.start()
        assert "idempotent producer state recovered batches=40" in gw.log_text()
        second = produce_one_at_a_time(p, 1, 20)
        assert [e for _, e, _ in second if e] == []
        raw, parsed, total = stored_split(gw)
        assert raw == sorted("raw-%d-%d" % (r, i) for r in range(2) for i in range(20))
        assert parsed == sorted("%d-%d" % (r, i) for r in range(2) for i in range(20))
        assert total == 80
    finally:
        gw.stop()


@pytest.fixture
def freezable_disk(tmp_path):
    """A small ext4 filesystem on a loop device, which `fsfreeze` can stall: every write
    to it blocks until it is thawed, like a disk that stops answering."""
    if os.geteuid() != 0:
        pytest.skip("the stalled-disk test mounts a loop device, which needs root (CI runs as root)")
    image, mnt = tmp_path / "disk.img", tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["fsfreeze", "-u", str(mnt)], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_write_that_outlives_the_deadline_is_recorded_and_its_retry_is_not_stored_twice(tmp_path, freezable_disk):
    """The disk stalls while an idempotent batch is written: the client is answered
    REQUEST_TIMED_OUT, the write lands once the disk is back, and the client's retry of
    the same batch gets the offset it was stored at instead of being stored again."""
    gw = Gateway(tmp_path, data=freezable_disk / "data").start()
    try:
        s = connect(gw.ports["PLAINTEXT"])
        pid = init_producer_id(s)
        assert produce_v3_answer(s, "one", 0, idempotent_batch(pid, 0, 0, [b"a0"]), 2, timeout_ms=1000) == (0, 0)
        retried = idempotent_batch(pid, 0, 1, [b"b1", b"b2"])
        subprocess.run(["fsfreeze", "-f", str(freezable_disk)], check=True)
        try:
            started = time.monotonic()
            error, _ = produce_v3_answer(s, "one", 0, retried, 3, timeout_ms=1000)
            assert error == 7, error  # REQUEST_TIMED_OUT
            assert time.monotonic() - started < 5
        finally:
            subprocess.run(["fsfreeze", "-u", str(freezable_disk)], check=True)
        assert produce_v3_answer(s, "one", 0, retried, 4, timeout_ms=10000) == (0, 1)
        assert produce_v3_answer(s, "one", 0, idempotent_batch(pid, 0, 3, [b"c3"]), 5, timeout_ms=10000) == (0, 3)
        assert sorted(l["content"] for l in gw.logs("one")) == ["a0", "b1", "b2", "c3"]
    finally:
        gw.stop()
