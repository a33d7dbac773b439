//! The results of a run, as JSON and as a Markdown table.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::Audit;
use super::machine::Machine;
use super::measure::{Latency, Memory, ServiceRun, Timed};
use super::raw::AfterSign;
use super::setup::{HEALTH_CHECK, Kind, Part, Rpc, ServiceSetup, Spec};
use crate::keys::KeyVersion;

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
    /// Digests signed in each throughput configuration, not counting
    /// warm-up requests.
    pub requests: usize,
    /// Digests signed in each single-client configuration.
    pub latency_requests: usize,
    /// Sessions: the raw threads, and the service's session pool.
    pub sessions: usize,
    /// Concurrent gRPC clients in each service throughput configuration.
    pub clients: usize,
    /// Digests per SignBatch request. The last request of a configuration
    /// may have fewer.
    pub batch_size: usize,
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
    /// Every configuration, in the order they ran: the throughput
    /// configurations, then the single-client ones.
    pub configurations: Vec<Configuration>,
    /// Service throughput with the audit log on divided by the throughput
    /// with it off, for each pair of configurations that differ only in
    /// the audit log.
    pub audit_ratios: Vec<AuditRatio>,
    /// The cost of the signature self-check, from `raw-checked`.
    pub self_check: Option<SelfCheckCost>,
    /// The latency that each single-client service configuration adds to
    /// `raw-1`.
    pub added_latency: Vec<AddedLatency>,
    /// The latency of a gRPC call that signs nothing, from
    /// `unix-1-health-check`: the part of the added latency that any unary
    /// call pays.
    pub call_floor: Option<CallFloor>,
    /// The start-up times of the key's service processes.
    pub startup: Option<Startup>,
}

impl KeyReport {
    /// Builds the report of key `key` from its configurations, and computes
    /// the ratios and summaries.
    pub fn new(key: &KeyVersion, mut configurations: Vec<Configuration>) -> Self {
        set_ratios_to_raw(&mut configurations);
        Self {
            key_name: key.name.to_string(),
            algorithm: key.algorithm.as_str(),
            bits: key.bits,
            key_id: key.key_id.clone(),
            audit_ratios: AuditRatio::pair(&configurations),
            self_check: SelfCheckCost::find(&configurations),
            added_latency: AddedLatency::list(&configurations),
            call_floor: CallFloor::find(&configurations),
            startup: Startup::summarize(&configurations),
            configurations,
        }
    }
}

/// The results of one configuration of one key.
#[derive(Debug, Serialize)]
pub struct Configuration {
    /// `raw`, `raw-checked` or `raw-1`, or a service configuration such as
    /// `tcp-audit-on`, `unix-batch-audit-off` or `unix-1-audit-on`.
    pub name: String,
    /// `throughput` for the configurations with many workers and
    /// `single-client` for those with one.
    pub part: &'static str,
    /// `tcp` or `unix` for a service configuration.
    pub transport: Option<&'static str>,
    /// Whether the service's audit log was on.
    pub audit: Option<bool>,
    /// `Sign` or `SignBatch`: the method that the clients of a service
    /// configuration called.
    pub rpc: Option<&'static str>,
    /// Raw threads, or gRPC clients.
    pub workers: usize,
    /// Digests to sign.
    pub requests: usize,
    /// Timed calls: C_Sign calls for raw, gRPC calls for the service.
    pub calls: usize,
    /// Digests per call: 1, or the batch size for SignBatch, whose last
    /// call may have fewer.
    pub signatures_per_call: usize,
    /// Digests that got a signature.
    pub ok: usize,
    /// Digests that got none: failed calls count each of their digests,
    /// and failed SignBatch items count one each.
    pub errors: u64,
    /// Those digests by gRPC code (`item CODE` for a SignBatch item) or
    /// PKCS#11 error.
    pub error_kinds: BTreeMap<String, u64>,
    /// Wall-clock time of the timed calls.
    pub seconds: f64,
    /// Signatures per second: `ok / seconds`.
    pub throughput_per_second: f64,
    /// This throughput divided by the throughput of `raw` for the same key.
    pub ratio_to_raw: f64,
    /// Latency of each call that returned: one C_Sign for raw (with the
    /// self-check for `raw-checked`), and one gRPC call, measured by the
    /// client, for the service. A SignBatch call signs many digests.
    pub latency: Latency,
    /// CPU time per signature of the process that called C_Sign: the
    /// bench process for raw, the service process otherwise.
    pub signer_cpu_us_per_signature: f64,
    /// CPU time per signature of the bench process that ran the gRPC
    /// clients, for a service configuration.
    pub client_cpu_us_per_signature: Option<f64>,
    /// Mean time of one self-check, measured around the check alone, for
    /// `raw-checked`.
    pub self_check_us_per_signature: Option<f64>,
    /// Time from spawning the service process to its first SERVING health
    /// response, in milliseconds.
    pub startup_ms: Option<f64>,
    /// Memory of the service process at the end of its run.
    pub service_memory: Option<Memory>,
}

