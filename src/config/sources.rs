//! The record of where each effective configuration value came from.

use std::collections::BTreeMap;
use std::fmt;

/// The layer that set an effective value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Nothing set it: the built-in default.
    Default,
    /// The configuration file.
    File,
    /// This environment variable.
    Env(&'static str),
    /// This command-line flag.
    Flag(&'static str),
    /// An attribute of `hsm.uri`.
    Uri,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File => f.write_str("file"),
            Self::Env(name) => write!(f, "env {name}"),
            Self::Flag(flag) => write!(f, "flag {flag}"),
            Self::Uri => f.write_str("hsm.uri"),
        }
    }
}

/// The source of each value that something other than the default set,
/// by dotted key (`keys.default.bits`, `callers[0].uid`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources(BTreeMap<String, Source>);

impl Sources {
    /// Returns the source of `key`: [`Source::Default`] unless a layer set it.
    pub fn get(&self, key: &str) -> Source {
        self.0.get(key).copied().unwrap_or(Source::Default)
    }

    pub(super) fn set(&mut self, key: impl Into<String>, source: Source) {
        self.0.insert(key.into(), source);
    }

    /// Returns how problems name `key`: the key, followed by the variable
    /// or flag that set it, as in `server.listen (HALLMARK_LISTEN)`.
    pub fn label(&self, key: &str) -> String {
        match self.get(key) {
            Source::Env(name) => format!("{key} ({name})"),
            Source::Flag(flag) => format!("{key} ({flag})"),
            Source::Uri => format!("{key} (from hsm.uri)"),
            Source::Default | Source::File => key.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_layer() {
        let mut sources = Sources::default();
        sources.set("server.listen", Source::Env("HALLMARK_LISTEN"));
        sources.set("hsm.module", Source::Flag("--module"));
        sources.set("hsm.token_label", Source::Uri);
        sources.set("server.reflection", Source::File);
        assert_eq!(
            sources.label("server.listen"),
            "server.listen (HALLMARK_LISTEN)"
        );
        assert_eq!(sources.label("hsm.module"), "hsm.module (--module)");
        assert_eq!(
            sources.label("hsm.token_label"),
            "hsm.token_label (from hsm.uri)"
        );
        assert_eq!(sources.label("server.reflection"), "server.reflection");
        assert_eq!(sources.label("signing.max_batch"), "signing.max_batch");
        assert_eq!(sources.get("signing.max_batch"), Source::Default);
    }
}
