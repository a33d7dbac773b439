//! `hallmark bench` against a real SoftHSM token and real `hallmark serve`
//! child processes: a short run of every configuration with an ECDSA P-256
//! key, checked through its JSON report, and the errors for bad options.

mod common;

use std::process::{Command, Output};

use common::{HALLMARK, TestToken};
use serde_json::Value;

/// Digests per throughput configuration: enough for percentiles, few
/// enough that a debug build runs every configuration in a few seconds.
const REQUESTS: u64 = 40;

/// Digests per single-client configuration.
const LATENCY_REQUESTS: u64 = 20;

/// Digests per SignBatch request. 40 digests make two full batches and
/// one of 8.
const BATCH_SIZE: u64 = 16;

/// Concurrent gRPC clients in the throughput configurations.
const CLIENTS: u64 = 3;

/// The throughput configurations of a run with `--audit both`, in report
/// order.
const THROUGHPUT: [&str; 10] = [
    "raw",
    "raw-checked",
    "tcp-audit-on",
    "tcp-audit-off",
    "unix-audit-on",
    "unix-audit-off",
    "tcp-batch-audit-on",
    "tcp-batch-audit-off",
    "unix-batch-audit-on",
    "unix-batch-audit-off",
];

/// The single-client configurations of a run with `--audit both`, in
/// report order, after the throughput ones. The last makes health checks
/// instead of signing.
const SINGLE_CLIENT: [&str; 5] = [
    "raw-1",
    "unix-1-audit-off",
    "unix-1-audit-on",
    "tcp-1-audit-off",
    "unix-1-health-check",
];

fn bench(token: &TestToken, args: &[&str]) -> Output {
    Command::new(HALLMARK)
        .arg("bench")
        .args(args)
        .arg("--config")
        .arg(token.config())
        .output()
        .expect("hallmark bench runs")
}

fn number(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number in {value}"))
}

