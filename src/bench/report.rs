//! The results of a run, as JSON and as a Markdown table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::machine::Machine;
use super::measure::{Latency, Memory, Timed};
use super::{Audit, Transport};

/// Everything one run measured, with what is needed to reproduce it.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The `hallmark` version that ran as bench and as service.
    pub hallmark_version: &'static str,
    /// `release` or `debug`: the build profile of that binary.
    pub build_profile: &'static str,
    /// When the run started, in RFC 3339.
    pub date: String,
    /// The command line of the run.
    pub command: String,
    /// The machine and PKCS#11 module.
    pub machine: Machine,
    /// The settings that apply to every key.
    pub settings: Settings,
    /// The results of each key.
    pub keys: Vec<KeyReport>,
    /// Problems that did not stop the run, such as a service process that
    /// exited with an error after its measurement.
    pub warnings: Vec<String>,
}

/// The settings that apply to every key.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// Sign requests in each configuration, not counting warm-up requests.
    pub requests: usize,
    /// Sessions: the raw threads, and the service's session pool.
    pub sessions: usize,
    /// Concurrent gRPC clients in each service configuration.
    pub clients: usize,
    /// The connections of the gRPC clients.
    pub channels: &'static str,
    /// Requests sent before timing starts, which are not counted.
    pub warm_up: &'static str,
}

/// The results of one key.
#[derive(Debug, Serialize)]
pub struct KeyReport {
    /// The configured key name.
    pub key_name: String,
    /// The key's signature algorithm.
    pub algorithm: &'static str,
    /// RSA modulus size, or the curve size.
    pub bits: u32,
    /// The active version's key ID.
    pub key_id: String,
    /// The raw configuration first, then each service configuration.
    pub configurations: Vec<Configuration>,
    /// Service throughput with the audit log on divided by the throughput
    /// with it off, per transport, when both were measured.
    pub audit_ratios: Vec<AuditRatio>,
}

/// The results of one configuration of one key.
#[derive(Debug, Serialize)]
pub struct Configuration {
    /// `raw`, or `TRANSPORT-audit-on` or `TRANSPORT-audit-off`.
    pub name: String,
    /// `tcp` or `unix` for a service configuration.
    pub transport: Option<&'static str>,
    /// Whether the service's audit log was on.
    pub audit: Option<bool>,
    /// Raw threads, or gRPC clients.
    pub workers: usize,
    /// Requests sent.
    pub requests: usize,
    /// Requests that returned a signature.
    pub ok: usize,
    /// Requests that failed.
    pub errors: u64,
    /// Failed requests by gRPC code or PKCS#11 error.
    pub error_kinds: BTreeMap<String, u64>,
    /// Wall-clock time of the timed requests.
    pub seconds: f64,
    /// Signatures per second: `ok / seconds`.
    pub throughput_per_second: f64,
    /// This throughput divided by the raw throughput of the same key.
    pub ratio_to_raw: f64,
    /// Latency of the successful requests, per C_Sign call for raw and
    /// per gRPC call, measured by the client, for the service.
    pub latency: Latency,
    /// CPU time per signature of the process that called C_Sign: the
    /// bench process for raw, the service process otherwise.
    pub signer_cpu_us_per_signature: f64,
    /// CPU time per signature of the bench process that ran the gRPC
    /// clients, for a service configuration.
    pub client_cpu_us_per_signature: Option<f64>,
    /// Memory of the service process at the end of its run.
    pub service_memory: Option<Memory>,
}

impl Configuration {
    /// Builds the raw configuration's results.
    pub fn raw(workers: usize, requests: usize, timed: &Timed) -> Self {
        let mut raw = Self::from_timed("raw".into(), workers, requests, timed, 0.0);
        raw.ratio_to_raw = 1.0;
        raw.signer_cpu_us_per_signature = per_signature(timed.bench_cpu, raw.ok);
        raw
    }

    /// Builds a service configuration's results.
    pub fn service(
        (transport, audit): (Transport, Audit),
        workers: usize,
        requests: usize,
        timed: &Timed,
        memory: Memory,
        raw_throughput: f64,
    ) -> Self {
        let name = format!("{}-audit-{}", transport.as_str(), audit.as_str());
        let mut service = Self::from_timed(name, workers, requests, timed, raw_throughput);
        service.transport = Some(transport.as_str());
        service.audit = Some(audit == Audit::On);
        service.signer_cpu_us_per_signature =
            per_signature(timed.service_cpu.unwrap_or_default(), service.ok);
        service.client_cpu_us_per_signature = Some(per_signature(timed.bench_cpu, service.ok));
        service.service_memory = Some(memory);
        service
    }