impl Configuration {
    /// Builds the results of a raw configuration. The ratio to raw is set
    /// later, by [`KeyReport::new`].
    pub fn raw(spec: &Spec, timed: &Timed) -> Self {
        let mut raw = Self::from_timed(spec, 1, timed);
        raw.signer_cpu_us_per_signature = per_signature(timed.bench_cpu, raw.ok);
        if spec.kind == Kind::Raw(AfterSign::SelfCheck) {
            raw.self_check_us_per_signature =
                Some(per_signature(timed.tally.check_time, timed.tally.checks));
        }
        raw
    }

    /// Builds the results of a service configuration that ran with
    /// `setup`, with SignBatch requests of `batch_size` digests if any. The
    /// ratio to raw is set later, by [`KeyReport::new`].
    pub fn service(spec: &Spec, setup: ServiceSetup, batch_size: usize, run: &ServiceRun) -> Self {
        let per_call = match setup.rpc {
            Rpc::Sign | Rpc::HealthCheck => 1,
            // A run with fewer digests than a batch sends them in one call.
            Rpc::SignBatch => batch_size.min(spec.requests).max(1),
        };
        let timed = &run.timed;
        let mut service = Self::from_timed(spec, per_call, timed);
        service.transport = Some(setup.transport.as_str());
        service.audit = Some(setup.audit == Audit::On);
        service.rpc = Some(setup.rpc.as_str());
        service.signer_cpu_us_per_signature =
            per_signature(timed.service_cpu.unwrap_or_default(), service.ok);
        service.client_cpu_us_per_signature = Some(per_signature(timed.bench_cpu, service.ok));
        // Whole nanoseconds divided by 10^6 print without binary noise.
        service.startup_ms = Some(run.startup.as_nanos() as f64 / 1e6);
        service.service_memory = Some(run.memory);
        service
    }

    fn from_timed(spec: &Spec, signatures_per_call: usize, timed: &Timed) -> Self {
        let ok = timed.tally.signatures;
        let seconds = timed.elapsed.as_secs_f64();
        let throughput = if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        };
        Self {
            name: spec.name.clone(),
            part: spec.part.as_str(),
            transport: None,
            audit: None,
            rpc: None,
            workers: spec.workers,
            requests: spec.requests,
            calls: timed.tally.calls,
            signatures_per_call,
            ok,
            errors: timed.tally.error_count(),
            error_kinds: timed.tally.errors.clone(),
            seconds,
            throughput_per_second: throughput,
            ratio_to_raw: 0.0,
            latency: Latency::from_samples(&timed.tally.latencies),
            signer_cpu_us_per_signature: 0.0,
            client_cpu_us_per_signature: None,
            self_check_us_per_signature: None,
            startup_ms: None,
            service_memory: None,
        }
    }
}

/// The name of the configuration that every ratio refers to.
const RAW: &str = "raw";

/// The name of the single-client configuration without the service.
pub(super) const RAW_SINGLE: &str = "raw-1";

