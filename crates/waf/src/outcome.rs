//! The outcome memo: per thread and rule set, what a *replayable* chain (see [`replayable`]) left behind when it
//! did not match: the store variables it wrote and the MATCHED_VAR / MATCHED_VAR_NAME it set. A replayable chain's
//! starter reads request variables fixed for the phase, and everything else it and its links read is in the
//! stores or set by the chain itself; so the stores' whole contents and the starter's values (names and bytes)
//! decide what it does. Those are the key, compared in full (never by hash alone), so replaying an outcome leaves
//! the transaction exactly as evaluating the chain would.
//!
//! CRS 920450 is the case this is for: it captures every request header name into a TX variable of its own, then
//! runs a chain over those variables. Evaluated, that is about 40k instructions per request; replayed, a few
//! thousand (some ten writes). When the stores were copied from a phase-1 snapshot and nothing was deleted since,
//! the key names the snapshot and holds only the variables written since (`Store::written`); otherwise it holds
//! every store variable (about 2.5 KiB with the CRS's TX). The memory holds what the keys hold: store values and
//! the starter's values (for 920450, the request's header names).
//!
//! Invariants: only non-matching outcomes are kept (a match records, scores and may disrupt: it is always
//! evaluated); only chains without `ctl` and without variable deletion; memory is bounded (entries, key size,
//! rule sets per thread); the memo never changes a decision (`tests/crs_ftw.rs` compares every stage of the CRS
//! suite with it on and off).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::macros::MacroStr;
use crate::rule::{Effect, Rule, SetOp};
use crate::vars::{self, Coll, Scalar, Var};

/// Outcomes kept per thread and rule set; past this the memo starts over.
const KEEP: usize = 256;
/// Keys longer than this (very many or very large stores or values) are not remembered: with [`KEEP`], at most
/// 2 MiB of keys per thread and rule set.
pub(crate) const MAX_KEY: usize = 8 * 1024;

/// Writes to one store a snapshot-relative key lists (and a remembered outcome reads from the write log) at most:
/// each is checked against the ones before it, so this bounds that work; past it the key lists every variable,
/// and the outcome is not remembered.
pub(crate) const MAX_WRITES: usize = 64;

/// What a chain that did not match changed: store writes `(store, name, name_hash, value)`, each variable once in
/// the order it was first written (so new ones in the order they were added), and the matched variable's (value,
/// name) when it set one.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) writes: Vec<(usize, Vec<u8>, u64, Vec<u8>)>,
    pub(crate) matched: Option<(Vec<u8>, Vec<u8>)>,
}

struct Memo {
    set: u64,
    map: HashMap<Box<[u8]>, Outcome, foldhash::fast::RandomState>,
}

