"""Graceful shutdown: on SIGTERM the gateway stops accepting, answers what it has read,
flushes and exits 0 within `shutdown_timeout_secs`; producers under load reconnect to the
restarted gateway by themselves and every record is stored exactly once."""

import signal
import socket
import struct
import subprocess
import threading
import time

import pytest
from confluent_kafka import Producer

import wire
from gateway import BIN, Gateway, contents, password


def sigterm(gw):
    """Sends SIGTERM; returns the process, still to be waited for."""
    proc = gw.proc
    proc.send_signal(signal.SIGTERM)
    return proc


@pytest.mark.parametrize("acks", ["all", "1"])
def test_sigterm_under_load_loses_nothing_and_producers_reconnect(tmp_path, acks):
    gw = Gateway(tmp_path, limits={"shutdown_timeout_secs": 10}).start()
    total = 6000
    values = ["acks%s-%05d" % (acks, i) for i in range(total)]
    delivered, failed = [], []
    conf = {
        "bootstrap.servers": gw.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.username": "demo", "sasl.password": password("main"), "ssl.ca.location": str(gw.ca),
        "acks": acks, "linger.ms": 2, "batch.num.messages": 50, "message.timeout.ms": 120000,
        "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
    }
    if acks == "all":
        conf["enable.idempotence"] = True
    producer = Producer(conf)

    def report(err, msg):
        (failed if err else delivered).append(err or msg.value().decode())

    def produce():
        for i, v in enumerate(values):
            while True:
                try:
                    producer.produce("app", value=v, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 20 == 0:
                producer.poll(0)
                time.sleep(0.002)  # a steady stream of requests, so the signal lands mid-load

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while len(delivered) < total // 4 and time.time() < deadline:
        time.sleep(0.02)
    acked_before = len(delivered)
    assert 0 < acked_before < total, "the stop must land mid-load"

    start = time.time()
    proc = sigterm(gw)
    assert proc.wait(timeout=20) == 0
    stop_took = time.time() - start
    first_log = gw.log_text()
    assert "shutting down" in first_log
    assert "every connection answered and closed" in first_log
    assert stop_took < 10, stop_took
    # Records produced meanwhile wait in the producer; it reconnects to the new process.
    time.sleep(1)
    gw.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert producer.flush(120) == 0
    assert failed == []
    assert sorted(delivered) == values
    logs = gw.wait_logs("app", total, timeout=30)
    gw.stop()
    # Every record once: none lost across the stop, none written twice by a retry.
    assert contents(logs) == values
    assert len(delivered) > acked_before


def test_stop_refuses_new_connections_and_answers_a_request_being_read(tmp_path):
    gw = Gateway(tmp_path, limits={"shutdown_timeout_secs": 20, "request_timeout_secs": 30}).start()
    port = gw.ports["PLAINTEXT"]
    sock = wire.connect(port)
    frame = wire.produce_v3("one", [(0, wire.batch_v2([b"in-flight-at-stop"]))], acks=-1, correlation_id=7)
    sock.sendall(frame[:30])  # the request has begun to arrive
    time.sleep(0.3)
    proc = sigterm(gw)
    time.sleep(1)
    assert proc.poll() is None, "it waits for the request being read"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert gw.http_get("/readyz")[0] == 503
    assert gw.http_get("/healthz")[0] == 200
    sock.sendall(frame[30:])
    corr, [(_, _, error, offset)] = wire.parse_produce_v2_response(wire.read_frame(sock))
    assert (corr, error, offset) == (7, 0, 0)
    # Answered, the connection is closed by the server, which then exits.
    assert wire.is_closed(sock)
    assert proc.wait(timeout=10) == 0
    gw.start()
    logs = gw.logs("one")
    gw.stop()
    assert contents(logs) == ["in-flight-at-stop"]


def api_versions(correlation_id):
    return wire.request(18, 0, correlation_id, b"")


def test_deadline_drops_a_client_that_never_reads_its_answers(tmp_path):
    timeout = 2
    gw = Gateway(tmp_path, limits={"shutdown_timeout_secs": timeout, "request_timeout_secs": 120,
                                   "idle_timeout_secs": 120}).start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.ports["PLAINTEXT"]))
    requests = b"".join(api_versions(i) for i in range(100_000))

    def send():
        try:
            sock.sendall(requests)
        except OSError:
            pass  # the server stops reading, then drops the connection

    threading.Thread(target=send, daemon=True).start()
    # The answers pile up unread until the server cannot write more.
    time.sleep(2)
    assert gw.alive()
    start = time.time()
    proc = sigterm(gw)
    assert proc.wait(timeout=30) == 0
    took = time.time() - start
    assert timeout <= took < timeout + 4, took
    assert "still open at the shutdown deadline" in gw.log_text()
    sock.close()
    # A well-behaved client still reaches the restarted gateway.
    gw.start()
    ok = wire.connect(gw.ports["PLAINTEXT"])
    ok.sendall(api_versions(1))
    corr, error = struct.unpack(">ih", wire.read_frame(ok)[:6])
    ok.close()
    gw.stop()
    assert (corr, error) == (1, 0)


def test_sigterm_while_starting_exits_in_order(tmp_path):
    """A stop that comes while the gateway still waits for its storage (here a ClickHouse
    that accepts connections and never answers) ends the start at once, exit code 0."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # never accepted: every request waits
    try:
        gw = Gateway(tmp_path, storage={"backend": '"clickhouse"'},
                     extra_config="[clickhouse]\nurls = [\"http://127.0.0.1:%d\"]\ntimeout_secs = 60\n"
                                  % silent.getsockname()[1])
        gw.stderr = open(gw.stderr_path, "ab")
        proc = subprocess.Popen([str(BIN), "serve", "--config", str(gw.config)], stdout=subprocess.DEVNULL,
                                stderr=gw.stderr)
        deadline = time.time() + 20
        while "RLIMIT_NOFILE" not in gw.log_text() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        assert proc.poll() is None, gw.log_text()
        start = time.time()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, gw.log_text()
        assert time.time() - start < 5
        assert "stopped while starting" in gw.log_text()
    finally:
        silent.close()
