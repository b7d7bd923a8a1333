//! X.509 work: making and importing CA certificates, reading CSRs (their self-signature is
//! verified; only their public key is used), building SVIDs per the SPIFFE X.509-SVID profile,
//! and checking a presented SVID against the CA certificates currently trusted.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use palisade_core::mesh::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use serde_json::{json, Value};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::time::ASN1Time;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use crate::CaError;

/// Clock skew allowance: SVIDs are valid from this many seconds before issuance.
pub(crate) const BACKDATE_SECS: i64 = 5;

/// Common name of the CA certificates Palisade makes.
pub(crate) const CA_COMMON_NAME: &str = "Palisade workload CA";

fn cert_err(what: &str) -> impl Fn(rcgen::Error) -> CaError + '_ {
    move |e| CaError::Certificate(format!("{what}: {e}"))
}

fn datetime(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| CaError::Config(format!("time {unix} is out of range")))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CaError> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| CaError::Certificate("no randomness available".into()))?;
    Ok(b)
}

/// A certificate serial: 16 bytes whose first byte is 0x40..=0x7f, so the DER
/// INTEGER is positive, needs no padding and is never shortened by a leading
/// zero. That leaves 126 random bits (CA/Browser Forum asks for at least 64),
/// and the hex we store is exactly the serial in the certificate.
fn serial_number() -> Result<[u8; 16], CaError> {
    let mut b = random_bytes::<16>()?;
    b[0] = 0x40 | (b[0] & 0x3f);
    Ok(b)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random id for a CA (hex of 16 random bytes).
pub(crate) fn random_id() -> Result<String, CaError> {
    Ok(hex(&random_bytes::<16>()?))
}

/// A random 256-bit token, base64url without padding.
pub(crate) fn random_token() -> Result<String, CaError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// CA material ready to store: the chain (signing certificate first) and the PKCS#8 key.
pub(crate) struct Material {
    pub chain_pem: String,
    pub key_der: Zeroizing<Vec<u8>>,
    pub not_after: i64,
}

/// A new self-signed root: ECDSA P-256, CN "Palisade workload CA", URI SAN `spiffe://<td>`,
/// CA (critical), keyCertSign + cRLSign (critical), valid from `now - 5 s` for `validity_secs`.
pub(crate) fn generate_root(trust_domain: &str, now: i64, validity_secs: i64) -> Result<Material, CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err("generating the CA key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Palisade");
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    let uri = format!("spiffe://{trust_domain}");
    params.subject_alt_names =
        vec![SanType::URI(uri.try_into().map_err(|_| CaError::Config("trust domain is not ASCII".into()))?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from_slice(&serial_number()?));
    let not_after = now.saturating_add(validity_secs);
    params.not_before = datetime(now.saturating_sub(BACKDATE_SECS))?;
    params.not_after = datetime(not_after)?;
    let cert = params.self_signed(&key).map_err(cert_err("signing the CA certificate"))?;
    Ok(Material { chain_pem: cert.pem(), key_der: Zeroizing::new(key.serialize_der()), not_after })
}

/// DER certificates of a PEM text, in order.
pub(crate) fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate list: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

pub(crate) fn to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + 70);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(format!("cannot parse certificate: {e}")),
    }
}

/// Every URI SAN of `cert` (an X.509-SVID must hold exactly one, its SPIFFE ID); shared by the CA
/// and the SVID client's checks.
pub(crate) fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, String> {
    let mut uris = Vec::new();
    let san = cert.subject_alternative_name().map_err(|e| format!("bad subjectAltName: {e}"))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let GeneralName::URI(u) = name {
                uris.push(*u);
            }
        }
    }
    Ok(uris)
}

