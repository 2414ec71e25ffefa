#!/usr/bin/env python3
"""loggate recipe: Python SDK, confluent-kafka (librdkafka inside). Checked against
confluent-kafka 2.x (2.16) and run by loggate's tests (tests/integration/test_agents.py)
from this very file.

A complete program: it sends each line of standard input as one log and exits non-zero
unless every one was acknowledged. Settings come from the environment, with the
placeholders of config/agents/ as defaults:
  LOGGATE_BROKERS   loggate.example.com:10012 (a SASL_SSL listener)
  LOGGATE_USERNAME  demo (the project)
  LOGGATE_PASSWORD  AccessKeyId#AccessKeySecret
  LOGGATE_CA        /etc/loggate/ca.pem (the CA that signed loggate's certificate)
  LOGGATE_TOPIC     app (a logstore; app.json parses each line as a JSON object)
kafka-python takes the same values as security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
sasl_plain_username, sasl_plain_password and ssl_cafile.
"""
import os
import sys

from confluent_kafka import Producer


def main():
    env = os.environ.get
    producer = Producer({
        "bootstrap.servers": env("LOGGATE_BROKERS", "loggate.example.com:10012"),
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": env("LOGGATE_USERNAME", "demo"),
        "sasl.password": env("LOGGATE_PASSWORD", "AccessKeyId#AccessKeySecret"),
        "ssl.ca.location": env("LOGGATE_CA", "/etc/loggate/ca.pem"),
        "acks": "all",
        "enable.idempotence": True,
        "compression.codec": "zstd",
        "linger.ms": 20,
    })
    topic = env("LOGGATE_TOPIC", "app")
    failed = []

    def report(err, msg):
        if err is not None:
            failed.append(err)
            print("not delivered: %s" % err, file=sys.stderr)

    for line in sys.stdin.buffer:
        while True:
            try:
                producer.produce(topic, line.rstrip(b"\r\n"), on_delivery=report)
                break
            except BufferError:  # local queue full
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(30) != 0:
        print("not delivered: flush timed out", file=sys.stderr)
        sys.exit(1)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
