//! `cargo bench`: builds uringgost and the harness in release mode, then runs the harness's
//! short suite against every contender. Results land in `perf/results/`.
//!
//! Arguments after `--` go to the harness:
//! `cargo bench --bench short -- --rounds 1 --tests connrate`. (Plain `cargo bench -- ARGS`
//! would hand them to the libtest targets too, which reject them.) The `--bench` flag cargo
//! adds for libtest-style harnesses is dropped.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let workspace = env!("CARGO_MANIFEST_DIR");
    let extra: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();

    // The current sources are what gets measured: a stale binary would mislead.
    let build = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "uringgost",
            "-p",
            "uringgost-bench",
        ])
        .status();
    match build {
        Ok(status) if status.success() => {}
        Ok(status) => {
            eprintln!("short bench: `cargo build --release` exited with {status}");
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("short bench: could not run cargo: {error}");
            return ExitCode::FAILURE;
        }
    }

    let harness = format!("{workspace}/target/release/uringgost-bench");
    let run = Command::new(&harness)
        .current_dir(workspace)
        .args(["--suite", "short"])
        .args(&extra)
        .status();
    match run {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("short bench: {harness} exited with {status}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("short bench: could not run {harness}: {error}");
            ExitCode::FAILURE
        }
    }
}
