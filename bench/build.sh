#!/usr/bin/env bash
# Builds the load generator on the system librdkafka (Debian: apt-get install librdkafka-dev).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p bin
gcc -O2 -Wall -Wextra -o bin/loadgen loadgen.c -lrdkafka -lpthread
