"""sarama 1.22.1 (Debian; the library in Filebeat and Telegraf) producing through loggate's
SASL_SSL listener with CA verification, for every Kafka version sarama emulates and every
codec it allows there.

What sarama 1.22.1 sends (see tests/clients/go/src/loggatetest/saramaproducer/main.go):
  0.8.2.0  -> SaslHandshake v0 + raw PLAIN token, Produce v0, magic 0
  0.10.0.0 -> SaslHandshake v0 + raw token, Produce v2, magic 1 (lz4 allowed from here)
  0.11.0.0 -> SaslHandshake v0 + raw token, Produce v3, record batch v2
  1.0.0    -> SaslHandshake v1 + SaslAuthenticate, Produce v3
  2.1.0    -> as 1.0.0; zstd is accepted by sarama but still sent in Produce v3
The handshake version is not separately selectable in 1.22.1 (no Net.SASL.Version): it is
v1 exactly when Version >= 1.0.0.
"""

import time

import pytest

from clients import by_value, check_stored, describe, go_binary, run_client, unique_prefix
from gateway import password

CODECS = {
    "0.8.2.0": ["none", "gzip", "snappy"],
    "0.10.0.0": ["none", "gzip", "snappy", "lz4"],
    "0.11.0.0": ["none", "gzip", "snappy", "lz4"],
    "1.0.0.0": ["none", "gzip", "snappy", "lz4"],
    "2.1.0": ["none", "gzip", "snappy", "lz4"],
}
COUNT = 20


def handshake_for(version):
    return "v0" if version.startswith("0.") else "v1"


MATRIX = [pytest.param(v, c, id="%s-%s-handshake_%s" % (v, c, handshake_for(v)))
          for v, codecs in CODECS.items() for c in codecs]


def sarama(gw, version, codec, prefix, topic="pinned", acks=1, count=COUNT, pw=None, extra=()):
    cmd = [go_binary("saramaproducer"), "-brokers", gw.bootstrap("SASL_SSL"), "-tls-ca", gw.ca,
           "-sasl", "-user", "demo", "-password", pw or password("main"),
           "-handshake", handshake_for(version), "-version", version, "-codec", codec,
           "-acks", str(acks), "-topic", topic, "-count", str(count), "-prefix", prefix, *extra]
    return run_client(cmd)


def reported(proc):
    """value -> (partition, offset) from saramaproducer's stdout."""
    out = {}
    for line in proc.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split())
        out[fields["value"]] = (int(fields["partition"]), int(fields["offset"]))
    return out


@pytest.mark.parametrize("version,codec", MATRIX)
def test_sarama_produce(gateway, version, codec):
    t0 = time.time()
    prefix = unique_prefix("sarama-%s-%s" % (version, codec))
    proc = sarama(gateway, version, codec, prefix)
    assert proc.returncode == 0, describe(proc, gateway)
    expected = ["%s-%d" % (prefix, i) for i in range(COUNT)]
    logs = check_stored(gateway, "pinned", expected, t0)
    # "pinned" routes partition p to shard p: sarama's partition/offset must be the stored ones
    stored = by_value(logs)
    for value, (partition, offset) in reported(proc).items():
        assert (stored[value]["__shard__"], stored[value]["__offset__"]) == (partition, offset), value


@pytest.mark.parametrize("version", ["0.8.2.0", "0.11.0.0", "2.1.0"])
@pytest.mark.parametrize("acks", [0, -1])
def test_sarama_acks(gateway, version, acks):
    t0 = time.time()
    prefix = unique_prefix("sarama-acks%d" % acks)
    proc = sarama(gateway, version, "gzip", prefix, topic="app", acks=acks)
    assert proc.returncode == 0, describe(proc, gateway)
    check_stored(gateway, "app", ["%s-%d" % (prefix, i) for i in range(COUNT)], t0)


def test_sarama_key_and_headers(gateway):
    t0 = time.time()
    prefix = unique_prefix("sarama-kh")
    proc = sarama(gateway, "2.1.0", "snappy", prefix, extra=["-key", "user-42", "-header", "trace=abc",
                                                             "-header", "env=test"])
    assert proc.returncode == 0, describe(proc, gateway)
    logs = check_stored(gateway, "pinned", ["%s-%d" % (prefix, i) for i in range(COUNT)], t0,
                        key="user-42", headers=[["trace", "abc"], ["env", "test"]])
    # one key: sarama's hash partitioner puts every message on one partition
    assert len({l["__shard__"] for l in logs}) == 1


def test_sarama_zstd_in_produce_v3_is_stored(gateway):
    """sarama 1.22.1 sends zstd record batches inside Produce v3 (it never sends v7). A Kafka
    broker refuses them (UNSUPPORTED_COMPRESSION_TYPE) for the sake of old consumers, which
    loggate does not have: it stores them, at the offsets sarama was told."""
    t0 = time.time()
    prefix = unique_prefix("sarama-zstd")
    proc = sarama(gateway, "2.1.0", "zstd", prefix, count=3)
    assert proc.returncode == 0, describe(proc, gateway)
    logs = check_stored(gateway, "pinned", ["%s-%d" % (prefix, i) for i in range(3)], t0)
    stored = by_value(logs)
    for value, (partition, offset) in reported(proc).items():
        assert (stored[value]["__shard__"], stored[value]["__offset__"]) == (partition, offset), value


@pytest.mark.parametrize("version", ["0.10.0.0", "1.0.0.0"])
def test_sarama_bad_password(gateway, version):
    """Flow A (v0) sees the connection closed; flow B (v1) gets SASL_AUTHENTICATION_FAILED."""
    proc = sarama(gateway, version, "none", unique_prefix("sarama-badpw"), count=1,
                  pw="LGTESTMAIN#wrong-secret")
    assert proc.returncode != 0, describe(proc, gateway)
    if handshake_for(version) == "v1":
        assert "SASL Authentication failed" in proc.stderr, describe(proc, gateway)
    else:  # the server closes the connection instead of answering the raw token
        assert "run out of available brokers" in proc.stderr, describe(proc, gateway)
    assert gateway.logs("pinned") == []
    assert gateway.alive()
