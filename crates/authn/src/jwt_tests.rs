use super::*;
use crate::jose::ALL_ALGS;
use crate::testkit::{compact, TestKey, TestServer};
use serde_json::json;

const ISS: &str = "https://idp.test";
const NOW: u64 = 1_700_000_000;

fn settings() -> IssuerSettings {
    let mut s = IssuerSettings::new(ISS);
    s.audiences = vec!["orders".into(), "payments".into()];
    s.algorithms = ALL_ALGS.iter().map(|a| a.name().to_owned()).collect();
    s
}

fn header(key: &TestKey, kid: &str) -> Value {
    json!({"alg": key.alg, "typ": "at+jwt", "kid": kid})
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "alice", "aud": ["inventory", "orders"], "exp": NOW + 300, "iat": NOW - 10,
        "nbf": NOW - 10, "jti": "t-1", "client_id": "web", "scope": "orders:read  orders:write",
        "roles": ["admin"], "realm_access": {"roles": ["user", "admin"]},
        "cnf": {"x5t#S256": "abc", "jkt": "def"}
    })
}

/// An authenticator whose issuer publishes `keys` (kid = index as string).
fn auth_with(keys: &[&TestKey]) -> JwtAuthenticator {
    let auth = JwtAuthenticator::new(vec![settings()]).unwrap();
    let jwks = json!({"keys": keys.iter().enumerate().map(|(i, k)| k.jwk(&format!("k{i}"))).collect::<Vec<_>>()});
    auth.install_jwks(ISS, &jwks).unwrap();
    auth
}

fn err(auth: &JwtAuthenticator, token: &str) -> AuthnError {
    let e = auth.verify_at(token, NOW).unwrap_err();
    // No error text may echo the token or any of its parts.
    for part in token.split('.').filter(|p| p.len() > 8) {
        assert!(!e.to_string().contains(part) && !e.description().contains(part));
    }
    e
}

#[test]
fn accepts_every_supported_algorithm_and_exposes_claims() {
    let keys = [
        TestKey::es256(),
        TestKey::es384(),
        TestKey::eddsa(),
        TestKey::rsa("RS256"),
        TestKey::rsa("RS384"),
        TestKey::rsa("RS512"),
        TestKey::rsa("PS256"),
        TestKey::rsa("PS384"),
        TestKey::rsa("PS512"),
    ];
    let auth = auth_with(&keys.iter().collect::<Vec<_>>());
    for (i, key) in keys.iter().enumerate() {
        let t = key.sign(&header(key, &format!("k{i}")), &claims());
        let v = auth.verify_at(&t, NOW).unwrap_or_else(|e| panic!("{}: {e}", key.alg));
        assert_eq!(v.issuer(), ISS);
        assert_eq!(v.subject(), Some("alice"));
        assert_eq!(v.client_id(), Some("web"));
        assert_eq!(v.scopes(), ["orders:read", "orders:write"]);
        assert_eq!(v.roles(), ["admin", "user"]);
        assert_eq!(v.cnf_x5t_s256(), Some("abc"));
        assert_eq!(v.cnf_jkt(), Some("def"));
        assert_eq!(v.expires_at(), NOW + 300);
        assert_eq!(v.token_id(), Some("t-1"));
        assert_eq!(v.claims()["aud"], json!(["inventory", "orders"]));
    }
}

#[test]
fn scp_array_azp_and_application_typ_prefix() {
    let key = TestKey::es256();
    let auth = auth_with(&[&key]);
    let c = json!({"iss": ISS, "aud": "payments", "exp": NOW + 60, "azp": "spa", "scp": ["a", "b"]});
    let t = key.sign(&json!({"alg": "ES256", "typ": "application/AT+JWT", "kid": "k0"}), &c);
    let v = auth.verify_at(&t, NOW).unwrap();
    assert_eq!(v.client_id(), Some("spa"));
    assert_eq!(v.scopes(), ["a", "b"]);
    assert!(v.roles().is_empty());
    assert_eq!(v.subject(), None);
    // typ JWT is accepted by default too; a missing typ is not.
    let t = key.sign(&json!({"alg": "ES256", "typ": "JWT", "kid": "k0"}), &c);
    assert!(auth.verify_at(&t, NOW).is_ok());
    let t = key.sign(&json!({"alg": "ES256", "kid": "k0"}), &c);
    assert_eq!(err(&auth, &t), AuthnError::TypNotAccepted);
}

