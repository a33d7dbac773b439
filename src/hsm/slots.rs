//! The slots and tokens that a module exposes, read without logging in,
//! so that an operator can find the label and serial to configure.

use std::path::Path;

use super::{HsmError, load_module};

/// One slot, as `C_GetSlotInfo` reports it, with its token if present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotEntry {
    /// The slot ID. It may change when tokens are added or removed, so it
    /// is shown for reference and never used to choose a token.
    pub slot_id: u64,
    /// The slot description, without trailing blanks.
    pub description: String,
    /// The token in the slot, or `None` for an empty slot.
    pub token: Option<TokenEntry>,
}

/// A token, as `C_GetTokenInfo` reports it, with trailing blanks removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    /// The token label.
    pub label: String,
    /// The serial number.
    pub serial: String,
    /// The manufacturer ID.
    pub manufacturer: String,
    /// The model.
    pub model: String,
    /// Whether the token is initialized (CKF_TOKEN_INITIALIZED).
    pub initialized: bool,
    /// Whether its user PIN is set (CKF_USER_PIN_INITIALIZED).
    pub user_pin_initialized: bool,
}

/// Loads the module at `module` and lists every slot with its token, in the
/// module's order. Opens no session and does not log in.
///
/// # Errors
///
/// [`HsmError`] when the module is missing or cannot be loaded or
/// initialized, or when a slot or token cannot be read.
pub fn list_slots(module: &Path) -> Result<Vec<SlotEntry>, HsmError> {
    let context = load_module(module)?;
    let listed = read_slots(&context);
    // The process exits right after listing, so a failed C_Finalize only
    // skips the module's own clean-up.
    if let Err(error) = context.finalize() {
        tracing::warn!(
            error = %HsmError::pkcs11("C_Finalize", error),
            "finalizing the module after listing its slots failed"
        );
    }
    listed
}

fn read_slots(context: &cryptoki::context::Pkcs11) -> Result<Vec<SlotEntry>, HsmError> {
    let slots = context
        .get_all_slots()
        .map_err(|e| HsmError::pkcs11("C_GetSlotList", e))?;
    let mut entries = Vec::with_capacity(slots.len());
    for slot in slots {
        let info = context
            .get_slot_info(slot)
            .map_err(|e| HsmError::pkcs11("C_GetSlotInfo", e))?;
        let token = if info.token_present() {
            let token = context
                .get_token_info(slot)
                .map_err(|e| HsmError::pkcs11("C_GetTokenInfo", e))?;
            Some(TokenEntry {
                label: token.label().trim_end().to_owned(),
                serial: token.serial_number().trim_end().to_owned(),
                manufacturer: token.manufacturer_id().trim_end().to_owned(),
                model: token.model().trim_end().to_owned(),
                initialized: token.token_initialized(),
                user_pin_initialized: token.user_pin_initialized(),
            })
        } else {
            None
        };
        entries.push(SlotEntry {
            slot_id: slot.id(),
            description: info.slot_description().trim_end().to_owned(),
            token,
        });
    }
    Ok(entries)
}
