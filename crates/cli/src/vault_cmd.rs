//! `palisade vault ...`: data protection straight against the data directory (or
//! `--database-url`) with the server's master key, like `palisade idp`; and the server's wiring
//! of the vault API: who is calling (admin token or an access token of this server's identity
//! provider with scope `vault`), who may manage keys (the admin only) and who may detokenize (a
//! Cedar policy, default deny). Invariants: stdout carries only the answer (JSON, or the raw
//! plaintext of `decrypt`); errors name the key, version or argument, never a value.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, Subcommand};
use palisade_core::audit::{AuditEvent, AuditSink};
use palisade_idp::Idp;
use palisade_vault::{
    Caller, DataKeyItem, DecryptItem, DetokenizeAuthorizer, DetokenizeItem, EncryptItem, FormatSpec, KeyConfig,
    KeyOptions, KeyType, TokenFormat, TokenMode, TokenizeItem, Vault, VerifyItem,
};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::server::{parse_duration, StateArgs};

// ---- the CLI ----------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct VaultArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(subcommand)]
    pub command: VaultCommand,
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    KeyType::parse(s).ok_or_else(|| {
        format!(
            "unknown key type {s:?}; use aes256-gcm, xchacha20-poly1305, aes256-gcm-siv, hmac-sha256, ed25519 or ff1-aes256"
        )
    })
}

fn parse_format(s: &str) -> Result<TokenFormat, String> {
    TokenFormat::parse(s).ok_or_else(|| format!("unknown format {s:?}; use card, ssn, phone or digits"))
}

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Create, list, rotate, configure, disable, delete and export keys
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Encrypt stdin (or --data) with the key's latest version; prints {"ciphertext","key_version"}
    Encrypt {
        name: String,
        /// Associated data the ciphertext is bound to (needed again to decrypt)
        #[arg(long)]
        context: Option<String>,
        /// The plaintext (default: all of stdin, byte for byte)
        #[arg(long)]
        data: Option<String>,
        /// Encrypt with this version instead of the latest
        #[arg(long)]
        key_version: Option<u32>,
    },
    /// Decrypt a pal:v<N>:... ciphertext; writes the raw plaintext to stdout
    Decrypt {
        name: String,
        ciphertext: String,
        #[arg(long)]
        context: Option<String>,
    },
    /// Re-encrypt a ciphertext under the key's latest version without revealing the plaintext
    Rewrap {
        name: String,
        ciphertext: String,
        #[arg(long)]
        context: Option<String>,
    },
    /// A fresh data key for client-side envelope encryption: {"plaintext" (base64), "ciphertext", "key_version"}
    Datakey {
        name: String,
        /// 128, 256 or 512
        #[arg(long, default_value_t = 256)]
        bits: u32,
        #[arg(long)]
        context: Option<String>,
        /// Only the wrapped (encrypted) data key, no plaintext
        #[arg(long)]
        wrapped_only: bool,
    },
    /// Sign stdin (or --data) with an ed25519 key; prints {"signature","key_version"}
    Sign {
        name: String,
        #[arg(long)]
        data: Option<String>,
    },
    /// Check a signature (ed25519 key) or an HMAC (hmac-sha256 key) of stdin (or --data);
    /// prints {"valid": bool} and exits 1 when it is not valid
    Verify {
        name: String,
        /// The pal:v<N>:... signature or HMAC
        tag: String,
        #[arg(long)]
        data: Option<String>,
    },
    /// HMAC-SHA256 of stdin (or --data) with an hmac-sha256 key; prints {"hmac","key_version"}
    Hmac {
        name: String,
        #[arg(long)]
        data: Option<String>,
    },
    /// Tokenize a value with an ff1-aes256 key (format-preserving) or any AEAD key (--mode vault)
    Tokenize {
        name: String,
        #[arg(long, value_parser = parse_format)]
        format: TokenFormat,
        #[command(flatten)]
        opts: TokenOpts,
        /// Vault mode: the same value gives the same token (for joins)
        #[arg(long)]
        deterministic: bool,
        value: String,
    },
    /// Turn a token back into its value (printed with a newline)
    Detokenize {
        name: String,
        #[arg(long, value_parser = parse_format)]
        format: TokenFormat,
        #[command(flatten)]
        opts: TokenOpts,
        token: String,
    },
}

