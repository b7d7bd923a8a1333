//! `palisade gateway`: run the gateway, reload on SIGHUP or file change, drain on SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use palisade_core::LoadedConfig;
use palisade_proxy::{Gateway, Metrics};
use tokio::signal::unix::{signal, SignalKind};

/// Which command runs the engine: the same engine, a different contract on the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    /// `palisade sidecar`: the config must make it a mesh member with an inbound mesh listener.
    Sidecar,
}

pub async fn run(config: PathBuf, role: Role) -> anyhow::Result<()> {
    let loaded = palisade_core::load_file(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if role == Role::Sidecar {
        let c = &loaded.config;
        if c.mesh.is_none() || (c.listeners.mesh.is_none() && c.listeners.local.is_empty()) {
            anyhow::bail!(
                "{}: a sidecar config needs the `mesh` section (CA and attestation) and `listeners.mesh` (inbound mTLS) \
                 or `listeners.local` (outbound)",
                loaded.file
            );
        }
    }
    let (gw, renewal) = start(&loaded, role).await?;
    let r = serve_until_signal(gw, Some(config)).await;
    if let Some(t) = renewal {
        t.abort();
    }
    r
}

/// Starts the engine; with a `mesh` section, first gets the SVID (the returned task renews it).
pub async fn start(
    loaded: &LoadedConfig,
    role: Role,
) -> anyhow::Result<(Gateway, Option<tokio::task::JoinHandle<()>>)> {
    let (source, renewal) = match crate::mesh::svid_source(loaded).await? {
        Some((s, t)) => (Some(s), Some(t)),
        None => (None, None),
    };
    let gw = Gateway::start_with(loaded, Arc::new(Metrics::new()), source).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let local: Vec<String> = gw.local_addrs.iter().map(|(n, a)| format!("{n}={a}")).collect();
    tracing::info!(
        http = gw.http_addr.map(|a| a.to_string()).unwrap_or_default(),
        https = gw.https_addr.map(|a| a.to_string()).unwrap_or_default(),
        mesh = gw.mesh_addr.map(|a| a.to_string()).unwrap_or_default(),
        local = local.join(","),
        admin = %gw.admin_addr,
        config = %loaded.file,
        "{}",
        if role == Role::Sidecar { "sidecar listening" } else { "gateway listening" }
    );
    Ok((gw, renewal))
}

fn fingerprint(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// Serve until SIGTERM or Ctrl-C, reloading `config` (if given) on SIGHUP or when it changes.
pub async fn serve_until_signal(gw: Gateway, config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    let mut last = config.as_deref().and_then(fingerprint);
    loop {
        let reason = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => "SIGHUP",
            _ = poll.tick() => {
                let Some(path) = config.as_deref() else { continue };
                let now = fingerprint(path);
                if now.is_none() || now == last {
                    continue;
                }
                last = now;
                "file change"
            }
        };
        let Some(path) = config.as_deref() else { continue };
        last = fingerprint(path);
        let result = match palisade_core::load_file(path) {
            Ok(loaded) => gw.reload(&loaded),
            Err(e) => {
                // Gateway::reload counts the outcomes it sees; a file that does not parse never reaches it.
                gw.metrics().reload(false);
                Err(e)
            }
        };
        match result {
            Ok(()) => tracing::info!(reason, config = %path.display(), "configuration reloaded"),
            Err(e) => {
                tracing::error!(reason, error = %e.summary(), "configuration rejected; the previous configuration keeps serving")
            }
        }
    }
    tracing::info!("draining connections");
    gw.drain().await;
    tracing::info!("stopped");
    Ok(())
}
