"""kafkajs 2.2.4 (npm) producing through loggate's SASL_SSL listener with CA verification:
ApiVersions, SaslHandshake v1 + SaslAuthenticate, Produce v3+ with record batches v2, every
codec (snappy via kafkajs-snappy, lz4 via kafkajs-lz4, zstd via a zstd-codec codec, see
tests/clients/node/produce.js), acks 1 and -1."""

import json
import time

import pytest

from clients import by_value, check_stored, describe, node_script, run_client, unique_prefix
from gateway import password

COUNT = 20


def kafkajs(gw, codec, acks, prefix, topic="pinned", count=COUNT, pw=None, extra=()):
    cmd = ["node", node_script(), "--brokers", gw.bootstrap("SASL_SSL"), "--ca", gw.ca,
           "--user", "demo", "--password", pw or password("main"), "--topic", topic,
           "--codec", codec, "--acks=%d" % acks, "--count", str(count), "--prefix", prefix, *extra]
    return run_client(cmd)


def results(proc):
    return [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]


@pytest.mark.parametrize("acks", [1, -1])
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kafkajs_produce(gateway, codec, acks):
    t0 = time.time()
    prefix = unique_prefix("kafkajs-%s-%s" % (codec, acks))
    proc = kafkajs(gateway, codec, acks, prefix)
    assert proc.returncode == 0, describe(proc, gateway)
    expected = ["%s-%d" % (prefix, i) for i in range(COUNT)]
    logs = check_stored(gateway, "pinned", expected, t0)
    # "pinned": partition p is shard p; kafkajs reports each partition's base offset,
    # and every shard holds only this one batch, so its offsets start at that base.
    res = results(proc)
    assert res and all(r["errorCode"] == 0 for r in res), proc.stdout
    per_shard = {}
    for l in logs:
        per_shard.setdefault(l["__shard__"], []).append(l["__offset__"])
    assert {r["partition"]: int(r["baseOffset"]) for r in res} == {s: min(o) for s, o in per_shard.items()}


def test_kafkajs_key_headers_batches(gateway):
    """Several send() calls with a key and headers into a round-robin logstore."""
    t0 = time.time()
    prefix = unique_prefix("kafkajs-kh")
    proc = kafkajs(gateway, "gzip", -1, prefix, topic="app", extra=["--key", "k-1", "--header", "a=1",
                                                                  "--header", "b=two", "--batch", "5"])
    assert proc.returncode == 0, describe(proc, gateway)
    logs = check_stored(gateway, "app", ["%s-%d" % (prefix, i) for i in range(COUNT)], t0,
                        key="k-1", headers=[["a", "1"], ["b", "two"]])
    # 4 batches round-robin over 2 shards
    assert {l["__shard__"] for l in logs} == {0, 1}
    # kafkajs sets record timestamps: event time is the client's clock, not far from arrival
    for l in by_value(logs).values():
        assert abs(l["__time_ms__"] - l["__arrival_time_ms__"]) < 30_000, l


def test_kafkajs_bad_password(gateway):
    proc = kafkajs(gateway, "none", 1, unique_prefix("kafkajs-badpw"), count=1, pw="LGTESTMAIN#nope")
    assert proc.returncode != 0, describe(proc, gateway)
    assert "SASL" in proc.stderr or "uthentication" in proc.stderr, describe(proc, gateway)
    assert gateway.logs("pinned") == []
