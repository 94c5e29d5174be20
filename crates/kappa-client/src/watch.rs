//! Following a set's discovery document: from the file of a mounted
//! ConfigMap, or from the API server. Only a well-formed document of a known
//! version with a greater epoch replaces the current one; anything else is
//! logged and counted, and the last good document stays in force.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use inotify::{EventStream, Inotify, WatchMask};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ClientError;
use crate::discovery::{config_map_name, DiscoveryDocument, DOCUMENT_KEY, FORMAT_VERSION};

/// How often the mounted file is read when its directory cannot be watched
/// for changes (inotify refused: no such facility, or the watch limit
/// reached). Kubernetes updates a mounted ConfigMap by swapping the `..data`
/// symlink of its directory, so a read sees the old document or the new
/// one, never a mix.
const FILE_POLL: Duration = Duration::from_millis(100);

/// How often the file is read while its directory is watched: a safety
/// net for a change the watch cannot see (the directory itself replaced).
const WATCHED_FILE_POLL: Duration = Duration::from_secs(1);

/// Where the document comes from.
#[derive(Clone)]
pub enum DiscoverySource {
    /// The directory where the `<set>-discovery` ConfigMap is mounted.
    Directory(PathBuf),
    /// The ConfigMap itself, watched through the API server.
    ConfigMap {
        /// A client of the API server.
        client: Client,
        /// The set's namespace.
        namespace: String,
        /// The set's name.
        set: String,
    },
}

/// The latest good document, and how many bad ones were seen.
#[derive(Clone)]
pub struct Discovery {
    current: watch::Receiver<Option<Arc<DiscoveryDocument>>>,
    rejected: Arc<AtomicU64>,
    _task: Arc<TaskGuard>,
}

struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Discovery {
    /// Starts following `source`.
    pub fn follow(source: DiscoverySource) -> Self {
        let (sender, current) = watch::channel(None);
        let rejected = Arc::new(AtomicU64::new(0));
        let accept = Acceptor {
            sender,
            rejected: rejected.clone(),
        };
        let task = match source {
            DiscoverySource::Directory(dir) => tokio::spawn(follow_directory(dir, accept)),
            DiscoverySource::ConfigMap {
                client,
                namespace,
                set,
            } => tokio::spawn(watch_config_map(client, namespace, set, accept)),
        };
        Self {
            current,
            rejected,
            _task: Arc::new(TaskGuard(task)),
        }
    }

    /// The document in force, if one was seen.
    pub fn current(&self) -> Option<Arc<DiscoveryDocument>> {
        self.current.borrow().clone()
    }

    /// Waits for the first good document, or for one newer than `epoch`.
    pub async fn newer_than(&mut self, epoch: i64) -> Result<Arc<DiscoveryDocument>, ClientError> {
        let found = self
            .current
            .wait_for(|d| d.as_ref().is_some_and(|d| d.epoch > epoch))
            .await
            .map_err(|_| ClientError::DiscoveryClosed)?;
        found.clone().ok_or(ClientError::DiscoveryClosed)
    }

    /// How many documents were refused (malformed, unknown version).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

struct Acceptor {
    sender: watch::Sender<Option<Arc<DiscoveryDocument>>>,
    rejected: Arc<AtomicU64>,
}

impl Acceptor {
    /// Offers the text of a document; keeps it if it is good and newer.
    fn offer(&self, text: &str) {
        match parse(text) {
            Ok(document) => {
                self.sender.send_if_modified(|current| {
                    let newer = current.as_ref().is_none_or(|c| document.epoch > c.epoch);
                    if newer {
                        *current = Some(Arc::new(document));
                    }
                    newer
                });
            }
            Err(error) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "discovery document refused; the last good one stays in force");
            }
        }
    }
}

