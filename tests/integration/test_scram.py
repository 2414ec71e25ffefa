"""SASL/SCRAM-SHA-256 and SCRAM-SHA-512 next to PLAIN on the same SASL_SSL listener, with
real clients: librdkafka (confluent-kafka), kafka-python (handshake v1 and v0 with raw
tokens), kafkajs and sarama 1.22.1 (xdg-go/scram), plus hand-built frames for the protocol
corners (nonce, channel binding, malformed messages).

The SCRAM username is `<project>#<AccessKeyId>`, the password the PLAIN one
(`AccessKeyId#AccessKeySecret`). Keys here:
  main     (demo/*)    credentials printed by `loggate keygen` (loggate's own derivation)
  limited  (demo/app)  credentials derived in Python (gateway.scram_credential, hashlib)
  ops      (ops/*)     only scram_sha256 (hashlib): SCRAM-SHA-512 must fail
  LGTESTNOSCRAM (demo/*) no SCRAM credential at all
"""

import base64
import hashlib
import hmac
import os
import signal
import struct
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, Producer
from kafka import KafkaProducer
from kafka.errors import KafkaError as KafkaPythonError

import wire
from clients import check_stored, describe, go_binary, node_script, run_client, unique_prefix
from gateway import BIN, KEYS, Gateway, password, scram_credential, secret_hash

MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-512"]
NOSCRAM = ("LGTESTNOSCRAM", "noscram-secret")
COUNT = 20


def keygen_scram(key):
    """The scram_sha256/scram_sha512 lines `loggate keygen` prints for a KEYS entry."""
    key_id, secret, allow = KEYS[key]
    out = subprocess.run([str(BIN), "keygen", "--id", key_id, "--allow", allow[0]], check=True,
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, LOGGATE_KEY_SECRET=secret)).stdout
    fields = dict(l.split(" = ", 1) for l in out.splitlines() if l.startswith("scram_"))
    assert set(fields) == {"scram_sha256", "scram_sha512"}, out
    assert all(v.startswith('"4096:') for v in fields.values()), out
    assert secret not in "".join(fields.values())
    return fields


def scram_gateway(tmp_path, **kw):
    key_options = {
        "main": keygen_scram("main"),
        "limited": {"scram_sha256": scram_credential("SCRAM-SHA-256", password("limited")),
                    "scram_sha512": scram_credential("SCRAM-SHA-512", password("limited"), iterations=5000)},
        "ops": {"scram_sha256": scram_credential("SCRAM-SHA-256", password("ops"))},
    }
    extra = '[[access_keys]]\nid = "%s"\nsecret_hash = "%s"\nallow = ["demo/*"]\n' % (NOSCRAM[0], secret_hash(NOSCRAM[1]))
    return Gateway(tmp_path, key_options=key_options, extra_config=extra, **kw).start()


@pytest.fixture
def gw(tmp_path):
    g = scram_gateway(tmp_path)
    yield g
    g.stop()


def user(key, project="demo"):
    return "%s#%s" % (project, KEYS[key][0])


def auth_metric(gw, result):
    return gw.metric("loggate_sasl_authentications_total", result=result)


# --- librdkafka ---------------------------------------------------------------------------

def rdkafka_conf(gw, mechanism, username, pw):
    return {"bootstrap.servers": gw.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
            "sasl.mechanism": mechanism, "sasl.username": username, "sasl.password": pw,
            "ssl.ca.location": str(gw.ca), "message.timeout.ms": 15000, "linger.ms": 5}


def rdkafka_produce(conf, topic, values, timeout=30):
    delivered, errors = [], []
    p = Producer(dict(conf, error_cb=lambda e: errors.append(e)))
    for v in values:
        p.produce(topic, value=v.encode(), on_delivery=lambda e, m: errors.append(e) if e else delivered.append(m))
    assert p.flush(timeout) == 0
    return delivered, errors


