"""The work and memory a Produce request's records cost: bounded per batch (logs made of
`.json` arrays count), per request (the same partition named many times) and per server
(converted logs waiting for storage), and done off the async workers so a heavy
partition does not stall other connections."""

import threading
import time

from gateway import Gateway
from wire import batch_v2, connect, parse_produce_v2_response, produce_v3, read_frame, request


def produce_errors(frame):
    """[(error, base_offset)] of each partition of a Produce v3 answer."""
    return [(error, offset) for _, _, error, offset in parse_produce_v2_response(frame)[1]]


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_json_array_logs_count_against_max_records_per_batch(tmp_path):
    """One record holding a JSON array of 5,000 objects is 5,000 logs: over a limit of
    1,000 records it gets MESSAGE_TOO_LARGE and nothing is stored; 1,000 objects pass."""
    gw = Gateway(tmp_path, limits={"max_records_per_batch": 1000}).start()
    try:
        s = connect(gw.ports["PLAINTEXT"])
        fan_out = b"[" + b",".join(b'{"i":%d}' % i for i in range(5000)) + b"]"
        s.sendall(produce_v3("one.json", [(0, batch_v2([fan_out]))]))
        assert produce_errors(read_frame(s)) == [(10, -1)]
        fits = b"[" + b",".join(b'{"i":%d}' % i for i in range(1000)) + b"]"
        s.sendall(produce_v3("one.json", [(0, batch_v2([fits]))], correlation_id=2))
        assert produce_errors(read_frame(s)) == [(0, 0)]
        assert sorted(int(l["i"]) for l in gw.logs("one")) == list(range(1000))
    finally:
        gw.stop()


def test_a_request_naming_one_partition_many_times_holds_bounded_memory(tmp_path):
    """40 copies of a gzip batch that decompresses to ~13 MiB, all to partition 0 in one
    request: every copy is stored, while the server's peak RSS stays far below the
    ~520 MiB the decompressed copies would take if they were all held at once."""
    gw = Gateway(tmp_path, limits={"max_decoded_inflight_bytes": 32 << 20, "max_request_bytes": 200 << 20},
                 storage={"flush_interval_ms": 0}).start()
    try:
        values = [b"log line %07d " % i + b"x" * 40 for i in range(200_000)]
        batch = batch_v2(values, codec=1)
        copies = 40
        s = connect(gw.ports["PLAINTEXT"])
        s.settimeout(120)
        s.sendall(produce_v3("one", [(0, batch)] * copies, timeout_ms=30000))
        answers = produce_errors(read_frame(s))
        assert [e for e, _ in answers] == [0] * copies
        assert sorted(o for _, o in answers) == [i * len(values) for i in range(copies)]
        peak = peak_rss_mib(gw.proc.pid)
        assert peak < 300, "peak RSS %.0f MiB" % peak
        count = gw.logs("one", shard=0, args=["--from", copies * len(values) - 1])
        assert len(count) == 1 and count[0]["content"] == values[-1].decode()
    finally:
        gw.stop()


def test_heavy_partitions_do_not_stall_other_connections(tmp_path):
    """Two connections send gzip batches that take the server a long CPU time each,
    back to back; a third connection's ApiVersions requests are still answered quickly:
    the heavy work is not on the async workers."""
    gw = Gateway(tmp_path, storage={"flush_interval_ms": 0}).start()
    try:
        values = [b'{"n":%d,"msg":"a heavy json log","tag":"x"}' % i for i in range(150_000)]
        heavy = produce_v3("one.json", [(0, batch_v2(values, codec=1))], timeout_ms=30000)
        durations, stop = [], threading.Event()

        def hammer():
            s = connect(gw.ports["PLAINTEXT"])
            s.settimeout(60)
            while not stop.is_set():
                t = time.monotonic()
                s.sendall(heavy)
                assert produce_errors(read_frame(s))[0][0] == 0
                durations.append(time.monotonic() - t)

        threads = [threading.Thread(target=hammer, daemon=True) for _ in range(2)]
        for t in threads:
            t.start()
        probe = connect(gw.ports["PLAINTEXT"])
        probe.settimeout(60)
        while len(durations) < 2:
            time.sleep(0.01)
        waits = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            t = time.monotonic()
            probe.sendall(request(18, 0, 7, b""))
            read_frame(probe)
            waits.append(time.monotonic() - t)
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(60)
        waits.sort()
        heavy_median = sorted(durations)[len(durations) // 2]
        p90 = waits[int(len(waits) * 0.9)]
        assert p90 < heavy_median / 4, "ApiVersions p90 %.3f s, heavy request median %.3f s" % (p90, heavy_median)
    finally:
        gw.stop()
