//! Data protection end to end with the real binary: the `palisade vault` CLI on a data directory,
//! the `/vault/v1` API of `palisade server` through curl (admin token, access tokens of the
//! server's own identity provider, Cedar detokenize policy, audit events), and the PKCS#11 master
//! key in a real SoftHSM2 token across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::idp::{Db, IdpServer};
use common::{curl, Curl, BIN};
use serde_json::{json, Value};

/// `palisade vault --data-dir <dir> <extra state args> <args>` with `stdin`: (exit code, stdout, stderr).
fn vault_cli(dir: &Path, state: &[&str], args: &[&str], stdin: &[u8], env: &[(&str, &Path)]) -> (i32, Vec<u8>, String) {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.arg("vault")
        .arg("--data-dir")
        .arg(dir)
        .args(state)
        .args(args)
        .env("PALISADE_LOG", "warn")
        .env_remove("PALISADE_DATABASE_URL")
        .env_remove("PALISADE_MASTER_KEY")
        .env_remove("PALISADE_MASTER_KEY_SOURCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A CLI call that must succeed with JSON on stdout.
fn ok_json(dir: &Path, args: &[&str], stdin: &[u8]) -> Value {
    let (code, out, err) = vault_cli(dir, &[], args, stdin, &[]);
    assert_eq!(code, 0, "palisade vault {args:?} failed: {err}");
    assert_eq!(err, "", "stderr of {args:?}");
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out)))
}

/// A CLI call that must fail with exit 1 and exactly this one-line message.
fn fails(dir: &Path, args: &[&str], message: &str) {
    let (code, out, err) = vault_cli(dir, &[], args, b"", &[]);
    assert_eq!((code, out.as_slice(), err.as_str()), (1, &b""[..], format!("error: {message}\n").as_str()), "{args:?}");
}

fn ciphertext_version(c: &str) -> u32 {
    let rest = c.strip_prefix("pal:v").unwrap_or_else(|| panic!("not a pal: ciphertext: {c}"));
    rest.split_once(':').unwrap().0.parse().unwrap()
}

