//! The PKCS#11 layer: one module context per process, one login, and a pool
//! of sessions for signing.
//!
//! This layer does not depend on gRPC or on key lifecycle policy. It opens the
//! token, runs blocking PKCS#11 calls off the async runtime, and finds,
//! creates and relabels key objects.

mod error;
pub mod objects;
mod pool;
mod slots;
mod softhsm;
mod threads;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use tracing::{info, warn};

use crate::config::{HsmConfig, TokenSelector};

pub use error::{HsmError, Recovery};
pub use pool::{Abandon, LinkStatus, PooledSession, SessionPool};
pub use slots::{SlotEntry, TokenEntry, list_slots};

/// Sets the environment variables that a PKCS#11 module reads when it loads,
/// such as `SOFTHSM2_CONF`.
///
/// # Safety
///
/// Must be called while the process has a single thread, before any runtime
/// or module starts, because `std::env::set_var` races with every other
/// reader of the environment.
#[allow(unsafe_code)]
pub unsafe fn apply_module_env(vars: &BTreeMap<String, String>) {
    for (name, value) in vars {
        // SAFETY: the caller guarantees that no other thread exists yet.
        unsafe { std::env::set_var(name, value) };
    }
}

/// An open, logged-in token.
///
/// The PKCS#11 login state belongs to the application, not to a session,
/// and lasts while at least one session stays open. `login_session` is that
/// session: it is held for the life of the token so that pooled sessions
/// never need to log in, and the request path never logs out.
pub struct Token {
    context: Pkcs11,
    slot: Slot,
    label: String,
    serial: String,
    login_session: Mutex<Session>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.label)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Loads the module, finds the token, and logs in as the user.
    pub fn open(config: &HsmConfig) -> Result<Self, HsmError> {
        let context = load_module(&config.module)?;
        match Self::log_in(context.clone(), config) {
            Ok(token) => Ok(token),
            Err(error) => {
                let error = explain_missing_token(error, &config.module);
                // The next attempt must initialize the module afresh, or
                // it would get CKR_CRYPTOKI_ALREADY_INITIALIZED and never
                // read the token again.
                if let Err(finalize) = context.finalize() {
                    warn!(
                        error = %HsmError::pkcs11("C_Finalize", finalize),
                        "finalizing the module after a failed open failed; the next attempt \
                         finalizes it again"
                    );
                }
                Err(error)
            }
        }
    }

    /// Finds the token on an initialized module and logs in.
    fn log_in(context: Pkcs11, config: &HsmConfig) -> Result<Self, HsmError> {
        let (slot, label, serial) = find_token(&context, &config.token)?;
        let login_session = context
            .open_rw_session(slot)
            .map_err(|e| HsmError::pkcs11("C_OpenSession", e))?;
        match login_session.login(UserType::User, Some(&config.pin.to_auth_pin())) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(HsmError::PinIncorrect {
                    label,
                    pin_source: config.pin_source.to_string(),
                    edge_whitespace: config.pin.has_edge_whitespace(),
                });
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(HsmError::PinLocked { label });
            }
            Err(source) => return Err(HsmError::pkcs11("C_Login", source)),
        }
        info!(token.label = %label, token.serial = %serial, "token opened and logged in");
        Ok(Self {
            context,
            slot,
            label,
            serial,
            login_session: Mutex::new(login_session),
        })
    }

    /// The token label, without trailing blanks.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The token serial number, without trailing blanks.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Opens a new session. Sessions opened after the login share it.
    pub fn open_session(&self, access: Access) -> Result<Session, HsmError> {
        let opened = match access {
            Access::ReadOnly => self.context.open_ro_session(self.slot),
            Access::ReadWrite => self.context.open_rw_session(self.slot),
        };
        opened.map_err(|e| HsmError::pkcs11("C_OpenSession", e))
    }

    /// Returns whether the token's slot offers `mechanism`.
    pub fn offers(&self, mechanism: MechanismType) -> Result<bool, HsmError> {
        match self.context.get_mechanism_info(self.slot, mechanism) {
            Ok(_) => Ok(true),
            Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => Ok(false),
            Err(error) => Err(HsmError::pkcs11("C_GetMechanismInfo", error)),
        }
    }

    /// Closes the login session and finalizes the module, so that a later
    /// [`Token::open`] initializes it afresh and reads the token again.
    ///
    /// # Errors
    ///
    /// The failure of `C_Finalize`. The module may then still be
    /// initialized, and [`finalize_module`] can try again.
    pub fn close(self) -> Result<(), HsmError> {
        let Self {
            context,
            login_session,
            ..
        } = self;
        match login_session.into_inner() {
            Ok(session) => drop(session),
            Err(poisoned) => drop(poisoned.into_inner()),
        }
        context
            .finalize()
            .map_err(|source| HsmError::pkcs11("C_Finalize", source))
    }

    /// Runs `work` on the session that keeps the login open. Used for rare
    /// administrative calls, never on the signing path.
    pub fn with_admin_session<T>(
        &self,
        work: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let session = self.login_session.lock().map_err(|_| HsmError::Poisoned)?;
        work(&session)
    }
}

