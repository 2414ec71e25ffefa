"""What a peer sends never puts a secret in the log, and peer text is escaped there."""

import struct
import time

from confluent_kafka import Producer

from wire import connect, is_closed, read_frame, request, string


def sasl_v1_token(sock, token):
    sock.sendall(request(17, 1, 1, string("PLAIN")))
    assert struct.unpack(">ih", read_frame(sock)[:6]) == (1, 0)
    sock.sendall(request(36, 1, 2, struct.pack(">i", len(token)) + token))
    return struct.unpack(">h", read_frame(sock)[4:6])[0]


def wait_for_log(gw, text, timeout=5):
    deadline = time.time() + timeout
    while text not in gw.log_text() and time.time() < deadline:
        time.sleep(0.05)
    return gw.log_text()


def test_malformed_plain_tokens_never_log_the_password(gateway):
    """Tokens of two parts ("user NUL password", a common client mistake), of four parts,
    and a password whose id and secret were swapped: the secret is in none of the logs."""
    tokens = [
        b"demo\0LGTESTMAIN#TwoPartSecret",
        b"\0demo\0LGTESTMAIN#FourPartSecret\0extra",
        b"\0demo\0SwappedSecret#LGTESTMAIN",
        b"TwoPartNoHashSecret\0demo",
    ]
    for token in tokens:
        s = connect(gateway.ports["SASL_PLAINTEXT"])
        assert sasl_v1_token(s, token) == 58  # SASL_AUTHENTICATION_FAILED
        assert is_closed(s)
    log = wait_for_log(gateway, "SwappedSecret")  # waits out the failure delay; never appears
    assert log.count("SASL authentication failed") >= len(tokens)
    for secret in ("TwoPartSecret", "FourPartSecret", "SwappedSecret", "TwoPartNoHashSecret"):
        assert secret not in log, secret


def test_peer_strings_are_escaped_in_log_lines(gateway):
    """A username, client id and topic holding a newline and an ANSI escape cannot start
    a forged log line or drive the terminal."""
    forged = "x\n2030-01-01T00:00:00Z  INFO loggate: forged line\x1b[31m"
    s = connect(gateway.ports["SASL_PLAINTEXT"])
    assert sasl_v1_token(s, b"\0" + forged.encode() + b"\0LGTESTMAIN#wrong") == 58
    p = Producer({"bootstrap.servers": gateway.bootstrap("PLAINTEXT"), "client.id": "cid-" + forged.replace("\n", "-"),
                  "message.timeout.ms": 3000, "allow.auto.create.topics": False})
    p.produce("nope\nforged", value=b"v")
    p.flush(5)
    log = wait_for_log(gateway, "SASL authentication failed")
    assert "SASL authentication failed" in log
    assert "\nforged line" not in log.replace("\r", "")
    assert "\x1b" not in log
