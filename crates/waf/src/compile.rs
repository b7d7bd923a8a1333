//! From directives to a [`RuleSet`]: rules compiled once (operators, variable selectors, transformation chains
//! interned in a trie so a transaction can cache transformed values per chain prefix), per-phase rule lists with
//! SecMarkers in every phase, and load-time exclusions (SecRuleRemove*, SecRuleUpdate*) already applied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_waf_ops::Operator;

use crate::config::{self, Directive};
use crate::rule::{parse_actions, parse_engine_mode, parse_id_ranges, ActionSet, Disruptive, RawAction, Rule};
use crate::vars::parse_targets;
use crate::{EngineMode, LoadError, Transaction};

/// A compiled rule set; immutable, `Send + Sync`, shared with `Arc` between requests.
#[derive(Debug)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    /// Per phase (index 0 = phase 1): indexes into `rules`, markers included in every phase.
    pub(crate) phases: [Vec<usize>; 5],
    pub(crate) engine_mode: EngineMode,
    pub(crate) request_body_access: bool,
    pub(crate) response_body_access: bool,
    pub(crate) request_body_limit: u64,
    pub(crate) response_mime_types: Vec<String>,
    /// Nodes of the transformation-chain trie, node 0 (no transformation) included.
    pub(crate) tnodes: usize,
    /// This set's number, distinct per compiled set in the process (the verdict memo's key).
    pub(crate) id: u64,
    pub(crate) pure: PurePlan,
    /// Per rule index: whether its chain's non-matching outcome may be remembered and replayed (see `outcome`).
    pub(crate) replayable: Vec<bool>,
    /// Per phase (index 0 = phase 1): shortcuts over its rule list (see [`Walk`]).
    pub(crate) walks: [Walk; 5],
    /// Whether pure rules are decided through the verdict memo (on by default; off for comparisons).
    pub(crate) memo: bool,
    /// Whether phase 1's request-independent start is replayed from a snapshot (`init`; on by default).
    pub(crate) init_snapshot: bool,
    /// Whether a chain may be decided by its pure links before its starter is evaluated
    /// (`Transaction::links_fail`): no rule reads MATCHED_VAR or MATCHED_VAR_NAME before its own match sets them
    /// (see [`reads_matched_early`]), so what a failing chain's silent rules leave there is never read.
    pub(crate) links_first: bool,
    /// Operator arguments with macros (`%{tx.allowed_methods}`), parsed once here rather than per evaluation, with
    /// whether they read only the writable collections (TX, IP, ...): a transaction may then keep an expansion
    /// until one of those changes.
    /// foldhash rather than SipHash: looked up on every operator evaluation with a macro argument.
    pub(crate) templates: HashMap<String, (crate::macros::MacroStr, bool), foldhash::fast::RandomState>,
}

/// Whether `r` (a starter, SecAction or marker) may read MATCHED_VAR or MATCHED_VAR_NAME before a match of its own
/// has set them, i.e. what an earlier rule left there: in a starter's variables or operator argument, or anywhere in a
/// SecAction's actions (they run without a match). Chain links read their own chain's (set by the rule before them).
fn reads_matched_early(r: &Rule) -> bool {
    use crate::vars::{Scalar, Var};
    let matched = |v: Var| matches!(v, Var::Scalar(Scalar::MatchedVar | Scalar::MatchedVarName));
    let reads = |m: &crate::macros::MacroStr| !m.vars_all(|v| !matched(v));
    let in_targets = r.includes.iter().any(|(t, _)| matched(t.var)) || r.exclusions.iter().any(|t| matched(t.var));
    let in_arg =
        r.op.as_ref().and_then(Operator::macro_template).is_some_and(|t| reads(&crate::macros::MacroStr::parse(t)));
    let in_actions = r.op.is_none()
        && (r.msg.as_ref().is_some_and(reads)
            || r.logdata.as_ref().is_some_and(reads)
            || r.effects.iter().any(|e| match e {
                crate::rule::Effect::SetVar { name, value, .. } => reads(name) || reads(value),
                crate::rule::Effect::Ctl(_) => false,
            }));
    in_targets || in_arg || in_actions
}

/// A rule index that is not a pure chain starter.
pub(crate) const NOT_PURE: u32 = u32::MAX;

/// The chain starters whose verdict on a value depends on the value's bytes alone (see `memo`): a pure operator,
/// variables whose values do not change while a phase runs, no `&` counts. Numbered, and grouped by their variable
/// list (exclusions left out: a group's values are a superset of what each rule looks at), so a phase enumerates
/// each list once.
#[derive(Debug, Default)]
pub(crate) struct PurePlan {
    /// Per rule index: its pure number, or [`NOT_PURE`].
    pub(crate) of_rule: Vec<u32>,
    /// Per pure number: its group.
    pub(crate) group: Vec<u32>,
    /// The distinct targets of all groups (many groups share most of theirs: a transaction enumerates each
    /// target's values once per phase, not once per group).
    pub(crate) targets: Vec<crate::vars::Target>,
    /// Per group: the variables (include targets) of its rules, as indices into `targets`.
    pub(crate) group_targets: Vec<Vec<u32>>,
    /// What a new value's bytes rule out at once (see [`crate::memo::ByteRule`]).
    pub(crate) bytes: crate::memo::ByteRule,
    /// Per phase: the targets and the groups of the pure starters and links in its list. The first group a phase
    /// needs enumerates all of the phase's targets in one pass (`Transaction::enumerate_group`): a request reaches
    /// most of them, and one pass costs far less than one per group.
    pub(crate) phase_targets: [Vec<u32>; 5],
    pub(crate) phase_groups: [Vec<u32>; 5],
    /// Per target, a row of one bit per pure rule (as the memo's rows): the rules whose group reads the target. A
    /// target adds only these to the phase's row (a value's memo row says "not evaluated yet" for every rule that
    /// never looks at it), so the phase's row answers for a group exactly what its own targets' values would.
    pub(crate) target_rules: Vec<u64>,
    /// Per target, the same for all the targets whose values share ids with its (`ARGS`, `ARGS:q`, `ARGS_GET`: a
    /// value id, and so its memo entry, is the same in each): the rules a new entry's strings may rule out (see
    /// `memo::ByteRule`; a rule left out is evaluated as usual).
    pub(crate) var_rules: Vec<u64>,
    /// Regex sets: pure rules that no string rules out (see `memo::ByteRule`), reading the same targets through the
    /// same transformations in the same phase and at the same paranoia level (CRS tag `paranoia-level/N`), with
    /// their pure numbers in set order. A check of one runs the set once on the value and the memo keeps every
    /// member the set found not to match (`Transaction::check_entry`).
    pub(crate) rx_sets: Vec<(palisade_waf_ops::RxSet, Vec<u32>)>,
    /// Per pure number: its regex set and its place in it, or `None`.
    pub(crate) rx_set_of: Vec<Option<(u32, u8)>>,
}