/// A document, if it is well-formed and of a version this library knows.
pub fn parse(text: &str) -> Result<DiscoveryDocument, ClientError> {
    let document: DiscoveryDocument =
        serde_json::from_str(text).map_err(|e| ClientError::Malformed(e.to_string()))?;
    if document.version != FORMAT_VERSION {
        return Err(ClientError::Malformed(format!(
            "format version {} is not {FORMAT_VERSION}",
            document.version
        )));
    }
    Ok(document)
}

/// Changes in `dir` that may have put a new document in place: a file
/// written and closed, or an entry moved in (the `..data` symlink swap of a
/// mounted ConfigMap, or a document renamed into place). A file being
/// written is not a change until it is closed, so no half-written document
/// is read on its account.
fn directory_changes(dir: &Path) -> std::io::Result<EventStream<[u8; 1024]>> {
    let inotify = Inotify::init()?;
    inotify
        .watches()
        .add(dir, WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO)?;
    inotify.into_event_stream([0; 1024])
}

/// Waits for the next change of `changes`, or `WATCHED_FILE_POLL`; without
/// a watch, `FILE_POLL`.
async fn next_change(changes: &mut Option<EventStream<[u8; 1024]>>) {
    match changes {
        Some(events) => match tokio::time::timeout(WATCHED_FILE_POLL, events.next()).await {
            Ok(Some(Ok(_))) | Err(_) => {}
            // A watch that failed or ended would answer at once, forever.
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "watching the discovery directory failed; polling it");
                *changes = None;
            }
            Ok(None) => *changes = None,
        },
        None => tokio::time::sleep(FILE_POLL).await,
    }
}

async fn follow_directory(dir: PathBuf, accept: Acceptor) {
    let path = dir.join(DOCUMENT_KEY);
    let mut changes = directory_changes(&dir)
        .inspect_err(|error| {
            tracing::debug!(dir = %dir.display(), %error, "discovery directory not watched; polling it");
        })
        .ok();
    let mut last: Option<String> = None;
    loop {
        match std::fs::read_to_string(&path) {
            Ok(text) if last.as_deref() != Some(text.as_str()) => {
                accept.offer(&text);
                last = Some(text);
            }
            Ok(_) => {}
            Err(error) if last.is_some() => {
                tracing::debug!(path = %path.display(), %error, "discovery file unreadable");
            }
            Err(_) => {}
        }
        next_change(&mut changes).await;
    }
}

/// How long one watch of the ConfigMap lasts before the server ends it and
/// it is listed again (under the API server's five-minute limit).
const WATCH_SECONDS: u32 = 290;

/// Follows the set's ConfigMap through the API server: a list gives the
/// document as it is and the version to watch from; a watch that ends,
/// fails or expires (410 Gone) is followed by a list again. A document
/// seen twice is offered twice and kept once (its epoch is not newer).
async fn watch_config_map(client: Client, namespace: String, set: String, accept: Acceptor) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let only = format!("metadata.name={}", config_map_name(&set));
    let offer = |map: &ConfigMap| {
        if let Some(text) = map.data.as_ref().and_then(|d| d.get(DOCUMENT_KEY)) {
            accept.offer(text);
        }
    };
    loop {
        let version = match api.list(&ListParams::default().fields(&only)).await {
            Ok(list) => {
                list.items.iter().for_each(offer);
                list.metadata.resource_version.unwrap_or_default()
            }
            Err(error) => {
                tracing::warn!(%error, "listing the discovery ConfigMap failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let params = WatchParams::default().fields(&only).timeout(WATCH_SECONDS);
        let events = match api.watch(&params, &version).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(%error, "watching the discovery ConfigMap failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(WatchEvent::Added(map) | WatchEvent::Modified(map)) => offer(&map),
                Ok(WatchEvent::Deleted(_) | WatchEvent::Bookmark(_)) => {}
                Ok(WatchEvent::Error(status)) => {
                    tracing::debug!(code = status.code, message = %status.message, "the discovery ConfigMap's watch ended; listing again");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "the discovery ConfigMap's watch failed; listing again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}
