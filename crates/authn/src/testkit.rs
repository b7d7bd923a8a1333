//! Test helpers: keys that sign arbitrary JWS headers (so tests can forge), and a tiny HTTP/1.1
//! server on 127.0.0.1 that serves JSON documents and counts requests per path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::jose::b64_encode;

pub(crate) enum Signer {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
}

pub(crate) struct TestKey {
    pub(crate) alg: &'static str,
    signer: Signer,
    /// Public JWK without kid/alg.
    pub(crate) public: Value,
}

fn rsa_pkcs8() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    static KEY: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let der = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
        (der, key.n().to_bytes_be(), key.e().to_bytes_be())
    })
}

impl TestKey {
    pub(crate) fn es256() -> TestKey {
        Self::ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "ES256", "P-256")
    }

    pub(crate) fn es384() -> TestKey {
        Self::ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "ES384", "P-384")
    }

    fn ec(alg: &'static signature::EcdsaSigningAlgorithm, name: &'static str, crv: &str) -> TestKey {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap();
        let point = kp.public_key().as_ref().to_vec();
        let (x, y) = point[1..].split_at((point.len() - 1) / 2);
        let public = json!({"kty": "EC", "crv": crv, "x": b64_encode(x), "y": b64_encode(y)});
        TestKey { alg: name, signer: Signer::Ec(kp), public }
    }

    pub(crate) fn eddsa() -> TestKey {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let public = json!({"kty": "OKP", "crv": "Ed25519", "x": b64_encode(kp.public_key().as_ref())});
        TestKey { alg: "EdDSA", signer: Signer::Ed(kp), public }
    }

    /// One 2048-bit RSA key per test process (generation is slow), signing with `alg`.
    pub(crate) fn rsa(alg: &'static str) -> TestKey {
        let (der, n, e) = rsa_pkcs8();
        let kp = RsaKeyPair::from_pkcs8(der).unwrap();
        let encoding: &'static dyn signature::RsaEncoding = match alg {
            "RS256" => &signature::RSA_PKCS1_SHA256,
            "RS384" => &signature::RSA_PKCS1_SHA384,
            "RS512" => &signature::RSA_PKCS1_SHA512,
            "PS256" => &signature::RSA_PSS_SHA256,
            "PS384" => &signature::RSA_PSS_SHA384,
            "PS512" => &signature::RSA_PSS_SHA512,
            _ => unreachable!(),
        };
        let public = json!({"kty": "RSA", "n": b64_encode(n), "e": b64_encode(e)});
        TestKey { alg, signer: Signer::Rsa(kp, encoding), public }
    }

    /// The public JWK as published in a JWKS.
    pub(crate) fn jwk(&self, kid: &str) -> Value {
        let mut v = self.public.clone();
        v["kid"] = json!(kid);
        v["alg"] = json!(self.alg);
        v["use"] = json!("sig");
        v
    }

    pub(crate) fn sign_bytes(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ec(k) => k.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(msg).as_ref().to_vec(),
            Signer::Rsa(k, enc) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(*enc, &rng, msg, &mut sig).unwrap();
                sig
            }
        }
    }

    /// A compact JWS with exactly this header and payload.
    pub(crate) fn sign(&self, header: &Value, payload: &Value) -> String {
        let input =
            format!("{}.{}", b64_encode(header.to_string().as_bytes()), b64_encode(payload.to_string().as_bytes()));
        let sig = self.sign_bytes(input.as_bytes());
        format!("{input}.{}", b64_encode(&sig))
    }
}

/// `header.payload.signature` from raw parts.
pub(crate) fn compact(header: &Value, payload: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64_encode(header.to_string().as_bytes()),
        b64_encode(payload.to_string().as_bytes()),
        b64_encode(sig)
    )
}

#[derive(Default)]
pub(crate) struct Routes {
    pub(crate) docs: HashMap<String, String>,
    pub(crate) hits: HashMap<String, usize>,
}

/// A JSON server on 127.0.0.1:0. Dropping or stopping it closes the port.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) routes: Arc<Mutex<Routes>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let shared = routes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let routes = shared.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let body = {
                        let mut r = routes.lock().unwrap();
                        *r.hits.entry(path.clone()).or_insert(0) += 1;
                        r.docs.get(&path).cloned()
                    };
                    let resp = match body {
                        Some(b) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                            b.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
                    };
                    let _ = conn.write_all(resp.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        TestServer { addr, routes, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn set(&self, path: &str, doc: &Value) {
        self.routes.lock().unwrap().docs.insert(path.to_owned(), doc.to_string());
    }

    pub(crate) fn set_raw(&self, path: &str, body: String) {
        self.routes.lock().unwrap().docs.insert(path.to_owned(), body);
    }

    pub(crate) fn remove(&self, path: &str) {
        self.routes.lock().unwrap().docs.remove(path);
    }

    pub(crate) fn hits(&self, path: &str) -> usize {
        self.routes.lock().unwrap().hits.get(path).copied().unwrap_or(0)
    }

    /// Stop accepting: later connections are refused.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
