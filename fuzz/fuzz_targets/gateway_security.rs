//! Untrusted gateway-security input: bearer tokens (JWT header/claims parsing up to the key
//! lookup), DPoP proofs, client certificates, API keys, and policy text (Cedar files, decision
//! tables, principal references). Must never panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(jwt) = palisade_authn::JwtAuthenticator::new(vec![palisade_authn::IssuerSettings::new("https://fuzz.test")]) {
        let _ = jwt.verify_at(&text, 1_700_000_000);
    }
    let dpop = palisade_authn::DpopVerifier::new(Duration::from_secs(60), Duration::from_secs(300), 16);
    let _ = dpop.verify(&text, "GET", "https://fuzz.test/x", "token", Some("jkt"), 1_700_000_000);
    let _ = palisade_authn::client_identity(data);
    let _ = palisade_policy::parse_principal(&text);
    let src = palisade_policy::PolicySource { name: "fuzz.cedar".into(), text: text.to_string() };
    let _ = palisade_policy::check_files(&[src]);
    if let Ok(authz) = palisade_policy::Authorizer::compile(&[], &[]) {
        let _ = palisade_policy::run_cases(&authz, &text);
    }
});
