//! Test PKI for the mesh: rcgen-made workload CAs and X.509-SVIDs as `palisade_core::Svid`s.
//! Shared by the unit tests (`src/mesh/tests.rs`, via `#[path]`) and `tests/mesh.rs`.
#![allow(dead_code, clippy::unwrap_used)]

use palisade_core::{Secret, SpiffeId, Svid};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub der: Vec<u8>,
}

/// What a test SVID looks like; `Default` is a valid SVID.
#[derive(Default)]
pub struct SvidOpts {
    /// URI SANs; empty means the SVID's own id only.
    pub extra_uris: Vec<String>,
    pub expired: bool,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { der: cert.der().to_vec(), issuer: Issuer::new(p, key) }
    }

    /// A workload certificate with these URI SANs (DER) and its PKCS#8 key.
    pub fn leaf(&self, uris: &[String], expired: bool) -> (Vec<u8>, Secret) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = uris.iter().map(|u| SanType::URI(u.as_str().try_into().unwrap())).collect();
        p.distinguished_name.push(DnType::CommonName, "workload");
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.der().to_vec(), Secret::from(key.serialize_der()))
    }

    /// An SVID for `id` signed by this CA, trusting `bundle`.
    pub fn svid_with(&self, id: &str, bundle: &[&Ca], o: SvidOpts) -> Svid {
        let uris: Vec<String> = std::iter::once(id.to_string()).chain(o.extra_uris).collect();
        let (der, key) = self.leaf(&uris, o.expired);
        Svid {
            spiffe_id: SpiffeId::parse(id).unwrap(),
            chain: vec![der],
            key_pkcs8: key,
            bundle: bundle.iter().map(|c| c.der.clone()).collect(),
            not_before: 0,
            not_after: u64::MAX,
        }
    }

    pub fn svid(&self, id: &str) -> Svid {
        self.svid_with(id, &[self], SvidOpts::default())
    }
}
