//! The ssh provider's cloud file and host entries. A cloud file (YAML, or
//! TOML when its name ends in `.toml`) lists the pool's hosts:
//!
//! ```yaml
//! hosts:
//!   - address: 10.0.0.11        # IP or DNS name (required)
//!     user: ubuntu              # SSH user (required)
//!     port: 22                  # SSH port [22]
//!     key: ~/.ssh/jujud         # private key file (required; relative to the cloud file)
//!     host-key: SHA256:...      # the host's pinned SSH host key fingerprint (required)
//!     dir: /srv/jujud           # the directory jujud may use there (required, absolute)
//!     roles: [manager, machine] # what it may run [both]
//! ```
//!
//! A [`HostEntry`] is one host with its key's TEXT embedded (managers on
//! other machines must reach the host too): serialised as JSON into the
//! replicated state (`h/<address>`).
//!
//! Owns the parsing and checking of both. Must never log or show a key's
//! text (Debug redacts it), and never accept a file with a missing or
//! invalid field: every refusal names the host and the field.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest cloud file read.
pub const MAX_CLOUD_FILE_BYTES: u64 = 1024 * 1024;
/// Largest private key file read (an RSA-4096 key is about 3.3 KiB).
pub const MAX_KEY_FILE_BYTES: u64 = 12 * 1024;
/// Largest host entry decoded (the state's own bound).
pub const MAX_ENTRY_BYTES: usize = crate::core::state::controllers::MAX_HOST_ENTRY_BYTES;
/// The SSH port unless a host says otherwise.
pub const DEFAULT_SSH_PORT: u16 = 22;
/// The roles a host may take.
pub const ROLE_MANAGER: &str = "manager";
pub const ROLE_MACHINE: &str = "machine";

/// Why a cloud file or host entry was refused.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("cloud file {file}: {reason}")]
    File { file: String, reason: String },
    #[error("cloud file {file}: host {host}: field {field}: {reason}")]
    Field { file: String, host: String, field: &'static str, reason: String },
    #[error("host entry: {0}")]
    Entry(String),
}

/// One host of the cloud file, as written (every field optional here, so
/// that a missing one is refused by name).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    address: Option<String>,
    user: Option<String>,
    port: Option<u32>,
    key: Option<String>,
    #[serde(rename = "host-key")]
    host_key: Option<String>,
    dir: Option<String>,
    roles: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    hosts: Option<Vec<RawHost>>,
}

/// A pool host, its private key's text included.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub address: String,
    pub user: String,
    pub port: u16,
    /// The private key's text (OpenSSH or PEM).
    pub key: String,
    /// The pinned host key fingerprint, `SHA256:...`.
    pub host_key: String,
    /// The directory jujud may use on the host (absolute).
    pub dir: String,
    pub roles: Vec<String>,
}

impl fmt::Debug for HostEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostEntry")
            .field("address", &self.address)
            .field("user", &self.user)
            .field("port", &self.port)
            .field("key", &"<redacted>")
            .field("host_key", &self.host_key)
            .field("dir", &self.dir)
            .field("roles", &self.roles)
            .finish()
    }
}

impl HostEntry {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a host entry serialises")
    }

    /// Decodes and checks an entry from the state.
    pub fn from_json(text: &str) -> Result<HostEntry, CloudError> {
        if text.len() > MAX_ENTRY_BYTES {
            return Err(CloudError::Entry(format!(
                "{} bytes, more than {MAX_ENTRY_BYTES}",
                text.len()
            )));
        }
        let e: HostEntry =
            serde_json::from_str(text).map_err(|e| CloudError::Entry(e.to_string()))?;
        let bad = |field: &str, reason: String| {
            CloudError::Entry(format!("host {}: field {field}: {reason}", e.address))
        };
        check_address(&e.address).map_err(|r| bad("address", r))?;
        check_user(&e.user).map_err(|r| bad("user", r))?;
        check_fingerprint(&e.host_key).map_err(|r| bad("host-key", r))?;
        check_dir(&e.dir).map_err(|r| bad("dir", r))?;
        check_key_text(&e.key).map_err(|r| bad("key", r))?;
        check_roles(&e.roles).map_err(|r| bad("roles", r))?;
        Ok(e)
    }

    pub fn allows(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// `user@address` for messages.
    pub fn target(&self) -> String {
        format!("{}@{}", self.user, self.address)
    }
}

fn check_address(a: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
    if a.is_empty()
        || a.len() > crate::core::state::controllers::MAX_HOST_ADDRESS_BYTES
        || !a.chars().all(ok)
        || a.starts_with('-')
    {
        return Err(format!("{a:?} is not a host name or IP address"));
    }
    Ok(())
}