/// The name of the raw configuration that runs the self-check.
const RAW_CHECKED: &str = "raw-checked";

/// Sets each configuration's ratio to the throughput of `raw`.
fn set_ratios_to_raw(configurations: &mut [Configuration]) {
    let raw = throughput_of(configurations, RAW).unwrap_or(0.0);
    for configuration in configurations {
        configuration.ratio_to_raw = ratio(configuration.throughput_per_second, raw);
    }
}

fn find<'a>(configurations: &'a [Configuration], name: &str) -> Option<&'a Configuration> {
    configurations.iter().find(|c| c.name == name)
}

fn throughput_of(configurations: &[Configuration], name: &str) -> Option<f64> {
    find(configurations, name).map(|c| c.throughput_per_second)
}

/// Service throughput with the audit log on and off, in two configurations
/// that differ only in the audit log.
#[derive(Debug, Serialize)]
pub struct AuditRatio {
    /// `tcp` or `unix`.
    pub transport: &'static str,
    /// The configuration with the audit log on, such as `tcp-batch-audit-on`.
    pub on: String,
    /// The configuration with the audit log off.
    pub off: String,
    /// Signatures per second with the audit log on.
    pub on_per_second: f64,
    /// Signatures per second with the audit log off.
    pub off_per_second: f64,
    /// `on_per_second / off_per_second`.
    pub on_to_off: f64,
}

impl AuditRatio {
    /// Pairs each `NAME-audit-on` configuration with `NAME-audit-off`.
    pub fn pair(configurations: &[Configuration]) -> Vec<Self> {
        configurations
            .iter()
            .filter_map(|on| {
                let base = on.name.strip_suffix("-audit-on")?;
                let off = find(configurations, &format!("{base}-audit-off"))?;
                Some(Self {
                    transport: on.transport?,
                    on: on.name.clone(),
                    off: off.name.clone(),
                    on_per_second: on.throughput_per_second,
                    off_per_second: off.throughput_per_second,
                    on_to_off: ratio(on.throughput_per_second, off.throughput_per_second),
                })
            })
            .collect()
    }

    /// Returns the name that the two configurations share, such as
    /// `tcp-batch`.
    pub fn base(&self) -> &str {
        self.on.strip_suffix("-audit-on").unwrap_or(&self.on)
    }
}

/// The cost of the service's signature self-check, from the raw
/// configurations with and without it.
#[derive(Debug, Serialize)]
pub struct SelfCheckCost {
    /// Mean time of one self-check, measured around the check alone.
    pub mean_us_per_signature: f64,
    /// Signatures per second of `raw-checked`.
    pub checked_per_second: f64,
    /// Signatures per second of `raw`.
    pub raw_per_second: f64,
    /// `checked_per_second / raw_per_second`: the share of raw throughput
    /// that remains with the check.
    pub checked_to_raw: f64,
}

impl SelfCheckCost {
    /// Reads the cost from `raw` and `raw-checked`, when both ran.
    pub fn find(configurations: &[Configuration]) -> Option<Self> {
        let checked = find(configurations, RAW_CHECKED)?;
        let raw = throughput_of(configurations, RAW)?;
        Some(Self {
            mean_us_per_signature: checked.self_check_us_per_signature?,
            checked_per_second: checked.throughput_per_second,
            raw_per_second: raw,
            checked_to_raw: ratio(checked.throughput_per_second, raw),
        })
    }
}

/// The latency that a single-client service configuration adds to a raw
/// C_Sign on one session (`raw-1`).
#[derive(Debug, Serialize)]
pub struct AddedLatency {
    /// The service configuration, such as `unix-1-audit-off`.
    pub configuration: String,
    /// Its median latency.
    pub p50_us: f64,
    /// Its 99th percentile.
    pub p99_us: f64,
    /// `p50_us` minus the median of `raw-1`.
    pub added_p50_us: f64,
    /// `p99_us` minus the 99th percentile of `raw-1`.
    pub added_p99_us: f64,
}

