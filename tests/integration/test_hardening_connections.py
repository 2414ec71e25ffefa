"""Issue 11, defects 3 and 11: connections that announce big frames and send nothing,
unauthenticated sockets, slowloris senders and descriptor exhaustion must not stall or
kill the gateway for the producers that behave."""

import resource
import select
import socket
import struct
import time
import uuid

from confluent_kafka import Producer

from clients import check_stored
from gateway import Gateway, password
from wire import connect, is_closed, message_v1, parse_produce_v2_response, produce_v2, read_frame, request


def raise_own_fd_limit(n):
    """The test itself opens hundreds of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def plaintext(gw):
    return {"bootstrap.servers": gw.bootstrap("PLAINTEXT"), "security.protocol": "PLAINTEXT"}


def sasl_plaintext(gw):
    return {"bootstrap.servers": gw.bootstrap("SASL_PLAINTEXT"), "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": "demo", "sasl.password": password("main")}


def values(n, tag):
    run = uuid.uuid4().hex[:8]
    return ["%s-%s-%d" % (tag, run, i) for i in range(n)]


class Writer:
    """A confluent-kafka producer that records what was acknowledged."""

    def __init__(self, conf, timeout_ms=5000):
        self.delivered, self.errors = [], []
        self.p = Producer(dict({"message.timeout.ms": timeout_ms, "linger.ms": 5}, **conf))

    def _report(self, err, msg):
        if err is not None:
            self.errors.append(str(err))
        else:
            self.delivered.append(msg.value().decode())

    def write(self, topic, vals, timeout=10):
        """Produces vals and waits; returns the seconds it took."""
        started = time.time()
        for v in vals:
            self.p.produce(topic, value=v.encode(), on_delivery=self._report)
        self.p.flush(timeout)
        return time.time() - started


def announce(port, size, count, sources=("127.0.0.1",)):
    """`count` connections that each send only a frame length of `size`, from the
    loopback `sources` in turn."""
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(sources[i % len(sources)], 0))
        s.sendall(struct.pack(">i", size))
        socks.append(s)
    return socks


def test_frames_announced_but_not_sent_hold_no_budget(tmp_path):
    """Three PLAINTEXT connections announce ~100 MiB each and send nothing: before the fix
    they reserved 300 MiB of the 256 MiB in-flight budget and every producer waited
    behind them. A real producer must deliver everything in a few seconds."""
    gw = Gateway(tmp_path).start()
    try:
        t0 = time.time()
        hostile = announce(gw.ports["PLAINTEXT"], 100 * 1024 * 1024, 3)
        time.sleep(0.3)
        w = Writer(plaintext(gw))
        want = values(20, "announced")
        took = w.write("one", want)
        assert w.errors == [] and sorted(w.delivered) == sorted(want), (w.errors, len(w.delivered))
        assert took < 6, took
        check_stored(gw, "one", want, t0)
        # the hostile connections are still open (no idle or request timeout yet)
        assert not any(is_closed(s, timeout=0.05) for s in hostile)
        for s in hostile:
            s.close()
    finally:
        gw.stop()


def test_unauthenticated_connections_cannot_take_the_producers_budget(tmp_path):
    """600 SASL_PLAINTEXT connections that never authenticate announce a 512 KiB frame
    each (300 MiB declared) and send nothing; 100 more send 256 KiB of theirs for real.
    Producers on the PLAINTEXT listener and on SASL_PLAINTEXT (logging in meanwhile)
    deliver everything. (The hostile sockets come from other loopback addresses, each
    within max_unauthenticated_per_ip.)"""
    raise_own_fd_limit(4096)
    gw = Gateway(tmp_path, limits={"auth_timeout_secs": 60}).start()
    try:
        t0 = time.time()
        hostile = announce(gw.ports["SASL_PLAINTEXT"], 512 * 1024, 600, ("127.0.0.2", "127.0.0.3", "127.0.0.4"))
        senders = announce(gw.ports["SASL_PLAINTEXT"], 512 * 1024, 100, ("127.0.0.5",))
        for s in senders:
            s.setblocking(False)
            try:
                s.send(b"\0" * (256 * 1024))
            except BlockingIOError:
                pass
        time.sleep(0.5)
        plain, sasl = Writer(plaintext(gw)), Writer(sasl_plaintext(gw))
        want_plain, want_sasl = values(20, "plain"), values(20, "sasl")
        took = plain.write("one", want_plain)
        assert plain.errors == [] and sorted(plain.delivered) == sorted(want_plain), (plain.errors, len(plain.delivered))
        assert took < 6, took
        check_stored(gw, "one", want_plain, t0)
        # A SASL login on the listener the hostile sockets crowd still works: they hold
        # at most their own small pool, and sent bytes are what counts.
        took = sasl.write("app", want_sasl)
        assert sasl.errors == [] and sorted(sasl.delivered) == sorted(want_sasl), (sasl.errors, len(sasl.delivered))
        assert took < 8, took
        check_stored(gw, "app", want_sasl, t0)
        assert gw.alive()
        for s in hostile + senders:
            s.close()
    finally:
        gw.stop()


def test_slowloris_is_closed_by_the_request_timeout(tmp_path):
    """A request must arrive within request_timeout_secs of its first byte: a sender that
    trickles a byte at a time, and one that stops inside the 4-byte length, are closed
    with a log line, while a connection idle between requests stays open (idle timeout)."""
    gw = Gateway(tmp_path, limits={"request_timeout_secs": 2, "idle_timeout_secs": 60}).start()
    try:
        idle = connect(gw.ports["PLAINTEXT"])
        idle.sendall(produce_v2("one", 0, message_v1(b"before-idle")))
        assert parse_produce_v2_response(read_frame(idle))[1][0][2] == 0

        half_length = connect(gw.ports["PLAINTEXT"])
        half_length.sendall(b"\x00\x00")
        trickle = connect(gw.ports["PLAINTEXT"])
        frame = produce_v2("one", 0, message_v1(b"t" * 2000))
        started = time.time()
        trickle.sendall(frame[:20])
        closed_after = None
        for byte in frame[20:60]:
            time.sleep(0.25)
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                pass
            if is_closed(trickle, timeout=0.01):
                closed_after = time.time() - started
                break
        assert closed_after is not None and closed_after < 4.5, closed_after
        assert is_closed(half_length, timeout=3)
        # idle between requests is not a slow request: still served after the request timeout
        assert not is_closed(idle, timeout=0.5)
        idle.sendall(produce_v2("one", 0, message_v1(b"after-idle"), correlation_id=2))
        assert parse_produce_v2_response(read_frame(idle))[1][0][2] == 0
        log = gw.log_text()
        assert "request not received in time" in log and "request_timeout_secs" in log, log[-3000:]
        assert sorted(l["content"] for l in gw.wait_logs("one", 2)) == ["after-idle", "before-idle"]
    finally:
        gw.stop()


def open_fds_limit(pid):
    for line in open("/proc/%d/limits" % pid):
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files in /proc/%d/limits" % pid)


def closed_now(socks):
    """The sockets the server has closed (readable and at EOF/reset)."""
    poll = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poll.register(fd, select.POLLIN)
    closed = []
    for fd, _ in poll.poll(0):
        s = by_fd[fd]
        try:
            if s.recv(1) == b"":
                closed.append(s)
        except OSError:
            closed.append(s)
    return closed


class LowNofileGateway(Gateway):
    # Started with a soft RLIMIT_NOFILE of 256 under a hard limit of 400.
    command_prefix = ("prlimit", "--nofile=256:400", "--")


def test_descriptor_budget_raised_at_start_and_enforced_at_accept(tmp_path):
    """Started with RLIMIT_NOFILE 256 (soft) / 400 (hard): the gateway raises the soft
    limit to 400, lowers max_connections (10000) to what fits with a warning, and refuses
    connections beyond the budget at accept with a log line, while a producer that was
    connected keeps writing and new connections are served once others left."""
    raise_own_fd_limit(4096)
    gw = LowNofileGateway(tmp_path, limits={"reserved_fds": 64}).start()
    try:
        assert open_fds_limit(gw.proc.pid) == (400, 400)
        t0 = time.time()
        w = Writer(plaintext(gw))
        first, later = values(5, "before-flood"), values(20, "during-flood")
        w.write("one", first)
        assert sorted(w.delivered) == sorted(first), w.errors
        flood = [socket.create_connection(("127.0.0.1", gw.ports["PLAINTEXT"]), timeout=10) for _ in range(450)]
        time.sleep(1.0)
        refused = closed_now(flood)
        assert 50 <= len(refused) <= 400, len(refused)
        took = w.write("one", later)
        assert w.errors == [] and sorted(w.delivered) == sorted(first + later), (w.errors, len(w.delivered))
        assert took < 6, took
        assert gw.alive()
        log = gw.log_text()
        assert "raised the RLIMIT_NOFILE soft limit" in log, log[-3000:]
        assert "max_connections is more than the file-descriptor limit allows" in log, log[-3000:]
        assert "file descriptor" in log and "refusing connection" in log, log[-3000:]
        assert "accept failed" not in log, log[-3000:]
        check_stored(gw, "one", first + later, t0)  # what the real producer wrote, exactly once
        for s in flood:
            s.close()
        time.sleep(0.5)
        s = connect(gw.ports["PLAINTEXT"])
        s.sendall(produce_v2("one", 0, message_v1(b"after-flood")))
        assert parse_produce_v2_response(read_frame(s))[1][0][2] == 0
        # ...and the raw request after the flood, whose record carries a fixed 2023 timestamp
        stored = sorted(l["content"] for l in gw.wait_logs("one", len(first + later) + 1))
        assert stored == sorted(first + later + ["after-flood"]), stored
    finally:
        gw.stop()


def test_client_that_never_reads_its_answers_is_closed_and_gives_its_budget_back(tmp_path):
    """Four connections each send a 16 MiB Metadata request (its answer is as large) and
    never read: their requests stay counted in the in-flight budget while their answers
    wait, a producer keeps writing in what is left, and each reader that does not read is
    closed within request_timeout_secs (before, never: its budget was held forever)."""
    gw = Gateway(tmp_path, limits={"max_inflight_bytes": 64 << 20, "max_request_bytes": 32 << 20,
                                   "request_timeout_secs": 3}).start()
    try:
        name = "n" * 32000
        body = struct.pack(">i", 520) + (struct.pack(">h", len(name)) + name.encode()) * 520
        frame = request(3, 1, 1, body)
        readers = []
        for _ in range(4):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", gw.ports["PLAINTEXT"]))
            s.sendall(frame)
            readers.append(s)
        started = time.time()
        w = Writer(plaintext(gw))
        vals = values(20, "while-unread")
        w.write("app", vals, timeout=10)
        assert sorted(w.delivered) == sorted(vals) and w.errors == []
        check_stored(gw, "app", vals, started)
        deadline = time.time() + 10
        while gw.log_text().count("not read by the client within request_timeout_secs") < 4 and time.time() < deadline:
            time.sleep(0.1)
        assert gw.log_text().count("not read by the client within request_timeout_secs") == 4
        assert time.time() - started < 10
        for s in readers:
            s.close()
    finally:
        gw.stop()


def test_one_address_cannot_hold_every_connection_slot_with_logins_it_never_finishes(tmp_path):
    """400 SASL connections from 127.0.0.2 that never log in, against max_connections=300:
    that address gets max_unauthenticated_per_ip=100 of them, the rest are refused at
    accept with a log line, and a producer from 127.0.0.1 still connects and delivers."""
    raise_own_fd_limit(4096)
    gw = Gateway(tmp_path, limits={"auth_timeout_secs": 60, "max_connections": 300,
                                   "max_unauthenticated_per_ip": 100}).start()
    try:
        t0 = time.time()
        hostile = []
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", gw.ports["SASL_PLAINTEXT"]), timeout=10,
                                         source_address=("127.0.0.2", 0))
            hostile.append(s)
        time.sleep(0.5)
        open_ = sum(not is_closed(s, timeout=0.01) for s in hostile)
        assert open_ == 100, open_
        assert "too many unauthenticated connections from this address" in gw.log_text()
        w = Writer(sasl_plaintext(gw))
        want = values(20, "other-address")
        w.write("app", want)
        assert w.errors == [] and sorted(w.delivered) == sorted(want), (w.errors, len(w.delivered))
        check_stored(gw, "app", want, t0)
        for s in hostile:
            s.close()
    finally:
        gw.stop()


def test_a_storm_of_refused_connections_logs_a_bounded_number_of_lines(tmp_path):
    """1,000 connections refused at accept (over max_unauthenticated_per_ip) write at most
    ten lines a second, and each line says how many were left out before it."""
    gw = Gateway(tmp_path, limits={"auth_timeout_secs": 60, "max_unauthenticated_per_ip": 5}).start()
    try:
        port = gw.ports["SASL_PLAINTEXT"]
        held = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.3", 0)) for _ in range(5)]
        started = time.time()
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.3", 0))
            s.close()
        took = time.time() - started
        time.sleep(1.1)
        socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.3", 0)).close()
        deadline = time.time() + 5
        lines = []
        while time.time() < deadline:
            lines = [l for l in gw.log_text().splitlines() if "too many unauthenticated connections" in l]
            if lines and "similar_lines_left_out=0" not in lines[-1]:
                break
            time.sleep(0.1)
        assert 10 <= len(lines) <= 10 * (int(took) + 3), (len(lines), took)
        # Every refusal is either a line or counted in the next line's left-out number.
        left_out = sum(int(l.split("similar_lines_left_out=")[1].split()[0]) for l in lines)
        assert left_out + len(lines) == 1001, (left_out, len(lines))
        for s in held:
            s.close()
    finally:
        gw.stop()
