// saramaproducer: a small producer CLI on Shopify/sarama 1.22.1 (Debian's
// golang-github-shopify-sarama-dev, the library inside Filebeat and Telegraf) used by
// loggate's integration tests (tests/integration/test_sarama.py).
//
// It sends -count messages with values "<prefix>-<i>" (i = 0..count-1) to -topic
// through a SyncProducer, prints "partition=<p> offset=<o> value=<v>" per message on
// stdout, and exits non-zero with the error text on stderr on any failure.
//
// Protocol notes for sarama 1.22.1 (read in /usr/share/gocode/src/github.com/Shopify/sarama):
//   - -version picks the Produce version and message format: < 0.10 -> Produce v0 / magic 0,
//     0.10.x -> Produce v2 / magic 1, >= 0.11 -> Produce v3 / record batch v2. This
//     release never sends Produce v7, even for zstd (a real broker rejects zstd below v7).
//   - lz4 needs -version >= 0.10 (sarama's own config check); zstd is not gated by sarama
//     1.22.1 at all, and needs cgo (DataDog/zstd over the system libzstd).
//   - SASL/PLAIN: 1.22.1 has no Net.SASL.Version. The flow follows Config.Version:
//     Version >= 1.0.0 -> SaslHandshake v1 + SaslAuthenticate; below -> SaslHandshake v0 +
//     a raw PLAIN token. Net.SASL.Handshake=false skips the handshake and sends the raw token.
//     So -handshake v0 requires -version < 1.0.0, -handshake v1 requires -version >= 1.0.0,
//     -handshake none disables the handshake, and -handshake auto (default) takes what
//     the version implies.
//   - SASL/SCRAM (-mechanism SCRAM-SHA-256|SCRAM-SHA-512): 1.22.1 always sends SaslHandshake
//     v1 and both SCRAM messages in SaslAuthenticate v0, whatever -version says; the SCRAM
//     client is github.com/xdg-go/scram (Debian's golang-github-xdg-go-scram-dev), the one
//     sarama's own examples use.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"strings"
	"time"

	"github.com/Shopify/sarama"
	"github.com/xdg-go/scram"
)

// scramClient adapts xdg-go/scram to sarama.SCRAMClient.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	client, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	c.conv = client.NewConversation()
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) { return c.conv.Step(challenge) }
func (c *scramClient) Done() bool                            { return c.conv.Done() }

// headerFlags collects repeated -header name=value flags in order.
type headerFlags [][2]string

