//! Mesh mTLS with SPIFFE X.509-SVIDs: rustls configs that read the current SVID and trust bundle
//! from an [`SvidSource`] on every handshake (so a rotated SVID or a new CA is used from the next
//! connection on) and that accept a peer only if its chain verifies against the current bundle
//! and its single URI SAN is the SPIFFE ID they expect. Parsed keys and verifiers are cached per
//! `Arc<Svid>` (pointer identity), never across SVIDs.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use palisade_core::mesh::{SpiffeId, Svid, SvidSource};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, ResolvesClientCert};
use rustls::crypto::ring::default_provider;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};

/// Server name sent to mesh upstreams. SVIDs carry no DNS name; the verifier ignores it.
pub(crate) const MESH_SNI: &str = "palisade-mesh.invalid";

/// One value derived from an SVID, rebuilt only when the source hands out a different SVID.
/// Holding the `Arc<Svid>` keeps its address from being reused, so pointer equality is sound.
struct PerSvid<T>(Mutex<Option<(Arc<Svid>, T)>>);

impl<T: Clone> PerSvid<T> {
    fn new() -> Self {
        PerSvid(Mutex::new(None))
    }

    fn get(&self, svid: &Arc<Svid>, build: impl FnOnce(&Svid) -> Result<T, Error>) -> Result<T, Error> {
        if let Some((s, v)) = &*self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            if Arc::ptr_eq(s, svid) {
                return Ok(v.clone());
            }
        }
        // Built outside the lock: a slow build must not hold up handshakes on other threads.
        let v = build(svid)?;
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((svid.clone(), v.clone()));
        Ok(v)
    }
}

/// The current SVID as a rustls signing key with its chain (server and client side).
struct SvidKeys {
    source: Arc<dyn SvidSource>,
    provider: Arc<CryptoProvider>,
    cache: PerSvid<Arc<CertifiedKey>>,
}

impl fmt::Debug for SvidKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SvidKeys")
    }
}

impl SvidKeys {
    fn new(source: Arc<dyn SvidSource>, provider: Arc<CryptoProvider>) -> SvidKeys {
        SvidKeys { source, provider, cache: PerSvid::new() }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let svid = self.source.current();
        let built = self.cache.get(&svid, |s| {
            let chain: Vec<CertificateDer<'static>> = s.chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
            if chain.is_empty() {
                return Err(Error::General("the SVID has no certificate".into()));
            }
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(s.key_pkcs8.expose().to_vec()));
            let signing = self.provider.key_provider.load_private_key(key)?;
            let ck = CertifiedKey::new(chain, signing);
            ck.keys_match()?;
            Ok(Arc::new(ck))
        });
        match built {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(spiffe_id = %svid.spiffe_id, error = %e, "cannot use the current SVID");
                None
            }
        }
    }
}

impl ResolvesServerCert for SvidKeys {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SvidKeys {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn refuse(why: &str) -> Error {
    tracing::debug!(reason = why, "mesh peer certificate refused");
    Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// The SPIFFE ID of an X.509-SVID: exactly one URI SAN, a valid SPIFFE ID (the rules of
/// `palisade_authn::client_identity`, which the mTLS authentication filter applies too).
fn svid_id(der: &[u8]) -> Result<SpiffeId, Error> {
    let id = palisade_authn::client_identity(der).map_err(|e| {
        if e.is_bad_certificate_encoding() {
            Error::InvalidCertificate(CertificateError::BadEncoding)
        } else {
            refuse(&e.to_string())
        }
    })?;
    let uri = id.spiffe_id().ok_or_else(|| refuse("no SPIFFE ID in the URI SAN"))?;
    SpiffeId::parse(uri).map_err(|_| refuse("the URI SAN is not a SPIFFE ID"))
}

fn roots(bundle: &[Vec<u8>]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for c in bundle {
        roots
            .add(CertificateDer::from(c.as_slice()))
            .map_err(|_| Error::General("invalid CA in the trust bundle".into()))?;
    }
    if roots.is_empty() {
        return Err(Error::General("the trust bundle is empty".into()));
    }
    Ok(roots)
}

/// Requires a client SVID chaining to the current bundle, in the trust domain.
struct MeshClientVerifier {
    source: Arc<dyn SvidSource>,
    trust_domain: String,
    provider: Arc<CryptoProvider>,
    cache: PerSvid<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for MeshClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshClientVerifier").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

impl MeshClientVerifier {
    fn algs(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl ClientCertVerifier for MeshClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: the bundle changes under us, and a sidecar has exactly one certificate to send.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let svid = self.source.current();
        let inner = self.cache.get(&svid, |s| {
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&s.bundle)?), self.provider.clone())
                .build()
                .map_err(|e| Error::General(format!("cannot verify mesh clients: {e}")))
        })?;
        inner.verify_client_cert(end_entity, intermediates, now)?;
        let id = svid_id(end_entity)?;
        if id.trust_domain() != self.trust_domain {
            return Err(refuse("the client SVID is from another trust domain"));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, self.algs())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, self.algs())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs().supported_schemes()
    }
}

/// Requires a server SVID chaining to the current bundle whose SPIFFE ID is `expected`; the
/// server name is not checked (SVIDs have none).
struct MeshServerVerifier {
    source: Arc<dyn SvidSource>,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
    cache: PerSvid<Arc<RootCertStore>>,
}

impl fmt::Debug for MeshServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshServerVerifier").field("expected", &self.expected).finish_non_exhaustive()
    }
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let svid = self.source.current();
        let roots = self.cache.get(&svid, |s| roots(&s.bundle).map(Arc::new))?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        let algs = self.provider.signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&cert, &roots, intermediates, now, algs)?;
        if svid_id(end_entity)? != self.expected {
            return Err(refuse("the upstream SVID is not the expected identity"));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The mesh listener's TLS config: serves the current SVID, requires a client SVID that chains
/// to the current bundle and names a workload of `trust_domain`. ALPN h2 and http/1.1.
pub fn server_config(source: Arc<dyn SvidSource>, trust_domain: &str) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(default_provider());
    let verifier = MeshClientVerifier {
        source: source.clone(),
        trust_domain: trust_domain.to_owned(),
        provider: provider.clone(),
        cache: PerSvid::new(),
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SvidKeys::new(source, provider)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// TLS config for connections to a mesh peer: presents the current SVID and accepts only a
/// server SVID that chains to the current bundle and is exactly `expected`. No ALPN is set
/// (the HTTP client sets its own).
pub fn client_config(source: Arc<dyn SvidSource>, expected: SpiffeId) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(default_provider());
    let verifier =
        MeshServerVerifier { source: source.clone(), expected, provider: provider.clone(), cache: PerSvid::new() };
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SvidKeys::new(source, provider)));
    Arc::new(cfg)
}

/// The source `palisade config check` compiles with: it is never asked for an SVID.
pub(crate) struct NoSvid(Arc<Svid>);

impl NoSvid {
    pub(crate) fn new() -> Result<NoSvid, String> {
        Ok(NoSvid(Arc::new(Svid {
            spiffe_id: SpiffeId::parse("spiffe://palisade.invalid/none")?,
            chain: Vec::new(),
            key_pkcs8: palisade_core::Secret::from(Vec::new()),
            bundle: Vec::new(),
            not_before: 0,
            not_after: 0,
        })))
    }
}

impl SvidSource for NoSvid {
    fn current(&self) -> Arc<Svid> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests;
