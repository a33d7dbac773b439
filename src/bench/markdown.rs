//! The Markdown rendering of a [`Report`]: the facts of the run, then one
//! table per key and its audit on/off ratios.

use std::fmt::Write as _;

use super::report::{Configuration, Report};

impl Report {
    /// Renders the facts of the run, then one Markdown table per key and
    /// its audit on/off ratios.
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
            "{} requests per configuration; {} sessions (raw threads and service pool); \
             {} gRPC clients, {}; warm-up: {}",
            settings.requests,
            settings.sessions,
            settings.clients,
            settings.channels,
            settings.warm_up
        );
        for key in &self.keys {
            out.push('\n');
            let _ = writeln!(
                out,
                "key {} ({}, {} bits, key ID {})\n",
                key.key_name, key.algorithm, key.bits, key.key_id
            );
            out.push_str(&key_table(&key.configurations));
            if !key.audit_ratios.is_empty() {
                out.push('\n');
                for ratio in &key.audit_ratios {
                    let _ = writeln!(
                        out,
                        "audit on/off throughput over {}: {:.2} ({:.0} sig/s on, {:.0} sig/s off)",
                        ratio.transport, ratio.on_to_off, ratio.on_per_second, ratio.off_per_second
                    );
                }
            }
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "\nwarning: {warning}");
        }
        out
    }
}

const HEADERS: [&str; 13] = [
    "configuration",
    "requests",
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
    use super::*;

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
