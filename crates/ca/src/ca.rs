//! The CA service: its CAs and their states, issuance, join tokens, bundle and status.
//! State transitions are lazy: a due pending CA is promoted (and the previous signer retired)
//! when issuance, the bundle or the status is next asked for; no background task is needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use palisade_core::mesh::SpiffeId;
use palisade_crypto::MasterKey;
use palisade_store::Store;
use serde::Serialize;
use serde_json::{json, Value};

use crate::attest::{token_hash, K8sConfig, K8sVerifier};
use crate::pki::{self, Material, Signer};
use crate::repo::{AuthorityRow, Repo};
use crate::CaError;

/// Settings of the CA service.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// The trust domain of every SPIFFE ID issued; stored with each CA, and a mismatch with the
    /// stored one is an error.
    pub trust_domain: String,
    /// SVID lifetime (at least 1 s; capped by the signing CA's own expiry).
    pub svid_ttl: Duration,
    /// `spiffe_refresh_hint` of the SPIFFE bundle.
    pub bundle_refresh: Duration,
    /// Lifetime of CA certificates this service makes.
    pub ca_validity: Duration,
    /// Kubernetes service-account token attestation; `None` refuses `k8s_token`.
    pub k8s: Option<K8sConfig>,
}

impl CaConfig {
    /// Defaults: SVIDs for 1 h, bundle refresh hint 5 min, CAs for 365 days, no Kubernetes.
    pub fn new(trust_domain: impl Into<String>) -> CaConfig {
        CaConfig {
            trust_domain: trust_domain.into(),
            svid_ttl: Duration::from_secs(3600),
            bundle_refresh: Duration::from_secs(300),
            ca_validity: Duration::from_secs(365 * 86_400),
            k8s: None,
        }
    }
}

/// How a workload proves who it is.
#[derive(Debug, Clone)]
pub enum Attestation {
    /// A one-time join token from [`Ca::create_join_token`].
    JoinToken(String),
    /// A Kubernetes projected service-account token (JWT).
    K8sToken(String),
    /// Renewal: the current SVID chain (PEM) and the base64url ECDSA P-256 SHA-256 signature
    /// of the CSR's DER made with the current SVID's key.
    Renewal { svid_pem: String, proof: String },
}

/// A request for an SVID.
#[derive(Debug, Clone)]
pub struct SvidRequest {
    /// PEM `CERTIFICATE REQUEST` with an ECDSA P-256 key; only its public key is used.
    pub csr_pem: String,
    pub attestation: Attestation,
}

/// A newly issued SVID.
#[derive(Debug, Clone)]
pub struct IssuedSvid {
    pub spiffe_id: SpiffeId,
    /// PEM: the SVID, then the signing CA's chain.
    pub chain_pem: String,
    /// PEM: every CA certificate in the trust bundle.
    pub bundle_pem: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Hex serial number.
    pub serial: String,
    /// Id of the CA that signed it.
    pub ca_id: String,
}

/// A join token, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct JoinToken {
    pub token: String,
    pub spiffe_id: String,
    pub expires_at: i64,
}

/// The trust bundle now.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// DER CA certificates, oldest CA first.
    pub certs: Vec<Vec<u8>>,
    /// Increases whenever the set of certificates changes.
    pub sequence: u64,
}

/// One CA as [`Ca::status`] reports it.
#[derive(Debug, Clone, Serialize)]
pub struct CaInfo {
    pub id: String,
    /// `pending`, `active` or `retired`.
    pub state: String,
    pub in_bundle: bool,
    pub not_after: i64,
    pub activates_at: i64,
    pub retired_at: Option<i64>,
    pub created_at: i64,
    pub svids_issued: i64,
    pub svids_valid: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaStatus {
    pub trust_domain: String,
    pub bundle_sequence: u64,
    pub authorities: Vec<CaInfo>,
}

/// The CAs as they stand at one instant, after lazy promotion.
struct View {
    rows: Vec<AuthorityRow>,
    in_bundle: Vec<bool>,
}

impl View {
    fn bundle_rows(&self) -> impl Iterator<Item = &AuthorityRow> {
        self.rows.iter().zip(&self.in_bundle).filter(|(_, b)| **b).map(|(r, _)| r)
    }

    fn active(&self, now: i64) -> Option<&AuthorityRow> {
        self.rows.iter().rev().find(|r| r.state == "active" && r.not_after > now)
    }

