//! The `uringgost` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Port forwarding and proxy chains on io_uring, across network namespaces.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The routes file (TOML).
    #[arg(long, short = 'C', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Executor threads, one per CPU [default: the CPUs this process may run on].
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration, print the compiled routes, and exit.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bare word that is not a level would be taken as a target name and silence every
    // log line; only levels and directives with `=` are accepted.
    let level = cli.log_level.to_ascii_lowercase();
    let is_level = ["error", "warn", "info", "debug", "trace", "off"].contains(&level.as_str());
    if !is_level && !cli.log_level.contains('=') {
        eprintln!(
            "error: --log-level {:?} is not a level; valid: error, warn, info, debug, trace, \
             off, or a directive such as uringgost=debug",
            cli.log_level
        );
        return ExitCode::from(2);
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log_level) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("error: --log-level {:?}: {error}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let Some(config) = cli.config else {
        eprintln!("error: --config FILE is required (try configs/routes.toml)");
        return ExitCode::from(2);
    };
    let threads = match cli.threads {
        Some(0) => {
            eprintln!("error: --threads must be at least 1");
            return ExitCode::from(2);
        }
        Some(threads) => threads,
        None => uringgost::executor::allowed_cpus().len().max(1),
    };
    let result =
        uringgost::server::load(&config).and_then(|(routes, namespaces)| match cli.command {
            Some(Command::Check) => {
                print!("{routes}");
                println!("executors: {threads}, one listener per service on each");
                Ok(())
            }
            None => uringgost::server::run(&config, routes, namespaces, threads),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
