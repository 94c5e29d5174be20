//! kappa-operator: runs the Kappa architecture on Kubernetes.

pub use kappa_api as api;
pub use kappa_api::duration;
pub use kappa_client as client;
pub use kappa_client::discovery;

pub mod allocator;
pub mod conditions;
pub mod controller;
pub mod error;
pub mod flink;
pub mod http;
pub mod kafka;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod plugin;
pub mod replay;
pub mod shutdown;
pub mod slo;
pub mod telemetry;
pub mod validation;
pub mod webhook;
