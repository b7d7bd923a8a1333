//! TLS for listeners (rustls, TLS 1.2 and 1.3 only, ALPN h2 + http/1.1, certificate chosen by
//! SNI) and for upstream connections (verified against a configured CA).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use palisade_core::config::{HttpsListener, UpstreamTls};
use palisade_core::{Issue, LoadedConfig};

#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else { return Some(self.default.clone()) };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        for (sfx, k) in &self.wildcard {
            if name.len() > sfx.len() && name.ends_with(sfx.as_str()) {
                return Some(k.clone());
            }
        }
        Some(self.default.clone())
    }
}

fn load_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: invalid PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

/// Build the HTTPS listener's rustls config. Errors name the config field.
pub(crate) fn server_config(loaded: &LoadedConfig, l: &HttpsListener) -> Result<Arc<rustls::ServerConfig>, Vec<Issue>> {
    let provider = Arc::new(default_provider());
    let mut issues = Vec::new();
    let mut keys = Vec::new();
    for (i, c) in l.certificates.iter().enumerate() {
        let base = format!("listeners.https.certificates[{i}]");
        let certs = match load_certs(&loaded.resolve_path(&c.cert)) {
            Ok(c) => c,
            Err(m) => {
                issues.push(Issue::new(format!("{base}.cert"), m));
                continue;
            }
        };
        let key = match c.key.resolve(&loaded.base_dir) {
            Ok(k) => k,
            Err(m) => {
                issues.push(Issue::new(format!("{base}.key"), m));
                continue;
            }
        };
        let der = match PrivateKeyDer::from_pem_slice(key.expose()) {
            Ok(k) => k,
            Err(_) => {
                issues.push(Issue::new(format!("{base}.key"), "no PEM private key found in the secret"));
                continue;
            }
        };
        let signing = match provider.key_provider.load_private_key(der) {
            Ok(k) => k,
            Err(e) => {
                issues.push(Issue::new(format!("{base}.key"), format!("unsupported private key: {e}")));
                continue;
            }
        };
        let ck = CertifiedKey::new(certs, signing);
        if let Err(e) = ck.keys_match() {
            issues.push(Issue::new(format!("{base}.key"), format!("private key does not match the certificate: {e}")));
            continue;
        }
        keys.push((Arc::new(ck), &c.server_names));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let Some(default) = keys.first().map(|k| k.0.clone()) else {
        return Err(vec![Issue::new("listeners.https.certificates", "at least one certificate is required")]);
    };
    let mut resolver = SniResolver { exact: HashMap::new(), wildcard: Vec::new(), default };
    for (k, names) in keys {
        for n in names {
            let n = n.to_ascii_lowercase();
            match n.strip_prefix('*') {
                Some(sfx) => resolver.wildcard.push((sfx.to_string(), k.clone())),
                None => {
                    resolver.exact.insert(n, k.clone());
                }
            }
        }
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| vec![Issue::new("listeners.https", e.to_string())])?;
    let builder = match &l.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let path = "listeners.https.client_auth.ca";
            let certs = load_certs(&loaded.resolve_path(&ca.ca)).map_err(|m| vec![Issue::new(path, m)])?;
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c).map_err(|e| vec![Issue::new(path, format!("invalid CA certificate: {e}"))])?;
            }
            let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if !ca.required {
                v = v.allow_unauthenticated();
            }
            let v = v.build().map_err(|e| vec![Issue::new(path, format!("cannot verify clients: {e}"))])?;
            builder.with_client_cert_verifier(v)
        }
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client config that trusts only the configured CA.
pub(crate) fn upstream_client_config(
    loaded: &LoadedConfig,
    path: &str,
    t: &UpstreamTls,
) -> Result<rustls::ClientConfig, Issue> {
    let certs = load_certs(&loaded.resolve_path(&t.ca)).map_err(|m| Issue::new(format!("{path}.tls.ca"), m))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| Issue::new(format!("{path}.tls.ca"), format!("invalid CA certificate: {e}")))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Issue::new(format!("{path}.tls"), e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}
