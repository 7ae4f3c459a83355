//! `juju`: the client. It only parses arguments, calls the library's client
//! and prints the answer as a table or as JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use jujud::runtime::client::{self, ClientError};
use jujud::runtime::clientfile::ClientFile;
use jujud::runtime::datadir::write_atomic;
use jujud::core::state::model::Command as StateCommand;
use jujud::runtime::render;
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
    /// Add machines.
    AddMachine {
        #[arg(short = 'n', default_value_t = 1)]
        n: u32,
    },
    /// Remove a machine that hosts no units.
    RemoveMachine { id: String },
    /// Deploy an application: its units run COMMAND, each on a new machine.
    Deploy {
        name: String,
        #[arg(long)]
        command: String,
        #[arg(short = 'n', default_value_t = 1)]
        n: u32,
    },
    /// Add units to an application.
    AddUnit {
        name: String,
        #[arg(short = 'n', default_value_t = 1)]
        n: u32,
    },
    /// Remove a unit (APP/ID).
    RemoveUnit { unit: String },
    /// Show an application's config, or set key=value pairs.
    Config { name: String, settings: Vec<String> },
}

#[derive(Subcommand)]
enum TokensCmd {
    /// List the join tokens known to the cluster.
    List,
    /// Create a join token for a new manager.
    Create {
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl_secs: u64,
    },
    /// Revoke a token by its id.
    Revoke { token_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(path) = cli.client_config.clone() else {
        eprintln!("juju: no client config: pass --client-config FILE or set JUJU_CLIENT_CONFIG");
        return ExitCode::from(2);
    };
    let file = match ClientFile::load(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("juju: {e}");
            return ExitCode::from(2);
        }
    };
    // One request id per invocation: every retry on another manager carries it.
    let request_id = client::new_request_id();
    let write = |cmd: StateCommand| Request::Write { request_id, cmd, wait_replicated: cli.wait_replicated, timeout_ms: cli.timeout_ms };
    let req = match &cli.command {
        Command::Members => Request::Members,
        Command::Status => Request::Status,
        Command::AddMachine { n } => write(StateCommand::AddMachine { n: *n }),
        Command::RemoveMachine { id } => write(StateCommand::RemoveMachine { id: id.clone() }),
        Command::Deploy { name, command, n } => write(StateCommand::Deploy { name: name.clone(), command: command.clone(), n: *n }),
        Command::AddUnit { name, n } => write(StateCommand::AddUnit { app: name.clone(), n: *n }),
        Command::RemoveUnit { unit } => write(StateCommand::RemoveUnit { unit: unit.clone() }),
        Command::Config { settings, .. } if settings.is_empty() => Request::Status,
        Command::Config { name, settings } => match render::parse_pairs(settings) {
            Ok(pairs) => write(StateCommand::SetConfig { app: name.clone(), pairs }),
            Err(e) => {
                eprintln!("juju: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Tokens(TokensCmd::List) => Request::TokenList,
        Command::Tokens(TokensCmd::Create { ttl_secs }) => Request::TokenCreate { role: "manager".into(), ttl_secs: *ttl_secs },
        Command::Tokens(TokensCmd::Revoke { token_id }) => Request::TokenRevoke { token_id: token_id.clone() },
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let answer: Result<_, ClientError> = rt.block_on(client::request(&file, cli.endpoint, req));
    match answer {
        Ok((_, Response::Error(msg))) => {
            eprintln!("juju: the manager refused: {msg}");
            ExitCode::FAILURE
        }
        Ok((_, resp)) => {
            if let Response::Members { members, .. } | Response::Status { members, .. } = &resp {
                refresh_endpoints(&path, &file, members);
            }
            print(cli.format, &cli.command, &resp)
        }
        Err(e) => {
            eprintln!("juju: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the client file's endpoints in step with the live managers, so the
/// client still finds the cluster after the managers it first knew are gone.
fn refresh_endpoints(path: &PathBuf, file: &ClientFile, members: &[MemberRow]) {
    let mut live: Vec<SocketAddr> =
        members.iter().filter(|m| m.role == "manager" && m.state == "alive").map(|m| m.addr).collect();
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

fn print(format: Format, command: &Command, resp: &Response) -> ExitCode {
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
        (Format::Json, Response::Status { answered_by, status, members }) => {
            json(&serde_json::json!({ "answered_by": answered_by, "status": status, "members": members }))
        }
        (Format::Json, Response::Tokens(rows)) => json(rows),
        (Format::Json, Response::Token { token, row }) => json(&serde_json::json!({ "token": token, "row": row })),
        (Format::Json, Response::Applied(outcome)) => json(outcome),
        (Format::Table, Response::Members { answered_by, members }) => print!("{}", render::members(answered_by, members)),
        (Format::Table, Response::Status { answered_by, status, members }) => print!("{}", render::status(answered_by, status, members)),
        (Format::Table, Response::Tokens(rows)) => print!("{}", render::tokens(rows)),
        (Format::Table, Response::Token { token, .. }) => println!("{token}"),
        (Format::Table, Response::Applied(outcome)) => {
            for id in &outcome.ids {
                println!("{id}");
            }
        }
        (_, Response::Done) => println!("done"),
        (_, Response::Error(msg)) => eprintln!("{msg}"),
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
