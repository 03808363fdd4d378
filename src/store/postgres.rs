//! PostgreSQL: connecting (URL, password, TLS), heal's schema in
//! PostgreSQL's dialect, migrations under an advisory lock, and copying a
//! stopped SQLite store into an empty PostgreSQL database (`heal migrate
//! --from … --to postgres://…`).
//!
//! The schema is written once, in `migrations::MIGRATIONS` (SQLite's
//! dialect); `ddl` turns each entry into PostgreSQL's. Where SQLite keeps the
//! schema version in `PRAGMA user_version`, PostgreSQL keeps it in the
//! one-row table `heal_schema`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};

use super::migrations::{newer, MIGRATIONS};
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
    let shown = redact_url_secrets(url);
    let (config, ca) = parse(url)?;
    let failed = |e: postgres::Error| Error::Failed(format!("cannot connect to {shown}: {e}"));
    if config.get_ssl_mode() == postgres::config::SslMode::Disable {
        return config.connect(NoTls).map_err(failed);
    }
    let certs = match &ca {
        Some(path) => Some(crate::probe::load_ca_file(path).map_err(|e| {
            Error::Config(format!("{shown}: {}", e.replace("ca_file", "sslrootcert")))
        })?),
        None => None,
    };
    let tls = crate::probe::tls_client_config(certs.as_deref())
        .map_err(|e| Error::Failed(format!("{shown}: {e}")))?;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
    config.connect(tls).map_err(failed)
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

/// The advisory lock every heal takes to migrate a PostgreSQL database, so
/// that of several replicas starting at once, one migrates and the others
/// then find the schema up to date. ("heal" in ASCII.)
const MIGRATION_LOCK: i64 = 0x6865_616c;

/// Brings the schema up to date in one transaction, under the migration
/// lock, and returns the version it found. Refuses a database written by a
/// newer heal.
pub fn migrate(client: &mut Client) -> Result<usize> {
    let failed = |what: &str, e: postgres::Error| Error::Failed(format!("{what}: {}", message(&e)));
    let mut tx = client
        .transaction()
        .map_err(|e| failed("cannot begin the migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|e| failed("cannot take the migration lock", e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS heal_schema (version BIGINT NOT NULL)")
        .map_err(|e| failed("cannot create heal_schema", e))?;
    let found: Option<i64> = tx
        .query_opt("SELECT version FROM heal_schema", &[])
        .map_err(|e| failed("cannot read the schema version", e))?
        .map(|row| row.get(0));
    let found = match found {
        Some(v) => usize::try_from(v).unwrap_or(usize::MAX),
        None => {
            tx.execute("INSERT INTO heal_schema (version) VALUES (0)", &[])
                .map_err(|e| failed("cannot write the schema version", e))?;
            0
        }
    };
    if found > MIGRATIONS.len() {
        return Err(Error::Config(newer(found)));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        tx.batch_execute(&ddl(sql))
            .map_err(|e| failed(&format!("migration {} failed", i + 1), e))?;
    }
    tx.execute(
        "UPDATE heal_schema SET version = $1",
        &[&(MIGRATIONS.len() as i64)],
    )
    .map_err(|e| failed("cannot write the schema version", e))?;
    tx.commit()
        .map_err(|e| failed("cannot commit the migration", e))?;
    Ok(found)
}

/// The schema version of a PostgreSQL database (0 before heal's first
/// migration).
pub fn schema_version(client: &mut Client) -> Result<usize> {
    let exists: bool = client
        .query_one("SELECT to_regclass('heal_schema') IS NOT NULL", &[])
        .map_err(|e| Error::Failed(format!("cannot read the schema version: {}", message(&e))))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i64> = client
        .query_opt("SELECT version FROM heal_schema", &[])
        .map_err(|e| Error::Failed(format!("cannot read the schema version: {}", message(&e))))?
        .map(|row| row.get(0));
    Ok(version.map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX)))
}

