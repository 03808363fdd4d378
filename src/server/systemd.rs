//! What systemd hands `heal serve`: a listening socket (socket activation:
//! `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`), a notification socket
//! (`NOTIFY_SOCKET`, for `READY=1`, `STOPPING=1` and `WATCHDOG=1`) and a
//! watchdog interval (`WATCHDOG_USEC`, `WATCHDOG_PID`).
//!
//! This is the protocol of sd_listen_fds(3) and sd_notify(3) written out
//! rather than linked: a few environment variables and one datagram per
//! message, so no crate and no libsystemd. Everything is read once, before
//! any thread starts, and the variables are removed from the environment, so
//! runbooks and commands heal starts neither inherit the socket nor talk to
//! systemd in heal's name. Without systemd nothing here does anything.
//!
//! heal serves one socket: a socket unit gives it exactly one
//! `ListenStream=` (an address and port; `Accept=no`).

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Every variable of the protocol, removed once read.
const VARS: [&str; 6] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// What systemd passed to this process.
#[derive(Default)]
pub struct Systemd {
    /// The listening socket of socket activation, if one was passed.
    pub listener: Option<TcpListener>,
    /// Its name (`FileDescriptorName=`, default the socket unit's name).
    pub listener_name: Option<String>,
    notify: Option<Notifier>,
    watchdog: Option<Duration>,
}

impl Systemd {
    /// Reads the variables and removes them from the environment.
    ///
    /// Call it before any thread starts: changing the environment while
    /// another thread reads it is undefined behaviour in libc.
    pub fn from_env() -> Result<Systemd> {
        let vars: Vec<(&str, Option<String>)> = VARS
            .iter()
            .map(|name| (*name, std::env::var(name).ok().filter(|v| !v.is_empty())))
            .collect();
        for name in VARS {
            std::env::remove_var(name);
        }
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.clone())
        };
        let pid = std::process::id();
        let mut systemd = Systemd::default();
        if let Some(passed) = listen_fds(&get, pid)? {
            systemd.listener = Some(adopt(LISTEN_FDS_START)?);
            systemd.listener_name = passed.name;
        }
        if let Some(path) = get("NOTIFY_SOCKET") {
            systemd.notify = Some(Notifier::new(&path)?);
        }
        systemd.watchdog = watchdog(&get, pid)?;
        if systemd.watchdog.is_some() && systemd.notify.is_none() {
            log::warn!("WATCHDOG_USEC is set but NOTIFY_SOCKET is not: heal cannot ping the systemd watchdog");
            systemd.watchdog = None;
        }
        Ok(systemd)
    }

    /// Sends one message (`READY=1`, `STOPPING=1`, …) if systemd listens;
    /// a failure is logged once, not returned: heal serves on without it.
    pub fn notify(&self, message: &str) {
        if let Some(n) = &self.notify {
            n.send(message);
        }
    }

    /// How often systemd wants `WATCHDOG=1`: half its `WatchdogSec=`, as sd_watchdog_enabled(3) advises.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// How long systemd waits for a `WATCHDOG=1` before it kills heal.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }
}

/// Where `NOTIFY_SOCKET` points, and whether the last send failed.
struct Notifier {
    socket: UnixDatagram,
    addr: UnixAddr,
    /// The variable's value, for log lines.
    path: String,
    failing: AtomicBool,
}

impl Notifier {
    fn new(path: &str) -> Result<Notifier> {
        let addr = notify_addr(path).map_err(|e| {
            Error::Usage(format!(
                "NOTIFY_SOCKET {path:?}: {e} (systemd sets it for Type=notify; unset it to run without systemd)"
            ))
        })?;
        let socket = UnixDatagram::unbound()
            .map_err(|e| Error::Io("cannot open a socket for NOTIFY_SOCKET".into(), e))?;
        Ok(Notifier {
            socket,
            addr,
            path: path.to_string(),
            failing: AtomicBool::new(false),
        })
    }

    fn send(&self, message: &str) {
        match self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!("NOTIFY_SOCKET {}: systemd hears heal again", self.path);
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "NOTIFY_SOCKET {}: cannot tell systemd {:?}: {e}",
                        self.path,
                        message.lines().next().unwrap_or_default()
                    );
                }
            }
        }
    }
}

/// `/run/systemd/notify` is a path, `@name` an abstract socket (Linux).
fn notify_addr(path: &str) -> std::result::Result<UnixAddr, String> {
    if let Some(name) = path.strip_prefix('@') {
        return abstract_addr(name);
    }
    if !path.starts_with('/') {
        return Err("is neither an absolute path nor @ and an abstract socket name".into());
    }
    UnixAddr::from_pathname(path).map_err(|e| e.to_string())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &str) -> std::result::Result<UnixAddr, String> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    UnixAddr::from_abstract_name(name.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &str) -> std::result::Result<UnixAddr, String> {
    Err("abstract sockets exist only on Linux".into())
}

