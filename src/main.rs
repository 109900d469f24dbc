//! `reft`: the command-line front end. It parses arguments and calls reft-core; the work
//! (and every check) lives in the libraries.

mod cli;
mod serve;

use clap::Parser;
use std::process::ExitCode;

// Built-in plugins register through `inventory`; naming the crate keeps the linker from
// dropping it (and with it, every registration).
use reft_plugins as _;
// Link reft-core and candle from the shared reft-sdk library, the copy run-time plugins use
// too (plugins/sdk/Cargo.toml).
use reft_sdk as _;

fn main() -> ExitCode {
    reft_plugins::link();
    reft_core::alloc::tune_for_tensors();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
