//! `palisade server`: the control-plane HTTP server (the identity provider, the workload CA and
//! the vault's data-protection API) on 127.0.0.1:9400, plain HTTP or TLS with optional client certificates (RFC 8705), over SQLite
//! under `./data/` or PostgreSQL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::Router;
use clap::Args;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_ca::{Ca, CaConfig, K8sConfig};
use palisade_crypto::{Alg, MasterKey};
use palisade_idp::{Idp, IdpConfig, Peer};
use palisade_store::Store;
use palisade_vault::{MasterKeySource, Pkcs11Config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tower::ServiceExt;
use zeroize::Zeroizing;

/// Where the state is: shared by `server`, `idp` and `keys`.
#[derive(Args, Debug, Clone)]
pub struct StateArgs {
    /// Directory for the SQLite database, master key and admin token
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// PostgreSQL instead of SQLite, e.g. postgres://palisade@db/palisade
    #[arg(long, env = "PALISADE_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the master key comes from (it seals every key Palisade stores): `file:PATH`,
    /// `env:VAR` (base64 of 32 bytes) or `pkcs11:module=LIB;token=LABEL;key=LABEL;pin=file:PATH
    /// (or pin=env:VAR)[;wrapped=PATH][;generate=true]` (a root key wrapped by an HSM key).
    /// Default: PALISADE_MASTER_KEY if set, else <data>/master.key
    #[arg(long, env = "PALISADE_MASTER_KEY_SOURCE", value_name = "SPEC", hide_env_values = true)]
    pub master_key: Option<String>,
}

impl StateArgs {
    pub async fn open(&self) -> anyhow::Result<Store> {
        std::fs::create_dir_all(&self.data_dir).with_context(|| format!("creating {}", self.data_dir.display()))?;
        let url = self.database_url.clone().unwrap_or_else(|| palisade_store::sqlite_url(&self.data_dir));
        Ok(Store::open(&url).await?)
    }

    /// The master key through the vault's providers: `--master-key`, else `PALISADE_MASTER_KEY`
    /// (base64) if set, else `<data>/master.key` (created 0600).
    pub fn master_key(&self) -> anyhow::Result<MasterKey> {
        let source = self.master_key_source()?;
        Ok(palisade_vault::load_master_key(&source)?)
    }

    pub fn master_key_source(&self) -> anyhow::Result<MasterKeySource> {
        match &self.master_key {
            Some(spec) => parse_master_key_source(spec, &self.data_dir),
            None if std::env::var_os("PALISADE_MASTER_KEY").is_some() => {
                Ok(MasterKeySource::Env("PALISADE_MASTER_KEY".into()))
            }
            None => Ok(MasterKeySource::File(self.data_dir.join("master.key"))),
        }
    }
}

/// Parse `--master-key`. Errors name the setting, never a PIN.
pub fn parse_master_key_source(spec: &str, data_dir: &Path) -> anyhow::Result<MasterKeySource> {
    if let Some(p) = spec.strip_prefix("file:") {
        if p.is_empty() {
            bail!("--master-key file: needs a path");
        }
        return Ok(MasterKeySource::File(PathBuf::from(p)));
    }
    if let Some(v) = spec.strip_prefix("env:") {
        if v.is_empty() {
            bail!("--master-key env: needs a variable name");
        }
        return Ok(MasterKeySource::Env(v.to_owned()));
    }
    let Some(rest) = spec.strip_prefix("pkcs11:") else {
        bail!("--master-key is file:PATH, env:VAR or pkcs11:module=...;token=...;key=...;pin=file:PATH");
    };
    let mut kv: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for part in rest.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else { bail!("--master-key pkcs11: {part:?} is not key=value") };
        if !["module", "token", "key", "pin", "wrapped", "generate"].contains(&k) {
            bail!("--master-key pkcs11: unknown setting {k:?} (module, token, key, pin, wrapped, generate)");
        }
        if kv.insert(k, v).is_some() {
            bail!("--master-key pkcs11: {k} is given twice");
        }
    }
    let need = |k: &str| {
        kv.get(k).copied().filter(|v| !v.is_empty()).with_context(|| format!("--master-key pkcs11: {k}= is required"))
    };
    let pin_ref = need("pin")?;
    let pin = if let Some(path) = pin_ref.strip_prefix("file:") {
        let text =
            Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading the PIN file {path}"))?);
        Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned())
    } else if let Some(var) = pin_ref.strip_prefix("env:") {
        Zeroizing::new(std::env::var(var).with_context(|| format!("the PIN variable {var} is not set"))?)
    } else {
        bail!("--master-key pkcs11: pin= is file:PATH or env:VAR (a PIN is not given on the command line)");
    };
    let generate_key = match kv.get("generate").copied() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => bail!("--master-key pkcs11: generate= is true or false"),
    };
    Ok(MasterKeySource::Pkcs11(Pkcs11Config {
        module: PathBuf::from(need("module")?),
        token_label: need("token")?.to_owned(),
        pin,
        key_label: need("key")?.to_owned(),
        generate_key,
        wrapped_key_file: kv.get("wrapped").map_or_else(|| data_dir.join("master.key.wrapped"), PathBuf::from),
    }))
}

