//! The metrics and health HTTP server: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::webhook::server::Tls;

/// What the server reports on.
#[derive(Clone)]
pub struct Health {
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the replica has reached the API server; cleared on shutdown.
    pub ready: Arc<AtomicBool>,
    /// The admission webhook's TLS settings, when it serves one: the
    /// replica is not ready before it has a certificate to serve.
    pub webhook: Option<Tls>,
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    match health.metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let serving = health
        .webhook
        .as_ref()
        .is_none_or(|tls| tls.borrow().is_some());
    if health.ready.load(Ordering::Relaxed) && serving {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves until `shutdown`.
pub async fn serve(address: SocketAddr, health: Health, shutdown: Shutdown) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.signalled())
        .await
}
