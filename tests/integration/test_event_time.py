"""Event time from a field of the JSON value, and nested objects flattened into dotted
names (logstore options time_field, time_format, time_window_*_hours, flatten_depth),
through librdkafka (confluent-kafka) with the value shapes the seed agents write: field
names and time formats as each agent documents them, generated here. What is checked is
what `loggate logs` shows: each log's event time to the millisecond, its fields, and
`--from/--to` selecting by that event time; logs whose time is missing, garbage or out of
the window keep the record timestamp and are counted in loggate_event_time_fallbacks."""

import json
import signal
import subprocess
import time

import pytest
from confluent_kafka import Producer

from gateway import BIN, Gateway

HOUR = 3_600_000
# Event times a few hours back (older than any record timestamp or arrival time here), so
# a log whose stored time is one of them got it from its value.
NOW = int(time.time() * 1000)
BASE = NOW - 3 * HOUR + 345
# Record timestamps: a minute back, distinct per record.
REC = NOW - 60_000

LOGSTORES = {
    "evauto": (2, {"time_field": '"auto"', "flatten_depth": 3}),
    "evfilebeat": (1, {"time_field": '"@timestamp"', "flatten_depth": 1}),
    "evmonasca": (1, {"time_field": '"creation_time"', "time_format": '"epoch_s"', "flatten_depth": 2}),
    "evapisix": (1, {"time_field": '"start_time"', "time_format": '"epoch_ms"', "flatten_depth": 1}),
    "evtelegraf": (1, {"time_field": '"timestamp"', "time_format": '"epoch_s"', "flatten_depth": 1}),
    "evvector": (1, {"time_field": '"timestamp"', "time_format": '"rfc3339"'}),
    "evfluentd": (1, {"time_field": '"time"'}),
    "evstrftime": (1, {"time_field": '"request.time_local"', "time_format": '"%d/%b/%Y:%H:%M:%S %z"', "flatten_depth": 1}),
    "evwindow": (1, {"time_field": '"time"', "time_window_past_hours": 1, "time_window_future_hours": 0.25}),
    "evplain": (1, {}),
}


def dumps(value):
    """Compact JSON, as the agents write it."""
    return json.dumps(value, separators=(",", ":"))


def iso(ms, digits=3):
    """RFC 3339 UTC with `digits` fraction digits (beyond ms: made-up sub-ms digits)."""
    frac = ("%03d" % (ms % 1000) + "678912")[:digits]
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ("." + frac if digits else "") + "Z"


