//! A node's data directory: its identity, credentials, remembered peers and
//! notices, written atomically (temp file, fsync, rename, fsync dir) with
//! `node.json` last as the commit marker.
//!
//! Owns the on-disk layout and its checks, and the modes: the dir and
//! every dir under it 0700, every file 0600 (created so, never chmod'ed
//! after; a dir left 0755 by an older jujud is tightened on open with a log
//! line). Must never serve a half-written or foreign directory: those are
//! refused with a message naming the file. At load, `node.json`, `ca.pem`,
//! `node.pem` and `node.key` must belong together (`credcheck`).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::{Identity, Notice};

/// Version of the layout; a newer one is refused. 2 added
/// `NodeFile::state_writer`; a layout-1 dir is migrated on open (read as
/// having no recorded writer, written back as 2 at the next save).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest layout still read (and migrated).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Largest file we read from the data dir.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

const NODE_FILE: &str = "node.json";
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const NODE_CERT: &str = "node.pem";
const NODE_KEY: &str = "node.key";
const SECRET_FILE: &str = "cluster.secret";
const RESET_KEY_FILE: &str = "reset.key";
const PEERS_FILE: &str = "peers.json";
const NOTICES_FILE: &str = "notices.bin";
const LOCK_FILE: &str = "lock";
/// Mode of every file this crate writes under a data dir or provider root.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory it creates there.
pub const DIR_MODE: u32 = 0o700;
/// Written by the first node of a cluster.
pub const JOIN_TOKEN_FILE: &str = "join-token";
/// Written by the first node of a cluster: the admin client's config.
pub const CLIENT_FILE: &str = "client.yaml";

/// What went wrong with a data dir.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data dir {0} is in use by another jujud process")]
    Locked(PathBuf),
    #[error(
        "data dir {0} is half-initialised ({NODE_FILE} is missing but other files exist); remove it or use another"
    )]
    HalfInitialised(PathBuf),
    #[error("data dir file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("data dir {path} uses layout version {found}; this jujud understands {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "data dir file {path} does not belong with node.json: {reason}. The identity files of \
         another node or cluster were copied here; put this node's own files back, or move the \
         data dir aside and join again with a token"
    )]
    Foreign { path: PathBuf, reason: String },
}

/// `node.json`: who this node is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub format: u32,
    pub cluster_name: String,
    pub ca_fingerprint: String,
    pub node_id: String,
    pub role: String,
    pub generation: u64,
    pub advertise: SocketAddr,
    /// The `--join` addresses last given, used as seeds when restarted
    /// without them (so a restart never depends on `peers.json` alone).
    #[serde(default)]
    pub seeds: Vec<SocketAddr>,
    /// Agents: the machine this agent runs (also named by its certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Set once this node's state log (`state/`) was created: from then on
    /// a missing or emptied log is refused, not started empty. Absent in
    /// files written before it existed (read as false).
    #[serde(default)]
    pub state_log: bool,
    /// The generation whose actor writes this node's state (layout 2): every
    /// operation of it ever shared is in `state/`, so a restart on this
    /// intact disk keeps writing as it (`core::state::writer_after_start`).
    /// Recorded before that actor writes anything; absent in layout 1 (the
    /// next start is a new actor, then recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_writer: Option<u64>,
}

impl NodeFile {
    /// Whether this dir holds a machine agent (agents keep no CA key and
    /// no cluster secret).
    pub fn is_agent(&self) -> bool {
        self.role == "agent"
    }
}

/// The node's keys and certificates (PEM), and the cluster secret.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub cluster_secret: Vec<u8>,
    /// Key for QUIC stateless resets, kept so a restarted node can reset
    /// its peers' stale connections at once.
    pub reset_key: Vec<u8>,
}

/// Everything read back from an initialised data dir.
#[derive(Debug, Clone)]
pub struct Stored {
    pub node: NodeFile,
    pub creds: Credentials,
    pub peers: Vec<Identity>,
    pub notices: Vec<Notice>,
}

