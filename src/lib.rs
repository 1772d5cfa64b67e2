//! wolf-rs: a GameStream host for Moonlight clients that does not hang, and heals itself if it does.
//!
//! Crate map:
//! - `config`     the TOML config, env overrides, validation with key and line
//! - `error`      one typed error (kind + context + source)
//! - `state`      identity (key, certificate, host uuid), paired clients, atomic writes
//! - `protocol`   pure protocol code: pairing crypto and state machine, XML bodies
//! - `net`        TLS (lenient client-cert verifier, handshake gate), interfaces (MAC, LocalIP)
//! - `gamestream` HTTP 47989 and HTTPS 47984: the router and one function per endpoint
//! - `sessions`   launched sessions, persisted in active_sessions.json
//! - `runners`    how apps are started, watched and stopped (process, docker)
//! - `health`     the health port: /health, /livez, /readyz, /metrics, fault injection
//! - `metrics`    every Prometheus metric, in one registry per host
//! - `watchdog`   the OS thread that exits a hung host; heartbeats; the crash marker
//! - `admin`      the local admin socket used by `wolf-rs pair` and `wolf-rs clients`
//! - `mdns`       `_nvstream._tcp` advertisement
//! - `app`        builds the components in order and runs them until shutdown
//! - `cli`        the command line
//! - `client`     the Moonlight side of the protocol (tests, load tools)
//! - `loadtest`   `wolf-rs loadtest`: bounded loopback load and its report (BENCHMARKS.md)

pub mod admin;
pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod error;
pub mod gamestream;
pub mod health;
pub mod loadtest;
pub mod mdns;
pub mod media;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod rtsp;
pub mod runners;
pub mod sessions;
pub mod state;
pub mod stream;
pub mod watchdog;
