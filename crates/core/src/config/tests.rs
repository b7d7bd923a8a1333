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

const MESH: &str = r#"
mesh:
  server: https://ca.palisade.svc:8443
  server_ca: ca.pem
  trust_domain: td
  join_token: "${PALISADE_JOIN_TOKEN}"
listeners:
  mesh: { address: 127.0.0.1:15443 }
  local:
    - { name: to-b, address: 127.0.0.1:15001 }
upstreams:
  b:
    endpoints: ["10.0.0.2:15443"]
    mesh: true
    identity: spiffe://td/ns/shop/sa/b
  app: { endpoints: ["127.0.0.1:8080"] }
routes:
  - name: out-b
    match: { listeners: [to-b] }
    upstream: b
  - name: in
    match: { listeners: [mesh] }
    upstream: app
    authn: { methods: [mtls] }
"#;

fn paths(text: &str) -> Vec<(String, String)> {
    let e = parse_str("gw.yaml", text, Path::new(".")).err().map(|e| e.diagnostics).unwrap_or_default();
    e.into_iter().map(|d| (d.path, d.message)).collect()
}

#[test]
fn mesh_config_parses() {
    let c = parse_str("gw.yaml", MESH, Path::new(".")).map(|l| l.config).unwrap_or_else(|e| unreachable!("{e}"));
    let m = c.mesh.as_ref().unwrap();
    assert_eq!((m.server.as_str(), m.trust_domain.as_str()), ("https://ca.palisade.svc:8443", "td"));
    assert_eq!(m.join_token, Some(crate::SecretRef::parse("${PALISADE_JOIN_TOKEN}").unwrap()));
    assert_eq!(c.listeners.mesh.as_ref().map(|l| l.address.port()), Some(15443));
    assert_eq!(c.listeners.local[0].name, "to-b");
    assert!(c.upstreams["b"].mesh);
    assert_eq!(c.upstreams["b"].identity.as_deref(), Some("spiffe://td/ns/shop/sa/b"));
    assert_eq!(c.routes[1].matches.listeners, Some(vec!["mesh".to_string()]));
    assert_eq!(c.routes[0].matches.listeners, Some(vec!["to-b".to_string()]));
    let d = MESH.replace("  trust_domain: td\n", "").replace("spiffe://td/", "spiffe://palisade.local/");
    let c = parse_str("gw.yaml", &d, Path::new(".")).map(|l| l.config).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(c.mesh.map(|m| m.trust_domain), Some("palisade.local".to_string()));
}

#[test]
fn mesh_section_errors_name_the_field() {
    let t = MESH.replace("https://ca.palisade.svc:8443", "ftp://ca").replace("trust_domain: td", "trust_domain: TD");
    assert_eq!(
        paths(&t),
        [
            ("mesh.server".into(), "must be an http:// or https:// URL".into()),
            ("mesh.server_ca".into(), "server_ca needs an https:// mesh.server".into()),
            ("mesh.trust_domain".into(), "invalid trust domain \"TD\" (use a-z, 0-9, '.', '-' and '_')".into()),
            ("upstreams.b.identity".into(), "spiffe://td/ns/shop/sa/b is not in the mesh trust domain \"TD\"".into()),
        ]
    );
    let both = MESH.replace("  join_token:", "  k8s_token_file: /var/run/token\n  join_token:");
    assert_eq!(err(&both), "gw.yaml:6:19: mesh.k8s_token_file: set join_token or k8s_token_file, not both");
    let neither = MESH.replace("  join_token: \"${PALISADE_JOIN_TOKEN}\"\n", "");
    assert_eq!(err(&neither), "gw.yaml:3:9: mesh: one of join_token or k8s_token_file is required");
    let inline = MESH.replace("\"${PALISADE_JOIN_TOKEN}\"", "abcdef");
    assert!(err(&inline).starts_with("gw.yaml:6:15: mesh.join_token: secrets must be a reference"), "{}", err(&inline));
}

#[test]
fn mesh_listener_and_upstreams_need_the_mesh_section() {
    let start = MESH.find("listeners:").unwrap();
    let t = &MESH[start..];
    assert_eq!(
        paths(t),
        [
            ("listeners.mesh".into(), "the mesh listener needs the top-level mesh section".into()),
            ("upstreams.b.mesh".into(), "mesh upstreams need the top-level mesh section".into()),
        ]
    );
}

#[test]
fn mesh_upstream_identity_rules() {
    let t = MESH.replace("    identity: spiffe://td/ns/shop/sa/b\n", "");
    assert_eq!(paths(&t), [("upstreams.b.identity".into(), "mesh: true needs the upstream's SPIFFE ID".into())]);
    let t = MESH.replace("mesh: true\n", "mesh: false\n");
    assert_eq!(paths(&t), [("upstreams.b.identity".into(), "identity needs mesh: true".into())]);
    let t = MESH.replace("spiffe://td/ns/shop/sa/b", "spiffe://td/ns/../b");
    assert_eq!(paths(&t).len(), 1);
    assert_eq!(paths(&t)[0].0, "upstreams.b.identity");
    let t = MESH.replace("    mesh: true\n", "    mesh: true\n    tls: { ca: ca.pem }\n");
    assert_eq!(
        paths(&t),
        [("upstreams.b.tls".into(), "tls and mesh: true are exclusive (the mesh brings its own TLS)".into())]
    );
}