/// Finalizes the module at `path` through a new context, for a module
/// whose `C_Finalize` failed. PKCS#11 leaves the module's state unknown
/// after such a failure. A module that is still initialized returns
/// CKR_CRYPTOKI_ALREADY_INITIALIZED from the next `C_Initialize`, which
/// [`Token::open`] accepts, and keeps what it read of the token before:
/// SoftHSM, for one, would not read the token directory again. A module
/// that is not initialized is left as it is.
pub fn finalize_module(path: &Path) -> Result<(), HsmError> {
    let context = Pkcs11::new(path).map_err(|source| HsmError::ModuleLoad {
        path: path.to_owned(),
        source,
    })?;
    match context.finalize() {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => Ok(()),
        Err(source) => Err(HsmError::pkcs11("C_Finalize", source)),
    }
}

/// Replaces a missing token with the SoftHSM configuration problem that
/// explains it, when there is one.
fn explain_missing_token(error: HsmError, module: &Path) -> HsmError {
    match error {
        HsmError::TokenNotFound {
            selector,
            available,
        } => match softhsm::unset_token_directory(module) {
            Some(conf) => HsmError::SoftHsmTokenDirectoryUnset {
                selector,
                conf,
                available,
            },
            None => HsmError::TokenNotFound {
                selector,
                available,
            },
        },
        other => other,
    }
}

/// Checks that `path` names a file, so that the error names what the path
/// is instead: nothing, a directory, a symbolic link loop, and so on.
fn check_module_path(path: &Path) -> Result<(), HsmError> {
    let problem = match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => return Ok(()),
        Ok(metadata) => format!(
            "is {}, not a PKCS#11 library file",
            crate::config::describe_file_type(&metadata.file_type())
        ),
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            "is a symbolic link loop".to_owned()
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::read_link(path) {
                Ok(target) => format!(
                    "is a symbolic link to {}, which does not exist",
                    target.display()
                ),
                Err(_) => {
                    return Err(HsmError::ModuleMissing {
                        path: path.to_owned(),
                    });
                }
            }
        }
        Err(error) => format!("cannot be read: {error}"),
    };
    Err(HsmError::ModuleNotFile {
        path: path.to_owned(),
        problem,
    })
}

/// Checks the path of the PKCS#11 module, then loads and initializes it.
fn load_module(path: &Path) -> Result<Pkcs11, HsmError> {
    check_module_path(path)?;
    let context = Pkcs11::new(path).map_err(|source| HsmError::ModuleLoad {
        path: path.to_owned(),
        source,
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(context),
        Err(source) => {
            let diagnosis = softhsm::diagnose(path);
            Err(HsmError::Initialize {
                source,
                misconfigured: diagnosis.as_ref().is_some_and(|d| d.in_configuration),
                hint: diagnosis.map(|d| d.message),
            })
        }
    }
}

/// Access mode of a new session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only: enough for signing and reading objects.
    ReadOnly,
    /// Read-write: needed to create or change token objects.
    ReadWrite,
}

/// Finds the one token that matches `selector`, by label or serial number.
fn find_token(
    context: &Pkcs11,
    selector: &TokenSelector,
) -> Result<(Slot, String, String), HsmError> {
    let slots = context
        .get_slots_with_token()
        .map_err(|e| HsmError::pkcs11("C_GetSlotList", e))?;
    let mut available = Vec::new();
    let mut found = Vec::new();
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(|e| HsmError::pkcs11("C_GetTokenInfo", e))?;
        let label = info.label().trim_end().to_owned();
        let serial = info.serial_number().trim_end().to_owned();
        let manufacturer = info.manufacturer_id().trim_end();
        let model = info.model().trim_end();
        if selector.matches(&label, &serial, manufacturer, model) {
            if !info.token_initialized() {
                return Err(HsmError::TokenNotInitialized { label, serial });
            }
            found.push((slot, label, serial));
        } else if info.token_initialized() {
            available.push(format!("label {label:?} serial {serial:?}"));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(HsmError::TokenNotFound {
            selector: selector.to_string(),
            available,
        }),
        _ => Err(HsmError::TokenAmbiguous {
            selector: selector.to_string(),
            serials: found
                .into_iter()
                .map(|(_, _, serial)| format!("{serial:?}"))
                .collect(),
        }),
    }
}
