"""A TCP proxy for Kafka connections that forwards requests and cuts the connection
instead of delivering some Produce responses: the request was written, the client never
hears so, and retries it."""

import socket
import struct
import threading


def _read_frame(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    size = struct.unpack(">i", head)[0]
    body = b""
    while len(body) < size:
        chunk = sock.recv(min(65536, size - len(body)))
        if not chunk:
            return None
        body += chunk
    return head + body


class CuttingProxy:
    """Listens on a loopback port and forwards to `upstream`; every `every`-th Produce
    response (up to `max_cuts`) is swallowed and both sides are closed. Subclasses choose
    other responses to cut with `should_cut`."""

    def __init__(self, upstream_port, every=3, max_cuts=5, port=0):
        self.upstream_port = upstream_port
        self.every, self.max_cuts = every, max_cuts
        self.produce_responses = 0
        self.cuts = 0
        self.lock = threading.Lock()
        self.socks = []
        # Once set, every connection is closed at once, as to a dead server.
        self.dead = False
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def should_cut(self):
        """Whether to swallow this Produce response (called under the lock)."""
        self.produce_responses += 1
        cut = self.cuts < self.max_cuts and self.produce_responses % self.every == 0
        if cut:
            self.cuts += 1
        return cut

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                if self.dead:
                    raise OSError("dead")
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.socks += [client, upstream]
            api_keys = {}
            threading.Thread(target=self._client_to_server, args=(client, upstream, api_keys), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(client, upstream, api_keys), daemon=True).start()

    def _client_to_server(self, client, upstream, api_keys):
        try:
            while True:
                frame = _read_frame(client)
                if frame is None:
                    break
                if len(frame) >= 12:
                    api_key, _version, corr = struct.unpack(">hhi", frame[4:12])
                    api_keys[corr] = api_key
                upstream.sendall(frame)
        except OSError:
            pass
        self._close(client, upstream)

    def _server_to_client(self, client, upstream, api_keys):
        try:
            while True:
                frame = _read_frame(upstream)
                if frame is None:
                    break
                corr = struct.unpack(">i", frame[4:8])[0] if len(frame) >= 8 else None
                if api_keys.pop(corr, None) == 0:
                    with self.lock:
                        cut = self.should_cut()
                    if cut:
                        break
                client.sendall(frame)
        except OSError:
            pass
        self._close(client, upstream)

    @staticmethod
    def _close(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self):
        self.stopped = True
        self.dead = True
        self.listener.close()
        with self.lock:
            self._close(*self.socks)
