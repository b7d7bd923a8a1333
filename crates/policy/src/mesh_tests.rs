#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;
use serde_json::{json, Value};

use super::*;
use crate::{AuthzRequest, Decision, Principal};

const EXAMPLE: &str = include_str!("../tests/fixtures/mesh-policy.yaml");

fn wl(ns_svc: &str) -> SpiffeId {
    let (ns, svc) = ns_svc.split_once('/').unwrap();
    SpiffeId::workload("palisade.local", ns, svc).unwrap()
}

fn decide(authz: &Authorizer, principal: Principal, method: &str, path: &str) -> Decision {
    let req = AuthzRequest {
        principal,
        method,
        route: "mesh",
        path,
        authenticated: true,
        scopes: &[],
        roles: &[],
        client_id: None,
        issuer: None,
        claims: None,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        mtls_identity: None,
        now: 1_700_000_000,
    };
    authz.decide(&req)
}

fn service(s: &str) -> Principal {
    if s.starts_with("spiffe://") {
        Principal::Service(s.to_owned())
    } else {
        Principal::Service(wl(s).to_string())
    }
}

fn errors(yaml: &str) -> Vec<String> {
    MeshPolicy::parse("mesh.yaml", yaml).unwrap_err().iter().map(ToString::to_string).collect()
}

#[test]
fn parses_the_example() {
    let mesh = MeshPolicy::parse("mesh-policy.yaml", EXAMPLE).unwrap();
    assert_eq!(mesh.trust_domain(), "palisade.local");
    assert_eq!(mesh.file(), "mesh-policy.yaml");
    let rules = mesh.rules();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].from().as_str(), "spiffe://palisade.local/ns/shop/sa/frontend");
    assert_eq!(rules[0].to().as_str(), "spiffe://palisade.local/ns/shop/sa/orders");
    assert_eq!(rules[0].methods(), ["GET", "POST"]);
    assert_eq!(rules[0].paths(), ["/orders", "/orders/*"]);
    assert_eq!(rules[2].from().as_str(), "spiffe://other.domain/ns/x/sa/y");
    assert!(rules[2].methods().is_empty());
    assert!(rules[2].paths().is_empty());
    assert_eq!(rules[2].policy_id(), "mesh:2");
    assert_eq!(rules[2].index(), 2);
}

#[test]
fn default_trust_domain_and_duplicates_collapse() {
    let mesh =
        MeshPolicy::parse("m.yaml", "allow:\n  - { from: a/b, to: c/d, methods: [GET, GET], paths: [/x, /x] }\n")
            .unwrap();
    assert_eq!(mesh.trust_domain(), DEFAULT_TRUST_DOMAIN);
    assert_eq!(mesh.rules()[0].from().as_str(), "spiffe://palisade.local/ns/a/sa/b");
    assert_eq!(mesh.rules()[0].methods(), ["GET"]);
    assert_eq!(mesh.rules()[0].paths(), ["/x"]);
    let other =
        MeshPolicy::parse("m.yaml", "trust_domain: corp.example\nallow:\n  - { from: a/b, to: c/d }\n").unwrap();
    assert_eq!(other.rules()[0].to().as_str(), "spiffe://corp.example/ns/c/sa/d");
    // An empty allow list is a valid mesh policy: everything is denied.
    assert!(MeshPolicy::parse("m.yaml", "allow: []\n").unwrap().rules().is_empty());
}

#[test]
fn generated_cedar_for_a_sidecar() {
    let mesh = MeshPolicy::parse("mesh-policy.yaml", EXAMPLE).unwrap();
    assert_eq!(
        mesh.cedar_for(&wl("shop/orders")),
        "// Mesh policy of spiffe://palisade.local/ns/shop/sa/orders: callers not permitted below are denied.\n\
         \n\
         @id(\"mesh:0\")\n\
         permit (\n  principal == Service::\"spiffe://palisade.local/ns/shop/sa/frontend\",\n  \
         action in [Action::\"GET\", Action::\"POST\"],\n  resource\n)\n\
         when {\n  context.path like \"/orders\" ||\n  context.path like \"/orders/*\"\n};\n\
         \n\
         @id(\"mesh:2\")\n\
         permit (\n  principal == Service::\"spiffe://other.domain/ns/x/sa/y\",\n  \
         action in [Action::\"GET\", Action::\"HEAD\", Action::\"POST\", Action::\"PUT\", Action::\"PATCH\", \
         Action::\"DELETE\", Action::\"OPTIONS\"],\n  resource\n);\n"
    );
    let source = mesh.policy_source_for(&wl("shop/payments"));
    assert_eq!(source.name, "mesh-policy.yaml");
    assert!(source.text.contains("@id(\"mesh:1\")"));
    assert!(!source.text.contains("mesh:0"));
}

