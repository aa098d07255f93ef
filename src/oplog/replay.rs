//! Replaying oplog entries natively: the server needs no `applyOps`.
//!
//! - Consecutive inserts, updates or deletes of one collection go as one
//!   `insert`, `update` or `delete` command (up to 1000 entries or 8 MiB),
//!   in order: one round trip for a batch, where replaying entry by entry
//!   costs one each.
//! - Updates: a replacement document replaces; `$v: 2` diffs (mongod's
//!   `u`/`i`/`d`/`s<field>`/array form, and the
//!   `updatedFields`/`removedFields`/`truncatedArrays` form) become `$set`,
//!   `$unset` and `$push` with `$slice`; older modifier documents are sent
//!   as they are.
//! - DDL: `create`, `drop`, `dropDatabase`, `renameCollection`,
//!   `createIndexes` (and `commitIndexBuild`), `dropIndexes`, `collMod`.
//! - Transactions: an `applyOps` entry's operations, `partialTxn` chains
//!   (kept until their last entry; an incomplete chain at the point is not
//!   applied), prepared transactions on `commitTransaction`; a server that
//!   writes a transaction as entries sharing one timestamp needs nothing
//!   more (a point includes all of a timestamp or none).
//!
//! What it may touch is fixed up front: only databases the base archive's
//! dump holds (mapped as the restore maps them), never `admin`, `config`,
//! `local` or `system.*` collections, and there only collections this
//! restore wrote or that did not exist before the replay made them. An
//! entry for anything else is skipped and counted, so a hostile slice can
//! change nothing outside what the restore names.

use std::collections::{HashMap, HashSet};

use mongodb::bson::{
    Bson, Document, RawArrayBuf, RawBson, RawBsonRef, RawDocument, RawDocumentBuf, doc,
};
use mongodb::{Client, Database};

use super::Ts;
use crate::mongo::MongoError;
use crate::mongo::load::Target;

/// Entries per batch, and bytes.
const BATCH_OPS: usize = 1000;
const BATCH_BYTES: usize = 8 << 20;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Entries applied (inside transactions counted one by one).
    pub applied: u64,
    /// Entries skipped: no-ops, other databases, system collections,
    /// collections the restore does not own.
    pub skipped: u64,
    /// The last entry applied or skipped.
    pub last: Option<Ts>,
    /// Commands sent to the server.
    pub commands: u64,
    /// What was left alone, once per namespace.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Update,
    Delete,
}

struct Batch {
    db: String,
    coll: String,
    kind: Kind,
    items: RawArrayBuf,
    count: usize,
    bytes: usize,
}

/// Applies entries to the target server.
pub struct Replayer {
    client: Client,
    target: Target,
    allowed: HashSet<String>,
    owned: HashSet<(String, String)>,
    foreign: HashSet<(String, String)>,
    batch: Option<Batch>,
    partial: HashMap<Vec<u8>, Vec<RawDocumentBuf>>,
    /// The result so far.
    pub done: Replayed,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replayer({:?})", self.done)
    }
}