thread_local! {
    static MEMOS: RefCell<Vec<Memo>> = const { RefCell::new(Vec::new()) };
    /// Outcomes replayed on this thread (tests only).
    #[cfg(test)]
    static REPLAYS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Run `f` on the outcome remembered for `key` under rule set `set`, if any.
pub(crate) fn lookup<R>(set: u64, key: &[u8], f: impl FnOnce(&Outcome) -> R) -> Option<R> {
    let r = MEMOS.try_with(|cell| cell.borrow().iter().find(|m| m.set == set)?.map.get(key).map(f)).ok().flatten();
    #[cfg(test)]
    if r.is_some() {
        REPLAYS.with(|n| n.set(n.get() + 1));
    }
    r
}

/// Outcomes this thread has replayed (for tests).
#[cfg(test)]
pub(crate) fn replays() -> u64 {
    REPLAYS.with(std::cell::Cell::get)
}

/// Remember `outcome` for `key` under rule set `set`.
pub(crate) fn remember(set: u64, key: &[u8], outcome: Outcome) {
    if key.len() > MAX_KEY {
        return;
    }
    let _ = MEMOS.try_with(|cell| {
        let mut memos = cell.borrow_mut();
        if let Some(m) = crate::memo::per_set(&mut memos, set, |m| m.set, || Memo { set, map: HashMap::default() }) {
            if m.map.len() >= KEEP {
                m.map.clear();
            }
            m.map.insert(key.into(), outcome);
        }
    });
}

/// Variables a link may read besides the starter's own values: the stores (in the key), what the chain itself sets
/// (MATCHED_VAR and the rest, TX:0-9 captures), and the rule's own fields.
fn keyed(v: Var) -> bool {
    matches!(
        v,
        Var::Coll(Coll::Store(_) | Coll::MatchedVars | Coll::Rule)
            | Var::Names(Coll::Store(_) | Coll::MatchedVars)
            | Var::Scalar(Scalar::MatchedVar | Scalar::MatchedVarName)
    )
}

/// Whether the operator's argument reads only what `ok` allows (no argument macro: always).
fn op_reads(rule: &Rule, ok: fn(Var) -> bool) -> bool {
    rule.op.as_ref().and_then(|op| op.macro_template()).is_none_or(|t| MacroStr::parse(t).vars_all(ok))
}

/// Whether a link's actions that run on its matches only write the stores, with names and values from keyed
/// variables (no `ctl`, no deletion).
fn writes_keyed(rule: &Rule) -> bool {
    rule.effects.iter().all(|e| match e {
        Effect::SetVar { op, name, value, .. } => {
            !matches!(op, SetOp::Delete) && name.vars_all(keyed) && value.vars_all(keyed)
        }
        Effect::Ctl(_) => false,
    })
}

/// Whether a chain's outcome follows from the stores and its starter's values alone (see the module docs): a
/// starter over request variables fixed for the phase (no `&` counts) with an operator argument from the stores
/// only, links that read only keyed variables, and store writes only.
pub(crate) fn replayable(rule: &Rule) -> bool {
    let stores_only = |v: Var| matches!(v, Var::Coll(Coll::Store(_)));
    rule.marker.is_none()
        && rule.chain.is_some()
        && rule.op.is_some()
        && !rule.includes.is_empty()
        && rule.targets.iter().all(|t| !t.count && vars::stable_in_phase(t.var))
        && op_reads(rule, stores_only)
        && writes_keyed(rule)
        && std::iter::successors(rule.chain.as_deref(), |r| r.chain.as_deref())
            .all(|l| l.op.is_some() && l.targets.iter().all(|t| keyed(t.var)) && op_reads(l, keyed) && writes_keyed(l))
}

/// Append a length-prefixed field to a key.
pub(crate) fn push_field(key: &mut Vec<u8>, bytes: &[u8]) {
    key.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    key.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::replays;
    use crate::{RequestHead, RuleSet};

    /// CRS 920450's shape: a TX variable per header name (captured), then a chain over them against a list from TX
    /// (a default unless the transaction set one, as crs-setup does); rule 20 blocks on the score the chain adds.
    const RULES: &str = r#"SecRuleEngine On
SecRule &TX:restricted "@eq 0" "id:1,phase:1,pass,nolog,setvar:tx.restricted=/proxy/ /lock-token/"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:10,phase:1,block,capture,t:none,t:lowercase,multiMatch,\
    setvar:'tx.header_name_10_%{tx.0}=/%{tx.0}/',chain"
    SecRule TX:/^header_name_10_/ "@within %{tx.restricted}" "setvar:tx.score=+5"
SecRule TX:score "@ge 5" "id:20,phase:1,deny,status:403"
"#;

    /// (blocking rule, TX variables in order, MATCHED_VAR, MATCHED_VAR_NAME) after phase 1.
    type State = (Option<u32>, Vec<(String, String)>, String, String);

    fn run(rs: &RuleSet, headers: &[&str], restricted: Option<&str>) -> State {
        run_uri(rs, "/", headers, restricted)
    }

    fn run_uri(rs: &RuleSet, uri: &str, headers: &[&str], restricted: Option<&str>) -> State {
        let mut tx = rs.transaction("t", IpAddr::V4(Ipv4Addr::LOCALHOST));
        if let Some(r) = restricted {
            tx.set_var("restricted", r);
        }
        let head = RequestHead {
            method: "GET",
            uri: uri.as_bytes(),
            protocol: "HTTP/1.1",
            headers: headers.iter().map(|h| (h.as_bytes(), &b"x"[..])).collect(),
        };
        let iv = tx.process_request_headers(&head);
        let tx_vars = tx.tx_vars();
        let (mv, mvn) = tx.matched_var();
        (iv.map(|i| i.rule_id), tx_vars, mv, mvn)
    }

    /// Variables written after the snapshot the stores were copied from are in the key (a write the chain reads
    /// changes its outcome); after a deletion the key holds every variable; without a snapshot likewise. In each
    /// case the second identical request is replayed and leaves what evaluation leaves.
    #[test]
    fn writes_and_deletions_after_the_snapshot_are_in_the_key() {
        let src = RULES.replace(
            "SecRule REQUEST_HEADERS_NAMES",
            "SecRule ARGS:restrict \"@rx .\" \"id:5,phase:1,pass,nolog,setvar:tx.restricted=%{MATCHED_VAR}\"\n\
             SecRule ARGS:forget \"@rx .\" \"id:6,phase:1,pass,nolog,setvar:!tx.restricted\"\n\
             SecRule REQUEST_HEADERS_NAMES",
        );
        let mut rs = RuleSet::parse_str(&src, "t.conf").unwrap();
        let mut off = RuleSet::parse_str(&src, "t.conf").unwrap();
        off.set_verdict_memo(false);
        let benign = ["Host", "User-Agent", "Accept"];
        let same = |rs: &RuleSet, uri: &str| {
            let expected = run_uri(&off, uri, &benign, None);
            assert_eq!(run_uri(rs, uri, &benign, None), expected, "{uri}");
            expected
        };
        assert_eq!(same(&rs, "/").0, None);
        // Written after the snapshot, read by the chain: not the outcome remembered for "/".
        let before = replays();
        assert_eq!(same(&rs, "/?restrict=/Accept/").0, Some(20));
        assert_eq!(replays(), before);
        for uri in ["/?restrict=/nothing/", "/?forget=1"] {
            let before = replays();
            assert_eq!(same(&rs, uri).0, None);
            assert_eq!(same(&rs, uri).0, None);
            assert_eq!(replays(), before + 1, "{uri}");
        }
        rs.set_init_snapshot(false);
        let before = replays();
        same(&rs, "/?x=1");
        same(&rs, "/?x=1");
        assert_eq!(replays(), before + 1, "without a snapshot");

        // More writes than a key or an outcome lists (a TX variable per header name): evaluated every time.
        rs.set_init_snapshot(true);
        let names: Vec<String> = (0..super::MAX_WRITES + 6).map(|i| format!("X-H{i}")).collect();
        let many: Vec<&str> = names.iter().map(String::as_str).collect();
        let before = replays();
        for _ in 0..2 {
            let expected = run_uri(&off, "/", &many, None);
            assert_eq!(run_uri(&rs, "/", &many, None), expected);
            assert_eq!(expected.1.len(), 1 + 1 + many.len(), "restricted, TX.0 and one per header");
        }
        assert_eq!(replays(), before, "not remembered");
    }

    #[test]
    fn a_replayed_outcome_leaves_what_evaluation_leaves() {
        let mut rs = RuleSet::parse_str(RULES, "t.conf").unwrap();
        let mut off = RuleSet::parse_str(RULES, "t.conf").unwrap();
        off.set_verdict_memo(false);
        assert_eq!(rs.replayable.iter().filter(|&&r| r).count(), 1);
        let benign = ["Host", "User-Agent", "Accept"];
        let expected = run(&off, &benign, None);
        assert_eq!(expected.0, None);
        // multiMatch: `^.*$` matches the name before any transformation.
        assert!(expected.1.contains(&("header_name_10_User-Agent".into(), "/User-Agent/".into())), "{expected:?}");
        assert!(expected.1.contains(&("0".into(), "Accept".into())), "{expected:?}");
        assert_eq!((expected.2.as_str(), expected.3.as_str()), ("Accept", "REQUEST_HEADERS_NAMES:Accept"));

        let before = replays();
        assert_eq!(run(&rs, &benign, None), expected, "evaluated, remembered");
        assert_eq!(replays(), before);
        assert_eq!(run(&rs, &benign, None), expected, "replayed");
        assert_eq!(replays(), before + 1);

        // Other header names, or other TX contents, are not the remembered outcome: evaluated (and they match).
        let attack = ["Host", "proxy", "Accept"];
        assert_eq!(run(&rs, &attack, None), run(&off, &attack, None));
        assert_eq!(run(&rs, &attack, None).0, Some(20));
        assert_eq!(run(&rs, &benign, Some("/Accept/")).0, Some(20));
        assert_eq!(replays(), before + 1, "a match is never remembered");

        // Off: nothing is replayed.
        rs.set_verdict_memo(false);
        run(&rs, &benign, None);
        assert_eq!(replays(), before + 1);
    }

    #[test]
    fn chains_reading_request_data_in_a_link_or_deleting_are_not_replayable() {
        let rs = RuleSet::parse_str(
            r#"SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:1,phase:1,pass,capture,setvar:tx.a=%{tx.0},chain"
    SecRule REQUEST_HEADERS:Host "@rx x" "t:none"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:2,phase:1,pass,capture,setvar:!tx.a,chain"
    SecRule TX:a "@rx x" "t:none"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:3,phase:1,pass,capture,setvar:tx.a=%{REMOTE_ADDR},chain"
    SecRule TX:a "@rx x" "t:none"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:4,phase:1,pass,capture,ctl:ruleRemoveById=1,chain"
    SecRule TX:a "@rx x" "t:none"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:5,phase:1,pass,capture,setvar:tx.a=%{tx.0},chain"
    SecRule TX:a "@rx %{DURATION}" "t:none"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:6,phase:1,pass,capture,setvar:tx.a=%{tx.0},chain"
    SecRule TX:a "@rx x" "t:none"
"#,
            "t.conf",
        )
        .unwrap();
        let ids: Vec<u32> = rs.rules.iter().zip(&rs.replayable).filter(|(_, &r)| r).map(|(r, _)| r.id).collect();
        assert_eq!(ids, [6]);
    }

    #[test]
    fn crs_920450_is_replayable() {
        let crs = "/work/shared/data/crs";
        let src = format!("Include {crs}/crs-setup.conf.example\nInclude {crs}/rules/*.conf\nSecRuleEngine On\n");
        let rs = RuleSet::parse_str(&src, "crs.conf").unwrap();
        let ids: Vec<u32> = rs.rules.iter().zip(&rs.replayable).filter(|(_, &r)| r).map(|(r, _)| r.id).collect();
        assert!(ids.contains(&920450) && ids.contains(&920420), "{ids:?}");
    }
}
