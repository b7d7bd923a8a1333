//! The workload-side client of the CA API (`/ca/v1/`): fetch an X.509-SVID with an attestation,
//! renew it with a proof signed by the current key, refresh the trust bundle, and keep an
//! [`SvidCell`] current ([`spawn_rotation`]). Invariant: every response is validated whole
//! before it is returned, so a bad response never replaces a good SVID.
//!
//! Every call makes a fresh P-256 key; the private key never leaves the process.

mod rotation;
pub(crate) mod validate;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_core::mesh::{SpiffeId, Svid};
use palisade_core::Secret;
use serde::Deserialize;

pub use rotation::spawn_rotation;

/// Deadline for one whole exchange with the CA (connect, request, full response body).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read from the CA.
const MAX_BODY: usize = 1 << 20;
/// Largest Kubernetes service-account token file read (real ones are 1-2 KiB).
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// How the workload proves who it is when it has no valid SVID.
#[derive(Debug, Clone)]
pub enum Attestation {
    /// A join token issued by `palisade server`; single use, so it cannot re-attest later.
    JoinToken(Secret),
    /// A projected Kubernetes service-account token file; re-read on every use because the
    /// kubelet rotates it, so it can re-attest whenever the SVID is lost or refused.
    K8sTokenFile(PathBuf),
}

impl Attestation {
    /// Whether this attestation can be presented again (a join token is consumed by its first use).
    pub fn is_reusable(&self) -> bool {
        matches!(self, Attestation::K8sTokenFile(_))
    }
}

/// Why a CA call failed. Messages never hold a token, key or certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client configuration is unusable (URL, server CA, trust domain).
    #[error("CA client configuration: {0}")]
    Config(String),
    /// The request never got an HTTP response (connection refused, TLS failure, reset).
    #[error("CA server {url}: {detail}")]
    Transport { url: String, detail: String },
    /// No complete response within the deadline.
    #[error("CA server {url}: no complete response within {} ms", timeout.as_millis())]
    Timeout { url: String, timeout: Duration },
    /// The CA answered with an error status. `error`/`description` come from its JSON body (sanitized, truncated).
    #[error("CA server {url}: HTTP {status}: {error}: {description}")]
    Status { url: String, status: u16, error: String, description: String },
    /// The CA answered 200 but the response failed validation; nothing was installed.
    #[error("CA server {url}: invalid response: {detail}")]
    InvalidResponse { url: String, detail: String },
    /// The Kubernetes token file could not be read.
    #[error("Kubernetes service-account token {}: {detail}", path.display())]
    TokenFile { path: PathBuf, detail: String },
    /// The current SVID's key cannot sign the renewal proof, or a new key/CSR could not be made.
    #[error("SVID key: {0}")]
    Key(String),
}

impl ClientError {
    /// The CA refused to renew or issue (HTTP 401 or 403): retrying the same credential is pointless,
    /// re-attestation is needed.
    pub fn is_refused(&self) -> bool {
        matches!(self, ClientError::Status { status: 401 | 403, .. })
    }
}

/// A client of one CA server. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct SvidClient {
    base: String,
    trust_domain: Option<String>,
    timeout: Duration,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for SvidClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidClient").field("server", &self.base).field("trust_domain", &self.trust_domain).finish()
    }
}

/// The 200 body of `POST /ca/v1/svid`.
#[derive(Deserialize)]
struct SvidResponse {
    spiffe_id: String,
    svid: String,
    bundle: String,
    // `not_before`/`not_after` are not read: the validity installed is the leaf's own, which is what
    // peers check.
}

#[derive(Deserialize)]
struct BundleResponse {
    keys: Vec<BundleKey>,
    #[serde(default)]
    spiffe_refresh_hint: Option<u64>,
}