#[test]
fn decision_table() {
    let mesh = MeshPolicy::parse("mesh-policy.yaml", EXAMPLE).unwrap();
    let orders = mesh.authorizer_for(&wl("shop/orders")).unwrap();
    let payments = mesh.authorizer_for(&wl("shop/payments")).unwrap();
    // (sidecar, peer, method, path, expected determining policy or None for deny)
    let table: &[(&Authorizer, &str, &str, &str, Option<&str>)] = &[
        (&orders, "shop/frontend", "GET", "/orders", Some("mesh:0")),
        (&orders, "shop/frontend", "POST", "/orders/42/items", Some("mesh:0")),
        (&orders, "shop/frontend", "DELETE", "/orders", None),
        (&orders, "shop/frontend", "HEAD", "/orders", None),
        (&orders, "shop/frontend", "GET", "/ordersx", None),
        (&orders, "shop/frontend", "GET", "/orders/", Some("mesh:0")),
        (&orders, "shop/frontend", "GET", "/payments", None),
        (&orders, "shop/frontend", "GET", "/", None),
        // Wrong peer: the payments service may not call orders.
        (&orders, "shop/payments", "GET", "/orders", None),
        (&orders, "other/frontend", "GET", "/orders", None),
        // Full-ID peer from another trust domain: any method, any path.
        (&orders, "spiffe://other.domain/ns/x/sa/y", "DELETE", "/anything/at/all", Some("mesh:2")),
        (&orders, "spiffe://other.domain/ns/x/sa/y", "OPTIONS", "/", Some("mesh:2")),
        // Same path in our own trust domain is another workload.
        (&orders, "spiffe://palisade.local/ns/x/sa/y", "GET", "/orders", None),
        // A rule for `orders` does not apply to the `payments` sidecar and vice versa.
        (&payments, "shop/frontend", "GET", "/orders", None),
        (&payments, "shop/orders", "POST", "/charge", Some("mesh:1")),
        (&payments, "shop/orders", "GET", "/charge", None),
        (&payments, "shop/orders", "POST", "/charge/x", None),
        (&payments, "shop/frontend", "POST", "/charge", None),
        (&payments, "spiffe://other.domain/ns/x/sa/y", "POST", "/charge", None),
        (&orders, "shop/orders", "POST", "/charge", None),
    ];
    for (i, (authz, peer, method, path, expected)) in table.iter().enumerate() {
        let d = decide(authz, service(peer), method, path);
        assert_eq!(d.errors, Vec::<String>::new(), "row {i}");
        match expected {
            Some(policy) => {
                assert!(d.allow, "row {i}: {peer} {method} {path} denied");
                assert_eq!(d.policy_ids[..], [*policy], "row {i}");
            }
            None => {
                assert!(!d.allow, "row {i}: {peer} {method} {path} allowed by {:?}", d.policy_ids);
                assert!(d.policy_ids.is_empty(), "row {i}");
            }
        }
    }
    // Only `Service` principals match: a user or client with the same id string is denied.
    let frontend = wl("shop/frontend").to_string();
    assert!(!decide(&orders, Principal::User(frontend.clone()), "GET", "/orders").allow);
    assert!(!decide(&orders, Principal::Client(frontend), "GET", "/orders").allow);
    assert!(!decide(&orders, Principal::Anonymous, "GET", "/orders").allow);
}

#[test]
fn a_sidecar_without_rules_denies_everything() {
    let mesh = MeshPolicy::parse("mesh-policy.yaml", EXAMPLE).unwrap();
    let authz = mesh.authorizer_for(&wl("shop/frontend")).unwrap();
    assert!(authz.policy_ids().is_empty());
    let d = decide(&authz, service("shop/orders"), "GET", "/");
    assert_eq!(d, Decision { allow: false, policy_ids: std::sync::Arc::default(), errors: vec![] });
    // The generated source also compiles next to other policy files.
    let other = PolicySource { name: "extra.cedar".into(), text: "permit (principal, action, resource);".into() };
    let both = Authorizer::compile(&[mesh.policy_source_for(&wl("shop/orders")), other], &[]).unwrap();
    assert_eq!(both.policy_ids(), ["extra:0", "mesh:0", "mesh:2"]);
}

