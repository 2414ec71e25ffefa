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
