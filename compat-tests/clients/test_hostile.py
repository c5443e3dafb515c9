"""A hostile client against a real `switchyard serve` process, on every backend: each attack
once crashed, wedged or bloated a node. After each, the node must still answer a Metadata
request, and at the end its peak resident memory (VmHWM) must be under MEMORY_BOUND_KIB.

Frames are built by hand with `struct` (non-flexible request versions only), because real
clients refuse to send most of these requests.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

# Peak resident memory a node may reach over the whole module.
MEMORY_BOUND_KIB = 512 * 1024

INVALID_PARTITIONS = 37
INVALID_COMMIT_OFFSET_SIZE = 28
INVALID_RECORD = 87
MEMBER_ID_REQUIRED = 79

_correlation = itertools.count(1)


def string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def array(items: list[bytes]) -> bytes:
    return struct.pack(">i", len(items)) + b"".join(items)


def frame(api_key: int, version: int, body: bytes) -> tuple[int, bytes]:
    correlation_id = next(_correlation)
    payload = struct.pack(">hhi", api_key, version, correlation_id) + string("hostile") + body
    return correlation_id, struct.pack(">i", len(payload)) + payload


class Reader:
    """Big-endian fields off a response body."""

    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        value = self.data[self.at:self.at + n].decode()
        self.at += n
        return value

    def bytes_(self) -> bytes | None:
        n = self.take(">i")
        if n < 0:
            return None
        value = self.data[self.at:self.at + n]
        self.at += n
        return value

    def array(self, element):
        return [element(self) for _ in range(self.take(">i"))]


class Conn:
    def __init__(self, bootstrap: str):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=60)

    def close(self):
        self.sock.close()

    def call(self, api_key: int, version: int, body: bytes) -> Reader | None:
        """The response body, or None if the broker closed the connection."""
        correlation_id, data = frame(api_key, version, body)
        try:
            self.sock.sendall(data)
            size = struct.unpack(">i", self._read(4))[0]
            response = self._read(size)
        except (ConnectionError, BrokenPipeError):
            return None
        got = struct.unpack_from(">i", response)[0]
        assert got == correlation_id, f"correlation id {got}, expected {correlation_id}"
        return Reader(response[4:])

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionError("closed")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


def still_serving(bootstrap: str) -> None:
    """A Metadata v1 request for every topic, on a fresh connection, is answered."""
    conn = Conn(bootstrap)
    try:
        reply = conn.call(3, 1, struct.pack(">i", -1))
        assert reply is not None, "the node does not answer Metadata"
        brokers = reply.array(lambda r: (r.take(">i"), r.string(), r.take(">i"), r.string()))
        assert brokers, "Metadata lists no broker"
    finally:
        conn.close()


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def create_topic_body(name: str, partitions: int, validate_only: bool) -> bytes:
    topic = (string(name) + struct.pack(">ih", partitions, 1) + array([]) + array([]))
    return array([topic]) + struct.pack(">i?", 10_000, validate_only)


def create_topic(conn: Conn, name: str, partitions: int, validate_only: bool = False) -> int:
    deadline = time.monotonic() + 10
    while True:
        reply = conn.call(19, 2, create_topic_body(name, partitions, validate_only))
        assert reply is not None, "CreateTopics closed the connection"
        reply.take(">i")  # throttle
        (result,) = reply.array(lambda r: (r.string(), r.take(">h"), r.string()))
        if result[1] != 41 or time.monotonic() > deadline:  # NOT_CONTROLLER is retriable
            return result[1]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def target(broker):
    bootstrap, handle = broker
    yield bootstrap, handle
    peak = vm_hwm_kib(handle.proc.pid)
    assert peak < MEMORY_BOUND_KIB, f"peak RSS {peak} KiB over the module"


def test_create_topics_with_two_billion_partitions(target, topic_name):
    bootstrap, _ = target
    conn = Conn(bootstrap)
    for validate_only in (True, False):
        code = create_topic(conn, topic_name, 2**31 - 1, validate_only)
        assert code == INVALID_PARTITIONS, code
    conn.close()
    still_serving(bootstrap)


def test_oversized_offset_commit_is_refused_and_commits_go_on(target, topic_name):
    bootstrap, _ = target
    conn = Conn(bootstrap)
    assert create_topic(conn, topic_name, 1) == 0

    def commit(entries: int, metadata: str) -> set[int]:
        partition = struct.pack(">iq", 0, 1) + string(metadata)
        topic = string(topic_name) + array([partition] * entries)
        body = string("hostile-group") + struct.pack(">i", -1) + string("") + \
            struct.pack(">q", -1) + array([topic])
        reply = conn.call(8, 2, body)
        assert reply is not None, "OffsetCommit closed the connection"
        topics = reply.array(lambda r: (r.string(), r.array(
            lambda p: (p.take(">i"), p.take(">h")))))
        return {code for _, partitions in topics for _, code in partitions}

    # 4,600 entries with 4,000 bytes of metadata each: 18.5 MB, once a record too large for
    # the `wal` backend's followers, which wedged every later metadata write.
    assert commit(4_600, "m" * 4_000) == {INVALID_COMMIT_OFFSET_SIZE}
    assert commit(1, "small") == {0}
    assert create_topic(conn, topic_name + "-after", 1) == 0
    conn.close()
    still_serving(bootstrap)


def test_metadata_listing_millions_of_empty_names(target):
    bootstrap, _ = target
    conn = Conn(bootstrap)
    # 20 MB of empty names (two bytes each) once decoded to 1.78 GB.
    names = 10_000_000
    body = struct.pack(">i", names) + b"\x00\x00" * names
    reply = conn.call(3, 1, body)
    assert reply is None, "a request decoding to 40x its size was served"
    conn.close()
    still_serving(bootstrap)


def test_list_offsets_v1(target, topic_name):
    bootstrap, _ = target
    conn = Conn(bootstrap)
    assert create_topic(conn, topic_name, 1) == 0
    partition = struct.pack(">iq", 0, -1)
    body = struct.pack(">i", -1) + array([string(topic_name) + array([partition])])
    deadline = time.monotonic() + 10
    while True:
        reply = conn.call(2, 1, body)
        assert reply is not None, "ListOffsets v1 closed the connection"
        (topic,) = reply.array(lambda r: (r.string(), r.array(
            lambda p: (p.take(">i"), p.take(">h"), p.take(">q"), p.take(">q")))))
        ((_, code, _, offset),) = topic[1]
        # LEADER_NOT_AVAILABLE / NOT_LEADER while the new partition gets its leader.
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert code == 0 and offset == 0, topic
    conn.close()


def test_fetch_of_one_partition_listed_eight_times(target, topic_name):
    bootstrap, _ = target
    conn = Conn(bootstrap)
    assert create_topic(conn, topic_name, 1) == 0
    partition = struct.pack(">iqi", 0, 0, 2**31 - 1)
    body = struct.pack(">iiiib", -1, 0, 0, 2**31 - 1, 0) + \
        array([string(topic_name) + array([partition] * 8)])
    reply = conn.call(1, 4, body)
    assert reply is not None, "Fetch closed the connection"
    reply.take(">i")  # throttle
    topics = reply.array(lambda r: (r.string(), r.array(lambda p: (
        p.take(">i"), p.take(">h"), p.take(">q"), p.take(">q"),
        p.array(lambda a: (a.take(">q"), a.take(">q"))), p.bytes_()))))
    assert sum(len(partitions) for _, partitions in topics) == 1, topics
    conn.close()


def test_a_batch_claiming_two_billion_records(target, topic_name):
    bootstrap, _ = target
    conn = Conn(bootstrap)
    assert create_topic(conn, topic_name, 1) == 0
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    builder.append(0, timestamp=1_000, key=None, value=b"v", headers=[])
    batch = bytearray(builder.build())
    batch[23:27] = struct.pack(">i", 2**31 - 2)
    batch[57:61] = struct.pack(">i", 2**31 - 1)
    batch[17:21] = struct.pack(">I", calc_crc32c(bytes(batch[21:])))
    body = string(None) + struct.pack(">hi", 1, 10_000) + array([string(topic_name) + array(
        [struct.pack(">i", 0) + struct.pack(">i", len(batch)) + bytes(batch)])])
    deadline = time.monotonic() + 10
    while True:
        reply = conn.call(0, 3, body)
        assert reply is not None, "Produce closed the connection"
        (topic,) = reply.array(lambda r: (r.string(), r.array(
            lambda p: (p.take(">i"), p.take(">h"), p.take(">q"), p.take(">q")))))
        ((_, code, _, _),) = topic[1]
        if code not in (5, 6) or time.monotonic() > deadline:  # leader not yet elected
            break
        time.sleep(0.05)
    assert code == INVALID_RECORD, code
    conn.close()
    still_serving(bootstrap)


def test_thousands_of_member_ids_never_used(target):
    bootstrap, _ = target
    conn = Conn(bootstrap)
    protocol = string("range") + struct.pack(">i", 2) + b"\x00\x01"
    body = string("hostile-joins") + struct.pack(">ii", 10_000, 10_000) + string("") + \
        string("consumer") + array([protocol])
    for _ in range(3_000):
        reply = conn.call(11, 4, body)
        assert reply is not None, "JoinGroup closed the connection"
        reply.take(">i")  # throttle
        assert reply.take(">h") == MEMBER_ID_REQUIRED
    conn.close()
    still_serving(bootstrap)
