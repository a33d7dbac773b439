//! Explanations for SoftHSM2 failing to initialize.
//!
//! SoftHSM fails `C_Initialize` with a bare `CKR_GENERAL_ERROR` when its
//! configuration file or token directory is missing or unreadable, and
//! logs the reason to syslog, where operators rarely look. These checks
//! repeat what SoftHSM checks, so that the error names the file to fix.

use std::path::{Path, PathBuf};

/// The configuration file SoftHSM reads when `SOFTHSM2_CONF` is unset.
const DEFAULT_CONF: &str = "/etc/softhsm/softhsm2.conf";

/// The reason SoftHSM cannot initialize.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Diagnosis {
    /// The problem, naming the file.
    pub(super) message: String,
    /// Whether the configuration file is at fault, rather than the token
    /// directory it names.
    pub(super) in_configuration: bool,
}

/// Returns whether `module` is SoftHSM, by its file name.
fn is_softhsm(module: &Path) -> bool {
    module
        .file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.to_ascii_lowercase().contains("softhsm"))
}

/// Returns the configuration file that SoftHSM reads, and where that path
/// comes from.
fn configuration_path() -> (PathBuf, &'static str) {
    match std::env::var_os("SOFTHSM2_CONF") {
        Some(path) => (
            PathBuf::from(path),
            "SOFTHSM2_CONF, set by hsm.module_env or the environment",
        ),
        None => (
            PathBuf::from(DEFAULT_CONF),
            "the default, as SOFTHSM2_CONF is unset",
        ),
    }
}

/// Returns SoftHSM's configuration file if `module` is SoftHSM and that
/// file has no `directories.tokendir` line. SoftHSM 2.6 then reads the
/// token directory compiled into it (`/var/lib/softhsm/tokens` on Debian)
/// without an error, so a missing token is the only symptom.
pub(super) fn unset_token_directory(module: &Path) -> Option<PathBuf> {
    if !is_softhsm(module) {
        return None;
    }
    let (conf, _) = configuration_path();
    let text = std::fs::read_to_string(&conf).ok()?;
    token_directory(&text).is_none().then_some(conf)
}

/// Returns why SoftHSM cannot initialize, if `module` is SoftHSM and a
/// reason can be found.
pub(super) fn diagnose(module: &Path) -> Option<Diagnosis> {
    if !is_softhsm(module) {
        return None;
    }
    let (conf, origin) = configuration_path();
    let text = match std::fs::read_to_string(&conf) {
        Ok(text) => text,
        Err(error) => {
            return Some(Diagnosis {
                message: format!(
                    "SoftHSM's configuration {} ({origin}) cannot be read: {error}",
                    conf.display()
                ),
                in_configuration: true,
            });
        }
    };
    let Some(directory) = token_directory(&text) else {
        return Some(Diagnosis {
            message: format!(
                "SoftHSM's configuration {} sets no directories.tokendir",
                conf.display()
            ),
            in_configuration: true,
        });
    };
    match std::fs::read_dir(&directory) {
        Ok(_) => None,
        Err(error) => Some(Diagnosis {
            message: format!(
                "SoftHSM's token directory {} (directories.tokendir in {}) cannot be read: {error}",
                directory.display(),
                conf.display()
            ),
            in_configuration: false,
        }),
    }
}

/// Returns the value of `directories.tokendir` in a SoftHSM configuration.
fn token_directory(conf: &str) -> Option<PathBuf> {
    conf.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .find(|(name, _)| name.trim() == "directories.tokendir")
        .map(|(_, value)| PathBuf::from(value.trim()))
        .filter(|path| !path.as_os_str().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_token_directory() {
        let conf = "# comment\ndirectories.tokendir = /var/lib/tokens \nlog.level = INFO\n";
        assert_eq!(
            token_directory(conf),
            Some(PathBuf::from("/var/lib/tokens"))
        );
        assert_eq!(token_directory("# directories.tokendir = /x\n"), None);
        assert_eq!(token_directory("directories.tokendir =\n"), None);
    }

    #[test]
    fn other_modules_get_no_diagnosis() {
        assert_eq!(diagnose(Path::new("/usr/lib/libnethsm.so")), None);
    }
}
