#!/usr/bin/env python3
"""Summarise a flat `perf record` of loggate: top functions and the share of samples per stage.

    python3 bench/perf_summary.py bench/results/perf-raw-lz4.data [--top 25]

Self time only (no call graphs): each sample is charged to the function it was in, and the
function to a stage by its name. memcpy/malloc/kernel are their own rows because a flat
profile cannot tell which stage called them.
"""

import argparse
import os
import re
import subprocess
from collections import OrderedDict

# (stage, regex on "dso symbol"), first match wins.
STAGES = [
    ("TLS (rustls + ring AES-GCM)", r"ring_core|\bring::|rustls|aes_gcm|gcm_|aesni|chacha"),
    ("CRC (crc32c / crc32fast)", r"crc32c|crc32fast|crc_u64"),
    ("decompression (lz4/snappy/zstd/gzip)", r"lz4_flex|\bLZ4_|\bsnap::|zstd|ZSTD_|HUF_|FSE_|flate2|miniz_oxide|inflate"),
    ("record decoding (loggate_records)", r"loggate_records::"),
    ("JSON parsing / fields (json_scan, serde_json, indexmap, hashing)", r"json_scan|top_level_fields|serde_json|serde_core|indexmap|hashbrown|BuildHasher|sip::Hasher|from_utf8"),
    ("conversion (ingest::convert)", r"ingest::convert|ingest::Ingest"),
    ("storage encode + queue (loggate_storage)", r"loggate_storage::"),
    ("Bytes refcounts (bytes::)", r"\bbytes::"),
    ("Kafka framing / produce handler (loggate::kafka, server)", r"loggate::kafka|loggate::server|kafka_protocol"),
    ("allocator (malloc/free, Vec growth)", r"malloc|_int_free|cfree|realloc|unlink_chunk|malloc_consolidate|__rdl_|__rust_alloc|__rust_dealloc|__rust_realloc|no_alloc_shim|finish_grow|grow_one|tcache"),
    ("memcpy / memset (any caller)", r"__mem(move|cpy|set)|__memcpy|__memset"),
    ("tokio runtime", r"tokio::|mio::|parking_lot"),
    ("kernel: TCP / sockets", r"\[k\].*(tcp|skb|sock|inet|ip_|__dev_|net_|_copy_to_iter|_copy_from_iter|loopback|softirq)"),
    ("kernel: file write (ext4, page cache)", r"\[k\].*(ext4|folio|filemap|jbd2|iomap|generic_perform_write|block_|balance_dirty|fdatasync|blk_|__es_|dquot|buffer_head|vfs_|pwrite)"),
    ("kernel: memory (page faults, zeroing)", r"\[k\].*(page_fault|clear_page|anonymous_page|mm_fault|unmap_page|get_page_from|memcg|mem_cgroup|rmqueue|free_pages|alloc_pages|frozen_pages|lru|madvise|vma|pte|vm_normal_page|munmap|mmap|slab|kmem_cache)"),
    ("kernel: scheduling, futex, wakeups", r"\[k\].*(task_switch|schedule|spin_unlock|futex|wake|try_to_wake|enqueue|dequeue|irqentry|epoll|ep_poll|update_curr|syscall|entry_SYSCALL|hrtimer)"),
    ("kernel: other", r"\[k\]"),
]


def load(path):
    # Sorted by thread too: perf merges the samples of one (dso, symbol) from every process
    # into one entry when the thread is not a sort key, and `--pid` then keeps or drops the
    # whole entry, so a libc or kernel symbol the client also ran would count the client's
    # samples as the server's.
    cmd = ["perf", "report", "-i", path, "--stdio", "--no-children", "--sort", "pid,dso,sym", "--percent-limit", "0"]
    if os.path.exists(path + ".pid"):  # run.py records system-wide: keep the server's samples
        cmd += ["--pid", open(path + ".pid").read().strip()]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    merged = OrderedDict()
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\d+:\S*\s+(\S+)\s+(\[.\])\s+(.*)", line)
        if m:
            key = (m.group(2), m.group(3) + " " + m.group(4).strip())
            merged[key] = merged.get(key, 0.0) + float(m.group(1))
    return sorted(((pct, dso, sym) for (dso, sym), pct in merged.items()), key=lambda r: -r[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--top", type=int, default=20)
    a = ap.parse_args()
    rows = load(a.data)
    total = sum(r[0] for r in rows) or 1.0  # rescale: filtered by pid, shares are of all CPUs
    rows = [(pct * 100.0 / total, dso, sym) for pct, dso, sym in rows]
    print("Top functions (self time):\n\n| % | where | function |\n|---:|---|---|")
    for pct, dso, sym in rows[:a.top]:
        name = sym[4:]
        if len(name) > 90:
            name = name[:87] + "..."
        print("| %.1f | %s | `%s` |" % (pct, dso, name))
    shares = OrderedDict((s, 0.0) for s, _ in STAGES)
    shares["other"] = 0.0
    for pct, dso, sym in rows:
        key = "%s %s" % (dso, sym)
        for stage, rx in STAGES:
            if re.search(rx, key):
                shares[stage] += pct
                break
        else:
            shares["other"] += pct
    print("\nShare of server CPU samples by stage:\n\n| stage | % |\n|---|---:|")
    for stage, pct in sorted(shares.items(), key=lambda kv: -kv[1]):
        print("| %s | %.1f |" % (stage, pct))


if __name__ == "__main__":
    main()
