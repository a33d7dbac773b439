//! Errors of the PKCS#11 layer.

use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

/// A failure in the PKCS#11 layer. Each variant states whose fault it is, so
/// that the gRPC edge and the command line can report it correctly.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The configured module path does not exist. Operator error.
    #[error(
        "PKCS#11 module {path} does not exist; set hsm.module (or HALLMARK_PKCS11_MODULE, which \
         overrides it) to the library path"
    )]
    ModuleMissing {
        /// The configured path.
        path: PathBuf,
    },
    /// The configured module path names something other than a file, such
    /// as a directory or a symbolic link loop. Operator error.
    #[error(
        "PKCS#11 module {path} {problem}; set hsm.module (or HALLMARK_PKCS11_MODULE, which \
         overrides it) to the library path"
    )]
    ModuleNotFile {
        /// The configured path.
        path: PathBuf,
        /// The problem with the path, such as "is a directory, not a
        /// PKCS#11 library file".
        problem: String,
    },
    /// The module file exists but is not a loadable PKCS#11 library.
    #[error(
        "{path} is not a loadable PKCS#11 library ({source}); check hsm.module (or \
         HALLMARK_PKCS11_MODULE, which overrides it)"
    )]
    ModuleLoad {
        /// The configured path.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: CkError,
    },
    /// No initialized token matches the configured label or serial.
    #[error("no token with {selector}; tokens present: {}", list_or_none(.available))]
    TokenNotFound {
        /// The configured selector.
        selector: String,
        /// The initialized tokens that do exist.
        available: Vec<String>,
    },
    /// No token matches, and SoftHSM's configuration names no token
    /// directory, so SoftHSM read its built-in one. Operator error.
    #[error(
        "no token with {selector}: SoftHSM's configuration {} has no directories.tokendir line, \
         so SoftHSM read its built-in token directory (tokens present: {}); add \
         `directories.tokendir = DIR` to that file, with the directory that contains the token",
        conf.display(),
        list_or_none(.available)
    )]
    SoftHsmTokenDirectoryUnset {
        /// The configured selector.
        selector: String,
        /// SoftHSM's configuration file.
        conf: PathBuf,
        /// The initialized tokens in the built-in directory.
        available: Vec<String>,
    },
    /// More than one token matches, so the choice would be a guess.
    #[error(
        "{} tokens match {selector} (serials {}); set hsm.token_serial to choose one",
        .serials.len(),
        .serials.join(", ")
    )]
    TokenAmbiguous {
        /// The configured selector.
        selector: String,
        /// The serial numbers of the matching tokens.
        serials: Vec<String>,
    },
    /// The token is present but was never initialized.
    #[error("token {label:?} (serial {serial:?}) is not initialized; initialize it first")]
    TokenNotInitialized {
        /// Token label.
        label: String,
        /// Token serial.
        serial: String,
    },
    /// The user PIN was rejected.
    #[error(
        "user PIN rejected by token {label:?}; check the PIN in {pin_source}, and note that each \
         failed login counts towards locking the PIN{}",
        if *.edge_whitespace {
            "; the PIN starts or ends with a space, tab or line break, which the token takes as \
             part of the PIN: remove it unless the PIN contains it"
        } else {
            ""
        }
    )]
    PinIncorrect {
        /// Token label.
        label: String,
        /// The origin of the PIN, such as `hsm.pin_file (PATH)`.
        pin_source: String,
        /// Whether the PIN starts or ends with whitespace.
        edge_whitespace: bool,
    },
    /// The user PIN is locked after too many failures.
    #[error("user PIN of token {label:?} is locked; the security officer must reset it")]
    PinLocked {
        /// Token label.
        label: String,
    },
    /// A token object does not have the shape Hallmark writes.
    #[error("key object {label:?} is malformed: {reason}")]
    MalformedObject {
        /// The object's label.
        label: String,
        /// The defect found.
        reason: String,
    },
    /// The token does not offer a mechanism that a configured key needs.
    #[error(
        "the token does not offer {mechanism}, which key \"{key}\" ({algorithm}) needs; \
         choose another algorithm for keys.{key}, or use a token that offers it"
    )]
    MechanismMissing {
        /// The missing mechanism.
        mechanism: String,
        /// The key name that needs it.
        key: String,
        /// The key's algorithm.
        algorithm: &'static str,
    },
    /// `C_Initialize` failed, with what could be found out about why.
    #[error("C_Initialize failed: {}{}", rv_name(.source), .hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default())]
    Initialize {
        /// The error from the binding.
        #[source]
        source: CkError,
        /// The problem found in the module's own configuration.
        hint: Option<String>,
        /// Whether the hint names a configuration mistake, rather than a
        /// missing or unreadable token.
        misconfigured: bool,
    },
    /// A lookup found no object where one must exist.
    #[error("no {what} in the token")]
    NotFound {
        /// The object that was looked up.
        what: String,
    },
    /// Another process changed the same objects at the same time. The
    /// operation was undone and can be run again.
    #[error("another process created {what} at the same time; run the command again")]
    ConcurrentChange {
        /// The object that both processes created.
        what: String,
    },
    /// A lookup found several objects where exactly one must exist.
    #[error("{count} objects match {what}; remove the duplicates")]
    Ambiguous {
        /// The object that was looked up.
        what: String,
        /// How many objects matched.
        count: usize,
    },
    /// A PKCS#11 call failed.
    #[error("{} failed: {}", function_name(.function, .source), rv_name(.source))]
    Pkcs11 {
        /// The C function that failed, such as `C_Sign`.
        function: &'static str,
        /// The error from the binding, with the return code.
        #[source]
        source: CkError,
    },
    /// The token cannot be used right now; the service keeps trying to
    /// reconnect.
    #[error("the token is unavailable ({reason}); reconnecting")]
    Disconnected {
        /// The last error from opening the token.
        reason: String,
    },
    /// The request was given up before it reached the token: its deadline
    /// passed or its client went away while it waited for a session.
    #[error("{}", if *.deadline {
        "the request's deadline passed while it waited for a session; the token was not asked"
    } else {
        "the client went away while the request waited for a session; the token was not asked"
    })]
    Abandoned {
        /// Whether the deadline passed, rather than the client leaving.
        deadline: bool,
    },
    /// The service is shutting down and stopped waiting for the request.
    #[error("the service is stopping; the token was not asked")]
    Stopping,
    /// Work carried object handles from an earlier connection to the token.
    #[error("object handles from connection {expected} used on connection {current}")]
    StaleGeneration {
        /// The connection the handles came from.
        expected: u64,
        /// The current connection.
        current: u64,
    },
    /// A lock was poisoned by a panic on another thread.
    #[error("internal lock poisoned")]
    Poisoned,
    /// A blocking task did not finish.
    #[error("blocking PKCS#11 task failed: {0}")]
    TaskFailed(String),
}

