//! `palisade scan image|fs|lock|config|secrets|db`: vulnerability scanning of container images, directory
//! trees and lockfiles against a local advisory database built with `palisade scan db import`, config lint
//! of Dockerfiles and Kubernetes manifests, and secret detection (no database needed for the last two).
//! Reports go to stdout (or `--output`) as a table, JSON, SARIF 2.1.0 or CycloneDX 1.5; progress goes to
//! stderr only when it is a terminal. Exit code 0 when clean, 1 when a finding reaches `--fail-on`, 2 on error.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use palisade_scan::{
    build_report, parse_severity, scan_content, scan_dir, scan_image_with, scan_lockfile, ContentOptions, Database,
    Date, IgnoreFile, Inventory, Limits, Report, Severity, Target, TargetKind, EXIT_ERROR, IGNORE_FILE_NAME,
};

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Vulnerability database (default: $PALISADE_SCAN_DB, else ~/.cache/palisade/scan.db)
    #[arg(long, global = true, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Report format
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Exit with 1 when a finding is at or above this severity (low, medium, high, critical)
    #[arg(long, global = true, value_name = "SEVERITY", value_parser = severity_arg)]
    pub fail_on: Option<Severity>,
    /// Write the report to this file instead of stdout
    #[arg(long, global = true, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Colour the severity column of the table (ANSI): `auto` (default) colours when the report goes
    /// to a terminal and NO_COLOR is unset
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,
    /// Ignore file (default: .palisadeignore.yaml in the scanned directory, else in the current one)
    #[arg(long, global = true, value_name = "FILE")]
    pub ignore_file: Option<PathBuf>,
    /// fs and image: do not search files for secrets
    #[arg(long, global = true)]
    pub no_secrets: bool,
    /// fs: do not lint Dockerfiles and Kubernetes manifests
    #[arg(long, global = true)]
    pub no_config: bool,
    #[command(subcommand)]
    pub command: ScanCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Sarif,
    Cyclonedx,
}

#[derive(Subcommand, Debug)]
pub enum ScanCommand {
    /// Scan a `docker save` archive or an OCI image layout directory (packages, and secrets in layers)
    Image { path: PathBuf },
    /// Scan a directory tree (a source tree or an unpacked rootfs): packages, config lint and secrets
    Fs { dir: PathBuf },
    /// Scan one lockfile or package database (Cargo.lock, package-lock.json, yarn.lock, go.mod, …)
    Lock { file: PathBuf },
    /// Lint Dockerfiles and Kubernetes manifests (a file or a directory); needs no database
    Config { path: PathBuf },
    /// Search a file or directory for secrets; needs no database
    Secrets { path: PathBuf },
    /// Build or inspect the vulnerability database
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Build the database from OSV directories or zips and RustSec advisory-db checkouts
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Show the database's age and counts
    Status,
}

fn severity_arg(s: &str) -> Result<Severity, String> {
    parse_severity(s).ok_or_else(|| format!("unknown severity {s:?} (low, medium, high, critical)"))
}

fn default_db() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_SCAN_DB").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/palisade/scan.db")
}

/// Runs the command and returns the process exit code; errors are reported on stderr as exit code 2.
pub fn run(args: ScanArgs) -> anyhow::Result<i32> {
    match run_inner(&args) {
        Ok(code) => Ok(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "palisade scan: {e:#}");
            Ok(EXIT_ERROR)
        }
    }
}

/// Progress on stderr, only when stderr is a terminal (never mixed into redirected output).
struct Progress {
    on: bool,
    shown: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress { on: std::io::stderr().is_terminal(), shown: false }
    }

    fn say(&mut self, msg: &str) {
        if self.on {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K{msg}");
            self.shown = true;
        }
    }

    fn files(&mut self, n: usize) {
        if n.is_multiple_of(100) {
            self.say(&format!("scanning files: {n}"));
        }
    }

    fn done(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
            self.shown = false;
        }
    }
}

fn content_opts(args: &ScanArgs) -> ContentOptions {
    let mut o = ContentOptions::default();
    o.config = !args.no_config;
    o.secrets = !args.no_secrets;
    o
}

