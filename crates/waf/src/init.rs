//! The request-independent start of phase 1, evaluated once per thread and replayed: the CRS begins every request
//! with ~30 rules that only read and write TX from configuration constants (REQUEST-901: defaults, anomaly scores
//! set to 0), about 50 new TX variables per request when evaluated rule by rule.
//!
//! A [`Snapshot`] covers the longest start of phase 1's rule list in which every rule that runs is one of:
//! - *fixed*: it reads only the stores (TX, IP, ...) and `RULE`, and writes only the stores (setvar), its match
//!   record, MATCHED_VAR(_NAME)/HIGHEST_SEVERITY, the engine mode and rule removals (`ctl`); or it reads only those and matches nothing (then whatever it
//!   would do on a match does not matter). Its outcome follows from the stores the transaction starts with, which
//!   key the snapshot (the gateway sets a few with `set_var`), and from the rule set;
//! - *commuting*: it reads no store and none of what fixed rules write, writes no store, and cannot disrupt, skip
//!   or remove rules (a `modsecurity.conf` prelude's Content-Type rules choosing the body processor). It is
//!   evaluated normally, at its place among the replayed records, so match order and MATCHED_VAR stay as written.
//!
//! Rules that the walk skips (`skip`, `skipAfter` of a fixed rule) need neither. Replaying the snapshot sets the
//! stores to their final values, appends the fixed rules' records in order, and resumes the walk where the
//! snapshot ends with its pending skip. It is not used when a removal (`ctl:ruleRemove*` set before phase 1)
//! selects a fixed rule, or when the transaction was interrupted or has matches already.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use crate::compile::RuleSet;
use crate::macros::{MacroStr, Part};
use crate::rule::{Ctl, Disruptive, Effect, Rule, RuleSel};
use crate::tx::{Flow, Store};
use crate::vars::{Coll, Key, Scalar, Target, Var};
use crate::EngineMode;

/// A rule the snapshot has no verdict on.
pub(crate) const UNKNOWN: u32 = u32::MAX;
/// A rule that matches nothing.
pub(crate) const NO_MATCH: u32 = u32::MAX - 1;

/// One step of the replay, in rule-list order.
#[derive(Debug)]
pub(crate) enum Step {
    /// A fixed rule matched: its record (text ranges in [`Snapshot::text`]).
    Record {
        rule: usize,
        /// The rule's severity and `log` (the replay does not read the rule).
        severity: Option<u8>,
        log: bool,
        msg: Range<usize>,
        logdata: Range<usize>,
        var_name: Range<usize>,
    },
    /// MATCHED_VAR and MATCHED_VAR_NAME take the values the last fixed match gave them.
    Matched,
    /// A commuting rule, evaluated by the transaction.
    Eval(usize),
    /// A fixed rule's `ctl` changed the engine mode, or removed rules or targets for the rest of the transaction.
    Mode(EngineMode),
    Remove(Vec<RuleSel>),
    RemoveTargets(Vec<(RuleSel, Arc<Target>)>),
}

/// A match of the snapshot that only records and skips (see `Snapshot::jumps`): what the walk records without the
/// rule, in one arena (`Snapshot::jump_text`) rather than a buffer per name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Jump {
    /// Its position in the phase's list, and where the walk resumes.
    pub(crate) at: u32,
    pub(crate) resume: u32,
    /// The first matched variable's name (the record's), and MATCHED_VAR_NAME and MATCHED_VAR after the last match.
    pub(crate) first_name: (u32, u32),
    pub(crate) last_name: (u32, u32),
    pub(crate) last_value: (u32, u32),
}

/// A rule's verdict made on the snapshot's stores, for rules that read only named TX variables (and RULE): it holds
/// in a transaction the snapshot was replayed into while none of those variables was written since (the CRS's
/// anomaly-score totals, 949052-949160, which add scores of 0 to totals of 0 in a benign request, and the blocking
/// checks 949110/949111 on those totals; other rules write TX:0 and a variable per header before them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pristine {
    /// [`NO_MATCH`] for a starter that matches nothing; or the index in `Snapshot::matches` (an empty list for a
    /// `SecAction`) of what a rule matched whose match records it and makes `writes`: no chain or capture,
    /// passing, and only `setvar`s of TX variables whose values follow from what it reads. `run_rule` then replays
    /// the record and the writes (`Transaction::replay_record`).
    pub(crate) verdict: u32,
    /// The TX variables it reads or updates, a bit per position in the snapshot's TX (positions below 256).
    pub(crate) reads: [u64; 4],
    /// What a match writes to TX (name, `name_hash`, value) where its `setvar`s change the snapshot's TX (980099's
    /// combined scores), in order; nothing for the anomaly-score totals.
    pub(crate) writes: Vec<TxWrite>,
    /// The rule reads TX by a regex key: it holds only while no variable added since the replay is one the key
    /// selects (`Store::adds`).
    pub(crate) added: bool,
}

