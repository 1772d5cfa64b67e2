//! wolf-rs: parse the command line, set up logging and (for all but the supervisor and the session
//! processes) the runtime,
//! run the command.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wolf_rs::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("WOLF_LOG_LEVEL")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // Colours only on a terminal: container and journal logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    // The supervisor runs no async runtime (nothing in it can hang); everything else does.
    if cli::supervises(&cli) {
        return ExitCode::from(cli::supervise(&cli.state_dir, cli.config.as_deref()));
    }
    if let Some(args) = cli::session_process_args(&cli) {
        return ExitCode::from(cli::session_process(args));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wolf-rs: cannot start the async runtime: {e}");
            return ExitCode::from(cli::exit::FAILURE);
        }
    };
    let code = runtime.block_on(cli::run(cli));
    // A blocking task still running (an app that will not stop) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    code
}
