//! The spool sweeper. Partial envelopes (`<sender>-<id>.part`) stay for resumption when a
//! transfer breaks off; a peer that never comes back, or one that starts transfers only to
//! abandon them, would fill the disk. At start and periodically the engine deletes `.part` files
//! older than a maximum age, then the oldest ones while the spool is over its byte cap; files of
//! transfers in progress are kept.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What one sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    pub bytes: u64,
}

/// Sweeps `dir` as of `now`: `.part` files not in `active` and older than `max_age` go, then
/// the oldest of the rest while their total exceeds `max_bytes`. Other files are left alone.
pub fn sweep(
    dir: &Path,
    now: SystemTime,
    max_age: Duration,
    max_bytes: u64,
    active: &HashSet<PathBuf>,
) -> std::io::Result<Swept> {
    let mut parts: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "part") || active.contains(&path) {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        parts.push((meta.modified()?, meta.len(), path));
    }
    parts.sort(); // oldest first
    let mut total: u64 = parts.iter().map(|p| p.1).sum();
    let mut swept = Swept::default();
    for (modified, len, path) in parts {
        let old = now.duration_since(modified).unwrap_or_default() >= max_age;
        if !old && total <= max_bytes {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                swept.files += 1;
                swept.bytes += len;
                total -= len;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= len,
            Err(e) => return Err(e),
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(dir: &Path, name: &str, len: usize, age: Duration, now: SystemTime) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(now - age).unwrap();
        path
    }

    #[test]
    fn old_parts_go_then_the_oldest_while_over_the_cap_active_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let ancient = part(dir.path(), "a-1.part", 100, 50 * hour, now);
        let active_old = part(dir.path(), "a-2.part", 100, 50 * hour, now);
        let older = part(dir.path(), "b-1.part", 300, 3 * hour, now);
        let newer = part(dir.path(), "b-2.part", 300, hour, now);
        let other = part(dir.path(), "notes.txt", 10, 50 * hour, now);
        let active = HashSet::from([active_old.clone()]);

        let swept = sweep(dir.path(), now, 48 * hour, 1000, &active).unwrap();
        assert_eq!(
            swept,
            Swept {
                files: 1,
                bytes: 100
            }
        );
        assert!(!ancient.exists() && active_old.exists() && other.exists());
        assert!(older.exists() && newer.exists());

        // Over a 400-byte cap: the oldest inactive part goes first, until under it.
        let swept = sweep(dir.path(), now, 48 * hour, 400, &active).unwrap();
        assert_eq!(
            swept,
            Swept {
                files: 1,
                bytes: 300
            }
        );
        assert!(!older.exists() && newer.exists() && active_old.exists());
    }
}
