//! The disk check: how full the filesystem holding a path is, as `df`
//! counts it (space reserved for root counts as used).

use std::path::Path;
use std::time::Duration;

use super::{fail, pass, timed_out, warn, Disk, Outcome};

/// The sizes of the filesystem holding `path`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Space {
    /// Its whole size.
    pub total: u64,
    /// Free for anyone (not root's reserve).
    pub available: u64,
    /// Used, root's reserve excluded.
    pub used: u64,
}

impl Space {
    /// Percent used, as `df` shows it: used / (used + available).
    pub fn used_percent(&self) -> f64 {
        let seen = self.used + self.available;
        if seen == 0 {
            return 0.0;
        }
        self.used as f64 * 100.0 / seen as f64
    }
}

/// `statvfs(2)` of `path`.
pub fn space(path: &Path) -> std::io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in the path"))?;
    // SAFETY: statvfs reads a NUL-terminated path and writes one struct that lives on this frame.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    let total = st.f_blocks as u64 * unit;
    let free = st.f_bfree as u64 * unit;
    Ok(Space {
        total,
        available: st.f_bavail as u64 * unit,
        used: total.saturating_sub(free),
    })
}

/// Ok while the filesystem holding `disk.path` is no fuller than
/// `max_used`; a warning past `warn_used`. `statvfs` of a hung network
/// filesystem can block for good: it runs on a thread of its own, given up
/// at the timeout (the thread stays blocked in the kernel until the mount
/// answers).
pub(super) fn run_disk(disk: &Disk, timeout: Duration) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = disk.path.clone();
    let spawned = std::thread::Builder::new()
        .name("disk-check".into())
        .spawn(move || {
            let _ = tx.send(space(&path));
        });
    if let Err(e) = spawned {
        return fail(format!("cannot start the check: {e}"), None);
    }
    let shown = disk.path.display();
    let space = match rx.recv_timeout(timeout) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(format!("{shown}: {e}"), None),
        Err(_) => return fail(format!("{shown}: {}", timed_out(timeout)), None),
    };
    let used = (space.used_percent() * 10.0).round() / 10.0;
    let seen = format!(
        "{shown}: {used}% used, {} free of {}",
        gib(space.available),
        gib(space.total)
    );
    if used > disk.max_used {
        return fail(
            format!("{seen}, expected at most {}%", disk.max_used),
            Some(used),
        );
    }
    match disk.warn_used {
        Some(w) if used > w => warn(
            format!("{seen}, warning: expected at most {w}%"),
            Some(used),
        ),
        _ => pass(seen, Some(used)),
    }
}

/// "12.3 GiB".
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Parses "90%" or "90" into a percentage above 0 and at most 100.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%').trim();
    match number.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!(
            "{text:?} is not a percentage above 0 and at most 100 (write e.g. \"90%\")"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(path: &str, max_used: f64, warn_used: Option<f64>) -> Disk {
        Disk {
            path: path.into(),
            max_used,
            warn_used,
        }
    }

    #[test]
    fn the_root_filesystem_is_measured_and_judged() {
        let s = space(Path::new("/")).unwrap();
        assert!(s.total > 0 && s.used <= s.total, "{s:?}");
        let ok = run_disk(&disk("/", 100.0, None), Duration::from_secs(5));
        assert!(ok.ok, "{ok:?}");
        assert!(
            ok.detail.starts_with("/: ") && ok.detail.contains("% used"),
            "{}",
            ok.detail
        );
        let used = ok.value.unwrap();
        assert!((0.0..=100.0).contains(&used));
        if used > 0.2 {
            let bad = run_disk(&disk("/", used / 2.0, None), Duration::from_secs(5));
            assert!(!bad.ok && !bad.warning, "{bad:?}");
            assert!(bad.detail.contains("expected at most"), "{}", bad.detail);
            let warned = run_disk(&disk("/", 100.0, Some(used / 2.0)), Duration::from_secs(5));
            assert!(!warned.ok && warned.warning, "{warned:?}");
        }
    }

    #[test]
    fn a_missing_path_fails_naming_it() {
        let o = run_disk(
            &disk("/no/such/dir/here", 90.0, None),
            Duration::from_secs(5),
        );
        assert!(!o.ok && !o.warning);
        assert!(o.detail.starts_with("/no/such/dir/here: "), "{}", o.detail);
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("90%"), Ok(90.0));
        assert_eq!(parse_percent(" 12.5 % "), Ok(12.5));
        assert_eq!(parse_percent("100"), Ok(100.0));
        for bad in ["0%", "101%", "-5", "ninety", "", "NaN"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn used_percent_counts_as_df_does() {
        let s = Space {
            total: 100,
            available: 40,
            used: 50,
        };
        assert!((s.used_percent() - 50.0 / 90.0 * 100.0).abs() < 1e-9);
        let empty = Space {
            total: 0,
            available: 0,
            used: 0,
        };
        assert_eq!(empty.used_percent(), 0.0);
    }
}
