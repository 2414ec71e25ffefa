"""Produce quotas (bytes and requests per second, per project and per access key): real
clients producing as fast as they can are slowed to their quota, the way Kafka brokers
slow them (throttle_time_ms in the answer, the connection read no further until it has
passed, answers to clients older than KIP-219 sent that much later), never refused, and
everything they sent is stored exactly once. Producers without a quota are not slowed."""

import logging
import struct
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer
from kafka import KafkaProducer

import wire
from gateway import Gateway, contents, password, rdkafka_conf

KIB = 1024


def sasl(gw, project, key):
    return rdkafka_conf(gw, "SASL_PLAINTEXT", project, key)


class Run:
    """What one librdkafka producer did: the values it sent, when each was acknowledged,
    delivery errors, and the throttle times librdkafka reported (seconds)."""

    def __init__(self):
        self.values, self.acked, self.errors, self.throttles = [], [], [], []
        self.started = self.stopped = None

    def rate(self, since, until):
        """Bytes per second acknowledged between `since` and `until` (seconds after start)."""
        t0, t1 = self.started + since, self.started + until
        sent = sum(n for t, n in self.acked if t0 <= t < t1)
        return sent / (until - since)

    def total_rate(self):
        return sum(n for _, n in self.acked) / (max(t for t, _ in self.acked) - self.started)


def produce_flat_out(conf, topic, seconds=None, count=None, size=KIB, tag="q"):
    """Produces `size`-byte values to `topic` as fast as librdkafka takes them, for
    `seconds` or until `count` were produced, then flushes; returns the Run."""
    run = Run()
    prefix = "%s-%s-" % (tag, uuid.uuid4().hex[:8])

    def delivered(err, msg):
        if err is not None:
            run.errors.append(err)
        else:
            run.acked.append((time.monotonic(), len(msg.value())))

    p = Producer(dict(conf, **{
        "linger.ms": 5,
        "batch.size": 64 * KIB,
        # A small local queue: what is still queued when the time is up flushes quickly.
        "queue.buffering.max.kbytes": 256,
        "message.timeout.ms": 120000,
        "throttle_cb": lambda event: run.throttles.append(event.throttle_time),
    }))
    run.started = time.monotonic()
    i = 0
    while True:
        if seconds is not None and time.monotonic() - run.started >= seconds:
            break
        if count is not None and i >= count:
            break
        value = (prefix + str(i)).ljust(size, ".")
        try:
            p.produce(topic, value=value.encode(), on_delivery=delivered)
        except BufferError:
            p.poll(0.01)
            continue
        run.values.append(value)
        i += 1
        if i % 64 == 0:
            p.poll(0)
    run.stopped = time.monotonic()
    assert p.flush(120) == 0, "messages still queued after flush"
    p.poll(0)
    return run


def assert_stored_once(gw, logstore, values, project="demo"):
    logs = gw.wait_logs(logstore, len(values), project=project, timeout=60)
    time.sleep(0.3)
    got = contents(gw.logs(logstore, project))
    assert len(got) == len(values) and got == sorted(values), \
        "stored %d logs for %d values sent; missing %d" % (len(got), len(values), len(set(values) - set(got)))
    return logs


def test_librdkafka_is_slowed_to_its_projects_quota_and_other_projects_are_not(tmp_path):
    quota = 200 * KIB
    gw = Gateway(tmp_path, limits={"quota_burst_secs": 3}, project_options={"ops": {"quota_bytes_per_sec": quota}}).start()
    try:
        # Project demo has no quota: as fast as librdkafka and the machine go.
        free = produce_flat_out(sasl(gw, "demo", "main"), "one", count=20000, tag="free")
        assert free.errors == [] and free.throttles == []
        free_rate = free.total_rate()
        assert free_rate > 5 * quota, "unthrottled producer only reached %.0f B/s" % free_rate

        # Project ops: 200 KiB/s. After its first burst (3 s worth, which it may send at
        # once) its acknowledged throughput is the quota.
        limited = produce_flat_out(sasl(gw, "ops", "ops"), "sys", seconds=10, tag="ops")
        assert limited.errors == []
        steady = limited.rate(4, 10)
        assert 0.6 * quota <= steady <= 1.25 * quota, "throughput %.0f B/s against a quota of %d" % (steady, quota)
        assert steady < free_rate / 4
        # Over the whole run: the quota plus at most the first burst.
        overall = sum(n for _, n in limited.acked)
        assert overall <= 1.3 * quota * (limited.stopped - limited.started + 3), overall
        # librdkafka heard of it: throttle_time_ms in the Produce answers.
        assert limited.throttles and max(limited.throttles) > 0
        assert max(limited.throttles) <= 5.0

        assert_stored_once(gw, "one", free.values)
        assert_stored_once(gw, "sys", limited.values, project="ops")
        throttled = gw.metric("loggate_quota_throttled_seconds_total", project="ops")
        assert throttled > 3, throttled
        assert gw.metric("loggate_quota_throttled_seconds_total", project="demo") == 0
        assert gw.metric("loggate_produce_partition_errors_total", error="REQUEST_TIMED_OUT") == 0
    finally:
        gw.stop()


