#!/usr/bin/env python3
"""raw-lz4 at a fixed rate (default 350,000 records/s, about half of peak here) for 8 s, and
what the server's own histograms say at the end: the share of Produce requests answered
within 5 ms and over 100 ms, how many fsyncs took over 64 ms and how many group writes over
16 ms; and the p99 and share over 100 ms of the steady part, after the first --warmup seconds
of a fresh server (its first requests fault in the memory they are decoded into). Compare
builds with LOGGATE_BIN=<binary>.

    python3 bench/half_probe.py [--rate 350000] [--duration 8] [--warmup 2]
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=350_000)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=2,
                    help="seconds at the start of the load left out of the 'steady' columns (2)")
    args = ap.parse_args()
    seen = {}

    class Probed(run.BenchGateway):
        def stop(self):
            m = self.metrics()
            seen["produce"] = {dict(l).get("le"): v for (n, l), v in m.items()
                               if n == "loggate_request_duration_seconds_bucket" and ("api", "Produce") in l}
            seen["fsync"] = {dict(l).get("le"): v for (n, l), v in m.items() if n == "loggate_storage_fsync_seconds_bucket"}
            seen["write"] = {dict(l).get("le"): v for (n, l), v in m.items() if n == "loggate_storage_write_seconds_bucket"}
            return super().stop()

    row, detail = run.run_workload("half-probe", dict(run.BASE, rate=args.rate), args.duration, server=Probed,
                                   warmup=args.warmup)
    d, f, w = seen["produce"], seen["fsync"], seen["write"] or {"0.016": 0, "+Inf": 0}
    warm, end = (detail["buckets_warm"] or {}).get("duration"), detail["buckets_end"]["duration"]
    steady = run.histogram_quantile(0.99, warm, end) if warm else None
    over = (lambda a, b: 100 * ((b[float("inf")] - b[0.1]) - (a[float("inf")] - a[0.1])) / max(b[float("inf")] - a[float("inf")], 1)) if warm else None
    print("| build | records/s | within 5 ms | over 100 ms | server p99 ms | steady: p99 ms, over 100 ms | client RTT p99 ms | fsyncs over 64 ms | writes over 16 ms |")
    print("| %s | %s | %.1f %% | %.1f %% | %s | %s, %s | %s | %d of %d | %d of %d |" % (
        os.environ.get("LOGGATE_BIN", "target/release/loggate"), run.fmt(row["records/s"]),
        100 * d["0.005"] / d["+Inf"], 100 * (d["+Inf"] - d["0.1"]) / d["+Inf"], row["server p99 ms"],
        steady, "%.1f %%" % over(warm, end) if warm else None,
        row["rtt p99 ms"], f["+Inf"] - f["0.064"], f["+Inf"], w["+Inf"] - w["0.016"], w["+Inf"]))


if __name__ == "__main__":
    main()
