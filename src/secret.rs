//! Keeping secrets out of every output.
//!
//! Two layers. Where a secret is shown at all (a MongoDB URI in a message
//! or the manifest), it is shown through [`redact_uri`], the one routine
//! that reads a URI, and it reads it exactly as the MongoDB driver does.
//! And every secret the configuration loads is registered here, in each
//! form it can take in text (as written, percent-encoded, JSON- and
//! Debug-escaped), so that [`scrub`] erases it from anything that leaves the
//! process (log lines, errors, state files, `status`), whatever library
//! produced the text. Values that are secret are held in [`Secret`], whose
//! `Debug` and `Display` print `***`.

use std::fmt;
use std::sync::{Mutex, OnceLock};

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret and registers it for [`scrub`].
    pub fn new(value: String) -> Self {
        register(&value);
        Secret(value)
    }

    /// Wraps a value that is not itself registered for [`scrub`] (a URI,
    /// whose secret parts are registered on their own by [`redact_uri`], so
    /// the rest of it can still be shown).
    pub fn unregistered(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

fn registry() -> &'static Mutex<Vec<String>> {
    static REGISTRY: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

fn insert(secrets: &mut Vec<String>, value: String) {
    if value.len() >= 4 && !secrets.contains(&value) {
        secrets.push(value);
    }
}

/// Remembers `value` as a secret, in every form it can take in text. Very
/// short values are not registered: they would erase ordinary words from
/// messages and protect nothing.
pub fn register(value: &str) {
    if value.len() < 4 {
        return;
    }
    let mut secrets = registry().lock().unwrap_or_else(|e| e.into_inner());
    insert(&mut secrets, value.to_owned());
    insert(
        &mut secrets,
        utf8_percent_encode(value, NON_ALPHANUMERIC).to_string(),
    );
    let json = serde_json::to_string(value).unwrap_or_default();
    insert(&mut secrets, json[1..json.len() - 1].to_owned());
    let debug = format!("{value:?}");
    insert(&mut secrets, debug[1..debug.len() - 1].to_owned());
    // Longest first, so a secret that contains another is erased whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Returns `text` with every registered secret replaced by `***`.
pub fn scrub(text: &str) -> String {
    let secrets = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_owned();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// URI options whose values are secrets.
const SECRET_OPTIONS: &[&str] = &[
    "tlscertificatekeyfilepassword",
    "sslclientcertificatekeypassword",
    "authmechanismproperties",
    "password",
];

/// Redacts the values of secret options in `options` (`a=b&c=d`),
/// registering them.
fn redact_options(options: &str) -> String {
    options
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if SECRET_OPTIONS.contains(&key.to_ascii_lowercase().as_str()) => {
                register(value);
                let decoded = percent_decode_str(value).decode_utf8_lossy().into_owned();
                register(&decoded);
                // authMechanismProperties=NAME:value,NAME:value
                for prop in decoded.split(',') {
                    if let Some((_, v)) = prop.split_once(':') {
                        register(v);
                    }
                }
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A MongoDB URI for display: its password and secret options replaced by
/// `***`, and all of them registered for [`scrub`].
///
/// The URI is split exactly as the MongoDB driver splits it (scheme at the
/// first `://`, options at the first `?`, credentials before the last `@`,
/// password after the first `:` of those), and the driver's own parser
/// must accept it, so what is redacted is what the driver will use as the
/// password. When the driver would not accept it, everything between `://`
/// and the last `@` is redacted, whatever it holds.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let parses = mongodb::options::ConnectionString::parse(uri).is_ok();
    if !parses {
        return match uri.rfind('@') {
            Some(at) if at > scheme.len() + 3 => {
                let hidden = &uri[scheme.len() + 3..at];
                register(hidden);
                if let Some((_, pass)) = hidden.split_once(':') {
                    register(pass);
                }
                let after = &uri[at + 1..];
                let after = match after.split_once('?') {
                    Some((hosts, opts)) => format!("{hosts}?{}", redact_options(opts)),
                    None => after.to_owned(),
                };
                format!("{scheme}://***@{after}")
            }
            _ => match rest.split_once('?') {
                Some((pre, opts)) => format!("{scheme}://{pre}?{}", redact_options(opts)),
                None => uri.to_owned(),
            },
        };
    }
    let (pre_options, options) = match rest.split_once('?') {
        Some((p, o)) => (p, Some(o)),
        None => (rest, None),
    };
    let shown_pre = match pre_options.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = match userinfo.split_once(':') {
                Some((user, pass)) => {
                    register(pass);
                    register(&percent_decode_str(pass).decode_utf8_lossy());
                    format!("{user}:***")
                }
                None => userinfo.to_owned(),
            };
            format!("{user}@{hosts}")
        }
        None => pre_options.to_owned(),
    };
    match options {
        Some(o) => format!("{scheme}://{shown_pre}?{}", redact_options(o)),
        None => format!("{scheme}://{shown_pre}"),
    }
}

/// Whether the MongoDB driver accepts `uri` as a connection string.
pub fn uri_parses(uri: &str) -> bool {
    mongodb::options::ConnectionString::parse(uri).is_ok()
}

/// Registers a URI's secrets without showing it.
pub fn register_uri(uri: &str) {
    let _ = redact_uri(uri);
}

/// Writes a new private file (0600, its directory made 0700): whole or not
/// at all, never over an existing file or through a symlink. The text goes
/// to a temporary file beside it, which is synced and then linked into
/// place, so a process killed while writing a key leaves no empty key that
/// every later run would fail on.
pub fn write_private_new(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // tempfile creates its files 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".cofre-key-")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_is_written_whole_once_and_never_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("keys/signing.key");
        write_private_new(&key, "secret text\n").unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "secret text\n");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(key.parent().unwrap()), 0o700);
        // Never over an existing file, nor through a symlink.
        assert!(write_private_new(&key, "other").is_err());
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "secret text\n");
        let outside = dir.path().join("outside");
        let link = dir.path().join("keys/link.key");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(write_private_new(&link, "other").is_err());
        assert!(!outside.exists());
        // No temporary file is left behind either way.
        let names: Vec<_> = std::fs::read_dir(key.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact_uri("mongodb://app:s3cret@db:27017/app?authSource=admin"),
            "mongodb://app:***@db:27017/app?authSource=admin"
        );
        assert_eq!(redact_uri("mongodb://db/app"), "mongodb://db/app");
        assert_eq!(
            redact_uri("mongodb://u:p%40ss@cluster.example/x"),
            "mongodb://u:***@cluster.example/x"
        );
    }

    #[test]
    fn passwords_with_reserved_characters_never_show() {
        for (uri, password) in [
            ("mongodb://u:pa/ss?w#o:r@d1@db:27017/app", "pa/ss?w#o:r@d1"),
            ("mongodb://u:p@ss@word9@db/app", "p@ss@word9"),
            ("mongodb://u:sl/ash99@db/app", "sl/ash99"),
            ("mongodb://u:qu?est9@db/app", "qu?est9"),
            ("mongodb://u:ha#sh99@db/app", "ha#sh99"),
        ] {
            let shown = redact_uri(uri);
            assert!(!shown.contains(password), "{uri} -> {shown}");
            // Every fragment the driver might quote is scrubbed as well.
            let noisy = format!("error: {uri} failed; parts {password}");
            assert!(!scrub(&noisy).contains(password), "{}", scrub(&noisy));
            assert!(shown.ends_with("/app"), "{shown}");
        }
    }

    #[test]
    fn secret_options_are_redacted() {
        let uri = "mongodb://db/app?tls=true&tlsCertificateKeyFilePassword=k3ypass&authMechanismProperties=AWS_SESSION_TOKEN:tok3nvalue";
        let shown = redact_uri(uri);
        assert!(
            !shown.contains("k3ypass") && !shown.contains("tok3nvalue"),
            "{shown}"
        );
        assert!(shown.contains("tls=true"), "{shown}");
        assert!(!scrub("token tok3nvalue").contains("tok3nvalue"));
    }

    #[test]
    fn scrub_erases_registered_secrets_in_every_form() {
        register("hunter2/\"very@secret");
        for form in [
            "hunter2/\"very@secret",
            "hunter2%2F%22very%40secret",
            "hunter2/\\\"very@secret",
        ] {
            assert_eq!(
                scrub(&format!("login with {form} failed")),
                "login with *** failed"
            );
        }
    }
}
