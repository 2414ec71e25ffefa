"""Mutual TLS with librdkafka (confluent-kafka): on an SSL listener with client_auth =
"required", a client certificate signed by [tls] client_ca writes as the project and access
key it names (a loggate:// URI SAN, else subject O and CN), with that key's grants;
certificates of another CA, none, or naming a key that is unknown or not allowed are
refused; a reload that removes the key revokes open connections, and a replaced client CA
applies to new connections. The other listeners keep working beside it."""

import os
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from gateway import BIN, Gateway, contents, free_port, password


def run(*cmd, cwd=None):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert r.returncode == 0, "%s failed:\n%s%s" % (cmd, r.stdout, r.stderr)
    return r.stdout


def openssl_ca(d, name, subject=None):
    """A CA of its own made by the openssl CLI: d/name.pem, d/name.key."""
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", d / (name + ".key"), "-out", d / (name + ".pem"), "-days", "2", "-subj", subject or "/CN=%s" % name,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return d / (name + ".pem"), d / (name + ".key")


def openssl_client(d, name, ca, ca_key, subject, uri=None):
    """A client certificate signed by ca with openssl: d/name/client.pem, client.key."""
    out = d / name
    out.mkdir()
    ext = out / "ext.cnf"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth"]
    if uri:
        lines.append("subjectAltName=URI:%s" % uri)
    ext.write_text("\n".join(lines) + "\n")
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", out / "client.key", "-out", out / "client.csr", "-subj", subject)
    run("openssl", "x509", "-req", "-in", out / "client.csr", "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-days", "2", "-extfile", ext, "-out", out / "client.pem")
    return out


def loggate_client(d, tls, name, project, key_id):
    """A client certificate from `loggate cert --client`, signed by the CA of tls/."""
    out = d / name
    run(BIN, "cert", "--client", "--ca", tls, "--project", project, "--key-id", key_id, "--out", out)
    return out


class Certs:
    def __init__(self, d):
        d.mkdir()
        self.dir = d
        # The gateway's CA and server certificate, as `loggate cert` writes them.
        self.tls = d / "tls"
        run(BIN, "cert", "--out", self.tls, "--host", "localhost", "--host", "127.0.0.1")
        self.main = loggate_client(d, self.tls, "main", "demo", "LGTESTMAIN")
        self.other_key = loggate_client(d, self.tls, "ops-in-demo", "demo", "LGTESTOPS")
        self.unknown = loggate_client(d, self.tls, "unknown", "demo", "LGNOSUCHKEY")
        # Subject O and CN only (no URI SAN), issued by openssl with the same CA.
        self.limited = openssl_client(d, "limited", self.tls / "ca.pem", self.tls / "ca.key", "/O=demo/CN=LGTESTLIMITED")
        # Another CA, naming a key that exists: not trusted.
        self.ca2, ca2_key = openssl_ca(d, "otherca")
        self.foreign = openssl_client(d, "foreign", self.ca2, ca2_key, "/O=demo/CN=LGTESTMAIN",
                                      uri="loggate://demo/LGTESTMAIN")
        # A CA that takes the gateway CA's name, with a key of its own: clients send its
        # certificates (the issuer name is one the server asks for), and they fail verification.
        impostor, impostor_key = openssl_ca(d, "impostor", subject="/CN=loggate development CA")
        self.impostor = openssl_client(d, "impostor-client", impostor, impostor_key, "/O=demo/CN=LGTESTMAIN",
                                       uri="loggate://demo/LGTESTMAIN")
        self.client_ca = d / "client-ca.pem"
        self.client_ca.write_bytes((self.tls / "ca.pem").read_bytes())


def mtls_gateway(tmp_path, certs):
    port = free_port()
    extra = "\n".join([
        "[tls]",
        'cert = "%s"' % (certs.tls / "server.pem"),
        'key = "%s"' % (certs.tls / "server.key"),
        'client_ca = "%s"' % certs.client_ca,
        "[[listeners]]", 'bind = "127.0.0.1:%d"' % port, 'protocol = "SSL"', 'client_auth = "required"',
    ])
    gw = Gateway(tmp_path, extra_config=extra)
    gw.mtls_port = port
    return gw


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path / "certs")


@pytest.fixture
def gw(tmp_path, certs):
    g = mtls_gateway(tmp_path, certs).start()
    yield g
    g.stop()