fn check_user(u: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if u.is_empty() || u.len() > 32 || !u.chars().all(ok) || u.starts_with('-') {
        return Err(format!("{u:?} is not a user name (letters, digits, '.', '-', '_')"));
    }
    Ok(())
}

/// `SHA256:` and 43 unpadded base64 characters, as `ssh-keygen -l` prints.
pub fn check_fingerprint(f: &str) -> Result<(), String> {
    let body = f.strip_prefix("SHA256:").ok_or_else(|| {
        format!("{f:?} does not start with SHA256: (use `ssh-keygen -lf` on the host's key)")
    })?;
    if body.len() != 43 || !body.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    {
        return Err(format!("{f:?} is not a SHA256 fingerprint (43 base64 characters)"));
    }
    Ok(())
}

/// An absolute path of plain characters (it goes into remote shell lines).
fn check_dir(d: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_');
    if !d.starts_with('/')
        || d.len() < 2
        || d.len() > 200
        || !d.chars().all(ok)
        || d.split('/').any(|p| p == "..")
    {
        return Err(format!(
            "{d:?} is not an absolute path of letters, digits, '/', '.', '-', '_' (at most 200)"
        ));
    }
    Ok(())
}

fn check_key_text(k: &str) -> Result<(), String> {
    let t = k.trim();
    if !(t.starts_with("-----BEGIN ") && t.contains("PRIVATE KEY-----") && t.ends_with("-----")) {
        return Err("not a private key (expected a -----BEGIN ... PRIVATE KEY----- block)".into());
    }
    Ok(())
}

fn check_roles(r: &[String]) -> Result<(), String> {
    if r.is_empty() {
        return Err("empty: name manager, machine or both".into());
    }
    match r.iter().find(|x| *x != ROLE_MANAGER && *x != ROLE_MACHINE) {
        Some(x) => Err(format!("{x:?} is not a role (manager or machine)")),
        None => Ok(()),
    }
}

/// Reads and checks a cloud file; keys are read relative to its directory.
pub fn load(path: &Path) -> Result<Vec<HostEntry>, CloudError> {
    let file = path.display().to_string();
    let fail = |reason: String| CloudError::File { file: file.clone(), reason };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_CLOUD_FILE_BYTES {
        return Err(fail(format!("{} bytes, more than {MAX_CLOUD_FILE_BYTES}", meta.len())));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let toml_ext = path.extension().is_some_and(|e| e == "toml");
    let raw: RawCloud = if toml_ext {
        toml::from_str(&text).map_err(|e| fail(e.to_string()))?
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| fail(e.to_string()))?
    };
    let hosts = raw.hosts.ok_or_else(|| fail("field hosts is missing".into()))?;
    if hosts.is_empty() {
        return Err(fail("hosts is empty".into()));
    }
    if hosts.len() > crate::core::state::controllers::MAX_HOSTS {
        return Err(fail(format!(
            "{} hosts, more than {}",
            hosts.len(),
            crate::core::state::controllers::MAX_HOSTS
        )));
    }
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut out: Vec<HostEntry> = Vec::new();
    for (i, h) in hosts.into_iter().enumerate() {
        let e = host(&file, &base, i, h)?;
        if out.iter().any(|o| o.address == e.address) {
            return Err(CloudError::Field {
                file,
                host: e.address,
                field: "address",
                reason: "listed twice".into(),
            });
        }
        out.push(e);
    }
    Ok(out)
}

/// Checks one host of the file (`i`: its place, naming a host without an
/// address).
fn host(file: &str, base: &Path, i: usize, h: RawHost) -> Result<HostEntry, CloudError> {
    let name = h.address.clone().unwrap_or_else(|| format!("#{}", i + 1));
    let bad = |field: &'static str, reason: String| CloudError::Field {
        file: file.into(),
        host: name.clone(),
        field,
        reason,
    };
    let need = |field: &'static str, v: Option<String>| {
        v.filter(|s| !s.trim().is_empty()).ok_or_else(|| bad(field, "missing".into()))
    };
    let address = need("address", h.address.clone())?;
    check_address(&address).map_err(|r| bad("address", r))?;
    let user = need("user", h.user)?;
    check_user(&user).map_err(|r| bad("user", r))?;
    let port = match h.port {
        None => DEFAULT_SSH_PORT,
        Some(p) if (1..=65_535).contains(&p) => p as u16,
        Some(p) => return Err(bad("port", format!("{p} is not a port (1 to 65535)"))),
    };
    let key_path = need("key", h.key)?;
    let key = read_key(&resolve(base, &key_path)).map_err(|r| bad("key", r))?;
    let host_key = need("host-key", h.host_key)?;
    check_fingerprint(&host_key).map_err(|r| bad("host-key", r))?;
    let dir = need("dir", h.dir)?;
    check_dir(&dir).map_err(|r| bad("dir", r))?;
    let roles = h.roles.unwrap_or_else(|| vec![ROLE_MANAGER.into(), ROLE_MACHINE.into()]);
    check_roles(&roles).map_err(|r| bad("roles", r))?;
    Ok(HostEntry { address, user, port, key, host_key, dir, roles })
}

