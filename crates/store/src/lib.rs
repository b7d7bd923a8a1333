//! Persistence for `palisade server`: one connection pool over SQLite (default, a file under
//! `./data/`) or PostgreSQL (`--database-url postgres://…`), and one set of migrations that runs
//! unchanged on both (see `migrations/`). Each capability crate writes its own queries against
//! [`Store::pool`] with `$1`-style placeholders, which both backends accept.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use sqlx;

/// The migrations, in order. Add new files at the end; never edit an applied one (its checksum
/// is recorded and checked on every start).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "idp", include_str!("../migrations/0001_idp.sql")),
    (2, "ca", include_str!("../migrations/0002_ca.sql")),
    (3, "audit", include_str!("../migrations/0003_audit.sql")),
    (4, "vault", include_str!("../migrations/0004_vault.sql")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
    #[error("cannot open database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot create {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// A migrated connection pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// The default SQLite URL for a data directory.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("palisade.db").display())
}

impl Store {
    /// Open (creating a SQLite file if needed) and run pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(redact_url(url)));
        };
        if let Some(path) = sqlite_path(url).filter(|_| backend == Backend::Sqlite) {
            create_private_file(Path::new(path))?;
        }
        let open_err = |source| StoreError::Open { url: redact_url(url), source };
        let options: AnyConnectOptions = url.parse().map_err(open_err)?;
        let options = options.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_err)?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the one writer; the mode is stored in the file.
            pool.execute("PRAGMA journal_mode = WAL").await?;
        }
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrations: Vec<Migration> = MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(*version, Cow::Borrowed(*name), MigrationType::Simple, Cow::Borrowed(*sql), false)
            })
            .collect();
        let migrator =
            Migrator { migrations: Cow::Owned(migrations), ignore_missing: false, locking: true, no_tx: false };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Create the database file (and its directory) readable by the owner only; SQLite gives its
/// `-wal` and `-shm` files the same mode.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| StoreError::Io { path: path.display().to_string(), source };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(e)),
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (path != ":memory:" && !path.is_empty()).then_some(path)
}

/// True when the error is a unique/primary-key violation (a lost insert race, a replayed id).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| e.is_unique_violation())
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }

    #[tokio::test]
    async fn sqlite_migrates_once_and_enforces_unique_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir.path().join("sub"));
        let store = Store::open(&url).await.unwrap();
        sqlx::query("INSERT INTO idp_revocations (id, kind, created_at, expires_at) VALUES ($1, $2, $3, $3)")
            .bind("a")
            .bind("jti")
            .bind(5_i64)
            .execute(store.pool())
            .await
            .unwrap();
        let dup = sqlx::query("INSERT INTO idp_revocations (id, kind, created_at, expires_at) VALUES ($1, $2, $3, $3)")
            .bind("a")
            .bind("jti")
            .bind(5_i64)
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(is_unique_violation(&dup), "{dup}");
        store.close().await;
        // A second open finds the migration applied and the row kept.
        let store = Store::open(&url).await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("sub/palisade.db")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let row = sqlx::query("SELECT COUNT(*) AS n FROM idp_revocations").fetch_one(store.pool()).await.unwrap();
        assert_eq!(row.get::<i64, _>("n"), 1);
        let applied = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations").fetch_one(store.pool()).await.unwrap();
        assert_eq!(applied.get::<i64, _>("n"), MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn rejects_unknown_schemes() {
        let err = Store::open("mysql://root:pw@localhost/x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported database URL \"mysql://root:***@localhost/x\": use sqlite://PATH or postgres://USER@HOST/DB"
        );
    }
}
