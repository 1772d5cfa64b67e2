//! Networking building blocks: TLS (verifier, handshake gate) and interface facts.

pub mod iface;
pub mod tls;
