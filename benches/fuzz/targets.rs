//! The fuzz targets: one per decoder of input from the network, a disk or
//! a user, each with its frame limit (the allocation cap is twice it), the
//! shape of its inputs, the real decode entry point it calls, and the real
//! values its seed corpus is encoded from.
//!
//! Owns the list of decoders under test. Must never decode through a copy
//! of a decoder's logic: each target calls the function jujud calls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use futures_util::FutureExt;
use jujud::core::agent::{self, Assignments, Report, SessionMsg, UnitSpec};
use jujud::core::codec::{self, BincodeCodec, MAX_ITEM_BYTES};
use jujud::core::identity::{Identity, NodeId, Role};
use jujud::core::notices::Notice;
use jujud::core::state::model::{self, Command};
use jujud::core::state::replica::{Actor, Replica, Stamped};
use jujud::core::state::sync::{self, MAX_STATE_MSG_BYTES, StateMsg};
use jujud::runtime::agentconf::{AgentConf, MAX_AGENT_CONF_BYTES};
use jujud::runtime::clientfile::{ClientFile, MAX_CLIENT_FILE_BYTES};
use jujud::runtime::datadir::{self, DataDir, NodeFile};
use jujud::runtime::wal::{self, MAX_SNAPSHOT_BYTES};
use jujud::runtime::{store, wire};
use wire::{
    Admission, JoinRequest, JoinResponse, MAX_API_FRAME_BYTES, MAX_JOIN_FRAME_BYTES,
    MAX_STATUS_FRAME_BYTES,
};

use crate::mutate::Shape;

/// Longest input the mutator makes for a target (inputs are small; a
/// forged length is what reaches for big allocations).
const MAX_INPUT_BYTES: usize = 4096;

pub struct Target {
    pub name: &'static str,
    /// The limit's name in the source, and its value.
    pub limit_name: &'static str,
    pub limit_bytes: usize,
    pub framed: bool,
    /// Decodes one input with jujud's own entry point; true if accepted.
    pub run: fn(&[u8]) -> bool,
    /// Valid encodings of real values, for `--seed-corpus`.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

impl Target {
    pub fn cap_bytes(&self) -> usize {
        self.limit_bytes.saturating_mul(2)
    }

    pub fn shape(&self) -> Shape {
        let dict = match self.name {
            "client_yaml" => YAML_TOKENS,
            n if TEXT_TARGETS.contains(&n) => JSON_TOKENS,
            _ => &[],
        };
        Shape {
            max_input_bytes: MAX_INPUT_BYTES,
            limit_bytes: self.limit_bytes,
            framed: self.framed,
            dict,
        }
    }
}

/// Targets that fail on this branch, with why. Each stays listed until its
/// fix lands; the CI step then fails, asking for the entry to be removed.
pub const KNOWN_FAILURES: &[(&str, &str)] = &[];

/// Targets whose input is text (JSON, YAML): no bincode length claims.
pub const TEXT_TARGETS: &[&str] = &["node_json", "agent_conf", "client_yaml"];

/// JSON tokens the mutator inserts into the JSON targets' inputs.
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "0",
    "-1",
    "1e999",
    "18446744073709551616",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "[[[[[[[[[[[[[[[[",
    "\"127.0.0.1:1\"",
    "\"[::1]:65535\"",
    "\"format\":",
    "\"managers\":",
    "\"seeds\":",
];
/// YAML tokens, aliases and tags included (alias expansion is the classic
/// way to make a small file decode into a large value).
const YAML_TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "[*a,*a,*a,*a,*a,*a,*a,*a]",
    "<<: *a\n",
    "!!binary ",
    "!!str ",
    "? ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\n  ",
    "---\n",
    "...\n",
    "|\n  ",
    ">\n  ",
    "~",
    "'",
    "\"",
    "endpoints: ",
    "- 127.0.0.1:1\n",
    "cluster: ",
    "0x",
    "1e999",
];

