//! Authentication filter (request phase): JWT bearer / DPoP-bound tokens, API keys and mTLS
//! client certificates, tried in the route's order. The first credential presented decides: an
//! invalid one is a 401 and never falls through to the next method. A verified identity is put on
//! the session and forwarded upstream as `x-palisade-*` headers; incoming `x-palisade-*` headers
//! are removed by the service before any filter runs, so they cannot be forged.

use std::sync::Arc;

use http::{header, HeaderName, HeaderValue, StatusCode};
use palisade_authn::{ApiKeyStore, AuthnError, DpopVerifier, JwtAuthenticator, VerifiedToken};
use palisade_core::audit::Stage;
use palisade_core::config::AuthnMethod;

use crate::error::ProxyError;
use crate::filter::{Filter, Flow, Session};
use crate::identity::{Identity, PeerCert, PrincipalKind};

pub(crate) struct ApiKeySource {
    pub(crate) store: ApiKeyStore,
    pub(crate) header: HeaderName,
    pub(crate) query: Option<String>,
}

pub(crate) struct AuthnFilter {
    pub(crate) methods: Vec<AuthnMethod>,
    pub(crate) jwt: Option<Arc<JwtAuthenticator>>,
    pub(crate) api_keys: Option<Arc<ApiKeySource>>,
    pub(crate) dpop: Arc<DpopVerifier>,
    pub(crate) query_token: bool,
    pub(crate) require_dpop: bool,
    /// No credential at all passes as anonymous (authorization then decides).
    pub(crate) allow_anonymous: bool,
}

const FORWARDED: [HeaderName; 6] = [
    HeaderName::from_static("x-palisade-principal"),
    HeaderName::from_static("x-palisade-subject"),
    HeaderName::from_static("x-palisade-client-id"),
    HeaderName::from_static("x-palisade-scopes"),
    HeaderName::from_static("x-palisade-roles"),
    HeaderName::from_static("x-palisade-auth-method"),
];

/// The identity a verified token names, with its forwarded headers made.
fn jwt_identity(verified: &VerifiedToken) -> Identity {
    let client_id = verified.client_id().map(str::to_owned);
    let sub = verified.subject().unwrap_or_default().to_owned();
    let kind = if client_id.as_deref() == Some(sub.as_str()) { PrincipalKind::Client } else { PrincipalKind::User };
    let mut id = Identity::new(kind, sub, "jwt");
    id.client_id = client_id;
    id.issuer = Some(verified.issuer().to_owned());
    id.scopes = verified.scopes().into_iter().map(str::to_owned).collect();
    id.roles = verified.roles().into_iter().map(str::to_owned).collect();
    id.claims = Some(verified.shared_claims());
    id.forwarded = Some(forwarded_headers(&id).into());
    id
}

/// The scheme and token of an `Authorization: Bearer` or `DPoP` header.
///
/// Byte-wise, as `to_str` would judge it: a `HeaderValue` holds no control character but tab,
/// so "ASCII" is "visible ASCII"; a value with other bytes carries no token.
fn in_header(v: &HeaderValue) -> Option<(&'static str, &str)> {
    let b = v.as_bytes();
    if !b.is_ascii() {
        return None;
    }
    let space = b.iter().position(|&c| c == b' ')?;
    let scheme = match &b[..space] {
        s if s.eq_ignore_ascii_case(b"bearer") => "Bearer",
        s if s.eq_ignore_ascii_case(b"dpop") => "DPoP",
        _ => return None,
    };
    Some((scheme, std::str::from_utf8(b[space + 1..].trim_ascii()).ok()?))
}

/// The audit reason for an identity verified by `method` (no formatting on the request path).
fn authenticated_by(method: &'static str) -> String {
    match method {
        "jwt" => "authenticated by jwt".into(),
        "api_key" => "authenticated by api_key".into(),
        "mtls" => "authenticated by mtls".into(),
        other => format!("authenticated by {other}"),
    }
}

/// The `x-palisade-*` headers for `id` (a value that is not a valid header value is left out).
fn forwarded_headers(id: &Identity) -> Vec<(HeaderName, HeaderValue)> {
    let values = [
        Some(id.principal_ref()),
        Some(id.id().to_owned()),
        id.client_id().map(str::to_owned),
        Some(id.scopes().join(" ")),
        Some(id.roles().join(",")),
        Some(id.method().to_owned()),
    ];
    FORWARDED
        .iter()
        .zip(values)
        .filter_map(|(name, v)| Some((name.clone(), HeaderValue::from_str(&v?).ok()?)))
        .collect()
}

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v)
}

fn challenge(scheme: &str, err: Option<&AuthnError>) -> Vec<(HeaderName, HeaderValue)> {
    let text = match err {
        None => format!("{scheme} realm=\"palisade\""),
        Some(e) => format!(
            "{scheme} realm=\"palisade\", error=\"{}\", error_description=\"{}\"",
            e.oauth_error(),
            e.description().replace(['"', '\\'], "'")
        ),
    };
    HeaderValue::from_str(&text).map(|v| vec![(header::WWW_AUTHENTICATE, v)]).unwrap_or_default()
}

