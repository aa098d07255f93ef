//! `cofre keygen`: a new age identity, as `age-keygen` makes it.

use std::io::Write;

use anyhow::bail;

use crate::archive::crypt;
use crate::cli::KeygenArgs;

use super::Outcome;

/// Runs `cofre keygen`.
pub fn run(args: &KeygenArgs) -> Result<Outcome, anyhow::Error> {
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
            let mut out = std::io::stdout().lock();
            out.write_all(crypt::identity_text(&identity, "").as_bytes())?;
            eprintln!("Public key: {public}");
        }
    }
    Ok(Outcome::Success)
}