pub fn all() -> Vec<Target> {
    vec![
        t(
            "swim_header",
            "codec::MAX_ITEM_BYTES",
            MAX_ITEM_BYTES,
            false,
            swim_header,
            seeds_swim_header,
        ),
        t(
            "swim_member",
            "codec::MAX_ITEM_BYTES",
            MAX_ITEM_BYTES,
            false,
            swim_member,
            seeds_swim_member,
        ),
        t("notice", "codec::MAX_ITEM_BYTES", MAX_ITEM_BYTES, false, notice, seeds_notice),
        t(
            "join_request",
            "wire::MAX_JOIN_FRAME_BYTES",
            MAX_JOIN_FRAME_BYTES,
            true,
            join_request,
            seeds_join_request,
        ),
        t(
            "join_response",
            "wire::MAX_JOIN_FRAME_BYTES",
            MAX_JOIN_FRAME_BYTES,
            true,
            join_response,
            seeds_join_response,
        ),
        t(
            "api_request",
            "wire::MAX_API_FRAME_BYTES",
            MAX_API_FRAME_BYTES,
            true,
            api_request,
            seeds_api_request,
        ),
        t(
            "api_response",
            "wire::MAX_STATUS_FRAME_BYTES",
            MAX_STATUS_FRAME_BYTES,
            true,
            api_response,
            seeds_api_response,
        ),
        t(
            "session_msg",
            "agent::MAX_SESSION_MSG_BYTES",
            agent::MAX_SESSION_MSG_BYTES,
            false,
            session_msg,
            seeds_session,
        ),
        t(
            "state_msg",
            "sync::MAX_STATE_MSG_BYTES",
            MAX_STATE_MSG_BYTES,
            false,
            state_msg,
            seeds_state_msg,
        ),
        t(
            "state_record",
            "store::MAX_RECORD_DECODE_BYTES",
            store::MAX_RECORD_DECODE_BYTES,
            false,
            state_record,
            seeds_state_record,
        ),
        t(
            "snapshot",
            "wal::MAX_SNAPSHOT_BYTES",
            MAX_SNAPSHOT_BYTES,
            false,
            snapshot,
            seeds_snapshot,
        ),
        t(
            "wal_segment",
            "wal::MAX_RECORD_BYTES",
            wal::MAX_RECORD_BYTES,
            false,
            wal_segment,
            seeds_wal_segment,
        ),
        t(
            "snapshot_file",
            "wal::MAX_SNAPSHOT_BYTES",
            MAX_SNAPSHOT_BYTES,
            false,
            snapshot_file,
            seeds_snapshot_file,
        ),
        t(
            "notices_file",
            "datadir::MAX_FILE_BYTES",
            datadir::MAX_FILE_BYTES as usize,
            false,
            notices_file,
            seeds_notices_file,
        ),
        t(
            "node_json",
            "datadir::MAX_FILE_BYTES",
            datadir::MAX_FILE_BYTES as usize,
            false,
            node_json,
            seeds_node_json,
        ),
        t(
            "agent_conf",
            "agentconf::MAX_AGENT_CONF_BYTES",
            MAX_AGENT_CONF_BYTES as usize,
            false,
            agent_conf,
            seeds_agent_conf,
        ),
        t(
            "client_yaml",
            "clientfile::MAX_CLIENT_FILE_BYTES",
            MAX_CLIENT_FILE_BYTES as usize,
            false,
            client_yaml,
            seeds_client_yaml,
        ),
    ]
}

fn t(
    name: &'static str,
    limit_name: &'static str,
    limit_bytes: usize,
    framed: bool,
    run: fn(&[u8]) -> bool,
    seeds: fn() -> Vec<Vec<u8>>,
) -> Target {
    Target { name, limit_name, limit_bytes, framed, run, seeds }
}

// ---- network: SWIM ----

fn swim_header(bytes: &[u8]) -> bool {
    foca::Codec::<Identity>::decode_header(&mut BincodeCodec, bytes).is_ok()
}

fn swim_member(bytes: &[u8]) -> bool {
    foca::Codec::<Identity>::decode_member(&mut BincodeCodec, bytes).is_ok()
}

fn notice(bytes: &[u8]) -> bool {
    codec::decode_exact::<Notice>(bytes).is_ok()
}

fn ident(id: u64, port: u16, role: Role) -> Identity {
    Identity {
        id: NodeId(id),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        role,
        generation: id * 3 + 1,
    }
}