#[test]
fn bench_measures_every_configuration() {
    let token = TestToken::with_algorithm("ecdsa-p256-sha256");
    let json_path = token.dir.path().join("bench.json");
    let json_arg = json_path.to_str().expect("UTF-8 path");
    let output = bench(
        &token,
        &[
            "--key",
            "default",
            "--requests",
            &REQUESTS.to_string(),
            "--latency-requests",
            &LATENCY_REQUESTS.to_string(),
            "--clients",
            &CLIENTS.to_string(),
            "--batch-size",
            &BATCH_SIZE.to_string(),
            "--audit",
            "both",
            "--json",
            json_arg,
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for name in THROUGHPUT.iter().chain(&SINGLE_CLIENT) {
        assert!(
            stdout.contains(&format!("| {name} ")),
            "table row {name}:\n{stdout}"
        );
    }
    for base in ["tcp", "unix", "tcp-batch", "unix-batch", "unix-1"] {
        assert!(
            stdout.contains(&format!("audit on/off throughput over {base}: ")),
            "audit ratio {base}:\n{stdout}"
        );
    }
    for line in [
        "Latency is per call:",
        "self-check: ",
        "start-up to SERVING: ",
        "latency that the service adds with one client",
    ] {
        assert!(stdout.contains(line), "{line}:\n{stdout}");
    }

    let text = std::fs::read_to_string(&json_path).expect("JSON report written");
    let report: Value = serde_json::from_str(&text).expect("report is JSON");
    let settings = &report["settings"];
    assert_eq!(settings["requests"], REQUESTS);
    assert_eq!(settings["latency_requests"], LATENCY_REQUESTS);
    assert_eq!(settings["clients"], CLIENTS);
    assert_eq!(settings["batch_size"], BATCH_SIZE);
    assert!(report["machine"]["cores"].as_u64() >= Some(1));
    assert!(report["machine"]["avx512ifma"].is_boolean());
    assert!(
        report["command"]
            .as_str()
            .is_some_and(|c| c.contains("bench"))
    );

    let keys = report["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["key_name"], "default");
    assert_eq!(key["algorithm"], "ecdsa-p256-sha256");

    let configurations = key["configurations"].as_array().expect("configurations");
    let names: Vec<&str> = configurations
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let expected: Vec<&str> = THROUGHPUT.iter().chain(&SINGLE_CLIENT).copied().collect();
    assert_eq!(names, expected);
    for configuration in configurations {
        check_configuration(configuration, &settings["sessions"]);
    }

    let ratios = key["audit_ratios"].as_array().expect("audit ratios");
    let pairs: Vec<(&str, &str)> = ratios
        .iter()
        .filter_map(|r| Some((r["on"].as_str()?, r["off"].as_str()?)))
        .collect();
    assert_eq!(
        pairs,
        [
            ("tcp-audit-on", "tcp-audit-off"),
            ("unix-audit-on", "unix-audit-off"),
            ("tcp-batch-audit-on", "tcp-batch-audit-off"),
            ("unix-batch-audit-on", "unix-batch-audit-off"),
            ("unix-1-audit-on", "unix-1-audit-off"),
        ]
    );
    for ratio in ratios {
        assert!(number(ratio, "on_to_off") > 0.0, "{ratio}");
    }

    let check = &key["self_check"];
    assert!(number(check, "mean_us_per_signature") > 0.0, "{check}");
    let checked = &configurations[1];
    assert_eq!(
        number(check, "checked_per_second"),
        number(checked, "throughput_per_second")
    );
    assert_eq!(
        number(check, "mean_us_per_signature"),
        number(checked, "self_check_us_per_signature")
    );

    let added = key["added_latency"].as_array().expect("added latency");
    let added_names: Vec<&str> = added
        .iter()
        .filter_map(|a| a["configuration"].as_str())
        .collect();
    assert_eq!(added_names, SINGLE_CLIENT[1..4]);
    let raw_single = &configurations[THROUGHPUT.len()]["latency"];
    for entry in added {
        let (p50, p99) = (number(entry, "p50_us"), number(entry, "p99_us"));
        let added_p50 = p50 - number(raw_single, "p50_us");
        assert!(
            (number(entry, "added_p50_us") - added_p50).abs() < 0.01,
            "{entry}"
        );
        let added_p99 = p99 - number(raw_single, "p99_us");
        assert!(
            (number(entry, "added_p99_us") - added_p99).abs() < 0.01,
            "{entry}"
        );
    }

    let health = &configurations[THROUGHPUT.len() + 4];
    assert_eq!(health["rpc"], "Health/Check");
    let floor = &key["call_floor"];
    assert_eq!(floor["p50_us"], health["latency"]["p50_us"]);
    assert_eq!(floor["p99_us"], health["latency"]["p99_us"]);
    assert!(number(floor, "p50_us") > 0.0, "{floor}");

    let services = THROUGHPUT.len() - 2 + SINGLE_CLIENT.len() - 1;
    let startup = &key["startup"];
    assert_eq!(startup["processes"], services);
    assert!(number(startup, "min_ms") > 0.0, "{startup}");
    assert!(
        number(startup, "median_ms") >= number(startup, "min_ms"),
        "{startup}"
    );
}

/// Checks one configuration of the run in `bench_measures_every_configuration`.
fn check_configuration(configuration: &Value, sessions: &Value) {
    let name = configuration["name"].as_str().expect("name");
    let single = SINGLE_CLIENT.contains(&name);
    let service = !name.starts_with("raw");
    let batch = name.contains("-batch-");
    let requests = if single { LATENCY_REQUESTS } else { REQUESTS };
    let part = if single {
        "single-client"
    } else {
        "throughput"
    };
    assert_eq!(configuration["part"], part, "{name}");
    assert_eq!(configuration["requests"], requests, "{name}");
    assert_eq!(configuration["ok"], requests, "{name}");
    assert_eq!(configuration["errors"], 0, "{name}");
    assert_eq!(
        configuration["error_kinds"],
        serde_json::json!({}),
        "{name}"
    );
    let (per_call, calls) = if batch {
        (BATCH_SIZE, REQUESTS.div_ceil(BATCH_SIZE))
    } else {
        (1, requests)
    };
    assert_eq!(configuration["signatures_per_call"], per_call, "{name}");
    assert_eq!(configuration["calls"], calls, "{name}");
    let workers = match (single, service) {
        (true, _) => serde_json::json!(1),
        (false, true) => serde_json::json!(CLIENTS),
        (false, false) => sessions.clone(),
    };
    assert_eq!(configuration["workers"], workers, "{name}");

    assert!(
        number(configuration, "throughput_per_second") > 0.0,
        "{name}"
    );
    assert!(number(configuration, "ratio_to_raw") > 0.0, "{name}");
    let latency = &configuration["latency"];
    assert!(number(latency, "p50_us") > 0.0, "{name}");
    assert!(
        number(latency, "p90_us") >= number(latency, "p50_us"),
        "{name}"
    );
    assert!(
        number(latency, "p99_us") >= number(latency, "p90_us"),
        "{name}"
    );
    assert!(
        number(latency, "max_us") >= number(latency, "p99_us"),
        "{name}"
    );
    assert_eq!(
        configuration["self_check_us_per_signature"].is_number(),
        name == "raw-checked",
        "{name}"
    );

    if service {
        let transport = name.split('-').next();
        assert_eq!(configuration["transport"].as_str(), transport, "{name}");
        assert_eq!(
            configuration["audit"].as_bool(),
            Some(name.ends_with("-audit-on")),
            "{name}"
        );
        let rpc = if batch {
            "SignBatch"
        } else if name.ends_with("-health-check") {
            "Health/Check"
        } else {
            "Sign"
        };
        assert_eq!(configuration["rpc"], rpc, "{name}");
        let memory = &configuration["service_memory"];
        assert!(number(memory, "vm_hwm_kib") > 0.0, "{name}");
        assert!(
            number(memory, "vm_rss_kib") <= number(memory, "vm_hwm_kib"),
            "{name}"
        );
        assert!(
            number(configuration, "client_cpu_us_per_signature") >= 0.0,
            "{name}"
        );
        assert!(number(configuration, "startup_ms") > 0.0, "{name}");
    } else {
        assert!(configuration["transport"].is_null(), "{name}");
        assert!(configuration["rpc"].is_null(), "{name}");
        assert!(configuration["service_memory"].is_null(), "{name}");
        assert!(configuration["startup_ms"].is_null(), "{name}");
    }
}

#[test]
fn bench_rejects_bad_options() {
    let token = TestToken::without_key();

    let unknown = bench(&token, &["--key", "missing", "--requests", "1"]);
    assert_eq!(unknown.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("key \"missing\" is not configured"),
        "{stderr}"
    );

    let invalid = bench(&token, &["--key", "Bad Name", "--requests", "1"]);
    assert_eq!(invalid.status.code(), Some(64));

    // The token has no key yet, so the configured default key cannot sign.
    let no_version = bench(&token, &["--requests", "1"]);
    assert_eq!(no_version.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&no_version.stderr);
    assert!(stderr.contains("has no active version"), "{stderr}");

    let zero = bench(&token, &["--requests", "0"]);
    assert_eq!(zero.status.code(), Some(2));

    let crowded = bench(&token, &["--clients", "2000", "--requests", "1"]);
    assert_eq!(crowded.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&crowded.stderr);
    assert!(stderr.contains("server.max_pending"), "{stderr}");

    // The default signing.max_batch is 256.
    let large_batch = bench(&token, &["--batch-size", "257", "--requests", "1"]);
    assert_eq!(large_batch.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&large_batch.stderr);
    assert!(
        stderr.contains("--batch-size 257 exceeds signing.max_batch = 256"),
        "{stderr}"
    );

    // 20 clients with 64 digests each would keep 1280 digests in
    // progress, and server.max_pending defaults to 1024.
    let crowded_batches = bench(
        &token,
        &[
            "--clients",
            "20",
            "--batch-size",
            "64",
            "--requests",
            "2000",
        ],
    );
    assert_eq!(crowded_batches.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&crowded_batches.stderr);
    assert!(
        stderr.contains("would keep 1280 digests in progress, more than server.max_pending = 1024"),
        "{stderr}"
    );

    let empty_batch = bench(&token, &["--batch-size", "0", "--requests", "1"]);
    assert_eq!(empty_batch.status.code(), Some(2));
    let no_latency = bench(&token, &["--latency-requests", "0", "--requests", "1"]);
    assert_eq!(no_latency.status.code(), Some(2));
}
