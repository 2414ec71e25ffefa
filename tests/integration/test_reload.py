"""Configuration reload while running (SIGHUP, or the file changing): projects, logstores,
access keys, limits and the TLS certificate change without a restart and without dropping
healthy connections; an invalid configuration is refused and the running one stays; a
revoked key stops working on connections already authenticated with it."""

import os
import re
import signal
import ssl
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, Producer

from gateway import BIN, Gateway, contents, rdkafka_conf, secret_hash

NEW_KEY = ("LGTESTRELOADED", "reloaded-secret")


def reloads(gw, what="configuration reloaded"):
    return gw.log_text().count(what)


def wait_reload(gw, before, what="configuration reloaded", timeout=15):
    deadline = time.time() + timeout
    while reloads(gw, what) <= before:
        assert time.time() < deadline, "no %r in the log:\n%s" % (what, gw.log_text()[-3000:])
        time.sleep(0.05)


def edit_config(gw, change, replace_file=False):
    """Rewrites the configuration file with change(text); with replace_file, as editors and
    Kubernetes ConfigMaps do (a new file renamed over the old one)."""
    text = change(gw.config.read_text())
    if replace_file:
        tmp = gw.config.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, gw.config)
    else:
        gw.config.write_text(text)


def without_key(text, key_id):
    """The configuration text without the [[access_keys]] entry of key_id."""
    blocks = text.split("[[access_keys]]")
    kept = [b for b in blocks[1:] if 'id = "%s"' % key_id not in b]
    assert len(kept) == len(blocks) - 2, "key %s not found once" % key_id
    return "[[access_keys]]".join([blocks[0], *kept])


class Client:
    """One librdkafka producer on SASL_SSL with its delivery reports."""

    def __init__(self, gw, key="main", user="demo", **conf):
        self.ok, self.failed = [], []
        self.p = Producer(rdkafka_conf(gw, "SASL_SSL", user, key,
                                       **{"linger.ms": 5, "message.timeout.ms": 15000, "retries": 0, **conf}))

    def report(self, err, msg):
        (self.failed if err else self.ok).append((msg.value().decode(), err))

    def send(self, topic, values, timeout=30):
        for v in values:
            self.p.produce(topic, value=v.encode(), on_delivery=self.report)
        assert self.p.flush(timeout) == 0


@pytest.fixture
def gw(tmp_path):
    g = Gateway(tmp_path).start()
    yield g
    g.stop()


def accepted(gw):
    return gw.metric("loggate_connections_accepted_total")


def test_sighup_adds_a_project_and_a_key_and_open_connections_keep_writing(gw):
    old = Client(gw)
    old.send("app", ["before-%d" % i for i in range(20)])
    connections = accepted(gw)
    added = "\n".join([
        "[[projects]]", 'name = "fresh"',
        "[[projects.logstores]]", 'name = "events"', "shards = 2",
        "[[access_keys]]", 'id = "%s"' % NEW_KEY[0], 'secret_hash = "%s"' % secret_hash(NEW_KEY[1]),
        'allow = ["fresh/*"]', "",
    ])
    n = reloads(gw)
    edit_config(gw, lambda t: t + added)
    gw.proc.send_signal(signal.SIGHUP)
    wait_reload(gw, n)
    # The producer connected before the reload goes on, on the connections it has.
    old.send("app", ["after-%d" % i for i in range(20)])
    assert old.failed == []
    assert accepted(gw) == connections, "a connection was dropped and made again across the reload"
    # The new key writes the new project's new logstore.
    new = Client(gw, key=NEW_KEY, user="fresh")
    new.send("events.json", ['{"n": %d}' % i for i in range(10)])
    assert new.failed == []
    assert sorted(int(l["n"]) for l in gw.wait_logs("events", 10, project="fresh")) == list(range(10))
    stored = contents(gw.wait_logs("app", 40))
    assert stored == sorted(["before-%d" % i for i in range(20)] + ["after-%d" % i for i in range(20)])


def test_a_removed_key_stops_working_on_connections_already_authenticated_with_it(gw):
    revoked, kept = Client(gw, key="main"), Client(gw, key="limited")
    revoked.send("app", ["ok-%d" % i for i in range(5)])
    kept.send("app", ["kept-%d" % i for i in range(5)])
    n = reloads(gw)
    # No SIGHUP: the file's change is noticed by itself.
    edit_config(gw, lambda t: without_key(t, "LGTESTMAIN"), replace_file=True)
    wait_reload(gw, n)
    revoked.send("app", ["late-%d" % i for i in range(5)])
    kept.send("app", ["kept2-%d" % i for i in range(5)])
    assert kept.failed == []
    assert sorted(v for v, _ in revoked.ok) == ["ok-%d" % i for i in range(5)], revoked.ok
    codes = {e.code() for _, e in revoked.failed}
    assert codes == {KafkaError.TOPIC_AUTHORIZATION_FAILED}, revoked.failed
    stored = contents(gw.wait_logs("app", 15))
    assert stored == sorted(["ok-%d" % i for i in range(5)] + ["kept-%d" % i for i in range(5)]
                            + ["kept2-%d" % i for i in range(5)])
    # And it cannot log in again.
    again = Client(gw, key="main", **{"message.timeout.ms": 3000})
    again.p.produce("app", value=b"x", on_delivery=again.report)
    again.p.flush(10)
    assert again.ok == []


