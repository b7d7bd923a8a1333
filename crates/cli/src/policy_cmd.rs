//! `palisade policy check|explain|test|export` and `palisade apikey generate`: the authorization engine,
//! mesh policy export and API-key hashing from the command line, without a running gateway.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use palisade_policy::{Authorizer, AuthzRequest, PolicySource};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate Cedar policy files against Palisade's schema; errors name file:line:column
    Check {
        /// Policy files (.cedar)
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Decide one request and show the policies that decided it
    Explain {
        #[command(flatten)]
        source: PolicySet,
        /// `User::"alice"`, `Client::"billing"`, `Service::"spiffe://..."` or `anonymous`
        #[arg(long)]
        principal: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long)]
        path: String,
        /// Route name (the Cedar resource); default: the config route whose path prefix matches
        #[arg(long)]
        route: Option<String>,
        /// Token claims as a JSON object; `scope` and `roles` in it fill the scopes and roles too
        #[arg(long)]
        claims: Option<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: std::net::IpAddr,
    },
    /// Run a YAML table of requests and expected decisions; exit 1 on any mismatch
    Test {
        #[command(flatten)]
        source: PolicySet,
        /// The cases file
        cases: PathBuf,
    },
    /// Render a mesh policy (service-to-service allow-list) for another enforcement point
    Export {
        /// Output format
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Sidecar inbound (mTLS) port the NetworkPolicies open to allowed callers
        #[arg(long, default_value_t = palisade_policy::mesh::DEFAULT_SIDECAR_PORT,
              value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// For `--format cedar`: the SPIFFE ID of the sidecar whose policies to print
        #[arg(long, value_name = "SPIFFE_ID")]
        local: Option<String>,
        /// The mesh policy file (see crates/policy/tests/fixtures/mesh-policy.yaml)
        mesh: PathBuf,
    },
}

/// What `policy export` renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Kubernetes NetworkPolicies (networking.k8s.io/v1), L4 only: default-deny ingress per namespace
    /// plus one allow policy per called service
    #[value(name = "k8s-networkpolicy")]
    K8sNetworkPolicy,
    /// The Cedar policies one sidecar enforces (needs --local)
    #[value(name = "cedar")]
    Cedar,
}

/// Where the policies come from: a gateway config (its policy files and route shortcuts) or files.
#[derive(clap::Args)]
pub struct PolicySet {
    /// Gateway config whose `authorization.policies` and route `authz` sections are used
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Cedar policy files (in addition to the config's)
    #[arg(long = "policies", value_name = "FILE")]
    policies: Vec<PathBuf>,
}

fn read_sources(files: &[PathBuf]) -> anyhow::Result<Vec<PolicySource>> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            Ok(PolicySource { name: f.display().to_string(), text })
        })
        .collect()
}

struct Loaded {
    authz: Authorizer,
    /// (route name, path prefix) from the config, for choosing a route by path.
    routes: Vec<(String, Option<String>)>,
}