class Client:
    """A librdkafka producer on the mTLS listener with a client certificate (or none)."""

    def __init__(self, gw, certs, cert_dir, **conf):
        self.ok, self.failed, self.errors = [], [], []
        base = {
            "bootstrap.servers": "127.0.0.1:%d" % gw.mtls_port, "security.protocol": "SSL",
            "ssl.ca.location": str(certs.tls / "ca.pem"), "linger.ms": 5, "message.timeout.ms": 15000,
            "retries": 0, "error_cb": self.errors.append,
        }
        if cert_dir is not None:
            base["ssl.certificate.location"] = str(cert_dir / "client.pem")
            base["ssl.key.location"] = str(cert_dir / "client.key")
        self.p = Producer(dict(base, **conf))

    def report(self, err, msg):
        (self.failed if err else self.ok).append((msg.value().decode(), err))

    def send(self, topic, values, timeout=30):
        for v in values:
            try:
                self.p.produce(topic, value=v.encode(), on_delivery=self.report)
            except KafkaException as e:
                # A topic the producer already knows it may not write is refused at once.
                self.failed.append((v, e.args[0]))
        assert self.p.flush(timeout) == 0


def refused(gw, certs, cert_dir):
    """Sends one record with cert_dir's certificate; asserts it is not delivered."""
    c = Client(gw, certs, cert_dir, **{"message.timeout.ms": 4000})
    c.send("app", ["refused"], timeout=15)
    assert c.ok == [] and len(c.failed) == 1, (c.ok, c.failed)
    return c


def cert_auth(gw, result):
    return gw.metric("loggate_tls_client_authentications_total", result=result)