#[derive(Args, Debug)]
pub struct TokenOpts {
    /// fpe (format-preserving FF1, default) or vault (random token kept encrypted)
    #[arg(long, default_value = "fpe", value_parser = ["fpe", "vault"])]
    mode: String,
    /// Cards: encrypt the last four digits too (by default they stay in clear)
    #[arg(long)]
    no_keep_last_four: bool,
    /// FF1 tweak (text)
    #[arg(long)]
    tweak: Option<String>,
    /// Use this key version instead of the latest (FF1)
    #[arg(long)]
    key_version: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create a key with its first version
    Create {
        name: String,
        #[arg(long = "type", value_parser = parse_key_type)]
        key_type: KeyType,
        /// Allow `key export` of the material (cannot be changed later)
        #[arg(long)]
        exportable: bool,
        /// aes256-gcm-siv only: the same plaintext and context give the same ciphertext
        #[arg(long)]
        convergent: bool,
    },
    /// List key names
    List,
    /// A key's settings and versions (never material)
    Show { name: String },
    /// Add a new version; new ciphertexts use it, old ones still decrypt
    Rotate { name: String },
    /// Change min_decryption_version / min_encryption_version
    Config {
        name: String,
        /// Versions below this no longer decrypt (rewrap them first)
        #[arg(long)]
        min_decryption_version: Option<u32>,
        /// Versions below this no longer encrypt
        #[arg(long)]
        min_encryption_version: Option<u32>,
    },
    /// Stop new encryptions, signatures and tokens (decrypt and verify still work)
    Disable { name: String },
    /// Undo `disable`
    Enable { name: String },
    /// Schedule the key's destruction after a grace period (cancel with `undelete`)
    Delete {
        name: String,
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        grace: Duration,
    },
    /// Cancel a scheduled deletion
    Undelete { name: String },
    /// Print the material of an exportable key (base64 per version)
    Export { name: String },
}

/// CLI audit events: the operator runs on the database with the master key, so they go to the
/// log on stderr (target `palisade::audit`), one JSON line each.
struct StderrAudit;

impl AuditSink for StderrAudit {
    fn record(&self, event: AuditEvent) {
        tracing::info!(target: "palisade::audit", event = %serde_json::to_string(&event).unwrap_or_default());
    }
}

/// The operator holds the master key, so a detokenize policy would protect nothing from them.
struct OperatorMayDetokenize;

impl DetokenizeAuthorizer for OperatorMayDetokenize {
    fn may_detokenize(&self, _principal: &str, _template: &str) -> bool {
        true
    }
}

fn out(v: &Value) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    std::io::stdout().write_all(s.as_bytes()).context("writing to stdout")
}

fn input(data: Option<String>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    match data {
        Some(d) => Ok(Zeroizing::new(d.into_bytes())),
        None => {
            let mut buf = Zeroizing::new(Vec::new());
            std::io::stdin().read_to_end(&mut buf).context("reading stdin")?;
            Ok(buf)
        }
    }
}

fn ctx(c: Option<String>) -> Vec<u8> {
    c.map(String::into_bytes).unwrap_or_default()
}

/// `Ok(false)`: a verification that did not verify (exit 1).
pub async fn run(args: VaultArgs) -> anyhow::Result<bool> {
    let store = args.state.open().await?;
    let master = args.state.master_key()?;
    let vault = Vault::new(&store, Arc::new(master), Arc::new(StderrAudit), Arc::new(OperatorMayDetokenize));
    let r = run_on(&vault, args.command).await;
    store.close().await;
    r
}

fn token_item_parts(
    format: TokenFormat,
    o: &TokenOpts,
    deterministic: bool,
) -> anyhow::Result<(FormatSpec, TokenMode)> {
    let mut spec = FormatSpec::new(format);
    if o.no_keep_last_four {
        if format != TokenFormat::Card {
            bail!("--no-keep-last-four applies to the card format only");
        }
        spec.keep_last_four = false;
    }
    let mode = match (o.mode.as_str(), deterministic) {
        ("fpe", false) => TokenMode::Fpe,
        ("fpe", true) => bail!("--deterministic applies to --mode vault (FF1 tokens are always deterministic)"),
        _ => TokenMode::Vault { deterministic },
    };
    Ok((spec, mode))
}

