//! Checks on what the CA returns, before anything is installed: the chain parses, the leaf names
//! exactly the returned SPIFFE ID and holds the key we made, every link verifies, and the chain
//! ends at a certificate of the returned bundle. Pure functions of their inputs (the time is passed).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use palisade_core::mesh::SpiffeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// More would be a misbehaving server: an SVID chain is leaf + CA, a bundle a few CAs during rotation.
const MAX_CHAIN: usize = 8;
const MAX_BUNDLE: usize = 64;

/// What [`check_svid`] proved about a response.
#[derive(Debug)]
pub(crate) struct CheckedSvid {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) bundle: Vec<Vec<u8>>,
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// PEM `CERTIFICATE` blocks, 64-column base64 (RFC 7468).
pub(crate) fn pem_encode_certs(ders: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The DER of every `CERTIFICATE` block; at least one.
fn parse_pem_certs(pem: &str, what: &str, max: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|_| format!("{what} is not valid PEM"))?;
        out.push(cert.to_vec());
        if out.len() > max {
            return Err(format!("{what} holds more than {max} certificates"));
        }
    }
    if out.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(out)
}

fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(format!("{what}: trailing bytes after the certificate")),
        Err(_) => Err(format!("{what} is not an X.509 certificate")),
    }
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn parse_bundle(certs: &[Vec<u8>]) -> Result<Vec<X509Certificate<'_>>, String> {
    if certs.is_empty() {
        return Err("the trust bundle is empty".into());
    }
    if certs.len() > MAX_BUNDLE {
        return Err(format!("the trust bundle holds more than {MAX_BUNDLE} certificates"));
    }
    let mut out = Vec::with_capacity(certs.len());
    for (i, der) in certs.iter().enumerate() {
        let cert = parse_cert(der, &format!("bundle certificate {i}"))?;
        if !is_ca(&cert) {
            return Err(format!("bundle certificate {i} is not a CA certificate"));
        }
        out.push(cert);
    }
    Ok(out)
}

/// A bundle is usable: 1 to 64 X.509 CA certificates.
pub(crate) fn check_bundle(certs: &[Vec<u8>]) -> Result<(), String> {
    parse_bundle(certs).map(drop)
}

/// Whether `chain` (leaf first) verifies, link by link, to a certificate in `bundle`.
pub(crate) fn chain_verifies(chain: &[Vec<u8>], bundle: &[Vec<u8>]) -> Result<(), String> {
    let anchors = parse_bundle(bundle)?;
    let mut certs = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        certs.push(parse_cert(der, &format!("chain certificate {i}"))?);
    }
    for (i, pair) in certs.windows(2).enumerate() {
        let [child, parent] = pair else { continue };
        if !is_ca(parent) {
            return Err(format!("chain certificate {} is not a CA certificate", i + 1));
        }
        if child.issuer().as_raw() != parent.subject().as_raw()
            || child.verify_signature(Some(parent.public_key())).is_err()
        {
            return Err(format!("chain certificate {i} is not signed by chain certificate {}", i + 1));
        }
    }
    let (Some(last), Some(last_der)) = (certs.last(), chain.last()) else {
        return Err("the chain is empty".into());
    };
    if bundle.iter().any(|b| b == last_der) {
        return Ok(());
    }
    let anchored = anchors.iter().any(|anchor| {
        last.issuer().as_raw() == anchor.subject().as_raw() && last.verify_signature(Some(anchor.public_key())).is_ok()
    });
    if anchored {
        Ok(())
    } else {
        Err("the chain does not verify to a certificate in the bundle".into())
    }
}

/// Validate a `POST /ca/v1/svid` response for a CSR whose public key (raw EC point) is `key_raw`.
/// `expect_id`: on renewal, the ID the new SVID must keep.
pub(crate) fn check_svid(
    spiffe_id: &str,
    svid_pem: &str,
    bundle_pem: &str,
    key_raw: &[u8],
    trust_domain: Option<&str>,
    expect_id: Option<&SpiffeId>,
    now: u64,
) -> Result<CheckedSvid, String> {
    let id = SpiffeId::parse(spiffe_id).map_err(|e| format!("spiffe_id: {e}"))?;
    if let Some(td) = trust_domain {
        if id.trust_domain() != td {
            return Err(format!("{id} is not in the trust domain {td:?}"));
        }
    }
    if let Some(expected) = expect_id {
        if &id != expected {
            return Err(format!("the renewed SVID names {id}, not the current {expected}"));
        }
    }
    let chain = parse_pem_certs(svid_pem, "svid", MAX_CHAIN)?;
    let bundle = parse_pem_certs(bundle_pem, "bundle", MAX_BUNDLE)?;
    let leaf_der = chain.first().ok_or("svid holds no certificate")?;
    let leaf = parse_cert(leaf_der, "the SVID")?;

    // SPIFFE X509-SVID §2: exactly one URI SAN, the SPIFFE ID; the leaf is not a CA.
    let uris = crate::pki::uri_sans(&leaf).map_err(|_| "the SVID's subjectAltName is malformed".to_owned())?;
    match uris.as_slice() {
        [uri] if *uri == id.as_str() => {}
        [uri] => return Err(format!("the SVID's URI SAN {uri:?} is not the returned spiffe_id {id}")),
        _ => return Err(format!("the SVID must hold exactly one URI SAN, it holds {}", uris.len())),
    }
    if is_ca(&leaf) {
        return Err("the SVID is a CA certificate".into());
    }
    let spki = leaf.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        || spki.subject_public_key.data.as_ref() != key_raw
    {
        return Err("the SVID's public key is not the key of the CSR".into());
    }
    chain_verifies(&chain, &bundle)?;

    let not_before = u64::try_from(leaf.validity().not_before.timestamp()).map_err(|_| "notBefore before 1970")?;
    let not_after = u64::try_from(leaf.validity().not_after.timestamp()).map_err(|_| "notAfter before 1970")?;
    if not_after <= now {
        return Err(format!("the SVID expired at {not_after} (now {now})"));
    }
    if not_before > not_after {
        return Err("the SVID's notBefore is after its notAfter".into());
    }
    Ok(CheckedSvid { spiffe_id: id, chain, bundle, not_before, not_after })
}
