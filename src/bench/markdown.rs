//! The Markdown rendering of a [`Report`]: the facts of the run, then for
//! each key a table of its configurations, lines for the ratios and
//! summaries, and a small table of the latency that the service adds.

use std::fmt::Write as _;

use super::report::{Configuration, KeyReport, RAW_SINGLE, Report};

impl Report {
    /// Renders the facts of the run, then for each key its table of
    /// configurations, their ratios and summaries, and the latency that
    /// the service adds with one client.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let machine = &self.machine;
        let _ = writeln!(
            out,
            "hallmark {} ({} build), {}",
            self.hallmark_version, self.build_profile, self.date
        );
        let _ = writeln!(out, "command: {}", self.command);
        let _ = writeln!(
            out,
            "machine: {} cores, {}, avx512ifma {}, {} MiB memory, kernel {}, load average {}",
            machine.cores,
            machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
            if machine.avx512ifma { "yes" } else { "no" },
            machine.memory_kib.map_or(0, |kib| kib / 1024),
            machine.kernel.as_deref().unwrap_or("unknown"),
            machine
                .load_average_1m
                .map_or("unknown".into(), |load| format!("{load:.2}")),
        );
        let _ = writeln!(
            out,
            "PKCS#11 module: {}{}",
            machine.pkcs11_module,
            machine
                .softhsm_version
                .as_ref()
                .map_or(String::new(), |v| format!(" (softhsm2-util {v})")),
        );
        let settings = &self.settings;
        let _ = writeln!(
            out,
            "{} requests per configuration, {} per single-client configuration; {} sessions \
             (raw threads and service pool); {} gRPC clients, {}; SignBatch requests of {} \
             digests; warm-up: {}",
            settings.requests,
            settings.latency_requests,
            settings.sessions,
            settings.clients,
            settings.channels,
            settings.batch_size,
            settings.warm_up
        );
        for key in &self.keys {
            out.push('\n');
            out.push_str(&key_section(key));
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "\nwarning: {warning}");
        }
        out
    }
}

/// Renders the results of one key.
fn key_section(key: &KeyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "key {} ({}, {} bits, key ID {})\n",
        key.key_name, key.algorithm, key.bits, key.key_id
    );
    out.push_str(&key_table(&key.configurations));
    out.push('\n');
    out.push_str(LATENCY_NOTE);
    out.push('\n');
    for ratio in &key.audit_ratios {
        let _ = writeln!(
            out,
            "audit on/off throughput over {}: {:.2} ({:.0} sig/s on, {:.0} sig/s off)",
            ratio.base(),
            ratio.on_to_off,
            ratio.on_per_second,
            ratio.off_per_second
        );
    }
    if let Some(check) = &key.self_check {
        let _ = writeln!(
            out,
            "self-check: {:.1} µs per signature (mean); raw-checked/raw throughput {:.2} \
             ({:.0} sig/s checked, {:.0} sig/s raw)",
            check.mean_us_per_signature,
            check.checked_to_raw,
            check.checked_per_second,
            check.raw_per_second
        );
    }
    if let Some(startup) = &key.startup {
        let _ = writeln!(
            out,
            "start-up to SERVING: min {:.1} ms, median {:.1} ms over {} service processes",
            startup.min_ms, startup.median_ms, startup.processes
        );
    }
    if !key.added_latency.is_empty() {
        out.push_str("\nlatency that the service adds with one client (service minus raw-1):\n\n");
        out.push_str(&added_latency_table(key));
    }
    if let Some(floor) = &key.call_floor {
        let _ = writeln!(
            out,
            "\na gRPC call that signs nothing (health checks, one client, Unix socket): \
             p50 {:.1} µs, p99 {:.1} µs",
            floor.p50_us, floor.p99_us
        );
    }
    out
}

/// The note under each key's table on what the latency columns measure.
const LATENCY_NOTE: &str = "Latency is per call: one C_Sign (with the self-check in \
    raw-checked), or one gRPC call as the client measures it. A SignBatch call signs up to \
    sig/call digests, and sig/s counts signatures. unix-1-health-check signs nothing: its \
    sig/s counts health checks.";

const HEADERS: [&str; 14] = [
    "configuration",
    "requests",
    "sig/call",
    "errors",
    "sig/s",
    "vs raw",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "signer CPU µs/sig",
    "client CPU µs/sig",
    "VmHWM MiB",
    "VmRSS MiB",
];

fn key_table(configurations: &[Configuration]) -> String {
    let rows: Vec<Vec<String>> = configurations.iter().map(row).collect();
    render_markdown(&HEADERS, &rows)
}

fn row(c: &Configuration) -> Vec<String> {
    let ms = |us: f64| format!("{:.3}", us / 1000.0);
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    vec![
        c.name.clone(),
        c.requests.to_string(),
        c.signatures_per_call.to_string(),
        c.errors.to_string(),
        format!("{:.0}", c.throughput_per_second),
        format!("{:.2}", c.ratio_to_raw),
        ms(c.latency.p50_us),
        ms(c.latency.p90_us),
        ms(c.latency.p99_us),
        ms(c.latency.max_us),
        format!("{:.0}", c.signer_cpu_us_per_signature),
        c.client_cpu_us_per_signature
            .map_or("-".into(), |us| format!("{us:.0}")),
        c.service_memory.map_or("-".into(), |m| mib(m.vm_hwm_kib)),
        c.service_memory.map_or("-".into(), |m| mib(m.vm_rss_kib)),
    ]
}