#[test]
fn path_globs_are_escaped() {
    let yaml = r#"
allow:
  - from: a/b
    to: c/d
    methods: [GET]
    paths:
      - "/a*b"
      - '/q"x'
      - '/b\s*'
      - '/x" || true || "'
      - "/x\" || context.path like \"*"
      - "/café"
      - '/lit\*star'
"#;
    let mesh = MeshPolicy::parse("m.yaml", yaml).unwrap();
    let cedar = mesh.cedar_for(&wl("c/d"));
    assert!(
        cedar.contains(
            r#"context.path like "/a*b" ||
  context.path like "/q\"x" ||
  context.path like "/b\\s*" ||
  context.path like "/x\" || true || \"" ||
  context.path like "/x\" || context.path like \"*" ||
  context.path like "/caf\u{e9}" ||
  context.path like "/lit\\*star""#
        ),
        "{cedar}"
    );
    let authz = mesh.authorizer_for(&wl("c/d")).unwrap();
    let cases: &[(&str, bool)] = &[
        ("/ab", true),
        ("/aZZb", true),
        ("/a/x/b", true),
        ("/ac", false),
        ("/q\"x", true),
        ("/qx", false),
        ("/q\\\"x", false),
        ("/b\\s", true),
        ("/b\\s/more", true),
        ("/bs", false),
        ("/b\\\\s", false),
        // The injection attempts match only themselves, literally.
        ("/x\" || true || \"", true),
        ("/x", false),
        ("/zzz", false),
        ("/x\" || context.path like \"anything", true),
        ("/x\" || context.path like \"", true),
        ("/y", false),
        ("/café", true),
        ("/cafe", false),
        // `\*` in a glob is a backslash followed by the wildcard, not an escaped star.
        ("/lit\\star", true),
        ("/lit\\XYZstar", true),
        ("/lit*star", false),
    ];
    for (path, allow) in cases {
        let d = decide(&authz, service("a/b"), "GET", path);
        assert_eq!(d.allow, *allow, "{path}: {d:?}");
        assert!(d.errors.is_empty(), "{path}: {d:?}");
    }
}

