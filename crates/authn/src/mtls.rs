//! Client identity from an mTLS certificate that the listener (rustls) has already verified
//! against its trust anchors: SPIFFE ID, RFC 4514 subject and RFC 8705 thumbprint. This module
//! trusts nothing by itself; it only reads the certificate.

use x509_parser::asn1_rs::Tag;
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid2abbrev, oid_registry};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use crate::binding::cert_thumbprint_s256;
use crate::AuthnError;

/// Who a client certificate names. Only [`client_identity`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    spiffe_id: Option<String>,
    subject: String,
    thumbprint_s256: String,
}

impl CertIdentity {
    /// The SPIFFE ID (`spiffe://trust-domain/path`) of an X.509-SVID.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.spiffe_id.as_deref()
    }

    /// Subject DN as an RFC 4514 string (most specific RDN first, e.g. `CN=alice,O=Acme`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// base64url SHA-256 of the DER certificate (RFC 8705 `x5t#S256`).
    pub fn thumbprint_s256(&self) -> &str {
        &self.thumbprint_s256
    }
}

const NOT_DER: &str = "not a DER X.509 certificate";
const TRAILING_DATA: &str = "trailing data after the certificate";

impl AuthnError {
    /// The bytes are not one DER certificate (as opposed to a certificate whose identity is refused).
    pub fn is_bad_certificate_encoding(&self) -> bool {
        matches!(self, AuthnError::InvalidCertificate(NOT_DER | TRAILING_DATA))
    }
}

/// Read the identity of a DER client certificate.
///
/// A certificate with a `spiffe://` URI SAN must have exactly one URI SAN (SPIFFE X.509-SVID
/// §2); otherwise it is refused rather than guessed at. Certificates without a SPIFFE URI get
/// `spiffe_id: None` whatever other URIs they carry.
pub fn client_identity(cert_der: &[u8]) -> Result<CertIdentity, AuthnError> {
    let (rest, cert) = X509Certificate::from_der(cert_der).map_err(|_| AuthnError::InvalidCertificate(NOT_DER))?;
    if !rest.is_empty() {
        return Err(AuthnError::InvalidCertificate(TRAILING_DATA));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| AuthnError::InvalidCertificate("the subjectAltName extension is malformed or repeated"))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|g| match g {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    let spiffe_id = match uris.iter().find(|u| has_spiffe_scheme(u)) {
        None => None,
        Some(_) if uris.len() > 1 => {
            return Err(AuthnError::InvalidCertificate("an X.509-SVID must have exactly one URI SAN"))
        }
        Some(id) if palisade_core::SpiffeId::parse(id).is_ok() => Some((*id).to_owned()),
        Some(_) => return Err(AuthnError::InvalidCertificate("the SPIFFE ID is malformed")),
    };
    Ok(CertIdentity { spiffe_id, subject: rfc4514(cert.subject()), thumbprint_s256: cert_thumbprint_s256(cert_der) })
}

fn has_spiffe_scheme(uri: &str) -> bool {
    uri.get(..9).is_some_and(|s| s.eq_ignore_ascii_case("spiffe://"))
}

/// RFC 4514 §2: RDNs in reverse order separated by `,`, multi-valued RDNs joined by `+`,
/// short names where known (else the dotted OID), string values escaped, other values as
/// `#` and the hex of their BER encoding.
fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> =
        name.iter_rdn().map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+")).collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn attribute(atv: &AttributeTypeAndValue<'_>) -> String {
    let oid = atv.attr_type();
    let (ty, known) = match oid2abbrev(oid, oid_registry()) {
        Ok(abbrev) => (abbrev.to_owned(), true),
        Err(_) => (oid.to_id_string(), false),
    };
    let value = atv.attr_value();
    let text = match value.tag() {
        _ if !known => None, // RFC 4514 §2.4: values of dotted-OID types are given in hex
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(value.data).ok().map(str::to_owned)
        }
        Tag::BmpString => utf16_be(value.data),
        _ => None,
    };
    match text {
        Some(t) => format!("{ty}={}", escape(&t)),
        None => format!("{ty}=#{}", hex_ber(value.tag().0, value.data)),
    }
}

fn utf16_be(data: &[u8]) -> Option<String> {
    let chunks = data.chunks_exact(2);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let units: Vec<u16> = chunks.map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    String::from_utf16(&units).ok()
}