/// A write to TX: the variable's name, its `name_hash` and its new value.
pub(crate) type TxWrite = (Vec<u8>, u64, Vec<u8>);

/// Template `t`'s frozen expansion in `args` (sorted by template, as `Snapshot::args`).
pub(crate) fn arg_in<'a>(args: &'a [(TemplateAt, Arc<[u8]>)], t: &str) -> Option<&'a Arc<[u8]>> {
    let key = (t.as_ptr() as usize, t.len());
    args.binary_search_by_key(&key, |(k, _)| *k).ok().and_then(|i| args.get(i)).map(|(_, v)| v)
}

/// Where an operator's macro template is: the address and length of its text in the rule set.
pub(crate) type TemplateAt = (usize, usize);

#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) steps: Vec<Step>,
    /// The stores after the fixed rules ran.
    pub(crate) stores: Vec<Store>,
    pub(crate) text: Vec<u8>,
    /// MATCHED_VAR and MATCHED_VAR_NAME for [`Step::Matched`].
    pub(crate) matched: (Vec<u8>, Vec<u8>),
    /// The fixed rules (rule indexes): a removal that selects one of them rules the snapshot out.
    pub(crate) fixed: Vec<usize>,
    /// Position in phase 1's list where the walk resumes, with the skip pending there (`skip_after` as the rule
    /// whose `skipAfter` it is, so the walk can borrow it from the rule set).
    pub(crate) end: usize,
    pub(crate) skip: u32,
    pub(crate) skip_after_rule: Option<usize>,
    /// Per rule index: the verdict on a starter that reads only *frozen* store variables (no rule after the fixed
    /// ones can write them: the CRS's `TX:DETECTION_PARANOIA_LEVEL "@lt 2"` checks, in every phase), made on the
    /// stores as the snapshot leaves them, so it holds in every transaction the snapshot was replayed into
    /// (`set_var` after phase 1 drops the snapshot from the transaction): [`UNKNOWN`] (not frozen), [`NO_MATCH`],
    /// or the index in `matches` of what it matched.
    pub(crate) verdicts: Vec<u32>,
    /// Per frozen starter that matches: (MATCHED_VAR_NAME, MATCHED_VAR) of each matched value, in order.
    pub(crate) matches: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Per rule index: its index in `pristine_at`, or [`UNKNOWN`].
    pub(crate) pristine: Vec<u32>,
    /// Verdicts that hold while the TX variables a rule reads are as the snapshot leaves them (see [`Pristine`]).
    pub(crate) pristine_at: Vec<Pristine>,
    /// Per rule index: a rule without chain whose only variable is one scalar and whose operator argument is frozen
    /// (`args`): whether it matches follows from the scalar's value (the CRS's `REQUEST_METHOD "!@within
    /// %{tx.allowed_methods}"`, 911100, and 920430 on the protocol). `Transaction::run_rule` keeps the values such
    /// a rule did not match per thread and snapshot (`memo::Memo::frozen_miss`).
    pub(crate) scalar_frozen: Vec<bool>,
    /// Per phase, a bit per position of the phase's list: a marker, or a rule whose verdict is [`NO_MATCH`]. With no
    /// skip pending, the walk passes over these without reading the rules (see `Transaction::run_phase`): exactly
    /// what `Flow::passes` and `run_rule` would do, at a bit test instead of a cache miss on each rule.
    pub(crate) passable: [Vec<u64>; 5],
    /// Per phase, a bit per position: a `nolog` rule whose verdict is a match that only records it and moves the
    /// walk on with `skipAfter` (the CRS's paranoia-level checks that skip the levels above the configured one);
    /// `jumps` says, sorted by position, what the walk records for each and where it resumes. The walk records the
    /// match and resumes there without reading the rule (`Transaction::replay_jump`).
    pub(crate) jumpable: [Vec<u64>; 5],
    pub(crate) jumps: [Vec<Jump>; 5],
    /// Per phase, per 64-bit word of `jumpable`: the jumps at positions before the word (a jump's index in `jumps` is
    /// this plus the set bits before it in its word).
    pub(crate) jump_rank: [Vec<u32>; 5],
    /// The matched names and values the jumps record, one after the other (see `Jump`).
    pub(crate) jump_text: Vec<u8>,
    /// The variables the rules of `passable` and `jumps` read: a target removal naming one of them turns both off.
    pub(crate) frozen_vars: Vec<crate::vars::Var>,
    /// Operator arguments whose macros read only frozen store variables (`@within %{tx.allowed_methods}`), expanded
    /// on the stores as the snapshot leaves them, by the address and length of the operator's template (sorted):
    /// what `MacroEnv::expand` would give in every transaction the snapshot was replayed into.
    pub(crate) args: Vec<(TemplateAt, Arc<[u8]>)>,
    /// Unique in the process (see [`next_id`]): keys made relative to this snapshot's stores name it.
    pub(crate) id: u64,
}

