//! `jujud`: the daemon. It only parses arguments, sets up logging and
//! signals, and calls into the library.

use clap::{Parser, Subcommand};
use jujud::config::{self, AgentArgs, PeerArgs};

/// jemalloc, not glibc's malloc: a manager's state is many small
/// long-lived allocations interleaved with large short-lived ones (a
/// snapshot's copy and encoding, a status view, a 1,000-unit deploy), and
/// glibc kept the freed space scattered between live blocks, so resident
/// memory stayed near the peak (docs/ARCHITECTURE.md, "State memory").
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start: a background thread hands
/// pages freed for `dirty_decay_ms` (1 s) back to the kernel even while
/// the process allocates nothing, instead of on later allocations only.
/// One arena (`narenas:1`; jemalloc's default is four per CPU): the node
/// task's long-lived state moves between tokio's workers, and every arena
/// it touched kept its own half-emptied slabs after a load. Measured at
/// 100,050 entities (`--only scale`, three runs each, alternated): the
/// worst manager at rest 124.6 to 129.7 MiB against 131.0 to 132.2
/// (docs/ARCHITECTURE.md, "State memory"). `_RJEM_MALLOC_CONF` in the
/// environment overrides these.
#[cfg(not(feature = "system-alloc"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 70] =
    b"narenas:1,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "jujud",
    version,
    about = "A peer-to-peer, highly available control plane for Juju"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a manager: create a cluster, join one with --join and a token
    /// (--token-file FILE, --token-file -, or JUJUD_TOKEN), or rejoin with
    /// the identity stored in --data-dir.
    Peer(PeerArgs),
    /// Run a machine agent: join once with the machine's token (from
    /// `juju add-machine`), then rejoin with the identity in --data-dir.
    Agent(AgentArgs),
}

fn main() -> std::process::ExitCode {
    // jemalloc is this process's allocator: `/metrics` may read its counts.
    #[cfg(not(feature = "system-alloc"))]
    jujud::metrics::heap::enable();
    let cli = Cli::parse();
    let env = |k: &str| std::env::var(k).ok();
    let (cfg, agent) = match &cli.command {
        Command::Peer(args) => (config::resolve(args, &env), false),
        Command::Agent(args) => (args.resolve(&env), true),
    };
    let cfg = match cfg {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("jujud: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // The token is in `cfg` now: children (instances, workloads) must not
    // inherit it. SAFETY: no other thread exists yet (the runtime starts
    // below), so nothing reads the environment concurrently.
    unsafe { std::env::remove_var(config::env_var_name("token")) };
    let ring_bytes = if agent {
        jujud::runtime::logs::hub::AGENT_LOG_RING_BYTES
    } else {
        jujud::runtime::logs::hub::MANAGER_LOG_RING_BYTES
    };
    let file = cfg.log_file.clone();
    jujud::logging::init_daemon(cfg.log_format, jujud::logging::Output { ring_bytes, file });
    let _ = rustls::crypto::ring::default_provider().install_default();
    // An agent is small and mostly idle: one thread keeps its footprint low
    // (and its workloads' parent-death signal tied to that one thread).
    let rt = if agent {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
    }
    .expect("tokio runtime");
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: leaving the cluster");
            let _ = tx.send(true);
        });
        let result = if agent {
            jujud::runtime::agent::run_agent(cfg, rx).await.map_err(|e| e.to_string())
        } else {
            jujud::runtime::server::run_peer(cfg, rx).await.map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "{}", jujud::events::JUJUD_FAILED);
                eprintln!("jujud: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
