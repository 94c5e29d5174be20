//! [`FlinkApi`] over Flink's REST API (the JobManager's `rest.port`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use reqwest::multipart::{Form, Part};
use reqwest::{Body, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::hosts::Hosts;
use super::jar::{JarPolicy, Stopped};
use super::{
    failure_words, Checkpoints, FlinkApi, FlinkError, FlinkJobState, JobOverview, Operation,
    Submission,
};

/// How long one REST call may take; a jar's upload may take the jar
/// policy's timeout more.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The real Flink client.
#[derive(Clone)]
pub struct RestFlink {
    http: reqwest::Client,
    /// Calls on their way to each host, and hosts that gave no answer.
    hosts: Hosts,
    /// What job jars may be.
    jars: JarPolicy,
}

impl RestFlink {
    /// A client that fetches job jars under `jars`.
    pub fn new(jars: JarPolicy) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(CALL_TIMEOUT)
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            hosts: Hosts::default(),
            jars,
        }
    }
}

/// The scheme, host and port a URL is sent to.
fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            parsed.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => url.to_string(),
    }
}

#[derive(Deserialize)]
struct Errors {
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct Uploaded {
    filename: String,
}

#[derive(Deserialize)]
struct Started {
    jobid: String,
}

#[derive(Deserialize)]
struct Job {
    state: String,
    #[serde(default)]
    vertices: Vec<Vertex>,
}

#[derive(Deserialize)]
struct Vertex {
    status: String,
    /// Its subtasks by state (`{"RUNNING": 1, ...}`), read leniently: only
    /// for a condition's words.
    #[serde(default)]
    tasks: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct Triggered {
    #[serde(rename = "request-id")]
    request_id: String,
}

impl RestFlink {
    /// Sends `request` to `target` through what is known of its host.
    async fn send(
        &self,
        target: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, String> {
        self.hosts.send(&host_of(target), request).await
    }

    /// Calls `method path` on `url` with an optional JSON body; the answer's
    /// JSON, or Flink's own error words.
    async fn call(
        &self,
        method: Method,
        url: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, FlinkError> {
        let target = format!("{}{path}", url.trim_end_matches('/'));
        let mut request = self.http.request(method.clone(), &target);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = self
            .send(&target, request)
            .await
            .map_err(|words| unreachable(url, words))?;
        read(response, &format!("{method} {path}")).await
    }

    /// The jar's body as an upload part, streamed from the jar server, and
    /// where its stream keeps why it stopped.
    async fn fetch_jar(&self, uri: &str) -> Result<(Part, Stopped), FlinkError> {
        let url = self.jars.admit_url(uri)?;
        let unavailable = |message: String| FlinkError::JarUnavailable {
            url: uri.to_string(),
            message,
        };
        let request = self.http.get(url).timeout(self.jars.timeout);
        let response = self.send(uri, request).await.map_err(unavailable)?;
        if !response.status().is_success() {
            return Err(unavailable(response.status().to_string()));
        }
        let length = response.content_length();
        self.jars.admit_length(uri, length)?;
        let stopped = Stopped::default();
        let body = Body::wrap_stream(self.jars.limited(
            uri,
            response.bytes_stream(),
            stopped.clone(),
        ));
        let part = match length {
            Some(length) => Part::stream_with_length(body, length),
            None => Part::stream(body),
        };
        Ok((part, stopped))
    }

    async fn upload(&self, url: &str, jar_uri: &str) -> Result<String, FlinkError> {
        let (part, stopped) = self.fetch_jar(jar_uri).await?;
        let name = jar_uri
            .rsplit('/')
            .next()
            .filter(|n| n.ends_with(".jar"))
            .unwrap_or("job.jar")
            .to_string();
        let part = part
            .file_name(name)
            .mime_str("application/x-java-archive")
            .map_err(|e| FlinkError::Unexpected {
                call: "POST /jars/upload".into(),
                message: e.to_string(),
            })?;
        let target = format!("{}/jars/upload", url.trim_end_matches('/'));
        let request = self
            .http
            .post(&target)
            .timeout(self.jars.timeout + CALL_TIMEOUT)
            .multipart(Form::new().part("jarfile", part));
        let sent = self.send(&target, request).await;
        // A jar that stopped on its way failed the upload: say why it stopped.
        if let Some(failure) = stopped.take() {
            return Err(failure);
        }
        let response = sent.map_err(|words| unreachable(url, words))?;
        let uploaded: Uploaded = parse(
            read(response, "POST /jars/upload").await?,
            "POST /jars/upload",
        )?;
        Ok(uploaded
            .filename
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string())
    }

    async fn submit_inner(&self, url: &str, submission: &Submission) -> Result<String, FlinkError> {
        let jar_id = self.upload(url, &submission.jar_uri).await?;
        let mut body = json!({
            "jobId": submission.job_id,
            "programArgsList": submission.args,
            "parallelism": submission.parallelism,
            "allowNonRestoredState": submission.allow_non_restored_state,
        });
        if let Some(class) = &submission.entry_class {
            body["entryClass"] = json!(class);
        }
        if let Some(path) = &submission.savepoint_path {
            body["savepointPath"] = json!(path);
        }
        let run = self
            .call(
                Method::POST,
                url,
                &format!("/jars/{jar_id}/run"),
                Some(body),
            )
            .await;
        // The jar is not needed once the job was handed over, either way.
        if let Err(error) = self
            .call(Method::DELETE, url, &format!("/jars/{jar_id}"), None)
            .await
        {
            tracing::debug!(%error, "an uploaded jar stays on the Flink cluster");
        }
        let started: Started = parse(run?, "POST /jars/{id}/run")?;
        Ok(started.jobid)
    }

    async fn job_inner(&self, url: &str, job: &str) -> Result<JobOverview, FlinkError> {
        let answer = self
            .call(Method::GET, url, &format!("/jobs/{job}"), None)
            .await
            .map_err(|e| not_found_as_missing(e, job))?;
        let job: Job = parse(answer, "GET /jobs/{id}")?;
        let mut tasks = BTreeMap::new();
        for (state, count) in job.vertices.iter().flat_map(|v| &v.tasks) {
            let count = count.as_u64().and_then(|c| u32::try_from(c).ok());
            if let Some(count) = count.filter(|c| *c > 0) {
                *tasks.entry(state.clone()).or_insert(0) += count;
            }
        }
        Ok(JobOverview {
            all_tasks_running: job.vertices.iter().all(|v| v.status == "RUNNING"),
            state: FlinkJobState::parse(&job.state),
            tasks,
        })
    }

    async fn failure_inner(&self, url: &str, job: &str) -> Result<Option<String>, FlinkError> {
        let answer = self
            .call(Method::GET, url, &format!("/jobs/{job}/exceptions"), None)
            .await
            .map_err(|e| not_found_as_missing(e, job))?;
        let newest = answer
            .pointer("/exceptionHistory/entries/0/stacktrace")
            .or_else(|| answer.get("root-exception"))
            .and_then(Value::as_str);
        Ok(newest.map(failure_words))
    }

    async fn restarts_inner(&self, url: &str, job: &str) -> Result<Option<i64>, FlinkError> {
        let path = format!("/jobs/{job}/metrics?get=numRestarts");
        let answer = self
            .call(Method::GET, url, &path, None)
            .await
            .map_err(|e| not_found_as_missing(e, job))?;
        // [{"id": "numRestarts", "value": "0"}], or [] before the job reports it.
        Ok(answer
            .pointer("/0/value")
            .and_then(Value::as_str)
            .and_then(|value| value.parse().ok()))
    }

    async fn trigger_inner(
        &self,
        url: &str,
        job: &str,
        trigger: &str,
        directory: Option<&str>,
        stop: bool,
    ) -> Result<(), FlinkError> {
        let (path, body) = if stop {
            (
                format!("/jobs/{job}/stop"),
                json!({"targetDirectory": directory, "drain": false, "triggerId": trigger}),
            )
        } else {
            (
                format!("/jobs/{job}/savepoints"),
                json!({"target-directory": directory, "cancel-job": false, "triggerId": trigger}),
            )
        };
        let answer = self
            .call(Method::POST, url, &path, Some(body))
            .await
            .map_err(|e| not_found_as_missing(e, job))?;
        let taken = parse::<Triggered>(answer, "POST savepoint")?.request_id;
        if taken != trigger {
            return Err(FlinkError::Unexpected {
                call: format!("POST {path}"),
                message: format!("Flink took trigger {taken}, not {trigger}"),
            });
        }
        Ok(())
    }

    async fn operation(&self, url: &str, path: &str) -> Result<Operation, FlinkError> {
        let answer = self.call(Method::GET, url, path, None).await?;
        let status = answer.pointer("/status/id").and_then(Value::as_str);
        if status != Some("COMPLETED") {
            return Ok(Operation::InProgress);
        }
        if let Some(cause) = answer.pointer("/operation/failure-cause") {
            let words = cause
                .get("stack-trace")
                .and_then(Value::as_str)
                .map(failure_words)
                .or_else(|| cause.get("class").and_then(Value::as_str).map(String::from))
                .unwrap_or_else(|| cause.to_string());
            return Ok(Operation::Failed(words));
        }
        let location = answer
            .pointer("/operation/location")
            .and_then(Value::as_str)
            .map(String::from);
        Ok(Operation::Completed(location))
    }

    async fn checkpoints_inner(&self, url: &str, job: &str) -> Result<Checkpoints, FlinkError> {
        let answer = self
            .call(Method::GET, url, &format!("/jobs/{job}/checkpoints"), None)
            .await
            .map_err(|e| not_found_as_missing(e, job))?;
        let path = |pointer: &str| {
            answer
                .pointer(pointer)
                .filter(|v| !v.is_null())
                .map(|entry| {
                    let time = entry
                        .get("latest_ack_timestamp")
                        .or(entry.get("restore_timestamp"));
                    (
                        time.and_then(Value::as_i64).unwrap_or(0),
                        entry
                            .get("external_path")
                            .and_then(Value::as_str)
                            .map(String::from),
                    )
                })
        };
        let latest = [path("/latest/completed"), path("/latest/savepoint")]
            .into_iter()
            .flatten()
            .filter(|(_, p)| p.is_some())
            .max_by_key(|(time, _)| *time)
            .and_then(|(_, p)| p);
        Ok(Checkpoints {
            latest,
            restored: path("/latest/restored").and_then(|(_, p)| p),
        })
    }
}

impl FlinkApi for RestFlink {
    fn submit<'a>(
        &'a self,
        url: &'a str,
        submission: &'a Submission,
    ) -> BoxFuture<'a, Result<String, FlinkError>> {
        self.submit_inner(url, submission).boxed()
    }

