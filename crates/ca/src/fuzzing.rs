//! Entry points of the cargo-fuzz target `mesh` (`fuzz/fuzz_targets/mesh.rs`): every parser of the
//! CA and its client that takes outside input, run against a fixed fixture (a CA with a fixed key, a
//! fixed CSR, a fixed clock) so seed files made once keep verifying. Each function returns `Err` only
//! when an input that was accepted breaks an invariant (the target turns that into a crash); a
//! rejected input is `Ok`. Not an API: hidden from the docs, no stability promise.

use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use palisade_core::mesh::SpiffeId;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use serde::de::IgnoredAny;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::api::parse_request;
use crate::client::validate::{self, chain_verifies, check_svid, pem_encode_certs, CheckedSvid};
use crate::client::{check_svid_response, parse_bundle_json};
use crate::pki::{self, Signer, VerifiedCsr};
use crate::Attestation;

/// Trust domain of the fixture CA.
pub const TRUST_DOMAIN: &str = "fuzz.test";
/// The ID of the fixture SVID (and of the SVIDs signed for accepted CSRs).
pub const SVID_ID: &str = "spiffe://fuzz.test/ns/fuzz/sa/svc";
/// Every check runs at this instant (2023-11-14), so seed SVIDs never expire.
pub const NOW: i64 = 1_700_000_000;

// Test-only P-256 keys, fixed so that seed SVIDs made once stay signed by the fixture CA and their
// renewal proofs keep verifying. They protect nothing.
const CA_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJF7x++ggrXZ0G312\n2N/er9sHj7nzwiLEiUbO58YgaYOhRANCAAS1eQCAiCtGORSRqRIv4tZQOVBije6x\n3tqfYa1GaT+W9eQbglAn9exJ9f7jn4MgNCLCBd7hlXoIH6wZChD1LOQc\n-----END PRIVATE KEY-----";
const SVID_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOItwYKrvygRmT1hB\npha2kFZD82mO1pnNTMxrsI0jBCChRANCAAQ9NcMI9DDK/D0Q+aA8dUnloUyIt5ik\ny23McxvXBBgyE4cyqdH1wecizWjSTDiVVDucmIJpQ93aCKaOV5f9hr0J\n-----END PRIVATE KEY-----";
/// The CSR over whose DER renewal proofs are made (`openssl req -new`, P-256).
pub const CSR_PEM: &str = "-----BEGIN CERTIFICATE REQUEST-----\nMIHWMH8CAQAwHTENMAsGA1UECgwEZnV6ejEMMAoGA1UEAwwDY3NyMFkwEwYHKoZI\nzj0CAQYIKoZIzj0DAQcDQgAE4RkvUAg6mM3V4QKAU2zzy9RHRPuDIdLyd/DpN9un\nXkkbS1dbrOypDthKAAeGsPdyRm+ETwm2OMdEMTecus1/xqAAMAoGCCqGSM49BAMC\nA0cAMEQCIBjVXR0bG0ex0w491aJLPb5tKfLha6jK3DrGlgA/F97BAiBMWMdSQshK\nKQO2g+b5R7eZnM923690hYpkqp7Uzzam3w==\n-----END CERTIFICATE REQUEST-----";

struct Fixture {
    ca_der: Vec<u8>,
    ca_pem: String,
    signer: Signer,
    csr_der: Vec<u8>,
    /// Raw EC point of the SVID key, the key [`check_svid`] expects in a response.
    svid_key_raw: Vec<u8>,
    /// The SVID key's renewal proof over `csr_der` (base64url).
    proof: String,
    /// An SVID for [`SVID_ID`] over the SVID key, signed by the CA.
    svid_der: Vec<u8>,
}

fn fixture() -> Result<&'static Fixture, String> {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    FIXTURE.get_or_init(make_fixture).as_ref().map_err(|e| format!("fuzz fixture: {e}"))
}

