//! The configuration of `jujud peer`: its flags ([`PeerArgs`]), its TOML
//! file, its `JUJUD_*` environment variables, and how they merge into one
//! checked [`PeerConfig`].
//!
//! Precedence, field by field: command-line flag > TOML file (`--config`) >
//! environment variable `JUJUD_<FIELD>` > default (for timing fields: the
//! preset, itself chosen with the same precedence, default `lan`).
//!
//! Owns the names users type (flags, keys, variables) and the errors that
//! name them back. Must never read the process environment itself (the
//! caller passes an env source, so tests never mutate process state), never
//! panic on user input, and never decide anything at run time: it produces
//! a value and stops.

use std::fmt;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::core::Timing;
use crate::core::timing::TimingError;

pub mod agent;
pub mod bootstrap;
pub mod token;
use crate::logging::LogFormat;
pub use agent::AgentArgs;
pub use bootstrap::{BootstrapArgs, BootstrapConfig};

/// Where a peer listens when no address is configured.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7070));
/// Environment variables are this prefix plus the key in upper snake case.
pub const ENV_PREFIX: &str = "JUJUD_";
/// Longest config file read; a config is a few hundred bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;
/// Most seed addresses accepted in `join` (a control plane has at most 7
/// managers; the slack is for addresses listed under several names).
pub const MAX_JOIN_ADDRS: usize = 64;

/// A source of environment variables: `JUJUD_LISTEN` -> its value.
pub type EnvSource<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for the binary: `resolve(&args, &process_env)`.
/// Values that are not valid UTF-8 count as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A named set of timing defaults (see [`Timing::lan`] and [`Timing::wan`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Managers on one LAN: detection in about 1.5 s.
    #[default]
    Lan,
    /// Managers spread over a WAN: slower, loss-tolerant.
    Wan,
}

impl Preset {
    /// The name `--preset` takes.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Lan => "lan",
            Preset::Wan => "wan",
        }
    }

    /// The preset's timing, before any override.
    pub fn timing(self) -> Timing {
        match self {
            Preset::Lan => Timing::lan(),
            Preset::Wan => Timing::wan(),
        }
    }
}

impl FromStr for Preset {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "lan" => Ok(Preset::Lan),
            "wan" => Ok(Preset::Wan),
            _ => Err(()),
        }
    }
}

