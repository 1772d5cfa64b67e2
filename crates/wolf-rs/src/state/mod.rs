//! Persisted state, kept apart from the config: identity, paired clients, and the versioned-file policy.

pub mod atomic;
pub mod clients;
pub mod identity;
pub mod versioned;
