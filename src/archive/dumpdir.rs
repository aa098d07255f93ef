//! GNU tar's incremental directory records (`GNU.dumpdir`): the names a
//! directory held when it was archived, each flagged `Y` (in this archive),
//! `N` (present, not in this archive) or `D` (a directory). `tar -x -g`
//! removes from a directory what its record does not name, which is how a
//! differential archive carries deletions.

/// The largest dumpdir record a differential writes (a directory with more
/// names makes the next backup a full one; readers refuse pax headers over
/// 1 MiB).
pub const MAX: usize = 900 << 10;

/// GNU tar's `dumpdir` record of `entries` (flag, name): each entry is the
/// flag, the name and a NUL, and the record ends with one more NUL.
pub fn record<'a>(entries: impl IntoIterator<Item = (u8, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (flag, name) in entries {
        out.push(flag);
        out.extend_from_slice(name);
        out.push(0);
    }
    out.push(0);
    out
}

/// The names a `dumpdir` record holds, each with its flag; `None` when it
/// is malformed.
pub fn names(record: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let body = record.strip_suffix(&[0, 0]).or_else(|| {
        // An empty directory's record is a single NUL.
        (record == [0]).then_some(&record[..0])
    })?;
    if body.is_empty() {
        return Some(Vec::new());
    }
    body.split(|&b| b == 0)
        .map(|e| {
            let (&flag, name) = e.split_first()?;
            let ok = matches!(flag, b'D' | b'Y' | b'N')
                && !name.is_empty()
                && name != b"."
                && name != b".."
                && !name.contains(&b'/');
            ok.then_some((flag, name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_written_and_checked() {
        let r = record([(b'D', &b"d"[..]), (b'Y', b"a"), (b'N', b"b")]);
        assert_eq!(r, b"Dd\0Ya\0Nb\0\0".to_vec());
        assert_eq!(names(&r).unwrap().len(), 3);
        assert_eq!(record([]), b"\0".to_vec());
        assert_eq!(names(b"\0").unwrap(), vec![]);
        for bad in [
            &b""[..],
            b"Xa\0\0",
            b"Y..\0\0",
            b"Ya/b\0\0",
            b"Ya\0",
            b"Y\0\0",
        ] {
            assert!(names(bad).is_none(), "{bad:?}");
        }
    }
}
