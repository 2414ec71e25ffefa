"""Hand-built Kafka frames for tests that must send exactly these bytes (bad CRCs,
truncated frames, bombs) and read the raw answer."""

import gzip
import socket
import ssl
import struct
import time
import zlib

import crc32c


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(api_key, version, correlation_id, body, client_id="wire-test", flexible=False):
    """A frame with request header v1, or v2 (an empty tagged-field section) if flexible."""
    header = struct.pack(">hhi", api_key, version, correlation_id) + string(client_id)
    if flexible:
        header += b"\x00"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def uvarint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80])
        n >>= 7
    return out + bytes([n])


def varint(n):
    """A zigzag varint (record fields)."""
    return uvarint((n << 1) ^ (n >> 63))


def record(value, offset_delta=0):
    """One magic-2 record: no key, no headers."""
    body = b"\x00" + varint(0) + varint(offset_delta) + varint(-1) + varint(len(value)) + value + varint(0)
    return varint(len(body)) + body


def record_batch(blob, count, attributes=0, producer=(-1, -1, -1)):
    """A magic-2 batch (base offset 0) around a records blob; `producer` is (id, epoch,
    base sequence)."""
    ts = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhi", attributes, count - 1, ts, ts, *producer) + struct.pack(">i", count) + blob
    rest = struct.pack(">ib", -1, 2) + struct.pack(">I", crc32c.crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(rest)) + rest


def batch_v2(values, codec=0):
    """A magic-2 batch of `values` (codec 0: none, 1: gzip)."""
    blob = b"".join(record(v, i) for i, v in enumerate(values))
    return record_batch(gzip.compress(blob, 1) if codec == 1 else blob, len(values), attributes=codec)


def produce_v3(topic, partitions, acks=1, timeout_ms=10000, correlation_id=1):
    """A Produce v3 frame to one topic: `partitions` is a list of (index, records bytes)."""
    body = struct.pack(">hhi", -1, acks, timeout_ms) + struct.pack(">i", 1) + string(topic) + struct.pack(">i", len(partitions))
    for index, records in partitions:
        body += struct.pack(">ii", index, len(records)) + records
    return request(0, 3, correlation_id, body)


def produce_v3_answer(sock, topic, partition, records, correlation_id, acks=-1, timeout_ms=10000):
    """Sends one partition's records as Produce v3; returns its (error, base_offset)."""
    sock.sendall(produce_v3(topic, [(partition, records)], acks, timeout_ms, correlation_id))
    _, [(_, _, error, offset)] = parse_produce_v2_response(read_frame(sock))
    return error, offset


def message_v1(value, key=None, codec=0, timestamp=1_700_000_000_000, crc=None):
    """One magic-1 message (offset 0)."""
    def nbytes(b):
        return struct.pack(">i", -1) if b is None else struct.pack(">i", len(b)) + b
    body = struct.pack(">bbq", 1, codec, timestamp) + nbytes(key) + nbytes(value)
    crc = zlib.crc32(body) if crc is None else crc
    msg = struct.pack(">I", crc) + body
    return struct.pack(">qi", 0, len(msg)) + msg


def gzip_wrapper_v1(inner_set):
    return message_v1(gzip.compress(inner_set), codec=1)


def produce_v2(topic, partition, message_set, acks=1, correlation_id=1):
    body = struct.pack(">hi", acks, 10000) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", 1) + struct.pack(">ii", partition, len(message_set)) + message_set
    return request(0, 2, correlation_id, body)


def read_frame(sock):
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    return recv_exact(sock, size)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def parse_produce_v2_response(frame):
    """-> (correlation_id, [(topic, partition, error, base_offset)]); Produce v3 answers
    are laid out the same."""
    corr, ntopics = struct.unpack(">ii", frame[:8])
    pos, out = 8, []
    for _ in range(ntopics):
        tlen = struct.unpack(">h", frame[pos:pos + 2])[0]
        topic = frame[pos + 2:pos + 2 + tlen].decode()
        pos += 2 + tlen
        nparts = struct.unpack(">i", frame[pos:pos + 4])[0]
        pos += 4
        for _ in range(nparts):
            part, err, off, _ts = struct.unpack(">ihqq", frame[pos:pos + 22])
            pos += 22
            out.append((topic, part, err, off))
    return corr, out


def connect(port, tls_ca=None, server_hostname=None):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls_ca:
        ctx = ssl.create_default_context(cafile=str(tls_ca))
        ctx.check_hostname = server_hostname is not None
        sock = ctx.wrap_socket(sock, server_hostname=server_hostname)
    return sock


def is_closed(sock, timeout=5):
    """True when the server closed the connection (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