/// Check an imported CA (certificate chain PEM, private key PEM) and return it ready to store.
/// The first certificate signs SVIDs; it must be a currently valid CA certificate for the key
/// given, allowed to sign certificates, and name no other trust domain. Each further
/// certificate must have signed the one before it.
pub(crate) fn import(cert_pem: &str, key_pem: &str, trust_domain: &str, now: i64) -> Result<Material, CaError> {
    let bad = |why: String| CaError::Config(format!("imported CA: {why}"));
    let ders = pem_certs(cert_pem).map_err(bad)?;
    let key = KeyPair::from_pem(key_pem)
        .map_err(|e| bad(format!("the key is not a PKCS#8 PEM private key of ECDSA P-256/P-384 or RSA (convert with openssl pkcs8 -topk8 -nocrypt): {e}")))?;
    let certs: Vec<X509Certificate<'_>> = ders.iter().map(|d| parse_cert(d)).collect::<Result<_, _>>().map_err(bad)?;
    let Some(ca) = certs.first() else { return Err(bad("no certificate".into())) };
    if ca.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad("the private key does not belong to the first certificate".into()));
    }
    if !ca.is_ca() {
        return Err(bad("the first certificate is not a CA certificate (basicConstraints CA=true)".into()));
    }
    if let Ok(Some(ku)) = ca.key_usage() {
        if !ku.value.key_cert_sign() {
            return Err(bad("the CA certificate's keyUsage does not allow keyCertSign".into()));
        }
    }
    let t = ASN1Time::from_timestamp(now).map_err(|e| bad(e.to_string()))?;
    if !ca.validity().is_valid_at(t) {
        return Err(bad("the CA certificate is not valid now".into()));
    }
    for uri in uri_sans(ca).map_err(bad)? {
        if let Some(rest) = uri.strip_prefix("spiffe://") {
            let td = rest.split('/').next().unwrap_or_default();
            if td != trust_domain {
                return Err(bad(format!("the CA certificate names trust domain {td:?}, not {trust_domain:?}")));
            }
        }
    }
    for pair in certs.windows(2) {
        if let [child, parent] = pair {
            child
                .verify_signature(Some(parent.public_key()))
                .map_err(|_| bad("the certificate chain is out of order or broken".into()))?;
        }
    }
    let chain_pem: String = ders.iter().map(|d| to_pem(d)).collect();
    Ok(Material {
        chain_pem,
        key_der: Zeroizing::new(key.serialize_der()),
        not_after: ca.validity().not_after.timestamp(),
    })
}

/// A CA loaded for signing.
pub(crate) struct Signer {
    pub id: String,
    key: KeyPair,
    /// DER chain: the signing certificate first.
    pub chain: Vec<Vec<u8>>,
    pub not_after: i64,
}

impl Signer {
    pub fn load(id: &str, chain_pem: &str, key_der: &[u8], not_after: i64) -> Result<Signer, CaError> {
        let key = KeyPair::try_from(key_der).map_err(cert_err("loading the CA key"))?;
        let chain = pem_certs(chain_pem).map_err(|e| CaError::Certificate(format!("CA {id}: {e}")))?;
        Ok(Signer { id: id.to_owned(), key, chain, not_after })
    }

    /// Sign an SVID for `id` over `csr`'s public key. Returns the DER and the serial (hex).
    pub fn sign_svid(
        &self,
        csr: &VerifiedCsr,
        id: &SpiffeId,
        not_before: i64,
        not_after: i64,
    ) -> Result<(Vec<u8>, String), CaError> {
        let ca_der = self.chain.first().ok_or_else(|| CaError::Certificate("empty CA chain".into()))?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca_der.as_slice()), &self.key)
            .map_err(cert_err("reading the CA certificate"))?;
        let serial = serial_number()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Palisade");
        params.distinguished_name = dn;
        let uri =
            id.as_str().to_owned().try_into().map_err(|_| CaError::Certificate("SPIFFE ID is not ASCII".into()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        params.not_before = datetime(not_before)?;
        params.not_after = datetime(not_after)?;
        let cert = params.signed_by(&csr.spki, &issuer).map_err(cert_err("signing the SVID"))?;
        Ok((cert.der().to_vec(), hex(&serial)))
    }
}

/// A CSR whose self-signature verified; only its public key is kept.
pub(crate) struct VerifiedCsr {
    /// The CSR's DER, over which a renewal proof is made.
    pub der: Vec<u8>,
    spki: rcgen::SubjectPublicKeyInfo,
}

fn is_p256(spki: &SubjectPublicKeyInfo<'_>) -> bool {
    spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).is_some_and(|o| o == OID_EC_P256)
}

/// Parse a PEM CSR, verify its signature, require an ECDSA P-256 key. Names, extensions and
/// attributes it requests are ignored.
pub(crate) fn verify_csr(pem: &str) -> Result<VerifiedCsr, CaError> {
    let bad = |why: &str| CaError::InvalidRequest(format!("csr: {why}"));
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| bad("not a PEM CERTIFICATE REQUEST"))?
        .as_ref()
        .to_vec();
    let (rest, csr) = X509CertificationRequest::from_der(&der).map_err(|_| bad("cannot parse the request"))?;
    if !rest.is_empty() {
        return Err(bad("trailing bytes after the request"));
    }
    let spki = &csr.certification_request_info.subject_pki;
    if !is_p256(spki) {
        return Err(bad("the key must be ECDSA P-256"));
    }
    csr.verify_signature().map_err(|_| bad("the request's signature does not verify"))?;
    let spki = rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| bad("unsupported public key"))?;
    Ok(VerifiedCsr { der, spki })
}

