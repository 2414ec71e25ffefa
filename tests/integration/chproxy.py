"""An HTTP/1.1 forwarding proxy on loopback between loggate and a ClickHouse server, which
records every request and can be told to fail in the ways a ClickHouse server or the network
between fails.  Threads and the standard library only.

    proxy = HttpProxy(clickhouse.url)          # or HttpProxy(("127.0.0.1", port))
    ... point loggate at proxy.url ...
    proxy.set_mode("drop_after_forward", fault_count=1)
    proxy.requests[-1].sql, proxy.requests[-1].body
    proxy.close()

Modes (`proxy.mode = ...` at any time, or `set_mode(mode, fault_count)`):
- "pass": forward every request and relay the answer.
- "refuse": close every open client connection at once, and close new ones as soon as they
  are accepted, answering nothing.
- "hang": read each request and never answer it; the connection is closed when the mode is
  next set (to anything) or the proxy closes.
- "error500": answer 500 with a ClickHouse-like error text, forwarding nothing.
- "drop_after_forward": forward the request, wait for ClickHouse's answer, then close the
  client connection without answering (the insert landed, the client never hears so).
`fault_count=N` faults only the next N requests (for "refuse": N new connections), then the
mode goes back to "pass" by itself.  A request hung under a `fault_count` stays hung until
the mode is next set or the proxy closes.
"""

import http.client
import socket
import threading
import urllib.parse
from collections import namedtuple

MODES = ("pass", "refuse", "hang", "error500", "drop_after_forward")

# Headers that belong to one hop and are not forwarded (the proxy sets its own framing).
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "expect", "content-length", "host"}

# What error500 answers: the shape of a 18.16 error text (code, displayText, what).
ERROR_TEXT = ("Code: 252, e.displayText() = DB::Exception: Too many parts (300); "
              "this answer was made up by the test proxy, e.what() = DB::Exception\n")


class Request(namedtuple("Request", "method path_and_query body")):
    """One recorded request: method, path with query string, and body bytes (chunked
    bodies already joined)."""
    __slots__ = ()

    @property
    def path(self):
        return urllib.parse.urlsplit(self.path_and_query).path

    @property
    def params(self):
        """URL parameters, url-decoded (the last value of a repeated one)."""
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path_and_query).query,
                                           keep_blank_values=True))

    @property
    def sql(self):
        """The `query` URL parameter, url-decoded (None if absent)."""
        return self.params.get("query")


class _ClientGone(Exception):
    pass


def _read_request(rfile, wfile_sock):
    """(method, target, version, [(name, value)], body) or None at end of stream."""
    line = rfile.readline(65537)
    while line in (b"\r\n", b"\n"):
        line = rfile.readline(65537)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise _ClientGone("bad request line %r" % line)
    method, target, version = parts
    headers = []
    while True:
        h = rfile.readline(65537)
        if not h:
            raise _ClientGone("end of stream in headers")
        if h in (b"\r\n", b"\n"):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    lower = {k.lower(): v for k, v in headers}
    if lower.get("expect", "").lower() == "100-continue":
        wfile_sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in lower.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line = rfile.readline(65537)
            if not size_line:
                raise _ClientGone("end of stream in a chunk size")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunk = rfile.read(size)
            if len(chunk) != size:
                raise _ClientGone("end of stream in a chunk")
            body += chunk
            rfile.readline(65537)  # the CRLF after the chunk
        body = bytes(body)
    elif "content-length" in lower:
        n = int(lower["content-length"])
        body = rfile.read(n)
        if len(body) != n:
            raise _ClientGone("end of stream in the body")
    else:
        body = b""
    return method, target, version, headers, body