impl AuthnFilter {
    fn refuse(&self, s: &mut Session, scheme: &str, err: Option<&AuthnError>, reason: String) -> ProxyError {
        let status = match err {
            Some(e) if e.oauth_error() == "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        };
        let message = match err {
            Some(e) => e.description().to_owned(),
            None => "authentication required".to_owned(),
        };
        s.deny(Stage::Authn, reason);
        ProxyError::Rejected { status, message, headers: challenge(scheme, err) }
    }

    async fn jwt(&self, s: &mut Session) -> Option<Result<Arc<Identity>, ProxyError>> {
        let jwt = self.jwt.as_ref()?;
        // A clone of the header value shares its bytes: the token is not copied.
        let header = s.request.headers.get(header::AUTHORIZATION).cloned();
        let (scheme, token): (_, std::borrow::Cow<'_, str>) = match header.as_ref().and_then(in_header) {
            Some((scheme, t)) => (scheme, t.into()),
            _ => match query_param(s.request.uri.query(), "access_token") {
                Some(t) if self.query_token => ("Bearer", t.into_owned().into()),
                Some(_) => {
                    let e = AuthnError::Malformed("access tokens in the query string are not accepted here");
                    return Some(Err(self.refuse(s, "Bearer", Some(&e), "token in query string refused".into())));
                }
                None => return None,
            },
        };
        let verified = jwt.verify(&token).await;
        Some(self.jwt_verified(s, scheme, &token, verified))
    }

    /// The JWT step once the token's verification is known.
    fn jwt_verified(
        &self,
        s: &mut Session,
        scheme: &'static str,
        token: &str,
        verified: Result<VerifiedToken, AuthnError>,
    ) -> Result<Arc<Identity>, ProxyError> {
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                let reason = format!("invalid token: {e}");
                return Err(self.refuse(s, scheme, Some(&e), reason));
            }
        };
        if let Err(e) = self.sender_constraint(s, scheme, token, &verified) {
            let reason = format!("sender constraint failed: {e}");
            return Err(self.refuse(s, scheme, Some(&e), reason));
        }
        // Made once per verified token and shared by every request the token cache answers.
        Ok(verified.derived(|| jwt_identity(&verified)))
    }

    /// The identity found: the audit note says how, and the session holds it.
    fn accept(&self, s: &mut Session, mut id: Arc<Identity>) -> Flow {
        if id.mtls_identity.is_none() {
            if let Some(peer) = &s.peer_cert {
                // The token's shared identity is copied only for a client with a certificate.
                Arc::make_mut(&mut id).mtls_identity =
                    peer.identity().as_ref().ok().map(|c| c.spiffe_id().unwrap_or(c.subject()).to_owned());
            }
        }
        s.allow(Stage::Authn, authenticated_by(id.method()));
        s.identity = Some(id);
        Flow::Continue
    }

    fn sender_constraint(&self, s: &Session, scheme: &str, token: &str, v: &VerifiedToken) -> Result<(), AuthnError> {
        palisade_authn::check_cnf_x5t(v, s.peer_cert.as_deref().map(PeerCert::der))?;
        match (v.cnf_jkt(), scheme) {
            (Some(jkt), "DPoP") => {
                let proof = s
                    .request
                    .headers
                    .get("dpop")
                    .and_then(|p| p.to_str().ok())
                    .ok_or(AuthnError::DpopInvalid("a DPoP proof header is required"))?;
                if s.request.headers.get_all("dpop").iter().count() > 1 {
                    return Err(AuthnError::DpopInvalid("exactly one DPoP proof is allowed"));
                }
                let htu = format!(
                    "{}://{}{}",
                    if s.tls { "https" } else { "http" },
                    // HTTP/2 carries the authority in the URI, HTTP/1.1 in Host.
                    s.request
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .or_else(|| s.request.uri.authority().map(|a| a.as_str()))
                        .unwrap_or_default(),
                    s.request.uri.path()
                );
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                self.dpop.verify(proof, s.request.method.as_str(), &htu, token, Some(jkt), now).map(|_| ())
            }
            (Some(_), _) => Err(AuthnError::DpopInvalid("this token is DPoP-bound: use the DPoP scheme with a proof")),
            (None, "DPoP") => Err(AuthnError::DpopInvalid("the DPoP scheme needs a DPoP-bound token")),
            (None, _) if self.require_dpop => Err(AuthnError::DpopInvalid("this route requires DPoP-bound tokens")),
            (None, _) => Ok(()),
        }
    }

    fn api_key(&self, s: &mut Session) -> Option<Result<Arc<Identity>, ProxyError>> {
        let src = self.api_keys.as_ref()?;
        let presented = match s.request.headers.get(&src.header) {
            Some(v) => v.to_str().unwrap_or_default().to_owned(),
            None => query_param(s.request.uri.query(), src.query.as_deref()?)?.into_owned(),
        };
        match src.store.lookup(&presented) {
            Some(k) => {
                let mut id = Identity::new(PrincipalKind::Client, k.client().to_owned(), "api_key");
                id.client_id = Some(k.client().to_owned());
                id.scopes = k.scopes().to_vec();
                id.api_key_id = Some(k.key_id().to_owned());
                Some(Ok(Arc::new(id)))
            }
            None => {
                let e = AuthnError::Malformed("the API key is not valid");
                Some(Err(self.refuse(s, "ApiKey", Some(&e), "unknown API key".into())))
            }
        }
    }

    fn mtls(&self, s: &mut Session) -> Option<Result<Arc<Identity>, ProxyError>> {
        let peer = s.peer_cert.clone()?;
        match peer.identity() {
            Ok(c) => {
                let mut id = match c.spiffe_id() {
                    Some(sp) => Identity::new(PrincipalKind::Service, sp.to_owned(), "mtls"),
                    None => Identity::new(PrincipalKind::Client, c.subject().to_owned(), "mtls"),
                };
                id.mtls_identity = Some(c.spiffe_id().unwrap_or(c.subject()).to_owned());
                Some(Ok(Arc::new(id)))
            }
            Err(e) => {
                let reason = format!("client certificate refused: {e}");
                Some(Err(self.refuse(s, "Bearer", Some(e), reason)))
            }
        }
    }
}