static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A snapshot id no other snapshot in the process has.
pub(crate) fn next_id() -> u64 {
    IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Snapshot {
    /// Rule `ri`'s verdict (see `verdicts`).
    pub(crate) fn verdict(&self, ri: usize) -> u32 {
        self.verdicts.get(ri).copied().unwrap_or(UNKNOWN)
    }

    /// Whether rule `ri` is decided by one scalar's value (see `scalar_frozen`).
    pub(crate) fn scalar_frozen(&self, ri: usize) -> bool {
        self.scalar_frozen.get(ri).copied().unwrap_or(false)
    }

    /// Rule `ri`'s verdict on the snapshot's TX variables, if it has one (see [`Pristine`]).
    #[inline]
    pub(crate) fn pristine(&self, ri: usize) -> Option<&Pristine> {
        self.pristine_at.get(*self.pristine.get(ri)? as usize)
    }

    /// The jump at position `i` of phase `phase`'s list (see `jumps`).
    pub(crate) fn jump(&self, phase: u8, i: usize) -> Option<&Jump> {
        let p = usize::from(phase.wrapping_sub(1));
        let (bits, rank, jumps) = (self.jumpable.get(p)?, self.jump_rank.get(p)?, self.jumps.get(p)?);
        let (w, before) = (*bits.get(i / 64)?, *rank.get(i / 64)?);
        if w >> (i % 64) & 1 == 0 {
            return None;
        }
        let k = before as usize + (w & ((1u64 << (i % 64)) - 1)).count_ones() as usize;
        jumps.get(k).filter(|j| j.at as usize == i)
    }

    /// `jump_rank` for `jumpable`.
    pub(crate) fn ranks(jumpable: &[Vec<u64>; 5]) -> [Vec<u32>; 5] {
        jumpable.each_ref().map(|bits| {
            let mut n = 0u32;
            bits.iter()
                .map(|w| {
                    let before = n;
                    n += w.count_ones();
                    before
                })
                .collect()
        })
    }

    /// A jump's text (a range of `jump_text`).
    pub(crate) fn jump_text(&self, r: (u32, u32)) -> &[u8] {
        self.jump_text.get(r.0 as usize..r.1 as usize).unwrap_or_default()
    }

    /// The frozen expansion of operator template `t` (see `args`).
    pub(crate) fn arg(&self, t: &str) -> Option<&Arc<[u8]>> {
        arg_in(&self.args, t)
    }

    /// The walk's state where the snapshot ends.
    pub(crate) fn flow<'r>(&self, rs: &'r RuleSet) -> Flow<'r> {
        let skip_after = self.skip_after_rule.and_then(|i| rs.rules.get(i)).and_then(|r| r.skip_after.as_deref());
        Flow { skip: self.skip, skip_after, skip_after_id: skip_after.and_then(|s| s.parse().ok()) }
    }
}

/// Whether position `i` is set in a phase's bits ([`Snapshot::passable`], [`Snapshot::jumpable`]).
#[inline]
pub(crate) fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
}

/// The first position from `i` on whose bit is clear in a phase's [`Snapshot::passable`] bits.
pub(crate) fn pass_from(bits: &[u64], mut i: usize) -> usize {
    while let Some(&w) = bits.get(i / 64) {
        let run = (w >> (i % 64)).trailing_ones() as usize;
        i += run;
        if run == 0 || !i.is_multiple_of(64) {
            break;
        }
    }
    i
}

