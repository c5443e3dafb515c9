"""A TCP proxy in front of a broker that loses some Produce responses.

It forwards every request to the broker, but for the Produce responses it is told to lose it
closes the client's connection instead of passing the response on. The broker has appended the
batch; the client never hears so and sends the same batch again (same producer id, epoch and
sequence) on a new connection. That is the retry an idempotent producer must not turn into a
duplicate.

The broker must advertise the proxy's address (`--advertise`), or clients would connect to the
broker directly after bootstrap.
"""

from __future__ import annotations

import socket
import struct
import threading

PRODUCE = 0


class ResponseDroppingProxy:
    def __init__(self, upstream_port: int, drop_every: int, max_drops: int):
        """Lose the response of every `drop_every`-th Produce request (counted over all
        connections), at most `max_drops` times."""
        self.upstream_port = upstream_port
        self.drop_every = drop_every
        self.max_drops = max_drops
        self.produce_requests = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def close(self):
        self._closed = True
        self._server.close()
        with self._lock:
            for s in self._sockets:
                _close(s)

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _close(client)
                continue
            doomed: set[int] = set()  # correlation ids whose response is to be lost
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream, doomed),
                             daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, doomed),
                             daemon=True).start()

    def _requests(self, client, upstream, doomed):
        try:
            while True:
                frame = _read_frame(client)
                api_key, _, correlation_id = struct.unpack(">hhi", frame[4:12])
                if api_key == PRODUCE:
                    with self._lock:
                        self.produce_requests += 1
                        if (self.dropped < self.max_drops
                                and self.produce_requests % self.drop_every == 0):
                            self.dropped += 1
                            doomed.add(correlation_id)
                upstream.sendall(frame)
        except (OSError, ConnectionError):
            pass
        finally:
            _close(client)
            _close(upstream)

    def _responses(self, upstream, client, doomed):
        try:
            while True:
                frame = _read_frame(upstream)
                (correlation_id,) = struct.unpack(">i", frame[4:8])
                if correlation_id in doomed:
                    break  # the broker has answered; the client will not hear it
                client.sendall(frame)
        except (OSError, ConnectionError):
            pass
        finally:
            _close(client)
            _close(upstream)


def _read_frame(sock) -> bytes:
    header = _read(sock, 4)
    (size,) = struct.unpack(">i", header)
    return header + _read(sock, size)


def _read(sock, n) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
