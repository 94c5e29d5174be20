//! The HTTPS endpoint `POST /validate` the API server sends admission
//! reviews to. Its TLS settings come from the [`super::keeper`] and may
//! change while it runs: each connection is accepted with the latest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::admit;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// How long the server keeps answering after a shutdown begins: the pod
/// leaves the Service's endpoints when it starts terminating, but the
/// nodes' forwarding rules follow a moment later, and a call sent to it
/// meanwhile must still be answered.
const DRAIN: Duration = Duration::from_secs(5);

/// The TLS settings served; `None` until a certificate is loaded, when
/// connections are closed at once.
pub type Tls = watch::Receiver<Option<Arc<ServerConfig>>>;

async fn validate(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let request: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
    let response = match request {
        Ok(request) => {
            let response = admit::review(&request);
            let verdict = if response.allowed {
                "allowed"
            } else {
                "denied"
            };
            metrics
                .admissions
                .with_label_values(&[request.kind.kind.as_str(), verdict])
                .inc();
            if !response.allowed {
                tracing::info!(
                    kind = %request.kind.kind,
                    namespace = request.namespace.as_deref().unwrap_or_default(),
                    name = %request.name,
                    dry_run = request.dry_run,
                    refusal = %response.result.message,
                    "admission refused"
                );
            }
            response
        }
        Err(error) => AdmissionResponse::invalid(error),
    };
    Json(response.into_review())
}

/// Serves until [`DRAIN`] after `shutdown`.
pub async fn serve(
    address: SocketAddr,
    tls: Tls,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/validate", post(validate))
        .with_state(metrics);
    let listener = TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "serving the admission webhook");
    let drained = async {
        shutdown.signalled().await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::pin!(drained);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut drained => return Ok(()),
        };
        let Some(config) = tls.borrow().clone() else {
            tracing::debug!(%peer, "no webhook certificate loaded yet; connection closed");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let stream = match TlsAcceptor::from(config).accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "webhook connection ended");
            }
        });
    }
}
