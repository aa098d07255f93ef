//! `cofre-manifest.json`, the archive's last entry: what the archive holds and
//! the hash of every entry.
//!
//! The manifest can list hundreds of thousands of entries, so neither side
//! holds them in memory: the writer spools entries to an unnamed temporary
//! file and splices them into the JSON at the end; the reader parses the
//! `entries` array one element at a time (a serde `DeserializeSeed` that
//! calls back per entry) while everything else is collected normally.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::tarenc::{EntryMeta, Kind};

/// The manifest's format name.
pub const FORMAT: &str = "cofre-archive";
/// The manifest's format version.
pub const FORMAT_VERSION: u32 = 1;

/// One entry of the archive, as recorded (and as recomputed when reading).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path inside the archive (lossy UTF-8 when the name is not UTF-8).
    pub path: String,
    /// The exact bytes of the path, hex, only when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Data size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Permission bits (decimal in JSON).
    pub mode: u32,
    /// Modification time, RFC 3339 with nanoseconds, UTC.
    pub mtime: String,
    /// BLAKE3 of the data, hex (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Link target (symlinks, hard links), lossy UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The exact bytes of the link target, hex, only when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_hex: Option<String>,
    /// A sparse file: the bytes stored for it (its map and data segments,
    /// which `hash` covers); `size` is its real size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<u64>,
    /// A directory of a differential: the BLAKE3 of its GNU dumpdir record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumpdir: Option<String>,
}

impl Entry {
    /// The record of an entry with the given header metadata and data hash;
    /// the same function for writing and for re-checking, so both agree.
    pub fn from_meta(meta: &EntryMeta<'_>, hash: Option<String>) -> Entry {
        let (path, path_hex) = text_and_hex(meta.path);
        let (link, link_hex) = match meta.link {
            Some(l) => {
                let (t, h) = text_and_hex(l);
                (Some(t), h)
            }
            None => (None, None),
        };
        let (size, sparse) = match (meta.kind, meta.sparse) {
            (Kind::File, Some(real)) => (real, Some(meta.size)),
            (Kind::File, None) => (meta.size, None),
            _ => (0, None),
        };
        Entry {
            dumpdir: meta.dumpdir.map(|d| blake3::hash(d).to_hex().to_string()),
            path,
            path_hex,
            kind: meta.kind,
            size,
            sparse,
            mode: meta.mode & 0o7777,
            mtime: format_mtime(meta.mtime, meta.mtime_nsec),
            hash,
            link,
            link_hex,
        }
    }
}

/// Text for a byte path, and its hex form when it is not UTF-8.
pub fn text_and_hex(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(crate::format::hex(bytes)),
        ),
    }
}

/// An mtime as the manifest writes it.
pub fn format_mtime(secs: i64, nsec: u32) -> String {
    match chrono::DateTime::from_timestamp(secs, nsec) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format!("{secs}.{nsec:09}"),
    }
}

/// Options the archive was made with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// `gzip:6`, `zstd:3`.
    pub compression: String,
    /// How it was encrypted.
    pub encryption: String,
    /// The user's exclude patterns.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// The hash algorithm of the entries.
    pub hash: String,
}

/// Counts over the whole archive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Tar entries besides the manifest.
    pub entries: u64,
    /// Regular files of the project.
    pub files: u64,
    /// Directories of the project.
    pub dirs: u64,
    /// Symlinks of the project.
    pub symlinks: u64,
    /// Bytes of file data of the project.
    pub bytes: u64,
    /// Of those, bytes in the holes of sparse files (not stored, and not
    /// written on restore).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub holes: u64,
    /// MongoDB collections (and views).
    #[serde(default)]
    pub collections: u64,
    /// MongoDB documents.
    #[serde(default)]
    pub documents: u64,
    /// Bytes of BSON.
    #[serde(default)]
    pub mongo_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Something that went wrong with one path without failing the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The path concerned (relative to the project, or a collection).
    pub path: String,
    /// What happened.
    pub message: String,
}

/// What a MongoDB namespace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectionKind {
    /// An ordinary collection.
    #[default]
    Collection,
    /// A view (only its definition is dumped).
    View,
    /// A time-series collection (dumped as its buckets).
    Timeseries,
}

impl CollectionKind {
    /// The kind a server's `type` field names; anything unknown is an
    /// ordinary collection, as mongodump treats it.
    pub fn from_type(t: &str) -> CollectionKind {
        match t {
            "view" => CollectionKind::View,
            "timeseries" => CollectionKind::Timeseries,
            _ => CollectionKind::Collection,
        }
    }