impl AddedLatency {
    /// Compares each single-client service configuration with `raw-1`.
    pub fn list(configurations: &[Configuration]) -> Vec<Self> {
        let Some(raw) = find(configurations, RAW_SINGLE) else {
            return Vec::new();
        };
        configurations
            .iter()
            .filter(|c| c.part == Part::SingleClient.as_str() && c.rpc == Some(Rpc::Sign.as_str()))
            .map(|c| Self {
                configuration: c.name.clone(),
                p50_us: c.latency.p50_us,
                p99_us: c.latency.p99_us,
                added_p50_us: difference_us(c.latency.p50_us, raw.latency.p50_us),
                added_p99_us: difference_us(c.latency.p99_us, raw.latency.p99_us),
            })
            .collect()
    }
}

/// The latency of one client's health checks over the Unix socket.
#[derive(Debug, Serialize)]
pub struct CallFloor {
    /// The median latency.
    pub p50_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
}

impl CallFloor {
    /// Reads the health-check configuration, if it ran.
    pub fn find(configurations: &[Configuration]) -> Option<Self> {
        find(configurations, HEALTH_CHECK).map(|c| Self {
            p50_us: c.latency.p50_us,
            p99_us: c.latency.p99_us,
        })
    }
}

/// Returns `a - b` for times in whole nanoseconds given in microseconds,
/// rounded to whole nanoseconds so that it prints without binary noise.
fn difference_us(a: f64, b: f64) -> f64 {
    ((a - b) * 1000.0).round() / 1000.0
}

/// The start-up times of one key's service processes, from spawning each
/// to its first SERVING health response.
#[derive(Debug, Serialize)]
pub struct Startup {
    /// Service processes started.
    pub processes: usize,
    /// The shortest start-up time, in milliseconds.
    pub min_ms: f64,
    /// The median, by nearest rank, in milliseconds.
    pub median_ms: f64,
}

