//! `cofre keygen`: a new age identity, as `age-keygen` makes it; and the
//! other commands that need no settings: `completions` and `man`.

use std::io::Write;

use anyhow::bail;

use crate::archive::crypt;
use crate::cli::KeygenArgs;

use super::Outcome;

/// Runs `cofre keygen`.
pub fn run(args: &KeygenArgs, out: &mut dyn Write) -> Result<Outcome, anyhow::Error> {
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    match &args.output {
        Some(path) => {
            if std::fs::symlink_metadata(path).is_ok() {
                bail!(
                    "{} already exists; cofre keygen never overwrites a key, choose another file",
                    path.display()
                );
            }
            crypt::write_identity(path, &identity, "")?;
            eprintln!("Public key: {public}");
            eprintln!(
                "Wrote the identity to {} (mode 0600). Keep it off the server; put the public key in BACKUP_RECIPIENTS.",
                path.display()
            );
        }
        None => {
            out.write_all(crypt::identity_text(&identity, "").as_bytes())?;
            eprintln!("Public key: {public}");
        }
    }
    Ok(Outcome::Success)
}

/// Runs `cofre completions SHELL`: clap_complete writes them from the
/// command line's own definition.
pub fn completions(
    args: &crate::cli::CompletionsArgs,
    out: &mut dyn Write,
) -> Result<Outcome, anyhow::Error> {
    use clap::CommandFactory;
    use clap_complete::Shell as S;
    let shell = match args.shell {
        crate::cli::Shell::Bash => S::Bash,
        crate::cli::Shell::Zsh => S::Zsh,
        crate::cli::Shell::Fish => S::Fish,
    };
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut cmd, "cofre", out);
    Ok(Outcome::Success)
}

/// Runs `cofre man`: clap_mangen renders the manual page, with the
/// environment variables section the long help carries.
pub fn man(out: &mut dyn Write) -> Result<Outcome, anyhow::Error> {
    use clap::CommandFactory;
    let cmd = crate::cli::Cli::command();
    clap_mangen::Man::new(cmd).render(out)?;
    Ok(Outcome::Success)
}
