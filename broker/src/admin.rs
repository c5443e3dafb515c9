//! The admin HTTP listener (`http_listen`): `/metrics` for Prometheus, `/health` and `/ready`
//! for probes (a Kubernetes liveness and readiness probe, a load balancer's health check).
//!
//! - `GET /health` — 200 `{"status":"alive"}` while the process serves HTTP at all.
//! - `GET /ready` — 200 when every check passes, 503 otherwise; the JSON body has each check
//!   and why it fails: the metadata backend is ready (recovered, a leader known, caught up —
//!   a node cut off from its quorum loses this once it notices), the broker is registered and
//!   not fenced, and the Kafka listeners are accepting (not shutting down).
//! - `GET /metrics` — the Prometheus text format ([`crate::telemetry`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::broker::Broker;

/// The content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone)]
struct Admin {
    broker: Arc<Broker>,
    stopping: watch::Receiver<bool>,
}

/// One readiness check.
#[derive(Debug, Serialize)]
struct Check {
    ok: bool,
    detail: String,
}

/// The body of `/ready`.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    node: String,
    backend: &'static str,
    metadata_backend: Check,
    broker_registered: Check,
    kafka_listeners: Check,
}

/// Serve the admin endpoints on `listener` until `stopping` turns true.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, stopping: watch::Receiver<bool>) {
    let mut stop = stopping.clone();
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(Admin { broker, stopping });
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(error) = served {
        warn!(%error, "the admin HTTP listener stopped");
    }
}

/// Bind the admin listener at `addr`.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

async fn health() -> Response {
    json(StatusCode::OK, &serde_json::json!({ "status": "alive" }))
}

async fn ready(State(admin): State<Admin>) -> Response {
    let readiness = readiness(&admin);
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &readiness)
}

fn readiness(admin: &Admin) -> Readiness {
    let broker = &admin.broker;
    let view = broker.backend().cluster().borrow().clone();
    let metadata_backend = match &view.readiness {
        switchyard_backend_api::Readiness::Ready => Check {
            ok: true,
            detail: format!(
                "{:?}, leader {}, epoch {}",
                view.role,
                view.leader.map_or_else(|| "none".into(), |l| l.to_string()),
                view.epoch
            ),
        },
        switchyard_backend_api::Readiness::NotReady { reason } => Check {
            ok: false,
            detail: reason.clone(),
        },
        other => Check {
            ok: false,
            detail: format!("{other:?}"),
        },
    };
    let broker_registered = registration(broker);
    let kafka_listeners = if *admin.stopping.borrow() {
        Check {
            ok: false,
            detail: "shutting down".into(),
        }
    } else {
        Check {
            ok: true,
            detail: "accepting".into(),
        }
    };
    Readiness {
        ready: metadata_backend.ok && broker_registered.ok && kafka_listeners.ok,
        node: view.node.to_string(),
        backend: broker.backend().name(),
        metadata_backend,
        broker_registered,
        kafka_listeners,
    }
}

fn registration(broker: &Broker) -> Check {
    if !broker.is_registered() {
        return Check {
            ok: false,
            detail: "not registered yet".into(),
        };
    }
    let incarnation = broker.incarnation();
    let view = broker.metadata();
    match view.state.broker(broker.id()) {
        Some(b) if b.fenced && b.incarnation >= incarnation => Check {
            ok: false,
            detail: format!("fenced (incarnation {})", b.incarnation),
        },
        Some(b) => Check {
            ok: true,
            detail: format!("broker {} incarnation {}", broker.id(), b.incarnation),
        },
        None => Check {
            ok: false,
            detail: "not in the applied metadata".into(),
        },
    }
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let body = crate::telemetry::render(&admin.broker).await;
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response()
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
