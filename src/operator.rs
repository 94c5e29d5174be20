//! `kappa-operator run`: the HTTP server, leader election and the controllers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::allocator;
use crate::controller::{self, Publisher, Shared};
use crate::flink::jar::JarPolicy;
use crate::flink::rest::RestFlink;
use crate::flink::FlinkApi;
use crate::http::{self, Health};
use crate::kafka::rdkafka_admin::RdKafkaAdmin;
use crate::kafka::KafkaAdmin;
use crate::kube_client;
use crate::leader::{LeaderElector, LeaseSettings};
use crate::metrics::Metrics;
use crate::shutdown::{self, Shutdown};
use crate::slo::SloSettings;
use crate::webhook::{self, WebhookSettings};

/// How the operator runs.
pub struct Settings {
    /// Address of the metrics and health server.
    pub http_address: SocketAddr,
    /// Namespaces to watch, each by a set of controllers of its own (a
    /// Role per namespace is enough); every namespace when empty.
    pub namespaces: Vec<String>,
    /// Leader election; `None` runs the controllers at once (one replica only).
    pub lease: Option<LeaseSettings>,
    /// Pipeline SLOs: where their rules go, where budgets are read from.
    pub slo: SloSettings,
    /// The admission webhook, served by every replica; `None` serves none.
    pub webhook: Option<WebhookSettings>,
    /// What job jars may be.
    pub jars: JarPolicy,
}

/// Why the operator stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// No client could be built.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    /// Another replica took the lease, or it could not be renewed in time.
    #[error("lost the leader lease `{0}`")]
    LostLease(String),
}

/// Runs until SIGTERM/SIGINT (Ok) or until the lease is lost (Err, so the
/// process restarts and stands in line again).
pub async fn run(settings: Settings) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))?);
    let client = kube_client::client(metrics.clone()).await?;
    let (trigger, shutdown) = shutdown::channel();
    let ready = Arc::new(AtomicBool::new(false));
    let (admission, served) = match settings.webhook {
        None => (None, None),
        Some(webhook) => {
            let (tls, served) = tokio::sync::watch::channel(None);
            let address = webhook.address;
            tokio::spawn(webhook::keeper::keep(
                client.clone(),
                webhook,
                tls,
                metrics.clone(),
                shutdown.clone(),
            ));
            let server = tokio::spawn(webhook::server::serve(
                address,
                served.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
            (Some(server), Some(served))
        }
    };
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
        webhook: served,
    };
    let server = tokio::spawn(http::serve(settings.http_address, health, shutdown.clone()));
    tokio::spawn(allocator::release_free_pages(shutdown.clone()));
    let signals = tokio::spawn({
        let trigger_on_signal = trigger.clone();
        async move {
            shutdown::termination_signal().await;
            trigger_on_signal.trigger();
        }
    });

    let events = Publisher::new(
        client.clone(),
        settings.lease.as_ref().map(|l| l.identity.clone()),
    );
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.into_iter().map(Some).collect()
    };
    // One client each for every scope: a Kafka cluster or a Flink cluster
    // is connected to once, whichever controller asks.
    let flink: Arc<dyn FlinkApi> = Arc::new(RestFlink::new(settings.jars.clone()));
    let kafka: Arc<dyn KafkaAdmin> = Arc::new(RdKafkaAdmin::default());
    let shared: Vec<Arc<Shared>> = scopes
        .into_iter()
        .map(|scope| {
            Arc::new(Shared::new(
                client.clone(),
                events.clone(),
                metrics.clone(),
                scope,
                settings.slo.clone(),
                flink.clone(),
                kafka.clone(),
            ))
        })
        .collect();

    let outcome = match settings.lease {
        None => {
            ready.store(true, Ordering::Relaxed);
            controller::run(shared, shutdown.clone()).await;
            Ok(())
        }
        Some(lease) => {
            lead(
                LeaderElector::new(client, lease),
                shared,
                &metrics,
                &ready,
                &trigger,
                &shutdown,
            )
            .await
        }
    };
    ready.store(false, Ordering::Relaxed);
    trigger.trigger();
    signals.abort();
    tracing::info!("controllers stopped");
    server
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    tracing::info!("health server stopped");
    if let Some(admission) = admission {
        admission
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        tracing::info!("webhook server stopped");
    }
    outcome
}

/// Waits for the lease, runs the controllers while renewing it, and releases
/// it on shutdown.
async fn lead(
    mut elector: LeaderElector,
    shared: Vec<Arc<Shared>>,
    metrics: &Metrics,
    ready: &AtomicBool,
    trigger: &shutdown::ShutdownTrigger,
    shutdown: &Shutdown,
) -> Result<(), RunError> {
    let settings = elector.settings().clone();
    tracing::info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "waiting for the leader lease");
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => ready.store(true, Ordering::Relaxed),
            Err(error) => tracing::warn!(%error, "cannot read the leader lease"),
        }
        if sleep_or_shutdown(settings.renew_interval, shutdown).await {
            return Ok(());
        }
    }
    ready.store(true, Ordering::Relaxed);
    metrics.leader.set(1);
    tracing::info!(identity = %settings.identity, "became leader; starting controllers");
    let controllers = tokio::spawn(controller::run(shared, shutdown.clone()));

    // Renew until shutdown; give up leading when renewals fail for longer
    // than two thirds of the lease, before another replica may take it over.
    let deadline = settings.lease_duration.mul_f64(2.0 / 3.0);
    let mut last_renewal = Instant::now();
    let mut lost = false;
    while !sleep_or_shutdown(settings.renew_interval, shutdown).await {
        match elector.try_acquire_or_renew().await {
            Ok(true) => last_renewal = Instant::now(),
            Ok(false) => {
                lost = true;
                break;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot renew the leader lease");
                if last_renewal.elapsed() > deadline {
                    lost = true;
                    break;
                }
            }
        }
    }
    trigger.trigger();
    metrics.leader.set(0);
    if controllers.await.is_err() {
        tracing::error!("a controller task panicked");
    }
    if lost {
        tracing::error!(lease = %settings.name, "lost the leader lease; stopping");
        return Err(RunError::LostLease(settings.name));
    }
    if let Err(error) = elector.release().await {
        tracing::warn!(%error, "could not release the leader lease; it expires by itself");
    }
    tracing::info!("released the leader lease");
    Ok(())
}

/// Sleeps `duration`; `true` when the shutdown came first.
async fn sleep_or_shutdown(duration: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => shutdown.is_signalled(),
        _ = shutdown.signalled() => true,
    }
}