fn make_fixture() -> Result<Fixture, String> {
    let ca_key = KeyPair::from_pem(CA_KEY_PEM).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Palisade");
    dn.push(DnType::CommonName, pki::CA_COMMON_NAME);
    params.distinguished_name = dn;
    let uri = format!("spiffe://{TRUST_DOMAIN}").try_into().map_err(|_| "CA URI")?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let not_after = NOW + 365 * 86_400;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 86_400).map_err(|e| e.to_string())?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).map_err(|e| e.to_string())?;
    let ca = params.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let signer = Signer::load("fuzz", &ca.pem(), &ca_key.serialize_der(), not_after).map_err(|e| e.to_string())?;

    let svid_key = KeyPair::from_pem(SVID_KEY_PEM).map_err(|e| e.to_string())?;
    let svid_csr = CertificateParams::default().serialize_request(&svid_key).map_err(|e| e.to_string())?;
    let svid_csr = pki::verify_csr(&svid_csr.pem().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let id = SpiffeId::parse(SVID_ID)?;
    let (svid_der, _) = signer.sign_svid(&svid_csr, &id, NOW - 60, NOW + 3600).map_err(|e| e.to_string())?;

    let csr_der = pki::verify_csr(CSR_PEM).map_err(|e| e.to_string())?.der;
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &svid_key.serialize_der(),
        &rng,
    )
    .map_err(|_| "SVID key")?;
    let proof = pair.sign(&rng, &csr_der).map_err(|_| "signing the proof")?;
    Ok(Fixture {
        ca_der: ca.der().to_vec(),
        ca_pem: ca.pem(),
        signer,
        csr_der,
        svid_key_raw: svid_key.public_key_raw().to_vec(),
        proof: URL_SAFE_NO_PAD.encode(proof.as_ref()),
        svid_der,
    })
}

/// `der` in a PEM armour labelled `label` (64-column base64).
fn armour(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The CA's CSR check (`POST /ca/v1/svid` `csr`), on `data` as PEM text and on `data` as the DER
/// inside a `CERTIFICATE REQUEST` armour. An accepted CSR must re-armour to itself, and the CA must
/// be able to sign an SVID for it that the SVID client accepts for the CSR's key.
pub fn csr(data: &[u8]) -> Result<(), String> {
    let f = fixture()?;
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = pki::verify_csr(text) {
            accepted_csr(f, &c)?;
        }
    }
    if let Ok(c) = pki::verify_csr(&armour("CERTIFICATE REQUEST", data)) {
        if c.der != data {
            return Err("an accepted DER CSR is not kept as given".into());
        }
        accepted_csr(f, &c)?;
    }
    Ok(())
}

fn accepted_csr(f: &Fixture, c: &VerifiedCsr) -> Result<(), String> {
    let again = pki::verify_csr(&armour("CERTIFICATE REQUEST", &c.der))
        .map_err(|e| format!("an accepted CSR re-armoured is refused: {e}"))?;
    if again.der != c.der {
        return Err("an accepted CSR does not round-trip through PEM".into());
    }
    let key_raw = match X509CertificationRequest::from_der(&c.der) {
        Ok((_, req)) => req.certification_request_info.subject_pki.subject_public_key.data.to_vec(),
        Err(e) => return Err(format!("an accepted CSR does not parse again: {e}")),
    };
    let id = SpiffeId::parse(SVID_ID)?;
    let (der, _) = f
        .signer
        .sign_svid(c, &id, NOW - 60, NOW + 3600)
        .map_err(|e| format!("an accepted CSR cannot be signed: {e}"))?;
    let chain = pem_encode_certs(&[der, f.ca_der.clone()]);
    check_svid(SVID_ID, &chain, &f.ca_pem, &key_raw, Some(TRUST_DOMAIN), Some(&id), now_u64())
        .map_err(|e| format!("the client refuses the SVID issued for an accepted CSR: {e}"))?;
    Ok(())
}

fn now_u64() -> u64 {
    NOW.unsigned_abs()
}

