//! Untrusted mesh input: the CA's CSR check, renewal verification and `POST /ca/v1/svid` body; the
//! SVID client's checks of an SVID response and of `bundle.json`; SPIFFE IDs; mesh policy files.
//! The first byte picks the parser. Must never panic, and every accepted value must round-trip or
//! satisfy its invariant (checked in `palisade_ca::fuzzing` for the CA, here for the rest).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_ca::fuzzing;
use palisade_core::SpiffeId;
use palisade_policy::{Authorizer, MeshPolicy, PolicySource};

/// The sidecar identity every accepted mesh policy is compiled for (besides each rule's `to`).
const LOCAL: &str = "spiffe://palisade.local/ns/shop/sa/orders";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let checked = match selector % 10 {
        0 => fuzzing::csr(rest),
        1 => fuzzing::renewal_pem(rest),
        2 => fuzzing::renewal_der(rest),
        3 => fuzzing::svid_request(rest),
        4 => {
            spiffe_id(rest);
            Ok(())
        }
        5 => {
            mesh_policy(rest);
            Ok(())
        }
        6 => fuzzing::svid_response(rest),
        7 => fuzzing::bundle_json(rest),
        8 => fuzzing::svid_response_der(rest),
        _ => Ok(()),
    };
    if let Err(broken) = checked {
        panic!("selector {selector}: {broken}");
    }
});

fn spiffe_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(id) = SpiffeId::parse(text) else { return };
    assert_eq!(id.as_str(), text);
    assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id), "an accepted ID does not re-parse to itself");
    assert_eq!(id.to_string(), text);
    assert!(!id.trust_domain().is_empty(), "empty trust domain in {text:?}");
    assert!(id.path().starts_with('/'), "path of {text:?} does not start with '/'");
    assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), text);
    if let Some((ns, sa)) = id.ns_service() {
        assert_eq!(SpiffeId::workload(id.trust_domain(), ns, sa).as_ref(), Ok(&id));
    }
}

fn mesh_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = MeshPolicy::parse("fuzz.yaml", text) else { return };
    let Ok(local) = SpiffeId::parse(LOCAL) else { return };
    let mut locals = vec![local];
    for rule in policy.rules() {
        assert_eq!(SpiffeId::parse(rule.from().as_str()).as_ref(), Ok(rule.from()));
        if !locals.contains(rule.to()) && locals.len() < 8 {
            locals.push(rule.to().clone());
        }
    }
    // An accepted policy must compile for every sidecar: Cedar that fails would mean user text
    // escaped its string literal.
    for local in &locals {
        let src = PolicySource { name: "fuzz.yaml".into(), text: policy.cedar_for(local) };
        if let Err(errors) = Authorizer::compile(&[src], &[]) {
            panic!(
                "accepted mesh policy compiles to invalid Cedar for {local}: {errors:?}\n{}",
                policy.cedar_for(local)
            );
        }
    }
    let _ = policy.k8s_network_policies(15443);
}