fn seeds_swim_header() -> Vec<Vec<u8>> {
    use foca::{Header, Message};
    let (a, b, c) =
        (ident(1, 7001, Role::Manager), ident(2, 7002, Role::Manager), ident(3, 7003, Role::Agent));
    let v6 = Identity { addr: "[::1]:7004".parse().unwrap(), ..ident(4, 0, Role::Manager) };
    let msgs = vec![
        Message::Ping(7),
        Message::Ack(7),
        Message::PingReq { target: c.clone(), probe_number: 9 },
        Message::IndirectPing { origin: a.clone(), probe_number: 9 },
        Message::IndirectAck { target: c.clone(), probe_number: 9 },
        Message::ForwardedAck { origin: a.clone(), probe_number: 9 },
        Message::Gossip,
        Message::Announce,
        Message::Feed,
        Message::Broadcast,
        Message::TurnUndead,
    ];
    let mut out: Vec<Vec<u8>> = msgs
        .into_iter()
        .map(|message| {
            let h = Header { src: a.clone(), src_incarnation: 3, dst: b.clone(), message };
            codec::encode(&h).unwrap()
        })
        .collect();
    let h = Header { src: v6, src_incarnation: 0, dst: c, message: Message::<Identity>::Ping(1) };
    out.push(codec::encode(&h).unwrap());
    out
}

fn seeds_swim_member() -> Vec<Vec<u8>> {
    use foca::{Member, State};
    [State::Alive, State::Suspect, State::Down]
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            codec::encode(&Member::new(ident(i as u64 + 1, 7000, Role::Manager), i as u16, s))
                .unwrap()
        })
        .collect()
}

fn sample_notices() -> Vec<Notice> {
    vec![
        Notice::Departed { id: NodeId(0x1234_5678_9abc_def0), generation: 4 },
        Notice::TokenRevoked { token_id: "3f2a9c1e".into(), expires_unix_secs: 1_790_000_000 },
        Notice::TokenIssued {
            token_id: "77aa01bc".into(),
            role: "manager".into(),
            expires_unix_secs: 1_790_000_000,
        },
        Notice::MemberRevoked { id: NodeId(42) },
    ]
}

fn seeds_notice() -> Vec<Vec<u8>> {
    sample_notices().iter().map(|n| codec::encode(n).unwrap()).collect()
}

// ---- network: API and join frames ----

fn read<T: serde::de::DeserializeOwned>(bytes: &[u8], limit: usize) -> bool {
    let mut reader = bytes;
    matches!(wire::read_frame::<T>(&mut reader, limit).now_or_never(), Some(Ok(_)))
}

fn frame<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    let written = wire::write_frame(&mut buf, value, usize::MAX).now_or_never();
    assert!(matches!(written, Some(Ok(()))), "seed frame encodes");
    buf
}

fn join_request(bytes: &[u8]) -> bool {
    read::<JoinRequest>(bytes, MAX_JOIN_FRAME_BYTES)
}

fn join_response(bytes: &[u8]) -> bool {
    read::<JoinResponse>(bytes, MAX_JOIN_FRAME_BYTES)
}

fn api_request(bytes: &[u8]) -> bool {
    read::<wire::Request>(bytes, MAX_API_FRAME_BYTES)
}

fn api_response(bytes: &[u8]) -> bool {
    read::<wire::Response>(bytes, MAX_STATUS_FRAME_BYTES)
}

fn seeds_join_request() -> Vec<Vec<u8>> {
    let req = |role: &str, addr: &str| JoinRequest {
        token: "jt1.0123456789abcdef.9f86d081884c7d659a2feaa0c55ad015".into(),
        node_id: 0x0123_4567_89ab_cdef,
        advertise: addr.parse().unwrap(),
        role: role.into(),
    };
    vec![frame(&req("manager", "127.0.0.1:7001")), frame(&req("agent", "[::1]:7002"))]
}

const PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ3Rp\n-----END CERTIFICATE-----\n";

fn seeds_join_response() -> Vec<Vec<u8>> {
    let admission = Admission {
        cluster_name: "prod".into(),
        ca_cert_pem: PEM.into(),
        ca_key_pem: String::new(),
        cluster_secret: vec![7; 32],
        cert_pem: PEM.into(),
        key_pem: PEM.into(),
        notices: sample_notices(),
    };
    vec![
        frame(&JoinResponse::Admitted(Box::new(admission))),
        frame(&JoinResponse::Refused {
            refusal: wire::Refusal::Revoked,
            reason: "token revoked".into(),
        }),
    ]
}