/// A snapshot (or the knowledge that none applies) for one rule set, engine mode and starting stores.
struct Entry {
    set: u64,
    mode: EngineMode,
    initial: Vec<Store>,
    snap: Option<Arc<Snapshot>>,
}

/// Entries kept per thread: one per (rule set, starting TX) in use; a reload or another route's variables add one.
const KEEP: usize = 8;

thread_local! {
    static SNAPSHOTS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// This thread's snapshot for (`set`, `mode`, `initial` stores), made with `build` on first use.
pub(crate) fn cached(
    set: u64,
    mode: EngineMode,
    initial: &[Store],
    build: impl FnOnce() -> Option<Snapshot>,
) -> Option<Arc<Snapshot>> {
    let same = |e: &Entry| e.set == set && e.mode == mode && Store::same_lists(&e.initial, initial);
    if let Ok(Some(found)) = SNAPSHOTS.try_with(|c| c.borrow().iter().find(|e| same(e)).map(|e| e.snap.clone())) {
        return found;
    }
    // Built outside the borrow: building runs a transaction.
    let snap = build().map(Arc::new);
    let _ = SNAPSHOTS.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= KEEP {
            c.remove(0);
        }
        c.push(Entry { set, mode, initial: initial.to_vec(), snap: snap.clone() });
    });
    snap
}

/// Variables a fixed rule may read: their values follow from the starting stores and the rules before.
fn fixed_var(v: Var) -> bool {
    matches!(v, Var::Coll(Coll::Store(_) | Coll::Rule))
}

/// Variables a fixed rule writes, or whose value depends on which rule ran last: a commuting rule must not read them.
fn shared_var(v: Var) -> bool {
    matches!(
        v,
        Var::Coll(Coll::Store(_) | Coll::MatchedVars)
            | Var::Names(Coll::Store(_) | Coll::MatchedVars)
            | Var::Scalar(Scalar::MatchedVar | Scalar::MatchedVarName | Scalar::HighestSeverity)
    )
}

/// Whether everything `link` reads to decide whether it matches (variables, operator argument) satisfies `ok`.
fn link_reads(link: &Rule, ok: &impl Fn(Var) -> bool) -> bool {
    link.targets.iter().all(|t| ok(t.var))
        && link.op.as_ref().is_none_or(|op| match op.macro_template() {
            Some(t) => MacroStr::parse(t).vars_all(ok),
            None => op.is_pure(),
        })
}

pub(crate) fn links(rule: &Rule) -> impl Iterator<Item = &Rule> {
    std::iter::successors(Some(rule), |r| r.chain.as_deref())
}

/// Whether the starter decides whether it matches from fixed variables alone.
pub(crate) fn starter_reads_fixed(rule: &Rule) -> bool {
    link_reads(rule, &fixed_var)
}

/// Whether the whole chain reads only fixed variables and writes only the stores, the engine mode and the
/// transaction's rule removals (a test setup's `ctl:ruleEngine=DetectionOnly`, `ctl:ruleRemoveById`).
pub(crate) fn fixed(rule: &Rule) -> bool {
    links(rule).all(|l| {
        link_reads(l, &fixed_var)
            && l.effects.iter().all(|e| match e {
                Effect::SetVar { name, value, .. } => name.vars_all(fixed_var) && value.vars_all(fixed_var),
                Effect::Ctl(c) => matches!(c, Ctl::RuleEngine(_) | Ctl::RuleRemove(_) | Ctl::RuleRemoveTarget(..)),
            })
            && l.msg.as_ref().is_none_or(|m| m.vars_all(fixed_var))
            && l.logdata.as_ref().is_none_or(|m| m.vars_all(fixed_var))
    })
}

/// Whether a match of `rule` on the snapshot's stores may be replayed as a record and the writes it made there (see
/// [`Pristine`]): no chain or capture, passing, only `setvar`s, all of it fixed.
pub(crate) fn replays_pristine(rule: &Rule) -> bool {
    rule.chain.is_none()
        && !rule.capture
        && !rule.multi_match
        && matches!(rule.disruptive_action(), None | Some(Disruptive::Pass))
        && rule.effects.iter().all(|e| matches!(e, Effect::SetVar { .. }))
        && fixed(rule)
}

