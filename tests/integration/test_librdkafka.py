"""librdkafka clients (confluent-kafka with its bundled librdkafka, and Debian's kcat on
the system librdkafka 2.0.2) writing through every listener, codec, acks level and the
legacy message formats forced by api.version.request=false."""

import subprocess
import uuid

import pytest
from confluent_kafka import KafkaException, Producer

from gateway import contents, password


def sasl_ssl(gw, key="main", username="demo"):
    return {
        "bootstrap.servers": gw.bootstrap("SASL_SSL"),
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": username,
        "sasl.password": password(key),
        "ssl.ca.location": str(gw.ca),
    }


def produce(conf, topic, values, key=None, headers=None, partition=None, timeout=30):
    """Produces values, returns (delivered [(partition, offset)], errors [str])."""
    delivered, errors = [], []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))

    p = Producer(dict({"message.timeout.ms": 15000, "linger.ms": 5}, **conf))
    for v in values:
        kwargs = {"value": v, "on_delivery": report}
        if key is not None:
            kwargs["key"] = key
        if headers is not None:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        p.produce(topic, **kwargs)
    remaining = p.flush(timeout)
    assert remaining == 0, "messages still queued after flush"
    return delivered, errors


def unique(n, tag=""):
    run = uuid.uuid4().hex[:8]
    return ["%s%s-%d" % (tag, run, i) for i in range(n)]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_every_codec_and_acks_over_sasl_ssl(gateway, codec, acks):
    values = unique(50, codec)
    conf = dict(sasl_ssl(gateway), **{"compression.codec": codec, "acks": acks})
    delivered, errors = produce(conf, "app", values)
    assert errors == []
    logs = gateway.wait_logs("app", len(values))
    assert contents(logs) == sorted(values)
    for log in logs:
        assert log["__project__"] == "demo" and log["__logstore__"] == "app"
        assert log["__source__"].startswith("127.0.0.1:")
        assert abs(log["__arrival_time_ms__"] - log["__time_ms__"]) < 60_000
    if acks != "0":
        assert len(delivered) == len(values)
        # Acknowledged offsets are the stored ones.
        stored = {(l["__shard__"], l["__offset__"]) for l in logs}
        assert len(stored) == len(values)


def test_keys_headers_and_timestamps_are_stored(gateway):
    conf = sasl_ssl(gateway)
    delivered, errors = [], []
    p = Producer(conf)
    p.produce("app", value=b"with-meta", key=b"k1", headers=[("h1", b"v1"), ("h1", b"v2"), ("empty", None)],
              timestamp=1_700_000_000_123,
              on_delivery=lambda e, m: (errors if e else delivered).append(e or m.offset()))
    p.produce("app", value=b"\xff\xfebinary", on_delivery=lambda e, m: (errors if e else delivered).append(e or m.offset()))
    assert p.flush(30) == 0 and errors == []
    logs = {l.get("content") if isinstance(l.get("content"), str) else "bin": l for l in gateway.wait_logs("app", 2)}
    meta = logs["with-meta"]
    assert meta["__key__"] == "k1"
    assert meta["__headers__"] == [["h1", "v1"], ["h1", "v2"], ["empty", None]]
    assert meta["__time_ms__"] == 1_700_000_000_123
    assert logs["bin"]["content"] == {"base64": "//5iaW5hcnk="}


@pytest.mark.parametrize("fallback,codec", [
    ("0.8.2", "none"), ("0.8.2", "gzip"), ("0.8.2", "snappy"), ("0.8.2", "lz4"),
    ("0.9.0", "none"), ("0.9.0", "gzip"), ("0.9.0", "snappy"), ("0.9.0", "lz4"),
])
def test_legacy_message_format_v0_without_api_versions(gateway, fallback, codec):
    # Below 0.10 librdkafka cannot do SASL: use the SSL listener (bound to project demo).
    conf = {
        "bootstrap.servers": gateway.bootstrap("SSL"),
        "security.protocol": "SSL",
        "ssl.ca.location": str(gateway.ca),
        "api.version.request": False,
        "broker.version.fallback": fallback,
        "compression.codec": codec,
    }
    values = unique(30, codec)
    delivered, errors = produce(conf, "app", values)
    assert errors == [] and len(delivered) == len(values)
    assert contents(gateway.wait_logs("app", len(values))) == sorted(values)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4"])
def test_message_format_v1_with_sasl_handshake_v0(gateway, codec):
    # broker.version.fallback=0.10.0 without ApiVersions: Produce v2, magic 1, SaslHandshake v0.
    conf = dict(sasl_ssl(gateway), **{"api.version.request": False, "broker.version.fallback": "0.10.0",
                                       "compression.codec": codec})
    values = unique(30, codec)
    delivered, errors = produce(conf, "app", values)
    assert errors == [] and len(delivered) == len(values)
    logs = gateway.wait_logs("app", len(values))
    assert contents(logs) == sorted(values)
    # magic 1 carries producer timestamps
    assert all(abs(l["__time_ms__"] - l["__arrival_time_ms__"]) < 60_000 for l in logs)