impl PurePlan {
    /// The plan for `rules`; each chain link that is a pure check too gets its number in `Rule::link_pure`.
    fn build(rules: &mut [Rule]) -> PurePlan {
        let mut b = PlanBuilder { removable: ctl_removable(rules), ..PlanBuilder::default() };
        for r in rules.iter() {
            let p = b.add(r);
            b.plan.of_rule.push(p);
        }
        for r in rules.iter_mut() {
            let mut link = r.chain.as_deref_mut();
            while let Some(l) = link {
                l.link_pure = b.add(l);
                link = l.chain.as_deref_mut();
            }
        }
        b.plan.bytes = crate::memo::ByteRule::new(&b.pre_need, &b.literal);
        b.build_rx_sets(rules);
        let words = crate::memo::row_words(b.plan.count());
        let mut rows = vec![0u64; b.plan.targets.len() * words];
        for (p, &g) in b.plan.group.iter().enumerate() {
            for &t in b.plan.group_targets.get(g as usize).into_iter().flatten() {
                if let Some(w) = rows.get_mut(t as usize * words + p / 64) {
                    *w |= 1 << (p % 64);
                }
            }
        }
        let mut var_rows = vec![0u64; rows.len()];
        for (t, target) in b.plan.targets.iter().enumerate() {
            let family = id_family(target.var);
            for (u, _) in b.plan.targets.iter().enumerate().filter(|(_, o)| id_family(o.var) == family) {
                for w in 0..words {
                    let r = rows.get(u * words + w).copied().unwrap_or(0);
                    if let Some(x) = var_rows.get_mut(t * words + w) {
                        *x |= r;
                    }
                }
            }
        }
        b.plan.target_rules = rows;
        b.plan.var_rules = var_rows;
        b.plan
    }

    /// Number of pure rules.
    pub(crate) fn count(&self) -> usize {
        self.group.len()
    }
}

#[derive(Default)]
struct PlanBuilder {
    plan: PurePlan,
    pre_need: Vec<Option<[u64; 4]>>,
    literal: Vec<Option<crate::memo::LiteralNeed>>,
    group_of: HashMap<Vec<u32>, u32>,
    /// The regex-set candidates by what must be the same in a set (group, transformation chain, phase, paranoia
    /// tag): their pure numbers (see [`PurePlan::rx_sets`]).
    rx_candidates: HashMap<(u32, u32, u8, Option<String>), Vec<u32>>,
    target_of: HashMap<String, u32>,
    /// The variables a `ctl:ruleRemoveTarget*` of the set names (see [`ctl_removable`]).
    removable: Vec<crate::vars::Var>,
}

/// The variables some `ctl:ruleRemoveTargetById/ByTag` of `rules` removes from rules: a removal made while a phase
/// runs changes the count of such a variable after the phase enumerated it, so no count of one is a pure value.
fn ctl_removable(rules: &[Rule]) -> Vec<crate::vars::Var> {
    let mut vars = Vec::new();
    for r in rules {
        for link in std::iter::successors(Some(r), |l| l.chain.as_deref()) {
            for e in &link.effects {
                if let crate::rule::Effect::Ctl(crate::rule::Ctl::RuleRemoveTarget(_, t)) = e {
                    if !vars.contains(&t.var) {
                        vars.push(t.var);
                    }
                }
            }
        }
    }
    vars
}

impl PlanBuilder {
    /// Number `r` as a pure check when it is one (an operator on the value's bytes alone, over request variables
    /// that stay the same for the phase; `&` counts only of variables the rule excludes nothing from and no `ctl`
    /// removes targets of, whose count is then a value like any other: `&REQUEST_HEADERS:Host "@eq 0"`): its pure
    /// number, or [`NOT_PURE`].
    fn add(&mut self, r: &Rule) -> u32 {
        let pure = r.marker.is_none()
            && r.op.as_ref().is_some_and(Operator::is_pure)
            && !r.includes.is_empty()
            && r.includes.iter().all(|(t, excluded)| {
                crate::vars::stable_in_phase(t.var) && (!t.count || !(*excluded || self.removable.contains(&t.var)))
            });
        if !pure {
            return NOT_PURE;
        }
        let plan = &mut self.plan;
        // A group is its list of targets; a target is its variable and key as written.
        let targets: Vec<u32> = r
            .includes
            .iter()
            .map(|(t, _)| {
                let n = u32::try_from(plan.targets.len()).unwrap_or(u32::MAX);
                *self
                    .target_of
                    .entry(format!("{}{:?}:{}", if t.count { "&" } else { "" }, t.var, t.key_text))
                    .or_insert_with(|| {
                        plan.targets.push(t.clone());
                        n
                    })
            })
            .collect();
        let next = u32::try_from(plan.group_targets.len()).unwrap_or(u32::MAX);
        let g = *self.group_of.entry(targets).or_insert_with_key(|targets| {
            plan.group_targets.push(targets.clone());
            next
        });
        let p = u32::try_from(plan.group.len()).unwrap_or(NOT_PURE);
        plan.group.push(g);
        self.pre_need.push(r.pre_need);
        let literal = literal_need(r);
        if literal.is_none() && !r.multi_match && r.op.as_ref().is_some_and(palisade_waf_ops::RxSet::eligible) {
            let level = r.tags.iter().find(|t| t.starts_with("paranoia-level/")).cloned();
            let chain = r.tchain.last().copied().unwrap_or(u32::MAX);
            self.rx_candidates.entry((g, chain, r.phase, level)).or_default().push(p);
        }
        self.literal.push(literal);
        p
    }

    /// [`PurePlan::rx_sets`] from the candidates of two or more rules (`rules`: the rules `add` numbered, starters
    /// and links).
    fn build_rx_sets(&mut self, rules: &[Rule]) {
        let count = self.plan.count();
        let mut op_of: Vec<Option<&Operator>> = vec![None; count];
        for (ri, r) in rules.iter().enumerate() {
            let starter = self.plan.of_rule.get(ri).copied().unwrap_or(NOT_PURE);
            for (link, p) in
                std::iter::successors(Some((r, starter)), |(l, _)| l.chain.as_deref().map(|c| (c, c.link_pure)))
            {
                if let Some(slot) = op_of.get_mut(p as usize) {
                    *slot = link.op.as_ref();
                }
            }
        }
        self.plan.rx_set_of = vec![None; count];
        let mut candidates: Vec<Vec<u32>> = self.rx_candidates.drain().map(|(_, v)| v).collect();
        candidates.sort();
        for members in candidates {
            let ops: Option<Vec<&Operator>> =
                members.iter().map(|&p| op_of.get(p as usize).copied().flatten()).collect();
            let Some(ops) = ops.filter(|o| (2..=64).contains(&o.len())) else { continue };
            let Some(set) = palisade_waf_ops::RxSet::new(&ops) else { continue };
            let Ok(s) = u32::try_from(self.plan.rx_sets.len()) else { continue };
            for (i, &p) in members.iter().enumerate() {
                if let (Some(slot), Ok(i)) = (self.plan.rx_set_of.get_mut(p as usize), u8::try_from(i)) {
                    *slot = Some((s, i));
                }
            }
            self.plan.rx_sets.push((set, members));
        }
    }
}

