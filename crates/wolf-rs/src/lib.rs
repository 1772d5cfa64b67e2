//! wolf-rs: a GameStream host for Moonlight clients that does not hang, and heals itself if it does.
//! The wire formats live in the `wolf-protocol` crate; this crate is the host that serves them.
//!
//! Crate map, in the order a session meets them:
//! - `config`     the TOML config, env overrides, validation with key and line
//! - `error`      one typed error (kind + context + source)
//! - `state`      identity (key, certificate, host uuid), paired clients, atomic versioned files
//! - `net`        TLS (client-cert verifier, handshake gate), connection limits, interfaces, accept loop, HTTP/1.1
//! - `gamestream` HTTP 47989 and HTTPS 47984: the router and one function per endpoint, pairing
//! - `host`       the one owner of each session's lifecycle (launch, resume, lobbies, end) that the
//!   front-ends call; its session process (`host::streaming`); pairing in progress (`host::pairing`)
//! - `sessions`   launched sessions, persisted in active_sessions.json; reconcile after a restart
//! - `runners`    how a session's parts are started, watched and stopped: its virtual display
//!   (`runners::display`, Xvfb), its sink (`runners::audio`, PulseAudio), its app (process, docker)
//! - `rtsp`       RTSP 48010: DESCRIBE, SETUP (the session process's ports), ANNOUNCE, PLAY
//! - `session_process` one process per session that streams it and outlives control-plane
//!   restarts: its wire protocol, the process itself, its senders (`stream`) and ENet control
//!   channel (`control`), the control plane's link to it
//! - `input`      (in a session process) keyboard, mouse and pads into the session's display (XTEST, uinput)
//! - `lobbies`    apps with their own display that sessions join and leave (Wolf's lobbies)
//! - `commands`   why a session ends, and what RTSP and lobbies ask of the streams
//! - `media`      GStreamer: encoder probe, pipeline templates, the pipeline that feeds a sender
//! - `status`     the health status model (phase, event-loop lag, stalls, encoder, last exit)
//! - `health`     the health port: /health, /livez, /readyz, /metrics, fault injection
//! - `metrics`    every Prometheus metric, in one registry per host
//! - `watchdog`   the OS thread that exits a hung host; heartbeats; the crash marker
//! - `supervisor` `wolf-rs serve`: runs the control plane as its child, restarts it (backoff,
//!   crash-loop pause), restarts it in place on SIGHUP, reaps orphans; no async runtime
//! - `lifecycle`  `events.log`: control-plane starts and exits, sessions started, adopted, ended
//! - `api`        Wolf's management API (`/api/v1`) on a unix socket, its OpenAPI document; the one
//!   management socket (`wolf-rs pair`, `clients`, `sessions`, `apps`, `lobbies` use it too)
//! - `api_wire`   the API's JSON bodies and answers, shared by the server (`api`) and the CLI
//! - `events`     what happened (pairings, sessions), for the API's event stream
//! - `mdns`       `_nvstream._tcp` advertisement
//! - `app`        builds the components in order and runs them until shutdown
//! - `cli`        the command line (`main.rs` only parses it and sets up logging and the runtime);
//!   `cli::client` the requests it sends to the API socket
//! - `fuzz_harness` (hidden) what the cargo-fuzz targets in `fuzz/` run on the host's own parsers;
//!   `cargo test` replays the committed corpus through it
//!
//! Front-ends (`gamestream`, `api`, `cli`) parse, call `host`, and format; none imports another
//! (`scripts/check-module-cycles.py --front-ends`).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod api_wire;
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzz_harness;
pub mod gamestream;
pub mod health;
pub mod host;
pub mod input;
pub mod lifecycle;
pub mod lobbies;
pub mod mdns;
pub mod media;
pub mod metrics;
pub mod net;
pub mod rtsp;
pub mod runners;
pub mod session_process;
pub mod sessions;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod watchdog;
