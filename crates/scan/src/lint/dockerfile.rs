//! Dockerfile rules (`PAL-DF-…`). The file is split into logical instructions (escape-char continuations,
//! the `# escape=` directive, heredocs) that keep their first line; stages are tracked so USER and
//! HEALTHCHECK are judged on the final stage, including what it inherits from a named parent stage.

use std::collections::BTreeMap;

use super::{finding, image_tag_problem, is_secret_name, Misconfiguration};

struct Instr {
    line: usize,
    cmd: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instr> {
    let mut escape = '\\';
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut in_directives = true;
    while let Some((idx, raw)) = lines.next() {
        let trimmed = raw.trim();
        if in_directives {
            if let Some(d) = trimmed.strip_prefix('#') {
                if let Some((k, v)) = d.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("escape") && v.trim() == "`" {
                        escape = '`';
                    }
                    continue;
                }
            }
            in_directives = false;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut text = String::new();
        let mut cur = raw.trim_end().to_owned();
        loop {
            match cur.strip_suffix(escape) {
                Some(rest) => {
                    text.push_str(rest);
                    text.push(' ');
                    // Continuation lines may hold comments and blank lines; neither ends the instruction.
                    let mut next = None;
                    for (_, l) in lines.by_ref() {
                        let t = l.trim();
                        if t.is_empty() || t.starts_with('#') {
                            continue;
                        }
                        next = Some(l.trim_end().to_owned());
                        break;
                    }
                    match next {
                        Some(n) => cur = n,
                        None => break,
                    }
                }
                None => {
                    text.push_str(&cur);
                    break;
                }
            }
        }
        // Heredocs: `RUN <<EOF` … `EOF` (also `<<-EOF`, quoted delimiters); their bodies join the instruction.
        let delims: Vec<String> = heredoc_delims(&text);
        for delim in delims {
            for (_, l) in lines.by_ref() {
                let t = l.trim();
                if t == delim {
                    break;
                }
                text.push('\n');
                text.push_str(l);
            }
        }
        let t = text.trim_start();
        let (cmd, args) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        out.push(Instr { line: idx + 1, cmd: cmd.to_ascii_uppercase(), args: args.trim().to_owned() });
    }
    out
}

fn heredoc_delims(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("<<") {
        let after = rest.get(i + 2..).unwrap_or_default();
        let after = after.strip_prefix('-').unwrap_or(after);
        let word: String = after
            .trim_start_matches(['"', '\''])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !word.is_empty() && word.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            out.push(word);
        }
        rest = after;
    }
    out
}

/// Splits shell text into simple commands at `&&`, `||`, `;`, `|` and newlines.
fn segments(run: &str) -> Vec<&str> {
    run.split(['&', '|', ';', '\n']).map(str::trim).filter(|s| !s.is_empty()).collect()
}

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// `apt-get install`/`apt install` in one simple command (flags may come before `install`).
fn is_apt_install(seg: &str) -> bool {
    let w = words(seg);
    let start = w.iter().position(|x| *x == "apt-get" || *x == "apt");
    start.is_some_and(|s| w.iter().skip(s + 1).any(|x| *x == "install"))
}

fn is_apk_add(seg: &str) -> bool {
    let w = words(seg);
    w.windows(2).any(|p| p.first() == Some(&"apk") && p.get(1) == Some(&"add"))
}

fn pipes_to_shell(run: &str) -> bool {
    // `curl … | sh`, `wget -O- … | sudo bash -s`, `sh -c "$(curl …)"`, `bash <(curl …)`.
    let shells = ["sh", "bash", "zsh", "dash", "ksh", "ash"];
    for part in run.split(['\n', ';']).flat_map(|p| p.split("&&")) {
        let stages: Vec<&str> = part.split('|').map(str::trim).collect();
        let mut fetched = false;
        for st in &stages {
            let w = words(st);
            let first = w.iter().find(|x| **x != "sudo" && !x.starts_with('-')).copied().unwrap_or_default();
            if fetched && shells.contains(&first.rsplit('/').next().unwrap_or(first)) {
                return true;
            }
            if w.iter().any(|x| *x == "curl" || *x == "wget" || x.ends_with("/curl") || x.ends_with("/wget")) {
                fetched = true;
            }
        }
        let p = part.replace(' ', "");
        if shells.iter().any(|s| {
            p.contains(&format!("{s}-c\"$(curl"))
                || p.contains(&format!("{s}-c\"$(wget"))
                || p.contains(&format!("{s}<(curl"))
                || p.contains(&format!("{s}<(wget"))
        }) {
            return true;
        }
    }
    false
}

