"""The HTTP endpoint: Prometheus metrics that match what was stored, health and readiness,
and its own bounds."""

import json
import socket
import time

from confluent_kafka import Producer

from clients import check_stored
from gateway import rdkafka_conf
from test_wire_errors import sasl_v1_login
from wire import connect, is_closed, message_v1, parse_produce_v2_response, produce_v2, read_frame


def sasl_ssl(gw):
    return rdkafka_conf(gw, **{"linger.ms": 5, "compression.codec": "lz4"})


def produce(gw, topic, values):
    errors = []
    p = Producer(sasl_ssl(gw))
    for v in values:
        p.produce(topic, value=v, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(30) == 0 and errors == []


def test_metrics_count_the_logs_stored(gateway):
    t0 = time.time()
    raw = ["metrics-raw-%d-%s" % (i, "x" * (i % 17)) for i in range(300)]
    produce(gateway, "app", raw)
    objects = [json.dumps({"n": i, "msg": "m%d" % i}) for i in range(20)]
    not_objects = ["plain text line", "[1, 2]", "42"]
    produce(gateway, "one.json", objects + not_objects)
    check_stored(gateway, "app", raw, t0)
    assert len(gateway.wait_logs("one", 23)) == 23

    m = gateway.metrics()
    logs = lambda store: m[("loggate_logs_written_total", (("logstore", store), ("project", "demo")))]
    value_bytes = lambda store: m[("loggate_value_bytes_written_total", (("logstore", store), ("project", "demo")))]
    fallbacks = lambda store: m[("loggate_json_fallbacks_total", (("logstore", store), ("project", "demo")))]
    assert logs("app") == 300
    assert value_bytes("app") == sum(len(v) for v in raw)
    assert fallbacks("app") == 0
    assert logs("one") == 23
    assert fallbacks("one") == 3  # the text, an array without objects, a number
    assert logs("pinned") == 0
    # every Produce request was timed; the histogram's buckets are cumulative and end at +Inf
    produces = m[("loggate_requests_total", (("api", "Produce"),))]
    assert produces >= 2
    assert m[("loggate_request_duration_seconds_count", (("api", "Produce"),))] == produces
    assert m[("loggate_request_duration_seconds_bucket", (("api", "Produce"), ("le", "+Inf")))] == produces
    assert m[("loggate_request_read_seconds_count", (("api", "Produce"),))] == produces
    assert m[("loggate_sasl_authentications_total", (("result", "success"),))] >= 2
    assert m[("loggate_connections_accepted_total", ())] >= 2
    assert m[("loggate_build_info", (("version", "0.1.0"),))] == 1
    assert m[("loggate_ready", ())] == 1


def test_metrics_count_refused_partitions_and_logins(gateway):
    s = connect(gateway.ports["PLAINTEXT"])
    s.sendall(produce_v2("one", 0, message_v1(b"flipped", crc=12345)))
    assert parse_produce_v2_response(read_frame(s))[1][0][2] == 2  # CORRUPT_MESSAGE
    s.sendall(produce_v2("no-such-logstore", 0, message_v1(b"lost")))
    assert parse_produce_v2_response(read_frame(s))[1][0][2] == 3  # UNKNOWN_TOPIC_OR_PARTITION
    s.close()
    s = connect(gateway.ports["SASL_PLAINTEXT"])
    assert sasl_v1_login(s, "demo", "LGTESTMAIN#wrong-secret") == 58
    assert is_closed(s)

    assert gateway.metric("loggate_produce_partition_errors_total", error="CORRUPT_MESSAGE", project="demo",
                          logstore="one") == 1
    assert gateway.metric("loggate_produce_partition_errors_total", error="UNKNOWN_TOPIC_OR_PARTITION",
                          project="_unknown", logstore="_unknown") == 1
    assert gateway.metric("loggate_sasl_authentications_total", result="bad_secret") == 1
    assert gateway.metric("loggate_logs_written_total", project="demo", logstore="one") == 0
    assert gateway.logs("one") == []


def test_health_readiness_and_other_paths(gateway):
    assert gateway.http_get("/healthz") == (200, "ok\n")
    assert gateway.http_get("/readyz") == (200, "ready\n")
    assert gateway.http_get("/nothing-here")[0] == 404
    s = socket.create_connection(("127.0.0.1", gateway.metrics_port), timeout=5)
    s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 405")
    s.close()


def test_silent_http_clients_are_bounded_and_timed_out(gateway):
    # 64 connections that send nothing take every slot; the next one is closed at once...
    silent = [socket.create_connection(("127.0.0.1", gateway.metrics_port), timeout=5) for _ in range(64)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", gateway.metrics_port), timeout=5)
    assert is_closed(extra, timeout=5)
    # ...and the silent ones are closed after the header timeout, after which scrapes work again.
    started = time.time()
    assert all(is_closed(s, timeout=15) for s in silent)
    assert time.time() - started < 9
    assert gateway.http_get("/healthz") == (200, "ok\n")
    assert "too many HTTP connections" in gateway.log_text()
