//! The mesh across real network namespaces: three hosts (frontend, orders, payments), each a
//! `palisade sidecar` beside its app in its own netns, joined by veth pairs to a bridge in the
//! root namespace where `palisade server` (the CA) listens. Needs root (`ip netns`); CI runs as root.
//!
//! Edges allowed by the mesh policy work, an unlisted edge gets 403, a client without an SVID, with a
//! forged SVID or with an expired SVID fails the handshake; SVIDs that live 4 s rotate under steady
//! traffic and the CA itself rotates, with 0 failed requests; an issued SVID works with curl, openssl
//! and Python `cryptography`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{spawn_logged, BIN};
use serde_json::Value;

const TD: &str = "palisade.test";

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three namespaces on one bridge; removed (with every process in them) on drop.
struct Net {
    prefix: String,
    subnet: u8,
    bridge: String,
    children: Vec<tokio::process::Child>,
    dir: tempfile::TempDir,
}

const HOSTS: [(&str, u8); 3] = [("frontend", 11), ("orders", 12), ("payments", 13)];

impl Net {
    fn new() -> Net {
        assert_eq!(must("id", &["-u"]).trim(), "0", "the mesh netns test needs root (ip netns); CI runs it as root");
        let pid = std::process::id();
        let prefix = format!("pal{}", pid % 100_000);
        let subnet = 20 + (pid % 200) as u8;
        let bridge = format!("{prefix}br");
        let net = Net { prefix, subnet, bridge, children: Vec::new(), dir: tempfile::tempdir().unwrap() };
        net.cleanup();
        must("ip", &["link", "add", &net.bridge, "type", "bridge"]);
        must("ip", &["addr", "add", &format!("10.{}.0.1/24", net.subnet), "dev", &net.bridge]);
        must("ip", &["link", "set", &net.bridge, "up"]);
        for (host, last) in HOSTS {
            let ns = net.ns(host);
            let (outer, inner) = (format!("{}{}o", net.prefix, &host[..2]), format!("{}{}i", net.prefix, &host[..2]));
            must("ip", &["netns", "add", &ns]);
            must("ip", &["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            must("ip", &["link", "set", &inner, "netns", &ns]);
            must("ip", &["link", "set", &outer, "master", &net.bridge]);
            must("ip", &["link", "set", &outer, "up"]);
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str()];
                all.extend_from_slice(args);
                must("ip", &all);
            };
            exec(&["ip", "link", "set", "lo", "up"]);
            exec(&["ip", "addr", "add", &format!("10.{}.0.{last}/24", net.subnet), "dev", &inner]);
            exec(&["ip", "link", "set", &inner, "up"]);
        }
        net
    }

    fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    fn ip(&self, last: u8) -> String {
        format!("10.{}.0.{last}", self.subnet)
    }

    fn host_ip(&self, host: &str) -> String {
        self.ip(HOSTS.iter().find(|(h, _)| *h == host).unwrap().1)
    }