def _keep_alive(version, headers):
    tokens = ",".join(v for k, v in headers if k.lower() == "connection").lower()
    tokens = {t.strip() for t in tokens.split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


class HttpProxy:
    def __init__(self, upstream, port=0, upstream_timeout=30):
        """`upstream`: "http://host:port", (host, port), or anything with `http_port`
        (a ClickHouse)."""
        if hasattr(upstream, "http_port"):
            upstream = ("127.0.0.1", upstream.http_port)
        elif isinstance(upstream, str):
            u = urllib.parse.urlsplit(upstream)
            upstream = (u.hostname, u.port or 80)
        self.upstream = tuple(upstream)
        self.upstream_timeout = upstream_timeout
        self.requests = []      # [Request]
        self.log = []           # [{"request", "conn", "outcome"}], outcome: pass / a fault / upstream_error
        self.connections = 0    # client connections accepted
        self.refused = 0        # of those, closed by "refuse" at once
        self.error_text = ERROR_TEXT
        self._mode = "pass"
        self.fault_count = None
        self._generation = 0    # bumped by every explicit mode change: ends hangs
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._conns = {}        # id -> socket
        self._threads = []
        self._closed = False
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="chproxy-accept", daemon=True)
        t.start()
        self._accept_thread = t

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # ---- modes

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, mode):
        self.set_mode(mode, self.fault_count)

    def set_mode(self, mode, fault_count=None):
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % (MODES,))
        with self._lock:
            self._mode = mode
            self.fault_count = fault_count
            self._generation += 1
            self._changed.notify_all()
            doomed = list(self._conns.values()) if mode == "refuse" else []
        for s in doomed:
            _shut(s)

    def _take_fault(self, applies):
        """The mode to apply to the next request (or new connection): the current mode if it
        is one of `applies`, counting it against fault_count, else "pass"."""
        with self._lock:
            mode = self._mode
            if mode not in applies:
                return "pass"
            if self.fault_count is not None:
                if self.fault_count <= 0:
                    self._mode, self.fault_count = "pass", None
                    return "pass"
                self.fault_count -= 1
                if self.fault_count == 0:
                    self._mode, self.fault_count = "pass", None
            return mode

    # ---- connections

    def _accept_loop(self):
        conn_id = 0
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            conn_id += 1
            with self._lock:
                self.connections += 1
            if self._take_fault(("refuse",)) == "refuse":
                with self._lock:
                    self.refused += 1
                _shut(sock)
                continue
            with self._lock:
                if self._closed:
                    _shut(sock)
                    return
                self._conns[conn_id] = sock
                if self._mode == "refuse":  # set between the check and here
                    self._conns.pop(conn_id)
                    _shut(sock)
                    continue
            t = threading.Thread(target=self._serve, args=(conn_id, sock), name="chproxy-%d" % conn_id, daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn_id, sock):
        rfile = sock.makefile("rb")
        try:
            while not self._closed:
                try:
                    req = _read_request(rfile, sock)
                except (_ClientGone, OSError, ValueError):
                    return
                if req is None:
                    return
                method, target, version, headers, body = req
                request = Request(method, target, body)
                entry = {"request": request, "conn": conn_id, "outcome": None}
                with self._lock:
                    self.requests.append(request)
                    self.log.append(entry)
                    generation = self._generation
                fault = self._take_fault(("refuse", "hang", "error500", "drop_after_forward"))
                entry["outcome"] = fault
                if fault == "refuse":
                    return
                if fault == "hang":
                    with self._lock:
                        while not self._closed and self._generation == generation:
                            self._changed.wait(0.5)
                    return
                keep = _keep_alive(version, headers)
                if fault == "error500":
                    payload = self.error_text.encode()
                    head = [("Content-Type", "text/plain; charset=UTF-8")]
                    self._respond(sock, 500, "Internal Server Error", head, payload, keep, method)
                    if not keep:
                        return
                    continue
                try:
                    status, reason, resp_headers, resp_body = self._forward(method, target, headers, body)
                except (OSError, http.client.HTTPException):
                    entry["outcome"] = "upstream_error"
                    return  # like a server that went away: the client sees a closed connection
                if fault == "drop_after_forward":
                    return
                self._respond(sock, status, reason, resp_headers, resp_body, keep, method)
                if not keep:
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.pop(conn_id, None)
            try:
                rfile.close()
            except OSError:
                pass
            _shut(sock)

    def _forward(self, method, target, headers, body):
        conn = http.client.HTTPConnection(self.upstream[0], self.upstream[1], timeout=self.upstream_timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", "%s:%d" % self.upstream)
            for k, v in headers:
                if k.lower() not in _HOP:
                    conn.putheader(k, v)
            if body or method.upper() in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP], data
        finally:
            conn.close()

    def _respond(self, sock, status, reason, headers, body, keep, method):
        lines = ["HTTP/1.1 %d %s" % (status, reason)]
        lines += ["%s: %s" % (k, v) for k, v in headers]
        lines.append("Content-Length: %d" % len(body))
        lines.append("Connection: %s" % ("Keep-Alive" if keep else "close"))
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if method.upper() != "HEAD":
            data += body
        sock.sendall(data)

    # ---- end

    def close(self):
        with self._lock:
            self._closed = True
            self._generation += 1
            self._changed.notify_all()
            conns = list(self._conns.values())
            self._conns.clear()
        try:
            self._listener.close()
        except OSError:
            pass
        for s in conns:
            _shut(s)
        self._accept_thread.join(5)
        for t in self._threads:
            t.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
