//! The admin client's configuration file (`client.yaml`): the cluster's
//! endpoints, its CA and an admin certificate.
//!
//! Owns the file's schema. Must never accept a file that lacks any part:
//! a client with no endpoints or no certificate gets a clear error.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Largest client file read.
pub const MAX_CLIENT_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub cluster: String,
    pub endpoints: Vec<SocketAddr>,
    pub ca_cert: String,
    pub client_cert: String,
    pub client_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientFileError {
    #[error("cannot read client config {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("client config {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
}

impl ClientFile {
    pub fn load(path: &Path) -> Result<ClientFile, ClientFileError> {
        let p = path.display().to_string();
        let meta = std::fs::metadata(path)
            .map_err(|source| ClientFileError::Io { path: p.clone(), source })?;
        if meta.len() > MAX_CLIENT_FILE_BYTES {
            return Err(ClientFileError::Invalid {
                path: p,
                reason: format!("{} bytes is too large", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|source| ClientFileError::Io { path: p.clone(), source })?;
        let file: ClientFile = serde_yaml_ng::from_str(&text)
            .map_err(|e| ClientFileError::Invalid { path: p.clone(), reason: e.to_string() })?;
        if file.endpoints.is_empty() {
            return Err(ClientFileError::Invalid {
                path: p,
                reason: "it lists no endpoints".into(),
            });
        }
        Ok(file)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a ClientFile always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_empty_endpoints() {
        let f = ClientFile {
            cluster: "c".into(),
            endpoints: vec!["127.0.0.1:1".parse().unwrap()],
            ca_cert: "-----BEGIN X-----\nabc\n".into(),
            client_cert: "c".into(),
            client_key: "k".into(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("client.yaml");
        std::fs::write(&path, f.to_yaml()).unwrap();
        assert_eq!(ClientFile::load(&path).unwrap(), f);
        let empty = ClientFile { endpoints: vec![], ..f };
        std::fs::write(&path, empty.to_yaml()).unwrap();
        assert!(ClientFile::load(&path).unwrap_err().to_string().contains("no endpoints"));
        std::fs::write(&path, "cluster: [").unwrap();
        assert!(ClientFile::load(&path).is_err());
    }
}