fn seeds_api_request() -> Vec<Vec<u8>> {
    use wire::Request;
    let deploy =
        Command::Deploy { name: "web".into(), command: "exec sleep infinity".into(), n: 2 };
    vec![
        frame(&Request::Members),
        frame(&Request::TokenCreate {
            role: "manager".into(),
            ttl_secs: 3600,
            reusable: false,
            machine: Some("0".into()),
        }),
        frame(&Request::TokenList(jujud::core::state::tokens::TokenQuery {
            role: Some("agent".into()),
            state: Some("active".into()),
            after: Some("3f2a9c1e".into()),
            limit: 100,
        })),
        frame(&Request::TokenRevoke {
            token_id: "3f2a9c1e".into(),
            wait_replicated: Some(2),
            timeout_ms: 10_000,
        }),
        frame(&Request::SyncNotices(sample_notices())),
        frame(&Request::Status),
        frame(&Request::Command {
            cmd: Command::AddMachine { n: 3 },
            wait_replicated: 1,
            timeout_ms: 5000,
        }),
        frame(&Request::AgentSession),
        frame(&Request::Write {
            request_id: 99,
            cmd: deploy,
            wait_replicated: 0,
            timeout_ms: 5000,
        }),
        frame(&Request::Write {
            request_id: 100,
            cmd: Command::SetConfig {
                app: "web".into(),
                pairs: vec![("port".into(), "8080".into())],
            },
            wait_replicated: 2,
            timeout_ms: 1000,
        }),
    ]
}

/// A replica holding a few machines, an application and its units.
fn sample_replica() -> Replica {
    let mut r = Replica::new(Actor { node: 1 << 48, generation: 1 });
    let cmds = [
        Command::AddMachine { n: 2 },
        Command::Deploy { name: "web".into(), command: "exec sleep infinity".into(), n: 2 },
        Command::SetConfig { app: "web".into(), pairs: vec![("port".into(), "8080".into())] },
    ];
    for (id, cmd) in cmds.iter().enumerate() {
        let (changes, _) = model::plan(&r, id as u64 + 1, cmd).expect("sample command plans");
        r.write(&changes);
    }
    r
}

fn seeds_api_response() -> Vec<Vec<u8>> {
    use wire::{MemberRow, Response, TokenRow};
    let row = MemberRow {
        id: "0123456789abcdef".into(),
        addr: "127.0.0.1:7001".parse().unwrap(),
        role: "manager".into(),
        generation: 4,
        state: "alive".into(),
        incarnation: 1,
    };
    let token = TokenRow {
        token_id: "3f2a9c1e".into(),
        role: "agent".into(),
        expires_unix_secs: 1_790_000_000,
        revoked: false,
        subject: Some("3".into()),
        reusable: false,
        used_by: vec!["0123456789abcdef".into()],
        state: "used".into(),
    };
    let status = Response::Status {
        answered_by: "0123456789abcdef".into(),
        status: model::view(&sample_replica()),
        members: vec![row.clone()],
        controller: Default::default(),
    };
    vec![
        frame(&Response::Members { answered_by: "0123456789abcdef".into(), members: vec![row] }),
        frame(&Response::Token { token: "jt1.secret".into(), row: token.clone() }),
        frame(&Response::Tokens { rows: vec![token], matched: 1, bytes_kept: 410 }),
        frame(&status),
        frame(&Response::Applied(model::Outcome {
            ids: vec!["0".into()],
            machines: vec!["0".into()],
            tokens: vec![],
        })),
        frame(&Response::Done),
        frame(&Response::Error("no such app".into())),
        frame(&Response::Unavailable("leaving".into())),
    ]
}

// ---- network: agent sessions and manager state ----

fn session_msg(bytes: &[u8]) -> bool {
    agent::decode_msg(bytes).is_ok()
}

fn seeds_session() -> Vec<Vec<u8>> {
    let unit = UnitSpec {
        unit: "web/0".into(),
        app: "web".into(),
        command: "exec sleep infinity".into(),
        config: BTreeMap::from([("port".to_string(), "8080".to_string())]),
    };
    vec![
        agent::encode_msg(&SessionMsg::Assign(Assignments {
            machine: "3".into(),
            units: vec![unit],
        })),
        agent::encode_msg(&SessionMsg::Report(Report {
            machine_status: Some("started".into()),
            address: Some("10.0.0.3".into()),
            units: vec![("web/0".into(), "active: serving on 8080".into())],
        })),
        agent::encode_msg(&SessionMsg::Refused { reason: "machine removed".into(), gone: true }),
    ]
}

