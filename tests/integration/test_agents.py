"""The agent recipes of config/agents/ run for real: each test reads a recipe, replaces only
the placeholders (broker host:port, password, CA path, and state/input paths the agent needs),
runs the agent (collectd, rsyslog, syslog-ng, nginx + lua-resty-kafka as APISIX's kafka-logger
drives it, the Go SDK recipe on confluent-kafka-go, the Python SDK recipe on confluent-kafka)
against a loggate of its own, feeds it known input, and checks the stored logs: exactly the
records fed, each exactly once, with the fields the recipe promises.

Agents run as root-started foreground processes with their own config, pid and state files
under the test's tmp dir, bound to loopback, and are stopped at the test's end. Packages:
tests/install-deps.sh (syslog-ng is unpacked privately, it conflicts with rsyslog)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from clients import Nginx, check_stored, go_binary, unique_prefix
from gateway import ROOT, Gateway, free_port, password

RECIPES = ROOT / "config" / "agents"
AGENTS_DIR = ROOT / "tests" / "agents"
SYSLOG_NG_ROOT = Path(os.environ.get("LOGGATE_SYSLOG_NG_ROOT", "/opt/loggate-tests/syslog-ng"))
PLACEHOLDER_PASSWORD = "AccessKeyId#AccessKeySecret"
PLACEHOLDER_CA = "/etc/loggate/ca.pem"


def recipe(name, gw, proto="SASL_SSL", paths=None):
    """The recipe's text with only the placeholders replaced: every `loggate.example.com:PORT`
    by the gateway's `proto` listener, the password by the test key's, the CA path by the
    gateway's CA, and `paths` (recipe path -> test path)."""
    text = (RECIPES / name).read_text()
    assert "loggate.example.com" in text and ("SASL" not in proto or PLACEHOLDER_PASSWORD in text), name
    text = re.sub(r"loggate\.example\.com:\d+", gw.bootstrap(proto), text)
    text = text.replace(PLACEHOLDER_PASSWORD, password("main")).replace(PLACEHOLDER_CA, str(gw.ca))
    for old, new in (paths or {}).items():
        assert old in text, (name, old)
        text = text.replace(old, str(new))
    return text


