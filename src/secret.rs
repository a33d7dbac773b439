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

    /// Reads a PIN from a file, dropping one trailing newline so that files
    /// written by `echo` work.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let mut text = Zeroizing::new(std::fs::read_to_string(path)?);
        while text.ends_with('\n') || text.ends_with('\r') {
            text.pop();
        }
        Ok(Self(text))
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
    fn file_newline_is_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pin");
        std::fs::write(&path, "9876\n").expect("write");
        assert_eq!(Pin::from_file(&path).expect("read").expose(), "9876");
    }
}
