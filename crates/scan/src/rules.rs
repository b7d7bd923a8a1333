//! The catalog of Palisade's own rules (config lint and secrets): id, severity, a one-line why and a fix.
//! Ids are stable once published (`PAL-DF-…` Dockerfile, `PAL-K8S-…` Kubernetes, `PAL-SEC-…` secrets);
//! findings carry the id and copy the text, so reports stay readable without this table.

use crate::cvss::Severity;

/// One rule of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleInfo {
    /// Stable id, e.g. `PAL-K8S-001`.
    pub id: &'static str,
    /// Severity of every finding of the rule.
    pub severity: Severity,
    /// Short title.
    pub title: &'static str,
    /// Why it matters, one line.
    pub why: &'static str,
    /// How to fix it, one line.
    pub fix: &'static str,
}

const fn r(
    id: &'static str,
    severity: Severity,
    title: &'static str,
    why: &'static str,
    fix: &'static str,
) -> RuleInfo {
    RuleInfo { id, severity, title, why, fix }
}

use Severity::{Critical, High, Low, Medium};

/// Every rule, Dockerfile first, then Kubernetes, then secrets.
#[rustfmt::skip]
pub const RULES: &[RuleInfo] = &[
    r("PAL-DF-001", High, "Image runs as root (no USER)",
      "Without USER the container's processes run as root, so any exploit starts with root in the container.",
      "Add `USER <non-root uid>` (e.g. `USER 10001`) to the final stage."),
    r("PAL-DF-002", High, "USER is root",
      "`USER root` (or uid 0) as the last user makes the container run as root.",
      "Switch to a non-root user after the steps that need root: `USER 10001`."),
    r("PAL-DF-003", Medium, "Base image uses `latest` or no tag",
      "A moving tag makes builds unreproducible and can silently pull a different, unreviewed image.",
      "Pin the base image to a version tag and preferably a digest: `FROM debian:12.5@sha256:…`."),
    r("PAL-DF-004", Medium, "ADD fetches a URL",
      "ADD downloads without checksum verification, so a compromised or changed remote file enters the image.",
      "Download with curl and verify a checksum in a RUN step, or use `ADD --checksum=sha256:…`."),
    r("PAL-DF-005", High, "Secret in ENV or ARG",
      "ENV and ARG values are stored in the image config and history, readable by anyone who can pull the image.",
      "Pass secrets at build time with `RUN --mount=type=secret` and at run time from a secret store."),
    r("PAL-DF-006", High, "Remote script piped to a shell",
      "`curl … | sh` runs whatever the server returns at build time, unverified.",
      "Download to a file, verify its checksum or signature, then run it."),
    r("PAL-DF-007", Low, "No HEALTHCHECK",
      "Without a health check the runtime cannot tell a hung container from a healthy one.",
      "Add `HEALTHCHECK CMD <probe>` (or rely on orchestrator probes and add `HEALTHCHECK NONE` to say so)."),
    r("PAL-DF-008", Low, "apt-get install without --no-install-recommends",
      "Recommended packages enlarge the image and its attack surface with software nobody asked for.",
      "Use `apt-get install -y --no-install-recommends …`."),
    r("PAL-DF-009", Low, "apt lists not removed in the same RUN",
      "Package lists left in a layer bloat the image and go stale; removing them in a later RUN does not shrink it.",
      "End the RUN that installs with `&& rm -rf /var/lib/apt/lists/*`."),
    r("PAL-DF-010", Medium, "sudo in RUN",
      "Build steps already run as the current USER; sudo in an image means a setuid path to root at run time.",
      "Drop sudo: run root steps before `USER`, and do not install sudo in the image."),
    r("PAL-DF-011", Low, "apk add without --no-cache",
      "The apk index cache stays in the layer, enlarging the image.",
      "Use `apk add --no-cache …`."),
    r("PAL-K8S-001", Critical, "Privileged container",
      "A privileged container has all capabilities and the host's devices: escaping to the node is trivial.",
      "Remove `privileged: true`; grant only the specific capability needed."),
    r("PAL-K8S-002", Medium, "allowPrivilegeEscalation not false",
      "Unless disabled, setuid binaries and file capabilities can raise a process's privileges.",
      "Set `securityContext.allowPrivilegeEscalation: false` on every container."),
    r("PAL-K8S-003", Medium, "runAsNonRoot not true",
      "Without runAsNonRoot the kubelet lets an image run as root.",
      "Set `securityContext.runAsNonRoot: true` (pod or container) and a non-zero `runAsUser`."),
    r("PAL-K8S-004", Medium, "readOnlyRootFilesystem not true",
      "A writable root filesystem lets an attacker drop tools and persist changes in the container.",
      "Set `securityContext.readOnlyRootFilesystem: true`; mount an emptyDir where writes are needed."),
    r("PAL-K8S-005", Medium, "Capabilities not dropped",
      "Containers get a default set of Linux capabilities (NET_RAW, CHOWN, …) that most services never use.",
      "Set `securityContext.capabilities.drop: [ALL]` and add back only what is needed."),
    r("PAL-K8S-006", High, "Dangerous capability added",
      "SYS_ADMIN, NET_ADMIN, SYS_PTRACE, SYS_MODULE, NET_RAW or ALL give near-root power over the node or the network.",
      "Remove the capability from `capabilities.add`."),
    r("PAL-K8S-007", High, "hostNetwork",
      "The pod shares the node's network namespace: it can reach node-local services and sniff host traffic.",
      "Remove `hostNetwork: true`; expose ports through a Service."),
    r("PAL-K8S-008", High, "hostPID",
      "The pod sees and can signal every process on the node.",
      "Remove `hostPID: true`."),
    r("PAL-K8S-009", High, "hostIPC",
      "The pod shares the node's IPC namespace and can read other processes' shared memory.",
      "Remove `hostIPC: true`."),
    r("PAL-K8S-010", High, "hostPath volume",
      "A hostPath volume exposes the node's filesystem to the pod (container runtime socket, kubelet credentials).",
      "Use emptyDir, a ConfigMap/Secret, or a PersistentVolumeClaim instead."),
    r("PAL-K8S-011", Low, "Missing resource limits",
      "Without CPU and memory limits one container can starve every other pod on the node.",
      "Set `resources.limits.cpu` and `resources.limits.memory` (and requests)."),
    r("PAL-K8S-012", Medium, "Image uses `latest` or no tag",
      "A moving tag means the running image can change on any restart, unreviewed.",
      "Pin the image to a version tag and preferably a digest: `image: repo/app:1.4.2@sha256:…`."),
    r("PAL-K8S-013", Low, "Service account token mounted",
      "The API token is mounted into every container; a compromise gives the attacker the pod's API rights.",
      "Set `automountServiceAccountToken: false` in the pod spec unless the pod calls the Kubernetes API."),
    r("PAL-K8S-014", Low, "No seccomp profile",
      "Without a seccomp profile every syscall is allowed, including rarely used ones with kernel exploits.",
      "Set `securityContext.seccompProfile.type: RuntimeDefault` on the pod."),
    r("PAL-K8S-015", High, "Secret in an env literal",
      "A secret written as a literal env value is stored in the manifest, in git and in the API object.",
      "Use `valueFrom.secretKeyRef` to read it from a Secret."),
    r("PAL-SEC-001", Critical, "Private key",
      "A private key in a file or image can be copied by anyone who can read it.",
      "Remove the key, rotate it, and load it at run time from a secret store or a mounted Secret."),
    r("PAL-SEC-002", Critical, "AWS access key id",
      "An AWS access key id, usually next to its secret, gives API access to the account.",
      "Deactivate and rotate the key in IAM; use instance or workload roles instead of static keys."),
    r("PAL-SEC-003", Critical, "AWS secret access key",
      "The secret half of an AWS access key signs API requests as its owner.",
      "Deactivate and rotate the key in IAM; use instance or workload roles instead of static keys."),
    r("PAL-SEC-004", Critical, "GCP service-account key",
      "A service-account JSON key authenticates as that account until the key is deleted.",
      "Delete the key in IAM; use workload identity instead of key files."),
    r("PAL-SEC-005", High, "GitHub token",
      "A GitHub token acts as its owner on repositories and the API.",
      "Revoke the token on GitHub and read it from a secret store at run time."),
    r("PAL-SEC-006", High, "GitLab token",
      "A GitLab personal access token acts as its owner.",
      "Revoke the token in GitLab and read it from a secret store at run time."),
    r("PAL-SEC-007", High, "Slack token",
      "A Slack bot, user or app token reads and posts as its owner.",
      "Revoke the token in Slack's app settings and read it from a secret store."),
    r("PAL-SEC-008", Medium, "Slack webhook URL",
      "Anyone with an incoming-webhook URL can post into the channel.",
      "Regenerate the webhook in Slack and keep the URL in a secret store."),
    r("PAL-SEC-009", Medium, "JSON Web Token",
      "A JWT is a bearer credential until it expires; checked-in tokens are often long-lived.",
      "Remove the token and revoke its session or signing key if it is still valid."),
    r("PAL-SEC-010", High, "Hard-coded secret",
      "A password, API key or token assigned as a literal ends up in git history and in images.",
      "Read the value from the environment or a secret store; rotate the exposed value."),
];

/// The catalog entry for `id`.
pub fn rule(id: &str) -> Option<&'static RuleInfo> {
    RULES.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_unique_and_texts_one_line() {
        let mut ids: Vec<&str> = RULES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
        assert_eq!(RULES.len(), 11 + 15 + 10);
        for r in RULES {
            assert!(!r.why.contains('\n') && !r.fix.contains('\n') && !r.why.is_empty(), "{}", r.id);
        }
        assert_eq!(rule("PAL-K8S-001").map(|r| r.severity), Some(Severity::Critical));
        assert!(rule("PAL-XX-000").is_none());
    }
}
