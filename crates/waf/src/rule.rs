//! Compiled rules: the action list of a SecRule/SecAction parsed once (ModSecurity v2's `msre_parse_generic`
//! quoting), merged with the phase's SecDefaultAction, into typed fields the transaction executes without parsing.

use std::ops::RangeInclusive;
use std::sync::Arc;

use palisade_waf_ops::{Operator, Transform};

use crate::macros::MacroStr;
use crate::vars::{parse_target, Target, STORES};
use crate::EngineMode;

/// One `name[:value]` of an action list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawAction {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
}

/// Split an action list: `id:1,msg:'a, b',t:none` (single quotes with `\'`/`\\` escapes).
pub(crate) fn parse_actions(s: &str) -> Result<Vec<RawAction>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace() || *c == b',') {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while b.get(i).is_some_and(|c| *c != b':' && *c != b',' && !c.is_ascii_whitespace()) {
            i += 1;
        }
        let name = s.get(start..i).unwrap_or("").to_ascii_lowercase();
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        let mut value = None;
        if b.get(i) == Some(&b':') {
            i += 1;
            while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
                i += 1;
            }
            if b.get(i) == Some(&b'\'') {
                i += 1;
                let mut v = Vec::new();
                let mut closed = false;
                while let Some(&c) = b.get(i) {
                    if c == b'\\' && matches!(b.get(i + 1), Some(b'\'') | Some(b'\\')) {
                        v.push(b.get(i + 1).copied().unwrap_or(b'\\'));
                        i += 2;
                    } else if c == b'\'' {
                        i += 1;
                        closed = true;
                        break;
                    } else {
                        v.push(c);
                        i += 1;
                    }
                }
                if !closed {
                    return Err(format!("missing closing quote in value of action {name}"));
                }
                value = Some(String::from_utf8_lossy(&v).into_owned());
            } else {
                let vs = i;
                while b.get(i).is_some_and(|c| *c != b',') {
                    i += 1;
                }
                value = Some(s.get(vs..i).unwrap_or("").trim_end().to_string());
            }
        }
        while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        match b.get(i) {
            None | Some(b',') => {}
            Some(_) => return Err(format!("unexpected text after action {name}")),
        }
        if name.is_empty() {
            return Err("empty action name".into());
        }
        out.push(RawAction { name, value });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllowScope {
    All,
    Phase,
    Request,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Disruptive {
    Pass,
    Block,
    Deny,
    Drop,
    Allow(AllowScope),
    Redirect(String),
}

#[derive(Debug, Clone)]
pub(crate) enum SetOp {
    Set,
    Add,
    Sub,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyProc {
    UrlEncoded,
    Multipart,
    Json,
    Xml,
}

impl BodyProc {
    pub(crate) fn name(self) -> &'static str {
        match self {
            BodyProc::UrlEncoded => "URLENCODED",
            BodyProc::Multipart => "MULTIPART",
            BodyProc::Json => "JSON",
            BodyProc::Xml => "XML",
        }
    }
}

/// How a `ctl:ruleRemove*` names its rules.
#[derive(Debug, Clone)]
pub(crate) enum RuleSel {
    Ids(Vec<RangeInclusive<u32>>),
    Tag(String),
}

impl RuleSel {
    pub(crate) fn selects(&self, rule: &Rule) -> bool {
        match self {
            RuleSel::Ids(r) => r.iter().any(|r| r.contains(&rule.id)),
            RuleSel::Tag(t) => rule.tags.iter().any(|x| x.eq_ignore_ascii_case(t)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Ctl {
    RuleRemove(RuleSel),
    RuleRemoveTarget(RuleSel, Arc<Target>),
    RuleEngine(EngineMode),
    RequestBodyProcessor(BodyProc),
    RequestBodyAccess(bool),
    ForceRequestBodyVariable(bool),
    ResponseBodyAccess(bool),
    Ignored,
}

/// Non-disruptive actions with an effect, executed in the order written.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    SetVar { store: usize, name: MacroStr, op: SetOp, value: MacroStr },
    Ctl(Ctl),
}

/// A compiled SecRule, SecAction (no operator) or SecMarker.
///
/// Laid out as written (`repr(C)`), from a cache-line boundary: the fields the phase walk reads for every rule it
/// reaches (a marker, flow, what a match records) come first and share the first four lines, the evaluation's
/// after them. A request reaches ~100 of the CRS's 660 rules (704 bytes each); between two requests a gateway's
/// caches lose most of them, so each line a rule visit touches costs a miss.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Rule {
    pub(crate) id: u32,
    pub(crate) skip: u32,
    /// For a chain link that is a pure check (see `compile::PurePlan`), its pure number: the verdict memo then
    /// decides whether any of its values can match, as for a pure starter. [`crate::compile::NOT_PURE`] otherwise.
    pub(crate) link_pure: u32,
    pub(crate) status: Option<u16>,
    pub(crate) phase: u8,
    pub(crate) severity: Option<u8>,
    pub(crate) log: bool,
    pub(crate) multi_match: bool,
    pub(crate) capture: bool,
    pub(crate) has_chain_flag: bool,
    pub(crate) marker: Option<String>,
    pub(crate) chain: Option<Box<Rule>>,
    pub(crate) skip_after: Option<String>,
    pub(crate) effects: Vec<Effect>,
    pub(crate) disruptive: Option<Disruptive>,
    /// The phase's SecDefaultAction disruptive action, what `block` means.
    pub(crate) default_disruptive: Disruptive,
    pub(crate) msg: Option<MacroStr>,
    pub(crate) logdata: Option<MacroStr>,
    // Evaluation.
    /// The other entries of `targets`, contiguous (walked for every evaluation), each with whether an entry of
    /// `exclusions` names the same variable.
    pub(crate) includes: Vec<(Target, bool)>,
    /// The `!` entries of `targets`, apart (they are checked against every value).
    pub(crate) exclusions: Vec<Target>,
    pub(crate) op: Option<Operator>,
    /// `op`'s [`Operator::required_bytes`], computed at load (the verdict memo's evaluations check it first).
    pub(crate) need_bytes: Option<[u64; 4]>,
    /// The bytes a value must contain *before* the transformations for the transformed value to contain one of
    /// `need_bytes` (`Transform::preimage` through the chain): a value with none of them is skipped without
    /// transforming it (for `multiMatch`, through any prefix of the chain). `None` when unknown or when it would
    /// skip nothing.
    pub(crate) pre_need: Option<[u64; 4]>,
    pub(crate) transforms: Vec<Transform>,
    /// Node of the transformation-chain trie (0: no transformation), key of the per-transaction cache.
    pub(crate) tchain: Vec<u32>,
    // Rarely read.
    pub(crate) targets: Vec<Arc<Target>>,
    pub(crate) tags: Vec<String>,
    pub(crate) rev: String,
    pub(crate) ver: String,
}

impl Rule {
    /// The disruptive action a match takes: `block` is the phase's `SecDefaultAction` one.
    pub(crate) fn disruptive_action(&self) -> Option<&Disruptive> {
        match &self.disruptive {
            Some(Disruptive::Block) => Some(&self.default_disruptive),
            other => other.as_ref(),
        }
    }

    /// Whether a match of this chain starter does nothing but get recorded and move the walk (`skip`, `skipAfter`):
    /// no chain, no setvar or ctl, no capture, and `pass` (or no disruptive action).
    pub(crate) fn only_records(&self) -> bool {
        self.chain.is_none()
            && self.effects.is_empty()
            && !self.capture
            && matches!(self.disruptive_action(), None | Some(Disruptive::Pass))
    }
}

pub(crate) fn severity_of(v: &str) -> Result<u8, String> {
    let names = ["EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"];
    if let Ok(n) = v.parse::<u8>() {
        if n <= 7 {
            return Ok(n);
        }
    }
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(v))
        .and_then(|p| u8::try_from(p).ok())
        .ok_or_else(|| format!("invalid severity {v}"))
}

pub(crate) fn phase_of(v: &str) -> Result<u8, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "request_headers" => Ok(1),
        "2" | "request" => Ok(2),
        "3" | "response_headers" => Ok(3),
        "4" | "response" => Ok(4),
        "5" | "logging" => Ok(5),
        "0" => Ok(1),
        _ => Err(format!("invalid phase {v}")),
    }
}

