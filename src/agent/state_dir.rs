//! The agent's private directory for alert files (`HEAL_ALERT_JSON`).
//!
//! Alert data is written to `<agent dir>/<instance>/op-<op>.json`. The agent
//! dir is stable for one agent id (`--state-dir`, else `$RUNTIME_DIRECTORY/<id>`
//! under systemd, else `/run/heal-agent/<id>` as root, else
//! `$XDG_RUNTIME_DIR/heal-agent/<id>`, else `<tmp>/heal-agent-<uid>/<id>`),
//! so a restarted agent finds what an earlier instance left. Every directory
//! heal creates there is 0700, and one that exists already must be a real
//! directory (not a symlink) owned by the agent's user and closed to group
//! and others, or the agent refuses to start. Each alert file is created new
//! (`O_EXCL | O_NOFOLLOW`, 0600): a file or symlink already at its path fails
//! the op instead of being used. A step run as another user gets its own
//! copy, `op-<op>-uid<uid>.json`, created the same way with mode 0400 and
//! then given to that user (`fchown`); the directories stay 0700, so the
//! user reads it only through the descriptor the agent leaves open in the
//! step (`HEAL_ALERT_JSON=/dev/fd/N`), and no other user can reach it.
//!
//! Each running instance holds an exclusive `flock` on its own directory. At
//! start an agent removes the directories whose lock is free (their instance
//! died, e.g. by SIGKILL), and leaves those of a live process with the same id
//! alone. A clean exit removes the instance's own directory.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// This instance's directory, locked for the life of the agent.
pub struct StateDir {
    dir: PathBuf,
    /// Holds the instance's lock; the kernel releases it when the process dies.
    _lock: File,
}

impl StateDir {
    /// Finds or creates the agent dir, removes what dead instances left in
    /// it, and creates this instance's directory.
    pub fn open(configured: Option<&Path>, id: &str, instance: &str) -> Result<StateDir> {
        let agent_dir = agent_dir(configured, id)?;
        remove_dead_instances(&agent_dir, id);
        // Created under a name cleanup skips and locked before it gets its
        // real name, so a starting agent never removes it.
        let fresh = agent_dir.join(format!(".new-{instance}"));
        DirBuilder::new()
            .mode(0o700)
            .create(&fresh)
            .map_err(|e| Error::Io(format!("creating {}", fresh.display()), e))?;
        let lock = open_dir(&fresh)
            .and_then(|f| try_lock(&f).map(|_| f))
            .map_err(|e| Error::Io(format!("locking {}", fresh.display()), e))?;
        let dir = agent_dir.join(instance);
        std::fs::rename(&fresh, &dir).map_err(|e| {
            Error::Io(
                format!("renaming {} to {}", fresh.display(), dir.display()),
                e,
            )
        })?;
        log::info!("agent {id}: alert files go to {}", dir.display());
        Ok(StateDir { dir, _lock: lock })
    }

    /// Writes an op's alert data to a new 0600 file and returns its path.
    /// Anything already at that path (a planted file or symlink) is an error.
    pub fn write_alert(&self, op_id: i64, data: &[u8]) -> std::result::Result<PathBuf, String> {
        let path = self.dir.join(format!("op-{op_id}.json"));
        create_alert(&path, 0o600, data)?;
        Ok(path)
    }

    /// Writes an op's alert data for a step run as user `uid`: a new file
    /// of that user, mode 0400, in this 0700 directory, so the user reaches
    /// it only through the read-only descriptor returned (the step reads
    /// `/dev/fd/N`), and nobody else reaches it at all.
    pub fn write_alert_for(
        &self,
        op_id: i64,
        uid: libc::uid_t,
        data: &[u8],
    ) -> std::result::Result<(PathBuf, File), String> {
        let path = self.dir.join(format!("op-{op_id}-uid{uid}.json"));
        let written = create_alert(&path, 0o400, data)?;
        // SAFETY: fchown on a descriptor `written` owns; -1 keeps the group.
        if unsafe { libc::fchown(written.as_raw_fd(), uid, libc::gid_t::MAX) } != 0 {
            let e = io::Error::last_os_error();
            let _ = std::fs::remove_file(&path);
            return Err(format!(
                "cannot give alert file {} to uid {uid}: {e}",
                path.display()
            ));
        }
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        let same = |r: &File| {
            let (a, b) = (r.metadata().ok(), written.metadata().ok());
            a.zip(b)
                .is_some_and(|(a, b)| (a.dev(), a.ino()) == (b.dev(), b.ino()))
        };
        match reader {
            Ok(r) if same(&r) => Ok((path, r)),
            other => {
                let _ = std::fs::remove_file(&path);
                Err(format!(
                    "cannot reopen alert file {} ({}): the op is not run",
                    path.display(),
                    other
                        .err()
                        .map_or("replaced".to_string(), |e| e.to_string())
                ))
            }
        }
    }
}