#[test]
fn accepts_tokens_issued_by_palisade_crypto() {
    use palisade_crypto::{jwt, Alg as CAlg, Keyset};
    for alg in [CAlg::ES256, CAlg::EdDSA, CAlg::RS256] {
        let ks = Keyset::generate(alg, NOW - 100).unwrap();
        let auth = JwtAuthenticator::new(vec![settings()]).unwrap();
        auth.install_jwks(ISS, &ks.jwks(NOW)).unwrap();
        let t = jwt::sign(&ks, NOW, "at+jwt", &claims()).unwrap();
        assert_eq!(auth.verify_at(&t, NOW).unwrap().subject(), Some("alice"), "{alg:?}");
    }
}

#[test]
fn alg_none_in_any_casing_is_refused() {
    let key = TestKey::es256();
    let auth = auth_with(&[&key]);
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": none, "typ": "at+jwt", "kid": "k0"});
        assert_eq!(err(&auth, &compact(&h, &claims(), b"")), AuthnError::AlgNone, "{none}");
        // ... also with a non-empty signature part.
        assert_eq!(err(&auth, &compact(&h, &claims(), b"x")), AuthnError::AlgNone, "{none}");
    }
}

#[test]
fn hmac_keyed_with_public_key_material_is_refused() {
    let ec = TestKey::es256();
    let rsa = TestKey::rsa("RS256");
    let auth = auth_with(&[&ec, &rsa]);
    let hs = |secret: &[u8], kid: &str| {
        let h = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
        let input = format!(
            "{}.{}",
            jose::b64_encode(h.to_string().as_bytes()),
            jose::b64_encode(claims().to_string().as_bytes())
        );
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), input.as_bytes());
        format!("{input}.{}", jose::b64_encode(tag.as_ref()))
    };
    let PublicKey::Ec { point, .. } = PublicKey::from_jwk(ec.public.as_object().unwrap()).unwrap() else {
        unreachable!()
    };
    let PublicKey::Rsa { n, .. } = PublicKey::from_jwk(rsa.public.as_object().unwrap()).unwrap() else {
        unreachable!()
    };
    for (secret, kid) in [
        (point.clone(), "k0"),
        (n.clone(), "k1"),
        (ec.jwk("k0").to_string().into_bytes(), "k0"),
        (rsa.jwk("k1").to_string().into_bytes(), "k1"),
        (rsa.public["n"].as_str().unwrap().as_bytes().to_vec(), "k1"),
    ] {
        assert_eq!(err(&auth, &hs(&secret, kid)), AuthnError::AlgSymmetric);
    }
}

#[test]
fn psychic_signature_r_s_zero_is_refused() {
    // CVE-2022-21449: an ECDSA signature (r, s) = (0, 0) verified as valid in some JDKs.
    let key = TestKey::es256();
    let auth = auth_with(&[&key]);
    let t = compact(&header(&key, "k0"), &claims(), &[0u8; 64]);
    assert_eq!(err(&auth, &t), AuthnError::BadSignature);
    // The same in ASN.1 DER form (SEQUENCE { INTEGER 0, INTEGER 0 }), which is not even 64 bytes.
    let t = compact(&header(&key, "k0"), &claims(), &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]);
    assert_eq!(err(&auth, &t), AuthnError::BadSignature);
}

#[test]
fn stripped_tampered_and_wrongly_keyed_signatures_are_refused() {
    let key = TestKey::es256();
    let other = TestKey::es256();
    let auth = auth_with(&[&key]);
    let good = key.sign(&header(&key, "k0"), &claims());
    let (input, _) = good.rsplit_once('.').unwrap();
    assert_eq!(err(&auth, &format!("{input}.")), AuthnError::Malformed("the token signature is missing"));
    assert_eq!(err(&auth, input), AuthnError::Malformed("the token is not a compact JWS (three dot-separated parts)"));
    assert_eq!(
        err(&auth, &format!("{good}.x")).description(),
        "the token is not a compact JWS (three dot-separated parts)"
    );
    let forged = other.sign(&header(&key, "k0"), &claims());
    assert_eq!(err(&auth, &forged), AuthnError::BadSignature);
    // A valid signature moved onto other claims.
    let mut c = claims();
    c["sub"] = json!("mallory");
    let resigned = other.sign(&header(&key, "k0"), &c);
    let swapped = format!("{}.{}", resigned.rsplit_once('.').unwrap().0, good.rsplit_once('.').unwrap().1);
    assert_eq!(err(&auth, &swapped), AuthnError::BadSignature);
}

