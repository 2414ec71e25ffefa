#!/bin/sh
# Builds the Go producer CLIs used by loggate's integration tests (tests/integration/
# test_sarama.py, test_kafka_go.py) in GOPATH mode against Debian's library sources in
# /usr/share/gocode (golang-github-shopify-sarama-dev 1.22.1,
# golang-github-segmentio-kafka-go-dev 0.2.1; golang-github-xdg-go-scram-dev 1.1.1, the SCRAM client sarama needs). Outputs: tests/clients/go/bin/<name>.
# Also builds config/agents/go (the Go SDK recipe, confluent-kafka-go, for test_agents.py)
# unchanged as bin/confluentrecipe against Debian's confluent-kafka-go 0.11.6
# (golang-github-confluentinc-confluent-kafka-go-dev, librdkafka-dev): the recipe imports
# the current major version's path .../confluent-kafka-go/v2/kafka, which a private
# GOPATH entry (.gopath, a symlink) maps onto Debian's sources.
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
CKG=/usr/share/gocode/src/github.com/confluentinc/confluent-kafka-go
if [ -d "$CKG/kafka" ]; then
    mkdir -p .gopath/src/github.com/confluentinc/confluent-kafka-go
    ln -sfn "$CKG" .gopath/src/github.com/confluentinc/confluent-kafka-go/v2
    GOPATH="$GOPATH:$PWD/.gopath" go build -o bin/confluentrecipe ../../../config/agents/go
else
    echo "build.sh: $CKG missing (golang-github-confluentinc-confluent-kafka-go-dev): bin/confluentrecipe not built" >&2
fi
echo "built: $(ls bin | tr '\n' ' ')"
