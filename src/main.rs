//! The `cofre` binary: parse, resolve the settings, set up logging, run,
//! map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cofre::cli::Cli::parse();
    let prepared = cofre::prepare(&cli);
    let format = cofre::init_logging(&cli, prepared.as_ref().ok().and_then(Option::as_ref));
    let stdout = std::io::stdout();
    match prepared.and_then(|settings| cofre::run(&cli, settings, &mut stdout.lock())) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) => {
            let message = cofre::error_message(&err);
            // The log file and JSON output get the error as an event; text
            // stderr gets one plain line.
            tracing::error!(target: cofre::EXIT_TARGET, "{message}");
            if format == cofre::LogFormat::Text {
                eprintln!("error: {message}");
            }
            ExitCode::from(cofre::exit_code(&err))
        }
    }
}