pub fn parse_alg(s: &str) -> Result<Alg, String> {
    match s.to_ascii_lowercase().as_str() {
        "es256" => Ok(Alg::ES256),
        "eddsa" | "ed25519" => Ok(Alg::EdDSA),
        "rs256" => Ok(Alg::RS256),
        _ => Err(format!("unknown algorithm {s:?}; use es256, eddsa or rs256")),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 90s, 10m, 24h)"))
}

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:9400")]
    pub listen: SocketAddr,
    /// Issuer URL (default: http(s)://<listen>)
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key for --tls-cert (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Ask for client certificates issued by these CAs (PEM) for tls_client_auth (RFC 8705)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Access-token lifetime
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// ID-token lifetime
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub id_token_ttl: Duration,
    /// Refresh-token lifetime (each rotation starts a new one)
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub refresh_token_ttl: Duration,
    /// Signing algorithm of the first key: es256, eddsa or rs256
    #[arg(long, default_value = "es256", value_parser = parse_alg)]
    pub key_alg: Alg,
    /// Admin API credential file (created 0600 with a random token if missing);
    /// PALISADE_ADMIN_TOKEN overrides it
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub ca: CaServerArgs,
    /// Security monitoring settings (YAML: audit_log, detectors, alerts, webhooks)
    #[arg(long, value_name = "FILE")]
    pub monitor_config: Option<PathBuf>,
    /// Cedar policy of the vault's detokenize (principal User/Client/Admin, action
    /// Action::"detokenize", resource Template::"<key>"); without it every detokenize is refused
    #[arg(long, value_name = "FILE")]
    pub vault_policy: Option<PathBuf>,
    /// How often keys whose scheduled deletion is due are destroyed
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub vault_purge_interval: Duration,
}

/// The workload CA's settings of `palisade server`.
#[derive(Args, Debug, Clone)]
pub struct CaServerArgs {
    /// SPIFFE trust domain of the workload CA (stored with the CA; a mismatch later is an error)
    #[arg(long, default_value = "palisade.local", value_name = "DOMAIN")]
    pub trust_domain: String,
    /// Lifetime of issued X.509-SVIDs (at least 1s)
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub svid_ttl: Duration,
    /// spiffe_refresh_hint of the trust bundle at /ca/v1/bundle.json
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub bundle_refresh: Duration,
    /// Lifetime of the CA certificate made on first start
    #[arg(long, default_value = "365d", value_parser = parse_duration)]
    pub ca_validity: Duration,
    /// Kubernetes service-account token attestation: the cluster's JWKS file
    /// (kubectl get --raw /openid/v1/jwks)
    #[arg(long, value_name = "FILE", requires = "k8s_issuer")]
    pub k8s_jwks: Option<PathBuf>,
    /// Exact `iss` of the cluster's service-account tokens
    #[arg(long, value_name = "URL", requires = "k8s_jwks")]
    pub k8s_issuer: Option<String>,
    /// Audience the projected service-account tokens must carry
    #[arg(long, default_value = "palisade", value_name = "AUD")]
    pub k8s_audience: String,
}

