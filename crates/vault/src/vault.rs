//! The [`Vault`]: named, versioned keys in the store, their lifecycle, and every operation on
//! them, each audited once per call. Invariants: material is unsealed only into a cached
//! [`VersionKey`] (or an export of an exportable key); a key past its deletion time is purged
//! before anything else happens to it, so nothing decrypts after deletion.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use palisade_core::audit::{now_rfc3339, AuditEvent, AuditSink, Decision, Stage};
use palisade_crypto::MasterKey;
use palisade_store::sqlx::AnyPool;
use palisade_store::Store;
use ring::aead::{Aad, Nonce, NONCE_LEN};
use ring::hmac;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

use crate::envelope;
use crate::error::{invalid, VaultError};
use crate::keys::{generate_material, random_bytes, KeyType, Primitive, VersionKey};
use crate::repo::{self, Insert, KeyRow, VersionRow};
use crate::tokenize::{self, FormatSpec, TokenFormat, MAX_TWEAK};

/// Most items in one batch call.
pub const MAX_BATCH_ITEMS: usize = 10_000;
/// How long a cached key is trusted before it is read again (changes made by another server
/// sharing the database are seen within this time; changes made here are seen at once).
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Longest scheduled-deletion grace period (ten years).
const MAX_GRACE_SECS: u64 = 10 * 365 * 24 * 3600;
/// Longest HMAC/sign input and context, so one item cannot pin the CPU for long.
const MAX_CONTEXT: usize = 4096;

/// Who asks, for the audit trail. The HTTP layer builds it from the authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `User::"alice"`, `Client::"billing"`, `Admin`, ...
    pub principal: String,
    pub request_id: String,
    pub client_ip: String,
}

impl Caller {
    pub fn new(principal: impl Into<String>) -> Caller {
        Caller { principal: principal.into(), request_id: String::new(), client_ip: String::new() }
    }
}

/// Decides whether a principal may turn tokens back into values. The template is the name of
/// the tokenization key. The server implements it with Cedar.
pub trait DetokenizeAuthorizer: Send + Sync {
    fn may_detokenize(&self, principal: &str, template: &str) -> bool;
}

/// Refuses every detokenization (the default when nothing better is configured).
pub struct DenyAllDetokenize;

impl DetokenizeAuthorizer for DenyAllDetokenize {
    fn may_detokenize(&self, _principal: &str, _template: &str) -> bool {
        false
    }
}

/// Settings of a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOptions {
    pub key_type: KeyType,
    /// The material may be exported (fixed at creation).
    pub exportable: bool,
    /// aes256-gcm-siv only: every encryption is deterministic (synthetic nonce), so equal
    /// plaintext and context give equal ciphertexts (for lookups and joins). Fixed at creation.
    pub convergent: bool,
}

impl KeyOptions {
    pub fn new(key_type: KeyType) -> KeyOptions {
        KeyOptions { key_type, exportable: false, convergent: false }
    }
}

/// A change of settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyConfig {
    /// Versions below it no longer decrypt, verify or detokenize (1..=latest).
    pub min_decryption_version: Option<u32>,
    /// Callers may not choose a version below it to encrypt with (0 = only "latest" rules).
    pub min_encryption_version: Option<u32>,
    /// A disabled key decrypts and verifies but makes nothing new.
    pub disabled: Option<bool>,
}

/// Public metadata of a key: never material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: KeyType,
    pub exportable: bool,
    pub convergent: bool,
    pub latest_version: u32,
    pub min_decryption_version: u32,
    pub min_encryption_version: u32,
    pub disabled: bool,
    /// Unix seconds when a scheduled deletion takes effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_at: Option<i64>,
    pub deleted: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub versions: Vec<VersionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub version: u32,
    pub created_at: i64,
    /// Ed25519 keys: base64 of the 32-byte public key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// The material of an exportable key, base64 per version (raw 32 bytes; Ed25519: PKCS#8 v2 DER).
/// Wiped from memory on drop.
#[derive(Serialize)]
pub struct ExportedKey {
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: KeyType,
    pub versions: BTreeMap<u32, String>,
}

