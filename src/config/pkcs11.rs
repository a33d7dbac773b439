//! The `[hsm]` table: the module, the token and the PIN, from separate keys
//! or from one `hsm.uri`, but never both for the same value.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::builder::{Builder, Depth, parse_count};
use super::pkcs11_uri::Pkcs11Uri;
use super::raw::RawHsm;
use super::sources::Source;
use super::{
    ENV_MODULE, ENV_PIN, ENV_PIN_FILE, HsmConfig, MAX_SESSIONS, NotUnicode, PinSource,
    TokenSelector, describe_file_type, not_unicode_problem,
};
use crate::secret::Pin;

/// The parts of `hsm.uri` that `[hsm]` keys may also set: the key, the URI
/// attribute, and the subject of both for conflict messages.
const URI_OVERLAPS: &[(&str, &str, &str)] = &[
    ("hsm.module", "module-path", "the module"),
    ("hsm.token_label", "token", "the token label"),
    ("hsm.token_serial", "serial", "the token serial"),
    ("hsm.pin_file", "pin-source", "the PIN file"),
];

/// Sizes in bytes of the CK_TOKEN_INFO fields that a selector matches, as
/// the PKCS#11 headers declare them. A longer value can match no token.
const TOKEN_FIELD_BYTES: &[(&str, &str, usize)] = &[
    ("hsm.token_label", "a token label", 32),
    ("hsm.token_serial", "a token serial number", 16),
    ("the manufacturer in hsm.uri", "a token manufacturer ID", 32),
    ("the model in hsm.uri", "a token model", 16),
];

/// The values of `[hsm]` after layering, before they are combined with
/// `hsm.uri`.
struct Separate {
    module: Option<PathBuf>,
    token_label: Option<String>,
    token_serial: Option<String>,
    pin_file: Option<PathBuf>,
}

impl Separate {
    fn is_set(&self, key: &str) -> bool {
        match key {
            "hsm.module" => self.module.is_some(),
            "hsm.token_label" => self.token_label.is_some(),
            "hsm.token_serial" => self.token_serial.is_some(),
            "hsm.pin_file" => self.pin_file.is_some(),
            _ => false,
        }
    }
}

/// The module settings that `hallmark tokens list` needs, read without
/// checking the rest of the file.
pub(super) struct ModuleOnly {
    pub(super) module: Option<PathBuf>,
    pub(super) module_env: BTreeMap<String, String>,
}

