//! The identity provider with real third-party clients: Python authlib + PyJWT and npm
//! openid-client, over SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly by design

mod common;

#[path = "idp_interop/node.rs"]
mod node;
#[path = "idp_interop/python.rs"]
mod python;
