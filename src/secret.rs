//! The token's user PIN, kept out of logs and wiped from memory on drop.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

/// A PKCS#11 user PIN. `Debug` prints a placeholder, and the bytes are
/// zeroed when the value is dropped.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wraps a PIN value.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// Reads a PIN from a file without its line ending: every LF and CR at
    /// the end is dropped, so that files written by `echo` or with Windows
    /// line endings (CR LF) work. Spaces and tabs are kept, because a PIN
    /// may contain them.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let mut text = Zeroizing::new(std::fs::read_to_string(path)?);
        while text.ends_with('\n') || text.ends_with('\r') {
            text.pop();
        }
        Ok(Self(text))
    }

    /// Returns whether the PIN starts or ends with whitespace, which a
    /// token takes as part of the PIN but an operator may not have meant.
    pub fn has_edge_whitespace(&self) -> bool {
        self.0.starts_with(char::is_whitespace) || self.0.ends_with(char::is_whitespace)
    }

    /// Returns whether the PIN is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns the PIN text. Callers must not log or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Converts the PIN into the form that `cryptoki` logs in with.
    pub fn to_auth_pin(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::from(self.0.as_str())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_value() {
        let pin = Pin::new("123456".into());
        assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
    }

    #[test]
    fn file_line_endings_are_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pin");
        for (text, expected) in [
            ("9876\n", "9876"),
            ("9876\r\n", "9876"),
            ("9876\r", "9876"),
            ("9876", "9876"),
            ("98 76 \n", "98 76 "),
            ("9876\t\r\n", "9876\t"),
        ] {
            std::fs::write(&path, text).expect("write");
            let pin = Pin::from_file(&path).expect("read");
            assert_eq!(pin.expose(), expected, "{text:?}");
        }
    }

    #[test]
    fn edge_whitespace_is_detected() {
        for (value, expected) in [
            ("1234", false),
            ("12 34", false),
            ("1234 ", true),
            (" 1234", true),
            ("1234\t", true),
            ("1234\n", true),
            ("1234\r", true),
        ] {
            let pin = Pin::new(value.into());
            assert_eq!(pin.has_edge_whitespace(), expected, "{value:?}");
        }
    }

    #[test]
    fn file_newline_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pin");
        std::fs::write(&path, "9876\n").expect("write");
        assert_eq!(Pin::from_file(&path).expect("read").expose(), "9876");
    }
}
