"""Start, stop and restart: acknowledged logs survive SIGTERM and SIGKILL; keygen output
works as printed."""

import re
import signal
import subprocess

from confluent_kafka import Producer

from gateway import BIN, Gateway, contents, password


def produce_all(gw, values, acks):
    errors = []
    p = Producer({"bootstrap.servers": gw.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
                  "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": password("main"),
                  "ssl.ca.location": str(gw.ca), "acks": acks, "linger.ms": 1})
    for v in values:
        p.produce("app", value=v, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0 and errors == []


def test_acknowledged_logs_survive_kill_and_offsets_continue(tmp_path):
    gw = Gateway(tmp_path).start()
    first = ["before-kill-%d" % i for i in range(200)]
    produce_all(gw, first, "all")
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait()
    gw.start()
    second = ["after-restart-%d" % i for i in range(50)]
    produce_all(gw, second, "all")
    logs = gw.wait_logs("app", 250)
    gw.stop()
    assert contents(logs) == sorted(first + second)
    for shard in (0, 1):
        offsets = sorted(l["__offset__"] for l in logs if l["__shard__"] == shard)
        assert offsets == list(range(len(offsets)))


def test_sigterm_is_a_graceful_stop(tmp_path):
    gw = Gateway(tmp_path).start()
    produce_all(gw, ["graceful-%d" % i for i in range(20)], "1")
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=15) == 0
    assert "shutting down" in gw.log_text()
    gw.start()
    assert len(gw.logs("app")) == 20
    gw.stop()


def test_keygen_prints_a_working_key(tmp_path):
    out = subprocess.run([str(BIN), "keygen", "--allow", "demo/one"], check=True, capture_output=True, text=True).stdout
    secret = re.search(r"AccessKeySecret: (\S+)", out).group(1)
    key_id = re.search(r"AccessKeyId:\s+(\S+)", out).group(1)
    config_lines = "\n".join(l for l in out.splitlines() if not l.startswith("#"))
    assert secret not in config_lines
    gw = Gateway(tmp_path)
    gw.config.write_text(gw.config.read_text() + config_lines + "\n")
    gw.start()
    try:
        p = Producer({"bootstrap.servers": gw.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL",
                      "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": "%s#%s" % (key_id, secret),
                      "ssl.ca.location": str(gw.ca)})
        errors = []
        p.produce("one", value=b"from-new-key", on_delivery=lambda e, m: e and errors.append(e))
        assert p.flush(30) == 0 and errors == []
        assert contents(gw.wait_logs("one", 1)) == ["from-new-key"]
    finally:
        gw.stop()


def test_default_config_starts_and_banner_command_works(tmp_path):
    """The README's first command: the shipped config, with the printed kcat line."""
    root = BIN.parents[2]
    proc = subprocess.Popen([str(BIN), "serve", "--config", str(root / "config" / "loggate.toml"),
                             "--data-dir", str(tmp_path / "data")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, "server exited: " + proc.stderr.read()
            lines.append(line)
            if line.startswith("Read it back"):
                lines.append(proc.stdout.readline())
                break
        kcat_line = next(l for l in lines if "kcat -P" in l).strip()
        run = subprocess.run(kcat_line, shell=True, capture_output=True, timeout=60, cwd=str(root))
        assert run.returncode == 0, run.stderr
        logs_cmd = lines[-1].strip().replace("loggate ", str(BIN) + " ", 1)
        out = subprocess.run(logs_cmd, shell=True, capture_output=True, text=True, timeout=60, cwd=str(root)).stdout
        assert '"content":"hello loggate"' in out
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_logs_follow_prints_new_logs_as_they_arrive(tmp_path):
    gw = Gateway(tmp_path).start()
    follower = subprocess.Popen([str(BIN), "logs", "--config", str(gw.config), "--project", "demo",
                                 "--logstore", "app", "--follow"], stdout=subprocess.PIPE, text=True)
    try:
        produce_all(gw, ["followed-1"], "1")
        first = follower.stdout.readline()
        produce_all(gw, ["followed-2"], "1")
        second = follower.stdout.readline()
        assert '"content":"followed-1"' in first and '"content":"followed-2"' in second
        assert follower.poll() is None  # still following
    finally:
        follower.kill()
        follower.wait()
        gw.stop()
