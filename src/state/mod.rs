//! Persisted state, kept apart from the config: identity and paired clients.

pub mod atomic;
pub mod clients;
pub mod identity;