/// No position (a [`Walk`] entry that does not apply).
pub(crate) const NO_POS: u32 = u32::MAX;

/// Shortcuts over one phase's rule list, made at load, so a transaction's walk touches only the rules it runs:
/// - per position (an [`At`]), the rule and `resume`: for a rule with `skipAfter`, the position after its target (the
///   first later marker of that name, or rule with that id; the list's end when there is none), where
///   [`crate::tx::Flow::passes`] would resume; [`NO_POS`] for other positions;
/// - bit rows over the positions, from which `Transaction::walk_passable` makes the row of positions a walk passes
///   over while no skip is pending: markers do nothing then, and a pure starter none of whose group's values can
///   match does nothing either (`Transaction::may_match`).
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub(crate) at: Vec<At>,
    /// A bit per position: a marker.
    pub(crate) markers: Vec<u64>,
    /// A bit per position: a marker or a pure starter.
    pub(crate) quiet_bits: Vec<u64>,
    /// Per pure number, the position of that pure starter in this phase's list ([`NO_POS`]: not in it).
    pub(crate) pure_pos: Vec<u32>,
    /// A row (as the memo's) of the pure starters in this phase's list.
    pub(crate) pure_here: Vec<u64>,
}

/// What the walk reads at one position of a phase's list (see [`Walk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    /// The rule's index in the set's rules (the list's entry).
    pub(crate) rule: u32,
    pub(crate) resume: u32,
}

impl Walk {
    fn build(rules: &[Rule], list: &[usize], pure: &PurePlan) -> Walk {
        let pos = |i: usize| u32::try_from(i).unwrap_or(NO_POS);
        let rule = |i: usize| list.get(i).and_then(|&ri| rules.get(ri));
        let mut w = Walk::default();
        let mut resume = Vec::with_capacity(list.len());
        // Where each marker name and rule id occurs, in order (a skipAfter resumes after the first one past it).
        let mut markers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut ids: HashMap<u32, Vec<usize>> = HashMap::new();
        for i in 0..list.len() {
            if let Some(r) = rule(i) {
                match &r.marker {
                    Some(m) => markers.entry(m.as_str()).or_default().push(i),
                    None => ids.entry(r.id).or_default().push(i),
                }
            }
        }
        let first_after =
            |v: Option<&Vec<usize>>, i: usize| v.and_then(|v| v.get(v.partition_point(|&j| j <= i)).copied());
        let words = list.len().div_ceil(64);
        (w.markers, w.quiet_bits) = (vec![0; words], vec![0; words]);
        w.pure_pos = vec![NO_POS; pure.count()];
        w.pure_here = vec![0; crate::memo::row_words(pure.count())];
        let set = |row: &mut Vec<u64>, i: usize| {
            if let Some(b) = row.get_mut(i / 64) {
                *b |= 1 << (i % 64);
            }
        };
        for i in 0..list.len() {
            let p = list.get(i).and_then(|&ri| pure.of_rule.get(ri)).copied().unwrap_or(NOT_PURE);
            if rule(i).is_some_and(|r| r.marker.is_some()) {
                set(&mut w.markers, i);
                set(&mut w.quiet_bits, i);
            } else if let Some(slot) = w.pure_pos.get_mut(p as usize) {
                *slot = pos(i);
                set(&mut w.pure_here, p as usize);
                set(&mut w.quiet_bits, i);
            }
            let to = match rule(i).and_then(|r| r.skip_after.as_deref()) {
                None => NO_POS,
                Some(target) => {
                    let by_id = target.parse::<u32>().ok().and_then(|id| first_after(ids.get(&id), i));
                    let hit = match (first_after(markers.get(target), i), by_id) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    pos(hit.map_or(list.len(), |j| j + 1))
                }
            };
            resume.push(to);
        }
        w.at = (0..list.len())
            .map(|i| At {
                rule: list.get(i).map_or(NO_POS, |&ri| pos(ri)),
                resume: resume.get(i).copied().unwrap_or(NO_POS),
            })
            .collect();
        w
    }
}

static NEXT_SET_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl RuleSet {
    /// Parse and compile `files` in order (each may `Include` more, relative to its own directory), then the
    /// `inline` directives. On error nothing is returned but the error: a caller's previous set stays in use.
    pub fn load(files: &[PathBuf], inline: &str) -> Result<RuleSet, LoadError> {
        Self::load_with_prelude("", files, inline)
    }

    /// As [`RuleSet::load`], with `prelude` directives (origin `<prelude>`) before the files: what a
    /// ModSecurity deployment's `modsecurity.conf` holds, which must run before the CRS (e.g. rules
    /// choosing the body processor in phase 1 before CRS rule 901340 looks at it).
    pub fn load_with_prelude(prelude: &str, files: &[PathBuf], inline: &str) -> Result<RuleSet, LoadError> {
        let mut dirs = Vec::new();
        if !prelude.trim().is_empty() {
            let base = std::env::current_dir().unwrap_or_default();
            config::parse_text(prelude, Path::new("<prelude>"), &base, 0, &mut dirs)?;
        }
        for f in files {
            config::load_file(f, 0, &mut dirs)?;
        }
        if !inline.trim().is_empty() {
            let origin = Path::new("<inline>");
            let base = std::env::current_dir().unwrap_or_default();
            config::parse_text(inline, origin, &base, 0, &mut dirs)?;
        }
        Builder::default().build(dirs)
    }

    /// Compile SecLang text (`origin` names it in errors; includes resolve against the current directory).
    pub fn parse_str(src: &str, origin: &str) -> Result<RuleSet, LoadError> {
        let mut dirs = Vec::new();
        let base = std::env::current_dir().unwrap_or_default();
        config::parse_text(src, Path::new(origin), &base, 0, &mut dirs)?;
        Builder::default().build(dirs)
    }

    pub fn engine_mode(&self) -> EngineMode {
        self.engine_mode
    }

    pub fn request_body_access(&self) -> bool {
        self.request_body_access
    }

    pub fn response_body_access(&self) -> bool {
        self.response_body_access
    }

    pub fn request_body_limit(&self) -> u64 {
        self.request_body_limit
    }

    /// Number of rules (a chain counts once; markers do not count).
    pub fn rule_count(&self) -> usize {
        self.rules.iter().filter(|r| r.marker.is_none()).count()
    }

    /// Start a transaction for one request.
    pub fn transaction(&self, unique_id: &str, remote_addr: std::net::IpAddr) -> Transaction<'_> {
        Transaction::new(self, unique_id, remote_addr)
    }

    /// The response content types whose bodies phase 4 inspects (`SecResponseBodyMimeType`),
    /// lower case; the default is `text/plain text/html`.
    pub fn response_mime_types(&self) -> &[String] {
        &self.response_mime_types
    }

    /// Turn the verdict memo on (the default) or off. Off, every rule is evaluated on every value, as written;
    /// on, a pure rule (see the crate docs) whose values this thread has already seen is decided by a bit test.
    /// Decisions are the same either way; this exists to show that, and to measure the difference.
    pub fn set_verdict_memo(&mut self, on: bool) {
        self.memo = on;
    }

    /// Replay phase 1's request-independent start (the CRS's TX initialization) from a per-thread snapshot (the
    /// default), or evaluate it rule by rule. Decisions and matches are the same either way; this exists to show
    /// that, and to measure the difference.
    pub fn set_init_snapshot(&mut self, on: bool) {
        self.init_snapshot = on;
    }
}

