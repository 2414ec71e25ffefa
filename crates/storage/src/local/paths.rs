//! On-disk layout: `<data_dir>/logstores/<project>/<logstore>/shard-<n>/<20-digit base offset>.log`
//! (plus `.index` beside each sealed segment).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::{InvalidName, StreamId};

/// Directory under the data dir that holds all logstores.
pub(crate) const LOGSTORES_DIR: &str = "logstores";
/// Lock file (beside [`LOGSTORES_DIR`]) held by the one writer of a data dir.
pub(crate) const LOCK_FILE: &str = "logstores.lock";

/// Longest name accepted (a common file name limit).
const MAX_NAME_LEN: usize = 255;

/// Checks that `name` is safe as one path component.
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not allowed")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Directory of one shard, after validating the stream's names.
pub(crate) fn shard_dir(
    root: &Path,
    stream: &StreamId,
    shard: u32,
) -> Result<PathBuf, InvalidName> {
    validate_name("project", &stream.project)?;
    validate_name("logstore", &stream.logstore)?;
    Ok(root
        .join(&stream.project)
        .join(&stream.logstore)
        .join(format!("shard-{shard}")))
}

/// File name of the segment whose first entry has `base_offset`.
pub(crate) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// The base offset named by a segment file name (`<20 digits>.log`).
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Fsyncs a directory so entries created in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    synced::record(dir);
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare relative name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `dir` and its missing parents like `create_dir_all`, then fsyncs `dir` and the
/// directory holding each one it created, so that a crash right after loses none of them.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    // The missing directories, deepest first.
    let mut missing = Vec::new();
    let mut d = dir;
    loop {
        match fs::metadata(d) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(d);
                match d.parent() {
                    Some(p) if !p.as_os_str().is_empty() => d = p,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        sync_dir(parent_dir(created))?;
    }
    sync_dir(dir)
}

/// Test-only record of the directories fsynced, to check that created ones are.
#[cfg(test)]
pub(crate) mod synced {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(crate) fn record(dir: &Path) {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        SYNCED.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
    }

    /// The directories fsynced so far that lie in `under` (or are it).
    pub(crate) fn under(under: &Path) -> Vec<PathBuf> {
        let all = SYNCED.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|d| d.starts_with(under))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for bad in ["", ".", "..", "a/b", "..\\x", "a\0", &"x".repeat(256)] {
            assert!(validate_name("project", bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a..b", ".hidden", "app-logs_1.v2", "日志"] {
            assert!(validate_name("project", good).is_ok(), "{good:?}");
        }
        assert_eq!(segment_file_name(7), "00000000000000000007.log");
        assert_eq!(parse_segment_file_name(&segment_file_name(123)), Some(123));
        for bad in [
            "1.log",
            "00000000000000000007.index",
            "0000000000000000000x.log",
            "00000000000000000007.log.tmp",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }
}