fn bad(what: &str, detail: impl std::fmt::Display) -> MongoError {
    MongoError::Read {
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

fn write_err(ns: &str, e: &mongodb::error::Error) -> MongoError {
    MongoError::Read {
        what: format!("replaying the oplog into {ns}"),
        detail: crate::mongo::short(e),
    }
}

/// `db.coll` split; `None` for anything else.
fn split_ns(ns: &str) -> Option<(&str, &str)> {
    let (db, coll) = ns.split_once('.')?;
    (!db.is_empty() && !coll.is_empty()).then_some((db, coll))
}

fn is_system(db: &str, coll: &str) -> bool {
    matches!(db, "admin" | "config" | "local") || coll.starts_with("system.")
}

/// The key of a transaction: its session id and transaction number.
fn txn_key(entry: &RawDocument) -> Vec<u8> {
    let mut k = entry
        .get_document("lsid")
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    if let Ok(Some(n)) = entry.get("txnNumber") {
        k.extend_from_slice(format!("{n:?}").as_bytes());
    }
    k
}

impl Replayer {
    /// Replays into `target` (its URI already checked); `allowed` are the
    /// source databases the base's dump holds; `owned` the (target
    /// database, collection) pairs the base restore wrote.
    pub fn new(
        client: Client,
        target: Target,
        allowed: impl IntoIterator<Item = String>,
        owned: impl IntoIterator<Item = (String, String)>,
    ) -> Replayer {
        Replayer {
            client,
            target,
            allowed: allowed.into_iter().collect(),
            owned: owned.into_iter().collect(),
            foreign: HashSet::new(),
            batch: None,
            partial: HashMap::new(),
            done: Replayed::default(),
        }
    }

    fn skip(&mut self, note: Option<String>) {
        self.done.skipped += 1;
        if let Some(n) = note
            && self.done.notes.len() < 100
            && !self.done.notes.contains(&n)
        {
            self.done.notes.push(n);
        }
    }

    /// Whether entries for `(db, coll)` (target names) may be applied:
    /// the restore owns it, or it does not exist yet (the replay makes it,
    /// and then owns it).
    async fn may_touch(&mut self, db: &str, coll: &str) -> Result<bool, MongoError> {
        let key = (db.to_owned(), coll.to_owned());
        if self.owned.contains(&key) {
            return Ok(true);
        }
        if self.foreign.contains(&key) {
            return Ok(false);
        }
        let exists = self
            .client
            .database(db)
            .list_collection_names()
            .filter(doc! { "name": coll })
            .await
            .map_err(|e| bad(&format!("the collections of {db}"), crate::mongo::short(&e)))?
            .iter()
            .any(|n| n == coll);
        if exists {
            self.foreign.insert(key);
            Ok(false)
        } else {
            self.owned.insert(key);
            Ok(true)
        }
    }

    /// The target names of a source namespace, when it may be replayed.
    fn map(&self, db: &str, coll: &str) -> Option<(String, String)> {
        if is_system(db, coll) || !self.allowed.contains(db) {
            return None;
        }
        Some((self.target.db_for(db), coll.to_owned()))
    }

    /// Applies one entry (its timestamp already checked against the point).
    pub async fn apply(&mut self, ts: Ts, entry: &RawDocument) -> Result<(), MongoError> {
        self.done.last = Some(ts);
        self.apply_op(entry, false).await
    }

    async fn apply_op(&mut self, entry: &RawDocument, inner: bool) -> Result<(), MongoError> {
        let op = entry.get_str("op").unwrap_or("");
        let ns = entry.get_str("ns").unwrap_or("");
        match op {
            "n" => {
                self.skip(None);
                Ok(())
            }
            "i" | "u" | "d" => self.crud(op, ns, entry).await,
            "c" if !inner || ns.ends_with(".$cmd") => self.command(ns, entry, inner).await,
            _ => {
                self.skip(Some(format!("an entry of unknown kind {op:?} was skipped")));
                Ok(())
            }
        }
    }

    async fn crud(&mut self, op: &str, ns: &str, entry: &RawDocument) -> Result<(), MongoError> {
        let Some((sdb, scoll)) = split_ns(ns) else {
            self.skip(Some(format!("an entry with namespace {ns:?} was skipped")));
            return Ok(());
        };
        let Some((db, coll)) = self.map(sdb, scoll) else {
            self.skip(None);
            return Ok(());
        };
        if !self.may_touch(&db, &coll).await? {
            self.skip(Some(format!(
                "{db}.{coll} existed before this restore and was not restored by it: its \
                 oplog entries were left out"
            )));
            return Ok(());
        }
        let o = entry
            .get_document("o")
            .map_err(|_| bad("an oplog entry", format!("{ns}: no `o` document")))?;
        let (kind, item) = match op {
            "i" => (Kind::Insert, RawBson::Document(o.to_raw_document_buf())),
            "d" => {
                let mut d = RawDocumentBuf::new();
                d.append("q", o.to_raw_document_buf());
                d.append("limit", 1);
                (Kind::Delete, RawBson::Document(d))
            }
            _ => {
                let q = entry
                    .get_document("o2")
                    .map_err(|_| bad("an oplog entry", format!("{ns}: an update without `o2`")))?;
                let Some(updates) = update_for(o)? else {
                    self.skip(None);
                    return Ok(());
                };
                // A truncation first, then the rest: two statements, in order.
                for u in updates {
                    let mut s = RawDocumentBuf::new();
                    s.append("q", q.to_raw_document_buf());
                    s.append("u", u);
                    s.append("upsert", false);
                    self.push(&db, &coll, Kind::Update, RawBson::Document(s))
                        .await?;
                }
                self.done.applied += 1;
                return Ok(());
            }
        };
        self.push(&db, &coll, kind, item).await?;
        self.done.applied += 1;
        Ok(())
    }

    async fn push(
        &mut self,
        db: &str,
        coll: &str,
        kind: Kind,
        item: RawBson,
    ) -> Result<(), MongoError> {
        let size = match &item {
            RawBson::Document(d) => d.as_bytes().len(),
            _ => 16,
        };
        let fits = self.batch.as_ref().is_some_and(|b| {
            b.db == db
                && b.coll == coll
                && b.kind == kind
                && b.count < BATCH_OPS
                && b.bytes + size <= BATCH_BYTES
        });
        if !fits {
            self.flush().await?;
            self.batch = Some(Batch {
                db: db.to_owned(),
                coll: coll.to_owned(),
                kind,
                items: RawArrayBuf::new(),
                count: 0,
                bytes: 0,
            });
        }
        let b = self.batch.as_mut().expect("just made");
        b.items.push(item);
        b.count += 1;
        b.bytes += size;
        Ok(())
    }

    /// Sends the pending batch.
    pub async fn flush(&mut self) -> Result<(), MongoError> {
        let Some(b) = self.batch.take() else {
            return Ok(());
        };
        let ns = format!("{}.{}", b.db, b.coll);
        let mut cmd = RawDocumentBuf::new();
        let (verb, field) = match b.kind {
            Kind::Insert => ("insert", "documents"),
            Kind::Update => ("update", "updates"),
            Kind::Delete => ("delete", "deletes"),
        };
        cmd.append(verb, b.coll.as_str());
        cmd.append(field, b.items.clone());
        cmd.append("ordered", true);
        let db = self.client.database(&b.db);
        self.done.commands += 1;
        let reply = db
            .run_raw_command(cmd)
            .await
            .map_err(|e| write_err(&ns, &e))?;
        let errors = reply
            .get_array("writeErrors")
            .ok()
            .filter(|a| !a.is_empty());
        if let Some(errors) = errors {
            let dup = errors.iter().all(|e| {
                e.as_document()
                    .and_then(|d| d.get_i32("code").ok())
                    .is_some_and(|c| c == 11000)
            });
            if b.kind == Kind::Insert && dup {
                // Already there (an entry the base's dump held too):
                // written as the entry says, one by one.
                return self.upsert_inserts(&db, &b.coll, &b.items, &ns).await;
            }
            return Err(bad(
                &format!("replaying the oplog into {ns}"),
                format!("the server refused an entry: {:?}", errors.first()),
            ));
        }
        Ok(())
    }

    async fn upsert_inserts(
        &mut self,
        db: &Database,
        coll: &str,
        items: &RawArrayBuf,
        ns: &str,
    ) -> Result<(), MongoError> {
        let mut updates = RawArrayBuf::new();
        for item in items {
            let Ok(RawBsonRef::Document(d)) = item else {
                continue;
            };
            let id = d.get("_id").ok().flatten().map(RawBsonRef::to_raw_bson);
            let mut q = RawDocumentBuf::new();
            if let Some(id) = id {
                q.append("_id", id);
            }
            let mut s = RawDocumentBuf::new();
            s.append("q", q);
            s.append("u", d.to_raw_document_buf());
            s.append("upsert", true);
            updates.push(s);
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append("update", coll);
        cmd.append("updates", updates);
        cmd.append("ordered", true);
        self.done.commands += 1;
        db.run_raw_command(cmd)
            .await
            .map_err(|e| write_err(ns, &e))?;
        Ok(())
    }

    async fn command(
        &mut self,
        ns: &str,
        entry: &RawDocument,
        inner: bool,
    ) -> Result<(), MongoError> {
        self.flush().await?;
        let Some((sdb, _)) = split_ns(ns) else {
            self.skip(None);
            return Ok(());
        };
        let o: Document = entry
            .get_document("o")
            .ok()
            .and_then(|o| Document::try_from(o).ok())
            .ok_or_else(|| bad("an oplog entry", format!("{ns}: a command without `o`")))?;
        let Some((name, _)) = o.iter().next() else {
            self.skip(None);
            return Ok(());
        };
        let name = name.clone();
        // Transactions: their operations, checked one by one as entries.
        match name.as_str() {
            "applyOps" if !inner => return self.apply_ops(entry, &o).await,
            "commitTransaction" if !inner => {
                let ops = self.partial.remove(&txn_key(entry)).unwrap_or_default();
                for op in ops {
                    Box::pin(self.apply_op(&op, true)).await?;
                }
                return Ok(());
            }
            "abortTransaction" => {
                self.partial.remove(&txn_key(entry));
                self.skip(None);
                return Ok(());
            }
            _ => {}
        }
        if matches!(sdb, "admin" | "config" | "local") || !self.allowed.contains(sdb) {
            self.skip(None);
            return Ok(());
        }
        let db = self.target.db_for(sdb);
        self.ddl(&db, sdb, &name, o).await
    }

    async fn apply_ops(&mut self, entry: &RawDocument, o: &Document) -> Result<(), MongoError> {
        let ops: Vec<RawDocumentBuf> = o
            .get_array("applyOps")
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_document())
                    .filter_map(|d| RawDocumentBuf::from_document(d).ok())
                    .collect()
            })
            .unwrap_or_default();
        let key = txn_key(entry);
        if o.get_bool("partialTxn").unwrap_or(false) || o.get_bool("prepare").unwrap_or(false) {
            // Kept until the transaction's last entry (or its commit).
            self.partial.entry(key).or_default().extend(ops);
            self.skip(None);
            return Ok(());
        }
        let mut all = self.partial.remove(&key).unwrap_or_default();
        all.extend(ops);
        for op in all {
            Box::pin(self.apply_op(&op, true)).await?;
        }
        Ok(())
    }

    async fn ddl(
        &mut self,
        db: &str,
        sdb: &str,
        name: &str,
        o: Document,
    ) -> Result<(), MongoError> {
        let coll = o.get_str(name).unwrap_or("").to_owned();
        let database = self.client.database(db);
        let run = |cmd: Document| {
            let database = database.clone();
            async move { database.run_command(cmd).await }
        };
        let ns = format!("{db}.{coll}");
        match name {
            "create" => {
                if is_system(sdb, &coll) {
                    self.skip(None);
                    return Ok(());
                }
                if !self.may_touch(db, &coll).await? {
                    self.skip(Some(format!(
                        "{ns} existed before this restore: left alone"
                    )));
                    return Ok(());
                }
                let mut cmd = o.clone();
                cmd.remove("idIndex");
                match run(cmd).await {
                    Ok(_) => {}
                    // Made by an insert replayed before (or the dump): as is.
                    Err(e) if crate::mongo::short(&e).contains("already exists") => {}
                    Err(e) => return Err(write_err(&ns, &e)),
                }
            }
            "drop" => {
                if !self.owned.contains(&(db.to_owned(), coll.clone())) {
                    self.skip(Some(format!(
                        "{ns} was not restored here: its drop was left out"
                    )));
                    return Ok(());
                }
                if let Err(e) = run(doc! { "drop": &coll }).await
                    && !crate::mongo::short(&e).contains("not found")
                {
                    return Err(write_err(&ns, &e));
                }
            }
            "dropDatabase" => {
                let mine: Vec<String> = self
                    .owned
                    .iter()
                    .filter(|(d, _)| d == db)
                    .map(|(_, c)| c.clone())
                    .collect();
                for c in mine {
                    let _ = run(doc! { "drop": &c }).await;
                }
            }
            "renameCollection" => return self.rename(o).await,
            "createIndexes" | "commitIndexBuild" => {
                if !self.owned.contains(&(db.to_owned(), coll.clone())) {
                    self.skip(None);
                    return Ok(());
                }
                let indexes: Vec<Bson> = match o.get_array("indexes") {
                    Ok(a) => a.clone(),
                    Err(_) => {
                        // mongod's form: the index's fields beside the name.
                        let mut spec = o.clone();
                        spec.remove(name);
                        vec![Bson::Document(spec)]
                    }
                };
                let indexes: Vec<Bson> = indexes
                    .into_iter()
                    .map(|i| match i {
                        Bson::Document(mut d) => {
                            d.remove("entryFormat");
                            Bson::Document(d)
                        }
                        other => other,
                    })
                    .collect();
                run(doc! { "createIndexes": &coll, "indexes": indexes })
                    .await
                    .map_err(|e| write_err(&ns, &e))?;
            }
            "dropIndexes" | "collMod" => {
                if !self.owned.contains(&(db.to_owned(), coll.clone())) {
                    self.skip(None);
                    return Ok(());
                }
                let mut cmd = o.clone();
                cmd.remove("key");
                if let Err(e) = run(cmd).await {
                    let short = crate::mongo::short(&e);
                    if !(name == "dropIndexes" && short.contains("not found")) {
                        return Err(write_err(&ns, &e));
                    }
                }
            }
            "startIndexBuild" | "abortIndexBuild" => {
                self.skip(None);
                return Ok(());
            }
            other => {
                self.skip(Some(format!(
                    "a `{other}` command in the oplog was not replayed (cofre does not replay it)"
                )));
                return Ok(());
            }
        }
        self.done.applied += 1;
        Ok(())
    }

    async fn rename(&mut self, o: Document) -> Result<(), MongoError> {
        let from = o.get_str("renameCollection").unwrap_or("").to_owned();
        let to = o.get_str("to").unwrap_or("").to_owned();
        let (Some((fdb, fcoll)), Some((tdb, tcoll))) = (split_ns(&from), split_ns(&to)) else {
            self.skip(None);
            return Ok(());
        };
        let (Some(src), Some(dst)) = (self.map(fdb, fcoll), self.map(tdb, tcoll)) else {
            self.skip(Some(format!(
                "the rename of {from} to {to} reaches outside the restored databases: left out"
            )));
            return Ok(());
        };
        if !self.owned.contains(&src) || !self.may_touch(&dst.0, &dst.1).await? {
            self.skip(Some(format!(
                "the rename of {from} to {to} touches a collection this restore does not own: left out"
            )));
            return Ok(());
        }
        let cmd = doc! {
            "renameCollection": format!("{}.{}", src.0, src.1),
            "to": format!("{}.{}", dst.0, dst.1),
            "dropTarget": true,
        };
        self.client
            .database("admin")
            .run_command(cmd)
            .await
            .map_err(|e| write_err(&format!("{}.{}", src.0, src.1), &e))?;
        self.owned.remove(&src);
        self.owned.insert(dst);
        self.done.applied += 1;
        Ok(())
    }
}

