"""`loggate check-config FILE`, `${VAR}` references and `LOGGATE_*` overrides: what the
check prints and refuses, and that the server runs with what the environment says."""

import os
import subprocess

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from gateway import BIN, KEYS, Gateway, contents, password, secret_hash


def check(path, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOGGATE_")}
    return subprocess.run([str(BIN), "check-config", str(path)], capture_output=True, text=True, timeout=60,
                          env={**base, **env})


def test_check_prints_what_it_would_serve_and_never_a_secret(tmp_path):
    gw = Gateway(tmp_path, advertised={"SASL_SSL": "gw1.example.com:10012"},
                 logstore_options={"app": {"retention_hours": 168, "retention_bytes": 1000000}})
    text = gw.config.read_text()
    gw.config.write_text(text.replace('name = "ops"\n', 'name = "ops"\nquota_bytes_per_sec = 1048576\n', 1))
    hashes = [line for line in gw.config.read_text().splitlines() if line.startswith("secret_hash")]
    out = check(gw.config)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("configuration %s: valid\n" % gw.config)
    for proto, port in gw.ports.items():
        adv = "gw1.example.com:10012" if proto == "SASL_SSL" else "127.0.0.1:%d" % port
        assert "  %s bind 127.0.0.1:%d advertised %s (" % (proto, port, adv) in text
    assert "PLAINTEXT bind 127.0.0.1:%d advertised 127.0.0.1:%d (no authentication, writes to project demo)" % (
        gw.ports["PLAINTEXT"], gw.ports["PLAINTEXT"]) in text
    assert ("    logstore app: 2 shards, routing round_robin, retention 168 hours or 1000000 bytes, backend local\n"
            in text)
    assert "    logstore pinned: 3 shards, routing partition, retention kept forever, backend local\n" in text
    assert "metrics: http://127.0.0.1:%d/metrics" % gw.metrics_port in text
    # Keys by id, with the logstores each may write.
    assert "  LGTESTLIMITED: allow demo/app (writes demo/app)\n" in text
    assert "  LGTESTOPS: allow ops/* (writes ops/sys)\n" in text
    assert "\n  ops (quota 1048576 bytes/s)\n" in text
    assert "  LGTESTMAIN: allow demo/* (writes demo/app, demo/pinned, demo/one, demo/other)\n" in text
    assert "  max_request_bytes = 104857600\n" in text and "  shutdown_timeout_secs = 25\n" in text
    assert "  auth_timeout_secs = 5\n" in text
    for key_id, secret, _ in KEYS.values():
        assert secret not in text
    for line in hashes:
        assert line.split('"')[1] not in text and "sha256:" not in text
    assert "takes logs without authentication" in text  # the PLAINTEXT and SSL listeners


BASE = """
[[listeners]]
bind = "127.0.0.1:19092"
protocol = "SASL_PLAINTEXT"
[[projects]]
name = "p"
[[projects.logstores]]
name = "a"
"""


@pytest.mark.parametrize("extra, env, says", [
    ("[limits]\nmax_request_bytez = 1\n", {}, "unknown field `max_request_bytez`"),
    ("[clickhouse]\npassword = \"${CH_PASSWORD}\"\n", {}, "clickhouse.password: environment variable CH_PASSWORD is not set"),
    ("", {"LOGGATE_ADVERTISED": "nohost"}, "LOGGATE_ADVERTISED=\"nohost\": expected host:port"),
    ("", {"LOGGATE_BIND": "0.0.0.0:19092"}, "needs `advertised = \"host:port\"`"),
    ("", {"LOGGATE_ADVERTISED_SSL": "h:1"}, "LOGGATE_ADVERTISED_SSL: the configuration has no Ssl listener"),
    ("[[access_keys]]\nid = \"K\"\nsecret_hash = \"%s\"\nallow = [\"p\"]\n" % secret_hash("a") * 2, {},
     "access key \"K\" is defined twice"),
    ("[[listeners]]\nbind = \"127.0.0.1:19093\"\nprotocol = \"SASL_SSL\"\n[tls]\ngenerate = false\n"
     "cert = \"/nonexistent/server.pem\"\nkey = \"/nonexistent/server.key\"\n", {}, "/nonexistent/server.pem does not exist"),
    ("[[listeners]]\nbind = \"127.0.0.1:19092\"\nprotocol = \"PLAINTEXT\"\nproject = \"p\"\n", {}, "bound twice"),
])
def test_check_refuses_with_a_clear_message(tmp_path, extra, env, says):
    path = tmp_path / "bad.toml"
    path.write_text(BASE + extra)
    out = check(path, **env)
    assert out.returncode != 0
    assert out.stdout == ""
    assert says in out.stderr, out.stderr
    assert str(path) in out.stderr
    # The server refuses the same file the same way.
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOGGATE_")}
    serve = subprocess.run([str(BIN), "serve", "--config", str(path), "--data-dir", str(tmp_path / "data")],
                           capture_output=True, text=True, timeout=60, env={**base, **env})
    assert serve.returncode != 0 and says in serve.stderr, serve.stderr


def test_check_reads_the_tls_files(tmp_path):
    (tmp_path / "server.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n")
    (tmp_path / "server.key").write_text("")
    path = tmp_path / "c.toml"
    path.write_text(BASE + "[[listeners]]\nbind = \"127.0.0.1:19093\"\nprotocol = \"SSL\"\nproject = \"p\"\n"
                    "[tls]\ncert = \"%s\"\nkey = \"%s\"\n" % (tmp_path / "server.pem", tmp_path / "server.key"))
    out = check(path)
    assert out.returncode != 0 and "TLS" in out.stderr and "server.pem" in out.stderr, out.stderr
    subprocess.run([str(BIN), "cert", "--out", str(tmp_path), "--host", "localhost"], check=True, capture_output=True)
    out = check(path)
    assert out.returncode == 0, out.stderr
    assert "tls: certificate %s, key %s" % (tmp_path / "server.pem", tmp_path / "server.key") in out.stdout


def test_secrets_and_overrides_come_from_the_environment(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(BASE + "[storage]\nbackend = \"clickhouse\"\n[clickhouse]\nurls = [\"${CH_URL:-http://127.0.0.1:8123}\"]\n"
                    "user = \"${CH_USER}\"\npassword = \"${CH_PASSWORD}\"\n")
    out = check(path, CH_USER="writer", CH_PASSWORD="pa\"ss$word", LOGGATE_ADVERTISED="logs.example.com:9092",
                LOGGATE_CLICKHOUSE_URLS="http://admin:hunter2@ch1:8123/,http://ch2:8123")
    assert out.returncode == 0, out.stderr
    assert "environment overrides: LOGGATE_ADVERTISED, LOGGATE_CLICKHOUSE_URLS\n" in out.stdout
    assert "SASL_PLAINTEXT bind 127.0.0.1:19092 advertised logs.example.com:9092" in out.stdout
    assert "clickhouse: http://ch1:8123/, http://ch2:8123 table loggate.logs as user writer\n" in out.stdout
    assert "hunter2" not in out.stdout and "pa\"ss" not in out.stdout
    assert "backend clickhouse" in out.stdout


def test_the_server_takes_a_key_hash_and_advertised_addresses_from_the_environment(tmp_path, monkeypatch):
    gw = Gateway(tmp_path)
    # The key's hash is a reference to the environment (a secret store's variable).
    text = gw.config.read_text()
    main_hash = text.split('id = "LGTESTMAIN"\nsecret_hash = "')[1].split('"')[0]
    gw.config.write_text(text.replace(main_hash, "${MAIN_KEY_HASH}"))
    fresh = secret_hash(KEYS["main"][1])
    # In the environment of every loggate command (serve, and logs below).
    monkeypatch.setenv("MAIN_KEY_HASH", fresh)
    gw.extra_env = {"LOGGATE_ADVERTISED_SASL_SSL": "localhost:%d" % gw.ports["SASL_SSL"],
                    "LOGGATE_ADVERTISED_PLAINTEXT": "localhost:%d" % gw.ports["PLAINTEXT"]}
    gw.start()
    try:
        conf = {"bootstrap.servers": gw.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
                "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": password("main"),
                "ssl.ca.location": str(gw.ca)}
        md = AdminClient(conf).list_topics(timeout=10)
        assert [(b.host, b.port) for b in md.brokers.values()] == [("localhost", gw.ports["SASL_SSL"])]
        plain = AdminClient({"bootstrap.servers": gw.bootstrap("PLAINTEXT")}).list_topics(timeout=10)
        assert [(b.host, b.port) for b in plain.brokers.values()] == [("localhost", gw.ports["PLAINTEXT"])]
        p = Producer({**conf, "acks": "all"})
        errors = []
        p.produce("one", value=b"key-from-env", on_delivery=lambda e, m: e and errors.append(e))
        assert p.flush(30) == 0 and errors == []
        assert contents(gw.wait_logs("one", 1)) == ["key-from-env"]
    finally:
        gw.stop()
    assert fresh not in gw.log_text()
