//! InitProducerId for idempotent producers. Producer ids come from blocks allocated through
//! the metadata backend; transactions are not supported.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use tracing::warn;

use crate::broker::Broker;
use crate::kafka::errors::metadata_error;

pub(crate) async fn init_producer_id(
    broker: &Broker,
    _version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    // A producer that had an id asks for a new epoch of it after a fatal sequence error
    // (KIP-360); give it the next epoch, or a fresh id when the epoch space is used up.
    if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX - 1
    {
        return response
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    match broker.next_producer_id().await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            warn!(error = %e, "producer id allocation failed");
            let code = match metadata_error(&e) {
                ResponseError::NotController | ResponseError::LeaderNotAvailable => {
                    ResponseError::CoordinatorNotAvailable
                }
                other => other,
            };
            response.with_error_code(code.code())
        }
    }
}