impl HsmError {
    /// Wraps a binding error with the C function that returned it.
    pub fn pkcs11(function: &'static str, source: CkError) -> Self {
        Self::Pkcs11 { function, source }
    }

    /// The PKCS#11 return value, where the error carries one.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            Self::Pkcs11 {
                source: CkError::Pkcs11(rv, _),
                ..
            } => Some(*rv),
            _ => None,
        }
    }

    /// Returns whether an object handle no longer names an object, because the
    /// object was destroyed or the token was replaced. A fresh lookup may
    /// find the object again under a new handle.
    pub fn is_stale_handle(&self) -> bool {
        matches!(self, Self::StaleGeneration { .. })
            || matches!(
                self.rv(),
                Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
            )
    }

    /// Returns the recovery that gives a retry of the failed call a chance of success.
    pub fn recovery(&self) -> Recovery {
        if self.is_stale_handle() {
            return Recovery::Lookup;
        }
        match self.rv() {
            Some(
                RvError::SessionHandleInvalid | RvError::SessionClosed | RvError::OperationActive,
            ) => Recovery::Retry,
            Some(RvError::UserNotLoggedIn) => Recovery::Relogin,
            Some(
                RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::CryptokiNotInitialized
                | RvError::SessionCount,
            ) => Recovery::Reconnect,
            _ => Recovery::None,
        }
    }

    /// Returns whether the token itself is gone or unusable, as opposed to a
    /// problem with one request.
    pub fn is_token_unavailable(&self) -> bool {
        matches!(self, Self::Disconnected { .. }) || self.recovery() != Recovery::None
    }
}

/// How to recover from a failed PKCS#11 call before retrying it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Retrying cannot help: the request itself, or the token's response to
    /// it, is the problem.
    None,
    /// The session broke; the pool has closed it, and a retry gets a fresh
    /// one.
    Retry,
    /// An object handle is stale; read the token's objects again.
    Lookup,
    /// The login was lost; log in again, then read the objects again.
    Relogin,
    /// The token or the module failed; finalize, initialize and log in
    /// again, then read the objects again.
    Reconnect,
}

/// Names the C function that failed: the one the binding reports, which
/// is exact (`C_SignInit` rather than `C_Sign`), or else the caller's.
fn function_name(called: &str, error: &CkError) -> String {
    match error {
        CkError::Pkcs11(_, function) => format!("C_{function:?}"),
        _ => called.to_owned(),
    }
}

fn rv_name(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, _) => format!("{rv:?}"),
        other => other.to_string(),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
