"""Idempotent producers under hardening: sequence state is the client's (per topic name
as sent and partition), and a write that outlives the request's deadline is still
recorded, so its retry is not stored twice."""

import json

from confluent_kafka import Producer

from gateway import Gateway, password


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
