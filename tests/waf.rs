//! The WAF end to end: a real `palisade gateway` with the OWASP Core Rule Set loaded, driven by
//! the CRS regression suite (go-ftw YAML, /work/shared/data/crs/tests/regression/tests): each
//! test's request goes to the gateway over raw TCP, and the rule ids that fired are read back
//! from the gateway's audit events (matched by the request id the runner sets). Also: CRS 3.3
//! from Debian's `modsecurity-crs`, and a broken rule file on reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{curl, Backend, Gw};
use serde_yaml_ng::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crs_tests_dir() -> PathBuf {
    let local = repo().join("../shared/data/crs/tests/regression/tests");
    if local.is_dir() {
        local
    } else {
        PathBuf::from("/work/shared/data/crs/tests/regression/tests")
    }
}

/// What the CRS project's own test setup changes of crs-setup.conf (rule 900005 of its regression
/// README): every paranoia level on, the limits the tests exercise, detection only (the tests read
/// the log, so every rule of every phase must run).
pub const CRS_TEST_DIRECTIVES: &str = r#"
SecResponseBodyAccess On
SecResponseBodyMimeType text/plain text/html text/xml application/json
SecAction "id:900005,phase:1,nolog,pass,ctl:ruleEngine=DetectionOnly,ctl:ruleRemoveById=910000,setvar:tx.blocking_paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535"
"#;

fn gateway_config(backend: &str, rules: &str, directives: &str, paranoia: u8) -> String {
    format!(
        "listeners:\n  http:\n    address: 127.0.0.1:{{HTTP}}\nadmin:\n  address: 127.0.0.1:{{ADMIN}}\n\
limits:\n  max_header_bytes: 65536\n\
audit:\n  file: {{DIR}}/audit.jsonl\n\
upstreams:\n  echo:\n    endpoints: [\"{backend}\"]\n\
waf:\n  rules: {rules}\n  paranoia_level: {paranoia}\n  max_body_bytes: 1048576\n  directives: |\n{directives}\n\
routes:\n  - name: all\n    match: {{ path: {{ prefix: / }} }}\n    upstream: echo\n    waf: {{ mode: block }}\n",
        directives = directives.lines().map(|l| format!("    {l}\n")).collect::<String>(),
    )
}

/// The go-ftw backend (albedo): `/reflect` answers with the status, headers and body its JSON
/// request names (`body`, or base64 `encodedBody`); anything else is an empty 200 text/plain.
async fn reflect_backend() -> String {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let reflect = req.uri().path() == "/reflect";
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let mut resp = hyper::Response::builder();
                    let mut out = bytes::Bytes::new();
                    let mut typed = false;
                    let mut status = 200;
                    if let (true, Ok(serde_json::Value::Object(m))) = (reflect, serde_json::from_slice(&body)) {
                        status = m.get("status").and_then(serde_json::Value::as_u64).unwrap_or(200) as u16;
                        if let Some(serde_json::Value::Object(h)) = m.get("headers") {
                            for (k, v) in h {
                                typed |= k.eq_ignore_ascii_case("content-type");
                                resp = resp.header(k.as_str(), v.as_str().unwrap_or_default());
                            }
                        }
                        out = match (m.get("body"), m.get("encodedBody")) {
                            (Some(serde_json::Value::String(b)), _) => bytes::Bytes::from(b.clone()),
                            (_, Some(serde_json::Value::String(b))) => {
                                base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default().into()
                            }
                            _ => bytes::Bytes::new(),
                        };
                    }
                    if !typed {
                        resp = resp.header("content-type", "text/plain");
                    }
                    let resp = resp.status(status).body(Full::new(out)).unwrap_or_default();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    addr.to_string()
}

/// One stage of one go-ftw test.
struct Stage {
    file: String,
    id: String,
    request: Vec<u8>,
    expect: Vec<u32>,
    no_expect: Vec<u32>,
    status: Vec<u16>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect()).unwrap_or_default()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The raw request go-ftw would send for a stage's `input`, with our request id in it.