/// What `LISTEN_FDS` says was passed to this process.
#[derive(Debug, PartialEq)]
struct Passed {
    name: Option<String>,
}

/// Reads `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (sd_listen_fds(3)):
/// None when nothing was passed, or when it was passed to another process.
fn listen_fds(get: &dyn Fn(&str) -> Option<String>, pid: u32) -> Result<Option<Passed>> {
    let Some(fds) = get("LISTEN_FDS") else {
        return Ok(None);
    };
    let invalid = |name: &str, value: &str, why: &str| {
        Error::Usage(format!(
            "{name} {value:?}: {why} (systemd sets it for socket activation; unset LISTEN_FDS to bind --listen)"
        ))
    };
    let Some(listen_pid) = get("LISTEN_PID") else {
        log::warn!("LISTEN_FDS is set without LISTEN_PID: ignored, heal binds --listen");
        return Ok(None);
    };
    let listen_pid: u32 = listen_pid
        .parse()
        .map_err(|_| invalid("LISTEN_PID", &listen_pid, "is not a process id"))?;
    if listen_pid != pid {
        log::info!("LISTEN_PID {listen_pid} is not heal's pid {pid}: the sockets are another process's, heal binds --listen");
        return Ok(None);
    }
    let n: u32 = fds
        .parse()
        .map_err(|_| invalid("LISTEN_FDS", &fds, "is not a number of sockets"))?;
    if n == 0 {
        return Ok(None);
    }
    if n > 1 {
        return Err(invalid(
            "LISTEN_FDS",
            &fds,
            "heal serves one socket: give its socket unit a single ListenStream=",
        ));
    }
    let name = match get("LISTEN_FDNAMES") {
        None => None,
        Some(names) if names.split(':').count() == n as usize => Some(names),
        Some(names) => {
            return Err(invalid(
                "LISTEN_FDNAMES",
                &names,
                &format!("names {} sockets, LISTEN_FDS {n}", names.split(':').count()),
            ))
        }
    };
    Ok(Some(Passed { name }))
}

/// Takes a passed descriptor as heal's listener: it must be a listening TCP
/// socket. It is made blocking (systemd may pass it non-blocking, and the
/// HTTP server's accept loop waits on it) and close-on-exec.
fn adopt(fd: RawFd) -> Result<TcpListener> {
    let what = |why: String| {
        Error::Usage(format!(
            "LISTEN_FDS: descriptor {fd} {why} (the socket unit needs ListenStream=ADDRESS:PORT and Accept=no)"
        ))
    };
    if !is_listening_stream(fd).map_err(|e| what(format!("is not a socket: {e}")))? {
        return Err(what("is not a listening stream socket".into()));
    }
    // SAFETY: systemd passed this descriptor to this process (LISTEN_PID is
    // ours), it is an open listening socket (checked above), and nothing
    // else in heal owns it: the variables are gone, so it is taken once.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    if let Err(e) = listener.local_addr() {
        // Dropping the listener would close a descriptor that is not TCP; leave it to systemd.
        std::mem::forget(listener);
        return Err(what(format!("is not a TCP socket: {e}")));
    }
    set_cloexec(fd).map_err(|e| what(format!("cannot be made close-on-exec: {e}")))?;
    listener
        .set_nonblocking(false)
        .map_err(|e| what(format!("cannot be made blocking: {e}")))?;
    Ok(listener)
}

/// Whether `fd` is a socket in the listening state (`SO_ACCEPTCONN`) of type stream.
fn is_listening_stream(fd: RawFd) -> io::Result<bool> {
    Ok(sockopt(fd, libc::SO_ACCEPTCONN)? == 1 && sockopt(fd, libc::SO_TYPE)? == libc::SOCK_STREAM)
}