    /// Each CA added once, and each that left the bundle once: it never re-enters (a
    /// retired CA no longer signs, an expired one stays expired), so this only grows.
    fn sequence(&self) -> u64 {
        let left = self.in_bundle.iter().filter(|b| !**b).count();
        (self.rows.len() + left) as u64
    }
}

/// The workload CA. Made by [`Ca::open`]; shared in an `Arc`.
pub struct Ca {
    repo: Repo,
    master: MasterKey,
    cfg: CaConfig,
    k8s: Option<K8sVerifier>,
    /// The unsealed signer, by CA id.
    signer: Mutex<Option<Arc<Signer>>>,
    /// Where issuance decisions go (set once, by the server).
    pub(crate) audit: std::sync::OnceLock<Arc<dyn palisade_core::audit::AuditSink>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("trust_domain", &self.cfg.trust_domain).finish_non_exhaustive()
    }
}

fn secs(d: Duration, what: &str) -> Result<i64, CaError> {
    let s = i64::try_from(d.as_secs()).map_err(|_| CaError::Config(format!("{what} is too long")))?;
    if s < 1 {
        return Err(CaError::Config(format!("{what} must be at least 1s")));
    }
    Ok(s)
}

impl Ca {
    /// Where SVID issuance decisions (attestation accepted or refused) go.
    pub fn set_audit_sink(&self, sink: Arc<dyn palisade_core::audit::AuditSink>) {
        let _ = self.audit.set(sink);
    }

    /// Check the settings and that the stored CAs (if any) belong to the configured trust
    /// domain. Makes no CA: see [`Ca::ensure_authority`].
    pub async fn open(store: &Store, master: MasterKey, cfg: CaConfig) -> Result<Arc<Ca>, CaError> {
        SpiffeId::workload(&cfg.trust_domain, "ns", "sa")
            .map_err(|_| CaError::Config(format!("invalid trust domain {:?}", cfg.trust_domain)))?;
        secs(cfg.svid_ttl, "the SVID TTL")?;
        secs(cfg.bundle_refresh, "the bundle refresh hint")?;
        secs(cfg.ca_validity, "the CA validity")?;
        let k8s = cfg.k8s.as_ref().map(K8sVerifier::new).transpose()?;
        let ca = Ca {
            repo: Repo::new(store.pool().clone()),
            master,
            cfg,
            k8s,
            signer: Mutex::new(None),
            audit: std::sync::OnceLock::new(),
        };
        ca.check_trust_domain(&ca.repo.authorities().await?)?;
        Ok(Arc::new(ca))
    }

    pub fn trust_domain(&self) -> &str {
        &self.cfg.trust_domain
    }

    fn check_trust_domain(&self, rows: &[AuthorityRow]) -> Result<(), CaError> {
        match rows.iter().find(|r| r.trust_domain != self.cfg.trust_domain) {
            Some(r) => Err(CaError::TrustDomainMismatch {
                stored: r.trust_domain.clone(),
                configured: self.cfg.trust_domain.clone(),
            }),
            None => Ok(()),
        }
    }

    async fn view(&self, now: i64) -> Result<View, CaError> {
        let mut rows = self.repo.authorities().await?;
        self.check_trust_domain(&rows)?;
        let due = rows
            .iter()
            .filter(|r| r.state == "pending" && r.activates_at <= now)
            .max_by_key(|r| (r.activates_at, r.created_at))
            .map(|r| r.id.clone());
        if let Some(id) = due {
            self.repo.promote(&id, now).await?;
            tracing::info!(ca = %id, "workload CA activated; the previous one is retired");
            rows = self.repo.authorities().await?;
        }
        let last_svid: HashMap<String, i64> = self.repo.last_svid_expiry().await?.into_iter().collect();
        let in_bundle = rows
            .iter()
            .map(|r| {
                r.not_after > now
                    && match r.state.as_str() {
                        "pending" | "active" => true,
                        _ => last_svid.get(&r.id).is_some_and(|&t| t > now),
                    }
            })
            .collect();
        Ok(View { rows, in_bundle })
    }

    async fn add(&self, m: Material, activate_after: Duration, now: i64) -> Result<CaInfo, CaError> {
        let view = self.view(now).await?;
        // With no usable signer the new CA signs at once rather than leaving a gap.
        let delay = if view.active(now).is_some() {
            i64::try_from(activate_after.as_secs())
                .map_err(|_| CaError::Config("--activate-after is too long".into()))?
        } else {
            0
        };
        let id = pki::random_id()?;
        let sealed = self.master.seal(&m.key_der, id.as_bytes()).map_err(|_| CaError::Unseal(id.clone()))?;
        let row = AuthorityRow {
            id: id.clone(),
            trust_domain: self.cfg.trust_domain.clone(),
            state: "pending".into(),
            cert_pem: m.chain_pem,
            sealed_key: STANDARD.encode(sealed),
            not_after: m.not_after,
            created_at: now,
            activates_at: now.saturating_add(delay),
            retired_at: None,
        };
        self.repo.insert_authority(&row).await?;
        tracing::info!(ca = %id, activates_at = row.activates_at, "workload CA added");
        let status = self.status_at(now).await?;
        status.authorities.into_iter().find(|a| a.id == id).ok_or_else(|| CaError::Config("the new CA vanished".into()))
    }