fn run_inner(args: &ScanArgs) -> anyhow::Result<i32> {
    let db_path = args.db.clone().unwrap_or_else(default_db);
    let mut progress = Progress::new();
    let (target, needs_db, scanned): (Target, bool, PathBuf) = match &args.command {
        ScanCommand::Db { command: DbCommand::Import { paths } } => return db_import(&db_path, paths, args),
        ScanCommand::Db { command: DbCommand::Status } => return db_status(&db_path, args),
        ScanCommand::Image { path } => {
            progress.say("reading image layers…");
            let mut opts = content_opts(args);
            opts.config = false;
            let img = scan_image_with(path, &Limits::default(), &opts)?;
            let mut t = Target::new(path.display().to_string(), TargetKind::Image, img.inventory);
            if opts.secrets {
                t = t.with_content(img.content);
            }
            (t, true, path.clone())
        }
        ScanCommand::Fs { dir } => {
            progress.say("reading package files…");
            let inv = scan_dir(dir)?;
            let mut t = Target::new(dir.display().to_string(), TargetKind::Filesystem, inv);
            let opts = content_opts(args);
            if opts.config || opts.secrets {
                let c = scan_content(dir, &opts, &mut |n| progress.files(n))?;
                t = t.with_content(c);
            }
            (t, true, dir.clone())
        }
        ScanCommand::Lock { file } => {
            let t = Target::new(file.display().to_string(), TargetKind::Lockfile, scan_lockfile(file)?);
            (t, true, file.clone())
        }
        ScanCommand::Config { path } => {
            let c = scan_content(path, &ContentOptions::config_only(), &mut |n| progress.files(n))?;
            let t = Target::new(path.display().to_string(), TargetKind::Config, Inventory::default()).with_content(c);
            (t, false, path.clone())
        }
        ScanCommand::Secrets { path } => {
            let c = scan_content(path, &ContentOptions::secrets_only(), &mut |n| progress.files(n))?;
            let t =
                Target::new(path.display().to_string(), TargetKind::Filesystem, Inventory::default()).with_content(c);
            (t, false, path.clone())
        }
    };
    let mut report: Report = if needs_db {
        progress.say("matching advisories…");
        let db = Database::open(&db_path)
            .with_context(|| format!("opening {} (build it with `palisade scan db import`)", db_path.display()))?;
        build_report(vec![target], Some(&db))
    } else {
        build_report(vec![target], None)
    };
    progress.done();
    if let Some(ignores) = load_ignores(args, &scanned)? {
        report.apply_ignores(&ignores, Date::today());
        for e in &report.expired_ignores {
            let _ = writeln!(
                std::io::stderr().lock(),
                "palisade scan: warning: ignore entry {} expired on {}; it no longer suppresses findings",
                e.id,
                e.expires
            );
        }
    }
    let text = match args.format {
        Format::Table => report.render_table(use_color(&args.color, args.output.is_none())),
        Format::Json => report.to_json() + "\n",
        Format::Sarif => report.to_sarif() + "\n",
        Format::Cyclonedx => report.to_cyclonedx() + "\n",
    };
    emit(args, &text)?;
    Ok(report.exit_code(args.fail_on))
}

/// The ignore file: `--ignore-file`, else `.palisadeignore.yaml` in the scanned directory, else in the
/// current directory; none is fine.
fn load_ignores(args: &ScanArgs, scanned: &Path) -> anyhow::Result<Option<IgnoreFile>> {
    if let Some(p) = &args.ignore_file {
        return Ok(Some(IgnoreFile::load(p)?));
    }
    let mut candidates = Vec::new();
    if scanned.is_dir() {
        candidates.push(scanned.join(IGNORE_FILE_NAME));
    }
    candidates.push(PathBuf::from(IGNORE_FILE_NAME));
    for c in candidates {
        if c.is_file() {
            return Ok(Some(IgnoreFile::load(&c)?));
        }
    }
    Ok(None)
}

fn emit(args: &ScanArgs, text: &str) -> anyhow::Result<()> {
    match &args.output {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
    }
}

fn db_import(db_path: &Path, paths: &[PathBuf], args: &ScanArgs) -> anyhow::Result<i32> {
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let r = Database::import(paths, db_path)?;
    let per: serde_json::Map<String, serde_json::Value> =
        r.per_ecosystem.iter().map(|(e, n)| (e.to_string(), (*n).into())).collect();
    let text = match args.format {
        Format::Json | Format::Sarif | Format::Cyclonedx => {
            serde_json::json!({
                "path": r.path.display().to_string(),
                "files_read": r.files_read,
                "advisories": r.advisories,
                "withdrawn": r.withdrawn,
                "packages": r.packages,
                "per_ecosystem": per,
                "skipped": r.skipped.len(),
                "failures": r.failures.iter().map(|f| format!("{}: {}", f.path, f.reason)).collect::<Vec<_>>(),
                "bytes": r.bytes,
            })
            .to_string()
                + "\n"
        }
        Format::Table => {
            let mut s = format!(
                "wrote {} ({} bytes): {} advisories from {} files, {} packages, {} withdrawn left out, {} skipped, {} failures\n",
                r.path.display(),
                r.bytes,
                r.advisories,
                r.files_read,
                r.packages,
                r.withdrawn,
                r.skipped.len(),
                r.failures.len()
            );
            for (e, n) in &r.per_ecosystem {
                s.push_str(&format!("  {e}: {n}\n"));
            }
            for f in r.failures.iter().take(20) {
                s.push_str(&format!("  failed: {}: {}\n", f.path, f.reason));
            }
            s
        }
    };
    emit(args, &text)?;
    Ok(0)
}

fn db_status(db_path: &Path, args: &ScanArgs) -> anyhow::Result<i32> {
    let db = Database::open(db_path).with_context(|| format!("opening {}", db_path.display()))?;
    let st = db.status();
    let age_h = st.age.as_secs() / 3600;
    let text = match args.format {
        Format::Json | Format::Sarif | Format::Cyclonedx => {
            let per: serde_json::Map<String, serde_json::Value> =
                st.per_ecosystem.iter().map(|(e, n)| (e.to_string(), (*n).into())).collect();
            serde_json::json!({
                "path": db_path.display().to_string(),
                "format": st.format,
                "age_seconds": st.age.as_secs(),
                "sources": st.sources,
                "advisories": st.advisories,
                "packages": st.packages,
                "per_ecosystem": per,
            })
            .to_string()
                + "\n"
        }
        Format::Table => {
            let mut s = format!(
                "{}: format {}, built {} h ago, {} advisories, {} packages\n",
                db_path.display(),
                st.format,
                age_h,
                st.advisories,
                st.packages
            );
            for (e, n) in &st.per_ecosystem {
                s.push_str(&format!("  {e}: {n}\n"));
            }
            for src in &st.sources {
                s.push_str(&format!("  source: {src}\n"));
            }
            s
        }
    };
    emit(args, &text)?;
    Ok(0)
}

/// `--color`: `always`, `never`, or (`auto`) when the table goes to a terminal and `NO_COLOR` is unset.
fn use_color(when: &str, to_stdout: bool) -> bool {
    match when {
        "always" => true,
        "never" => false,
        _ => to_stdout && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    }
}