/// RFC 4514 §2.4 escaping.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, ch) in value.chars().enumerate() {
        let special = matches!(ch, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (ch == '#' || ch == ' '))
            || (i == last && ch == ' ');
        if special {
            out.push('\\');
            out.push(ch);
        } else if ch == '\0' {
            out.push_str("\\00");
        } else {
            out.push(ch);
        }
    }
    out
}

/// Hex of a universal primitive TLV with the given tag number and content.
fn hex_ber(tag: u32, data: &[u8]) -> String {
    let mut der = Vec::with_capacity(data.len() + 6);
    der.push(u8::try_from(tag).ok().filter(|t| *t < 31).unwrap_or(0x04));
    let len = data.len();
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let significant = bytes.get(skip..).unwrap_or_default();
        der.push(0x80 | significant.len() as u8);
        der.extend_from_slice(significant);
    }
    der.extend_from_slice(data);
    der.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::string::Ia5String;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert(uris: &[&str], dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["client.test".to_owned()]).unwrap();
        for u in uris {
            params.subject_alt_names.push(SanType::URI(Ia5String::try_from(*u).unwrap()));
        }
        let mut name = DistinguishedName::new();
        for (ty, v) in dn {
            name.push(ty.clone(), *v);
        }
        params.distinguished_name = name;
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    #[test]
    fn svid_identity() {
        let der = cert(
            &["spiffe://prod.example.org/ns/payments/sa/api"],
            &[(DnType::CountryName, "NO"), (DnType::OrganizationName, "Acme, Inc."), (DnType::CommonName, "api")],
        );
        let id = client_identity(&der).unwrap();
        assert_eq!(id.spiffe_id(), Some("spiffe://prod.example.org/ns/payments/sa/api"));
        assert_eq!(id.subject(), "CN=api,O=Acme\\, Inc.,C=NO");
        assert_eq!(id.thumbprint_s256(), cert_thumbprint_s256(&der));
    }

    #[test]
    fn svids_must_have_exactly_one_uri_san() {
        let der = cert(&["spiffe://a.org/one", "https://a.org/two"], &[(DnType::CommonName, "x")]);
        assert_eq!(
            client_identity(&der).unwrap_err(),
            AuthnError::InvalidCertificate("an X.509-SVID must have exactly one URI SAN")
        );
        let der = cert(&["spiffe://a.org/one", "spiffe://a.org/two"], &[]);
        assert!(client_identity(&der).is_err());
    }

    #[test]
    fn non_spiffe_certificates_have_no_spiffe_id() {
        let der = cert(&["https://a.org/x", "urn:example:y"], &[(DnType::CommonName, " #lead")]);
        let id = client_identity(&der).unwrap();
        assert_eq!(id.spiffe_id(), None);
        assert_eq!(id.subject(), "CN=\\ #lead");
        let der = cert(&[], &[]);
        assert_eq!(client_identity(&der).unwrap().subject(), "");
    }

    #[test]
    fn malformed_spiffe_ids_and_certificates_are_refused() {
        for bad in [
            "spiffe://A.org/x",
            "spiffe://a.org",
            "spiffe://a.org/",
            "spiffe://a.org/x/../y",
            "spiffe://a.org:8443/x",
            "spiffe://a.org/x?q",
            "spiffe://a.org//x",
        ] {
            let der = cert(&[bad], &[]);
            assert_eq!(
                client_identity(&der).unwrap_err(),
                AuthnError::InvalidCertificate("the SPIFFE ID is malformed"),
                "{bad}"
            );
        }
        assert_eq!(client_identity(b"").unwrap_err(), AuthnError::InvalidCertificate("not a DER X.509 certificate"));
        let mut der = cert(&[], &[]);
        der.push(0);
        assert_eq!(
            client_identity(&der).unwrap_err(),
            AuthnError::InvalidCertificate("trailing data after the certificate")
        );
        der.truncate(der.len() / 2);
        assert!(client_identity(&der).is_err());
    }

    #[test]
    fn rfc4514_escaping() {
        assert_eq!(escape("a+b,c;d<e>f\"g\\h"), "a\\+b\\,c\\;d\\<e\\>f\\\"g\\\\h");
        assert_eq!(escape(" x "), "\\ x\\ ");
        assert_eq!(escape("#x#"), "\\#x#");
        assert_eq!(hex_ber(0x0c, b"hi"), "0c026869");
        assert_eq!(&hex_ber(0x04, &[0u8; 200])[..6], "0481c8");
        assert_eq!(&hex_ber(0x04, &[0u8; 300])[..8], "0482012c");
    }
}
