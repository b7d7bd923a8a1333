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