async fn run_on(vault: &Vault, cmd: VaultCommand) -> anyhow::Result<bool> {
    let who = Caller::new("Admin");
    match cmd {
        VaultCommand::Key { command } => {
            let v = match command {
                KeyCommand::Create { name, key_type, exportable, convergent } => {
                    json!(vault.create_key(&who, &name, KeyOptions { key_type, exportable, convergent }).await?)
                }
                KeyCommand::List => json!({ "keys": vault.list_keys(&who).await? }),
                KeyCommand::Show { name } => json!(vault.key_info(&who, &name).await?),
                KeyCommand::Rotate { name } => json!(vault.rotate(&who, &name).await?),
                KeyCommand::Config { name, min_decryption_version, min_encryption_version } => {
                    if min_decryption_version.is_none() && min_encryption_version.is_none() {
                        bail!("give --min-decryption-version and/or --min-encryption-version");
                    }
                    let cfg = KeyConfig { min_decryption_version, min_encryption_version, disabled: None };
                    json!(vault.configure(&who, &name, cfg).await?)
                }
                KeyCommand::Disable { name } => {
                    let cfg = KeyConfig { disabled: Some(true), ..KeyConfig::default() };
                    json!(vault.configure(&who, &name, cfg).await?)
                }
                KeyCommand::Enable { name } => {
                    let cfg = KeyConfig { disabled: Some(false), ..KeyConfig::default() };
                    json!(vault.configure(&who, &name, cfg).await?)
                }
                KeyCommand::Delete { name, grace } => json!(vault.schedule_deletion(&who, &name, grace).await?),
                KeyCommand::Undelete { name } => json!(vault.cancel_deletion(&who, &name).await?),
                KeyCommand::Export { name } => json!(vault.export(&who, &name).await?),
            };
            out(&v)?;
        }
        VaultCommand::Encrypt { name, context, data, key_version } => {
            let item = EncryptItem { plaintext: input(data)?, context: ctx(context), key_version };
            let e = vault.encrypt(&who, &name, item).await?;
            out(&json!({ "ciphertext": e.ciphertext, "key_version": e.key_version }))?;
        }
        VaultCommand::Decrypt { name, ciphertext, context } => {
            let pt = vault.decrypt(&who, &name, DecryptItem { ciphertext, context: ctx(context) }).await?;
            let mut stdout = std::io::stdout();
            stdout.write_all(&pt).and_then(|()| stdout.flush()).context("writing to stdout")?;
        }
        VaultCommand::Rewrap { name, ciphertext, context } => {
            let e = vault.rewrap(&who, &name, DecryptItem { ciphertext, context: ctx(context) }).await?;
            out(&json!({ "ciphertext": e.ciphertext, "key_version": e.key_version }))?;
        }
        VaultCommand::Datakey { name, bits, context, wrapped_only } => {
            let item = DataKeyItem { context: ctx(context), bits: Some(bits) };
            let d = vault.datakey(&who, &name, item, !wrapped_only).await?;
            let mut m = Map::new();
            if let Some(p) = &d.plaintext {
                m.insert("plaintext".into(), json!(STANDARD.encode(&p[..])));
            }
            m.insert("ciphertext".into(), json!(d.ciphertext));
            m.insert("key_version".into(), json!(d.key_version));
            out(&Value::Object(m))?;
        }
        VaultCommand::Sign { name, data } => {
            let t = vault.sign(&who, &name, input(data)?.to_vec()).await?;
            out(&json!({ "signature": t.value, "key_version": t.key_version }))?;
        }
        VaultCommand::Hmac { name, data } => {
            let t = vault.hmac(&who, &name, input(data)?.to_vec()).await?;
            out(&json!({ "hmac": t.value, "key_version": t.key_version }))?;
        }
        VaultCommand::Verify { name, tag, data } => {
            let item = VerifyItem { input: input(data)?.to_vec(), tag };
            let info = vault.key_info(&who, &name).await?;
            let ok = if info.key_type == KeyType::HmacSha256 {
                vault.verify_hmac(&who, &name, item).await?
            } else {
                vault.verify(&who, &name, item).await?
            };
            out(&json!({ "valid": ok }))?;
            return Ok(ok);
        }
        VaultCommand::Tokenize { name, format, opts, deterministic, value } => {
            let (spec, mode) = token_item_parts(format, &opts, deterministic)?;
            let item = TokenizeItem {
                value: Zeroizing::new(value),
                spec,
                mode,
                tweak: ctx(opts.tweak.clone()),
                key_version: opts.key_version,
            };
            out(&json!({ "token": vault.tokenize(&who, &name, item).await? }))?;
        }
        VaultCommand::Detokenize { name, format, opts, token } => {
            let (spec, mode) = token_item_parts(format, &opts, false)?;
            let item =
                DetokenizeItem { token, spec, mode, tweak: ctx(opts.tweak.clone()), key_version: opts.key_version };
            let value = vault.detokenize(&who, &name, item).await?;
            let mut stdout = std::io::stdout();
            let line = Zeroizing::new(format!("{}\n", value.as_str()));
            stdout.write_all(line.as_bytes()).context("writing to stdout")?;
        }
    }
    Ok(true)
}

