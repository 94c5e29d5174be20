//! kappa-operator: runs the Kappa architecture on Kubernetes.

pub mod allocator;
pub mod api;
pub mod client;
pub mod conditions;
pub mod controller;
pub mod discovery;
pub mod duration;
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
