//! Verification of signed outputs against a published key set.

pub mod algorithm;