#[derive(Deserialize)]
struct BundleKey {
    #[serde(rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    x5c: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

impl SvidClient {
    /// A client of the `palisade server` at `server`, an `http://` or `https://` base URL (a path
    /// prefix is kept, a trailing `/` dropped). For https, `server_ca` holds the PEM roots that
    /// authenticate the server; `None` uses Mozilla's roots (webpki-roots), for a server with a
    /// public certificate. Plain http sends attestation tokens in clear: use it on loopback only.
    /// `trust_domain`, when given, is the only trust domain an issued SPIFFE ID may be in.
    pub fn new(server: &str, server_ca: Option<&[u8]>, trust_domain: Option<&str>) -> Result<SvidClient, ClientError> {
        let base = server.trim_end_matches('/');
        let lower = base.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(ClientError::Config(format!("server URL {server:?} must start with http:// or https://")));
        }
        let uri: http::Uri =
            base.parse().map_err(|_| ClientError::Config(format!("server URL {server:?} is invalid")))?;
        if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
            return Err(ClientError::Config(format!("server URL {server:?} needs a host and no query")));
        }
        if let Some(td) = trust_domain {
            SpiffeId::parse(&format!("spiffe://{td}/x"))
                .map_err(|_| ClientError::Config(format!("trust domain {td:?} is invalid")))?;
        }
        let tls =
            palisade_core::net::client_tls(server_ca).map_err(|m| ClientError::Config(format!("server_ca {m}")))?;
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let http = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(SvidClient {
            base: base.to_owned(),
            trust_domain: trust_domain.map(str::to_owned),
            timeout: DEFAULT_TIMEOUT,
            http,
        })
    }

    /// Replace the per-call deadline (default 10 s) for the whole exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> SvidClient {
        self.timeout = timeout;
        self
    }

    /// Get a first SVID: a new P-256 key, a CSR for it, and the attestation.
    pub async fn fetch(&self, attestation: &Attestation) -> Result<Svid, ClientError> {
        let (key, csr_pem, _csr_der) = new_csr()?;
        let body = match attestation {
            Attestation::JoinToken(token) => {
                let token = std::str::from_utf8(token.expose())
                    .map_err(|_| ClientError::Config("the join token is not UTF-8".into()))?;
                serde_json::json!({ "csr": csr_pem, "join_token": token })
            }
            Attestation::K8sTokenFile(path) => {
                let token = read_token_file(path).await?;
                serde_json::json!({ "csr": csr_pem, "k8s_token": token })
            }
        };
        self.post_svid(body, key, None).await
    }

    /// Renew `current`: a new P-256 key and CSR, with a proof of possession of the current key
    /// (its ECDSA P-256 SHA-256 signature over the CSR's DER). The new SVID must carry the same ID.
    pub async fn renew(&self, current: &Svid) -> Result<Svid, ClientError> {
        let (key, csr_pem, csr_der) = new_csr()?;
        let rng = ring::rand::SystemRandom::new();
        let current_key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            current.key_pkcs8.expose(),
            &rng,
        )
        .map_err(|_| ClientError::Key("the current SVID key is not a P-256 PKCS#8 key".into()))?;
        let proof = current_key
            .sign(&rng, &csr_der)
            .map_err(|_| ClientError::Key("signing the renewal proof failed".into()))?;
        let body = serde_json::json!({
            "csr": csr_pem,
            "svid": validate::pem_encode_certs(&current.chain),
            "proof": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(proof.as_ref()),
        });
        self.post_svid(body, key, Some(&current.spiffe_id)).await
    }

    /// The trust bundle: DER CA certificates (the `x509-svid` keys) and the server's refresh hint.
    pub async fn bundle(&self) -> Result<(Vec<Vec<u8>>, Duration), ClientError> {
        let url = format!("{}/ca/v1/bundle.json", self.base);
        let req = http::Request::get(&url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| ClientError::Config(format!("{url} is not a valid request URI")))?;
        let body = self.exchange(&url, req).await?;
        parse_bundle_json(&body).map_err(|detail| ClientError::InvalidResponse { url, detail })
    }

    async fn post_svid(
        &self,
        body: serde_json::Value,
        key: rcgen::KeyPair,
        expect_id: Option<&SpiffeId>,
    ) -> Result<Svid, ClientError> {
        let url = format!("{}/ca/v1/svid", self.base);
        let req = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| ClientError::Config(format!("{url} is not a valid request URI")))?;
        drop(body);
        let resp = self.exchange(&url, req).await?;
        let checked = check_svid_response(
            &resp,
            key.public_key_raw(),
            self.trust_domain.as_deref(),
            expect_id,
            validate::unix_now(),
        )
        .map_err(|detail| ClientError::InvalidResponse { url, detail })?;
        Ok(Svid {
            spiffe_id: checked.spiffe_id,
            chain: checked.chain,
            key_pkcs8: Secret::from(key.serialize_der()),
            bundle: checked.bundle,
            not_before: checked.not_before,
            not_after: checked.not_after,
        })
    }

    /// One request with the deadline and body cap; a non-200 status becomes [`ClientError::Status`].
    async fn exchange(&self, url: &str, req: http::Request<Full<Bytes>>) -> Result<Bytes, ClientError> {
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| ClientError::Transport {
                url: url.to_owned(),
                detail: palisade_core::net::error_chain(&e),
            })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| {
                ClientError::Transport { url: url.to_owned(), detail: format!("reading the response body: {e}") }
            })?;
            Ok::<_, ClientError>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout { url: url.to_owned(), timeout: self.timeout })??;
        if status != http::StatusCode::OK {
            let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            let (error, description) = match parsed {
                Some(e) => (e.error.unwrap_or_default(), e.error_description.unwrap_or_default()),
                None => (String::new(), String::new()),
            };
            return Err(ClientError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
                error: sanitize(&error, 64),
                description: sanitize(&description, 200),
            });
        }
        Ok(body)
    }
}

