//! Runs one runbook step as a child process and reports how it ended.
//!
//! A step is either a shell string (given to `/bin/sh -c`) or an argument
//! list (executed directly, with no shell in between). Each step runs in its
//! own process group with stdin on `/dev/null`, and stdout and stderr share
//! one pipe so that their interleaving is kept. A reader thread copies the
//! pipe into an [`Output`], which keeps only a bounded tail of the bytes but
//! counts all of them, so a step that prints gigabytes costs no more memory
//! than one that prints a page. A waiter thread notices the exit of the
//! child without reaping it, which keeps the process group id reserved until
//! this module is done signalling the group.
//!
//! On timeout or cancel the whole group gets SIGTERM, and SIGKILL once the
//! grace period has passed if anything in the group is still alive. After a
//! normal exit the group is left alone: a step may start a daemon on
//! purpose, so its background processes are not killed, and the output pipe
//! is waited on for at most about a second before the step is reported as
//! done. The reader thread then keeps draining and discarding whatever those
//! processes write, so they never get SIGPIPE, and it ends when the last of
//! them closes the pipe.
//!
//! A step may run as another user ([`RunAs`], resolved by the caller before
//! the fork): the child sets its supplementary groups, its group and then
//! its user, and only then enters the step's directory, so a directory that
//! user may not enter fails the step with a reason. The step gets that
//! user's `HOME`, `USER` and `LOGNAME`, and not the agent's `HEAL_TOKEN`.
//!
//! This module deliberately does not: allocate a terminal, feed stdin,
//! change resource limits, clear the rest of the inherited environment, decode output as text, chase processes that leave
//! the step's process group (for example with `setsid`), or reap orphans
//! that are reparented to the agent.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The size of one read from the output pipe.
const CHUNK: usize = 64 * 1024;
/// How many chunks may wait between the reader thread and `run_step`.
const CHANNEL_DEPTH: usize = 2;
/// How often `run_step` looks at the cancel flag while the step runs.
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// How often the process group is checked for survivors during the grace period.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// How long to wait for the end of output once the step's main process is gone.
const EOF_WAIT: Duration = Duration::from_secs(1);
/// How long to wait for the main process to exit after SIGKILL before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What to execute: a string goes to `/bin/sh -c`, a list is executed directly (no shell).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Run {
    /// A shell script, run as `/bin/sh -c SCRIPT`.
    Shell(String),
    /// A program and its arguments, run without a shell; the program is looked up in `PATH`.
    Argv(Vec<String>),
}

/// One step to run.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// What to execute.
    pub run: &'a Run,
    /// Environment variables added to the agent's own environment.
    pub env: &'a [(String, String)],
    /// How long the step may run before it is stopped.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL to the process group on timeout or cancel.
    pub grace: Duration,
    /// Written to the process's stdin, which is then closed; empty: stdin is
    /// closed from the start (runbook steps never read a terminal).
    pub stdin: &'a [u8],
    /// Directory it starts in (None: the agent's own).
    pub cwd: Option<&'a std::path::Path>,
}

/// The account a step runs as, resolved before the fork (nothing in the
/// child looks a name up).
#[derive(Debug, Clone)]
pub struct RunAs {
    /// User name, for `USER` and `LOGNAME`.
    pub name: String,
    /// Its home directory, for `HOME`.
    pub home: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups (the user's, as `initgroups` would set them).
    pub groups: Vec<libc::gid_t>,
    /// Whether the child changes its ids (false: the agent's own user).
    pub switch: bool,
    /// A descriptor of the agent's the step keeps open (its alert file).
    pub keep_fd: Option<std::os::fd::RawFd>,
}

/// Combined output of a running step: keeps only the last `max` bytes, counts everything, and lets a streamer take what is new.
pub struct Output {
    inner: Mutex<OutputInner>,
}

/// The state behind the lock of an [`Output`].
struct OutputInner {
    /// The kept tail, never longer than `max`.
    buf: VecDeque<u8>,
    /// The most bytes kept.
    max: usize,
    /// All bytes ever written, kept or not.
    total: u64,
    /// Values replaced by `***` before anything is kept (a step's secrets).
    secrets: Vec<Vec<u8>>,
    /// The last bytes written, held back while they may be the start of a
    /// secret that the next write completes.
    held: Vec<u8>,
}

impl Output {
    /// Creates an empty output that keeps at most the last `max` bytes.
    pub fn new(max: usize) -> Output {
        Output::scrubbing(max, &[])
    }

    /// An output in which each of `secrets` (the non-empty ones) becomes
    /// `***` before it is kept, streamed or counted, wherever the writes
    /// split it; call `finish` once the step has ended.
    pub fn scrubbing(max: usize, secrets: &[String]) -> Output {
        let mut secrets: Vec<Vec<u8>> = secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        // Longest first, so one that holds another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Output {
            inner: Mutex::new(OutputInner {
                buf: VecDeque::new(),
                max,
                total: 0,
                secrets,
                held: Vec::new(),
            }),
        }
    }

    /// Keeps what was held back for a secret that never came.
    pub fn finish(&self) {
        let mut inner = self.lock();
        let held = std::mem::take(&mut inner.held);
        let (clean, _) = scrub(&held, &inner.secrets, true);
        inner.keep(&clean);
    }

    /// Bytes written so far in total (including dropped ones).
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Returns the bytes written since `*cursor` (a total-bytes offset), advancing it. If some of them were already dropped from the tail, returns what is still kept and the number of bytes skipped.
    ///
    /// A cursor past the total (which only a caller's mistake produces) is
    /// moved back to the total, and nothing is returned.
    pub fn take_new(&self, cursor: &mut u64) -> (Vec<u8>, u64) {
        let inner = self.lock();
        let total = inner.total;
        if *cursor >= total {
            *cursor = total;
            return (Vec::new(), 0);
        }
        let kept = inner.buf.len();
        let kept_start = total.saturating_sub(kept as u64);
        let (from, skipped) = if *cursor < kept_start {
            (0, kept_start - *cursor)
        } else {
            // The difference is at most `kept`, so it fits in a usize.
            let from = usize::try_from(*cursor - kept_start).unwrap_or(kept);
            (from, 0)
        };
        *cursor = total;
        (copy_from(&inner.buf, from), skipped)
    }