#[async_trait::async_trait]
impl Filter for AuthnFilter {
    fn name(&self) -> &'static str {
        "authn"
    }

    async fn request_filter(&self, s: &mut Session) -> Result<Flow, ProxyError> {
        for m in &self.methods {
            let found = match m {
                AuthnMethod::Jwt => self.jwt(s).await,
                AuthnMethod::ApiKey => self.api_key(s),
                AuthnMethod::Mtls => self.mtls(s),
            };
            match found {
                None => continue,
                Some(Err(e)) => return Err(e),
                Some(Ok(id)) => return Ok(self.accept(s, id)),
            }
        }
        if self.allow_anonymous {
            s.allow(Stage::Authn, "anonymous");
            return Ok(Flow::Continue);
        }
        let scheme = if self.methods.first() == Some(&AuthnMethod::ApiKey) { "ApiKey" } else { "Bearer" };
        Err(self.refuse(s, scheme, None, "no credentials".into()))
    }

    /// A route whose first method is JWT, and a token in the header that the verified-token
    /// cache holds: decided without a future. Anything else (no token, a token in the query, one
    /// not verified yet) goes the awaited way.
    fn request_filter_now(&self, s: &mut Session) -> Option<Result<Flow, ProxyError>> {
        if self.methods.first() != Some(&AuthnMethod::Jwt) {
            return None;
        }
        let jwt = self.jwt.as_ref()?;
        let header = s.request.headers.get(header::AUTHORIZATION)?.clone();
        let (scheme, token) = in_header(&header)?;
        let verified = jwt.verified_now(token)?;
        Some(self.jwt_verified(s, scheme, token, Ok(verified)).map(|id| self.accept(s, id)))
    }

    fn upstream_request_filter(&self, s: &Session, up: &mut http::request::Parts) {
        let Some(id) = &s.identity else { return };
        match &id.forwarded {
            Some(headers) => {
                for (name, v) in headers.iter() {
                    up.headers.insert(name.clone(), v.clone());
                }
            }
            None => {
                for (name, v) in forwarded_headers(id) {
                    up.headers.insert(name, v);
                }
            }
        }
    }
}

/// Remove every incoming `x-palisade-*` header: identity is only what the gateway verified.
pub(crate) fn strip_identity_headers(h: &mut http::HeaderMap) {
    let forged: Vec<HeaderName> = h.keys().filter(|k| k.as_str().starts_with("x-palisade-")).cloned().collect();
    for k in forged {
        h.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_header_reads_bearer_and_dpop_tokens() {
        let read = |v: &[u8]| in_header(&HeaderValue::from_bytes(v).unwrap()).map(|(s, t)| (s, t.to_owned()));
        let some = |s: &'static str, t: &str| Some((s, t.to_owned()));
        assert_eq!(read(b"Bearer abc.def.ghi"), some("Bearer", "abc.def.ghi"));
        assert_eq!(read(b"bEARER  abc \t"), some("Bearer", "abc"));
        assert_eq!(read(b"DPoP x"), some("DPoP", "x"));
        assert_eq!(read(b"dpop x"), some("DPoP", "x"));
        assert_eq!(read(b"Bearer "), some("Bearer", ""));
        assert_eq!(read(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(read(b"Bearer"), None);
        assert_eq!(read(b"Bearerx abc"), None);
        assert_eq!(read(b" Bearer abc"), None);
        // Bytes `to_str` refuses (obs-text) anywhere in the value: no token.
        assert_eq!(read(b"Bearer abc\xff"), None);
        assert_eq!(read(b"Bearer \xc3\xa9"), None);
    }
}
