//! Key policies, callers and the audit log: the tables that only the file
//! sets, apart from `signing.default_key` and `audit.directory`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::builder::{Builder, Depth};
use super::raw::{RawAudit, RawCaller, RawKey};
use super::{DEFAULT_AUDIT_DIR, DEFAULT_KEY_NAME, KeyPolicy};
use crate::audit::AuditConfig;
use crate::caller::{CallerRule, KeyScope, RateLimit, Selector};
use crate::keys::algorithm::Algorithm;
use crate::keys::{KeyName, SaltSetting};

impl Builder<'_> {
    pub(super) fn checkpoint_key(
        &mut self,
        name: Option<String>,
        keys: &BTreeMap<KeyName, KeyPolicy>,
    ) -> Option<KeyName> {
        let name = self.file_value("audit.checkpoint_key", name)?;
        match KeyName::parse(&name) {
            Ok(key) if keys.contains_key(&key) => Some(key),
            Ok(_) if self.rejected(&format!("keys.{name}")) => None,
            _ => {
                self.problem(format!(
                    "audit.checkpoint_key: {name:?} is not a configured key name; add a \
                     [keys.{name}] table"
                ));
                None
            }
        }
    }

    pub(super) fn audit(&mut self, raw: RawAudit) -> Option<AuditConfig> {
        if !self
            .file_value("audit.enabled", raw.enabled)
            .unwrap_or(true)
        {
            return None;
        }

        let directory = self
            .pick_path("audit.directory", raw.directory)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_DIR));
        let resolve_links = self.depth == Depth::Files;
        if let Some(root) = super::files::kernel_file_system(&directory, resolve_links) {
            self.invalid(
                "audit.directory",
                format!(
                    "{} is on {root}, a kernel file system that cannot keep the audit files; \
                     choose a directory on persistent storage, such as {DEFAULT_AUDIT_DIR}",
                    directory.display()
                ),
            );
        } else if self.depth == Depth::Files
            && let Err(error) = super::files::check_writable_directory(&directory)
        {
            self.invalid("audit.directory", error);
        }

        let mut audit = AuditConfig::new(directory);
        if let Some(bytes) = self.file_value("audit.max_file_bytes", raw.max_file_bytes) {
            audit.max_file_bytes = bytes;
        }
        if let Some(text) = self.file_value("audit.append_timeout", raw.append_timeout)
            && let Some(timeout) =
                self.duration_at_least("audit.append_timeout", &text, Duration::from_millis(10))
        {
            audit.append_timeout = timeout;
            // Checkpoint signing must leave queued appends time to finish.
            audit.checkpoint_sign_timeout = timeout / 2;
        }
        if let Some(text) = self.file_value("audit.checkpoint_interval", raw.checkpoint_interval)
            && let Some(interval) =
                self.duration_at_least("audit.checkpoint_interval", &text, Duration::from_secs(1))
        {
            audit.checkpoint_interval = interval;
        }

        if let Err(error) = audit.validate() {
            self.problem(format!("audit: {error}"));
        }
        Some(audit)
    }

    pub(super) fn callers(
        &mut self,
        raw: Vec<RawCaller>,
        keys: &BTreeMap<KeyName, KeyPolicy>,
    ) -> Vec<CallerRule> {
        let mut rules: Vec<CallerRule> = Vec::new();
        for (index, caller) in raw.into_iter().enumerate() {
            let at = format!("callers[{index}]");
            if let Some(rule) = self.caller(&at, caller, keys) {
                if rules.iter().any(|r| r.name == rule.name) {
                    self.problem(format!("{at}.name: {:?} is used twice", rule.name));
                } else if rules.iter().any(|r| r.selector == rule.selector) {
                    self.problem(format!("{at}: another caller has the same identity"));
                } else {
                    rules.push(rule);
                }
            }
        }
        rules
    }

    fn caller(
        &mut self,
        at: &str,
        raw: RawCaller,
        keys: &BTreeMap<KeyName, KeyPolicy>,
    ) -> Option<CallerRule> {
        let name = match raw.name.as_deref().map(KeyName::parse) {
            Some(Ok(name)) => name.as_str().to_owned(),
            Some(Err(e)) => {
                self.problem(format!(
                    "{at}.name: {}",
                    e.replace("key name", "caller name")
                ));
                return None;
            }
            None => {
                if !self.rejected(&format!("{at}.name")) {
                    self.problem(format!(
                        "{at}.name is missing; name each caller for metrics"
                    ));
                }
                return None;
            }
        };
        let selector = match (raw.uid, raw.spiffe_id, raw.cn) {
            (Some(uid), None, None) => Selector::Uid(uid),
            (None, Some(id), None) if id.starts_with("spiffe://") && id.len() > 9 => {
                Selector::SpiffeId(id)
            }
            (None, Some(id), None) => {
                self.problem(format!(
                    "{at}.spiffe_id: {id:?} does not start with spiffe://"
                ));
                return None;
            }
            (None, None, Some(cn)) if !cn.is_empty() => Selector::CommonName(cn),
            _ if ["uid", "spiffe_id", "cn"]
                .iter()
                .any(|field| self.rejected(&format!("{at}.{field}"))) =>
            {
                return None;
            }
            _ => {
                self.problem(format!(
                    "{at}: give exactly one identity: uid (a Unix socket peer), spiffe_id or \
                     cn (a TLS client certificate)"
                ));
                return None;
            }
        };
        let scope = match raw.keys.as_deref() {
            None if self.rejected(&format!("{at}.keys")) => return None,
            None | Some([]) => {
                self.problem(format!(
                    "{at}.keys is missing; list the key names the caller may use, or [\"*\"]"
                ));
                return None;
            }
            Some([all]) if all == "*" => KeyScope::All,
            Some(names) => {
                let mut scope = std::collections::BTreeSet::new();
                for name in names {
                    match KeyName::parse(name) {
                        Ok(key) if keys.contains_key(&key) => {
                            scope.insert(key);
                        }
                        _ => self
                            .problem(format!("{at}.keys: {name:?} is not a configured key name")),
                    }
                }
                KeyScope::Names(scope)
            }
        };
        let burst = self.file_value(format!("{at}.burst"), raw.burst);
        let rate = match (raw.rate, burst) {
            (None, None) => None,
            (None, Some(_)) => {
                self.problem(format!("{at}.burst needs {at}.rate"));
                None
            }
            (Some(rate), burst) if rate.is_finite() && rate > 0.0 => Some(RateLimit {
                per_second: rate,
                // A burst of one second's worth, and at least one request.
                burst: burst.unwrap_or_else(|| rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32),
            }),
            (Some(rate), _) => {
                self.problem(format!(
                    "{at}.rate: {rate} is not a positive number of requests per second"
                ));
                None
            }
        };
        if rate.is_some_and(|r| r.burst == 0) {
            self.problem(format!("{at}.burst must be at least 1"));
        }
        Some(CallerRule {
            name,
            selector,
            keys: scope,
            rate,
        })
    }

    pub(super) fn keys(&mut self, raw: BTreeMap<String, RawKey>) -> BTreeMap<KeyName, KeyPolicy> {
        let mut keys = BTreeMap::new();
        for (name, raw_key) in raw {
            let key_name = match KeyName::parse(&name) {
                Ok(key_name) => key_name,
                Err(error) => {
                    self.problem(format!("keys.{name}: {error}"));
                    continue;
                }
            };
            let policy = self.key_policy(&name, raw_key);
            keys.insert(key_name, policy);
        }
        keys
    }

    fn key_policy(&mut self, name: &str, raw: RawKey) -> KeyPolicy {
        let mut policy = KeyPolicy::default();
        let field = |field: &str| format!("keys.{name}.{field}");
        if let Some(text) = self.file_value(field("algorithm"), raw.algorithm) {
            match Algorithm::parse(&text) {
                Ok(algorithm) => policy.algorithm = algorithm,
                Err(error) => self.problem(format!("keys.{name}.algorithm: {error}")),
            }
        }
        if let Some(bits) = self.file_value(field("bits"), raw.bits) {
            if matches!(bits, 2048 | 3072 | 4096) {
                policy.bits = bits;
            } else {
                self.problem(format!(
                    "keys.{name}.bits: {bits} is not 2048, 3072 or 4096"
                ));
            }
        }
        if let Some(value) = self.file_value(field("salt"), raw.salt) {
            match SaltSetting::from_toml(&value) {
                Ok(salt) => policy.salt = salt,
                Err(error) => self.problem(format!("keys.{name}.salt: {error}")),
            }
        }
        // Every supported modulus leaves room for this salt: the smallest,
        // RSA-2048, allows at most 222 bytes with SHA-256.
        let is_pss = policy.algorithm == Algorithm::RsaPssSha256;
        if let (true, SaltSetting::Bytes(len)) = (is_pss, policy.salt) {
            let max = SaltSetting::max_len(policy.bits);
            if len as usize > max {
                self.problem(format!(
                    "keys.{name}.salt: {len} bytes does not fit an RSA-{} key, whose maximum \
                     PSS salt with SHA-256 is {max}; use \"digest\" (32) or \"max\"",
                    policy.bits
                ));
            }
        }
        if let Some(text) = self.file_value(field("rotation_period"), raw.rotation_period) {
            let key = field("rotation_period");
            if let Some(d) = self.duration_at_least(&key, &text, Duration::from_secs(1)) {
                policy.rotation_period = d;
            }
        }
        if let Some(text) = self.file_value(field("prepublish"), raw.prepublish)
            && let Some(d) = self.duration(&field("prepublish"), &text)
        {
            policy.prepublish = d;
        }
        if policy.prepublish >= policy.rotation_period {
            self.problem(format!(
                "keys.{name}.prepublish must be shorter than keys.{name}.rotation_period, \
                 so that each version signs for a while before its successor is published"
            ));
        }
        if let Some(text) = self.file_value(field("verify_grace"), raw.verify_grace)
            && let Some(d) = self.duration(&field("verify_grace"), &text)
        {
            policy.verify_grace = d;
        }
        policy
    }

    pub(super) fn default_key(
        &mut self,
        file: Option<String>,
        keys: &BTreeMap<KeyName, KeyPolicy>,
    ) -> Option<KeyName> {
        let text = self
            .pick_text("signing.default_key", file)
            .unwrap_or_else(|| DEFAULT_KEY_NAME.into());
        let name = KeyName::parse(&text)
            .map_err(|error| self.invalid("signing.default_key", error))
            .ok()?;
        if !keys.contains_key(&name) {
            if self.rejected(&format!("keys.{text}")) {
                return None;
            }
            self.invalid(
                "signing.default_key",
                format!(
                    "{text:?} has no [keys.{text}] table; add one (an empty table takes every \
                     default)"
                ),
            );
            return None;
        }
        Some(name)
    }
}
