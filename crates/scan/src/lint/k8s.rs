//! Kubernetes manifest rules (`PAL-K8S-…`) over the pod spec of Pod, Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, ReplicationController, Job and CronJob objects, in multi-document streams, `List` objects and
//! Helm-rendered output (whose `# Source:` comment names the template). A container setting overrides the
//! pod's, as in the kubelet; a missing setting is reported on the container's (or pod spec's) line.

use super::yaml::{parse_stream, Node};
use super::{finding, image_tag_problem, is_secret_name, Misconfiguration};

const DANGEROUS_CAPS: [&str; 7] = ["ALL", "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE", "NET_RAW", "BPF"];

/// Lints every Kubernetes object in a YAML stream; other YAML documents are ignored.
pub(crate) fn lint(file: &str, text: &str) -> Result<Vec<Misconfiguration>, String> {
    let docs = parse_stream(text)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for doc in &docs {
        let source = helm_source(&lines, doc.root.line());
        lint_object(file, &doc.root, source.as_deref(), &mut out, 0);
    }
    out.sort_by(|a, b| a.line.cmp(&b.line).then_with(|| a.rule_id.cmp(&b.rule_id)));
    Ok(out)
}

/// The `# Source: <template>` comment Helm puts between `---` and the object.
fn helm_source(lines: &[&str], root_line: usize) -> Option<String> {
    let mut i = root_line.checked_sub(1)?;
    while i > 0 {
        i -= 1;
        let t = lines.get(i)?.trim();
        if let Some(src) = t.strip_prefix("# Source:") {
            return Some(src.trim().to_owned());
        }
        if !(t.is_empty() || t.starts_with('#')) {
            return None;
        }
    }
    None
}

fn lint_object(file: &str, obj: &Node, source: Option<&str>, out: &mut Vec<Misconfiguration>, depth: usize) {
    let kind = obj.get("kind").and_then(|(n, _)| n.as_str()).unwrap_or_default();
    if obj.get("apiVersion").is_none() {
        return;
    }
    if kind == "List" && depth == 0 {
        for item in obj.get("items").map(|(n, _)| n.items()).unwrap_or_default() {
            lint_object(file, item, source, out, depth + 1);
        }
        return;
    }
    let path: &[&str] = match kind {
        "Pod" => &["spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            &["spec", "template", "spec"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return,
    };
    let name = obj.path(&["metadata", "name"]).and_then(|(n, _)| n.as_str()).unwrap_or("<unnamed>");
    let resource = match source {
        Some(s) => format!("{kind}/{name} ({s})"),
        None => format!("{kind}/{name}"),
    };
    if let Some((spec, line)) = obj.path(path).filter(|(n, _)| n.is_map()) {
        Pod { file, resource: &resource, spec, line, out }.check();
    }
}

struct Pod<'a> {
    file: &'a str,
    resource: &'a str,
    spec: &'a Node,
    /// Line of the pod spec's key.
    line: usize,
    out: &'a mut Vec<Misconfiguration>,
}