    /// The kept tail and whether anything was dropped.
    pub fn tail(&self) -> (Vec<u8>, bool) {
        let inner = self.lock();
        let dropped = inner.total > inner.buf.len() as u64;
        (copy_from(&inner.buf, 0), dropped)
    }

    /// Appends bytes (secrets scrubbed), dropping the oldest ones beyond `max`.
    fn push(&self, data: &[u8]) {
        let mut inner = self.lock();
        if inner.secrets.is_empty() {
            return inner.keep(data);
        }
        let mut all = std::mem::take(&mut inner.held);
        all.extend_from_slice(data);
        let (clean, held) = scrub(&all, &inner.secrets, false);
        inner.held = held;
        inner.keep(&clean);
    }

    /// Locks the state; a panic elsewhere while it was held leaves it consistent, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, OutputInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `data` with each secret (longest first) replaced by `***`, and, unless
/// `last`, the end held back where it may still become a secret: what to
/// keep, and what to hold.
fn scrub(data: &[u8], secrets: &[Vec<u8>], last: bool) -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if !last
            && secrets
                .iter()
                .any(|s| s.len() > rest.len() && s.starts_with(rest))
        {
            return (out, rest.to_vec());
        }
        match secrets.iter().find(|s| rest.starts_with(s)) {
            Some(secret) => {
                out.extend_from_slice(b"***");
                at += secret.len();
            }
            None => {
                out.push(data[at]);
                at += 1;
            }
        }
    }
    (out, Vec::new())
}

impl OutputInner {
    /// Appends bytes, dropping the oldest ones beyond `max`.
    fn keep(&mut self, data: &[u8]) {
        let inner = self;
        inner.total = inner.total.saturating_add(data.len() as u64);
        let max = inner.max;
        if data.len() >= max {
            inner.buf.clear();
            inner.buf.extend(&data[data.len() - max..]);
            return;
        }
        // Making room before extending, and growing by doubling only up to
        // `max`, keeps the buffer's capacity at most `max`.
        let overflow = (inner.buf.len() + data.len()).saturating_sub(max);
        inner.buf.drain(..overflow);
        let needed = inner.buf.len() + data.len();
        if needed > inner.buf.capacity() {
            let target = inner.buf.capacity().saturating_mul(2).min(max).max(needed);
            let additional = target - inner.buf.len();
            inner.buf.reserve_exact(additional);
        }
        inner.buf.extend(data);
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Output")
            .field("max", &inner.max)
            .field("kept", &inner.buf.len())
            .field("total", &inner.total)
            .finish()
    }
}

/// Copies the bytes of `buf` from index `from` on into a new vector.
fn copy_from(buf: &VecDeque<u8>, from: usize) -> Vec<u8> {
    let from = from.min(buf.len());
    let (a, b) = buf.as_slices();
    let mut out = Vec::with_capacity(buf.len() - from);
    if from < a.len() {
        out.extend_from_slice(&a[from..]);
        out.extend_from_slice(b);
    } else {
        out.extend_from_slice(&b[from - a.len()..]);
    }
    out
}

/// How a step ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The exit code; None when killed by a signal or never started.
    pub exit_code: Option<i32>,
    /// The signal that ended the step's main process, if one did.
    pub signal: Option<i32>,
    /// Whether the step was stopped because its timeout passed.
    pub timed_out: bool,
    /// Whether the step was stopped because it was cancelled.
    pub cancelled: bool,
    /// Wall-clock time from the start of `run_step` to its return.
    pub duration_ms: u64,
    /// Set when the process could not be started (e.g. "no such file: /usr/bin/x"), naming the program.
    pub spawn_error: Option<String>,
}

impl Outcome {
    /// True when the step exited with code 0 and was neither timed out nor cancelled.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && !self.cancelled
    }
}

/// Why `run_step` stopped a step before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancel,
}

/// What the reader and waiter threads tell `run_step`.
enum Event {
    /// Bytes read from the output pipe.
    Data(Vec<u8>),
    /// The output pipe was closed by every process that had it.
    Eof,
    /// The main process has exited; it is a zombie until `run_step` reaps it.
    Exited,
}

/// Runs one step to its end. `output` receives combined stdout+stderr as it is produced. `cancel` set to true makes it stop the step (SIGTERM to the group, SIGKILL after grace) and return with `cancelled = true`.
pub fn run_step(step: &Step, output: &Output, cancel: &AtomicBool) -> Outcome {
    run_step_as(step, None, output, cancel)
}

/// As [`run_step`], as the user `run_as` (None: the agent's own).
pub fn run_step_as(
    step: &Step,
    run_as: Option<&RunAs>,
    output: &Output,
    cancel: &AtomicBool,
) -> Outcome {
    let start = Instant::now();
    let mut outcome = Outcome {
        exit_code: None,
        signal: None,
        timed_out: false,
        cancelled: false,
        duration_ms: 0,
        spawn_error: None,
    };
    match spawn(step, run_as) {
        Ok(running) => supervise(running, step, output, cancel, start, &mut outcome),
        Err(message) => {
            log::warn!("step not started: {message}");
            outcome.spawn_error = Some(message);
        }
    }
    outcome.duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    outcome
}

/// A started step whose threads are running.
struct Started {
    child: Child,
    pgid: libc::pid_t,
    rx: Receiver<Event>,
    /// Set by the waiter thread as soon as the main process has exited.
    exited: Arc<AtomicBool>,
}

