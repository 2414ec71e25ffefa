// loggate recipe: Go SDK, confluent-kafka-go (the Go client of the SLS Kafka docs; it wraps
// librdkafka). Checked against confluent-kafka-go v2.x (import path .../v2/kafka, librdkafka
// 2.x) and run in loggate's tests with Debian bookworm's confluent-kafka-go 0.11.6 on
// librdkafka 2.0.2, whose API for everything below is the same.
//
// A complete program: it sends each line of standard input as one log and exits non-zero
// unless every one was acknowledged. Settings come from the environment, with the
// placeholders of config/agents/ as defaults:
//
//	LOGGATE_BROKERS   loggate.example.com:10012 (a SASL_SSL listener)
//	LOGGATE_USERNAME  demo (the project)
//	LOGGATE_PASSWORD  AccessKeyId#AccessKeySecret
//	LOGGATE_CA        /etc/loggate/ca.pem (the CA that signed loggate's certificate)
//	LOGGATE_TOPIC     app (a logstore; app.json parses each line as a JSON object)
//
//	go run . < app.log
package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

func env(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func main() {
	topic := env("LOGGATE_TOPIC", "app")
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers": env("LOGGATE_BROKERS", "loggate.example.com:10012"),
		"security.protocol": "SASL_SSL",
		"sasl.mechanisms":   "PLAIN",
		"sasl.username":     env("LOGGATE_USERNAME", "demo"),
		"sasl.password":     env("LOGGATE_PASSWORD", "AccessKeyId#AccessKeySecret"),
		"ssl.ca.location":   env("LOGGATE_CA", "/etc/loggate/ca.pem"),
		"acks":              "all",
		"compression.codec": "lz4",
		"linger.ms":         20,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(2)
	}
	defer p.Close()

	reports := make(chan kafka.Event, 1024)
	sent, failed := 0, 0
	wait := func() {
		m := (<-reports).(*kafka.Message)
		if m.TopicPartition.Error != nil {
			failed++
			fmt.Fprintln(os.Stderr, "not delivered:", m.TopicPartition.Error)
		}
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64*1024), 1024*1024)
	for in.Scan() {
		msg := &kafka.Message{
			TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: kafka.PartitionAny},
			Value:          append([]byte(nil), in.Bytes()...),
		}
		for {
			err := p.Produce(msg, reports)
			if err == nil {
				break
			}
			if kerr, ok := err.(kafka.Error); !ok || kerr.Code() != kafka.ErrQueueFull || sent == 0 {
				fmt.Fprintln(os.Stderr, "produce:", err)
				os.Exit(2)
			}
			wait() // local queue full: take one delivery report, then retry
			sent--
		}
		sent++
	}
	for ; sent > 0; sent-- {
		wait()
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "stdin:", err)
		os.Exit(2)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