    fn cleanup(&self) {
        for (host, _) in HOSTS {
            let ns = self.ns(host);
            // Processes still in the namespace would keep it (and its veth) alive.
            let pids = String::from_utf8_lossy(&run("ip", &["netns", "pids", &ns]).stdout).into_owned();
            for p in pids.split_whitespace() {
                let _ = run("kill", &["-9", p]);
            }
            let _ = run("ip", &["netns", "delete", &ns]);
            let _ = run("ip", &["link", "delete", &format!("{}{}o", self.prefix, &host[..2])]);
        }
        let _ = run("ip", &["link", "delete", &self.bridge]);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `palisade ARGS` in `host`'s namespace (or the root one), logging to `<dir>/<log>.log`.
    fn spawn(&mut self, host: Option<&str>, log: &str, args: &[&str]) {
        let mut cmd = match host {
            Some(h) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", &self.ns(h), BIN]);
                c
            }
            None => tokio::process::Command::new(BIN),
        };
        cmd.args(args);
        self.children.push(spawn_logged(cmd, &self.path(&format!("{log}.log"))));
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// curl inside `host`'s namespace; `None` when curl itself fails (connection, handshake).
    async fn curl(&self, host: &str, args: &[&str]) -> Option<(u16, String)> {
        let out = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "curl", "-s", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .await
            .unwrap();
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        Some((code.trim().parse().unwrap(), body.to_owned()))
    }

    async fn wait_http(&self, host: &str, url: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.curl(host, &[url]).await.is_none() {
            assert!(Instant::now() < deadline, "{what} not ready:\n{}", self.log(what));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
        self.cleanup();
    }
}

fn ca(net: &Net, args: &[&str]) -> Value {
    let data = net.path("server");
    let mut all = vec!["ca", "--data-dir", data.to_str().unwrap(), "--trust-domain", TD];
    all.extend_from_slice(args);
    serde_json::from_str(&must(BIN, &all)).unwrap()
}

fn sidecar_config(net: &Net, host: &str, app_port: Option<u16>, outbound: &[(&str, u16)]) -> String {
    let server = format!("http://{}:9400", net.ip(1));
    let mut locals = String::new();
    let mut upstreams = String::new();
    let mut routes = String::new();
    if let Some(port) = app_port {
        upstreams.push_str(&format!("  app: {{ endpoints: [\"127.0.0.1:{port}\"] }}\n"));
        routes.push_str(
            "  - { name: inbound, match: { listeners: [mesh] }, upstream: app, authn: { methods: [mtls] }, authz: {} }\n",
        );
    }
    if !outbound.is_empty() {
        // HTTP_PROXY mode: one egress port, the Host names the destination.
        locals.push_str("    - { name: egress, address: \"127.0.0.1:15000\" }\n");
    }
    for (dest, port) in outbound {
        locals.push_str(&format!("    - {{ name: to-{dest}, address: \"127.0.0.1:{port}\" }}\n"));
        routes.push_str(&format!(
            "  - {{ name: egress-{dest}, match: {{ listeners: [egress], hosts: [{dest}] }}, upstream: {dest} }}\n"
        ));
        upstreams.push_str(&format!(
            "  {dest}: {{ endpoints: [\"{}:15443\"], mesh: true, identity: \"spiffe://{TD}/ns/shop/sa/{dest}\" }}\n",
            net.host_ip(dest)
        ));
        routes.push_str(&format!("  - {{ name: to-{dest}, match: {{ listeners: [to-{dest}] }}, upstream: {dest} }}\n"));
    }
    let dir = net.dir.path().display();
    format!(
        "mesh:\n  server: \"{server}\"\n  trust_domain: {TD}\n  join_token: \"file:{dir}/{host}.token\"\n\
listeners:\n  mesh: {{ address: \"0.0.0.0:15443\" }}\n  local:\n{locals}\
admin: {{ address: \"127.0.0.1:15901\" }}\n\
access_log: {{ enabled: false }}\n\
audit: {{ file: \"{dir}/{host}-audit.jsonl\" }}\n\
authorization: {{ mesh_policy: \"{dir}/mesh.yaml\" }}\n\
upstreams:\n{upstreams}routes:\n{routes}"
    )
}

const MESH_POLICY: &str = "trust_domain: palisade.test
allow:
  - { from: shop/frontend, to: shop/orders, methods: [GET, POST], paths: [\"/orders\", \"/orders/*\"] }
  - { from: shop/orders, to: shop/payments, methods: [POST], paths: [\"/payments/charge\"] }
";

/// A key and CSR made by openssl, an SVID for it from the CA's API with a join token (all with curl).
async fn svid_by_openssl(net: &Net, name: &str, service: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (key, csr) = (net.path(&format!("{name}.key")), net.path(&format!("{name}.csr")));
    must(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=ignored",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ],
    );
    let token = ca(net, &["join-token", "--ns", "shop", "--service", service, "--ttl", "5m"]);
    let body = serde_json::json!({
        "csr": std::fs::read_to_string(&csr).unwrap(),
        "join_token": token["token"],
    });
    let out = must(
        "curl",
        &[
            "-sS",
            "--fail-with-body",
            "-H",
            "content-type: application/json",
            "-d",
            &body.to_string(),
            &format!("http://{}:9400/ca/v1/svid", net.ip(1)),
        ],
    );
    let resp: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resp["spiffe_id"], format!("spiffe://{TD}/ns/shop/sa/{service}"));
    let (svid, bundle) = (net.path(&format!("{name}.pem")), net.path(&format!("{name}-bundle.pem")));
    std::fs::write(&svid, resp["svid"].as_str().unwrap()).unwrap();
    std::fs::write(&bundle, resp["bundle"].as_str().unwrap()).unwrap();
    (key, svid, bundle)
}

fn audit(net: &Net, host: &str) -> Vec<Value> {
    std::fs::read_to_string(net.path(&format!("{host}-audit.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_across_network_namespaces() {
    let mut net = Net::new();
    let data = net.path("server");
    let listen = format!("{}:9400", net.ip(1));
    net.spawn(
        None,
        "server",
        &[
            "server",
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--trust-domain",
            TD,
            "--svid-ttl",
            "4s",
            "--bundle-refresh",
            "1s",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while run("curl", &["-sf", &format!("http://{listen}/ca/v1/bundle")]).stdout.is_empty() {
        assert!(Instant::now() < deadline, "server not ready:\n{}", net.log("server"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(net.path("mesh.yaml"), MESH_POLICY).unwrap();
    for (host, _) in HOSTS {
        let token = ca(&net, &["join-token", "--ns", "shop", "--service", host, "--ttl", "10m"]);
        std::fs::write(net.path(&format!("{host}.token")), token["token"].as_str().unwrap()).unwrap();
    }
    let configs = [
        ("payments", sidecar_config(&net, "payments", Some(8080), &[])),
        ("orders", sidecar_config(&net, "orders", Some(8080), &[("payments", 15002)])),
        ("frontend", sidecar_config(&net, "frontend", None, &[("orders", 15001), ("payments", 15002)])),
    ];
    for (host, cfg) in &configs {
        let path = net.path(&format!("{host}-sidecar.yaml"));
        std::fs::write(&path, cfg).unwrap();
        if *host != "frontend" {
            let mut args = vec!["demo", *host, "--listen", "127.0.0.1:8080"];
            if *host == "orders" {
                args.extend(["--payments-url", "http://127.0.0.1:15002"]);
            }
            net.spawn(Some(host), &format!("{host}-app"), &args);
        }
        net.spawn(Some(host), &format!("{host}-sidecar"), &["sidecar", "--config", path.to_str().unwrap()]);
    }
    for (host, _) in HOSTS {
        net.wait_http(host, "http://127.0.0.1:15901/readyz", &format!("{host}-sidecar")).await;
    }

    // Allowed edges: frontend -> orders, and orders -> payments behind POST /orders.
    let (status, body) = net.curl("frontend", &["http://127.0.0.1:15001/orders"]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["service"], "orders");
    let post = ["-X", "POST", "-H", "content-type: application/json", "-d", "{\"item\":\"mouse\"}"];
    let mut args = post.to_vec();
    args.push("http://127.0.0.1:15001/orders");
    let (status, body) = net.curl("frontend", &args).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["payment"]["service"], "payments", "{body}");
    assert_eq!(created["payment"]["status"], "captured");

    // The app may instead use its sidecar as HTTP_PROXY: the Host picks the destination.
    let (status, body) = net.curl("frontend", &["-x", "http://127.0.0.1:15000", "http://orders/orders"]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["service"], "orders");

    // Unlisted edge: frontend -> payments is refused by the payments sidecar.
    let mut args = post.to_vec();
    args.push("http://127.0.0.1:15002/payments/charge");
    let (status, body) = net.curl("frontend", &args).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"], "access denied");
    // A listed peer with a method the rule does not list is refused too.
    let (status, _) = net.curl("frontend", &["-X", "DELETE", "http://127.0.0.1:15001/orders"]).await.unwrap();
    assert_eq!(status, 403);

    // The payments sidecar audited the denial with the peer's SPIFFE ID; orders audited its allows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let denied: Vec<Value> = audit(&net, "payments").into_iter().filter(|e| e["decision"] == "deny").collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["principal"], format!("Service::\"spiffe://{TD}/ns/shop/sa/frontend\""));
    let allowed: Vec<Value> = audit(&net, "orders").into_iter().filter(|e| e["decision"] == "allow").collect();
    assert_eq!(allowed.len(), 3, "{allowed:?}");
    assert_eq!(allowed[0]["policy_ids"], serde_json::json!(["mesh:0"]));

    // No SVID, a forged SVID (same SPIFFE ID, another CA): the handshake fails, nothing reaches the app.
    let orders_inbound = format!("https://{}:15443/orders", net.host_ip("orders"));
    assert_eq!(net.curl("frontend", &["-k", &orders_inbound]).await, None);
    let forged_ca = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let forged_issuer = rcgen::Issuer::new(ca_params, forged_ca);
    let forged_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names =
        vec![rcgen::SanType::URI(format!("spiffe://{TD}/ns/shop/sa/frontend").try_into().unwrap())];
    let forged = leaf.signed_by(&forged_key, &forged_issuer).unwrap();
    std::fs::write(net.path("forged.pem"), forged.pem()).unwrap();
    std::fs::write(net.path("forged.key"), forged_key.serialize_pem()).unwrap();
    let (fc, fk) = (net.path("forged.pem"), net.path("forged.key"));
    let forged_args = ["-k", "--cert", fc.to_str().unwrap(), "--key", fk.to_str().unwrap(), orders_inbound.as_str()];
    assert_eq!(net.curl("frontend", &forged_args).await, None);

    // Interop: an SVID for a key and CSR made by openssl works with curl and openssl s_client, parses with
    // Python `cryptography`, and stops working once expired.
    let (key, svid, bundle) = svid_by_openssl(&net, "interop", "frontend").await;
    let good = ["-k", "--cert", svid.to_str().unwrap(), "--key", key.to_str().unwrap(), orders_inbound.as_str()];
    let (status, body) = net.curl("frontend", &good).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let s_client = tokio::process::Command::new("ip")
        .args(["netns", "exec", &net.ns("frontend"), "openssl", "s_client", "-brief", "-verify_return_error"])
        .args(["-connect", &format!("{}:15443", net.host_ip("orders"))])
        .args(["-CAfile", bundle.to_str().unwrap(), "-cert", svid.to_str().unwrap(), "-key", key.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&s_client.stderr).into_owned() + &String::from_utf8_lossy(&s_client.stdout);
    assert!(text.contains("Verification: OK"), "openssl s_client did not verify the sidecar's SVID: {text}");
    let py = std::env::var("PALISADE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let uri = must(
        &py,
        &[
            "-c",
            "import sys; from cryptography import x509; c = x509.load_pem_x509_certificates(open(sys.argv[1],'rb').read())[0]; \
             san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value; \
             print(san.get_values_for_type(x509.UniformResourceIdentifier)); \
             print(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)",
            svid.to_str().unwrap(),
        ],
    );
    assert_eq!(uri, format!("['spiffe://{TD}/ns/shop/sa/frontend']\nFalse\n"));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(net.curl("frontend", &good).await, None, "an expired SVID was accepted");

    // Steady traffic for 3+ SVID lifetimes while the CA itself rotates: 0 failed requests.
    let start = Instant::now();
    let (mut ok, mut failed) = (0, Vec::new());
    let mut rotated = false;
    while start.elapsed() < Duration::from_secs(16) {
        if !rotated && start.elapsed() > Duration::from_secs(3) {
            ca(&net, &["rotate", "--activate-after", "3s"]);
            rotated = true;
        }
        let mut args = post.to_vec();
        args.push("http://127.0.0.1:15001/orders");
        match net.curl("frontend", &args).await {
            Some((201, _)) => ok += 1,
            other => failed.push((start.elapsed(), other)),
        }
    }
    assert!(failed.is_empty(), "{} failed of {}: {failed:?}", failed.len(), ok + failed.len());
    assert!(ok >= 50, "only {ok} requests in 16 s");
    let status = ca(&net, &["status"]);
    let cas = status["authorities"].as_array().unwrap();
    assert_eq!(cas.len(), 2, "{status}");
    let active = cas.iter().find(|c| c["state"] == "active").unwrap();
    assert!(active["svids_issued"].as_u64().unwrap() >= 3, "the new CA signed no SVIDs: {status}");
    for (host, _) in HOSTS {
        let log = net.log(&format!("{host}-sidecar"));
        assert!(!log.contains("\"level\":\"ERROR\""), "{host} sidecar logged an error:\n{log}");
    }
}