self_cell::self_cell!(
    struct OwnedInner {
        owner: std::sync::Arc<RuleSet>,
        #[not_covariant]
        dependent: Transaction,
    }
);

/// A transaction that owns (a share of) its rule set, so it can outlive the function that
/// started it: a proxy keeps one from the request phases to the response phases.
pub struct OwnedTransaction(OwnedInner);

impl OwnedTransaction {
    pub fn new(rules: std::sync::Arc<RuleSet>, unique_id: &str, remote_addr: std::net::IpAddr) -> Self {
        OwnedTransaction(OwnedInner::new(rules, |rs| rs.transaction(unique_id, remote_addr)))
    }

    /// Work with the transaction.
    pub fn with<R>(&mut self, f: impl for<'r> FnOnce(&mut Transaction<'r>) -> R) -> R {
        self.0.with_dependent_mut(|_, tx| f(tx))
    }
}

struct Builder {
    rules: Vec<Rule>,
    defaults: [Vec<RawAction>; 5],
    engine_mode: EngineMode,
    request_body_access: bool,
    response_body_access: bool,
    request_body_limit: u64,
    response_mime_types: Vec<String>,
    trie: HashMap<(u32, String), u32>,
    /// The last rule had `chain`: the next SecRule joins it.
    chain_open: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            rules: Vec::new(),
            defaults: Default::default(),
            engine_mode: EngineMode::Off,
            request_body_access: false,
            response_body_access: false,
            request_body_limit: 13_107_200,
            response_mime_types: vec!["text/plain".into(), "text/html".into()],
            trie: HashMap::new(),
            chain_open: false,
        }
    }
}

/// Directives accepted and ignored: they configure logging, storage or limits that do not change decisions here.
const IGNORED: &[&str] = &[
    "seccomponentsignature",
    "seccollectiontimeout",
    "secrequestbodyinmemorylimit",
    "secrequestbodynofileslimit",
    "secrequestbodylimitaction",
    "secresponsebodylimit",
    "secresponsebodylimitaction",
    "secdatadir",
    "sectmpdir",
    "secuploaddir",
    "secuploadkeepfiles",
    "secuploadfilemode",
    "secuploadfilelimit",
    "secdebuglog",
    "secdebugloglevel",
    "secauditengine",
    "secauditlog",
    "secauditlog2",
    "secauditlogparts",
    "secauditlogrelevantstatus",
    "secauditlogtype",
    "secauditlogformat",
    "secauditlogstoragedir",
    "secauditlogdirmode",
    "secauditlogfilemode",
    "secargumentseparator",
    "seccookieformat",
    "secunicodemapfile",
    "secunicodecodepage",
    "secstatusengine",
    "secpcrematchlimit",
    "secpcrematchlimitrecursion",
    "secserversignature",
    "secwebappid",
    "sectmpsaveuploadedfiles",
    "secxmlexternalentity",
    "secrequestbodyjsondepthlimit",
    "secargumentslimit",
    "sechashengine",
    "sechashkey",
    "sechashparam",
    "sechashmethodrx",
    "sechashmethodpm",
    "secgeolookupdb",
    "secsensorid",
    "seccontentinjection",
    "secstreamoutbodyinspection",
    "secstreaminbodyinspection",
    "secconnengine",
    "secinterceptonerror",
    "secremoterulesfailaction",
    "secrulescript",
    "secruleperftime",
    "secdisablebackendcompression",
    "secchrootdir",
    "secgsblookupdb",
    "secguardianlog",
    "secreadstatelimit",
    "secwritestatelimit",
    "seccacheTransformations",
    "seccachetransformations",
    "secresponsebodymimetypesclear",
];