// ---- the server's wiring ----------------------------------------------------------------------

/// The Cedar schema of detokenize policies: strict validation catches a misspelt type or action.
const DETOKENIZE_SCHEMA: &str = r#"
entity User;
entity Client;
entity Admin;
entity Template;
action "detokenize" appliesTo { principal: [User, Client, Admin], resource: [Template] };
"#;

/// `--vault-policy`: who may detokenize with which key (template). Default deny, `forbid` wins,
/// any error denies. The admin is `Admin::"admin"` to Cedar.
pub struct CedarDetokenize {
    policies: cedar_policy::PolicySet,
    schema: cedar_policy::Schema,
    action: cedar_policy::EntityUid,
}

impl CedarDetokenize {
    /// Parse and strictly validate a policy file.
    pub fn load(path: &Path) -> anyhow::Result<CedarDetokenize> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading --vault-policy {}", path.display()))?;
        Self::from_text(&text).with_context(|| format!("--vault-policy {}", path.display()))
    }

    fn from_text(text: &str) -> anyhow::Result<CedarDetokenize> {
        let policies = cedar_policy::PolicySet::from_str(text).map_err(|e| anyhow::anyhow!("not valid Cedar: {e}"))?;
        let schema = cedar_policy::Schema::from_cedarschema_str(DETOKENIZE_SCHEMA)
            .map_err(|e| anyhow::anyhow!("schema: {e}"))?
            .0;
        let result =
            cedar_policy::Validator::new(schema.clone()).validate(&policies, cedar_policy::ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            bail!("{}", errors.join("; "));
        }
        let action =
            cedar_policy::EntityUid::from_str(r#"Action::"detokenize""#).map_err(|e| anyhow::anyhow!("action: {e}"))?;
        Ok(CedarDetokenize { policies, schema, action })
    }
}

