//! Demo identities for `palisade up`: a confidential client, a public client and two users
//! with different roles. Credentials go to `<data>/demo-credentials.txt` (0600, `KEY=value`
//! lines, so a shell can source it); they are kept across runs and re-issued if the file or
//! the database lost them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use palisade_idp::model::{AuthMethod, ClientSpec, GrantType};
use palisade_idp::ops::{self, NewUser, OpsError};
use palisade_idp::secrets::{random_token, verify_secret};
use palisade_idp::Repo;

pub const CLIENT_ID: &str = "demo-service";
pub const PUBLIC_CLIENT_ID: &str = "demo-app";
pub const USER: &str = "alice";
pub const ADMIN_USER: &str = "admin";
pub const REDIRECT_URI: &str = "http://localhost:8400/callback";

fn confidential() -> ClientSpec {
    ClientSpec {
        client_id: CLIENT_ID.into(),
        name: "Demo service".into(),
        token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
        grant_types: vec![
            GrantType::ClientCredentials,
            GrantType::AuthorizationCode,
            GrantType::RefreshToken,
            GrantType::TokenExchange,
        ],
        redirect_uris: vec![REDIRECT_URI.into()],
        post_logout_redirect_uris: vec![],
        scopes: ["openid", "profile", "email", "offline_access", "orders:read", "orders:write", "payments:charge"]
            .map(String::from)
            .to_vec(),
        // Both order scopes by default, so the banner's one-line token can read and create orders.
        default_scopes: vec!["orders:read".into(), "orders:write".into()],
        audiences: vec!["orders".into(), "payments".into()],
        jwks: None,
        tls_client_auth_subject_dn: None,
        skip_consent: false,
    }
}

fn public() -> ClientSpec {
    ClientSpec {
        client_id: PUBLIC_CLIENT_ID.into(),
        name: "Demo app".into(),
        token_endpoint_auth_method: AuthMethod::None,
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        scopes: ["openid", "profile", "email", "orders:read"].map(String::from).to_vec(),
        default_scopes: vec!["openid".into()],
        audiences: vec!["orders".into()],
        ..confidential()
    }
}

fn read(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Make sure the demo clients and users exist with the credentials in the file; returns its path.
pub async fn ensure(repo: &Repo, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("demo-credentials.txt");
    let old = read(&path);
    let kept = |k: &str| old.get(k).cloned();

    let secret = match (repo.client(CLIENT_ID).await?, kept("CLIENT_SECRET")) {
        (Some(c), Some(s)) if c.secret_hash.as_deref().is_some_and(|h| verify_secret(h, &s)) => s,
        (Some(_), _) => ops::rotate_client_secret(repo, CLIENT_ID).await?,
        (None, _) => ops::add_client(repo, &confidential()).await?.context("the demo client has no secret")?,
    };
    if repo.client(PUBLIC_CLIENT_ID).await?.is_none() {
        ops::add_client(repo, &public()).await?;
    }
    let mut passwords = Vec::new();
    for (user, key, role, name) in
        [(USER, "PASSWORD", "customer", "Alice Demo"), (ADMIN_USER, "ADMIN_PASSWORD", "admin", "Admin Demo")]
    {
        let password = match (repo.user(user).await?, kept(key)) {
            (Some(u), Some(p)) if verify_secret(&u.password_hash, &p) => p,
            (Some(_), _) => {
                let p = random_token(12);
                ops::set_password(repo, user, p.clone()).await?;
                p
            }
            (None, _) => {
                let p = random_token(12);
                let new = NewUser {
                    username: user.into(),
                    password: p.clone(),
                    roles: vec![role.into()],
                    name: Some(name.into()),
                    email: Some(format!("{user}@example.test")),
                };
                match ops::add_user(repo, new).await {
                    Ok(_) | Err(OpsError::Conflict(_)) => p,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        passwords.push(password);
    }
    let text = format!(
        "CLIENT_ID={CLIENT_ID}\nCLIENT_SECRET={secret}\nPUBLIC_CLIENT_ID={PUBLIC_CLIENT_ID}\nREDIRECT_URI={REDIRECT_URI}\n\
         USER={USER}\nPASSWORD={}\nADMIN_USER={ADMIN_USER}\nADMIN_PASSWORD={}\n",
        passwords[0], passwords[1]
    );
    palisade_crypto::write_secret_file(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