impl Builder {
    fn build(mut self, dirs: Vec<Directive>) -> Result<RuleSet, LoadError> {
        for d in &dirs {
            self.directive(d).map_err(|reason| LoadError { file: (*d.file).clone(), line: d.line, reason })?;
        }
        if self.chain_open {
            if let Some(last) = dirs.last() {
                return Err(LoadError {
                    file: (*last.file).clone(),
                    line: last.line,
                    reason: "the last rule starts a chain that has no next rule".into(),
                });
            }
        }
        for r in &mut self.rules {
            let mut cur = Some(r);
            while let Some(rule) = cur {
                rule.exclusions = rule.targets.iter().filter(|t| t.exclude).map(|t| (**t).clone()).collect();
                let exclusions = &rule.exclusions;
                rule.includes = rule
                    .targets
                    .iter()
                    .filter(|t| !t.exclude)
                    .map(|t| ((**t).clone(), exclusions.iter().any(|x| x.var == t.var)))
                    .collect();
                cur = rule.chain.as_deref_mut();
            }
        }
        for r in &mut self.rules {
            let mut cur = Some(r);
            while let Some(rule) = cur {
                rule.pre_need = pre_need(rule);
                cur = rule.chain.as_deref_mut();
            }
        }
        let mut phases: [Vec<usize>; 5] = Default::default();
        for (i, r) in self.rules.iter().enumerate() {
            if r.marker.is_some() {
                for p in phases.iter_mut() {
                    p.push(i);
                }
            } else if let Some(p) = phases.get_mut(usize::from(r.phase.saturating_sub(1))) {
                p.push(i);
            }
        }
        let mut pure = PurePlan::build(&mut self.rules);
        for (p, list) in phases.iter().enumerate() {
            let (mut targets, mut groups) = (Vec::new(), Vec::new());
            for &ri in list {
                let starter = pure.of_rule.get(ri).copied().unwrap_or(NOT_PURE);
                // The starter's pure number is the plan's, each link's its own.
                let links = self.rules.get(ri).into_iter().flat_map(crate::init::links).skip(1).map(|l| l.link_pure);
                for n in std::iter::once(starter).chain(links).filter(|&n| n != NOT_PURE) {
                    let Some(&g) = pure.group.get(n as usize) else { continue };
                    if !groups.contains(&g) {
                        groups.push(g);
                        targets.extend(pure.group_targets.get(g as usize).into_iter().flatten().copied());
                    }
                }
            }
            targets.sort_unstable();
            targets.dedup();
            if let (Some(t), Some(g)) = (pure.phase_targets.get_mut(p), pure.phase_groups.get_mut(p)) {
                (*t, *g) = (targets, groups);
            }
        }
        let walks = phases.each_ref().map(|list| Walk::build(&self.rules, list, &pure));
        let mut templates = HashMap::with_hasher(foldhash::fast::RandomState::default());
        for r in &self.rules {
            let mut cur = Some(r);
            while let Some(rule) = cur {
                if let Some(t) = rule.op.as_ref().and_then(Operator::macro_template) {
                    templates.entry(t.to_owned()).or_insert_with(|| {
                        let m = crate::macros::MacroStr::parse(t);
                        let stores_only =
                            m.refs_all(|v, _| matches!(v, crate::vars::Var::Coll(crate::vars::Coll::Store(_))));
                        (m, stores_only)
                    });
                }
                cur = rule.chain.as_deref();
            }
        }
        Ok(RuleSet {
            id: NEXT_SET_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            pure,
            replayable: self.rules.iter().map(crate::outcome::replayable).collect(),
            walks,
            memo: true,
            init_snapshot: true,
            links_first: !self.rules.iter().any(reads_matched_early),
            templates,
            tnodes: self.trie.len() + 1,
            rules: self.rules,
            phases,
            engine_mode: self.engine_mode,
            request_body_access: self.request_body_access,
            response_body_access: self.response_body_access,
            request_body_limit: self.request_body_limit,
            response_mime_types: self.response_mime_types,
        })
    }

    fn directive(&mut self, d: &Directive) -> Result<(), String> {
        let name = d.name.to_ascii_lowercase();
        let args = &d.args;
        let one = || -> Result<&str, String> {
            match args.as_slice() {
                [a] => Ok(a.as_str()),
                _ => Err(format!("{} takes exactly one argument", d.name)),
            }
        };
        if self.chain_open && name != "secrule" {
            return Err(format!("{} follows a rule with `chain`; a SecRule must come next", d.name));
        }
        match name.as_str() {
            "secrule" => {
                let (vars, op, actions) = match args.as_slice() {
                    [v, o] => (v, o, ""),
                    [v, o, a] => (v, o, a.as_str()),
                    _ => return Err("SecRule takes 2 or 3 arguments: VARIABLES OPERATOR [ACTIONS]".into()),
                };
                self.add_rule(d, Some((vars, op)), actions)?;
            }
            "secaction" => {
                let a = one()?;
                self.add_rule(d, None, a)?;
            }
            "secmarker" => {
                let m = one()?;
                self.rules.push(Self::blank_rule(0, Some(m.to_string())));
            }
            "secdefaultaction" => {
                let acts = parse_actions(one()?)?;
                let mut set = ActionSet::default();
                set.apply(&acts)?;
                let phase = set.phase.ok_or("SecDefaultAction needs a phase")?;
                if set.disruptive.is_none() {
                    return Err("SecDefaultAction needs a disruptive action".into());
                }
                let keep: Vec<RawAction> = acts.into_iter().filter(|a| a.name != "phase" && a.name != "id").collect();
                if let Some(slot) = self.defaults.get_mut(usize::from(phase - 1)) {
                    *slot = keep;
                }
            }
            "secruleengine" => self.engine_mode = parse_engine_mode(one()?)?,
            "secrequestbodyaccess" => self.request_body_access = on_off(one()?)?,
            "secresponsebodyaccess" => self.response_body_access = on_off(one()?)?,
            "secrequestbodylimit" => {
                let v = one()?;
                self.request_body_limit = v.parse().map_err(|_| format!("invalid SecRequestBodyLimit {v}"))?;
            }
            "secresponsebodymimetype" => {
                self.response_mime_types = args.iter().map(|a| a.to_ascii_lowercase()).collect();
            }
            "secruleremovebyid" => {
                let mut ranges = Vec::new();
                for a in args {
                    ranges.extend(parse_id_ranges(a)?);
                }
                self.rules.retain(|r| r.marker.is_some() || !ranges.iter().any(|x| x.contains(&r.id)));
            }
            "secruleremovebytag" => {
                let t = one()?;
                let re = regex::Regex::new(t).map_err(|e| format!("bad tag regex: {e}"))?;
                self.rules.retain(|r| r.marker.is_some() || !r.tags.iter().any(|x| re.is_match(x)));
            }
            "secruleremovebymsg" => {
                let t = one()?;
                let re = regex::Regex::new(t).map_err(|e| format!("bad msg regex: {e}"))?;
                self.rules.retain(|r| {
                    r.marker.is_some()
                        || !r
                            .msg
                            .as_ref()
                            .and_then(|m| m.literal())
                            .is_some_and(|m| re.is_match(&String::from_utf8_lossy(m)))
                });
            }
            "secruleupdatetargetbyid" | "secruleupdatetargetbytag" | "secruleupdatetargetbymsg" => {
                let (sel, targets, replace) = match args.as_slice() {
                    [s, t] => (s, t, None),
                    [s, t, r] => (s, t, Some(r)),
                    _ => return Err(format!("{} takes 2 or 3 arguments", d.name)),
                };
                let new = parse_targets(targets)?;
                let by_id = name == "secruleupdatetargetbyid";
                let by_tag = name == "secruleupdatetargetbytag";
                let ranges = if by_id { parse_id_ranges(sel)? } else { Vec::new() };
                let re =
                    if by_id { None } else { Some(regex::Regex::new(sel).map_err(|e| format!("bad regex: {e}"))?) };
                let replace = match replace {
                    Some(r) => Some(parse_targets(r)?),
                    None => None,
                };
                for r in self.rules.iter_mut().filter(|r| r.marker.is_none()) {
                    let hit = if by_id {
                        ranges.iter().any(|x| x.contains(&r.id))
                    } else if by_tag {
                        r.tags.iter().any(|t| re.as_ref().is_some_and(|re| re.is_match(t)))
                    } else {
                        r.msg
                            .as_ref()
                            .and_then(|m| m.literal())
                            .is_some_and(|m| re.as_ref().is_some_and(|re| re.is_match(&String::from_utf8_lossy(m))))
                    };
                    if !hit || r.op.is_none() {
                        continue;
                    }
                    if let Some(old) = &replace {
                        let old_names: Vec<String> = old.iter().map(target_text).collect();
                        r.targets.retain(|t| !old_names.contains(&target_text(t)));
                    }
                    r.targets.extend(new.iter().cloned().map(Arc::new));
                }
            }
            "secruleupdateactionbyid" => {
                let [sel, acts] = args.as_slice() else {
                    return Err("SecRuleUpdateActionById takes 2 arguments".into());
                };
                let id: u32 =
                    sel.split(':').next().unwrap_or("").parse().map_err(|_| format!("invalid rule id {sel}"))?;
                let acts = parse_actions(acts)?;
                let mut set = ActionSet::default();
                set.apply(&acts)?;
                let Some(r) = self.rules.iter_mut().find(|r| r.marker.is_none() && r.id == id) else {
                    return Err(format!("SecRuleUpdateActionById: no rule {id}"));
                };
                if let Some(dis) = set.disruptive {
                    r.disruptive = Some(dis);
                }
                if set.status.is_some() {
                    r.status = set.status;
                }
                if set.msg.is_some() {
                    r.msg = set.msg;
                }
                if set.logdata.is_some() {
                    r.logdata = set.logdata;
                }
                if set.severity.is_some() {
                    r.severity = set.severity;
                }
                if let Some(l) = set.log {
                    r.log = l;
                }
                r.tags.extend(set.tags);
                r.effects.extend(set.effects);
            }
            n if IGNORED.contains(&n) => {}
            _ => return Err(format!("unknown directive {}", d.name)),
        }
        Ok(())
    }

