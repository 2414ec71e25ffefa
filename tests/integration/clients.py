"""Shared helpers for the real-client integration tests (sarama, kafka-go, kafkajs,
lua-resty-kafka): where the client programs are, running them, and the checks every
test makes on what loggate stored."""

import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections import defaultdict

import pytest

from gateway import PROJECTS, ROOT, free_port

CLIENTS = ROOT / "tests" / "clients"
GO_DIR = CLIENTS / "go"
NODE_DIR = CLIENTS / "node"
LUA_DIR = CLIENTS / "lua"

_go_built = False


def go_binary(name):
    """Path of a Go test program, (re)built once per session with tests/clients/go/build.sh
    (a cached GOPATH build: about a second when nothing changed)."""
    global _go_built
    if not _go_built:
        r = subprocess.run([str(GO_DIR / "build.sh")], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.fail("tests/clients/go/build.sh failed (run tests/install-deps.sh?):\n%s%s" % (r.stdout, r.stderr))
        _go_built = True
    return GO_DIR / "bin" / name


def node_script():
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail("kafkajs is not installed: run `npm ci` in tests/clients/node (tests/install-deps.sh does)")
    return NODE_DIR / "produce.js"


def unique_prefix(name):
    return "%s-%s" % (name, uuid.uuid4().hex[:10])


def run_client(cmd, timeout=60, **kw):
    """Runs a client program; returns its CompletedProcess (text)."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def describe(proc, gw):
    """Failure text: the client's output and the tail of loggate's log."""
    return "client rc=%s\n--- stdout\n%s\n--- stderr\n%s\n--- loggate.stderr (tail)\n%s" % (
        proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:], "\n".join(gw.log_text().splitlines()[-40:]))


def shard_count(logstore, project="demo"):
    return {name: shards for name, shards, _ in PROJECTS[project]}[logstore]


def check_stored(gw, logstore, expected_values, t0, project="demo", key=None, headers=None, source_ip="127.0.0.1"):
    """Waits for the logstore to hold len(expected_values) logs, then asserts:
    - the stored `content` values are exactly `expected_values`, each exactly once;
    - meta fields: project, logstore, shard in range, offsets unique per shard,
      times plausible, source is the client's address; key/headers as given
      (None: expect the field absent).
    Returns the logs."""
    logs = gw.wait_logs(logstore, len(expected_values), project=project, timeout=20)
    # let a late duplicate show up before comparing
    time.sleep(0.2)
    logs = gw.logs(logstore, project)
    got = sorted(l.get("content") for l in logs)
    assert got == sorted(expected_values), "stored contents differ:\nmissing %s\nunexpected %s" % (
        sorted(set(expected_values) - set(got)), sorted(set(g for g in got if got.count(g) > 1 or g not in expected_values)))
    shards = shard_count(logstore, project)
    now_ms = time.time() * 1000
    seen = defaultdict(set)
    for l in logs:
        assert l["__project__"] == project, l
        assert l["__logstore__"] == logstore, l
        assert 0 <= l["__shard__"] < shards, l
        assert isinstance(l["__offset__"], int) and l["__offset__"] >= 0, l
        assert l["__offset__"] not in seen[l["__shard__"]], "offset repeated in shard: %s" % l
        seen[l["__shard__"]].add(l["__offset__"])
        assert t0 * 1000 - 60_000 <= l["__arrival_time_ms__"] <= now_ms + 1000, l
        # event time: the record's timestamp (client clock) or the arrival time
        assert t0 * 1000 - 60_000 <= l["__time_ms__"] <= now_ms + 60_000, l
        assert str(l["__source__"]).startswith(source_ip + ":"), l
        if key is None:
            assert "__key__" not in l, l
        else:
            assert l.get("__key__") == key, l
        if headers is None:
            assert "__headers__" not in l, l
        else:
            assert l.get("__headers__") == headers, l
    # offsets of one shard are dense from 0 in a fresh gateway
    for shard, offsets in seen.items():
        assert sorted(offsets) == list(range(len(offsets))), "shard %d offsets not dense: %s" % (shard, sorted(offsets))
    return logs


def by_value(logs):
    return {l["content"]: l for l in logs}


class Nginx:
    """An nginx (with the Lua module) of its own, from a config template whose @TOKEN@s are
    replaced by `values` and @HTTP_PORT@ by a free port; it must answer GET /ping."""

    def __init__(self, workdir, template, values):
        self.dir = workdir
        self.port = free_port()
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        text = template.read_text()
        for token, value in dict(values, **{"@HTTP_PORT@": self.port}).items():
            text = text.replace(token, str(value))
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(text)
        self.error_log = workdir / "error.log"
        self.proc = None

    def start(self):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.error_log)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited:\n" + self.log_text())
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/ping" % self.port, timeout=1).read()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start:\n" + self.log_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self, lines=200):
        """The last `lines` lines of its error log."""
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