def test_an_invalid_configuration_is_refused_and_the_running_one_stays(gw):
    c = Client(gw)
    good = gw.config.read_text()
    n = reloads(gw, "configuration reload rejected")
    edit_config(gw, lambda t: t + "\n[[projects]]\nname = 'demo'\nshards = 'many'\n")
    gw.proc.send_signal(signal.SIGHUP)
    wait_reload(gw, n, "configuration reload rejected")
    line = [l for l in gw.log_text().splitlines() if "configuration reload rejected" in l][-1]
    assert "shards" in line, line
    assert gw.alive()
    c.send("app", ["still-%d" % i for i in range(10)])
    fresh = Client(gw)
    fresh.send("app", ["new-conn-%d" % i for i in range(5)])
    assert c.failed == [] and fresh.failed == []
    # A valid configuration again is taken.
    n = reloads(gw)
    gw.config.write_text(good.replace('name = "other"', 'name = "renamed"'))
    wait_reload(gw, n)
    fresh.send("renamed", ["r"])
    assert fresh.failed == []
    assert contents(gw.wait_logs("renamed", 1)) == ["r"]


def test_limits_change_without_a_restart(gw):
    c = Client(gw, **{"compression.codec": "none"})
    big = "x" * 20000
    c.send("app", [big])
    assert c.failed == []
    n = reloads(gw)
    edit_config(gw, lambda t: re.sub(r"\[limits\]\n", "[limits]\nmax_batch_bytes = 4096\n", t, count=1))
    wait_reload(gw, n)
    c.send("app", [big + "2"])
    assert [e.code() for _, e in c.failed] == [KafkaError.MSG_SIZE_TOO_LARGE], c.failed
    c.send("app", ["small"])
    assert len(c.ok) == 2
    assert sorted(len(v) for v in contents(gw.wait_logs("app", 2))) == [5, 20000]


def server_cert_der(gw):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    import socket
    with socket.create_connection(("127.0.0.1", gw.ports["SASL_SSL"]), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return t.getpeercert(binary_form=True)


def pem_der(path):
    return ssl.PEM_cert_to_DER_cert(path.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")


def test_a_replaced_certificate_is_served_to_new_connections_and_old_ones_stay(gw, tmp_path):
    c = Client(gw)
    c.send("app", ["one"])
    tls_dir = gw.data / "tls"
    assert server_cert_der(gw) == pem_der(tls_dir / "server.pem")
    new_dir = tmp_path / "newtls"
    subprocess.run([str(BIN), "cert", "--out", str(new_dir), "--host", "localhost", "--host", "127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    n = reloads(gw)
    # Certificate rotation as cert-manager does it: the files change, the config does not.
    for name in ("server.key", "server.pem"):
        tmp = tls_dir / (name + ".new")
        tmp.write_bytes((new_dir / name).read_bytes())
        os.replace(tmp, tls_dir / name)
    wait_reload(gw, n)
    assert server_cert_der(gw) == pem_der(new_dir / "server.pem")
    # The connection made with the old certificate goes on.
    c.send("app", ["two"])
    assert c.failed == []
    # New clients trust the new CA.
    fresh = Client(gw, **{"ssl.ca.location": str(new_dir / "ca.pem")})
    fresh.send("app", ["three"])
    assert fresh.failed == []
    assert contents(gw.wait_logs("app", 3)) == ["one", "three", "two"]
    # A broken certificate is refused and the new one stays.
    n = reloads(gw, "configuration reload rejected")
    (tls_dir / "server.pem").write_text("not a certificate\n")
    wait_reload(gw, n, "configuration reload rejected")
    assert server_cert_der(gw) == pem_der(new_dir / "server.pem")


def test_retention_set_by_a_reload_applies_to_a_logstore_already_written(tmp_path):
    # Segments roll by age after 1 s, so sealed segments exist even when idle.
    gw = Gateway(tmp_path, storage={"segment_ms": 1000}).start()
    try:
        c = Client(gw)
        c.send("other", ["old-%d" % i for i in range(300)])
        time.sleep(3)
        assert len(gw.logs("other")) == 300, "no retention configured yet"
        n = reloads(gw)
        entry = 'name = "other"\nshards = 1\nrouting = "round_robin"\n'
        edit_config(gw, lambda t: t.replace(entry, entry + "retention_hours = 0.0005\n", 1))
        wait_reload(gw, n)
        deadline = time.time() + 20
        while gw.logs("other"):
            assert time.time() < deadline, "retention set by the reload deleted nothing"
            time.sleep(0.3)
        assert "retention deleted a segment" in gw.log_text()
    finally:
        gw.stop()
