//! kappa-operator: runs the Kappa architecture on Kubernetes.

pub mod api;