impl Drop for ExportedKey {
    fn drop(&mut self) {
        for v in self.versions.values_mut() {
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for ExportedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportedKey").field("name", &self.name).finish_non_exhaustive()
    }
}

/// One item to encrypt.
#[derive(Clone, Default)]
pub struct EncryptItem {
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Associated data: must be given again to decrypt.
    pub context: Vec<u8>,
    /// Encrypt with this version instead of the latest (at least min_encryption_version).
    pub key_version: Option<u32>,
}

/// One item to decrypt or rewrap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecryptItem {
    pub ciphertext: String,
    pub context: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Encrypted {
    pub ciphertext: String,
    pub key_version: u32,
}

/// A data key: `plaintext` is present unless only the wrapped form was asked for.
pub struct DataKey {
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
    pub ciphertext: String,
    pub key_version: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataKeyItem {
    pub context: Vec<u8>,
    /// 128, 256 (default) or 512.
    pub bits: Option<u32>,
}

/// A signature or an HMAC: `pal:v<N>:<base64url>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tag {
    pub value: String,
    pub key_version: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyItem {
    pub input: Vec<u8>,
    /// A signature (ed25519 keys) or an HMAC (hmac-sha256 keys) as produced here.
    pub tag: String,
}

/// Format-preserving (FF1, reversible with the key) or vault (random, kept encrypted in the
/// store; `deterministic` returns the same token for the same value, for joins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    Fpe,
    Vault { deterministic: bool },
}

#[derive(Clone, PartialEq, Eq)]
pub struct TokenizeItem {
    pub value: Zeroizing<String>,
    pub spec: FormatSpec,
    pub mode: TokenMode,
    /// FF1 tweak (FPE mode): the same tweak is needed to detokenize. At most 256 bytes.
    pub tweak: Vec<u8>,
    /// FPE: tokenize with this version instead of the latest.
    pub key_version: Option<u32>,
}

impl TokenizeItem {
    pub fn new(value: &str, format: TokenFormat, mode: TokenMode) -> TokenizeItem {
        TokenizeItem {
            value: Zeroizing::new(value.to_owned()),
            spec: FormatSpec::new(format),
            mode,
            tweak: Vec::new(),
            key_version: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetokenizeItem {
    pub token: String,
    pub spec: FormatSpec,
    pub mode: TokenMode,
    pub tweak: Vec<u8>,
    /// FPE: the version the token was made with (default: the latest). Vault tokens record it.
    pub key_version: Option<u32>,
}

impl DetokenizeItem {
    pub fn new(token: &str, format: TokenFormat, mode: TokenMode) -> DetokenizeItem {
        DetokenizeItem {
            token: token.to_owned(),
            spec: FormatSpec::new(format),
            mode,
            tweak: Vec::new(),
            key_version: None,
        }
    }
}

/// A key as cached: its row and every version's primitive.
struct Loaded {
    row: KeyRow,
    key_type: KeyType,
    versions: BTreeMap<u32, VersionKey>,
    publics: BTreeMap<u32, (i64, Option<String>)>,
    at: Instant,
}

impl Loaded {
    fn info(&self) -> KeyInfo {
        info_of(&self.row, self.key_type, &self.publics)
    }

    /// The version that makes something new, after the state checks.
    fn for_new(&self, requested: Option<u32>) -> Result<&VersionKey, VaultError> {
        let r = &self.row;
        if r.deletion_at.is_some() {
            return Err(VaultError::DeletionScheduled(r.name.clone()));
        }
        if r.disabled {
            return Err(VaultError::KeyDisabled(r.name.clone()));
        }
        let v = requested.unwrap_or(r.latest_version);
        if v < r.min_encryption_version || v < r.min_decryption_version {
            return Err(VaultError::EncryptionVersionTooOld {
                name: r.name.clone(),
                version: v,
                min: r.min_encryption_version.max(r.min_decryption_version),
            });
        }
        self.versions.get(&v).ok_or_else(|| VaultError::UnknownVersion { name: r.name.clone(), version: v })
    }

    /// The version that reads (decrypt, verify, detokenize).
    fn for_read(&self, v: u32) -> Result<&VersionKey, VaultError> {
        let r = &self.row;
        if v < r.min_decryption_version && v >= 1 && v <= r.latest_version {
            return Err(VaultError::VersionTooOld { name: r.name.clone(), version: v, min: r.min_decryption_version });
        }
        self.versions.get(&v).ok_or_else(|| VaultError::UnknownVersion { name: r.name.clone(), version: v })
    }

    fn need(&self, ok: bool, op: &'static str) -> Result<(), VaultError> {
        if ok {
            Ok(())
        } else {
            Err(VaultError::Unsupported { key_type: self.key_type.as_str(), op })
        }
    }
}

fn info_of(r: &KeyRow, t: KeyType, publics: &BTreeMap<u32, (i64, Option<String>)>) -> KeyInfo {
    KeyInfo {
        name: r.name.clone(),
        key_type: t,
        exportable: r.exportable,
        convergent: r.convergent,
        latest_version: r.latest_version,
        min_decryption_version: r.min_decryption_version,
        min_encryption_version: r.min_encryption_version,
        disabled: r.disabled,
        deletion_at: r.deletion_at,
        deleted: r.deleted_at.is_some(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        versions: publics
            .iter()
            .map(|(v, (at, pk))| VersionInfo { version: *v, created_at: *at, public_key: pk.clone() })
            .collect(),
    }
}

fn seal_aad(name: &str, version: u32) -> Vec<u8> {
    format!("palisade-vault:key:{name}:v{version}").into_bytes()
}

fn token_aad(name: &str, token: &str) -> Vec<u8> {
    let mut a = b"palisade-vault:token:".to_vec();
    a.extend_from_slice(name.as_bytes());
    a.push(0);
    a.extend_from_slice(token.as_bytes());
    a
}

fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(H[usize::from(b >> 4)]));
        s.push(char::from(H[usize::from(b & 15)]));
    }
    s
}

/// Key names: 1 to 128 of `A-Z a-z 0-9 _ - .`, so they are safe in paths, logs and AAD.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// The data-protection service. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    master: Arc<MasterKey>,
    audit: Arc<dyn AuditSink>,
    authorizer: Arc<dyn DetokenizeAuthorizer>,
    cache: RwLock<HashMap<String, Arc<Loaded>>>,
}

/// What one call did, for its audit event.
struct Outcome {
    versions: BTreeSet<u32>,
    items: usize,
    failed: usize,
}

impl Outcome {
    /// Count one item's result (its key version, or a failure) and keep its value.
    fn tally<T>(&mut self, r: Result<(T, u32), VaultError>) -> Result<T, VaultError> {
        match r {
            Ok((t, v)) => {
                self.versions.insert(v);
                Ok(t)
            }
            Err(e) => {
                self.failed += 1;
                Err(e)
            }
        }
    }
}

impl Vault {
    pub fn new(
        store: &Store,
        master: Arc<MasterKey>,
        audit: Arc<dyn AuditSink>,
        authorizer: Arc<dyn DetokenizeAuthorizer>,
    ) -> Vault {
        Vault {
            inner: Arc::new(Inner {
                pool: store.pool().clone(),
                master,
                audit,
                authorizer,
                cache: RwLock::new(HashMap::new()),
            }),
        }
    }