impl Builder<'_> {
    pub(super) fn hsm(&mut self, raw: RawHsm) -> Option<HsmConfig> {
        let (uri_text, uri) = self.uri(raw.uri);
        let separate = Separate {
            module: self.pick_path("hsm.module", raw.module),
            token_label: self.pick_text("hsm.token_label", raw.token_label),
            token_serial: self.pick_text("hsm.token_serial", raw.token_serial),
            pin_file: self.pick_path("hsm.pin_file", raw.pin_file),
        };
        // Without a readable URI the missing values may be in it, so only
        // the URI is reported.
        let uri_invalid = (uri_text.is_some() && uri.is_none()) || self.rejected("hsm.uri");
        let uri = uri.unwrap_or_default();
        self.check_overlaps(&uri, &separate);

        // `pick_path` has resolved the separate key's path already.
        let base_dir = self.base_dir;
        let uri_module = uri.module_path.as_ref().map(|path| base_dir.join(path));
        let module = self.combine("hsm.module", uri_module, separate.module);
        if module.is_none() && !uri_invalid && !self.rejected("hsm.module") {
            self.problem(format!(
                "hsm.module is missing: set it to the PKCS#11 library path, for example \
                 /usr/lib/softhsm/libsofthsm2.so (or set {ENV_MODULE}, or module-path in \
                 hsm.uri)"
            ));
        }
        if let (Depth::Files, Some(path)) = (self.depth, &module)
            && let Err(error) = super::files::check_readable(path)
        {
            self.invalid("hsm.module", error);
        }

        let token = TokenSelector {
            label: self.combine("hsm.token_label", uri.token.clone(), separate.token_label),
            serial: self.combine(
                "hsm.token_serial",
                uri.serial.clone(),
                separate.token_serial,
            ),
            manufacturer: uri.manufacturer.clone(),
            model: uri.model.clone(),
        };
        self.check_token_field_sizes(&token);
        let selector_rejected =
            self.rejected("hsm.token_label") || self.rejected("hsm.token_serial");
        if token.label.is_none() && token.serial.is_none() && !uri_invalid && !selector_rejected {
            self.problem(
                "hsm: set token_label or token_serial to choose the token (or token= or \
                 serial= in hsm.uri)",
            );
        }

        let sessions = self
            .pick("hsm.sessions", raw.sessions, parse_count)
            .unwrap_or_else(default_sessions);
        if !(1..=MAX_SESSIONS).contains(&sessions) {
            self.invalid(
                "hsm.sessions",
                format!("{sessions} is outside 1..={MAX_SESSIONS}"),
            );
        }

        let pin_file = self.combine("hsm.pin_file", uri.pin_file.clone(), separate.pin_file);
        let pin = self.pin(pin_file, uri_invalid);
        let module_env = raw.module_env;
        self.check_module_env(&module_env);
        let (pin, pin_source) = pin?;
        Some(HsmConfig {
            module: module?,
            token,
            pin,
            pin_source,
            sessions,
            module_env,
            uri: uri_text,
        })
    }

    /// Rejects selector values longer than their CK_TOKEN_INFO field.
    fn check_token_field_sizes(&mut self, token: &TokenSelector) {
        let values = [
            &token.label,
            &token.serial,
            &token.manufacturer,
            &token.model,
        ];
        for (&(key, field, max), value) in TOKEN_FIELD_BYTES.iter().zip(values) {
            let Some(value) = value else { continue };
            if value.len() > max {
                let label = if key.starts_with("hsm.") {
                    self.sources.label(key)
                } else {
                    key.to_owned()
                };
                self.problem(format!(
                    "{label}: {value:?} is {} bytes long, but {field} has at most {max} \
                     bytes, so no token can match; `hallmark tokens list` shows the tokens",
                    value.len()
                ));
            }
        }
    }

    /// Reads only the module path, for listing the tokens of a module whose
    /// token is not chosen yet.
    pub(super) fn module_only(&mut self, raw: RawHsm) -> ModuleOnly {
        let (_, uri) = self.uri(raw.uri);
        let separate = self.pick_path("hsm.module", raw.module);
        let uri_module = uri.and_then(|uri| uri.module_path);
        if uri_module.is_some() && separate.is_some() {
            self.overlap("hsm.module", "module-path", "the module");
        }
        let module = uri_module.map(|path| self.base_dir.join(path)).or(separate);
        self.check_module_env(&raw.module_env);
        ModuleOnly {
            module,
            module_env: raw.module_env,
        }
    }

    /// Checks the variables of `hsm.module_env`, which are set in the
    /// process before the module loads, and records their source.
    fn check_module_env(&mut self, module_env: &BTreeMap<String, String>) {
        for (name, value) in module_env {
            let key = format!("hsm.module_env.{name}");
            self.sources.set(key.clone(), Source::File);
            // The operating system refuses such a variable, and setting it
            // would fail after the configuration was accepted.
            if name.is_empty() || name.contains(['=', '\0']) {
                self.invalid(
                    "hsm.module_env",
                    format!(
                        "{name:?} is not an environment variable name: it must not be empty \
                         or contain \"=\" or a NUL character"
                    ),
                );
            } else if value.contains('\0') {
                self.invalid(
                    &key,
                    "the value contains a NUL character, which an environment variable \
                     cannot hold",
                );
            } else {
                // An empty or padded value is rejected, as every other
                // string value is, rather than passed to the module.
                self.checked_file_text(&key, value);
            }
        }
    }

    /// Reads `hsm.uri` from its layers. Returns the text and, when it is
    /// valid, the parsed URI.
    fn uri(&mut self, file: Option<String>) -> (Option<String>, Option<Pkcs11Uri>) {
        let Some(text) = self.pick_text("hsm.uri", file) else {
            return (None, None);
        };
        let parsed = Pkcs11Uri::parse(&text)
            .map_err(|error| self.invalid("hsm.uri", error))
            .ok();
        (Some(text), parsed)
    }

    fn check_overlaps(&mut self, uri: &Pkcs11Uri, separate: &Separate) {
        for &(key, attribute, subject) in URI_OVERLAPS {
            let in_uri = match attribute {
                "module-path" => uri.module_path.is_some(),
                "token" => uri.token.is_some(),
                "serial" => uri.serial.is_some(),
                _ => uri.pin_file.is_some(),
            };
            if in_uri && separate.is_set(key) {
                self.overlap(key, attribute, subject);
            }
        }
    }

    fn overlap(&mut self, key: &str, attribute: &str, subject: &str) {
        let uri_label = self.sources.label("hsm.uri");
        let key_label = self.sources.label(key);
        self.problem(format!(
            "{uri_label} sets {subject} with {attribute}=, and {key_label} sets it too; remove \
             one of them"
        ));
    }

    /// Returns the value from `hsm.uri` if it has one, else the separate
    /// key's, and records a URI value's source.
    fn combine<T>(
        &mut self,
        key: &'static str,
        from_uri: Option<T>,
        separate: Option<T>,
    ) -> Option<T> {
        if from_uri.is_some() {
            self.sources.set(key, Source::Uri);
            return from_uri;
        }
        separate
    }

    /// Reads the PIN: `HALLMARK_PIN` if set, else the PIN file.
    fn pin(&mut self, file: Option<PathBuf>, uri_invalid: bool) -> Option<(Pin, PinSource)> {
        match self.env.var(ENV_PIN) {
            Ok(Some(value)) => {
                let pin = Pin::new(value);
                if pin.is_empty() {
                    self.problem(format!(
                        "{ENV_PIN}: the PIN is empty; set the user PIN, or unset {ENV_PIN} to \
                         read the PIN from a file"
                    ));
                    return None;
                }
                return Some((pin, PinSource::Environment));
            }
            Ok(None) => {}
            // The PIN file does not replace a PIN that cannot be read,
            // because the operator chose this one.
            Err(NotUnicode) => {
                self.problem(format!("{ENV_PIN}: {}", not_unicode_problem(ENV_PIN)));
                return None;
            }
        }
        let Some(path) = file else {
            if !uri_invalid && !self.rejected("hsm.pin_file") {
                self.problem(format!(
                    "hsm.pin_file is missing: point it at a file that contains the user PIN \
                     (or set {ENV_PIN_FILE} or {ENV_PIN}, or pin-source in hsm.uri)"
                ));
            }
            return None;
        };
        let source = match self.sources.get("hsm.pin_file") {
            Source::Env(_) => PinSource::EnvironmentFile(path.clone()),
            Source::Flag(_) => PinSource::FlagFile(path.clone()),
            Source::Uri => PinSource::UriFile(path.clone()),
            Source::File | Source::Default => PinSource::ConfigFile(path.clone()),
        };
        let setting = self.sources.label("hsm.pin_file");
        // Reading a FIFO would wait for a writer, and a device may never
        // end, so only a regular file is read.
        if let Ok(metadata) = std::fs::metadata(&path)
            && !metadata.is_file()
        {
            self.problem(format!(
                "{setting}: {} is {}, not a regular file; point it at a file that contains the \
                 user PIN",
                path.display(),
                describe_file_type(&metadata.file_type())
            ));
            return None;
        }
        match Pin::from_file(&path) {
            Ok(pin) if pin.is_empty() => {
                self.problem(format!(
                    "{setting}: the PIN in {} is empty; write the user PIN to it",
                    path.display()
                ));
                None
            }
            Ok(pin) => Some((pin, source)),
            Err(error) => {
                self.problem(format!(
                    "{setting}: cannot read {}: {error}",
                    path.display()
                ));
                None
            }
        }
    }
}

/// Returns the number of cores, the default session pool size.
fn default_sessions() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