const ADDED_HEADERS: [&str; 5] = [
    "configuration",
    "p50 µs",
    "p99 µs",
    "added p50 µs",
    "added p99 µs",
];

/// Renders `raw-1` and each single-client service configuration with the
/// latency it adds to `raw-1`.
fn added_latency_table(key: &KeyReport) -> String {
    let us = |us: f64| format!("{us:.1}");
    let mut rows = Vec::new();
    if let Some(raw) = key.configurations.iter().find(|c| c.name == RAW_SINGLE) {
        rows.push(vec![
            raw.name.clone(),
            us(raw.latency.p50_us),
            us(raw.latency.p99_us),
            "-".into(),
            "-".into(),
        ]);
    }
    for added in &key.added_latency {
        rows.push(vec![
            added.configuration.clone(),
            us(added.p50_us),
            us(added.p99_us),
            us(added.added_p50_us),
            us(added.added_p99_us),
        ]);
    }
    render_markdown(&ADDED_HEADERS, &rows)
}

/// Renders a Markdown table with padded columns, the first left-aligned
/// and the rest right-aligned, so that it reads well in a terminal too.
fn render_markdown(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut text = String::from("|");
        for (column, cell) in cells.enumerate() {
            let width = widths[column];
            if column == 0 {
                let _ = write!(text, " {cell:<width$} |");
            } else {
                let _ = write!(text, " {cell:>width$} |");
            }
        }
        text.push('\n');
        text
    };
    let mut out = line(&mut headers.iter().map(|h| (*h).to_owned()));
    out.push('|');
    for (column, width) in widths.iter().enumerate() {
        let dashes = "-".repeat(*width);
        if column == 0 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, "{dashes}-:|");
        }
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().cloned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::report::tests::{service, spec, timed_latencies};
    use crate::bench::report::{AddedLatency, AuditRatio, CallFloor, SelfCheckCost, Startup};

    #[test]
    fn key_section_has_notes_and_added_latency() {
        let raw_latencies: Vec<u64> = (1..=100).collect();
        let served: Vec<u64> = (101..=200).collect();
        let mut checked = timed_latencies(&raw_latencies, 1);
        for _ in 0..100 {
            checked.tally.record_check(Duration::from_micros(40));
        }
        let configurations = vec![
            Configuration::raw(&spec("raw"), &timed_latencies(&raw_latencies, 1)),
            Configuration::raw(&spec("raw-checked"), &checked),
            service("tcp-batch-audit-on", timed_latencies(&served[..50], 1), 80),
            service("tcp-batch-audit-off", timed_latencies(&served, 1), 100),
            Configuration::raw(&spec("raw-1"), &timed_latencies(&raw_latencies, 1)),
            service("unix-1-audit-off", timed_latencies(&served, 1), 120),
            service("unix-1-health-check", timed_latencies(&served[..10], 1), 90),
        ];
        let key = KeyReport {
            key_name: "ecdsa-p256".into(),
            algorithm: "ecdsa-p256-sha256",
            bits: 256,
            key_id: "kid".into(),
            audit_ratios: AuditRatio::pair(&configurations),
            self_check: SelfCheckCost::find(&configurations),
            added_latency: AddedLatency::list(&configurations),
            call_floor: CallFloor::find(&configurations),
            startup: Startup::summarize(&configurations),
            configurations,
        };

        let text = key_section(&key);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "key ecdsa-p256 (ecdsa-p256-sha256, 256 bits, key ID kid)"
        );
        let cells = |line: &str| -> Vec<String> {
            line.split('|').map(|cell| cell.trim().to_owned()).collect()
        };
        assert_eq!(
            cells(lines[2])[1..4],
            ["configuration", "requests", "sig/call"]
        );
        assert_eq!(cells(lines[7])[1..4], ["tcp-batch-audit-off", "1000", "64"]);
        assert_eq!(cells(lines[8])[1..4], ["raw-1", "300", "1"]);

        assert!(text.contains(LATENCY_NOTE), "{text}");
        assert!(
            text.contains(
                "audit on/off throughput over tcp-batch: 0.50 (50 sig/s on, 100 sig/s off)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "self-check: 40.0 µs per signature (mean); raw-checked/raw throughput 1.00 \
                 (100 sig/s checked, 100 sig/s raw)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "start-up to SERVING: min 80.0 ms, median 90.0 ms over 4 service processes\n"
            ),
            "{text}"
        );

        let expected = "\
latency that the service adds with one client (service minus raw-1):

| configuration    | p50 µs | p99 µs | added p50 µs | added p99 µs |
| ---------------- |-------:|-------:|-------------:|-------------:|
| raw-1            |   50.0 |   99.0 |            - |            - |
| unix-1-audit-off |  150.0 |  199.0 |        100.0 |        100.0 |

a gRPC call that signs nothing (health checks, one client, Unix socket): p50 105.0 µs, p99 110.0 µs
";
        assert!(text.ends_with(expected), "{text}");
    }

    #[test]
    fn markdown_columns_align() {
        let rows = vec![
            vec!["raw".to_owned(), "12345".to_owned()],
            vec!["tcp-audit-on".to_owned(), "7".to_owned()],
        ];
        let table = render_markdown(&["configuration", "sig/s"], &rows);
        let expected = "\
| configuration | sig/s |
| ------------- |------:|
| raw           | 12345 |
| tcp-audit-on  |     7 |
";
        assert_eq!(table, expected);
    }
}
