"""`loggate logs` against a running server's data: every flag, on logs sent by a real client."""

import base64
import json
import subprocess
import time

import pytest
from confluent_kafka import Producer

from gateway import Gateway

# 2024-05-01T12:00:00Z
T0 = 1_714_564_800_000


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("logs-cli")).start()
    p = Producer({"bootstrap.servers": gw.bootstrap("PLAINTEXT"), "acks": "all", "linger.ms": 0})
    # "pinned" has 3 shards chosen by partition; shard k holds event times T0 + 3n + k, so a
    # merge by time interleaves them; every 10th log is an error.
    for n in range(200):
        for shard in range(3):
            level = "ERROR" if n % 10 == 0 else "INFO"
            p.produce("pinned.json", partition=shard, timestamp=T0 + 3 * n + shard,
                      value=b'{"level": "%s", "msg": "request %d on shard %d"}' % (level.encode(), n, shard))
        p.poll(0)
    assert p.flush(30) == 0
    yield gw
    gw.stop()


def msgs(logs):
    return [l["msg"] for l in logs]


def test_all_shards_merged_by_time(gw):
    logs = gw.logs("pinned")
    assert len(logs) == 600
    times = [l["__time_ms__"] for l in logs]
    assert times == sorted(times) and times[0] == T0 and times[-1] == T0 + 599
    assert msgs(logs[:4]) == ["request 0 on shard 0", "request 0 on shard 1", "request 0 on shard 2",
                              "request 1 on shard 0"]


def test_shard(gw):
    logs = gw.logs("pinned", shard=2)
    assert len(logs) == 200 and {l["__shard__"] for l in logs} == {2}
    assert [l["__offset__"] for l in logs] == list(range(200))


def test_from_and_to_offsets(gw):
    logs = gw.logs("pinned", args=["--from", 198])
    assert sorted((l["__shard__"], l["__offset__"]) for l in logs) == [(s, o) for s in range(3) for o in (198, 199)]
    logs = gw.logs("pinned", shard=1, args=["--from", 10, "--to", 12])
    assert [l["__offset__"] for l in logs] == [10, 11, 12]
    # The old spelling still works.
    assert len(gw.logs("pinned", shard=1, args=["--from-offset", 190])) == 10


def test_from_and_to_times(gw):
    logs = gw.logs("pinned", args=["--from", iso(T0 + 30), "--to", iso(T0 + 35)])
    assert [l["__time_ms__"] for l in logs] == list(range(T0 + 30, T0 + 36))
    assert msgs(logs[:2]) == ["request 10 on shard 0", "request 10 on shard 1"]
    # Epoch milliseconds and a time zone offset mean the same instants.
    same = gw.logs("pinned", args=["--from", "@%d" % (T0 + 30), "--to", "2024-05-01T14:00:00.035+02:00"])
    assert same == logs
    # Relative times: everything was stamped in 2024, so nothing is in the last hour.
    assert gw.logs("pinned", args=["--from", "-1h"]) == []
    assert len(gw.logs("pinned", args=["--to", "now"])) == 600


def test_where_equals_and_regex(gw):
    errors = gw.logs("pinned", args=["--where", "level=ERROR"])
    assert len(errors) == 60 and {l["level"] for l in errors} == {"ERROR"}
    logs = gw.logs("pinned", args=["--where", "msg~^request 1[0-9] on shard [02]$", "--where", "level=ERROR"])
    assert msgs(logs) == ["request 10 on shard 0", "request 10 on shard 2"]
    assert gw.logs("pinned", args=["--where", "__shard__=1", "--where", "level=INFO"])[0]["__shard__"] == 1
    assert gw.logs("pinned", args=["--where", "nosuchfield=x"]) == []


def test_limit(gw):
    assert msgs(gw.logs("pinned", args=["--limit", 2])) == ["request 0 on shard 0", "request 0 on shard 1"]
    assert len(gw.logs("pinned", args=["--where", "level=ERROR", "--limit", 7])) == 7


