//! The identity provider end to end: `palisade server` and `palisade idp` as real processes,
//! curl as the client, each test over SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly by design

mod common;

use common::idp::*;
use common::*;

both_databases! {
    async fn client_credentials_defaults_and_errors(db: Db) {
        let s = IdpServer::start(db).await;
        let secret = s.add_client("svc", &["--scope", "orders:read orders:write", "--default-scope", "orders:read", "--audience", "orders"]);
        let r = s.cc_token("svc", &secret, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let j = r.json();
        assert_eq!(j["token_type"], "Bearer");
        assert_eq!(j["scope"], "orders:read");
        assert_eq!(j["expires_in"], 600);
    }
}
