//! `wolf-client`: a Moonlight-like client of a GameStream host from the command line.

use std::process::ExitCode;

use clap::Parser;
use wolf_client::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    match cli::run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wolf-client: {e}");
            ExitCode::FAILURE
        }
    }
}
