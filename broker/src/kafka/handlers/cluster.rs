//! DescribeCluster.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId as KBrokerId, DescribeClusterRequest, DescribeClusterResponse,
};

use crate::broker::Broker;
use crate::kafka::handlers::kstr;
use crate::kafka::handlers::metadata::controller_id;

pub(crate) fn describe(
    broker: &Broker,
    _version: i16,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let view = broker.metadata();
    let brokers = view
        .state
        .live_brokers()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(KBrokerId(b.id.0))
                .with_host(kstr(b.host.clone()))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.clone().map(kstr))
                .with_is_fenced(b.fenced)
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(kstr(
            view.state
                .cluster_id()
                .map_or_else(String::new, |c| c.0.clone()),
        ))
        .with_controller_id(KBrokerId(controller_id(broker)))
        .with_brokers(brokers)
}
