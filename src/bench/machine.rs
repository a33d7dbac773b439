//! Facts about the machine and the PKCS#11 module that a benchmark record
//! needs, read from `/proc` and the module itself.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// The machine and module that a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub cores: usize,
    /// The first `model name` in `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Whether `/proc/cpuinfo` lists the `avx512ifma` flag. OpenSSL 3 has
    /// RSA exponentiation code for CPUs with it (`ossl_rsaz_mod_exp_avx512_x2`),
    /// so RSA figures from machines with and without it differ.
    pub avx512ifma: bool,
    /// Total memory from `/proc/meminfo`, in KiB.
    pub memory_kib: Option<u64>,
    /// The kernel release.
    pub kernel: Option<String>,
    /// The 1-minute load average from `/proc/loadavg` when the run began.
    /// Other work on the machine shows here and lowers the figures.
    pub load_average_1m: Option<f64>,
    /// The PKCS#11 module file.
    pub pkcs11_module: String,
    /// The output of `softhsm2-util --version`, when the module is SoftHSM.
    pub softhsm_version: Option<String>,
}

impl Machine {
    /// Reads the facts. A fact that cannot be read is left out.
    pub fn describe(module: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let is_softhsm = module.to_string_lossy().to_lowercase().contains("softhsm");
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo_value(&cpuinfo, "model name"),
            avx512ifma: cpuinfo_value(&cpuinfo, "flags")
                .is_some_and(|flags| flags.split_whitespace().any(|f| f == "avx512ifma")),
            memory_kib: cpuinfo_value(&meminfo, "MemTotal")
                .and_then(|value| value.split_whitespace().next()?.parse().ok()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|text| text.trim().to_owned()),
            load_average_1m: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse().ok()),
            pkcs11_module: module.display().to_string(),
            softhsm_version: is_softhsm.then(softhsm_version).flatten(),
        }
    }
}

/// Returns the value of the first `name : value` line.
fn cpuinfo_value(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

fn softhsm_version() -> Option<String> {
    let output = Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !version.is_empty()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_lines_are_read() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx512f avx512ifma\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 9B14\n";
        assert_eq!(
            cpuinfo_value(text, "model name").as_deref(),
            Some("AMD EPYC 9B14")
        );
        assert_eq!(
            cpuinfo_value(text, "flags").as_deref(),
            Some("fpu avx512f avx512ifma")
        );
        assert_eq!(cpuinfo_value(text, "bogomips"), None);
        let meminfo = "MemTotal:       24605472 kB\nMemFree:  1 kB\n";
        assert_eq!(
            cpuinfo_value(meminfo, "MemTotal").as_deref(),
            Some("24605472 kB")
        );
    }
}
