//! Secret detection end to end: one file with a credential of every kind (built at run time so this
//! source holds no token-shaped literals), near misses that must not fire, redaction, the ignore file
//! (rule id, fingerprint, path glob, expiry) and the `scan secrets`-style report.

// Fixture builders are test code too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use palisade_scan::{
    build_report, find_secrets, scan_content, ContentOptions, Date, IgnoreFile, Inventory, Target, TargetKind,
};

fn rep(s: &str, n: usize) -> String {
    s.repeat(n)
}

struct Fixture {
    text: String,
    /// (rule id, line, first four characters of the value)
    want: Vec<(&'static str, usize, String)>,
}

fn fixture() -> Fixture {
    let pem_body = format!("MIIEow{}", rep("IBAAKCAQEAx9", 6));
    let aws_id = format!("AKIA{}", "Z7QW3RT5YU8IOP2L");
    let aws_secret = format!("q8Jd7Kx2LmN9pQr4StUv/WxYz0AbCdEf+hIjK{}", "lMn");
    assert_eq!(aws_secret.len(), 40);
    let ghp = format!("ghp_{}", rep("a1B2c3D4e5F6", 3));
    let pat = format!("github_pat_11ABCDEFG0{}", rep("xY9zW8vU7t", 7));
    let glpat = format!("glpat-{}", "Zx9Yw8Vu7Ts6Rq5Po4Nm");
    let slack = format!("xoxb-{}", "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx");
    let hook = format!("https://hooks.slack.com/services/{}", "T024BE7LD/B0A1B2C3D/aB3dE5fG7hI9jK1lM3nO5pQ7");
    // RFC 7519 section 3.1.
    let jwt = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let lines = [
        "# config".to_owned(),                               // 1
        format!("-----BEGIN {}PRIVATE KEY-----", "RSA "),    // 2
        pem_body.clone(),                                    // 3
        format!("-----END {}PRIVATE KEY-----", "RSA "),      // 4
        format!("AWS_ACCESS_KEY_ID={aws_id}"),               // 5
        format!("aws_secret_access_key = \"{aws_secret}\""), // 6
        format!("export GITHUB_TOKEN={ghp}"),                // 7
        format!("token: {pat}"),                             // 8
        format!("gitlab = '{glpat}'"),                       // 9
        format!("slack_bot = \"{slack}\""),                  // 10
        format!("webhook_url: {hook}"),                      // 11
        format!("Authorization: Bearer {jwt}"),              // 12
        "db_password = \"S3cr3t!Pa55w0rd#2024\"".to_owned(), // 13
        // Near misses: placeholders, variables, low entropy, pointer keys, prose, documented examples.
        "password = \"${DB_PASSWORD}\"".to_owned(),                  // 14
        "password: changeme-please".to_owned(),                      // 15
        "token_url = \"https://auth.example.com/token\"".to_owned(), // 16
        "api_key = \"aaaaaaaaaaaaaaaa\"".to_owned(),                 // 17
        "secret: required".to_owned(),                               // 18
        "password = config.database.password".to_owned(),            // 19
        format!("key_id = AKIA{}", "IOSFODNN7EXAMPLE"),              // 20
        "-----BEGIN PRIVATE KEY-----".to_owned(),                    // 21
        "...".to_owned(),                                            // 22
        "password = os.environ(\"DB_PASSWORD\")".to_owned(),         // 23
        "secret: {secretName: tls}".to_owned(),                      // 24
    ];
    let text = lines.join("\n") + "\n";
    let want = vec![
        ("PAL-SEC-001", 3, "MIIE".to_owned()),
        ("PAL-SEC-002", 5, "AKIA".to_owned()),
        ("PAL-SEC-003", 6, "q8Jd".to_owned()),
        ("PAL-SEC-005", 7, "ghp_".to_owned()),
        ("PAL-SEC-005", 8, "gith".to_owned()),
        ("PAL-SEC-006", 9, "glpa".to_owned()),
        ("PAL-SEC-007", 10, "xoxb".to_owned()),
        ("PAL-SEC-008", 11, "http".to_owned()),
        ("PAL-SEC-009", 12, "eyJ0".to_owned()),
        ("PAL-SEC-010", 13, "S3cr".to_owned()),
    ];
    // The private key is reported on its header line.
    let mut want = want;
    want[0].1 = 2;
    Fixture { text, want }
}

#[test]
fn every_kind_found_and_near_misses_ignored() {
    let fx = fixture();
    let found = find_secrets("conf/app.env", fx.text.as_bytes());
    let got: Vec<(&str, usize, String)> =
        found.iter().map(|f| (f.rule_id.as_str(), f.line, f.redacted.trim_end_matches('…').to_owned())).collect();
    assert_eq!(got, fx.want);
    for f in &found {
        assert_eq!(f.redacted.chars().count(), 5, "{}", f.redacted);
        assert!(f.redacted.ends_with('…'));
        assert_eq!(f.file, "conf/app.env");
        assert!(f.fingerprint.starts_with("sha256:") && f.fingerprint.len() == 39);
        // The finding's serialized form never holds more than the redacted prefix.
        let json = serde_json::to_string(f).unwrap();
        assert!(!json.contains("Pa55w0rd") && !json.contains("a1B2c3D4e5F6"), "{json}");
    }
    let sev: Vec<String> = found.iter().map(|f| format!("{:?}", f.severity)).collect();
    assert_eq!(sev, ["Critical", "Critical", "Critical", "High", "High", "High", "High", "Medium", "Medium", "High"]);
}

#[test]
fn gcp_service_account_json_is_one_finding() {
    let key = format!(
        "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"demo\",\n  \"private_key_id\": \"{}\",\n  \
         \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n\",\n  \
         \"client_email\": \"x@demo.iam.gserviceaccount.com\"\n}}\n",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6"
    );
    let found = find_secrets("sa.json", key.as_bytes());
    let got: Vec<(&str, usize, &str)> =
        found.iter().map(|f| (f.rule_id.as_str(), f.line, f.redacted.as_str())).collect();
    assert_eq!(got, [("PAL-SEC-004", 5, "MIIE…")]);
}

#[test]
fn binary_files_are_skipped() {
    let mut data = fixture().text.into_bytes();
    data.insert(10, 0);
    assert_eq!(find_secrets("x.bin", &data), []);
}

#[test]
fn tree_scan_with_ignore_file() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("conf")).unwrap();
    std::fs::create_dir_all(root.join("tests/fixtures")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join("conf/app.env"), &fx.text).unwrap();
    std::fs::write(root.join("tests/fixtures/key.pem"), &fx.text).unwrap();
    std::fs::write(root.join(".git/config"), &fx.text).unwrap();
    let c = scan_content(root, &ContentOptions::secrets_only(), &mut |_| {}).unwrap();
    assert_eq!(c.files_scanned, 2);
    assert_eq!(c.secrets.len(), 20);
    let jwt_fp = c.secrets.iter().find(|s| s.rule_id == "PAL-SEC-009").unwrap().fingerprint.clone();

    let ignore = format!(
        "ignore:\n\
         \x20 - id: '*'\n    reason: test fixtures hold fake keys\n    paths: ['tests/fixtures/**']\n\
         \x20 - id: {jwt_fp}\n    reason: the RFC 7519 example token\n\
         \x20 - id: PAL-SEC-010\n    reason: rotated, tracked in SEC-12\n    expires: 2020-01-31\n\
         \x20 - id: PAL-SEC-008\n    reason: channel deleted\n    expires: 2999-12-31\n    paths: ['conf/*.env']\n"
    );
    let ignores = IgnoreFile::parse(".palisadeignore.yaml", &ignore).unwrap();
    let t = Target::new(root.display().to_string(), TargetKind::Filesystem, Inventory::default()).with_content(c);
    let mut report = build_report(vec![t], None);
    report.apply_ignores(&ignores, Date::new(2025, 6, 1).unwrap());
    let t = &report.targets[0];
    // 10 in the fixtures dir, the JWT and the webhook in conf/: 12 suppressed; the expired entry does not apply.
    assert_eq!(t.suppressed, 12);
    let mut left: Vec<&str> = t.secrets.iter().map(|s| s.rule_id.as_str()).collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "PAL-SEC-001",
            "PAL-SEC-002",
            "PAL-SEC-003",
            "PAL-SEC-005",
            "PAL-SEC-005",
            "PAL-SEC-006",
            "PAL-SEC-007",
            "PAL-SEC-010"
        ]
    );
    assert!(t.secrets.iter().all(|s| s.file == "conf/app.env"));
    assert_eq!(report.expired_ignores.len(), 1);
    assert_eq!(report.expired_ignores[0].id, "PAL-SEC-010");
    assert_eq!(report.expired_ignores[0].expires.to_string(), "2020-01-31");
    let table = report.render_table(false);
    assert!(table.contains("0 misconfigurations, 8 secrets, 12 ignored"), "{table}");
    assert!(table.contains(
        "expired ignore: PAL-SEC-010 (expired 2020-01-31, reason: rotated, tracked in SEC-12) no longer suppresses findings"
    ));
    assert!(!table.contains("Pa55w0rd"));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["expired_ignores"][0]["expires"], "2020-01-31");
    assert_eq!(json["targets"][0]["suppressed"], 12);
}
