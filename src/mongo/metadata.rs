//! `<collection>.metadata.json`: options, indexes, uuid, name and type of a
//! collection, in canonical Extended JSON v2, field order kept, as mongodump
//! writes it; and the index-spec cleaning mongorestore applies to old dumps.

use mongodb::bson::{Bson, Document, spec::BinarySubtype};

use crate::archive::manifest::CollectionKind;
use crate::format::hex;

/// What a `.metadata.json` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// `create` options (capped, validator, collation, timeseries, viewOn...).
    pub options: Document,
    /// Index specifications, as `listIndexes` returned them.
    pub indexes: Vec<Document>,
    /// Collection, view or time-series (absent in old dumps: collection).
    pub kind: CollectionKind,
    /// The collection's name, when recorded.
    pub name: Option<String>,
}

/// Writes the metadata document mongodump would write.
pub fn to_json(
    options: &Document,
    indexes: &[Document],
    uuid: Option<&Bson>,
    name: &str,
    kind: CollectionKind,
) -> String {
    let mut doc = Document::new();
    doc.insert("options", options.clone());
    doc.insert(
        "indexes",
        indexes
            .iter()
            .cloned()
            .map(Bson::Document)
            .collect::<Vec<_>>(),
    );
    if let Some(Bson::Binary(b)) = uuid
        && b.subtype == BinarySubtype::Uuid
    {
        doc.insert("uuid", hex(&b.bytes));
    }
    doc.insert("collectionName", name);
    doc.insert("type", kind.as_str());
    serde_json::to_string(&Bson::Document(doc).into_canonical_extjson())
        .expect("JSON values always serialize")
}

