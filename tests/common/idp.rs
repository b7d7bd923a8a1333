//! Harness for the identity provider: a real `palisade server` child process over SQLite or a
//! fresh PostgreSQL database, administered through the real CLI, driven by curl and by the
//! third-party clients in `tests/interop/` (Python authlib/PyJWT, npm openid-client).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{curl, Curl, BIN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A new, empty PostgreSQL database on the server scripts/test.sh started.
pub fn pg_database() -> String {
    let base = std::env::var("PALISADE_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("PALISADE_TEST_DATABASE_URL is not set: run the suite with scripts/test.sh (it starts PostgreSQL), or `source scripts/test-env.sh` first")
    });
    let name = format!("t_{}", fastrand_name());
    let out = Command::new("psql")
        .args([&base, "-q", "-v", "ON_ERROR_STOP=1", "-c", &format!("CREATE DATABASE {name} STRATEGY FILE_COPY")])
        .output()
        .expect("psql");
    assert!(out.status.success(), "CREATE DATABASE failed: {}", String::from_utf8_lossy(&out.stderr));
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

fn fastrand_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

pub struct IdpServer {
    pub child: tokio::process::Child,
    pub dir: tempfile::TempDir,
    pub db: Db,
    pub db_url: Option<String>,
    pub addr: String,
    pub issuer: String,
    pub admin_token: String,
    pub log: PathBuf,
    extra: Vec<String>,
}

impl IdpServer {
    pub async fn start(db: Db) -> IdpServer {
        Self::start_with(db, &[]).await
    }

    /// Start with extra `palisade server` arguments (e.g. TLS, lifetimes).
    pub async fn start_with(db: Db, extra: &[&str]) -> IdpServer {
        let dir = tempfile::tempdir().unwrap();
        let db_url = (db == Db::Postgres).then(pg_database);
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let log = dir.path().join("server.log");
        let child = Self::spawn(dir.path(), db_url.as_deref(), &extra, &log);
        let mut s = IdpServer {
            child,
            dir,
            db,
            db_url,
            addr: String::new(),
            issuer: String::new(),
            admin_token: String::new(),
            log,
            extra,
        };
        s.wait_ready().await;
        s.admin_token = std::fs::read_to_string(s.dir.path().join("admin.token")).unwrap().trim().to_owned();
        s
    }

    fn spawn(
        dir: &std::path::Path,
        db_url: Option<&str>,
        extra: &[String],
        log: &std::path::Path,
    ) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir);
        if let Some(u) = db_url {
            cmd.args(["--database-url", u]);
        }
        cmd.args(extra)
            .env("PALISADE_LOG", "info")
            .env_remove("PALISADE_DATABASE_URL")
            .env_remove("PALISADE_MASTER_KEY")
            .env_remove("PALISADE_ADMIN_TOKEN")
            .stdout(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("palisade server exited early ({status}): {}", self.log_text());
            }
            let started = self
                .log_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .rfind(|v| v["message"] == "server listening");
            if let Some(v) = started {
                self.addr = v["address"].as_str().unwrap().to_owned();
                self.issuer = v["issuer"].as_str().unwrap().to_owned();
                return;
            }
            assert!(Instant::now() < deadline, "server not ready: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop and start again on the same state (database, master key), on a new port.
    pub async fn restart(&mut self) {
        self.child.kill().await.unwrap();
        std::fs::write(&self.log, "").unwrap();
        self.child = Self::spawn(self.dir.path(), self.db_url.as_deref(), &self.extra, &self.log);
        self.wait_ready().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// URL of `path` on the bound address (the issuer may name another host, see `--issuer`).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.issuer.starts_with("https:") { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    fn state_args(&self) -> Vec<String> {
        let mut a = vec!["--data-dir".to_owned(), self.dir.path().display().to_string()];
        if let Some(u) = &self.db_url {
            a.push("--database-url".into());
            a.push(u.clone());
        }
        a
    }

    /// Run `palisade <group> <state args> <args>` with `stdin`; returns (exit code, stdout, stderr).
    pub fn cli_raw(&self, group: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .arg(group)
            .args(self.state_args())
            .args(args)
            .env("PALISADE_LOG", "warn")
            .env_remove("PALISADE_DATABASE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `palisade idp ...` that must succeed; its JSON output.
    pub fn idp(&self, args: &[&str]) -> Value {
        let (code, out, err) = self.cli_raw("idp", args, "");
        assert_eq!(code, 0, "palisade idp {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Register a confidential client; returns its secret.
    pub fn add_client(&self, id: &str, args: &[&str]) -> String {
        let mut a = vec!["client", "add", id];
        a.extend_from_slice(args);
        self.idp(&a)["client_secret"].as_str().unwrap_or_default().to_owned()
    }

    /// Add a user with password `pw-<name>-secret`; returns the password.
    pub fn add_user(&self, name: &str, roles: &[&str]) -> String {
        let password = format!("pw-{name}-secret");
        let mut a: Vec<&str> = vec!["user", "add", name, "--password-stdin", "--email"];
        let email = format!("{name}@example.test");
        a.push(&email);
        let display = format!("{name} Example");
        a.extend(["--name", &display]);
        for r in roles {
            a.extend(["--role", r]);
        }
        let (code, _, err) = self.cli_raw("idp", &a, &format!("{password}\n"));
        assert_eq!(code, 0, "user add failed: {err}");
        password
    }

    pub async fn post(&self, path: &str, args: &[&str]) -> Curl {
        let mut a = vec!["-X", "POST"];
        a.extend_from_slice(args);
        curl(&a, &self.url(path)).await
    }

    /// Client-credentials token for a secret client.
    pub async fn cc_token(&self, id: &str, secret: &str, extra: &[&str]) -> Curl {
        let user = format!("{id}:{secret}");
        let mut a = vec!["-u", &user, "-d", "grant_type=client_credentials"];
        a.extend_from_slice(extra);
        self.post("/oauth2/token", &a).await
    }
}

/// Run an interop script scenario with the venv's Python (`tests/interop/<script>`).
pub async fn python(script: &str, scenario: &str, env: &[(&str, &str)]) -> String {
    let py = std::env::var("PALISADE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("PALISADE_TEST_PYTHON is not set: run the suite with scripts/test.sh (it builds the venv with authlib and PyJWT)")
    });
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop").join(script);
    run_script(Command::new(py).arg(path).arg(scenario), env).await
}

/// Run an interop Node script scenario (`tests/interop/<script>`, with its node_modules).
pub async fn node(script: &str, scenario: &str, env: &[(&str, &str)]) -> String {
    let dir = std::env::var("PALISADE_TEST_NODE_DIR").unwrap_or_else(|_| {
        panic!("PALISADE_TEST_NODE_DIR is not set: run the suite with scripts/test.sh (it installs openid-client)")
    });
    let mut cmd = Command::new("node");
    cmd.arg(PathBuf::from(&dir).join(script)).arg(scenario).current_dir(&dir);
    run_script(&mut cmd, env).await
}

async fn run_script(cmd: &mut Command, env: &[(&str, &str)]) -> String {
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut cmd = tokio::process::Command::from(std::mem::replace(cmd, Command::new("true")));
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("script timed out").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "interop script failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Run a test body once over SQLite and once over PostgreSQL.
#[macro_export]
macro_rules! both_databases {
    ($(#[$m:meta])* async fn $name:ident($db:ident: Db) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($db: Db) $body
            #[tokio::test]
            async fn sqlite() {
                body(Db::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                body(Db::Postgres).await
            }
        }
    };
}

impl Drop for IdpServer {
    /// A failing test shows the end of the server log.
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("--- last lines of the server log\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    }
}
