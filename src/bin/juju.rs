//! `juju`: the client. It only parses arguments, calls the library's client
//! and prints the answer as a table or as JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use jujud::runtime::client::{self, ClientError};
use jujud::runtime::clientfile::ClientFile;
use jujud::runtime::datadir::write_atomic;
use jujud::runtime::wire::{MemberRow, Request, Response, TokenRow};

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
    let req = match &cli.command {
        Command::Members => Request::Members,
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
            if let Response::Members { members, .. } = &resp {
                refresh_endpoints(&path, &file, members);
            }
            print(cli.format, &resp);
            ExitCode::SUCCESS
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

fn print(format: Format, resp: &Response) {
    match (format, resp) {
        (Format::Json, Response::Members { answered_by, members }) => {
            let v = serde_json::json!({ "answered_by": answered_by, "members": members });
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
        (Format::Json, Response::Tokens(rows)) => println!("{}", serde_json::to_string_pretty(rows).expect("json")),
        (Format::Json, Response::Token { token, row }) => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "token": token, "row": row })).expect("json"))
        }
        (Format::Table, Response::Members { answered_by, members }) => print_members(answered_by, members),
        (Format::Table, Response::Tokens(rows)) => print_tokens(rows),
        (Format::Table, Response::Token { token, .. }) => println!("{token}"),
        (_, Response::Done) => println!("done"),
        (_, Response::Error(msg)) => eprintln!("{msg}"),
    }
}

fn print_members(answered_by: &str, members: &[MemberRow]) {
    println!("{:<18} {:<22} {:<8} {:>10} {:<8}", "ID", "ADDRESS", "ROLE", "GENERATION", "STATE");
    for m in members {
        println!("{:<18} {:<22} {:<8} {:>10} {:<8}", m.id, m.addr, m.role, m.generation, m.state);
    }
    println!("(as seen by {answered_by})");
}

fn print_tokens(rows: &[TokenRow]) {
    println!("{:<10} {:<8} {:>12} {:<8}", "ID", "ROLE", "EXPIRES", "REVOKED");
    for r in rows {
        println!("{:<10} {:<8} {:>12} {:<8}", r.token_id, r.role, r.expires_unix_secs, r.revoked);
    }
}
