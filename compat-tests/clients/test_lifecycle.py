"""The broker's lifecycle as a process: it is ready when it says so.

`broker registered` on stderr is the documented readiness signal (this suite's fixtures wait for
it). A request sent the moment the line appears must be served, not refused as "not ready".
Graceful shutdown (exit code 0 on SIGTERM) is checked by every fixture's teardown.
"""

from __future__ import annotations

import socket
import time
import struct

import pytest
from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse

from conftest import READY_LINE
from raw_kafka import CREATE_TOPICS_VERSION

# The race this guards against is a narrow window, so it is tried many times (~10 ms a start).
STARTS = 200


def validate_only_create() -> bytes:
    topic = CreateTopicsRequest.CreatableTopic(
        name="probe", num_partitions=1, replication_factor=1, assignments=[], configs=[])
    request = CreateTopicsRequest(topics=[topic], timeout_ms=5_000, validate_only=True)
    request.with_header(correlation_id=1, client_id="ready-probe")
    return request.encode(version=CREATE_TOPICS_VERSION, header=True, framed=True)


class ReadyProbe:
    """Connects as soon as the listener accepts, and sends a CreateTopics (validate_only) the
    moment the readiness line is read, so as little as possible happens in between."""

    def __init__(self, port):
        self.port = port
        self.request = validate_only_create()
        self.answers = []  # (error code, message) per start
        self.sock = None

    def _connect(self):
        try:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except ConnectionRefusedError:
            self.sock = None  # not bound yet; the next line tries again

    def on_line(self, line):
        if self.sock is None:
            self._connect()
        if READY_LINE not in line:
            return
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(self.request)
            # Keep this CPU busy for a moment instead of blocking in recv at once: the broker
            # thread that just logged the line may have been preempted by this one, and a loaded
            # machine (CI) would keep it off the CPU like this. Not a wait for any state.
            spin_until = time.perf_counter() + 0.005
            while time.perf_counter() < spin_until:
                pass
            size = struct.unpack(">i", _read(self.sock, 4))[0]
            response = CreateTopicsResponse.decode(
                _read(self.sock, size), version=CREATE_TOPICS_VERSION, header=True)
            (topic,) = response.topics
            self.answers.append((topic.error_code, topic.error_message))
        finally:
            self.sock.close()
            self.sock = None


def _read(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


@pytest.mark.timeout(120)
def test_ready_line_means_ready(broker_factory):
    broker = broker_factory.start()  # the first start only picks the port and data dir
    probe = ReadyProbe(broker.port)
    for _ in range(STARTS):
        broker.restart(on_line=probe.on_line)
    assert len(probe.answers) == STARTS
    refused = [a for a in probe.answers if a[0] != 0]
    assert not refused, (
        f"{len(refused)} of {STARTS} starts refused a CreateTopics sent right after "
        f"'{READY_LINE}' was logged: {refused[:3]}")