#[test]
fn kid_is_only_a_lookup_string() {
    let key = TestKey::es256();
    let auth = auth_with(&[&key]);
    for kid in ["../../etc/passwd", "' OR 1=1 --", "k0\u{0}", "K0", "", "/dev/null"] {
        let t = key.sign(&header(&key, kid), &claims());
        assert_eq!(err(&auth, &t), AuthnError::UnknownKey, "{kid:?}");
    }
    let t = key.sign(&json!({"alg": "ES256", "typ": "at+jwt", "kid": 7}), &claims());
    assert_eq!(err(&auth, &t), AuthnError::Malformed("the token kid is not a string"));
}

#[test]
fn key_carrying_headers_are_ignored() {
    let key = TestKey::es256();
    let attacker = TestKey::es256();
    let auth = auth_with(&[&key]);
    let cert = rcgen::generate_simple_self_signed(vec!["attacker.test".into()]).unwrap();
    let x5c = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cert.cert.der());
    for extra in [
        json!({"jku": "https://attacker.test/jwks.json"}),
        json!({"x5u": "https://attacker.test/cert.pem"}),
        json!({"jwk": attacker.public}),
        json!({"x5c": [x5c]}),
    ] {
        // Under the attacker's own kid: no such key in the issuer's JWKS.
        let mut h = header(&attacker, "attacker");
        h.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        assert_eq!(err(&auth, &attacker.sign(&h, &claims())), AuthnError::UnknownKey, "{extra}");
        // Under the issuer's kid: the issuer's key does not verify the attacker's signature.
        h["kid"] = json!("k0");
        assert_eq!(err(&auth, &attacker.sign(&h, &claims())), AuthnError::BadSignature, "{extra}");
        // Without kid: the issuer's only ES256 key is tried, not the embedded one.
        h.as_object_mut().unwrap().remove("kid");
        assert_eq!(err(&auth, &attacker.sign(&h, &claims())), AuthnError::BadSignature, "{extra}");
    }
}

#[test]
fn kid_less_tokens_need_exactly_one_usable_key() {
    let a = TestKey::es256();
    let b = TestKey::es256();
    let ed = TestKey::eddsa();
    let h = json!({"alg": "ES256", "typ": "at+jwt"});
    let auth = auth_with(&[&a, &ed]);
    assert!(auth.verify_at(&a.sign(&h, &claims()), NOW).is_ok());
    let auth = auth_with(&[&a, &b]);
    assert_eq!(err(&auth, &a.sign(&h, &claims())), AuthnError::AmbiguousKey);
    let auth = auth_with(&[&ed]);
    assert_eq!(err(&auth, &a.sign(&h, &claims())), AuthnError::UnknownKey);
}

#[test]
fn alg_must_fit_the_key_and_the_allow_list() {
    let ec = TestKey::es256();
    let rsa = TestKey::rsa("RS256");
    let auth = auth_with(&[&ec, &rsa]);
    // An RS256 signature presented under the EC key's kid.
    let t = rsa.sign(&json!({"alg": "RS256", "typ": "at+jwt", "kid": "k0"}), &claims());
    assert_eq!(err(&auth, &t), AuthnError::KeyAlgMismatch);
    // PS256 against a JWK that says alg RS256.
    let ps = TestKey::rsa("PS256");
    let t = ps.sign(&json!({"alg": "PS256", "typ": "at+jwt", "kid": "k1"}), &claims());
    assert_eq!(err(&auth, &t), AuthnError::KeyAlgMismatch);
    // ES384 is a valid alg, but the default allow-list is ES256/RS256/EdDSA.
    let auth = JwtAuthenticator::new(vec![IssuerSettings::new(ISS)]).unwrap();
    let p384 = TestKey::es384();
    auth.install_jwks(ISS, &json!({"keys": [p384.jwk("k0")]})).unwrap();
    let t = p384.sign(&header(&p384, "k0"), &claims());
    assert_eq!(err(&auth, &t), AuthnError::AlgNotAllowed);
    let t = p384.sign(&json!({"alg": "ES512", "typ": "at+jwt", "kid": "k0"}), &claims());
    assert_eq!(err(&auth, &t), AuthnError::AlgNotAllowed);
}