impl CaServerArgs {
    pub fn defaults() -> CaServerArgs {
        CaServerArgs {
            trust_domain: "palisade.local".into(),
            svid_ttl: Duration::from_secs(3600),
            bundle_refresh: Duration::from_secs(300),
            ca_validity: Duration::from_secs(365 * 86_400),
            k8s_jwks: None,
            k8s_issuer: None,
            k8s_audience: "palisade".into(),
        }
    }

    pub fn config(&self) -> anyhow::Result<CaConfig> {
        let mut cfg = CaConfig::new(&self.trust_domain);
        cfg.svid_ttl = self.svid_ttl;
        cfg.bundle_refresh = self.bundle_refresh;
        cfg.ca_validity = self.ca_validity;
        if let (Some(file), Some(issuer)) = (&self.k8s_jwks, &self.k8s_issuer) {
            let jwks_json =
                std::fs::read_to_string(file).with_context(|| format!("reading --k8s-jwks {}", file.display()))?;
            cfg.k8s = Some(K8sConfig {
                issuer: issuer.clone(),
                audience: self.k8s_audience.clone(),
                jwks_json,
                leeway: Duration::from_secs(30),
            });
        }
        Ok(cfg)
    }
}

impl ServerArgs {
    pub fn defaults(data_dir: PathBuf) -> ServerArgs {
        ServerArgs {
            state: StateArgs { data_dir, database_url: None, master_key: None },
            listen: SocketAddr::from(([127, 0, 0, 1], 9400)),
            issuer: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            access_token_ttl: Duration::from_secs(600),
            id_token_ttl: Duration::from_secs(600),
            refresh_token_ttl: Duration::from_secs(86_400),
            key_alg: Alg::ES256,
            admin_token_file: None,
            ca: CaServerArgs::defaults(),
            monitor_config: None,
            vault_policy: None,
            vault_purge_interval: Duration::from_secs(60),
        }
    }
}

