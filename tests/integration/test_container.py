"""What the container image runs, without a Docker engine: the Dockerfile's final stage is
read here (ENV, USER, EXPOSE, VOLUME, COPY, ENTRYPOINT, CMD, HEALTHCHECK) and the same
release binary runs its entrypoint and command with that environment, as its numeric user,
on a copy of the image's files (its volumes under a temporary root)."""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

import wire
from gateway import BIN, ROOT, free_port


def dockerfile_final_stage():
    """{instruction: [arguments, ...]} of the Dockerfile's last stage."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#") and not current:
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    stages = [[]]
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    stage = {}
    for word, rest in stages[-1]:
        stage.setdefault(word, []).append(rest)
    return stage


class Image:
    """The image's filesystem (its COPY'd files and volumes) under a temporary root, and
    how it runs."""

    def __init__(self):
        stage = dockerfile_final_stage()
        self.stage = stage
        self.env_spec = {}
        for rest in stage.get("ENV", []):
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                self.env_spec[key] = value
        self.user = stage["USER"][-1]
        self.volumes = [v for rest in stage.get("VOLUME", []) for v in json.loads(rest)]
        self.exposed = [int(p.split("/")[0]) for rest in stage.get("EXPOSE", []) for p in rest.split()]
        self.entrypoint = json.loads(stage["ENTRYPOINT"][-1])
        self.cmd = json.loads(stage["CMD"][-1])
        options, _, command = stage["HEALTHCHECK"][-1].partition("CMD")
        self.health_options = options.split()
        self.health_cmd = json.loads(command.strip())
        self.root = Path(tempfile.mkdtemp(prefix="loggate-image-"))
        os.chmod(self.root, 0o755)
        uid, gid = (int(x) for x in self.user.split(":"))
        self.uid, self.gid = uid, gid
        for v in self.volumes:
            self.path(v).mkdir(parents=True, exist_ok=True)
        for rest in stage.get("COPY", []):
            args = shlex.split(rest)
            if any(a.startswith("--from") for a in args):
                # The build stage's binary: the release binary these tests run, copied so
                # that the image's user can run it wherever the checkout is.
                sources, dest = args[1:-1], args[-1]
                assert sources == ["/src/target/release/loggate"], sources
                self.path(dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(BIN, self.path(dest))
                os.chmod(self.path(dest), 0o755)
                continue
            sources, dest = args[:-1], args[-1]
            for src in sources:
                target = self.path(dest) / Path(src).name if dest.endswith("/") else self.path(dest)
                target.parent.mkdir(parents=True, exist_ok=True)
                text = (ROOT / src).read_text()
                # The image's absolute paths, under this root.
                for v in self.volumes:
                    text = text.replace('"%s' % v, '"%s' % self.path(v))
                target.write_text(text)
        for d in self.root.rglob("*"):
            if d.is_dir():
                os.chmod(d, 0o755)
        if os.getuid() == 0:
            os.chown(self.path("/data"), uid, gid)

    def path(self, image_path):
        return self.root / str(image_path).lstrip("/")

    def env(self, **extra):
        """The Dockerfile's ENV (paths under the root), plus `docker run -e` variables."""
        env = {"PATH": "%s:/usr/bin:/bin" % self.path("/usr/local/bin"), "RUST_LOG": "info"}
        for key, value in self.env_spec.items():
            if any(value == v or value.startswith(v + "/") for v in self.volumes):
                value = str(self.root) + value
            env[key] = value
        for key, value in extra.items():
            if isinstance(value, str) and value.startswith("/") and any(value.startswith(v) for v in self.volumes):
                value = str(self.root) + value
            env[key] = value
        return env

    def as_user(self, argv):
        """The command as the image's USER (setpriv when the tests run as root)."""
        if os.getuid() != 0:
            return list(argv)
        return ["setpriv", "--reuid=%d" % self.uid, "--regid=%d" % self.gid, "--clear-groups", *argv]

    def run(self, argv, env, **kw):
        # The image has no WORKDIR: commands run in /.
        return subprocess.run(self.as_user(argv), env=env, capture_output=True, text=True, timeout=60, cwd="/", **kw)

    def start(self, env):
        """`docker run`: the entrypoint with the default command."""
        self.stderr = open(self.root / "loggate.stderr", "ab")
        return subprocess.Popen(self.as_user(self.entrypoint + self.cmd), env=env, stdout=subprocess.DEVNULL,
                                stderr=self.stderr, cwd="/")

    def log(self):
        return (self.root / "loggate.stderr").read_text(errors="replace")

    def health(self, env):
        return self.run(self.health_cmd, env)

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def image():
    img = Image()
    yield img
    img.cleanup()