#[test]
fn located_errors() {
    let cases: &[(&str, &[&str])] = &[
        ("alow: []\n", &["mesh.yaml:1:1: alow: unknown field `alow`, expected `trust_domain` or `allow` (did you mean \"allow\"?)"]),
        ("trust_domain: x\n", &["mesh.yaml:1:1: missing field `allow`"]),
        (
            "allow:\n  - from: a/b\n    to: c/d\n    metods: [GET]\n",
            &["mesh.yaml:4:5: allow[0].metods: unknown field `metods`, expected one of `from`, `to`, `methods`, `paths` (did you mean \"methods\"?)"],
        ),
        ("allow:\n  - { from: a/b }\n", &["mesh.yaml:2:5: allow[0]: missing field `to`"]),
        ("allow:\n  - { from: a/b, to: c/d, methods: GET }\n", &["mesh.yaml:2:36: allow[0].methods: invalid type: string \"GET\", expected a sequence"]),
        (
            "allow:\n  - { from: a/b, to: c/d, methods: [GET, FETCH, get] }\n",
            &[
                "mesh.yaml:2:42: allow[0].methods[1]: unknown method `FETCH` (expected one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)",
                "mesh.yaml:2:49: allow[0].methods[2]: unknown method `get` (expected one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)",
            ],
        ),
        (
            "allow:\n  - { from: a/b, to: c/d, methods: [detokenize] }\n",
            &["mesh.yaml:2:37: allow[0].methods[0]: unknown method `detokenize` (expected one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"],
        ),
        (
            "allow:\n  - { from: a/b, to: c/d, methods: [] }\n  - { from: a/b, to: c/d, paths: [] }\n",
            &[
                "mesh.yaml:2:36: allow[0].methods: empty list (leave `methods` out to allow every method)",
                "mesh.yaml:3:34: allow[1].paths: empty list (leave `paths` out to allow every path)",
            ],
        ),
        (
            "allow:\n  - { from: a/b, to: c/d, paths: [orders, \"/ok\", \"/a\\tb\"] }\n",
            &[
                "mesh.yaml:2:35: allow[0].paths[0]: path `orders` must start with `/`",
                "mesh.yaml:2:50: allow[0].paths[2]: path contains a control character",
            ],
        ),
        (
            "allow:\n  - from: shop\n    to: spiffe://Other/x\n  - { from: a/b/c, to: /x }\n",
            &[
                "mesh.yaml:2:11: allow[0].from: `shop` is neither `<namespace>/<service>` nor a spiffe:// ID",
                "mesh.yaml:3:9: allow[0].to: \"spiffe://Other/x\": the trust domain may only hold a-z, 0-9, '.', '-' and '_'",
                "mesh.yaml:4:13: allow[1].from: `a/b/c` is neither `<namespace>/<service>` nor a spiffe:// ID",
                "mesh.yaml:4:24: allow[1].to: `/x` is neither `<namespace>/<service>` nor a spiffe:// ID",
            ],
        ),
        (
            "allow:\n  - { from: a/b.., to: c/.. }\n",
            &["mesh.yaml:2:24: allow[0].to: \"spiffe://palisade.local/ns/c/sa/..\": path segments must be non-empty, not '.' or '..', and hold only A-Z, a-z, 0-9, '.', '-', '_'"],
        ),
        (
            // A bad trust domain is reported once, not again for every shorthand; full IDs are still checked.
            "trust_domain: Palisade\nallow:\n  - { from: a/b, to: c/d }\n  - { from: \"spiffe://td/x\", to: \"spiffe://td\" }\n",
            &[
                "mesh.yaml:1:15: trust_domain: `Palisade` is not a trust domain (1 to 255 of a-z, 0-9, '.', '-', '_')",
                "mesh.yaml:4:34: allow[1].to: \"spiffe://td\" has no path",
            ],
        ),
        ("allow: [\n", &["mesh.yaml:1:8: allow: did not find expected node content"]),
        ("", &["mesh.yaml:1:1: missing field `allow`"]),
    ];
    for (yaml, expected) in cases {
        assert_eq!(errors(yaml), *expected, "{yaml}");
    }
}

#[test]
fn load_names_the_file() {
    let err = MeshPolicy::load(Path::new("/nonexistent/mesh.yaml")).unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!((err[0].file.as_str(), err[0].line, err[0].column), ("/nonexistent/mesh.yaml", 0, 0));
    assert!(err[0].message.starts_with("cannot read: "), "{}", err[0].message);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mesh-policy.yaml");
    let mesh = MeshPolicy::load(&path).unwrap();
    assert_eq!(mesh.file(), path.display().to_string());
    assert_eq!(mesh.rules().len(), 3);
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml).map(|d| Value::deserialize(d).unwrap()).collect()
}

fn deny(ns: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "palisade-mesh-default-deny",
            "namespace": ns,
            "labels": { "app.kubernetes.io/managed-by": "palisade" }
        },
        "spec": { "podSelector": {}, "policyTypes": ["Ingress"] }
    })
}

fn allow(ns: &str, service: &str, callers: &[(&str, &str)], port: u16) -> Value {
    let from: Vec<Value> = callers
        .iter()
        .map(|(ns, svc)| {
            json!({
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns } },
                "podSelector": { "matchLabels": { "app": svc } }
            })
        })
        .collect();
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": format!("palisade-mesh-allow-{service}"),
            "namespace": ns,
            "labels": { "app.kubernetes.io/managed-by": "palisade" }
        },
        "spec": {
            "podSelector": { "matchLabels": { "app": service } },
            "policyTypes": ["Ingress"],
            "ingress": [{ "from": from, "ports": [{ "protocol": "TCP", "port": port }] }]
        }
    })
}

#[test]
fn k8s_export_of_the_example() {
    let mesh = MeshPolicy::parse("mesh-policy.yaml", EXAMPLE).unwrap();
    let export = mesh.k8s_network_policies(15443);
    let skipped =
        "skipped allow[2] (from spiffe://other.domain/ns/x/sa/y to spiffe://palisade.local/ns/shop/sa/orders): \
                   `from` is in trust domain other.domain, not palisade.local: pod selectors cannot name it";
    assert_eq!(export.skipped, [skipped]);
    assert!(export.yaml.contains(&format!("\n# {skipped}\n")), "{}", export.yaml);
    assert_eq!(
        docs(&export.yaml),
        [
            deny("shop"),
            allow("shop", "orders", &[("shop", "frontend")], 15443),
            allow("shop", "payments", &[("shop", "orders")], 15443)
        ]
    );
}

