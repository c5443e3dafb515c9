//! ApiVersions: advertise exactly what is implemented.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::kafka::dispatch::SUPPORTED;

/// The response listing every supported API and its versions.
pub(crate) fn response() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SUPPORTED
            .iter()
            .map(|(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(*key as i16)
                    .with_min_version(*min)
                    .with_max_version(*max)
            })
            .collect(),
    )
}

pub(crate) fn handle(_version: i16, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    response()
}