    fn job<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<JobOverview, FlinkError>> {
        self.job_inner(url, job).boxed()
    }

    fn restarts<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, FlinkError>> {
        self.restarts_inner(url, job).boxed()
    }

    fn failure<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, FlinkError>> {
        self.failure_inner(url, job).boxed()
    }

    fn trigger_savepoint<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
        trigger: &'a str,
        directory: Option<&'a str>,
        stop: bool,
    ) -> BoxFuture<'a, Result<(), FlinkError>> {
        self.trigger_inner(url, job, trigger, directory, stop)
            .boxed()
    }

    fn savepoint_status<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
        trigger: &'a str,
    ) -> BoxFuture<'a, Result<Operation, FlinkError>> {
        async move {
            self.operation(url, &format!("/jobs/{job}/savepoints/{trigger}"))
                .await
                .map_err(|e| not_found_as_missing(e, job))
        }
        .boxed()
    }

    fn cancel<'a>(&'a self, url: &'a str, job: &'a str) -> BoxFuture<'a, Result<(), FlinkError>> {
        async move {
            self.call(
                Method::PATCH,
                url,
                &format!("/jobs/{job}?mode=cancel"),
                None,
            )
            .await
            .map_err(|e| not_found_as_missing(e, job))?;
            Ok(())
        }
        .boxed()
    }

    fn checkpoints<'a>(
        &'a self,
        url: &'a str,
        job: &'a str,
    ) -> BoxFuture<'a, Result<Checkpoints, FlinkError>> {
        self.checkpoints_inner(url, job).boxed()
    }

    fn dispose_savepoint<'a>(
        &'a self,
        url: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<String, FlinkError>> {
        async move {
            let body = json!({"savepoint-path": path});
            let answer = self
                .call(Method::POST, url, "/savepoint-disposal", Some(body))
                .await?;
            Ok(parse::<Triggered>(answer, "POST /savepoint-disposal")?.request_id)
        }
        .boxed()
    }

    fn disposal_status<'a>(
        &'a self,
        url: &'a str,
        trigger: &'a str,
    ) -> BoxFuture<'a, Result<Operation, FlinkError>> {
        async move {
            self.operation(url, &format!("/savepoint-disposal/{trigger}"))
                .await
        }
        .boxed()
    }
}