def test_a_client_certificate_writes_as_the_key_it_names_with_that_keys_grants(gw, certs):
    main = Client(gw, certs, certs.main)
    main.send("app", ["main-%d" % i for i in range(20)])
    main.send("other", ["main-other-%d" % i for i in range(5)])
    assert main.failed == []
    # Subject O/CN naming LGTESTLIMITED (allow demo/app only).
    limited = Client(gw, certs, certs.limited)
    limited.send("app", ["limited-%d" % i for i in range(5)])
    limited.send("other", ["limited-other"])
    assert sorted(v for v, _ in limited.ok) == ["limited-%d" % i for i in range(5)]
    assert [(v, e.code()) for v, e in limited.failed] == [("limited-other", KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    stored = gw.wait_logs("app", 25)
    assert contents(stored) == sorted(["main-%d" % i for i in range(20)] + ["limited-%d" % i for i in range(5)])
    assert contents(gw.wait_logs("other", 5)) == sorted("main-other-%d" % i for i in range(5))
    log = gw.log_text()
    assert "authenticated by client certificate" in log
    assert 'key_id="LGTESTMAIN"' in log and 'key_id="LGTESTLIMITED"' in log, log[-3000:]
    assert cert_auth(gw, "success") >= 2
    # The SSL listener bound to a project (no client certificate) and SASL_SSL beside it.
    ssl_plain = Producer({"bootstrap.servers": gw.bootstrap("SSL"), "security.protocol": "SSL",
                          "ssl.ca.location": str(certs.tls / "ca.pem"), "message.timeout.ms": 15000})
    ssl_plain.produce("one", value=b"via-ssl")
    assert ssl_plain.flush(30) == 0
    sasl = Producer({"bootstrap.servers": gw.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
                     "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": password("main"),
                     "ssl.ca.location": str(certs.tls / "ca.pem"), "message.timeout.ms": 15000})
    sasl.produce("one", value=b"via-sasl-ssl")
    assert sasl.flush(30) == 0
    assert contents(gw.wait_logs("one", 2)) == ["via-sasl-ssl", "via-ssl"]


def test_certificates_of_another_ca_none_or_naming_a_key_not_allowed_are_refused(gw, certs):
    handshakes = gw.metric("loggate_tls_handshake_failures_total")
    refused(gw, certs, certs.impostor)
    assert cert_auth(gw, "bad_certificate") >= 1
    assert cert_auth(gw, "no_certificate") == 0
    # OpenSSL sends no certificate of a CA the server does not name.
    refused(gw, certs, certs.foreign)
    assert cert_auth(gw, "no_certificate") >= 1
    refused(gw, certs, None)
    assert gw.metric("loggate_tls_handshake_failures_total") >= handshakes + 2
    refused(gw, certs, certs.unknown)
    assert cert_auth(gw, "unknown_key") >= 1
    # LGTESTOPS exists but may write ops/* only, not project demo.
    refused(gw, certs, certs.other_key)
    assert cert_auth(gw, "not_allowed") >= 1
    assert cert_auth(gw, "success") == 0
    assert gw.logs("app") == []
    log = gw.log_text()
    assert "client certificate refused during the TLS handshake: invalid client certificate" in log, log[-3000:]
    assert "client certificate refused during the TLS handshake: no client certificate (or none signed by a CA" in log
    assert "names access key LGNOSUCHKEY, which is not configured" in log
    assert "access key LGTESTOPS (from the client certificate) may not write to project demo" in log


def without_key(text, key_id):
    blocks = text.split("[[access_keys]]")
    kept = [b for b in blocks[1:] if 'id = "%s"' % key_id not in b]
    assert len(kept) == len(blocks) - 2
    return "[[access_keys]]".join([blocks[0], *kept])


def wait_log(gw, what, before, timeout=15):
    deadline = time.time() + timeout
    while gw.log_text().count(what) <= before:
        assert time.time() < deadline, "no %r in the log:\n%s" % (what, gw.log_text()[-3000:])
        time.sleep(0.05)


def test_a_reload_that_removes_the_key_revokes_open_certificate_connections(gw, certs):
    revoked, kept = Client(gw, certs, certs.main), Client(gw, certs, certs.limited)
    revoked.send("app", ["ok-%d" % i for i in range(5)])
    kept.send("app", ["kept-%d" % i for i in range(5)])
    n = gw.log_text().count("configuration reloaded")
    text = without_key(gw.config.read_text(), "LGTESTMAIN")
    tmp = gw.config.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, gw.config)
    wait_log(gw, "configuration reloaded", n)
    revoked.send("app", ["late-%d" % i for i in range(3)])
    kept.send("app", ["kept2-%d" % i for i in range(3)])
    assert kept.failed == []
    assert sorted(v for v, _ in revoked.ok) == ["ok-%d" % i for i in range(5)]
    assert {e.code() for _, e in revoked.failed} == {KafkaError.TOPIC_AUTHORIZATION_FAILED}, revoked.failed
    assert contents(gw.wait_logs("app", 13)) == sorted(
        ["ok-%d" % i for i in range(5)] + ["kept-%d" % i for i in range(5)] + ["kept2-%d" % i for i in range(3)])
    # A new connection with that certificate is refused.
    before = cert_auth(gw, "unknown_key")
    refused(gw, certs, certs.main)
    assert cert_auth(gw, "unknown_key") > before


def test_a_replaced_client_ca_applies_to_new_connections(gw, certs):
    old = Client(gw, certs, certs.main)
    old.send("app", ["before"])
    n = gw.log_text().count("configuration reloaded")
    # The client CA file is replaced (the configuration file does not change).
    tmp = certs.client_ca.with_suffix(".new")
    tmp.write_bytes(certs.ca2.read_bytes())
    os.replace(tmp, certs.client_ca)
    wait_log(gw, "configuration reloaded", n)
    # The connection made before goes on; new ones need a certificate of the new CA.
    old.send("app", ["after"])
    assert old.failed == []
    Client(gw, certs, certs.foreign).send("app", ["foreign-ca"])
    before = cert_auth(gw, "no_certificate")
    refused(gw, certs, certs.limited)
    assert cert_auth(gw, "no_certificate") > before
    assert contents(gw.wait_logs("app", 3)) == ["after", "before", "foreign-ca"]
    # A client CA file that holds no certificate is rejected; the one in place stays.
    n = gw.log_text().count("configuration reload rejected")
    certs.client_ca.write_text("not a certificate\n")
    wait_log(gw, "configuration reload rejected", n)
    Client(gw, certs, certs.foreign).send("app", ["still-foreign-ca"])
    assert contents(gw.wait_logs("app", 4)) == ["after", "before", "foreign-ca", "still-foreign-ca"]


def test_check_config_shows_client_auth_and_refuses_wrong_settings(tmp_path, certs):
    gw = mtls_gateway(tmp_path, certs)
    out = run(BIN, "check-config", gw.config)
    assert "SSL bind 127.0.0.1:%d advertised 127.0.0.1:%d (client certificates (mutual TLS): project and access key " \
           "named by the certificate, TLS)" % (gw.mtls_port, gw.mtls_port) in out, out
    assert "tls: client certificates verified by %s (1 CA certificate)" % certs.client_ca in out, out
    # Only the project-bound listeners are warned about as unauthenticated.
    assert "listener 127.0.0.1:%d (SSL) takes logs without authentication" % gw.mtls_port not in out
    good = gw.config.read_text()
    listener = 'protocol = "SSL"\nclient_auth = "required"'
    for bad, message in [
        (good.replace(listener, 'protocol = "SASL_SSL"\nclient_auth = "required"'), "is for SSL listeners"),
        (good.replace(listener, listener + '\nproject = "demo"'), "remove `project`"),
        (good.replace('client_ca = "%s"' % certs.client_ca, ""), "needs [tls] client_ca"),
        (good.replace('client_auth = "required"', 'client_auth = "optional"'), "client_auth"),
    ]:
        assert bad != good
        path = tmp_path / "bad.toml"
        path.write_text(bad)
        r = subprocess.run([str(BIN), "check-config", str(path)], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and message in r.stderr, (message, r.stdout, r.stderr)
    # A client CA file that is not PEM certificates.
    certs.client_ca.write_text("junk\n")
    r = subprocess.run([str(BIN), "check-config", str(gw.config)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "no CA certificate found" in r.stderr, (r.stdout, r.stderr)
