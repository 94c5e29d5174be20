//! The operator binary as a child process of a test, against the testbed.

use super::*;

/// How long a terminated operator may take to stop: the 30 s a pod is given
/// by default.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// The operator binary running against the testbed.
pub struct Operator {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// Its metrics and health address.
    pub http: SocketAddr,
    /// Its lease identity.
    pub identity: String,
}

impl Operator {
    /// Starts `kappa-operator run` with `args` as the ServiceAccount of the
    /// shipped manifests, with exactly their RBAC (so every test is also a
    /// test of the shipped roles, and its requests are evidence for
    /// e2e/checks/rbac-usage), registered with the testbed so that it stops
    /// with it.
    pub fn start(testbed: &Testbed, identity: &str, args: &[&str]) -> Operator {
        let kubeconfig = service_account_kubeconfig(testbed);
        Operator::start_as(testbed, &kubeconfig, identity, args)
    }

    /// Like [`Operator::start`], with the identity of another kubeconfig.
    pub fn start_as(
        testbed: &Testbed,
        kubeconfig: &Path,
        identity: &str,
        args: &[&str],
    ) -> Operator {
        Operator::spawn(testbed, kubeconfig, identity, args, "info,kube=warn")
    }

    /// Like [`Operator::start`], logging at `levels` (a `RUST_LOG` value).
    pub fn start_logging(
        testbed: &Testbed,
        identity: &str,
        levels: &str,
        args: &[&str],
    ) -> Operator {
        let kubeconfig = service_account_kubeconfig(testbed);
        Operator::spawn(testbed, &kubeconfig, identity, args, levels)
    }

    fn spawn(
        testbed: &Testbed,
        kubeconfig: &Path,
        identity: &str,
        args: &[&str],
        levels: &str,
    ) -> Operator {
        let http = free_address();
        let log = testbed
            .state
            .join("logs")
            .join(format!("operator-{identity}.log"));
        let log_file = std::fs::File::create(&log).expect("operator log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
            .arg("run")
            .args(["--http-address", &http.to_string(), "--identity", identity])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", levels)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("operator starts");
        std::fs::write(
            testbed
                .state
                .join("pids")
                .join(format!("operator-{identity}.pid")),
            child.id().to_string(),
        )
        .expect("operator pid file");
        Operator {
            child,
            log,
            http,
            identity: identity.to_string(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process at once (SIGKILL), as a crashed node would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    /// One that has not exited within [`STOP_GRACE`] is killed and has not.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => return false,
            }
        }
        self.kill();
        false
    }

    /// The body of an HTTP GET on the operator's server, `None` when it does not answer.
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.http, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())?;
        Some((status, body))
    }

    /// The value of a metric line starting with `prefix` (name and labels), 0 when absent.
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.http_get("/metrics").expect("operator serves /metrics");
        body.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Panics on any ERROR or panic line of the log not on the allow-list.
    pub fn assert_log_clean(&self) {
        self.assert_log_clean_but(&[]);
    }

    /// Like [`Operator::assert_log_clean`], also allowing lines that contain
    /// one of `expected` (the errors a fault test causes on purpose).
    pub fn assert_log_clean_but(&self, expected: &[&str]) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad = errors_in(&log, expected);
        assert!(
            bad.is_empty(),
            "operator {} logged errors:\n{}",
            self.identity,
            bad.join("\n")
        );
    }
}
