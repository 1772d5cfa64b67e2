//! `wolf-load`: bounded loopback load against a wolf-rs host (its own or `--target`); BENCHMARKS.md.

use std::process::ExitCode;

use clap::Parser;
use wolf_client::error::ErrorKind;
use wolf_client::loadtest::{self, LoadArgs};

/// Exit code for a bad invocation (e.g. a --target off loopback), as the host's CLI uses it.
const USAGE: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    match loadtest::cli(LoadArgs::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wolf-load: {e}");
            if e.kind == ErrorKind::Config { ExitCode::from(USAGE) } else { ExitCode::FAILURE }
        }
    }
}
