//! Persisted state, kept apart from the config: identity and paired clients.

pub mod atomic;