/// `1,5-7,900000-900999` style id lists (also space separated).
pub(crate) fn parse_id_ranges(s: &str) -> Result<Vec<RangeInclusive<u32>>, String> {
    let mut out = Vec::new();
    for part in s.split([',', ' ']).map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid rule id or range {part}");
        if let Some((a, b)) = part.split_once('-') {
            let a: u32 = a.trim().parse().map_err(|_| bad())?;
            let b: u32 = b.trim().parse().map_err(|_| bad())?;
            if a > b {
                return Err(bad());
            }
            out.push(a..=b);
        } else {
            let a: u32 = part.parse().map_err(|_| bad())?;
            out.push(a..=a);
        }
    }
    if out.is_empty() {
        return Err("empty rule id list".into());
    }
    Ok(out)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("expected On or Off, got {v}")),
    }
}

pub(crate) fn parse_engine_mode(v: &str) -> Result<EngineMode, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" => Ok(EngineMode::On),
        "off" => Ok(EngineMode::Off),
        "detectiononly" => Ok(EngineMode::DetectionOnly),
        _ => Err(format!("invalid engine mode {v}")),
    }
}

fn parse_ctl(v: &str) -> Result<Ctl, String> {
    let (name, arg) = v.split_once('=').ok_or_else(|| format!("ctl without '=': {v}"))?;
    let arg = arg.trim();
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "ruleremovebyid" => Ctl::RuleRemove(RuleSel::Ids(parse_id_ranges(arg)?)),
        "ruleremovebytag" => Ctl::RuleRemove(RuleSel::Tag(arg.to_string())),
        "ruleremovetargetbyid" | "ruleremovetargetbytag" => {
            let (sel, target) = arg.split_once(';').ok_or_else(|| format!("ctl:{name} needs 'rule;TARGET'"))?;
            let sel = if name.eq_ignore_ascii_case("ruleremovetargetbyid") {
                RuleSel::Ids(parse_id_ranges(sel)?)
            } else {
                RuleSel::Tag(sel.to_string())
            };
            let mut t = parse_target(target.trim())?;
            t.exclude = true;
            Ctl::RuleRemoveTarget(sel, Arc::new(t))
        }
        "ruleengine" => Ctl::RuleEngine(parse_engine_mode(arg)?),
        "requestbodyprocessor" => Ctl::RequestBodyProcessor(match arg.to_ascii_uppercase().as_str() {
            "URLENCODED" => BodyProc::UrlEncoded,
            "MULTIPART" => BodyProc::Multipart,
            "JSON" => BodyProc::Json,
            "XML" => BodyProc::Xml,
            _ => return Err(format!("unknown request body processor {arg}")),
        }),
        "requestbodyaccess" => Ctl::RequestBodyAccess(parse_bool(arg)?),
        "forcerequestbodyvariable" => Ctl::ForceRequestBodyVariable(parse_bool(arg)?),
        "responsebodyaccess" => Ctl::ResponseBodyAccess(parse_bool(arg)?),
        "auditengine" | "auditlogparts" | "debugloglevel" | "requestbodylimit" | "responsebodylimit" | "hashengine"
        | "hashenforcement" | "parseXmlIntoArgs" | "parsexmlintoargs" => Ctl::Ignored,
        other => return Err(format!("unknown ctl option {other}")),
    })
}

