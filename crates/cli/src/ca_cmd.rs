//! `palisade ca status|rotate|import|join-token`: workload CA administration straight against
//! the data directory (or `--database-url`), like `palisade idp`. Output is JSON on stdout; a
//! join token is printed once and never logged.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_ca::{Ca, CaConfig};
use serde_json::{json, Value};
use tracing::instrument::WithSubscriber;

use crate::server::{parse_duration, StateArgs};

#[derive(Args, Debug)]
pub struct CaArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// SPIFFE trust domain (must match the one stored with the CA)
    #[arg(long, global = true, default_value = "palisade.local", value_name = "DOMAIN")]
    pub trust_domain: String,
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Show every CA (state, validity, SVIDs issued and still valid) and the trust domain
    Status,
    /// Add a new CA: published in the trust bundle at once, the signer after --activate-after;
    /// the current one is retired and stays in the bundle until its last SVID expires
    Rotate {
        /// Delay between publishing and signing (workloads refresh their bundle meanwhile)
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        activate_after: Duration,
        /// Lifetime of the new CA certificate
        #[arg(long, default_value = "365d", value_parser = parse_duration)]
        ca_validity: Duration,
    },
    /// Import a CA (root or intermediate) with its private key; it is rotated in like `rotate`
    Import {
        /// PEM certificate chain: the CA certificate first, then its issuers (sent with SVIDs)
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// PEM private key of the CA certificate (ECDSA P-256/P-384 or RSA)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Delay between publishing and signing
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        activate_after: Duration,
    },
    /// Make a one-time join token for spiffe://<trust-domain>/ns/<ns>/sa/<service>
    JoinToken {
        #[arg(long)]
        ns: String,
        #[arg(long)]
        service: String,
        /// How long the token can be used
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        ttl: Duration,
    },
}

fn out(v: &Value) {
    use std::io::Write;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn run(args: CaArgs) -> anyhow::Result<()> {
    let store = args.state.open().await?;
    let master = args.state.master_key()?;
    let mut cfg = CaConfig::new(&args.trust_domain);
    if let CaCommand::Rotate { ca_validity, .. } = &args.command {
        cfg.ca_validity = *ca_validity;
    }
    let r = async {
        let ca = Ca::open(&store, master, cfg).await?;
        match args.command {
            CaCommand::Status => out(&serde_json::to_value(ca.status().await?)?),
            CaCommand::Rotate { activate_after, .. } => out(&serde_json::to_value(ca.rotate(activate_after).await?)?),
            CaCommand::Import { cert, key, activate_after } => {
                let cert = std::fs::read_to_string(&cert).with_context(|| format!("reading {}", cert.display()))?;
                let key = std::fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
                out(&serde_json::to_value(ca.import(&cert, &key, activate_after).await?)?)
            }
            CaCommand::JoinToken { ns, service, ttl } => {
                let t = ca.create_join_token(&ns, &service, ttl).await?;
                out(&json!({ "token": t.token, "spiffe_id": t.spiffe_id, "expires_at": t.expires_at }))
            }
        }
        anyhow::Ok(())
    }
    // Logs go to stdout in this binary; keep the command's stdout pure JSON.
    .with_subscriber(tracing::subscriber::NoSubscriber::default())
    .await;
    store.close().await;
    r
}