impl DetokenizeAuthorizer for CedarDetokenize {
    fn may_detokenize(&self, principal: &str, template: &str) -> bool {
        let principal = if principal == ADMIN { r#"Admin::"admin""# } else { principal };
        let Ok(principal) = cedar_policy::EntityUid::from_str(principal) else { return false };
        let Ok(ty) = cedar_policy::EntityTypeName::from_str("Template") else { return false };
        let resource = cedar_policy::EntityUid::from_type_name_and_id(ty, cedar_policy::EntityId::new(template));
        let Ok(req) = cedar_policy::Request::new(
            principal,
            self.action.clone(),
            resource,
            cedar_policy::Context::empty(),
            Some(&self.schema),
        ) else {
            return false;
        };
        let resp =
            cedar_policy::Authorizer::new().is_authorized(&req, &self.policies, &cedar_policy::Entities::empty());
        resp.decision() == cedar_policy::Decision::Allow && resp.diagnostics().errors().next().is_none()
    }
}

/// The principal of the admin token.
const ADMIN: &str = "Admin";
/// The scope an access token needs for the vault API.
const VAULT_SCOPE: &str = "vault";
/// Set by [`gate`] for the router's [`palisade_vault::Authenticator`]; any copy sent by a
/// client is removed first, and the value carries a per-process secret.
const PRINCIPAL_HEADER: &str = "x-palisade-vault-principal";

/// Authentication and coarse authorization in front of the vault API.
pub struct VaultGate {
    idp: Arc<Idp>,
    admin_sha256: String,
    /// Proves that [`PRINCIPAL_HEADER`] was set by [`gate`] (random per process).
    nonce: String,
    /// Revoked jti / grant ids → until (Unix seconds), from the idp's table.
    revoked: RwLock<HashMap<String, i64>>,
}

struct Resolved {
    principal: String,
    admin: bool,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

impl VaultGate {
    pub fn new(idp: Arc<Idp>, admin_sha256: String) -> Arc<VaultGate> {
        Arc::new(VaultGate {
            idp,
            admin_sha256,
            nonce: palisade_idp::secrets::random_token(24),
            revoked: RwLock::new(HashMap::new()),
        })
    }

    fn resolve(&self, headers: &HeaderMap) -> Option<Resolved> {
        let token = bearer(headers)?;
        if palisade_idp::secrets::ct_eq(
            palisade_idp::secrets::sha256_hex(token).as_bytes(),
            self.admin_sha256.as_bytes(),
        ) {
            return Some(Resolved { principal: ADMIN.to_owned(), admin: true });
        }
        self.verify_access_token(token).map(|principal| Resolved { principal, admin: false })
    }

    /// One of this server's access tokens (RFC 9068, signed with a published key of its idp,
    /// this issuer, unexpired, not revoked) with scope `vault`: its `Client::` (client
    /// credentials: sub is the client id) or `User::` principal.
    fn verify_access_token(&self, token: &str) -> Option<String> {
        let now = palisade_store::now();
        let keys = self.idp.keys.keyset();
        let expect =
            palisade_crypto::jwt::Expect { issuer: &self.idp.cfg.issuer, audience: None, typ: "at+jwt", leeway: 0 };
        let claims: Map<String, Value> =
            palisade_crypto::jwt::verify(&keys.1, u64::try_from(now).unwrap_or(0), token, &expect).ok()?;
        if claims.get("exp").and_then(Value::as_i64).is_none_or(|exp| exp <= now) {
            return None;
        }
        let scope = claims.get("scope").and_then(Value::as_str).unwrap_or_default();
        if !scope.split(' ').any(|s| s == VAULT_SCOPE) {
            return None;
        }
        let jti = claims.get("jti").and_then(Value::as_str)?;
        {
            let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
            let hit = |id: &str| revoked.get(id).is_some_and(|until| *until > now);
            if hit(jti) || claims.get("gid").and_then(Value::as_str).is_some_and(hit) {
                return None;
            }
        }
        let sub = claims.get("sub").and_then(Value::as_str)?;
        let client_id = claims.get("client_id").and_then(Value::as_str).unwrap_or_default();
        let (ty, id) = if sub == client_id { ("Client", sub) } else { ("User", sub) };
        let ty = cedar_policy::EntityTypeName::from_str(ty).ok()?;
        Some(cedar_policy::EntityUid::from_type_name_and_id(ty, cedar_policy::EntityId::new(id)).to_string())
    }

    /// Pull revocations recorded since `since` (Unix seconds) and drop expired ones.
    async fn sync_revocations(&self, since: i64) -> anyhow::Result<()> {
        let now = palisade_store::now();
        let rows = self.idp.repo.revocations_since(since, now).await?;
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, until| *until > now);
        revoked.extend(rows);
        Ok(())
    }