fn parse_setvar(v: &str) -> Result<Effect, String> {
    let (del, v) = match v.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let (lhs, op, rhs) = if del {
        (v, SetOp::Delete, "")
    } else if let Some(p) = v.find('=') {
        let lhs = v.get(..p).unwrap_or("");
        let rhs = v.get(p + 1..).unwrap_or("");
        if let Some(r) = rhs.strip_prefix('+') {
            (lhs, SetOp::Add, r)
        } else if let Some(r) = rhs.strip_prefix('-') {
            (lhs, SetOp::Sub, r)
        } else {
            (lhs, SetOp::Set, rhs)
        }
    } else {
        (v, SetOp::Set, "1")
    };
    let (coll, name) = lhs.trim().split_once('.').ok_or_else(|| format!("setvar needs collection.name: {v}"))?;
    let store = STORES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(coll.trim()))
        .ok_or_else(|| format!("setvar on unknown or read-only collection {coll}"))?;
    if name.is_empty() {
        return Err(format!("setvar with empty variable name: {v}"));
    }
    Ok(Effect::SetVar { store, name: MacroStr::parse(name), op, value: MacroStr::parse(rhs) })
}

/// The fields of a rule that its action list sets.
#[derive(Debug, Default)]
pub(crate) struct ActionSet {
    pub(crate) id: Option<u32>,
    pub(crate) phase: Option<u8>,
    pub(crate) transforms: Vec<(String, Transform)>,
    pub(crate) multi_match: bool,
    pub(crate) capture: bool,
    pub(crate) disruptive: Option<Disruptive>,
    pub(crate) status: Option<u16>,
    pub(crate) skip: u32,
    pub(crate) skip_after: Option<String>,
    pub(crate) effects: Vec<Effect>,
    pub(crate) msg: Option<MacroStr>,
    pub(crate) logdata: Option<MacroStr>,
    pub(crate) tags: Vec<String>,
    pub(crate) severity: Option<u8>,
    pub(crate) log: Option<bool>,
    pub(crate) chain: bool,
    pub(crate) rev: String,
    pub(crate) ver: String,
}

