"""kafka-python (3.x) pinned to every protocol era from Kafka 0.8.0 to 2.1, and probing
when unset. 0.8/0.9 clients cannot do SASL/PLAIN, so they use the SSL listener."""

import uuid

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from gateway import contents, password

# api_version -> codecs kafka-python allows at that version
ERAS = {
    (0, 8, 0): ["gzip", "snappy"],
    (0, 8, 2): ["gzip", "snappy", "lz4"],
    (0, 9): ["gzip", "snappy", "lz4"],
    (0, 10, 0): ["gzip", "snappy", "lz4"],
    (0, 10, 1): ["gzip", "snappy", "lz4"],
    (0, 11): ["gzip", "snappy", "lz4"],
    (1, 0): ["gzip", "snappy", "lz4"],
    (2, 1): ["gzip", "snappy", "lz4", "zstd"],
    None: ["gzip", "snappy", "lz4", "zstd"],
}
CASES = [(v, c) for v, codecs in ERAS.items() for c in [None] + codecs]


def producer(gw, api_version, codec, acks=1):
    conf = dict(api_version=api_version, compression_type=codec, acks=acks, enable_idempotence=False,
                ssl_cafile=str(gw.ca), request_timeout_ms=10000, max_block_ms=15000)
    if api_version is not None and api_version < (0, 10):
        conf.update(bootstrap_servers=gw.bootstrap("SSL"), security_protocol="SSL")
    else:
        conf.update(bootstrap_servers=gw.bootstrap("SASL_SSL"), security_protocol="SASL_SSL",
                    sasl_mechanism="PLAIN", sasl_plain_username="demo", sasl_plain_password=password("main"))
    return KafkaProducer(**conf)


@pytest.mark.parametrize("api_version,codec", CASES, ids=lambda x: str(x))
def test_each_era_and_codec(gateway, api_version, codec):
    run = uuid.uuid4().hex[:8]
    values = ["%s-%s-%d" % (run, codec, i) for i in range(25)]
    p = producer(gateway, api_version, codec)
    try:
        futures = [p.send("app", value=v.encode(), key=b"k" if i % 2 else None) for i, v in enumerate(values)]
        p.flush(30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        p.close(5)
    assert all(m.offset >= 0 for m in metas)
    logs = gateway.wait_logs("app", len(values))
    assert contents(logs) == sorted(values)
    keyed = {l["content"]: l.get("__key__") for l in logs}
    assert [keyed[v] for v in values] == [("k" if i % 2 else None) for i in range(len(values))]
    if api_version is None or api_version >= (0, 10):
        # magic 1 and 2 carry the producer's timestamp
        assert all(abs(l["__time_ms__"] - l["__arrival_time_ms__"]) < 60_000 for l in logs)


def test_acks_all_and_zero(gateway):
    for acks, tag in (("all", "all"), (0, "zero")):
        p = producer(gateway, (2, 1), "gzip", acks=acks)
        try:
            for i in range(10):
                p.send("one", value=("%s-%d" % (tag, i)).encode())
            p.flush(30)
        finally:
            p.close(5)
    logs = gateway.wait_logs("one", 20)
    assert contents(logs) == sorted(["all-%d" % i for i in range(10)] + ["zero-%d" % i for i in range(10)])
    assert sorted(l["__offset__"] for l in logs) == list(range(20))


def test_wrong_secret_raises(gateway):
    p = None
    with pytest.raises(KafkaError):
        p = KafkaProducer(bootstrap_servers=gateway.bootstrap("SASL_SSL"), security_protocol="SASL_SSL",
                          sasl_mechanism="PLAIN", sasl_plain_username="demo", sasl_plain_password="LGTESTMAIN#bad",
                          ssl_cafile=str(gateway.ca), api_version=(2, 1), max_block_ms=5000, enable_idempotence=False)
        p.send("app", b"never").get(timeout=10)
    if p:
        p.close(1)
    assert gateway.logs("app") == []


def test_default_idempotent_producer(gateway):
    """kafka-python 3.x turns idempotence on by default; with InitProducerId served it works."""
    p = KafkaProducer(bootstrap_servers=gateway.bootstrap("SASL_SSL"), security_protocol="SASL_SSL",
                      sasl_mechanism="PLAIN", sasl_plain_username="demo", sasl_plain_password=password("main"),
                      ssl_cafile=str(gateway.ca), max_block_ms=15000)
    assert p.config["enable_idempotence"] is True
    try:
        futures = [p.send("app", value=("idem-py-%d" % i).encode()) for i in range(50)]
        p.flush(30)
        assert all(f.get(timeout=30).offset >= 0 for f in futures)
    finally:
        p.close(5)
    assert contents(gateway.wait_logs("app", 50)) == sorted("idem-py-%d" % i for i in range(50))
    assert "idempotent producer initialised" in gateway.log_text()


def test_the_record_too_large_to_store_is_named_and_the_rest_stored(tmp_path):
    # Produce v8+ answers say which record failed and why (record_errors, error_message):
    # kafka-python splits the batch, stores the others, and fails only that record's future
    # with the gateway's reason.
    from kafka.errors import MessageSizeTooLargeError

    from gateway import Gateway
    gw = Gateway(tmp_path, storage={"max_log_bytes": 1024}).start()
    try:
        p = KafkaProducer(bootstrap_servers=gw.bootstrap("PLAINTEXT"), linger_ms=300, enable_idempotence=False,
                          request_timeout_ms=10000, max_block_ms=15000)
        try:
            futures = [p.send("one", value=v) for v in (b"fits-before", b"x" * 3000, b"fits-after")]
            outcomes = []
            for f in futures:
                try:
                    outcomes.append(f.get(timeout=30).offset)
                except KafkaError as e:
                    outcomes.append(e)
        finally:
            p.close(5)
        assert isinstance(outcomes[1], MessageSizeTooLargeError), outcomes
        assert "too large to store" in str(outcomes[1]) and "max_log_bytes" in str(outcomes[1]), outcomes[1]
        assert outcomes[0] == 0 and outcomes[2] == 1, outcomes
        assert [l["content"] for l in gw.logs("one")] == ["fits-before", "fits-after"]
    finally:
        gw.stop()