func (h *headerFlags) String() string { return fmt.Sprint(*h) }
func (h *headerFlags) Set(v string) error {
	i := strings.Index(v, "=")
	if i < 0 {
		return fmt.Errorf("want name=value, got %q", v)
	}
	*h = append(*h, [2]string{v[:i], v[i+1:]})
	return nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "saramaproducer: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9093", "comma-separated bootstrap brokers")
	topic := flag.String("topic", "app", "topic (logstore)")
	version := flag.String("version", "2.1.0", "Kafka version sarama emulates (0.8.2.0 ... 2.1.0)")
	codec := flag.String("codec", "none", "none|gzip|snappy|lz4|zstd")
	acks := flag.Int("acks", 1, "required acks: 0, 1 or -1")
	user := flag.String("user", "", "SASL/PLAIN username (the project)")
	password := flag.String("password", "", "SASL/PLAIN password (AccessKeyId#AccessKeySecret)")
	useSASL := flag.Bool("sasl", false, "authenticate with SASL (PLAIN unless -mechanism says otherwise)")
	mechanism := flag.String("mechanism", "PLAIN", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	handshake := flag.String("handshake", "auto", "auto|v0|v1|none (see the comment at the top)")
	tlsCA := flag.String("tls-ca", "", "enable TLS, verifying the server with this CA (PEM)")
	serverName := flag.String("server-name", "127.0.0.1", "TLS server name to verify (an IP sends no SNI)")
	count := flag.Int("count", 10, "number of messages")
	prefix := flag.String("prefix", "sarama", "message values are <prefix>-<i>")
	key := flag.String("key", "", "message key (none if empty)")
	var headers headerFlags
	flag.Var(&headers, "header", "record header name=value (repeatable; needs -version >= 0.11)")
	idempotent := flag.Bool("idempotent", false, "enable the idempotent producer (needs -version >= 0.11, -acks -1)")
	timeout := flag.Duration("timeout", 10*time.Second, "dial/read/write timeout")
	verbose := flag.Bool("verbose", false, "print sarama's own log on stderr")
	flag.Parse()

	if *verbose {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags|log.Lmicroseconds)
	}

	cfg := sarama.NewConfig()
	// sarama spells 1.x+ versions with three parts ("2.1.0"); accept "1.0.0.0" as well.
	vs := *version
	if !strings.HasPrefix(vs, "0.") && strings.Count(vs, ".") == 3 && strings.HasSuffix(vs, ".0") {
		vs = strings.TrimSuffix(vs, ".0")
	}
	v, err := sarama.ParseKafkaVersion(vs)
	if err != nil {
		fail("bad -version: %v", err)
	}
	cfg.Version = v
	cfg.ClientID = "loggate-saramaproducer"
	cfg.Net.DialTimeout = *timeout
	cfg.Net.ReadTimeout = *timeout
	cfg.Net.WriteTimeout = *timeout
	cfg.Metadata.Retry.Max = 2
	cfg.Metadata.Retry.Backoff = 200 * time.Millisecond
	cfg.Producer.Retry.Max = 2
	cfg.Producer.Retry.Backoff = 200 * time.Millisecond
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.RequiredAcks = sarama.RequiredAcks(*acks)
	cfg.Producer.Idempotent = *idempotent
	if *idempotent {
		cfg.Net.MaxOpenRequests = 1
	}
	// Flush as soon as possible but still let several messages share a batch.
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond

	switch *codec {
	case "none":
		cfg.Producer.Compression = sarama.CompressionNone
	case "gzip":
		cfg.Producer.Compression = sarama.CompressionGZIP
	case "snappy":
		cfg.Producer.Compression = sarama.CompressionSnappy
	case "lz4":
		cfg.Producer.Compression = sarama.CompressionLZ4
	case "zstd":
		cfg.Producer.Compression = sarama.CompressionZSTD
	default:
		fail("bad -codec %q", *codec)
	}

	if *useSASL {
		cfg.Net.SASL.Enable = true
		cfg.Net.SASL.Mechanism = sarama.SASLMechanism(*mechanism)
		switch *mechanism {
		case sarama.SASLTypePlaintext:
		case sarama.SASLTypeSCRAMSHA256:
			cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA256} }
		case sarama.SASLTypeSCRAMSHA512:
			cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA512} }
		default:
			fail("bad -mechanism %q", *mechanism)
		}
		cfg.Net.SASL.User = *user
		cfg.Net.SASL.Password = *password
		atLeast1 := v.IsAtLeast(sarama.V1_0_0_0)
		switch *handshake {
		case "auto":
			cfg.Net.SASL.Handshake = true
		case "v0":
			if atLeast1 {
				fail("sarama 1.22.1 sends SaslHandshake v1 for -version >= 1.0.0; v0 needs an older -version")
			}
			cfg.Net.SASL.Handshake = true
		case "v1":
			if !atLeast1 {
				fail("sarama 1.22.1 sends SaslHandshake v0 for -version < 1.0.0; v1 needs -version >= 1.0.0")
			}
			cfg.Net.SASL.Handshake = true
		case "none":
			cfg.Net.SASL.Handshake = false
		default:
			fail("bad -handshake %q", *handshake)
		}
	}

	if *tlsCA != "" {
		pem, err := ioutil.ReadFile(*tlsCA)
		if err != nil {
			fail("reading CA: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail("no certificate in %s", *tlsCA)
		}
		cfg.Net.TLS.Enable = true
		cfg.Net.TLS.Config = &tls.Config{RootCAs: pool, ServerName: *serverName}
	}

	producer, err := sarama.NewSyncProducer(strings.Split(*brokers, ","), cfg)
	if err != nil {
		fail("connect: %v", err)
	}

	msgs := make([]*sarama.ProducerMessage, *count)
	for i := range msgs {
		m := &sarama.ProducerMessage{Topic: *topic, Value: sarama.StringEncoder(fmt.Sprintf("%s-%d", *prefix, i))}
		if *key != "" {
			m.Key = sarama.StringEncoder(*key)
		}
		for _, h := range headers {
			m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(h[0]), Value: []byte(h[1])})
		}
		msgs[i] = m
	}
	// SendMessages hands all of them to the async producer at once (so they can be
	// batched and compressed together) and waits for every result.
	sendErr := producer.SendMessages(msgs)
	for _, m := range msgs {
		fmt.Printf("partition=%d offset=%d value=%s\n", m.Partition, m.Offset, m.Value)
	}
	closeErr := producer.Close()
	if sendErr != nil {
		if errs, ok := sendErr.(sarama.ProducerErrors); ok {
			for _, e := range errs {
				fmt.Fprintf(os.Stderr, "saramaproducer: message %s: %v\n", e.Msg.Value, e.Err)
			}
		}
		fail("send: %v", sendErr)
	}
	if closeErr != nil {
		fail("close: %v", closeErr)
	}
}