impl Startup {
    /// Summarizes the start-up times of the service configurations.
    pub fn summarize(configurations: &[Configuration]) -> Option<Self> {
        let mut times: Vec<f64> = configurations.iter().filter_map(|c| c.startup_ms).collect();
        times.sort_by(f64::total_cmp);
        let min_ms = *times.first()?;
        // The nearest rank of the 50th percentile, as for latencies.
        let median_ms = times[times.len().div_ceil(2) - 1];
        Some(Self {
            processes: times.len(),
            min_ms,
            median_ms,
        })
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Returns `time` per signature in microseconds.
fn per_signature(time: Duration, signatures: usize) -> f64 {
    if signatures == 0 {
        0.0
    } else {
        time.as_secs_f64() * 1e6 / signatures as f64
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::measure::Tally;
    use crate::bench::setup::{configurations, test_plan};

    /// Returns the configuration `name` of a run with `--audit both`, two
    /// sessions and the settings of [`test_plan`].
    pub fn spec(name: &str) -> Spec {
        configurations(&test_plan(vec![Audit::On, Audit::Off]), 2)
            .into_iter()
            .find(|spec| spec.name == name)
            .unwrap_or_else(|| panic!("no configuration {name}"))
    }

    fn setup(spec: &Spec) -> ServiceSetup {
        match spec.kind {
            Kind::Service(setup) => setup,
            Kind::Raw(_) => panic!("{} is not a service configuration", spec.name),
        }
    }

    /// Returns one Sign call per latency, in microseconds, taking `seconds`.
    pub fn timed_latencies(latencies_us: &[u64], seconds: u64) -> Timed {
        let mut tally = Tally::default();
        for &us in latencies_us {
            tally.record(Duration::from_micros(us), None);
        }
        Timed {
            elapsed: Duration::from_secs(seconds),
            tally,
            bench_cpu: Duration::from_millis(500),
            service_cpu: Some(Duration::from_secs(1)),
        }
    }

    fn timed(ok: u64, errors: u64, seconds: u64) -> Timed {
        let latencies: Vec<u64> = (0..ok).map(|i| 100 + i).collect();
        let mut timed = timed_latencies(&latencies, seconds);
        for _ in 0..errors {
            timed
                .tally
                .record(Duration::ZERO, Some("UNAVAILABLE".into()));
        }
        timed
    }

    /// Builds service configuration `name` from `timed`, with a start-up
    /// time of `startup_ms`.
    pub fn service(name: &str, timed: Timed, startup_ms: u64) -> Configuration {
        let spec = spec(name);
        let run = ServiceRun {
            timed,
            memory: Memory {
                vm_hwm_kib: 2048,
                vm_rss_kib: 1024,
                threads: 9,
            },
            startup: Duration::from_millis(startup_ms),
        };
        Configuration::service(&spec, setup(&spec), 64, &run)
    }

    #[test]
    fn configurations_compute_rates_and_ratios() {
        let raw = Configuration::raw(&spec("raw"), &timed(1000, 0, 2));
        assert_eq!(raw.part, "throughput");
        assert_eq!((raw.workers, raw.requests, raw.calls), (2, 1000, 1000));
        assert_eq!(raw.signatures_per_call, 1);
        assert_eq!(raw.throughput_per_second, 500.0);
        assert_eq!(raw.signer_cpu_us_per_signature, 500.0);
        assert_eq!(raw.client_cpu_us_per_signature, None);
        assert_eq!(raw.self_check_us_per_signature, None);
        assert_eq!(raw.startup_ms, None);

        let on = service("tcp-audit-on", timed(990, 10, 4), 120);
        assert_eq!(on.name, "tcp-audit-on");
        assert_eq!(on.transport, Some("tcp"));
        assert_eq!(on.audit, Some(true));
        assert_eq!(on.rpc, Some("Sign"));
        assert_eq!(on.workers, 4);
        assert_eq!(on.ok, 990);
        assert_eq!(on.errors, 10);
        assert_eq!(on.calls, 1000);
        assert_eq!(on.throughput_per_second, 247.5);
        assert_eq!(on.client_cpu_us_per_signature, Some(0.5e6 / 990.0));
        assert_eq!(on.startup_ms, Some(120.0));

        let mut batch_timed = timed(0, 0, 2);
        batch_timed
            .tally
            .record_returned(Duration::from_millis(3), 64, []);
        batch_timed.tally.record_returned(
            Duration::from_millis(5),
            63,
            ["item INTERNAL".to_owned()],
        );
        batch_timed.tally.record_failed("UNAVAILABLE".into(), 64);
        let batch = service("unix-batch-audit-off", batch_timed, 90);
        assert_eq!(batch.rpc, Some("SignBatch"));
        assert_eq!(batch.signatures_per_call, 64);
        assert_eq!((batch.calls, batch.ok, batch.errors), (3, 127, 65));
        assert_eq!(batch.error_kinds.get("item INTERNAL"), Some(&1));
        assert_eq!(batch.error_kinds.get("UNAVAILABLE"), Some(&64));
        assert_eq!(batch.throughput_per_second, 63.5);
        assert_eq!(batch.latency.p50_us, 3000.0);
        assert_eq!(batch.latency.max_us, 5000.0);

        let mut few = spec("unix-batch-audit-off");
        few.requests = 5;
        let run = ServiceRun {
            timed: timed(5, 0, 1),
            memory: Memory {
                vm_hwm_kib: 2048,
                vm_rss_kib: 1024,
                threads: 9,
            },
            startup: Duration::from_millis(10),
        };
        let short = Configuration::service(&few, setup(&few), 64, &run);
        assert_eq!(short.signatures_per_call, 5);

        let mut configurations = vec![raw, on, batch];
        set_ratios_to_raw(&mut configurations);
        let ratios: Vec<f64> = configurations.iter().map(|c| c.ratio_to_raw).collect();
        assert_eq!(ratios, [1.0, 0.495, 0.127]);
    }

    #[test]
    fn audit_ratios_pair_matching_names() {
        let configurations = [
            Configuration::raw(&spec("raw"), &timed(100, 0, 1)),
            service("tcp-audit-on", timed(90, 0, 1), 100),
            service("tcp-audit-off", timed(100, 0, 1), 100),
            service("unix-audit-on", timed(50, 0, 1), 100),
            service("tcp-batch-audit-on", timed(80, 0, 1), 100),
            service("tcp-batch-audit-off", timed(100, 0, 1), 100),
            service("unix-1-audit-off", timed(40, 0, 1), 100),
            service("unix-1-audit-on", timed(20, 0, 1), 100),
        ];
        let ratios = AuditRatio::pair(&configurations);
        let bases: Vec<&str> = ratios.iter().map(AuditRatio::base).collect();
        assert_eq!(bases, ["tcp", "tcp-batch", "unix-1"]);
        assert_eq!(ratios[1].on, "tcp-batch-audit-on");
        assert_eq!(ratios[1].off, "tcp-batch-audit-off");
        assert_eq!(ratios[1].transport, "tcp");
        assert_eq!(ratios[1].on_to_off, 0.8);
        assert_eq!(ratios[2].transport, "unix");
        assert_eq!(ratios[2].on_to_off, 0.5);
    }

    #[test]
    fn self_check_cost_compares_checked_with_raw() {
        let raw = Configuration::raw(&spec("raw"), &timed(1000, 0, 2));
        let mut checked_timed = timed(1000, 0, 2);
        checked_timed.elapsed = Duration::from_millis(2500);
        for _ in 0..1000 {
            checked_timed.tally.record_check(Duration::from_micros(40));
        }
        let checked = Configuration::raw(&spec("raw-checked"), &checked_timed);
        assert_eq!(checked.self_check_us_per_signature, Some(40.0));
        assert!(SelfCheckCost::find(std::slice::from_ref(&raw)).is_none());

        let cost = SelfCheckCost::find(&[raw, checked]).expect("both ran");
        assert_eq!(cost.mean_us_per_signature, 40.0);
        assert_eq!(cost.checked_per_second, 400.0);
        assert_eq!(cost.raw_per_second, 500.0);
        assert_eq!(cost.checked_to_raw, 0.8);
    }

    #[test]
    fn added_latency_subtracts_raw_single() {
        let raw: Vec<u64> = (1..=100).collect();
        let served: Vec<u64> = (101..=200).collect();
        let configurations = [
            Configuration::raw(&spec("raw"), &timed_latencies(&served, 1)),
            service("tcp-audit-off", timed_latencies(&served, 1), 100),
            Configuration::raw(&spec("raw-1"), &timed_latencies(&raw, 1)),
            service("unix-1-audit-off", timed_latencies(&served, 1), 100),
        ];
        let added = AddedLatency::list(&configurations);
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].configuration, "unix-1-audit-off");
        assert_eq!((added[0].p50_us, added[0].p99_us), (150.0, 199.0));
        assert_eq!(
            (added[0].added_p50_us, added[0].added_p99_us),
            (100.0, 100.0)
        );
        assert!(AddedLatency::list(&configurations[..2]).is_empty());
    }

    #[test]
    fn startup_takes_min_and_median() {
        let mut configurations = vec![
            Configuration::raw(&spec("raw"), &timed(10, 0, 1)),
            service("tcp-audit-on", timed(10, 0, 1), 120),
            service("tcp-audit-off", timed(10, 0, 1), 80),
            service("unix-audit-on", timed(10, 0, 1), 100),
        ];
        let startup = Startup::summarize(&configurations).expect("services ran");
        assert_eq!(startup.processes, 3);
        assert_eq!((startup.min_ms, startup.median_ms), (80.0, 100.0));

        configurations.push(service("unix-audit-off", timed(10, 0, 1), 90));
        let startup = Startup::summarize(&configurations).expect("services ran");
        assert_eq!((startup.min_ms, startup.median_ms), (80.0, 90.0));
        assert!(Startup::summarize(&configurations[..1]).is_none());
    }
}