/// Parse and validate the 200 body of `POST /ca/v1/svid` for a CSR whose public key (raw EC
/// point) is `key_raw` (see [`validate::check_svid`]).
pub(crate) fn check_svid_response(
    body: &[u8],
    key_raw: &[u8],
    trust_domain: Option<&str>,
    expect_id: Option<&SpiffeId>,
    now: u64,
) -> Result<validate::CheckedSvid, String> {
    let parsed: SvidResponse = serde_json::from_slice(body).map_err(|e| format!("not an SVID response JSON: {e}"))?;
    validate::check_svid(&parsed.spiffe_id, &parsed.svid, &parsed.bundle, key_raw, trust_domain, expect_id, now)
}

/// Parse a `bundle.json` body (SPIFFE bundle): the DER `x509-svid` CA certificates, checked
/// usable, and the refresh hint (300 s when absent).
pub(crate) fn parse_bundle_json(body: &[u8]) -> Result<(Vec<Vec<u8>>, Duration), String> {
    let parsed: BundleResponse = serde_json::from_slice(body).map_err(|e| format!("not a SPIFFE bundle JSON: {e}"))?;
    let mut certs = Vec::new();
    for key in parsed.keys.iter().filter(|k| k.use_.as_deref() == Some("x509-svid")) {
        // SPIFFE bundle format §4.2.2: an x509-svid key has exactly one certificate.
        let [b64] = key.x5c.as_slice() else {
            return Err("an x509-svid key must hold exactly one x5c certificate".into());
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "an x5c entry is not standard base64".to_owned())?;
        certs.push(der);
    }
    validate::check_bundle(&certs)?;
    let hint = Duration::from_secs(parsed.spiffe_refresh_hint.unwrap_or(300));
    Ok((certs, hint))
}

/// Server-supplied text for an error message: printable ASCII only, truncated.
fn sanitize(s: &str, max: usize) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(max).collect()
}

/// A new P-256 key and a CSR (PEM and DER) for it with an empty subject: the CA decides the ID.
fn new_csr() -> Result<(rcgen::KeyPair, String, Vec<u8>), ClientError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ClientError::Key(format!("generating a P-256 key: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| ClientError::Key(format!("building the CSR: {e}")))?;
    let pem = csr.pem().map_err(|e| ClientError::Key(format!("encoding the CSR: {e}")))?;
    let der = csr.der().to_vec();
    Ok((key, pem, der))
}

async fn read_token_file(path: &std::path::Path) -> Result<String, ClientError> {
    let err = |detail: String| ClientError::TokenFile { path: path.to_owned(), detail };
    let meta = tokio::fs::metadata(path).await.map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_TOKEN_FILE {
        return Err(err(format!("larger than {MAX_TOKEN_FILE} bytes")));
    }
    let raw = tokio::fs::read(path).await.map_err(|e| err(e.to_string()))?;
    let token = String::from_utf8(raw).map_err(|_| err("not UTF-8".into()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(err("empty".into()));
    }
    Ok(token.to_owned())
}