    /// Make a self-signed root CA if no pending or active, unexpired CA exists (first start, or
    /// the signer expired). Returns the new CA, or `None` when one already exists.
    pub async fn ensure_authority(&self) -> Result<Option<CaInfo>, CaError> {
        let now = palisade_store::now();
        let view = self.view(now).await?;
        let usable = view.rows.iter().any(|r| (r.state == "pending" || r.state == "active") && r.not_after > now);
        if usable {
            return Ok(None);
        }
        self.repo.retire_active(now).await?;
        let m = pki::generate_root(&self.cfg.trust_domain, now, secs(self.cfg.ca_validity, "the CA validity")?)?;
        self.add(m, Duration::ZERO, now).await.map(Some)
    }

    /// Add a new self-signed root as pending: in the bundle at once, the signer after
    /// `activate_after` (at once if nothing signs now).
    pub async fn rotate(&self, activate_after: Duration) -> Result<CaInfo, CaError> {
        let now = palisade_store::now();
        let m = pki::generate_root(&self.cfg.trust_domain, now, secs(self.cfg.ca_validity, "the CA validity")?)?;
        self.add(m, activate_after, now).await
    }

    /// Import a CA (root or intermediate; PEM chain with the signing certificate first, and its
    /// PEM private key) as pending, like [`Ca::rotate`].
    pub async fn import(&self, cert_pem: &str, key_pem: &str, activate_after: Duration) -> Result<CaInfo, CaError> {
        let now = palisade_store::now();
        let m = pki::import(cert_pem, key_pem, &self.cfg.trust_domain, now)?;
        self.add(m, activate_after, now).await
    }

    /// A one-time join token for `spiffe://<td>/ns/<ns>/sa/<service>`, valid for `ttl`.
    pub async fn create_join_token(&self, ns: &str, service: &str, ttl: Duration) -> Result<JoinToken, CaError> {
        let id = SpiffeId::workload(&self.cfg.trust_domain, ns, service)
            .ok()
            .filter(|id| id.ns_service() == Some((ns, service)))
            .ok_or_else(|| {
                CaError::Config("namespace and service must be SPIFFE path segments (A-Z a-z 0-9 . - _)".into())
            })?;
        let ttl = secs(ttl, "the join token TTL")?;
        let now = palisade_store::now();
        let token = pki::random_token()?;
        let expires_at = now.saturating_add(ttl);
        self.repo.insert_join_token(&token_hash(&token), id.as_str(), now, expires_at).await?;
        // Expired tokens are of no use; drop those a day past expiry.
        self.repo.purge_join_tokens(now.saturating_sub(86_400)).await?;
        Ok(JoinToken { token, spiffe_id: id.to_string(), expires_at })
    }

    fn signer_for(&self, row: &AuthorityRow) -> Result<Arc<Signer>, CaError> {
        let mut cached = self.signer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = cached.as_ref().filter(|s| s.id == row.id) {
            return Ok(Arc::clone(s));
        }
        let sealed = STANDARD.decode(&row.sealed_key).map_err(|_| CaError::Unseal(row.id.clone()))?;
        let key = self.master.open(&sealed, row.id.as_bytes()).map_err(|_| CaError::Unseal(row.id.clone()))?;
        let signer = Arc::new(Signer::load(&row.id, &row.cert_pem, &key, row.not_after)?);
        *cached = Some(Arc::clone(&signer));
        Ok(signer)
    }