def test_access_key_quota_slows_that_key_only_and_the_stricter_quota_wins(tmp_path):
    key_quota = 100 * KIB
    gw = Gateway(
        tmp_path,
        limits={"quota_burst_secs": 2},
        # The project's quota is looser than the key's: the key's applies to it.
        project_options={"demo": {"quota_bytes_per_sec": 4096 * KIB}},
        key_options={"limited": {"quota_bytes_per_sec": key_quota}},
    ).start()
    try:
        results = {}

        def run(key, **kw):
            results[key] = produce_flat_out(sasl(gw, "demo", key), "app", tag=key, **kw)

        # Both keys write the same logstore at the same time; only the limited one is slowed.
        limited = threading.Thread(target=run, args=("limited",), kwargs={"seconds": 8})
        limited.start()
        time.sleep(3)
        run("main", count=3000)
        limited.join(120)
        slow, fast = results["limited"], results["main"]
        assert slow.errors == [] and fast.errors == []
        steady = slow.rate(3, 8)
        assert 0.6 * key_quota <= steady <= 1.25 * key_quota, "throughput %.0f B/s against a quota of %d" % (steady, key_quota)
        assert slow.throttles and max(slow.throttles) > 0
        assert fast.throttles == []
        assert fast.total_rate() > 5 * key_quota, fast.total_rate()
        assert_stored_once(gw, "app", slow.values + fast.values)
    finally:
        gw.stop()


def produce_v7(topic, records, correlation_id):
    """A Produce v7 frame (same body as v3) of one partition's records."""
    body = struct.pack(">hhi", -1, 1, 10000) + struct.pack(">i", 1) + wire.string(topic) + struct.pack(">i", 1)
    body += struct.pack(">ii", 0, len(records)) + records
    return wire.request(0, 7, correlation_id, body)


def parse_produce_v7_response(frame):
    """-> (correlation_id, [(partition, error, base_offset)], throttle_time_ms)."""
    corr, ntopics = struct.unpack(">ii", frame[:8])
    pos, out = 8, []
    for _ in range(ntopics):
        pos += 2 + struct.unpack(">h", frame[pos:pos + 2])[0]
        nparts = struct.unpack(">i", frame[pos:pos + 4])[0]
        pos += 4
        for _ in range(nparts):
            part, err, off, _append_time, _start = struct.unpack(">ihqqq", frame[pos:pos + 30])
            pos += 30
            out.append((part, err, off))
    (throttle,) = struct.unpack(">i", frame[pos:pos + 4])
    assert pos + 4 == len(frame)
    return corr, out, throttle


