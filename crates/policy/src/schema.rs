//! The Cedar schema every policy is validated against (strict mode), and the entity/action names it declares.
//!
//! Invariant: the context built in `decide` has exactly the shape declared here (a unit test checks every
//! context against the schema), so a validated policy can only fail at run time on extension or arithmetic
//! errors, which deny.
//!
//! # Claims
//!
//! Cedar records are closed: a strict-mode policy may only name attributes the schema declares, yet tokens
//! carry arbitrary claims. We therefore expose claims twice:
//!
//! * `context.claims` is a record of the registered JWT/OIDC claims, all **optional** (test with `has`
//!   before use). A claim whose JSON type does not fit its declared type is left out of the record (never
//!   an error); `aud`, `amr`, `groups`, `roles` and `entitlements` also accept a single string.
//! * `context.claims_str` is a `Set<String>` with one entry per scalar in the claims, every claim included:
//!   `"<path>=<value>"`. The path is the claim name, nested object keys joined with `.`, and `[]` appended
//!   for each array level; the value is the string itself, or the JSON text of a number or boolean
//!   (`true`, `42`). So `{"tenant":"acme","groups":["a","b"],"org":{"id":7}}` gives `tenant=acme`,
//!   `groups[]=a`, `groups[]=b`, `org.id=7`. `null`s add nothing. Claim names containing `=` are left out
//!   (they could not be addressed unambiguously). Strings and numbers/booleans with the same text are not
//!   distinguished (`"7"` and `7` both give `org.id=7`), nor is a flat claim named `a.b` from a nested one.
//!   More than [`MAX_CLAIM_ENTRIES`] entries or nesting deeper than [`MAX_CLAIM_DEPTH`] is an evaluation
//!   error, which denies: dropping entries silently could skip a `forbid`.

/// The Cedar schema (human-readable syntax). Namespace-less; principals `User`, `Service`, `Client`,
/// `Anonymous`; resource `Route` whose entity id is the route name.
pub const SCHEMA: &str = r#"// Palisade request authorization schema.
entity User, Service, Client, Anonymous;
entity Route;

// Registered JWT (RFC 7519, RFC 9068) and OIDC claims; every attribute is optional.
type Claims = {
  sub?: String,
  iss?: String,
  aud?: Set<String>,
  azp?: String,
  client_id?: String,
  jti?: String,
  scope?: String,
  exp?: Long,
  iat?: Long,
  nbf?: Long,
  auth_time?: Long,
  acr?: String,
  amr?: Set<String>,
  sid?: String,
  email?: String,
  email_verified?: Bool,
  name?: String,
  given_name?: String,
  family_name?: String,
  preferred_username?: String,
  groups?: Set<String>,
  roles?: Set<String>,
  entitlements?: Set<String>,
};

type RequestContext = {
  path: String,
  method: String,
  authenticated: Bool,
  scopes: Set<String>,
  roles: Set<String>,
  client_id: String,
  issuer: String,
  client_ip: ipaddr,
  mtls_identity: String,
  time: Long,
  claims: Claims,
  claims_str: Set<String>,
};

action "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "detokenize" appliesTo {
  principal: [User, Service, Client, Anonymous],
  resource: [Route],
  context: RequestContext,
};
"#;

/// The HTTP actions, in the order route shortcuts list them when a requirement names no method.
pub(crate) const HTTP_ACTIONS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Every action the schema declares (`detokenize` is reserved for the tokenization filter).
pub(crate) const ACTIONS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "detokenize"];

/// Claims whose string values are exposed as `context.claims.<name>: String`.
pub(crate) const STRING_CLAIMS: [&str; 13] = [
    "sub",
    "iss",
    "azp",
    "client_id",
    "jti",
    "scope",
    "acr",
    "sid",
    "email",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
];

/// Claims exposed as `Set<String>` (from an array of strings or a single string).
pub(crate) const SET_CLAIMS: [&str; 5] = ["aud", "amr", "groups", "roles", "entitlements"];

/// Claims exposed as `Long` (integers only).
pub(crate) const LONG_CLAIMS: [&str; 4] = ["exp", "iat", "nbf", "auth_time"];

/// Claims exposed as `Bool`.
pub(crate) const BOOL_CLAIMS: [&str; 1] = ["email_verified"];

/// Most `claims_str` entries one request may produce before evaluation fails (denies).
pub const MAX_CLAIM_ENTRIES: usize = 1024;

/// Deepest claim nesting (objects and arrays) flattened into `claims_str` before evaluation fails (denies).
pub const MAX_CLAIM_DEPTH: usize = 8;
