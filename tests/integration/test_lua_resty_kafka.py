"""lua-resty-kafka 0.07 (Debian lua-nginx-kafka; the client inside APISIX's kafka-logger)
under nginx + libnginx-mod-http-lua, producing to loggate's PLAINTEXT listener (it has no
TLS and no SASL). Each test starts its own nginx from tests/clients/lua/nginx.conf.template
and stops it. lua-resty-kafka sends Metadata v0 and Produce v0/v1 (magic 0) or v2 (magic 1),
no codecs; its sync producer sends one request per message."""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from clients import LUA_DIR, Nginx, check_stored, unique_prefix


class RestyKafka(Nginx):
    """nginx from tests/clients/lua/nginx.conf.template, producing to `kafka_port`."""

    def __init__(self, workdir, kafka_port):
        super().__init__(workdir, LUA_DIR / "nginx.conf.template",
                         {"@KAFKA_HOST@": "127.0.0.1", "@KAFKA_PORT@": kafka_port, "@LUA_DIR@": LUA_DIR})

    def produce(self, **params):
        """GET /produce; returns (http status, decoded JSON body)."""
        url = "http://127.0.0.1:%d/produce?%s" % (self.port, urllib.parse.urlencode(params))
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


@pytest.fixture
def nginx(gateway, tmp_path):
    n = RestyKafka(tmp_path / "nginx", gateway.ports["PLAINTEXT"]).start()
    yield n
    n.stop()


def details(nginx, gateway):
    return "--- nginx error.log (tail)\n%s\n--- loggate.stderr (tail)\n%s" % (
        "\n".join(nginx.log_text().splitlines()[-30:]), "\n".join(gateway.log_text().splitlines()[-30:]))


COUNT = 10


@pytest.mark.parametrize("api_version", [0, 1, 2])
def test_lua_resty_kafka_produce(gateway, nginx, api_version):
    t0 = time.time()
    prefix = unique_prefix("lua-v%d" % api_version)
    status, body = nginx.produce(topic="pinned", count=COUNT, prefix=prefix, api_version=api_version)
    assert status == 200 and body["ok"], "%s %s\n%s" % (status, body, details(nginx, gateway))
    expected = ["%s-%d" % (prefix, i) for i in range(COUNT)]
    # lua-resty-kafka 0.07 writes a missing key as an empty key (length 0, not -1/null)
    logs = check_stored(gateway, "pinned", expected, t0, key="")
    # "pinned": partition p is shard p. A sync send returns the base offset + 1 (the
    # number of messages in its request): the stored offset is one less.
    stored = {l["content"]: (l["__shard__"], l["__offset__"]) for l in logs}
    for r in body["results"]:
        assert stored[r["value"]] == (r["partition"], r["offset"] - 1), (r, stored[r["value"]])


def test_lua_resty_kafka_key_acks_all(gateway, nginx):
    t0 = time.time()
    prefix = unique_prefix("lua-key")
    status, body = nginx.produce(topic="app", count=COUNT, prefix=prefix, key="route-7", acks=-1, api_version=2)
    assert status == 200 and body["ok"], "%s %s\n%s" % (status, body, details(nginx, gateway))
    check_stored(gateway, "app", ["%s-%d" % (prefix, i) for i in range(COUNT)], t0, key="route-7")


def test_lua_resty_kafka_unknown_topic(gateway, nginx):
    """lua-resty-kafka surfaces the refusal as an error (not a raise) and nothing is stored."""
    status, body = nginx.produce(topic="nosuchstore", count=1, prefix=unique_prefix("lua-unknown"))
    assert status == 500 and not body["ok"], body
    assert not body["error"].startswith("raised"), "%s\n%s" % (body, details(nginx, gateway))
    assert gateway.alive()