fn sockopt(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which lives on this frame.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this process holds; F_GETFD/F_SETFD touch only its flags.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC)
        }
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `WATCHDOG_USEC` (and `WATCHDOG_PID`, when set, must be ours): how long
/// systemd waits for a `WATCHDOG=1` (sd_watchdog_enabled(3)).
fn watchdog(get: &dyn Fn(&str) -> Option<String>, pid: u32) -> Result<Option<Duration>> {
    let Some(usec) = get("WATCHDOG_USEC") else {
        return Ok(None);
    };
    let micros: u64 = usec.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        Error::Usage(format!(
            "WATCHDOG_USEC {usec:?} is not a positive number of microseconds (systemd sets it from WatchdogSec=)"
        ))
    })?;
    if let Some(for_pid) = get("WATCHDOG_PID") {
        let for_pid: u32 = for_pid.parse().map_err(|_| {
            Error::Usage(format!(
                "WATCHDOG_PID {for_pid:?} is not a process id (systemd sets it with WatchdogSec=)"
            ))
        })?;
        if for_pid != pid {
            log::info!(
                "WATCHDOG_PID {for_pid} is not heal's pid {pid}: the watchdog is another process's"
            );
            return Ok(None);
        }
    }
    Ok(Some(Duration::from_micros(micros)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn check_listen(vars: &[(&str, &str)], expected: std::result::Result<Option<&str>, &str>) {
        let got = listen_fds(&env(vars), 42)
            .map(|p| p.map(|p| p.name.unwrap_or_else(|| "(none)".into())))
            .map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got.as_deref(), want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got:?} lacks {want:?}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn nothing_passed() {
        check_listen(&[], Ok(None));
        check_listen(&[("LISTEN_PID", "42")], Ok(None));
    }

    #[test]
    fn one_socket_for_us() {
        check_listen(
            &[("LISTEN_FDS", "1"), ("LISTEN_PID", "42")],
            Ok(Some("(none)")),
        );
        check_listen(
            &[
                ("LISTEN_FDS", "1"),
                ("LISTEN_PID", "42"),
                ("LISTEN_FDNAMES", "heal.socket"),
            ],
            Ok(Some("heal.socket")),
        );
    }

    #[test]
    fn sockets_for_another_process_are_ignored() {
        check_listen(&[("LISTEN_FDS", "1"), ("LISTEN_PID", "7")], Ok(None));
        check_listen(&[("LISTEN_FDS", "1")], Ok(None));
        check_listen(&[("LISTEN_FDS", "0"), ("LISTEN_PID", "42")], Ok(None));
        check_listen(&[("LISTEN_FDS", "abc"), ("LISTEN_PID", "7")], Ok(None));
    }

    #[test]
    fn bad_values_name_their_variable() {
        check_listen(
            &[("LISTEN_FDS", "abc"), ("LISTEN_PID", "42")],
            Err("LISTEN_FDS \"abc\": is not a number of sockets"),
        );
        check_listen(
            &[("LISTEN_FDS", "-1"), ("LISTEN_PID", "42")],
            Err("LISTEN_FDS \"-1\""),
        );
        check_listen(
            &[("LISTEN_FDS", "1"), ("LISTEN_PID", "me")],
            Err("LISTEN_PID \"me\": is not a process id"),
        );
        check_listen(
            &[("LISTEN_FDS", "2"), ("LISTEN_PID", "42")],
            Err("heal serves one socket"),
        );
        check_listen(
            &[
                ("LISTEN_FDS", "1"),
                ("LISTEN_PID", "42"),
                ("LISTEN_FDNAMES", "a:b"),
            ],
            Err("LISTEN_FDNAMES \"a:b\": names 2 sockets, LISTEN_FDS 1"),
        );
    }

    #[test]
    fn watchdog_interval() {
        let w = |vars: &[(&str, &str)]| watchdog(&env(vars), 42).map_err(|e| e.to_string());
        assert_eq!(w(&[]).unwrap(), None);
        assert_eq!(
            w(&[("WATCHDOG_USEC", "30000000")]).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            w(&[("WATCHDOG_USEC", "1000000"), ("WATCHDOG_PID", "42")]).unwrap(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            w(&[("WATCHDOG_USEC", "1000000"), ("WATCHDOG_PID", "7")]).unwrap(),
            None
        );
        assert!(w(&[("WATCHDOG_USEC", "0")])
            .unwrap_err()
            .starts_with("WATCHDOG_USEC \"0\""));
        assert!(w(&[("WATCHDOG_USEC", "30s")])
            .unwrap_err()
            .contains("microseconds"));
        assert!(w(&[("WATCHDOG_USEC", "1"), ("WATCHDOG_PID", "x")])
            .unwrap_err()
            .starts_with("WATCHDOG_PID \"x\""));
    }

    #[test]
    fn notify_socket_forms() {
        assert!(notify_addr("/run/systemd/notify").is_ok());
        assert!(notify_addr("@heal-test").is_ok());
        assert!(notify_addr("run/notify")
            .unwrap_err()
            .contains("absolute path"));
        assert!(notify_addr("vsock:2:1234").is_err());
    }

    #[test]
    fn notify_reaches_a_bound_socket() {
        let dir = std::env::temp_dir().join(format!("heal-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.to_str().unwrap()).unwrap();
        notifier.send("READY=1");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_descriptor_that_is_not_a_listener_is_refused() {
        let stream = UnixDatagram::unbound().unwrap();
        use std::os::fd::AsRawFd;
        let err = adopt(stream.as_raw_fd()).unwrap_err().to_string();
        assert!(err.contains("is not a listening stream socket"), "{err}");
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening_stream(tcp.as_raw_fd()).unwrap());
    }
}