fn load(set: &PolicySet) -> anyhow::Result<Loaded> {
    let mut files = set.policies.clone();
    let mut rules = Vec::new();
    let mut routes = Vec::new();
    if let Some(cfg) = &set.config {
        let loaded = palisade_core::load_file(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let base = loaded.base_dir.clone();
        files.extend(loaded.config.authorization.policies.iter().map(|p| base.join(p)));
        rules = palisade_proxy::route_rules(&loaded.config);
        for r in &loaded.config.routes {
            let prefix = r.matches.path.as_ref().and_then(|p| p.prefix.clone().or_else(|| p.exact.clone()));
            routes.push((r.name.clone(), prefix));
        }
    } else if files.is_empty() {
        bail!("give --config FILE or --policies FILE");
    }
    let sources = read_sources(&files)?;
    let authz = Authorizer::compile(&sources, &rules)
        .map_err(|errs| anyhow::anyhow!("{}", errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    Ok(Loaded { authz, routes })
}

fn route_for(routes: &[(String, Option<String>)], path: &str) -> Option<String> {
    routes
        .iter()
        .find(|(_, p)| match p {
            None => true,
            Some(p) => p == "/" || path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/'))),
        })
        .map(|(n, _)| n.clone())
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn run(cmd: PolicyCommand) -> anyhow::Result<bool> {
    match cmd {
        PolicyCommand::Check { files } => {
            let sources = read_sources(&files)?;
            let errs = palisade_policy::check_files(&sources);
            for e in &errs {
                eprintln!("error: {e}");
            }
            if errs.is_empty() {
                for f in &files {
                    println!("{}: ok", f.display());
                }
            }
            Ok(errs.is_empty())
        }
        PolicyCommand::Explain { source, principal, method, path, route, claims, mut scopes, mut roles, client_ip } => {
            let l = load(&source)?;
            let principal = palisade_policy::parse_principal(&principal).map_err(|e| anyhow::anyhow!(e))?;
            let claims: Option<serde_json::Map<String, serde_json::Value>> = match claims {
                Some(c) => Some(serde_json::from_str(&c).context("--claims must be a JSON object")?),
                None => None,
            };
            if let Some(c) = &claims {
                scopes.extend(strings(c.get("scope").or_else(|| c.get("scp"))));
                roles.extend(strings(c.get("roles")));
            }
            let Some(route) = route.or_else(|| route_for(&l.routes, &path)) else {
                bail!("no route matches {path}: give --route NAME");
            };
            let authenticated = !matches!(principal, palisade_policy::Principal::Anonymous);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let client_id = claims.as_ref().and_then(|c| c.get("client_id")).and_then(|v| v.as_str());
            let issuer = claims.as_ref().and_then(|c| c.get("iss")).and_then(|v| v.as_str());
            let req = AuthzRequest {
                principal,
                method: &method,
                route: &route,
                path: &path,
                authenticated,
                scopes: &scopes,
                roles: &roles,
                client_id,
                issuer,
                claims: claims.as_ref(),
                client_ip,
                mtls_identity: None,
                now,
            };
            let e = l.authz.explain(&req);
            println!("route: {route}\n{e}");
            Ok(e.decision.allow)
        }
        PolicyCommand::Test { source, cases } => {
            let l = load(&source)?;
            let text = std::fs::read_to_string(&cases).with_context(|| format!("reading {}", cases.display()))?;
            let report =
                palisade_policy::run_cases(&l.authz, &text).map_err(|e| anyhow::anyhow!("{}: {e}", cases.display()))?;
            print!("{report}");
            Ok(report.ok())
        }
        PolicyCommand::Export { format, port, local, mesh } => {
            let policy = match palisade_policy::MeshPolicy::load(&mesh) {
                Ok(policy) => policy,
                Err(errs) => {
                    for e in &errs {
                        eprintln!("error: {e}");
                    }
                    return Ok(false);
                }
            };
            match format {
                ExportFormat::K8sNetworkPolicy => {
                    if local.is_some() {
                        bail!("--local only applies to --format cedar");
                    }
                    let export = policy.k8s_network_policies(port);
                    for s in &export.skipped {
                        eprintln!("warning: {s}");
                    }
                    print!("{}", export.yaml);
                }
                ExportFormat::Cedar => {
                    let Some(local) = local else {
                        bail!("--format cedar needs --local SPIFFE_ID (the sidecar's own identity)");
                    };
                    let local = palisade_core::SpiffeId::parse(&local).map_err(|e| anyhow::anyhow!("--local: {e}"))?;
                    print!("{}", policy.cedar_for(&local));
                }
            }
            Ok(true)
        }
    }
}

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Make a new random API key; prints the key once and the config entry holding its hash
    Generate {
        /// The client the key belongs to
        #[arg(long)]
        client: String,
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
}

#[allow(clippy::print_stdout)]
pub fn run_apikey(cmd: ApiKeyCommand) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCommand::Generate { client, scopes } => {
            let (key, hash) = palisade_authn::generate_api_key()?;
            let scopes = serde_json::to_string(&scopes).unwrap_or_else(|_| "[]".into());
            let client = serde_json::to_string(&client).unwrap_or_default();
            println!("key: {key}");
            println!("# give the key to the client (it is not stored anywhere); add this under authentication.api_keys.keys:");
            println!("- {{ client: {client}, hash: \"{hash}\", scopes: {scopes} }}");
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: PolicyCommand,
    }

    fn parse(args: &[&str]) -> Result<PolicyCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("policy").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn export_arguments() {
        let Ok(PolicyCommand::Export { format, port, local, mesh }) =
            parse(&["export", "--format", "k8s-networkpolicy", "mesh.yaml"])
        else {
            panic!("export not parsed");
        };
        assert_eq!(
            (format, port, local, mesh),
            (ExportFormat::K8sNetworkPolicy, 15443, None, PathBuf::from("mesh.yaml"))
        );
        let Ok(PolicyCommand::Export { format, port, local, .. }) =
            parse(&["export", "--format", "cedar", "--port", "8443", "--local", "spiffe://td/x", "m.yaml"])
        else {
            panic!("export not parsed");
        };
        assert_eq!((format, port, local.as_deref()), (ExportFormat::Cedar, 8443, Some("spiffe://td/x")));
    }

    #[test]
    fn export_rejects_unknown_formats_and_bad_ports_with_exit_code_2() {
        let Err(e) = parse(&["export", "--format", "istio", "mesh.yaml"]) else { panic!("istio accepted") };
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(text.contains("invalid value 'istio' for '--format <FORMAT>'"), "{text}");
        assert!(text.contains("[possible values: k8s-networkpolicy, cedar]"), "{text}");
        for port in ["0", "65536", "x"] {
            let Err(e) = parse(&["export", "--format", "k8s-networkpolicy", "--port", port, "m.yaml"]) else {
                panic!("port {port} accepted")
            };
            assert_eq!(e.exit_code(), 2, "{port}");
        }
        let Err(e) = parse(&["export", "mesh.yaml"]) else { panic!("missing --format accepted") };
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn export_runs_on_the_example() {
        let mesh = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/fixtures/mesh-policy.yaml");
        let cmd = PolicyCommand::Export { format: ExportFormat::K8sNetworkPolicy, port: 15443, local: None, mesh };
        assert!(run(cmd).unwrap());
        let bad = PolicyCommand::Export {
            format: ExportFormat::K8sNetworkPolicy,
            port: 15443,
            local: None,
            mesh: PathBuf::from("/nonexistent/mesh.yaml"),
        };
        assert!(!run(bad).unwrap());
    }
}