fn build_request(input: &Value, request_id: &str) -> Vec<u8> {
    let marker = format!("X-Request-Id: {request_id}\r\n");
    if let Some(enc) = input.get("encoded_request").and_then(Value::as_str) {
        let raw = base64::engine::general_purpose::STANDARD.decode(enc.trim()).unwrap_or_default();
        return insert_after_request_line(&raw, marker.as_bytes());
    }
    let method = input.get("method").and_then(text).unwrap_or_else(|| "GET".into());
    let uri = input.get("uri").and_then(text).unwrap_or_else(|| "/".into());
    let version = input.get("version").and_then(text).unwrap_or_else(|| "HTTP/1.1".into());
    let autocomplete = input.get("autocomplete_headers").and_then(Value::as_bool).unwrap_or(true);
    let data = input.get("data").and_then(text).unwrap_or_default();
    let mut head = format!("{method} {uri} {version}\r\n");
    let mut has = HashSet::new();
    if let Some(h) = input.get("headers").and_then(Value::as_mapping) {
        for (k, v) in h {
            let (Some(k), Some(v)) = (text(k), text(v)) else { continue };
            has.insert(k.to_ascii_lowercase());
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if autocomplete {
        if !data.is_empty() && !has.contains("content-length") && !has.contains("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", data.len()));
        }
        // go-ftw sends data as a form unless the test names a type.
        if !data.is_empty() && !has.contains("content-type") {
            head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        if !has.contains("connection") {
            head.push_str("Connection: close\r\n");
        }
    }
    head.push_str(&marker);
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(data.as_bytes());
    out
}

fn insert_after_request_line(raw: &[u8], extra: &[u8]) -> Vec<u8> {
    match raw.windows(2).position(|w| w == b"\r\n") {
        Some(i) => [&raw[..i + 2], extra, &raw[i + 2..]].concat(),
        None => raw.to_vec(),
    }
}

fn load_stages(dir: &Path) -> Vec<Stage> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let group =
            f.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let rule = doc.get("rule_id").and_then(text).unwrap_or_default();
        for t in doc.get("tests").and_then(Value::as_sequence).into_iter().flatten() {
            let tid = t.get("test_id").and_then(text).unwrap_or_default();
            for (k, st) in t.get("stages").and_then(Value::as_sequence).into_iter().flatten().enumerate() {
                let st = st.get("stage").unwrap_or(st);
                let (Some(input), Some(output)) = (st.get("input"), st.get("output")) else { continue };
                let id = format!("ftw-{rule}-{tid}-{k}");
                let log = output.get("log");
                let status = match output.get("status") {
                    Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u16]).unwrap_or_default(),
                    Some(s @ Value::Sequence(_)) => ids(s).into_iter().map(|n| n as u16).collect(),
                    _ => vec![],
                };
                out.push(Stage {
                    file: group.clone(),
                    request: build_request(input, &id),
                    id,
                    expect: log.and_then(|l| l.get("expect_ids")).map(ids).unwrap_or_default(),
                    no_expect: log.and_then(|l| l.get("no_expect_ids")).map(ids).unwrap_or_default(),
                    status,
                });
            }
        }
    }
    out
}

/// Send raw bytes; the response status (0 when none came back). The write side stays open (a
/// half-closed connection may be dropped by the server before it answers); the status line is
/// all that is read.
async fn send(port: u16, request: &[u8]) -> u16 {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return 0 };
    if s.write_all(request).await.is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// request id -> rule ids, from the gateway's audit file; waits for `sentinel` to be written.
