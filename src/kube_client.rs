//! The Kubernetes client, counting every request it sends.

use std::sync::Arc;

use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tower::util::MapRequestLayer;

use crate::metrics::Metrics;

/// A client from the environment (in-cluster or `KUBECONFIG`) whose requests
/// are counted in `kappa_kube_requests_total`.
pub async fn client(metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    let count = MapRequestLayer::new(move |request: http::Request<Body>| {
        metrics
            .kube_requests
            .with_label_values(&[request.method().as_str()])
            .inc();
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}