    // ---- audit ----------------------------------------------------------------------------

    /// One event per call: `reason` is `vault:<op>:<key>:v<versions>` (versions comma-separated,
    /// `v?` when none was reached), then ` items=N failed=M` for batches, or `: <error code>`
    /// on a refusal. Stage `Authz` for a refused detokenization, `Other` otherwise.
    /// Whether the audit pipeline took the event (see [`AuditSink::try_record`]).
    fn audit(&self, who: &Caller, op: &str, key: &str, start: Instant, res: Result<&Outcome, &VaultError>) -> bool {
        let (decision, status, reason) = match res {
            Ok(o) => {
                let vs = if o.versions.is_empty() {
                    "v?".to_owned()
                } else {
                    o.versions.iter().map(|v| format!("v{v}")).collect::<Vec<_>>().join(",")
                };
                let mut reason = format!("vault:{op}:{key}:{vs}");
                if o.items != 1 || o.failed > 0 {
                    reason.push_str(&format!(" items={} failed={}", o.items, o.failed));
                }
                (Decision::Allow, 200, reason)
            }
            Err(e) => {
                let v = match e {
                    VaultError::VersionTooOld { version, .. }
                    | VaultError::EncryptionVersionTooOld { version, .. }
                    | VaultError::UnknownVersion { version, .. } => format!("v{version}"),
                    _ => "v?".to_owned(),
                };
                (Decision::Deny, e.status(), format!("vault:{op}:{key}:{v}: {}", e.code()))
            }
        };
        let stage = if matches!(res, Err(VaultError::Forbidden { .. })) { Stage::Authz } else { Stage::Other };
        self.inner.audit.try_record(AuditEvent {
            time: now_rfc3339(),
            source: "vault".into(),
            service: None,
            request_id: who.request_id.clone(),
            decision,
            stage,
            reason,
            principal: who.principal.clone(),
            client_id: None,
            auth_method: None,
            route: "vault".into(),
            method: String::new(),
            path: String::new(),
            client_ip: who.client_ip.clone(),
            policy_ids: Vec::new(),
            waf: Vec::new(),
            status,
            latency_ms: palisade_core::audit::latency_ms(start.elapsed()),
        })
    }

    fn audited<T>(
        &self,
        who: &Caller,
        op: &str,
        key: &str,
        start: Instant,
        r: Result<(T, Outcome), VaultError>,
    ) -> Result<T, VaultError> {
        match r {
            // Nothing happens unaudited: a result whose event the audit pipeline could not take
            // is withheld (503, retry). A state change already made (a rotation) stays made.
            Ok((t, o)) => {
                if self.audit(who, op, key, start, Ok(&o)) {
                    Ok(t)
                } else {
                    Err(VaultError::AuditUnavailable)
                }
            }
            Err(e) => {
                self.audit(who, op, key, start, Err(&e));
                Err(e)
            }
        }
    }

    // ---- loading --------------------------------------------------------------------------

    fn evict(&self, name: &str) {
        self.inner.cache.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    async fn load(&self, name: &str) -> Result<Arc<Loaded>, VaultError> {
        if !valid_key_name(name) {
            return Err(VaultError::UnknownKey(name.to_owned()));
        }
        let cached = self.inner.cache.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned();
        let now = palisade_store::now();
        if let Some(k) = cached.filter(|k| k.at.elapsed() < CACHE_TTL) {
            if k.row.deletion_at.is_none_or(|at| at > now) {
                return Ok(k);
            }
        }
        let row =
            repo::get_key(&self.inner.pool, name).await?.ok_or_else(|| VaultError::UnknownKey(name.to_owned()))?;
        if row.deleted_at.is_some() {
            self.evict(name);
            return Err(VaultError::KeyDeleted(name.to_owned()));
        }
        if row.deletion_at.is_some_and(|at| at <= now) {
            repo::purge(&self.inner.pool, name, now).await?;
            self.evict(name);
            return Err(VaultError::KeyDeleted(name.to_owned()));
        }
        let key_type = KeyType::parse(&row.key_type)
            .ok_or_else(|| VaultError::Master(format!("key {name:?} has an unknown stored type")))?;
        let mut versions = BTreeMap::new();
        let mut publics = BTreeMap::new();
        for v in repo::versions(&self.inner.pool, name).await? {
            let sealed = STANDARD.decode(&v.sealed).map_err(|_| VaultError::Unseal(name.to_owned()))?;
            let material = self
                .inner
                .master
                .open(&sealed, &seal_aad(name, v.version))
                .map_err(|_| VaultError::Unseal(name.to_owned()))?;
            versions.insert(v.version, VersionKey::new(key_type, v.version, &material)?);
            publics.insert(v.version, (v.created_at, v.public_key));
        }
        let loaded = Arc::new(Loaded { row, key_type, versions, publics, at: Instant::now() });
        self.inner.cache.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), loaded.clone());
        Ok(loaded)
    }

    fn new_version(&self, name: &str, t: KeyType, version: u32, now: i64) -> Result<VersionRow, VaultError> {
        let material = generate_material(t)?;
        let vk = VersionKey::new(t, version, &material)?;
        let sealed = self
            .inner
            .master
            .seal(&material, &seal_aad(name, version))
            .map_err(|e| VaultError::Master(e.to_string()))?;
        Ok(VersionRow {
            version,
            sealed: STANDARD.encode(sealed),
            public_key: vk.public_key().map(|pk| STANDARD.encode(pk)),
            created_at: now,
        })
    }

    // ---- key management -------------------------------------------------------------------

