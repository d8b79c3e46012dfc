//! Writes a file through a temporary file in the same directory, then
//! renames it over the target, so a crash leaves the old file intact.
//!
//! A process killed during a save leaves its `.NAME.PID.tmp` file behind
//! next to the target; nothing reads it, and it can be deleted.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

fn temporary_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join(format!(".{}.{}.tmp", name, std::process::id()))
}

/// Creates `target`'s directory if needed, calls `write` on a buffered
/// temporary file, syncs it and renames it to `target`.
pub fn write_atomic(target: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let tmp = temporary_path(target);
    let result = (|| -> Result<()> {
        let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut writer = BufWriter::new(file);
        write(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, target).with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
        sync_directory(target);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", target.display()))
}

/// Syncs the directory of `target` so the rename itself survives a power
/// loss. Failures are ignored: some file systems cannot sync a directory,
/// and the file is complete either way.
fn sync_directory(target: &Path) {
    #[cfg(unix)]
    {
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(handle) = File::open(dir) {
            let _ = handle.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = target;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_old_file() {
        let dir = std::env::temp_dir().join(format!("darknet-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("x.bin");
        write_atomic(&target, |w| Ok(w.write_all(b"old")?)).unwrap();
        let err = write_atomic(&target, |w| {
            w.write_all(b"partial")?;
            anyhow::bail!("simulated failure")
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&target).unwrap(), b"old");
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