class Agent:
    """A foreground agent process; output goes to a log file shown on failure."""

    def __init__(self, name, cmd, workdir, env=None):
        self.name = name
        self.log = workdir / (name + ".out")
        self.out = open(self.log, "wb")
        self.proc = subprocess.Popen([str(c) for c in cmd], stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=workdir)

    def text(self):
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def wait_port(self, port, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited (%s):\n%s" % (self.name, self.proc.returncode, self.text()))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("%s did not listen on %d:\n%s" % (self.name, port, self.text()))

    def wait_path(self, path, timeout=20):
        deadline = time.time() + timeout
        while not Path(path).exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError("%s: no %s (rc=%s):\n%s" % (self.name, path, self.proc.poll(), self.text()))
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def explain(agent, gw):
    return "--- %s output (tail)\n%s\n--- loggate.stderr (tail)\n%s" % (
        agent.name, agent.text(), "\n".join(gw.log_text().splitlines()[-30:]))


def wait_matching(gw, logstore, predicate, count, timeout=30):
    """All logs of the logstore once `count` of them match (or at timeout), then a short
    pause and a re-read so a late duplicate shows up."""
    deadline = time.time() + timeout
    while True:
        logs = gw.logs(logstore)
        if sum(1 for l in logs if predicate(l)) >= count or time.time() > deadline:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    return gw.logs(logstore)


def need(path, package):
    if not Path(path).exists():
        pytest.fail("%s missing: run tests/install-deps.sh (%s)" % (path, package))


def check_meta(logs, t0, source_prefix="127.0.0.1:"):
    now_ms = time.time() * 1000
    for l in logs:
        assert l["__project__"] == "demo" and l["__logstore__"] == "app", l
        assert t0 * 1000 - 60_000 <= l["__arrival_time_ms__"] <= now_ms + 1000, l
        assert str(l["__source__"]).startswith(source_prefix), l


def send_lines(port, lines):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall("".join(line + "\n" for line in lines).encode())


# --- collectd (write_kafka) -------------------------------------------------------------

@pytest.mark.parametrize("time_field", [None, "auto"])
def test_collectd_write_kafka(tmp_path, time_field):
    """collectd 5.12's write_kafka from config/agents/collectd.conf over SASL_SSL. Values come
    in through collectd's unixsock plugin (PUTVAL with explicit times and values), so the
    stored logs are known exactly: one log per value list on the `.json` topic. With
    `time_field = "auto"` on the logstore, each log's event time is its value list's `time`."""
    options = {"app": {"time_field": '"%s"' % time_field}} if time_field else {}
    (tmp_path / "gw").mkdir()
    gateway = Gateway(tmp_path / "gw", logstore_options=options).start()
    try:
        collectd_write_kafka(gateway, tmp_path, time_field)
    finally:
        gateway.stop()


def collectd_write_kafka(gateway, tmp_path, time_field):
    need("/usr/sbin/collectd", "collectd-core")
    need("/usr/lib/collectd/write_kafka.so", "collectd-core")
    d = tmp_path / "collectd"
    d.mkdir()
    (d / "loggate.conf").write_text(recipe("collectd.conf", gateway))
    sock = d / "collectd.sock"
    (d / "collectd.conf").write_text("\n".join([
        'Hostname "agenthost"', "FQDNLookup false", 'BaseDir "%s"' % d, 'PIDFile "%s/collectd.pid"' % d,
        'PluginDir "/usr/lib/collectd"', 'TypesDB "/usr/share/collectd/types.db"', "Interval 1",
        "LoadPlugin unixsock", "<Plugin unixsock>", '  SocketFile "%s"' % sock, "</Plugin>",
        'Include "%s/loggate.conf"' % d, ""]))
    agent = Agent("collectd", ["/usr/sbin/collectd", "-f", "-C", d / "collectd.conf"], d)
    try:
        agent.wait_path(sock)
        t0 = time.time()
        base = int(t0) - 30
        prefix = unique_prefix("cd").replace("-", "_")
        sent = {}
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            f = s.makefile("rw")
            for i in range(12):
                inst = "%s_%d" % (prefix, i)
                value = i * 1.5
                f.write('PUTVAL "agenthost/loggate-%s/gauge-%s" interval=10 %d:%s\n' % (prefix, inst, base + i, value))
                f.flush()
                answer = f.readline()
                assert answer.startswith("0 "), answer
                sent[inst] = (base + i, value)
        logs = wait_matching(gateway, "app", lambda l: l.get("plugin_instance") == prefix, len(sent))
    finally:
        agent.stop()
    assert logs, explain(agent, gateway)
    check_meta(logs, t0)
    got = {}
    for l in logs:
        assert l.get("plugin_instance") == prefix, l  # nothing but what was fed
        assert l["host"] == "agenthost" and l["plugin"] == "loggate" and l["type"] == "gauge", l
        assert json.loads(l["dsnames"]) == ["value"] and json.loads(l["dstypes"]) == ["gauge"], l
        assert float(l["interval"]) == 10.0, l
        assert l["type_instance"] not in got, "stored twice: %s" % l
        got[l["type_instance"]] = (float(l["time"]), json.loads(l["values"])[0])
        if time_field:
            assert l["__time_ms__"] == sent[l["type_instance"]][0] * 1000, l
        else:
            assert l["__time_ms__"] >= t0 * 1000 - 1000, l  # the record timestamp: when sent
    assert got == {k: (float(t), v) for k, (t, v) in sent.items()}, explain(agent, gateway)


# --- rsyslog (omkafka) ------------------------------------------------------------------

def syslog_lines(prefix, count):
    """RFC 5424 lines (LF framed) with known fields; local0.info .. local0.debug."""
    lines, expected = [], {}
    for i in range(count):
        sev = 6 + (i % 2)  # info, debug
        ts = "2026-12-02T03:04:%02d.%03dZ" % (i % 60, i)
        msg = "%s-%d hello \"quoted\" \\ back" % (prefix, i)
        lines.append("<%d>1 %s web%02d myapp %d - - %s" % (16 * 8 + sev, ts, i % 3, 4000 + i, msg))
        expected[msg] = {"host": "web%02d" % (i % 3), "app": "myapp", "procid": str(4000 + i),
                         "severity": ("info", "debug")[i % 2], "facility": "local0", "ts": ts}
    return lines, expected


def check_syslog(logs, expected, agent, gw, t0, own_app=None):
    """`own_app`: the agent's own messages (its start notice) may be stored besides."""
    assert logs, explain(agent, gw)
    check_meta(logs, t0)
    ours = [l for l in logs if l.get("app") == "myapp"]
    others = [l for l in logs if l.get("app") != "myapp"]
    assert all(own_app and l.get("app") == own_app for l in others), others
    got = sorted(l["message"] for l in ours)
    assert got == sorted(expected), "stored messages differ\n%s\n%s" % (got, explain(agent, gw))
    for l in ours:
        e = expected[l["message"]]
        for k in ("host", "app", "procid", "severity", "facility"):
            assert l[k] == e[k], (k, l, e)
        # the event's own time, as the agent renders it (zone suffix Z or +00:00)
        assert l["time"].startswith(e["ts"][:23]), (l["time"], e["ts"])


def test_rsyslog_omkafka(gateway, tmp_path):
    """rsyslog 8.2302's omkafka from config/agents/rsyslog.conf over SASL_SSL, fed RFC 5424
    lines over imtcp; each message is one JSON log on the `.json` topic."""
    need("/usr/sbin/rsyslogd", "rsyslog")
    need("/usr/lib/x86_64-linux-gnu/rsyslog/omkafka.so", "rsyslog-kafka")
    d = tmp_path / "rsyslog"
    (d / "work").mkdir(parents=True)
    (d / "loggate.conf").write_text(recipe("rsyslog.conf", gateway, paths={
        "/var/lib/rsyslog/omkafka-loggate-failed.data": d / "work" / "failed.data"}))
    port = free_port()
    (d / "rsyslog.conf").write_text("\n".join([
        'global(workDirectory="%s/work")' % d,
        'module(load="imtcp")',
        'input(type="imtcp" address="127.0.0.1" port="%d")' % port,
        'include(file="%s/loggate.conf")' % d, ""]))
    r = subprocess.run(["/usr/sbin/rsyslogd", "-N1", "-f", d / "rsyslog.conf"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, "rsyslogd -N1: %s%s" % (r.stdout, r.stderr)
    agent = Agent("rsyslogd", ["/usr/sbin/rsyslogd", "-n", "-f", d / "rsyslog.conf", "-i", d / "rsyslogd.pid"], d)
    try:
        agent.wait_port(port)
        t0 = time.time()
        lines, expected = syslog_lines(unique_prefix("rs"), 20)
        send_lines(port, lines)
        logs = wait_matching(gateway, "app", lambda l: l.get("app") == "myapp", len(expected))
    finally:
        agent.stop()
    # rsyslogd logs its own start notice to the default ruleset, so to loggate too
    check_syslog(logs, expected, agent, gateway, t0, own_app="rsyslogd")


# --- syslog-ng (kafka-c) ----------------------------------------------------------------

def test_syslog_ng_kafka(gateway, tmp_path):
    """syslog-ng 3.38's kafka-c() destination from config/agents/syslog-ng.conf over SASL_SSL,
    run from the private unpack of syslog-ng-core + syslog-ng-mod-rdkafka that
    tests/install-deps.sh makes (the packages conflict with rsyslog), fed RFC 5424 lines."""
    binary = SYSLOG_NG_ROOT / "usr" / "sbin" / "syslog-ng"
    modules = SYSLOG_NG_ROOT / "usr" / "lib" / "syslog-ng" / "3.38"
    need(binary, "syslog-ng-core, unpacked by tests/install-deps.sh")
    need(modules / "libkafka.so", "syslog-ng-mod-rdkafka, unpacked by tests/install-deps.sh")
    d = tmp_path / "syslog-ng"
    d.mkdir()
    (d / "loggate.conf").write_text(recipe("syslog-ng.conf", gateway))
    port = free_port()
    # what Debian's syslog-ng.conf provides around a conf.d drop-in: the version, options
    # and the source s_src (here a loopback RFC 5424 listener instead of system())
    (d / "syslog-ng.conf").write_text("\n".join([
        "@version: 3.38",
        "options { keep-hostname(yes); use-dns(no); chain-hostnames(off); stats-freq(0); };",
        'source s_src { network(ip("127.0.0.1") port(%d) transport("tcp") flags(syslog-protocol)); };' % port,
        '@include "%s/loggate.conf"' % d, ""]))
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(
        str(SYSLOG_NG_ROOT / p) for p in ("usr/lib/syslog-ng", "usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")))
    cmd = [binary, "-F", "--no-caps", "-f", d / "syslog-ng.conf", "--module-path", modules,
           "--persist-file", d / "persist", "--pidfile", d / "pid", "--control", d / "ctl"]
    r = subprocess.run([*cmd, "--syntax-only"], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, "syslog-ng --syntax-only: %s%s" % (r.stdout, r.stderr)
    agent = Agent("syslog-ng", [*cmd, "--stderr"], d, env=env)
    try:
        agent.wait_port(port)
        t0 = time.time()
        lines, expected = syslog_lines(unique_prefix("sng"), 20)
        send_lines(port, lines)
        logs = wait_matching(gateway, "app", lambda l: l.get("app") == "myapp", len(expected))
    finally:
        agent.stop()
    check_syslog(logs, expected, agent, gateway, t0)


# --- Go SDK (confluent-kafka-go) and Python SDK (confluent-kafka) -----------------------

def run_sdk_recipe(cmd, gateway, topic, lines):
    env = dict(os.environ, LOGGATE_BROKERS=gateway.bootstrap("SASL_SSL"), LOGGATE_USERNAME="demo",
               LOGGATE_PASSWORD=password("main"), LOGGATE_CA=str(gateway.ca), LOGGATE_TOPIC=topic)
    r = subprocess.run([str(c) for c in cmd], input="".join(l + "\n" for l in lines), capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, "rc=%s\n%s%s\n%s" % (r.returncode, r.stdout, r.stderr, gateway.log_text()[-3000:])


def test_go_confluent_kafka_recipe(gateway):
    """config/agents/go (confluent-kafka-go; built unchanged by tests/clients/go/build.sh
    against Debian's 0.11.6 on librdkafka 2.0.2) sends stdin lines over SASL_SSL, lz4, acks=all."""
    binary = go_binary("confluentrecipe")
    need(binary, "golang-github-confluentinc-confluent-kafka-go-dev, then tests/clients/go/build.sh")
    t0 = time.time()
    prefix = unique_prefix("go-ckg")
    expected = ["%s-%d" % (prefix, i) for i in range(200)]
    run_sdk_recipe([binary], gateway, "app", expected)
    check_stored(gateway, "app", expected, t0)


def test_python_confluent_kafka_recipe(gateway):
    """config/agents/python_confluent_kafka.py sends stdin lines over SASL_SSL (zstd,
    idempotent), to a `.json` topic: each line's keys become fields."""
    t0 = time.time()
    prefix = unique_prefix("py-ck")
    docs = [{"msg": "%s-%d" % (prefix, i), "n": i, "level": "warn"} for i in range(50)]
    run_sdk_recipe([sys.executable, RECIPES / "python_confluent_kafka.py"], gateway, "app.json",
                   [json.dumps(doc) for doc in docs])
    logs = wait_matching(gateway, "app", lambda l: str(l.get("msg", "")).startswith(prefix), len(docs))
    check_meta(logs, t0)
    got = sorted((l["msg"], l["n"], l["level"]) for l in logs)
    assert got == sorted((d["msg"], str(d["n"]), "warn") for d in docs), got


# --- APISIX kafka-logger (nginx + lua-resty-kafka) --------------------------------------

class KafkaLoggerNginx(Nginx):
    """nginx + Debian's lua-resty-kafka 0.07, driven as APISIX's kafka-logger drives it
    (tests/agents/apisix/kafka_logger.lua), configured from the recipe's plugin JSON."""

    def __init__(self, workdir, conf):
        broker = conf["brokers"][0]
        super().__init__(workdir, AGENTS_DIR / "apisix" / "nginx.conf.template", {
            "@LUA_DIR@": AGENTS_DIR / "apisix",
            "@KAFKA_HOST@": broker["host"], "@KAFKA_PORT@": broker["port"],
            "@TOPIC@": conf["kafka_topic"], "@PRODUCER_TYPE@": conf.get("producer_type", "async"),
            "@REQUIRED_ACKS@": conf.get("required_acks", 1), "@TIMEOUT@": conf.get("timeout", 3),
            "@BATCH_MAX_SIZE@": conf.get("batch_max_size", 1000),
            "@INACTIVE_TIMEOUT@": conf.get("inactive_timeout", 5)})
        self.name = "nginx"

    def text(self):
        return self.log_text(40)


def test_apisix_kafka_logger(gateway, tmp_path):
    """config/agents/apisix-kafka-logger-plaintext.json's settings (broker, topic, sync
    producer, acks, timeout, batch size) on lua-resty-kafka 0.07 against the PLAINTEXT
    listener bound to the project: access-log entries of real HTTP requests, batched as
    kafka-logger batches them (a JSON array per message), one log per entry."""
    need("/usr/share/lua/5.1/nginx/kafka/producer.lua", "lua-nginx-kafka")
    plugin = json.loads(recipe("apisix-kafka-logger-plaintext.json", gateway, proto="PLAINTEXT"))["kafka-logger"]
    # kafka-logger names a broker by host and port fields: the placeholder host:port there
    [broker] = plugin["brokers"]
    assert broker["host"] == "loggate.example.com" and "sasl_config" not in broker, broker
    broker["host"], broker["port"] = "127.0.0.1", gateway.ports["PLAINTEXT"]
    n = KafkaLoggerNginx(tmp_path / "nginx", plugin).start()
    t0 = time.time()
    prefix = unique_prefix("apisix")
    count = 130  # a full batch of batch_max_size (100) and one sent after inactive_timeout
    try:
        for i in range(count):
            with urllib.request.urlopen("http://127.0.0.1:%d/api/%s-%d?i=%d" % (n.port, prefix, i, i), timeout=10) as r:
                assert r.status == 200
        logs = wait_matching(gateway, "app", lambda l: prefix in l.get("request", ""), count, timeout=30)
    finally:
        n.stop()
    assert logs, explain(n, gateway)
    check_meta(logs, t0)
    got = []
    for l in logs:
        request = json.loads(l["request"])
        response = json.loads(l["response"])
        assert request["method"] == "GET" and response["status"] == 200, l
        assert l["client_ip"] == "127.0.0.1" and l["route_id"] == "loggate-test", l
        assert request["uri"].startswith("/api/%s-" % prefix) and request["querystring"]["i"] == request["uri"].rsplit("-", 1)[1], l
        got.append(request["uri"])
    assert sorted(got) == sorted("/api/%s-%d" % (prefix, i) for i in range(count)), "%s\n%s" % (got, explain(n, gateway))


# --- the certificate step of README "Agent settings" ------------------------------------

def tls_handshake(port, cafile, host):
    """Completes a TLS handshake with the listener on 127.0.0.1:port, verifying the chain
    against `cafile` and the certificate against `host`, as an agent dialing `host` does."""
    import ssl
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            return tls.version()


def test_cert_for_the_recipes_host(tmp_path):
    """The recipes dial loggate.example.com: the generated development certificate does not
    cover it, one made by `loggate cert --out DIR --host loggate.example.com` (README) does."""
    import ssl
    from gateway import BIN, Gateway
    for sub in ("dev", "gw"):
        (tmp_path / sub).mkdir()
    dev = Gateway(tmp_path / "dev").start()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_handshake(dev.ports["SASL_SSL"], dev.ca, "loggate.example.com")
        assert tls_handshake(dev.ports["SASL_SSL"], dev.ca, "localhost")
    finally:
        dev.stop()
    out = tmp_path / "certs"
    r = subprocess.run([str(BIN), "cert", "--out", str(out), "--host", "loggate.example.com"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    gw = Gateway(tmp_path / "gw", extra_config='[tls]\ncert = "%s"\nkey = "%s"' % (out / "server.pem", out / "server.key")).start()
    try:
        for proto in ("SASL_SSL", "SSL"):
            assert tls_handshake(gw.ports[proto], out / "ca.pem", "loggate.example.com")
            with pytest.raises(ssl.SSLCertVerificationError):
                tls_handshake(gw.ports[proto], out / "ca.pem", "other.example.com")
    finally:
        gw.stop()
