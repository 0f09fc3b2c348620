//! The `peershare` binary: parses the command line, sets up logging, reports errors in one line.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    cli::errors::exit_quietly_on_closed_stdout();
    // The configuration file sets the command line's defaults: read before parsing.
    let args = cli::rewrite_exclusions(std::env::args_os());
    let config = match cli::config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            let line = cli::errors::error_line(&e);
            eprintln!("peershare: {}", peershare::text::Escaped(&line));
            return ExitCode::FAILURE;
        }
    };
    let matches = cli::config::apply(cli::Cli::command(), config).get_matches_from(args);
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let quiet = matches!(
        cli.command,
        Some(cli::Command::Search { .. })
            | Some(cli::Command::Get(_))
            | Some(cli::Command::Peers { .. })
    );
    let default = if quiet {
        "peershare=warn"
    } else {
        "peershare=info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Log lines carry names, hosts and messages from the network: escaped, without colours
        // (the escaping would show colour codes as text).
        .with_writer(|| peershare::text::EscapingWriter(std::io::stderr()))
        .with_target(false)
        .with_ansi(false)
        .init();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `peershare search a | head -2`: the reader has all it wanted.
        Err(e) if cli::errors::is_closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // The error may quote a peer or the index: one escaped line.
            let line = cli::errors::error_line(&e);
            eprintln!("peershare: {}", peershare::text::Escaped(&line));
            ExitCode::FAILURE
        }
    }
}
