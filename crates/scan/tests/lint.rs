//! Config lint end to end: the repository's own `deploy/` manifests pass with zero findings; a tree with a
//! Dockerfile, Helm-rendered output, a Helm template source and unrelated YAML gives exactly the expected
//! findings and notes.

// Fixture builders are test code too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use palisade_scan::{build_report, scan_content, ContentOptions, Inventory, Target, TargetKind};

#[test]
fn deploy_manifests_pass_our_own_lint() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let c = scan_content(&deploy, &ContentOptions::config_only(), &mut |_| {}).unwrap();
    let found: Vec<String> =
        c.misconfigurations.iter().map(|m| format!("{}:{} {} {}", m.file, m.line, m.rule_id, m.message)).collect();
    assert_eq!(found, Vec::<String>::new());
    assert_eq!(c.notes, Vec::<String>::new());
    // namespace, server, gateway, sidecar example (README.md is not a config file).
    assert_eq!(c.files_scanned, 4);
    // And no secrets either.
    let s = scan_content(&deploy, &ContentOptions::secrets_only(), &mut |_| {}).unwrap();
    assert_eq!(s.secrets, []);
}

const DOCKERFILE: &str = "FROM node:20 AS build\n\
RUN npm ci\n\
FROM gcr.io/distroless/nodejs20-debian12:nonroot\n\
COPY --from=build /app /app\n\
USER 65532\n";

const HELM_RENDERED: &str = "---
# Source: web/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
---
# Source: web/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: web
          image: \"example/web:1.0.0\"
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [\"ALL\"]
          resources:
            limits:
              cpu: 100m
              memory: 64Mi
      initContainers:
        - name: migrate
          image: example/migrate
          securityContext:
            privileged: true
";

#[test]
fn tree_with_dockerfile_helm_output_and_templates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::create_dir_all(root.join("rendered")).unwrap();
    std::fs::write(root.join("rendered/all.yaml"), HELM_RENDERED).unwrap();
    std::fs::create_dir_all(root.join("chart/templates")).unwrap();
    std::fs::write(
        root.join("chart/templates/deployment.yaml"),
        "{{- if .Values.enabled }}\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n{{- end }}\n",
    )
    .unwrap();
    std::fs::write(root.join("values.yml"), "replicas: 2\nimage: nginx\n").unwrap();
    std::fs::write(root.join("README.md"), "FROM ubuntu\n").unwrap();

    let mut calls = Vec::new();
    let c = scan_content(root, &ContentOptions::config_only(), &mut |n| calls.push(n)).unwrap();
    assert_eq!(c.files_scanned, 4);
    assert_eq!(calls, [1, 2, 3, 4]);
    let got: Vec<(String, usize, String)> =
        c.misconfigurations.iter().map(|m| (m.file.clone(), m.line, m.rule_id.clone())).collect();
    let want: Vec<(String, usize, String)> = [
        ("Dockerfile", 3, "PAL-DF-007"),
        ("rendered/all.yaml", 34, "PAL-K8S-002"),
        ("rendered/all.yaml", 34, "PAL-K8S-004"),
        ("rendered/all.yaml", 34, "PAL-K8S-005"),
        ("rendered/all.yaml", 34, "PAL-K8S-011"),
        ("rendered/all.yaml", 35, "PAL-K8S-012"),
        ("rendered/all.yaml", 37, "PAL-K8S-001"),
    ]
    .iter()
    .map(|(f, l, r)| ((*f).to_owned(), *l, (*r).to_owned()))
    .collect();
    assert_eq!(got, want);
    let priv_ = c.misconfigurations.iter().find(|m| m.rule_id == "PAL-K8S-001").unwrap();
    assert_eq!(priv_.resource, "Deployment/web (web/templates/deployment.yaml)");
    assert_eq!(priv_.message, "container \"migrate\" is privileged");
    assert_eq!(priv_.title, "Privileged container");
    assert!(priv_.fix.starts_with("Remove `privileged: true`"));
    assert_eq!(c.notes.len(), 1);
    assert!(c.notes[0].starts_with("chart/templates/deployment.yaml: not valid YAML, not linted"), "{}", c.notes[0]);

    // The table groups the target's misconfigurations, most severe first, and prints each rule's fix once.
    let t = Target::new(root.display().to_string(), TargetKind::Config, Inventory::default()).with_content(c);
    let report = build_report(vec![t], None);
    assert_eq!(report.exit_code(palisade_scan::parse_severity("critical")), 1);
    assert_eq!(report.exit_code(None), 0);
    let table = report.render_table(false);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], format!("{} (config): 4 files, 7 misconfigurations, 0 secrets", root.display()));
    assert_eq!(lines[1], "  misconfigurations:");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["SEVERITY", "RULE", "LOCATION", "RESOURCE", "MESSAGE"]
    );
    assert!(lines[3].starts_with("  CRITICAL  PAL-K8S-001  rendered/all.yaml:37"), "{}", lines[3]);
    assert!(lines[9].starts_with("  LOW       PAL-K8S-011  rendered/all.yaml:34"), "{}", lines[9]);
    assert!(table.contains("  PAL-DF-007 No HEALTHCHECK: Without a health check"));
    assert_eq!(table.matches("PAL-K8S-001 Privileged container:").count(), 1);
}

#[test]
fn single_file_keeps_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("api.Dockerfile");
    std::fs::write(&f, "FROM debian\nUSER 1000\nHEALTHCHECK NONE\n").unwrap();
    let c = scan_content(&f, &ContentOptions::config_only(), &mut |_| {}).unwrap();
    assert_eq!(c.misconfigurations.len(), 1);
    assert_eq!(c.misconfigurations[0].file, f.display().to_string());
    assert_eq!(c.misconfigurations[0].message, "base image debian has no tag (means `latest`)");
}
