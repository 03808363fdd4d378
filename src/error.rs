//! heal's one error type and its mapping to exit codes and HTTP statuses.
//!
//! Variants exist only where a caller handles the failure differently:
//! usage and configuration errors exit 2, request errors become a 4xx,
//! everything else is an operation failure (exit 1, HTTP 5xx).

use std::fmt;

/// Every failure heal reports.
#[derive(Debug)]
pub enum Error {
    /// The command line is wrong; the message ends with the correct form.
    Usage(String),
    /// runbooks.toml is invalid (the message names file, line and item), or
    /// the database is from a newer heal.
    Config(String),
    /// A request was refused: the HTTP status (4xx, or 503 while heal stops) and a message for the client.
    Request(u16, String),
    /// The store failed while doing something.
    Store(String, rusqlite::Error),
    /// The store on PostgreSQL failed while doing something.
    Postgres(String, postgres::Error),
    /// A file or socket operation failed on a named thing.
    Io(String, std::io::Error),
    /// Talking to a heal server (or another HTTP service) failed.
    Http(String),
    /// An operation ran and failed.
    Failed(String),
    /// A wrapped command (`heal ping NAME -- CMD`) exited with this code; heal exits with it too.
    Exit(i32),
}

/// heal's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code for this error (SPEC: 1 failed, 2 usage or config).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::Exit(code) => (*code & 0xff) as u8,
            _ => 1,
        }
    }

    /// The HTTP status for this error when it ends a request.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Request(status, _) => *status,
            Error::Store(_, e) if is_busy(e) => 503,
            Error::Postgres(_, e) if is_unavailable(e) => 503,
            _ => 500,
        }
    }

    /// Shorthand for a 4xx request error.
    pub fn request(status: u16, message: impl Into<String>) -> Error {
        Error::Request(status, message.into())
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Whether PostgreSQL failed in a way that passes, so the client should
/// retry (503) rather than give up (500): the connection is
/// gone or was never made, the server is starting, stopping or out of
/// resources, or the transaction lost a conflict (serialization, deadlock).
fn is_unavailable(e: &postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        return true;
    };
    let code = db.code().code();
    ["08", "53", "57P", "40001", "40P01"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// What PostgreSQL said, with its detail and hint when it gave them.
pub fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_string();
            if let Some(detail) = db.detail() {
                text = format!("{text} ({detail})");
            }
            if let Some(hint) = db.hint() {
                text = format!("{text}; {hint}");
            }
            text
        }
        None => e.to_string(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Config(m) | Error::Http(m) | Error::Failed(m) => {
                f.write_str(m)
            }
            Error::Request(_, m) => f.write_str(m),
            Error::Store(what, e) => write!(f, "store: {what}: {e}"),
            Error::Postgres(what, e) => write!(f, "store: {what}: {}", postgres_message(e)),
            Error::Io(what, e) => write!(f, "{what}: {e}"),
            Error::Exit(code) => write!(f, "the command exited with code {code}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store(_, e) => Some(e),
            Error::Postgres(_, e) => Some(e),
            Error::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

/// Adds "while doing X" to a store error.
pub trait StoreContext<T> {
    /// Names what the store was doing when it failed.
    fn context(self, what: &str) -> Result<T>;
}

impl<T> StoreContext<T> for std::result::Result<T, rusqlite::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::Store(what.to_string(), e))
    }
}