/// Renewal verification with the SVID chain as PEM text: `<svid pem>\0<proof>`, or without a NUL
/// the whole text as the chain and the fixture's valid proof.
pub fn renewal_pem(data: &[u8]) -> Result<(), String> {
    let f = fixture()?;
    let Ok(text) = std::str::from_utf8(data) else { return Ok(()) };
    let (svid, proof) = text.split_once('\0').unwrap_or((text, f.proof.as_str()));
    renewal(f, svid, proof)
}

/// Renewal verification with `data` as the DER of the presented SVID and the fixture's valid proof.
pub fn renewal_der(data: &[u8]) -> Result<(), String> {
    let f = fixture()?;
    renewal(f, &(armour("CERTIFICATE", data) + &f.ca_pem), &f.proof)
}

fn renewal(f: &Fixture, svid_pem: &str, proof: &str) -> Result<(), String> {
    let anchors = [f.ca_der.clone()];
    let Ok(id) = pki::verify_renewal(svid_pem, proof, &f.csr_der, &anchors, TRUST_DOMAIN, NOW) else {
        return Ok(());
    };
    if id.trust_domain() != TRUST_DOMAIN || SpiffeId::parse(id.as_str()).as_ref() != Ok(&id) {
        return Err(format!("renewal accepted an ID outside the trust domain: {id}"));
    }
    // What the server accepts as an SVID of its bundle, the client must accept too.
    let leaf = pki::pem_certs(svid_pem)?.into_iter().next().ok_or("no leaf")?;
    chain_verifies(&[leaf], &anchors).map_err(|e| format!("renewal accepted an SVID the client refuses: {e}"))
}

/// `POST /ca/v1/svid` body parsing. An accepted body names exactly one attestation (svid with
/// proof counting as one), and the request rebuilt as JSON parses back to the same request.
pub fn svid_request(data: &[u8]) -> Result<(), String> {
    let Ok(req) = parse_request(data) else { return Ok(()) };
    // Which known fields are given (non-null), read as the handler reads the body: serde_json
    // skips unknown fields without checking their strings, so a `Value` may refuse what it accepts.
    #[derive(serde::Deserialize)]
    struct Present {
        csr: Option<IgnoredAny>,
        join_token: Option<IgnoredAny>,
        k8s_token: Option<IgnoredAny>,
        svid: Option<IgnoredAny>,
        proof: Option<IgnoredAny>,
    }
    let p: Present = serde_json::from_slice(data).map_err(|e| format!("an accepted body does not parse again: {e}"))?;
    let (svid, proof) = (p.svid.is_some(), p.proof.is_some());
    let given = [p.join_token.is_some(), p.k8s_token.is_some(), svid || proof];
    if given.iter().filter(|g| **g).count() != 1 || svid != proof || p.csr.is_none() {
        return Err("a body without exactly one attestation was accepted".into());
    }
    let rebuilt = match &req.attestation {
        Attestation::JoinToken(t) => serde_json::json!({ "csr": req.csr_pem, "join_token": t }),
        Attestation::K8sToken(t) => serde_json::json!({ "csr": req.csr_pem, "k8s_token": t }),
        Attestation::Renewal { svid_pem, proof } => {
            serde_json::json!({ "csr": req.csr_pem, "svid": svid_pem, "proof": proof })
        }
    };
    let again = parse_request(rebuilt.to_string().as_bytes()).map_err(|e| format!("a rebuilt body is refused: {e}"))?;
    let same = again.csr_pem == req.csr_pem
        && match (&again.attestation, &req.attestation) {
            (Attestation::JoinToken(a), Attestation::JoinToken(b))
            | (Attestation::K8sToken(a), Attestation::K8sToken(b)) => a == b,
            (Attestation::Renewal { svid_pem: a, proof: p }, Attestation::Renewal { svid_pem: b, proof: q }) => {
                a == b && p == q
            }
            _ => false,
        };
    if same {
        Ok(())
    } else {
        Err("the request does not round-trip through JSON".into())
    }
}