/// Defines [`TimingArgs`] (one optional flag and one optional `[timing]`
/// key per [`Timing`] field) and `merge_timing`, from a single list, so the
/// three cannot drift apart: `merge_timing` builds a `Timing` literal with
/// no `..`, so a new `Timing` field fails to compile until listed here.
macro_rules! timing_args {
    ($( $(#[$doc:meta])* $field:ident: $ty:ty, )*) => {
        /// Overrides of single timing fields, as flags (`--probe-period-ms`)
        /// and as keys of the config file's `[timing]` table.
        #[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[command(next_help_heading = "Timing (each overrides the preset)")]
        pub struct TimingArgs {
            $( $(#[$doc])* #[arg(long, value_name = "N")] pub $field: Option<$ty>, )*
        }

        /// Every timing field from flag, file or env, else from `preset`.
        fn merge_timing(
            flags: &TimingArgs,
            file: &TimingArgs,
            env: EnvSource<'_>,
            preset: Timing,
        ) -> Result<Timing, ConfigError> {
            Ok(Timing {
                $( $field: pick(flags.$field, file.$field, env, stringify!($field))?
                    .unwrap_or(preset.$field), )*
            })
        }
    };
}

timing_args! {
    /// Probe period (100..=60000 ms; well above the worst process stall).
    probe_period_ms: u64,
    /// Wait for a direct ack (10..=30000 ms, at most half the probe period).
    probe_rtt_ms: u64,
    /// Time a suspect has to refute before it is down (100..=600000 ms).
    suspect_to_down_ms: u64,
    /// Period of gossip without a probe (10..=10000 ms).
    gossip_period_ms: u64,
    /// Members each periodic gossip goes to (1..=16).
    gossip_fanout: usize,
    /// Members asked to probe indirectly (1..=16).
    indirect_probes: usize,
    /// Times each update is piggybacked (1..=32).
    max_transmissions: u8,
    /// Period of asking a live peer for its member list (1000..=600000 ms).
    announce_period_ms: u64,
    /// First wait before re-announcing to seeds (50..=60000 ms).
    rejoin_backoff_min_ms: u64,
    /// Longest wait between re-announcements (100..=600000 ms).
    rejoin_backoff_max_ms: u64,
    /// How long a down member is remembered (60..=604800 s).
    remove_down_after_secs: u64,
    /// Largest SWIM packet (512..=1150 bytes).
    max_packet_bytes: usize,
    /// Largest local-health score; 0 turns it off (0..=16).
    health_max: u32,
    /// Timer lateness that counts as a local stall (10..=10000 ms).
    late_timer_ms: u64,
    /// Longest suspicion, in multiples of suspect_to_down_ms, while no
    /// other member confirms it (1..=16; 1 turns dynamic suspicion off).
    suspicion_max_mult: u32,
    /// Confirmations that bring a suspicion down to suspect_to_down_ms
    /// (0..=8; 0 turns dynamic suspicion off).
    suspicion_confirmations: u32,
}

/// The flags of `jujud peer`. Every field is optional here: it may also
/// come from the config file or the environment; [`resolve`] merges them.
#[derive(clap::Args, Clone, Default, PartialEq, Eq)]
pub struct PeerArgs {
    /// Directory for this node's identity, certificates and state
    /// (required; may also come from the config file or JUJUD_DATA_DIR).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on for QUIC [default: 127.0.0.1:7070].
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address other members should dial [default: the listen address].
    #[arg(long, value_name = "IP:PORT")]
    pub advertise: Option<SocketAddr>,
    /// Members to join through, comma separated or repeated.
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    pub join: Vec<SocketAddr>,
    /// Refused: a token on the command line is visible to every local
    /// user. Kept (hidden) only to say so clearly.
    #[arg(long, value_name = "TOKEN", hide = true)]
    pub token: Option<String>,
    /// Read the join token from FILE (mode 0600 or stricter), or from
    /// standard input with `-`. Or set JUJUD_TOKEN, or `token` in --config.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// TOML config file (its values yield to flags, beat env variables).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Timing preset that the timing flags override [default: lan].
    #[arg(long, value_name = "NAME")]
    pub preset: Option<Preset>,
    /// Log line format [default: human].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Write the log to this file instead of stderr, rotated past 16 MiB
    /// (two older files kept: FILE.1, FILE.2) [default: stderr].
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP on this address [default: off].
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the web dashboard over HTTPS on this address [default: off;
    /// the local provider turns it on for its managers].
    #[arg(long, value_name = "IP:PORT")]
    pub dashboard_listen: Option<SocketAddr>,
    /// Single timing fields, overriding the preset.
    #[command(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

impl fmt::Debug for PeerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerArgs")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("join", &self.join)
            .field("token", &redacted(&self.token))
            .field("token_file", &self.token_file)
            .field("config", &self.config)
            .field("preset", &self.preset)
            .field("log_format", &self.log_format)
            .field("log_file", &self.log_file)
            .field("metrics_listen", &self.metrics_listen)
            .field("dashboard_listen", &self.dashboard_listen)
            .field("timing", &self.timing)
            .finish()
    }
}

/// The TOML file: the same keys as the flags, in snake case, and a
/// `[timing]` table. Unknown keys are refused, so a typo never silently
/// leaves a default in place.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    join: Option<Vec<SocketAddr>>,
    token: Option<String>,
    preset: Option<Preset>,
    log_format: Option<LogFormat>,
    log_file: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    dashboard_listen: Option<SocketAddr>,
    #[serde(default)]
    timing: TimingArgs,
}

/// Everything `jujud peer` needs, merged and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Where identity, certificates and state live.
    pub data_dir: PathBuf,
    /// Where QUIC listens. Port 0 is allowed (the OS picks one).
    pub listen: SocketAddr,
    /// What other members dial; never an unspecified IP. If its port is 0
    /// (copied from a port-0 `listen`), the runtime substitutes the bound
    /// port.
    pub advertise: SocketAddr,
    /// Seeds to join through, in order, without duplicates. Empty: start
    /// alone (the first manager).
    pub join: Vec<SocketAddr>,
    /// Join token, if any. Never printed by `Debug`.
    pub token: Option<String>,
    /// The preset the timing started from (instances this manager starts
    /// through a provider run with it too).
    pub preset: Preset,
    /// The preset with every override applied; already validated.
    pub timing: Timing,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where they are written (rotated by size); stderr when `None`.
    pub log_file: Option<PathBuf>,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve the web dashboard (HTTPS), if anywhere.
    pub dashboard_listen: Option<SocketAddr>,
    /// Set by `juju bootstrap` for the first manager.
    pub bootstrap: Option<BootstrapConfig>,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("join", &self.join)
            .field("token", &redacted(&self.token))
            .field("timing", &self.timing)
            .field("log_format", &self.log_format)
            .field("log_file", &self.log_file)
            .field("metrics_listen", &self.metrics_listen)
            .field("dashboard_listen", &self.dashboard_listen)
            .finish()
    }
}

fn redacted(token: &Option<String>) -> Option<&'static str> {
    token.as_ref().map(|_| "<redacted>")
}

