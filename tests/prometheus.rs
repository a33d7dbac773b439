//! The service's metrics, scraped by a real Prometheus server. Prometheus
//! scrapes a real `hallmark serve` on loopback, and the test reads what
//! known traffic must have produced through Prometheus's HTTP API. promtool
//! checks the exposition, and docs/operations.md must document every
//! metric with its type and labels, and every alert.
//!
//! The `prometheus` and `promtool` binaries come from Debian's prometheus
//! package, which `scripts/prometheus-tools.sh` unpacks into
//! `target/deploy-tools/bin` (`scripts/test.sh` runs it first). Without
//! them the Prometheus test fails: it never skips.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TestServer, TestToken};
use hallmark::pb::{self, SignBatchItem, SignBatchRequest, SignRequest};
use sha2::{Digest, Sha256};
use tonic::Code;

/// Overrides the path of the Prometheus server binary.
const PROMETHEUS_VARIABLE: &str = "HALLMARK_PROMETHEUS";
/// Overrides the path of promtool.
const PROMTOOL_VARIABLE: &str = "HALLMARK_PROMTOOL";
/// Directory whose `bin/` contains both, as in `scripts/prometheus-tools.sh`.
const TOOLS_VARIABLE: &str = "HALLMARK_DEPLOY_TOOLS";

/// How long Prometheus gets to start and to report ready.
const PROMETHEUS_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a scrape after the traffic may take to arrive: many scrape
/// intervals, because the test machine may be busy.
const SCRAPE_WAIT: Duration = Duration::from_secs(15);
/// Ports that Prometheus tries before the test gives up. The test picks a
/// free port and releases it for Prometheus, so another process may take
/// it in between.
const PORT_ATTEMPTS: usize = 3;
/// An upper bound for a Sign quantile. A Sign with a P-256 key on SoftHSM
/// takes milliseconds, so this leaves room for a loaded test machine and
/// still catches a wrong unit (milliseconds counted as seconds).
const SANE_SIGN_SECONDS: f64 = 1.0;

// The traffic of `prometheus_scrapes_exact_values`.
/// Sign requests that succeed after the first one.
const SIGN_OK: usize = 6;
/// Sign requests for a key name that is not configured: NOT_FOUND.
const SIGN_UNKNOWN_KEY: usize = 2;
/// Sign requests with a 31-byte digest: INVALID_ARGUMENT.
const SIGN_SHORT_DIGEST: usize = 3;
/// Valid digests in the SignBatch request, beside one short digest.
const BATCH_VALID: usize = 3;

/// Returns the path of a Prometheus binary: `variable` if set, else
/// `bin/NAME` under `HALLMARK_DEPLOY_TOOLS` or `target/deploy-tools`.
/// Panics with the fix when it does not exist.
fn tool(name: &str, variable: &str) -> PathBuf {
    let path = match std::env::var_os(variable) {
        Some(path) => PathBuf::from(path),
        None => {
            let tools = std::env::var_os(TOOLS_VARIABLE).map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/deploy-tools"),
                PathBuf::from,
            );
            tools.join("bin").join(name)
        }
    };
    assert!(
        path.is_file(),
        "{name} not found at {}: run scripts/prometheus-tools.sh, which unpacks it from \
         Debian's prometheus package (scripts/test.sh runs it), or set {variable} to a \
         Prometheus 2.x {name} binary",
        path.display()
    );
    path
}