fn state_msg(bytes: &[u8]) -> bool {
    sync::decode_msg(bytes).is_ok()
}

fn sample_ops() -> Vec<Stamped> {
    let mut r = Replica::new(Actor { node: 2 << 48, generation: 1 });
    let (changes, _) = model::plan(&r, 1, &Command::AddMachine { n: 1 }).unwrap();
    let mut ops = r.write(&changes);
    ops.truncate(3);
    ops
}

fn seeds_state_msg() -> Vec<Vec<u8>> {
    use jujud::core::state::replica::Delta;
    let r = sample_replica();
    let vv = r.version();
    let msgs = [
        StateMsg::Push(sample_ops()),
        StateMsg::Digest(vv.clone()),
        StateMsg::Have(vv),
        StateMsg::Delta(Delta::Ops(sample_ops())),
        StateMsg::Delta(Delta::Full(Box::new(r.snapshot_all()))),
        StateMsg::Probe { sent_ms: 1_000 },
        StateMsg::ProbeAck { sent_ms: 1_000 },
    ];
    msgs.iter().map(sync::encode_msg).collect()
}

// ---- disk: the state log and snapshots, the data dir ----

fn state_record(bytes: &[u8]) -> bool {
    store::decode_record(bytes, 1).is_ok()
}

fn seeds_state_record() -> Vec<Vec<u8>> {
    let cfg = bincode::config::standard();
    vec![
        bincode::serde::encode_to_vec(sample_ops(), cfg).unwrap(),
        bincode::serde::encode_to_vec(Vec::<Stamped>::new(), cfg).unwrap(),
    ]
}

fn snapshot(bytes: &[u8]) -> bool {
    store::decode_snapshot_payload(bytes, 1).is_ok()
}

fn seeds_snapshot() -> Vec<Vec<u8>> {
    let cfg = bincode::config::standard();
    let empty = Replica::new(Actor { node: 3 << 48, generation: 1 }).snapshot_all();
    vec![
        bincode::serde::encode_to_vec(sample_replica().snapshot_all(), cfg).unwrap(),
        bincode::serde::encode_to_vec(empty, cfg).unwrap(),
    ]
}

/// The owner every log and snapshot target's inputs are checked against.
fn log_owner() -> wal::LogIdentity {
    wal::LogIdentity {
        cluster: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        node: "0123456789abcdef".into(),
    }
}

/// A whole state-log segment as read from disk: header, records, torn-tail
/// rules (`wal::decode_log`), then each record's operations, as recovery does.
fn wal_segment(bytes: &[u8]) -> bool {
    match wal::decode_log(bytes, &log_owner(), 1, true) {
        Ok(scan) => scan.records.iter().all(|r| store::decode_record(r, 1).is_ok()),
        Err(_) => false,
    }
}

fn seeds_wal_segment() -> Vec<Vec<u8>> {
    let header = wal::format::encode_header(wal::format::SEGMENT_MAGIC, &log_owner(), 1);
    let cfg = bincode::config::standard();
    let mut one = header.clone();
    for payload in [
        bincode::serde::encode_to_vec(sample_ops(), cfg).unwrap(),
        bincode::serde::encode_to_vec(Vec::<Stamped>::new(), cfg).unwrap(),
    ] {
        one.extend_from_slice(&wal::format::record_header(&payload));
        one.extend_from_slice(&payload);
    }
    vec![header, one]
}

/// A whole snapshot file: header, length and checksum, then the payload.
fn snapshot_file(bytes: &[u8]) -> bool {
    store::decode_snapshot(bytes, &log_owner(), 1).is_ok()
}

fn seeds_snapshot_file() -> Vec<Vec<u8>> {
    let cfg = bincode::config::standard();
    let payload = bincode::serde::encode_to_vec(sample_replica().snapshot_all(), cfg).unwrap();
    vec![wal::format::encode_snapshot(&log_owner(), 1, &payload)]
}

fn notices_file(bytes: &[u8]) -> bool {
    wire::decode_notices(bytes).is_ok()
}

fn seeds_notices_file() -> Vec<Vec<u8>> {
    let cfg = bincode::config::standard();
    vec![
        bincode::serde::encode_to_vec(sample_notices(), cfg).unwrap(),
        bincode::serde::encode_to_vec(Vec::<Notice>::new(), cfg).unwrap(),
    ]
}

