//! Certificate-bound access tokens (RFC 8705 §3): a token carrying `cnf.x5t#S256` is only
//! valid on a connection whose client certificate has that SHA-256 thumbprint. Comparison is
//! constant-time; a token without the claim is not bound and passes.

use subtle::ConstantTimeEq;

use crate::jose::b64_encode;
use crate::{AuthnError, VerifiedToken};

/// base64url (no padding) of the SHA-256 of a DER certificate: the `x5t#S256` value.
pub fn cert_thumbprint_s256(der: &[u8]) -> String {
    b64_encode(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// Enforce the token's certificate binding, if it has one, against the connection's client
/// certificate (DER, already verified by the TLS listener).
pub fn check_cnf_x5t(token: &VerifiedToken, client_cert_der: Option<&[u8]>) -> Result<(), AuthnError> {
    let Some(bound) = token.cnf_x5t_s256() else {
        return Ok(());
    };
    let cert = client_cert_der.ok_or(AuthnError::CertificateRequired)?;
    let actual = cert_thumbprint_s256(cert);
    if bool::from(actual.as_bytes().ct_eq(bound.as_bytes())) {
        Ok(())
    } else {
        Err(AuthnError::CertificateMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{IssuerSettings, JwtAuthenticator};
    use crate::testkit::TestKey;
    use serde_json::{json, Value};

    #[test]
    fn thumbprint_is_base64url_sha256_of_the_der() {
        // SHA-256("abc") from FIPS 180-2, base64url without padding.
        assert_eq!(cert_thumbprint_s256(b"abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }

    #[test]
    fn bound_tokens_need_the_matching_certificate() {
        let cert = rcgen::generate_simple_self_signed(vec!["client.test".into()]).unwrap();
        let der = cert.cert.der().to_vec();
        let other = rcgen::generate_simple_self_signed(vec!["other.test".into()]).unwrap().cert.der().to_vec();
        let key = TestKey::es256();
        let auth = JwtAuthenticator::new(vec![IssuerSettings::new("https://idp.test")]).unwrap();
        auth.install_jwks("https://idp.test", &json!({"keys": [key.jwk("k")]})).unwrap();
        let token = |cnf: Value| {
            let c = json!({"iss": "https://idp.test", "exp": 2_000_000_000u64, "cnf": cnf});
            let t = key.sign(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "k"}), &c);
            auth.verify_at(&t, 1_700_000_000).unwrap()
        };
        let bound = token(json!({"x5t#S256": cert_thumbprint_s256(&der)}));
        assert_eq!(check_cnf_x5t(&bound, Some(&der)), Ok(()));
        assert_eq!(check_cnf_x5t(&bound, Some(&other)), Err(AuthnError::CertificateMismatch));
        assert_eq!(check_cnf_x5t(&bound, None), Err(AuthnError::CertificateRequired));
        let unbound = token(json!({"jkt": "x"}));
        assert_eq!(check_cnf_x5t(&unbound, None), Ok(()));
        assert_eq!(check_cnf_x5t(&unbound, Some(&other)), Ok(()));
    }
}
