//! wolf-protocol: GameStream wire code, pure: bytes and parameters in, structs and bytes out. No
//! sockets, no clock, no tokio (its `Cargo.toml` has none of them).
//!
//! Crate map:
//! - `pairing`  PIN key derivation, the host's and the client's side of the five pairing steps
//! - `xml`      serverinfo, applist, pairing and launch answers
//! - `rtsp`     RTSP request parsing, replies, DESCRIBE SDP, ANNOUNCE parameters
//! - `control`  control-channel messages (ENet payloads), their AES-GCM sealing, input events
//! - `video`    RTP video packetizing with Reed-Solomon FEC shards
//! - `audio`    RTP audio packetizing, AES-CBC encryption, FEC, surround layouts
//! - `annexb`   H.264/HEVC Annex B NAL unit scanning

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod annexb;
pub mod audio;
pub mod control;
pub mod pairing;
pub mod rtsp;
pub mod video;
pub mod xml;
