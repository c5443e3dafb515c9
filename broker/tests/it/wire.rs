//! The Kafka listener against bad and unusual input, over real TCP to an in-process node:
//! every bad request gets an error response or a closed connection, and the broker keeps
//! serving other clients.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use figment::providers::Serialized;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, MetadataRequest, RequestHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use switchyard::config::{Config, Overrides, defaults};
use switchyard::serve::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(10);

/// A node of the `memory` backend in `dir`, its Kafka listener on a free loopback port.
pub(crate) async fn start(dir: &tempfile::TempDir) -> anyhow::Result<Node> {
    let overrides = Overrides {
        metadata_backend: Some("memory".into()),
        data_dir: Some(dir.path().to_owned()),
        listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let config = Config::from_figment(defaults().merge(Serialized::defaults(&overrides)))?;
    Ok(Node::start(&config).await?)
}

fn request(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> anyhow::Result<Bytes> {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("wire-test")))
        .encode(&mut out, key.request_header_version(version))?;
    body.encode(&mut out, version)?;
    Ok(out.freeze())
}

async fn send_frame(stream: &mut TcpStream, frame: &[u8]) -> anyhow::Result<()> {
    stream.write_u32(u32::try_from(frame.len())?).await?;
    stream.write_all(frame).await?;
    Ok(())
}

/// The next response frame, or `None` if the broker closed the connection.
async fn read_frame(stream: &mut TcpStream) -> anyhow::Result<Option<Bytes>> {
    let read = async {
        let length = match stream.read_u32().await {
            Ok(length) => length,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut frame = vec![0; length as usize];
        stream.read_exact(&mut frame).await?;
        Ok(Some(Bytes::from(frame)))
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .context("no response and no close")?
}

/// ApiVersions v3 on a fresh connection works: the broker still serves.
async fn still_serving(node: &Node) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let body = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("wire-test"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    send_frame(&mut stream, &request(ApiKey::ApiVersions, 3, 42, &body)?).await?;
    let Some(mut frame) = read_frame(&mut stream).await? else {
        bail!("broker closed a healthy connection");
    };
    ensure!(frame.get_i32() == 42, "correlation id");
    let response = ApiVersionsResponse::decode(&mut frame, 3)?;
    ensure!(response.error_code == 0 && !response.api_keys.is_empty());
    Ok(())
}

async fn expect_closed(node: &Node, frame_with_length: &[u8]) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    stream.write_all(frame_with_length).await?;
    ensure!(
        read_frame(&mut stream).await?.is_none(),
        "expected the broker to close the connection"
    );
    still_serving(node).await
}

#[tokio::test]
async fn unknown_api_versions_version_gets_error_35_in_v0_format() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(&dir).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    // ApiVersions v99: key 18, version 99, correlation id 7, then bytes this broker cannot parse.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(99);
    frame.put_i32(7);
    frame.put_slice(b"\x00\x04test\x00future-fields");
    send_frame(&mut stream, &frame).await?;
    let Some(mut response) = read_frame(&mut stream).await? else {
        bail!("connection closed instead of error 35");
    };
    ensure!(response.get_i32() == 7, "correlation id");
    let decoded = ApiVersionsResponse::decode(&mut response, 0)?;
    ensure!(
        decoded.error_code == 35,
        "error code {}",
        decoded.error_code
    );
    let apis: Vec<i16> = decoded.api_keys.iter().map(|k| k.api_key).collect();
    ensure!(apis.contains(&(ApiKey::Produce as i16)) && apis.contains(&(ApiKey::Fetch as i16)));
    ensure!(
        !response.has_remaining(),
        "v0 format has nothing after the API list"
    );
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(&dir).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let mut all = BytesMut::new();
    for correlation_id in 1..=5 {
        let frame = if correlation_id % 2 == 0 {
            request(
                ApiKey::Metadata,
                9,
                correlation_id,
                &MetadataRequest::default().with_topics(Some(vec![])),
            )?
        } else {
            request(
                ApiKey::ApiVersions,
                0,
                correlation_id,
                &ApiVersionsRequest::default(),
            )?
        };
        all.put_u32(u32::try_from(frame.len())?);
        all.put_slice(&frame);
    }
    stream.write_all(&all).await?;
    for expected in 1..=5 {
        let Some(mut frame) = read_frame(&mut stream).await? else {
            bail!("closed before response {expected}");
        };
        ensure!(frame.get_i32() == expected, "responses out of order");
    }
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn garbage_bytes_close_the_connection_and_others_are_served() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(&dir).await?;
    expect_closed(&node, b"\x00\x00\x00\x0bhello world").await?;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn oversized_and_negative_frames_close_the_connection() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(&dir).await?;
    // 200 MiB, above socket.request.max.bytes (100 MiB); nothing is read or allocated.
    expect_closed(&node, &(200u32 << 20).to_be_bytes()).await?;
    expect_closed(&node, &(-5i32).to_be_bytes()).await?;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn unknown_api_key_and_unsupported_version_close_the_connection() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(&dir).await?;
    let mut unknown = BytesMut::new();
    unknown.put_u32(10);
    unknown.put_i16(999);
    unknown.put_i16(0);
    unknown.put_i32(1);
    unknown.put_i16(-1);
    expect_closed(&node, &unknown).await?;
    // Fetch 18 is a version the protocol has and the broker does not serve.
    let fetch = request(ApiKey::Fetch, 18, 1, &FetchRequest::default())?;
    let mut framed = BytesMut::new();
    framed.put_u32(u32::try_from(fetch.len())?);
    framed.put_slice(&fetch);
    expect_closed(&node, &framed).await?;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn truncated_requests_close_the_connection() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(&dir).await?;
    // A Metadata v9 request cut short inside its body.
    let full = request(
        ApiKey::Metadata,
        9,
        3,
        &MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(true),
    )?;
    let cut = &full[..full.len() - 2];
    let mut framed = BytesMut::new();
    framed.put_u32(u32::try_from(cut.len())?);
    framed.put_slice(cut);
    expect_closed(&node, &framed).await?;
    // A frame whose length promises more than ever arrives, then the client goes away.
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    stream.write_all(&[0, 0, 0, 100, 0, 18]).await?;
    drop(stream);
    still_serving(&node).await?;
    // Fewer bytes than a request header.
    expect_closed(&node, &[0, 0, 0, 3, 0, 18, 0]).await?;
    node.shutdown().await?;
    Ok(())
}