#[test]
fn local_listener_names_and_route_listeners_are_checked() {
    let t = MESH.replace("name: to-b, address: 127.0.0.1:15001", "name: mesh, address: 127.0.0.1:15443");
    assert_eq!(
        paths(&t),
        [
            ("listeners.local[0].name".into(), "\"mesh\" is the name of a built-in listener".into()),
            ("listeners.local[0].address".into(), "address 127.0.0.1:15443 is used by another listener".into()),
            ("routes[0].match.listeners[0]".into(), "unknown listener \"to-b\"".into()),
        ]
    );
    let t = MESH.replace(
        "    - { name: to-b, address: 127.0.0.1:15001 }\n",
        "    - { name: to-b, address: 127.0.0.1:15001 }\n    - { name: to-b, address: 127.0.0.1:15002 }\n",
    );
    assert_eq!(paths(&t), [("listeners.local[1].name".into(), "duplicate listener name \"to-b\"".into())]);
    let t = MESH.replace("listeners: [to-b]", "listeners: [to-c]");
    assert_eq!(
        err(&t),
        "gw.yaml:19:26: routes[0].match.listeners[0]: unknown listener \"to-c\" (did you mean \"to-b\"?)"
    );
    let t = MESH.replace("listeners: [to-b]", "listeners: []");
    assert_eq!(
        paths(&t),
        [(
            "routes[0].match.listeners".into(),
            "list at least one listener (omit the field for every listener except mesh)".into()
        )]
    );
}

#[test]
fn mtls_routes_need_client_auth_or_the_mesh_listener() {
    // Without `listeners: [mesh]` the route is not reachable from the mesh listener.
    let t = MESH.replace("    match: { listeners: [mesh] }\n", "");
    assert_eq!(
        paths(&t),
        [(
            "routes[1].authn.methods[0]".into(),
            "mtls needs listeners.https.client_auth, or a route on the mesh listener".into()
        )]
    );
}

#[test]
fn waf_sections_parse_and_bad_ones_name_the_field() {
    let text = format!(
        "{GOOD}    waf:\n      mode: detect\n      exclusions:\n        - rule: 942100\n        - rule: \"920100-920199\"\n          target: ARGS:q\n        - tag: attack-xss\nwaf:\n  rules: [crs/crs-setup.conf, \"crs/rules/*.conf\"]\n  paranoia_level: 2\n"
    );
    let c = parse_str("gw.yaml", &text, Path::new(".")).map(|l| l.config).unwrap_or_else(|e| unreachable!("{e}"));
    let w = c.waf.as_ref().map(|w| (w.rules.len(), w.paranoia_level, w.inbound_threshold, w.max_body_bytes));
    assert_eq!(w, Some((2, 2, 5, 131072)));
    assert_eq!(c.waf.as_ref().map(|w| w.verdict_memo), Some(true));
    let off = text.replace("  paranoia_level: 2\n", "  paranoia_level: 2\n  verdict_memo: false\n");
    let c2 = parse_str("gw.yaml", &off, Path::new(".")).map(|l| l.config).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(c2.waf.as_ref().map(|w| w.verdict_memo), Some(false));
    let r = c.routes[0].waf.clone().unwrap_or_default();
    assert_eq!(r.mode, WafMode::Detect);
    assert_eq!(r.exclusions[0].rule, Some(RuleIds(942100, 942100)));
    assert_eq!(r.exclusions[1].rule, Some(RuleIds(920100, 920199)));
    assert_eq!(r.exclusions[1].target.as_deref(), Some("ARGS:q"));
    assert_eq!(r.exclusions[2].tag.as_deref(), Some("attack-xss"));

    let e = err(&text.replace("\"920100-920199\"", "\"920199-920100\""));
    assert!(e.starts_with("gw.yaml:18:17: routes[0].waf.exclusions[1].rule: invalid rule id \"920199-920100\""), "{e}");
    let e = err(&text.replace("paranoia_level: 2", "paranoia_level: 5"));
    assert!(e.contains("waf.paranoia_level: must be 1, 2, 3 or 4"), "{e}");
    let e = err(&text.replace("        - tag: attack-xss\n", "        - target: ARGS:q\n"));
    assert!(e.contains("routes[0].waf.exclusions[2]: set rule (an id or FIRST-LAST) or tag"), "{e}");
    let no_top = text.split("waf:\n  rules").next().unwrap_or_default().to_owned();
    assert!(err(&no_top).contains("routes[0].waf: a route's waf needs the top-level waf section"), "{}", err(&no_top));
}
