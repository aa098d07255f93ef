//! The `cofre` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cofre::cli::Cli::parse();
    let json = cli.global.log_format.as_deref() == Some("json")
        || std::env::var("BACKUP_LOG_FORMAT").is_ok_and(|v| v == "json");
    match cofre::run(&cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) => {
            let message = cofre::error_message(&err);
            // The log file (and JSON output) get the error as an event;
            // text stderr gets one plain line.
            tracing::error!(target: cofre::logging::EXIT_TARGET, "{message}");
            if !json {
                eprintln!("error: {message}");
            }
            ExitCode::from(cofre::exit_code(&err))
        }
    }
}