/// An open, locked data dir.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io { path: path.to_path_buf(), source }
}

impl DataDir {
    /// Opens (creating if needed) and locks the dir; returns what it holds,
    /// or `None` if it is empty.
    pub fn open(path: &Path) -> Result<(DataDir, Option<Stored>), DataDirError> {
        create_private_dir(path)?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: flock on a valid, owned file descriptor.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(DataDirError::Locked(path.to_path_buf()));
        }
        tighten_file(&lock, &lock_path)?;
        let dir = DataDir { path: path.to_path_buf(), _lock: lock };
        if !path.join(NODE_FILE).exists() {
            let ours = [CA_CERT, CA_KEY, NODE_CERT, NODE_KEY, SECRET_FILE, PEERS_FILE];
            if ours.iter().any(|f| path.join(f).exists()) {
                return Err(DataDirError::HalfInitialised(path.to_path_buf()));
            }
            return Ok((dir, None));
        }
        let stored = dir.load()?;
        Ok((dir, Some(stored)))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Stored, DataDirError> {
        let mut node: NodeFile = self.read_json(NODE_FILE)?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&node.format) {
            return Err(DataDirError::Version { path: self.path.clone(), found: node.format });
        }
        if node.format < FORMAT_VERSION {
            tracing::info!(path = %self.path.display(), from = node.format, to = FORMAT_VERSION, "migrating the data dir layout (written back at the next save of node.json)");
            node.format = FORMAT_VERSION;
        }
        let agent = node.is_agent();
        let creds = Credentials {
            ca_cert_pem: self.read_text(CA_CERT)?,
            ca_key_pem: if agent { String::new() } else { self.read_text(CA_KEY)? },
            cert_pem: self.read_text(NODE_CERT)?,
            key_pem: self.read_text(NODE_KEY)?,
            cluster_secret: if agent { Vec::new() } else { self.read_hex(SECRET_FILE, 32)? },
            reset_key: self.read_hex(RESET_KEY_FILE, 32)?,
        };
        let claimed = super::credcheck::Claimed {
            ca_fingerprint: &node.ca_fingerprint,
            node_id: &node.node_id,
            role: &node.role,
            machine: node.machine.as_deref(),
        };
        super::credcheck::check(claimed, &creds.ca_cert_pem, &creds.cert_pem, &creds.key_pem)
            .map_err(|m| DataDirError::Foreign {
                path: self.path.join(m.file),
                reason: m.reason,
            })?;
        let peers = if self.path.join(PEERS_FILE).exists() {
            self.read_json(PEERS_FILE)?
        } else {
            Vec::new()
        };
        let notices = match self.read_optional(NOTICES_FILE)? {
            Some(bytes) => {
                super::wire::decode_notices(&bytes).map_err(|e| self.corrupt(NOTICES_FILE, e))?
            }
            None => Vec::new(),
        };
        Ok(Stored { node, creds, peers, notices })
    }

    fn corrupt(&self, file: &str, reason: impl std::fmt::Display) -> DataDirError {
        DataDirError::Corrupt { path: self.path.join(file), reason: reason.to_string() }
    }

    fn read_optional(&self, file: &str) -> Result<Option<Vec<u8>>, DataDirError> {
        let path = self.path.join(file);
        match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                return Err(self.corrupt(file, format!("{} bytes is too large", m.len())));
            }
            Ok(_) => {}
        }
        fs::read(&path).map(Some).map_err(io_err(&path))
    }

    fn read_text(&self, file: &str) -> Result<String, DataDirError> {
        let bytes = self.read_optional(file)?.ok_or_else(|| self.corrupt(file, "missing"))?;
        String::from_utf8(bytes).map_err(|_| self.corrupt(file, "not UTF-8 text"))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, file: &str) -> Result<T, DataDirError> {
        let text = self.read_text(file)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(file, e))
    }

    fn read_hex(&self, file: &str, len: usize) -> Result<Vec<u8>, DataDirError> {
        let text = self.read_text(file)?;
        let bytes = hex::decode(text.trim()).map_err(|e| self.corrupt(file, e))?;
        if bytes.len() != len {
            return Err(self.corrupt(file, format!("expected {len} bytes, found {}", bytes.len())));
        }
        Ok(bytes)
    }

    /// Writes a fresh node's credentials, then `node.json` as the commit.
    pub fn initialise(&self, node: &NodeFile, creds: &Credentials) -> Result<(), DataDirError> {
        self.write_private(CA_CERT, creds.ca_cert_pem.as_bytes())?;
        if !node.is_agent() {
            self.write_private(CA_KEY, creds.ca_key_pem.as_bytes())?;
            self.write_private(SECRET_FILE, hex::encode(&creds.cluster_secret).as_bytes())?;
        }
        self.write_private(NODE_CERT, creds.cert_pem.as_bytes())?;
        self.write_private(NODE_KEY, creds.key_pem.as_bytes())?;
        self.write_private(RESET_KEY_FILE, hex::encode(&creds.reset_key).as_bytes())?;
        self.write_node(node)
    }

    /// Rewrites `node.json` (for instance with a new generation).
    pub fn write_node(&self, node: &NodeFile) -> Result<(), DataDirError> {
        let text = serde_json::to_string_pretty(node).map_err(|e| self.corrupt(NODE_FILE, e))?;
        self.write_private(NODE_FILE, text.as_bytes())
    }

    /// Remembers peers to announce to at the next start.
    pub fn write_peers(&self, peers: &[Identity]) -> Result<(), DataDirError> {
        let text = serde_json::to_string(peers).map_err(|e| self.corrupt(PEERS_FILE, e))?;
        self.write_private(PEERS_FILE, text.as_bytes())
    }

    /// Remembers notices (revocations above all) across restarts.
    pub fn write_notices(&self, notices: &[Notice]) -> Result<(), DataDirError> {
        let bytes = bincode::serde::encode_to_vec(notices, bincode::config::standard())
            .map_err(|e| self.corrupt(NOTICES_FILE, e))?;
        self.write_private(NOTICES_FILE, &bytes)
    }

    /// What the state log must be found as: present once `node.json`
    /// records one, unless the operator asked for a restore from peers by
    /// creating [`super::wal::RESTORE_MARKER`].
    pub fn state_expectation(&self, node: &NodeFile) -> super::wal::Expect {
        let restore = self.path.join(super::wal::RESTORE_MARKER);
        if node.state_log && !restore.exists() {
            return super::wal::Expect::Present;
        }
        if node.state_log {
            tracing::warn!(marker = %restore.display(), "restore from peers asked for: a missing state log starts empty and is filled by the other managers");
        }
        super::wal::Expect::CreateOrUpgrade
    }

    /// The generation the state's writer has at a start at `generation`,
    /// the state log expected as `expect` ([`DataDir::state_expectation`])
    /// and read to its end without cutting a torn tail (`whole`): the
    /// recorded one if the log is this node's own (expected present, no
    /// restore asked for) and whole, else `generation` (a new actor,
    /// recorded by [`DataDir::note_state_log`] before it writes). A cut
    /// tail may have held a synced, hence shared, operation of the writer:
    /// numbering on after what is left could reuse its number.
    pub fn state_writer(
        node: &NodeFile,
        generation: u64,
        expect: super::wal::Expect,
        whole: bool,
    ) -> u64 {
        let own = expect == super::wal::Expect::Present && whole;
        crate::core::state::writer_after_start(0, generation, node.state_writer, own).generation
    }

    /// After the state log opened: records it and the state's writer
    /// generation `writer` in `node.json` (written only when either
    /// changed, and before the writer writes anything), then removes the
    /// restore marker if there was one.
    pub fn note_state_log(&self, node: &mut NodeFile, writer: u64) -> Result<(), DataDirError> {
        if !node.state_log || node.state_writer != Some(writer) {
            node.state_log = true;
            node.state_writer = Some(writer);
            self.write_node(node)?;
        }
        let restore = self.path.join(super::wal::RESTORE_MARKER);
        match fs::remove_file(&restore) {
            Ok(()) => File::open(&self.path).and_then(|d| d.sync_all()).map_err(io_err(&self.path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&restore)(e)),
        }
    }

    /// Writes any file of the dir atomically with mode 0600.
    pub fn write_private(&self, file: &str, bytes: &[u8]) -> Result<(), DataDirError> {
        write_atomic(&self.path.join(file), bytes)
    }
}