/// The token shippers present at `/audit/v1/events`: `<data>/audit-ingest.token`, created 0600.
pub fn ingest_token_file(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("audit-ingest.token");
    if !path.exists() {
        let token = palisade_idp::secrets::random_token(32);
        palisade_crypto::write_secret_file(&path, format!("{token}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// A SHA-256 digest from its hex form (as `admin_token_sha256` gives it).
fn sha256(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut out).ok()?;
    Some(out)
}

/// The dashboard's public PKCE client (`palisade-dashboard`), registered for this issuer.
async fn ensure_dashboard_client(idp: &Idp, issuer: &str) -> anyhow::Result<()> {
    use palisade_idp::model::{AuthMethod, ClientSpec, GrantType};
    let redirect = format!("{issuer}/ui/callback");
    let spec = ClientSpec {
        client_id: DASHBOARD_CLIENT.into(),
        name: "Palisade dashboard".into(),
        token_endpoint_auth_method: AuthMethod::None,
        grant_types: vec![GrantType::AuthorizationCode],
        redirect_uris: vec![redirect.clone()],
        post_logout_redirect_uris: vec![],
        scopes: ["openid", "profile", "roles"].map(String::from).to_vec(),
        default_scopes: vec!["openid".into()],
        audiences: vec![],
        jwks: None,
        tls_client_auth_subject_dn: None,
        skip_consent: true,
    };
    match idp.repo.client(DASHBOARD_CLIENT).await? {
        Some(c) if c.spec.redirect_uris == [redirect] => return Ok(()),
        Some(_) => palisade_idp::ops::remove_client(&idp.repo, DASHBOARD_CLIENT).await?,
        None => {}
    }
    palisade_idp::ops::add_client(&idp.repo, &spec).await?;
    Ok(())
}

pub const DASHBOARD_CLIENT: &str = "palisade-dashboard";

/// What the dashboard lists under certificates: the workload CAs.
struct CaCerts(Arc<Ca>);

#[async_trait::async_trait]
impl palisade_audit::CertSource for CaCerts {
    async fn certs(&self) -> Vec<palisade_dashboard::CertInfo> {
        let now = palisade_store::now();
        match self.0.status().await {
            Ok(st) => st
                .authorities
                .iter()
                .map(|a| palisade_dashboard::CertInfo {
                    name: format!("workload CA {}", a.id),
                    kind: format!("ca ({})", a.state),
                    subject: format!("trust domain {}", self.0.trust_domain()),
                    not_after: humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(a.not_after).unwrap_or(0)),
                    )
                    .to_string(),
                    seconds_left: a.not_after - now,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "dashboard: CA status unavailable");
                Vec::new()
            }
        }
    }
}

fn admin_token_sha256(args: &ServerArgs) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Ok(t) = std::env::var("PALISADE_ADMIN_TOKEN") {
        if t.trim().len() < 16 {
            bail!("PALISADE_ADMIN_TOKEN must be at least 16 characters");
        }
        return Ok((palisade_idp::secrets::sha256_hex(t.trim()), None));
    }
    let path = args.admin_token_file.clone().unwrap_or_else(|| args.state.data_dir.join("admin.token"));
    if !path.exists() {
        let token = palisade_idp::secrets::random_token(32);
        palisade_crypto::write_secret_file(&path, format!("{token}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let token = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok((palisade_idp::secrets::sha256_hex(token.trim()), Some(path)))
}

fn ttl(d: Duration, what: &str) -> anyhow::Result<u64> {
    let s = d.as_secs();
    if s == 0 {
        bail!("{what} must be at least 1s");
    }
    Ok(s)
}

/// A started server: its bound address and the task serving it.
pub struct Server {
    pub issuer: String,
    pub idp: Arc<Idp>,
    pub ca: Arc<Ca>,
    pub admin_token_file: Option<PathBuf>,
    pub audit: Arc<palisade_audit::AuditService>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn start(args: &ServerArgs) -> anyhow::Result<Server> {
    let store = args.state.open().await?;
    let master = args.state.master_key()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_config(c, k, args.tls_client_ca.as_deref())?),
        _ => None,
    };
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let issuer = args.issuer.clone().unwrap_or_else(|| format!("{scheme}://{addr}"));
    let (admin_sha, admin_token_file) = admin_token_sha256(args)?;
    let mut cfg = IdpConfig::new(&issuer);
    cfg.access_token_ttl = ttl(args.access_token_ttl, "--access-token-ttl")?;
    cfg.id_token_ttl = ttl(args.id_token_ttl, "--id-token-ttl")?;
    cfg.refresh_token_ttl = ttl(args.refresh_token_ttl, "--refresh-token-ttl")?;
    cfg.key_alg = args.key_alg;
    cfg.admin_token_sha256 = Some(admin_sha.clone());
    let idp = Idp::new(&store, master, cfg).await?;
    let background = idp.spawn_background();
    let ca = Ca::open(&store, args.state.master_key()?, args.ca.config()?).await?;
    if let Some(created) = ca.ensure_authority().await? {
        tracing::info!(ca = %created.id, trust_domain = %ca.trust_domain(), "workload CA created");
    }
    // Security monitoring: the audit log, detectors and the dashboard.
    let monitor_file = match &args.monitor_config {
        Some(f) => palisade_audit::MonitorFile::load(f).map_err(anyhow::Error::msg)?,
        None => palisade_audit::MonitorFile::default(),
    };
    let ingest_token = std::fs::read_to_string(ingest_token_file(&args.state.data_dir)?)?;
    let tokens = [sha256(&admin_sha), Some(sha256_of(ingest_token.trim()))].into_iter().flatten().collect();
    let audit = Arc::new(
        palisade_audit::AuditService::open(
            &store,
            &args.state.master_key()?,
            palisade_audit::AuditServiceConfig {
                dir: args.state.data_dir.join("audit/log"),
                file: monitor_file,
                token_sha256: tokens,
            },
        )
        .await?,
    );
    audit.set_cert_source(Arc::new(CaCerts(ca.clone())));
    idp.set_audit_sink(audit.local_sink("idp"));
    ca.set_audit_sink(audit.local_sink("ca"));
    let mut background = background;
    background.extend(audit.spawn_background());
    // Data protection: keys sealed under the same master key; detokenize only where the Cedar
    // policy permits.
    let detokenize: Arc<dyn palisade_vault::DetokenizeAuthorizer> = match &args.vault_policy {
        Some(f) => Arc::new(crate::vault_cmd::CedarDetokenize::load(f)?),
        None => Arc::new(palisade_vault::DenyAllDetokenize),
    };
    let vault =
        palisade_vault::Vault::new(&store, Arc::new(args.state.master_key()?), audit.local_sink("vault"), detokenize);
    if args.vault_purge_interval.is_zero() {
        bail!("--vault-purge-interval must be at least 1s");
    }
    background.push(crate::vault_cmd::spawn_purge(vault.clone(), args.vault_purge_interval));
    let vault_gate = crate::vault_cmd::VaultGate::new(idp.clone(), admin_sha.clone());
    background.push(vault_gate.spawn_revocation_sync());
    // The dashboard signs in through this idp; the client can only be registered for an https or
    // loopback issuer (plain http elsewhere is refused), else only the admin token signs in.
    if let Err(e) = ensure_dashboard_client(&idp, &issuer).await {
        tracing::warn!(error = %format!("{e:#}"), "dashboard: sign-in through the identity provider is off (use https); the admin token still works");
    }
    let mut dash = palisade_dashboard::DashboardConfig::new(&issuer, DASHBOARD_CLIENT, &issuer);
    dash.admin_token_sha256 = Some(admin_sha.clone());
    let metrics = Arc::new(metrics_registry(&audit));
    let router = idp
        .router()
        .merge(ca.router())
        .merge(audit.router())
        .merge(crate::vault_cmd::router(vault.clone(), vault_gate))
        .merge(palisade_dashboard::router(dash, audit.dashboard_data()))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move {
                    let mut out = String::new();
                    let _ = prometheus_client::encoding::text::encode(&mut out, &m);
                    ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
                }
            }),
        );
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, tls, router, rx));
    tracing::info!(
        address = %addr,
        issuer = %issuer,
        database = ?store.backend(),
        "server listening"
    );
    Ok(Server { issuer, idp, ca, admin_token_file, audit, shutdown, task, background })
}

