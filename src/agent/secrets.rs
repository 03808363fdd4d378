//! A step's `env_files`: secrets read on the agent when the step starts,
//! from files only root or the agent's user can have written and nobody
//! else can read. Their values never leave the agent: the step's output is
//! scrubbed of them (`exec::Output::scrubbing`) before it is kept or sent.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The most an env file may hold.
const MAX_ENV_FILE: u64 = 64 << 10;

/// The variables of the step's `env_files`, in order (a later one wins).
/// Err names the file (and line) and what to fix, never a value.
pub fn env_files(step: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    let files = step
        .get("env_files")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str);
    for file in files {
        vars.extend(read(Path::new(file))?);
    }
    Ok(vars)
}

/// One env file: `NAME=value` lines (`export ` allowed, `#` comments and
/// blank lines skipped, a value in matching quotes taken without them).
fn read(path: &Path) -> Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("env_files: cannot open {shown}: {e} (a symlink is refused)"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("env_files: cannot read {shown}: {e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() {
        return Err(format!("env_files: {shown} is not a file"));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "env_files: {shown} belongs to uid {}, neither root nor the agent's user (chown root {shown})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o004 != 0 {
        return Err(format!(
            "env_files: {shown} is readable by everyone (chmod o-rwx {shown})"
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "env_files: {shown} is writable by others than its owner (chmod go-w {shown})"
        ));
    }
    if meta.len() > MAX_ENV_FILE {
        return Err(format!(
            "env_files: {shown} is larger than {MAX_ENV_FILE} bytes"
        ));
    }
    let mut text = String::new();
    file.take(MAX_ENV_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("env_files: cannot read {shown}: {e}"))?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("env_files: {shown}:{}: not NAME=value", n + 1));
        };
        let name = name.trim();
        crate::config::check_env_name(name)
            .map_err(|e| format!("env_files: {shown}:{}: {e}", n + 1))?;
        let value = value.trim();
        let value = match value.as_bytes() {
            [q @ (b'"' | b'\''), .., last] if last == q && value.len() >= 2 => {
                &value[1..value.len() - 1]
            }
            _ => value,
        };
        vars.push((name.to_string(), value.to_string()));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::env_files;

    #[test]
    fn private_files_are_read_and_others_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("heal-env-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path.display().to_string()
        };
        let good = file(
            "db.env",
            "# the database\nexport DB_PASSWORD='s3cr3t value'\n\nDB_USER=app\n",
            0o600,
        );
        let step = |files: &[&str]| serde_json::json!({ "env_files": files });
        assert_eq!(
            env_files(&step(&[&good])).unwrap(),
            [
                ("DB_PASSWORD".to_string(), "s3cr3t value".to_string()),
                ("DB_USER".to_string(), "app".to_string())
            ]
        );
        let open = file("open.env", "A=1\n", 0o644);
        let e = env_files(&step(&[&open])).unwrap_err();
        assert!(e.contains("readable by everyone (chmod o-rwx"), "{e}");
        let writable = file("group.env", "A=1\n", 0o620);
        let e = env_files(&step(&[&writable])).unwrap_err();
        assert!(e.contains("writable by others"), "{e}");
        let bad = file("bad.env", "A=1\nnot a line\n", 0o600);
        let e = env_files(&step(&[&bad])).unwrap_err();
        assert!(e.ends_with("bad.env:2: not NAME=value"), "{e}");
        let heal = file("heal.env", "HEAL_EVENT_ID=7\n", 0o600);
        let e = env_files(&step(&[&heal])).unwrap_err();
        assert!(
            e.contains("heal.env:1: \"HEAL_EVENT_ID\": names starting with HEAL_ are heal's own"),
            "{e}"
        );
        let link = dir.join("link.env");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let e = env_files(&step(&[link.to_str().unwrap()])).unwrap_err();
        assert!(e.contains("a symlink is refused"), "{e}");
        let e = env_files(&step(&["/nonexistent/x.env"])).unwrap_err();
        assert!(e.contains("cannot open /nonexistent/x.env"), "{e}");
        assert!(!e.contains("s3cr3t"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
