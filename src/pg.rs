//! Connecting to PostgreSQL, for the store (`store::postgres`) and the SQL
//! probe: the URL, libpq's password sources, TLS with rustls, and the
//! server's errors in words. URLs in errors and logs are shown without
//! their user, password or query values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::{Client, NoTls};

use crate::error::{Error, Result};
use crate::redact::redact_url_secrets;

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// How long connecting may take when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the database of `url`. The password comes from the URL, else
/// `PGPASSWORD`, else the password file (`PGPASSFILE`, default
/// `~/.pgpass`, used only when others cannot read it), as libpq does. TLS
/// unless `sslmode=disable`: the server's certificate is checked against
/// the webpki roots and `sslrootcert=FILE`, and its name against the host,
/// for `prefer`, `require`, `verify-ca` and `verify-full` alike. Errors show
/// the URL without its user, password or query values.
pub fn connect(url: &str) -> Result<Client> {
    connect_with(url, |_| {})
}

/// `connect`, with the client's config adjusted first (a probe's timeouts).
pub fn connect_with(url: &str, adjust: impl FnOnce(&mut postgres::Config)) -> Result<Client> {
    let shown = redact_url_secrets(url);
    let (mut config, ca) = parse(url)?;
    adjust(&mut config);
    if config.get_ssl_mode() == postgres::config::SslMode::Disable {
        return config
            .connect(NoTls)
            .map_err(failed(format!("cannot connect to {shown}")));
    }
    let certs = match &ca {
        Some(path) => Some(crate::trust::load_ca_file(path).map_err(|e| {
            Error::Config(format!("{shown}: {}", e.replace("ca_file", "sslrootcert")))
        })?),
        None => None,
    };
    let tls = crate::trust::client_config(certs.as_deref())
        .map_err(|e| Error::Failed(format!("{shown}: {e}")))?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
    config
        .connect(tls)
        .map_err(failed(format!("cannot connect to {shown}")))
}

/// The client's config from a URL, with libpq's password sources, and the
/// `sslrootcert` file (which the client library does not read itself).
fn parse(url: &str) -> Result<(postgres::Config, Option<PathBuf>)> {
    let shown = redact_url_secrets(url);
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut ca = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", file)) => ca = Some(PathBuf::from(file)),
            // The client checks the certificate and the host name whatever
            // the mode; it knows only disable, prefer and require.
            Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require"),
            _ => kept.push(pair),
        }
    }
    let text = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: postgres::Config = text.parse().map_err(|e| {
        Error::Config(format!(
            "{shown} is not a PostgreSQL URL heal can use: {e} (expected postgres://USER@HOST:PORT/DATABASE?sslmode=require)"
        ))
    })?;
    if config.get_user().is_none() {
        return Err(Error::Config(format!(
            "{shown} names no user: write postgres://USER@HOST:PORT/DATABASE"
        )));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("heal");
    }
    // Notices ("relation already exists, skipping") are for people at psql.
    config.notice_callback(|notice| log::debug!("PostgreSQL: {}", notice.message()));
    if config.get_password().is_none() {
        if let Some(password) = std::env::var_os("PGPASSWORD").filter(|p| !p.is_empty()) {
            config.password(password.as_encoded_bytes());
        } else if let Some(password) = password_file(&config)? {
            config.password(password);
        }
    }
    Ok((config, ca))
}

/// The password for `config`'s first host, port, database and user in the
/// password file (`PGPASSFILE`, default `~/.pgpass`): lines
/// `host:port:database:user:password`, `*` matching anything, `\` escaping
/// `:` and `\`. A file that others may read is ignored, with a warning, as
/// libpq does.
fn password_file(config: &postgres::Config) -> Result<Option<String>> {
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(".pgpass"),
            None => return Ok(None),
        },
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "password file {} is ignored: others may read it (chmod 600 {})",
            path.display(),
            path.display()
        );
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Io(format!("cannot read password file {}", path.display()), e))?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let database = config.get_dbname().unwrap_or(user);
    let wanted = [host.as_str(), port.as_str(), database, user];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields = pgpass_fields(line);
        if fields.len() == 5
            && fields[..4]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want)
        {
            return Ok(Some(fields[4].clone()));
        }
    }
    Ok(None)
}

/// A password file line's fields, `\:` and `\\` unescaped.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().expect("never empty").extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

/// The error of a PostgreSQL call made to do `what`, in the server's words.
pub fn failed(what: impl Into<String>) -> impl FnOnce(postgres::Error) -> Error {
    let what = what.into();
    move |e| Error::Failed(format!("{what}: {}", message(&e)))
}

pub use crate::error::postgres_message as message;

#[cfg(test)]
mod tests {
    use super::{parse, pgpass_fields};

    #[test]
    fn urls_take_verify_modes_a_root_file_and_need_a_user() {
        let (config, ca) = parse(
            "postgres://heal@db.example:5433/heal?sslmode=verify-full&sslrootcert=/etc/heal/pg-ca.pem",
        )
        .unwrap();
        assert_eq!(config.get_ssl_mode(), postgres::config::SslMode::Require);
        assert_eq!(config.get_ports(), [5433]);
        assert_eq!(config.get_dbname(), Some("heal"));
        assert_eq!(ca.unwrap().to_str(), Some("/etc/heal/pg-ca.pem"));
        assert!(config.get_connect_timeout().is_some());
        let e = parse("postgres://db.example/heal").unwrap_err().to_string();
        assert!(e.contains("names no user"), "{e}");
        let e = parse("postgres://u:hunter2@db/heal?sslmode=sideways")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a PostgreSQL URL") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn password_file_lines_unescape_colons_and_backslashes() {
        assert_eq!(
            pgpass_fields(r"db:5432:*:heal:pa\:ss\\word:x"),
            ["db", "5432", "*", "heal", r"pa:ss\word:x"]
        );
    }
}
