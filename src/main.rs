//! The `peershare` binary: parses the command line, sets up logging, reports errors in one line.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_from(cli::rewrite_exclusions(std::env::args_os()));
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
        Err(e) => {
            // The error may quote a peer or the index: one escaped line.
            let line = e
                .chain()
                .map(|c| c.to_string())
                .fold(String::new(), |line, c| match line.is_empty() {
                    true => c,
                    // Many errors quote their cause already: say each thing once.
                    false if line.contains(&c) => line,
                    false => format!("{line}: {c}"),
                });
            eprintln!("peershare: {}", peershare::text::Escaped(&line));
            ExitCode::FAILURE
        }
    }
}