#[test]
fn k8s_export_groups_namespaces_and_callers() {
    let yaml = "allow:
  - { from: web/frontend, to: shop/orders }
  - { from: shop/admin, to: shop/orders, methods: [DELETE] }
  - { from: web/frontend, to: shop/orders, paths: [/x] }
  - { from: shop/orders, to: billing/payments }
  - { from: \"null\", to: \"true/123\" }
";
    // `null` alone is not a shorthand; use full IDs that YAML would read as other types unquoted.
    assert!(MeshPolicy::parse("m.yaml", yaml).is_err());
    let yaml = yaml.replace("{ from: \"null\", to: \"true/123\" }", "{ from: \"null/yes\", to: \"true/123\" }");
    let export = MeshPolicy::parse("m.yaml", &yaml).unwrap().k8s_network_policies(8443);
    assert!(export.skipped.is_empty());
    assert_eq!(
        docs(&export.yaml),
        [
            deny("billing"),
            deny("shop"),
            deny("true"),
            allow("billing", "payments", &[("shop", "orders")], 8443),
            allow("shop", "orders", &[("shop", "admin"), ("web", "frontend")], 8443),
            allow("true", "123", &[("null", "yes")], 8443),
        ]
    );
}

#[test]
fn k8s_export_never_emits_an_open_ingress_rule() {
    let yaml = "allow:
  - { from: \"spiffe://other.domain/ns/x/sa/y\", to: shop/orders }
  - { from: shop/Frontend, to: shop/orders }
  - { from: \"spiffe://palisade.local/jobs/cron\", to: shop/orders }
  - { from: shop/frontend, to: \"spiffe://other.domain/ns/shop/sa/orders\" }
  - { from: shop/frontend, to: shop/under_score }
";
    let export = MeshPolicy::parse("m.yaml", yaml).unwrap().k8s_network_policies(15443);
    assert_eq!(
        export.skipped,
        [
            "skipped allow[0] (from spiffe://other.domain/ns/x/sa/y to spiffe://palisade.local/ns/shop/sa/orders): \
             `from` is in trust domain other.domain, not palisade.local: pod selectors cannot name it",
            "skipped allow[1] (from spiffe://palisade.local/ns/shop/sa/Frontend to spiffe://palisade.local/ns/shop/sa/orders): \
             `from` `Frontend` is not a Kubernetes name (DNS-1123 label: 1 to 63 of a-z, 0-9, '-')",
            "skipped allow[2] (from spiffe://palisade.local/jobs/cron to spiffe://palisade.local/ns/shop/sa/orders): \
             `from` is not of the form spiffe://<td>/ns/<ns>/sa/<service>",
            "skipped allow[3] (from spiffe://palisade.local/ns/shop/sa/frontend to spiffe://other.domain/ns/shop/sa/orders): \
             `to` is in trust domain other.domain, not palisade.local: pod selectors cannot name it",
            "skipped allow[4] (from spiffe://palisade.local/ns/shop/sa/frontend to spiffe://palisade.local/ns/shop/sa/under_score): \
             `to` `under_score` is not a Kubernetes name (DNS-1123 label: 1 to 63 of a-z, 0-9, '-')",
        ]
    );
    // orders keeps its namespace's default deny but gets no allow policy (an empty `from` would admit all).
    assert_eq!(docs(&export.yaml), [deny("shop")]);
    assert!(export
        .yaml
        .contains("\n# no caller of shop/orders can be expressed as a pod selector: only the default deny applies\n"));
}

#[test]
fn k8s_names() {
    assert!(dns_label("a"));
    assert!(dns_label("a-1"));
    assert!(dns_label(&"a".repeat(63)));
    assert!(!dns_label(&"a".repeat(64)));
    assert!(!dns_label(""));
    assert!(!dns_label("-a"));
    assert!(!dns_label("a-"));
    assert!(!dns_label("a.b"));
    assert!(!dns_label("A"));
    assert_eq!(quote("a\"b\\c\né"), "\"a\\\"b\\\\c\\U0000000a\\U000000e9\"");
}
