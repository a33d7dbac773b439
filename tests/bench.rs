//! `hallmark bench` against a real SoftHSM token and real `hallmark serve`
//! child processes: a short run with an ECDSA P-256 key, checked through
//! its JSON report, and the errors for bad options.

mod common;

use std::process::{Command, Output};

use common::{HALLMARK, TestToken};
use serde_json::Value;

/// Requests per configuration: enough for percentiles, few enough that a
/// debug build runs all five configurations in a few seconds.
const REQUESTS: u64 = 40;

/// The configurations of a run with `--audit both`, in report order.
const CONFIGURATIONS: [&str; 5] = [
    "raw",
    "tcp-audit-on",
    "tcp-audit-off",
    "unix-audit-on",
    "unix-audit-off",
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
            "--clients",
            "3",
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
    for name in CONFIGURATIONS {
        assert!(
            stdout.contains(&format!("| {name} ")),
            "table row {name}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("audit on/off throughput over tcp"),
        "{stdout}"
    );

    let text = std::fs::read_to_string(&json_path).expect("JSON report written");
    let report: Value = serde_json::from_str(&text).expect("report is JSON");
    assert_eq!(report["settings"]["requests"], REQUESTS);
    assert_eq!(report["settings"]["clients"], 3);
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
    assert_eq!(names, CONFIGURATIONS);
    for configuration in configurations {
        let name = &configuration["name"];
        assert_eq!(configuration["requests"], REQUESTS, "{name}");
        assert_eq!(configuration["ok"], REQUESTS, "{name}");
        assert_eq!(configuration["errors"], 0, "{name}");
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
    }

    let raw = &configurations[0];
    assert_eq!(raw["workers"], report["settings"]["sessions"]);
    assert!(raw["service_memory"].is_null());
    for service in &configurations[1..] {
        let name = &service["name"];
        assert_eq!(service["workers"], 3, "{name}");
        let memory = &service["service_memory"];
        assert!(number(memory, "vm_hwm_kib") > 0.0, "{name}");
        assert!(
            number(memory, "vm_rss_kib") <= number(memory, "vm_hwm_kib"),
            "{name}"
        );
        assert!(
            number(service, "client_cpu_us_per_signature") >= 0.0,
            "{name}"
        );
    }

    let ratios = key["audit_ratios"].as_array().expect("audit ratios");
    let transports: Vec<&str> = ratios
        .iter()
        .filter_map(|r| r["transport"].as_str())
        .collect();
    assert_eq!(transports, ["tcp", "unix"]);
    for ratio in ratios {
        assert!(number(ratio, "on_to_off") > 0.0, "{ratio}");
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
}
