//! MongoDB: a native dump into the archive and a restore from it, in
//! mongodump's own layout and formats.
//!
//! - [`dump`] reads each collection with the official driver as raw BSON
//!   (never decoded and re-encoded) into `mongodb/<db>/<coll>.bson`, with
//!   `<coll>.metadata.json` beside it, all at one cluster time on a replica set.
//! - [`load`] puts a dump directory (from an archive, or written by
//!   `mongodump`) back, never touching a collection that exists unless asked.
//! - [`metadata`] is the `.metadata.json` format and index-spec cleaning.
//!
//! The driver is async; these modules run it on a small tokio runtime of
//! their own, so the rest of cofre stays synchronous.

pub mod concurrency;
pub mod dump;
pub mod load;
pub mod metadata;

use std::time::Duration;

use mongodb::Client;
use mongodb::bson::doc;
use mongodb::error::ErrorKind;
use mongodb::options::ClientOptions;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::secret::{self, Secret};

/// MongoDB failures, each with what to check. Messages never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    /// The connection string is unusable.
    #[error("the MongoDB connection string {uri} cannot be used: {detail}; check MONGODB_URI")]
    BadUri {
        /// The URI, password redacted.
        uri: String,
        /// The driver's words.
        detail: String,
    },
    /// No server answered.
    #[error(
        "cannot reach MongoDB at {uri} ({detail}); is MongoDB running, and are the host and port in MONGODB_URI right?"
    )]
    Unreachable {
        /// The URI, password redacted.
        uri: String,
        /// The driver's words.
        detail: String,
    },
    /// The server refused the credentials.
    #[error(
        "MongoDB at {uri} refused the credentials ({detail}); check the user name, password and authSource in MONGODB_URI"
    )]
    Auth {
        /// The URI, password redacted.
        uri: String,
        /// The driver's words.
        detail: String,
    },
    /// A database or collection could not be read.
    #[error(
        "cannot read {what} from MongoDB ({detail}); check that the user may read it (the built-in backup role can)"
    )]
    Read {
        /// What was being read.
        what: String,
        /// The driver's words.
        detail: String,
    },
    /// The connection broke during the work.
    #[error(
        "the connection to MongoDB broke while reading {what} ({detail}); is the server still running? Nothing was kept, retry when it is back"
    )]
    Lost {
        /// What was being read.
        what: String,
        /// The driver's words.
        detail: String,
    },
    /// Writing a restore failed.
    #[error("cannot restore {what} into MongoDB ({detail}); {hint}")]
    Write {
        /// The namespace.
        what: String,
        /// The driver's words.
        detail: String,
        /// What to check.
        hint: String,
    },
    /// A dump directory or file is unusable.
    #[error("{path}: {detail}")]
    Dump {
        /// The file or directory.
        path: String,
        /// What is wrong and what to check.
        detail: String,
    },
    /// Nowhere to restore to.
    #[error(
        "the archive holds a database dump but no MongoDB server is configured to restore it into; pass --mongo-uri URI or set MONGODB_URI (or restore only the files with --files-only)"
    )]
    NoTarget,
    /// Local I/O (spool files, archive writing).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A stop signal arrived.
    #[error("the dump was stopped before it finished")]
    Cancelled,
}

impl crate::exit::Coded for MongoError {
    fn exit(&self) -> crate::exit::Exit {
        match self {
            MongoError::BadUri { .. } => crate::exit::Exit::Usage,
            MongoError::Unreachable { .. }
            | MongoError::Auth { .. }
            | MongoError::Read { .. }
            | MongoError::Lost { .. }
            | MongoError::Write { .. }
            | MongoError::Dump { .. }
            | MongoError::NoTarget
            | MongoError::Io { .. }
            | MongoError::Cancelled => crate::exit::Exit::Failure,
        }
    }
}

/// Which databases and collections to dump.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Databases (empty: the URI's, or every non-system one).
    pub databases: Vec<String>,
    /// Collections: `db.coll` or `coll` (empty: all).
    pub collections: Vec<String>,
}

/// A database to back up: its server, and what of it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The connection string (its password registered as a secret).
    pub uri: Secret,
    /// The databases and collections.
    pub selection: Selection,
}

impl Selection {
    /// Whether a collection is selected.
    pub fn wants(&self, db: &str, coll: &str) -> bool {
        self.collections.is_empty()
            || self
                .collections
                .iter()
                .any(|c| c == coll || c.split_once('.').is_some_and(|(d, n)| d == db && n == coll))
    }
}

/// Databases that are never dumped unless named.
pub const SYSTEM_DATABASES: &[&str] = &["admin", "local", "config"];

/// mongodump's file-name escaping of collection names is Go's
/// `url.QueryEscape`: everything but `A-Z a-z 0-9 - _ . ~` is
/// percent-encoded, and a space becomes `+`.
const QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b' ');

/// Characters escaped in a database name put in a URI.
const DB_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Escaped names longer than this are shortened, as mongodump does, so
/// `<name>.metadata.json.gz` fits in 255 bytes.
const MAX_ESCAPED: usize = 238;

