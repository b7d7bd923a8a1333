//! A JWT issuer for gateway tests: an ES256 key with its JWK, and the issuer's discovery document and
//! JWKS served over HTTP on loopback.

use std::convert::Infallible;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// An ES256 key with its JWK.
pub struct EcKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    pub kid: String,
}

impl EcKey {
    pub fn new(kid: &str) -> EcKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap().as_ref().to_vec();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
        EcKey { pair, pkcs8, kid: kid.into() }
    }

    /// The public point, uncompressed (0x04 || x || y).
    pub fn public_point(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn jwk(&self) -> Value {
        let p = self.public_point();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
               "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
    }

    pub fn pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.pkcs8);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
    }

    /// A compact JWS with exactly this header and these claims.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }
}

/// Serve an issuer's metadata on loopback: `/jwks` answers `jwks`, any other path the discovery document
/// (`issuer` = the returned URL, `jwks_uri` = its `/jwks`). Returns the issuer URL.
pub async fn serve_metadata(jwks: Value) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let jwks = Arc::new(jwks.to_string());
    let disc = Arc::new(json!({"issuer": url, "jwks_uri": format!("{url}/jwks")}).to_string());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (jwks, disc) = (jwks.clone(), disc.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = if req.uri().path() == "/jwks" { jwks.to_string() } else { disc.to_string() };
                    async move {
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    url
}