#[test]
fn registered_claims_are_enforced() {
    let key = TestKey::es256();
    let auth = auth_with(&[&key]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        key.sign(&header(&key, "k0"), &c)
    };
    // exp: leeway 30 s.
    assert!(auth.verify_at(&with(&|c| c["exp"] = json!(NOW - 29)), NOW).is_ok());
    assert_eq!(err(&auth, &with(&|c| c["exp"] = json!(NOW - 30))), AuthnError::Expired);
    assert_eq!(err(&auth, &with(&|c| c["exp"] = json!(NOW - 3600))), AuthnError::Expired);
    assert_eq!(err(&auth, &with(&|c| c["exp"] = json!("tomorrow"))), AuthnError::InvalidClaim("exp"));
    assert_eq!(err(&auth, &with(&|c| _ = c.as_object_mut().unwrap().remove("exp"))), AuthnError::MissingClaim("exp"));
    // nbf and iat.
    assert!(auth.verify_at(&with(&|c| c["nbf"] = json!(NOW + 30)), NOW).is_ok());
    assert_eq!(err(&auth, &with(&|c| c["nbf"] = json!(NOW + 31))), AuthnError::NotYetValid);
    assert_eq!(err(&auth, &with(&|c| c["iat"] = json!(NOW + 600))), AuthnError::IssuedInFuture);
    // iss selects the issuer.
    assert_eq!(err(&auth, &with(&|c| c["iss"] = json!("https://evil.test"))), AuthnError::UnknownIssuer);
    assert_eq!(err(&auth, &with(&|c| c["iss"] = json!("https://idp.test/"))), AuthnError::UnknownIssuer);
    assert_eq!(err(&auth, &with(&|c| _ = c.as_object_mut().unwrap().remove("iss"))), AuthnError::MissingClaim("iss"));
    // aud: string or array, one configured audience must appear.
    assert!(auth.verify_at(&with(&|c| c["aud"] = json!("payments")), NOW).is_ok());
    assert_eq!(err(&auth, &with(&|c| c["aud"] = json!("inventory"))), AuthnError::AudienceMismatch);
    assert_eq!(err(&auth, &with(&|c| c["aud"] = json!(["a", "b"]))), AuthnError::AudienceMismatch);
    assert_eq!(err(&auth, &with(&|c| c["aud"] = json!(5))), AuthnError::InvalidClaim("aud"));
    assert_eq!(err(&auth, &with(&|c| _ = c.as_object_mut().unwrap().remove("aud"))), AuthnError::MissingClaim("aud"));
}

#[test]
fn header_rules_crit_typ_and_size() {
    let key = TestKey::es256();
    let auth = auth_with(&[&key]);
    for crit in [json!(["exp"]), json!([]), json!(null), json!(["b64"])] {
        let mut h = header(&key, "k0");
        h["crit"] = crit;
        assert_eq!(err(&auth, &key.sign(&h, &claims())), AuthnError::CritUnsupported);
    }
    for typ in [json!("dpop+jwt"), json!("id_token+jwt"), json!("JWS"), json!(1)] {
        let mut h = header(&key, "k0");
        h["typ"] = typ;
        assert_eq!(err(&auth, &key.sign(&h, &claims())), AuthnError::TypNotAccepted);
    }
    let mut c = claims();
    c["pad"] = json!("x".repeat(8192));
    let big = key.sign(&header(&key, "k0"), &c);
    assert_eq!(err(&auth, &big), AuthnError::TokenTooLarge);
    assert_eq!(err(&auth, &"a".repeat(100_000)), AuthnError::TokenTooLarge);
    // Garbage never panics.
    for junk in ["", ".", "..", "a.b.c", "e30.e30.e30", "W10.e30.e30", "e30.W10.e30", "\u{fffd}.\u{fffd}.\u{fffd}"] {
        assert!(auth.verify_at(junk, NOW).is_err(), "{junk}");
    }
}

