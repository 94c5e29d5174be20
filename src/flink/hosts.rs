//! What the REST client knows of the hosts it calls: how many calls are on
//! their way to each, and which recently gave no answer. Many pipelines on
//! one dead endpoint then cost that endpoint a bounded number of
//! connections, not one per pipeline and reconcile.

use std::collections::HashMap;
use std::error::Error as _;
use std::io::ErrorKind;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How long a host that gave no answer (no connection, a connection closed
/// or reset before an answer, or a timeout) is answered with that failure
/// at once instead of being asked again.
const REMEMBER_UNREACHABLE: Duration = Duration::from_secs(10);

/// How many calls to one host may be on their way at once. A host that
/// accepts connections and never answers holds at most this many; the calls
/// waiting behind them get the remembered failure once one of them fails.
const CALLS_PER_HOST: usize = 4;

/// The hosts called, by scheme, host and port.
#[derive(Clone, Default)]
pub struct Hosts(Arc<Mutex<HashMap<String, Host>>>);

struct Host {
    calls: Arc<Semaphore>,
    unreachable: Option<(Instant, String)>,
}

impl Hosts {
    /// Sends `request` to `host`, unless it gave no answer within
    /// [`REMEMBER_UNREACHABLE`]: then that failure's words come back at once.
    /// Waits while [`CALLS_PER_HOST`] calls to it are on their way.
    pub async fn send(
        &self,
        host: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, String> {
        let calls = self.calls_to(host)?;
        let _turn = calls
            .acquire_owned()
            .await
            .map_err(|closed| closed.to_string())?;
        // The calls ahead may have found the host dead meanwhile.
        self.calls_to(host)?;
        request.send().await.map_err(|error| {
            let words = super::rest::error_chain(&error);
            if gave_no_answer(&error) {
                self.remember(host, &words);
            }
            words
        })
    }

    /// The calls' gate of `host`, or the failure it is remembered by.
    fn calls_to(&self, host: &str) -> Result<Arc<Semaphore>, String> {
        let mut hosts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what is stale and gates no one waits on or holds.
        hosts.retain(|_, known| {
            known
                .unreachable
                .take_if(|(at, _)| at.elapsed() >= REMEMBER_UNREACHABLE);
            known.unreachable.is_some() || Arc::strong_count(&known.calls) > 1
        });
        let known = hosts.entry(host.to_string()).or_insert_with(|| Host {
            calls: Arc::new(Semaphore::new(CALLS_PER_HOST)),
            unreachable: None,
        });
        match &known.unreachable {
            Some((_, words)) => Err(words.clone()),
            None => Ok(known.calls.clone()),
        }
    }

    fn remember(&self, host: &str, words: &str) {
        let mut hosts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = hosts.get_mut(host) {
            known.unreachable = Some((Instant::now(), words.to_string()));
        }
    }

    /// How many hosts are known now (for tests of the forgetting).
    #[cfg(test)]
    fn known(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Whether a call failed without the host answering: not connected, timed
/// out, or the connection closed or reset before an answer began. A request
/// body that failed on its way (a jar stream that stopped) is not the
/// host's doing.
fn gave_no_answer(error: &reqwest::Error) -> bool {
    if error.is_connect() || error.is_timeout() {
        return true;
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_user() {
                return false;
            }
            if hyper.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            );
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A real listener that accepts every connection and counts it; each is
    /// held for `hold` and closed without an answer.
    fn dead_host(hold: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counting = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counting.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    std::thread::sleep(hold);
                    drop::<TcpStream>(stream);
                });
            }
        });
        (url, accepted)
    }

    /// `callers` calls at once to `url`, as many pipelines' reconciles
    /// would; every one must fail.
    async fn call_at_once(hosts: &Hosts, url: &str, callers: usize) {
        let http = reqwest::Client::new();
        let calls = (0..callers).map(|_| hosts.send(url, http.get(format!("{url}/jobs"))));
        for outcome in futures::future::join_all(calls).await {
            assert!(outcome.is_err(), "a dead host answered");
        }
    }

    /// Connections a dead host holding each for `hold` accepted from
    /// `rounds` of 100 concurrent callers.
    async fn connections_opened(hold: Duration, rounds: usize) -> usize {
        let (url, accepted) = dead_host(hold);
        let hosts = Hosts::default();
        for _ in 0..rounds {
            call_at_once(&hosts, &url, 100).await;
        }
        accepted.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_host_closing_connections_is_asked_a_bounded_number_of_times() {
        let asked = connections_opened(Duration::ZERO, 5).await;
        assert!(
            (1..=CALLS_PER_HOST).contains(&asked),
            "500 calls of 100 pipelines asked the host {asked} times"
        );
    }

    #[tokio::test]
    async fn a_host_that_accepts_and_stays_silent_holds_a_bounded_number_of_calls() {
        let asked = connections_opened(Duration::from_secs(2), 1).await;
        assert!(
            (1..=CALLS_PER_HOST).contains(&asked),
            "100 pipelines' calls opened {asked} connections"
        );
    }

    #[tokio::test]
    async fn a_refusing_host_is_remembered_and_an_unused_one_forgotten() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        drop(listener);
        let hosts = Hosts::default();
        call_at_once(&hosts, &url, 50).await;
        let remembered = hosts.calls_to(&url);
        assert!(
            remembered
                .as_ref()
                .is_err_and(|words| words.contains("connect")),
            "refused is remembered: {:?}",
            remembered.err()
        );
        drop(hosts.calls_to("http://done:8081"));
        let _in_use = hosts.calls_to("http://in-use:8081").expect("a gate");
        assert_eq!(
            hosts.known(),
            2,
            "the refusing host and the one in use are known, the one done with is not"
        );
    }
}