    /// Attest the workload and issue an SVID for the CSR's key.
    pub async fn issue(&self, req: &SvidRequest) -> Result<IssuedSvid, CaError> {
        let csr = pki::verify_csr(&req.csr_pem)?;
        let now = palisade_store::now();
        let view = self.view(now).await?;
        let row = view.active(now).ok_or_else(|| CaError::NoSigner("no active, unexpired CA".into()))?;
        // Load the signer before a join token is spent on a request that cannot be served.
        let signer = self.signer_for(row)?;
        let (id, method) = match &req.attestation {
            Attestation::JoinToken(token) => {
                if token.is_empty() || token.len() > 256 {
                    return Err(CaError::InvalidToken("unknown, used or expired join token".into()));
                }
                let id = self
                    .repo
                    .consume_join_token(&token_hash(token), now)
                    .await?
                    .ok_or_else(|| CaError::InvalidToken("unknown, used or expired join token".into()))?;
                (SpiffeId::parse(&id).map_err(CaError::Certificate)?, "join_token")
            }
            Attestation::K8sToken(token) => {
                let verifier = self
                    .k8s
                    .as_ref()
                    .ok_or_else(|| CaError::InvalidToken("Kubernetes attestation is not configured".into()))?;
                (verifier.verify(token, &self.cfg.trust_domain)?, "k8s_token")
            }
            Attestation::Renewal { svid_pem, proof } => {
                let anchors = self.bundle_of(&view)?.certs;
                let id = pki::verify_renewal(svid_pem, proof, &csr.der, &anchors, &self.cfg.trust_domain, now)?;
                (id, "renewal")
            }
        };
        let ttl = secs(self.cfg.svid_ttl, "the SVID TTL")?;
        let not_before = now.saturating_sub(pki::BACKDATE_SECS);
        let not_after = now.saturating_add(ttl).min(signer.not_after);
        let (der, serial) = signer.sign_svid(&csr, &id, not_before, not_after)?;
        self.repo.insert_svid(&serial, id.as_str(), &signer.id, now, not_after).await?;
        tracing::info!(spiffe_id = %id, serial = %serial, ca = %signer.id, attestation = method, not_after, "SVID issued");
        let mut chain_pem = pki::to_pem(&der);
        for c in &signer.chain {
            chain_pem.push_str(&pki::to_pem(c));
        }
        // The bundle must include the signer even if the signer's last SVID is this one.
        let bundle = self.bundle_of(&self.view(now).await?)?;
        Ok(IssuedSvid {
            spiffe_id: id,
            chain_pem,
            bundle_pem: bundle.certs.iter().map(|c| pki::to_pem(c)).collect(),
            not_before,
            not_after,
            serial,
            ca_id: signer.id.clone(),
        })
    }

    fn bundle_of(&self, view: &View) -> Result<Bundle, CaError> {
        let certs = view
            .bundle_rows()
            .map(|r| {
                pki::pem_certs(&r.cert_pem)
                    .map_err(CaError::Certificate)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| CaError::Certificate(format!("CA {} has no certificate", r.id)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Bundle { certs, sequence: view.sequence() })
    }

    /// The trust bundle now: every pending and active CA, and each retired one until the last
    /// SVID it signed has expired.
    pub async fn bundle(&self) -> Result<Bundle, CaError> {
        let view = self.view(palisade_store::now()).await?;
        self.bundle_of(&view)
    }

    /// The bundle's certificates in PEM.
    pub async fn bundle_pem(&self) -> Result<String, CaError> {
        Ok(self.bundle().await?.certs.iter().map(|c| pki::to_pem(c)).collect())
    }

    /// The bundle in the SPIFFE trust bundle format (JWK Set with `x5c`, `spiffe_sequence`,
    /// `spiffe_refresh_hint`).
    pub async fn bundle_json(&self) -> Result<Value, CaError> {
        let bundle = self.bundle().await?;
        let keys = bundle.certs.iter().map(|c| pki::bundle_jwk(c)).collect::<Result<Vec<_>, _>>()?;
        Ok(json!({
            "keys": keys,
            "spiffe_sequence": bundle.sequence,
            "spiffe_refresh_hint": self.cfg.bundle_refresh.as_secs(),
        }))
    }

    /// Every CA with its state and SVID counts.
    pub async fn status(&self) -> Result<CaStatus, CaError> {
        self.status_at(palisade_store::now()).await
    }

    async fn status_at(&self, now: i64) -> Result<CaStatus, CaError> {
        let view = self.view(now).await?;
        let counts: HashMap<String, (i64, i64)> =
            self.repo.svid_counts(now).await?.into_iter().map(|(id, t, v)| (id, (t, v))).collect();
        let authorities = view
            .rows
            .iter()
            .zip(&view.in_bundle)
            .map(|(r, &in_bundle)| {
                let (svids_issued, svids_valid) = counts.get(&r.id).copied().unwrap_or((0, 0));
                CaInfo {
                    id: r.id.clone(),
                    state: r.state.clone(),
                    in_bundle,
                    not_after: r.not_after,
                    activates_at: r.activates_at,
                    retired_at: r.retired_at,
                    created_at: r.created_at,
                    svids_issued,
                    svids_valid,
                }
            })
            .collect();
        Ok(CaStatus { trust_domain: self.cfg.trust_domain.clone(), bundle_sequence: view.sequence(), authorities })
    }
}
