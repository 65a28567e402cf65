//! `meshcast`: one program for every role in a meshcast network.

use std::process::ExitCode;

use clap::Parser;

mod child;
mod cli;
mod config;
mod demo;
mod keygen;
mod metrics;
mod run;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
