//! The `peershare` binary: parses the command line, sets up logging, reports errors in one line.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = peershare::cli::Cli::parse();
    let quiet = matches!(
        cli.command,
        Some(peershare::cli::Command::Search { .. })
            | Some(peershare::cli::Command::Get(_))
            | Some(peershare::cli::Command::Peers { .. })
    );
    let default = if quiet {
        "peershare=warn"
    } else {
        "peershare=info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match peershare::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peershare: {e:#}");
            ExitCode::FAILURE
        }
    }
}