/// An error with its causes, as one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut words = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        words.push_str(": ");
        words.push_str(&cause.to_string());
        source = cause.source();
    }
    words
}

fn unreachable(url: &str, message: String) -> FlinkError {
    FlinkError::Unreachable {
        url: url.to_string(),
        message,
    }
}

/// The answer's JSON, or Flink's error words for a status that is not a success.
async fn read(response: reqwest::Response, call: &str) -> Result<Value, FlinkError> {
    let status = response.status();
    let text = response.text().await.map_err(|e| FlinkError::Unexpected {
        call: call.to_string(),
        message: error_chain(&e),
    })?;
    if status.is_success() {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text).map_err(|e| FlinkError::Unexpected {
            call: call.to_string(),
            message: format!("{e}: {}", text.chars().take(200).collect::<String>()),
        });
    }
    let message = serde_json::from_str::<Errors>(&text)
        .map(|e| {
            e.errors
                .iter()
                .map(|error| failure_words(error))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|_| text.chars().take(500).collect());
    Err(FlinkError::Refused {
        call: call.to_string(),
        status: status.as_u16(),
        message,
    })
}

fn parse<T: serde::de::DeserializeOwned>(answer: Value, call: &str) -> Result<T, FlinkError> {
    serde_json::from_value(answer).map_err(|e| FlinkError::Unexpected {
        call: call.to_string(),
        message: e.to_string(),
    })
}