def test_partition_routing_keeps_partitions_and_round_robin_spreads(gateway):
    conf = sasl_ssl(gateway)
    for part in range(3):
        delivered, errors = produce(conf, "pinned", ["p%d-%d" % (part, i) for i in range(5)], partition=part)
        assert errors == []
    logs = gateway.wait_logs("pinned", 15)
    assert sorted((l["__shard__"], l["content"]) for l in logs) == sorted(
        (p, "p%d-%d" % (p, i)) for p in range(3) for i in range(5))
    # round robin: a fixed partition still spreads over both shards of "app"
    values = unique(40)
    for v in values:
        delivered, errors = produce(conf, "app", [v], partition=0)
        assert errors == []
    logs = gateway.wait_logs("app", 40)
    assert contents(logs) == sorted(values)
    shards = [l["__shard__"] for l in logs]
    assert shards.count(0) == 20 and shards.count(1) == 20
    for shard in (0, 1):
        offsets = sorted(l["__offset__"] for l in logs if l["__shard__"] == shard)
        assert offsets == list(range(20))


def test_json_topic_expands_objects_and_arrays(gateway):
    conf = sasl_ssl(gateway)
    values = [b'{"level":"info","msg":"started","n":3,"nested":{"a":[1,2]}}',
              b'[{"host":"a","v":1},{"host":"b","v":2}]',
              b'plain text', b'42']
    delivered, errors = produce(conf, "app.json", values, partition=0)
    assert errors == []
    logs = gateway.wait_logs("app", 5)
    fields = sorted(sorted((k, v) for k, v in l.items() if not k.startswith("__")) for l in logs)
    assert fields == sorted([
        [("level", "info"), ("msg", "started"), ("n", "3"), ("nested", '{"a":[1,2]}')],
        [("host", "a"), ("v", "1")],
        [("host", "b"), ("v", "2")],
        [("content", "plain text")],
        [("content", "42")],
    ])


def kcat(gw, args, input_bytes):
    cmd = ["kcat", "-b", gw.bootstrap("SASL_SSL"), "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanism=PLAIN",
           "-X", "sasl.username=demo", "-X", "sasl.password=" + password("main"), "-X", "ssl.ca.location=%s" % gw.ca] + args
    return subprocess.run(cmd, input=input_bytes, capture_output=True, timeout=60)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_on_system_librdkafka(gateway, codec):
    values = unique(20, codec)
    run = kcat(gateway, ["-P", "-t", "app", "-z", codec, "-X", "acks=all"], ("\n".join(values) + "\n").encode())
    assert run.returncode == 0, run.stderr.decode()
    assert contents(gateway.wait_logs("app", len(values))) == sorted(values)


def test_kcat_metadata_lists_logstores_and_shards(gateway):
    run = kcat(gateway, ["-L", "-J"], b"")
    assert run.returncode == 0, run.stderr.decode()
    import json
    meta = json.loads(run.stdout)
    topics = {t["topic"]: len(t["partitions"]) for t in meta["topics"]}
    assert topics == {"app": 2, "pinned": 3, "one": 1, "other": 1}
    assert [b["name"] for b in meta["brokers"]] == [gateway.bootstrap("SASL_SSL")]


def test_wrong_secret_is_refused(gateway):
    conf = dict(sasl_ssl(gateway), **{"sasl.password": "LGTESTMAIN#NotTheSecret123"})
    errors = []
    p = Producer(dict(conf, **{"message.timeout.ms": 5000, "error_cb": lambda e: errors.append(e)}))
    p.produce("app", value=b"should-not-arrive", on_delivery=lambda e, m: errors.append(e))
    p.flush(10)
    assert any("Authentication failed" in str(e) or "_AUTHENTICATION" in str(e) for e in errors), errors
    assert gateway.logs("app") == []
    log = gateway.log_text()
    assert "SASL authentication failed" in log and "NotTheSecret123" not in log


def test_key_without_permission_gets_topic_authorization_failed(gateway):
    conf = sasl_ssl(gateway, key="limited")
    delivered, errors = produce(conf, "other", [b"nope"], timeout=20)
    assert [e.code() for e in errors] == [29] or any("TOPIC_AUTHORIZATION" in e.name() for e in errors), errors
    # the same key can still write where it is allowed
    delivered, errors = produce(conf, "app", [b"yes"])
    assert errors == []
    assert contents(gateway.wait_logs("app", 1)) == ["yes"]
    assert gateway.logs("other") == []


def test_unknown_logstore_gets_unknown_topic(gateway):
    conf = dict(sasl_ssl(gateway), **{"message.timeout.ms": 3000, "topic.metadata.propagation.max.ms": 1000})
    delivered, errors = produce(conf, "no_such_store", [b"lost"], timeout=15)
    assert delivered == [] and len(errors) == 1
    assert "UNKNOWN_TOPIC" in errors[0].name(), errors


def test_oversize_record_gets_message_too_large(tmp_path):
    from gateway import Gateway
    gw = Gateway(tmp_path, limits={"max_batch_bytes": 65536}).start()
    try:
        conf = dict(sasl_ssl(gw), **{"message.max.bytes": 1_000_000})
        delivered, errors = produce(conf, "app", [b"x" * 200_000], timeout=20)
        assert delivered == [] and [e.name() for e in errors] == ["MSG_SIZE_TOO_LARGE"], errors
        delivered, errors = produce(conf, "app", [b"small"])
        assert errors == [] and contents(gw.wait_logs("app", 1)) == ["small"]
    finally:
        gw.stop()
