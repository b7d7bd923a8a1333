//! Mesh membership for `palisade gateway` and `palisade sidecar`: when the config has a `mesh`
//! section, get this proxy's SVID from the CA (attesting with the join token or Kubernetes token),
//! keep it renewed in the background, and hand the engine the cell it reads per handshake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use palisade_ca::client::{spawn_rotation, Attestation, SvidClient};
use palisade_core::{LoadedConfig, Secret, SvidCell, SvidSource};

/// How long start-up waits for the CA (it may be starting too) before giving up.
const FETCH_PATIENCE: Duration = Duration::from_secs(30);

/// The SVID source for `loaded`, or `None` without a `mesh` section. The returned task renews it.
pub async fn svid_source(
    loaded: &LoadedConfig,
) -> anyhow::Result<Option<(Arc<dyn SvidSource>, tokio::task::JoinHandle<()>)>> {
    let Some(m) = &loaded.config.mesh else { return Ok(None) };
    let server_ca = match &m.server_ca {
        Some(p) => {
            let path = loaded.resolve_path(p);
            Some(std::fs::read(&path).with_context(|| format!("mesh.server_ca: reading {}", path.display()))?)
        }
        None => None,
    };
    let client = SvidClient::new(&m.server, server_ca.as_deref(), Some(&m.trust_domain)).context("mesh.server")?;
    let attestation = match (&m.join_token, &m.k8s_token_file) {
        (Some(r), _) => {
            let secret = r.resolve(&loaded.base_dir).map_err(|e| anyhow::anyhow!("mesh.join_token: {e}"))?;
            let token = std::str::from_utf8(secret.expose()).context("mesh.join_token: not UTF-8")?.trim();
            if token.is_empty() {
                bail!("mesh.join_token: the token is empty");
            }
            Attestation::JoinToken(Secret::from(token.as_bytes().to_vec()))
        }
        (None, Some(p)) => Attestation::K8sTokenFile(loaded.resolve_path(p)),
        (None, None) => bail!("mesh: one of join_token or k8s_token_file is required"),
    };
    let started = Instant::now();
    let mut wait = Duration::from_millis(200);
    let svid = loop {
        match client.fetch(&attestation).await {
            Ok(svid) => break svid,
            // A refused attestation will not get better by retrying; an unreachable CA may.
            Err(e) if e.is_refused() => bail!("the CA refused this proxy's attestation: {e}"),
            Err(e) if started.elapsed() < FETCH_PATIENCE => {
                tracing::warn!(server = %m.server, error = %e, "cannot get an SVID yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => bail!("cannot get an SVID from {}: {e}", m.server),
        }
    };
    tracing::info!(spiffe_id = %svid.spiffe_id, not_after = svid.not_after, "SVID issued");
    let cell = Arc::new(SvidCell::new(svid));
    let task = spawn_rotation(client, attestation, Arc::clone(&cell));
    Ok(Some((cell, task)))
}
