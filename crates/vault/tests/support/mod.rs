//! Shared test fixtures: a store in a temp dir, a master key, an audit sink that keeps events,
//! and an authorizer that lets only alice detokenize.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use base64::Engine;
use palisade_core::audit::{AuditEvent, AuditSink};
use palisade_crypto::MasterKey;
use palisade_store::Store;
use palisade_vault::{Caller, DetokenizeAuthorizer, Vault};

/// Keeps events; `full` makes it refuse them, as a full audit queue does.
#[derive(Default)]
pub struct Events(pub Mutex<Vec<AuditEvent>>, pub std::sync::atomic::AtomicBool);

impl AuditSink for Events {
    fn record(&self, event: AuditEvent) {
        self.0.lock().unwrap().push(event);
    }

    fn try_record(&self, event: AuditEvent) -> bool {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        self.record(event);
        true
    }
}

impl Events {
    pub fn reasons(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|e| e.reason.clone()).collect()
    }
    pub fn last(&self) -> AuditEvent {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
    pub fn all(&self) -> Vec<AuditEvent> {
        self.0.lock().unwrap().clone()
    }
}

pub struct AliceOnly;

impl DetokenizeAuthorizer for AliceOnly {
    fn may_detokenize(&self, principal: &str, template: &str) -> bool {
        principal == "User::\"alice\"" && template != "secret-cards"
    }
}

pub fn alice() -> Caller {
    Caller::new("User::\"alice\"")
}

pub fn bob() -> Caller {
    Caller::new("User::\"bob\"")
}

pub fn master() -> Arc<MasterKey> {
    Arc::new(MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([42u8; 32])).unwrap())
}

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub store: Store,
    pub vault: Vault,
    pub events: Arc<Events>,
}

pub async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&palisade_store::sqlite_url(dir.path())).await.unwrap();
    let events = Arc::new(Events::default());
    let vault = Vault::new(&store, master(), events.clone(), Arc::new(AliceOnly));
    Fixture { _dir: dir, store, vault, events }
}
