//! Measurements of one configuration: per-request latencies and errors,
//! latency percentiles, process CPU time and memory from `/proc`, and the
//! progress bar.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// How often the progress bar reads the request counter.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// The calls that one worker (a thread or a client task) made.
///
/// A call signs one digest, except a SignBatch call, which signs a batch.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency of each call that returned: one C_Sign, or one gRPC call
    /// that returned a response, whatever its items' results.
    pub latencies: Vec<Duration>,
    /// Calls made, whether they returned or failed.
    pub calls: usize,
    /// Signatures returned.
    pub signatures: usize,
    /// Digests that got no signature, counted by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Self-checks run after C_Sign, in the raw configuration that runs
    /// them.
    pub checks: usize,
    /// The total time of those self-checks.
    pub check_time: Duration,
}

impl Tally {
    /// Records a call for one digest that took `elapsed`, or failed with
    /// `error`.
    pub fn record(&mut self, elapsed: Duration, error: Option<String>) {
        match error {
            None => self.record_returned(elapsed, 1, []),
            Some(kind) => self.record_failed(kind, 1),
        }
    }

    /// Records a call that returned after `elapsed` with `signatures`
    /// signatures and one failed digest per item of `item_errors`.
    pub fn record_returned(
        &mut self,
        elapsed: Duration,
        signatures: usize,
        item_errors: impl IntoIterator<Item = String>,
    ) {
        self.calls += 1;
        self.latencies.push(elapsed);
        self.signatures += signatures;
        for kind in item_errors {
            *self.errors.entry(kind).or_default() += 1;
        }
    }

    /// Records a call that failed as a whole, so that none of its
    /// `digests` got a signature.
    pub fn record_failed(&mut self, kind: String, digests: u64) {
        self.calls += 1;
        *self.errors.entry(kind).or_default() += digests;
    }

    /// Records one self-check that took `elapsed`.
    pub fn record_check(&mut self, elapsed: Duration) {
        self.checks += 1;
        self.check_time += elapsed;
    }

    /// Adds another worker's calls to this one.
    pub fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.calls += other.calls;
        self.signatures += other.signatures;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.checks += other.checks;
        self.check_time += other.check_time;
    }

    /// Returns the number of digests that got no signature.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The timed part of one configuration's run.
#[derive(Debug)]
pub struct Timed {
    /// Wall-clock time from the start of the first request to the end of
    /// the last.
    pub elapsed: Duration,
    /// Every call, merged over the workers.
    pub tally: Tally,
    /// CPU time (user and system) that the bench process used meanwhile.
    pub bench_cpu: Duration,
    /// CPU time that the service process used meanwhile, for the service
    /// configurations.
    pub service_cpu: Option<Duration>,
}

/// The measurements of one service configuration: its requests, the
/// service's memory and its start-up time.
#[derive(Debug)]
pub struct ServiceRun {
    /// The timed requests.
    pub timed: Timed,
    /// The service process's memory right after the timed requests.
    pub memory: Memory,
    /// Time from spawning the service process to its first SERVING health
    /// response.
    pub startup: Duration,
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest request.
    pub max_us: f64,
}

impl Latency {
    /// Computes nearest-rank percentiles: the pN value is the smallest
    /// sample that at least N % of the samples do not exceed. All are zero
    /// when there are no samples.
    pub fn from_samples(samples: &[Duration]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        // Whole nanoseconds divided by 1000 print without binary noise.
        let micros = |percent: usize| nearest_rank(&sorted, percent).as_nanos() as f64 / 1000.0;
        Self {
            p50_us: micros(50),
            p90_us: micros(90),
            p99_us: micros(99),
            max_us: micros(100),
        }
    }
}

fn nearest_rank(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// Memory and thread figures of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Peak resident set size over the process's life (VmHWM), in KiB.
    pub vm_hwm_kib: u64,
    /// Current resident set size (VmRSS), in KiB.
    pub vm_rss_kib: u64,
    /// Number of threads.
    pub threads: u64,
}

/// Reads the memory figures of process `pid`.
pub fn process_memory(pid: u32) -> std::io::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/status lacks VmHWM, VmRSS or Threads"),
        )
    })
}

fn parse_status(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(Memory {
        vm_hwm_kib: field("VmHWM")?,
        vm_rss_kib: field("VmRSS")?,
        threads: field("Threads")?,
    })
}