/// Parses a `.metadata.json` (canonical or relaxed Extended JSON).
pub fn parse(text: &str) -> Result<Metadata, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Bson::Document(doc) = Bson::try_from(value).map_err(|e| e.to_string())? else {
        return Err("not a JSON object".into());
    };
    let options = match doc.get("options") {
        Some(Bson::Document(d)) => d.clone(),
        None | Some(Bson::Null) => Document::new(),
        Some(_) => return Err("\"options\" is not an object".into()),
    };
    let indexes = match doc.get("indexes") {
        Some(Bson::Array(a)) => a
            .iter()
            .map(|b| match b {
                Bson::Document(d) => Ok(d.clone()),
                _ => Err("an index is not an object".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None | Some(Bson::Null) => Vec::new(),
        Some(_) => return Err("\"indexes\" is not an array".into()),
    };
    let kind = CollectionKind::from_type(doc.get_str("type").unwrap_or("collection"));
    let name = doc.get_str("collectionName").ok().map(str::to_owned);
    Ok(Metadata {
        options,
        indexes,
        kind,
        name,
    })
}

/// Index options a current server accepts; others (`ns`, `safe`,
/// `dropDups`...) come from old servers and are dropped on restore.
const INDEX_FIELDS: &[&str] = &[
    "key",
    "name",
    "v",
    "unique",
    "sparse",
    "partialFilterExpression",
    "expireAfterSeconds",
    "hidden",
    "storageEngine",
    "collation",
    "weights",
    "default_language",
    "language_override",
    "textIndexVersion",
    "2dsphereIndexVersion",
    "bits",
    "min",
    "max",
    "bucketSize",
    "wildcardProjection",
    "background",
    "prepareUnique",
    "coarsestIndexedLevel",
    "finestIndexedLevel",
];

fn is_zero(b: &Bson) -> bool {
    match b {
        Bson::Int32(v) => *v == 0,
        Bson::Int64(v) => *v == 0,
        Bson::Double(v) => *v == 0.0 || v.is_nan(),
        Bson::Decimal128(d) => {
            let s = d.to_string();
            s.trim_start_matches(['-', '+'])
                .trim_start_matches('0')
                .trim_start_matches('.')
                .trim_start_matches('0')
                .is_empty()
                || s.starts_with("0E")
                || s.starts_with("-0E")
        }
        _ => false,
    }
}

/// Makes an index specification from any server version acceptable to a
/// current one, as `mongorestore --convertLegacyIndexes` does: key values
/// that are 0, empty strings or not numbers/strings become 1; unknown
/// options are dropped; a version other than 1 or 2 is left to the server's
/// default. Returns the spec and the names of what was dropped or changed.
pub fn clean_index(spec: &Document) -> (Document, Vec<String>) {
    let mut out = Document::new();
    let mut changed = Vec::new();
    for (k, v) in spec {
        match k.as_str() {
            "key" => {
                let Bson::Document(key) = v else {
                    out.insert(k, v.clone());
                    continue;
                };
                let mut fixed = Document::new();
                for (field, value) in key {
                    let legacy = match value {
                        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
                            is_zero(value)
                        }
                        Bson::String(s) => s.is_empty(),
                        _ => true,
                    };
                    if legacy {
                        changed.push(format!("key {field}: {value} became 1"));
                        fixed.insert(field, 1i32);
                    } else {
                        fixed.insert(field, value.clone());
                    }
                }
                out.insert("key", fixed);
            }
            "v" if !matches!(v, Bson::Int32(1 | 2) | Bson::Int64(1 | 2) | Bson::Double(_)) => {
                changed.push(format!("index version {v} dropped"));
            }
            "v" => {
                let n = match v {
                    Bson::Double(d) if *d == 1.0 || *d == 2.0 => *d as i32,
                    Bson::Int64(n) => *n as i32,
                    Bson::Int32(n) => *n,
                    _ => {
                        changed.push(format!("index version {v} dropped"));
                        continue;
                    }
                };
                out.insert("v", n);
            }
            field if INDEX_FIELDS.contains(&field) => {
                out.insert(k, v.clone());
            }
            "ns" => {}
            other => changed.push(format!("option {other} dropped")),
        }
    }
    (out, changed)
}

/// Whether an index spec is the automatic `_id` index.
pub fn is_id_index(spec: &Document) -> bool {
    spec.get_str("name") == Ok("_id_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn reads_the_mongodump_fixture_format() {
        let text = r#"{"options":{},"indexes":[{"v":{"$numberInt":"1"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_","ns":"indextest.test_collection"},{"v":{"$numberInt":"1"},"key":{"a":{"$numberDouble":"1.0"},"b":true,"c":{"$numberDecimal":"0"},"d":""},"name":"a_1_b_true","ns":"indextest.test_collection","safe":true}],"uuid":"d2016afbfd1048399ab39a176b1c63ce"}"#;
        let m = parse(text).unwrap();
        assert_eq!(m.kind, CollectionKind::Collection);
        assert_eq!(m.indexes.len(), 2);
        let (clean, changed) = clean_index(&m.indexes[1]);
        assert_eq!(
            clean,
            doc! { "v": 1, "key": { "a": 1.0, "b": 1, "c": 1, "d": 1 }, "name": "a_1_b_true" }
        );
        assert_eq!(changed.len(), 4, "{changed:?}");
        // Field order survives (compound index keys depend on it).
        let keys: Vec<&String> = clean.get_document("key").unwrap().keys().collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
    }

    #[test]
    fn writes_canonical_extended_json_in_order() {
        let json = to_json(
            &doc! { "capped": true, "size": 4096i64 },
            &[doc! { "v": 2, "key": { "z": 1, "a": -1 }, "name": "z_1_a_-1" }],
            Some(&Bson::Binary(mongodb::bson::Binary {
                subtype: BinarySubtype::Uuid,
                bytes: vec![0xab; 16],
            })),
            "cafés",
            CollectionKind::Collection,
        );
        assert_eq!(
            json,
            r#"{"options":{"capped":true,"size":{"$numberLong":"4096"}},"indexes":[{"v":{"$numberInt":"2"},"key":{"z":{"$numberInt":"1"},"a":{"$numberInt":"-1"}},"name":"z_1_a_-1"}],"uuid":"abababababababababababababababab","collectionName":"cafés","type":"collection"}"#
        );
        let back = parse(&json).unwrap();
        assert_eq!(back.name.as_deref(), Some("cafés"));
        assert_eq!(back.options, doc! { "capped": true, "size": 4096i64 });
    }

    #[test]
    fn modern_specs_pass_unchanged() {
        let spec = doc! {
            "v": 2, "key": { "email": 1 }, "name": "email_1", "unique": true,
            "partialFilterExpression": { "email": { "$exists": true } },
            "collation": { "locale": "en", "strength": 2 }
        };
        let (clean, changed) = clean_index(&spec);
        assert_eq!(clean, spec);
        assert!(changed.is_empty());
    }
}