/// Names set by `ENV a=b c=d`, `ENV a b`, `ARG a`, `ARG a=b c`.
fn declared_names(cmd: &str, args: &str) -> Vec<String> {
    let toks = words(args);
    if cmd == "ENV" && toks.first().is_some_and(|t| !t.contains('=')) {
        return toks.first().map(|t| vec![(*t).to_owned()]).unwrap_or_default();
    }
    toks.iter()
        .filter(|t| !t.starts_with('"') && !t.starts_with('\''))
        .filter_map(|t| {
            let name = t.split('=').next().unwrap_or_default();
            let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            ok.then(|| name.to_owned())
        })
        .collect()
}

#[derive(Clone, Default)]
struct Stage {
    from_line: usize,
    image: String,
    user: Option<(String, usize)>,
    healthcheck: bool,
}

fn check_base(
    file: &str,
    line: usize,
    image: &str,
    stages: &BTreeMap<String, Stage>,
    args: &BTreeMap<String, String>,
) -> Option<Misconfiguration> {
    let mut img = image.to_owned();
    for (k, v) in args {
        img = img.replace(&format!("${{{k}}}"), v).replace(&format!("${k}"), v);
    }
    if img.contains('$') || img.eq_ignore_ascii_case("scratch") || stages.contains_key(&img.to_ascii_lowercase()) {
        return None;
    }
    let msg = format!("base image {}", image_tag_problem(&img)?);
    Some(finding("PAL-DF-003", file, line, &format!("FROM {image}"), msg))
}

