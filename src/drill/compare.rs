//! The drill's comparison: what the scratch databases hold against what the
//! archive says they should, per collection.
//!
//! - **Documents**: the count on the server against the manifest's, and
//!   the order-independent [`Digest`] of every document read back from the
//!   server against the digest of the dump file the restore read (whose
//!   BLAKE3 the archive's manifest had already checked).
//! - **Indexes**: names and keys against the dump's metadata (cleaned as
//!   the restore cleans them); the `_id` index aside.
//! - **Options**: every option in the metadata is on the server with the
//!   same value (a server may add options of its own); for a view, its
//!   source and pipeline.
//!
//! Numbers compare by value (`1`, `1.0` and `NumberLong(1)` are one key
//! direction), document field order counts (compound keys depend on it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use mongodb::Client;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};

use crate::archive::manifest::{CollectionKind, MongoSection};
use crate::mongo::load::{Digest, RestoredCollection, is_system};
use crate::mongo::{MongoError, list_indexes, metadata, read_error};

/// What the comparison found.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Collections compared.
    pub collections: u64,
    /// Documents read back.
    pub documents: u64,
    /// Each difference, one sentence.
    pub mismatches: Vec<String>,
}

/// Compares every collection of the manifest with its restored copy.
pub async fn compare(
    client: &Client,
    manifest: &MongoSection,
    restored: &[RestoredCollection],
    cancel: &AtomicBool,
) -> Result<Comparison, MongoError> {
    let mut out = Comparison::default();
    for record in &manifest.collections {
        if is_system(&record.db, &record.name) {
            continue;
        }
        let ns = format!("{}.{}", record.db, record.name);
        let Some(r) = restored
            .iter()
            .find(|r| r.source_db == record.db && r.name == record.name)
        else {
            out.mismatches
                .push(format!("{ns}: in the archive but not restored"));
            continue;
        };
        if cancel.load(Ordering::Relaxed) {
            return Err(MongoError::Cancelled);
        }
        out.collections += 1;
        let db = client.database(&r.db);
        let server_options = options(&db, &r.name).await?;
        let Some(server_options) = server_options else {
            out.mismatches
                .push(format!("{ns}: not on the server after the restore"));
            continue;
        };
        for (key, want) in &r.metadata.options {
            match server_options.get(key) {
                Some(got) if same(want, got) => {}
                Some(got) => out.mismatches.push(format!(
                    "{ns}: option {key} is {got} on the server, {want} in the archive"
                )),
                None => out.mismatches.push(format!(
                    "{ns}: option {key} ({want}) is missing on the server"
                )),
            }
        }
        if r.metadata.kind == CollectionKind::View {
            continue;
        }
        let data = if r.metadata.kind == CollectionKind::Timeseries {
            format!("system.buckets.{}", r.name)
        } else {
            r.name.clone()
        };
        let found = scan(&db, &data, cancel).await?;
        out.documents += found.documents;
        if found.documents != record.documents {
            out.mismatches.push(format!(
                "{ns}: {} documents on the server, {} in the archive",
                found.documents, record.documents
            ));
        } else if found != r.digest {
            out.mismatches.push(format!(
                "{ns}: the documents on the server differ from the archive's \
                 (same count, different content: the server changed some of them)"
            ));
        }
        let want = index_keys(
            r.metadata
                .indexes
                .iter()
                .map(|i| metadata::clean_index(i).0),
        );
        let got = index_keys(list_indexes(&db, &r.name).await?.into_iter());
        for (name, key) in &want {
            match got.get(name) {
                Some(k) if same(&Bson::Document(key.clone()), &Bson::Document(k.clone())) => {}
                Some(k) => out.mismatches.push(format!(
                    "{ns}: index {name} has key {k} on the server, {key} in the archive"
                )),
                None => out
                    .mismatches
                    .push(format!("{ns}: index {name} {key} is missing on the server")),
            }
        }
        for name in got.keys().filter(|n| !want.contains_key(*n)) {
            out.mismatches.push(format!(
                "{ns}: index {name} is on the server but not in the archive"
            ));
        }
    }
    Ok(out)
}