    /// The `type` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionKind::Collection => "collection",
            CollectionKind::View => "view",
            CollectionKind::Timeseries => "timeseries",
        }
    }
}

/// One dumped collection or view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// Database name.
    pub db: String,
    /// Collection name.
    pub name: String,
    /// Collection, view or time-series.
    #[serde(rename = "type")]
    pub kind: CollectionKind,
    /// Documents dumped.
    pub documents: u64,
    /// Bytes of BSON dumped.
    pub bytes: u64,
    /// BLAKE3 of the `.bson` file, hex.
    pub hash: String,
    /// The `.bson` entry's path in the archive.
    pub bson_path: String,
    /// The `.metadata.json` entry's path in the archive.
    pub metadata_path: String,
}

/// The MongoDB part of the archive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MongoSection {
    /// The server, password redacted.
    pub uri: String,
    /// Server version.
    #[serde(default)]
    pub server_version: String,
    /// Whether all collections were read at one point in time.
    pub consistent: bool,
    /// The cluster time of that point (replica sets), as `seconds,increment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_time: Option<String>,
    /// Why the dump is not a single point in time, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Databases dumped.
    pub databases: Vec<String>,
    /// Collections dumped.
    pub collections: Vec<CollectionRecord>,
}

/// A full archive (the whole project) or a differential (what changed
/// since its full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    /// The whole project.
    #[default]
    Full,
    /// What changed since its full.
    Differential,
}

/// The full a differential was made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRef {
    /// The full's archive name.
    pub name: String,
    /// The BLAKE3 of its manifest.
    pub manifest: String,
}

/// How many deleted paths a differential's manifest names (the rest are
/// counted).
pub const MAX_DELETED_NAMED: usize = 10_000;

/// Everything in the manifest except the entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ManifestInfo {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// `cofre <version>`.
    pub tool: String,
    /// Start of the backup (UTC, RFC 3339).
    pub created_at: String,
    /// End of the backup.
    #[serde(default)]
    pub finished_at: String,
    /// Host name.
    pub host: String,
    /// The project directory.
    pub source: String,
    /// Options used.
    pub options: Options,
    /// Full or differential.
    #[serde(default)]
    pub kind: ArchiveKind,
    /// A differential's full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    /// Paths the full holds that this day no longer does (the first
    /// [`MAX_DELETED_NAMED`]; `deleted_count` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    /// How many paths are deleted since the full.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deleted_count: u64,
    /// Files not stored because they are as the full holds them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged: u64,
    /// The database part, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongodb: Option<MongoSection>,
    /// Counts.
    pub totals: Totals,
    /// Warnings.
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

/// Collects entries on disk while the archive is written, then writes the
/// whole manifest around them.
pub struct ManifestWriter {
    spool: EntrySpool,
}

impl ManifestWriter {
    /// Spools into an unnamed temporary file in `dir` (gone if we crash).
    pub fn new(dir: &std::path::Path) -> io::Result<Self> {
        Ok(ManifestWriter {
            spool: EntrySpool::new_in(dir)?,
        })
    }

    /// Records one entry.
    pub fn push(&mut self, entry: &Entry) -> io::Result<()> {
        self.spool.push(entry)
    }

    /// Writes the complete manifest into a new unnamed file in `dir` and
    /// returns it rewound, with its length.
    pub fn finish(self, info: &ManifestInfo, dir: &std::path::Path) -> io::Result<(File, u64)> {
        let spool = self.spool.rewound()?;
        let mut out = BufWriter::with_capacity(1 << 16, tempfile::tempfile_in(dir)?);
        // The info object without its closing brace, the entries, the brace.
        let info_json = serde_json::to_string_pretty(info)?;
        let body = info_json
            .strip_suffix('}')
            .expect("an object ends with a brace")
            .trim_end();
        out.write_all(body.as_bytes())?;
        out.write_all(b",\n  \"entries\": [\n")?;
        // The spool holds one JSON entry per line: the array needs commas.
        for (i, line) in spool.lines().enumerate() {
            if i > 0 {
                out.write_all(b",\n")?;
            }
            out.write_all(line?.as_bytes())?;
        }
        out.write_all(b"\n  ]\n}\n")?;
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        let len = file.stream_position()?;
        file.seek(SeekFrom::Start(0))?;
        Ok((file, len))
    }
}

/// The most bytes of JSON one entry (or one warning) may take.
pub const MAX_ENTRY_JSON: u64 = 1 << 20;
/// The most bytes of JSON everything but the entries and warnings may take
/// together (options, totals, the database section with its collections).
pub const MAX_INFO_JSON: u64 = 16 << 20;
/// Warnings kept when reading (the rest are counted, not held).
const MAX_WARNINGS_KEPT: usize = 1000;