def test_table_output(gw):
    out = subprocess.run(gw.logs_cmd("pinned", args=["--output", "table", "--limit", 2]), check=True,
                         capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert len(out) == 3
    assert out[0].split() == ["TIME", "SHARD", "OFFSET", "SOURCE", "FIELDS"]
    assert out[1].startswith("2024-05-01T12:00:00.000Z") and "level=ERROR" in out[1]
    assert "msg=request 0 on shard 0" in out[1] and "msg=request 0 on shard 1" in out[2]


def test_bad_arguments_are_explained(gw):
    for args in (["--from", "yesterday"], ["--where", "level"], ["--where", "msg~("], ["--output", "xml"]):
        r = subprocess.run(gw.logs_cmd("pinned", args=args), capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and r.stderr.strip(), args


def test_follow_prints_new_logs_as_they_arrive(gw):
    proc = subprocess.Popen(gw.logs_cmd("one", args=["--follow", "--where", "content~^late-", "--limit", 3]),
                            stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        assert proc.poll() is None, "--follow exited before the logs arrived"
        p = Producer({"bootstrap.servers": gw.bootstrap("PLAINTEXT"), "acks": "1"})
        for v in (b"early-0", b"late-0", b"late-1", b"late-2"):
            p.produce("one", value=v)
            p.flush(10)
            time.sleep(0.1)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert [l.split('"content":"')[1].split('"')[0] for l in out.splitlines()] == ["late-0", "late-1", "late-2"]


def disk_bytes(gw, logstore, shard="*"):
    return sum(f.stat().st_blocks * 512 for f in (gw.data / "logstores" / "demo" / logstore).glob("shard-%s/*.log" % shard))


PHASES = [("kept", "true"), ("encoded", "false"), ("again", "true")]


def produce_in_phases(tmp_path, produce):
    """Runs a gateway through PHASES (keep_record_batches switched across restarts), calling
    `produce(producer, phase)` in each with a confluent-kafka lz4 producer, acks=all; then
    reads every log of "pinned". Returns the logs and, per phase, what each of the 3 shards
    grew on disk."""
    gw = Gateway(tmp_path)
    grew = {}
    try:
        for phase, keep in PHASES:
            gw.storage = {"keep_record_batches": keep}
            gw._write_config()
            gw.start()
            before = [disk_bytes(gw, "pinned", s) for s in range(3)]
            p = Producer({"bootstrap.servers": gw.bootstrap("PLAINTEXT"), "acks": "all", "linger.ms": 5,
                          "compression.codec": "lz4"})
            produce(p, phase)
            assert p.flush(30) == 0
            gw.stop()
            grew[phase] = [disk_bytes(gw, "pinned", s) - b for s, b in enumerate(before)]
        gw.start()
        return gw.logs("pinned"), grew
    finally:
        gw.stop()


def test_raw_logs_read_the_same_kept_as_record_batches_or_encoded(tmp_path):
    """[storage] keep_record_batches: a raw topic's lz4 batches kept as sent (the default) or
    each record stored as an encoded log; switched across restarts, every log reads back the
    same (key, headers, null values, event times), exactly once, and kept batches take less
    disk."""
    n = 3000

    def produce(p, phase):
        for i in range(n):
            value = None if i % 100 == 7 else b"%s %05d GET /api/items?page=%d HTTP/1.1 200 %s" % (
                phase.encode(), i, i % 50, b"x" * 120)
            headers = [("trace", b"t-%d" % i), ("empty", b"")] if i % 3 == 0 else None
            p.produce("pinned", partition=i % 3, key=b"k-%d" % i if i % 2 else None, value=value,
                      headers=headers, timestamp=T0 + i)
            p.poll(0)

    logs, grew = produce_in_phases(tmp_path, produce)
    grew = {phase: sum(shards) for phase, shards in grew.items()}
    phases = PHASES
    assert len(logs) == 3 * n

    def same(log):
        """A log as any phase made it: its phase name, offset, arrival time and client port aside."""
        log = dict(log)
        log.pop("__arrival_time_ms__")
        log.pop("__offset__")
        assert log.pop("__source__").startswith("127.0.0.1:")
        if "content" in log:
            log["content"] = log["content"].split(" ", 1)[1]
        return log

    by_phase = {phase: sorted((json.dumps(same(l), sort_keys=True) for l in logs if l.get("content", "").startswith(phase + " ")))
                for phase, _ in phases}
    # Null values (no content): the same three times, once a phase.
    nulls = sorted(json.dumps(same(l), sort_keys=True) for l in logs if "content" not in l)
    assert len(nulls) == 3 * (n // 100) and nulls[::3] == nulls[1::3] == nulls[2::3]
    for phase, _ in phases:
        assert len(by_phase[phase]) == n - n // 100, phase
    assert by_phase["kept"] != [] and by_phase["kept"] == by_phase["encoded"] == by_phase["again"]
    # What the records carried, in each phase; offsets follow on across the phases.
    for k, (phase, _) in enumerate(phases):
        log = next(l for l in logs if l.get("content", "").startswith("%s 00003 " % phase))
        assert log["__key__"] == "k-3" and log["__headers__"] == [["trace", "t-3"], ["empty", ""]], log
        assert (log["__time_ms__"], log["__shard__"], log["__offset__"]) == (T0 + 3, 0, k * n // 3 + 1), log
        log = next(l for l in logs if l.get("content", "").startswith("%s 00004 " % phase))
        assert "__key__" not in log and "__headers__" not in log, log
    offsets = sorted((l["__shard__"], l["__offset__"]) for l in logs)
    assert offsets == sorted((s, o) for s in range(3) for o in range(n))
    assert grew["kept"] * 2 < grew["encoded"] and grew["again"] * 2 < grew["encoded"], grew


def json_value(phase, i):
    """A `.json` record's value: objects of every kind the fast path tells apart, other
    JSON, broken JSON, bytes that are not UTF-8 and null; every 21st record, on partition
    2 only, an array (one log per object)."""
    p = phase.encode()
    if i % 21 == 20:
        return b'[{"phase": "%s", "n": %d, "part": 1}, {"phase": "%s", "n": %d, "part": 2}]' % (p, i, p, i)
    return [
        b'{"phase": "%s", "n": %d, "msg": "GET /api/items?page=%d HTTP/1.1 200 %s"}' % (p, i, i % 50, b"x" * 100),
        rb' {"phase":"%s","n":%d,"esc\u0041ped":"say \"hi\"\n\u00e9","nested":{"a":[1,{"b":null}]},"f":-1.5e3} ' % (p, i),
        b'{"phase": "%s", "n": %d, "lone": "\\ud800", "caf\xc3\xa9": "\xf0\x9f\x98\x80", "": {}}' % (p, i),
        b'"%s %d just a string"' % (p, i),
        b'%s %d {"broken": ' % (p, i),
        b'%s %d \xff\xfe not UTF-8' % (p, i),
        None,
    ][i % 7]


def test_json_logs_read_the_same_kept_as_record_batches_or_encoded(tmp_path):
    """[storage] keep_record_batches on a `.json` topic of a logstore without JSON options:
    batches kept as sent (the default) or every log encoded, switched across restarts; every
    log reads back with the same fields (escapes, nesting, fallbacks to content), exactly
    once; a batch holding an array is converted (one log per object); kept batches take
    less disk."""
    n = 2100

    def produce(p, phase):
        for i in range(n):
            headers = [("trace", b"t-%d" % i)] if i % 5 == 0 else None
            p.produce("pinned.json", partition=i % 3, key=b"k-%d" % i if i % 2 else None,
                      value=json_value(phase, i), headers=headers, timestamp=T0 + i)
            p.poll(0)

    logs, grew = produce_in_phases(tmp_path, produce)
    phases = PHASES
    arrays = n // 21
    nulls = len([i for i in range(n) if i % 7 == 6 and i % 21 != 20])
    assert len(logs) == 3 * (n + arrays)

    for log in logs:
        # Not UTF-8: written as base64.
        if isinstance(log.get("content"), dict):
            log["content"] = base64.b64decode(log["content"]["base64"]).decode("latin-1")

    def phase_of(log):
        if "phase" in log:
            return log["phase"]
        return log["content"].lstrip('"').split(" ", 1)[0] if "content" in log else None

    def same(log):
        """A log as any phase made it: its phase, offset, arrival time and client port aside."""
        log = dict(log)
        log.pop("__arrival_time_ms__")
        log.pop("__offset__")
        assert log.pop("__source__").startswith("127.0.0.1:")
        log.pop("phase", None)
        if "content" in log:
            log["content"] = log["content"].split(" ", 1)[1]
        return json.dumps(log, sort_keys=True)

    by_phase = {phase: sorted(same(l) for l in logs if phase_of(l) == phase) for phase, _ in phases}
    empty = sorted(same(l) for l in logs if phase_of(l) is None)
    assert len(empty) == 3 * nulls and empty[::3] == empty[1::3] == empty[2::3]
    for phase, _ in phases:
        assert len(by_phase[phase]) == n + arrays - nulls, phase
    assert by_phase["kept"] == by_phase["encoded"] == by_phase["again"]
    # The fields a logstore without JSON options makes, in each phase.
    for k, (phase, _) in enumerate(phases):
        objects = {int(l["n"]): l for l in logs if l.get("phase") == phase and "part" not in l}
        assert set(objects) == {i for i in range(n) if i % 7 < 3 and i % 21 != 20}
        one = objects[1]
        assert one["escAped"] == 'say "hi"\n\u00e9' and one["nested"] == '{"a":[1,{"b":null}]}', one
        assert one["f"] == "-1.5e3" and one["__key__"] == "k-1" and one["__time_ms__"] == T0 + 1, one
        two = objects[2]
        assert two["lone"] == '"\\ud800"' and two["caf\u00e9"] == "\U0001F600" and two[""] == "{}", two
        assert objects[7]["msg"].startswith("GET /api/items?page=7 ") and objects[7]["__key__"] == "k-7"
        assert objects[15]["__headers__"] == [["trace", "t-15"]] and "__headers__" not in objects[14]
        assert (objects[0]["__shard__"], objects[0]["__offset__"]) == (0, k * n // 3)
        parts = sorted((l["part"], l["__shard__"]) for l in logs if l.get("phase") == phase and l.get("n") == "20")
        assert parts == [("1", 2), ("2", 2)], parts
        content = {l["content"].lstrip('"').split(" ", 2)[1]: l["content"] for l in logs if phase_of(l) == phase and "content" in l}
        assert content["3"] == '"%s 3 just a string"' % phase and content["4"] == '%s 4 {"broken": ' % phase, content
        assert content["5"] == "%s 5 \xff\xfe not UTF-8" % phase, content
    per_shard = [len([l for l in logs if l["__shard__"] == s]) for s in range(3)]
    offsets = sorted((l["__shard__"], l["__offset__"]) for l in logs)
    assert offsets == [(s, o) for s in range(3) for o in range(per_shard[s])]
    # Partitions 0 and 1 (no arrays): kept batches take less than half the disk of encoded logs.
    for shard in (0, 1):
        assert grew["kept"][shard] * 2 < grew["encoded"][shard] and grew["again"][shard] * 2 < grew["encoded"][shard], grew
