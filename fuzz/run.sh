#!/usr/bin/env bash
# Coverage-guided fuzzing of loggate's peer-facing decoders (see FUZZING.md).
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer args...]   fuzz TARGET for SECONDS (niced)
#   fuzz/run.sh --merge TARGET                        minimize fuzz/corpus/TARGET + the working corpus into fuzz/corpus/TARGET
#   fuzz/run.sh --build                               build every target
#   fuzz/run.sh --list                                list the targets
#
# Stable toolchain: cargo-fuzz with `--sanitizer none` (libFuzzer's coverage comes from
# rustc's stable -Cpasses=sancov-module; no -Z flag, no nightly, no RUSTC_BOOTSTRAP).
# cargo-fuzz is installed from crates.io when missing. Runs one fuzzer process at a time
# (libFuzzer fork mode with one job, so that a finding is saved and fuzzing goes on).
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
targets=(header dispatch session records codec_gzip codec_snappy codec_lz4 codec_zstd plain scram storage)

die() { echo "fuzz/run.sh: $*" >&2; exit 2; }

ensure_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io" >&2
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
  fi
}

build() {
  ensure_cargo_fuzz
  # -s none: no sanitizer (sanitizers need nightly); -O: optimized; -a: debug assertions
  # and overflow checks, so arithmetic overflow on peer input is a finding too.
  (cd "$root" && nice -n 19 cargo fuzz build --fuzz-dir fuzz -s none -O -a "$@")
}

bin_of() {
  local triple
  triple=$(rustc -vV | sed -n 's/^host: //p')
  echo "$here/target/$triple/release/$1"
}

known() { local t; for t in "${targets[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }

case "${1:-}" in
  --list) printf '%s\n' "${targets[@]}"; exit 0 ;;
  --build) build; exit 0 ;;
  --merge)
    t=${2:-}; known "$t" || die "unknown target '$t' (fuzz/run.sh --list)"
    build "$t"
    mkdir -p "$here/work"
    new=$(mktemp -d "$here/work/merge.XXXXXX")
    tmp=$(mktemp -d /dev/shm/loggate-fuzz.XXXXXX 2>/dev/null || mktemp -d)
    trap 'rm -rf "$tmp" "$new"' EXIT
    mkdir -p "$here/corpus/$t" "$here/work/corpus/$t"
    # A small set that keeps every covered edge (hit counts ignored), smaller inputs first.
    mkdir -p "$here/artifacts/$t"
    TMPDIR=$tmp nice -n 19 "$(bin_of "$t")" -set_cover_merge=1 -use_counters=0 -timeout=10 \
      -artifact_prefix="$here/artifacts/$t/merge-" \
      "$new" "$here/corpus/$t" "$here/work/corpus/$t"
    # Inputs over 16 KiB stay out of the repository (a few hundred KB in all).
    find "$new" -type f -size +16k -delete
    rm -rf "$here/corpus/$t"; mkdir -p "$here/corpus/$t"; cp "$new"/* "$here/corpus/$t/" 2>/dev/null || true
    echo "fuzz/corpus/$t: $(ls "$here/corpus/$t" | wc -l) inputs, $(cat "$here/corpus/$t"/* 2>/dev/null | wc -c) bytes"
    exit 0 ;;
  ''|-h|--help) sed -n '2,12p' "$0"; exit 0 ;;
esac

t=$1; secs=${2:-}; shift 2 || true
known "$t" || die "unknown target '$t' (fuzz/run.sh --list)"
[[ $secs =~ ^[0-9]+$ ]] || die "SECONDS must be a number"
build "$t"

mkdir -p "$here/work/corpus/$t" "$here/work/logs" "$here/artifacts/$t" "$here/corpus/$t"
# The targets' temporary data dirs (logstores) go to tmpfs: the dispatch target fsyncs.
tmp=$(mktemp -d /dev/shm/loggate-fuzz.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dict=()
[[ -f $here/dict/$t.dict ]] && dict=(-dict="$here/dict/$t.dict")
log=$here/work/logs/$t.log
echo "fuzzing $t for ${secs}s; log $log, new inputs in fuzz/work/corpus/$t, findings in fuzz/artifacts/$t" >&2
# -timeout: an input running over 10 s is a finding (the harness's own bound is 2 s per
# input, checked after it returns); -rss_limit_mb: a backstop, the allocation bound is
# the harness's counting allocator; -fork=1 with -ignore_*: save each finding and go on.
set +e
TMPDIR=$tmp nice -n 19 "$(bin_of "$t")" \
  -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
  -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
  -artifact_prefix="$here/artifacts/$t/" -print_final_stats=1 "${dict[@]}" "$@" \
  "$here/work/corpus/$t" "$here/corpus/$t" 2>&1 | tee "$log" | grep -E '^#[0-9]+|INFO: fuzzed|crash|timeout|oom' | tail -n 40
set -e
echo "--- $t: $(grep -E '^#[0-9]+' "$log" | tail -n 1)" >&2
echo "--- findings: $(ls "$here/artifacts/$t" | wc -l) file(s) in fuzz/artifacts/$t" >&2