/// Lints one Dockerfile.
pub(crate) fn lint(file: &str, text: &str) -> Vec<Misconfiguration> {
    let mut out = Vec::new();
    let mut stages: BTreeMap<String, Stage> = BTreeMap::new();
    let mut global_args: BTreeMap<String, String> = BTreeMap::new();
    let mut cur: Option<Stage> = None;
    let mut cur_alias: Option<String> = None;
    let mut stage_no = 0usize;
    for ins in instructions(text) {
        let res = match &cur {
            Some(s) => format!("stage {stage_no} (FROM {})", s.image),
            None => "global".to_owned(),
        };
        match ins.cmd.as_str() {
            "FROM" => {
                let toks: Vec<&str> = words(&ins.args).into_iter().filter(|t| !t.starts_with("--")).collect();
                let image = toks.first().copied().unwrap_or_default().to_owned();
                let alias = match (toks.get(1), toks.get(2)) {
                    (Some(a), Some(n)) if a.eq_ignore_ascii_case("as") => Some(n.to_ascii_lowercase()),
                    _ => None,
                };
                // The previous stage is complete: a later `FROM <alias>` inherits its USER and HEALTHCHECK.
                if let (Some(prev), Some(a)) = (cur.take(), cur_alias.take()) {
                    stages.insert(a, prev);
                }
                out.extend(check_base(file, ins.line, &image, &stages, &global_args));
                let mut st = match stages.get(&image.to_ascii_lowercase()) {
                    Some(parent) => parent.clone(),
                    None => Stage::default(),
                };
                st.from_line = ins.line;
                st.image = image;
                cur_alias = alias;
                stage_no += 1;
                cur = Some(st);
            }
            "USER" => {
                let user = ins.args.split(':').next().unwrap_or_default().trim().to_owned();
                if let Some(s) = cur.as_mut() {
                    s.user = Some((user, ins.line));
                }
            }
            "HEALTHCHECK" => {
                if let Some(s) = cur.as_mut() {
                    s.healthcheck = true;
                }
            }
            "ARG" | "ENV" => {
                if ins.cmd == "ARG" && cur.is_none() {
                    for t in words(&ins.args) {
                        if let Some((k, v)) = t.split_once('=') {
                            global_args.insert(k.to_owned(), v.trim_matches(['"', '\'']).to_owned());
                        }
                    }
                }
                for name in declared_names(&ins.cmd, &ins.args) {
                    if is_secret_name(&name) {
                        let msg = format!("{} {name} looks like a secret and is stored in the image", ins.cmd);
                        out.push(finding("PAL-DF-005", file, ins.line, &res, msg));
                    }
                }
            }
            "ADD" => {
                let toks = words(&ins.args);
                let has_checksum = toks.iter().any(|t| t.starts_with("--checksum="));
                let srcs: Vec<&str> = toks.iter().copied().filter(|t| !t.starts_with("--")).collect();
                let n = srcs.len().saturating_sub(1);
                for s in srcs.iter().take(n) {
                    let lower = s.to_ascii_lowercase();
                    if !has_checksum && (lower.starts_with("http://") || lower.starts_with("https://")) {
                        out.push(finding("PAL-DF-004", file, ins.line, &res, format!("ADD downloads {s}")));
                    }
                }
            }
            "RUN" => {
                let run = ins.args.as_str();
                if pipes_to_shell(run) {
                    out.push(finding("PAL-DF-006", file, ins.line, &res, "RUN pipes a download into a shell".into()));
                }
                let segs = segments(run);
                let mut apt = false;
                for seg in &segs {
                    if is_apt_install(seg) {
                        apt = true;
                        if !seg.contains("--no-install-recommends") && !seg.contains("Install-Recommends=false") {
                            let msg = "apt-get install without --no-install-recommends".to_owned();
                            out.push(finding("PAL-DF-008", file, ins.line, &res, msg));
                        }
                    }
                    if is_apk_add(seg) && !seg.contains("--no-cache") {
                        out.push(finding("PAL-DF-011", file, ins.line, &res, "apk add without --no-cache".into()));
                    }
                    if words(seg).first() == Some(&"sudo") {
                        out.push(finding("PAL-DF-010", file, ins.line, &res, "RUN uses sudo".into()));
                    }
                }
                let cache_mount = run.contains("--mount=type=cache") && run.contains("/var/lib/apt");
                if apt && !cache_mount && !run.contains("/var/lib/apt/lists") {
                    let msg = "apt lists are left in the layer (no rm -rf /var/lib/apt/lists/*)".to_owned();
                    out.push(finding("PAL-DF-009", file, ins.line, &res, msg));
                }
            }
            _ => {}
        }
    }
    if let Some(last) = cur {
        let res = format!("stage {stage_no} (FROM {})", last.image);
        match &last.user {
            None => out.push(finding(
                "PAL-DF-001",
                file,
                last.from_line,
                &res,
                "the final stage sets no USER, so it runs as root".into(),
            )),
            Some((u, line)) if u == "root" || u == "0" => {
                out.push(finding("PAL-DF-002", file, *line, &res, format!("USER {u} in the final stage")))
            }
            Some(_) => {}
        }
        if !last.healthcheck {
            out.push(finding("PAL-DF-007", file, last.from_line, &res, "the final stage has no HEALTHCHECK".into()));
        }
    }
    out.sort_by(|a, b| a.line.cmp(&b.line).then_with(|| a.rule_id.cmp(&b.rule_id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<(String, usize)> {
        lint("Dockerfile", text).into_iter().map(|f| (f.rule_id, f.line)).collect()
    }

    #[test]
    fn logical_lines() {
        let ins = instructions("# escape=`\nFROM a `\n  # comment\n  AS b\n\nRUN <<EOF\necho hi\nEOF\nUSER x\n");
        let v: Vec<(usize, &str, &str)> = ins.iter().map(|i| (i.line, i.cmd.as_str(), i.args.as_str())).collect();
        assert_eq!(v, [(2, "FROM", "a    AS b"), (6, "RUN", "<<EOF\necho hi"), (9, "USER", "x")]);
    }

    #[test]
    fn clean_dockerfile_has_no_findings() {
        let text = "FROM rust:1.80 AS build\nRUN cargo build\n\
                    FROM debian:12-slim@sha256:abcd\n\
                    RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \\\n \
                    && rm -rf /var/lib/apt/lists/*\n\
                    COPY --from=build /x /x\nUSER 10001:10001\nHEALTHCHECK CMD [\"/x\", \"health\"]\n";
        assert_eq!(ids(text), []);
    }

    #[test]
    fn every_rule_fires() {
        let text = "ARG BASE=ubuntu\nFROM $BASE\nENV DB_PASSWORD=hunter2 PATH=/x\nARG GITHUB_TOKEN\n\
                    ADD https://example.com/x.tgz /x\nRUN curl -fsSL https://x.sh | sudo bash -s\n\
                    RUN apt-get install -y curl\nRUN sudo make install\nRUN apk add curl\nUSER root\n";
        assert_eq!(
            ids(text),
            [
                ("PAL-DF-003".to_owned(), 2),
                ("PAL-DF-007".to_owned(), 2),
                ("PAL-DF-005".to_owned(), 3),
                ("PAL-DF-005".to_owned(), 4),
                ("PAL-DF-004".to_owned(), 5),
                ("PAL-DF-006".to_owned(), 6),
                ("PAL-DF-010".to_owned(), 6),
                ("PAL-DF-008".to_owned(), 7),
                ("PAL-DF-009".to_owned(), 7),
                ("PAL-DF-010".to_owned(), 8),
                ("PAL-DF-011".to_owned(), 9),
                ("PAL-DF-002".to_owned(), 10),
            ]
        );
        let f = lint("Dockerfile", text);
        let df3 = f.iter().find(|f| f.rule_id == "PAL-DF-003").map(|f| f.message.clone());
        assert_eq!(df3.as_deref(), Some("base image ubuntu has no tag (means `latest`)"));
    }

    #[test]
    fn stages_users_and_tags() {
        // USER inherited from a named parent stage; `latest` tag; scratch and stage references are fine.
        let text = "FROM alpine:latest AS base\nUSER app\nHEALTHCHECK NONE\nFROM base\nFROM scratch AS s\n";
        assert_eq!(
            ids(text),
            [("PAL-DF-003".to_owned(), 1), ("PAL-DF-001".to_owned(), 5), ("PAL-DF-007".to_owned(), 5)]
        );
        let text = "FROM alpine:latest AS base\nUSER app\nHEALTHCHECK NONE\nFROM base\n";
        assert_eq!(ids(text), [("PAL-DF-003".to_owned(), 1)]);
        assert_eq!(
            ids("FROM registry.local:5000/team/app\nUSER 1\nHEALTHCHECK NONE\n"),
            [("PAL-DF-003".to_owned(), 1)]
        );
        assert_eq!(
            ids("FROM registry.local:5000/team/app:2\nUSER 0:0\nHEALTHCHECK NONE\n"),
            [("PAL-DF-002".to_owned(), 2)]
        );
    }

    #[test]
    fn secret_names() {
        let text = "FROM a:1\nENV GPG_KEY ABCDEF PYTHON_VERSION=3\nENV POSTGRES_PASSWORD_FILE=/run/s\n\
                    ENV API_KEY x\nARG NPM_TOKEN=\nUSER 1\nHEALTHCHECK NONE\n";
        assert_eq!(ids(text), [("PAL-DF-005".to_owned(), 4), ("PAL-DF-005".to_owned(), 5)]);
    }

    #[test]
    fn shell_pipes() {
        assert!(pipes_to_shell("wget -qO- https://x | sh"));
        assert!(pipes_to_shell("sh -c \"$(curl -fsSL https://x)\""));
        assert!(pipes_to_shell("bash <(curl -s https://x)"));
        assert!(!pipes_to_shell("curl -o /tmp/x https://x && sha256sum -c x.sha && sh /tmp/x"));
        assert!(!pipes_to_shell("curl https://x | tar xz"));
    }
}