/// The SVID client's check of a `POST /ca/v1/svid` response body, for the fixture SVID key.
pub fn svid_response(data: &[u8]) -> Result<(), String> {
    let f = fixture()?;
    match check_svid_response(data, &f.svid_key_raw, Some(TRUST_DOMAIN), None, now_u64()) {
        Ok(checked) => accepted_svid(f, &checked),
        Err(_) => Ok(()),
    }
}

/// The same check on a response whose SVID is `data` (DER) followed by the fixture CA, with the
/// fixture bundle and [`SVID_ID`].
pub fn svid_response_der(data: &[u8]) -> Result<(), String> {
    let f = fixture()?;
    let body = serde_json::json!({
        "spiffe_id": SVID_ID,
        "svid": armour("CERTIFICATE", data) + &f.ca_pem,
        "bundle": f.ca_pem,
    });
    svid_response(body.to_string().as_bytes())
}

fn accepted_svid(f: &Fixture, c: &CheckedSvid) -> Result<(), String> {
    let now = now_u64();
    if c.spiffe_id.trust_domain() != TRUST_DOMAIN || c.chain.is_empty() || c.bundle.is_empty() {
        return Err(format!("accepted an SVID response for {} with empty parts or another domain", c.spiffe_id));
    }
    if c.not_before > c.not_after || c.not_after <= now {
        return Err(format!("accepted an SVID valid {}..{} at {now}", c.not_before, c.not_after));
    }
    let again = check_svid(
        c.spiffe_id.as_str(),
        &pem_encode_certs(&c.chain),
        &pem_encode_certs(&c.bundle),
        &f.svid_key_raw,
        Some(TRUST_DOMAIN),
        Some(&c.spiffe_id),
        now,
    )
    .map_err(|e| format!("an accepted SVID re-encoded is refused: {e}"))?;
    if again.chain != c.chain
        || again.bundle != c.bundle
        || (again.not_before, again.not_after) != (c.not_before, c.not_after)
    {
        return Err("an accepted SVID response does not round-trip through PEM".into());
    }
    validate::check_bundle(&c.bundle).map_err(|e| format!("accepted a response with an unusable bundle: {e}"))
}

/// The SVID client's parsing of `GET /ca/v1/bundle.json`. An accepted bundle rebuilt as a SPIFFE
/// bundle parses back to the same certificates and hint.
pub fn bundle_json(data: &[u8]) -> Result<(), String> {
    let Ok((certs, hint)) = parse_bundle_json(data) else { return Ok(()) };
    validate::check_bundle(&certs).map_err(|e| format!("accepted an unusable bundle: {e}"))?;
    let keys: Vec<serde_json::Value> =
        certs.iter().map(|c| serde_json::json!({ "use": "x509-svid", "x5c": [STANDARD.encode(c)] })).collect();
    let rebuilt = serde_json::json!({ "keys": keys, "spiffe_refresh_hint": hint.as_secs() });
    let again =
        parse_bundle_json(rebuilt.to_string().as_bytes()).map_err(|e| format!("a rebuilt bundle is refused: {e}"))?;
    if again != (certs, hint) {
        return Err("the bundle does not round-trip through JSON".into());
    }
    Ok(())
}

