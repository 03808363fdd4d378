//! The database's lock: one `heal serve` (or `heal migrate`) per database.
//!
//! Two servers on one database would both run the outbox, the sweeper and
//! the scheduler: every notification sent twice. So `serve` takes an
//! exclusive `flock` on `<db>.lock` before it opens the database and holds
//! it for its whole life. The kernel drops the lock when the process ends,
//! however it ends (a `kill -9` too), so a restart never waits for a stale
//! lock and no pid file needs cleaning up. The file is created 0600 next to
//! the database and never followed through a symlink (`O_NOFOLLOW`); once
//! the lock is taken it holds the holder's pid, host and listen address, for
//! the error a second server prints. The file itself is left in place when
//! heal stops: removing it would let a third process lock a fresh inode
//! while a second still holds the old one.
//!
//! Readers (`heal backup`, `heal check-db`) take no lock: SQLite's WAL lets
//! them read beside the writer.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An exclusive hold on a database, released when dropped or when the process ends.
pub struct Lock {
    file: File,
    path: PathBuf,
}

/// The lock file of a database: `<db>.lock` in the same directory.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the database's lock without waiting. `holder` says who takes it
/// (a listen address, or the command); a lock held by another process is a
/// configuration error (exit 2) naming that process.
pub fn acquire(db: &Path, holder: &str) -> Result<Lock> {
    let path = lock_path(db);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| {
            Error::Io(
                format!(
                    "cannot open the lock file {} (it must be a regular file, not a symlink, in a directory heal may write)",
                    path.display()
                ),
                e,
            )
        })?;
    // SAFETY: flock takes a descriptor this function owns, and no pointer.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::Io(format!("cannot lock {}", path.display()), e));
        }
        let mut text = String::new();
        let _ = (&file).take(1024).read_to_string(&mut text);
        let who = text.split_whitespace().collect::<Vec<_>>().join(", ");
        let who = if who.is_empty() {
            "a process that has not written its name yet".to_string()
        } else {
            who
        };
        return Err(Error::Config(format!(
            "database {} is in use by another heal ({who}; lock {}): two servers on one database would deliver every notification twice. Stop that one first, or give this one its own --db",
            db.display(),
            path.display()
        )));
    }
    let mut lock = Lock { file, path };
    lock.describe(holder)?;
    Ok(lock)
}

impl Lock {
    /// Writes who holds the lock (pid, host, `holder`) into the lock file.
    pub fn describe(&mut self, holder: &str) -> Result<()> {
        let text = format!(
            "pid={} host={} listen={holder}\n",
            std::process::id(),
            crate::host::hostname()
        );
        let io = |e| {
            Error::Io(
                format!("cannot write the lock file {}", self.path.display()),
                e,
            )
        };
        self.file.set_len(0).map_err(io)?;
        self.file.rewind().map_err(io)?;
        self.file.write_all(text.as_bytes()).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::store::testing::temp_dir;

    #[test]
    fn a_second_lock_is_refused_naming_the_first_and_freed_on_drop() {
        let dir = temp_dir("lock");
        let db = dir.join("heal.db");
        let first = acquire(&db, "127.0.0.1:7878").unwrap();
        let mode = std::fs::metadata(lock_path(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // flock locks belong to the open file: a second open in this process conflicts too.
        let e = acquire(&db, "127.0.0.1:7879").err().expect("refused");
        let text = e.to_string();
        assert_eq!(e.exit_code(), 2, "{text}");
        assert!(
            text.contains(&format!("pid={}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("listen=127.0.0.1:7878"), "{text}");
        drop(first);
        drop(acquire(&db, "127.0.0.1:7879").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlinked_lock_file_is_refused() {
        let dir = temp_dir("lock-link");
        let db = dir.join("heal.db");
        std::os::unix::fs::symlink(dir.join("elsewhere"), lock_path(&db)).unwrap();
        assert!(acquire(&db, "x").is_err());
        assert!(!dir.join("elsewhere").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
