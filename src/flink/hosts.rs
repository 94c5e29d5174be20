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
        request
            .send()
            .await
            .map_err(|error| match no_answer(&error) {
                Some(words) => {
                    self.remember(host, &words);
                    words
                }
                None => super::rest::error_chain(&error),
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

/// What a host that closes or resets a connection before answering is
/// said to have done, whichever of the two it did this time: a dead host
/// that does one or the other keeps one description, so a condition
/// showing it does not change (a status write and an Event) at every call.
const CLOSED_BEFORE_ANSWER: &str = "the connection was closed or reset before an answer";

/// How a call failed without the host answering, if it did: not connected
/// or timed out (the client's words, which stay the same for a host that
/// keeps failing so), or the connection closed or reset before an answer
/// began ([`CLOSED_BEFORE_ANSWER`]). A request body that failed on its way
/// (a jar stream that stopped) is not the host's doing.
fn no_answer(error: &reqwest::Error) -> Option<String> {
    if error.is_connect() || error.is_timeout() {
        return Some(super::rest::error_chain(error));
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_user() {
                return None;
            }
            if hyper.is_incomplete_message() {
                return Some(CLOSED_BEFORE_ANSWER.into());
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            )
            .then(|| CLOSED_BEFORE_ANSWER.into());
        }
        source = cause.source();
    }
    None
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

    /// A real listener that reads each request, then closes the connection
    /// without an answer: cleanly for even connections, with a reset (no
    /// lingering) for odd ones.
    fn closing_or_resetting_host() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().flatten().enumerate() {
                let mut stream = stream;
                let mut request = [0u8; 1024];
                let _ = std::io::Read::read(&mut stream, &mut request);
                if n % 2 == 1 {
                    let linger = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // SAFETY: sets SO_LINGER on a socket this thread owns,
                    // from a value that outlives the call.
                    unsafe {
                        libc::setsockopt(
                            std::os::fd::AsRawFd::as_raw_fd(&stream),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            std::ptr::from_ref(&linger).cast(),
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        );
                    }
                }
                drop(stream);
            }
        });
        url
    }

    #[tokio::test]
    async fn a_host_that_closes_or_resets_before_answering_is_described_one_way() {
        let url = closing_or_resetting_host();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let mut client_words = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let error = http
                .get(format!("{url}/jobs"))
                .send()
                .await
                .expect_err("the host never answers");
            client_words.insert(super::super::rest::error_chain(&error));
            assert_eq!(
                no_answer(&error).as_deref(),
                Some(CLOSED_BEFORE_ANSWER),
                "{error:?}"
            );
        }
        assert!(
            client_words.len() > 1,
            "the host failed one way only, so the test shows nothing: {client_words:?}"
        );
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
