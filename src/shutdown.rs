//! One shutdown signal for every task: SIGTERM, SIGINT, or a lost lease.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// Sets off a shutdown.
#[derive(Clone)]
pub struct ShutdownTrigger(Arc<watch::Sender<bool>>);

/// Waits for a shutdown; cheap to clone into every task.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and waiter.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger(Arc::new(sender)), Shutdown(receiver))
}

impl ShutdownTrigger {
    /// Starts the shutdown; every waiter wakes.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// Completes once the shutdown has started (at once if it already has).
    pub fn signalled(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut receiver = self.0.clone();
        async move {
            // An error means the trigger is gone, which is a shutdown too.
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }

    /// Whether the shutdown has started.
    pub fn is_signalled(&self) -> bool {
        *self.0.borrow()
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
}
