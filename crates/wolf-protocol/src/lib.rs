//! wolf-protocol: GameStream wire code, pure: bytes and parameters in, structs and bytes out. No
//! sockets, no clock, no tokio (its `Cargo.toml` has none of them).
//!
//! Crate map:
//! - `pairing`  PIN key derivation, certificate signatures, the pairing steps (host and client side)
//! - `xml`      the XML bodies of the HTTP(S) API (serverinfo, applist, pairing, launch)
//! - `launch`   the `/launch` and `/resume` query: the client's mode
//! - `rtsp`     RTSP as Moonlight speaks it: request parsing, replies, the ANNOUNCE SDP
//! - `control`  control-channel messages (ENet payloads) and their AES-128-GCM sealing
//! - `input`    input packets in control messages (keyboard, mouse, text, controllers, touch, pen), rumble
//! - `gcm`      AES-128-GCM under the rikey with the streams' IV layouts (control, encrypted RTSP, video)
//! - `video`    RTP video packetizing with Reed–Solomon FEC shards; sealing packets (SS_ENC_VIDEO)
//! - `audio`    RTP audio packetizing, AES-128-CBC, parity packets, surround layouts
//! - `annexb`   Annex B bitstreams: NAL unit scanning
//! - `fuzz_harness` (hidden) what each cargo-fuzz target in `fuzz/` runs; `cargo test` replays the corpus

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod annexb;
pub mod audio;
pub mod control;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod gcm;
pub mod input;
pub mod launch;
pub mod pairing;
pub mod rtsp;
pub mod video;
pub mod xml;