/// A collection name as mongodump writes it in file names (`cafés` →
/// `caf%C3%A9s`, `a b` → `a+b`); a name that escapes to more than 238
/// bytes becomes its first 208 escaped bytes, `%24` and the base64url
/// SHA-1 of the name (mongorestore then takes the real name from the
/// metadata).
pub fn escape_name(name: &str) -> String {
    let escaped = utf8_percent_encode(name, QUERY_ESCAPE)
        .to_string()
        .replace(' ', "+");
    if escaped.len() <= MAX_ESCAPED {
        return escaped;
    }
    use base64::Engine;
    use sha1::Digest;
    let hash = sha1::Sha1::digest(name.as_bytes());
    format!(
        "{}%24{}",
        &escaped[..208],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash)
    )
}

/// The inverse of [`escape_name`] (Go's `url.QueryUnescape`).
pub fn unescape_name(file_stem: &str) -> String {
    percent_decode_str(&file_stem.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The parts of a connection string, split as the driver splits it (and
/// as [`secret::redact_uri`] does): scheme, credentials, hosts, database,
/// options.
struct UriParts<'a> {
    scheme: &'a str,
    credentials: Option<&'a str>,
    hosts: &'a str,
    database: &'a str,
    options: Option<&'a str>,
}

fn split_uri(uri: &str) -> Option<UriParts<'_>> {
    let (scheme, rest) = uri.split_once("://")?;
    let (pre, options) = match rest.split_once('?') {
        Some((p, o)) => (p, Some(o)),
        None => (rest, None),
    };
    let (credentials, after) = match pre.rsplit_once('@') {
        Some((c, a)) => (Some(c), a),
        None => (None, pre),
    };
    let (hosts, database) = after.split_once('/').unwrap_or((after, ""));
    Some(UriParts {
        scheme,
        credentials,
        hosts,
        database,
        options,
    })
}

/// The database a connection string names, if any.
pub fn uri_database(uri: &str) -> Option<String> {
    let db = split_uri(uri)?.database;
    (!db.is_empty()).then(|| percent_decode_str(db).decode_utf8_lossy().into_owned())
}

/// The same connection string naming database `db`. Credentials that were
/// checked against the database the string named (no `authSource`) keep
/// being checked there: `authSource` is added.
pub fn with_database(uri: &str, db: &str) -> String {
    let Some(p) = split_uri(uri) else {
        return uri.to_owned();
    };
    let has_auth_source = p.options.is_some_and(|o| {
        o.split('&')
            .any(|kv| kv.to_ascii_lowercase().starts_with("authsource="))
    });
    let mut options: Vec<String> = p.options.map(|o| vec![o.to_owned()]).unwrap_or_default();
    if p.credentials.is_some() && !has_auth_source {
        let source = if p.database.is_empty() {
            "admin"
        } else {
            p.database
        };
        options.push(format!("authSource={source}"));
    }
    let credentials = p.credentials.map(|c| format!("{c}@")).unwrap_or_default();
    let db = utf8_percent_encode(db, DB_ESCAPE);
    let query = if options.is_empty() {
        String::new()
    } else {
        format!("?{}", options.join("&"))
    };
    format!("{}://{credentials}{}/{db}{query}", p.scheme, p.hosts)
}

/// A tokio runtime for the driver.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, MongoError> {
    crate::rt::with_workers().map_err(|source| MongoError::Io {
        what: "cannot start the MongoDB client runtime".into(),
        source,
    })
}

/// Classifies a driver error for a connection-level step.
pub(crate) fn connect_error(uri: &str, e: &mongodb::error::Error) -> MongoError {
    let shown = secret::redact_uri(uri);
    let detail = secret::scrub(&short(e));
    match e.kind.as_ref() {
        ErrorKind::Authentication { .. } => MongoError::Auth { uri: shown, detail },
        ErrorKind::Command(c) if c.code == 18 || c.code == 13 => {
            MongoError::Auth { uri: shown, detail }
        }
        ErrorKind::InvalidArgument { .. } | ErrorKind::InvalidTlsConfig { .. } => {
            MongoError::BadUri { uri: shown, detail }
        }
        _ => MongoError::Unreachable { uri: shown, detail },
    }
}

/// The indexes of `db.coll`, as `listIndexes` returns them.
pub(crate) async fn list_indexes(
    db: &mongodb::Database,
    coll: &str,
) -> Result<Vec<mongodb::bson::Document>, MongoError> {
    let what = format!("the indexes of {}.{coll}", db.name());
    let mut cursor = db
        .run_cursor_command(mongodb::bson::doc! { "listIndexes": coll })
        .await
        .map_err(|e| read_error(&what, &e))?;
    let mut out = Vec::new();
    while cursor.advance().await.map_err(|e| read_error(&what, &e))? {
        out.push(
            cursor
                .deserialize_current()
                .map_err(|e| read_error(&what, &e))?,
        );
    }
    Ok(out)
}