    /// Create a key with its first version.
    pub async fn create_key(&self, who: &Caller, name: &str, opts: KeyOptions) -> Result<KeyInfo, VaultError> {
        let start = Instant::now();
        let r = async {
            if !valid_key_name(name) {
                return Err(invalid("a key name is 1 to 128 of A-Z a-z 0-9 _ - . and does not start with '.'"));
            }
            if opts.convergent && opts.key_type != KeyType::Aes256GcmSiv {
                return Err(invalid("convergent (deterministic) encryption needs an aes256-gcm-siv key"));
            }
            let now = palisade_store::now();
            let key_id = u32::from_be_bytes(random_bytes::<4>()?);
            let row = KeyRow {
                name: name.to_owned(),
                key_type: opts.key_type.as_str().to_owned(),
                key_id,
                exportable: opts.exportable,
                convergent: opts.convergent,
                latest_version: 1,
                min_decryption_version: 1,
                min_encryption_version: 0,
                disabled: false,
                deletion_at: None,
                deleted_at: None,
                created_at: now,
                updated_at: now,
            };
            let v1 = self.new_version(name, opts.key_type, 1, now)?;
            repo::create_key(&self.inner.pool, &row, &v1).await?;
            self.evict(name);
            let mut publics = BTreeMap::new();
            publics.insert(1, (now, v1.public_key.clone()));
            Ok((info_of(&row, opts.key_type, &publics), outcome1(1)))
        }
        .await;
        self.audited(who, "create", name, start, r)
    }

    /// Metadata of a key (never material). Deleted keys answer [`VaultError::KeyDeleted`].
    pub async fn key_info(&self, who: &Caller, name: &str) -> Result<KeyInfo, VaultError> {
        let start = Instant::now();
        let r = self.load(name).await.map(|k| {
            let latest = k.row.latest_version;
            (k.info(), outcome1(latest))
        });
        self.audited(who, "read", name, start, r)
    }

    /// Names of the keys not deleted, sorted.
    pub async fn list_keys(&self, who: &Caller) -> Result<Vec<String>, VaultError> {
        let start = Instant::now();
        let r = repo::list_keys(&self.inner.pool)
            .await
            .map(|names| (names, Outcome { versions: BTreeSet::new(), items: 1, failed: 0 }));
        self.audited(who, "list", "*", start, r)
    }

    /// Add a version; it becomes the one that encrypts.
    pub async fn rotate(&self, who: &Caller, name: &str) -> Result<KeyInfo, VaultError> {
        let start = Instant::now();
        let r = async {
            let k = self.fresh(name).await?;
            if k.row.deletion_at.is_some() {
                return Err(VaultError::DeletionScheduled(name.to_owned()));
            }
            let next = k.row.latest_version.checked_add(1).ok_or_else(|| invalid("too many versions"))?;
            let now = palisade_store::now();
            let v = self.new_version(name, k.key_type, next, now)?;
            repo::add_version(&self.inner.pool, name, &v, now).await?;
            self.evict(name);
            let k = self.load(name).await?;
            Ok((k.info(), outcome1(next)))
        }
        .await;
        self.audited(who, "rotate", name, start, r)
    }

    /// The key as stored now (bypassing the cache), for changes.
    async fn fresh(&self, name: &str) -> Result<Arc<Loaded>, VaultError> {
        self.evict(name);
        self.load(name).await
    }

    async fn change(
        &self,
        who: &Caller,
        op: &str,
        name: &str,
        f: impl FnOnce(&mut KeyRow, i64) -> Result<(), VaultError>,
    ) -> Result<KeyInfo, VaultError> {
        let start = Instant::now();
        let r = async {
            let k = self.fresh(name).await?;
            let mut row = k.row.clone();
            let now = palisade_store::now();
            f(&mut row, now)?;
            row.updated_at = now;
            repo::update_settings(&self.inner.pool, &row, &k.row).await?;
            self.evict(name);
            let latest = row.latest_version;
            Ok((info_of(&row, k.key_type, &k.publics), outcome1(latest)))
        }
        .await;
        self.audited(who, op, name, start, r)
    }

    /// Change min_decryption_version, min_encryption_version or disabled.
    pub async fn configure(&self, who: &Caller, name: &str, cfg: KeyConfig) -> Result<KeyInfo, VaultError> {
        self.change(who, "config", name, |row, _| {
            if let Some(v) = cfg.min_decryption_version {
                if v == 0 || v > row.latest_version {
                    return Err(invalid(format!(
                        "min_decryption_version must be between 1 and the latest version {}",
                        row.latest_version
                    )));
                }
                row.min_decryption_version = v;
            }
            if let Some(v) = cfg.min_encryption_version {
                if v > row.latest_version {
                    return Err(invalid(format!(
                        "min_encryption_version must be at most the latest version {}",
                        row.latest_version
                    )));
                }
                row.min_encryption_version = v;
            }
            if row.min_encryption_version != 0 && row.min_encryption_version < row.min_decryption_version {
                return Err(invalid("min_encryption_version may not be below min_decryption_version"));
            }
            if let Some(d) = cfg.disabled {
                row.disabled = d;
            }
            Ok(())
        })
        .await
    }

    /// Schedule deletion after `grace`: until then the key decrypts and verifies but makes nothing
    /// new; afterwards its material is destroyed and nothing it protected can be read.
    pub async fn schedule_deletion(&self, who: &Caller, name: &str, grace: Duration) -> Result<KeyInfo, VaultError> {
        self.change(who, "schedule-deletion", name, |row, now| {
            if grace.as_secs() > MAX_GRACE_SECS {
                return Err(invalid("the grace period is at most ten years"));
            }
            if row.deletion_at.is_some() {
                return Err(VaultError::DeletionScheduled(row.name.clone()));
            }
            let secs = i64::try_from(grace.as_secs()).map_err(|_| invalid("grace period too long"))?;
            row.deletion_at = Some(now.saturating_add(secs));
            Ok(())
        })
        .await
    }

