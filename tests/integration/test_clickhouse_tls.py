"""loggate reaches ClickHouse over HTTPS with the CA it is given (`[clickhouse] ca_file`),
and refuses a server certificate it cannot verify."""

import socket
import ssl
import subprocess
import threading
import time

import pytest
from confluent_kafka import Producer

from clickhouse import ClickHouse
from gateway import BIN, Gateway


class TlsRelay:
    """Terminates TLS on a loopback port and relays the bytes to ClickHouse's HTTP port, as a
    TLS-terminating load balancer in front of ClickHouse would."""

    def __init__(self, upstream_port, cert, key):
        self.upstream_port = upstream_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        # Handshakes the client refused (a TLS alert, such as an unknown CA), and the reasons.
        # A connection the client drops mid-handshake (the gateway stopping while a background
        # query connects) is not a refusal and is only counted in `handshakes_dropped`.
        self.handshakes_failed = 0
        self.handshakes_dropped = 0
        self.failures = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
            self.handshakes_dropped += 1
            conn.close()
            return
        except (ssl.SSLError, OSError) as e:
            self.failures.append(repr(e))
            self.handshakes_failed += 1
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream_port))

        def pump(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(up, tls), daemon=True).start()
        pump(tls, up)

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def tls_clickhouse(tmp_path):
    ch = ClickHouse(tmp_path)
    ch.start()
    certs = tmp_path / "chcerts"
    subprocess.run([str(BIN), "cert", "--out", str(certs), "--host", "localhost", "--host", "127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    relay = TlsRelay(ch.http_port, str(certs / "server.pem"), str(certs / "server.key"))
    try:
        yield ch, relay, certs
    finally:
        relay.close()
        ch.stop()


def gateway_on(tmp_path, name, url, ca_file=None):
    extra = '[clickhouse]\nurls = ["%s"]\ntimeout_secs = 5' % url
    if ca_file:
        extra += '\nca_file = "%s"' % ca_file
    (tmp_path / name).mkdir(exist_ok=True)
    return Gateway(tmp_path / name, storage={"backend": '"clickhouse"'}, extra_config=extra)


def test_https_with_the_configured_ca(tmp_path, tls_clickhouse):
    ch, relay, certs = tls_clickhouse
    gw = gateway_on(tmp_path, "gw", "https://localhost:%d" % relay.port, certs / "ca.pem").start()
    try:
        p = Producer({"bootstrap.servers": gw.bootstrap("PLAINTEXT"), "linger.ms": 5})
        failures = []
        for i in range(200):
            p.produce("app", value=b"tls-%d" % i, on_delivery=lambda err, msg: err and failures.append(err))
        assert p.flush(30) == 0
        assert failures == []
    finally:
        gw.stop()
    rows = ch.query("SELECT content FROM loggate.logs WHERE startsWith(content, 'tls-') ORDER BY content FORMAT TSV")
    assert sorted(rows.split()) == sorted("tls-%d" % i for i in range(200))
    assert relay.handshakes_failed == 0, relay.failures


def test_an_unverifiable_certificate_is_refused_at_start(tmp_path, tls_clickhouse):
    ch, relay, _ = tls_clickhouse
    # No ca_file: the relay's certificate (signed by loggate's development CA) cannot be verified.
    gw = gateway_on(tmp_path, "gw", "https://localhost:%d" % relay.port)
    with pytest.raises(RuntimeError) as failed:
        gw.start()
    assert "ClickHouse" in str(failed.value) and "certificate" in str(failed.value).lower(), str(failed.value)[-2000:]
    deadline = time.time() + 5
    while relay.handshakes_failed == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert relay.handshakes_failed >= 1, relay.handshakes_dropped
    assert any("unknown ca" in f.lower() or "certificate" in f.lower() for f in relay.failures), relay.failures
    assert ch.query("EXISTS TABLE loggate.logs").strip() == "0"
