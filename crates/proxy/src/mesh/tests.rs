#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use palisade_core::{SpiffeId, Svid, SvidCell, SvidSource};
use rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

#[path = "../../tests/support/pki.rs"]
mod pki;
use pki::{Ca, SvidOpts};

const A: &str = "spiffe://td/ns/shop/sa/a";
const B: &str = "spiffe://td/ns/shop/sa/b";

fn cell(s: Svid) -> Arc<SvidCell> {
    Arc::new(SvidCell::new(s))
}

fn src(c: &Arc<SvidCell>) -> Arc<dyn SvidSource> {
    c.clone()
}

/// The outcome of one real handshake over an in-memory pipe, per side: the peer's leaf
/// certificate, or the error.
struct Outcome {
    server: Result<Vec<u8>, String>,
    client: Result<Vec<u8>, String>,
}

async fn handshake(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Outcome {
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let connector = TlsConnector::from(client);
    let name = ServerName::try_from(MESH_SNI).unwrap();
    let srv = async move {
        let tls = acceptor.accept(s_io).await.map_err(|e| e.to_string())?;
        let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
        // Read until the client closes, so a TLS 1.3 client learns of a late refusal.
        let mut tls = tls;
        let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut [0u8; 1]).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        peer.ok_or_else(|| "no client certificate".to_string())
    };
    let cli = async move {
        let mut tls = connector.connect(name, c_io).await.map_err(|e| e.to_string())?;
        let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
        // In TLS 1.3 the server judges the client certificate after the client finished: a
        // refusal arrives as an alert on the first read.
        tokio::io::AsyncWriteExt::shutdown(&mut tls).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut buf).await.map_err(|e| e.to_string())?;
        peer.ok_or_else(|| "no server certificate".to_string())
    };
    let run = async { tokio::join!(srv, cli) };
    let (server, client) = tokio::time::timeout(std::time::Duration::from_secs(10), run).await.unwrap();
    Outcome { server, client }
}

struct Pair {
    ca: Ca,
    a: Arc<SvidCell>,
    b: Arc<SvidCell>,
}

fn pair() -> Pair {
    let ca = Ca::new("td ca");
    Pair { a: cell(ca.svid(A)), b: cell(ca.svid(B)), ca }
}

/// Client `a` calls server `b`, expecting `B`.
async fn a_to_b(p: &Pair) -> Outcome {
    handshake(server_config(src(&p.b), "td"), client_config(src(&p.a), SpiffeId::parse(B).unwrap())).await
}

#[tokio::test]
async fn good_peers_are_accepted_both_ways() {
    let p = pair();
    let o = a_to_b(&p).await;
    assert_eq!(o.server.unwrap(), p.a.current().chain[0]);
    assert_eq!(o.client.unwrap(), p.b.current().chain[0]);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let p = pair();
    // A source whose SVID has no usable chain makes the client send no certificate.
    let mut none = p.ca.svid(A);
    none.chain.clear();
    p.a.set(none);
    let o = a_to_b(&p).await;
    assert!(o.server.as_ref().unwrap_err().contains("peer sent no certificates"), "{:?}", o.server);
    assert!(o.client.is_err());
}

#[tokio::test]
async fn a_client_svid_from_another_ca_is_refused() {
    let p = pair();
    let other = Ca::new("other ca");
    // The client trusts the server's CA, but its own SVID comes from elsewhere.
    p.a.set(other.svid_with(A, &[&p.ca], SvidOpts::default()));
    let o = a_to_b(&p).await;
    assert!(o.server.as_ref().unwrap_err().contains("UnknownIssuer"), "{:?}", o.server);
    assert!(o.client.is_err());
}

#[tokio::test]
async fn an_expired_client_svid_is_refused() {
    let p = pair();
    p.a.set(p.ca.svid_with(A, &[&p.ca], SvidOpts { expired: true, ..SvidOpts::default() }));
    let o = a_to_b(&p).await;
    assert!(o.server.as_ref().unwrap_err().contains("certificate expired"), "{:?}", o.server);
}

#[tokio::test]
async fn an_expired_server_svid_is_refused() {
    let p = pair();
    p.b.set(p.ca.svid_with(B, &[&p.ca], SvidOpts { expired: true, ..SvidOpts::default() }));
    let o = a_to_b(&p).await;
    assert!(o.client.as_ref().unwrap_err().contains("certificate expired"), "{:?}", o.client);
    assert!(o.server.is_err());
}

#[tokio::test]
async fn a_server_with_another_spiffe_id_is_refused() {
    let p = pair();
    p.b.set(p.ca.svid("spiffe://td/ns/shop/sa/c"));
    let o = a_to_b(&p).await;
    assert!(o.client.as_ref().unwrap_err().contains("ApplicationVerificationFailure"), "{:?}", o.client);
    assert!(o.server.is_err());
}