    /// Cancel a scheduled deletion that has not happened yet.
    pub async fn cancel_deletion(&self, who: &Caller, name: &str) -> Result<KeyInfo, VaultError> {
        self.change(who, "cancel-deletion", name, |row, _| {
            row.deletion_at = None;
            Ok(())
        })
        .await
    }

    /// Destroy every key whose deletion time has come (the server runs this periodically; keys
    /// are also purged when next used). Returns the names purged.
    pub async fn purge_due(&self) -> Result<Vec<String>, VaultError> {
        let now = palisade_store::now();
        let due = repo::due_deletions(&self.inner.pool, now).await?;
        for name in &due {
            repo::purge(&self.inner.pool, name, now).await?;
            self.evict(name);
            self.audit(
                &Caller::new("Vault"),
                "purge",
                name,
                Instant::now(),
                Ok(&Outcome { versions: BTreeSet::new(), items: 1, failed: 0 }),
            );
        }
        Ok(due)
    }

    /// The material of an exportable key.
    pub async fn export(&self, who: &Caller, name: &str) -> Result<ExportedKey, VaultError> {
        let start = Instant::now();
        let r = async {
            let k = self.load(name).await?;
            if !k.row.exportable {
                return Err(VaultError::NotExportable(name.to_owned()));
            }
            let mut out = ExportedKey { name: name.to_owned(), key_type: k.key_type, versions: BTreeMap::new() };
            let mut vs = BTreeSet::new();
            for v in repo::versions(&self.inner.pool, name).await? {
                let sealed = STANDARD.decode(&v.sealed).map_err(|_| VaultError::Unseal(name.to_owned()))?;
                let material = self
                    .inner
                    .master
                    .open(&sealed, &seal_aad(name, v.version))
                    .map_err(|_| VaultError::Unseal(name.to_owned()))?;
                out.versions.insert(v.version, STANDARD.encode(&material[..]));
                vs.insert(v.version);
            }
            Ok((out, Outcome { versions: vs, items: 1, failed: 0 }))
        }
        .await;
        self.audited(who, "export", name, start, r)
    }

    // ---- batch skeleton -------------------------------------------------------------------

    /// Run `f` on each item with the key loaded once; per-item errors, order kept.
    async fn batch<I, T>(
        &self,
        who: &Caller,
        op: &'static str,
        name: &str,
        items: &[I],
        f: impl Fn(&Loaded, &I) -> Result<(T, u32), VaultError>,
    ) -> Result<Vec<Result<T, VaultError>>, VaultError> {
        let start = Instant::now();
        let r = async {
            if items.len() > MAX_BATCH_ITEMS {
                return Err(invalid(format!("a batch has at most {MAX_BATCH_ITEMS} items")));
            }
            let k = self.load(name).await?;
            let mut o = Outcome { versions: BTreeSet::new(), items: items.len(), failed: 0 };
            let out = items.iter().map(|it| o.tally(f(&k, it))).collect::<Vec<_>>();
            Ok((out, o))
        }
        .await;
        self.finish_batch(who, op, name, start, items.len(), r)
    }

    async fn single<I, T>(
        &self,
        who: &Caller,
        op: &'static str,
        name: &str,
        item: I,
        f: impl Fn(&Loaded, &I) -> Result<(T, u32), VaultError>,
    ) -> Result<T, VaultError> {
        let mut v = self.batch(who, op, name, std::slice::from_ref(&item), f).await?;
        v.pop().unwrap_or(Err(VaultError::Rng))
    }

    // ---- encryption -----------------------------------------------------------------------

    fn do_encrypt(k: &Loaded, it: &EncryptItem) -> Result<(Encrypted, u32), VaultError> {
        k.need(k.key_type.is_aead(), "encrypt")?;
        if it.context.len() > MAX_CONTEXT {
            return Err(invalid(format!("the context is at most {MAX_CONTEXT} bytes")));
        }
        let vk = k.for_new(it.key_version)?;
        let ct = envelope::seal(&k.row.name, k.row.key_id, vk, k.row.convergent, &it.plaintext, &it.context)?;
        Ok((Encrypted { ciphertext: ct, key_version: vk.version }, vk.version))
    }

    fn do_decrypt(k: &Loaded, it: &DecryptItem) -> Result<(Zeroizing<Vec<u8>>, u32), VaultError> {
        k.need(k.key_type.is_aead(), "decrypt")?;
        let (v, payload) = envelope::parse(&it.ciphertext)?;
        let h = envelope::header(&payload)?;
        if h.key_id != k.row.key_id {
            return Err(VaultError::WrongKey(k.row.name.clone()));
        }
        let vk = k.for_read(v)?;
        Ok((envelope::open(&k.row.name, vk, &payload, &it.context)?, v))
    }

    pub async fn encrypt(&self, who: &Caller, key: &str, item: EncryptItem) -> Result<Encrypted, VaultError> {
        self.single(who, "encrypt", key, item, Self::do_encrypt).await
    }

    pub async fn encrypt_batch(
        &self,
        who: &Caller,
        key: &str,
        items: &[EncryptItem],
    ) -> Result<Vec<Result<Encrypted, VaultError>>, VaultError> {
        self.batch(who, "encrypt", key, items, Self::do_encrypt).await
    }