/// Reads the CPU time (user plus system) that process `pid` has used.
pub fn process_cpu(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no utime and stime fields"),
        )
    })?;
    // /proc reports CPU time in clock ticks of USER_HZ per second.
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// Returns utime + stime, fields 14 and 15 of `/proc/PID/stat` (proc(5)).
/// Field 2, the command name, is in parentheses and may contain spaces,
/// so counting starts after its closing parenthesis, at field 3.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A progress bar on stderr that follows a request counter, drawn from a
/// thread of its own so that the measured workers never touch it. It is
/// drawn only when stderr is a terminal.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows `label` and the value of `claimed`, capped at `total`.
    pub fn start(label: String, total: usize, claimed: Arc<AtomicUsize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || draw(&label, total, &claimed, &stop))
        });
        Self { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A panic in the drawing thread affects only the bar.
            let _ = thread.join();
        }
    }
}

fn draw(label: &str, total: usize, claimed: &AtomicUsize, stop: &AtomicBool) {
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template("{msg:32} [{bar:30}] {pos:>8}/{len} {per_sec:>12}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_owned());
    while !stop.load(Ordering::Relaxed) {
        bar.set_position(claimed.load(Ordering::Relaxed).min(total) as u64);
        std::thread::sleep(PROGRESS_INTERVAL);
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_micros(v)).collect()
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let latency = Latency::from_samples(&micros(&samples));
        assert_eq!(latency.p50_us, 50.0);
        assert_eq!(latency.p90_us, 90.0);
        assert_eq!(latency.p99_us, 99.0);
        assert_eq!(latency.max_us, 100.0);

        let few = Latency::from_samples(&micros(&[10, 30, 20]));
        assert_eq!(few.p50_us, 20.0);
        assert_eq!(few.p90_us, 30.0);
        assert_eq!(Latency::from_samples(&[]), Latency::default());
    }

    #[test]
    fn status_fields_are_read() {
        let status = "Name:\thallmark\nVmHWM:\t   20480 kB\nVmRSS:\t   18432 kB\nThreads:\t7\n";
        assert_eq!(
            parse_status(status),
            Some(Memory {
                vm_hwm_kib: 20480,
                vm_rss_kib: 18432,
                threads: 7
            })
        );
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn stat_ticks_skip_the_command_name() {
        // The command name contains a space and a parenthesis.
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 25 17 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(stat), Some(42));
        assert_eq!(parse_stat_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let memory = process_memory(std::process::id()).expect("own status");
        assert!(memory.vm_rss_kib > 0);
        assert!(memory.vm_hwm_kib >= memory.vm_rss_kib);
        assert!(process_cpu(std::process::id()).is_ok());
    }

    #[test]
    fn tallies_merge() {
        let mut first = Tally::default();
        first.record(Duration::from_micros(5), None);
        first.record(Duration::ZERO, Some("UNAVAILABLE".into()));
        first.record_check(Duration::from_micros(30));
        let mut second = Tally::default();
        second.record(Duration::ZERO, Some("UNAVAILABLE".into()));
        second.record(Duration::from_micros(7), None);
        second.record_check(Duration::from_micros(50));
        first.merge(second);
        assert_eq!(first.latencies.len(), 2);
        assert_eq!(first.calls, 4);
        assert_eq!(first.signatures, 2);
        assert_eq!(first.errors.get("UNAVAILABLE"), Some(&2));
        assert_eq!(first.error_count(), 2);
        assert_eq!(first.checks, 2);
        assert_eq!(first.check_time, Duration::from_micros(80));
    }

    #[test]
    fn batch_calls_count_items() {
        let mut tally = Tally::default();
        tally.record_returned(
            Duration::from_micros(900),
            14,
            ["item INTERNAL".to_owned(), "item INTERNAL".to_owned()],
        );
        tally.record_failed("UNAVAILABLE".into(), 16);
        assert_eq!(tally.calls, 2);
        assert_eq!(tally.latencies, [Duration::from_micros(900)]);
        assert_eq!(tally.signatures, 14);
        assert_eq!(tally.errors.get("item INTERNAL"), Some(&2));
        assert_eq!(tally.errors.get("UNAVAILABLE"), Some(&16));
        assert_eq!(tally.error_count(), 18);
    }
}