    fn blank_rule(phase: u8, marker: Option<String>) -> Rule {
        Rule {
            id: 0,
            phase,
            marker,
            targets: Vec::new(),
            exclusions: Vec::new(),
            includes: Vec::new(),
            op: None,
            need_bytes: None,
            pre_need: None,
            link_pure: NOT_PURE,
            transforms: Vec::new(),
            tchain: Vec::new(),
            multi_match: false,
            capture: false,
            disruptive: None,
            default_disruptive: Disruptive::Pass,
            status: None,
            skip: 0,
            skip_after: None,
            effects: Vec::new(),
            msg: None,
            logdata: None,
            tags: Vec::new(),
            severity: None,
            log: true,
            chain: None,
            has_chain_flag: false,
            rev: String::new(),
            ver: String::new(),
        }
    }

    fn add_rule(&mut self, d: &Directive, secrule: Option<(&String, &String)>, actions: &str) -> Result<(), String> {
        let own = parse_actions(actions)?;
        let is_child = self.chain_open;
        // The phase decides which SecDefaultAction applies; a chained rule runs in its starter's phase.
        let mut probe = ActionSet::default();
        for a in own.iter().filter(|a| a.name == "phase") {
            probe.apply(std::slice::from_ref(a))?;
        }
        let starter_phase = if is_child { self.rules.last().map(|r| r.phase) } else { None };
        if is_child && probe.phase.is_some() {
            return Err("a chained rule cannot set a phase".into());
        }
        let phase = starter_phase.or(probe.phase).unwrap_or(2);
        let defaults = self.defaults.get(usize::from(phase - 1)).cloned().unwrap_or_default();
        let mut set = ActionSet::default();
        set.apply(&defaults)?;
        let default_disruptive = set.disruptive.clone().unwrap_or(Disruptive::Pass);
        let default_log = set.log;
        let default_status = set.status;
        // Defaults contribute transformations, logging, status and the disruptive action; the rule's own override.
        set.apply(&own)?;
        let mut rule = Self::blank_rule(phase, None);
        if let Some((vars, op)) = secrule {
            rule.targets = parse_targets(vars)?.into_iter().map(Arc::new).collect();
            let base = d.file.parent().map(Path::to_path_buf).unwrap_or_default();
            let base = if base.as_os_str().is_empty() { std::env::current_dir().unwrap_or_default() } else { base };
            let parsed = Operator::parse(op, &base)?;
            rule.need_bytes = parsed.required_bytes();
            rule.op = Some(parsed);
        }
        if is_child {
            if set.id.is_some() && own.iter().any(|a| a.name == "id") {
                return Err("a chained rule cannot have an id".into());
            }
            if own.iter().any(|a| {
                matches!(a.name.as_str(), "deny" | "drop" | "allow" | "block" | "redirect" | "skipafter" | "skip")
            }) {
                return Err("a chained rule cannot have disruptive or flow actions".into());
            }
        } else {
            let id = set.id.ok_or("rule has no id")?;
            if self.rules.iter().any(|r| r.marker.is_none() && r.id == id) {
                return Err(format!("duplicate rule id {id}"));
            }
            rule.id = id;
        }
        rule.tchain = self.intern_chain(&set.transforms)?;
        rule.transforms = set.transforms.into_iter().map(|(_, t)| t).collect();
        rule.multi_match = set.multi_match;
        rule.capture = set.capture;
        rule.disruptive = set.disruptive;
        rule.default_disruptive = default_disruptive;
        rule.status = set.status.or(default_status);
        rule.skip = set.skip;
        rule.skip_after = set.skip_after;
        rule.effects = set.effects;
        rule.msg = set.msg;
        rule.logdata = set.logdata;
        rule.tags = set.tags;
        rule.severity = set.severity;
        rule.log = set.log.or(default_log).unwrap_or(true);
        rule.has_chain_flag = set.chain;
        rule.rev = set.rev;
        rule.ver = set.ver;
        if is_child {
            let Some(tail) = self.rules.last_mut() else {
                return Err("chained rule without a starter".into());
            };
            let mut slot = &mut tail.chain;
            while let Some(next) = slot {
                slot = &mut next.chain;
            }
            *slot = Some(Box::new(rule));
        } else {
            self.rules.push(rule);
        }
        self.chain_open = set.chain;
        Ok(())
    }