/// What the server said, with its detail and hint when it gave them.
fn message(e: &postgres::Error) -> String {
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

/// A migration in PostgreSQL's dialect: SQLite's `INTEGER PRIMARY KEY` (a
/// row id the database assigns) becomes an identity column, `INTEGER`
/// `BIGINT` (heal's integers are 64-bit), `REAL` `DOUBLE PRECISION`, `BLOB`
/// `BYTEA`; `WITHOUT ROWID` goes; a trigger that refuses a change with
/// `RAISE(ABORT, '…')` becomes a function raising that message and a row
/// trigger calling it. Comments and quoted text are left as they are.
pub fn ddl(sql: &str) -> String {
    let tokens = tokenize(sql);
    let mut out = String::with_capacity(sql.len() + 64);
    let mut i = 0;
    while i < tokens.len() {
        let (kind, text) = tokens[i];
        if kind != Token::Word {
            out.push_str(text);
            i += 1;
            continue;
        }
        let next = |n: usize| words_after(&tokens, i, n);
        match text.to_ascii_uppercase().as_str() {
            "INTEGER" if next(2) == ["PRIMARY", "KEY"] => {
                out.push_str("BIGINT GENERATED BY DEFAULT AS IDENTITY");
            }
            "INTEGER" => out.push_str("BIGINT"),
            "REAL" => out.push_str("DOUBLE PRECISION"),
            "BLOB" => out.push_str("BYTEA"),
            "WITHOUT" if next(1) == ["ROWID"] => {
                // Skip `WITHOUT`, the space and `ROWID`.
                i = index_of_word_after(&tokens, i, 1) + 1;
                trim_trailing_space(&mut out);
                continue;
            }
            "CREATE" if next(1) == ["TRIGGER"] => {
                let (translated, end) = trigger(&tokens, i);
                out.push_str(&translated);
                i = end;
                continue;
            }
            _ => out.push_str(text),
        }
        i += 1;
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Token {
    Word,
    Space,
    Comment,
    Quoted,
    Other,
}

/// SQL as words, spaces, comments, quoted text and single other characters.
fn tokenize(sql: &str) -> Vec<(Token, &str)> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let c = bytes[at];
        let end = if c.is_ascii_alphanumeric() || c == b'_' {
            at + bytes[at..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count()
        } else if c.is_ascii_whitespace() {
            at + bytes[at..]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count()
        } else if sql[at..].starts_with("--") {
            sql[at..].find('\n').map_or(bytes.len(), |n| at + n)
        } else if c == b'\'' || c == b'"' {
            // Up to the closing quote; a doubled quote stays inside.
            let mut end = at + 1;
            while end < bytes.len() {
                if bytes[end] == c {
                    if bytes.get(end + 1) == Some(&c) {
                        end += 2;
                        continue;
                    }
                    end += 1;
                    break;
                }
                end += 1;
            }
            end
        } else {
            at + sql[at..].chars().next().map_or(1, char::len_utf8)
        };
        let kind = match c {
            b'\'' | b'"' => Token::Quoted,
            _ if c.is_ascii_alphanumeric() || c == b'_' => Token::Word,
            _ if c.is_ascii_whitespace() => Token::Space,
            _ if sql[at..].starts_with("--") => Token::Comment,
            _ => Token::Other,
        };
        tokens.push((kind, &sql[at..end]));
        at = end;
    }
    tokens
}

/// The next `n` words after token `i`, upper-cased, across spaces only.
fn words_after(tokens: &[(Token, &str)], i: usize, n: usize) -> Vec<String> {
    let mut words = Vec::new();
    for (kind, text) in &tokens[i + 1..] {
        match kind {
            Token::Space => continue,
            Token::Word if words.len() < n => words.push(text.to_ascii_uppercase()),
            _ => break,
        }
        if words.len() == n {
            break;
        }
    }
    words
}

/// The index of the `n`th word after token `i` (spaces between).
fn index_of_word_after(tokens: &[(Token, &str)], i: usize, n: usize) -> usize {
    let mut seen = 0;
    for (j, (kind, _)) in tokens.iter().enumerate().skip(i + 1) {
        if *kind == Token::Word {
            seen += 1;
            if seen == n {
                return j;
            }
        }
    }
    tokens.len() - 1
}

fn trim_trailing_space(out: &mut String) {
    let kept = out.trim_end_matches([' ', '\t']).len();
    out.truncate(kept);
}

/// `CREATE TRIGGER name BEFORE UPDATE|DELETE ON table BEGIN SELECT
/// RAISE(ABORT, 'message'); END;` starting at token `i`, in PostgreSQL's
/// form, and the index of the token after it. Any other trigger is kept as
/// written, so PostgreSQL refuses it and the migration names it.
fn trigger(tokens: &[(Token, &str)], i: usize) -> (String, usize) {
    let end = (i..tokens.len())
        .find(|&j| {
            tokens[j].0 == Token::Word
                && tokens[j].1.eq_ignore_ascii_case("END")
                && tokens.get(j + 1).map(|t| t.1) == Some(";")
        })
        .map_or(tokens.len(), |j| j + 2);
    let written: String = tokens[i..end].iter().map(|t| t.1).collect();
    let words: Vec<&str> = tokens[i..end]
        .iter()
        .filter(|t| t.0 == Token::Word)
        .map(|t| t.1)
        .collect();
    let message = tokens[i..end]
        .iter()
        .find(|t| t.0 == Token::Quoted)
        .map(|t| t.1);
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let shape = [
        "CREATE", "TRIGGER", "", "BEFORE", "", "ON", "", "BEGIN", "SELECT", "RAISE", "ABORT", "END",
    ];
    let fits = upper.len() == shape.len()
        && upper.iter().zip(shape).all(|(w, s)| s.is_empty() || w == s)
        && matches!(upper[4].as_str(), "UPDATE" | "DELETE" | "INSERT");
    let Some(message) = message.filter(|_| fits) else {
        return (written, end);
    };
    let (name, event, table) = (words[2], &upper[4], words[6]);
    (
        format!(
            "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $heal$ BEGIN RAISE EXCEPTION {message}; END $heal$;\n    \
             CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}();"
        ),
        end,
    )
}

/// What `copy_sqlite` copied: each table and its rows.
pub type Copied = Vec<(String, i64)>;

/// Copies every row of a SQLite store (stopped, its schema up to date) into
/// a PostgreSQL database that has heal's schema at the same version and no
/// rows but the ones the schema starts with, in one transaction: tables in
/// the order their foreign keys need, identity counters moved past the
/// copied ids, then every table's rows counted on both sides.
pub fn copy_sqlite(sqlite: &rusqlite::Connection, pg: &mut Client) -> Result<Copied> {
    let fail =
        |what: String| move |e: postgres::Error| Error::Failed(format!("{what}: {}", message(&e)));
    let in_postgres: Vec<String> = pg
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name <> 'heal_schema' ORDER BY 1",
            &[],
        )
        .map_err(fail("cannot list the tables in PostgreSQL".into()))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let in_sqlite = sqlite_tables(sqlite)?;
    if in_sqlite != in_postgres {
        let only = |a: &[String], b: &[String]| -> String {
            let names: Vec<&str> = a
                .iter()
                .filter(|t| !b.contains(t))
                .map(String::as_str)
                .collect();
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        };
        return Err(Error::Failed(format!(
            "the SQLite store's tables are not heal's: only in SQLite: {}; only in PostgreSQL: {}",
            only(&in_sqlite, &in_postgres),
            only(&in_postgres, &in_sqlite)
        )));
    }
    // Every name below is one of heal's own tables.
    let tables = tables_in_order(sqlite, in_sqlite)?;
    let mut tx = pg
        .transaction()
        .map_err(fail("cannot begin the copy".into()))?;
    for table in &tables {
        let rows: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(fail(format!(
                "cannot count the rows of {table} in PostgreSQL"
            )))?
            .get(0);
        if rows > 0 && !SEEDED.contains(&table.as_str()) {
            return Err(Error::Failed(format!(
                "PostgreSQL's {table} already holds {rows} row(s): heal migrate --to copies into an empty database only (a new one, or drop heal's tables first)"
            )));
        }
        if rows > 0 {
            tx.execute(&format!("DELETE FROM {table}"), &[])
                .map_err(fail(format!("cannot empty {table}")))?;
        }
    }
    for table in &tables {
        copy_table(sqlite, &mut tx, table)?;
    }
    let identities: Vec<(String, String)> = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
            &[],
        )
        .map_err(fail("cannot list identity columns".into()))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (table, column) in identities {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), max({column})) FROM {table} HAVING max({column}) IS NOT NULL"
            ),
            &[],
        )
        .map_err(fail(format!("cannot move the identity of {table}.{column}")))?;
    }
    tx.commit().map_err(fail("cannot commit the copy".into()))?;
    let mut copied = Vec::new();
    for table in &tables {
        let want: i64 = sqlite
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| Error::Store(format!("counting {table}"), e))?;
        let got: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(fail(format!("cannot count {table} in PostgreSQL")))?
            .get(0);
        if want != got {
            return Err(Error::Failed(format!(
                "{table}: {want} row(s) in SQLite but {got} in PostgreSQL after the copy"
            )));
        }
        copied.push((table.clone(), got));
    }
    Ok(copied)
}

