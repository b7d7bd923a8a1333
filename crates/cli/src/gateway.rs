//! `palisade gateway`: run the gateway, reload on SIGHUP or file change, drain on SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use palisade_core::LoadedConfig;
use palisade_proxy::{Gateway, Metrics};
use tokio::signal::unix::{signal, SignalKind};

pub async fn run(config: PathBuf) -> anyhow::Result<()> {
    let loaded = palisade_core::load_file(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gw = start(&loaded).await?;
    serve_until_signal(gw, Some(config)).await
}

pub async fn start(loaded: &LoadedConfig) -> anyhow::Result<Gateway> {
    let gw = Gateway::start(loaded, Arc::new(Metrics::new())).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(
        http = gw.http_addr.map(|a| a.to_string()).unwrap_or_default(),
        https = gw.https_addr.map(|a| a.to_string()).unwrap_or_default(),
        admin = %gw.admin_addr,
        config = %loaded.file,
        "gateway listening"
    );
    Ok(gw)
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