    fn intern_chain(&mut self, ts: &[(String, palisade_waf_ops::Transform)]) -> Result<Vec<u32>, String> {
        let mut node = 0u32;
        let mut out = Vec::with_capacity(ts.len());
        for (name, _) in ts {
            let next = u32::try_from(self.trie.len() + 1).map_err(|_| "too many transformation chains".to_string())?;
            node = *self.trie.entry((node, name.clone())).or_insert(next);
            out.push(node);
        }
        Ok(out)
    }
}

fn target_text(t: &crate::vars::Target) -> String {
    format!("{}{}:{}", if t.count { "&" } else { "" }, t.var.name(), t.key_text.to_ascii_lowercase())
}

fn on_off(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected On or Off, got {v}")),
    }
}

/// Variables whose values share value ids (`ARGS` is `ARGS_GET` and `ARGS_POST`, numbered as theirs).
fn id_family(v: crate::vars::Var) -> crate::vars::Var {
    use crate::vars::{Coll, Var};
    match v {
        Var::Coll(Coll::ArgsGet | Coll::ArgsPost) => Var::Coll(Coll::Args),
        Var::Names(Coll::ArgsGet | Coll::ArgsPost) => Var::Names(Coll::Args),
        v => v,
    }
}

/// A pure rule's literal need (see [`crate::memo::ByteRule`]): its transformations' trigger bytes and its operator's
/// filter literals, when every transformation has triggers.
fn literal_need(rule: &Rule) -> Option<crate::memo::LiteralNeed> {
    let lits = rule.op.as_ref()?.filter_literals()?;
    // A letter or digit is in most values: it rules out nothing and costs a match per occurrence. Two letters are
    // rare enough to be worth it (CRS 932140's "if", 942320's "iv": each saves a regex per new word-like value).
    if lits.iter().any(|l| l.len() < 2 && l.iter().all(u8::is_ascii_alphanumeric)) {
        return None;
    }
    if rule.multi_match {
        // Every form the operator sees must be the value up to case (each transformation's triggers absent).
        let triggers = rule.transforms.iter().try_fold([0u64; 4], |mut acc, t| {
            acc.iter_mut().zip(t.case_identity_unless()?).for_each(|(a, t)| *a |= t);
            Some(acc)
        })?;
        return Some((triggers, lits));
    }
    // Only the last form is seen: a string it contains has its core (`Transform::literal_core`, through the chain
    // from the last transformation back) in the value, when no transformation's input has its `literal_triggers`:
    // those of the value, through the preimages of the transformations before it.
    let mut triggers = [0u64; 4];
    for (k, t) in rule.transforms.iter().enumerate() {
        let own = t.literal_triggers()?;
        let from_value = rule.transforms.get(..k)?.iter().rev().try_fold(own, |set, t| t.preimage(set))?;
        triggers.iter_mut().zip(from_value).for_each(|(a, t)| *a |= t);
    }
    // A string that contains another of the set adds nothing (the other is found wherever it is); dropping it first
    // keeps a core from being a common word ("if not" would leave "not").
    let lits = if lits.len() <= 256 {
        lits.iter()
            .filter(|l| !lits.iter().any(|m| !m.is_empty() && m != *l && l.windows(m.len()).any(|w| w == &m[..])))
            .cloned()
            .collect()
    } else {
        lits
    };
    let mut cores: Vec<Vec<u8>> = Vec::with_capacity(lits.len());
    for l in &lits {
        let core = rule.transforms.iter().rev().fold(&l[..], |s, t| t.literal_core(s));
        if core.is_empty() || core.len() < 2 && core.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        if !cores.iter().any(|c| c == core) {
            cores.push(core.to_vec());
        }
    }
    Some((triggers, cores))
}

