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
    return_large_buffers_at_once();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Segment bodies (hundreds of KiB to MiB) come and go as the live window
/// moves. glibc's malloc raises its mmap threshold after the first large
/// free, so that later bodies come from its heaps, whose freed space it
/// seldom returns to the system: a node's RSS then follows its high-water
/// mark, not its live window. A fixed threshold (128 KiB, glibc's starting
/// value) keeps every body in a mapping of its own, returned on free
/// (`meshcast-bench all --only rss`, docs/benchmarks.md §f).
fn return_large_buffers_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