    /// Keep the revocation set fresh (every 2 s; revocations are seen within that).
    pub fn spawn_revocation_sync(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut since = 0i64;
            loop {
                let started = palisade_store::now();
                match me.sync_revocations(since).await {
                    Ok(()) => since = started - 5,
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "vault: revocation sync failed"),
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    }
}

/// Key management paths (the admin only): `/vault/v1/keys...` and `/vault/v1/export/...`.
fn is_key_management(path: &str) -> bool {
    path == "/vault/v1/keys" || path.starts_with("/vault/v1/keys/") || path.starts_with("/vault/v1/export/")
}

async fn gate(State(g): State<Arc<VaultGate>>, mut req: Request, next: Next) -> Response {
    req.headers_mut().remove(PRINCIPAL_HEADER);
    if let Some(r) = g.resolve(req.headers()) {
        if !r.admin && is_key_management(req.uri().path()) {
            let body = json!({"error": "forbidden", "error_description": "key management needs the admin token"});
            return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
        }
        if let Ok(v) = HeaderValue::from_str(&format!("{} {}", g.nonce, r.principal)) {
            req.headers_mut().insert(PRINCIPAL_HEADER, v);
        }
    }
    next.run(req).await
}

/// Reads the principal [`gate`] resolved; without it the API answers 401.
struct FromGate(Arc<VaultGate>);

#[async_trait::async_trait]
impl palisade_vault::Authenticator for FromGate {
    async fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let v = headers.get(PRINCIPAL_HEADER)?.to_str().ok()?;
        let (nonce, principal) = v.split_once(' ')?;
        palisade_idp::secrets::ct_eq(nonce.as_bytes(), self.0.nonce.as_bytes()).then(|| principal.to_owned())
    }
}

/// The vault API behind the gate, ready to merge into the server's router.
pub fn router(vault: Vault, gate_state: Arc<VaultGate>) -> Router {
    palisade_vault::router(vault, Arc::new(FromGate(gate_state.clone())))
        .layer(axum::middleware::from_fn_with_state(gate_state, gate))
}

/// Purge keys whose deletion time has come, every `every`.
pub fn spawn_purge(vault: Vault, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match vault.purge_due().await {
                Ok(purged) if !purged.is_empty() => tracing::info!(keys = ?purged, "vault: keys purged"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "vault: purge failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
@id("billing-cards")
permit (principal == Client::"billing", action == Action::"detokenize", resource == Template::"cards");
@id("no-admin")
forbid (principal == Admin::"admin", action, resource == Template::"ssn");
permit (principal is Admin, action == Action::"detokenize", resource);
"#;

    #[test]
    fn cedar_detokenize_decides_per_principal_and_template() {
        let a = CedarDetokenize::from_text(POLICY).unwrap();
        assert!(a.may_detokenize(r#"Client::"billing""#, "cards"));
        assert!(!a.may_detokenize(r#"Client::"billing""#, "ssn"));
        assert!(!a.may_detokenize(r#"Client::"shop""#, "cards"));
        assert!(a.may_detokenize("Admin", "cards"));
        assert!(!a.may_detokenize("Admin", "ssn"));
        assert!(!a.may_detokenize("garbage \"", "cards"));
    }

    #[test]
    fn cedar_detokenize_rejects_unknown_types() {
        let Err(e) = CedarDetokenize::from_text(r#"permit (principal == Usr::"x", action, resource);"#) else {
            panic!("an unknown entity type must be refused")
        };
        assert!(format!("{e:#}").contains("Usr"), "{e:#}");
        assert!(CedarDetokenize::from_text("permit (").is_err());
    }

    #[test]
    fn the_example_policy_validates() {
        let a = CedarDetokenize::from_text(include_str!("../../../examples/policies/vault.cedar")).unwrap();
        assert!(a.may_detokenize(r#"Client::"payments""#, "cards"));
        assert!(!a.may_detokenize(r#"Client::"orders""#, "cards"));
        assert!(!a.may_detokenize("Admin", "ssn"));
    }

    #[test]
    fn key_management_paths() {
        assert!(is_key_management("/vault/v1/keys"));
        assert!(is_key_management("/vault/v1/keys/orders/rotate"));
        assert!(is_key_management("/vault/v1/export/orders"));
        assert!(!is_key_management("/vault/v1/encrypt/orders"));
        assert!(!is_key_management("/vault/v1/keysx"));
    }
}
