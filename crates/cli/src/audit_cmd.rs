//! `palisade audit verify|query|public-key`: the tamper-evident audit log and its index,
//! straight against the data directory (or `--database-url`), like `palisade ca`.
//! `verify` exits 0 when the log is intact, 1 naming the first bad record, 2 on other errors.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::server::StateArgs;

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every record, chain link and signed checkpoint of the log; name the first bad one
    Verify {
        /// The log directory (default: <data-dir>/audit/log)
        dir: Option<PathBuf>,
        /// The log's Ed25519 public key (64 hex digits, from `palisade audit public-key`) instead of
        /// deriving it from the master key: for a copy of the log on another machine
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
    },
    /// Search the indexed audit events; one JSON object per line, newest first
    Query {
        /// How far back (1h, 30m, 7d) or since an RFC 3339 time
        #[arg(long, default_value = "24h")]
        since: String,
        /// `alice` (any kind) or a full principal such as `User::"alice"`
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, value_parser = ["allow", "deny"])]
        decision: Option<String>,
        /// Emitting component: gateway, sidecar, idp, ca
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        client_ip: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Print the log's verifying key (hex), for `verify --public-key` elsewhere
    PublicKey,
}

fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex::decode_to_slice(text.trim(), &mut out).is_err() {
        bail!("--public-key: 64 hex digits expected");
    }
    Ok(out)
}

async fn derived_key(state: &StateArgs) -> anyhow::Result<[u8; 32]> {
    let store = state.open().await?;
    let key = palisade_audit::log_public_key(store.pool(), &state.master_key()?).await;
    store.close().await;
    Ok(key?)
}

/// Returns the process exit code.
pub async fn run(args: AuditArgs) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    match args.command {
        AuditCommand::Verify { dir, public_key } => {
            let dir = dir.unwrap_or_else(|| args.state.data_dir.join("audit/log"));
            if !dir.is_dir() {
                bail!("{}: no such log directory", dir.display());
            }
            let key = match public_key {
                Some(k) => parse_key(&k)?,
                None => derived_key(&args.state).await?,
            };
            match palisade_auditlog::verify(&dir, &key) {
                Ok(r) => {
                    let range = match r.first_seq {
                        Some(first) => format!("seq {first}..{}", r.last_seq),
                        None => "empty".to_owned(),
                    };
                    writeln!(
                        out,
                        "ok: {} records in {} segments ({range}), {} signed checkpoints, key {}",
                        r.records, r.segments, r.checkpoints, r.key_id
                    )?;
                    if r.unsigned_tail > 0 {
                        writeln!(out, "note: the last {} records are not yet under a signed head", r.unsigned_tail)?;
                    }
                    Ok(0)
                }
                Err(palisade_auditlog::VerifyError::Damaged(p)) => {
                    writeln!(out, "FAILED: {p}")?;
                    Ok(1)
                }
                Err(e) => Err(e).with_context(|| format!("verifying {}", dir.display())),
            }
        }
        AuditCommand::Query { since, principal, decision, source, route, client_ip, limit } => {
            let since_ms = palisade_audit::parse_since(&since).map_err(anyhow::Error::msg)?;
            let store = args.state.open().await?;
            let q = palisade_audit::Query {
                since_ms: Some(since_ms),
                principal,
                decision,
                source,
                route,
                client_ip,
                limit: limit.clamp(1, 10_000),
            };
            let rows = palisade_audit::query_store(&store, &q).await;
            store.close().await;
            for v in rows? {
                writeln!(out, "{v}")?;
            }
            Ok(0)
        }
        AuditCommand::PublicKey => {
            let key = derived_key(&args.state).await?;
            writeln!(out, "{}", hex::encode(key))?;
            Ok(0)
        }
    }
}