/// Starts the step's process and its reader and waiter threads.
fn spawn(step: &Step, run_as: Option<&RunAs>) -> Result<Started, String> {
    let (program, args): (&str, &[String]) = match step.run {
        Run::Shell(script) => ("/bin/sh", std::slice::from_ref(script)),
        Run::Argv(argv) => match argv.split_first() {
            Some((program, rest)) => (program.as_str(), rest),
            None => return Err("empty argument list: nothing to run".to_string()),
        },
    };
    let shown = program.escape_debug().to_string();
    if program.is_empty() {
        return Err("empty program name: nothing to run".to_string());
    }

    let mut cmd = Command::new(program);
    if matches!(step.run, Run::Shell(_)) {
        cmd.arg("-c");
    }
    cmd.args(args);
    match (step.cwd, run_as) {
        (_, Some(account)) => become_user(&mut cmd, account, step.cwd)?,
        (Some(dir), None) => {
            cmd.current_dir(dir);
        }
        (None, None) => {}
    }
    for (key, value) in step.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!(
                "invalid environment variable name {:?} for {shown}",
                key
            ));
        }
        // NUL bytes cannot be passed to a process; dropping them keeps
        // hostile values from making the spawn fail.
        if value.contains('\0') {
            cmd.env(key, value.replace('\0', ""));
        } else {
            cmd.env(key, value);
        }
    }

    let (read_end, write_end) =
        cloexec_pipe().map_err(|e| format!("cannot create output pipe for {shown}: {e}"))?;
    let write_dup = write_end
        .try_clone()
        .map_err(|e| format!("cannot duplicate output pipe for {shown}: {e}"))?;
    cmd.stdin(if step.stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::from(write_dup))
    .stderr(Stdio::from(write_end))
    .process_group(0);

    let spawned = cmd.spawn();
    // Dropping the command closes the parent's copies of the write end, so
    // end of file comes as soon as the step's processes close theirs.
    drop(cmd);
    let mut child = spawned.map_err(|e| match said_before_exec(&read_end) {
        Some(why) => format!("{why}: {e}"),
        None => describe_spawn_error(&shown, &e),
    })?;
    if let Some(mut pipe) = child.stdin.take() {
        // A writer thread, so a command that does not read cannot block the
        // step past its timeout; a broken pipe only means it stopped reading.
        let input = step.stdin.to_vec();
        let _ = thread::Builder::new()
            .name("heal-exec-stdin".to_string())
            .spawn(move || {
                let _ = pipe.write_all(&input);
            });
    }

    // The reader starts after the spawn, so starting a thread does not delay
    // the step; until it runs, the pipe buffers the output.
    let (tx, rx) = mpsc::sync_channel(CHANNEL_DEPTH);
    let reader_tx = tx.clone();
    let reader = thread::Builder::new()
        .name("heal-exec-read".to_string())
        .spawn(move || read_pipe(File::from(read_end), reader_tx));

    let pgid = match libc::pid_t::try_from(child.id()) {
        Ok(pid) if pid > 1 => pid,
        _ => {
            // A pid that does not fit, or 0 or 1, would make kill(-pgid)
            // hit the wrong processes, so this child is never signalled.
            log::error!("step {shown} got an impossible pid {}", child.id());
            let _ = child.wait();
            return Err(format!("cannot supervise {shown}: bad pid {}", child.id()));
        }
    };
    log::debug!("started step {shown} as process group {pgid}");
    if let Err(e) = reader {
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait();
        return Err(format!("cannot start output reader for {shown}: {e}"));
    }

    let exited = Arc::new(AtomicBool::new(false));
    let waiter_exited = Arc::clone(&exited);
    let waiter = thread::Builder::new()
        .name("heal-exec-wait".to_string())
        .spawn(move || wait_exit(pgid, &waiter_exited, &tx));
    if let Err(e) = waiter {
        signal_group(pgid, libc::SIGKILL);
        let _ = child.wait();
        return Err(format!("cannot start exit waiter for {shown}: {e}"));
    }
    Ok(Started {
        child,
        pgid,
        rx,
        exited,
    })
}

/// Makes the child start as `account`, in `cwd` entered as that user. The
/// closure runs between fork and exec, so it only makes system calls (no
/// allocation, no lock): groups, then group, then user, so no way back to
/// root is left, then the descriptor it keeps, then the directory.
fn become_user(
    cmd: &mut Command,
    account: &RunAs,
    cwd: Option<&std::path::Path>,
) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    cmd.env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name)
        .env_remove("HEAL_TOKEN");
    let dir = cwd
        .map(|d| std::ffi::CString::new(d.as_os_str().as_bytes()))
        .transpose()
        .map_err(|_| "cwd contains a NUL byte".to_string())?;
    // Written to the output pipe (already stderr) when the directory
    // cannot be entered, so the spawn error says why.
    let cannot_enter = format!(
        "user {} cannot enter cwd {}",
        account.name,
        cwd.map(|d| d.display().to_string()).unwrap_or_default()
    )
    .into_bytes();
    let account = account.clone();
    let last = io::Error::last_os_error;
    // SAFETY: the closure only calls async-signal-safe functions (setgroups,
    // setgid, setuid, fcntl, chdir, write) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let switched = !account.switch
                || (libc::setgroups(account.groups.len(), account.groups.as_ptr()) == 0
                    && libc::setgid(account.gid) == 0
                    && libc::setuid(account.uid) == 0);
            if !switched {
                return Err(last());
            }
            if let Some(fd) = account.keep_fd {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(last());
                }
            }
            if let Some(dir) = &dir {
                if libc::chdir(dir.as_ptr()) != 0 {
                    let e = last();
                    libc::write(2, cannot_enter.as_ptr().cast(), cannot_enter.len());
                    return Err(e);
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// What a child that failed before exec wrote to the output pipe (it has
/// exited, so whatever it wrote is there), if anything.
fn said_before_exec(read_end: &OwnedFd) -> Option<String> {
    use std::os::fd::AsRawFd;
    let fd = read_end.as_raw_fd();
    let mut buf = [0u8; 512];
    // SAFETY: fcntl and read on a descriptor this function borrows, into a
    // buffer of the length given.
    let n = unsafe {
        libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
        libc::read(fd, buf.as_mut_ptr().cast(), buf.len())
    };
    let n = usize::try_from(n).ok().filter(|&n| n > 0)?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Says why a process could not be started, naming the program.
fn describe_spawn_error(program: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => format!("no such file: {program}"),
        io::ErrorKind::PermissionDenied => format!("permission denied: {program}"),
        _ => format!("cannot start {program}: {e}"),
    }
}

/// Creates a pipe whose both ends are close-on-exec.
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: `fds` is an array of two ints, which is what pipe2 writes to.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and nothing else owns them.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok(ends)
}

/// The reader thread: forwards the pipe's bytes until `run_step` stops
/// listening, then drains and discards them until end of file, so that
/// background processes of the step never write into a closed pipe.
fn read_pipe(mut pipe: File, tx: SyncSender<Event>) {
    let mut buf = vec![0u8; CHUNK];
    let mut forwarding = true;
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if forwarding && tx.send(Event::Data(buf[..n].to_vec())).is_err() {
                    forwarding = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("reading step output failed: {e}");
                break;
            }
        }
    }
    if forwarding {
        let _ = tx.send(Event::Eof);
    }
}

