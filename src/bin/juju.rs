//! `juju`: the client. It only parses arguments, calls the library's client
//! and prints the answer as a table or as JSON.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use jujud::core::state::model::Command as StateCommand;
use jujud::core::state::tokens::TokenQuery;
use jujud::runtime::bootstrap;
use jujud::runtime::client::{self, ClientError};
use jujud::runtime::clientfile::ClientFile;
use jujud::runtime::datadir::write_atomic;
use jujud::runtime::idprefix;
use jujud::runtime::render;
use jujud::runtime::sshenv;
use jujud::runtime::wire::{MemberRow, Request, Response};

#[derive(Parser)]
#[command(name = "juju", version, about = "Client for a jujud control plane")]
struct Cli {
    /// The client file written by the first manager (DIR/client.yaml).
    #[arg(long, env = "JUJU_CLIENT_CONFIG", global = true)]
    client_config: Option<PathBuf>,
    /// Ask exactly this manager, and fail if it cannot answer.
    #[arg(long, global = true)]
    endpoint: Option<SocketAddr>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", global = true)]
    format: Format,
    /// For changes: answer only once this many other managers hold it.
    #[arg(long, default_value_t = 0, global = true)]
    wait_replicated: u32,
    /// For changes: how long to wait for durability and replication.
    #[arg(long, default_value_t = 10_000, global = true)]
    timeout_ms: u64,
    /// Where add-machine, deploy and add-unit write each new machine's
    /// agent token (DIR/MACHINE.token, mode 0600) when no provider starts
    /// it [default: show each token once, on stderr, on a line of its own].
    #[arg(long, value_name = "DIR", global = true)]
    token_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List the members as the answering manager sees them.
    Members,
    /// Manage join tokens.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Show managers, machines, applications and units.
    Status,
    /// Add machines; or, with `ssh:[user@]HOST`, enlist that host of the
    /// ssh provider's pool as a machine (its agent is installed there).
    AddMachine {
        #[arg(short = 'n', default_value_t = 1)]
        n: u32,
        /// `ssh:[user@]HOST`: a host of the pool (see add-host).
        placement: Option<String>,
    },
    /// Add the hosts of a cloud file to the ssh provider's pool.
    AddHost {
        /// A cloud file (YAML, or TOML by extension) listing the hosts.
        file: PathBuf,
        /// The local root whose pool copy `destroy` uses [default: as bootstrap].
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Take a host out of the ssh provider's pool (refused while a machine runs there).
    RemoveHost { address: String },
    /// Remove a machine that hosts no units.
    RemoveMachine { id: String },
    /// Deploy an application: its units run COMMAND, each on a new machine,
    /// or one on each machine named by --to.
    Deploy {
        name: String,
        #[arg(long)]
        command: String,
        #[arg(short = 'n', default_value_t = 1, conflicts_with = "to")]
        n: u32,
        /// Existing machines to put the units on (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        to: Vec<String>,
    },
    /// Add units to an application, each on a new machine, or one on each
    /// machine named by --to.
    AddUnit {
        name: String,
        #[arg(short = 'n', default_value_t = 1, conflicts_with = "to")]
        n: u32,
        /// Existing machines to put the units on (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        to: Vec<String>,
    },
    /// Remove a unit (APP/ID).
    RemoveUnit { unit: String },
    /// Show an application's config, or set key=value pairs.
    Config { name: String, settings: Vec<String> },
    /// Start a new environment: the first manager, and with --ha N, N
    /// managers from the start; on the local provider, or with --cloud
    /// FILE on the ssh provider over the hosts that file lists.
    Bootstrap {
        /// A cloud file (YAML, or TOML by extension) of existing hosts
        /// reached over SSH (see docs/OPERATIONS.md).
        #[arg(long, value_name = "FILE")]
        cloud: Option<PathBuf>,
        /// Managers to run from the start (1 to 7; odd numbers survive the
        /// loss of a minority).
        #[arg(long, default_value_t = 1)]
        ha: u32,
        /// The provider root [default: $JUJUD_ROOT, else ~/.local/share/jujud/local].
        #[arg(long)]
        root: Option<PathBuf>,
        /// The failure detector's timing preset of every manager and agent
        /// of the environment: `lan`, or `wan` for links with long or
        /// variable delays (see docs/OPERATIONS.md, "Timing").
        #[arg(long, default_value = "lan", value_parser = ["lan", "wan"])]
        preset: String,
    },
    /// Set the desired number of managers, and wait until they are alive.
    EnableHa {
        #[arg(short = 'n')]
        n: u32,
        /// Return once the change is recorded, without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Managers, their state and generation, who runs each singleton, HA n/N.
    ShowController,
    /// The web dashboard's address on a live manager and a single-use
    /// login link (valid 60 s), and how to trust its certificate.
    Dashboard,
    /// The history of a machine's or unit's status and its agent's
    /// presence, newest last, as the answering manager recorded it.
    ShowStatusLog {
        /// A machine id or a unit (APP/ID); ids may be unique prefixes.
        entity: String,
        /// How many of the latest entries to show (1 to 100).
        #[arg(short = 'n', default_value_t = 20)]
        n: u32,
    },
    /// A merged, live stream of the environment's logs: every manager's,
    /// every agent's and every unit's workload output, each line naming
    /// its source. Starts with the last 10 lines (-n, or --replay for all
    /// the managers hold), then follows until Ctrl-C (--no-tail: stop).
    DebugLog(jujud::runtime::logs::cli::DebugLogArgs),
    /// Show controller settings, or set key=value pairs (e.g. ha-grace-ms=5000).
    ControllerConfig { settings: Vec<String> },
    /// Stop every instance of the local environment and remove its root.
    Destroy {
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokensCmd {
    /// List the join tokens the answering manager holds, a page at a time.
    List {
        /// Only tokens for this role (manager or agent).
        #[arg(long)]
        role: Option<String>,
        /// Only tokens in this state.
        #[arg(long, value_parser = ["active", "used", "revoked", "expired"])]
        state: Option<String>,
        /// Most rows to show (at most 1000 per answer).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this token id (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Create a join token for a new manager (single-use unless --reusable).
    Create {
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
        /// Let any number of managers join with it until it expires.
        #[arg(long)]
        reusable: bool,
        /// Bind it to this (controller) machine: the manager that joins
        /// with it is that machine's node.
        #[arg(long)]
        machine: Option<String>,
    },
    /// Revoke a token by its id; answers once the revocation is durable on
    /// the answering manager and on every live manager (or K of them).
    Revoke {
        token_id: String,
        /// Wait for K other managers instead of every live one.
        #[arg(long)]
        wait_replicated: Option<u32>,
        /// How long to wait for them, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match &cli.command {
        Command::Bootstrap { ha, root, cloud, preset } => {
            return rt.block_on(bootstrap_cmd(*ha, root.clone(), cloud.clone(), preset));
        }
        Command::Destroy { root } => return destroy_cmd(&rt, root.clone()),
        _ => {}
    }
    let path = match cli.client_config.clone() {
        Some(p) => with_dir(p),
        None => {
            let default = bootstrap::client_file_in(&bootstrap::default_root());
            if !default.exists() {
                eprintln!(
                    "juju: no client config: pass --client-config FILE, set JUJU_CLIENT_CONFIG, or `juju bootstrap`"
                );
                return ExitCode::from(2);
            }
            default
        }
    };
    let file = match ClientFile::load(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("juju: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::AddHost { file: cloud_file, root } = &cli.command {
        return rt.block_on(add_host_cmd(&cli, &file, cloud_file, root.clone()));
    }
    if let Command::DebugLog(args) = &cli.command {
        let json = matches!(cli.format, Format::Json);
        return match rt.block_on(jujud::runtime::logs::cli::run(&file, args, json)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("juju: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // One request id per invocation: every retry on another manager carries it.
    let request_id = client::new_request_id();
    let ids = if names_ids(&cli.command) {
        rt.block_on(known_ids(&file, cli.endpoint))
    } else {
        Ids::default()
    };
    let req = match request_for(&cli, request_id, &ids) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("juju: {e}");
            return ExitCode::from(2);
        }
    };
    let on_retry = |why: &str| eprintln!("juju: {why}");
    let answer: Result<_, ClientError> =
        rt.block_on(client::request_with_retries(&file, cli.endpoint, req, &on_retry));
    let seeds = file.endpoints.clone();
    let code = match answer {
        Ok((_, Response::Error(msg))) => {
            eprintln!("juju: the manager refused: {msg}");
            return ExitCode::FAILURE;
        }
        Ok((_, resp)) => {
            if let Response::Members { members, .. } | Response::Status { members, .. } = &resp {
                refresh_endpoints(&path, &file, members);
            }
            print(&cli, &resp, &seeds)
        }
        Err(e) => {
            eprintln!("juju: {e}");
            return ExitCode::FAILURE;
        }
    };
    match &cli.command {
        Command::EnableHa { n, no_wait: false } => rt.block_on(wait_managers(&path, *n)),
        _ => code,
    }
}

/// Whether a command names machines or units by id (each may be typed as
/// a unique prefix, see `runtime::idprefix`).
fn names_ids(command: &Command) -> bool {
    matches!(
        command,
        Command::RemoveMachine { .. } | Command::RemoveUnit { .. } | Command::ShowStatusLog { .. }
    ) || matches!(command, Command::Deploy { to, .. } | Command::AddUnit { to, .. } if !to.is_empty())
}

/// The machine and unit ids a manager knows, to resolve typed prefixes
/// against; `None` when no status could be read (each id is then sent as
/// typed, and the manager says whether it exists).
#[derive(Default)]
struct Ids(Option<(Vec<String>, Vec<String>)>);

impl Ids {
    fn machine(&self, given: &str) -> Result<String, String> {
        match &self.0 {
            Some((machines, _)) => {
                idprefix::resolve("machine", machines, given, 0).map_err(|e| e.to_string())
            }
            None => Ok(given.to_string()),
        }
    }

    fn unit(&self, given: &str) -> Result<String, String> {
        let skip = given.find('/').map_or(0, |i| i + 1);
        match &self.0 {
            Some((_, units)) => {
                idprefix::resolve("unit", units, given, skip).map_err(|e| e.to_string())
            }
            None => Ok(given.to_string()),
        }
    }

    fn machines(&self, given: &[String]) -> Result<Vec<String>, String> {
        given.iter().map(|m| self.machine(m)).collect()
    }
}

async fn known_ids(file: &ClientFile, endpoint: Option<SocketAddr>) -> Ids {
    match client::request_with_retries(file, endpoint, Request::StatusStream, &|_| {}).await {
        Ok((_, Response::Status { status, .. })) => Ids(Some((
            status.machines.into_iter().map(|m| m.id).collect(),
            status.units.into_iter().map(|u| u.id).collect(),
        ))),
        _ => Ids(None),
    }
}

/// The request a command sends, or why its arguments are wrong.
fn request_for(cli: &Cli, request_id: u64, ids: &Ids) -> Result<Request, String> {
    let write = |cmd: StateCommand| Request::Write {
        request_id,
        cmd,
        wait_replicated: cli.wait_replicated,
        timeout_ms: cli.timeout_ms,
    };
    Ok(match &cli.command {
        Command::Members => Request::Members,
        Command::Status | Command::ShowController => Request::StatusStream,
        Command::Dashboard => Request::DashboardLogin,
        Command::AddMachine { n, placement: None } => write(StateCommand::AddMachine { n: *n }),
        Command::AddMachine { n, placement: Some(p) } => {
            let Some(target) = p.strip_prefix("ssh:") else {
                return Err(format!("placement {p:?}: expected ssh:[user@]HOST"));
            };
            if *n != 1 {
                return Err("ssh:HOST enlists one machine: drop -n".into());
            }
            let host = target.rsplit_once('@').map_or(target, |(_, h)| h);
            write(StateCommand::EnlistMachine { host: host.to_string() })
        }
        Command::RemoveHost { address } => {
            write(StateCommand::RemoveHost { address: address.clone() })
        }
        Command::AddHost { .. } => unreachable!("handled before any request"),
        Command::RemoveMachine { id } => {
            write(StateCommand::RemoveMachine { id: ids.machine(id)? })
        }
        Command::ShowStatusLog { entity, n } => {
            let entity =
                if entity.contains('/') { ids.unit(entity)? } else { ids.machine(entity)? };
            Request::StatusLog { entity, n: *n }
        }
        Command::Deploy { name, command, to, .. } if !to.is_empty() => {
            write(StateCommand::DeployTo {
                name: name.clone(),
                command: command.clone(),
                to: ids.machines(to)?,
            })
        }
        Command::Deploy { name, command, n, .. } => {
            write(StateCommand::Deploy { name: name.clone(), command: command.clone(), n: *n })
        }
        Command::AddUnit { name, to, .. } if !to.is_empty() => {
            write(StateCommand::AddUnitTo { app: name.clone(), to: ids.machines(to)? })
        }
        Command::AddUnit { name, n, .. } => {
            write(StateCommand::AddUnit { app: name.clone(), n: *n })
        }
        Command::RemoveUnit { unit } => write(StateCommand::RemoveUnit { unit: ids.unit(unit)? }),
        Command::Config { settings, .. } | Command::ControllerConfig { settings }
            if settings.is_empty() =>
        {
            Request::StatusStream
        }
        Command::Config { name, settings } => write(StateCommand::SetConfig {
            app: name.clone(),
            pairs: render::parse_pairs(settings)?,
        }),
        Command::ControllerConfig { settings } => match render::parse_pairs(settings)?.as_slice() {
            [(key, value)] => {
                write(StateCommand::SetController { key: key.clone(), value: value.clone() })
            }
            _ => return Err("set one controller setting at a time".into()),
        },
        Command::EnableHa { n, .. } => write(StateCommand::EnableHa { n: *n }),
        Command::Tokens(TokensCmd::List { role, state, limit, after }) => {
            Request::TokenList(TokenQuery {
                role: role.clone(),
                state: state.clone(),
                after: after.clone(),
                limit: *limit,
            })
        }
        Command::Tokens(TokensCmd::Create { ttl_secs, reusable, machine }) => {
            Request::TokenCreate {
                role: "manager".into(),
                ttl_secs: *ttl_secs,
                reusable: *reusable,
                machine: machine.clone(),
            }
        }
        Command::Tokens(TokensCmd::Revoke { token_id, wait_replicated, timeout_ms }) => {
            Request::TokenRevoke {
                token_id: token_id.clone(),
                wait_replicated: *wait_replicated,
                timeout_ms: *timeout_ms,
            }
        }
        Command::Bootstrap { .. } | Command::Destroy { .. } | Command::DebugLog(_) => {
            unreachable!("handled before any request")
        }
    })
}

fn progress_bar(want: usize) -> ProgressBar {
    let bar = ProgressBar::new(want as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} managers alive {pos}/{len} {elapsed}")
            .expect("template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

async fn bootstrap_cmd(
    ha: u32,
    root: Option<PathBuf>,
    cloud: Option<PathBuf>,
    preset: &str,
) -> ExitCode {
    let root = root.unwrap_or_else(bootstrap::default_root);
    let bar = progress_bar(ha as usize);
    let started = std::time::Instant::now();
    let progress = |alive: usize, _| bar.set_position(alive as u64);
    let result = match &cloud {
        Some(file) => sshenv::bootstrap(&root, file, ha, preset, &progress).await,
        None => bootstrap::bootstrap(&root, ha, preset, &progress).await,
    };
    match result {
        Ok(file) => {
            bar.finish_and_clear();
            println!(
                "bootstrapped {ha} manager(s) in {:.1} s; client file {}",
                started.elapsed().as_secs_f64(),
                file.display()
            );
            println!("(juju uses it by default; or export JUJU_CLIENT_CONFIG={})", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            bar.abandon();
            eprintln!("juju: bootstrap failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends one `AddHost` per host of `cloud_file` (each entry holds the
/// host's private key: it goes to the managers over the mTLS channel,
/// never on a command line), and records the hosts in the local pool copy
/// so that `destroy` cleans them too.
async fn add_host_cmd(
    cli: &Cli,
    file: &ClientFile,
    cloud_file: &Path,
    root: Option<PathBuf>,
) -> ExitCode {
    let hosts = match jujud::runtime::provider::ssh::cloud::load(cloud_file) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("juju: {e}");
            return ExitCode::from(2);
        }
    };
    let on_retry = |why: &str| eprintln!("juju: {why}");
    for h in &hosts {
        let cmd = StateCommand::AddHost { address: h.address.clone(), entry: h.to_json() };
        let req = Request::Write {
            request_id: client::new_request_id(),
            cmd,
            wait_replicated: cli.wait_replicated,
            timeout_ms: cli.timeout_ms,
        };
        match client::request_with_retries(file, cli.endpoint, req, &on_retry).await {
            Ok((_, Response::Applied(_) | Response::Done)) => println!("added host {}", h.address),
            Ok((_, Response::Error(msg) | Response::Unavailable(msg))) => {
                eprintln!("juju: the manager refused host {}: {msg}", h.address);
                return ExitCode::FAILURE;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("juju: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let root = root.unwrap_or_else(bootstrap::default_root);
    if let Err(e) = sshenv::remember_hosts(&root, &hosts) {
        eprintln!("juju: warning: {e}");
    }
    ExitCode::SUCCESS
}

async fn wait_managers(path: &Path, n: u32) -> ExitCode {
    let bar = progress_bar(n as usize);
    let started = std::time::Instant::now();
    match bootstrap::wait_for_managers(path, n as usize, &|alive, _| bar.set_position(alive as u64))
        .await
    {
        Ok(_) => {
            bar.finish_and_clear();
            println!("HA {n}/{n} in {:.1} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            bar.abandon();
            eprintln!("juju: {e}");
            ExitCode::FAILURE
        }
    }
}

fn destroy_cmd(rt: &tokio::runtime::Runtime, root: Option<PathBuf>) -> ExitCode {
    let root = root.unwrap_or_else(bootstrap::default_root);
    let result = if sshenv::is_ssh(&root) {
        // Hosts other clients added are in the managers' pool, not in
        // this client's copy: ask one first.
        let pool = rt.block_on(sshenv::pool_from_managers(&root)).unwrap_or_else(|why| {
            eprintln!("juju: the pool could not be read from a manager ({why}); cleaning the hosts this client knows");
            Vec::new()
        });
        sshenv::destroy(&root, &pool)
    } else {
        bootstrap::destroy(&root)
    };
    match result {
        Ok(n) => {
            println!("destroyed {}: {n} running instance(s) stopped", root.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("juju: destroy failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the client file's endpoints in step with the live managers, so the
/// client still finds the cluster after the managers it first knew are gone.
fn refresh_endpoints(path: &std::path::Path, file: &ClientFile, members: &[MemberRow]) {
    let mut live: Vec<SocketAddr> = members
        .iter()
        .filter(|m| m.role == "manager" && m.state == "alive")
        .map(|m| m.addr)
        .collect();
    live.sort();
    let mut known = file.endpoints.clone();
    known.sort();
    if live.is_empty() || live == known {
        return;
    }
    let updated = ClientFile { endpoints: live, ..file.clone() };
    if let Err(e) = write_atomic(path, updated.to_yaml().as_bytes()) {
        eprintln!("juju: warning: could not update the endpoints in {}: {e}", path.display());
    }
}

/// A bare file name as `./NAME`, so that its parent is `.` rather than the
/// empty path (which no directory call accepts).
fn with_dir(path: PathBuf) -> PathBuf {
    match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Path::new(".").join(path),
        _ => path,
    }
}

/// Writes each machine's agent token to `dir/MACHINE.token`, created new
/// with mode 0600 (an existing file is never overwritten or read).
fn write_token_files(dir: Option<&Path>, tokens: &[(String, String)]) -> Vec<render::TokenFile> {
    use render::TokenOut;
    let Some(dir) = dir else {
        return tokens.iter().map(|(m, t)| (m.clone(), TokenOut::Shown(t.clone()))).collect();
    };
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write = |machine: &str, token: &str| -> Result<PathBuf, String> {
        if !jujud::pki::valid_machine_label(machine) {
            return Err(format!("{machine:?} is not a machine id"));
        }
        let path = with_dir(dir.join(format!("{machine}.token")));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(format!("{token}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    };
    tokens
        .iter()
        .map(|(m, t)| (m.clone(), write(m, t).map_or_else(TokenOut::Failed, TokenOut::File)))
        .collect()
}

fn print(cli: &Cli, resp: &Response, seeds: &[SocketAddr]) -> ExitCode {
    let (format, command) = (cli.format, &cli.command);
    let json = |v: &dyn erased::Ser| println!("{}", v.json());
    match (format, resp) {
        (_, Response::Status { status, .. }) if matches!(command, Command::Config { .. }) => {
            let Command::Config { name, .. } = command else { unreachable!() };
            let Some(app) = status.applications.iter().find(|a| &a.name == name) else {
                eprintln!("juju: application {name} does not exist");
                return ExitCode::FAILURE;
            };
            match format {
                Format::Json => json(&app.config),
                Format::Table => print!("{}", render::config(status, name).unwrap_or_default()),
            }
        }
        (Format::Json, Response::Members { answered_by, members }) => {
            json(&serde_json::json!({ "answered_by": answered_by, "members": members }))
        }
        (Format::Json, Response::Status { answered_by, controller, members, .. })
            if matches!(command, Command::ShowController) =>
        {
            json(
                &serde_json::json!({ "answered_by": answered_by, "controller": controller, "members": members }),
            )
        }
        (Format::Table, Response::Status { answered_by, controller, members, .. })
            if matches!(command, Command::ShowController) =>
        {
            print!("{}", render::controller(answered_by, controller, members))
        }
        (Format::Json, Response::Status { status, .. })
            if matches!(command, Command::ControllerConfig { .. }) =>
        {
            json(&status.controller)
        }
        (Format::Table, Response::Status { status, .. })
            if matches!(command, Command::ControllerConfig { .. }) =>
        {
            for (k, v) in &status.controller {
                println!("{k}={}", v.text());
            }
        }
        (Format::Json, Response::Status { answered_by, status, members, controller }) => json(
            &serde_json::json!({ "answered_by": answered_by, "status": status, "members": members, "controller": controller }),
        ),
        (Format::Json, Response::Tokens { rows, matched, bytes_kept }) => {
            json(&serde_json::json!({ "rows": rows, "matched": matched, "bytes_kept": bytes_kept }))
        }
        (Format::Json, Response::Token { token, row }) => {
            json(&serde_json::json!({ "token": token, "row": row }))
        }
        (Format::Json, Response::Applied(outcome)) => json(outcome),
        // The entries hold private keys: only the addresses are printed.
        (Format::Json, Response::StatusLog { answered_by, entity, entries }) => json(
            &serde_json::json!({ "answered_by": answered_by, "entity": entity, "entries": entries }),
        ),
        (Format::Table, Response::StatusLog { answered_by, entity, entries }) => {
            print!("{}", render::status_log(answered_by, entity, entries))
        }
        (_, Response::Hosts(rows)) => {
            for (address, _) in rows {
                println!("{address}");
            }
        }
        (Format::Table, Response::Members { answered_by, members }) => {
            print!("{}", render::members(answered_by, members))
        }
        (Format::Table, Response::Status { answered_by, status, members, controller }) => {
            print!("{}", render::status(answered_by, status, members, controller))
        }
        (Format::Table, Response::Tokens { rows, matched, bytes_kept }) => {
            print!("{}", render::tokens(rows, *matched, *bytes_kept))
        }
        (Format::Table, Response::Token { token, .. }) => println!("{token}"),
        (Format::Table, Response::Applied(outcome)) => {
            for id in &outcome.ids {
                println!("{id}");
            }
            let files = write_token_files(cli.token_dir.as_deref(), &outcome.tokens);
            eprint!("{}", render::agent_commands(&outcome.machines, &files, seeds));
        }
        (
            Format::Json,
            Response::DashboardLink {
                url,
                login_url,
                expires_in_ms,
                ca_fingerprint,
                ca_spki_sha256_base64,
            },
        ) => json(&serde_json::json!({
            "url": url, "login_url": login_url, "expires_in_ms": expires_in_ms,
            "ca_fingerprint": ca_fingerprint, "ca_spki_sha256_base64": ca_spki_sha256_base64,
        })),
        (Format::Table, Response::DashboardLink { .. }) => print!("{}", dashboard_text(cli, resp)),
        (_, Response::Done) => println!("done"),
        (_, Response::Error(msg) | Response::Unavailable(msg)) => eprintln!("{msg}"),
    }
    ExitCode::SUCCESS
}

/// JSON printing for any serialisable answer.
mod erased {
    pub trait Ser {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> String {
            serde_json::to_string_pretty(self).expect("answers always serialise")
        }
    }
}

/// What `juju dashboard` prints: where, the single-use link, and how a
/// browser trusts a manager certificate that names `jujud`, not the address.
fn dashboard_text(cli: &Cli, resp: &Response) -> String {
    let Response::DashboardLink {
        url,
        login_url,
        expires_in_ms,
        ca_fingerprint,
        ca_spki_sha256_base64,
    } = resp
    else {
        return String::new();
    };
    let file = cli
        .client_config
        .clone()
        .map(with_dir)
        .unwrap_or_else(|| bootstrap::client_file_in(&bootstrap::default_root()));
    format!(
        "Dashboard: {url}\n\
         Log in by opening this link once, within {} s (paste it; it is a secret):\n  {login_url}\n\
         Its certificate is signed by this environment's CA (the ca_cert_pem of {}),\n\
         SHA-256 fingerprint {ca_fingerprint}. Manager certificates name \"jujud\", not an\n\
         address, so pin the CA's key instead of trusting it by name, e.g.:\n  \
         chromium --user-data-dir=DIR --ignore-certificate-errors-spki-list={ca_spki_sha256_base64}\n",
        expires_in_ms / 1000,
        file.display(),
    )
}