/// A seed input: file name, selector byte, the bytes after it.
pub type Seed = (&'static str, u8, Vec<u8>);

/// Valid inputs, one or more per entry point above, as `(name, selector, bytes)`: the seed corpus of
/// the target (`fuzz/seeds/mesh/`), and proof that the fixture reaches acceptance.
pub fn seeds() -> Result<Vec<Seed>, String> {
    let f = fixture()?;
    let svid_pem = pem_encode_certs(&[f.svid_der.clone(), f.ca_der.clone()]);
    let response = serde_json::json!({
        "spiffe_id": SVID_ID, "svid": svid_pem, "bundle": f.ca_pem, "not_before": NOW - 60, "not_after": NOW + 3600,
    });
    let bundle = serde_json::json!({
        "keys": [{ "use": "x509-svid", "kty": "EC", "x5c": [STANDARD.encode(&f.ca_der)] }],
        "spiffe_refresh_hint": 300, "spiffe_sequence": 1,
    });
    Ok(vec![
        ("csr_pem", 0, CSR_PEM.as_bytes().to_vec()),
        ("csr_der", 0, f.csr_der.clone()),
        ("renewal_pem", 1, format!("{svid_pem}\0{}", f.proof).into_bytes()),
        ("renewal_der", 2, f.svid_der.clone()),
        ("request_join", 3, serde_json::json!({ "csr": CSR_PEM, "join_token": "abc" }).to_string().into_bytes()),
        ("request_k8s", 3, serde_json::json!({ "csr": CSR_PEM, "k8s_token": "e.y.j" }).to_string().into_bytes()),
        (
            "request_renewal",
            3,
            serde_json::json!({ "csr": CSR_PEM, "svid": svid_pem, "proof": f.proof }).to_string().into_bytes(),
        ),
        ("response", 6, response.to_string().into_bytes()),
        ("bundle_json", 7, bundle.to_string().into_bytes()),
        ("response_der", 8, f.svid_der.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed is accepted by the parser its selector names, so the fuzzer starts past the checks.
    #[test]
    fn seeds_are_accepted() {
        let f = fixture().unwrap();
        let seeds = seeds().unwrap();
        assert_eq!(seeds.len(), 10);
        assert!(pki::verify_csr(CSR_PEM).is_ok());
        assert!(pki::verify_csr(&armour("CERTIFICATE REQUEST", &f.csr_der)).is_ok());
        let svid_pem = pem_encode_certs(&[f.svid_der.clone(), f.ca_der.clone()]);
        let id =
            pki::verify_renewal(&svid_pem, &f.proof, &f.csr_der, std::slice::from_ref(&f.ca_der), TRUST_DOMAIN, NOW)
                .unwrap();
        assert_eq!(id.as_str(), SVID_ID);
        assert!(parse_request(&seeds[6].2).is_ok());
        let checked = check_svid_response(&seeds[7].2, &f.svid_key_raw, Some(TRUST_DOMAIN), None, now_u64()).unwrap();
        assert_eq!(checked.spiffe_id.as_str(), SVID_ID);
        assert_eq!(parse_bundle_json(&seeds[8].2).unwrap().0, vec![f.ca_der.clone()]);
        for (name, _, data) in &seeds {
            for run in [csr, renewal_pem, renewal_der, svid_request, svid_response, bundle_json, svid_response_der] {
                assert_eq!(run(data), Ok(()), "{name}");
            }
        }
    }

    /// serde_json skips an unknown field without checking its string (invalid UTF-8, a lone
    /// surrogate escape): the handler accepts such a body, and the harness must not call that a bug.
    #[test]
    fn unknown_fields_with_bad_strings_are_ignored() {
        let mut body = br#"{"csr":"x","join_token":"t","svit":"\ud800"#.to_vec();
        body.extend_from_slice(b"\xff\"}");
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
        let req = parse_request(&body).unwrap();
        assert!(matches!(req.attestation, Attestation::JoinToken(ref t) if t == "t"));
        assert_eq!(svid_request(&body), Ok(()));
    }

    /// Writes the seed corpus: `PALISADE_FUZZ_SEEDS=fuzz/seeds/mesh cargo test -p palisade-ca -- --ignored write_seeds`.
    #[test]
    #[ignore = "writes files; run by hand to refresh fuzz/seeds/mesh"]
    fn write_seeds() {
        let dir = std::path::PathBuf::from(std::env::var("PALISADE_FUZZ_SEEDS").unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        for (name, selector, data) in seeds().unwrap() {
            let mut bytes = vec![selector];
            bytes.extend_from_slice(&data);
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