/// Index name → key, the `_id` index left out.
fn index_keys(specs: impl Iterator<Item = Document>) -> BTreeMap<String, Document> {
    specs
        .filter(|s| !metadata::is_id_index(s))
        .filter_map(|s| {
            let name = s.get_str("name").ok()?.to_owned();
            let key = s.get_document("key").ok()?.clone();
            Some((name, key))
        })
        .collect()
}

/// Every document of `coll`, counted into a digest.
async fn scan(
    db: &mongodb::Database,
    coll: &str,
    cancel: &AtomicBool,
) -> Result<Digest, MongoError> {
    let what = format!("{}.{coll}", db.name());
    let mut cursor = db
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .await
        .map_err(|e| read_error(&what, &e))?;
    let mut digest = Digest::default();
    while cursor.advance().await.map_err(|e| read_error(&what, &e))? {
        digest.add(cursor.current().as_bytes());
        if digest.documents % 1024 == 0 && cancel.load(Ordering::Relaxed) {
            return Err(MongoError::Cancelled);
        }
    }
    Ok(digest)
}

/// The collection's options as `listCollections` gives them, or `None`
/// when it is not there.
async fn options(db: &mongodb::Database, coll: &str) -> Result<Option<Document>, MongoError> {
    let what = format!("the options of {}.{coll}", db.name());
    let mut cursor = db
        .run_cursor_command(doc! { "listCollections": 1, "filter": { "name": coll } })
        .await
        .map_err(|e| read_error(&what, &e))?;
    if !cursor.advance().await.map_err(|e| read_error(&what, &e))? {
        return Ok(None);
    }
    let spec: Document = cursor
        .deserialize_current()
        .map_err(|e| read_error(&what, &e))?;
    Ok(Some(
        spec.get_document("options").cloned().unwrap_or_default(),
    ))
}

/// Equal values, numbers by value, documents field by field in order.
fn same(a: &Bson, b: &Bson) -> bool {
    fn number(v: &Bson) -> Option<f64> {
        match v {
            Bson::Int32(n) => Some(f64::from(*n)),
            Bson::Int64(n) => Some(*n as f64),
            Bson::Double(n) => Some(*n),
            Bson::Decimal128(d) => d.to_string().parse().ok(),
            _ => None,
        }
    }
    match (a, b) {
        (Bson::Document(x), Bson::Document(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        (Bson::Array(x), Bson::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_table() {
        let cases = [
            (Bson::Int32(1), Bson::Double(1.0), true),
            (Bson::Int64(-1), Bson::Int32(-1), true),
            (Bson::Int32(1), Bson::Int32(2), false),
            (Bson::String("1".into()), Bson::Int32(1), false),
            (
                Bson::Document(doc! { "a": 1, "b": -1 }),
                Bson::Document(doc! { "a": 1.0, "b": -1i64 }),
                true,
            ),
            // Field order matters: a compound key {a, b} is not {b, a}.
            (
                Bson::Document(doc! { "a": 1, "b": 1 }),
                Bson::Document(doc! { "b": 1, "a": 1 }),
                false,
            ),
            (
                Bson::Document(doc! { "a": 1 }),
                Bson::Document(doc! { "a": 1, "b": 1 }),
                false,
            ),
            (
                Bson::Array(vec![Bson::Int32(1), Bson::String("x".into())]),
                Bson::Array(vec![Bson::Double(1.0), Bson::String("x".into())]),
                true,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(same(&a, &b), want, "{a} vs {b}");
        }
    }

    #[test]
    fn index_keys_leave_out_id() {
        let keys = index_keys(
            vec![
                doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" },
                doc! { "v": 2, "key": { "to": 1, "sentAt": -1 }, "name": "to_1_sentAt_-1" },
            ]
            .into_iter(),
        );
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["to_1_sentAt_-1"], doc! { "to": 1, "sentAt": -1 });
    }
}
