//! Workload identity types shared by the CA (`palisade-ca`: issuance and the rotation client) and
//! the proxy engine (`palisade-proxy`: mTLS with SVIDs). No crypto here: only the SPIFFE ID syntax
//! and the current SVID, which the rotation client replaces and the TLS code reads per handshake.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use crate::Secret;

/// A SPIFFE ID, `spiffe://<trust-domain>/<path>` (SPIFFE-ID §2): lowercase scheme, a trust
/// domain of `[a-z0-9.-_]`, a non-empty path of segments of `[A-Za-z0-9.-_]` that are neither
/// empty, `.` nor `..`; no query, fragment, port or userinfo.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    /// Length of `spiffe://<trust-domain>`.
    domain_end: usize,
}

impl SpiffeId {
    pub fn parse(id: &str) -> Result<SpiffeId, String> {
        let rest = id.strip_prefix("spiffe://").ok_or_else(|| format!("{id:?} is not a spiffe:// URI"))?;
        let (domain, path) = rest.split_once('/').ok_or_else(|| format!("{id:?} has no path"))?;
        if domain.is_empty() || domain.len() > 255 {
            return Err(format!("{id:?}: the trust domain must be 1 to 255 characters"));
        }
        if !domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)) {
            return Err(format!("{id:?}: the trust domain may only hold a-z, 0-9, '.', '-' and '_'"));
        }
        if id.len() > 2048 {
            return Err("a SPIFFE ID is at most 2048 bytes".into());
        }
        let segments_ok = path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        });
        if !segments_ok {
            return Err(format!(
                "{id:?}: path segments must be non-empty, not '.' or '..', and hold only A-Z, a-z, 0-9, '.', '-', '_'"
            ));
        }
        Ok(SpiffeId { id: id.to_owned(), domain_end: "spiffe://".len() + domain.len() })
    }

    /// `spiffe://<trust_domain>/ns/<ns>/sa/<service>`, the form Palisade issues.
    pub fn workload(trust_domain: &str, ns: &str, service: &str) -> Result<SpiffeId, String> {
        SpiffeId::parse(&format!("spiffe://{trust_domain}/ns/{ns}/sa/{service}"))
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn trust_domain(&self) -> &str {
        &self.id["spiffe://".len()..self.domain_end]
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.domain_end..]
    }

    /// `(ns, service)` of an ID of the form `/ns/<ns>/sa/<service>`.
    pub fn ns_service(&self) -> Option<(&str, &str)> {
        let mut parts = self.path().strip_prefix('/')?.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

/// An X.509-SVID with its private key and the trust bundle it was issued with.
#[derive(Debug, Clone)]
pub struct Svid {
    pub spiffe_id: SpiffeId,
    /// DER certificates: the SVID first, then any intermediate CA certificates.
    pub chain: Vec<Vec<u8>>,
    /// The SVID's private key, PKCS#8 DER. Made by the workload; never leaves it.
    pub key_pkcs8: Secret,
    /// DER trust anchors of the trust domain (every CA certificate currently in the bundle).
    pub bundle: Vec<Vec<u8>>,
    /// Validity of the SVID, Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
}

/// Something that holds the current SVID. TLS code calls [`SvidSource::current`] on every
/// handshake, so a renewed SVID or bundle is used from the next connection on.
pub trait SvidSource: Send + Sync + 'static {
    fn current(&self) -> Arc<Svid>;
}

/// The plain [`SvidSource`]: a cell the rotation client writes and TLS code reads.
#[derive(Debug)]
pub struct SvidCell(RwLock<Arc<Svid>>);

impl SvidCell {
    pub fn new(svid: Svid) -> SvidCell {
        SvidCell(RwLock::new(Arc::new(svid)))
    }

    pub fn set(&self, svid: Svid) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(svid);
    }
}

impl SvidSource for SvidCell {
    fn current(&self) -> Arc<Svid> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids_and_their_parts() {
        let id = SpiffeId::parse("spiffe://palisade.local/ns/shop/sa/orders").unwrap();
        assert_eq!(id.trust_domain(), "palisade.local");
        assert_eq!(id.path(), "/ns/shop/sa/orders");
        assert_eq!(id.ns_service(), Some(("shop", "orders")));
        assert_eq!(id.to_string(), "spiffe://palisade.local/ns/shop/sa/orders");
        assert_eq!(SpiffeId::workload("palisade.local", "shop", "orders").unwrap(), id);
        let other = SpiffeId::parse("spiffe://td/a/b/c").unwrap();
        assert_eq!(other.ns_service(), None);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "http://td/x",
            "SPIFFE://td/x",
            "spiffe://td",
            "spiffe://td/",
            "spiffe:///x",
            "spiffe://TD/x",
            "spiffe://td:8080/x",
            "spiffe://user@td/x",
            "spiffe://td/a//b",
            "spiffe://td/a/./b",
            "spiffe://td/a/../b",
            "spiffe://td/a?q=1",
            "spiffe://td/a#f",
            "spiffe://td/a b",
            "spiffe://td/a/",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(SpiffeId::workload("td", "shop", "a/b").unwrap().ns_service().is_none());
        assert!(SpiffeId::workload("td", "", "x").is_err());
    }

    #[test]
    fn the_cell_hands_out_the_latest_svid() {
        let svid = |n: u64| Svid {
            spiffe_id: SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap(),
            chain: vec![vec![1]],
            key_pkcs8: Secret::from(vec![2]),
            bundle: vec![vec![3]],
            not_before: 0,
            not_after: n,
        };
        let cell = SvidCell::new(svid(1));
        let first = cell.current();
        cell.set(svid(2));
        assert_eq!(first.not_after, 1);
        assert_eq!(cell.current().not_after, 2);
        assert_eq!(format!("{:?}", cell.current().key_pkcs8), "[redacted]");
    }
}