#[tokio::test]
async fn two_uri_sans_are_refused_on_either_side() {
    let p = pair();
    let two = SvidOpts { extra_uris: vec!["spiffe://td/ns/shop/sa/x".into()], ..SvidOpts::default() };
    p.a.set(p.ca.svid_with(A, &[&p.ca], two));
    let o = a_to_b(&p).await;
    assert!(o.server.as_ref().unwrap_err().contains("ApplicationVerificationFailure"), "{:?}", o.server);

    let p = pair();
    let two = SvidOpts { extra_uris: vec!["https://b.example".into()], ..SvidOpts::default() };
    p.b.set(p.ca.svid_with(B, &[&p.ca], two));
    let o = a_to_b(&p).await;
    assert!(o.client.as_ref().unwrap_err().contains("ApplicationVerificationFailure"), "{:?}", o.client);
}

#[tokio::test]
async fn a_client_from_another_trust_domain_is_refused() {
    let p = pair();
    // Same CA (so the chain verifies), but the SPIFFE ID names another trust domain.
    p.a.set(p.ca.svid("spiffe://elsewhere/ns/shop/sa/a"));
    let o = a_to_b(&p).await;
    assert!(o.server.as_ref().unwrap_err().contains("ApplicationVerificationFailure"), "{:?}", o.server);
    // The same client is accepted by a listener of that trust domain.
    let o =
        handshake(server_config(src(&p.b), "elsewhere"), client_config(src(&p.a), SpiffeId::parse(B).unwrap())).await;
    assert!(o.server.is_ok() && o.client.is_ok(), "{:?} {:?}", o.server, o.client);
}

#[tokio::test]
async fn a_certificate_without_a_spiffe_id_is_refused() {
    let p = pair();
    let (der, key) = p.ca.leaf(&["https://a.example/x".to_string()], false);
    let mut s = p.ca.svid(A);
    (s.chain, s.key_pkcs8) = (vec![der.clone()], key);
    p.a.set(s);
    let o = a_to_b(&p).await;
    assert!(o.server.as_ref().unwrap_err().contains("ApplicationVerificationFailure"), "{:?}", o.server);
    assert!(svid_id(&der).is_err());
    assert!(svid_id(&p.ca.leaf(&[], false).0).is_err(), "no URI SAN at all");
    assert_eq!(svid_id(&p.ca.svid(A).chain[0]).unwrap().as_str(), A);
    assert!(matches!(svid_id(b"not a certificate"), Err(Error::InvalidCertificate(CertificateError::BadEncoding))));
}

#[tokio::test]
async fn a_rotated_svid_is_served_on_the_next_handshake() {
    let p = pair();
    let first = a_to_b(&p).await;
    assert_eq!(first.client.as_ref().unwrap(), &p.b.current().chain[0]);
    let before = p.b.current().chain[0].clone();
    p.b.set(p.ca.svid(B));
    p.a.set(p.ca.svid(A));
    let after = p.b.current().chain[0].clone();
    assert_ne!(before, after);
    let o = a_to_b(&p).await;
    assert_eq!(o.client.unwrap(), after, "the server presents the new SVID");
    assert_eq!(o.server.unwrap(), p.a.current().chain[0], "the client presents the new SVID");
}

#[tokio::test]
async fn a_ca_added_to_the_bundle_is_trusted_on_the_next_handshake() {
    let p = pair();
    let new_ca = Ca::new("next td ca");
    // The client already has an SVID from the new CA (it trusts both).
    p.a.set(new_ca.svid_with(A, &[&p.ca, &new_ca], SvidOpts::default()));
    let o = a_to_b(&p).await;
    assert!(o.server.as_ref().unwrap_err().contains("UnknownIssuer"), "{:?}", o.server);
    // The server's bundle gains the new CA (same SVID key, new bundle).
    let mut b = (*p.b.current()).clone();
    b.bundle.push(new_ca.der.clone());
    p.b.set(b);
    let o = a_to_b(&p).await;
    assert_eq!(o.server.unwrap(), p.a.current().chain[0]);
}

#[test]
fn the_parsed_key_is_cached_per_svid() {
    let p = pair();
    let keys = SvidKeys::new(src(&p.b), Arc::new(default_provider()));
    let k1 = keys.current().unwrap();
    let k2 = keys.current().unwrap();
    assert!(Arc::ptr_eq(&k1, &k2));
    p.b.set(p.ca.svid(B));
    let k3 = keys.current().unwrap();
    assert!(!Arc::ptr_eq(&k1, &k3));
    assert_eq!(k3.cert[0].as_ref(), &p.b.current().chain[0][..]);
    // A key that does not match the certificate is not served.
    let mut bad = p.ca.svid(B);
    bad.key_pkcs8 = p.ca.svid(B).key_pkcs8;
    p.b.set(bad);
    assert!(keys.current().is_none());
}