/// [`Rule::pre_need`]: `need_bytes` through the transformations' preimages. A `multiMatch` rule runs its operator on
/// the raw value and after every transformation that changes it, so its value must contain the preimage through
/// some prefix of the chain (the empty one included): the union of them all.
fn pre_need(rule: &Rule) -> Option<[u64; 4]> {
    let need = rule.need_bytes?;
    let through = |chain: &[palisade_waf_ops::Transform]| chain.iter().rev().try_fold(need, |set, t| t.preimage(set));
    let pre = if rule.multi_match {
        (0..=rule.transforms.len()).try_fold([0u64; 4], |mut acc, k| {
            let p = through(rule.transforms.get(..k)?)?;
            acc.iter_mut().zip(p).for_each(|(a, p)| *a |= p);
            Some(acc)
        })?
    } else {
        through(&rule.transforms)?
    };
    pre.iter().any(|w| *w != u64::MAX).then_some(pre)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::Flow;

    /// Every shortcut of every phase of `rs` agrees with the rule-by-rule walk ([`Flow::passes`]).
    fn check_walks(rs: &RuleSet) -> usize {
        let mut jumps = 0;
        for (list, walk) in rs.phases.iter().zip(&rs.walks) {
            assert_eq!(walk.at.len(), list.len());
            let resume: Vec<u32> = walk.at.iter().map(|a| a.resume).collect();
            let bit = |row: &[u64], i: usize| row[i / 64] >> (i % 64) & 1 == 1;
            for (i, &ri) in list.iter().enumerate() {
                assert_eq!(walk.at[i].rule as usize, ri);
                let r = &rs.rules[ri];
                match &r.skip_after {
                    Some(target) => {
                        let mut flow =
                            Flow { skip: 0, skip_after: Some(target.as_str()), skip_after_id: target.parse().ok() };
                        let mut j = i + 1;
                        while j < list.len() && !flow.is_clear() {
                            flow.passes(&rs.rules[list[j]]);
                            j += 1;
                        }
                        assert_eq!(resume[i] as usize, j, "rule {} skipAfter:{target}", r.id);
                        jumps += 1;
                    }
                    None => assert_eq!(resume[i], NO_POS),
                }
                // The bit rows: markers, and pure starters with their positions by pure number.
                let (marker, p) = (r.marker.is_some(), rs.pure.of_rule[ri]);
                assert_eq!(bit(&walk.markers, i), marker, "marker at {i}");
                assert_eq!(bit(&walk.quiet_bits, i), marker || p != NOT_PURE, "quiet at {i}");
                if p != NOT_PURE {
                    assert!(bit(&walk.pure_here, p as usize) && walk.pure_pos[p as usize] as usize == i);
                }
            }
            // And no other pure rule is marked as in this phase.
            let here = list.iter().filter(|&&ri| rs.pure.of_rule[ri] != NOT_PURE).count();
            assert_eq!(walk.pure_here.iter().map(|w| w.count_ones() as usize).sum::<usize>(), here);
            assert_eq!(walk.pure_pos.iter().filter(|&&at| at != NO_POS).count(), here);
        }
        jumps
    }

    #[test]
    fn walk_shortcuts_agree_with_the_rule_by_rule_walk() {
        let small = RuleSet::parse_str(
            r#"SecAction "id:1,phase:1,pass,skipAfter:END"
SecRule ARGS "@rx a" "id:2,phase:1,pass"
SecMarker OTHER
SecRule ARGS "@rx b" "id:3,phase:2,pass,skipAfter:5"
SecMarker END
SecAction "id:4,phase:1,pass,skipAfter:NOWHERE"
SecRule ARGS "@rx c" "id:5,phase:2,pass"
SecRule ARGS "@rx d" "id:6,phase:2,pass""#,
            "walk.conf",
        )
        .unwrap();
        assert_eq!(check_walks(&small), 3);
        // Phase 1: [1, 2, OTHER, END, 4]: rule 1 resumes after END, rule 4 at the end; 2 and the markers make a span.
        let field = |p: usize, f: fn(&At) -> u32| small.walks[p].at.iter().map(f).collect::<Vec<_>>();
        assert_eq!(field(0, |a| a.resume), [4, NO_POS, NO_POS, NO_POS, 5]);
        let bits = |p: usize| (0..5).map(|i| small.walks[p].quiet_bits[0] >> i & 1).collect::<Vec<_>>();
        assert_eq!(bits(0), [0, 1, 1, 1, 0]);
        // Phase 2: [OTHER, 3, END, 5, 6]: 3 resumes after rule 5; the whole list is one span.
        assert_eq!(field(1, |a| a.resume), [NO_POS, 4, NO_POS, NO_POS, NO_POS]);
        assert_eq!(bits(1), [1, 1, 1, 1, 1]);

        let crs = "/work/shared/data/crs";
        let src = format!("Include {crs}/crs-setup.conf.example\nInclude {crs}/rules/*.conf\nSecRuleEngine On\n");
        let rs = RuleSet::parse_str(&src, "crs.conf").unwrap();
        // CRS v4: every file skips its higher paranoia levels with skipAfter, in both request phases.
        assert!(check_walks(&rs) > 100);
    }

    /// A rule's strings rule a new value out unless one of them is a single letter or digit (in most values);
    /// two letters are kept (CRS 932140 needs "if" or " in(", 942320 needs "iv" or one of 18 longer words).
    #[test]
    fn literal_needs_keep_two_letter_strings_and_drop_single_letters() {
        let rs = RuleSet::parse_str(
            r#"SecRule ARGS "@rx (?i)^(?:if|exec)[0-9]" "id:1,phase:2,pass,t:none,t:urlDecodeUni"
SecRule ARGS "@rx (?i)^(?:i|exec)[0-9]" "id:2,phase:2,pass,t:none"
SecRule ARGS "@rx (?i)^(?:if|exec)[0-9]" "id:3,phase:2,pass,t:none,t:base64Decode""#,
            "lit.conf",
        )
        .unwrap();
        let need = |i: usize| literal_need(&rs.rules[i]);
        let (triggers, strings) = need(0).unwrap();
        assert_eq!(strings, [b"exec".to_vec(), b"if".to_vec()]);
        let bit = |b: u8| triggers[usize::from(b >> 6)] >> (b & 63) & 1;
        assert_eq!((bit(b'%'), bit(b'+'), bit(b'i')), (1, 1, 0));
        assert_eq!(need(1), None);
        // A transformation without trigger bytes (any value may decode to anything): no need either.
        assert_eq!(need(2), None);
    }

    /// Through `cmdLine` (CRS 932140, as written) a value's spaces are no triggers: the need is the strings' cores, so
    /// a sentence without them rules the rule out. A `multiMatch` rule sees the value itself too: spaces stay
    /// triggers there.
    #[test]
    fn literal_needs_through_cmdline_keep_what_a_sentence_lacks() {
        let rs = RuleSet::parse_str(
            r#"SecRule ARGS "@rx \b(?:for(?:/[dflr].*)? %+[^ ]+ in\(.*\)[\s\x0b]?do|if(?:/i)?(?: not)?(?: (?:e(?:xist|rrorlevel)|defined|cmdextversion)\b|[ \(].*(?:\b(?:g(?:eq|tr)|equ|neq|l(?:eq|ss))\b|==)))" "id:1,phase:2,pass,t:none,t:cmdLine"
SecRule ARGS "@rx \b(?:for(?:/[dflr].*)? %+[^ ]+ in\(.*\)[\s\x0b]?do|if(?:/i)?(?: not)?(?: (?:e(?:xist|rrorlevel)|defined|cmdextversion)\b|[ \(].*(?:\b(?:g(?:eq|tr)|equ|neq|l(?:eq|ss))\b|==)))" "id:2,phase:2,pass,t:none,t:cmdLine,multiMatch"
SecRule ARGS "@rx (?:^|\.)\s*cookie\b" "id:3,phase:2,pass,t:none,t:lowercase,t:compressWhitespace,t:cmdLine"
SecRule ARGS "@rx (?i)ab" "id:4,phase:2,pass,t:none,t:cmdLine,t:removeWhitespace""#,
            "cmd.conf",
        )
        .unwrap();
        let need = |i: usize| literal_need(&rs.rules[i]).unwrap();
        let bit = |t: &[u64; 4], b: u8| t[usize::from(b >> 6)] >> (b & 63) & 1;
        let (triggers, strings) = need(0);
        // " in(" leaves "(" ("in" is in most text); "if not" adds nothing to "if".
        assert_eq!(strings, [b"(".to_vec(), b"if".to_vec()]);
        assert_eq!([b' ', b',', b'\t', b'^', b'"', b'\\'].map(|b| bit(&triggers, b)), [0, 0, 0, 1, 1, 1]);
        let sentence = b"running shoes, size 42";
        assert!(!sentence.iter().any(|&b| bit(&triggers, b) == 1));
        assert!(!strings.iter().any(|s| sentence.windows(s.len()).any(|w| w == &s[..])));
        let (triggers, _) = need(1);
        assert_eq!((bit(&triggers, b' '), bit(&triggers, b',')), (1, 1));
        // `cmdLine`'s triggers through the transformations before it (`compressWhitespace` and `lowercase` make none
        // of them); the cores have no spaces.
        let (triggers, strings) = need(2);
        assert_eq!((bit(&triggers, b'^'), bit(&triggers, b' ')), (1, 0));
        assert!(strings.iter().all(|s| !s.contains(&b' ')), "{strings:?}");
        // `removeWhitespace` after `cmdLine` joins what `cmdLine` turned into spaces ("a,b" gives "ab").
        let (triggers, _) = need(3);
        assert_eq!([b' ', b',', b';', b'^'].map(|b| bit(&triggers, b)), [1, 1, 1, 1]);
    }
}