/// Tables whose rows the schema itself writes (the breaker's one row):
/// replaced by the copied ones.
const SEEDED: &[&str] = &["breaker"];

/// SQLite's tables by name.
fn sqlite_tables(sqlite: &rusqlite::Connection) -> Result<Vec<String>> {
    sqlite
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| Error::Store("listing tables".into(), e))
}

/// `names` (SQLite's tables), each after the tables its foreign keys point to.
fn tables_in_order(sqlite: &rusqlite::Connection, names: Vec<String>) -> Result<Vec<String>> {
    let mut needs: HashMap<String, Vec<String>> = HashMap::new();
    for name in &names {
        let parents: Vec<String> = sqlite
            .prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")
            .and_then(|mut s| s.query_map([name], |r| r.get(0))?.collect())
            .map_err(|e| Error::Store("reading foreign keys".into(), e))?;
        needs.insert(name.clone(), parents);
    }
    let mut ordered: Vec<String> = Vec::new();
    while ordered.len() < names.len() {
        let before = ordered.len();
        for name in &names {
            if !ordered.contains(name)
                && needs[name].iter().all(|p| p == name || ordered.contains(p))
            {
                ordered.push(name.clone());
            }
        }
        if ordered.len() == before {
            return Err(Error::Failed(
                "the SQLite tables' foreign keys form a cycle".into(),
            ));
        }
    }
    Ok(ordered)
}