    pub async fn decrypt(&self, who: &Caller, key: &str, item: DecryptItem) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.single(who, "decrypt", key, item, Self::do_decrypt).await
    }

    pub async fn decrypt_batch(
        &self,
        who: &Caller,
        key: &str,
        items: &[DecryptItem],
    ) -> Result<Vec<Result<Zeroizing<Vec<u8>>, VaultError>>, VaultError> {
        self.batch(who, "decrypt", key, items, Self::do_decrypt).await
    }

    fn do_rewrap(k: &Loaded, it: &DecryptItem) -> Result<(Encrypted, u32), VaultError> {
        let (pt, _) = Self::do_decrypt(k, it)?;
        Self::do_encrypt(k, &EncryptItem { plaintext: pt, context: it.context.clone(), key_version: None })
    }

    /// Decrypt and encrypt again under the latest version; the plaintext never leaves.
    pub async fn rewrap(&self, who: &Caller, key: &str, item: DecryptItem) -> Result<Encrypted, VaultError> {
        self.single(who, "rewrap", key, item, Self::do_rewrap).await
    }

    pub async fn rewrap_batch(
        &self,
        who: &Caller,
        key: &str,
        items: &[DecryptItem],
    ) -> Result<Vec<Result<Encrypted, VaultError>>, VaultError> {
        self.batch(who, "rewrap", key, items, Self::do_rewrap).await
    }

    fn do_datakey(k: &Loaded, it: &DataKeyItem, with_plaintext: bool) -> Result<(DataKey, u32), VaultError> {
        let bytes = match it.bits.unwrap_or(256) {
            128 => 16,
            256 => 32,
            512 => 64,
            _ => return Err(invalid("bits is 128, 256 or 512")),
        };
        let mut dk = Zeroizing::new(vec![0u8; bytes]);
        crate::keys::fill_random(&mut dk)?;
        let (e, v) = Self::do_encrypt(
            k,
            &EncryptItem { plaintext: dk.clone(), context: it.context.clone(), key_version: None },
        )?;
        Ok((
            DataKey { plaintext: with_plaintext.then_some(dk), ciphertext: e.ciphertext, key_version: e.key_version },
            v,
        ))
    }

    /// A fresh random data key and its ciphertext under `key` (`with_plaintext: false` for the
    /// wrapped form only).
    pub async fn datakey(
        &self,
        who: &Caller,
        key: &str,
        item: DataKeyItem,
        with_plaintext: bool,
    ) -> Result<DataKey, VaultError> {
        self.single(who, "datakey", key, item, |k, it| Self::do_datakey(k, it, with_plaintext)).await
    }

    pub async fn datakey_batch(
        &self,
        who: &Caller,
        key: &str,
        items: &[DataKeyItem],
        with_plaintext: bool,
    ) -> Result<Vec<Result<DataKey, VaultError>>, VaultError> {
        self.batch(who, "datakey", key, items, |k, it| Self::do_datakey(k, it, with_plaintext)).await
    }

    // ---- signatures and MACs --------------------------------------------------------------

    fn do_sign(k: &Loaded, input: &[u8]) -> Result<(Tag, u32), VaultError> {
        k.need(matches!(k.key_type, KeyType::Ed25519 | KeyType::HmacSha256), "sign")?;
        let vk = k.for_new(None)?;
        let raw = match &vk.prim {
            Primitive::Ed25519(kp) => kp.sign(input).as_ref().to_vec(),
            Primitive::Hmac(key) => hmac::sign(key, input).as_ref().to_vec(),
            _ => return Err(VaultError::Unsupported { key_type: k.key_type.as_str(), op: "sign" }),
        };
        Ok((Tag { value: envelope::format(vk.version, &raw), key_version: vk.version }, vk.version))
    }

    fn do_verify(k: &Loaded, it: &VerifyItem) -> Result<(bool, u32), VaultError> {
        k.need(matches!(k.key_type, KeyType::Ed25519 | KeyType::HmacSha256), "verify")?;
        let (v, raw) = envelope::parse(&it.tag)?;
        let vk = k.for_read(v)?;
        let ok = match &vk.prim {
            Primitive::Ed25519(kp) => {
                use ring::signature::KeyPair;
                UnparsedPublicKey::new(&ED25519, kp.public_key().as_ref()).verify(&it.input, &raw).is_ok()
            }
            Primitive::Hmac(key) => hmac::verify(key, &it.input, &raw).is_ok(),
            _ => false,
        };
        Ok((ok, v))
    }

    fn sign_checked(k: &Loaded, input: &[u8], want: KeyType, op: &'static str) -> Result<(Tag, u32), VaultError> {
        k.need(k.key_type == want, op)?;
        Self::do_sign(k, input)
    }

    fn verify_checked(k: &Loaded, it: &VerifyItem, want: KeyType, op: &'static str) -> Result<(bool, u32), VaultError> {
        k.need(k.key_type == want, op)?;
        Self::do_verify(k, it)
    }

    /// Ed25519 signature of `input`.
    pub async fn sign(&self, who: &Caller, key: &str, input: Vec<u8>) -> Result<Tag, VaultError> {
        self.single(who, "sign", key, input, |k, i: &Vec<u8>| Self::sign_checked(k, i, KeyType::Ed25519, "sign")).await
    }

    pub async fn sign_batch(
        &self,
        who: &Caller,
        key: &str,
        inputs: &[Vec<u8>],
    ) -> Result<Vec<Result<Tag, VaultError>>, VaultError> {
        self.batch(who, "sign", key, inputs, |k, i: &Vec<u8>| Self::sign_checked(k, i, KeyType::Ed25519, "sign")).await
    }

    /// Whether `item.tag` is a valid signature of `item.input` (false for a wrong signature;
    /// an error for a malformed one or a version no longer allowed).
    pub async fn verify(&self, who: &Caller, key: &str, item: VerifyItem) -> Result<bool, VaultError> {
        self.single(who, "verify", key, item, |k, i| Self::verify_checked(k, i, KeyType::Ed25519, "verify")).await
    }

    pub async fn verify_batch(
        &self,
        who: &Caller,
        key: &str,
        items: &[VerifyItem],
    ) -> Result<Vec<Result<bool, VaultError>>, VaultError> {
        self.batch(who, "verify", key, items, |k, i| Self::verify_checked(k, i, KeyType::Ed25519, "verify")).await
    }

    /// HMAC-SHA256 of `input`.
    pub async fn hmac(&self, who: &Caller, key: &str, input: Vec<u8>) -> Result<Tag, VaultError> {
        self.single(who, "hmac", key, input, |k, i: &Vec<u8>| Self::sign_checked(k, i, KeyType::HmacSha256, "hmac"))
            .await
    }

    pub async fn hmac_batch(
        &self,
        who: &Caller,
        key: &str,
        inputs: &[Vec<u8>],
    ) -> Result<Vec<Result<Tag, VaultError>>, VaultError> {
        self.batch(who, "hmac", key, inputs, |k, i: &Vec<u8>| Self::sign_checked(k, i, KeyType::HmacSha256, "hmac"))
            .await
    }

    /// Constant-time check of an HMAC made by [`Vault::hmac`].
    pub async fn verify_hmac(&self, who: &Caller, key: &str, item: VerifyItem) -> Result<bool, VaultError> {
        self.single(who, "verify-hmac", key, item, |k, i| {
            Self::verify_checked(k, i, KeyType::HmacSha256, "verify-hmac")
        })
        .await
    }

    pub async fn verify_hmac_batch(
        &self,
        who: &Caller,
        key: &str,
        items: &[VerifyItem],
    ) -> Result<Vec<Result<bool, VaultError>>, VaultError> {
        self.batch(who, "verify-hmac", key, items, |k, i| {
            Self::verify_checked(k, i, KeyType::HmacSha256, "verify-hmac")
        })
        .await
    }

    // ---- tokenization ---------------------------------------------------------------------

    fn ff1_of(vk: &VersionKey) -> Result<&Primitive, VaultError> {
        match &vk.prim {
            p @ Primitive::Ff1 { .. } => Ok(p),
            _ => Err(VaultError::Unsupported { key_type: "non-FF1", op: "tokenize" }),
        }
    }

    fn check_tweak(t: &[u8]) -> Result<(), VaultError> {
        if t.len() > MAX_TWEAK {
            return Err(invalid(format!("the tweak is at most {MAX_TWEAK} bytes")));
        }
        Ok(())
    }

    /// Tokenize values with an `ff1-aes256` key. FPE tokens are computed; vault tokens are random
    /// and stored (encrypted) in the database.
    pub async fn tokenize(&self, who: &Caller, key: &str, item: TokenizeItem) -> Result<String, VaultError> {
        let mut v = self.tokenize_batch_as(who, "tokenize", key, std::slice::from_ref(&item)).await?;
        v.pop().unwrap_or(Err(VaultError::Rng))
    }

    pub async fn tokenize_batch(
        &self,
        who: &Caller,
        key: &str,
        items: &[TokenizeItem],
    ) -> Result<Vec<Result<String, VaultError>>, VaultError> {
        self.tokenize_batch_as(who, "tokenize", key, items).await
    }

    async fn tokenize_batch_as(
        &self,
        who: &Caller,
        op: &'static str,
        key: &str,
        items: &[TokenizeItem],
    ) -> Result<Vec<Result<String, VaultError>>, VaultError> {
        let start = Instant::now();
        let r = async {
            if items.len() > MAX_BATCH_ITEMS {
                return Err(invalid(format!("a batch has at most {MAX_BATCH_ITEMS} items")));
            }
            let k = self.load(key).await?;
            let mut o = Outcome { versions: BTreeSet::new(), items: items.len(), failed: 0 };
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.push(o.tally(self.tokenize_one(&k, it).await));
            }
            Ok((out, o))
        }
        .await;
        self.finish_batch(who, op, key, start, items.len(), r)
    }

    /// A batch's end: a single call's error is the call's error (audited as a refusal);
    /// otherwise the batch is audited as one event.
    fn finish_batch<T>(
        &self,
        who: &Caller,
        op: &str,
        key: &str,
        start: Instant,
        n: usize,
        r: Result<(Vec<Result<T, VaultError>>, Outcome), VaultError>,
    ) -> Result<Vec<Result<T, VaultError>>, VaultError> {
        match r {
            Ok((mut out, o)) if n == 1 && o.failed == 1 => {
                let e = out.pop().and_then(Result::err).unwrap_or(VaultError::Rng);
                self.audit(who, op, key, start, Err(&e));
                Ok(vec![Err(e)])
            }
            other => self.audited(who, op, key, start, other),
        }
    }

    async fn tokenize_one(&self, k: &Loaded, it: &TokenizeItem) -> Result<(String, u32), VaultError> {
        k.need(k.key_type == KeyType::Ff1Aes256, "tokenize")?;
        Self::check_tweak(&it.tweak)?;
        match it.mode {
            TokenMode::Fpe => {
                let vk = k.for_new(it.key_version)?;
                let Primitive::Ff1 { ff1, .. } = Self::ff1_of(vk)? else { return Err(VaultError::Rng) };
                Ok((tokenize::fpe_encrypt(ff1, it.spec, &it.value, &it.tweak)?, vk.version))
            }
            TokenMode::Vault { deterministic } => {
                let vk = k.for_new(None)?;
                let Primitive::Ff1 { token_enc, lookup, .. } = Self::ff1_of(vk)? else { return Err(VaultError::Rng) };
                // Checks the value's shape before anything is stored.
                tokenize::random_token(it.spec, &it.value)?;
                let fmt = it.spec.format.as_str();
                let mut ctx = hmac::Context::with_key(lookup);
                ctx.update(fmt.as_bytes());
                ctx.update(&[0, u8::from(it.spec.keep_last_four)]);
                ctx.update(it.value.as_bytes());
                let look = hex(ctx.sign().as_ref());
                let name = &k.row.name;
                if deterministic {
                    if let Some(t) = repo::find_deterministic(&self.inner.pool, name, &look).await? {
                        return Ok((t, vk.version));
                    }
                }
                for _ in 0..16 {
                    let token = tokenize::random_token(it.spec, &it.value)?;
                    let nonce = random_bytes::<NONCE_LEN>()?;
                    let mut buf = it.value.as_bytes().to_vec();
                    token_enc
                        .seal_in_place_append_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(token_aad(name, &token)),
                            &mut buf,
                        )
                        .map_err(|_| invalid("value too long"))?;
                    let mut sealed = nonce.to_vec();
                    sealed.extend_from_slice(&buf);
                    let now = palisade_store::now();
                    match repo::insert_token(
                        &self.inner.pool,
                        name,
                        &token,
                        vk.version,
                        fmt,
                        &look,
                        deterministic,
                        &STANDARD.encode(&sealed),
                        now,
                    )
                    .await?
                    {
                        Insert::Done => return Ok((token, vk.version)),
                        Insert::Taken if deterministic => {
                            if let Some(t) = repo::find_deterministic(&self.inner.pool, name, &look).await? {
                                return Ok((t, vk.version));
                            }
                        }
                        Insert::Taken => {}
                    }
                }
                Err(VaultError::Conflict(name.clone()))
            }
        }
    }

    /// Turn tokens back into values, if the authorizer allows `who` for this key (template);
    /// otherwise [`VaultError::Forbidden`] (audited, stage `Authz`).
    pub async fn detokenize(
        &self,
        who: &Caller,
        key: &str,
        item: DetokenizeItem,
    ) -> Result<Zeroizing<String>, VaultError> {
        let mut v = self.detokenize_batch(who, key, std::slice::from_ref(&item)).await?;
        v.pop().unwrap_or(Err(VaultError::Rng))
    }

    pub async fn detokenize_batch(
        &self,
        who: &Caller,
        key: &str,
        items: &[DetokenizeItem],
    ) -> Result<Vec<Result<Zeroizing<String>, VaultError>>, VaultError> {
        let start = Instant::now();
        if !self.inner.authorizer.may_detokenize(&who.principal, key) {
            let e = VaultError::Forbidden { principal: who.principal.clone(), template: key.to_owned() };
            self.audit(who, "detokenize", key, start, Err(&e));
            return Err(e);
        }
        let r = async {
            if items.len() > MAX_BATCH_ITEMS {
                return Err(invalid(format!("a batch has at most {MAX_BATCH_ITEMS} items")));
            }
            let k = self.load(key).await?;
            let mut o = Outcome { versions: BTreeSet::new(), items: items.len(), failed: 0 };
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.push(o.tally(self.detokenize_one(&k, it).await));
            }
            Ok((out, o))
        }
        .await;
        self.finish_batch(who, "detokenize", key, start, items.len(), r)
    }

    async fn detokenize_one(&self, k: &Loaded, it: &DetokenizeItem) -> Result<(Zeroizing<String>, u32), VaultError> {
        k.need(k.key_type == KeyType::Ff1Aes256, "detokenize")?;
        Self::check_tweak(&it.tweak)?;
        match it.mode {
            TokenMode::Fpe => {
                let vk = k.for_read(it.key_version.unwrap_or(k.row.latest_version))?;
                let Primitive::Ff1 { ff1, .. } = Self::ff1_of(vk)? else { return Err(VaultError::Rng) };
                Ok((Zeroizing::new(tokenize::fpe_decrypt(ff1, it.spec, &it.token, &it.tweak)?), vk.version))
            }
            TokenMode::Vault { .. } => {
                tokenize::validate_token(it.spec, &it.token)?;
                let name = &k.row.name;
                let row = repo::find_token(&self.inner.pool, name, &it.token)
                    .await?
                    .filter(|r| r.format == it.spec.format.as_str())
                    .ok_or_else(|| VaultError::UnknownToken(name.clone()))?;
                let vk = k.for_read(row.version)?;
                let Primitive::Ff1 { token_enc, .. } = Self::ff1_of(vk)? else { return Err(VaultError::Rng) };
                let sealed = STANDARD.decode(&row.sealed_value).map_err(|_| VaultError::Tampered)?;
                let (nonce, ct) = sealed.split_at_checked(NONCE_LEN).ok_or(VaultError::Tampered)?;
                let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Tampered)?;
                let mut buf = Zeroizing::new(ct.to_vec());
                let n = token_enc
                    .open_in_place(nonce, Aad::from(token_aad(name, &it.token)), &mut buf)
                    .map_err(|_| VaultError::Tampered)?
                    .len();
                buf.truncate(n);
                let value = String::from_utf8(buf.to_vec()).map_err(|_| VaultError::Tampered)?;
                Ok((Zeroizing::new(value), vk.version))
            }
        }
    }
}

fn outcome1(v: u32) -> Outcome {
    let mut versions = BTreeSet::new();
    versions.insert(v);
    Outcome { versions, items: 1, failed: 0 }
}
