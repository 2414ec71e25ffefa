#!/bin/sh
# Installs what loggate's integration tests (tests/integration) need on Debian bookworm,
# as root, idempotently: the real Kafka clients they drive (kcat, librdkafka, sarama,
# kafka-go, lua-resty-kafka under nginx, kafkajs, confluent-kafka, kafka-python), the agents
# (collectd, rsyslog, syslog-ng, confluent-kafka-go) and the tools to build the Go and Node
# test programs. Safe to re-run.
#
# Node.js 20 + npm are expected on the machine already; Debian's nodejs/npm packages are
# NOT installed here (Debian's npm conflicts with the machine's node and breaks the whole
# apt-get line).
set -eu
cd "$(dirname "$0")"

export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -E"
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends kcat librdkafka-dev build-essential pkg-config golang-go golang-github-shopify-sarama-dev golang-github-xdg-go-scram-dev golang-github-segmentio-kafka-go-dev golang-github-datadog-zstd-dev libzstd-dev nginx-light libnginx-mod-http-lua lua-nginx-kafka openssl ca-certificates curl python3 python3-pip clickhouse-server clickhouse-client

# Agents that tests/integration/test_agents.py runs from config/agents/: collectd
# (write_kafka), rsyslog (omkafka), the Go SDK (confluent-kafka-go). Kept on a line of
# their own. syslog-ng conflicts with rsyslog, so it is never installed: its packages are
# downloaded and unpacked into a private root (LOGGATE_SYSLOG_NG_ROOT), run from there.
$SUDO apt-get install -y --no-install-recommends collectd-core rsyslog rsyslog-kafka golang-github-confluentinc-confluent-kafka-go-dev
SYSLOG_NG_ROOT="${LOGGATE_SYSLOG_NG_ROOT:-/opt/loggate-tests/syslog-ng}"
if [ ! -e "$SYSLOG_NG_ROOT/usr/lib/syslog-ng/3.38/libkafka.so" ]; then
    debs="$(mktemp -d)"
    # syslog-ng-core's and the module's dependencies that nothing above installs
    (cd "$debs" && chmod 755 . && $SUDO apt-get download syslog-ng-core syslog-ng-mod-rdkafka libivykis0 libnet1 libwrap0)
    $SUDO mkdir -p "$SYSLOG_NG_ROOT"
    for deb in "$debs"/*.deb; do $SUDO dpkg-deb -x "$deb" "$SYSLOG_NG_ROOT"; done
    rm -rf "$debs"
fi

# Python clients, pinned to the versions the tests were written against. A Debian system
# Python refuses pip installs (PEP 668) unless told; a pyenv/venv Python does not need it.
PIP_EXTRA=""
if python3 -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix else 1)'; then
    PIP_EXTRA="--break-system-packages"
fi
python3 -m pip install $PIP_EXTRA \
    pytest==9.2.0 pytest-timeout==2.4.0 confluent-kafka==2.16.1 kafka-python==3.0.12 python-snappy==0.7.3 \
    lz4==4.4.5 zstandard==0.25.0 crc32c==2.9.post0 xxhash==4.1.0 chdb-core==26.9.0

# kafkajs and its codecs (versions pinned in package.json / package-lock.json). Install
# scripts are skipped: the only one is lz4's native `node-gyp rebuild` (it needs Node
# headers from the internet); kafkajs-lz4 then uses lz4's pure-JS implementation.
if ! command -v npm >/dev/null 2>&1; then
    echo "install-deps.sh: npm not found; install Node.js 20 with npm first" >&2
    exit 1
fi
(cd clients/node && npm ci --ignore-scripts --no-audit --no-fund)

# sarama and kafka-go producer programs (GOPATH build against /usr/share/gocode).
clients/go/build.sh
