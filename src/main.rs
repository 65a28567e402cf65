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
    return_freed_memory_now_and_then();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// What a burst of sessions or connections leaves behind once it is gone
/// (many small buffers) is freed into glibc's arenas, one per thread, which
/// keep it: a relay hit by an attack would stay at its peak RSS for good.
/// Every 10 s a thread of its own hands free pages back (`malloc_trim`),
/// outside the async runtime; it takes a few ms on a heap of 100s of MB.
/// Shown by `tests/cli/attacks.rs` (RSS back to idle after an attack).
fn return_freed_memory_now_and_then() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let _ = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(10));
                // SAFETY: malloc_trim only returns free memory to the system;
                // glibc locks each arena while it does.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
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
