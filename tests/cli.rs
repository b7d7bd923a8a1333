//! The `palisade` command line: config check, version, help, and `palisade up`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly by design

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn config_check_reports_located_errors_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("palisade.yaml");
    std::fs::write(
        &f,
        "listeners:\n  http:\n    address: 127.0.0.1:8080\nupstreams:\n  orders:\n    endpoints: [\"127.0.0.1:9001\"]\nroutes:\n  - name: a\n    upstream: orders\n  - name: b\n    upstream: orders\n  - name: c\n    match:\n      path: { prefix: /x }\n    upstream: ordrs\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["config", "check"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want =
        format!("{}:15:15: routes[2].upstream: unknown upstream \"ordrs\" (did you mean \"orders\"?)", f.display());
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("15 |     upstream: ordrs"), "{err}");
}

#[test]
fn config_check_catches_certificate_problems() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("CA");
    pki.write_leaf(dir.path(), "a", &["a.test"]);
    pki.write_leaf(dir.path(), "b", &["b.test"]);
    let f = dir.path().join("gw.yaml");
    let cfg = "listeners:\n  https:\n    address: 127.0.0.1:8443\n    certificates:\n      - cert: a.pem\n        key: file:b-key.pem\n";
    std::fs::write(&f, cfg).unwrap();
    let out = Command::new(BIN).args(["config", "check"]).arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":6:14: listeners.https.certificates[0].key: private key does not match the certificate"),
        "{err}"
    );

    std::fs::write(&f, cfg.replace("file:b-key.pem", "${PALISADE_TEST_UNSET_KEY}")).unwrap();
    let out =
        Command::new(BIN).args(["config", "check"]).arg(&f).env_remove("PALISADE_TEST_UNSET_KEY").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("environment variable PALISADE_TEST_UNSET_KEY is not set"), "{err}");

    let key = std::fs::read_to_string(dir.path().join("a-key.pem")).unwrap();
    let out = Command::new(BIN).args(["config", "check"]).arg(&f).env("PALISADE_TEST_UNSET_KEY", key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn shipped_example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gateway.yaml");
    std::fs::copy(example, dir.path().join("gateway.yaml")).unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for sub in ["policies/orders.cedar", "schemas/order.json"] {
        let to = dir.path().join(sub);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(format!("{examples}/{sub}"), to).unwrap();
    }
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let pki = Pki::new("CA");
    pki.write_leaf(&dir.path().join("certs"), "api.example.com", &["api.example.com"]);
    pki.write_leaf(&dir.path().join("certs"), "wildcard.example.com", &["*.example.com"]);
    std::fs::write(dir.path().join("certs/internal-ca.pem"), &pki.ca_pem).unwrap();
    let key = std::fs::read_to_string(dir.path().join("certs/wildcard.example.com-key.pem")).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(dir.path().join("gateway.yaml"))
        .env("WILDCARD_TLS_KEY", key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The shipped sidecar example and mesh policy are valid as shipped, and a broken mesh policy is
/// named with file, line and field.
#[test]
fn shipped_sidecar_example_and_mesh_policy_are_valid() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    // `config check` writes nothing: the audit file it names is not created.
    let dir = tempfile::tempdir().unwrap();
    for f in ["sidecar.yaml", "mesh-policy.yaml"] {
        std::fs::copy(format!("{examples}/{f}"), dir.path().join(f)).unwrap();
    }
    let out = Command::new(BIN).args(["config", "check"]).arg(dir.path().join("sidecar.yaml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("audit").exists(), "config check created the audit directory");
    let out = Command::new(BIN)
        .args(["policy", "export", "--format", "k8s-networkpolicy", &format!("{examples}/mesh-policy.yaml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("kind: NetworkPolicy").count(), 3, "{text}");
    std::fs::write(dir.path().join("mesh-policy.yaml"), "allow:\n  - { from: demo/a, to: demo/b, methods: [GTE] }\n")
        .unwrap();
    let out = Command::new(BIN).args(["config", "check"]).arg(dir.path().join("sidecar.yaml")).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("authorization.mesh_policy"), "{err}");
    assert!(err.contains("mesh-policy.yaml:2:"), "{err}");
    assert!(err.contains("GTE"), "{err}");
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("palisade {}", env!("CARGO_PKG_VERSION")));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["gateway", "config", "up", "version"] {
        assert!(help.contains(cmd), "{help}");
    }
}

/// `palisade up` uses the fixed default ports, so only this test may bind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_demo_services() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .arg("up")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read the banner: it ends with "Press Ctrl-C to stop."
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            out.push_str(&l);
            out.push('\n');
            if l.contains("Press Ctrl-C to stop.") {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no banner: {out}"));
    let mut ok = None;
    for _ in 0..100 {
        if let Some(r) = get_raw(8080, "/orders").await {
            ok = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = ok.expect("palisade up did not answer on :8080");
    assert_eq!(status, 401, "/orders needs a token: {body}");

    let cert = dir.path().join("data/dev-cert.pem");
    // gateway -> payments is not an edge of the mesh policy: the payments sidecar refuses it.
    let r = curl(&["--http2", "--cacert", cert.to_str().unwrap()], "https://localhost:8443/payments").await;
    assert_eq!((r.status, r.version.as_str()), (403, "HTTP/2"), "{}", r.body);
    assert_eq!(r.json()["error"], "access denied");
    let mode = std::fs::metadata(dir.path().join("data/dev-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    assert!(out.contains("curl -i http://127.0.0.1:8080/orders"), "{out}");
    assert!(out.contains("identity  http://127.0.0.1:9400"), "{out}");

    // The one-line token command from the banner works as printed.
    let creds = dir.path().join("data/demo-credentials.txt");
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&creds).unwrap();
    let keys: Vec<&str> = text.lines().map(|l| l.split_once('=').unwrap().0).collect();
    assert_eq!(
        keys,
        [
            "CLIENT_ID",
            "CLIENT_SECRET",
            "PUBLIC_CLIENT_ID",
            "REDIRECT_URI",
            "USER",
            "PASSWORD",
            "ADMIN_USER",
            "ADMIN_PASSWORD"
        ]
    );
    let cmd =
        out.lines().find(|l| l.trim_start().starts_with("(. ./data/demo-credentials.txt;")).expect("token command");
    let r = Command::new("sh").arg("-c").arg(cmd.trim()).current_dir(dir.path()).output().unwrap();
    let token: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", r));
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["scope"], "orders:read orders:write");

    // The banner's TOKEN=... line and the two requests after it work as printed.
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let i = lines.iter().position(|l| l.starts_with("TOKEN=$(")).expect("TOKEN line");
    let script = format!("{}\n{}\n{}\n", lines[i], lines[i + 1], lines[i + 2]);
    let r = Command::new("sh").arg("-c").arg(&script).current_dir(dir.path()).output().unwrap();
    let shown = String::from_utf8_lossy(&r.stdout);
    let mut docs = serde_json::Deserializer::from_str(&shown).into_iter::<serde_json::Value>();
    let (get, post) = (docs.next().unwrap().unwrap(), docs.next().unwrap().unwrap());
    assert_eq!(get["orders"][0]["id"], "ord_1001", "{shown}");
    assert_eq!(post["created"]["item"], "mouse", "{shown}");
    // orders charged payments through the mesh (orders -> payments is an allowed edge).
    assert_eq!(post["payment"]["service"], "payments", "{shown}");
    assert_eq!(post["payment"]["status"], "captured", "{shown}");
    // The banner's /payments/charge line: 403 from the payments sidecar, audited there.
    let charge = lines.iter().find(|l| l.starts_with("curl -i -X POST http://127.0.0.1:8080/payments/charge")).unwrap();
    let r = Command::new("sh").arg("-c").arg(charge).current_dir(dir.path()).output().unwrap();
    let shown = String::from_utf8_lossy(&r.stdout);
    assert!(shown.starts_with("HTTP/1.1 403"), "{shown}");
    assert!(shown.contains("\"access denied\""), "{shown}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sidecar_audit = std::fs::read_to_string(dir.path().join("data/audit/payments-sidecar.jsonl")).unwrap();
    let gateway_id = "Service::\\\"spiffe://palisade.local/ns/demo/sa/gateway\\\"";
    assert!(
        sidecar_audit.lines().any(|l| l.contains("\"decision\":\"deny\"") && l.contains(gateway_id)),
        "{sidecar_audit}"
    );
    // ...and allowed orders -> payments with the rule that permits it.
    assert!(
        sidecar_audit.lines().any(|l| l.contains("\"decision\":\"allow\"") && l.contains("mesh:1")),
        "{sidecar_audit}"
    );

    // The banner's WAF line: the CRS refuses an SQL injection before authentication, and the
    // gateway's audit event names the libinjection rule and the blocking evaluation.
    let sqli =
        lines.iter().find(|l| l.starts_with("curl -i -G http://127.0.0.1:8080/orders --data-urlencode")).unwrap();
    let r = Command::new("sh").arg("-c").arg(sqli).current_dir(dir.path()).output().unwrap();
    let shown = String::from_utf8_lossy(&r.stdout);
    assert!(shown.starts_with("HTTP/1.1 403"), "{shown}");
    assert!(shown.contains("\"request blocked by the WAF\""), "{shown}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gw_audit = std::fs::read_to_string(dir.path().join("data/audit/gateway.jsonl")).unwrap();
    let waf =
        gw_audit.lines().find(|l| l.contains("\"stage\":\"waf\"") && l.contains("\"decision\":\"deny\"")).unwrap();
    assert!(waf.contains("{\"rule\":942100,") && waf.contains("\"var\":\"ARGS:id\""), "{waf}");
    assert!(waf.contains("{\"rule\":949110,") && !waf.contains("1=1"), "{waf}");

    // The banner's card lines: the gateway tokenizes the card before orders and payments see it,
    // masks it in the answer, and reveals it to a token with scope payments:charge.
    let post = lines.iter().position(|l| l.starts_with("curl -X POST") && l.contains("4111 1111 1111 1111")).unwrap();
    let reveal = lines.iter().position(|l| l.starts_with("REVEAL=$(")).unwrap();
    let script = format!("{}\n{}\n{}\n{}\n", lines[i], lines[post], lines[reveal], lines[reveal + 1]);
    let r = Command::new("sh").arg("-c").arg(&script).current_dir(dir.path()).output().unwrap();
    let shown = String::from_utf8_lossy(&r.stdout);
    let mut docs = serde_json::Deserializer::from_str(&shown).into_iter::<serde_json::Value>();
    let (post, listed) = (docs.next().unwrap().unwrap(), docs.next().unwrap().unwrap());
    assert_eq!(post["created"]["card"]["number"], "****1111", "{shown}");
    let stored = post["payment"]["charged"]["card"].as_str().unwrap_or_default();
    assert!(stored.len() == 19 && stored.ends_with(" 1111") && stored != "4111 1111 1111 1111", "{shown}");
    let id = post["created"]["id"].as_str().unwrap();
    let order = listed["orders"].as_array().unwrap().iter().find(|o| o["id"] == id).unwrap();
    assert_eq!(order["card"]["number"], "4111 1111 1111 1111", "{shown}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gw_audit = std::fs::read_to_string(dir.path().join("data/audit/gateway.jsonl")).unwrap();
    assert!(gw_audit.contains("transformed request /card/number tokenize:cards"), "{gw_audit}");
    assert!(!gw_audit.contains("4111"), "{gw_audit}");

    // 50 requests per 10 s per client: four were spent; a quick burst meets 429 within 50 more.
    let at = token["access_token"].as_str().unwrap();
    let mut codes = Vec::new();
    for _ in 0..60 {
        let r = curl(&["-H", &format!("Authorization: Bearer {at}")], "http://127.0.0.1:8080/orders").await;
        codes.push(r.status);
        if r.status == 429 {
            assert!(r.header("retry-after").is_some());
            assert!(r.header("ratelimit-policy").unwrap_or_default().contains("q=50"), "{:?}", r.headers);
            break;
        }
    }
    let ok_count = codes.iter().filter(|c| **c == 200).count();
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    assert!((46..58).contains(&ok_count), "{ok_count} accepted before the limit: {codes:?}");
    tokio::time::sleep(Duration::from_millis(200)).await; // the audit writer flushes every 20 ms
    let audit = std::fs::read_to_string(dir.path().join("data/audit/gateway.jsonl")).unwrap_or_default();
    assert!(
        audit.lines().any(|l| l.contains("\"stage\":\"rate_limit\"") && l.contains("\"decision\":\"deny\"")),
        "{audit}"
    );
    assert!(audit.lines().any(|l| l.contains("\"stage\":\"authn\"") && l.contains("\"status\":401")), "{audit}");
    assert!(audit.lines().any(|l| l.contains("orders-write")), "the POST names its policy: {audit}");
    assert!(!out.contains(text.lines().nth(1).unwrap().split_once('=').unwrap().1), "the banner shows the secret");

    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
}
