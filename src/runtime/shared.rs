//! The state the peer's connection handlers share (the client API, the join
//! exchange, agent sessions): the channels to the driver, the credentials
//! and the CA, and the asks they make of the driver, each answered on a
//! oneshot.
//!
//! Owns only handles. Must never hold the node itself (only the driver
//! does), and never wait for the driver without its channel's bound: a
//! closed channel answers "shutting down", never hangs.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::datadir::Credentials;
use super::driver::Command;
use crate::core::state::WriteResult;
use crate::core::state::model::{Command as StateCommand, StatusView};
use crate::core::{Identity, Input, MemberInfo, NodeId, Notice};
use crate::metrics::Metrics;
use crate::pki::ClusterCa;

/// What the API and join handlers share.
pub struct Shared {
    pub commands: mpsc::Sender<Command>,
    pub creds: Credentials,
    pub ca: ClusterCa,
    pub ca_fingerprint: String,
    pub cluster_name: String,
    pub metrics: Arc<Metrics>,
    pub self_id: NodeId,
    /// Open agent sessions' writers.
    pub sessions: Arc<super::session::SessionTable>,
    /// The driver's inbox, for agent sessions' traffic.
    pub inbox: mpsc::Sender<Input>,
    /// This manager's web dashboard, once started (`--dashboard-listen`).
    pub dashboard: std::sync::OnceLock<Arc<super::dashboard::Dashboard>>,
    /// Permits for live `juju debug-log` readers
    /// (`logs::serve::MAX_LOG_FOLLOWERS`).
    pub log_followers: Arc<tokio::sync::Semaphore>,
    /// This manager's status history (`juju show-status-log`).
    pub history: Arc<super::history::StatusHistory>,
    /// Admission slots (`join::MAX_CONCURRENT_JOINS`).
    pub joins: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    pub async fn members(&self) -> Option<(Identity, Vec<MemberInfo>)> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Members(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn notices(&self) -> Vec<Notice> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Notices(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The state view, members and controller summary (None on a member
    /// without state).
    pub async fn status(
        &self,
    ) -> Option<(String, StatusView, Vec<MemberInfo>, crate::core::control::ControllerInfo)> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.ok()?;
        let (view, members, info) = rx.await.ok()??;
        let me = members.first().map(|m| m.identity.id.to_string()).unwrap_or_default();
        Some((me, view, members, info))
    }

    /// What changed in the state since `since`, and the members presence
    /// was filled from (`None`: not a manager, or stopping).
    pub async fn status_changes(
        &self,
        since: Option<crate::core::state::VersionVector>,
    ) -> Option<(crate::core::state::sync::StatusChanges, Vec<MemberInfo>)> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::StatusChanges { since, reply }).await.ok()?;
        rx.await.ok()?
    }

    /// Applies a state command; answers once durable (and replicated).
    pub async fn write(
        &self,
        cmd: StateCommand,
        replicas: u32,
        timeout: std::time::Duration,
    ) -> WriteResult {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Write { cmd, replicas, timeout, reply }).await.is_err() {
            return WriteResult::Refused("the node is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| WriteResult::Refused("the node stopped before answering".into()))
    }

    /// What this manager's replica holds about a token (`Err` when it
    /// cannot judge yet).
    pub async fn token_record(
        &self,
        token_id: &str,
    ) -> Result<Option<crate::core::state::tokens::TokenRecord>, String> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::TokenRecord { token_id: token_id.to_string(), reply };
        if self.commands.send(cmd).await.is_err() {
            return Err("the node is shutting down".into());
        }
        rx.await.unwrap_or_else(|_| Err("the node stopped before answering".into()))
    }

    /// One page of tokens (`None` without state or when shutting down).
    pub async fn token_list(
        &self,
        query: crate::core::state::tokens::TokenQuery,
    ) -> Option<crate::core::state::tokens::TokenPage> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::TokenList { query, now_unix_secs: unix_now(), reply })
            .await
            .ok()?;
        rx.await.ok()?
    }

    /// The values of one state key.
    pub async fn state_get(&self, key: &str) -> Vec<String> {
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::StateGet { key: key.to_string(), reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The ssh provider's pool (`None` without state, or when stopping).
    pub async fn hosts(&self) -> Option<Vec<(String, String)>> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Hosts(reply)).await.ok()?;
        rx.await.ok().flatten()
    }

    pub async fn publish(&self, notice: Notice) {
        let _ = self.commands.send(Command::Publish(notice)).await;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