/// Whether the chain commutes with fixed rules (see the module docs).
pub(crate) fn commutes(rule: &Rule) -> bool {
    let not_shared = |v: Var| !shared_var(v);
    matches!(rule.disruptive_action(), None | Some(Disruptive::Pass))
        && rule.skip == 0
        && rule.skip_after.is_none()
        && links(rule).all(|l| {
            link_reads(l, &not_shared)
                && l.effects.iter().all(|e| {
                    matches!(
                        e,
                        Effect::Ctl(
                            Ctl::RequestBodyProcessor(_)
                                | Ctl::RequestBodyAccess(_)
                                | Ctl::ForceRequestBodyVariable(_)
                                | Ctl::ResponseBodyAccess(_)
                                | Ctl::Ignored
                        )
                    )
                })
                && l.msg.as_ref().is_none_or(|m| m.vars_all(not_shared))
                && l.logdata.as_ref().is_none_or(|m| m.vars_all(not_shared))
        })
}

/// The store variables (store index, lowercased name) that rules other than `fixed` may write: literal setvar names,
/// and for names made with macros their literal prefix (`tx.header_name_920450_%{tx.0}`); TX:0-9 when a rule
/// captures. `None` when some name could be anything (a macro at its start).
pub(crate) struct Writes {
    names: HashSet<(usize, Vec<u8>)>,
    prefixes: Vec<(usize, Vec<u8>)>,
}

impl Writes {
    pub(crate) fn of(rules: &[Rule], fixed: &[usize]) -> Option<Writes> {
        let mut w = Writes { names: HashSet::new(), prefixes: Vec::new() };
        for (i, r) in rules.iter().enumerate() {
            if fixed.contains(&i) {
                continue;
            }
            for l in links(r) {
                if l.capture {
                    w.names.extend((0..10).map(|d| (crate::vars::TX_STORE, d.to_string().into_bytes())));
                }
                for e in &l.effects {
                    let Effect::SetVar { store, name, .. } = e else { continue };
                    match name.literal() {
                        Some(n) => {
                            w.names.insert((*store, n.to_ascii_lowercase()));
                        }
                        None => match name.parts.first() {
                            Some(Part::Lit(p)) => w.prefixes.push((*store, p.to_ascii_lowercase())),
                            _ => return None,
                        },
                    }
                }
            }
        }
        Some(w)
    }

    /// Whether store `store`'s variable `name` (lowercased) is never written after the fixed rules.
    fn frozen(&self, store: usize, name: &[u8]) -> bool {
        !self.names.contains(&(store, name.to_vec()))
            && !self.prefixes.iter().any(|(s, p)| *s == store && name.starts_with(p))
    }

    /// Whether `v`/`k` names a store variable that is frozen (never written after the fixed rules).
    fn frozen_ref(&self, v: Var, k: &Key) -> bool {
        matches!((v, k), (Var::Coll(Coll::Store(s)), Key::Name(n, _)) if self.frozen(s, n))
    }

    /// Whether every variable `m` refers to is a frozen store variable: its expansion is the same from the end of
    /// the fixed rules on.
    pub(crate) fn macro_frozen(&self, m: &MacroStr) -> bool {
        m.refs_all(|v, k| self.frozen_ref(v, k))
    }

    /// Whether the starter decides whether it matches from frozen store variables alone (named ones, no exclusion).
    pub(crate) fn starter_frozen(&self, rule: &Rule) -> bool {
        rule.exclusions.is_empty()
            && !rule.includes.is_empty()
            && rule.includes.iter().all(|(t, _)| self.frozen_ref(t.var, &t.key))
            && rule.op.as_ref().is_some_and(|op| match op.macro_template() {
                Some(t) => self.macro_frozen(&MacroStr::parse(t)),
                None => op.is_pure(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::{bit, pass_from};

    #[test]
    fn pass_from_runs_over_set_bits_across_words() {
        // Positions 60..130 and 200 set, of 256.
        let mut bits = vec![0u64; 4];
        for i in (60..130).chain([200]) {
            bits[i / 64] |= 1 << (i % 64);
        }
        assert!(bit(&bits, 60) && bit(&bits, 129) && !bit(&bits, 130) && !bit(&bits, 59) && !bit(&bits, 999));
        assert_eq!(pass_from(&bits, 59), 59);
        assert_eq!(pass_from(&bits, 60), 130);
        assert_eq!(pass_from(&bits, 64), 130);
        assert_eq!(pass_from(&bits, 127), 130);
        assert_eq!(pass_from(&bits, 200), 201);
        // A run to the end stops at the end of the bits.
        let full = vec![u64::MAX; 2];
        assert_eq!(pass_from(&full, 3), 128);
        assert_eq!(pass_from(&[], 5), 5);
    }
}
