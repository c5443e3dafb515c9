"""A blocking, one-connection Kafka client for protocol-level checks.

Real clients hide what the tests need to control (an idempotent batch sent twice with the same
producer id, epoch and sequence; a sequence gap; a single Fetch with chosen max wait / min bytes),
so these tests build the requests themselves with kafka-python's generated protocol classes and
record-batch builder. Nothing here is a codec of our own: encoding and decoding are
kafka-python's.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time

from kafka.protocol.consumer import FetchRequest, FetchResponse
from kafka.protocol.producer import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
    ProduceResponse,
)
from kafka.protocol.admin import (
    CreateTopicsRequest,
    CreateTopicsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
)
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

# Versions used on the wire. All are inside what the broker advertises (ApiVersions) and what
# kafka-python can encode; the flexible (compact) encodings are exercised by the real clients.
PRODUCE_VERSION = 8
FETCH_VERSION = 11
INIT_PRODUCER_ID_VERSION = 2
CREATE_TOPICS_VERSION = 4
INCREMENTAL_ALTER_CONFIGS_VERSION = 0
DESCRIBE_CONFIGS_VERSION = 1
BROKER_RESOURCE = 4

NOT_CONTROLLER = 41


class RawConnection:
    def __init__(self, bootstrap: str, client_id: str = "switchyard-raw", timeout_s: float = 30):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.client_id = client_id
        self._correlation = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, request, version: int) -> int:
        correlation_id = next(self._correlation)
        request.with_header(correlation_id=correlation_id, client_id=self.client_id)
        self.sock.sendall(request.encode(version=version, header=True, framed=True))
        return correlation_id

    def receive(self, response_class, version: int, correlation_id: int):
        size = struct.unpack(">i", self._read(4))[0]
        response = response_class.decode(self._read(size), version=version, header=True)
        got = response.header.correlation_id
        assert got == correlation_id, f"correlation id {got}, expected {correlation_id}"
        return response

    def request(self, request, response_class, version: int):
        return self.receive(response_class, version, self.send(request, version))

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    # ---- helpers for the APIs the tests use --------------------------------------------------

    def create_topic(self, name: str, partitions: int, retry_s: float = 10) -> int:
        """CreateTopics for one topic; returns its error code. Like a real admin client it
        retries NOT_CONTROLLER (retriable) until `retry_s` have passed; whether the broker
        answers it after announcing readiness is test_lifecycle.py's business."""
        topic = CreateTopicsRequest.CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=1,
            assignments=[], configs=[])
        deadline = time.monotonic() + retry_s
        while True:
            response = self.request(
                CreateTopicsRequest(topics=[topic], timeout_ms=10_000, validate_only=False),
                CreateTopicsResponse, CREATE_TOPICS_VERSION)
            code = response.topics[0].error_code
            if code != NOT_CONTROLLER or time.monotonic() > deadline:
                return code
            time.sleep(0.01)  # retry backoff, as clients have (librdkafka: retry.backoff.ms)

    def alter_broker_configs(self, name: str, changes, validate_only: bool = False) -> int:
        """IncrementalAlterConfigs of broker resource `name` ("" for the cluster-wide
        defaults, which kafka-python's and confluent-kafka's admin clients cannot name);
        changes: [(key, operation code, value)]. Returns the error code."""
        resource = IncrementalAlterConfigsRequest.AlterConfigsResource(
            resource_type=BROKER_RESOURCE, resource_name=name,
            configs=[IncrementalAlterConfigsRequest.AlterConfigsResource.AlterableConfig(
                name=key, config_operation=op, value=value) for key, op, value in changes])
        response = self.request(
            IncrementalAlterConfigsRequest(resources=[resource], validate_only=validate_only),
            IncrementalAlterConfigsResponse, INCREMENTAL_ALTER_CONFIGS_VERSION)
        (result,) = response.responses
        return result.error_code

    def broker_configs(self, name: str) -> dict:
        """DescribeConfigs of broker resource `name`: key -> (value, config source code)."""
        resource = DescribeConfigsRequest.DescribeConfigsResource(
            resource_type=BROKER_RESOURCE, resource_name=name, configuration_keys=None)
        response = self.request(
            DescribeConfigsRequest(resources=[resource], include_synonyms=False),
            DescribeConfigsResponse, DESCRIBE_CONFIGS_VERSION)
        (result,) = response.results
        assert result.error_code == 0, result
        return {c.name: (c.value, c.config_source) for c in result.configs}

    def init_producer_id(self):
        response = self.request(
            InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=-1),
            InitProducerIdResponse, INIT_PRODUCER_ID_VERSION)
        return response.error_code, response.producer_id, response.producer_epoch

    def produce(self, topic: str, partition: int, batch: bytes, acks: int = -1):
        """One batch to one partition; returns that partition's response."""
        data = ProduceRequest.TopicProduceData(
            name=topic,
            partition_data=[ProduceRequest.TopicProduceData.PartitionProduceData(
                index=partition, records=batch)])
        response = self.request(
            ProduceRequest(transactional_id=None, acks=acks, timeout_ms=10_000,
                           topic_data=[data]),
            ProduceResponse, PRODUCE_VERSION)
        (topic_response,) = response.responses
        (partition_response,) = topic_response.partition_responses
        return partition_response

    def fetch_request(self, topic: str, partition: int, offset: int, max_wait_ms: int,
                      min_bytes: int, max_bytes: int = 1 << 20):
        part = FetchRequest.FetchTopic.FetchPartition(
            partition=partition, current_leader_epoch=-1, fetch_offset=offset,
            log_start_offset=-1, partition_max_bytes=max_bytes)
        return FetchRequest(
            replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=max_bytes,
            isolation_level=0, session_id=0, session_epoch=-1,
            topics=[FetchRequest.FetchTopic(topic=topic, partitions=[part])],
            forgotten_topics_data=[], rack_id="")

    def fetch(self, topic: str, partition: int, offset: int, max_wait_ms: int = 0,
              min_bytes: int = 0, max_bytes: int = 1 << 20):
        """One partition's FetchResponse entry."""
        response = self.request(
            self.fetch_request(topic, partition, offset, max_wait_ms, min_bytes, max_bytes),
            FetchResponse, FETCH_VERSION)
        assert response.error_code == 0, response
        (topic_response,) = response.responses
        (partition_response,) = topic_response.partitions
        return partition_response


def idempotent_batch(producer_id: int, epoch: int, base_sequence: int,
                     values: list[bytes]) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
        producer_epoch=epoch, base_sequence=base_sequence, batch_size=1 << 20)
    now_ms = int(time.time() * 1000)
    for i, value in enumerate(values):
        builder.append(i, timestamp=now_ms, key=None, value=value, headers=[])
    return bytes(builder.build())


def records_of(partition_response) -> list[tuple[int, bytes]]:
    """(offset, value) of every record in a fetched partition."""
    out = []
    raw = partition_response.records
    if not raw:
        return out
    records = MemoryRecords(bytes(raw))
    while True:
        batch = records.next_batch()
        if batch is None:
            break
        for record in batch:
            out.append((record.offset, record.value))
    return out