/// Why a configuration was refused; every message names the field and,
/// where there is one, the source it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read config file {}: {error}", path.display())]
    ReadFile { path: PathBuf, error: std::io::Error },
    /// The config file is larger than [`MAX_CONFIG_FILE_BYTES`].
    #[error("config file {} is larger than {MAX_CONFIG_FILE_BYTES} bytes", path.display())]
    FileTooLarge { path: PathBuf },
    /// The config file is not valid TOML, has an unknown key or a value of
    /// the wrong type; the message names the line and the key.
    #[error("config file {}: {message}", path.display())]
    ParseFile { path: PathBuf, message: String },
    /// A value that does not parse, or is empty where it must not be.
    #[error("invalid value {value:?} for {field} from {origin}: expected {expected}")]
    InvalidValue {
        field: &'static str,
        value: String,
        /// e.g. `env JUJUD_PROBE_PERIOD_MS`, `config file x.toml: key token`.
        origin: String,
        expected: &'static str,
    },
    /// No data directory from any source.
    #[error(
        "no data directory: pass --data-dir DIR, set data_dir in the config file, \
         or set JUJUD_DATA_DIR"
    )]
    MissingDataDir,
    /// The advertised address (by default the listen address) is 0.0.0.0
    /// or `::`, which other members cannot dial.
    #[error(
        "advertise address {addr} is unspecified, so other members cannot dial it: \
         pass --advertise IP:PORT (or set advertise in the config file, or JUJUD_ADVERTISE)"
    )]
    UnspecifiedAdvertise { addr: SocketAddr },
    /// More than [`MAX_JOIN_ADDRS`] join addresses.
    #[error("join lists {count} addresses; at most {MAX_JOIN_ADDRS} are accepted")]
    TooManyJoinAddrs { count: usize },
    /// The merged timing breaks a rule; the message names the field.
    #[error(transparent)]
    Timing(#[from] TimingError),
    /// `--token` was passed, or a token file is unreadable or too open.
    #[error(transparent)]
    Token(#[from] token::TokenError),
}

/// Merges flags, the config file named by `--config` (if any), the
/// environment (read only through `env`) and the timing preset, then checks
/// the result.
pub fn resolve(args: &PeerArgs, env: EnvSource<'_>) -> Result<PeerConfig, ConfigError> {
    let file = match &args.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let data_dir = pick(args.data_dir.clone(), file.data_dir, env, "data_dir")?
        .ok_or(ConfigError::MissingDataDir)?;
    let preset = pick(args.preset, file.preset, env, "preset")?.unwrap_or_default();
    let timing = merge_timing(&args.timing, &file.timing, env, preset.timing())?;
    timing.validate()?;
    let listen = pick(args.listen, file.listen, env, "listen")?.unwrap_or(DEFAULT_LISTEN);
    let advertise = pick(args.advertise, file.advertise, env, "advertise")?.unwrap_or(listen);
    if advertise.ip().is_unspecified() {
        return Err(ConfigError::UnspecifiedAdvertise { addr: advertise });
    }
    let flag_join = (!args.join.is_empty()).then(|| args.join.clone());
    let join = match flag_join.or(file.join) {
        Some(join) => join,
        None => env_join(env)?.unwrap_or_default(),
    };
    Ok(PeerConfig {
        data_dir,
        preset,
        listen,
        advertise,
        join: dedup_join(join)?,
        token: resolve_token(args, file.token, env)?,
        timing,
        log_format: pick(args.log_format, file.log_format, env, "log_format")?.unwrap_or_default(),
        log_file: pick(args.log_file.clone(), file.log_file, env, "log_file")?,
        metrics_listen: pick(args.metrics_listen, file.metrics_listen, env, "metrics_listen")?,
        dashboard_listen: pick(
            args.dashboard_listen,
            file.dashboard_listen,
            env,
            "dashboard_listen",
        )?,
        bootstrap: args.bootstrap.resolve()?,
    })
}

/// The token: `--token-file` (a file or standard input), else the config
/// file's, else `JUJUD_TOKEN`. `--token` itself is refused (see [`token`]).
fn resolve_token(
    args: &PeerArgs,
    file: Option<String>,
    env: EnvSource<'_>,
) -> Result<Option<String>, ConfigError> {
    if args.token.is_some() {
        return Err(token::TokenError::OnCommandLine.into());
    }
    match &args.token_file {
        Some(path) => Ok(Some(token::read_token_file(path)?)),
        None => pick(None, file, env, "token"),
    }
}

/// The flag's value, else the file's, else the environment's. The
/// environment is read only when needed, so a stale variable that a flag
/// overrides is never an error.
fn pick<T: FromEnv>(
    flag: Option<T>,
    file: Option<T>,
    env: EnvSource<'_>,
    field: &'static str,
) -> Result<Option<T>, ConfigError> {
    match flag.or(file) {
        Some(value) => Ok(Some(value)),
        None => env_value(env, field),
    }
}

/// The name of the variable for a key: `probe_period_ms` ->
/// `JUJUD_PROBE_PERIOD_MS`.
pub fn env_var_name(field: &str) -> String {
    format!("{ENV_PREFIX}{}", field.to_ascii_uppercase())
}

/// Reads one variable. Surrounding blanks are ignored and an empty value
/// counts as unset (as `KEY=` in a systemd environment file means).
fn raw_env(env: EnvSource<'_>, field: &str) -> Option<(String, String)> {
    let name = env_var_name(field);
    let value = env(&name)?.trim().to_owned();
    (!value.is_empty()).then_some((name, value))
}

fn env_value<T: FromEnv>(
    env: EnvSource<'_>,
    field: &'static str,
) -> Result<Option<T>, ConfigError> {
    let Some((name, value)) = raw_env(env, field) else {
        return Ok(None);
    };
    match T::from_env(&value) {
        Some(parsed) => Ok(Some(parsed)),
        None => Err(ConfigError::InvalidValue {
            field,
            value,
            origin: format!("env {name}"),
            expected: T::EXPECTED,
        }),
    }
}

/// `JUJUD_JOIN=a,b`: comma separated, blanks and empty items ignored.
fn env_join(env: EnvSource<'_>) -> Result<Option<Vec<SocketAddr>>, ConfigError> {
    let Some((name, value)) = raw_env(env, "join") else {
        return Ok(None);
    };
    let mut join = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        join.push(item.parse().map_err(|_| ConfigError::InvalidValue {
            field: "join",
            value: item.to_owned(),
            origin: format!("env {name}"),
            expected: <SocketAddr as FromEnv>::EXPECTED,
        })?);
    }
    Ok(Some(join))
}