/// How many bytes the parser may still read before the current part of the
/// manifest counts as too large. Shared between the reader below (which
/// counts) and the visitors (which move from one part to the next).
struct Budget {
    used: Cell<u64>,
    limit: Cell<u64>,
    exceeded: Cell<bool>,
}

impl Budget {
    /// Starts a new part with its own limit; returns the previous state.
    fn enter(&self, limit: u64) -> (u64, u64) {
        let saved = (self.used.get(), self.limit.get());
        self.used.set(0);
        self.limit.set(limit);
        saved
    }

    fn restore(&self, saved: (u64, u64)) {
        self.used.set(saved.0);
        self.limit.set(saved.1);
    }
}

/// A reader that fails once the budget's part has read more than its limit.
struct Capped<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let b = &self.budget;
        b.used.set(b.used.get() + n as u64);
        if b.used.get() > b.limit.get() {
            b.exceeded.set(true);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a part of the manifest is larger than cofre accepts",
            ));
        }
        Ok(n)
    }
}

/// Parses a manifest, calling `on_entry` for each entry in order, without
/// holding the entries. `on_entry` returns an error message to stop.
///
/// Memory stays bounded whatever the manifest says: each entry and each
/// warning may take at most [`MAX_ENTRY_JSON`] bytes, everything else at
/// most [`MAX_INFO_JSON`] together; unknown fields are skipped without
/// being held; serde_json bounds the nesting depth.
pub fn read_streaming<R: Read>(
    reader: R,
    mut on_entry: impl FnMut(Entry) -> Result<(), String>,
) -> Result<(ManifestInfo, u64), String> {
    let budget = Rc::new(Budget {
        used: Cell::new(0),
        limit: Cell::new(MAX_INFO_JSON),
        exceeded: Cell::new(false),
    });
    let capped = Capped {
        inner: BufReader::with_capacity(1 << 16, reader),
        budget: Rc::clone(&budget),
    };
    let mut de = serde_json::Deserializer::from_reader(capped);
    let seed = ManifestSeed {
        on_entry: &mut on_entry,
        budget: &budget,
    };
    let result = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match result {
        Ok(v) => Ok(v),
        Err(_) if budget.exceeded.get() => Err(format!(
            "a part of it is larger than cofre accepts ({} bytes for one entry, {} for the rest); \
             the archive is damaged or was made to exhaust memory",
            MAX_ENTRY_JSON, MAX_INFO_JSON
        )),
        Err(e) => Err(e.to_string()),
    }
}

struct ManifestSeed<'a> {
    on_entry: &'a mut dyn FnMut(Entry) -> Result<(), String>,
    budget: &'a Budget,
}

impl<'de> DeserializeSeed<'de> for ManifestSeed<'_> {
    type Value = (ManifestInfo, u64);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ManifestSeed<'_> {
    type Value = (ManifestInfo, u64);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a cofre manifest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut info = ManifestInfo::default();
        let mut seen = std::collections::HashSet::new();
        let mut count = None;
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate field {key:?}")));
            }
            match key.as_str() {
                "entries" => {
                    count = Some(map.next_value_seed(EachSeed {
                        budget: self.budget,
                        on_item: &mut |e: Entry| (self.on_entry)(e),
                    })?);
                }
                "warnings" => {
                    let kept = &mut info.warnings;
                    map.next_value_seed(EachSeed {
                        budget: self.budget,
                        on_item: &mut |w: Warning| {
                            if kept.len() < MAX_WARNINGS_KEPT {
                                kept.push(w);
                            }
                            Ok(())
                        },
                    })?;
                }
                "format" => info.format = map.next_value()?,
                "format_version" => info.format_version = map.next_value()?,
                "tool" => info.tool = map.next_value()?,
                "created_at" => info.created_at = map.next_value()?,
                "finished_at" => info.finished_at = map.next_value()?,
                "host" => info.host = map.next_value()?,
                "source" => info.source = map.next_value()?,
                "options" => info.options = map.next_value()?,
                "mongodb" => info.mongodb = map.next_value()?,
                "totals" => info.totals = map.next_value()?,
                "kind" => info.kind = map.next_value()?,
                "base" => info.base = map.next_value()?,
                "deleted_count" => info.deleted_count = map.next_value()?,
                "unchanged" => info.unchanged = map.next_value()?,
                "deleted" => {
                    let kept = &mut info.deleted;
                    map.next_value_seed(EachSeed {
                        budget: self.budget,
                        on_item: &mut |p: String| {
                            if kept.len() < MAX_DELETED_NAMED {
                                kept.push(p);
                            }
                            Ok(())
                        },
                    })?;
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        for required in ["format", "format_version", "entries"] {
            if !seen.contains(required) {
                return Err(de::Error::missing_field(required));
            }
        }
        Ok((info, count.unwrap_or(0)))
    }
}

