//! `palisade idp client|user ...` and `palisade keys ...`: administration straight against the
//! database (the same operations as the admin REST API). Output is JSON on stdout; a secret or
//! generated password is printed once and never logged.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use palisade_crypto::Alg;
use palisade_idp::model::{AuthMethod, ClientSpec, GrantType};
use palisade_idp::ops::{self, NewUser};
use palisade_idp::Repo;
use serde_json::{json, Value};

use crate::server::{parse_alg, parse_duration, StateArgs};

#[derive(Subcommand, Debug)]
pub enum IdpCommand {
    /// OAuth clients
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Users who sign in at /oauth2/authorize
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

fn parse_method(s: &str) -> Result<AuthMethod, String> {
    AuthMethod::ALL
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| format!("unknown method {s:?}; use one of {}", AuthMethod::ALL.map(|m| m.name()).join(", ")))
}

fn parse_grant(s: &str) -> Result<GrantType, String> {
    GrantType::parse(s).ok_or_else(|| {
        format!("unknown grant {s:?}; use client_credentials, authorization_code, refresh_token or token-exchange")
    })
}

#[derive(clap::Args, Debug)]
pub struct ClientAdd {
    client_id: String,
    /// Display name on the consent page
    #[arg(long, default_value = "")]
    name: String,
    /// A public client (no secret; PKCE required); same as --auth-method none
    #[arg(long, conflicts_with = "auth_method")]
    public: bool,
    /// client_secret_basic, client_secret_post, private_key_jwt, tls_client_auth or none
    #[arg(long, value_parser = parse_method)]
    auth_method: Option<AuthMethod>,
    /// Allowed grant (repeatable); default: client_credentials, or authorization_code +
    /// refresh_token for a public client
    #[arg(long = "grant", value_parser = parse_grant)]
    grants: Vec<GrantType>,
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    /// Allowed scope (repeatable, or space-separated)
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Scope granted when a request names none (repeatable)
    #[arg(long = "default-scope")]
    default_scopes: Vec<String>,
    /// Allowed audience / resource (repeatable)
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// JWK Set file with the client's public keys (private_key_jwt)
    #[arg(long)]
    jwks_file: Option<PathBuf>,
    /// Client certificate subject DN (tls_client_auth), e.g. "CN=billing,O=Acme"
    #[arg(long)]
    tls_subject_dn: Option<String>,
    /// First-party client: no consent page
    #[arg(long)]
    skip_consent: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register a client; prints its secret once
    Add(Box<ClientAdd>),
    /// List clients
    List,
    /// Replace the client secret; prints the new one once
    RotateSecret { client_id: String },
    /// Remove a client with its refresh tokens and consents
    Remove { client_id: String },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user. The password comes from stdin with --password-stdin, or is generated and printed once
    Add {
        username: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from the first line of stdin
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (from stdin with --password-stdin, else generated and printed once)
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace a user's roles
    Role {
        username: String,
        /// The new roles (repeatable; none clears them)
        #[arg(long = "set")]
        roles: Vec<String>,
    },
    /// Remove a user with their sessions and consents
    Remove { username: String },
    /// List users
    List,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Pre-publish a new signing key; it signs after --activate-after, and the old key stays in
    /// the JWKS until every token it signed has expired
    Rotate {
        /// es256, eddsa or rs256
        #[arg(long, default_value = "es256", value_parser = parse_alg)]
        alg: Alg,
        /// Delay between publishing and signing (relying parties refresh their JWKS meanwhile)
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        activate_after: Duration,
        /// How long the old key stays published after the switch: at least the longest
        /// --access-token-ttl / --id-token-ttl of your servers
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        max_token_lifetime: Duration,
    },
    /// Show the published keys
    List,
}

#[allow(clippy::print_stdout)]
fn out(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
        let p = line.trim_end_matches(['\r', '\n']).to_owned();
        if p.is_empty() {
            bail!("no password on stdin");
        }
        Ok((p, false))
    } else {
        Ok((palisade_idp::secrets::random_token(18), true))
    }
}

pub async fn run_idp(state: StateArgs, cmd: IdpCommand) -> anyhow::Result<()> {
    let store = state.open().await?;
    let repo = Repo::new(store.pool().clone());
    let r = match cmd {
        IdpCommand::Client { command } => client(&repo, command).await,
        IdpCommand::User { command } => user(&repo, command).await,
    };
    store.close().await;
    r
}

