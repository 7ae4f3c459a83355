//! Installing this very `jujud` binary on a pool host: its SHA-256 is
//! compared with the one installed there first (nothing is copied when
//! they are equal); otherwise the binary is streamed over the SSH
//! channel's stdin to a temporary name, its checksum verified on the host,
//! and only then renamed over `DIR/bin/jujud` (atomic on one filesystem).
//!
//! Owns `DIR/bin/` on the host. Must never leave a copy cut short (a
//! dropped link, a full disk) where it could run: a temporary file whose
//! checksum does not match is removed, and the installed binary is the
//! old one or the whole new one.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::client::{Client, quote};
use crate::runtime::provider::ProviderError;

/// How long copying the binary to one host may take.
pub const INSTALL_TIMEOUT_MS: u64 = 180_000;
/// Largest binary read for its checksum (a debug build is about 170 MB).
pub const MAX_BINARY_BYTES: u64 = 1024 * 1024 * 1024;

/// The installed binary's path under a host's dir.
pub fn remote_binary(dir: &str) -> String {
    format!("{dir}/bin/jujud")
}

/// Checksums of local binaries already read (path -> hex SHA-256).
static SUMS: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// The hex SHA-256 of a local file (cached per path for this process).
pub fn sha256_file(path: &Path) -> Result<String, String> {
    if let Some((_, s)) = SUMS.lock().expect("sums").iter().find(|(p, _)| p == path) {
        return Ok(s.clone());
    }
    // ring's SHA-256 is assembly even in a debug build (a debug sha2 takes
    // seconds over a 170 MB binary).
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut r = f.take(MAX_BINARY_BYTES);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let sum = hex::encode(h.finish().as_ref());
    SUMS.lock().expect("sums").push((path.to_path_buf(), sum.clone()));
    Ok(sum)
}

/// Installs `binary` on the host unless the same one is there; returns
/// whether it copied.
pub fn install(client: &Client, binary: &Path) -> Result<bool, ProviderError> {
    let sum = sha256_file(binary)
        .map_err(|e| ProviderError::Spawn { name: "install".into(), reason: e })?;
    let dir = client.entry().dir.clone();
    let bin = remote_binary(&dir);
    let have = client.run(
        &format!("sha256sum {} 2>/dev/null || true", quote(&bin)),
        None,
        super::client::CALL_TIMEOUT_MS,
    )?;
    if have.stdout.split_whitespace().next() == Some(sum.as_str()) {
        return Ok(false);
    }
    let f = std::fs::File::open(binary).map_err(|e| ProviderError::Spawn {
        name: "install".into(),
        reason: format!("{}: {e}", binary.display()),
    })?;
    install_from(client, Box::new(f), &sum)?;
    Ok(true)
}

/// Streams `src` to the host as the binary, kept only when its SHA-256 is
/// `sum` (a source cut short leaves the installed binary as it was).
pub fn install_from(
    client: &Client,
    src: Box<dyn Read + Send>,
    sum: &str,
) -> Result<(), ProviderError> {
    let entry = client.entry();
    let dir = &entry.dir;
    let script = format!(
        "D={d}; S={s}; mkdir -p \"$D/bin\" || exit 3; t=\"$D/bin/.jujud.$$\"; trap 'rm -f \"$t\"' EXIT; \
         cat > \"$t\" || {{ echo 'copy failed' >&2; exit 3; }}; \
         echo \"$S  $t\" | sha256sum -c --status || {{ echo \"checksum mismatch: the copy was cut short or changed ($(wc -c < \"$t\") bytes arrived)\" >&2; exit 4; }}; \
         chmod 755 \"$t\" && mv -f \"$t\" \"$D/bin/jujud\" || exit 3; trap - EXIT",
        d = quote(dir),
        s = quote(sum)
    );
    let out = client.run(&script, Some(src), INSTALL_TIMEOUT_MS)?;
    if out.code != 0 {
        let why = out.stderr.trim();
        let reason = if why.contains("No space left") {
            format!("no room on disk in {dir} to install jujud")
        } else if why.contains("Read-only") || why.contains("Permission denied") {
            format!("directory {dir} is not writable: {}", why.lines().next().unwrap_or(""))
        } else {
            format!("installing jujud failed: {why}")
        };
        return Err(ProviderError::Host { host: entry.address.clone(), reason });
    }
    Ok(())
}
