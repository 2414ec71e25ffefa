#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs every client and tool the tests
# use, builds loggate, runs the Rust tests and the real-client integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/install-deps.sh

cargo build --release --locked -p loggate
cargo test --workspace --locked --release

python3 -m pytest -q -p no:cacheprovider --timeout=300 tests/integration "$@"