#[test]
fn cli_encrypt_decrypt_rotate_rewrap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plaintext = b"card 4111 1111 1111 1111";

    let k = ok_json(d, &["key", "create", "orders", "--type", "aes256-gcm"], b"");
    assert_eq!(
        (&k["name"], &k["type"], &k["latest_version"], &k["min_decryption_version"], &k["exportable"]),
        (&json!("orders"), &json!("aes256-gcm"), &json!(1), &json!(1), &json!(false))
    );
    assert_eq!(ok_json(d, &["key", "list"], b""), json!({"keys": ["orders"]}));
    fails(d, &["key", "create", "orders", "--type", "aes256-gcm"], "a key named \"orders\" already exists");

    // Encrypt from stdin with a context; decrypt gives the exact bytes back on stdout.
    let e1 = ok_json(d, &["encrypt", "orders", "--context", "order-42"], plaintext);
    let c1 = e1["ciphertext"].as_str().unwrap().to_owned();
    assert_eq!(e1["key_version"], 1);
    assert_eq!(ciphertext_version(&c1), 1);
    let (code, out, err) = vault_cli(d, &[], &["decrypt", "orders", &c1, "--context", "order-42"], b"", &[]);
    assert_eq!((code, out.as_slice(), err.as_str()), (0, &plaintext[..], ""));

    // Refusals: exit 1, one line naming what was wrong, never the plaintext.
    fails(
        d,
        &["decrypt", "orders", &c1, "--context", "order-43"],
        "the context (associated data) differs from the one the ciphertext was made with",
    );
    fails(
        d,
        &["decrypt", "orders", &c1],
        "the context (associated data) differs from the one the ciphertext was made with",
    );
    let mut tampered = c1.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (code, out, err) = vault_cli(d, &[], &["decrypt", "orders", &tampered, "--context", "order-42"], b"", &[]);
    assert_eq!((code, out.len()), (1, 0));
    assert!(
        err == "error: the ciphertext failed authentication: it was altered or is corrupt\n"
            || err.starts_with("error: malformed ciphertext"),
        "{err}"
    );
    fails(d, &["decrypt", "nope", &c1], "no key named \"nope\"");

    // Rotate: new ciphertexts use v2, v1 still decrypts.
    let k = ok_json(d, &["key", "rotate", "orders"], b"");
    assert_eq!((&k["latest_version"], &k["versions"].as_array().unwrap().len()), (&json!(2), &2));
    let e2 = ok_json(d, &["encrypt", "orders", "--context", "order-42", "--data", "second"], b"");
    assert_eq!((e2["key_version"].as_u64(), ciphertext_version(e2["ciphertext"].as_str().unwrap())), (Some(2), 2));
    let (code, out, _) = vault_cli(d, &[], &["decrypt", "orders", &c1, "--context", "order-42"], b"", &[]);
    assert_eq!((code, out.as_slice()), (0, &plaintext[..]));

    // Rewrap v1 to v2 without the plaintext leaving the vault.
    let r = ok_json(d, &["rewrap", "orders", &c1, "--context", "order-42"], b"");
    let c1v2 = r["ciphertext"].as_str().unwrap().to_owned();
    assert_eq!((r["key_version"].as_u64(), ciphertext_version(&c1v2)), (Some(2), 2));
    assert_ne!(c1v2, c1);

    // min_decryption_version 2: v1 is refused, the rewrapped one decrypts.
    let k = ok_json(d, &["key", "config", "orders", "--min-decryption-version", "2"], b"");
    assert_eq!(k["min_decryption_version"], 2);
    fails(
        d,
        &["decrypt", "orders", &c1, "--context", "order-42"],
        "key \"orders\" version 1 is below its min_decryption_version 2",
    );
    let (code, out, _) = vault_cli(d, &[], &["decrypt", "orders", &c1v2, "--context", "order-42"], b"", &[]);
    assert_eq!((code, out.as_slice()), (0, &plaintext[..]));
    fails(
        d,
        &["rewrap", "orders", &c1, "--context", "order-42"],
        "key \"orders\" version 1 is below its min_decryption_version 2",
    );

    // Disable: no new ciphertexts, old ones still decrypt; not exportable.
    ok_json(d, &["key", "disable", "orders"], b"");
    fails(
        d,
        &["encrypt", "orders", "--data", "x"],
        "key \"orders\" is disabled: it decrypts and verifies but does not encrypt, sign, tokenize or issue",
    );
    let (code, out, _) = vault_cli(d, &[], &["decrypt", "orders", &c1v2, "--context", "order-42"], b"", &[]);
    assert_eq!((code, out.as_slice()), (0, &plaintext[..]));
    ok_json(d, &["key", "enable", "orders"], b"");
    fails(d, &["key", "export", "orders"], "key \"orders\" is not exportable");

    // Data keys: the plaintext key is 32 bytes and its ciphertext decrypts to it.
    let dk = ok_json(d, &["datakey", "orders"], b"");
    let raw = STANDARD.decode(dk["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!((raw.len(), dk["key_version"].as_u64()), (32, Some(2)));
    let (code, out, _) = vault_cli(d, &[], &["decrypt", "orders", dk["ciphertext"].as_str().unwrap()], b"", &[]);
    assert_eq!((code, out), (0, raw));

    // Signatures and HMACs: verify exits 0 / 1.
    ok_json(d, &["key", "create", "signer", "--type", "ed25519"], b"");
    let s = ok_json(d, &["sign", "signer", "--data", "invoice 7"], b"");
    let sig = s["signature"].as_str().unwrap();
    assert_eq!(ok_json(d, &["verify", "signer", sig, "--data", "invoice 7"], b""), json!({"valid": true}));
    let (code, out, _) = vault_cli(d, &[], &["verify", "signer", sig, "--data", "invoice 8"], b"", &[]);
    assert_eq!((code, serde_json::from_slice::<Value>(&out).unwrap()), (1, json!({"valid": false})));
    ok_json(d, &["key", "create", "mac", "--type", "hmac-sha256"], b"");
    let h = ok_json(d, &["hmac", "mac"], b"payload");
    assert!(h["hmac"].as_str().unwrap().starts_with("pal:v1:"));
    assert_eq!(ok_json(d, &["verify", "mac", h["hmac"].as_str().unwrap()], b"payload"), json!({"valid": true}));

    // FF1 card tokens keep the format and the last four; detokenize prints the value.
    ok_json(d, &["key", "create", "cards", "--type", "ff1-aes256"], b"");
    let t = ok_json(d, &["tokenize", "cards", "--format", "card", "4111111111111111"], b"");
    let token = t["token"].as_str().unwrap().to_owned();
    assert_eq!((token.len(), &token[12..]), (16, "1111"));
    assert!(token.chars().all(|c| c.is_ascii_digit()) && token != "4111111111111111", "{token}");
    let again = ok_json(d, &["tokenize", "cards", "--format", "card", "4111111111111111"], b"");
    assert_eq!(again["token"], token.as_str(), "FF1 tokens are deterministic");
    let (code, out, err) = vault_cli(d, &[], &["detokenize", "cards", "--format", "card", &token], b"", &[]);
    assert_eq!((code, String::from_utf8(out).unwrap(), err), (0, "4111111111111111\n".to_owned(), String::new()));
    fails(
        d,
        &["tokenize", "cards", "--format", "card", "4111111111111112"],
        "invalid input: the card number does not pass the Luhn check",
    );

    // Deletion is scheduled, and the key stops doing anything new at once.
    let k = ok_json(d, &["key", "delete", "signer", "--grace", "1h"], b"");
    assert!(k["deletion_at"].as_i64().unwrap() > 0);
    ok_json(d, &["key", "undelete", "signer"], b"");
}

// ---- the HTTP API -----------------------------------------------------------------------------

const POLICY: &str = r#"// Only the billing client may turn card tokens back into numbers.
@id("billing-detokenizes-cards")
permit (
  principal == Client::"billing",
  action == Action::"detokenize",
  resource == Template::"cards"
);
"#;

fn b64(s: &str) -> String {
    STANDARD.encode(s)
}

async fn api(s: &IdpServer, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Curl {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let body = body.map(|b| b.to_string());
    let mut a = vec!["-X", method, "-H", "Content-Type: application/json"];
    if let Some(h) = &auth {
        a.extend(["-H", h]);
    }
    if let Some(b) = &body {
        a.extend(["--data-binary", b]);
    }
    curl(&a, &s.url(path)).await
}

async fn access_token(s: &IdpServer, id: &str, secret: &str, scope: &str) -> String {
    let r = s.cc_token(id, secret, &["-d", &format!("scope={scope}")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn http_api_tokens_key_management_and_detokenize_policy() {
    let pdir = tempfile::tempdir().unwrap();
    let policy = pdir.path().join("vault.cedar");
    std::fs::write(&policy, POLICY).unwrap();
    let s = IdpServer::start_with(Db::Sqlite, &["--vault-policy", policy.to_str().unwrap()]).await;
    let admin = s.admin_token.clone();

    // Key management with the admin token.
    let r = api(&s, "POST", "/vault/v1/keys/orders", Some(&admin), Some(&json!({"type": "aes256-gcm"}))).await;
    assert_eq!((r.status, &r.json()["latest_version"]), (200, &json!(1)), "{}", r.body);
    let r = api(&s, "POST", "/vault/v1/keys/cards", Some(&admin), Some(&json!({"type": "ff1-aes256"}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api(&s, "GET", "/vault/v1/keys", Some(&admin), None).await;
    assert_eq!((r.status, r.json()), (200, json!({"keys": ["cards", "orders"]})));

    // No token, a wrong token, a token without scope vault: 401.
    let enc = json!({"plaintext": b64("hello"), "context": b64("order-1")});
    for t in [None, Some("not-a-token"), Some("eyJhbGciOiJub25lIn0.e30.")] {
        let r = api(&s, "POST", "/vault/v1/encrypt/orders", t, Some(&enc)).await;
        assert_eq!((r.status, &r.json()["error"]), (401, &json!("unauthorized")), "{t:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let billing_secret = s.add_client("billing", &["--scope", "vault orders:read"]);
    let shop_secret = s.add_client("shop", &["--scope", "vault"]);
    let other_secret = s.add_client("other", &["--scope", "orders:read"]);
    let other = access_token(&s, "other", &other_secret, "orders:read").await;
    let r = api(&s, "POST", "/vault/v1/encrypt/orders", Some(&other), Some(&enc)).await;
    assert_eq!(r.status, 401, "a token without scope vault: {}", r.body);
    // A client cannot smuggle a principal in the internal header.
    let r = curl(
        &["-X", "POST", "-H", "x-palisade-vault-principal: x Admin", "--data-binary", &enc.to_string()],
        &s.url("/vault/v1/encrypt/orders"),
    )
    .await;
    assert_eq!(r.status, 401);

    let billing = access_token(&s, "billing", &billing_secret, "vault").await;
    let shop = access_token(&s, "shop", &shop_secret, "vault").await;

    // Single encrypt / decrypt with an access token.
    let r = api(&s, "POST", "/vault/v1/encrypt/orders", Some(&billing), Some(&enc)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = r.json()["ciphertext"].as_str().unwrap().to_owned();
    assert_eq!((ciphertext_version(&c), &r.json()["key_version"]), (1, &json!(1)));
    let dec = json!({"ciphertext": c, "context": b64("order-1")});
    let r = api(&s, "POST", "/vault/v1/decrypt/orders", Some(&shop), Some(&dec)).await;
    assert_eq!((r.status, r.json()), (200, json!({"plaintext": b64("hello")})));
    let r = api(&s, "POST", "/vault/v1/decrypt/orders", Some(&shop), Some(&json!({"ciphertext": c}))).await;
    assert_eq!((r.status, &r.json()["error"]), (400, &json!("wrong_context")));

    // Batch: results in order, a bad item fails alone.
    let batch = json!({"batch": [
        {"plaintext": b64("one"), "context": b64("a")},
        {"plaintext": "***not base64***"},
        {"plaintext": b64("three")},
    ]});
    let r = api(&s, "POST", "/vault/v1/encrypt/orders", Some(&billing), Some(&batch)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let items = r.json()["batch"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[1],
        json!({"error": "invalid_request", "error_description": "invalid input: plaintext is not base64"})
    );
    let dec_batch = json!({"batch": [
        {"ciphertext": items[0]["ciphertext"], "context": b64("a")},
        {"ciphertext": items[2]["ciphertext"]},
        {"ciphertext": items[0]["ciphertext"], "context": b64("b")},
    ]});
    let r = api(&s, "POST", "/vault/v1/decrypt/orders", Some(&billing), Some(&dec_batch)).await;
    let out = r.json()["batch"].as_array().unwrap().clone();
    assert_eq!(
        (&out[0], &out[1], &out[2]["error"]),
        (&json!({"plaintext": b64("one")}), &json!({"plaintext": b64("three")}), &json!("wrong_context"))
    );

    // Key management is the admin's: 403 for access tokens, whatever their scope.
    for (method, path, body) in [
        ("POST", "/vault/v1/keys/mine", Some(json!({"type": "aes256-gcm"}))),
        ("GET", "/vault/v1/keys", None),
        ("GET", "/vault/v1/keys/orders", None),
        ("POST", "/vault/v1/keys/orders/rotate", None),
        ("POST", "/vault/v1/keys/orders/config", Some(json!({"min_decryption_version": 1}))),
        ("DELETE", "/vault/v1/keys/orders", None),
        ("GET", "/vault/v1/export/orders", None),
    ] {
        let r = api(&s, method, path, Some(&billing), body.as_ref()).await;
        assert_eq!(
            (r.status, r.json()),
            (403, json!({"error": "forbidden", "error_description": "key management needs the admin token"})),
            "{method} {path}"
        );
    }
    let r = api(&s, "POST", "/vault/v1/keys/orders/rotate", Some(&admin), None).await;
    assert_eq!((r.status, &r.json()["latest_version"]), (200, &json!(2)));
    let r = api(&s, "POST", "/vault/v1/rewrap/orders", Some(&shop), Some(&dec)).await;
    assert_eq!((r.status, &r.json()["key_version"]), (200, &json!(2)), "{}", r.body);

    // Tokenize is an operation; detokenize needs the Cedar policy: billing yes, shop no.
    let tok = json!({"value": "4111 1111 1111 1111", "format": "card"});
    let r = api(&s, "POST", "/vault/v1/tokenize/cards", Some(&shop), Some(&tok)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert!(token.ends_with("1111") && token != "4111 1111 1111 1111", "{token}");
    let detok = json!({"token": token, "format": "card"});
    let r = api(&s, "POST", "/vault/v1/detokenize/cards", Some(&shop), Some(&detok)).await;
    assert_eq!(
        (r.status, r.json()),
        (403, json!({"error": "forbidden", "error_description": "Client::\"shop\" may not detokenize with \"cards\""}))
    );
    let r = api(&s, "POST", "/vault/v1/detokenize/cards", Some(&billing), Some(&detok)).await;
    assert_eq!((r.status, r.json()), (200, json!({"value": "4111 1111 1111 1111"})));
    // The admin is not in the policy either.
    let r = api(&s, "POST", "/vault/v1/detokenize/cards", Some(&admin), Some(&detok)).await;
    assert_eq!(r.status, 403);

    // The refused detokenize is an audit event (never the token or the value).
    let deadline = Instant::now() + Duration::from_secs(15);
    let event = loop {
        let r = api(
            &s,
            "GET",
            "/audit/v1/events?source=vault&decision=deny&principal=Client::%22shop%22",
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let events = r.json()["events"].as_array().unwrap().clone();
        if let Some(e) =
            events.into_iter().find(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("vault:detokenize")))
        {
            break e;
        }
        assert!(Instant::now() < deadline, "no audit event for the refused detokenize");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (
            &event["source"],
            &event["principal"],
            &event["decision"],
            &event["stage"],
            &event["status"],
            &event["reason"]
        ),
        (
            &json!("vault"),
            &json!("Client::\"shop\""),
            &json!("deny"),
            &json!("authz"),
            &json!(403),
            &json!("vault:detokenize:cards:v?: forbidden")
        ),
        "{event}"
    );
    let all = api(&s, "GET", "/audit/v1/events?source=vault&limit=1000", Some(&admin), None).await.body;
    assert!(!all.contains("4111") && !all.contains(&token[..12]) && !all.contains(&b64("hello")), "{all}");
    assert!(all.contains("vault:encrypt:orders:v1") && all.contains("Client::\\\"billing\\\""), "{all}");
}

// ---- the master key in SoftHSM2 -----------------------------------------------------------------

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn softhsm_available() -> bool {
    let present = Path::new(SOFTHSM).exists()
        && Command::new("softhsm2-util").arg("--version").output().is_ok_and(|o| o.status.success());
    if !present && std::env::var_os("PALISADE_REQUIRE_SOFTHSM").is_some() {
        panic!("PALISADE_REQUIRE_SOFTHSM is set but softhsm2 is not installed ({SOFTHSM})");
    }
    present
}

/// A `palisade server` child with the SoftHSM configuration in its environment.
struct HsmServer {
    child: tokio::process::Child,
    addr: String,
    log: PathBuf,
}

impl HsmServer {
    async fn start(data: &Path, spec: &str, conf: &Path) -> HsmServer {
        let log = data.join("server.log");
        std::fs::write(&log, "").unwrap_or(());
        let child = tokio::process::Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(["--master-key", spec])
            .env("SOFTHSM2_CONF", conf)
            .env("PALISADE_LOG", "info")
            .env_remove("PALISADE_DATABASE_URL")
            .env_remove("PALISADE_MASTER_KEY")
            .env_remove("PALISADE_ADMIN_TOKEN")
            .stdout(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut s = HsmServer { child, addr: String::new(), log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&s.log).unwrap_or_default();
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("palisade server exited early ({status}): {text}");
            }
            let started = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .rfind(|v| v["message"] == "server listening");
            if let Some(v) = started {
                s.addr = v["address"].as_str().unwrap().to_owned();
                return s;
            }
            assert!(Instant::now() < deadline, "server not ready: {text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Curl {
        let auth = format!("Authorization: Bearer {token}");
        let body = body.to_string();
        curl(&["-X", "POST", "-H", &auth, "--data-binary", &body], &format!("http://{}{path}", self.addr)).await
    }
}

#[tokio::test]
async fn softhsm_master_key_survives_restart() {
    if !softhsm_available() {
        eprintln!("SKIPPED softhsm_master_key_survives_restart: softhsm2 is not installed (apt-get install softhsm2)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "palisade-e2e", "--pin", "1234", "--so-pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let spec = format!(
        "pkcs11:module={SOFTHSM};token=palisade-e2e;key=palisade-root;pin=file:{};generate=true",
        pin.display()
    );

    // First start: the HSM makes the wrapping key, the root key is stored wrapped only.
    let mut s = HsmServer::start(&data, &spec, &conf).await;
    assert!(!data.join("master.key").exists(), "no clear master key file with an HSM");
    let wrapped = std::fs::read(data.join("master.key.wrapped")).unwrap();
    assert!(wrapped.starts_with(b"palisade-vault-pkcs11-v1\n"));
    let admin = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned();
    let r = s.post("/vault/v1/keys/hsm-backed", &admin, &json!({"type": "xchacha20-poly1305"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.post("/vault/v1/encrypt/hsm-backed", &admin, &json!({"plaintext": b64("sealed by the HSM")})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = r.json()["ciphertext"].as_str().unwrap().to_owned();
    // The idp signs tokens with keys sealed under the same root.
    let jwks = curl(&[], &format!("http://{}/jwks.json", s.addr)).await;
    assert_eq!(jwks.status, 200);

    // Restart: the same root key comes back out of the HSM; old ciphertexts decrypt.
    s.child.kill().await.unwrap();
    let s = HsmServer::start(&data, &spec, &conf).await;
    let r = s.post("/vault/v1/decrypt/hsm-backed", &admin, &json!({"ciphertext": c})).await;
    assert_eq!((r.status, r.json()), (200, json!({"plaintext": b64("sealed by the HSM")})), "{}", r.body);
    assert_eq!(curl(&[], &format!("http://{}/jwks.json", s.addr)).await.body, jwks.body);
    drop(s);

    // The CLI with the same provider decrypts; with a wrong PIN or without the HSM it cannot.
    let env = [("SOFTHSM2_CONF", conf.as_path())];
    let (code, out, err) = vault_cli(&data, &["--master-key", &spec], &["decrypt", "hsm-backed", &c], b"", &env);
    assert_eq!((code, out.as_slice(), err.as_str()), (0, &b"sealed by the HSM"[..], ""));
    let bad_pin = dir.path().join("bad-pin");
    std::fs::write(&bad_pin, "9999\n").unwrap();
    let bad = spec.replace(&pin.display().to_string(), &bad_pin.display().to_string());
    let (code, _, err) = vault_cli(&data, &["--master-key", &bad], &["decrypt", "hsm-backed", &c], b"", &env);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: hsm: logging in to the token:") && !err.contains("9999"), "{err}");
    let (code, _, err) = vault_cli(&data, &[], &["decrypt", "hsm-backed", &c], b"", &[]);
    assert_eq!(
        (code, err.as_str()),
        (1, "error: sealed key material of \"hsm-backed\" does not open under this master key\n")
    );
}
