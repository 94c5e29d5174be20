//! `kubectl kappa`, the kubectl plugin for daily tasks: an overview of a
//! namespace, moving a set's write cluster, a pipeline's savepoints,
//! suspension, restarts and restores, and Backfills. Each verb acts through
//! the API server like `kubectl` would, and with `--wait` follows the object
//! until the operator has done the work (or says why it cannot).
//!
//! Exit codes: 0 done; 1 the API server refused, an object is missing or in
//! the wrong state, the work failed or did not finish in time; 2 wrong usage.

pub mod backfill_view;
pub mod display;
pub mod overview;
pub mod verbs;

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use kube::config::KubeConfigOptions;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;

use display::Display;

/// Why a verb did not get done.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no Kubernetes client configuration: {0}")]
    Config(String),
    #[error("{kind} {name} not found in namespace {namespace}")]
    NotFound {
        kind: &'static str,
        name: String,
        namespace: String,
    },
    #[error("the API server refused: {0}")]
    Refused(String),
    #[error("{0}")]
    WrongState(String),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Failed(String),
    #[error("{what} did not finish within {timeout:?}")]
    TimedOut { what: String, timeout: Duration },
}

impl From<kube::Error> for PluginError {
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(response) => Self::Refused(format!(
                "{} ({}): {}",
                response.reason, response.code, response.message
            )),
            other => Self::Refused(other.to_string()),
        }
    }
}

/// The cluster and namespace a command works in.
pub struct Session {
    pub client: Client,
    pub namespace: String,
}

impl Session {
    /// Connects as kubectl would: the kubeconfig's current context, or
    /// `context`; the in-cluster configuration when there is no kubeconfig.
    /// The namespace is `namespace`, else the context's.
    pub async fn connect(
        context: Option<String>,
        namespace: Option<String>,
    ) -> Result<Self, PluginError> {
        let config = match context {
            Some(context) => {
                let options = KubeConfigOptions {
                    context: Some(context),
                    ..KubeConfigOptions::default()
                };
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| PluginError::Config(e.to_string()))?
            }
            None => Config::infer()
                .await
                .map_err(|e| PluginError::Config(e.to_string()))?,
        };
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| PluginError::Config(e.to_string()))?;
        Ok(Self { client, namespace })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The object `name` of kind `kind`, or why not.
    pub async fn get<K>(&self, kind: &'static str, name: &str) -> Result<K, PluginError>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        self.api::<K>()
            .get_opt(name)
            .await
            .map_err(PluginError::from)?
            .ok_or_else(|| PluginError::NotFound {
                kind,
                name: name.to_string(),
                namespace: self.namespace.clone(),
            })
    }
}

/// What a look at a followed object found: the screen to show, and
/// whether the work is done (`Some(Ok)`), failed (`Some(Err)`) or goes on.
pub type Look = (String, Option<Result<(), String>>);

/// Follows object `name` through a watch, showing each change, until
/// `look` says the work is done or failed, or `timeout` passes.
pub async fn follow<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    display: &mut Display,
    look: impl Fn(&K) -> Look,
) -> Result<K, PluginError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher::watcher(api.clone(), config).boxed();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let event = tokio::select! {
            () = &mut deadline => {
                return Err(PluginError::TimedOut { what: name.to_string(), timeout });
            }
            event = changes.next() => event,
        };
        match event {
            None => return Err(PluginError::Failed(format!("the watch of {name} ended"))),
            Some(Err(error)) => return Err(PluginError::Refused(error.to_string())),
            Some(Ok(Event::Apply(object) | Event::InitApply(object))) => {
                let (screen, verdict) = look(&object);
                display.show(&screen);
                match verdict {
                    Some(Ok(())) => return Ok(object),
                    Some(Err(why)) => return Err(PluginError::Failed(why)),
                    None => {}
                }
            }
            Some(Ok(Event::Delete(_))) => {
                return Err(PluginError::Failed(format!("{name} was deleted")))
            }
            Some(Ok(Event::Init | Event::InitDone)) => {}
        }
    }
}