/// The update statement(s) an update entry's `o` stands for; `None` for
/// an empty diff.
fn update_for(o: &RawDocument) -> Result<Option<Vec<RawDocumentBuf>>, MongoError> {
    let mut doc = Document::try_from(o).map_err(|e| bad("an update entry", e))?;
    let version = doc.get("$v").and_then(Bson::as_i32).or_else(|| {
        doc.get("$v")
            .and_then(Bson::as_i64)
            .and_then(|v| i32::try_from(v).ok())
    });
    let first_is_op = doc.keys().any(|k| k.starts_with('$'));
    let updates: Vec<Document> = if version == Some(2) {
        let diff = doc
            .get_document("diff")
            .map_err(|_| bad("an update entry", "a $v: 2 update without its diff"))?;
        diff_to_updates(diff)
    } else if first_is_op {
        doc.remove("$v");
        vec![doc]
    } else {
        // A whole document: a replacement.
        vec![doc]
    };
    let updates: Vec<Document> = updates.into_iter().filter(|u| !u.is_empty()).collect();
    if updates.is_empty() {
        return Ok(None);
    }
    updates
        .iter()
        .map(|u| RawDocumentBuf::from_document(u).map_err(|e| bad("an update entry", e)))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A `$v: 2` diff as update documents: a truncation of arrays first (when
/// there is one), then `$set` and `$unset`.
fn diff_to_updates(diff: &Document) -> Vec<Document> {
    let mut set = Document::new();
    let mut unset = Document::new();
    let mut truncate = Document::new();
    if diff.contains_key("updatedFields")
        || diff.contains_key("removedFields")
        || diff.contains_key("truncatedArrays")
    {
        // The change-stream-like form: dotted paths.
        if let Ok(u) = diff.get_document("updatedFields") {
            for (k, v) in u {
                set.insert(k.clone(), v.clone());
            }
        }
        if let Ok(r) = diff.get_array("removedFields") {
            for f in r.iter().filter_map(Bson::as_str) {
                unset.insert(f, "");
            }
        }
        if let Ok(t) = diff.get_array("truncatedArrays") {
            for t in t.iter().filter_map(Bson::as_document) {
                if let (Ok(field), Some(size)) = (t.get_str("field"), number(t.get("newSize"))) {
                    truncate.insert(field, doc! { "$each": [], "$slice": size });
                }
            }
        }
    } else {
        walk_diff(diff, "", &mut set, &mut unset, &mut truncate);
    }
    let mut out = Vec::new();
    if !truncate.is_empty() {
        out.push(doc! { "$push": truncate });
    }
    let mut rest = Document::new();
    if !set.is_empty() {
        rest.insert("$set", set);
    }
    if !unset.is_empty() {
        rest.insert("$unset", unset);
    }
    out.push(rest);
    out
}

fn number(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_owned()
    } else {
        format!("{prefix}.{k}")
    }
}

/// mongod's diff form: `u` (set), `i` (insert: set), `d` (delete),
/// `s<field>` (a sub-diff), and in an array diff (`a: true`) `u<index>`,
/// `s<index>` and `l` (the new length).
fn walk_diff(
    diff: &Document,
    prefix: &str,
    set: &mut Document,
    unset: &mut Document,
    truncate: &mut Document,
) {
    let is_array = diff.get_bool("a").unwrap_or(false);
    for (k, v) in diff {
        match (k.as_str(), v) {
            ("a", _) => {}
            ("l", _) if is_array => {
                if let Some(n) = number(Some(v)) {
                    truncate.insert(prefix, doc! { "$each": [], "$slice": n });
                }
            }
            ("u" | "i", Bson::Document(fields)) if !is_array => {
                for (f, val) in fields {
                    set.insert(join(prefix, f), val.clone());
                }
            }
            ("d", Bson::Document(fields)) if !is_array => {
                for (f, _) in fields {
                    unset.insert(join(prefix, f), "");
                }
            }
            (key, val) => {
                if let Some(rest) = key.strip_prefix('s')
                    && let Bson::Document(sub) = val
                {
                    walk_diff(sub, &join(prefix, rest), set, unset, truncate);
                } else if is_array && let Some(index) = key.strip_prefix('u') {
                    set.insert(join(prefix, index), val.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_of_both_shapes_become_updates() {
        // mongod's shape.
        let d = doc! {
            "u": { "name": "X" },
            "i": { "new": 1 },
            "d": { "gone": false },
            "ssub": { "u": { "k": 2 } },
            "stags": { "a": true, "u1": "b", "l": 3 },
        };
        let u = diff_to_updates(&d);
        assert_eq!(
            u,
            vec![
                doc! { "$push": { "tags": { "$each": [], "$slice": 3i64 } } },
                doc! {
                    "$set": { "name": "X", "new": 1, "sub.k": 2, "tags.1": "b" },
                    "$unset": { "gone": "" },
                },
            ]
        );
        // The other shape.
        let d = doc! {
            "updatedFields": { "n": 6, "sub.k": 1 },
            "removedFields": ["tags"],
            "truncatedArrays": [],
        };
        assert_eq!(
            diff_to_updates(&d),
            vec![doc! { "$set": { "n": 6, "sub.k": 1 }, "$unset": { "tags": "" } }]
        );
        // Replacements and old modifiers.
        let raw = RawDocumentBuf::from_document(&doc! { "_id": 0, "name": "r" }).unwrap();
        assert_eq!(
            update_for(&raw).unwrap().unwrap()[0],
            RawDocumentBuf::from_document(&doc! { "_id": 0, "name": "r" }).unwrap()
        );
        let raw = RawDocumentBuf::from_document(&doc! { "$v": 1, "$set": { "a": 1 } }).unwrap();
        assert_eq!(
            update_for(&raw).unwrap().unwrap()[0],
            RawDocumentBuf::from_document(&doc! { "$set": { "a": 1 } }).unwrap()
        );
        let raw = RawDocumentBuf::from_document(&doc! { "$v": 2, "diff": {} }).unwrap();
        assert!(update_for(&raw).unwrap().is_none());
    }

    #[test]
    fn system_and_other_databases_are_never_mapped() {
        assert!(is_system("admin", "x") && is_system("app", "system.views"));
        assert!(!is_system("app", "users"));
        assert_eq!(split_ns("app.a.b"), Some(("app", "a.b")));
        assert_eq!(split_ns("app"), None);
    }
}