#[test]
fn configuration_is_validated() {
    let bad = |f: &dyn Fn(&mut IssuerSettings)| {
        let mut s = IssuerSettings::new(ISS);
        f(&mut s);
        JwtAuthenticator::new(vec![s]).unwrap_err()
    };
    assert!(matches!(bad(&|s| s.algorithms = vec!["HS256".into()]), AuthnError::Config(_)));
    assert!(matches!(bad(&|s| s.algorithms = vec!["none".into()]), AuthnError::Config(_)));
    assert!(matches!(bad(&|s| s.algorithms = vec![]), AuthnError::Config(_)));
    assert!(matches!(bad(&|s| s.issuer = "idp.test".into()), AuthnError::Config(_)));
    assert!(matches!(bad(&|s| s.jwks_uri = Some("file:///etc/jwks".into())), AuthnError::Config(_)));
    assert!(matches!(bad(&|s| s.ca_pem = Some(b"not pem".to_vec())), AuthnError::Config(_)));
    assert!(matches!(bad(&|s| s.min_refresh_interval = Duration::from_secs(600)), AuthnError::Config(_)));
    assert!(JwtAuthenticator::new(vec![IssuerSettings::new(ISS), IssuerSettings::new(ISS)]).is_err());
    assert!(JwtAuthenticator::new(vec![]).is_err());
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap().cert.pem();
    assert!(JwtAuthenticator::new(vec![IssuerSettings { ca_pem: Some(ca.into_bytes()), ..IssuerSettings::new(ISS) }])
        .is_ok());
}

#[test]
fn fails_closed_before_the_first_fetch() {
    let key = TestKey::es256();
    let auth = JwtAuthenticator::new(vec![settings()]).unwrap();
    let e = err(&auth, &key.sign(&header(&key, "k0"), &claims()));
    assert_eq!(e.to_string(), "signing keys of issuer https://idp.test are not available");
    assert_eq!(e.oauth_error(), "temporarily_unavailable");
}

#[test]
fn jwks_parsing_skips_unusable_keys_and_refuses_an_empty_result() {
    let ec = TestKey::es256();
    let mut enc = ec.jwk("enc");
    enc["use"] = json!("enc");
    let mut wrong_alg = ec.jwk("w");
    wrong_alg["alg"] = json!("RS256");
    let mut private = ec.jwk("p");
    private["d"] = json!("AAAA");
    let doc = json!({"keys": [enc, wrong_alg, private, {"kty": "oct", "k": "c2VjcmV0"}, 5, ec.jwk("ok")]});
    let keys = parse_jwks(doc.as_object().unwrap()).unwrap();
    assert_eq!(keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>(), [Some("ok")]);
    let doc = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
    assert_eq!(parse_jwks(doc.as_object().unwrap()).err().as_deref(), Some("the JWKS contains no usable signing key"));
}

#[test]
fn authenticator_and_verify_future_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let auth = JwtAuthenticator::new(vec![settings()]).unwrap();
    send_sync(&auth);
    send(auth.verify("x"));
    send(Arc::new(JwtAuthenticator::new(vec![settings()]).unwrap()).refresh_loop(async {}));
}

// ---- network: discovery, refresh, issuer down -------------------------------------------

fn net_settings(server: &TestServer) -> IssuerSettings {
    let mut s = IssuerSettings::new(server.url());
    s.min_refresh_interval = Duration::from_secs(60);
    s.refresh_interval = Duration::from_secs(300);
    s
}

fn net_claims(server: &TestServer) -> Value {
    json!({"iss": server.url(), "sub": "bob", "exp": unix_now() + 300})
}

fn discovery(server: &TestServer) -> Value {
    json!({"issuer": server.url(), "jwks_uri": format!("{}/jwks", server.url())})
}