/// One table's rows, by binary COPY, each value as its PostgreSQL column's
/// type wants it.
fn copy_table(
    sqlite: &rusqlite::Connection,
    tx: &mut postgres::Transaction,
    table: &str,
) -> Result<()> {
    let columns: Vec<String> = sqlite
        .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .and_then(|mut s| s.query_map([table], |r| r.get(0))?.collect())
        .map_err(|e| Error::Store(format!("reading the columns of {table}"), e))?;
    let pg_types: HashMap<String, String> = tx
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )
        .map_err(|e| {
            Error::Failed(format!(
                "cannot read {table}'s columns in PostgreSQL: {}",
                message(&e)
            ))
        })?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut types = Vec::new();
    for column in &columns {
        let ty = match pg_types.get(column).map(String::as_str) {
            Some("bigint") => Type::INT8,
            Some("text") => Type::TEXT,
            Some("double precision") => Type::FLOAT8,
            Some("bytea") => Type::BYTEA,
            Some(other) => {
                return Err(Error::Failed(format!(
                    "{table}.{column} is {other} in PostgreSQL, which heal's schema never makes"
                )))
            }
            None => {
                return Err(Error::Failed(format!(
                    "{table}.{column} is missing in PostgreSQL: both databases must have this heal's schema"
                )))
            }
        };
        types.push(ty);
    }
    let list = columns.join(", ");
    let sink = tx
        .copy_in(&format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"))
        .map_err(|e| Error::Failed(format!("cannot copy into {table}: {}", message(&e))))?;
    let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
    let mut stmt = sqlite
        .prepare(&format!("SELECT rowid, {list} FROM {table}"))
        .or_else(|_| sqlite.prepare(&format!("SELECT NULL, {list} FROM {table}")))
        .map_err(|e| Error::Store(format!("reading {table}"), e))?;
    let mut rows = stmt
        .query([])
        .map_err(|e| Error::Store(format!("reading {table}"), e))?;
    while let Some(row) = rows
        .next()
        .map_err(|e| Error::Store(format!("reading {table}"), e))?
    {
        let rowid: Option<i64> = row.get(0).unwrap_or(None);
        let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(columns.len());
        for (n, (column, ty)) in columns.iter().zip(&types).enumerate() {
            let value: rusqlite::types::Value = row
                .get(n + 1)
                .map_err(|e| Error::Store(format!("reading {table}.{column}"), e))?;
            let at = || match rowid {
                Some(id) => format!("{table}.{column} of row {id}"),
                None => format!("{table}.{column}"),
            };
            values
                .push(convert(value, ty).map_err(|why| Error::Failed(format!("{}: {why}", at())))?);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        writer
            .write(&refs)
            .map_err(|e| Error::Failed(format!("cannot copy a row of {table}: {}", message(&e))))?;
    }
    writer
        .finish()
        .map_err(|e| Error::Failed(format!("cannot finish copying {table}: {}", message(&e))))?;
    Ok(())
}

/// A SQLite value as the PostgreSQL column's type wants it. SQLite keeps
/// any value in any column; heal writes each column's own type, and the
/// conversions here are the lossless ones.
fn convert(
    value: rusqlite::types::Value,
    ty: &Type,
) -> std::result::Result<Box<dyn ToSql + Sync>, String> {
    use rusqlite::types::Value as V;
    Ok(match (value, ty) {
        (V::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
        (V::Null, t) if *t == Type::FLOAT8 => Box::new(None::<f64>),
        (V::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
        (V::Null, _) => Box::new(None::<String>),
        (V::Integer(i), t) if *t == Type::INT8 => Box::new(i),
        (V::Integer(i), t) if *t == Type::FLOAT8 => Box::new(i as f64),
        (V::Integer(i), t) if *t == Type::TEXT => Box::new(i.to_string()),
        (V::Real(f), t) if *t == Type::FLOAT8 => Box::new(f),
        (V::Real(f), t) if *t == Type::INT8 && f.fract() == 0.0 && f.abs() < 9.0e15 => {
            Box::new(f as i64)
        }
        (V::Real(f), t) if *t == Type::TEXT => Box::new(f.to_string()),
        (V::Text(s), t) if *t == Type::TEXT => Box::new(s),
        (V::Text(s), t) if *t == Type::BYTEA => Box::new(s.into_bytes()),
        (V::Text(s), t) if *t == Type::INT8 => Box::new(
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("the text {s:?} where an integer belongs"))?,
        ),
        (V::Blob(b), t) if *t == Type::BYTEA => Box::new(b),
        (V::Blob(b), t) if *t == Type::TEXT => Box::new(
            String::from_utf8(b)
                .map_err(|_| "bytes that are not UTF-8 where text belongs".to_string())?,
        ),
        (value, t) => return Err(format!("a {:?} value where {t} belongs", value.data_type())),
    })
}

#[cfg(test)]
mod tests {
    use super::{ddl, parse, pgpass_fields};

    #[test]
    fn sqlite_types_row_ids_and_without_rowid_become_postgres_ones() {
        let sql = "CREATE TABLE t (
        id    INTEGER PRIMARY KEY,
        n     INTEGER NOT NULL DEFAULT 0, -- an INTEGER in a comment stays
        v     REAL,
        b     BLOB NOT NULL,
        s     TEXT DEFAULT 'INTEGER'
    );
    CREATE TABLE k (a TEXT, b INTEGER, PRIMARY KEY (a, b)) WITHOUT ROWID;";
        assert_eq!(
            ddl(sql),
            "CREATE TABLE t (
        id    BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        n     BIGINT NOT NULL DEFAULT 0, -- an INTEGER in a comment stays
        v     DOUBLE PRECISION,
        b     BYTEA NOT NULL,
        s     TEXT DEFAULT 'INTEGER'
    );
    CREATE TABLE k (a TEXT, b BIGINT, PRIMARY KEY (a, b));"
        );
    }

    #[test]
    fn a_refusing_trigger_becomes_a_function_and_a_row_trigger() {
        let sql = "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE INDEX x ON audit(at);";
        assert_eq!(
            ddl(sql),
            "CREATE FUNCTION audit_no_update() RETURNS trigger LANGUAGE plpgsql AS $heal$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $heal$;
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_no_update();
    CREATE INDEX x ON audit(at);"
        );
        // Another shape is kept as written, for PostgreSQL to refuse by name.
        let other = "CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE b SET n = 1; END;";
        assert_eq!(ddl(other), other);
    }

    #[test]
    fn every_migration_translates_without_a_sqlite_only_word_left() {
        for (i, sql) in super::MIGRATIONS.iter().enumerate() {
            let out = ddl(sql);
            let code: String = out
                .lines()
                .map(|l| l.split("--").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            for word in ["WITHOUT ROWID", "RAISE(ABORT", " BLOB", " REAL", "INTEGER"] {
                assert!(
                    !code.contains(word),
                    "migration {}: {word} left:\n{out}",
                    i + 1
                );
            }
        }
    }

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