impl ActionSet {
    /// Apply actions in order (later ones override earlier ones, `t:none` clears transformations).
    pub(crate) fn apply(&mut self, actions: &[RawAction]) -> Result<(), String> {
        for a in actions {
            let val = || a.value.clone().ok_or_else(|| format!("action {} needs a value", a.name));
            match a.name.as_str() {
                "id" => {
                    let v = val()?;
                    let id: u32 = v.trim().parse().map_err(|_| format!("invalid rule id {v}"))?;
                    if id == 0 {
                        return Err("rule id 0 is not allowed".into());
                    }
                    self.id = Some(id);
                }
                "phase" => self.phase = Some(phase_of(val()?.trim())?),
                "t" => {
                    let v = val()?;
                    match Transform::parse(v.trim()) {
                        Ok(Some(t)) => self.transforms.push((v.trim().to_ascii_lowercase(), t)),
                        Ok(None) => self.transforms.clear(),
                        Err(e) => return Err(format!("t:{v}: {e}")),
                    }
                }
                "multimatch" => self.multi_match = true,
                "capture" => self.capture = true,
                "pass" => self.disruptive = Some(Disruptive::Pass),
                "block" => self.disruptive = Some(Disruptive::Block),
                "deny" => self.disruptive = Some(Disruptive::Deny),
                "drop" => self.disruptive = Some(Disruptive::Drop),
                "allow" => {
                    let scope = match a.value.as_deref().map(str::to_ascii_lowercase).as_deref() {
                        None | Some("") => AllowScope::All,
                        Some("phase") => AllowScope::Phase,
                        Some("request") => AllowScope::Request,
                        Some(o) => return Err(format!("invalid allow scope {o}")),
                    };
                    self.disruptive = Some(Disruptive::Allow(scope));
                }
                "redirect" => self.disruptive = Some(Disruptive::Redirect(val()?)),
                "proxy" | "pause" => return Err(format!("action {} is not supported", a.name)),
                "status" => {
                    let v = val()?;
                    let s: u16 = v.trim().parse().map_err(|_| format!("invalid status {v}"))?;
                    if !(100..=999).contains(&s) {
                        return Err(format!("invalid status {v}"));
                    }
                    self.status = Some(s);
                }
                "skip" => {
                    let v = val()?;
                    self.skip = v.trim().parse().map_err(|_| format!("invalid skip count {v}"))?;
                }
                "skipafter" => self.skip_after = Some(val()?.trim().to_string()),
                "setvar" => self.effects.push(parse_setvar(val()?.trim())?),
                "ctl" => {
                    let c = parse_ctl(val()?.trim())?;
                    if !matches!(c, Ctl::Ignored) {
                        self.effects.push(Effect::Ctl(c));
                    }
                }
                "msg" => self.msg = Some(MacroStr::parse(&val()?)),
                "logdata" => self.logdata = Some(MacroStr::parse(&val()?)),
                "tag" => self.tags.push(val()?),
                "severity" => self.severity = Some(severity_of(val()?.trim())?),
                "log" => self.log = Some(true),
                "nolog" => self.log = Some(false),
                "chain" => self.chain = true,
                "rev" => self.rev = val()?,
                "ver" => self.ver = val()?,
                "auditlog"
                | "noauditlog"
                | "maturity"
                | "accuracy"
                | "initcol"
                | "setsid"
                | "setuid"
                | "setrsc"
                | "expirevar"
                | "deprecatevar"
                | "sanitisearg"
                | "sanitisematched"
                | "sanitisematchedbytes"
                | "sanitiserequestheader"
                | "sanitiseresponseheader"
                | "sanitizearg"
                | "sanitizematched"
                | "sanitizematchedbytes"
                | "sanitizerequestheader"
                | "sanitizeresponseheader"
                | "append"
                | "prepend"
                | "exec"
                | "setenv"
                | "xmlns" => {}
                other => return Err(format!("unknown action {other}")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_lists_split_with_quotes() {
        let a = parse_actions("id:1, phase:2,msg:'a, b \\'c\\'',  t:none,pass,setvar:'tx.x=+%{tx.y}'").unwrap();
        let names: Vec<&str> = a.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["id", "phase", "msg", "t", "pass", "setvar"]);
        assert_eq!(a[2].value.as_deref(), Some("a, b 'c'"));
        assert_eq!(a[5].value.as_deref(), Some("tx.x=+%{tx.y}"));
        assert!(parse_actions("msg:'open").unwrap_err().contains("missing closing quote"));
    }

    #[test]
    fn ids_severities_phases() {
        assert_eq!(parse_id_ranges("1, 5-7").unwrap(), vec![1..=1, 5..=7]);
        assert!(parse_id_ranges("7-5").is_err());
        assert_eq!(severity_of("CRITICAL").unwrap(), 2);
        assert_eq!(severity_of("4").unwrap(), 4);
        assert!(severity_of("9").is_err());
        assert_eq!(phase_of("request").unwrap(), 2);
        assert_eq!(phase_of("logging").unwrap(), 5);
    }

    #[test]
    fn unknown_action_is_an_error() {
        let mut s = ActionSet::default();
        let e = s.apply(&parse_actions("id:1,frobnicate").unwrap()).unwrap_err();
        assert_eq!(e, "unknown action frobnicate");
        let e = s.apply(&parse_actions("ctl:nope=1").unwrap()).unwrap_err();
        assert_eq!(e, "unknown ctl option nope");
    }
}
