#!/usr/bin/env node
// produce.js: a small kafkajs 2.2.4 producer CLI used by loggate's integration tests
// (tests/integration/test_kafkajs.py). kafkajs speaks ApiVersions, SaslHandshake v1 +
// SaslAuthenticate and Produce v3+ with record batches v2.
//
//   node produce.js --brokers 127.0.0.1:9093 --topic app --codec zstd --acks -1 \
//       --user demo --password 'KEYID#SECRET' --ca /path/ca.pem --count 10 --prefix x \
//       [--key k] [--header name=value ...] [--batch N] [--mechanism plain|scram-sha-256|scram-sha-512]
//
// Values are "<prefix>-<i>" (i = 0..count-1), sent in send() calls of --batch messages
// (default: all in one). Prints one JSON line per partition result kafkajs returns
// ({"topicName","partition","errorCode","baseOffset",...}); on any failure prints the
// error on stderr and exits 1.
//
// Codecs: gzip is built in; snappy comes from kafkajs-snappy, lz4 from kafkajs-lz4 (on the
// `lz4` package; its pure-JS implementation is used when its native addon does not load,
// see lz4Codec below), zstd from
// the small codec below on zstd-codec (WebAssembly; @kafkajs/zstd needs a native build
// that fails on Node 20 here).
'use strict'

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'

const fs = require('fs')
const { parseArgs } = require('util')
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')
const { ZstdCodec } = require('zstd-codec')

// zstd codec for kafkajs on zstd-codec: kafkajs calls compress(encoder) with a kafkajs
// Encoder (its bytes in encoder.buffer) and decompress(buffer); both return Promises of Buffer.
function zstdCodec(level = 3) {
  const ready = new Promise(resolve => ZstdCodec.run(zstd => resolve(zstd)))
  return () => ({
    async compress(encoder) {
      const zstd = await ready
      const out = new zstd.Simple().compress(new Uint8Array(encoder.buffer), level)
      if (!out) throw new Error('zstd compression failed')
      return Buffer.from(out)
    },
    async decompress(buffer) {
      const zstd = await ready
      // Streaming also handles frames without a content size.
      const out = new zstd.Streaming().decompress(new Uint8Array(buffer))
      if (!out) throw new Error('zstd decompression failed')
      return Buffer.from(out)
    },
  })
}

// kafkajs-lz4 codec. The `lz4` package (0.6.5) loads native addons from build/Release via
// lib/utils.js; its npm tarball ships macOS binaries there, replaced only by its install
// script (`node-gyp rebuild`, skipped by tests/install-deps.sh since it needs Node headers).
// When they do not load, register lz4's own pure-JS lib/utils-js.js (same exports, on
// xxhashjs) in its place before kafkajs-lz4 pulls lz4 in.
function lz4Codec() {
  const utils = require.resolve('lz4/lib/utils.js')
  try {
    require(utils)
  } catch (e) {
    const Module = require('module')
    const m = new Module(utils, module)
    m.filename = utils
    m.loaded = true
    m.exports = require('lz4/lib/utils-js.js')
    require.cache[utils] = m
    lz4Codec.pureJS = true
  }
  const LZ4Codec = require('kafkajs-lz4')
  return new LZ4Codec().codec
}

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = lz4Codec()
CompressionCodecs[CompressionTypes.ZSTD] = zstdCodec()

const CODECS = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
}

function fail(msg) {
  process.stderr.write(`produce.js: ${msg}\n`)
  process.exit(1)
}

async function main() {
  const { values: a } = parseArgs({
    options: {
      brokers: { type: 'string', default: '127.0.0.1:9093' },
      topic: { type: 'string', default: 'app' },
      codec: { type: 'string', default: 'none' },
      acks: { type: 'string', default: '-1' },
      user: { type: 'string' },
      password: { type: 'string' },
      mechanism: { type: 'string', default: 'plain' },
      ca: { type: 'string' },
      count: { type: 'string', default: '10' },
      prefix: { type: 'string', default: 'kafkajs' },
      key: { type: 'string' },
      header: { type: 'string', multiple: true, default: [] },
      batch: { type: 'string' },
      timeout: { type: 'string', default: '10000' },
      verbose: { type: 'boolean', default: false },
      idempotent: { type: 'boolean', default: false },
    },
  })
  if (!(a.codec in CODECS)) fail(`bad --codec ${a.codec}`)
  if (a.verbose) process.stderr.write(`produce.js: lz4 ${lz4Codec.pureJS ? 'pure JS' : 'native addon'}\n`)
  const count = parseInt(a.count, 10)
  const batch = a.batch ? parseInt(a.batch, 10) : Math.max(count, 1)
  const timeout = parseInt(a.timeout, 10)

  const config = {
    clientId: 'loggate-kafkajs',
    brokers: a.brokers.split(','),
    connectionTimeout: timeout,
    authenticationTimeout: timeout,
    requestTimeout: timeout,
    retry: { retries: 2, initialRetryTime: 100, maxRetryTime: 1000 },
    logLevel: a.verbose ? logLevel.DEBUG : logLevel.ERROR,
  }
  if (a.ca) config.ssl = { ca: [fs.readFileSync(a.ca, 'utf8')], rejectUnauthorized: true }
  if (a.user !== undefined) config.sasl = { mechanism: a.mechanism, username: a.user, password: a.password || '' }

  const headers = {}
  for (const h of a.header) {
    const i = h.indexOf('=')
    if (i < 0) fail(`bad --header ${h} (want name=value)`)
    headers[h.slice(0, i)] = h.slice(i + 1)
  }

  const producer = new Kafka(config).producer({
    allowAutoTopicCreation: false,
    idempotent: a.idempotent,
    ...(a.idempotent ? { maxInFlightRequests: 1 } : {}),
  })
  await producer.connect()
  try {
    for (let start = 0; start < count; start += batch) {
      const messages = []
      for (let i = start; i < Math.min(start + batch, count); i++) {
        const m = { value: `${a.prefix}-${i}` }
        if (a.key !== undefined) m.key = a.key
        if (a.header.length) m.headers = headers
        messages.push(m)
      }
      const result = await producer.send({
        topic: a.topic,
        messages,
        acks: parseInt(a.acks, 10),
        timeout,
        compression: CODECS[a.codec],
      })
      for (const r of result) process.stdout.write(JSON.stringify(r) + '\n')
    }
  } finally {
    await producer.disconnect()
  }
}

main().catch(e => fail(`${e.name}: ${e.message}${e.type ? ` (${e.type})` : ''}`))
