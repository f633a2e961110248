//! The server's files: private permissions (directories 0700, files 0600: the SQLite database
//! holds clinical data in plaintext) and the data directory's lock, so that a second server
//! process on the same SQLite data directory is refused instead of silently sharing it.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Create `dir` (and its parents) if needed and make it owner-only (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Make an existing file owner-only (0600). Missing files are skipped.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// An exclusive lock on a data directory, held for the life of the server.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another followup server is already using the data directory {0} (its lock file {0}/server.lock is held); stop it first, or use PostgreSQL (--database) for several server processes")]
    Held(PathBuf),
    #[error("cannot lock the data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Lock `dir` (creating it 0700 and its lock file 0600). The lock is an OS file lock
/// (`flock`), released when the process ends, even by a crash: no stale lock to clean up.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.into(),
        source,
    };
    create_private_dir(dir).map_err(io)?;
    let path = dir.join("server.lock");
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(LockError::Held(dir.into())),
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // Who holds it, for a person looking at the directory (the lock itself is the flock).
    let _ = file.set_len(0);
    let _ = std::io::Write::write_all(&mut &file, format!("{}\n", std::process::id()).as_bytes());
    Ok(DataDirLock { _file: file, path })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let first = lock_data_dir(&d).unwrap();
        let second = lock_data_dir(&d).unwrap_err();
        assert!(matches!(second, LockError::Held(_)), "{second}");
        assert!(second.to_string().contains("already using"));
        drop(first);
        lock_data_dir(&d).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&d).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