def test_answers_carry_the_throttle_time_and_the_connection_waits_it_out(tmp_path):
    """On the wire: 10 000 B/s with bursts of 1 s. A v7 client (which throttles itself,
    KIP-219) is answered at once with throttle_time_ms, but its next request is read only
    once that time has passed; a v2 client's answer comes that much later, and throttle
    times are capped by max_throttle_ms."""
    gw = Gateway(tmp_path, limits={"quota_burst_secs": 1, "max_throttle_ms": 3000},
                 project_options={"demo": {"quota_bytes_per_sec": 10000}}).start()
    run = uuid.uuid4().hex[:8]
    sent = []

    def values(tag, n, size):
        out = [("%s-%s-%d" % (run, tag, i)).ljust(size, "x") for i in range(n)]
        sent.extend(out)
        return [v.encode() for v in out]

    try:
        sock = wire.connect(gw.ports["PLAINTEXT"])
        sock.settimeout(20)
        # ~25 KB against 10 000 B/s and a burst of 10 000 B: 1.5 s of debt.
        t0 = time.monotonic()
        sock.sendall(produce_v7("one", wire.batch_v2(values("big", 25, 1000)), 1))
        corr, parts, throttle1 = parse_produce_v7_response(wire.read_frame(sock))
        answered1 = time.monotonic() - t0
        assert (corr, [(p, e) for p, e, _ in parts]) == (1, [(0, 0)])
        assert 1000 <= throttle1 <= 2500, throttle1
        assert answered1 < throttle1 / 1000 - 0.4, "a v7 answer waited %.2f s" % answered1

        # The next request is read only once the throttle time has passed.
        sock.sendall(produce_v7("one", wire.batch_v2(values("small", 1, 10)), 2))
        corr, parts, _ = parse_produce_v7_response(wire.read_frame(sock))
        answered2 = time.monotonic() - t0
        assert (corr, [(p, e) for p, e, _ in parts]) == (2, [(0, 0)])
        assert answered2 >= throttle1 / 1000 - 0.05, (answered2, throttle1)

        # Produce v2 (before KIP-219): ~50 KB more is ~5 s of debt, capped at 3 s, and the
        # answer itself comes that late.
        messages = b"".join(wire.message_v1(v) for v in values("v2", 50, 1000))
        t2 = time.monotonic()
        sock.sendall(wire.produce_v2("one", 0, messages, correlation_id=3))
        frame = wire.read_frame(sock)
        answered3 = time.monotonic() - t2
        (throttle3,) = struct.unpack(">i", frame[-4:])
        corr, parts = wire.parse_produce_v2_response(frame[:-4])
        assert (corr, [(p, e) for _, p, e, _ in parts]) == (3, [(0, 0)])
        assert throttle3 == 3000, throttle3
        assert answered3 >= 2.95, "the v2 answer came after %.2f s, throttled %d ms" % (answered3, throttle3)
        sock.close()

        assert_stored_once(gw, "one", sent)
        throttled = gw.metric("loggate_quota_throttled_seconds_total", project="demo")
        assert throttled >= (throttle1 + throttle3) / 1000 - 0.01, throttled
    finally:
        gw.stop()


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("api_version", [(0, 10, 1), None], ids=["produce-v2", "probed"])
def test_kafka_python_synchronous_sends_meet_a_requests_per_second_quota(tmp_path, api_version):
    """kafka-python sending one record at a time and waiting for each answer, against 10
    requests/s: as Produce v2 (answers delayed by the broker) and with its probed versions
    (answered at once; kafka-python 3 then holds off by itself)."""
    quota = 10
    gw = Gateway(tmp_path, limits={"quota_burst_secs": 2}, project_options={"ops": {"quota_requests_per_sec": quota}}).start()
    warnings = Warnings()
    logging.getLogger("kafka").addHandler(warnings)
    run = uuid.uuid4().hex[:8]
    try:
        p = KafkaProducer(bootstrap_servers=gw.bootstrap("SASL_PLAINTEXT"), security_protocol="SASL_PLAINTEXT",
                          sasl_mechanism="PLAIN", sasl_plain_username="ops", sasl_plain_password=password("ops"),
                          api_version=api_version, acks=1, linger_ms=0, enable_idempotence=False,
                          request_timeout_ms=30000, max_block_ms=30000)
        sent, times = [], []
        start = time.monotonic()
        try:
            while time.monotonic() - start < 8:
                value = "%s-%d" % (run, len(sent))
                meta = p.send("sys", value=value.encode()).get(timeout=30)
                assert meta.offset >= 0
                sent.append(value)
                times.append(time.monotonic() - start)
        finally:
            p.close(10)
        # The first burst's 20 requests may go at once; then 10 a second.
        steady = sum(1 for t in times if 3 <= t < 8) / 5
        assert 0.6 * quota <= steady <= 1.25 * quota, "%.1f requests/s against a quota of %d" % (steady, quota)
        assert len(sent) <= quota * (8 + 2) * 1.3, len(sent)
        assert any("throttled by broker" in line for line in warnings.lines), warnings.lines[-5:]
        assert_stored_once(gw, "sys", sent, project="ops")
    finally:
        logging.getLogger("kafka").removeHandler(warnings)
        gw.stop()


def test_a_quota_set_by_a_configuration_reload_slows_a_producer_already_connected(tmp_path):
    quota = 150 * KIB
    gw = Gateway(tmp_path, limits={"quota_burst_secs": 1}).start()
    try:
        conf = sasl(gw, "ops", "ops")
        before = produce_flat_out(conf, "sys", count=5000, tag="before")
        assert before.throttles == []
        text = gw.config.read_text()
        assert text.count('name = "ops"\n') == 1
        n = gw.log_text().count("configuration reloaded")
        gw.config.write_text(text.replace('name = "ops"\n', 'name = "ops"\nquota_bytes_per_sec = %d\n' % quota))
        deadline = time.time() + 15
        while gw.log_text().count("configuration reloaded") <= n:
            assert time.time() < deadline, gw.log_text()[-2000:]
            time.sleep(0.05)
        after = produce_flat_out(conf, "sys", seconds=6, tag="after")
        assert after.errors == []
        steady = after.rate(2, 6)
        assert 0.6 * quota <= steady <= 1.25 * quota, "throughput %.0f B/s against a reloaded quota of %d" % (steady, quota)
        assert before.total_rate() > 5 * steady
        assert_stored_once(gw, "sys", before.values + after.values, project="ops")
    finally:
        gw.stop()