async fn client(repo: &Repo, cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Add(add) => {
            let ClientAdd {
                client_id,
                name,
                public,
                auth_method,
                grants,
                redirect_uris,
                post_logout_redirect_uris,
                scopes,
                default_scopes,
                audiences,
                jwks_file,
                tls_subject_dn,
                skip_consent,
            } = *add;
            let method = if public { AuthMethod::None } else { auth_method.unwrap_or(AuthMethod::ClientSecretBasic) };
            let grant_types = if !grants.is_empty() {
                grants
            } else if method == AuthMethod::None {
                vec![GrantType::AuthorizationCode, GrantType::RefreshToken]
            } else {
                vec![GrantType::ClientCredentials]
            };
            let jwks = match jwks_file {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                    Some(serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?)
                }
                None => None,
            };
            let split = |v: Vec<String>| -> Vec<String> {
                v.iter().flat_map(|s| s.split_whitespace().map(str::to_owned)).collect()
            };
            let spec = ClientSpec {
                client_id,
                name,
                token_endpoint_auth_method: method,
                grant_types,
                redirect_uris,
                post_logout_redirect_uris,
                scopes: split(scopes),
                default_scopes: split(default_scopes),
                audiences,
                jwks,
                tls_client_auth_subject_dn: tls_subject_dn,
                skip_consent,
            };
            let secret = ops::add_client(repo, &spec).await?;
            let mut v = json!({ "client": spec });
            if let Some(s) = secret {
                v["client_secret"] = json!(s);
            }
            out(&v);
        }
        ClientCommand::List => {
            let clients: Vec<ClientSpec> = repo.clients().await?.into_iter().map(|c| c.spec).collect();
            out(&json!(clients));
        }
        ClientCommand::RotateSecret { client_id } => {
            let secret = ops::rotate_client_secret(repo, &client_id).await?;
            out(&json!({ "client_id": client_id, "client_secret": secret }));
        }
        ClientCommand::Remove { client_id } => {
            ops::remove_client(repo, &client_id).await?;
            out(&json!({ "removed": client_id }));
        }
    }
    Ok(())
}

async fn user(repo: &Repo, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { username, roles, name, email, password_stdin } => {
            let (password, generated) = password(password_stdin)?;
            let user =
                ops::add_user(repo, NewUser { username, password: password.clone(), roles, name, email }).await?;
            let mut v = json!(user);
            if generated {
                v["password"] = json!(password);
            }
            out(&v);
        }
        UserCommand::Passwd { username, password_stdin } => {
            let (password, generated) = password(password_stdin)?;
            ops::set_password(repo, &username, password.clone()).await?;
            let mut v = json!({ "username": username });
            if generated {
                v["password"] = json!(password);
            }
            out(&v);
        }
        UserCommand::Role { username, roles } => out(&json!(ops::set_roles(repo, &username, roles).await?)),
        UserCommand::Remove { username } => {
            ops::remove_user(repo, &username).await?;
            out(&json!({ "removed": username }));
        }
        UserCommand::List => out(&json!(repo.users().await?)),
    }
    Ok(())
}

pub async fn run_keys(state: StateArgs, cmd: KeysCommand) -> anyhow::Result<()> {
    let store = state.open().await?;
    let master = state.master_key()?;
    let repo = Repo::new(store.pool().clone());
    let r = match cmd {
        KeysCommand::Rotate { alg, activate_after, max_token_lifetime } => {
            let (kid, activate_at) =
                palisade_idp::keys::rotate(&repo, &master, alg, activate_after.as_secs(), max_token_lifetime.as_secs())
                    .await?;
            out(&json!({ "kid": kid, "alg": alg.name(), "activate_at": activate_at }));
            Ok(())
        }
        KeysCommand::List => {
            let keys = palisade_idp::Keys::load(repo, master, Alg::ES256).await?;
            let now = u64::try_from(palisade_store::now()).unwrap_or(0);
            let ks = keys.keyset();
            let list: Vec<Value> = ks
                .1
                .published(now)
                .map(|k| json!({ "kid": k.kid, "alg": k.alg.name(), "activate_at": k.activate_at, "retire_at": k.retire_at }))
                .collect();
            out(&json!({ "signing_kid": ks.1.signing_key(now).map(|k| k.kid.clone()), "keys": list }));
            Ok(())
        }
    };
    store.close().await;
    r
}
