"""A connection's requests are pipelined: a Produce waiting for storage does not stop the
next ones from being read and started, answers go out in request order, and the records
are stored in the order they were sent."""

import time

from confluent_kafka import Producer

from gateway import Gateway


def producer(gw, **conf):
    base = {"bootstrap.servers": gw.bootstrap("PLAINTEXT"), "acks": "1", "enable.idempotence": False}
    base.update(conf)
    return Producer(base)


def test_records_keep_their_order_with_many_requests_in_flight(tmp_path):
    """librdkafka with no linger and up to 1000 requests in flight on one connection: the
    shard holds the records in the order they were sent, each once, offsets gapless."""
    gw = Gateway(tmp_path).start()
    try:
        p = producer(gw, **{"linger.ms": 0, "max.in.flight": 1000, "batch.num.messages": 7})
        values = ["order-%05d" % i for i in range(3000)]
        failed = []
        for v in values:
            p.produce("one", value=v.encode(), on_delivery=lambda e, m: e and failed.append(e))
            p.poll(0)
        assert p.flush(60) == 0 and failed == []
        logs = gw.logs("one")
    finally:
        gw.stop()
    assert [l["content"] for l in logs] == values
    assert [l["__offset__"] for l in logs] == list(range(len(values)))


def test_requests_waiting_for_one_clickhouse_insert_window_do_not_queue_behind_each_other(tmp_path, clickhouse):
    """With a 1 s insert window, 20 Produce requests sent back to back on one connection
    all join the first insert or two: answered one after another they would take 20 s."""
    (tmp_path / "gw").mkdir()
    extra = '[clickhouse]\nurls = ["%s"]\ninsert_window_ms = 1000' % clickhouse.url
    gw = Gateway(tmp_path / "gw", storage={"backend": '"clickhouse"'}, extra_config=extra).start()
    try:
        # One record per batch, so one per Produce request (the logstore has one partition).
        p = producer(gw, **{"linger.ms": 0, "max.in.flight": 100, "batch.num.messages": 1})
        # Connected and Metadata known before the clock starts.
        p.produce("one", value=b"warm-up")
        assert p.flush(30) == 0
        failed = []
        started = time.monotonic()
        for i in range(20):
            p.produce("one", value=b"pipelined-%02d" % i, on_delivery=lambda e, m: e and failed.append(e))
            p.poll(0)
        assert p.flush(60) == 0 and failed == []
        took = time.monotonic() - started
        inserts = int(gw.metric("loggate_clickhouse_inserts_total"))
    finally:
        gw.stop()
    rows = clickhouse.query("SELECT content FROM loggate.logs WHERE startsWith(content, 'pipelined-') ORDER BY batch_id, position FORMAT TSV")
    assert rows.split() == ["pipelined-%02d" % i for i in range(20)]
    # One batch, so one request, per record.
    batches = clickhouse.query("SELECT count(DISTINCT batch_id) FROM loggate.logs WHERE startsWith(content, 'pipelined-')")
    assert int(batches) == 20
    assert took < 8, "20 requests took %.1f s: answered one window after another" % took
    assert inserts <= 6, inserts