/// Classifies a driver error while reading `what`.
pub(crate) fn read_error(what: &str, e: &mongodb::error::Error) -> MongoError {
    let detail = secret::scrub(&short(e));
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. } => MongoError::Lost {
            what: what.to_owned(),
            detail,
        },
        ErrorKind::Authentication { .. } => MongoError::Auth {
            uri: String::new(),
            detail,
        },
        _ => MongoError::Read {
            what: what.to_owned(),
            detail,
        },
    }
}

/// The driver's message, on one line and not too long.
pub(crate) fn short(e: &mongodb::error::Error) -> String {
    let text = match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("{} ({}): {}", c.code_name, c.code, c.message),
        // The driver's text lists the whole topology; the first server
        // error in it is what a person needs ("Connection refused").
        ErrorKind::ServerSelection { message, .. } => match message.find("Error: ") {
            Some(i) => {
                let rest = &message[i + 7..];
                let end = rest
                    .find(", labels")
                    .or_else(|| rest.find(" }"))
                    .unwrap_or(rest.len());
                rest[..end].trim_start_matches("Kind: ").to_owned()
            }
            None => message.clone(),
        },
        ErrorKind::Authentication { message, .. } => message.clone(),
        _ => e.to_string(),
    };
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 300 {
        let mut cut = 300;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &line[..cut])
    } else {
        line
    }
}

/// Connects and checks that the server answers and accepts the credentials.
pub(crate) async fn connect(uri: &Secret) -> Result<(Client, ClientOptions), MongoError> {
    let text = uri.expose();
    let mut options = ClientOptions::parse(text)
        .await
        .map_err(|e| connect_error(text, &e))?;
    options.app_name.get_or_insert_with(|| "cofre".into());
    // A backup that cannot reach its database should say so in seconds,
    // not after the driver's 30 s default; the URI can still ask for more.
    if !text.contains("serverSelectionTimeoutMS") {
        options.server_selection_timeout = Some(Duration::from_secs(10));
    }
    if !text.contains("connectTimeoutMS") {
        options.connect_timeout = Some(Duration::from_secs(10));
    }
    let client = Client::with_options(options.clone()).map_err(|e| connect_error(text, &e))?;
    client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .map_err(|e| connect_error(text, &e))?;
    Ok((client, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_mongodump() {
        assert_eq!(escape_name("cafés"), "caf%C3%A9s");
        assert_eq!(escape_name("a/b c"), "a%2Fb+c");
        assert_eq!(escape_name("x.y-z_~$:@+"), "x.y-z_~%24%3A%40%2B");
        for name in ["cafés", "a/b c", "100%", "日本", "a+b"] {
            assert_eq!(unescape_name(&escape_name(name)), name);
        }
        // Long names are shortened as mongodump shortens them.
        let long = "x".repeat(300);
        let escaped = escape_name(&long);
        assert_eq!(escaped.len(), 208 + 3 + 27);
        assert!(escaped.starts_with(&"x".repeat(208)) && escaped[208..].starts_with("%24"));
    }

    #[test]
    fn a_uri_with_another_database() {
        let cases = [
            ("mongodb://h:1/app", "x", "mongodb://h:1/x"),
            (
                "mongodb://h1,h2/app?replicaSet=rs",
                "x",
                "mongodb://h1,h2/x?replicaSet=rs",
            ),
            ("mongodb://h/", "x", "mongodb://h/x"),
            ("mongodb://h", "x", "mongodb://h/x"),
            // Credentials stay checked where they were.
            (
                "mongodb://u:p%40ss@h/app",
                "x",
                "mongodb://u:p%40ss@h/x?authSource=app",
            ),
            ("mongodb://u:p@h", "x", "mongodb://u:p@h/x?authSource=admin"),
            (
                "mongodb://u:p@h/app?authSource=admin&tls=true",
                "x",
                "mongodb://u:p@h/x?authSource=admin&tls=true",
            ),
            (
                "mongodb+srv://u:p@cluster.example.com/app?retryWrites=true",
                "cofre_drill_1_app",
                "mongodb+srv://u:p@cluster.example.com/cofre_drill_1_app?retryWrites=true&authSource=app",
            ),
        ];
        for (uri, db, want) in cases {
            assert_eq!(with_database(uri, db), want, "{uri}");
            assert!(crate::secret::uri_parses(want), "{want}");
        }
        assert_eq!(
            uri_database("mongodb://u:p@h/app?x=1").as_deref(),
            Some("app")
        );
        assert_eq!(uri_database("mongodb://h/?x=1"), None);
        assert_eq!(uri_database("mongodb://a/b@h/app").as_deref(), Some("app"));
    }

    #[test]
    fn selection() {
        let s = Selection {
            databases: vec![],
            collections: vec!["app.users".into(), "logs".into()],
        };
        assert!(s.wants("app", "users"));
        assert!(!s.wants("other", "users"));
        assert!(s.wants("other", "logs"));
        assert!(Selection::default().wants("x", "y"));
    }
}
