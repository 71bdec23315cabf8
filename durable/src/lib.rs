//! Files that must survive a crash or a power cut, and secrets that must
//! not survive their removal: the one implementation the device agent and
//! the engineer's CLI share.
//!
//! [`write_atomic`] leaves either the old or the new contents at `path`,
//! never a torn file, and only returns once both the file and the rename
//! are on disk (the directory is fsynced too: without that, a power cut
//! after the rename can bring the old file back).
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `data` to `path` with exactly `mode`: a temp file in the same
/// directory, fsync, rename over `path`, fsync the directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        Some(_) => Path::new("."),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path has no directory",
            ))
        }
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", u64::from_le_bytes(suffix)));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed `mode`; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Overwrites a file with zeros, then removes it; a missing file is fine.
/// Best effort on flash storage (wear levelling may keep old blocks), but it
/// keeps secrets out of a later undelete of the file system.
pub fn wipe_file(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {
            if let Ok(mut f) = OpenOptions::new().write(true).open(path) {
                let _ = f.write_all(&vec![0u8; m.len() as usize]);
                let _ = f.sync_all();
            }
            fs::remove_file(path)
        }
        // A link or anything else: removed, never written through.
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_whole_with_exactly_the_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x");
        write_atomic(&p, b"one", 0o600).expect("writes");
        write_atomic(&p, b"two", 0o640).expect("replaces");
        assert_eq!(fs::read(&p).expect("reads"), b"two");
        let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(fs::read_dir(dir.path()).expect("lists").count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x");
        write_atomic(&p, b"old", 0o600).expect("writes");
        // A directory where the file should go: the rename fails.
        let blocked = dir.path().join("sub");
        fs::create_dir_all(blocked.join("x")).expect("dir");
        let e = write_atomic(&blocked.join("x"), b"new", 0o600).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::IsADirectory, "{e}");
        assert_eq!(fs::read_dir(&blocked).expect("lists").count(), 1);
        assert_eq!(fs::read(&p).expect("reads"), b"old");
    }

    #[test]
    fn wiping_zeroes_then_removes_and_never_follows_a_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        fs::write(&target, b"keep me").expect("writes");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        wipe_file(&link).expect("wipes the link");
        assert!(!link.exists());
        assert_eq!(fs::read(&target).expect("reads"), b"keep me");
        wipe_file(&target).expect("wipes");
        assert!(!target.exists());
        wipe_file(&target).expect("a missing file is fine");
    }
}
