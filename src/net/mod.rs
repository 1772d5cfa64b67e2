//! Networking building blocks: TLS (verifier, handshake gate) and interface facts.

pub mod iface;
pub mod limit;
pub mod tls;
