//! A step's `user` and `group` on this agent: the names looked up in the
//! system's user database (`getpwnam_r`, `getgrnam_r`, `getgrouplist`)
//! before the fork, and the agent's rules for them checked:
//!
//! - a user other than the agent's own must be in `--allow-users`;
//! - an agent that does not run as root starts steps only as itself;
//! - the group must be one of the user's (its primary group, or one that
//!   lists it), so a runbook cannot hand a user a group it does not have.

use std::ffi::{CStr, CString};

use crate::exec::RunAs;

/// The account a step asks for, checked against this agent's rules.
pub fn resolve(user: &str, group: Option<&str>, allowed: &[String]) -> Result<RunAs, String> {
    let (uid, gid, home) =
        passwd(user)?.ok_or_else(|| format!("user {user:?} does not exist on this agent"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    if uid != own && own != 0 {
        return Err(format!(
            "this agent runs as uid {own}, not root: it cannot start a step as user {user:?} (uid {uid}); run the agent as root, or drop `user` from the runbook"
        ));
    }
    if uid != own && !allowed.iter().any(|a| a == user) {
        let list = match allowed.join(",") {
            none if none.is_empty() => "none given".to_string(),
            list => list,
        };
        return Err(format!(
            "user {user:?} is not in this agent's --allow-users ({list}): start the agent with --allow-users {user} to let runbooks use it"
        ));
    }
    let groups = group_list(user, gid)?;
    let gid = match group {
        None => gid,
        Some(name) => {
            let wanted = group_id(name)?
                .ok_or_else(|| format!("group {name:?} does not exist on this agent"))?;
            if !groups.contains(&wanted) {
                return Err(format!(
                    "group {name:?} is not one of user {user:?}'s groups (its primary group, or one that lists it in /etc/group)"
                ));
            }
            wanted
        }
    };
    // SAFETY: getegid has no preconditions and cannot fail.
    if own != 0 && gid != unsafe { libc::getegid() } {
        return Err(format!(
            "this agent runs as uid {own}, not root: it cannot start a step with another group than its own"
        ));
    }
    Ok(RunAs {
        name: user.to_string(),
        home,
        uid,
        gid,
        groups,
        switch: own == 0,
        keep_fd: None,
    })
}

/// Size of the buffer for the strings of one user or group entry.
const ENTRY_BUF: usize = 16 * 1024;

/// A user's uid, primary gid and home directory; None when there is no such user.
fn passwd(name: &str) -> Result<Option<(libc::uid_t, libc::gid_t, String)>, String> {
    let mut buf = vec![0u8; ENTRY_BUF];
    // SAFETY: getpwnam_r gets valid pointers and buf's length from `lookup`.
    let found = lookup("user", name, &mut buf, |n, e, b, l, f| unsafe {
        libc::getpwnam_r(n, e, b, l, f)
    })?;
    let Some(entry) = found else {
        return Ok(None);
    };
    let home = if entry.pw_dir.is_null() {
        "/".to_string()
    } else {
        // SAFETY: pw_dir points to a C string inside buf, which is still alive.
        unsafe { CStr::from_ptr(entry.pw_dir) }
            .to_string_lossy()
            .into_owned()
    };
    Ok(Some((entry.pw_uid, entry.pw_gid, home)))
}

/// A group's gid; None when there is no such group.
fn group_id(name: &str) -> Result<Option<libc::gid_t>, String> {
    let mut buf = vec![0u8; ENTRY_BUF];
    // SAFETY: getgrnam_r gets valid pointers and buf's length from `lookup`.
    let found = lookup("group", name, &mut buf, |n, e, b, l, f| unsafe {
        libc::getgrnam_r(n, e, b, l, f)
    })?;
    Ok(found.map(|entry| entry.gr_gid))
}

/// One `get*nam_r` call for `name`, its strings kept in `buf`; None when
/// there is no such entry. `T` is `libc::passwd` or `libc::group`, C
/// structs of integers and pointers, for which all zeroes is a valid value.
fn lookup<T>(
    what: &str,
    name: &str,
    buf: &mut [u8],
    call: impl FnOnce(*const libc::c_char, *mut T, *mut libc::c_char, usize, *mut *mut T) -> libc::c_int,
) -> Result<Option<T>, String> {
    let c_name = c_name(name)?;
    // SAFETY: T is one of the C structs above (see the doc comment).
    let mut entry: T = unsafe { std::mem::zeroed() };
    let mut found: *mut T = std::ptr::null_mut();
    let rc = call(
        c_name.as_ptr(),
        &mut entry,
        buf.as_mut_ptr().cast(),
        buf.len(),
        &mut found,
    );
    if rc != 0 {
        return Err(format!(
            "cannot look up {what} {name:?}: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    Ok((!found.is_null()).then_some(entry))
}

/// The groups `initgroups` would give the user: its primary group and
/// every group that lists it.
fn group_list(user: &str, gid: libc::gid_t) -> Result<Vec<libc::gid_t>, String> {
    let c_name = c_name(user)?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..8 {
        let mut n = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: groups holds n entries; getgrouplist writes at most n and
        // sets n to the number it has.
        let rc = unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        groups.resize(n.max(groups.len() * 2), 0);
    }
    Err(format!("cannot list the groups of user {user:?}"))
}

fn c_name(name: &str) -> Result<CString, String> {
    CString::new(name).map_err(|_| format!("{name:?} contains a NUL byte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_own_user_needs_no_allow_list_and_others_do() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let Ok(Some(name)) = name_of(me) else {
            return;
        };
        let own = resolve(&name, None, &[]).unwrap();
        assert_eq!(own.uid, me);
        assert!(own.groups.contains(&own.gid));
        let err = resolve("heal-no-such-user", None, &["heal-no-such-user".into()]).unwrap_err();
        assert!(err.contains("does not exist on this agent"), "{err}");
        if me == 0 {
            let err = resolve("nobody", None, &[]).unwrap_err();
            assert!(err.contains("--allow-users (none given)"), "{err}");
            let err = resolve("nobody", Some("root"), &["nobody".into()]).unwrap_err();
            assert!(err.contains("not one of user \"nobody\"'s groups"), "{err}");
            let err =
                resolve("nobody", Some("heal-no-such-group"), &["nobody".into()]).unwrap_err();
            assert!(
                err.contains("group \"heal-no-such-group\" does not exist"),
                "{err}"
            );
            let nobody = resolve("nobody", None, &["x".into(), "nobody".into()]).unwrap();
            assert!(nobody.switch && nobody.uid != 0 && !nobody.groups.contains(&0));
        }
    }

    /// The name of a uid, from /etc/passwd (enough for a test).
    fn name_of(uid: libc::uid_t) -> std::io::Result<Option<String>> {
        let passwd = std::fs::read_to_string("/etc/passwd")?;
        Ok(passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
        }))
    }
}