/// `~/x` from $HOME, a relative path from the cloud file's directory.
fn resolve(base: &Path, p: &str) -> PathBuf {
    if let (Some(rest), Some(home)) = (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        return PathBuf::from(home).join(rest);
    }
    let p = PathBuf::from(p);
    if p.is_absolute() { p } else { base.join(p) }
}

/// A private key file's text: bounded, and refused unless it is one
/// (the text itself never goes into a message).
fn read_key(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "{}: {} bytes, more than {MAX_KEY_FILE_BYTES}",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    check_key_text(&text).map_err(|r| format!("{}: {r}", path.display()))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn key(dir: &Path) {
        write(
            dir,
            "id",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nsecretsecret\n-----END OPENSSH PRIVATE KEY-----\n",
        );
    }

    #[test]
    fn yaml_and_toml_give_the_same_hosts_with_defaults() {
        let d = tempfile::tempdir().unwrap();
        key(d.path());
        let y = write(
            d.path(),
            "c.yaml",
            &format!(
                "hosts:\n  - address: 10.0.0.1\n    user: root\n    key: id\n    host-key: {FP}\n    dir: /srv/j\n"
            ),
        );
        let t = write(
            d.path(),
            "c.toml",
            &format!(
                "[[hosts]]\naddress = \"10.0.0.1\"\nuser = \"root\"\nkey = \"id\"\nhost-key = \"{FP}\"\ndir = \"/srv/j\"\n"
            ),
        );
        let a = load(&y).unwrap();
        assert_eq!(a, load(&t).unwrap());
        assert_eq!((a[0].port, a[0].roles.len()), (22, 2));
        assert!(a[0].key.contains("secretsecret"));
        let dbg = format!("{:?}", a[0]);
        assert!(!dbg.contains("secretsecret") && dbg.contains("redacted"), "{dbg}");
        assert_eq!(HostEntry::from_json(&a[0].to_json()).unwrap(), a[0]);
    }

    #[test]
    fn each_missing_or_invalid_field_is_refused_by_host_and_name() {
        let d = tempfile::tempdir().unwrap();
        key(d.path());
        let full = [
            ("address", "10.0.0.1"),
            ("user", "root"),
            ("key", "id"),
            ("host-key", FP),
            ("dir", "/srv/j"),
        ];
        for (skip, _) in full {
            let body: String = full
                .iter()
                .filter(|(k, _)| *k != skip)
                .map(|(k, v)| format!("    {k}: {v}\n"))
                .collect();
            let p = write(d.path(), "c.yaml", &format!("hosts:\n  -\n{body}"));
            let e = load(&p).unwrap_err().to_string();
            assert!(e.contains(&format!("field {skip}: missing")), "{e}");
        }
        let cases = [
            ("port", "70000", "not a port"),
            ("host-key", "MD5:aa", "SHA256"),
            ("dir", "relative/dir", "absolute"),
            ("roles", "[manager, db]", "not a role"),
            ("key", "nope", "nope"),
            ("user", "'a b'", "not a user"),
        ];
        for (field, value, says) in cases {
            let body: String = full
                .iter()
                .filter(|(k, _)| *k != field)
                .map(|(k, v)| format!("    {k}: {v}\n"))
                .collect();
            let p =
                write(d.path(), "c.yaml", &format!("hosts:\n  -\n{body}    {field}: {value}\n"));
            let e = load(&p).unwrap_err().to_string();
            assert!(
                e.contains("host 10.0.0.1")
                    && e.contains(&format!("field {field}"))
                    && e.contains(says),
                "{field}: {e}"
            );
        }
        write(d.path(), "notkey", "hello");
        let body: String = full
            .iter()
            .filter(|(k, _)| *k != "key")
            .map(|(k, v)| format!("    {k}: {v}\n"))
            .collect();
        let p = write(d.path(), "c.yaml", &format!("hosts:\n  -\n{body}    key: notkey\n"));
        assert!(load(&p).unwrap_err().to_string().contains("not a private key"));
        let p = write(d.path(), "c.yaml", "hosts:\n  - address: a\n    colour: red\n");
        assert!(load(&p).unwrap_err().to_string().contains("colour"));
    }
}