@pytest.mark.parametrize("key", ["main", "limited"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_librdkafka_scram(gw, mechanism, key):
    t0 = time.time()
    values = ["%s-%d" % (unique_prefix("rdk-" + mechanism), i) for i in range(COUNT)]
    delivered, errors = rdkafka_produce(rdkafka_conf(gw, mechanism, user(key), password(key)), "app", values)
    assert errors == [] and len(delivered) == COUNT, errors
    check_stored(gw, "app", values, t0)
    assert auth_metric(gw, "success") >= 1
    log = gw.log_text()
    assert 'mechanism="%s"' % mechanism in log or "mechanism=%s" % mechanism in log, log[-2000:]
    assert KEYS[key][1] not in log


def test_plain_and_scram_on_the_same_listener(gw):
    t0 = time.time()
    plain = ["plain-%d" % i for i in range(10)]
    scram = ["scram-%d" % i for i in range(10)]
    conf = rdkafka_conf(gw, "PLAIN", "demo", password("main"))
    assert rdkafka_produce(conf, "app", plain)[1] == []
    assert rdkafka_produce(rdkafka_conf(gw, "SCRAM-SHA-256", user("main"), password("main")), "app", scram)[1] == []
    check_stored(gw, "app", plain + scram, t0)


def rdkafka_refused(gw, mechanism, username, pw, extra=None):
    conf = dict(rdkafka_conf(gw, mechanism, username, pw), **{"message.timeout.ms": 4000}, **(extra or {}))
    delivered, errors = rdkafka_produce(conf, "app", ["never"], timeout=15)
    assert delivered == []
    return errors


@pytest.mark.parametrize("case,username,pw,mechanism,result", [
    ("wrong-password", "demo#LGTESTMAIN", "LGTESTMAIN#NotTheSecret123", "SCRAM-SHA-256", "bad_secret"),
    ("unknown-key", "demo#LGNOSUCHKEY", "LGNOSUCHKEY#NotTheSecret123", "SCRAM-SHA-512", "unknown_key"),
    ("key-without-scram", "demo#LGTESTNOSCRAM", "LGTESTNOSCRAM#noscram-secret", "SCRAM-SHA-256", "no_credential"),
    ("key-without-sha512", "ops#LGTESTOPS", "LGTESTOPS#ops-secret", "SCRAM-SHA-512", "no_credential"),
    ("project-not-allowed", "ops#LGTESTMAIN", "LGTESTMAIN#main-secret#with-hash", "SCRAM-SHA-256", "not_allowed"),
    ("plain-username", "demo", "LGTESTMAIN#main-secret#with-hash", "SCRAM-SHA-256", "malformed"),
])
def test_librdkafka_scram_refusals(gw, case, username, pw, mechanism, result):
    errors = rdkafka_refused(gw, mechanism, username, pw)
    assert any(e.code() == KafkaError._AUTHENTICATION or "Authentication failed" in str(e) for e in errors), errors
    assert gw.logs("app") == []
    assert auth_metric(gw, result) >= 1, gw.metrics()
    log = gw.log_text()
    assert "SASL authentication failed" in log
    assert "NotTheSecret123" not in log and "noscram-secret" not in log and "main-secret" not in log
    if result == "no_credential":
        assert "no %s credential" % mechanism in log


def test_key_without_scram_still_logs_in_with_plain(gw):
    t0 = time.time()
    values = ["noscram-plain-%d" % i for i in range(5)]
    assert rdkafka_produce(rdkafka_conf(gw, "PLAIN", "demo", "%s#%s" % NOSCRAM), "app", values)[1] == []
    check_stored(gw, "app", values, t0)


def test_librdkafka_unsupported_mechanism_lists_the_enabled_ones(gw):
    errors = rdkafka_refused(gw, "OAUTHBEARER", "", "", {
        "enable.sasl.oauthbearer.unsecure.jwt": True, "sasl.oauthbearer.config": "principal=demo"})
    text = " ".join(str(e) for e in errors)
    assert "PLAIN" in text and "SCRAM-SHA-256" in text and "SCRAM-SHA-512" in text, text
    assert gw.logs("app") == []


def test_replacing_the_scram_credential_revokes_scram_connections(gw):
    p_errors, delivered = [], []
    p = Producer(dict(rdkafka_conf(gw, "SCRAM-SHA-256", user("main"), password("main")), **{"message.timeout.ms": 5000}))

    def send(values):
        for v in values:
            p.produce("app", value=v.encode(), on_delivery=lambda e, m: p_errors.append(e) if e else delivered.append(m))
        assert p.flush(20) == 0

    send(["before-%d" % i for i in range(5)])
    assert p_errors == [] and len(delivered) == 5
    # The same password with a new salt (as `loggate keygen` run again prints it); the
    # first scram_sha256 line of the file is the main key's.
    text = gw.config.read_text()
    current = [l for l in text.splitlines() if l.startswith("scram_sha256 = ")][0]
    text = text.replace(current, "scram_sha256 = %s" % scram_credential("SCRAM-SHA-256", password("main")), 1)
    n = gw.log_text().count("configuration reloaded")
    gw.config.write_text(text)
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 15
    while gw.log_text().count("configuration reloaded") <= n:
        assert time.time() < deadline, gw.log_text()[-2000:]
        time.sleep(0.05)
    send(["after-%d" % i for i in range(5)])
    assert {e.code() for e in p_errors} == {KafkaError.TOPIC_AUTHORIZATION_FAILED}, p_errors
    assert sorted(l["content"] for l in gw.logs("app")) == ["before-%d" % i for i in range(5)]
    # A new login with the same password works against the new credential.
    t0 = time.time()
    assert rdkafka_produce(rdkafka_conf(gw, "SCRAM-SHA-256", user("main"), password("main")), "one", ["fresh"])[1] == []
    check_stored(gw, "one", ["fresh"], t0)


# --- kafka-python -------------------------------------------------------------------------

@pytest.mark.parametrize("api_version", [None, (2, 1), (0, 10, 1)], ids=["probe", "2.1", "0.10.1-raw-tokens"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafka_python_scram(gw, mechanism, api_version):
    t0 = time.time()
    values = ["%s-%d" % (unique_prefix("kpy"), i) for i in range(COUNT)]
    p = KafkaProducer(bootstrap_servers=gw.bootstrap("SASL_SSL"), security_protocol="SASL_SSL", ssl_cafile=str(gw.ca),
                      sasl_mechanism=mechanism, sasl_plain_username=user("limited"),
                      sasl_plain_password=password("limited"), api_version=api_version, enable_idempotence=False,
                      request_timeout_ms=10000, max_block_ms=15000)
    try:
        futures = [p.send("app", value=v.encode()) for v in values]
        p.flush(30)
        assert all(f.get(timeout=30).offset >= 0 for f in futures)
    finally:
        p.close(5)
    check_stored(gw, "app", values, t0)


@pytest.mark.parametrize("api_version", [(2, 1), (0, 10, 1)], ids=["2.1", "0.10.1-raw-tokens"])
@pytest.mark.parametrize("username,pw", [("demo#LGTESTMAIN", "LGTESTMAIN#bad"),
                                         ("demo#LGTESTNOSCRAM", "LGTESTNOSCRAM#noscram-secret")],
                         ids=["wrong-password", "key-without-scram"])
def test_kafka_python_scram_refused(gw, api_version, username, pw):
    p = None
    with pytest.raises(KafkaPythonError):
        p = KafkaProducer(bootstrap_servers=gw.bootstrap("SASL_SSL"), security_protocol="SASL_SSL",
                          ssl_cafile=str(gw.ca), sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=username,
                          sasl_plain_password=pw, api_version=api_version, max_block_ms=5000, enable_idempotence=False)
        p.send("app", b"never").get(timeout=10)
    if p:
        p.close(1)
    assert gw.logs("app") == []
    assert "SASL authentication failed" in gw.log_text()


# --- kafkajs ------------------------------------------------------------------------------

def kafkajs(gw, mechanism, username, pw, prefix, count=COUNT):
    cmd = ["node", node_script(), "--brokers", gw.bootstrap("SASL_SSL"), "--ca", gw.ca, "--mechanism", mechanism.lower(),
           "--user", username, "--password", pw, "--topic", "app", "--codec", "gzip", "--acks=-1",
           "--count", str(count), "--prefix", prefix]
    return run_client(cmd)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafkajs_scram(gw, mechanism):
    t0 = time.time()
    prefix = unique_prefix("kafkajs-" + mechanism)
    proc = kafkajs(gw, mechanism, user("main"), password("main"), prefix)
    assert proc.returncode == 0, describe(proc, gw)
    check_stored(gw, "app", ["%s-%d" % (prefix, i) for i in range(COUNT)], t0)


@pytest.mark.parametrize("username,pw,mechanism", [
    ("demo#LGTESTMAIN", "LGTESTMAIN#nope", "SCRAM-SHA-512"),
    ("ops#LGTESTOPS", "LGTESTOPS#ops-secret", "SCRAM-SHA-512"),
], ids=["wrong-password", "key-without-sha512"])
def test_kafkajs_scram_refused(gw, username, pw, mechanism):
    proc = kafkajs(gw, mechanism, username, pw, unique_prefix("kafkajs-bad"), count=1)
    assert proc.returncode != 0, describe(proc, gw)
    assert "SASL" in proc.stderr or "uthentication" in proc.stderr, describe(proc, gw)
    assert gw.logs("app") == []


# --- sarama -------------------------------------------------------------------------------

def sarama(gw, mechanism, username, pw, prefix, version="1.0.0.0", count=COUNT):
    cmd = [go_binary("saramaproducer"), "-brokers", gw.bootstrap("SASL_SSL"), "-tls-ca", gw.ca, "-sasl",
           "-mechanism", mechanism, "-user", username, "-password", pw, "-version", version,
           "-codec", "snappy", "-acks", "-1", "-topic", "app", "-count", str(count), "-prefix", prefix]
    return run_client(cmd)


@pytest.mark.parametrize("version", ["0.11.0.0", "1.0.0.0", "2.1.0"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sarama_scram(gw, mechanism, version):
    t0 = time.time()
    prefix = unique_prefix("sarama-" + mechanism)
    proc = sarama(gw, mechanism, user("limited"), password("limited"), prefix, version=version)
    assert proc.returncode == 0, describe(proc, gw)
    check_stored(gw, "app", ["%s-%d" % (prefix, i) for i in range(COUNT)], t0)


@pytest.mark.parametrize("username,pw", [("demo#LGTESTMAIN", "LGTESTMAIN#wrong-secret"),
                                         ("demo#LGTESTNOSCRAM", "LGTESTNOSCRAM#noscram-secret")],
                         ids=["wrong-password", "key-without-scram"])
def test_sarama_scram_refused(gw, username, pw):
    proc = sarama(gw, "SCRAM-SHA-256", username, pw, unique_prefix("sarama-bad"), count=1)
    assert proc.returncode != 0, describe(proc, gw)
    assert "SASL Authentication failed" in proc.stderr, describe(proc, gw)
    assert gw.logs("app") == []


# --- hand-built frames: a SCRAM client of the test's own ----------------------------------

class WireScram:
    """A SCRAM-SHA-256 client over hand-built frames (hashlib), handshake v1 or v0 (raw)."""

    def __init__(self, gw, raw=False, mechanism="SCRAM-SHA-256"):
        self.sock = wire.connect(gw.ports["SASL_SSL"], tls_ca=gw.ca)
        self.raw = raw
        self.corr = 0
        self.hash = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
        body = wire.string(mechanism)
        self.sock.sendall(wire.request(17, 0 if raw else 1, self.next(), body))
        frame = wire.read_frame(self.sock)
        assert struct.unpack(">h", frame[4:6])[0] == 0, frame

    def next(self):
        self.corr += 1
        return self.corr

    def send(self, token):
        """Sends a token; returns (error_code, error message, server token), or None if closed."""
        try:
            if self.raw:
                self.sock.sendall(struct.pack(">i", len(token)) + token)
                return 0, None, wire.read_frame(self.sock)
            self.sock.sendall(wire.request(36, 0, self.next(), struct.pack(">i", len(token)) + token))
            frame = wire.read_frame(self.sock)
        except (ConnectionError, OSError):
            return None
        error, mlen = struct.unpack(">hh", frame[4:8])
        message = frame[8:8 + mlen].decode() if mlen >= 0 else None
        pos = 8 + max(mlen, 0)
        tlen = struct.unpack(">i", frame[pos:pos + 4])[0]
        return error, message, frame[pos + 4:pos + 4 + tlen]

    def proof(self, pw, bare, server_first, without_proof):
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        salted = hashlib.pbkdf2_hmac(self.hash, pw.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored = hashlib.new(self.hash, client_key).digest()
        auth = ("%s,%s,%s" % (bare, server_first.decode(), without_proof)).encode()
        sig = hmac.new(stored, auth, self.hash).digest()
        server_sig = hmac.new(hmac.new(salted, b"Server Key", self.hash).digest(), auth, self.hash).digest()
        return base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode(), server_sig

    def login(self, username, pw, nonce="wireclientnonce", tamper=None):
        """A whole exchange; `tamper(without_proof, proof)` may change the client-final message."""
        bare = "n=%s,r=%s" % (username, nonce)
        first = self.send(("n,," + bare).encode())
        if first is None or first[0] != 0:
            return "first", first
        server_first = first[2]
        r = dict(a.split("=", 1) for a in server_first.decode().split(","))["r"]
        assert r.startswith(nonce) and len(r) > len(nonce)
        without_proof = "c=biws,r=%s" % r
        proof, server_sig = self.proof(pw, bare, server_first, without_proof)
        final = "%s,p=%s" % (without_proof, proof) if tamper is None else tamper(without_proof, proof, r)
        answer = self.send(final.encode())
        if answer is not None and answer[0] == 0:
            assert answer[2] == b"v=" + base64.b64encode(server_sig), answer
        return "final", answer

    def produce(self, values):
        return wire.produce_v3_answer(self.sock, "app", 0, wire.batch_v2([v.encode() for v in values]), self.next())


@pytest.mark.parametrize("raw", [False, True], ids=["handshake_v1", "handshake_v0_raw_tokens"])
def test_wire_scram_login_and_produce(gw, raw):
    t0 = time.time()
    c = WireScram(gw, raw=raw)
    step, answer = c.login(user("limited"), password("limited"))
    assert (step, answer[0]) == ("final", 0), answer
    assert c.produce(["wire-0", "wire-1"]) == (0, 0)
    check_stored(gw, "app", ["wire-0", "wire-1"], t0)


def test_wire_scram_sha512_server_signature(gw):
    c = WireScram(gw, mechanism="SCRAM-SHA-512")
    step, answer = c.login(user("limited"), password("limited"))
    assert (step, answer[0]) == ("final", 0), answer


def test_unknown_keys_get_a_stable_salt_and_the_same_answer(gw):
    def server_first(username):
        c = WireScram(gw)
        _, _, sf = c.send(("n,,n=%s,r=abc" % username).encode())
        c.sock.close()
        return dict(a.split("=", 1) for a in sf.decode().split(","))

    unknown1, unknown2, known = server_first("demo#LGNOPE"), server_first("demo#LGNOPE"), server_first(user("main"))
    assert unknown1["s"] == unknown2["s"] and unknown1["i"] == "4096"
    assert server_first("demo#LGNOPE2")["s"] != unknown1["s"]
    assert known["i"] == "4096" and len(base64.b64decode(known["s"])) == len(base64.b64decode(unknown1["s"]))
    # ... and the failure the client sees is the same as for a wrong password.
    answers = []
    for username in ("demo#LGNOPE", user("main")):
        c = WireScram(gw)
        _, answer = c.login(username, "LGNOPE#whatever")
        answers.append(answer)
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 58 and answers[0][2] == b"e=invalid-proof", answers


@pytest.mark.parametrize("case,tamper,reason", [
    ("wrong-nonce", lambda wp, p, r: "c=biws,r=%sX,p=%s" % (r, p), "nonce differs"),
    ("client-nonce-only", lambda wp, p, r: "c=biws,r=wireclientnonce,p=%s" % p, "nonce differs"),
    ("binding-mismatch", lambda wp, p, r: "c=eSws,r=%s,p=%s" % (r, p), "channel binding data differs"),
    ("wrong-proof", lambda wp, p, r: "%s,p=%s" % (wp, base64.b64encode(b"\0" * 32).decode()), "unknown access key or wrong secret"),
    ("short-proof", lambda wp, p, r: "%s,p=AAAA" % wp, "client proof is malformed"),
    ("no-proof", lambda wp, p, r: wp, "no proof"),
])
def test_wire_scram_client_final_checks(gw, case, tamper, reason):
    c = WireScram(gw)
    step, answer = c.login(user("limited"), password("limited"), tamper=tamper)
    assert step == "final" and answer[0] == 58, answer
    assert answer[1].startswith("Authentication failed")
    assert answer[2].startswith(b"e="), answer
    assert wire.is_closed(c.sock)
    assert reason in gw.log_text()


@pytest.mark.parametrize("first,reason", [
    (b"p=tls-server-end-point,,n=demo#LGTESTLIMITED,r=abc", "channel binding requested"),
    (b"y,,n=demo#LGTESTLIMITED,r=abc", "channel binding requested"),
    (b"n,,n=demo#LGTESTLIMITED,r=abc,tokenauth=true", "extensions are not supported"),
    (b"n,a=other,n=demo#LGTESTLIMITED,r=abc", "authorization id differs"),
    (b"n,,n=demo#LGTESTLIMITED", "no nonce"),
    (b"n,,n=demo=ZZ,r=abc", "saslname"),
    (b"\xff\xfe", "not UTF-8"),
    (b"", "no GS2 header"),
    (b"n,,n=" + b"a" * 5000 + b",r=abc", "longer than"),
])
@pytest.mark.parametrize("raw", [False, True], ids=["v1", "v0_raw"])
def test_wire_scram_malformed_client_first(gw, first, reason, raw):
    c = WireScram(gw, raw=raw)
    answer = c.send(first)
    if raw:
        assert answer is None, answer  # closed without an answer, as Kafka does
    else:
        assert answer[0] == 58 and answer[2] == b"", answer
        assert wire.is_closed(c.sock)
    assert reason in gw.log_text(), gw.log_text()[-1500:]
    assert auth_metric(gw, "malformed") == 1


def test_check_config_shows_each_keys_mechanisms(gw):
    out = subprocess.run([str(BIN), "check-config", str(gw.config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    mechanisms = {}
    for i, line in enumerate(lines):
        if line.startswith("  LGTEST") and ": allow " in line:
            mechanisms[line.split(":")[0].strip()] = lines[i + 1].strip()
    assert mechanisms == {
        "LGTESTMAIN": "SASL mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        "LGTESTLIMITED": "SASL mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        "LGTESTOPS": "SASL mechanisms: PLAIN, SCRAM-SHA-256",
        "LGTESTNOSCRAM": "SASL mechanisms: PLAIN",
    }, out.stdout


def test_a_malformed_scram_credential_is_a_configuration_error(tmp_path):
    g = Gateway(tmp_path, key_options={"main": {"scram_sha512": scram_credential("SCRAM-SHA-256", "x")}})
    out = subprocess.run([str(BIN), "check-config", str(g.config)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "LGTESTMAIN: scram_sha512: stored key must be 64 bytes" in out.stderr + out.stdout, out