/// The waiter thread: waits for the main process to exit without reaping
/// it, so that its pid and process group id cannot be reused while
/// `run_step` may still signal the group.
fn wait_exit(pid: libc::pid_t, exited: &AtomicBool, tx: &SyncSender<Event>) {
    // The pid was checked to be positive when it was taken.
    let id = libc::id_t::try_from(pid).unwrap_or(0);
    loop {
        // SAFETY: siginfo_t is plain data, for which all zero bytes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid siginfo_t for waitid to fill in.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            // Most likely something else in the agent reaped the child;
            // `run_step` will find out when it reaps.
            log::warn!("waiting for step process {pid} failed: {e}");
            break;
        }
    }
    exited.store(true, Ordering::Release);
    let _ = tx.send(Event::Exited);
}

/// Sends `sig` to every process in the group; a group that is already gone is fine.
fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid <= 1 {
        // kill(0) or kill(-1) would signal the agent's own group or everything.
        log::error!("refusing to signal process group {pgid}");
        return;
    }
    // SAFETY: kill has no memory effects; `-pgid` names only the step's group.
    let rc = unsafe { libc::kill(-pgid, sig) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            log::warn!("signal {sig} to process group {pgid} failed: {e}");
        }
    }
}

/// Whether any process of the group is still running (zombies do not count).
///
/// Call only once the group's leader has been reaped: before that the
/// leader itself keeps the group in existence.
fn group_alive(pgid: libc::pid_t) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: signal 0 only checks whether the group exists.
    let rc = unsafe { libc::kill(-pgid, 0) };
    if rc != 0 {
        // EPERM means members exist that the agent may not signal.
        return io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    }
    // Orphaned members that were killed stay zombies until init reaps them,
    // which some inits do late or never, so /proc tells which ones still run.
    // Without /proc the group is assumed alive.
    proc_group_alive(pgid).unwrap_or(true)
}

/// Scans /proc for a process of the group that is not a zombie.
fn proc_group_alive(pgid: libc::pid_t) -> Option<bool> {
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A process that vanished between listing and reading is gone, which is fine.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat) {
            if pgrp == pgid && state != 'Z' && state != 'X' {
                return Some(true);
            }
        }
    }
    Some(false)
}

/// Reads the state and process group from a /proc/PID/stat line.
fn parse_stat(stat: &str) -> Option<(char, libc::pid_t)> {
    // The command name may contain spaces and parentheses, so fields are
    // counted from the last closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Formats a duration for the marker line, e.g. "2s" or "300ms".
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let (secs, rest) = (ms / 1000, ms % 1000);
    if secs > 0 && rest == 0 {
        format!("{secs}s")
    } else {
        format!("{ms}ms")
    }
}

/// `run_step`'s view of a started step.
struct Supervisor<'o> {
    /// The main process, until it is reaped or given up on.
    child: Option<Child>,
    pgid: libc::pid_t,
    rx: Receiver<Event>,
    output: &'o Output,
    exited: Arc<AtomicBool>,
    /// The waiter thread reported the exit (and the main process was reaped).
    exit_seen: bool,
    /// The output pipe reached end of file.
    eof: bool,
    /// Both threads stopped talking; no more events will come.
    disconnected: bool,
    /// What reaping the main process gave.
    status: Option<io::Result<ExitStatus>>,
}