fn not_found_as_missing(error: FlinkError, job: &str) -> FlinkError {
    match error {
        FlinkError::Refused { status, .. } if status == StatusCode::NOT_FOUND.as_u16() => {
            FlinkError::JobNotFound(job.to_string())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_remembered_per_scheme_host_and_port() {
        assert_eq!(host_of("http://flink:8081/jobs/x"), "http://flink:8081");
        assert_eq!(host_of("https://artifacts/j.jar"), "https://artifacts:443");
        assert_ne!(host_of("http://a:1/"), host_of("http://a:2/"));
    }

    /// Nothing listens on a port just given up; the second call is answered
    /// from memory with the first one's words, without connecting.
    #[tokio::test]
    async fn a_host_that_refused_is_not_asked_again_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        drop(listener);
        let flink = RestFlink::new(JarPolicy::default());
        let first = flink.call(Method::GET, &url, "/jobs", None).await;
        let Err(FlinkError::Unreachable { message, .. }) = first else {
            panic!("refused: {first:?}");
        };
        let listener = std::net::TcpListener::bind(url.trim_start_matches("http://"));
        let second = flink.call(Method::GET, &url, "/jobs", None).await;
        assert_eq!(
            second,
            Err(FlinkError::Unreachable {
                url: url.clone(),
                message
            }),
            "remembered even though {listener:?} listens now"
        );
    }
}
