//! Persisted state, kept apart from the config: identity, paired clients, apps added at run time, and the versioned-file policy.

pub mod apps;
pub mod atomic;
pub mod clients;
pub mod identity;
pub mod import;
pub mod versioned;