async fn fired(audit: &Path, sentinel: &str) -> HashMap<String, HashSet<u32>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(audit).unwrap_or_default();
        if text.contains(sentinel) {
            let mut out: HashMap<String, HashSet<u32>> = HashMap::new();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                let id = v["request_id"].as_str().unwrap_or_default().to_owned();
                let rules = v["waf"].as_array().into_iter().flatten().filter_map(|h| h["rule"].as_u64());
                out.entry(id).or_default().extend(rules.map(|r| r as u32));
            }
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "the sentinel request never reached the audit file ({} lines in it)",
            text.lines().count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crs_regression_suite_through_the_gateway() {
    let dir = crs_tests_dir();
    assert!(dir.is_dir(), "CRS regression tests not found at {}", dir.display());
    let stages = load_stages(&dir);
    assert!(stages.len() > 5000, "only {} stages parsed", stages.len());

    let backend = reflect_backend().await;
    let crs = repo().join("crs");
    let rules = format!("[\"{0}/crs-setup.conf.example\", \"{0}/rules/*.conf\"]", crs.display());
    let gw = Gw::start(&gateway_config(&backend, &rules, CRS_TEST_DIRECTIVES, 4)).await;

    let stages = Arc::new(stages);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let statuses = Arc::new(std::sync::Mutex::new(vec![0u16; stages.len()]));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (stages, next, statuses, port) = (stages.clone(), next.clone(), statuses.clone(), gw.http);
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(st) = stages.get(i) else { return };
                let code = send(port, &st.request).await;
                statuses.lock().unwrap()[i] = code;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let sentinel = "ftw-sentinel";
    let req = format!(
        "GET /?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ftw\r\nAccept: */*\r\nX-Request-Id: {sentinel}\r\nConnection: close\r\n\r\n"
    );
    let code = send(gw.http, req.as_bytes()).await;
    assert_eq!(code, 200, "sentinel: {}", gw.log_text().lines().rev().take(20).collect::<Vec<_>>().join("\n"));
    let fired = fired(&gw.dir.path().join("audit.jsonl"), sentinel).await;

    let statuses = statuses.lock().unwrap().clone();
    let none = HashSet::new();
    let mut per_file: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (st, status) in stages.iter().zip(statuses) {
        let got = fired.get(&st.id).unwrap_or(&none);
        let missing: Vec<u32> = st.expect.iter().filter(|i| !got.contains(i)).copied().collect();
        let unwanted: Vec<u32> = st.no_expect.iter().filter(|i| got.contains(i)).copied().collect();
        let status_ok = st.status.is_empty() || st.status.contains(&status);
        let ok = missing.is_empty() && unwanted.is_empty() && status_ok;
        let e = per_file.entry(st.file.clone()).or_default();
        e.1 += 1;
        if ok {
            e.0 += 1;
        } else {
            failures.push(format!(
                "{}: missing {missing:?} unwanted {unwanted:?} status {status} (want {:?})",
                st.id, st.status
            ));
        }
    }
    let (pass, total) = per_file.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let mut report = String::from("| rule file | passed | tests | rate |\n|---|---|---|---|\n");
    for (f, (p, t)) in &per_file {
        report.push_str(&format!("| {f} | {p} | {t} | {:.1} % |\n", 100.0 * *p as f64 / *t as f64));
    }
    let rate = 100.0 * pass as f64 / total as f64;
    report.push_str(&format!("| **all** | {pass} | {total} | **{rate:.1} %** |\n"));
    let out = std::env::var_os("PALISADE_CRS_REPORT").map(PathBuf::from);
    if let Some(out) = out {
        std::fs::write(&out, format!("{report}\nFailures:\n{}\n", failures.join("\n"))).unwrap();
    }
    eprintln!("{report}");
    eprintln!("first failures:\n{}", failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n"));
    // Ratchet: raise as the engine improves (the target of issue #7 is 95 %).
    assert!(rate >= MIN_PASS_RATE, "CRS regression pass rate {rate:.1} % fell below {MIN_PASS_RATE} %");
}

const MIN_PASS_RATE: f64 = 99.0;

/// The rules the demo and the README promise: an SQL injection in a query parameter is refused
/// with 403 and a JSON body carrying the request id, and the audit event names the rules.
#[tokio::test]
async fn crs_blocks_sql_injection_with_403_and_audits_rule_ids() {
    let backend = Backend::start("echo").await;
    let crs = repo().join("crs");
    let rules = format!("[\"{0}/crs-setup.conf.example\", \"{0}/rules/*.conf\"]", crs.display());
    let gw = Gw::start(&gateway_config(&backend.endpoint(), &rules, "", 1)).await;

    let ok = curl(&["-G", "--data-urlencode", "id=1234"], &gw.url("/orders")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let r = curl(&["-G", "--data-urlencode", "id=1' OR 1=1--", "-H", "x-request-id: sqli-1"], &gw.url("/orders")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let body = r.json();
    assert_eq!(body["request_id"], "sqli-1");
    assert_eq!(body["error"], "request blocked by the WAF");
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the attack reached the service");

    let fired = fired(&gw.dir.path().join("audit.jsonl"), "sqli-1").await;
    let ids = &fired["sqli-1"];
    assert!(ids.iter().any(|i| (942100..942200).contains(i)), "{ids:?}");
    assert!(ids.contains(&949110), "{ids:?}");
    let audit = std::fs::read_to_string(gw.dir.path().join("audit.jsonl")).unwrap();
    let line = audit.lines().find(|l| l.contains("sqli-1")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["stage"], "waf");
    assert_eq!(v["status"], 403);
    assert!(!line.contains("1=1"), "the payload must not be in the audit event: {line}");
}

/// CRS 3.3 as Debian ships it (`modsecurity-crs`, which scripts/test-env.sh installs): it loads
/// as written and blocks the same attacks.
#[tokio::test]
async fn debian_crs_3_3_loads_and_blocks() {
    let setup = Path::new("/etc/modsecurity/crs/crs-setup.conf");
    if !setup.exists() {
        assert!(
            std::env::var_os("PALISADE_REQUIRE_CRS3").is_none(),
            "modsecurity-crs is not installed (apt-get install modsecurity-crs)"
        );
        eprintln!("skipped: Debian's modsecurity-crs is not installed");
        return;
    }
    let backend = Backend::start("echo").await;
    let rules = "[/etc/modsecurity/crs/crs-setup.conf, \"/usr/share/modsecurity-crs/rules/*.conf\"]";
    let gw = Gw::start(&gateway_config(&backend.endpoint(), rules, "", 1)).await;
    let ok = curl(&["-G", "--data-urlencode", "q=running shoes"], &gw.url("/search")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let sqli =
        curl(&["-G", "--data-urlencode", "id=1' OR 1=1--", "-H", "x-request-id: crs3-sqli"], &gw.url("/o")).await;
    assert_eq!(sqli.status, 403, "{}", sqli.body);
    let xss = curl(
        &["-G", "--data-urlencode", "q=<script>alert(document.cookie)</script>", "-H", "x-request-id: crs3-xss"],
        &gw.url("/search"),
    )
    .await;
    assert_eq!(xss.status, 403, "{}", xss.body);
    let fired = fired(&gw.dir.path().join("audit.jsonl"), "crs3-xss").await;
    assert!(fired["crs3-sqli"].iter().any(|i| (942100..942200).contains(i)), "{:?}", fired["crs3-sqli"]);
    assert!(fired["crs3-xss"].iter().any(|i| (941100..941400).contains(i)), "{:?}", fired["crs3-xss"]);
}

/// A rule file that does not parse fails the reload with its file and line; the old rules stay.
#[tokio::test]
async fn a_broken_rule_file_fails_the_reload_and_keeps_the_old_rules() {
    let backend = Backend::start("echo").await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("local.conf");
    std::fs::write(&rules, "SecRule ARGS \"@contains attack\" \"id:10,phase:2,deny,status:403,msg:'attack'\"\n")
        .unwrap();
    let template = gateway_config(&backend.endpoint(), "[local.conf]", "", 1);
    let gw = Gw::start_in(dir, &template).await;
    assert_eq!(curl(&[], &gw.url("/x?a=attack")).await.status, 403);
    assert_eq!(curl(&[], &gw.url("/x?a=fine")).await.status, 200);

    std::fs::write(
        &rules,
        "SecRule ARGS \"@contains attack\" \"id:10,phase:2,deny,status:403,msg:'attack'\"\nSecRule ARGS \"@bogusOperator x\" \"id:11,phase:2,deny\"\n",
    )
    .unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log_text().contains("local.conf:2") {
        assert!(Instant::now() < deadline, "no reload error naming local.conf:2: {}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(curl(&[], &gw.url("/x?a=attack")).await.status, 403, "the old rules must stay in force");
    assert_eq!(curl(&[], &gw.url("/x?a=fine")).await.status, 200);
}

/// `palisade config check` names a broken inline directive by the config file's line and field,
/// and the directive's own line within the block.
#[test]
fn config_check_locates_a_bad_directive() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local.conf"), "SecRule ARGS \"@contains x\" \"id:10,phase:2,deny\"\n").unwrap();
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(
        &cfg,
        "listeners:\n  http: { address: 127.0.0.1:0 }\nwaf:\n  rules: [local.conf]\n  directives: |\n    SecRuleEngine On\n    SecResponseBodyAccess On Off\nupstreams:\n  a: { endpoints: [\"127.0.0.1:9\"] }\nroutes:\n  - { name: a, upstream: a, waf: { mode: block } }\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN).args(["config", "check"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("gw.yaml:6:5: waf.directives: <inline>:2: SecResponseBodyAccess takes exactly one argument"),
        "{err}"
    );
}