    fn from_timed(
        name: String,
        workers: usize,
        requests: usize,
        timed: &Timed,
        raw_throughput: f64,
    ) -> Self {
        let ok = timed.tally.latencies.len();
        let seconds = timed.elapsed.as_secs_f64();
        let throughput = if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        };
        Self {
            name,
            transport: None,
            audit: None,
            workers,
            requests,
            ok,
            errors: timed.tally.error_count(),
            error_kinds: timed.tally.errors.clone(),
            seconds,
            throughput_per_second: throughput,
            ratio_to_raw: ratio(throughput, raw_throughput),
            latency: Latency::from_samples(&timed.tally.latencies),
            signer_cpu_us_per_signature: 0.0,
            client_cpu_us_per_signature: None,
            service_memory: None,
        }
    }
}

/// Service throughput with the audit log on and off, on one transport.
#[derive(Debug, Serialize)]
pub struct AuditRatio {
    /// `tcp` or `unix`.
    pub transport: &'static str,
    /// Signatures per second with the audit log on.
    pub on_per_second: f64,
    /// Signatures per second with the audit log off.
    pub off_per_second: f64,
    /// `on_per_second / off_per_second`.
    pub on_to_off: f64,
}

impl AuditRatio {
    /// Pairs the audit-on and audit-off configurations of each transport.
    pub fn pair(configurations: &[Configuration]) -> Vec<Self> {
        let find = |transport: &str, audit: bool| {
            configurations
                .iter()
                .find(|c| c.transport == Some(transport) && c.audit == Some(audit))
                .map(|c| c.throughput_per_second)
        };
        [Transport::Tcp, Transport::Unix]
            .into_iter()
            .filter_map(|transport| {
                let name = transport.as_str();
                let (on, off) = (find(name, true)?, find(name, false)?);
                Some(Self {
                    transport: name,
                    on_per_second: on,
                    off_per_second: off,
                    on_to_off: ratio(on, off),
                })
            })
            .collect()
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

fn per_signature(cpu: std::time::Duration, signatures: usize) -> f64 {
    if signatures == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / signatures as f64
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::measure::Tally;

    fn timed(ok: u64, errors: u64, seconds: u64) -> Timed {
        let mut tally = Tally::default();
        for i in 0..ok {
            tally.record(Duration::from_micros(100 + i), None);
        }
        for _ in 0..errors {
            tally.record(Duration::ZERO, Some("UNAVAILABLE".into()));
        }
        Timed {
            elapsed: Duration::from_secs(seconds),
            tally,
            bench_cpu: Duration::from_millis(500),
            service_cpu: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn configurations_compute_rates_and_ratios() {
        let raw = Configuration::raw(2, 1000, &timed(1000, 0, 2));
        assert_eq!(raw.throughput_per_second, 500.0);
        assert_eq!(raw.ratio_to_raw, 1.0);
        assert_eq!(raw.signer_cpu_us_per_signature, 500.0);
        assert_eq!(raw.client_cpu_us_per_signature, None);

        let memory = Memory {
            vm_hwm_kib: 2048,
            vm_rss_kib: 1024,
            threads: 9,
        };
        let on = Configuration::service(
            (Transport::Tcp, Audit::On),
            4,
            1000,
            &timed(990, 10, 4),
            memory,
            raw.throughput_per_second,
        );
        assert_eq!(on.name, "tcp-audit-on");
        assert_eq!(on.ok, 990);
        assert_eq!(on.errors, 10);
        assert_eq!(on.throughput_per_second, 247.5);
        assert_eq!(on.ratio_to_raw, 0.495);
        assert_eq!(on.client_cpu_us_per_signature, Some(0.5e6 / 990.0));

        let off = Configuration::service(
            (Transport::Tcp, Audit::Off),
            4,
            1000,
            &timed(1000, 0, 2),
            memory,
            raw.throughput_per_second,
        );
        let ratios = AuditRatio::pair(&[raw, on, off]);
        assert_eq!(ratios.len(), 1);
        assert_eq!(ratios[0].transport, "tcp");
        assert_eq!(ratios[0].on_to_off, 0.495);
    }
}