impl Pod<'_> {
    fn push(&mut self, id: &str, line: usize, msg: String) {
        self.out.push(finding(id, self.file, line, self.resource, msg));
    }

    fn check(&mut self) {
        let spec = self.spec;
        for (key, id) in [("hostNetwork", "PAL-K8S-007"), ("hostPID", "PAL-K8S-008"), ("hostIPC", "PAL-K8S-009")] {
            if let Some((n, l)) = spec.get(key) {
                if n.as_bool() == Some(true) {
                    self.push(id, l, format!("{key}: true"));
                }
            }
        }
        for v in spec.get("volumes").map(|(n, _)| n.items()).unwrap_or_default() {
            if let Some((hp, l)) = v.get("hostPath") {
                let vname = v.get("name").and_then(|(n, _)| n.as_str()).unwrap_or("?");
                let p = hp.get("path").and_then(|(n, _)| n.as_str()).unwrap_or("?");
                self.push("PAL-K8S-010", l, format!("volume {vname:?} mounts host path {p}"));
            }
        }
        match spec.get("automountServiceAccountToken") {
            Some((n, _)) if n.as_bool() == Some(false) => {}
            Some((_, l)) => self.push("PAL-K8S-013", l, "automountServiceAccountToken is not false".into()),
            None => {
                self.push("PAL-K8S-013", self.line, "automountServiceAccountToken is not set (defaults to true)".into())
            }
        }
        let pod_sc = spec.get("securityContext").map(|(n, _)| n);
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for c in spec.get(list).map(|(n, _)| n.items()).unwrap_or_default() {
                self.container(c, pod_sc);
            }
        }
    }

    fn container(&mut self, c: &Node, pod_sc: Option<&Node>) {
        let cname = c.get("name").and_then(|(n, _)| n.as_str()).unwrap_or("?").to_owned();
        let cline = c.line();
        let sc = c.get("securityContext").map(|(n, _)| n);
        let key = |k: &[&str]| sc.and_then(|s| s.path(k));
        let pod_key = |k: &[&str]| pod_sc.and_then(|s| s.path(k));
        let who = format!("container {cname:?}");

        if let Some((img, l)) = c.get("image") {
            if let Some(problem) = img.as_str().and_then(image_tag_problem) {
                self.push("PAL-K8S-012", l, format!("{who}: image {problem}"));
            }
        }
        if let Some((n, l)) = key(&["privileged"]) {
            if n.as_bool() == Some(true) {
                self.push("PAL-K8S-001", l, format!("{who} is privileged"));
            }
        }
        match key(&["allowPrivilegeEscalation"]) {
            Some((n, _)) if n.as_bool() == Some(false) => {}
            Some((_, l)) => self.push("PAL-K8S-002", l, format!("{who}: allowPrivilegeEscalation is not false")),
            None => self.push("PAL-K8S-002", cline, format!("{who}: allowPrivilegeEscalation is not set")),
        }
        match key(&["runAsNonRoot"]).or_else(|| pod_key(&["runAsNonRoot"])) {
            Some((n, _)) if n.as_bool() == Some(true) => {}
            Some((_, l)) => self.push("PAL-K8S-003", l, format!("{who}: runAsNonRoot is not true")),
            None => self.push("PAL-K8S-003", cline, format!("{who}: runAsNonRoot is not set")),
        }
        match key(&["readOnlyRootFilesystem"]) {
            Some((n, _)) if n.as_bool() == Some(true) => {}
            Some((_, l)) => self.push("PAL-K8S-004", l, format!("{who}: readOnlyRootFilesystem is not true")),
            None => self.push("PAL-K8S-004", cline, format!("{who}: readOnlyRootFilesystem is not set")),
        }
        let drops_all = key(&["capabilities", "drop"])
            .is_some_and(|(n, _)| n.items().iter().any(|d| d.as_str().is_some_and(|s| s.eq_ignore_ascii_case("ALL"))));
        if !drops_all {
            let l = key(&["capabilities"]).map(|(_, l)| l).unwrap_or(cline);
            self.push("PAL-K8S-005", l, format!("{who} does not drop ALL capabilities"));
        }
        for cap in key(&["capabilities", "add"]).map(|(n, _)| n.items()).unwrap_or_default() {
            let Some(s) = cap.as_str() else { continue };
            let norm = s.trim_start_matches("CAP_").to_ascii_uppercase();
            if DANGEROUS_CAPS.contains(&norm.as_str()) {
                self.push("PAL-K8S-006", cap.line(), format!("{who} adds capability {s}"));
            }
        }
        let limits = c.path(&["resources", "limits"]);
        let missing: Vec<&str> =
            ["cpu", "memory"].into_iter().filter(|k| limits.and_then(|(n, _)| n.get(k)).is_none()).collect();
        if !missing.is_empty() {
            let l = limits.map(|(_, l)| l).unwrap_or(cline);
            self.push("PAL-K8S-011", l, format!("{who} has no {} limit", missing.join(" or ")));
        }
        let seccomp = key(&["seccompProfile", "type"]).or_else(|| pod_key(&["seccompProfile", "type"]));
        match seccomp {
            Some((n, _)) if matches!(n.as_str(), Some("RuntimeDefault" | "Localhost")) => {}
            Some((n, l)) => {
                let t = n.as_str().unwrap_or("?");
                self.push("PAL-K8S-014", l, format!("{who}: seccompProfile type is {t}"));
            }
            None => self.push("PAL-K8S-014", cline, format!("{who}: no seccompProfile (pod or container)")),
        }
        for e in c.get("env").map(|(n, _)| n.items()).unwrap_or_default() {
            let Some(name) = e.get("name").and_then(|(n, _)| n.as_str()) else { continue };
            if let Some((v, l)) = e.get("value") {
                if v.as_str().is_some_and(|s| !s.is_empty()) && is_secret_name(name) {
                    self.push("PAL-K8S-015", l, format!("{who}: env {name} has a literal value"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<(String, usize)> {
        lint("x.yaml", text).unwrap_or_default().into_iter().map(|f| (f.rule_id, f.line)).collect()
    }

    const HARDENED_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: ok
spec:
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: app
      image: ghcr.io/x/app:1.2.3
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: [ALL]
      resources:
        limits: {cpu: 500m, memory: 128Mi}
      env:
        - name: DB_PASSWORD
          valueFrom:
            secretKeyRef: {name: db, key: password}
";

    #[test]
    fn hardened_pod_passes() {
        assert_eq!(ids(HARDENED_POD), []);
    }

    #[test]
    fn bad_deployment_every_rule() {
        let text = "# Source: chart/templates/web.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      hostNetwork: true
      hostPID: true
      hostIPC: true
      automountServiceAccountToken: true
      volumes:
        - name: docker
          hostPath:
            path: /var/run/docker.sock
      containers:
        - name: app
          image: nginx
          securityContext:
            privileged: true
            allowPrivilegeEscalation: true
            runAsNonRoot: false
            readOnlyRootFilesystem: false
            seccompProfile:
              type: Unconfined
            capabilities:
              add: [SYS_ADMIN, CHOWN]
          resources:
            limits:
              memory: 1Gi
          env:
            - name: API_TOKEN
              value: abc123
            - name: LOG_LEVEL
              value: debug
";
        let expect = [
            ("PAL-K8S-007", 9),
            ("PAL-K8S-008", 10),
            ("PAL-K8S-009", 11),
            ("PAL-K8S-013", 12),
            ("PAL-K8S-010", 15),
            ("PAL-K8S-012", 19),
            ("PAL-K8S-001", 21),
            ("PAL-K8S-002", 22),
            ("PAL-K8S-003", 23),
            ("PAL-K8S-004", 24),
            ("PAL-K8S-014", 26),
            ("PAL-K8S-005", 27),
            ("PAL-K8S-006", 28),
            ("PAL-K8S-011", 30),
            ("PAL-K8S-015", 34),
        ];
        assert_eq!(ids(text), expect.map(|(i, l)| (i.to_owned(), l)));
        let f = lint("x.yaml", text).unwrap_or_default();
        assert_eq!(f[0].resource, "Deployment/web (chart/templates/web.yaml)");
        let lim = f.iter().find(|f| f.rule_id == "PAL-K8S-011").map(|f| f.message.as_str());
        assert_eq!(lim, Some("container \"app\" has no cpu limit"));
    }

    #[test]
    fn multi_doc_helm_cronjob_and_list() {
        let cron = "---\n# Source: c/templates/cron.yaml\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\n\
                    spec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n\
                    \x20           - name: j\n              image: busybox:latest\n";
        let text = format!("{HARDENED_POD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{cron}");
        let got = lint("x.yaml", &text).unwrap_or_default();
        let want: Vec<&str> = vec![
            "PAL-K8S-013",
            "PAL-K8S-002",
            "PAL-K8S-003",
            "PAL-K8S-004",
            "PAL-K8S-005",
            "PAL-K8S-011",
            "PAL-K8S-014",
            "PAL-K8S-012",
        ];
        let mut got_ids: Vec<&str> = got.iter().map(|f| f.rule_id.as_str()).collect();
        got_ids.sort_unstable();
        let mut want_sorted = want.clone();
        want_sorted.sort_unstable();
        assert_eq!(got_ids, want_sorted);
        assert!(got.iter().all(|f| f.resource == "CronJob/c (c/templates/cron.yaml)"));
        // The image line: 24 lines of the pod, 4 of the ConfigMap, `---`, then line 13 of the CronJob text.
        let img = got.iter().find(|f| f.rule_id == "PAL-K8S-012").map(|f| f.line);
        assert_eq!(img, Some(24 + 5 + 13));

        let list = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: p}\n\
                    \x20   spec:\n      hostPID: true\n";
        let ids_list: Vec<String> = lint("l.yaml", list).unwrap_or_default().into_iter().map(|f| f.rule_id).collect();
        assert_eq!(ids_list, ["PAL-K8S-013", "PAL-K8S-008"]);
    }

    #[test]
    fn invalid_yaml_is_an_error() {
        assert!(lint("x.yaml", "a: [1, 2\nb: {{ .Values.x }}\n").is_err());
        assert_eq!(ids("just: data\n"), []);
    }
}