def wait_port(port, proc, img, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, img.log()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("not listening: " + img.log())


def wait_healthy(img, env, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if img.health(env).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError("never healthy: " + img.log())


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_the_image_runs_as_a_numeric_user_with_volumes_ports_and_a_healthcheck(image):
    assert image.user == "10001:10001"
    assert {"/etc/loggate", "/data"} <= set(image.volumes)
    assert image.health_cmd[:2] == ["loggate", "health"]
    assert image.entrypoint == ["loggate"] and image.cmd == ["serve"]
    # What the image's configuration serves (check-config, with the image's environment):
    # every interface, on the exposed ports, advertising what the environment says.
    env = image.env(LOGGATE_ADVERTISED="logs.example.com:10012")
    no_cert = image.run(["loggate", "check-config"], env)
    assert no_cert.returncode != 0
    assert "etc/loggate/tls/server.pem does not exist" in no_cert.stderr
    mount_certificates(image)
    out = image.run(["loggate", "check-config"], env)
    assert out.returncode == 0, out.stderr
    assert "SASL_SSL bind 0.0.0.0:10012 advertised logs.example.com:10012" in out.stdout
    assert "metrics: http://0.0.0.0:9644/metrics" in out.stdout
    assert set(image.exposed) == {10012, 9644}
    assert "access keys:\n  (none)" in out.stdout
    # Without an advertised address it does not start: clients would be sent to 0.0.0.0.
    no_adv = image.run(["loggate", "check-config"], image.env())
    assert no_adv.returncode != 0
    assert "LOGGATE_ADVERTISED" in no_adv.stderr


def mount_certificates(image):
    """What an operator mounts on /etc/loggate/tls: a certificate for localhost, readable by
    the image's user. Returns the CA file clients trust."""
    tls_dir = image.path("/etc/loggate/tls")
    subprocess.run([str(BIN), "cert", "--out", str(tls_dir), "--host", "localhost", "--host", "127.0.0.1"], check=True)
    if os.getuid() == 0:
        for f in tls_dir.iterdir():
            os.chown(f, image.uid, image.gid)
    return tls_dir / "ca.pem"


def sasl_conf(bootstrap, ca, password, username="demo"):
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
            "sasl.username": username, "sasl.password": password, "ssl.ca.location": str(ca)}


def metadata(conf):
    return AdminClient(conf).list_topics(timeout=10)


DEMO_PASSWORD = "LGDEMOACCESSKEY#demo-secret-replace-me"


def test_image_serves_with_the_environment_and_mounted_certificates(image):
    port, metrics = free_port(), free_port()
    # What an operator mounts: certificates under /etc/loggate/tls, their own project and
    # key in /etc/loggate/loggate.toml (as its comments say).
    ca = mount_certificates(image)
    keys = subprocess.run([str(BIN), "keygen", "--allow", "shop/*", "--id", "LGSHOPKEY", "--secret", "shop-secret"],
                          check=True, capture_output=True, text=True).stdout
    config = image.path("/etc/loggate/loggate.toml")
    config.write_text(config.read_text() + '\n[[projects]]\nname = "shop"\n[[projects.logstores]]\nname = "orders"\n'
                      + "".join(l + "\n" for l in keys.splitlines() if not l.startswith("#")))
    # `docker run -e ...`: the advertised address, and loopback ports for this test.
    env = image.env(LOGGATE_ADVERTISED="localhost:%d" % port, LOGGATE_BIND="127.0.0.1:%d" % port,
                    LOGGATE_METRICS_BIND="127.0.0.1:%d" % metrics)
    assert image.health(env).returncode != 0, "nothing runs yet"
    proc = image.start(env)
    try:
        wait_port(port, proc, image)
        wait_healthy(image, env)
        assert image.run(image.health_cmd + ["--live"], env).returncode == 0
        # Not as root: the process runs as the image's user.
        if os.getuid() == 0:
            status = Path("/proc/%d/status" % proc.pid).read_text()
            assert "\nUid:\t10001\t" in status, status
        # Metadata sends clients to the advertised address from the environment.
        md = metadata(sasl_conf("127.0.0.1:%d" % port, ca, "LGSHOPKEY#shop-secret", "shop"))
        assert [(b.host, b.port) for b in md.brokers.values()] == [("localhost", port)]
        assert "orders" in md.topics
        p = Producer({**sasl_conf("127.0.0.1:%d" % port, ca, "LGSHOPKEY#shop-secret", "shop"), "acks": "all"})
        errors = []
        p.produce("orders", value=b"order-1", on_delivery=lambda e, m: e and errors.append(e))
        assert p.flush(20) == 0 and errors == []
        # The demo key is not there unless asked for.
        with pytest.raises(KafkaException):
            metadata(sasl_conf("127.0.0.1:%d" % port, ca, DEMO_PASSWORD))
        # Metrics are served.
        with socket.create_connection(("127.0.0.1", metrics), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200")
        assert b"loggate_logs_written_total" in answer
        # While it drains a request on SIGTERM it is not ready; the healthcheck says so.
        sock = wire.connect(port, tls_ca=ca, server_hostname="localhost")
        sock.sendall(b"\x00\x00\x00\x40\x00\x11")  # a request that has begun to arrive
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None
        assert image.health(env).returncode == 1
        sock.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert image.health(env).returncode != 0
    logs = image.run(["loggate", "logs", "--project", "shop", "--logstore", "orders"], env)
    assert logs.returncode == 0, logs.stderr
    assert [json.loads(l)["content"] for l in logs.stdout.splitlines()] == ["order-1"]


def test_the_demo_key_works_only_with_the_demo_config(image):
    port, metrics = free_port(), free_port()
    env = image.env(LOGGATE_CONFIG="/etc/loggate/demo.toml", LOGGATE_ADVERTISED="localhost:%d" % port,
                    LOGGATE_BIND="127.0.0.1:%d" % port, LOGGATE_METRICS_BIND="127.0.0.1:%d" % metrics)
    proc = image.start(env)
    try:
        wait_port(port, proc, image)
        wait_healthy(image, env)
        # The development certificate was generated in the data volume, for the advertised host.
        ca = image.path("/data/tls/ca.pem")
        conf = sasl_conf("localhost:%d" % port, ca, DEMO_PASSWORD)
        p = Producer({**conf, "acks": "all"})
        errors = []
        p.produce("app", value=b"hello from the demo", on_delivery=lambda e, m: e and errors.append(e))
        assert p.flush(20) == 0 and errors == []
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logs = image.run(["loggate", "logs", "--project", "demo", "--logstore", "app"], env)
    assert logs.returncode == 0, logs.stderr
    assert [json.loads(l)["content"] for l in logs.stdout.splitlines()] == ["hello from the demo"]


def test_the_demo_certificate_covers_the_advertised_host(image):
    """As in docker/compose.yaml: clients dial the service name `loggate`, which the
    generated certificate must name for their hostname verification to pass."""
    import ssl
    port, metrics = free_port(), free_port()
    env = image.env(LOGGATE_CONFIG="/etc/loggate/demo.toml", LOGGATE_ADVERTISED="loggate:%d" % port,
                    LOGGATE_BIND="127.0.0.1:%d" % port, LOGGATE_METRICS_BIND="127.0.0.1:%d" % metrics)
    proc = image.start(env)
    try:
        wait_port(port, proc, image)
        ctx = ssl.create_default_context(cafile=str(image.path("/data/tls/ca.pem")))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="loggate") as tls:
                assert tls.version()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                ctx.wrap_socket(raw, server_hostname="elsewhere.example")
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
