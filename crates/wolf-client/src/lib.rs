//! wolf-client: the Moonlight side of GameStream, for the tests and the load tool. Never part of
//! the host binary (its TLS verifier accepts any host certificate while pairing, as Moonlight's does).
//!
//! Crate map:
//! - `error`      the client's typed error (kind + context + source)
//! - `identity`   a client key and certificate made like Moonlight's, kept in a folder
//! - `tls`        TLS towards a host: any certificate while pairing, the pinned one after
//! - `http`       one HTTP/1.1 request over TCP or TLS, from a chosen source address
//! - `gamestream` `GameStreamClient`: pairing, serverinfo, applist, launch, cancel
//! - `rtsp`       RTSP requests as moonlight-common-c sends them, plain or sealed (`rtspenc://`)
//! - `video`      the ANNOUNCE SDP with its SS_ENC_* bits; opening sealed video (SS_ENC_VIDEO)
//! - `host`       a `wolf-rs serve` child process: spawn, wait until ready, kill on drop
//! - `cli`        the `wolf-client` binary's command line
//! - `loadtest`   the `wolf-load` binary: bounded loopback load and its report (BENCHMARKS.md)

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod error;
pub mod gamestream;
pub mod host;
pub mod http;
pub mod identity;
pub mod loadtest;
pub mod rtsp;
pub mod tls;
pub mod video;

pub use gamestream::{GameStreamClient, Launched, MOONLIGHT_UNIQUEID, PairOutcome};
pub use http::{Reply, plain_request};
pub use identity::ClientIdentity;
pub use rtsp::{RtspReply, RtspSession, rtsp_request};