/// The scratch directory of file-based targets (on tmpfs when there is one).
pub fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("jujud-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

/// A data dir with valid credentials, whose `node.json` each input replaces.
fn node_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("datadir");
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert) = node_creds();
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.join("ca.key"), &ca.key_pem).unwrap();
        std::fs::write(dir.join("node.pem"), &cert.cert_pem).unwrap();
        std::fs::write(dir.join("node.key"), &cert.key_pem).unwrap();
        let hex32 = "ab".repeat(32);
        std::fs::write(dir.join("cluster.secret"), &hex32).unwrap();
        std::fs::write(dir.join("reset.key"), &hex32).unwrap();
        dir
    })
}

/// The node id the node_json target's data dir and seeds name.
const NODE_ID: u64 = 0x0123_4567_89ab_cdef;

/// A real CA and manager certificate for the node_json target's data dir:
/// `DataDir::open` checks node.json against them (credcheck), so a seed
/// names this CA's fingerprint and `NODE_ID`.
fn node_creds() -> &'static (jujud::pki::ClusterCa, jujud::pki::IssuedCert) {
    static CREDS: OnceLock<(jujud::pki::ClusterCa, jujud::pki::IssuedCert)> = OnceLock::new();
    CREDS.get_or_init(|| {
        let ca = jujud::pki::ClusterCa::generate("fuzz").unwrap();
        let cert = ca.issue(jujud::pki::CertRole::Manager, NODE_ID, 30).unwrap();
        (ca, cert)
    })
}

/// What node_json seeds carry instead of a CA fingerprint: the target's CA
/// is made afresh in every run, so its fingerprint goes in at decode time.
const FINGERPRINT_PLACEHOLDER: &str =
    "cafe000000000000000000000000000000000000000000000000000000000000";

fn node_json(bytes: &[u8]) -> bool {
    let dir = node_dir();
    let text = String::from_utf8_lossy(bytes);
    let bytes: Vec<u8> = if text.contains(FINGERPRINT_PLACEHOLDER) {
        text.replace(FINGERPRINT_PLACEHOLDER, &node_creds().0.fingerprint()).into_bytes()
    } else {
        bytes.to_vec()
    };
    std::fs::write(dir.join("node.json"), &bytes).expect("scratch write");
    matches!(DataDir::open(dir), Ok((_, Some(_))))
}

fn seeds_node_json() -> Vec<Vec<u8>> {
    let node = |role: &str, machine: Option<&str>| NodeFile {
        format: datadir::FORMAT_VERSION,
        cluster_name: "prod".into(),
        ca_fingerprint: FINGERPRINT_PLACEHOLDER.into(),
        node_id: NodeId(NODE_ID).to_string(),
        role: role.into(),
        generation: 7,
        advertise: "127.0.0.1:7001".parse().unwrap(),
        seeds: vec!["127.0.0.2:7001".parse().unwrap(), "[::1]:7003".parse().unwrap()],
        machine: machine.map(str::to_string),
        state_log: true,
        state_writer: Some(3),
    };
    vec![serde_json::to_vec_pretty(&node("manager", None)).unwrap()]
}

// ---- files a user or an agent edits ----

fn agent_conf(bytes: &[u8]) -> bool {
    let path = scratch().join("agent.conf");
    std::fs::write(&path, bytes).expect("scratch write");
    AgentConf::load(&path).is_ok()
}

fn seeds_agent_conf() -> Vec<Vec<u8>> {
    let conf =
        AgentConf::new(vec!["127.0.0.1:7001".parse().unwrap(), "[::1]:7002".parse().unwrap()]);
    vec![serde_json::to_vec_pretty(&conf).unwrap(), serde_json::to_vec(&conf).unwrap()]
}

fn client_yaml(bytes: &[u8]) -> bool {
    let path = scratch().join("client.yaml");
    std::fs::write(&path, bytes).expect("scratch write");
    ClientFile::load(&path).is_ok()
}

fn seeds_client_yaml() -> Vec<Vec<u8>> {
    let f = ClientFile {
        cluster: "prod".into(),
        endpoints: vec!["127.0.0.1:7001".parse().unwrap(), "[::1]:7002".parse().unwrap()],
        ca_cert: PEM.into(),
        client_cert: PEM.into(),
        client_key: PEM.into(),
    };
    vec![f.to_yaml().into_bytes()]
}