/// Check a renewal: the first certificate of `svid_pem` is a valid, non-CA SVID with exactly
/// one SPIFFE URI SAN in `trust_domain`, signed by one of `anchors` (DER CA certificates of the current bundle, valid now), and
/// `proof` is its key's ECDSA P-256 SHA-256 signature over `csr_der`.
pub(crate) fn verify_renewal(
    svid_pem: &str,
    proof: &str,
    csr_der: &[u8],
    anchors: &[Vec<u8>],
    trust_domain: &str,
    now: i64,
) -> Result<SpiffeId, CaError> {
    let denied = |why: &str| CaError::AccessDenied(why.to_owned());
    let ders = pem_certs(svid_pem).map_err(|e| CaError::InvalidRequest(format!("svid: {e}")))?;
    let leaf_der = ders.first().ok_or_else(|| CaError::InvalidRequest("svid: no certificate".into()))?;
    let leaf = parse_cert(leaf_der).map_err(|_| denied("the SVID cannot be parsed"))?;
    let t = ASN1Time::from_timestamp(now).map_err(|_| denied("bad clock"))?;
    if !leaf.validity().is_valid_at(t) {
        return Err(denied("the SVID is expired or not yet valid"));
    }
    if leaf.is_ca() {
        return Err(denied("the SVID is a CA certificate"));
    }
    let trusted = anchors.iter().any(|a| {
        parse_cert(a).is_ok_and(|ca| {
            ca.validity().is_valid_at(t)
                && ca.subject().as_raw() == leaf.issuer().as_raw()
                && leaf.verify_signature(Some(ca.public_key())).is_ok()
        })
    });
    if !trusted {
        return Err(denied("the SVID was not issued by a CA in the current trust bundle"));
    }
    let uris = uri_sans(&leaf).map_err(|_| denied("the SVID's subjectAltName cannot be parsed"))?;
    let [uri] = uris.as_slice() else { return Err(denied("the SVID must have exactly one URI SAN")) };
    let id = SpiffeId::parse(uri).map_err(|_| denied("the SVID's URI SAN is not a SPIFFE ID"))?;
    if id.trust_domain() != trust_domain {
        return Err(denied("the SVID belongs to another trust domain"));
    }
    let spki = leaf.public_key();
    if !is_p256(spki) {
        return Err(denied("the SVID key is not ECDSA P-256"));
    }
    let sig = URL_SAFE_NO_PAD.decode(proof.trim()).map_err(|_| denied("the proof is not base64url"))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &spki.subject_public_key.data)
        .verify(csr_der, &sig)
        .map_err(|_| denied("the proof does not verify with the SVID's key"))?;
    Ok(id)
}

fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The SPIFFE bundle JWK of a CA certificate (`use: x509-svid`, with `x5c`).
pub(crate) fn bundle_jwk(der: &[u8]) -> Result<Value, CaError> {
    let cert = parse_cert(der).map_err(CaError::Certificate)?;
    let spki = cert.public_key();
    let x5c = vec![STANDARD.encode(der)];
    let parsed = spki.parsed().map_err(|e| CaError::Certificate(format!("CA public key: {e}")))?;
    let alg = &spki.algorithm.algorithm;
    match parsed {
        PublicKey::EC(point) if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY => {
            let (crv, n) = if is_p256(spki) {
                ("P-256", 32)
            } else if spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .is_some_and(|o| o == OID_NIST_EC_P384)
            {
                ("P-384", 48)
            } else {
                return Err(CaError::Certificate("unsupported CA curve".into()));
            };
            let data = point.data();
            match (data.first(), data.get(1..1 + n), data.get(1 + n..)) {
                (Some(4), Some(x), Some(y)) if y.len() == n => Ok(json!({
                    "use": "x509-svid", "kty": "EC", "crv": crv, "x": b64u(x), "y": b64u(y), "x5c": x5c,
                })),
                _ => Err(CaError::Certificate("CA public key is not an uncompressed EC point".into())),
            }
        }
        PublicKey::RSA(rsa) if *alg == OID_PKCS1_RSAENCRYPTION => {
            let strip = |b: &[u8]| {
                b.iter().position(|&x| x != 0).map_or_else(Vec::new, |i| b.get(i..).unwrap_or_default().to_vec())
            };
            Ok(json!({
                "use": "x509-svid", "kty": "RSA", "n": b64u(&strip(rsa.modulus)), "e": b64u(&strip(rsa.exponent)), "x5c": x5c,
            }))
        }
        _ => Err(CaError::Certificate("unsupported CA key type".into())),
    }
}
