//! What every outbound HTTP client of Palisade shares (JWKS fetches, the SVID client, audit
//! shipping, webhooks, the dashboard's issuer calls): the TLS client configuration and readable
//! transport errors.

use std::sync::Arc;

/// TLS client configuration: the certificates of `ca_pem` as the only roots when given (a private
/// CA), else Mozilla's roots. Errors say what is wrong with `ca_pem`; the caller names the field.
pub fn client_tls(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|_| "is not valid PEM".to_owned())?;
                roots.add(cert).map_err(|e| format!("certificate rejected: {e}"))?;
            }
            if roots.is_empty() {
                return Err("contains no certificate".into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// An error with its causes: `hyper_util` says "client error (Connect)" and keeps the reason
/// ("connection refused") in the source chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_roots_are_refused_with_the_reason() {
        assert_eq!(client_tls(Some(b"not pem")).unwrap_err(), "contains no certificate");
        assert_eq!(
            client_tls(Some(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")).unwrap_err(),
            "is not valid PEM"
        );
        assert!(client_tls(None).is_ok());
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_chain_keeps_every_cause() {
        let e = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
        assert_eq!(error_chain(&e), "client error (Connect): connection refused");
    }
}
