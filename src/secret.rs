//! Keeping secrets out of logs and error messages.
//!
//! Two layers: values that are secret are held in [`Secret`], whose `Debug`
//! and `Display` print `***`; and every secret the configuration loads is
//! registered here so that [`scrub`] can erase it from any text that leaves the
//! process (log lines, the final error message), whatever library produced it.

use std::fmt;
use std::sync::{Mutex, OnceLock};

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
    /// whose password part is registered on its own, so the rest of it can
    /// still be shown).
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

/// Remembers `value` as a secret. Very short values are not registered: they
/// would erase ordinary words from messages and protect nothing.
pub fn register(value: &str) {
    if value.len() < 4 {
        return;
    }
    let mut secrets = registry().lock().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_owned());
        // Longest first, so a secret that contains another is erased whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Returns `text` with every registered secret (and its percent-encoded form,
/// as it appears inside a URI) replaced by `***`.
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

/// Registers the password of a MongoDB URI (decoded, and as written).
pub fn register_uri(uri: &str) {
    if let Some(p) = uri_password(uri) {
        register(&p);
    }
    if let Some(raw) = raw_uri_password(uri) {
        register(raw);
    }
}

/// The password as it is written in the URI (still percent-encoded).
fn raw_uri_password(uri: &str) -> Option<&str> {
    let rest = &uri[uri.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p)
}

/// A MongoDB URI with its password replaced by `***`, for messages.
pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_owned();
    };
    let rest = &uri[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let redacted = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{}://{}@{}", &uri[..scheme_end], redacted, &rest[at + 1..])
        }
        None => uri.to_owned(),
    }
}

/// The password inside a MongoDB URI, decoded, if it has one.
pub fn uri_password(uri: &str) -> Option<String> {
    let rest = &uri[uri.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    Some(percent_decode(password))
}

/// Percent-decoding of a URI component; kept here because it is eight lines
/// and the only one the crate needs outside the MongoDB driver.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact_uri("mongodb://app:s3cret@db:27017/app?authSource=admin"),
            "mongodb://app:***@db:27017/app?authSource=admin"
        );
        assert_eq!(redact_uri("mongodb://db/app"), "mongodb://db/app");
        assert_eq!(
            redact_uri("mongodb+srv://u:p%40ss@cluster.example/x"),
            "mongodb+srv://u:***@cluster.example/x"
        );
    }

    #[test]
    fn finds_the_decoded_password() {
        assert_eq!(
            uri_password("mongodb://u:p%40ss@h/x").as_deref(),
            Some("p@ss")
        );
        assert_eq!(uri_password("mongodb://h/x"), None);
    }

    #[test]
    fn scrub_erases_registered_secrets() {
        register("hunter2-very-secret");
        assert_eq!(
            scrub("login with hunter2-very-secret failed"),
            "login with *** failed"
        );
    }
}