fn sha256_of(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn metrics_registry(audit: &palisade_audit::AuditService) -> prometheus_client::registry::Registry {
    let mut r = prometheus_client::registry::Registry::with_prefix("palisade");
    audit.register_metrics(&mut r);
    r
}

impl Server {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for b in &self.background {
            b.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        self.audit.close().await;
    }
}

fn tls_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate found", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}: no PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
                roots.add(c.with_context(|| format!("{}: bad PEM", ca.display()))?)?;
            }
            // Clients without a certificate still connect (secrets, private_key_jwt); a
            // certificate that is presented must chain to these roots.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        tracker.spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        _ => return,
                    };
                    let cert =
                        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| Arc::new(c.to_vec()));
                    serve(TokioIo::new(tls), Peer { addr, client_cert: cert }, router).await;
                }
                None => serve(TokioIo::new(tcp), Peer { addr, client_cert: None }, router).await,
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

async fn serve<I>(io: I, peer: Peer, router: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(peer.addr);
        req.extensions_mut().insert(peer.clone());
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(Duration::from_secs(10)).timer(hyper_util::rt::TokioTimer::new());
    let _ = builder.serve_connection(io, svc).await;
}

/// Run until SIGTERM / Ctrl-C.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let server = start(&args).await?;
    if let Some(p) = &server.admin_token_file {
        tracing::info!(file = %p.display(), "admin API credential");
    }
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down");
    server.stop().await;
    Ok(())
}