/// An array whose elements are handed over one at a time, each within its
/// own budget, none kept here.
struct EachSeed<'a, T> {
    budget: &'a Budget,
    on_item: &'a mut dyn FnMut(T) -> Result<(), String>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for EachSeed<'_, T> {
    type Value = u64;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for EachSeed<'_, T> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let saved = self.budget.enter(MAX_ENTRY_JSON);
        let mut n = 0;
        loop {
            self.budget.enter(MAX_ENTRY_JSON);
            let Some(item) = seq.next_element::<T>()? else {
                break;
            };
            (self.on_item)(item).map_err(de::Error::custom)?;
            n += 1;
        }
        self.budget.restore(saved);
        Ok(n)
    }
}

/// Entries on disk, one JSON object per line, in order: the manifest being
/// written, and the entries recomputed while an archive is read (to compare
/// with its manifest, which comes last), without holding them in memory.
pub struct EntrySpool {
    writer: BufWriter<File>,
}

impl EntrySpool {
    /// A spool in an unnamed temporary file in the system's temporary directory.
    pub fn new() -> io::Result<Self> {
        Self::from_file(tempfile::tempfile()?)
    }

    /// A spool in an unnamed temporary file in `dir`.
    pub fn new_in(dir: &std::path::Path) -> io::Result<Self> {
        Self::from_file(tempfile::tempfile_in(dir)?)
    }

    fn from_file(file: File) -> io::Result<Self> {
        Ok(EntrySpool {
            writer: BufWriter::with_capacity(1 << 16, file),
        })
    }

    /// The spooled lines, from the start.
    fn rewound(self) -> io::Result<BufReader<File>> {
        let mut file = self.writer.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(BufReader::with_capacity(1 << 16, file))
    }

    /// Records one entry.
    pub fn push(&mut self, e: &Entry) -> io::Result<()> {
        serde_json::to_writer(&mut self.writer, e)?;
        self.writer.write_all(b"\n")?;
        Ok(())
    }

    /// Reads the entries back, in order.
    pub fn read_back(self) -> io::Result<impl Iterator<Item = io::Result<Entry>>> {
        Ok(self.rewound()?.lines().map(|line| {
            let line = line?;
            serde_json::from_str(&line).map_err(io::Error::other)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole manifest in memory.
    fn read_all<R: Read>(reader: R) -> Result<(ManifestInfo, Vec<Entry>), String> {
        let mut entries = Vec::new();
        let (info, _) = read_streaming(reader, |e| {
            entries.push(e);
            Ok(())
        })?;
        Ok((info, entries))
    }

    fn entry(i: u32) -> Entry {
        Entry {
            path: format!("files/f{i}"),
            path_hex: None,
            kind: Kind::File,
            size: u64::from(i),
            mode: 0o644,
            mtime: format_mtime(1_764_201_600, i),
            hash: Some(format!("{i:064x}")),
            link: None,
            link_hex: None,
            sparse: None,
            dumpdir: None,
        }
    }

    #[test]
    fn streams_out_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ManifestWriter::new(dir.path()).unwrap();
        for i in 0..1000 {
            w.push(&entry(i)).unwrap();
        }
        let info = ManifestInfo {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            warnings: vec![Warning {
                path: "x".into(),
                message: "vanished".into(),
            }],
            ..Default::default()
        };
        let (file, len) = w.finish(&info, dir.path()).unwrap();
        assert!(len > 1000);
        let mut seen = 0;
        let (back, n) = read_streaming(file, |e| {
            assert_eq!(e, entry(seen));
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1000);
        assert_eq!(back, info);
    }

    #[test]
    fn empty_manifest_is_valid_json() {
        let dir = tempfile::tempdir().unwrap();
        let w = ManifestWriter::new(dir.path()).unwrap();
        let (file, _) = w.finish(&ManifestInfo::default(), dir.path()).unwrap();
        let (_, entries) = read_all(file).unwrap();
        assert!(entries.is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(read_all(&b"{\"format\": 1"[..]).is_err());
        assert!(read_all(&b"[]"[..]).is_err());
        assert!(read_all(&b"{}"[..]).is_err());
    }

    #[test]
    fn non_utf8_names_keep_their_bytes() {
        let (text, hexed) = text_and_hex(b"caf\xe9");
        assert_eq!(text, "caf\u{fffd}");
        assert_eq!(hexed.as_deref(), Some("636166e9"));
    }
}
