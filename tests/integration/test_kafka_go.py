"""segmentio/kafka-go 0.2.1 (Debian) producing through loggate's PLAINTEXT and SSL
listeners (kafka-go 0.2.1 has no SASL; both listeners are bound to project demo).
kafka-go sends Metadata v0 and Produce v2 with message format v1 (magic 1), codecs
gzip/snappy/lz4, one Produce request per partition batch."""

import time

import pytest

from clients import check_stored, describe, go_binary, run_client, unique_prefix

COUNT = 20


def kafkago(gw, proto, codec, prefix, topic="app", acks=1, count=COUNT, extra=()):
    cmd = [go_binary("kafkagoproducer"), "-brokers", gw.bootstrap(proto), "-topic", topic,
           "-codec", codec, "-acks", str(acks), "-count", str(count), "-prefix", prefix, *extra]
    if proto == "SSL":
        cmd += ["-tls-ca", gw.ca]
    return run_client(cmd)


@pytest.mark.parametrize("proto", ["PLAINTEXT", "SSL"])
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4"])
def test_kafka_go_produce(gateway, proto, codec):
    t0 = time.time()
    prefix = unique_prefix("kafkago-%s-%s" % (proto, codec))
    proc = kafkago(gateway, proto, codec, prefix)
    assert proc.returncode == 0, describe(proc, gateway)
    check_stored(gateway, "app", ["%s-%d" % (prefix, i) for i in range(COUNT)], t0)


@pytest.mark.parametrize("proto", ["PLAINTEXT", "SSL"])
def test_kafka_go_acks_all_key_pinned(gateway, proto):
    """acks=-1, a key, and the partition-routed logstore: kafka-go's writer still spreads
    messages round-robin over partitions, so each lands in the shard of its partition."""
    t0 = time.time()
    prefix = unique_prefix("kafkago-pinned")
    proc = kafkago(gateway, proto, "gzip", prefix, topic="pinned", acks=-1, extra=["-key", "k1", "-batch", "5"])
    assert proc.returncode == 0, describe(proc, gateway)
    logs = check_stored(gateway, "pinned", ["%s-%d" % (prefix, i) for i in range(COUNT)], t0, key="k1")
    assert {l["__shard__"] for l in logs} == {0, 1, 2}


def test_kafka_go_unknown_topic(gateway):
    proc = kafkago(gateway, "PLAINTEXT", "none", unique_prefix("kafkago-unknown"), topic="nosuchstore", count=1,
                   extra=["-timeout", "5s"])
    assert proc.returncode != 0, describe(proc, gateway)
    assert gateway.alive()
