//! `palisade`: the one binary. Thin: it parses arguments, sets up logging and signals, and
//! wires the library crates together.

mod audit_cmd;
mod ca_cmd;
mod demo;
mod demo_identity;
mod devcert;
mod gateway;
mod idp_cmd;
mod mesh;
mod policy_cmd;
mod scan_cmd;
mod server;
mod up;
mod vault_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: per-thread free lists make the request path's many small, short-lived allocations
/// (and frees on another thread, as with audit events) cheaper than glibc malloc. Measured in
/// `bench/RESULTS.md`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Zero-trust security for microservices, in one binary",
    long_about = "Palisade is an API gateway, mesh sidecar, OAuth2/OIDC server, workload CA, \
data-protection service, vulnerability scanner and security monitor in one binary.\n\n\
Start with `palisade up` to run everything locally on embedded defaults."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge API gateway from a YAML config (reloads on SIGHUP and on file change)
    Gateway {
        /// Path to the gateway config (see examples/gateway.yaml)
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run a mesh sidecar beside one service: inbound mTLS with SPIFFE SVIDs and default-deny
    /// mesh policy, outbound mTLS to other sidecars (same engine and config format as the gateway)
    Sidecar {
        /// Path to the sidecar config (YAML; needs `mesh`, and `listeners.mesh` and/or `listeners.local`)
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Work with configuration files
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run Palisade locally on embedded defaults: gateway on :8080/:8443 with demo services
    Up {
        /// Where state (dev certificate, generated config) is kept
        #[arg(long, default_value = "data", value_name = "DIR")]
        data_dir: PathBuf,
        /// Also send alerts to this webhook (generic JSON POST); repeatable
        #[arg(long, value_name = "URL")]
        webhook: Vec<String>,
    },
    /// Run the control-plane server (identity provider) on 127.0.0.1:9400
    Server(Box<server::ServerArgs>),
    /// Administer the identity provider's clients and users
    Idp {
        #[command(flatten)]
        state: server::StateArgs,
        #[command(subcommand)]
        command: idp_cmd::IdpCommand,
    },
    /// Rotate and list the token-signing keys
    Keys {
        #[command(flatten)]
        state: server::StateArgs,
        #[command(subcommand)]
        command: idp_cmd::KeysCommand,
    },
    /// Administer the workload CA: status, rotation, import, join tokens
    Ca(Box<ca_cmd::CaArgs>),
    /// Run one built-in demo service (orders or payments) on its own
    Demo {
        /// Which demo service
        #[arg(value_parser = ["orders", "payments"])]
        service: String,
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: std::net::SocketAddr,
        /// orders only: charge each new order at this payments base URL (e.g. the sidecar's
        /// outbound listener, http://127.0.0.1:15001)
        #[arg(long, value_name = "URL")]
        payments_url: Option<String>,
    },
    /// Check Cedar policies, explain a decision, run a decision table
    Policy {
        #[command(subcommand)]
        command: policy_cmd::PolicyCommand,
    },
    /// Generate gateway API keys (the config stores only their hashes)
    Apikey {
        #[command(subcommand)]
        command: policy_cmd::ApiKeyCommand,
    },
    /// The tamper-evident audit log: verify it, search it
    Audit(Box<audit_cmd::AuditArgs>),
    /// Scan images, filesystems and lockfiles for known vulnerabilities
    Scan(Box<scan_cmd::ScanArgs>),
    /// Data protection on the data directory: keys, encrypt/decrypt, rewrap, data keys,
    /// signatures, HMAC, tokenization (same master key as the server)
    Vault(Box<vault_cmd::VaultArgs>),
    /// Print the version
    Version,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file fully (including certificates and secrets); exit 1 on errors
    Check {
        /// The config file
        file: PathBuf,
    },
}

/// JSON logs: on stdout for the long-running commands, on stderr for the admin commands whose
/// stdout is their answer (`palisade ca join-token | jq .token`). PostgreSQL's notices (e.g.
/// "relation already exists, skipping" from migrations) are not worth an info line.
fn init_logging(to_stderr: bool) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let fmt = tracing_subscriber::fmt().json().flatten_event(true).with_current_span(false).with_env_filter(filter);
    if to_stderr {
        fmt.with_writer(std::io::stderr).init();
    } else {
        fmt.with_writer(std::io::stdout).init();
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("palisade {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config { command: ConfigCommand::Check { file } } => {
            let res = palisade_core::load_file(&file).and_then(|l| palisade_proxy::check(&l));
            match res {
                Ok(()) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Policy { command } => match policy_cmd::run(command) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Scan(args) => match scan_cmd::run(*args) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Audit(args) => {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(audit_cmd::run(*args)) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Vault(args) => {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(true);
            match rt.block_on(vault_cmd::run(*args)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Apikey { command } => match policy_cmd::run_apikey(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        cmd => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(matches!(cmd, Command::Ca(_) | Command::Idp { .. } | Command::Keys { .. }));
            let res = rt.block_on(async move {
                match cmd {
                    Command::Gateway { config } => gateway::run(config, gateway::Role::Gateway).await,
                    Command::Sidecar { config } => gateway::run(config, gateway::Role::Sidecar).await,
                    Command::Up { data_dir, webhook } => up::run(data_dir, webhook).await,
                    Command::Demo { service, listen, payments_url } => {
                        demo::run_standalone(&service, listen, payments_url).await
                    }
                    Command::Server(args) => server::run(*args).await,
                    Command::Idp { state, command } => idp_cmd::run_idp(state, command).await,
                    Command::Keys { state, command } => idp_cmd::run_keys(state, command).await,
                    Command::Ca(args) => ca_cmd::run(*args).await,
                    Command::Version
                    | Command::Config { .. }
                    | Command::Policy { .. }
                    | Command::Apikey { .. }
                    | Command::Audit(_)
                    | Command::Vault(_)
                    | Command::Scan(_) => Ok(()),
                }
            });
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
