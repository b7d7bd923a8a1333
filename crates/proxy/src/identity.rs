//! The verified identity of a request. Only the authentication filter makes one (the
//! constructor is crate-private), so an unchecked identity cannot reach authorization.

use std::sync::{Arc, OnceLock};

use palisade_authn::{AuthnError, CertIdentity};
use serde_json::{Map, Value};

/// The verified client certificate of a connection (the listener checked its chain), and who it
/// names, parsed on first use and then shared by every request on the connection.
#[derive(Debug)]
pub struct PeerCert {
    der: Arc<[u8]>,
    identity: OnceLock<Result<CertIdentity, AuthnError>>,
}

impl PeerCert {
    pub(crate) fn new(der: Arc<[u8]>) -> PeerCert {
        PeerCert { der, identity: OnceLock::new() }
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Its SPIFFE ID or subject ([`palisade_authn::client_identity`]), parsed once per connection.
    pub fn identity(&self) -> &Result<CertIdentity, AuthnError> {
        self.identity.get_or_init(|| palisade_authn::client_identity(&self.der))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    Service,
    Client,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "User",
            PrincipalKind::Service => "Service",
            PrincipalKind::Client => "Client",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Identity {
    kind: PrincipalKind,
    id: String,
    /// `principal_ref`, made on first use (kind and id never change after construction).
    principal: OnceLock<String>,
    method: &'static str,
    pub(crate) client_id: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) scopes: Vec<String>,
    pub(crate) roles: Vec<String>,
    pub(crate) claims: Option<Arc<Map<String, Value>>>,
    pub(crate) mtls_identity: Option<String>,
    pub(crate) api_key_id: Option<String>,
    /// The `x-palisade-*` headers for this identity, when made once for a token and shared by
    /// every request that presents it (see the authentication filter).
    pub(crate) forwarded: Option<Arc<[(http::HeaderName, http::HeaderValue)]>>,
}

impl Identity {
    pub(crate) fn new(kind: PrincipalKind, id: String, method: &'static str) -> Identity {
        Identity {
            kind,
            id,
            principal: OnceLock::new(),
            method,
            client_id: None,
            issuer: None,
            scopes: Vec::new(),
            roles: Vec::new(),
            claims: None,
            mtls_identity: None,
            api_key_id: None,
            forwarded: None,
        }
    }

    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    /// `jwt`, `api_key` or `mtls`.
    pub fn method(&self) -> &'static str {
        self.method
    }
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
    pub fn api_key_id(&self) -> Option<&str> {
        self.api_key_id.as_deref()
    }

    /// Cedar-style entity reference, e.g. `User::"alice"`.
    pub fn principal_ref(&self) -> String {
        self.principal_str().to_owned()
    }

    /// [`Identity::principal_ref`], borrowed (made once).
    pub fn principal_str(&self) -> &str {
        self.principal.get_or_init(|| format!("{}::{:?}", self.kind.as_str(), self.id))
    }
}