/// Drops repeated seeds (keeping the first) and enforces the limit.
fn dedup_join(join: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, ConfigError> {
    if join.len() > MAX_JOIN_ADDRS {
        return Err(ConfigError::TooManyJoinAddrs { count: join.len() });
    }
    let mut unique = Vec::with_capacity(join.len());
    for addr in join {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    Ok(unique)
}

/// A value that can come from an environment variable, and what to tell
/// the user when it does not parse.
trait FromEnv: Sized {
    const EXPECTED: &'static str;
    fn from_env(text: &str) -> Option<Self>;
}

macro_rules! from_env_via_from_str {
    ($($ty:ty => $expected:literal,)*) => {$(
        impl FromEnv for $ty {
            const EXPECTED: &'static str = $expected;
            fn from_env(text: &str) -> Option<Self> {
                text.parse().ok()
            }
        }
    )*};
}

from_env_via_from_str! {
    u64 => "an integer",
    usize => "an integer",
    u32 => "an integer",
    u8 => "an integer from 0 to 255",
    SocketAddr => "an address IP:PORT",
    PathBuf => "a path",
    String => "a non-empty string",
    Preset => "lan or wan",
    LogFormat => "human or json",
}

/// Reads and parses the config file. A relative `data_dir` in it is taken
/// relative to the file's directory, so the file means the same thing
/// whatever the working directory.
fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = read_bounded(path)?;
    let mut file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let empty = |field: &'static str, expected: &'static str| ConfigError::InvalidValue {
        field,
        value: String::new(),
        origin: format!("config file {}: key {field}", path.display()),
        expected,
    };
    if file.token.as_deref() == Some("") {
        return Err(empty("token", "a non-empty string"));
    }
    if file.token.is_some() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|error| ConfigError::ReadFile { path: path.to_owned(), error })?
            .permissions()
            .mode();
        token::check_private(path, mode)?;
    }
    if let Some(dir) = &file.data_dir {
        if dir.as_os_str().is_empty() {
            return Err(empty("data_dir", "a path"));
        }
        if dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new(""));
            file.data_dir = Some(base.join(dir));
        }
    }
    Ok(file)
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let read_error = |error| ConfigError::ReadFile { path: path.to_owned(), error };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1).read_to_string(&mut text).map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::FileTooLarge { path: path.to_owned() });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeMap;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        peer: PeerArgs,
    }

    fn flags(args: &[&str]) -> PeerArgs {
        Cli::try_parse_from(std::iter::once("jujud").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
            .peer
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
        let path = dir.path().join("jujud.toml");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let args = flags(&["--join", "10.0.0.1:1,10.0.0.2:2", "--join", "10.0.0.3:3"]);
        assert_eq!(args.join.len(), 3);
        let err =
            resolve(&flags(&["--data-dir", "/d", "--token", "jjd1.secret"]), &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Token(token::TokenError::OnCommandLine)), "{err:?}");
        assert!(
            err.to_string().contains("--token-file") && !err.to_string().contains("secret"),
            "{err}"
        );
        assert!(Cli::try_parse_from(["jujud", "--preset", "moon"]).is_err());
    }

    #[test]
    fn only_data_dir_is_needed_and_defaults_apply() {
        let config = resolve(&flags(&["--data-dir", "/var/lib/jujud"]), &no_env).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/jujud"));
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(config.advertise, DEFAULT_LISTEN);
        assert_eq!(config.timing, Timing::lan());
        assert_eq!(config.log_format, LogFormat::Human);
        assert!(
            config.join.is_empty() && config.token.is_none() && config.metrics_listen.is_none()
        );
    }

    #[test]
    fn flag_beats_file_beats_env_beats_preset_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            &dir,
            "listen = \"127.0.0.2:2\"\njoin = [\"10.0.0.9:9\"]\n\
             [timing]\nprobe_period_ms = 800\ngossip_period_ms = 150\n",
        );
        let env = env_of(&[
            ("JUJUD_PROBE_PERIOD_MS", "900"),
            ("JUJUD_GOSSIP_PERIOD_MS", "250"),
            ("JUJUD_ANNOUNCE_PERIOD_MS", "7000"),
            ("JUJUD_LISTEN", "127.0.0.3:3"),
            ("JUJUD_DATA_DIR", "/env/dir"),
            ("JUJUD_JOIN", "10.0.0.8:8, 10.0.0.7:7,"),
            ("JUJUD_LOG_FORMAT", "json"),
            ("JUJUD_TOKEN", "env-token"),
        ]);
        let args =
            flags(&["--config", &path, "--probe-period-ms", "700", "--listen", "127.0.0.1:1"]);
        let config = resolve(&args, &env).unwrap();
        assert_eq!(config.timing.probe_period_ms, 700, "flag beats file and env");
        assert_eq!(config.timing.gossip_period_ms, 150, "file beats env");
        assert_eq!(config.timing.announce_period_ms, 7000, "env beats preset");
        assert_eq!(config.timing.suspect_to_down_ms, Timing::lan().suspect_to_down_ms);
        assert_eq!(config.listen, "127.0.0.1:1".parse().unwrap());
        assert_eq!(config.join, vec!["10.0.0.9:9".parse().unwrap()], "file beats env");
        assert_eq!(config.data_dir, PathBuf::from("/env/dir"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.token.as_deref(), Some("env-token"));
        assert!(!format!("{config:?}").contains("env-token"), "Debug must redact the token");

        let config = resolve(&flags(&["--data-dir", "/d"]), &env).unwrap();
        assert_eq!(config.listen, "127.0.0.3:3".parse().unwrap(), "env beats default");
        let seeds: Vec<SocketAddr> =
            vec!["10.0.0.8:8".parse().unwrap(), "10.0.0.7:7".parse().unwrap()];
        assert_eq!(config.join, seeds);
        assert_eq!(config.data_dir, PathBuf::from("/d"));
    }

    #[test]
    fn preset_comes_from_file_and_yields_to_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            write_config(&dir, "data_dir = \"/d\"\npreset = \"wan\"\n[timing]\nhealth_max = 0\n");
        let env = env_of(&[("JUJUD_PRESET", "lan")]);
        let config = resolve(&flags(&["--config", &path]), &env).unwrap();
        assert_eq!(config.timing, Timing { health_max: 0, ..Timing::wan() });
        let config = resolve(&flags(&["--config", &path, "--preset", "lan"]), &env).unwrap();
        assert_eq!(config.timing, Timing { health_max: 0, ..Timing::lan() });
        let env = env_of(&[("JUJUD_PRESET", "wan"), ("JUJUD_DATA_DIR", "/d")]);
        assert_eq!(resolve(&PeerArgs::default(), &env).unwrap().timing, Timing::wan());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (text, key) in [
            ("data_dir = \"/d\"\nlisten_addr = \"127.0.0.1:1\"\n", "listen_addr"),
            ("data_dir = \"/d\"\n[timing]\nprobe_period = 500\n", "probe_period"),
        ] {
            let path = write_config(&dir, text);
            let err = resolve(&flags(&["--config", &path]), &no_env).unwrap_err();
            assert!(matches!(err, ConfigError::ParseFile { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains(key) && message.contains("jujud.toml"), "{message}");
        }
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let env = env_of(&[("JUJUD_DATA_DIR", "/d"), ("JUJUD_PROBE_PERIOD_MS", "abc")]);
        let message = resolve(&PeerArgs::default(), &env).unwrap_err().to_string();
        assert_eq!(
            message,
            "invalid value \"abc\" for probe_period_ms from env JUJUD_PROBE_PERIOD_MS: \
             expected an integer"
        );
        // Overridden by a flag, the bad variable is never read.
        assert!(resolve(&flags(&["--probe-period-ms", "600"]), &env).is_ok());
        let env = env_of(&[("JUJUD_DATA_DIR", "/d"), ("JUJUD_JOIN", "10.0.0.1:1,nope")]);
        let message = resolve(&PeerArgs::default(), &env).unwrap_err().to_string();
        assert!(message.contains("\"nope\"") && message.contains("JUJUD_JOIN"), "{message}");
        let env = env_of(&[("JUJUD_DATA_DIR", "/d"), ("JUJUD_MAX_TRANSMISSIONS", "300")]);
        let message = resolve(&PeerArgs::default(), &env).unwrap_err().to_string();
        assert!(message.contains("JUJUD_MAX_TRANSMISSIONS") && message.contains("0 to 255"));
        let env = env_of(&[("JUJUD_DATA_DIR", "/d"), ("JUJUD_TOKEN", "  ")]);
        assert_eq!(resolve(&PeerArgs::default(), &env).unwrap().token, None);
    }

    #[test]
    fn out_of_range_timing_names_the_field() {
        let args = flags(&["--data-dir", "/d", "--probe-period-ms", "5"]);
        match resolve(&args, &no_env).unwrap_err() {
            ConfigError::Timing(e) => assert_eq!(e.field, "probe_period_ms"),
            other => panic!("{other:?}"),
        }
        let env = env_of(&[("JUJUD_DATA_DIR", "/d"), ("JUJUD_PROBE_RTT_MS", "400")]);
        let err = resolve(&PeerArgs::default(), &env).unwrap_err();
        assert!(err.to_string().contains("probe_rtt_ms"), "{err}");
    }

    #[test]
    fn missing_file_and_missing_data_dir_are_clear() {
        let args = flags(&["--config", "/nonexistent/jujud.toml"]);
        let message = resolve(&args, &no_env).unwrap_err().to_string();
        assert!(
            message.starts_with("cannot read config file /nonexistent/jujud.toml"),
            "{message}"
        );
        let err = resolve(&PeerArgs::default(), &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::MissingDataDir));
        assert!(err.to_string().contains("--data-dir"));
    }

    #[test]
    fn unspecified_advertise_is_refused() {
        let args = flags(&["--data-dir", "/d", "--listen", "0.0.0.0:7070"]);
        let err = resolve(&args, &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::UnspecifiedAdvertise { .. }));
        assert!(err.to_string().contains("advertise"));
        let args = flags(&[
            "--data-dir",
            "/d",
            "--listen",
            "0.0.0.0:7070",
            "--advertise",
            "10.1.2.3:7070",
        ]);
        let config = resolve(&args, &no_env).unwrap();
        assert_eq!(config.advertise, "10.1.2.3:7070".parse().unwrap());
        let args = flags(&["--data-dir", "/d", "--listen", "127.0.0.1:0"]);
        assert_eq!(resolve(&args, &no_env).unwrap().advertise.port(), 0, "port 0 is allowed");
    }

    #[test]
    fn file_values_are_checked_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, "data_dir = \"state\"\ntoken = \"\"\n");
        let message = resolve(&flags(&["--config", &path]), &no_env).unwrap_err().to_string();
        assert!(message.contains("key token"), "{message}");
        let path =
            write_config(&dir, "data_dir = \"state\"\njoin = [\"10.0.0.1:1\", \"10.0.0.1:1\"]\n");
        let config = resolve(&flags(&["--config", &path]), &no_env).unwrap();
        assert_eq!(config.data_dir, dir.path().join("state"), "relative to the file");
        assert_eq!(config.join.len(), 1, "duplicates dropped");
        let path = write_config(&dir, "data_dir = \"/d\"\n[timing]\nprobe_period_ms = \"fast\"\n");
        let message = resolve(&flags(&["--config", &path]), &no_env).unwrap_err().to_string();
        assert!(message.contains("probe_period_ms"), "{message}");
        let path = write_config(&dir, &"#".repeat(MAX_CONFIG_FILE_BYTES as usize + 1));
        let err = resolve(&flags(&["--config", &path]), &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::FileTooLarge { .. }), "{err:?}");
    }

    #[test]
    fn a_token_comes_from_a_private_file_before_config_and_env() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(&dir, "data_dir = \"/d\"\ntoken = \"file-token\"\n");
        let env = env_of(&[("JUJUD_TOKEN", "env-token")]);
        let err = resolve(&flags(&["--config", &path]), &env).unwrap_err();
        assert!(
            matches!(err, ConfigError::Token(token::TokenError::TooOpen { .. })),
            "a 0644 config with a token: {err:?}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            resolve(&flags(&["--config", &path]), &env).unwrap().token.as_deref(),
            Some("file-token")
        );
        let tfile = dir.path().join("t");
        std::fs::write(&tfile, "flag-token\n").unwrap();
        std::fs::set_permissions(&tfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let args = flags(&["--config", &path, "--token-file", tfile.to_str().unwrap()]);
        assert_eq!(resolve(&args, &env).unwrap().token.as_deref(), Some("flag-token"));
    }

    #[test]
    fn timing_table_covers_every_timing_field() {
        let text = toml::to_string(&Timing::wan()).unwrap();
        let table: TimingArgs = toml::from_str(&text).unwrap();
        let merged = merge_timing(&table, &TimingArgs::default(), &no_env, Timing::lan()).unwrap();
        assert_eq!(merged, Timing::wan());
    }
}
