"""Start a real loggate process for a test and read back what it stored."""

import hashlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("LOGGATE_BIN", ROOT / "target" / "release" / "loggate"))

# Access keys used by the tests: (id, secret, allow-list).
KEYS = {
    "main": ("LGTESTMAIN", "main-secret#with-hash", ["demo/*"]),
    "limited": ("LGTESTLIMITED", "limited-secret", ["demo/app"]),
    "ops": ("LGTESTOPS", "ops-secret", ["ops/*"]),
}

# project -> [(logstore, shards, routing)]
PROJECTS = {
    "demo": [("app", 2, "round_robin"), ("pinned", 3, "partition"), ("one", 1, "round_robin"), ("other", 1, "round_robin")],
    "ops": [("sys", 1, "round_robin")],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """`n` distinct free loopback ports (held together while picked, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


PROTOCOLS = ("SASL_SSL", "SASL_PLAINTEXT", "SSL", "PLAINTEXT")


def secret_hash(secret):
    salt = os.urandom(16)
    return "sha256:%s:%s" % (salt.hex(), hashlib.sha256(salt + secret.encode()).hexdigest())


def password(key="main"):
    key_id, secret, _ = KEYS[key]
    return "%s#%s" % (key_id, secret)


def rdkafka_conf(gw, proto="SASL_SSL", user="demo", key="main", mechanism="PLAIN", **extra):
    """librdkafka (confluent-kafka) settings for `gw`'s `proto` listener: SASL with `user` and
    access key `key` (a KEYS name, or an (id, secret) pair) where the listener has SASL, the
    test CA where it has TLS; `extra` settings on top (e.g. **{"linger.ms": 5})."""
    conf = {"bootstrap.servers": gw.bootstrap(proto), "security.protocol": proto}
    if proto.startswith("SASL_"):
        pw = password(key) if isinstance(key, str) else "%s#%s" % key
        conf.update({"sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": pw})
    if proto.endswith("SSL"):
        conf["ssl.ca.location"] = str(gw.ca)
    conf.update(extra)
    return conf


class Gateway:
    """A loggate server on loopback with SASL_SSL, SASL_PLAINTEXT, SSL and PLAINTEXT listeners."""

    def __init__(self, workdir, limits=None, storage=None, logstore_options=None, data=None, advertised=None,
                 node_id=None, extra_config="", ports=None, metrics_port=None, project_options=None, key_options=None,
                 extra_logstores=()):
        """`storage`: the [storage] table (raw TOML values, e.g. {"backend": '"clickhouse"'});
        `logstore_options`: extra keys per demo logstore, e.g. {"one": {"retention_bytes": 20000}};
        `data`: the data directory; `advertised`: protocol -> "host:port" that Metadata
        advertises; `node_id`: this node's id; `extra_config`: TOML appended to the file (whole
        tables such as [clickhouse] or [cluster]); `ports`/`metrics_port`: fixed ports (protocol ->
        port) instead of free ones, e.g. for a cluster whose nodes must know each other's;
        `project_options`/`key_options`: extra keys per project / per KEYS name, e.g.
        {"ops": {"quota_bytes_per_sec": 1000}}; `extra_logstores`: more demo logstores, as
        (name, shards, routing), whose options `logstore_options` may give too."""
        self.dir = Path(workdir)
        self.data = Path(data) if data else self.dir / "data"
        self.storage = storage or {}
        self.logstore_options = logstore_options or {}
        self.config = self.dir / "loggate.toml"
        picked = free_ports(len(PROTOCOLS) + 1)
        self.ports = dict(ports) if ports else dict(zip(PROTOCOLS, picked))
        self.metrics_port = metrics_port or next(p for p in picked[::-1] if p not in self.ports.values())
        self.node_id = node_id
        self.extra_config = extra_config
        self.project_options = project_options or {}
        self.key_options = key_options or {}
        self.extra_logstores = list(extra_logstores)
        self.ca = self.data / "tls" / "ca.pem"
        self.limits = {"auth_failure_delay_ms": 50, "auth_timeout_secs": 5}
        self.limits.update(limits or {})
        self.advertised = advertised or {}  # protocol -> "host:port" Metadata advertises
        self._write_config()
        self.proc = None
        self.stderr_path = self.dir / "loggate.stderr"

    def _write_config(self):
        lines = ['data_dir = "%s"' % self.data]
        if self.node_id is not None:
            lines.append("node_id = %d" % self.node_id)
        for proto, port in self.ports.items():
            lines += ["[[listeners]]", 'bind = "127.0.0.1:%d"' % port, 'protocol = "%s"' % proto]
            if "SASL" not in proto:
                lines.append('project = "demo"')
            if proto in self.advertised:
                lines.append('advertised = "%s"' % self.advertised[proto])
        lines += ["[metrics]", 'bind = "127.0.0.1:%d"' % self.metrics_port]
        lines.append("[limits]")
        for k, v in self.limits.items():
            lines.append("%s = %s" % (k, v))
        if self.storage:
            lines.append("[storage]")
            lines += ["%s = %s" % kv for kv in self.storage.items()]
        for project, stores in PROJECTS.items():
            lines += ["[[projects]]", 'name = "%s"' % project]
            lines += ["%s = %s" % kv for kv in self.project_options.get(project, {}).items()]
            for name, shards, routing in stores + (self.extra_logstores if project == "demo" else []):
                lines += ["[[projects.logstores]]", 'name = "%s"' % name, "shards = %d" % shards, 'routing = "%s"' % routing]
                if project == "demo":
                    lines += ["%s = %s" % kv for kv in self.logstore_options.get(name, {}).items()]
        for name, (key_id, secret, allow) in KEYS.items():
            lines += ["[[access_keys]]", 'id = "%s"' % key_id, 'secret_hash = "%s"' % secret_hash(secret), "allow = %s" % json.dumps(allow)]
            lines += ["%s = %s" % kv for kv in self.key_options.get(name, {}).items()]
        if self.extra_config:
            lines.append(self.extra_config)
        self.config.write_text("\n".join(lines) + "\n")

    def bootstrap(self, proto="SASL_SSL"):
        return "127.0.0.1:%d" % self.ports[proto]

    def start(self, attempts=3):
        """Starts loggate; picks new ports when another process took one meanwhile."""
        for attempt in range(attempts):
            try:
                return self._start_once()
            except RuntimeError as e:
                if ("cannot listen" not in str(e) and "bound twice" not in str(e)) or attempt == attempts - 1:
                    raise
                picked = free_ports(len(self.ports) + 1)
                self.ports = dict(zip(self.ports, picked))
                self.metrics_port = picked[-1]
                self._write_config()

    # What the process is started under (e.g. ["taskset", "-c", "0"]), and extra environment.
    command_prefix = ()
    extra_env = {}
    default_log_level = "info"

    def _start_once(self):
        self.stderr = open(self.stderr_path, "ab")
        cmd = [*self.command_prefix, str(BIN), "serve", "--config", str(self.config)]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", self.default_log_level), **self.extra_env)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr, env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("loggate exited: " + self.log_text())
            try:
                for port in [*self.ports.values(), self.metrics_port]:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("loggate did not start: " + self.log_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def http_get(self, path):
        """(status, body text) of a GET on the metrics endpoint."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.metrics_port, path), timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        """Every sample of /metrics: {(name, ((label, value), ...)): value}, labels sorted."""
        status, text = self.http_get("/metrics")
        assert status == 200, text
        samples = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            series, value = line.rsplit(" ", 1)
            name, _, labels = series.partition("{")
            pairs = [kv.split("=", 1) for kv in labels.rstrip("}").split(",") if kv]
            samples[(name, tuple(sorted((k, v.strip('"')) for k, v in pairs)))] = float(value)
        return samples

    def metric(self, name, **labels):
        """One sample of /metrics (0 when the series does not exist yet)."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def logs_cmd(self, logstore, project="demo", shard=None, args=()):
        """The `loggate logs` command line for a logstore."""
        cmd = [str(BIN), "logs", "--config", str(self.config), "--project", project, "--logstore", logstore]
        if shard is not None:
            cmd += ["--shard", str(shard)]
        return cmd + [str(a) for a in args]

    def logs(self, logstore, project="demo", shard=None, args=()):
        """Stored logs of a logstore (all, or as `args` select), as `loggate logs` prints them."""
        out = subprocess.run(self.logs_cmd(logstore, project, shard, args), check=True, capture_output=True,
                             timeout=120).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_logs(self, logstore, count, project="demo", timeout=30):
        """Logs of a logstore once at least `count` arrived (or whatever is there at timeout)."""
        deadline = time.time() + timeout
        while True:
            logs = self.logs(logstore, project)
            if len(logs) >= count or time.time() > deadline:
                return logs
            time.sleep(0.2)


def contents(logs, field="content"):
    return sorted(l.get(field) for l in logs)


def scram_credential(mechanism, pw, iterations=4096, salt=None):
    """The `scram_sha256`/`scram_sha512` value of an access key for `pw` (what `loggate keygen`
    prints), derived here with Python's hashlib (RFC 5802 section 3), independently of
    loggate's own code. Use as key_options={"main": {"scram_sha256": scram_credential(...)}}."""
    import base64
    import hmac
    name = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    salt = salt if salt is not None else os.urandom(24)
    salted = hashlib.pbkdf2_hmac(name, pw.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", name).digest()
    stored_key = hashlib.new(name, client_key).digest()
    server_key = hmac.new(salted, b"Server Key", name).digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return '"%d:%s:%s:%s"' % (iterations, b64(salt), b64(stored_key), b64(server_key))