/// Creates a new alert file at `path` with `mode` and writes `data` to it.
/// Anything already there (a planted file or symlink) is an error.
fn create_alert(path: &Path, mode: u32, data: &[u8]) -> std::result::Result<File, String> {
    let opened = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    let mut file = opened.map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => format!(
            "alert file {} already exists (heal never reuses one; something else put it there): the op is not run",
            path.display()
        ),
        _ => format!("cannot create alert file {}: {e}", path.display()),
    })?;
    file.write_all(data)
        .map_err(|e| format!("cannot write alert file {}: {e}", path.display()))?;
    Ok(file)
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The stable directory of agent `id`, created and checked.
fn agent_dir(configured: Option<&Path>, id: &str) -> Result<PathBuf> {
    if let Some(dir) = configured {
        private_dir(dir)?;
        return Ok(dir.to_path_buf());
    }
    let systemd = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()));
    let base = match systemd {
        // systemd made it for this service; only the agent's own part is checked.
        Some(runtime) => runtime,
        None => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            let xdg = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty());
            let base = match (uid, xdg) {
                (0, _) => PathBuf::from("/run/heal-agent"),
                (_, Some(xdg)) => PathBuf::from(xdg).join("heal-agent"),
                (_, None) => std::env::temp_dir().join(format!("heal-agent-{uid}")),
            };
            private_dir(&base)?;
            base
        }
    };
    let dir = base.join(id);
    private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` (0700) unless it exists, then checks that it is a real
/// directory of this user that nobody else may enter.
fn private_dir(dir: &Path) -> Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::Usage(format!(
                "cannot create the agent's state directory {}: {e}\nTry: heal agent --state-dir DIR (a directory only the agent's user may enter)",
                dir.display()
            )))
        }
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::Io(format!("checking {}", dir.display()), e))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let wrong = if meta.file_type().is_symlink() {
        Some("is a symbolic link".to_string())
    } else if !meta.is_dir() {
        Some("is not a directory".to_string())
    } else if meta.uid() != uid {
        Some(format!(
            "is owned by uid {}, not the agent's uid {uid}",
            meta.uid()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "has mode {:o}: its group or others may enter it",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match wrong {
        None => Ok(()),
        Some(why) => Err(Error::Usage(format!(
            "the agent's state directory {} {why}; alert data is kept there, so it must be a directory of uid {uid} with mode 0700: remove it (heal creates it), or pass --state-dir DIR",
            dir.display()
        ))),
    }
}

/// Removes the directories of instances that no longer run.
fn remove_dead_instances(agent_dir: &Path, id: &str) {
    let Ok(entries) = std::fs::read_dir(agent_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(dir) = open_dir(&path) else {
            continue;
        };
        if try_lock(&dir).is_err() {
            log::debug!("agent {id}: {} belongs to a running agent", path.display());
            continue;
        }
        let files = std::fs::read_dir(&path).map_or(0, |d| d.count());
        match std::fs::remove_dir_all(&path) {
            Ok(()) => log::info!(
                "agent {id}: removed {} left by an earlier instance ({files} alert files)",
                path.display()
            ),
            Err(e) => log::warn!("agent {id}: cannot remove {}: {e}", path.display()),
        }
    }
}

fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// Takes the exclusive lock of a directory without waiting.
fn try_lock(dir: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor this File owns and keeps open.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("heal-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_dead_instances_files_are_removed_a_live_ones_kept() {
        let base = scratch("instances");
        let live = StateDir::open(Some(&base), "a", "live").unwrap();
        live.write_alert(1, b"{}").unwrap();
        let dead = base.join("dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("op-2.json"), b"{}").unwrap();
        let next = StateDir::open(Some(&base), "a", "next").unwrap();
        assert!(!dead.exists());
        assert!(base.join("live/op-1.json").exists());
        drop(next);
        assert!(!base.join("next").exists());
        drop(live);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_directory_others_may_enter_or_a_symlink_is_refused() {
        let base = scratch("open");
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = StateDir::open(Some(&base), "a", "i")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("has mode 755"), "{err}");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = scratch("link");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        let err = StateDir::open(Some(&link), "a", "i")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_planted_alert_file_or_symlink_is_never_used() {
        let base = scratch("planted");
        let dir = StateDir::open(Some(&base), "a", "i").unwrap();
        let victim = base.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, base.join("i/op-1.json")).unwrap();
        let err = dir.write_alert(1, b"alert").unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let written = dir.write_alert(2, b"alert").unwrap();
        let mode = std::fs::metadata(&written).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(dir);
        let _ = std::fs::remove_dir_all(&base);
    }
}
