use std::path::Path;

use super::*;

const GOOD: &str = r#"
listeners:
  http:
    address: 127.0.0.1:8080
upstreams:
  orders:
    endpoints: ["127.0.0.1:9001"]
    balance: least_request
routes:
  - name: orders
    match:
      path: { prefix: /orders }
    upstream: orders
"#;

fn err(text: &str) -> String {
    match parse_str("gw.yaml", text, Path::new(".")) {
        Ok(_) => String::from("<ok>"),
        Err(e) => e.summary(),
    }
}

#[test]
fn good_config_parses() {
    let c = parse_str("gw.yaml", GOOD, Path::new(".")).map(|l| l.config);
    let c = c.unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(c.upstreams["orders"].balance, Balance::LeastRequest);
    assert_eq!(c.routes[0].matches.path.as_ref().and_then(|p| p.prefix.as_deref()), Some("/orders"));
    assert_eq!(c.limits.max_header_bytes, 16384);
}

#[test]
fn unknown_upstream_is_located_with_suggestion() {
    let text = GOOD.replace("upstream: orders", "upstream: ordrs");
    assert_eq!(err(&text), r#"gw.yaml:13:15: routes[0].upstream: unknown upstream "ordrs" (did you mean "orders"?)"#);
}

#[test]
fn unknown_field_is_rejected_with_suggestion() {
    let text = GOOD.replace("    balance:", "    balanse:");
    let e = err(&text);
    assert!(e.starts_with("gw.yaml:8:5: upstreams.orders.balanse: unknown field `balanse`"), "{e}");
    assert!(e.ends_with("(did you mean \"balance\"?)"), "{e}");
}

#[test]
fn bad_values_name_the_field() {
    let text = GOOD.replace("least_request", "fastest");
    let e = err(&text);
    assert!(e.starts_with("gw.yaml:8:14: upstreams.orders.balance: unknown variant `fastest`"), "{e}");
    let text = GOOD.replace("127.0.0.1:8080", "localhost-8080");
    let e = err(&text);
    assert!(e.starts_with("gw.yaml:4:14: listeners.http.address: invalid socket address"), "{e}");
    let text = GOOD.replace("balance: least_request", "connect_timeout: soon");
    assert_eq!(
        err(&text),
        r#"gw.yaml:8:22: upstreams.orders.connect_timeout: invalid duration "soon": write e.g. 500ms, 5s or 1m"#
    );
}

#[test]
fn all_semantic_errors_are_collected() {
    let text = r#"
listeners:
  http: { address: 127.0.0.1:8080, redirect_to_https: true }
upstreams:
  a: { endpoints: ["nohost"] }
routes:
  - name: r1
    match: { path: { regex: "(" }, methods: [get] }
    upstream: a
  - name: r1
    upstream: a
"#;
    let e = parse_str("gw.yaml", text, Path::new(".")).err().map(|e| e.diagnostics).unwrap_or_default();
    let paths: Vec<_> = e.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "listeners.http.redirect_to_https",
            "upstreams.a.endpoints[0]",
            "routes[0].match.methods[0]",
            "routes[0].match.path.regex",
            "routes[1].name"
        ]
    );
}

#[test]
fn inline_secret_is_rejected() {
    let text = r#"
listeners:
  https:
    address: 127.0.0.1:8443
    certificates:
      - cert: c.pem
        key: "-----BEGIN PRIVATE KEY-----"
"#;
    let e = err(text);
    assert!(e.starts_with("gw.yaml:7:14: listeners.https.certificates[0].key: secrets must be a reference"), "{e}");
}

#[test]
fn syntax_error_is_located() {
    let e = err("listeners:\n  http:\n    address: 127.0.0.1:1\n  - y\n");
    assert!(e.starts_with("gw.yaml:4:3: "), "{e}");
}

#[test]
fn display_shows_source_line_and_caret() {
    let text = GOOD.replace("upstream: orders", "upstream: ordrs");
    let e = parse_str("gw.yaml", &text, Path::new(".")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("13 |     upstream: ordrs\n    |               ^"), "{e}");
}

#[test]
fn worker_count_is_bounded() {
    let e = err(&format!("workers: 5000\n{GOOD}"));
    assert_eq!(e, "gw.yaml:1:10: workers: at most 1024 worker threads (0 = one per core)");
}