impl Supervisor<'_> {
    /// Waits up to `wait` for one event and handles it.
    fn pump(&mut self, wait: Duration) {
        if self.disconnected {
            // No event will come; sleeping keeps callers' loops from spinning.
            thread::sleep(wait);
            return;
        }
        match self.rx.recv_timeout(wait) {
            Ok(Event::Data(data)) => self.output.push(&data),
            Ok(Event::Eof) => self.eof = true,
            Ok(Event::Exited) => {
                self.exit_seen = true;
                self.reap();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                self.disconnected = true;
                self.eof = true;
            }
        }
    }

    /// Reaps the main process, which has already exited.
    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.status = Some(child.wait());
        }
    }

    /// Handles events until the main process has exited or `until` passes.
    fn wait_exit(&mut self, until: Instant) {
        while !self.exit_seen && !self.disconnected {
            let now = Instant::now();
            if now >= until {
                break;
            }
            self.pump(until - now);
        }
    }

    /// Handles events until end of output, `until`, or a cancel.
    fn wait_eof(&mut self, until: Instant, cancel: &AtomicBool) {
        while !self.eof {
            let now = Instant::now();
            if now >= until || cancel.load(Ordering::Relaxed) {
                break;
            }
            self.pump((until - now).min(CANCEL_POLL));
        }
    }

    /// Stops the group: SIGTERM, then SIGKILL once `grace` has passed if
    /// anything in it still runs. Returns whether SIGKILL was needed.
    fn terminate(&mut self, grace: Duration) -> bool {
        signal_group(self.pgid, libc::SIGTERM);
        let grace_end = Instant::now().checked_add(grace);
        loop {
            if self.exit_seen && !group_alive(self.pgid) {
                // Zombies may remain; SIGKILL is harmless for them and still
                // reaches any thread that outlived its process's main thread.
                if self.group_exists() {
                    signal_group(self.pgid, libc::SIGKILL);
                }
                return false;
            }
            let now = Instant::now();
            let left = match grace_end {
                Some(end) if now >= end => break,
                Some(end) => end - now,
                None => Duration::MAX,
            };
            let poll = if self.exit_seen {
                GROUP_POLL
            } else {
                CANCEL_POLL
            };
            self.pump(left.min(poll));
        }
        signal_group(self.pgid, libc::SIGKILL);
        if let Some(until) = Instant::now().checked_add(KILL_WAIT) {
            self.wait_exit(until);
        }
        true
    }

    /// Whether the group id is still taken (zombies count).
    fn group_exists(&self) -> bool {
        // SAFETY: signal 0 only checks whether the group exists.
        self.pgid > 1 && unsafe { libc::kill(-self.pgid, 0) } == 0
    }
}

/// Watches a started step until it ends or is stopped, and fills in `outcome`.
fn supervise(
    started: Started,
    step: &Step,
    output: &Output,
    cancel: &AtomicBool,
    start: Instant,
    outcome: &mut Outcome,
) {
    let mut sup = Supervisor {
        child: Some(started.child),
        pgid: started.pgid,
        rx: started.rx,
        output,
        exited: started.exited,
        exit_seen: false,
        eof: false,
        disconnected: false,
        status: None,
    };
    let deadline = start.checked_add(step.timeout);

    let stop = loop {
        if sup.exit_seen || sup.disconnected {
            break None;
        }
        if cancel.load(Ordering::Relaxed) {
            break Some(Stop::Cancel);
        }
        let now = Instant::now();
        let wait = match deadline {
            Some(d) if now >= d => break Some(Stop::Timeout),
            Some(d) => (d - now).min(CANCEL_POLL),
            None => CANCEL_POLL,
        };
        sup.pump(wait);
    };
    // A step that exited just as it was about to be stopped has ended by
    // itself; its exit event is already on the way.
    let stop = stop.filter(|_| !sup.exited.load(Ordering::Acquire));

    match stop {
        None => {
            if let Some(until) = Instant::now().checked_add(KILL_WAIT) {
                sup.wait_exit(until);
            }
            if let Some(until) = Instant::now().checked_add(EOF_WAIT) {
                sup.wait_eof(until, cancel);
            }
        }
        Some(reason) => {
            match reason {
                Stop::Timeout => outcome.timed_out = true,
                Stop::Cancel => outcome.cancelled = true,
            }
            let killed = sup.terminate(step.grace);
            if let Some(until) = Instant::now().checked_add(EOF_WAIT) {
                // A second cancel must not cut the drain short here.
                sup.wait_eof(until, &AtomicBool::new(false));
            }
            let what = match reason {
                Stop::Timeout => format!("step timed out after {}", human(step.timeout)),
                Stop::Cancel => "step cancelled".to_string(),
            };
            let how = if killed {
                "sent SIGTERM, then SIGKILL"
            } else {
                "sent SIGTERM"
            };
            output.push(format!("\n[heal: {what}; {how}]\n").as_bytes());
        }
    }

    if let Some(child) = sup.child.take() {
        abandon(child, sup.pgid);
    }
    match sup.status {
        Some(Ok(status)) => {
            outcome.exit_code = status.code();
            outcome.signal = status.signal();
        }
        Some(Err(e)) => log::warn!("reaping step process {} failed: {e}", sup.pgid),
        None => {}
    }
    log::debug!(
        "step in process group {} ended: exit {:?}, signal {:?}, timed out {}, cancelled {}",
        sup.pgid,
        outcome.exit_code,
        outcome.signal,
        outcome.timed_out,
        outcome.cancelled
    );
}

/// Leaves a main process that was not reaped in time (for example one
/// stuck in the kernel even after SIGKILL) to a thread that reaps it
/// whenever it exits.
fn abandon(mut child: Child, pgid: libc::pid_t) {
    log::warn!("step process {pgid} has not exited in time; reaping it in the background");
    let reaper = thread::Builder::new()
        .name("heal-exec-reap".to_string())
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = reaper {
        log::error!("cannot start reaper for step process {pgid}: {e}; it stays a zombie");
    }
}