def seconds(ms, digits):
    """Epoch seconds as a JSON number with `digits` fraction digits (made-up beyond ms)."""
    frac = ("%03d" % (ms % 1000) + "123456")[:digits]
    return "%d.%s" % (ms // 1000, frac)


# Each agent: (value text, [(event time, fields expected in the log)]) for an event at t,
# as the `evauto` logstore (auto, flatten_depth 3) stores it.

def filebeat(t):
    # Filebeat 8 Kafka output, codec.json: ECS event with @metadata.
    value = dumps({
        "@timestamp": iso(t), "@metadata": {"beat": "filebeat", "type": "_doc", "version": "8.15.0"},
        "log": {"offset": 1234, "file": {"path": "/var/log/app.log"}}, "message": "GET /index 200",
        "input": {"type": "filestream"}, "ecs": {"version": "8.0.0"}, "host": {"name": "web-1"},
        "agent": {"type": "filebeat", "version": "8.15.0"}})
    return value, [(t, {"host.name": "web-1", "log.file.path": "/var/log/app.log", "log.offset": "1234",
                        "@metadata.beat": "filebeat", "message": "GET /index 200", "@timestamp": iso(t)})]


def logstash(t):
    # Logstash kafka output, codec json (ECS compatibility on).
    value = dumps({"@timestamp": iso(t), "@version": "1", "message": "user login", "host": {"name": "ls-1"},
                        "event": {"original": "user login"}, "tags": ["beats_input_codec_plain_applied"]})
    return value, [(t, {"host.name": "ls-1", "event.original": "user login",
                        "tags": '["beats_input_codec_plain_applied"]', "@version": "1"})]


def fluentd(t):
    # fluent-plugin-kafka kafka2, <format> json, <inject> time_key time (time_type float:
    # seconds with microseconds).
    value = '{"message":"fluentd line","container":{"name":"api"},"time":%s}' % seconds(t, 6)
    return value, [(t, {"message": "fluentd line", "container.name": "api", "time": seconds(t, 6)})]


def fluentbit(t):
    # Fluent Bit kafka output, Format json: Timestamp_Key @timestamp, Timestamp_Format double.
    value = '{"@timestamp":%s,"log":"fluent-bit line","kubernetes":{"pod_name":"p-1","labels":{"app":"web"}}}' % seconds(t, 6)
    return value, [(t, {"log": "fluent-bit line", "kubernetes.pod_name": "p-1", "kubernetes.labels.app": "web"})]


def fluentbit_date(t):
    # Fluent Bit's json_date_key default (`date`, double) as its JSON outputs write it.
    value = '{"date":%s,"log":"fluent-bit dated line"}' % seconds(t, 6)
    return value, [(t, {"log": "fluent-bit dated line", "date": seconds(t, 6)})]


def vector(t):
    # Vector kafka sink, encoding.codec json: a log event from the file source.
    value = dumps({"file": "/var/log/syslog", "host": "vec-1", "message": "vector line", "source_type": "file",
                        "timestamp": iso(t, 9)})
    return value, [(t, {"host": "vec-1", "timestamp": iso(t, 9), "source_type": "file"})]


def telegraf(t):
    # Telegraf kafka output, data_format json (json_timestamp_units 1s: integer seconds).
    t = t - t % 1000
    value = dumps({"fields": {"usage_idle": 98.5, "usage_user": 1.25}, "name": "cpu",
                        "tags": {"cpu": "cpu-total", "host": "tg-1"}, "timestamp": t // 1000})
    return value, [(t, {"fields.usage_idle": "98.5", "tags.host": "tg-1", "name": "cpu"})]


def collectd(t):
    # collectd write_kafka, Format JSON: an array of value lists, time in seconds (ms precision).
    element = ('{"values":[%s],"dstypes":["gauge"],"dsnames":["value"],"time":%s,"interval":10.000,'
               '"host":"cd-1","plugin":"cpu","plugin_instance":"0","type":"percent","type_instance":"%s"}')
    value = "[%s,%s]" % (element % ("1.5", seconds(t, 3), "idle"), element % ("2.5", seconds(t + 1000, 3), "user"))
    return value, [(t, {"type_instance": "idle", "values": "[1.5]", "host": "cd-1", "time": seconds(t, 3)}),
                   (t + 1000, {"type_instance": "user", "values": "[2.5]", "dsnames": '["value"]'})]


def apisix(t):
    # APISIX kafka-logger, default log format: start_time in epoch milliseconds.
    value = dumps({
        "start_time": t, "latency": 12.5, "client_ip": "127.0.0.1", "route_id": "1", "service_id": "",
        "upstream": "127.0.0.1:1980",
        "request": {"method": "GET", "uri": "/hello", "url": "http://127.0.0.1:9080/hello", "size": 88,
                    "querystring": {}, "headers": {"host": "127.0.0.1:9080", "user-agent": "curl/8.5.0"}},
        "response": {"status": 200, "size": 123, "headers": {"content-type": "text/plain"}},
        "server": {"hostname": "apisix-1", "version": "3.9.0"}})
    return value, [(t, {"request.method": "GET", "request.headers.user-agent": "curl/8.5.0", "request.querystring": "{}",
                        "response.status": "200", "server.hostname": "apisix-1", "start_time": str(t)})]


def monasca(t):
    # monasca-log-api's envelope on Kafka: creation_time in integer seconds.
    t = t - t % 1000
    value = dumps({"log": {"message": "monasca line", "dimensions": {"hostname": "mon-1", "service": "nova"},
                                "application_type": "nova-api"},
                        "creation_time": t // 1000, "meta": {"tenantId": "tenant-1", "region": "RegionOne"}})
    return value, [(t, {"log.message": "monasca line", "log.dimensions.hostname": "mon-1",
                        "log.dimensions.service": "nova", "meta.tenantId": "tenant-1", "meta.region": "RegionOne"})]


AGENTS = [filebeat, logstash, fluentd, fluentbit, fluentbit_date, vector, telegraf, collectd, apisix, monasca]


class Client:
    """A librdkafka producer on the PLAINTEXT listener (project demo) that sets each record's
    timestamp and key, and checks every delivery."""

    def __init__(self, gw, **conf):
        self.failed = []
        self.p = Producer({"bootstrap.servers": gw.bootstrap("PLAINTEXT"), "acks": "all", "linger.ms": 5,
                           "message.timeout.ms": 20000, **conf})
        self.rec = REC

    def send(self, topic, value, key):
        """Sends one record; its record timestamp."""
        self.rec += 1
        self.p.produce(topic, value=value.encode(), key=key.encode(), timestamp=self.rec,
                       on_delivery=lambda err, msg: err and self.failed.append(err))
        return self.rec

    def flush(self):
        assert self.p.flush(30) == 0 and not self.failed, self.failed


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("event-time"),
                 extra_logstores=[(name, shards, "round_robin") for name, (shards, _) in LOGSTORES.items()],
                 logstore_options={name: opts for name, (_, opts) in LOGSTORES.items()}).start()
    yield gw
    gw.stop()


def by_key(logs):
    out = {}
    for l in logs:
        out.setdefault(l.get("__key__"), []).append(l)
    return out


def check(log, when, fields):
    assert log["__time_ms__"] == when, (log, when)
    for name, value in fields.items():
        assert log.get(name) == value, (name, log)


@pytest.fixture(scope="module")
def auto_sent(gw):
    """Every agent's value, on evauto.json: agent name -> expected [(time, fields)]."""
    c = Client(gw)
    expected = {}
    for i, agent in enumerate(AGENTS):
        value, logs = agent(BASE + i * 60_000 + i)
        c.send("evauto.json", value, agent.__name__)
        expected[agent.__name__] = logs
    c.flush()
    return expected


def test_auto_mode_takes_each_agents_time_field_and_flattens_its_envelope(gw, auto_sent):
    logs = gw.wait_logs("evauto", sum(len(v) for v in auto_sent.values()))
    got = by_key(logs)
    assert sorted(got) == sorted(auto_sent)
    for agent, expected in auto_sent.items():
        assert len(got[agent]) == len(expected), got[agent]
        for log, (when, fields) in zip(sorted(got[agent], key=lambda l: l["__time_ms__"]), expected):
            check(log, when, fields)
            assert log["__arrival_time_ms__"] >= NOW - 1000
    # Nothing fell back.
    for reason in ("missing", "unparsable", "out_of_window"):
        assert gw.metric("loggate_event_time_fallbacks_total", project="demo", logstore="evauto", reason=reason) == 0


def test_from_and_to_select_by_the_field_time(gw, auto_sent):
    times = sorted(when for logs in auto_sent.values() for when, _ in logs)
    assert len(times) == 11
    logs = gw.logs("evauto", args=["--from", iso(times[2]), "--to", iso(times[6])])
    assert [l["__time_ms__"] for l in logs] == times[2:7]
    logs = gw.logs("evauto", args=["--from", "@%d" % (times[6] + 1), "--to", "@%d" % times[9]])
    assert [l["__time_ms__"] for l in logs] == times[7:10]
    # All are older than their record timestamps and arrival: a window ending before those
    # still has them all, one starting at them has none.
    assert len(gw.logs("evauto", args=["--to", "@%d" % (REC - 1)])) == 11
    assert gw.logs("evauto", args=["--from", "@%d" % REC]) == []


def test_each_agents_own_settings(gw):
    t = BASE + 10 * 60_000
    cases = [
        # logstore, agent, expected fields that differ with the logstore's flatten_depth
        ("evfilebeat", filebeat, {"host.name": "web-1", "log.file": '{"path":"/var/log/app.log"}', "log.offset": "1234"}),
        ("evmonasca", monasca, {"log.dimensions.hostname": "mon-1", "meta.tenantId": "tenant-1"}),
        ("evapisix", apisix, {"request.method": "GET", "response.status": "200",
                              "request.headers": '{"host":"127.0.0.1:9080","user-agent":"curl/8.5.0"}'}),
        ("evtelegraf", telegraf, {"fields.usage_idle": "98.5", "tags.host": "tg-1"}),
        ("evvector", vector, {"host": "vec-1", "message": "vector line"}),
        ("evfluentd", fluentd, {"container": '{"name":"api"}'}),
    ]
    c = Client(gw)
    for store, agent, _ in cases:
        value, _ = agent(t)
        c.send(store + ".json", value, agent.__name__)
    # An access log whose nested time is in a format of its own (nginx's $time_local), +01:00.
    local = time.strftime("%d/%b/%Y:%H:%M:%S +0100", time.gmtime((t - t % 1000) // 1000 + 3600))
    c.send("evstrftime.json", dumps({"request": {"time_local": local, "uri": "/x"}, "status": 200}), "nginx")
    # A logstore without options keeps the record timestamp, whatever the value holds.
    rec_plain = c.send("evplain.json", filebeat(t)[0], "filebeat")
    c.flush()
    for store, agent, fields in cases:
        (log,) = gw.wait_logs(store, 1)
        _, [(when, _)] = agent(t)
        check(log, when, fields)
    (log,) = gw.wait_logs("evstrftime", 1)
    check(log, t - t % 1000, {"request.time_local": local, "request.uri": "/x", "status": "200"})
    (log,) = gw.wait_logs("evplain", 1)
    check(log, rec_plain, {"@timestamp": iso(t), "host": '{"name":"web-1"}'})
    assert ("loggate_event_time_fallbacks_total", (("logstore", "evplain"), ("project", "demo"), ("reason", "missing"))) \
        not in gw.metrics()


def test_missing_garbage_and_out_of_window_times_keep_the_record_timestamp_and_are_counted(gw):
    now = int(time.time() * 1000)
    good = now - 30 * 60_000 + 7
    cases = [
        ("missing", '{"msg":"no time here"}', None),
        ("missing-raw", "not json at all", None),
        ("garbage", '{"time":"half past ten"}', None),
        ("garbage-bool", '{"time":true}', None),
        ("too-old", '{"time":%s}' % seconds(now - 2 * HOUR, 3), None),
        ("future", '{"time":%s}' % seconds(now + HOUR, 3), None),
        ("good", '{"time":%s}' % seconds(good, 3), good),
    ]
    c = Client(gw)
    recs = {key: c.send("evwindow.json", value, key) for key, value, _ in cases}
    c.flush()
    logs = by_key(gw.wait_logs("evwindow", len(cases)))
    assert sorted(logs) == sorted(recs)
    for key, value, when in cases:
        (log,) = logs[key]
        assert log["__time_ms__"] == (when if when is not None else recs[key]), log
    assert logs["missing-raw"][0]["content"] == "not json at all"
    assert logs["garbage"][0]["time"] == "half past ten"
    m = lambda reason: gw.metric("loggate_event_time_fallbacks_total", project="demo", logstore="evwindow", reason=reason)
    assert (m("missing"), m("unparsable"), m("out_of_window")) == (2, 2, 2)
    # The fallbacks are selected by their record timestamps.
    selected = gw.logs("evwindow", args=["--from", "@%d" % REC])
    assert sorted(l["__key__"] for l in selected) == sorted(k for k, _, w in cases if w is None)


def test_a_reload_that_sets_time_field_applies_and_keeps_the_idempotent_producer(tmp_path):
    gw = Gateway(tmp_path, extra_logstores=[("evreload", 1, "round_robin")]).start()
    try:
        c = Client(gw, **{"enable.idempotence": True})
        t1, t2 = BASE, BASE + 1000
        rec1 = c.send("evreload.json", '{"time":%s,"n":1}' % seconds(t1, 3), "before")
        c.flush()
        before = gw.log_text().count("configuration reloaded")
        text = gw.config.read_text()
        block = 'name = "evreload"\nshards = 1\nrouting = "round_robin"\n'
        assert text.count(block) == 1
        gw.config.write_text(text.replace(block, block + 'time_field = "time"\n'))
        gw.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        while gw.log_text().count("configuration reloaded") <= before:
            assert time.time() < deadline, gw.log_text()[-3000:]
            time.sleep(0.05)
        # The same producer (its sequence numbers go on) after the reload.
        c.send("evreload.json", '{"time":%s,"n":2}' % seconds(t2, 3), "after")
        c.flush()
        logs = by_key(gw.wait_logs("evreload", 2))
        assert sorted(logs) == ["after", "before"] and all(len(v) == 1 for v in logs.values()), logs
        assert logs["before"][0]["__time_ms__"] == rec1
        assert logs["after"][0]["__time_ms__"] == t2
        assert gw.metric("loggate_event_time_fallbacks_total", project="demo", logstore="evreload", reason="missing") == 0
    finally:
        gw.stop()


def test_clickhouse_rows_get_the_field_time(tmp_path, clickhouse):
    """On ClickHouse the event_time and event_time_ms columns hold the field's time, and
    `loggate logs --from/--to` selects by it there too."""
    (tmp_path / "gw").mkdir()
    gw = Gateway(tmp_path / "gw", storage={"backend": '"clickhouse"'},
                 extra_config='[clickhouse]\nurls = ["%s"]' % clickhouse.url,
                 extra_logstores=[("evch", 1, "round_robin")],
                 logstore_options={"evch": {"time_field": '"auto"', "flatten_depth": 1}}).start()
    try:
        c = Client(gw)
        times = [BASE + 1111, BASE + 2 * HOUR + 2222]
        for i, t in enumerate(times):
            c.send("evch.json", filebeat(t)[0], "fb%d" % i)
        rec = c.send("evch.json", '{"message":"no time"}', "none")
        c.flush()
        rows = clickhouse.rows("SELECT key, event_time_ms, toUnixTimestamp(event_time) AS s, field_names FROM "
                               "loggate.logs WHERE logstore = 'evch' ORDER BY event_time_ms")
        assert [(r["key"], r["event_time_ms"], r["s"]) for r in rows] == \
            [("fb0", times[0], times[0] // 1000), ("fb1", times[1], times[1] // 1000), ("none", rec, rec // 1000)]
        assert "host.name" in rows[0]["field_names"] and "host" not in rows[0]["field_names"]
        logs = gw.logs("evch", args=["--from", "@%d" % (times[0] + 1), "--to", "@%d" % times[1]])
        assert [(l["__key__"], l["__time_ms__"], l["host.name"]) for l in logs] == [("fb1", times[1], "web-1")]
        assert gw.metric("loggate_event_time_fallbacks_total", project="demo", logstore="evch", reason="missing") == 1
    finally:
        gw.stop()


def test_check_config_shows_the_options(gw):
    out = subprocess.run([str(BIN), "check-config", str(gw.config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert ("    logstore evmonasca: 1 shard, routing round_robin, retention kept forever, backend local, "
            'event time from field "creation_time" (epoch_s), flatten depth 2\n') in out.stdout
    assert ("    logstore evauto: 2 shards, routing round_robin, retention kept forever, backend local, "
            'event time from field "auto" (auto), flatten depth 3\n') in out.stdout
    assert "    logstore evplain: 1 shard, routing round_robin, retention kept forever, backend local\n" in out.stdout
