// kafkagoproducer: a small producer CLI on segmentio/kafka-go 0.2.1 (Debian's
// golang-github-segmentio-kafka-go-dev) used by loggate's integration tests
// (tests/integration/test_kafka_go.py).
//
// It sends -count messages with values "<prefix>-<i>" (i = 0..count-1) to -topic through
// a kafka.Writer (round-robin over the topic's partitions), prints "ok value=<v>" per
// message on stdout once the write returned, and exits non-zero with the error text on
// stderr on any failure.
//
// Protocol notes for kafka-go 0.2.1: Metadata v0, then always Produce v2 with message
// format v1 (magic 1); codecs gzip, snappy and lz4 (no zstd); no SASL, so it targets
// loggate's PLAINTEXT or SSL listener (both bound to one project). Its TLS config needs
// a server name (it does not derive one from the address); acks=0 is not supported by
// this version (it always waits for a Produce response).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"strings"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/gzip"
	"github.com/segmentio/kafka-go/lz4"
	"github.com/segmentio/kafka-go/snappy"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kafkagoproducer: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap brokers")
	topic := flag.String("topic", "app", "topic (logstore)")
	codec := flag.String("codec", "none", "none|gzip|snappy|lz4")
	acks := flag.Int("acks", 1, "required acks: 1 or -1")
	tlsCA := flag.String("tls-ca", "", "enable TLS, verifying the server with this CA (PEM)")
	serverName := flag.String("server-name", "127.0.0.1", "TLS server name to verify (an IP sends no SNI)")
	count := flag.Int("count", 10, "number of messages")
	prefix := flag.String("prefix", "kafkago", "message values are <prefix>-<i>")
	key := flag.String("key", "", "message key (none if empty)")
	batch := flag.Int("batch", 100, "messages per Produce request (Writer BatchSize)")
	timeout := flag.Duration("timeout", 10*time.Second, "overall timeout")
	verbose := flag.Bool("verbose", false, "print kafka-go's own log on stderr")
	flag.Parse()

	dialer := &kafka.Dialer{ClientID: "loggate-kafkagoproducer", Timeout: *timeout, DualStack: true}
	if *tlsCA != "" {
		pem, err := ioutil.ReadFile(*tlsCA)
		if err != nil {
			fail("reading CA: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail("no certificate in %s", *tlsCA)
		}
		dialer.TLS = &tls.Config{RootCAs: pool, ServerName: *serverName}
	}

	cfg := kafka.WriterConfig{
		Brokers:      strings.Split(*brokers, ","),
		Topic:        *topic,
		Dialer:       dialer,
		Balancer:     &kafka.RoundRobin{},
		MaxAttempts:  3,
		BatchSize:    *batch,
		BatchTimeout: 20 * time.Millisecond,
		ReadTimeout:  *timeout,
		WriteTimeout: *timeout,
		RequiredAcks: *acks,
		ErrorLogger:  log.New(os.Stderr, "[kafka-go error] ", log.LstdFlags|log.Lmicroseconds),
	}
	if *verbose {
		cfg.Logger = log.New(os.Stderr, "[kafka-go] ", log.LstdFlags|log.Lmicroseconds)
	}
	switch *codec {
	case "none":
	case "gzip":
		cfg.CompressionCodec = gzip.NewCompressionCodec()
	case "snappy":
		cfg.CompressionCodec = snappy.NewCompressionCodec()
	case "lz4":
		cfg.CompressionCodec = lz4.NewCompressionCodec()
	default:
		fail("bad -codec %q (kafka-go 0.2.1 knows none, gzip, snappy, lz4)", *codec)
	}
	if *acks != 1 && *acks != -1 {
		fail("bad -acks %d: kafka-go 0.2.1 always reads a Produce response, use 1 or -1", *acks)
	}

	w := kafka.NewWriter(cfg)
	msgs := make([]kafka.Message, *count)
	for i := range msgs {
		msgs[i] = kafka.Message{Value: []byte(fmt.Sprintf("%s-%d", *prefix, i))}
		if *key != "" {
			msgs[i].Key = []byte(*key)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	err := w.WriteMessages(ctx, msgs...)
	closeErr := w.Close()
	if err != nil {
		fail("write: %v", err)
	}
	if closeErr != nil {
		fail("close: %v", closeErr)
	}
	for _, m := range msgs {
		fmt.Printf("ok value=%s\n", m.Value)
	}
	st := w.Stats()
	fmt.Printf("writes=%d messages=%d errors=%d\n", st.Writes, st.Messages, st.Errors)
}