#[tokio::test]
async fn discovers_jwks_via_openid_configuration() {
    let server = TestServer::start().await;
    let key = TestKey::es256();
    server.set("/.well-known/openid-configuration", &discovery(&server));
    server.set("/jwks", &json!({"keys": [key.jwk("a")]}));
    let auth = JwtAuthenticator::new(vec![net_settings(&server)]).unwrap();
    auth.refresh_all().await.unwrap();
    let t = key.sign(&header(&key, "a"), &net_claims(&server));
    assert_eq!(auth.verify(&t).await.unwrap().subject(), Some("bob"));
    assert_eq!(server.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(server.hits("/.well-known/oauth-authorization-server"), 0);
    assert_eq!(server.hits("/jwks"), 1);
    server.stop().await;
}

#[tokio::test]
async fn falls_back_to_oauth_authorization_server_metadata() {
    let server = TestServer::start().await;
    let key = TestKey::eddsa();
    server.set("/.well-known/oauth-authorization-server", &discovery(&server));
    server.set("/jwks", &json!({"keys": [key.jwk("a")]}));
    let auth = JwtAuthenticator::new(vec![net_settings(&server)]).unwrap();
    // The first verify fetches on demand (no keys yet).
    let t = key.sign(&header(&key, "a"), &net_claims(&server));
    assert!(auth.verify(&t).await.is_ok());
    assert_eq!(server.hits("/.well-known/openid-configuration"), 1);
    assert_eq!(server.hits("/.well-known/oauth-authorization-server"), 1);
    server.stop().await;
}

#[tokio::test]
async fn metadata_naming_another_issuer_or_a_non_http_jwks_uri_is_refused() {
    let server = TestServer::start().await;
    let key = TestKey::es256();
    server.set(
        "/.well-known/openid-configuration",
        &json!({"issuer": "https://other.test", "jwks_uri": format!("{}/jwks", server.url())}),
    );
    server.set(
        "/.well-known/oauth-authorization-server",
        &json!({"issuer": server.url(), "jwks_uri": "file:///etc/passwd"}),
    );
    server.set("/jwks", &json!({"keys": [key.jwk("a")]}));
    let auth = JwtAuthenticator::new(vec![net_settings(&server)]).unwrap();
    let e = auth.refresh_all().await.unwrap_err();
    let AuthnError::KeyFetch { reason, .. } = &e else { panic!("{e}") };
    assert!(reason.contains("metadata names another issuer"), "{reason}");
    assert!(reason.contains("no http(s) jwks_uri"), "{reason}");
    assert_eq!(server.hits("/jwks"), 0);
    let t = key.sign(&header(&key, "a"), &net_claims(&server));
    assert!(matches!(auth.verify(&t).await, Err(AuthnError::KeysUnavailable { .. })));
    server.stop().await;
}

#[tokio::test]
async fn unknown_kid_refetches_once_per_min_refresh_interval() {
    let server = TestServer::start().await;
    let old = TestKey::es256();
    let new = TestKey::es256();
    let mut s = net_settings(&server);
    s.jwks_uri = Some(format!("{}/jwks", server.url()));
    server.set("/jwks", &json!({"keys": [old.jwk("old")]}));
    let auth = JwtAuthenticator::new(vec![s]).unwrap();
    auth.refresh_all().await.unwrap();
    assert_eq!(server.hits("/jwks"), 1);
    assert_eq!(server.hits("/.well-known/openid-configuration"), 0, "explicit jwks_uri skips discovery");
    // The issuer rotates; a token under the new kid triggers one refetch that finds it.
    server.set("/jwks", &json!({"keys": [old.jwk("old"), new.jwk("new")]}));
    let t = new.sign(&header(&new, "new"), &net_claims(&server));
    assert!(auth.verify(&t).await.is_ok());
    assert_eq!(server.hits("/jwks"), 2);
    // A second unknown kid within min_refresh_interval does not refetch.
    let t = new.sign(&header(&new, "unknown"), &net_claims(&server));
    assert_eq!(auth.verify(&t).await.unwrap_err(), AuthnError::UnknownKey);
    assert_eq!(server.hits("/jwks"), 2);
    // Known kids never refetch.
    let t = old.sign(&header(&old, "old"), &net_claims(&server));
    assert!(auth.verify(&t).await.is_ok());
    assert_eq!(server.hits("/jwks"), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kids_share_one_fetch() {
    let server = TestServer::start().await;
    let key = TestKey::es256();
    let mut s = net_settings(&server);
    s.jwks_uri = Some(format!("{}/jwks", server.url()));
    server.set("/jwks", &json!({"keys": [key.jwk("a")]}));
    let auth = Arc::new(JwtAuthenticator::new(vec![s]).unwrap());
    let t = key.sign(&header(&key, "a"), &net_claims(&server));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (auth, t) = (auth.clone(), t.clone());
            tokio::spawn(async move { auth.verify(&t).await.is_ok() })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(server.hits("/jwks"), 1);
    server.stop().await;
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_issuer_is_down() {
    let server = TestServer::start().await;
    let key = TestKey::rsa("RS256");
    server.set("/.well-known/openid-configuration", &discovery(&server));
    server.set("/jwks", &json!({"keys": [key.jwk("a")]}));
    let mut s = net_settings(&server);
    s.min_refresh_interval = Duration::ZERO; // every unknown kid may refetch: must not drop keys
    let auth = JwtAuthenticator::new(vec![s]).unwrap();
    auth.refresh_all().await.unwrap();
    let t = key.sign(&header(&key, "a"), &net_claims(&server));
    let unknown = key.sign(&header(&key, "b"), &net_claims(&server));
    let url = server.url();
    server.stop().await;
    let e = auth.refresh_all().await.unwrap_err();
    assert!(matches!(&e, AuthnError::KeyFetch { issuer, .. } if *issuer == url), "{e}");
    assert!(auth.verify(&t).await.is_ok());
    assert_eq!(auth.verify(&unknown).await.unwrap_err(), AuthnError::UnknownKey);
    assert!(auth.verify(&t).await.is_ok(), "a failed on-demand refetch keeps the cached keys");
}

#[tokio::test]
async fn a_broken_jwks_response_keeps_the_previous_keys() {
    let server = TestServer::start().await;
    let key = TestKey::es256();
    let auth = fetched(&server, &key).await;
    let t = key.sign(&header(&key, "a"), &net_claims(&server));
    for broken in [json!({"keys": []}), json!({"nokeys": 1}), json!([1, 2])] {
        server.set("/jwks", &broken);
        assert!(auth.refresh_all().await.is_err(), "{broken}");
        assert!(auth.verify(&t).await.is_ok());
    }
    server.set_raw("/jwks", format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(fetch::MAX_BODY)));
    let e = auth.refresh_all().await.unwrap_err();
    assert!(e.to_string().contains("reading the body failed"), "{e}");
    server.remove("/jwks");
    let e = auth.refresh_all().await.unwrap_err();
    assert!(e.to_string().contains("HTTP status 404"), "{e}");
    assert!(auth.verify(&t).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn refresh_loop_picks_up_rotations_and_stops_on_shutdown() {
    let server = TestServer::start().await;
    let old = TestKey::es256();
    let new = TestKey::es256();
    let mut s = net_settings(&server);
    s.jwks_uri = Some(format!("{}/jwks", server.url()));
    s.refresh_interval = Duration::from_millis(200);
    s.min_refresh_interval = Duration::from_millis(100);
    server.set("/jwks", &json!({"keys": [old.jwk("old")]}));
    let auth = Arc::new(JwtAuthenticator::new(vec![s]).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(auth.clone().refresh_loop(async move {
        let _ = stopped.await;
    }));
    let t_old = old.sign(&header(&old, "old"), &net_claims(&server));
    let t_new = new.sign(&header(&new, "new"), &net_claims(&server));
    let deadline = Instant::now() + Duration::from_secs(5);
    while auth.verify_at(&t_old, unix_now()).is_err() {
        assert!(Instant::now() < deadline, "initial fetch did not happen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.set("/jwks", &json!({"keys": [new.jwk("new")]}));
    // verify_at never fetches: only the loop can make the new key appear.
    while auth.verify_at(&t_new, unix_now()).is_err() {
        assert!(Instant::now() < deadline, "the loop did not refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(auth.verify_at(&t_old, unix_now()).unwrap_err(), AuthnError::UnknownKey);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task).await.unwrap().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_verified_token_is_remembered_until_its_key_set_changes() {
    let server = TestServer::start().await;
    let (old, new) = (TestKey::es256(), TestKey::es256());
    let mut s = net_settings(&server);
    s.jwks_uri = Some(format!("{}/jwks", server.url()));
    server.set("/jwks", &json!({"keys": [old.jwk("a")]}));
    let auth = JwtAuthenticator::new(vec![s]).unwrap();
    auth.refresh_all().await.unwrap();
    let t = old.sign(&header(&old, "a"), &net_claims(&server));
    assert!(auth.verified_now(&t).is_none(), "not verified yet");
    let first = auth.verify(&t).await.unwrap();
    assert_eq!(auth.verified.lock().unwrap().map.len(), 1, "the verified token is remembered");
    assert_eq!(auth.verified_now(&t).unwrap().claims(), first.claims(), "and answered without waiting");
    // What a caller derives from it is made once and shared by the cached copies.
    let made = first.derived(|| String::from("identity"));
    let again = auth.verify(&t).await.unwrap();
    assert!(Arc::ptr_eq(&made, &again.derived(|| String::from("made twice"))), "served from the cache");
    // Another type than the one stored is made, not mixed up with it.
    assert_eq!(*again.derived(|| 7u32), 7);
    // A tampered copy has another digest: it is verified, and refused.
    let forged = format!("{}x", &t[..t.len() - 1]);
    assert!(auth.verify(&forged).await.is_err());
    // The issuer drops key "a": the remembered token must not outlive its key.
    server.set("/jwks", &json!({"keys": [new.jwk("b")]}));
    auth.refresh_all().await.unwrap();
    assert!(auth.verified_now(&t).is_none(), "a key set change ends the cached answer");
    assert_eq!(auth.verify(&t).await.unwrap_err(), AuthnError::UnknownKey);
    server.stop().await;
}

#[tokio::test]
async fn a_cached_token_answers_only_for_the_same_bytes() {
    let server = TestServer::start().await;
    let key = TestKey::es256();
    let auth = fetched(&server, &key).await;
    let t = key.sign(&header(&key, "a"), &net_claims(&server));
    auth.verify(&t).await.unwrap();
    assert_eq!(auth.verified.lock().unwrap().bytes, t.len());
    // Put the entry where a forged token's hash leads, as a hash collision would: the forged
    // token is still verified (and refused), not answered with the cached one.
    let forged = format!("{}x", &t[..t.len() - 1]);
    {
        let mut c = auth.verified.lock().unwrap();
        let (real, fake) = (c.key(&t), c.key(&forged));
        let entry = c.map.remove(&real).unwrap();
        c.map.insert(fake, entry);
    }
    assert!(auth.verify(&forged).await.is_err());
    // The real token no longer finds its entry: it is verified again and remembered again.
    auth.verify(&t).await.unwrap();
    let (entries, bytes) = {
        let c = auth.verified.lock().unwrap();
        (c.map.len(), c.bytes)
    };
    assert_eq!(entries, 2);
    assert_eq!(bytes, 2 * t.len(), "bytes are counted per entry");
    server.stop().await;
}

#[test]
fn same_bytes_compares_every_byte_and_the_length() {
    let a: Vec<u8> = (0..37).collect();
    for len in 0..a.len() {
        assert!(same_bytes(&a[..len], &a[..len]));
        assert!(!same_bytes(&a[..len], &a[..len + 1]));
        for at in 0..len {
            let mut b = a[..len].to_vec();
            b[at] ^= 0x20;
            assert!(!same_bytes(&a[..len], &b), "len {len}, difference at {at}");
        }
    }
}

/// An authenticator for `server`'s issuer, its keys fetched from a JWKS holding `key` as `a`.
async fn fetched(server: &TestServer, key: &TestKey) -> JwtAuthenticator {
    let mut s = net_settings(server);
    s.jwks_uri = Some(format!("{}/jwks", server.url()));
    server.set("/jwks", &json!({"keys": [key.jwk("a")]}));
    let auth = JwtAuthenticator::new(vec![s]).unwrap();
    auth.refresh_all().await.unwrap();
    auth
}