/// Writes `bytes` to `path` atomically and durably, mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(parent) = path.parent() {
        let dir = File::open(parent).map_err(io_err(parent))?;
        dir.sync_all().map_err(io_err(parent))?;
    }
    Ok(())
}

/// Creates `path` and any missing parents mode 0700 (as created, not
/// chmod'ed after); an existing dir open to others (an older jujud made
/// them 0755) is tightened to 0700 with a log line.
pub fn create_private_dir(path: &Path) -> Result<(), DataDirError> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(path).map_err(io_err(path))?;
    let mode = fs::metadata(path).map_err(io_err(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)).map_err(io_err(path))?;
        tracing::warn!(path = %path.display(), old_mode = format!("{mode:o}"), "tightened a directory to mode 0700 (it was open to other local users)");
    }
    Ok(())
}

/// Makes a file an older jujud created 0644 (the lock) owner-only, with a
/// log line.
fn tighten_file(file: &File, path: &Path) -> Result<(), DataDirError> {
    let mode = file.metadata().map_err(io_err(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE)).map_err(io_err(path))?;
        tracing::warn!(path = %path.display(), old_mode = format!("{mode:o}"), "tightened a file to mode 0600 (it was open to other local users)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matching CA, node certificate and node.json for node 1.
    fn pair() -> (NodeFile, Credentials) {
        let ca = crate::pki::ClusterCa::generate("c").unwrap();
        let cert = ca.issue(crate::pki::CertRole::Manager, 1, 30).unwrap();
        let node = NodeFile {
            format: FORMAT_VERSION,
            cluster_name: "c".into(),
            ca_fingerprint: ca.fingerprint(),
            node_id: "0000000000000001".into(),
            role: "manager".into(),
            generation: 1,
            advertise: "127.0.0.1:7070".parse().unwrap(),
            seeds: vec![],
            machine: None,
            state_log: false,
            state_writer: None,
        };
        let creds = Credentials {
            ca_cert_pem: ca.cert_pem.clone(),
            ca_key_pem: ca.key_pem.clone(),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
            cluster_secret: vec![7; 32],
            reset_key: vec![9; 32],
        };
        (node, creds)
    }

    #[test]
    fn initialise_then_reopen_round_trips_and_locks() {
        let tmp = tempfile::tempdir().unwrap();
        let (node, creds) = pair();
        let (dir, stored) = DataDir::open(tmp.path()).unwrap();
        assert!(stored.is_none());
        dir.initialise(&node, &creds).unwrap();
        assert!(matches!(DataDir::open(tmp.path()), Err(DataDirError::Locked(_))));
        drop(dir);
        let (_dir, stored) = DataDir::open(tmp.path()).unwrap();
        let stored = stored.unwrap();
        assert_eq!(stored.node, node);
        assert_eq!(stored.creds.cluster_secret, vec![7; 32]);
    }

    #[test]
    fn half_written_and_corrupt_dirs_are_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(CA_CERT), "x").unwrap();
        assert!(matches!(DataDir::open(tmp.path()), Err(DataDirError::HalfInitialised(_))));

        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(NODE_FILE), "{ not json").unwrap();
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("node.json"), "{err}");

        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = DataDir::open(tmp.path()).unwrap();
        let (node, creds) = pair();
        dir.initialise(&node, &creds).unwrap();
        drop(dir);
        fs::write(tmp.path().join(SECRET_FILE), "abcd").unwrap();
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("cluster.secret"), "{err}");
    }

    /// Each identity file swapped for another cluster's is refused at
    /// open, naming the file (finding 9).
    #[test]
    fn foreign_node_json_ca_or_cert_is_refused_by_name() {
        let (node, creds) = pair();
        let (other_node, other_creds) = pair();
        for (file, text) in [
            (NODE_FILE, serde_json::to_string(&other_node).unwrap()),
            (CA_CERT, other_creds.ca_cert_pem.clone()),
            (NODE_CERT, other_creds.cert_pem.clone()),
            (NODE_KEY, other_creds.key_pem.clone()),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let (dir, _) = DataDir::open(tmp.path()).unwrap();
            dir.initialise(&node, &creds).unwrap();
            drop(dir);
            fs::write(tmp.path().join(file), text).unwrap();
            let err = DataDir::open(tmp.path()).unwrap_err();
            assert!(matches!(err, DataDirError::Foreign { .. }), "{file}: {err}");
            let named = if file == NODE_FILE { CA_CERT } else { file };
            assert!(err.to_string().contains(named), "{file}: {err}");
        }
    }

    /// The dir is 0700 and every file 0600 as created; a 0755 dir left by
    /// an older jujud is tightened on open (finding 6).
    #[test]
    fn files_are_0600_and_dirs_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let (node, creds) = pair();
        let (dir, _) = DataDir::open(&root).unwrap();
        dir.initialise(&node, &creds).unwrap();
        dir.write_peers(&[]).unwrap();
        drop(dir);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        for e in fs::read_dir(&root).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(root.join(LOCK_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        drop(DataDir::open(&root).unwrap());
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join(LOCK_FILE)), 0o600);
    }

    /// The state's writer is recorded in node.json (layout 2) and adopted
    /// only while the state log is the node's own; a layout-1 node.json
    /// opens, migrated, with no writer recorded.
    #[test]
    fn the_state_writer_is_recorded_and_adopted_only_on_the_own_log() {
        use super::super::wal::{Expect, RESTORE_MARKER};
        let tmp = tempfile::tempdir().unwrap();
        let (mut node, creds) = pair();
        let (dir, _) = DataDir::open(tmp.path()).unwrap();
        dir.initialise(&node, &creds).unwrap();
        let first = DataDir::state_writer(&node, 1, dir.state_expectation(&node), true);
        assert_eq!(first, 1, "a first start is a new actor");
        dir.note_state_log(&mut node, first).unwrap();
        drop(dir);
        let (dir, stored) = DataDir::open(tmp.path()).unwrap();
        let node = stored.unwrap().node;
        assert_eq!((node.format, node.state_log, node.state_writer), (2, true, Some(1)));
        assert_eq!(DataDir::state_writer(&node, 7, Expect::Present, true), 1, "adopted");
        assert_eq!(DataDir::state_writer(&node, 7, Expect::Present, false), 7, "a cut tail");
        fs::write(tmp.path().join(RESTORE_MARKER), "").unwrap();
        let expect = dir.state_expectation(&node);
        assert_eq!(DataDir::state_writer(&node, 7, expect, true), 7, "a restore is a new actor");
        drop(dir);

        let text = serde_json::to_string_pretty(&node).unwrap();
        let v1 = text.replace("\"format\": 2", "\"format\": 1");
        let v1 = v1.replace(",\n  \"state_writer\": 1", "");
        assert!(!v1.contains("state_writer") && v1.contains("\"format\": 1"), "{v1}");
        fs::write(tmp.path().join(NODE_FILE), v1).unwrap();
        let (_dir, stored) = DataDir::open(tmp.path()).unwrap();
        let node = stored.unwrap().node;
        assert_eq!((node.format, node.state_writer), (FORMAT_VERSION, None), "migrated");
        assert_eq!(DataDir::state_writer(&node, 8, Expect::Present, true), 8, "nothing to adopt");
    }
}