/// Upper-cases a name and turns every other character into `_`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The first two names that `env_name` maps to one variable, and that variable.
pub fn same_env_name<'a>(
    names: impl Iterator<Item = &'a String>,
) -> Option<(&'a str, &'a str, String)> {
    let mut seen = std::collections::HashMap::new();
    for name in names {
        let var = env_name(name);
        if let Some(first) = seen.insert(var.clone(), name.as_str()) {
            return Some((first, name.as_str(), var));
        }
    }
    None
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    impl Output {
        /// The allocated size of the tail buffer.
        fn capacity(&self) -> usize {
            self.lock().buf.capacity()
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("heal-exec-{}-{name}", std::process::id()))
    }

    fn shell(script: &str) -> Run {
        Run::Shell(script.to_string())
    }

    fn argv(args: &[&str]) -> Run {
        Run::Argv(args.iter().map(|s| s.to_string()).collect())
    }

    /// Runs a step with a generous timeout and returns its outcome and output.
    fn run_with(run: &Run, env: &[(String, String)], timeout: Duration) -> (Outcome, Vec<u8>) {
        let step = Step {
            run,
            env,
            timeout,
            grace: Duration::from_millis(500),
            stdin: &[],
            cwd: None,
        };
        let output = Output::new(1 << 20);
        let outcome = run_step(&step, &output, &AtomicBool::new(false));
        (outcome, output.tail().0)
    }

    fn run(run: &Run) -> (Outcome, Vec<u8>) {
        run_with(run, &[], Duration::from_secs(10))
    }

    /// Whether a process is gone or a zombie (dead, waiting for init to reap it).
    fn dead(pid: libc::pid_t) -> bool {
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        }
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => matches!(parse_stat(&stat), Some(('Z', _)) | Some(('X', _))),
            Err(_) => true,
        }
    }

    fn wait_dead(pid: libc::pid_t, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if dead(pid) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        dead(pid)
    }

    fn read_pid(path: &PathBuf) -> libc::pid_t {
        let text = std::fs::read_to_string(path).expect("the step wrote its pid file");
        text.trim().parse().expect("the pid file holds a number")
    }

    #[test]
    fn output_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Output>();
    }

    #[test]
    fn exit_codes_propagate() {
        let (ok, _) = run(&shell("exit 0"));
        assert_eq!(ok.exit_code, Some(0));
        assert!(ok.success());
        let (seven, _) = run(&shell("exit 7"));
        assert_eq!(seven.exit_code, Some(7));
        assert_eq!(seven.signal, None);
        assert!(!seven.success());
        let (killed, _) = run(&shell("kill -9 $$"));
        assert_eq!(killed.exit_code, None);
        assert_eq!(killed.signal, Some(9));
        assert!(!killed.success());
        let (argv_fail, _) = run(&argv(&["false"]));
        assert_eq!(argv_fail.exit_code, Some(1));
    }

    #[test]
    fn a_step_as_an_account_gets_its_home_and_names_and_enters_cwd_as_it() {
        let run_as = |account: &RunAs, cwd: &std::path::Path, script: &str| {
            let run = shell(script);
            let step = Step {
                run: &run,
                env: &[],
                timeout: Duration::from_secs(10),
                grace: Duration::from_millis(500),
                stdin: &[],
                cwd: Some(cwd),
            };
            let output = Output::new(4096);
            let outcome = run_step_as(&step, Some(account), &output, &AtomicBool::new(false));
            (
                outcome,
                String::from_utf8_lossy(&output.tail().0).into_owned(),
            )
        };
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let own = RunAs {
            name: "someone".into(),
            home: "/nonexistent/someone".into(),
            uid,
            gid,
            groups: vec![gid],
            switch: false,
            keep_fd: None,
        };
        let tmp = std::env::temp_dir();
        let (outcome, out) = run_as(
            &own,
            &tmp,
            r#"printf '%s %s %s %s' "$HOME" "$USER" "$LOGNAME" "$(pwd)""#,
        );
        assert!(outcome.success(), "{outcome:?}");
        let expected = format!("/nonexistent/someone someone someone {}", tmp.display());
        assert_eq!(out, expected);
        if uid != 0 {
            return;
        }
        // As root: the ids change before the directory is entered.
        let nobody = RunAs {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            switch: true,
            ..own
        };
        let (outcome, out) = run_as(&nobody, std::path::Path::new("/"), "id -u; id -G");
        assert!(outcome.success(), "{outcome:?}");
        assert_eq!(out, "65534\n65534\n");
        let closed = temp_path("closed-dir");
        let _ = std::fs::remove_dir_all(&closed);
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let (outcome, _) = run_as(&nobody, &closed, "echo never");
        let error = outcome.spawn_error.expect("the step does not start");
        assert!(
            error.starts_with(&format!(
                "user someone cannot enter cwd {}: Permission denied",
                closed.display()
            )),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&closed);
    }

    #[test]
    fn stdout_and_stderr_interleave() {
        let (outcome, out) = run(&shell("echo one; echo two >&2; echo three"));
        assert!(outcome.success());
        assert_eq!(out, b"one\ntwo\nthree\n");
    }

    #[test]
    fn argv_runs_without_shell() {
        let marker = temp_path("argv-marker");
        let tricky = format!(
            "$(touch {}) `touch {}`; x",
            marker.display(),
            marker.display()
        );
        let (outcome, out) = run(&argv(&["printf", "%s|", "a b  c", &tricky, "*"]));
        assert!(outcome.success(), "{outcome:?}");
        assert_eq!(out, format!("a b  c|{tricky}|*|").into_bytes());
        assert!(!marker.exists());
    }

    #[test]
    fn env_values_are_passed_literally() {
        let marker = temp_path("env-marker");
        let m = marker.display();
        let hostile =
            format!("$(touch {m}) `touch {m}`; touch {m}\nline two 'q' \"dq\" \\ $HOME\0tail");
        let env = vec![
            ("V".to_string(), hostile.clone()),
            ("HEAL_OTHER".to_string(), "plain".to_string()),
        ];
        let (outcome, out) = run_with(
            &shell("printf '%s' \"$V\"; printf '|%s' \"$HEAL_OTHER\""),
            &env,
            Duration::from_secs(10),
        );
        assert!(outcome.success(), "{outcome:?}");
        let expected = format!("{}|plain", hostile.replace('\0', ""));
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert!(!marker.exists(), "the env value was interpreted by a shell");
    }

    #[test]
    fn bad_env_name_is_a_spawn_error() {
        let env = vec![("A=B".to_string(), "x".to_string())];
        let (outcome, _) = run_with(&shell("true"), &env, Duration::from_secs(5));
        assert!(outcome.spawn_error.is_some());
        assert_eq!(outcome.exit_code, None);
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let (outcome, out) = run(&argv(&["/nonexistent/heal-no-such-program", "x"]));
        let message = outcome.spawn_error.clone().expect("spawn_error is set");
        assert!(
            message.contains("/nonexistent/heal-no-such-program"),
            "{message}"
        );
        assert!(message.contains("no such file"), "{message}");
        assert_eq!(outcome.exit_code, None);
        assert!(!outcome.success());
        assert!(out.is_empty());

        let (nul, _) = run(&argv(&["printf", "a\0b"]));
        assert!(nul.spawn_error.is_some());
        let (empty, _) = run(&Run::Argv(Vec::new()));
        assert!(empty.spawn_error.is_some());
    }

    #[test]
    fn fast_step_returns_fast() {
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let start = Instant::now();
            let (outcome, _) = run(&argv(&["true"]));
            worst = worst.max(start.elapsed());
            assert!(outcome.success());
        }
        eprintln!("slowest of 20 `true` runs: {worst:?}");
        // Generous, because the other tests load the machine at the same time.
        assert!(worst < Duration::from_millis(500), "{worst:?}");
    }

    #[test]
    fn timeout_kills_group_including_term_ignoring_processes() {
        let parent_file = temp_path("timeout-parent");
        let grand_file = temp_path("timeout-grand");
        let _ = std::fs::remove_file(&parent_file);
        let _ = std::fs::remove_file(&grand_file);
        let env = vec![
            ("P".to_string(), parent_file.display().to_string()),
            ("G".to_string(), grand_file.display().to_string()),
        ];
        let script = r#"trap '' TERM
sh -c 'trap "" TERM; echo $$ > "$G"; while :; do sleep 0.05; done' &
echo $$ > "$P"
while :; do sleep 0.05; done"#;
        let run = shell(script);
        let step = Step {
            run: &run,
            env: &env,
            timeout: Duration::from_millis(400),
            grace: Duration::from_millis(300),
            stdin: &[],
            cwd: None,
        };
        let output = Output::new(4096);
        let start = Instant::now();
        let outcome = run_step(&step, &output, &AtomicBool::new(false));
        let elapsed = start.elapsed();
        assert!(outcome.timed_out, "{outcome:?}");
        assert!(!outcome.cancelled);
        assert_eq!(outcome.exit_code, None);
        assert_eq!(outcome.signal, Some(libc::SIGKILL));
        assert!(!outcome.success());
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

        let parent = read_pid(&parent_file);
        let grand = read_pid(&grand_file);
        assert!(dead(parent), "the step's shell {parent} survived");
        assert!(
            wait_dead(grand, Duration::from_secs(2)),
            "the grandchild {grand} survived"
        );
        let text = String::from_utf8_lossy(&output.tail().0).into_owned();
        assert!(
            text.ends_with("\n[heal: step timed out after 400ms; sent SIGTERM, then SIGKILL]\n"),
            "{text:?}"
        );
        let _ = std::fs::remove_file(&parent_file);
        let _ = std::fs::remove_file(&grand_file);
    }

    #[test]
    fn surviving_grandchild_gets_sigkill_after_grace() {
        let grand_file = temp_path("grace-grand");
        let _ = std::fs::remove_file(&grand_file);
        let env = vec![("G".to_string(), grand_file.display().to_string())];
        // The shell dies on SIGTERM; only its child ignores it.
        let run = shell(
            r#"sh -c 'trap "" TERM; echo $$ > "$G"; while :; do sleep 0.05; done' &
wait"#,
        );
        let step = Step {
            run: &run,
            env: &env,
            timeout: Duration::from_millis(300),
            grace: Duration::from_millis(300),
            stdin: &[],
            cwd: None,
        };
        let output = Output::new(4096);
        let start = Instant::now();
        let outcome = run_step(&step, &output, &AtomicBool::new(false));
        let elapsed = start.elapsed();
        assert!(outcome.timed_out);
        assert_eq!(outcome.signal, Some(libc::SIGTERM));
        assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        let grand = read_pid(&grand_file);
        assert!(
            wait_dead(grand, Duration::from_secs(2)),
            "the grandchild {grand} survived"
        );
        let text = String::from_utf8_lossy(&output.tail().0).into_owned();
        assert!(text.ends_with("sent SIGTERM, then SIGKILL]\n"), "{text:?}");
        let _ = std::fs::remove_file(&grand_file);
    }

    #[test]
    fn timeout_without_sigkill_when_term_is_enough() {
        let run = shell("echo started; sleep 30; echo never");
        let step = Step {
            run: &run,
            env: &[],
            timeout: Duration::from_millis(200),
            grace: Duration::from_secs(5),
            stdin: &[],
            cwd: None,
        };
        let output = Output::new(4096);
        let start = Instant::now();
        let outcome = run_step(&step, &output, &AtomicBool::new(false));
        let elapsed = start.elapsed();
        assert!(outcome.timed_out);
        assert_eq!(outcome.signal, Some(libc::SIGTERM));
        // The grace period is 5 s; SIGTERM ends everything well before it.
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
        let text = String::from_utf8_lossy(&output.tail().0).into_owned();
        assert_eq!(
            text,
            "started\n\n[heal: step timed out after 200ms; sent SIGTERM]\n"
        );
    }

    #[test]
    fn cancel_stops_a_long_step_quickly() {
        let run = shell("sleep 30");
        let step = Step {
            run: &run,
            env: &[],
            timeout: Duration::from_secs(60),
            grace: Duration::from_secs(5),
            stdin: &[],
            cwd: None,
        };
        let output = Output::new(4096);
        let cancel = AtomicBool::new(false);
        let start = Instant::now();
        let outcome = thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(200));
                cancel.store(true, Ordering::Relaxed);
            });
            run_step(&step, &output, &cancel)
        });
        let elapsed = start.elapsed();
        assert!(outcome.cancelled, "{outcome:?}");
        assert!(!outcome.timed_out);
        assert!(!outcome.success());
        assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
        let text = String::from_utf8_lossy(&output.tail().0).into_owned();
        assert!(
            text.contains("[heal: step cancelled; sent SIGTERM]"),
            "{text:?}"
        );
    }

    #[test]
    fn background_process_does_not_hold_the_step() {
        let start = Instant::now();
        let (outcome, out) = run(&shell("sleep 30 & echo $!"));
        let elapsed = start.elapsed();
        let text = String::from_utf8_lossy(&out).into_owned();
        let pid: libc::pid_t = text.trim().parse().expect("the step printed the pid");
        // The background sleep is not the step's business; the test cleans up.
        // SAFETY: kill has no memory effects; `pid` is the test's own sleep.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert!(outcome.success(), "{outcome:?}");
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    }

    #[test]
    fn large_output_is_capped_and_streamable() {
        let max = 4096;
        let run = shell("head -c 49999990 /dev/zero | tr '\\0' x; printf 0123456789");
        let step = Step {
            run: &run,
            env: &[],
            timeout: Duration::from_secs(15),
            grace: Duration::from_millis(500),
            stdin: &[],
            cwd: None,
        };
        let output = Output::new(max);
        let done = AtomicBool::new(false);
        let (outcome, streamed, skipped, peak) = thread::scope(|s| {
            let streamer = s.spawn(|| {
                let mut cursor = 0u64;
                let (mut got, mut skipped, mut peak) = (0u64, 0u64, 0usize);
                let start = Instant::now();
                while !done.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(20) {
                    let (bytes, skip) = output.take_new(&mut cursor);
                    got += bytes.len() as u64;
                    skipped += skip;
                    peak = peak.max(output.capacity());
                    thread::sleep(Duration::from_millis(1));
                }
                let (bytes, skip) = output.take_new(&mut cursor);
                got += bytes.len() as u64;
                skipped += skip;
                assert_eq!(cursor, output.total());
                (got, skipped, peak.max(output.capacity()))
            });
            let outcome = run_step(&step, &output, &AtomicBool::new(false));
            done.store(true, Ordering::Release);
            let (got, skipped, peak) = streamer.join().expect("the streamer does not panic");
            (outcome, got, skipped, peak)
        });
        assert!(outcome.success(), "{outcome:?}");
        assert_eq!(output.total(), 50_000_000);
        let (tail, truncated) = output.tail();
        assert!(truncated);
        assert_eq!(tail.len(), max);
        assert!(tail.ends_with(b"0123456789"));
        assert!(tail[..max - 10].iter().all(|&b| b == b'x'));
        assert_eq!(streamed + skipped, 50_000_000);
        assert!(peak <= max, "tail buffer grew to {peak}");
    }

    #[test]
    fn take_new_streams_and_counts_skipped_bytes() {
        let output = Output::new(10);
        let mut cursor = 0;
        assert_eq!(output.take_new(&mut cursor), (Vec::new(), 0));
        output.push(b"hello");
        assert_eq!(output.take_new(&mut cursor), (b"hello".to_vec(), 0));
        assert_eq!(cursor, 5);
        assert_eq!(output.take_new(&mut cursor), (Vec::new(), 0));
        output.push(b"abc");
        assert_eq!(output.take_new(&mut cursor), (b"abc".to_vec(), 0));
        assert_eq!(output.tail(), (b"helloabc".to_vec(), false));

        // 20 more bytes: 8 + 20 = 28 written, 10 kept, 18 dropped.
        output.push(b"0123456789ABCDEFGHIJ");
        assert_eq!(output.total(), 28);
        assert_eq!(output.take_new(&mut cursor), (b"ABCDEFGHIJ".to_vec(), 10));
        assert_eq!(cursor, 28);
        assert_eq!(output.tail(), (b"ABCDEFGHIJ".to_vec(), true));

        // A cursor inside the kept tail gets only the newer part.
        let mut late = 25;
        assert_eq!(output.take_new(&mut late), (b"HIJ".to_vec(), 0));
        // A stale cursor far behind gets what is kept and the skipped count.
        let mut stale = 3;
        assert_eq!(output.take_new(&mut stale), (b"ABCDEFGHIJ".to_vec(), 15));
        // A cursor past the end is moved back.
        let mut ahead = 100;
        assert_eq!(output.take_new(&mut ahead), (Vec::new(), 0));
        assert_eq!(ahead, 28);

        // Small writes wrap the ring and keep order.
        output.push(b"kl");
        assert_eq!(output.tail(), (b"CDEFGHIJkl".to_vec(), true));
        assert_eq!(output.take_new(&mut cursor), (b"kl".to_vec(), 0));

        let none = Output::new(0);
        none.push(b"abc");
        assert_eq!(none.total(), 3);
        assert_eq!(none.tail(), (Vec::new(), true));
        let mut c = 0;
        assert_eq!(none.take_new(&mut c), (Vec::new(), 3));
    }

    #[test]
    fn parse_stat_handles_odd_names() {
        assert_eq!(
            parse_stat("123 (a (b) c) S 1 456 456 0 -1"),
            Some(('S', 456))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::from_millis(300)), "300ms");
    }

    #[test]
    fn secrets_are_scrubbed_however_the_writes_split_them() {
        let secrets = vec![
            "hunter2".to_string(),
            "hunter2-long".to_string(),
            String::new(),
        ];
        let output = Output::scrubbing(1024, &secrets);
        let mut cursor = 0;
        let mut streamed = Vec::new();
        for piece in [&b"pass=hun"[..], b"ter2 and ", b"hunter2-lo", b"ng; hunt"] {
            output.push(piece);
            streamed.extend(output.take_new(&mut cursor).0);
        }
        output.finish();
        streamed.extend(output.take_new(&mut cursor).0);
        assert_eq!(
            String::from_utf8(streamed).unwrap(),
            "pass=*** and ***; hunt"
        );
        assert_eq!(output.tail().0, b"pass=*** and ***; hunt");
        // No secret: written as it comes.
        let plain = Output::scrubbing(16, &[]);
        plain.push(b"abc");
        assert_eq!(plain.tail().0, b"abc");
    }
}