/// One series of a query result: its labels and its value.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A child process that is killed, by its PID, when this is dropped, also
/// while a failed assertion unwinds.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus server in a temporary directory, listening on loopback and
/// scraping one target.
struct Prometheus {
    _process: KillOnDrop,
    url: String,
    agent: ureq::Agent,
    log: PathBuf,
    /// Contains the configuration, the logs and the TSDB. Fields drop in
    /// order, so the directory is removed after the process is killed.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus to scrape `target` (host:port) every second, and
    /// waits until it reports ready.
    fn start(target: &str) -> Self {
        let binary = tool("prometheus", PROMETHEUS_VARIABLE);
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, scrape_config(target)).expect("configuration written");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();

        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let url = format!("http://127.0.0.1:{port}");
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("log file created"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut process = KillOnDrop(child);
            match wait_ready(&mut process.0, &agent, &url, &log) {
                Ok(()) => {
                    return Self {
                        _process: process,
                        url,
                        agent,
                        log,
                        _dir: dir,
                    };
                }
                Err(text) if text.contains("address already in use") => continue,
                Err(text) => panic!("Prometheus exited before it was ready; its log:\n{text}"),
            }
        }
        panic!("Prometheus found no free port in {PORT_ATTEMPTS} attempts");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs an instant query through `/api/v1/query` and returns its
    /// vector result. Panics on an error or on another result type.
    fn query(&self, expression: &str) -> Vec<Sample> {
        let mut response = self
            .agent
            .get(format!("{}/api/v1/query", self.url))
            .query("query", expression)
            .call()
            .unwrap_or_else(|e| panic!("query {expression:?} failed: {e}"));
        let status = response.status();
        let body = response
            .body_mut()
            .read_to_string()
            .expect("query response readable");
        assert_eq!(status, 200, "query {expression:?}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("response is JSON");
        assert_eq!(json["status"], "success", "query {expression:?}: {body}");
        assert_eq!(
            json["data"]["resultType"], "vector",
            "query {expression:?}: {body}"
        );
        json["data"]["result"]
            .as_array()
            .expect("result is an array")
            .iter()
            .map(sample_from_json)
            .collect()
    }

    /// Returns the value of a query whose result is one series.
    fn query_one(&self, expression: &str) -> f64 {
        let samples = self.query(expression);
        assert_eq!(samples.len(), 1, "{expression}: {samples:?}");
        samples[0].value
    }

    /// Waits until Prometheus has stored a scrape of the target that began
    /// after `after`.
    fn wait_for_scrape_after(&self, after: SystemTime) {
        // Prometheus moves a scrape's timestamp by up to 2 ms by default to
        // align it with the interval, so a scrape must begin clearly after
        // `after`.
        let after = seconds_since_epoch(after) + 0.05;
        let deadline = Instant::now() + SCRAPE_WAIT;
        loop {
            let latest = self
                .query("timestamp(hallmark_build_info)")
                .first()
                .map(|sample| sample.value);
            if latest.is_some_and(|latest| latest > after) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no scrape after {after} within {SCRAPE_WAIT:?} (latest: {latest:?}); \
                 Prometheus's log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Polls `url/-/ready` until it returns 200. Returns the log if the
/// process exits first, and panics after the start timeout.
fn wait_ready(child: &mut Child, agent: &ureq::Agent, url: &str, log: &Path) -> Result<(), String> {
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + PROMETHEUS_START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("process status readable") {
            return Err(format!("{status}\n{}", log_text()));
        }
        let ready = agent
            .get(format!("{url}/-/ready"))
            .call()
            .is_ok_and(|response| response.status() == 200);
        if ready {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus not ready after {PROMETHEUS_START_TIMEOUT:?}; its log:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Returns a Prometheus configuration that scrapes `target` every second.
fn scrape_config(target: &str) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: hallmark\n    static_configs:\n      \
         - targets: [\"{target}\"]\n"
    )
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback port available");
    listener.local_addr().expect("bound address").port()
}

fn seconds_since_epoch(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Converts one element of a vector result:
/// `{"metric": {...}, "value": [time, "value"]}`.
fn sample_from_json(series: &serde_json::Value) -> Sample {
    let labels = series["metric"]
        .as_object()
        .expect("metric is an object")
        .iter()
        .map(|(name, value)| {
            let value = value.as_str().expect("label value is a string");
            (name.clone(), value.to_owned())
        })
        .collect();
    // Prometheus writes values as strings, including "NaN" and "+Inf",
    // which Rust parses too.
    let value = series["value"][1]
        .as_str()
        .expect("value is a string")
        .parse()
        .expect("value is a number");
    Sample { labels, value }
}

fn sign_request(digest: Vec<u8>, key_name: &str, request_id: &str) -> SignRequest {
    SignRequest {
        digest,
        hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
        key_name: key_name.into(),
        request_id: request_id.into(),
        signature_encoding: pb::SignatureEncoding::Der as i32,
    }
}

fn digest_of(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// Sends one Sign request and returns its gRPC code.
async fn sign(server: &TestServer, request: SignRequest) -> Code {
    match server.client().await.sign(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Sends a SignBatch request of `valid` good digests and one 31-byte
/// digest, and checks the result of each item.
async fn sign_batch(server: &TestServer, valid: usize) {
    let mut items: Vec<SignBatchItem> = (0..valid)
        .map(|n| SignBatchItem {
            digest: digest_of(&format!("batch-{n}")),
            request_id: format!("batch-{n}"),
        })
        .collect();
    items.push(SignBatchItem {
        digest: vec![7; 31],
        request_id: "batch-short".into(),
    });
    let response = server
        .client()
        .await
        .sign_batch(SignBatchRequest {
            items,
            hash_algorithm: pb::HashAlgorithm::Sha256 as i32,
            key_name: String::new(),
            signature_encoding: pb::SignatureEncoding::Der as i32,
        })
        .await
        .expect("the batch is accepted")
        .into_inner();
    let codes: Vec<i32> = response
        .results
        .iter()
        .map(|result| result.error.as_ref().map_or(0, |error| error.code))
        .collect();
    let mut expected = vec![Code::Ok as i32; valid];
    expected.push(Code::InvalidArgument as i32);
    assert_eq!(codes, expected);
}

/// Starts a server on a token with a P-256 default key, which SoftHSM
/// generates in milliseconds, and waits until it serves.
async fn start_server() -> (TestToken, TestServer) {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let server = TestServer::start(&token);
    server.wait_serving(Duration::from_secs(30)).await;
    (token, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_exact_values() {
    // Fails before any work when the binaries are missing.
    let promtool = tool("promtool", PROMTOOL_VARIABLE);
    let (_token, server) = start_server().await;
    let prometheus = Prometheus::start(&server.metrics_addr);

    // One request before a scrape creates the histogram series, so that
    // rate() over the rest of the traffic has a starting sample.
    let first = sign(&server, sign_request(digest_of("first"), "", "first")).await;
    assert_eq!(first, Code::Ok);
    prometheus.wait_for_scrape_after(SystemTime::now());

    for n in 0..SIGN_OK {
        let request = sign_request(digest_of(&format!("ok-{n}")), "", &format!("ok-{n}"));
        assert_eq!(sign(&server, request).await, Code::Ok, "request {n}");
    }
    for n in 0..SIGN_UNKNOWN_KEY {
        let request = sign_request(digest_of("unknown"), "nope", &format!("unknown-{n}"));
        assert_eq!(sign(&server, request).await, Code::NotFound, "request {n}");
    }
    for n in 0..SIGN_SHORT_DIGEST {
        let request = sign_request(vec![1; 31], "", &format!("short-{n}"));
        assert_eq!(
            sign(&server, request).await,
            Code::InvalidArgument,
            "request {n}"
        );
    }
    sign_batch(&server, BATCH_VALID).await;
    prometheus.wait_for_scrape_after(SystemTime::now());

    let sign_calls = 1 + SIGN_OK + SIGN_UNKNOWN_KEY + SIGN_SHORT_DIGEST;
    let signatures = 1 + SIGN_OK + BATCH_VALID;

    // Every series with a count, by key name and code. The series that the
    // service creates at zero for each key are left out.
    let requests: BTreeMap<(String, String), f64> = prometheus
        .query(r#"hallmark_sign_requests_total{job="hallmark"} > 0"#)
        .into_iter()
        .map(|sample| {
            let key_name = sample.labels["key_name"].clone();
            let code = sample.labels["code"].clone();
            ((key_name, code), sample.value)
        })
        .collect();
    let expected: BTreeMap<(String, String), f64> = [
        (("default", "OK"), signatures),
        (("default", "INVALID_ARGUMENT"), SIGN_SHORT_DIGEST + 1),
        (("unknown", "NOT_FOUND"), SIGN_UNKNOWN_KEY),
    ]
    .into_iter()
    .map(|((key, code), count)| ((key.to_owned(), code.to_owned()), count as f64))
    .collect();
    assert_eq!(requests, expected);

    // One observation per Sign call, whatever its code.
    assert_eq!(
        prometheus.query_one("sum(hallmark_sign_duration_seconds_count)"),
        sign_calls as f64
    );
    assert_eq!(
        prometheus.query_one(r#"hallmark_sign_duration_seconds_count{key_name="unknown"}"#),
        SIGN_UNKNOWN_KEY as f64
    );
    assert_eq!(
        prometheus.query_one(r#"hallmark_sign_batch_duration_seconds_count{key_name="default"}"#),
        1.0
    );
    // One C_Sign per signature, from Sign and SignBatch alike.
    assert_eq!(
        prometheus.query_one(r#"hallmark_hsm_sign_duration_seconds_count{key_name="default"}"#),
        signatures as f64
    );
    // Requests that passed validation reach the caller policy: the valid
    // Sign requests and the batch, once.
    assert_eq!(
        prometheus.query_one(r#"hallmark_caller_requests_total{caller="local",outcome="allowed"}"#),
        (1 + SIGN_OK + 1) as f64
    );

    // The expression of the HallmarkSignLatencyHigh alert, over the traffic
    // since the first scrape.
    let p99 = prometheus.query_one(
        r#"histogram_quantile(0.99, rate(hallmark_sign_duration_seconds_bucket{key_name="default"}[1m]))"#,
    );
    assert!(p99.is_finite(), "p99 is {p99}");
    assert!(p99 > 0.0, "p99 is {p99}");
    assert!(p99 < SANE_SIGN_SECONDS, "p99 is {p99} s");
    // The median of every Sign call since the server started.
    let median = prometheus
        .query_one("histogram_quantile(0.5, sum by (le) (hallmark_sign_duration_seconds_bucket))");
    assert!(median.is_finite(), "median is {median}");
    assert!(median > 0.0, "median is {median}");
    assert!(median < SANE_SIGN_SECONDS, "median is {median} s");

    let build = prometheus.query("hallmark_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].value, 1.0);
    assert_eq!(build[0].labels["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(build[0].labels["job"], "hallmark");
    assert_eq!(build[0].labels["instance"], server.metrics_addr);

    let exposition = server.metrics().await;
    let (passed, output) = promtool_check_metrics(&promtool, &exposition);
    assert!(
        passed,
        "promtool check metrics failed:\n{output}\n{exposition}"
    );
}

/// Runs `promtool check metrics` on `exposition` and returns whether it
/// passed, and its output.
fn promtool_check_metrics(promtool: &Path, exposition: &str) -> (bool, String) {
    use std::io::Write;

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(exposition.as_bytes())
        .expect("exposition written to promtool");
    let output = child.wait_with_output().expect("promtool finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A metric family of an exposition: its type and the names of its labels.
#[derive(Debug, PartialEq, Eq)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

/// Reads the families of a text exposition from its `# TYPE` lines and the
/// label names of its samples. The `le` label of histogram buckets is left
/// out, because it belongs to every histogram.
fn exposition_families(exposition: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            let family = Family {
                kind: kind.to_owned(),
                labels: BTreeSet::new(),
            };
            (name.to_owned(), family)
        })
        .collect();
    for line in exposition.lines().filter(|line| !line.starts_with('#')) {
        let name_end = line.find(['{', ' ']).expect("sample has a value");
        let sample_name = &line[..name_end];
        let family = ["_bucket", "_sum", "_count", ""]
            .iter()
            .filter_map(|suffix| sample_name.strip_suffix(suffix))
            .find(|name| families.contains_key(*name))
            .unwrap_or_else(|| panic!("sample {line:?} has no # TYPE line"));
        let labels = label_names(&line[name_end..]);
        let entry = families.get_mut(family).expect("found above");
        entry
            .labels
            .extend(labels.into_iter().filter(|l| l != "le"));
    }
    families
}

/// Returns the label names of `{a="x",b="y"} value`, or none without braces.
fn label_names(rest: &str) -> Vec<String> {
    let Some(mut rest) = rest.strip_prefix('{') else {
        return Vec::new();
    };
    let mut names = Vec::new();
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.to_owned());
        // The value ends at the first quote that no backslash escapes.
        let mut escaped = false;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                let closes = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                closes
            })
            .map(|(index, _)| index)
            .expect("label value is closed");
        rest = after[end + 1..].trim_start_matches(',');
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// Returns the metric names that `src/metrics.rs` registers: its string
/// literals that look like a metric name.
fn registered_names() -> BTreeSet<String> {
    include_str!("../src/metrics.rs")
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|text| {
            text.starts_with("hallmark_")
                && text.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// Returns the text of the `## TITLE` section of docs/operations.md, up
/// to the next `## ` heading.
fn operations_section(title: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    let text = std::fs::read_to_string(&path).expect("docs/operations.md readable");
    text.split("\n## ")
        .find(|section| section.starts_with(&format!("{title}\n")))
        .unwrap_or_else(|| panic!("docs/operations.md has no \"## {title}\" section"))
        .to_owned()
}

/// Returns the rows of the table in the "Metrics reference" section of
/// docs/operations.md: each metric name with its type and label names.
fn documented_metrics() -> BTreeMap<String, Family> {
    operations_section("Metrics reference")
        .lines()
        .filter(|line| line.starts_with("| `hallmark_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert!(cells.len() >= 5, "metric row needs 4 columns: {line}");
            let name = cells[1].trim_matches('`').to_owned();
            let labels = cells[3]
                .split(',')
                .map(|label| label.trim().trim_matches('`'))
                .filter(|label| !label.is_empty() && *label != "none")
                .map(str::to_owned)
                .collect();
            let family = Family {
                kind: cells[2].to_owned(),
                labels,
            };
            (name, family)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_is_documented() {
    let (_token, server) = start_server().await;
    let signed = sign(&server, sign_request(digest_of("one"), "", "one")).await;
    assert_eq!(signed, Code::Ok);
    sign_batch(&server, 1).await;

    let exposed = exposition_families(&server.metrics().await);
    let registered = registered_names();
    let documented = documented_metrics();

    for name in registered.iter().chain(exposed.keys()) {
        assert!(
            documented.contains_key(name),
            "{name} is not in the Metrics reference of docs/operations.md"
        );
    }
    for (name, family) in &exposed {
        assert_eq!(
            &documented[name], family,
            "{name}: the Metrics reference of docs/operations.md differs from the exposition"
        );
    }
    for name in documented.keys() {
        assert!(
            registered.contains(name),
            "docs/operations.md documents {name}, which src/metrics.rs does not register"
        );
    }
    // Every registered metric has a sample after one Sign and one SignBatch,
    // so the exposition checks each documented type and label set.
    assert_eq!(exposed.keys().cloned().collect::<BTreeSet<_>>(), registered);
}

#[test]
fn every_alert_is_documented() {
    let rules = include_str!("../deploy/prometheus/rules.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert!(!alerts.is_empty(), "rules.yml has no alerts");

    let section = operations_section("Alerts");
    let documented: BTreeSet<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("### "))
        .filter_map(|heading| heading.split_whitespace().next())
        .collect();
    for alert in &alerts {
        assert!(
            documented.contains(alert),
            "{alert} has no \"### {alert}\" heading in the Alerts section of docs/operations.md"
        );
    }
    assert_eq!(documented.len(), alerts.len(), "{documented:?}");
}
