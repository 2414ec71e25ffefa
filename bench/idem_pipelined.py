#!/usr/bin/env python3
"""One idempotent producer pipelining acks=all Produce requests on one partition, as the
Java client does (librdkafka and kafka-python keep one idempotent request per partition in
flight): raw Produce v3 frames of `--per` 200 B records, `--requests` of them written at
once on one PLAINTEXT connection, `--rounds` times. Prints, per round, the fsyncs the
server made for them and the requests/s. Compare builds with LOGGATE_BIN=<binary>.

    python3 bench/idem_pipelined.py [--requests 200] [--per 5] [--rounds 3]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from gateway import BIN, Gateway  # noqa: E402
from test_idempotence import idempotent_batch, init_producer_id  # noqa: E402
from wire import connect, produce_v3, read_frame  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--per", type=int, default=5, help="records per request")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        gw = Gateway(Path(d)).start()
        try:
            s = connect(gw.ports["PLAINTEXT"])
            pid = init_producer_id(s)
            print("binary:", BIN)
            print("| round | fsyncs | requests | requests/s |\n|---|---|---|---|")
            for rnd in range(args.rounds):
                base = rnd * args.requests * args.per
                frames = b"".join(
                    produce_v3("one", [(0, idempotent_batch(pid, 0, base + r * args.per, [b"x" * 200] * args.per))],
                               acks=-1, correlation_id=r)
                    for r in range(args.requests))
                fsyncs = gw.metric("loggate_storage_fsync_seconds_count")
                start = time.time()
                s.sendall(frames)
                for _ in range(args.requests):
                    read_frame(s)
                elapsed = time.time() - start
                fsyncs = gw.metric("loggate_storage_fsync_seconds_count") - fsyncs
                print("| %d | %d | %d | %d |" % (rnd + 1, fsyncs, args.requests, args.requests / elapsed))
        finally:
            gw.stop()


if __name__ == "__main__":
    main()