/// Wait until the request bytes the broker holds satisfy `done`.
async fn in_flight_until(node: &Node, done: impl Fn(usize) -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(node.broker().request_bytes_in_flight()) {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "request bytes in flight stayed at {}",
            node.broker().request_bytes_in_flight()
        );
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Shutdown stops accepting, answers the request in flight (a Fetch long-poll), closes idle
/// connections at once, and returns only after all of that: connection tasks used to outlive
/// the node, idle ones for `connections.max.idle.ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight_and_closes_idle_connections() -> anyhow::Result<()> {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{CreateTopicsRequest, FetchRequest, RequestKind, TopicName};

    use crate::every_api::call;
    use crate::support::{s, start_memory};

    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[]).await?;
    let mut idle = TcpStream::connect(node.kafka_addr()).await?;
    let create = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(s("drain")))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]),
    );
    call(&mut idle, ApiKey::CreateTopics, 5, 1, &create).await?;
    // The broker lets go of that request's bytes just after the answer is written.
    in_flight_until(&node, |bytes| bytes == 0).await?;
    // A consumer's long-poll, waiting for data that never comes.
    let fetch = RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(2_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(s("drain")))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]),
    );
    let mut polling = TcpStream::connect(node.kafka_addr()).await?;
    let poll = tokio::spawn(async move {
        let answer = call(&mut polling, ApiKey::Fetch, 12, 2, &fetch).await;
        (answer, polling)
    });
    // The long-poll is in flight once the broker holds its bytes.
    in_flight_until(&node, |bytes| bytes > 0).await?;
    let addr = node.kafka_addr();
    tokio::time::timeout(DEADLINE, node.shutdown()).await??;
    let (answer, mut polling) = poll.await?;
    ensure!(
        answer.is_ok(),
        "the long-poll in flight was not answered: {answer:?}"
    );
    // Both connections are closed by the time shutdown returns, and nothing accepts.
    for stream in [&mut idle, &mut polling] {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
        ensure!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "a connection outlived the node: {read:?}"
        );
    }
    ensure!(
        TcpStream::connect(addr).await.is_err(),
        "the listener still accepts"
    );
    Ok(())
}
