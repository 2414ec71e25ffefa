#!/bin/sh
# Builds the Go producer CLIs used by loggate's integration tests (tests/integration/
# test_sarama.py, test_kafka_go.py) in GOPATH mode against Debian's library sources in
# /usr/share/gocode (golang-github-shopify-sarama-dev 1.22.1,
# golang-github-segmentio-kafka-go-dev 0.2.1). Outputs: tests/clients/go/bin/<name>.
# sarama's zstd codec needs cgo and pkg-config's libzstd (libzstd-dev).
set -eu
cd "$(dirname "$0")"
mkdir -p bin
export GO111MODULE=off GOPATH="/usr/share/gocode:$PWD" GOFLAGS= CGO_ENABLED=1
# DataDog/zstd calls a deprecated libzstd function: keep gcc quiet about it.
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -Wno-deprecated-declarations}"
# go needs a build cache; without HOME (some CI shells) keep it beside the sources.
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
    export GOCACHE="$PWD/.cache/go-build"
fi
for name in saramaproducer kafkagoproducer; do
    go build -o "bin/$name" "loggatetest/$name"
done
echo "built: $(ls bin | tr '\n' ' ')"
