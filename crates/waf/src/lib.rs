//! Palisade WAF: a ModSecurity SecLang parser and rule engine, large enough to run the OWASP Core Rule Set (v4 and
//! 3.3) as written and to decide as ModSecurity v2 does (Coraza where v2 is unclear).
//!
//! It is for: loading `.conf` files ([`RuleSet::load`]), compiling them once, and running one [`Transaction`] per
//! HTTP request through phases 1-5, returning an [`Intervention`] when a rule denies. It is not for: HTTP itself,
//! the proxy, audit log files, or persistent collections. `IP`, `GLOBAL`, `SESSION`, `USER` and `RESOURCE` live for
//! one transaction only (`initcol`, `setsid`, `expirevar`, `deprecatevar` are accepted and do nothing).
//! Operators and transformations come from `palisade-waf-ops`; request body parsing from `palisade-waf-body`.
//!
//! Semantics chosen where engines differ (each checked against the CRS v4 regression suite, 99.9 % passing, see
//! `tests/crs_ftw.rs`):
//! - non-disruptive actions (setvar, ctl) run once per matched value, with that value's `capture` groups in
//!   TX:0..9 (v2); a chain is logged and disrupts with its first rule's actions when every rule matched;
//! - `REQUEST_FILENAME`/`REQUEST_BASENAME` are percent-decoded as the web server passes them; `REQUEST_URI` and
//!   `QUERY_STRING` stay raw; `REQUEST_BODY` exists for the URLENCODED processor or `ctl:forceRequestBodyVariable`;
//! - the body processor is URLENCODED/MULTIPART by Content-Type, JSON/XML only through `ctl:requestBodyProcessor`;
//!   a parse failure sets `REQBODY_ERROR`/`REQBODY_PROCESSOR_ERROR` and the message;
//! - `SecRuleRemoveBy*`/`SecRuleUpdateTarget*` apply to rules defined before them; `ctl:ruleRemoveByTag` compares
//!   tags exactly (case-insensitive), `SecRuleRemoveByTag` takes a regex as in v2.
//!
//! Compiled once: variable selectors (regex keys included), operators, transformation chains interned in a trie;
//! a transaction caches each distinct value's transformed forms per chain prefix. Pure rules (operator and
//! transformations depend on the value's bytes alone, variables fixed for the phase) are decided through a
//! per-thread verdict memo (`memo.rs`; [`RuleSet::set_verdict_memo`]) that never changes a decision; phase 1's
//! request-independent start (the CRS's TX initialization) is replayed from a per-thread snapshot (`init.rs`;
//! [`RuleSet::set_init_snapshot`]); chains whose outcome follows from the stores and their starter's values keep
//! their non-matching outcomes per thread (`outcome.rs`). A benign GET through CRS v4 at PL1 costs about 45 µs
//! with the memo off, 8 µs with its values remembered and about 18 µs when its query values and session cookie
//! are new (`tests/perf.rs`, release, on the 2-core reference machine).

mod compile;
mod config;
mod init;
mod macros;
mod memo;
mod outcome;
mod rule;
mod tx;
mod vars;

use std::path::PathBuf;

pub use compile::{OwnedTransaction, RuleSet};
pub use tx::{PresetVar, Transaction};

/// A configuration that could not be loaded: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

/// `SecRuleEngine`: whether rules run, and whether they may interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMode {
    On,
    DetectionOnly,
    Off,
}

/// The request line and headers, as received (nothing decoded).
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The raw request target, query included.
    pub uri: &'a [u8],
    /// e.g. "HTTP/1.1".
    pub protocol: &'a str,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

/// A rule (for a chain: the whole chain, reported with its first rule's id) that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    pub id: u32,
    pub phase: u8,
    /// `msg` with macros expanded.
    pub msg: String,
    /// `logdata` with macros expanded (empty when the rule has none).
    pub logdata: String,
    /// The variable that matched, e.g. "ARGS:id".
    pub var_name: String,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
    /// False for `nolog` rules (ModSecurity would not write them to the error log).
    pub log: bool,
}

/// A logged match as [`Transaction::logged_matches`] lends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedMatch<'a> {
    pub id: u32,
    pub msg: std::borrow::Cow<'a, str>,
    pub var_name: std::borrow::Cow<'a, str>,
    pub severity: Option<u8>,
}

/// What the engine decided to do with the request (deny, drop, redirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intervention {
    pub status: u16,
    pub rule_id: u32,
    pub msg: String,
    /// `Some(url)` for `redirect`.
    pub redirect: Option<String>,
    /// True for `drop` (close the connection).
    pub drop: bool,
}

#[cfg(test)]
mod tests;
