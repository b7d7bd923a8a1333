//! One request through the rules. Invariants: request collections are filled before the phase that reads them and
//! not changed while a rule evaluates (transformed values are cached per (chain prefix, value) on that basis); TX
//! and the other stores change only through setvar/capture, between evaluations; after an intervention no further
//! rules run except phase 5.

use std::borrow::Cow;
use std::cell::{OnceCell, Ref, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::{ControlFlow, Range, RangeInclusive};
use std::sync::Arc;
use std::time::Instant;

use palisade_waf_body as body;
use palisade_waf_ops::{MacroEnv, Transform};

use crate::compile::{RuleSet, NOT_PURE, NO_POS};
use crate::init;
use crate::macros::{MacroStr, Part};
use crate::memo;
use crate::outcome;
use crate::rule::{AllowScope, BodyProc, Ctl, Disruptive, Effect, Rule, RuleSel, SetOp};
use crate::vars::{name_hash, Coll, Key, Scalar, Target, Var, SCALAR_COUNT, STORES, TX_STORE};
use crate::{EngineMode, Intervention, LoggedMatch, RequestHead, RuleMatch};

type Pair = (Vec<u8>, Vec<u8>);

/// A writable collection (TX, IP, ...): names compare ASCII case-insensitively, insertion order is kept.
#[derive(Debug, Default, Clone)]
pub(crate) struct Store {
    entries: Vec<Pair>,
    /// [`name_hash`] of each name to its position (the first name with that hash). Plain integers, so copying a
    /// store (the snapshot's, into every transaction) allocates nothing once the copy's buffers have grown.
    index: HashMap<u64, usize, FastHash>,
    /// Whether two names have the same hash: a lookup whose hash names another variable then scans.
    collided: bool,
    /// Positions written since the store was made or copied, in order (repeats kept): what changed since then (see
    /// `Transaction::outcome_key` and `Transaction::outcome_since`).
    written: Vec<u32>,
    /// Variables deleted since then (positions after a deletion moved: `written` no longer says what changed).
    removals: u32,
    /// The positions below 256 in `written`, a bit each (see `init::Pristine`).
    dirty: [u64; 4],
    /// The snapshot (`init::Snapshot::id`) this store was last copied from, 0 for none: while nothing was deleted
    /// since, `written` lists every change to it, and [`Store::restore`] undoes those instead of copying every
    /// variable again.
    copied_from: u64,
    /// Buffers of variables a copy or clear dropped, for the next new variables (a transaction's copy of a snapshot's
    /// TX drops the variables the last transaction added, and this one adds as many: CRS 920450 one per header).
    spare: Vec<Pair>,
}

/// Index slots of dropped variables a restored store keeps at most (see `Store::restore`).
const STALE_SLOTS: usize = 64;

/// Spare variable buffers a store keeps at most.
const SPARE_PAIRS: usize = 64;

/// TX variables a transaction makes room for up front (the CRS sets about 60 in phase 1; growing the map and list
/// step by step costs several reallocations and rehashes per request).
const TX_CAPACITY: usize = 96;

impl Store {
    /// Make room for `n` variables in all.
    fn reserve(&mut self, n: usize) {
        self.entries.reserve(n.saturating_sub(self.entries.len()));
        self.index.reserve(n.saturating_sub(self.index.len()));
    }

    /// The position of variable `name`.
    fn position(&self, name: &[u8]) -> Option<usize> {
        self.position_hashed(name, name_hash(name))
    }

    /// The position of variable `name`, whose [`name_hash`] is `h` (known at load for most names rules use).
    fn position_hashed(&self, name: &[u8], h: u64) -> Option<usize> {
        let i = *self.index.get(&h)?;
        if self.entries.get(i).is_some_and(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Some(i);
        }
        // Another name has this hash: `name` may still be a later entry.
        if self.collided {
            return self.entries.iter().position(|(n, _)| n.eq_ignore_ascii_case(name));
        }
        None
    }

    pub(crate) fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.entries.get(self.position(name)?).map(|(_, v)| v.as_slice())
    }

    pub(crate) fn set(&mut self, name: &[u8], value: Vec<u8>) {
        let h = name_hash(name);
        match self.position_hashed(name, h) {
            Some(i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    e.1 = value;
                }
                self.note_write(i);
            }
            None => self.insert_with(name, h, |v| *v = value),
        }
    }

    /// The positions written since `from` in the write log, each once, in the order first written; `None` past
    /// `outcome::MAX_WRITES` of them (each is checked against the ones before it).
    fn first_writes(&self, from: usize) -> Option<impl Iterator<Item = u32> + '_> {
        let log = self.written.get(from..).filter(|l| l.len() <= outcome::MAX_WRITES)?;
        Some(log.iter().enumerate().filter(|&(k, p)| !log.get(..k).is_some_and(|b| b.contains(p))).map(|(_, &p)| p))
    }

    fn note_write(&mut self, at: usize) {
        self.written.push(u32::try_from(at).unwrap_or(u32::MAX));
        if let Some(w) = self.dirty.get_mut(at / 64) {
            *w |= 1 << (at % 64);
        }
    }

    /// Whether a variable added past position `from` (the snapshot's TX's length) is one that a TX target of `rule`
    /// with a regex key (or none) selects (see `init::Pristine::added`).
    fn adds(&self, from: usize, rule: &Rule) -> bool {
        let added = self.entries.get(from..).unwrap_or_default();
        added.iter().any(|(n, _)| rule.targets.iter().any(|t| tx_by_key(t) && t.key.matches(n)))
    }

    /// Whether none of the variables at the positions of `bits` was written or deleted since the store was copied
    /// from snapshot `id` (see `init::Pristine`).
    #[inline]
    fn untouched(&self, id: u64, bits: &[u64; 4]) -> bool {
        self.copied_from == id && self.removals == 0 && self.dirty.iter().zip(bits).all(|(d, b)| d & b == 0)
    }

    /// Set `name` (hash `h`) to `value` reusing the existing value's buffer (no allocation when the variable exists
    /// and the new value fits).
    fn set_from(&mut self, name: &[u8], h: u64, value: &[u8]) {
        match self.position_hashed(name, h) {
            Some(i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    e.1.clear();
                    e.1.extend_from_slice(value);
                }
                self.note_write(i);
            }
            None => self.insert_with(name, h, |v| v.extend_from_slice(value)),
        }
    }

    /// Set the number in `name` (hash `h`) to `f` of its value (0 when unset), reusing the value's buffer.
    fn update_i64(&mut self, name: &[u8], h: u64, f: impl FnOnce(i64) -> i64) {
        let mut buf = [0u8; 20];
        match self.position_hashed(name, h) {
            Some(i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    let text = format_i64(f(parse_i64(&e.1)), &mut buf);
                    e.1.clear();
                    e.1.extend_from_slice(text);
                }
                self.note_write(i);
            }
            None => {
                let text = format_i64(f(0), &mut buf);
                self.insert_with(name, h, |v| v.extend_from_slice(text));
            }
        }
    }

    /// Append a variable (hash `h`) that does not exist yet, its value made by `fill` (in an emptied spare buffer).
    fn insert_with(&mut self, name: &[u8], h: u64, fill: impl FnOnce(&mut Vec<u8>)) {
        self.index_name(h, self.entries.len());
        self.note_write(self.entries.len());
        let (mut n, mut v) = self.spare.pop().unwrap_or_default();
        n.clear();
        n.extend_from_slice(name);
        v.clear();
        fill(&mut v);
        self.entries.push((n, v));
    }

    /// Drop the variables from position `len` on, keeping their buffers as spares (up to [`SPARE_PAIRS`]).
    fn truncate_keeping(&mut self, len: usize) {
        while self.entries.len() > len {
            let Some(p) = self.entries.pop() else { break };
            if self.spare.len() < SPARE_PAIRS {
                self.spare.push(p);
            }
        }
    }

    fn index_name(&mut self, h: u64, at: usize) {
        match self.index.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(at);
            }
            // A slot whose position is past the list, or holds a name of another hash, is stale (a variable
            // `restore` dropped): taken over.
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if self.entries.get(*o.get()).is_some_and(|(n, _)| name_hash(n) == h) {
                    self.collided = true;
                } else {
                    o.insert(at);
                }
            }
        }
    }

    /// Bytes held by the store's buffers (about).
    fn held_bytes(&self) -> usize {
        let pairs: usize = self.entries.iter().chain(&self.spare).map(|(n, v)| n.capacity() + v.capacity()).sum();
        // An index slot: the (hash, position) pair and a control byte.
        let slot = std::mem::size_of::<(u64, usize)>() + 1;
        pairs
            + (self.entries.capacity() + self.spare.capacity()) * std::mem::size_of::<Pair>()
            + self.index.capacity() * slot
            + self.written.capacity() * std::mem::size_of::<u32>()
    }

    /// Make this store equal to `src`, snapshot `id`'s store: by undoing the changes since this store was last
    /// copied from the same snapshot (a thread's last transaction's TX: the few variables a request writes and
    /// adds), else by copying it whole.
    fn restore(&mut self, src: &Store, id: u64) {
        let n = src.entries.len();
        if id == 0 || self.copied_from != id || self.removals != 0 || self.entries.len() < n {
            self.copy_from(src);
            self.copied_from = id;
            return;
        }
        // Variables added since are dropped, buffers kept. Their index slots stay (past the list, they find nothing,
        // and the next request adding the same variables takes them over: see `index_name`) until more than
        // `STALE_SLOTS` have gathered.
        if self.index.len() > src.index.len() + STALE_SLOTS {
            self.index.retain(|_, p| *p < n);
        }
        self.truncate_keeping(n);
        self.collided = src.collided;
        // Writes change values only (a new variable is appended), so the copy's names are all still in place.
        for &p in &self.written {
            if let (Some(e), Some(from)) = (self.entries.get_mut(p as usize), src.entries.get(p as usize)) {
                e.1.clone_from(&from.1);
            }
        }
        self.written.clear();
        self.dirty = [0; 4];
    }

    /// Make this store equal to `src`, reusing this one's buffers (names, values, index).
    fn copy_from(&mut self, src: &Store) {
        self.copied_from = 0;
        self.truncate_keeping(src.entries.len());
        let kept = self.entries.len();
        for ((n, v), (sn, sv)) in self.entries.iter_mut().zip(&src.entries) {
            n.clone_from(sn);
            v.clone_from(sv);
        }
        self.entries.extend(src.entries.get(kept..).unwrap_or_default().iter().cloned());
        self.index.clone_from(&src.index);
        self.collided = src.collided;
        self.written.clear();
        self.dirty = [0; 4];
        self.removals = 0;
    }

    /// Empty the store, keeping its buffers' capacity.
    fn clear(&mut self) {
        self.copied_from = 0;
        self.truncate_keeping(0);
        self.index.clear();
        self.collided = false;
        self.written.clear();
        self.dirty = [0; 4];
        self.removals = 0;
    }

    /// Whether two lists of stores hold the same variables, in the same order, with the same values.
    pub(crate) fn same_lists(a: &[Store], b: &[Store]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.entries == y.entries)
    }

    pub(crate) fn remove(&mut self, name: &[u8]) {
        let Some(i) = self.position(name) else { return };
        self.entries.remove(i);
        self.removals = self.removals.saturating_add(1);
        // Rare (`setvar:!tx.name`): positions after it moved, so the index is made again.
        self.index.clear();
        self.collided = false;
        let entries = std::mem::take(&mut self.entries);
        for (at, (n, _)) in entries.iter().enumerate() {
            self.index_name(name_hash(n), at);
        }
        self.entries = entries;
    }
}

/// A value a rule looks at: which variable, which member (empty for single values), the bytes, and its number
/// for the transformation cache ([`NO_ID`] when the value has none and is looked up by content).
struct Val<'a> {
    var: Var,
    key: Cow<'a, [u8]>,
    value: Cow<'a, [u8]>,
    id: u32,
}

/// TX:0..9, the names `capture` sets.
const CAPTURE_NAMES: [&[u8]; 10] = [b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"];

/// The id of a value that was not numbered when its collection was filled.
const NO_ID: u32 = u32::MAX;

/// Request/response collections whose members are numbered when the collection is filled: member `i` has id
/// `base + 2i` for its value and `base + 2i + 1` for its name. A refill takes a new base, so an id never names
/// two different contents within a transaction.
#[derive(Clone, Copy)]
enum Slot {
    ArgsGet,
    ArgsPost,
    Headers,
    Cookies,
    Files,
    FilesSizes,
    PartHeaders,
    RespHeaders,
}
const SLOTS: usize = 8;
const ALL_SLOTS: [Slot; SLOTS] = [
    Slot::ArgsGet,
    Slot::ArgsPost,
    Slot::Headers,
    Slot::Cookies,
    Slot::Files,
    Slot::FilesSizes,
    Slot::PartHeaders,
    Slot::RespHeaders,
];

/// A rule (chain) that matched, with what was expanded at the time: ranges of the transaction's `record_text`
/// (one buffer for all matches, kept as bytes: most rules that match are `nolog` and their text is rarely read, so
/// it is made text, invalid UTF-8 replaced, only when read).
pub(crate) struct Record<'r> {
    pub(crate) rule: &'r Rule,
    pub(crate) phase: u8,
    /// The rule's `log` (an audit event reads it for every match; the rules themselves are mostly not touched
    /// again once recorded: the snapshot's matches are replayed without reading them).
    pub(crate) log: bool,
    pub(crate) msg: Range<usize>,
    pub(crate) logdata: Range<usize>,
    pub(crate) var_name: Range<usize>,
}

/// Where a phase's walk over its rule list is: rules still to skip (`skip`), or the marker or rule id it skips to
/// (`skipAfter`).
#[derive(Default)]
pub(crate) struct Flow<'r> {
    pub(crate) skip: u32,
    pub(crate) skip_after: Option<&'r str>,
    /// `skip_after` as a rule id, parsed once when the skip started (not per skipped rule).
    pub(crate) skip_after_id: Option<u32>,
}

impl<'r> Flow<'r> {
    /// A matched rule's `skip` and `skipAfter`.
    fn after_match(&mut self, rule: &'r Rule) {
        if rule.skip > 0 {
            self.skip = rule.skip;
        }
        if let Some(sa) = &rule.skip_after {
            self.skip_after = Some(sa.as_str());
            self.skip_after_id = sa.parse::<u32>().ok();
        }
    }

    /// No skip pending.
    pub(crate) fn is_clear(&self) -> bool {
        self.skip == 0 && self.skip_after.is_none()
    }

    /// Whether the walk passes over `rule` without running it: a marker, or a rule being skipped.
    pub(crate) fn passes(&mut self, rule: &Rule) -> bool {
        if let Some(m) = &rule.marker {
            if self.skip_after == Some(m.as_str()) {
                self.skip_after = None;
            }
            return true;
        }
        if self.skip_after.is_some() {
            if self.skip_after_id == Some(rule.id) {
                self.skip_after = None;
            }
            return true;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return true;
        }
        false
    }
}

struct Matched {
    var: Var,
    /// The member name and the (transformed) value, as ranges of the transaction's `matched_bytes`.
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
    /// TX:0..9 of this match (`capture`): actions of each match see their own captures.
    captures: Vec<Vec<u8>>,
}

/// A distinct input value and its number.
type Numbered = (Arc<[u8]>, u32);

/// Transformed values of this transaction: each distinct input value is copied once and numbered; results are
/// kept in a row per value number, indexed by transformation-trie node (direct indexing: this is looked up for
/// every (rule, value) check).
struct TCache {
    inputs: HashMap<u64, Vec<Numbered>, FastHash>,
    /// Trie nodes, the length of a row.
    nodes: usize,
    /// Row start in `cells` per value id (`NO_ROW`: none yet).
    rows: Vec<u32>,
    cells: Vec<u32>,
    /// The transformed values cells point to (a cell holds [`UNKNOWN`], [`SAME`], or `FIRST_NEW` + an index here):
    /// a row is then 4 bytes per trie node, not a 24-byte enum, so a new value costs little memory to set up.
    results: Vec<Arc<[u8]>>,
    /// The next unused value id (shared by numbered collections and content-numbered values).
    next_id: u32,
    /// Per value id: the transformations known to leave the value itself unchanged (bit `Transform::index`), so
    /// another chain applying one of them to the untransformed value needs no scan (most values are plain text,
    /// which most transformations leave as it is, and the CRS's chains repeat them in many orders).
    unchanged: Vec<u64>,
}

/// A cell of a transformation row: not computed yet, the chain left the value unchanged, or (from `FIRST_NEW` on)
/// the index of its result in `TCache::results` plus `FIRST_NEW`.
const UNKNOWN: u32 = 0;
const SAME: u32 = 1;
const FIRST_NEW: u32 = 2;

const NO_ROW: u32 = u32::MAX;

/// Rows kept per transaction: a request with more distinct values transforms the rest uncached, so many tiny
/// hostile values cannot make a row (trie nodes x 4 bytes, and the results) each.
const MAX_ROWS: usize = 2048;

impl TCache {
    /// The arguments are empty buffers to reuse (`rows`, `cells` and `unchanged` last).
    fn new(
        nodes: usize,
        inputs: HashMap<u64, Vec<Numbered>, FastHash>,
        results: Vec<Arc<[u8]>>,
        (rows, cells, unchanged): (Vec<u32>, Vec<u32>, Vec<u64>),
    ) -> TCache {
        TCache { inputs, nodes: nodes.max(1), rows, cells, results, next_id: 0, unchanged }
    }

    /// The transformations known to leave value `id` unchanged (see `unchanged`).
    fn unchanged(&self, id: u32) -> u64 {
        usize::try_from(id).ok().and_then(|i| self.unchanged.get(i)).copied().unwrap_or(0)
    }

    /// Remember that the transformations `bits` leave value `id` unchanged; only for values this cache numbered a
    /// row for (so this grows no further than `rows`).
    fn add_unchanged(&mut self, id: u32, bits: u64) {
        let Ok(i) = usize::try_from(id) else { return };
        if bits == 0 || i >= self.rows.len() {
            return;
        }
        if i >= self.unchanged.len() {
            self.unchanged.resize(i + 1, 0);
        }
        if let Some(u) = self.unchanged.get_mut(i) {
            *u |= bits;
        }
    }

    /// `n` fresh consecutive ids; `NO_ID` when the id space is exhausted (values are then looked up by content).
    fn reserve(&mut self, n: usize) -> u32 {
        let Some(n) = u32::try_from(n).ok().and_then(|n| n.checked_mul(2)) else { return NO_ID };
        match self.next_id.checked_add(n) {
            Some(next) if next < NO_ID => {
                let base = self.next_id;
                self.next_id = next;
                base
            }
            _ => NO_ID,
        }
    }

    /// The start of value `id`'s row in `cells`, made on first use; `None` past `MAX_ROWS`.
    fn row(&mut self, id: u32) -> Option<usize> {
        let i = usize::try_from(id).ok()?;
        if i >= self.rows.len() {
            // Ids are handed out by `reserve`, so this grows with the request's values (4 bytes per id).
            self.rows.resize(i.checked_add(1)?, NO_ROW);
        }
        let slot = self.rows.get_mut(i)?;
        if *slot != NO_ROW {
            return usize::try_from(*slot).ok();
        }
        let start = self.cells.len();
        if start / self.nodes >= MAX_ROWS {
            return None;
        }
        *slot = u32::try_from(start).ok()?;
        self.cells.resize(start.checked_add(self.nodes)?, UNKNOWN);
        Some(start)
    }
}

/// Values larger than this are transformed without caching (a copy of a large body is not worth it).
const CACHE_MAX_VALUE: usize = 64 * 1024;

/// A transformed value: the original bytes or a result from the cache (lent while the check runs; nothing a check
/// calls writes the cache).
enum Tv<'v> {
    Same(&'v [u8]),
    Cached(Ref<'v, [u8]>),
    New(Arc<[u8]>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Tv<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Tv::Same(b) => b,
            Tv::Cached(r) => r,
            Tv::New(a) => a,
            Tv::Owned(v) => v,
        }
    }
}

/// Hasher for small integer keys and pre-hashed values (SipHash's DoS resistance is not needed: keys are
/// trie node numbers and value numbers, and value hashes are verified against the full bytes).
#[derive(Default, Clone, Copy)]
struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_bytes(bytes) ^ self.0.rotate_left(17);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// Buffers a transaction grows while it runs, kept per thread for the next transaction (emptied, capacity kept):
/// growing them again for every request was a measurable share of its cost (`bench/waf-icount.sh`).
#[derive(Default)]
struct Scratch {
    pure_vals: Vec<(u32, u32)>,
    entry_of_id: Vec<u32>,
    /// The last transaction's `entry_of_id` and the memo generation it refers to, not emptied: the next request
    /// (from a browser, much like the last) finds most of its values at the same ids (`Adder::value`).
    last_entries: (Vec<u32>, u64),
    /// The last transaction's `count_entries` and their memo generation.
    count_entries: ([u32; COUNTS], u64),
    walk_pass: Vec<u64>,
    target_spans: Vec<(u32, u32)>,
    phase_maybe: Vec<u64>,
    phase_asked: Vec<u64>,
    group_ready: Vec<bool>,
    matched_bytes: Vec<u8>,
    matched_buf: Vec<Matched>,
    record_text: Vec<u8>,
    name_buf: Vec<u8>,
    expand_bufs: (Vec<u8>, Vec<u8>),
    rows: Vec<u32>,
    cells: Vec<u32>,
    unchanged: Vec<u64>,
    outcome_key: Vec<u8>,
    /// The scalars of the last transaction (their buffers; `Transaction::new` empties them).
    scalars: Vec<Vec<u8>>,
    /// Their cache ids (emptied).
    scalar_ids: Vec<u32>,
    /// MATCHED_VARS entries of the last transaction (their buffers).
    matched_vars: Vec<Pair>,
    /// The transformation cache's value index and results (emptied).
    inputs: HashMap<u64, Vec<Numbered>, FastHash>,
    results: Vec<Arc<[u8]>>,
    /// The removals selecting the chain being evaluated (see `ExtraMemo`; emptied).
    extra_memo: Vec<usize>,
    /// The stores of the last transaction, which the next one restores to a snapshot's (`Store::restore`: when
    /// they were copied from the same snapshot, by undoing the last transaction's changes).
    stores: Vec<Store>,
    /// Its other set of stores (the starting ones when a snapshot was copied), emptied for the next transaction's
    /// starting stores (`Transaction::set_var` writes them before phase 1).
    initial: Vec<Store>,
    /// The numbered collections of the last transaction, by `Slot`, whose members' buffers the next one refills
    /// (`body::Refill`): a request like the last one allocates nothing for its arguments, headers and cookies.
    pairs: [Vec<Pair>; SLOTS],
    /// How many matches the last transaction recorded: the next one makes room for as many at once (the CRS
    /// records ~60 per request, mostly its paranoia-level checks; growing the list step by step copied it four
    /// times, into memory no request had touched yet).
    records: usize,
    /// Transactions that used this set (see [`SCRATCH_CHECK_EVERY`]).
    uses: u32,
}

/// Scratch sets kept per thread (transactions kept for response inspection hold theirs meanwhile).
const SCRATCH_KEEP: usize = 4;
/// A set that grew past this (an unusual request) is dropped rather than kept.
const SCRATCH_MAX_BYTES: usize = 1 << 20;
/// A set's size is measured at every this many of its uses (not at each: the sum is a few percent of a request's
/// cost), so an unusual request's buffers are kept for at most this many more transactions.
const SCRATCH_CHECK_EVERY: u32 = 8;
/// Matches a transaction makes room for up front at most (see `Scratch::records`).
const MAX_RECORDS_HINT: usize = 256;

thread_local! {
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
    /// The last client address this thread formatted for REMOTE_ADDR, and its text.
    static LAST_ADDR: RefCell<(Option<IpAddr>, Vec<u8>)> = const { RefCell::new((None, Vec::new())) };
}

/// A buffer of [`Scratch`]: what it holds, and emptying it with its capacity kept.
trait Reusable {
    fn held_bytes(&self) -> usize;
    fn empty(&mut self);
}

impl<K, V, S> Reusable for HashMap<K, V, S> {
    fn held_bytes(&self) -> usize {
        self.capacity().saturating_mul(std::mem::size_of::<(K, V)>() + 1)
    }
    fn empty(&mut self) {
        self.clear();
    }
}

impl<T> Reusable for Vec<T> {
    fn held_bytes(&self) -> usize {
        self.capacity().saturating_mul(std::mem::size_of::<T>())
    }
    fn empty(&mut self) {
        self.clear();
    }
}

impl Scratch {
    fn take() -> Scratch {
        SCRATCH.try_with(|p| p.borrow_mut().pop()).ok().flatten().unwrap_or_default()
    }

    fn buffers(&mut self) -> [&mut dyn Reusable; 21] {
        [
            &mut self.walk_pass,
            &mut self.scalar_ids,
            &mut self.inputs,
            &mut self.results,
            &mut self.extra_memo,
            &mut self.pure_vals,
            &mut self.entry_of_id,
            &mut self.target_spans,
            &mut self.phase_maybe,
            &mut self.phase_asked,
            &mut self.group_ready,
            &mut self.matched_bytes,
            &mut self.matched_buf,
            &mut self.record_text,
            &mut self.name_buf,
            &mut self.expand_bufs.0,
            &mut self.expand_bufs.1,
            &mut self.rows,
            &mut self.cells,
            &mut self.unchanged,
            &mut self.outcome_key,
        ]
    }

    /// The bytes the set's buffers hold (a sum over every buffer: ~1.5k instructions with the CRS's TX).
    fn held_bytes(&mut self) -> usize {
        let pairs: usize = self
            .pairs
            .iter()
            .flatten()
            .chain(&self.matched_vars)
            .map(|(n, v)| n.capacity() + v.capacity() + std::mem::size_of::<Pair>())
            .sum::<usize>()
            + self.last_entries.0.held_bytes();
        let values: usize = self.stores.iter().chain(&self.initial).map(Store::held_bytes).sum::<usize>()
            + self.scalars.iter().map(Vec::capacity).sum::<usize>()
            + pairs;
        self.buffers().iter().map(|b| b.held_bytes()).sum::<usize>() + values
    }

    /// Empty every buffer and keep the set for this thread's next transaction, unless it grew too large (measured
    /// every [`SCRATCH_CHECK_EVERY`] uses of the set).
    fn give_back(mut self) {
        self.uses = self.uses.wrapping_add(1);
        if self.uses.is_multiple_of(SCRATCH_CHECK_EVERY) && self.held_bytes() > SCRATCH_MAX_BYTES {
            return;
        }
        self.buffers().into_iter().for_each(|b| b.empty());
        self.initial.iter_mut().for_each(Store::clear);
        let _ = SCRATCH.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < SCRATCH_KEEP {
                p.push(self);
            }
        });
    }
}

/// The state of one request. Not `Sync`; create one per request with [`RuleSet::transaction`].
pub struct Transaction<'r> {
    rs: &'r RuleSet,
    mode: EngineMode,
    started: Instant,
    scalars: Vec<Vec<u8>>,
    /// Cache ids of `scalars` (a fresh id per `set_scalar`).
    scalar_ids: Vec<u32>,
    /// Id bases of the numbered collections, by `Slot`.
    bases: [u32; SLOTS],
    args_get: Vec<Pair>,
    args_post: Vec<Pair>,
    headers: Vec<Pair>,
    cookies: Vec<Pair>,
    files: Vec<Pair>,
    files_sizes: Vec<Pair>,
    part_headers: Vec<Pair>,
    resp_headers: Vec<Pair>,
    xml_text: Vec<Vec<u8>>,
    xml_attrs: Vec<Vec<u8>>,
    /// MATCHED_VARS: the first `matched_len` entries (the rest are buffers kept for reuse).
    matched_vars: Vec<Pair>,
    matched_len: usize,
    /// Scratch of `eval_rule`, kept between rules so a match allocates nothing once they have grown.
    matched_buf: Vec<Matched>,
    matched_bytes: Vec<u8>,
    name_buf: Vec<u8>,
    /// Scratch of `run_effects`: a setvar's expanded name and value.
    expand_bufs: (Vec<u8>, Vec<u8>),
    stores: Vec<Store>,
    removed: Vec<RuleSel>,
    /// Target removals by `ctl` (borrowed from the rule that ran it) or by the API.
    removed_targets: Vec<Removal<'r>>,
    body_proc: Option<BodyProc>,
    request_body_access: bool,
    response_body_access: bool,
    force_body_var: bool,
    /// Matches as recorded (cheap); `built` is the public form, made on demand (tags are cloned only then).
    records: Vec<Record<'r>>,
    /// HIGHEST_SEVERITY as a number (255: no record with a severity yet).
    highest_severity: u8,
    record_text: Vec<u8>,
    built: OnceCell<Vec<RuleMatch>>,
    /// DURATION in the current phase, made when first read (see `scalar`).
    duration: OnceCell<Vec<u8>>,
    intervention: Option<Intervention>,
    allow: Option<AllowScope>,
    allow_phase: u8,
    /// The chain starter being evaluated, for `%{rule.*}`.
    current: Option<&'r Rule>,
    cache: RefCell<TCache>,
    /// The ctl target removals that apply to the chain being evaluated, kept while neither the chain's starter
    /// nor the list of removals changes (they are checked for every value).
    extra_memo: RefCell<ExtraMemo>,
    /// This phase's values of each target of pure-rule groups (see `memo`, `PurePlan::targets`): (start, len) in
    /// `pure_vals`, or unset.
    target_spans: Vec<(u32, u32)>,
    /// The pure rules that may match one of the values of the targets enumerated in this phase, as the memo knew
    /// when each target was enumerated (a row of as many words as the memo's; each target adds only the rules
    /// whose group reads it, `PurePlan::target_rules`).
    phase_maybe: Vec<u64>,
    /// The pure rules `may_match` was asked about before this phase (the memo's `asked`, copied at the phase's
    /// start): `pure_vals` leaves out the values known to match none of the rules reading them that are in this row,
    /// so it answers only for these rules.
    phase_asked: Vec<u64>,
    /// Whether each group's targets were all enumerated in this phase.
    group_ready: Vec<bool>,
    /// The phase being walked (0 outside a walk), and whether its targets were all enumerated at once yet (see
    /// `PurePlan::phase_targets`).
    phase: u8,
    batched: bool,
    /// (memo entry, value id) of the values enumerated for pure-rule targets in this phase.
    pure_vals: Vec<(u32, u32)>,
    /// Memo entry per value id ([`UNSET`] when not looked up yet); value ids are never reused within a transaction.
    entry_of_id: Vec<u32>,
    /// The memo generation `entry_of_id` refers to.
    entries_generation: u64,
    /// The last transaction's `entry_of_id` on this thread, when it refers to the memo generation this one uses
    /// (emptied otherwise): a value at the same id whose bytes are the entry's is found without hashing.
    last_entries: (Vec<u32>, u64),
    /// The positions the walk of the current phase may pass over (see `walk_passable`).
    walk_pass: Vec<u64>,
    /// MATCHED_VAR_NAME and MATCHED_VAR (ranges of the snapshot's `jump_text`) that the last snapshot jump set and
    /// that are not written yet: jumps follow one another (about 30 per request with the CRS at paranoia level 1)
    /// and no rule runs between them, so only the last one's are written, when a rule may read them.
    pending_match: Option<((u32, u32), (u32, u32))>,
    /// The last snapshot jump's recorded name: its range in the snapshot's `jump_text` and in `record_text`.
    jump_name: Option<((u32, u32), Range<usize>)>,
    /// The memo entries of the counts 0 to [`COUNTS`] - 1 (`&VAR` values; [`UNSET`] until looked up) and the memo
    /// generation they refer to, kept for the thread's next transaction.
    count_entries: ([u32; COUNTS], u64),
    /// Bumped on every write to TX or another store: what `arg_cache` entries are valid for.
    stores_gen: u64,
    /// (stores_gen, expansions of store-only operator-argument templates, by template address).
    arg_cache: RefCell<ArgCache>,
    /// The snapshot replayed at the start of phase 1 (`init`), for its verdicts on rules reading frozen variables.
    snap: Option<Arc<init::Snapshot>>,
    /// Rules decided by the snapshot's `init::Pristine` verdicts (tests).
    #[cfg(test)]
    pristine_taken: std::cell::Cell<u32>,
    /// Rules decided by a remembered miss on a frozen argument (`init::Snapshot::scalar_frozen`; tests).
    #[cfg(test)]
    frozen_taken: u32,
    /// Scratch of `eval_chain_remembered`: the outcome memo's key.
    outcome_key: Vec<u8>,
    /// Stores whose buffers `replay` reuses (see `Scratch::stores`).
    spare_stores: Vec<Store>,
    /// Collections whose buffers the request collections are refilled into (see `Scratch::pairs`).
    pair_pool: [Vec<Pair>; SLOTS],
    /// `Scratch::uses` of the buffers this transaction took.
    scratch_uses: u32,
}

/// (stores generation, (template address, expansion) pairs).
type ArgCache = (u64, Vec<(usize, Arc<[u8]>)>);

/// A group not enumerated yet, or a value id not looked up yet in the memo.
const UNSET: u32 = u32::MAX - 1;

/// (selected rules, target): a target removal.
type Removal<'r> = (Cow<'r, RuleSel>, Cow<'r, Target>);

/// ((removals count, starter id), the removals selecting that starter, by position in `removed_targets`); the count
/// is `usize::MAX` when unset.
type ExtraMemo = ((usize, u32), Vec<usize>);

impl<'r> Transaction<'r> {
    pub(crate) fn new(rs: &'r RuleSet, unique_id: &str, remote_addr: IpAddr) -> Transaction<'r> {
        let sc = Scratch::take();
        let mut t = Transaction {
            rs,
            mode: rs.engine_mode,
            started: Instant::now(),
            scalars: {
                // Buffers of the last transaction's scalars, emptied: setting one copies into its buffer.
                let mut v = sc.scalars;
                v.iter_mut().for_each(Vec::clear);
                v.resize(SCALAR_COUNT, Vec::new());
                v
            },
            scalar_ids: {
                let mut v = sc.scalar_ids;
                v.resize(SCALAR_COUNT, NO_ID);
                v
            },
            bases: [NO_ID; SLOTS],
            args_get: Vec::new(),
            args_post: Vec::new(),
            headers: Vec::new(),
            cookies: Vec::new(),
            files: Vec::new(),
            files_sizes: Vec::new(),
            part_headers: Vec::new(),
            resp_headers: Vec::new(),
            xml_text: Vec::new(),
            xml_attrs: Vec::new(),
            // Buffers for MATCHED_VARS; only the first `matched_len` are the collection.
            matched_vars: sc.matched_vars,
            matched_len: 0,
            matched_buf: sc.matched_buf,
            matched_bytes: sc.matched_bytes,
            name_buf: sc.name_buf,
            expand_bufs: sc.expand_bufs,
            // Empty: phase 1 either copies a snapshot's stores into `spare_stores` or makes room in TX.
            stores: emptied(sc.initial),
            removed: Vec::new(),
            removed_targets: Vec::new(),
            body_proc: None,
            request_body_access: rs.request_body_access,
            response_body_access: rs.response_body_access,
            force_body_var: false,
            records: Vec::with_capacity(sc.records),
            pair_pool: sc.pairs,
            highest_severity: 255,
            record_text: sc.record_text,
            built: OnceCell::new(),
            duration: OnceCell::new(),
            intervention: None,
            allow: None,
            allow_phase: 0,
            current: None,
            cache: RefCell::new(TCache::new(rs.tnodes, sc.inputs, sc.results, (sc.rows, sc.cells, sc.unchanged))),
            extra_memo: RefCell::new(((usize::MAX, 0), sc.extra_memo)),
            target_spans: sc.target_spans,
            phase_maybe: sc.phase_maybe,
            phase_asked: sc.phase_asked,
            group_ready: sc.group_ready,
            phase: 0,
            batched: false,
            pure_vals: sc.pure_vals,
            entry_of_id: sc.entry_of_id,
            entries_generation: memo::NO_GENERATION,
            last_entries: sc.last_entries,
            walk_pass: sc.walk_pass,
            pending_match: None,
            jump_name: None,
            count_entries: sc.count_entries,
            stores_gen: 0,
            arg_cache: RefCell::new((0, Vec::new())),
            snap: None,
            #[cfg(test)]
            pristine_taken: std::cell::Cell::new(0),
            #[cfg(test)]
            frozen_taken: 0,
            outcome_key: sc.outcome_key,
            spare_stores: sc.stores,
            scratch_uses: sc.uses,
        };
        t.set_scalar_from(Scalar::UniqueId, unique_id.as_bytes());
        LAST_ADDR.with(|last| {
            let mut last = last.borrow_mut();
            if last.0 != Some(remote_addr) {
                *last = (Some(remote_addr), remote_addr.to_string().into_bytes());
            }
            t.set_scalar_from(Scalar::RemoteAddr, &last.1);
        });
        t.set_scalar_from(Scalar::ServerAddr, b"127.0.0.1");
        for s in [
            Scalar::ReqbodyError,
            Scalar::ReqbodyProcessorError,
            Scalar::InboundDataError,
            Scalar::OutboundDataError,
            Scalar::UrlencodedError,
            Scalar::FilesCombinedSize,
            Scalar::ArgsCombinedSize,
            Scalar::RequestBodyLength,
        ] {
            t.set_scalar_from(s, b"0");
        }
        t.set_scalar_from(Scalar::HighestSeverity, b"255");
        t
    }

    /// Set a scalar to a copy of `v`, reusing its buffer.
    fn set_scalar_from(&mut self, s: Scalar, v: &[u8]) {
        if let Some(slot) = self.scalars.get_mut(s as usize) {
            slot.clear();
            slot.extend_from_slice(v);
        }
        let id = self.cache.get_mut().reserve(1);
        if let Some(slot) = self.scalar_ids.get_mut(s as usize) {
            *slot = id;
        }
    }

    /// Append to MATCHED_VARS, reusing a kept entry's buffers.
    fn push_matched_var(&mut self, name: &[u8], value: &[u8]) {
        match self.matched_vars.get_mut(self.matched_len) {
            Some((n, v)) => {
                n.clear();
                n.extend_from_slice(name);
                v.clear();
                v.extend_from_slice(value);
            }
            None => self.matched_vars.push((name.to_vec(), value.to_vec())),
        }
        self.matched_len += 1;
    }

    /// Set a scalar to the decimal form of `n`, reusing its buffer.
    fn set_scalar_num(&mut self, s: Scalar, n: i64) {
        let mut buf = [0u8; 20];
        let text = format_i64(n, &mut buf);
        self.set_scalar_from(s, text);
    }

    fn set_scalar(&mut self, s: Scalar, v: Vec<u8>) {
        if let Some(slot) = self.scalars.get_mut(s as usize) {
            *slot = v;
        }
        let id = self.cache.get_mut().reserve(1);
        if let Some(slot) = self.scalar_ids.get_mut(s as usize) {
            *slot = id;
        }
    }

    /// The collection numbered in `slot`.
    fn collection_mut(&mut self, slot: Slot) -> &mut Vec<Pair> {
        match slot {
            Slot::ArgsGet => &mut self.args_get,
            Slot::ArgsPost => &mut self.args_post,
            Slot::Headers => &mut self.headers,
            Slot::Cookies => &mut self.cookies,
            Slot::Files => &mut self.files,
            Slot::FilesSizes => &mut self.files_sizes,
            Slot::PartHeaders => &mut self.part_headers,
            Slot::RespHeaders => &mut self.resp_headers,
        }
    }

    /// The last transaction's collection of `slot`, to refill (see `Scratch::pairs`).
    fn spare_collection(&mut self, slot: Slot) -> Vec<Pair> {
        self.pair_pool.get_mut(slot as usize).map(std::mem::take).unwrap_or_default()
    }

    /// Fill the header collection of `slot` with copies of `headers` (into the last transaction's buffers) and
    /// number it.
    fn fill_headers(&mut self, slot: Slot, headers: &[(&[u8], &[u8])]) {
        let mut pairs = self.spare_collection(slot);
        let mut fill = body::Refill::new(&mut pairs);
        headers.iter().for_each(|(n, v)| fill.push(n, v));
        drop(fill);
        *self.collection_mut(slot) = pairs;
        self.renumber(slot);
    }

    /// Number the members of a collection that was just (re)filled.
    fn renumber(&mut self, slot: Slot) {
        let len = self.collection_mut(slot).len();
        let base = self.cache.get_mut().reserve(len);
        if let Some(b) = self.bases.get_mut(slot as usize) {
            *b = base;
        }
    }

    fn scalar(&self, s: Scalar) -> &[u8] {
        if let Scalar::Duration = s {
            return self.duration.get_or_init(|| {
                let micros = i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX);
                format_i64(micros, &mut [0u8; 20]).to_vec()
            });
        }
        self.scalars.get(s as usize).map_or(&[][..], |v| v.as_slice())
    }

    /// Set a variable as `setvar` would, e.g. `("tx.blocking_paranoia_level", "2")`; call before phase 1. A name
    /// whose collection is not a store (TX, IP, ...) sets nothing.
    pub fn set_var(&mut self, name: &str, value: &str) {
        if let Some(v) = PresetVar::new(name, value) {
            self.set_vars(std::slice::from_ref(&v));
        }
    }

    /// [`Transaction::set_var`] for variables parsed once (a gateway route sets the same ones on every request).
    pub fn set_vars(&mut self, vars: &[PresetVar]) {
        if vars.is_empty() {
            return;
        }
        self.stores_gen += 1;
        // The snapshot's verdicts assume its variables are not written after it.
        self.snap = None;
        for v in vars {
            if let Some(st) = self.stores.get_mut(v.store) {
                st.set_from(&v.name, v.hash, &v.value);
            }
        }
    }

    /// Remove rules by id for this transaction, as `ctl:ruleRemoveById` does.
    pub fn remove_rule_ids(&mut self, ids: &[RangeInclusive<u32>]) {
        self.removed.push(RuleSel::Ids(ids.to_vec()));
    }

    /// Stop rule `id` from looking at `target` (e.g. "ARGS:password"), as `ctl:ruleRemoveTargetById` does.
    /// An unparsable target is ignored.
    pub fn remove_rule_target(&mut self, id: u32, target: &str) {
        if let Ok(mut t) = crate::vars::parse_target(target) {
            t.exclude = true;
            self.removed_targets.push((Cow::Owned(RuleSel::Ids(vec![id..=id])), Cow::Owned(t)));
        }
    }

    /// Remove the rules carrying `tag` for this transaction, as `ctl:ruleRemoveByTag` does.
    pub fn remove_rule_tag(&mut self, tag: &str) {
        self.removed.push(RuleSel::Tag(tag.to_owned()));
    }

    /// Stop the rules carrying `tag` from looking at `target`, as `ctl:ruleRemoveTargetByTag` does.
    /// An unparsable target is ignored.
    pub fn remove_rule_target_by_tag(&mut self, tag: &str, target: &str) {
        if let Ok(mut t) = crate::vars::parse_target(target) {
            t.exclude = true;
            self.removed_targets.push((Cow::Owned(RuleSel::Tag(tag.to_owned())), Cow::Owned(t)));
        }
    }

    pub fn set_engine_mode(&mut self, m: EngineMode) {
        self.mode = m;
    }

    /// Rules that matched so far, in order.
    pub fn matches(&self) -> &[RuleMatch] {
        self.built.get_or_init(|| {
            self.records
                .iter()
                .map(|r| RuleMatch {
                    id: r.rule.id,
                    phase: r.phase,
                    msg: self.text(&r.msg).into_owned(),
                    logdata: self.text(&r.logdata).into_owned(),
                    var_name: self.text(&r.var_name).into_owned(),
                    severity: r.rule.severity,
                    tags: r.rule.tags.clone(),
                    log: r.log,
                })
                .collect()
        })
    }

    /// The matches that are logged (no `nolog`), in order, without building [`Transaction::matches`] (which
    /// copies every match's tags): what an audit event needs.
    pub fn logged_matches(&self) -> impl Iterator<Item = LoggedMatch<'_>> {
        self.records.iter().filter(|r| r.log).map(|r| LoggedMatch {
            id: r.rule.id,
            msg: self.text(&r.msg),
            var_name: self.text(&r.var_name),
            severity: r.rule.severity,
        })
    }

    /// A record's text.
    fn text(&self, r: &Range<usize>) -> Cow<'_, str> {
        String::from_utf8_lossy(self.record_text.get(r.clone()).unwrap_or_default())
    }

    /// Append the expansion of `m` to `record_text`; its range there.
    fn push_expansion(&mut self, m: Option<&MacroStr>) -> Range<usize> {
        let start = self.record_text.len();
        if let Some(m) = m {
            let mut out = std::mem::take(&mut self.record_text);
            match m.literal() {
                Some(l) => out.extend_from_slice(l),
                None => self.expand_into(m, &mut out),
            }
            self.record_text = out;
        }
        start..self.record_text.len()
    }

    pub fn interrupted(&self) -> Option<&Intervention> {
        self.intervention.as_ref()
    }

    /// A TX (or `ip.x`, ...) variable's current value, for tests and the gateway's logs (e.g. anomaly scores).
    pub fn var(&self, name: &str) -> Option<String> {
        let (coll, key) = name.split_once('.').unwrap_or(("tx", name));
        let i = STORES.iter().position(|s| s.eq_ignore_ascii_case(coll))?;
        self.stores.get(i)?.get(key.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Every TX variable in order, as (name, value) text (tests).
    #[cfg(test)]
    pub(crate) fn tx_vars(&self) -> Vec<(String, String)> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.stores.get(TX_STORE).map_or(Vec::new(), |s| s.entries.iter().map(|(n, v)| (text(n), text(v))).collect())
    }

    /// MATCHED_VAR and MATCHED_VAR_NAME (tests).
    #[cfg(test)]
    pub(crate) fn matched_var(&self) -> (String, String) {
        let text = |s: Scalar| String::from_utf8_lossy(self.scalar(s)).into_owned();
        (text(Scalar::MatchedVar), text(Scalar::MatchedVarName))
    }

    /// Phase 1: the request line and headers.
    pub fn process_request_headers(&mut self, req: &RequestHead<'_>) -> Option<Intervention> {
        let uri = req.uri;
        self.set_scalar_from(Scalar::RequestMethod, req.method.as_bytes());
        self.set_scalar_from(Scalar::RequestProtocol, req.protocol.as_bytes());
        self.set_scalar_from(Scalar::RequestUriRaw, uri);
        let mut line = std::mem::take(&mut self.name_buf);
        line.clear();
        line.extend_from_slice(req.method.as_bytes());
        line.push(b' ');
        line.extend_from_slice(uri);
        if !req.protocol.is_empty() {
            line.push(b' ');
            line.extend_from_slice(req.protocol.as_bytes());
        }
        self.set_scalar_from(Scalar::RequestLine, &line);
        self.name_buf = line;
        // REQUEST_URI is the origin-form target; REQUEST_FILENAME/BASENAME are its path percent-decoded, as the
        // web server hands it to ModSecurity (CRS 933151 expects `/array_diff%20%28` to read `array_diff (`).
        let target = body::split_target(uri);
        let query = if target.has_query { Some(target.query) } else { None };
        self.set_scalar_from(Scalar::RequestUri, target.uri);
        // Decoded into the buffer the last transaction's REQUEST_FILENAME left.
        let mut path = self.scalars.get_mut(Scalar::RequestFilename as usize).map(std::mem::take).unwrap_or_default();
        percent_decode_into(target.path, &mut path);
        self.set_scalar_from(Scalar::RequestBasename, body::basename(&path));
        self.set_scalar(Scalar::RequestFilename, path);
        self.set_scalar_from(Scalar::QueryString, query.unwrap_or_default());
        if let Some(q) = query {
            let mut args = self.spare_collection(Slot::ArgsGet);
            let flags = body::parse_query_into(q, &mut args);
            self.args_get = args;
            self.renumber(Slot::ArgsGet);
            if flags.urlencoded_error {
                self.set_scalar(Scalar::UrlencodedError, b"1".to_vec());
            }
        }
        self.fill_headers(Slot::Headers, &req.headers);
        let mut cookie_headers = req.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie")).map(|(_, v)| *v);
        let first = cookie_headers.next();
        let rest: Vec<&[u8]> = cookie_headers.collect();
        // One Cookie header (the usual case) needs no list.
        let all: Vec<&[u8]>;
        let values = if rest.is_empty() {
            first.as_slice()
        } else {
            all = first.into_iter().chain(rest).collect();
            &all
        };
        if !values.is_empty() {
            let mut cookies = self.spare_collection(Slot::Cookies);
            body::parse_cookies_into(values, &mut cookies);
            self.cookies = cookies;
            self.renumber(Slot::Cookies);
        }
        self.update_args_size();
        let ct = self.header(b"content-type").unwrap_or_default();
        let starts = |prefix: &[u8]| ct.get(..prefix.len()).is_some_and(|h| h.eq_ignore_ascii_case(prefix));
        if starts(b"application/x-www-form-urlencoded") {
            self.body_proc = Some(BodyProc::UrlEncoded);
        } else if starts(b"multipart/form-data") {
            self.body_proc = Some(BodyProc::Multipart);
        }
        self.set_body_proc(self.body_proc);
        self.run_phase(1)
    }

    /// REQBODY_PROCESSOR follows the processor as soon as it is known (CRS 901340 reads it in phase 1).
    fn set_body_proc(&mut self, p: Option<BodyProc>) {
        self.body_proc = p;
        let name = p.map(BodyProc::name).unwrap_or("").as_bytes();
        self.set_scalar_from(Scalar::ReqbodyProcessor, name);
        self.set_scalar_from(Scalar::RequestBodyProcessor, name);
    }

    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    fn update_args_size(&mut self) {
        let size: usize = self.args_get.iter().chain(self.args_post.iter()).map(|(n, v)| n.len() + v.len()).sum();
        self.set_scalar_num(Scalar::ArgsCombinedSize, i64::try_from(size).unwrap_or(i64::MAX));
    }

    /// Phase 2: the request body (call it even when there is none).
    pub fn process_request_body(&mut self, body_bytes: &[u8]) -> Option<Intervention> {
        if self.request_body_access && self.mode != EngineMode::Off {
            let limit = usize::try_from(self.rs.request_body_limit).unwrap_or(usize::MAX);
            let body_bytes = if body_bytes.len() > limit {
                if self.mode == EngineMode::On {
                    let iv = Intervention {
                        status: 413,
                        rule_id: 0,
                        msg: "Request body is larger than the configured limit".into(),
                        redirect: None,
                        drop: false,
                    };
                    self.intervention = Some(iv.clone());
                    return Some(iv);
                }
                body_bytes.get(..limit).unwrap_or(body_bytes)
            } else {
                body_bytes
            };
            self.set_scalar_num(Scalar::RequestBodyLength, i64::try_from(body_bytes.len()).unwrap_or(i64::MAX));
            self.process_body(body_bytes);
        }
        self.run_phase(2)
    }

    fn body_error(&mut self, msg: String) {
        self.set_scalar(Scalar::ReqbodyError, b"1".to_vec());
        self.set_scalar(Scalar::ReqbodyProcessorError, b"1".to_vec());
        self.set_scalar(Scalar::ReqbodyErrorMsg, msg.clone().into_bytes());
        self.set_scalar(Scalar::ReqbodyProcessorErrorMsg, msg.into_bytes());
    }

    fn process_body(&mut self, data: &[u8]) {
        let proc = self.body_proc;
        // ModSecurity v2: REQUEST_BODY exists for the URLENCODED processor or with ctl:forceRequestBodyVariable
        // (CRS 901340 turns it on when no processor applies).
        if proc == Some(BodyProc::UrlEncoded) || self.force_body_var {
            self.set_scalar_from(Scalar::RequestBody, data);
        }
        if data.is_empty() {
            return;
        }
        match proc {
            None => {}
            Some(BodyProc::UrlEncoded) => {
                let mut args = self.spare_collection(Slot::ArgsPost);
                let flags = body::parse_urlencoded_into(data, &mut args);
                self.args_post = args;
                if flags.urlencoded_error {
                    self.set_scalar(Scalar::UrlencodedError, b"1".to_vec());
                }
            }
            Some(BodyProc::Multipart) => {
                let ct = self.header(b"content-type").map(<[u8]>::to_vec).unwrap_or_default();
                match body::parse_multipart(data, &ct) {
                    Ok(m) => {
                        self.multipart_flags(&m.flags);
                        self.args_post = m.args;
                        self.files = m.files;
                        self.part_headers = m.part_headers;
                        self.files_sizes =
                            m.files_sizes.into_iter().map(|(n, s)| (n, s.to_string().into_bytes())).collect();
                        self.set_scalar(Scalar::FilesCombinedSize, m.files_combined_size.to_string().into_bytes());
                    }
                    Err(e) => {
                        if let body::BodyError::Multipart { flags, .. } = &e {
                            let flags = *flags;
                            self.multipart_flags(&flags);
                        }
                        self.body_error(e.to_string());
                    }
                }
            }
            Some(BodyProc::Json) => match body::parse_json(data, 1024) {
                Ok(args) => self.args_post = args,
                Err(e) => self.body_error(e.to_string()),
            },
            Some(BodyProc::Xml) => match body::parse_xml(data) {
                Ok(x) => {
                    self.xml_text = x.text;
                    self.xml_attrs = x.attr_values;
                }
                Err(e) => self.body_error(e.to_string()),
            },
        }
        for slot in [Slot::ArgsPost, Slot::Files, Slot::PartHeaders, Slot::FilesSizes] {
            self.renumber(slot);
        }
        self.update_args_size();
    }

    fn multipart_flags(&mut self, f: &body::MultipartFlags) {
        let b = |x: bool| if x { b"1".to_vec() } else { b"0".to_vec() };
        let list = [
            (Scalar::MultipartStrictError, f.strict_error()),
            (Scalar::MultipartBoundaryQuoted, f.boundary_quoted),
            (Scalar::MultipartBoundaryWhitespace, f.boundary_whitespace),
            (Scalar::MultipartDataBefore, f.data_before),
            (Scalar::MultipartDataAfter, f.data_after),
            (Scalar::MultipartHeaderFolding, f.header_folding),
            (Scalar::MultipartLfLine, f.lf_line),
            (Scalar::MultipartCrlfLfLines, f.crlf_lf_lines()),
            (Scalar::MultipartMissingSemicolon, f.missing_semicolon),
            (Scalar::MultipartInvalidQuoting, f.invalid_quoting),
            (Scalar::MultipartInvalidPart, f.invalid_part),
            (Scalar::MultipartInvalidHeaderFolding, f.invalid_header_folding),
            (Scalar::MultipartFileLimitExceeded, f.file_limit_exceeded),
            (Scalar::MultipartUnmatchedBoundary, f.unmatched_boundary),
        ];
        for (s, v) in list {
            self.set_scalar(s, b(v));
        }
    }

    /// Phase 3: the response status line and headers.
    pub fn process_response_headers(
        &mut self,
        status: u16,
        protocol: &str,
        headers: &[(&[u8], &[u8])],
    ) -> Option<Intervention> {
        self.set_scalar(Scalar::ResponseStatus, status.to_string().into_bytes());
        self.set_scalar(Scalar::ResponseProtocol, protocol.as_bytes().to_vec());
        self.set_scalar(Scalar::StatusLine, format!("{protocol} {status}").into_bytes());
        self.fill_headers(Slot::RespHeaders, headers);
        for (n, v) in headers {
            if n.eq_ignore_ascii_case(b"content-type") {
                self.set_scalar(Scalar::ResponseContentType, v.to_vec());
            } else if n.eq_ignore_ascii_case(b"content-length") {
                self.set_scalar(Scalar::ResponseContentLength, v.to_vec());
            }
        }
        self.run_phase(3)
    }

    /// Phase 4: the response body (inspected when SecResponseBodyAccess is On and its type is listed in
    /// SecResponseBodyMimeType).
    pub fn process_response_body(&mut self, body_bytes: &[u8]) -> Option<Intervention> {
        if self.response_body_access {
            let ct = String::from_utf8_lossy(self.scalar(Scalar::ResponseContentType)).to_ascii_lowercase();
            let mime = ct.split(';').next().unwrap_or("").trim().to_string();
            if self.rs.response_mime_types.contains(&mime) {
                self.set_scalar(Scalar::ResponseBody, body_bytes.to_vec());
            }
        }
        self.run_phase(4)
    }

    /// Phase 5: logging rules (they run even after an intervention).
    pub fn process_logging(&mut self) {
        let _ = self.run_phase(5);
    }

    fn removed(&self, rule: &Rule) -> bool {
        self.removed.iter().any(|s| s.selects(rule))
    }

    fn run_phase(&mut self, phase: u8) -> Option<Intervention> {
        if self.mode == EngineMode::Off {
            return None;
        }
        if self.intervention.is_some() && phase != 5 {
            return None;
        }
        match self.allow {
            Some(AllowScope::All) if phase < 5 => return None,
            Some(AllowScope::Request) if phase <= 2 => return None,
            _ => {}
        }
        // DURATION as of this phase, read from the clock only if a rule reads it (the CRS does not).
        self.duration = OnceCell::new();
        let id = self.cache.get_mut().reserve(1);
        if let Some(slot) = self.scalar_ids.get_mut(Scalar::Duration as usize) {
            *slot = id;
        }
        let rs = self.rs;
        let walk = rs.walks.get(usize::from(phase - 1))?;
        let use_memo = rs.memo && rs.pure.count() > 0;
        if use_memo {
            // Request data changes between phases (the body is parsed before phase 2): enumerate afresh.
            self.target_spans.clear();
            self.target_spans.resize(rs.pure.targets.len(), (UNSET, 0));
            self.group_ready.clear();
            self.group_ready.resize(rs.pure.group_targets.len(), false);
            self.batched = false;
            self.phase_maybe.clear();
            self.phase_maybe.resize(memo::row_words(rs.pure.count()), 0);
            self.pure_vals.clear();
            // Memo entries of values numbered in an earlier phase stay valid while the memo keeps its entries
            // (generations are unique in the process, so a transaction moved to another thread starts afresh).
            let asked = &mut self.phase_asked;
            let generation = memo::with(rs.id, rs.pure.count(), |m| {
                m.trim();
                asked.clear();
                asked.extend_from_slice(m.asked());
                m.generation
            });
            if generation != self.entries_generation {
                self.entry_of_id.clear();
                self.entries_generation = generation;
            }
            if self.last_entries.1 != generation {
                self.last_entries.0.clear();
            }
            if self.count_entries.1 != generation {
                self.count_entries = ([UNSET; COUNTS], generation);
            }
        }
        let mut flow = Flow::default();
        let mut from = 0;
        if phase == 1 {
            if let Some(snap) = self.init_snapshot() {
                match self.replay(&snap, use_memo) {
                    ControlFlow::Break(r) => return r,
                    ControlFlow::Continue(()) => {}
                }
                from = snap.end;
                flow = snap.flow(rs);
                self.snap = Some(snap);
            } else if let Some(tx) = self.stores.get_mut(TX_STORE) {
                tx.reserve(TX_CAPACITY);
            }
        }
        self.phase = phase;
        let snap = self.snap.clone();
        let bits = |of: fn(&init::Snapshot) -> &[Vec<u64>; 5]| {
            snap.as_deref().and_then(|s| of(s).get(usize::from(phase - 1))).map_or(&[][..], Vec::as_slice)
        };
        let (pass_bits, jump_bits) = (bits(|s| &s.passable), bits(|s| &s.jumpable));
        // The snapshot's verdicts hold while no target removal names a variable they read (`run_rule` checks this
        // per rule; `ctl:ruleRemoveTargetByTag` in the CRS's 941010 removes REQUEST_FILENAME from the XSS rules in
        // nearly every request), checked again when a removal is added.
        let hold = |tx: &Self| {
            snap.as_deref().is_some_and(|s| !tx.removed_targets.iter().any(|(_, x)| s.frozen_vars.contains(&x.var)))
        };
        let (mut removals_seen, mut verdicts_hold) = (self.removed_targets.len(), hold(self));
        // What the walk may pass over at once (see `walk_passable`).
        self.walk_passable(walk, phase, use_memo, if verdicts_hold { pass_bits } else { &[] });
        let mut i = from;
        while i < walk.at.len() {
            // No skip pending and the engine on: what the shortcuts below take for granted.
            let quiet = flow.is_clear() && self.mode != EngineMode::Off;
            if self.removed_targets.len() != removals_seen {
                removals_seen = self.removed_targets.len();
                let held = std::mem::replace(&mut verdicts_hold, hold(self));
                if held && !verdicts_hold {
                    self.walk_passable(walk, phase, use_memo, &[]);
                }
            }
            if quiet {
                let next = init::pass_from(&self.walk_pass, i);
                if next != i {
                    i = next;
                    continue;
                }
            }
            // A match the snapshot knows that only records and skips (`run_rule` would replay it, then the walk
            // would resume after its skipAfter target): the same without reading the rule.
            if let Some(snap) = snap.as_deref().filter(|_| quiet && verdicts_hold && init::bit(jump_bits, i)) {
                if let (Some(jump), Some(ri)) = (snap.jump(phase, i), walk.at.get(i).map(|a| a.rule as usize)) {
                    // A removed rule is passed over by `run_rule` (rules are read only when some are removed).
                    let removed = !self.removed.is_empty() && rs.rules.get(ri).is_some_and(|r| self.removed(r));
                    if !removed && self.replay_jump(phase, ri, jump, snap) {
                        i = jump.resume as usize;
                        continue;
                    }
                }
            }
            let Some(ri) = walk.at.get(i).map(|a| a.rule as usize) else { break };
            i += 1;
            let Some(rule) = rs.rules.get(ri) else { continue };
            if flow.passes(rule) {
                continue;
            }
            if let ControlFlow::Break(r) = self.run_rule(phase, ri, use_memo, &mut flow) {
                return r;
            }
            // A skipAfter this rule started: resume after its target directly.
            if flow.skip == 0 && flow.skip_after.is_some() {
                if let Some(to) = walk.at.get(i - 1).map(|a| a.resume).filter(|&to| to != NO_POS) {
                    flow.skip_after = None;
                    flow.skip_after_id = None;
                    i = to as usize;
                }
            }
        }
        self.settle_match();
        self.current = None;
        self.phase = 0;
        None
    }

    /// Make `walk_pass`: a bit per position of phase `phase`'s list (`walk`) that the walk may pass over while no skip
    /// is pending, because `run_rule` would do nothing there: markers, `snapshot`'s positions (its `passable` bits
    /// while its verdicts hold, else none) and, with the memo (`use_memo`) once every group of the phase is
    /// enumerated, pure starters none of whose group's values may match (the phase's row).
    fn walk_passable(&mut self, walk: &crate::compile::Walk, phase: u8, use_memo: bool, snapshot: &[u64]) {
        let groups = self.rs.pure.phase_groups.get(usize::from(phase.wrapping_sub(1))).map_or(&[][..], Vec::as_slice);
        // The first group enumerates all of the phase's targets (see `enumerate_group`).
        let pure = use_memo && groups.iter().all(|&g| self.group_enumerated(g));
        let mut bits = std::mem::take(&mut self.walk_pass);
        bits.clear();
        bits.extend_from_slice(if pure { &walk.quiet_bits } else { &walk.markers });
        bits.iter_mut().zip(snapshot).for_each(|(b, s)| *b |= s);
        // The phase's pure starters that may match one of their values are read, and those not asked about yet
        // (`may_match` asks about them; the memo keeps their positions, see `Memo::unasked`).
        let maybe = if pure { self.phase_maybe.as_slice() } else { &[] };
        if pure {
            let rs = self.rs;
            let asked = &self.phase_asked;
            memo::with(rs.id, rs.pure.count(), |m| {
                bits.iter_mut().zip(m.unasked(phase, walk, asked)).for_each(|(b, u)| *b &= !u);
            });
        }
        for (w, (&maybe, &here)) in maybe.iter().zip(&walk.pure_here).enumerate() {
            let mut m = maybe & here & self.phase_asked.get(w).copied().unwrap_or(0);
            while m != 0 {
                let p = w * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                if let Some(&at) = walk.pure_pos.get(p).filter(|&&at| at != NO_POS) {
                    if let Some(b) = bits.get_mut(at as usize / 64) {
                        *b &= !(1u64 << (at % 64));
                    }
                }
            }
        }
        self.walk_pass = bits;
    }

    /// Whether pure rule `p` of group `g` may match one of the group's values: one it matched or was not evaluated
    /// on yet; yes when the group is not ready. A ready group's targets all added their values to the phase's row, and
    /// a target adds only the rules whose group reads it: the row's bit answers for the group exactly.
    #[inline]
    fn group_may(&self, g: u32, p: u32) -> bool {
        !self.group_ready.get(g as usize).copied().unwrap_or(false)
            || self.phase_maybe.get((p / 64) as usize).is_none_or(|m| m >> (p % 64) & 1 == 1)
    }

    /// Whether every target of group `g` is enumerated in this phase (enumerating them now if needed); `false` when
    /// the plan is inconsistent (the caller then evaluates normally).
    #[inline(always)]
    fn group_enumerated(&mut self, g: u32) -> bool {
        self.group_ready.get(g as usize).copied().unwrap_or(false) || self.enumerate_group(g).is_some()
    }

    /// Run rule `ri` of the phase's list (not skipped): evaluate it, record a match, and apply its disruptive and
    /// flow actions. `Break` ends the phase with that result.
    pub(crate) fn run_rule(
        &mut self,
        phase: u8,
        ri: usize,
        use_memo: bool,
        flow: &mut Flow<'r>,
    ) -> ControlFlow<Option<Intervention>> {
        let rs = self.rs;
        let Some(rule) = rs.rules.get(ri) else { return ControlFlow::Continue(()) };
        self.settle_match();
        if self.removed(rule) {
            return ControlFlow::Continue(());
        }
        if self.mode == EngineMode::Off {
            self.current = None;
            return ControlFlow::Break(None);
        }
        self.current = Some(rule);
        self.matched_len = 0;
        let (mut verdict, mut records, mut pristine) = (init::UNKNOWN, rule.only_records(), false);
        if let Some(s) = &self.snap {
            verdict = s.verdict(ri);
            // The TX variables the rule reads are as the snapshot left them: what it did there.
            if let Some(p) = s.pristine(ri) {
                let unchanged = |tx: &Store| {
                    tx.untouched(s.id, &p.reads)
                        && !(p.added && s.stores.get(TX_STORE).is_some_and(|from| tx.adds(from.entries.len(), rule)))
                };
                if self.stores.get(TX_STORE).is_some_and(unchanged) {
                    (verdict, records, pristine) = (p.verdict, true, true);
                    #[cfg(test)]
                    self.pristine_taken.set(self.pristine_taken.get() + 1);
                }
            }
        }
        if verdict != init::UNKNOWN && self.targets_removed(rule) {
            verdict = init::UNKNOWN;
        }
        if verdict == init::NO_MATCH {
            return ControlFlow::Continue(());
        }
        if verdict != init::UNKNOWN && records {
            self.replay_record(phase, rule, verdict, flow, pristine.then_some(ri));
            return ControlFlow::Continue(());
        }
        if use_memo {
            let p = rs.pure.of_rule.get(ri).copied().unwrap_or(NOT_PURE);
            if p != NOT_PURE && !self.may_match(rule, p) {
                return ControlFlow::Continue(());
            }
        }
        // One scalar against an argument the snapshot froze: a value this thread's transactions found not to match
        // under the same snapshot does not match (`init::Snapshot::scalar_frozen`).
        let frozen = match (&self.snap, rule.targets.first().map(|t| t.var)) {
            (Some(s), Some(Var::Scalar(sc))) if use_memo && verdict == init::UNKNOWN && s.scalar_frozen(ri) => {
                Some((s.id, sc)).filter(|_| !self.targets_removed(rule))
            }
            _ => None,
        };
        if let Some((id, sc)) = frozen {
            let value = self.scalar_val(sc).map(|(v, _)| v);
            if value.is_some_and(|v| memo::with(rs.id, rs.pure.count(), |m| m.frozen_miss(id, ri, v))) {
                #[cfg(test)]
                {
                    self.frozen_taken += 1;
                }
                return ControlFlow::Continue(());
            }
        }
        let replayable = verdict == init::UNKNOWN
            && use_memo
            && rs.replayable.get(ri).copied().unwrap_or(false)
            && self.removed_targets.is_empty();
        let found = if replayable { self.eval_chain_remembered(ri, rule) } else { self.eval_chain(rule, verdict) };
        let Some(var_name) = found else {
            if let Some((id, (value, _))) = frozen.and_then(|(id, sc)| Some((id, self.scalar_val(sc)?))) {
                memo::with(rs.id, rs.pure.count(), |m| m.note_frozen_miss(id, ri, value));
            }
            return ControlFlow::Continue(());
        };
        let msg = self.push_expansion(rule.msg.as_ref());
        let logdata = self.push_expansion(rule.logdata.as_ref());
        self.push_record(Record { rule, phase, log: rule.log, msg: msg.clone(), logdata, var_name });
        match rule.disruptive_action() {
            Some(Disruptive::Allow(scope)) => {
                self.allow = Some(*scope);
                self.allow_phase = phase;
                return ControlFlow::Break(None);
            }
            Some(d @ (Disruptive::Deny | Disruptive::Drop | Disruptive::Redirect(_)))
                if self.mode == EngineMode::On =>
            {
                let redirect = match d {
                    Disruptive::Redirect(u) => Some(self.expand_str(&MacroStr::parse(u))),
                    _ => None,
                };
                let status = match (d, rule.status) {
                    (Disruptive::Redirect(_), s) => s.filter(|s| (300..400).contains(s)).unwrap_or(302),
                    (_, Some(s)) => s,
                    (_, None) => 403,
                };
                let msg = self.text(&msg).into_owned();
                let iv = Intervention { status, rule_id: rule.id, msg, redirect, drop: matches!(d, Disruptive::Drop) };
                self.intervention = Some(iv.clone());
                if phase != 5 {
                    return ControlFlow::Break(Some(iv));
                }
            }
            _ => {}
        }
        flow.after_match(rule);
        ControlFlow::Continue(())
    }

    /// What `run_rule` does for a rule that only records its matches (see [`Rule::only_records`]) and that the
    /// snapshot found matching (its match `i`): the matched variables, the record and the flow, without the general
    /// evaluation (the CRS's paranoia-level checks, about 35 per request, take this way). With `pristine` (rule
    /// index `ri`, decided by its [`init::Pristine`] verdict), the TX writes its `setvar`s made there are made too
    /// (the CRS's anomaly-score totals and 980099's combined scores).
    fn replay_record(&mut self, phase: u8, rule: &'r Rule, i: u32, flow: &mut Flow<'r>, pristine: Option<usize>) {
        self.settle_match();
        let Some(snap) = self.snap.take() else { return };
        // A `SecAction` matches without a variable: an empty name, MATCHED_VAR(S) as they were.
        let at = self.record_text.len();
        let mut first = rule.op.is_none().then_some(at..at);
        let found = snap.matches.get(i as usize).map_or(&[][..], Vec::as_slice);
        // (A `SecAction`'s list is empty: nothing to note.)
        if rule.msg.is_none() && rule.logdata.is_none() {
            // Nothing reads this rule's MATCHED_VARS (the next rule starts a new list; no expansion follows), and
            // only the last match's MATCHED_VAR and MATCHED_VAR_NAME remain.
            if let (Some((name, _)), Some((last_name, last_value))) = (found.first(), found.last()) {
                first = Some(self.replay_last_match(name, last_name, last_value));
            }
        } else {
            for (name, value) in found {
                self.note_match(name, value, &mut first);
            }
        }
        if let Some(writes) = pristine.and_then(|ri| snap.pristine(ri)).map(|p| &p.writes).filter(|w| !w.is_empty()) {
            self.stores_gen += 1;
            if let Some(tx) = self.stores.get_mut(TX_STORE) {
                for (name, h, value) in writes {
                    tx.set_from(name, *h, value);
                }
            }
        }
        self.snap = Some(snap);
        let Some(var_name) = first else { return };
        let msg = self.push_expansion(rule.msg.as_ref());
        let logdata = self.push_expansion(rule.logdata.as_ref());
        self.push_record(Record { rule, phase, log: rule.log, msg, logdata, var_name });
        flow.after_match(rule);
    }

    /// What `run_rule` and `replay_record` do for rule `ri`, a snapshot jump (see `init::Snapshot::jumps`), up
    /// to the walk's resuming: the matched variables and the record, without reading the rule (whose record has no
    /// message, log data or severity, and is not logged). `false` (nothing done) when there is no such rule.
    fn replay_jump(&mut self, phase: u8, ri: usize, jump: &init::Jump, snap: &init::Snapshot) -> bool {
        let Some(rule) = self.rs.rules.get(ri) else { return false };
        self.current = Some(rule);
        self.matched_len = 0;
        // Jumps share their texts (see `Snapshot::jump_text`): a name the last jump copied is not copied again.
        let var_name = match &self.jump_name {
            Some((at, copy)) if *at == jump.first_name => copy.clone(),
            _ => {
                let start = self.record_text.len();
                self.record_text.extend_from_slice(snap.jump_text(jump.first_name));
                let copy = start..self.record_text.len();
                self.jump_name = Some((jump.first_name, copy.clone()));
                copy
            }
        };
        // MATCHED_VAR and MATCHED_VAR_NAME as the last match left them, written when read (see `pending_match`).
        self.pending_match = Some((jump.last_name, jump.last_value));
        let end = self.record_text.len();
        self.records.push(Record { rule, phase, log: false, msg: end..end, logdata: end..end, var_name });
        self.built = OnceCell::new();
        true
    }

    /// Write MATCHED_VAR and MATCHED_VAR_NAME as the last snapshot jump left them (see `pending_match`), before
    /// anything can read them.
    fn settle_match(&mut self) {
        if let Some((name, value)) = self.pending_match.take() {
            if let Some(snap) = self.snap.take() {
                self.set_scalar_from(Scalar::MatchedVar, snap.jump_text(value));
                self.set_scalar_from(Scalar::MatchedVarName, snap.jump_text(name));
                self.snap = Some(snap);
            }
        }
    }

    /// A replayed match whose MATCHED_VARS nothing reads: the first matched name into `record_text` (its range),
    /// and MATCHED_VAR / MATCHED_VAR_NAME of the last match.
    fn replay_last_match(&mut self, first_name: &[u8], last_name: &[u8], last_value: &[u8]) -> Range<usize> {
        let start = self.record_text.len();
        self.record_text.extend_from_slice(first_name);
        self.set_scalar_from(Scalar::MatchedVar, last_value);
        self.set_scalar_from(Scalar::MatchedVarName, last_name);
        start..start + first_name.len()
    }

    /// The snapshot of phase 1's request-independent start (`init`) that applies to this transaction, if any.
    fn init_snapshot(&self) -> Option<Arc<init::Snapshot>> {
        let rs = self.rs;
        if !rs.init_snapshot || self.intervention.is_some() || self.allow.is_some() || !self.records.is_empty() {
            return None;
        }
        let snap = init::cached(rs.id, self.mode, &self.stores, || {
            let mut dummy = Transaction::new(rs, "", IpAddr::from([0, 0, 0, 0]));
            dummy.stores = self.stores.clone();
            dummy.stores_gen += 1;
            dummy.mode = self.mode;
            dummy.build_snapshot()
        })?;
        // Rules removed for this transaction: the snapshot assumed every fixed rule runs.
        let sels = self.removed.iter().chain(self.removed_targets.iter().map(|(s, _)| &**s));
        for sel in sels {
            if snap.fixed.iter().filter_map(|&i| rs.rules.get(i)).any(|r| sel.selects(r)) {
                return None;
            }
        }
        Some(snap)
    }

    /// Walk phase 1 from its start on this fresh transaction (its stores and engine mode those of the transactions
    /// the snapshot is for) as far as `init` allows, evaluating the fixed rules.
    fn build_snapshot(&mut self) -> Option<init::Snapshot> {
        let rs = self.rs;
        let list = rs.phases.first()?;
        let mut flow = Flow::default();
        let mut steps = Vec::new();
        let mut fixed = Vec::new();
        let mut matched_at = None;
        let mut skip_after_rule = None;
        let mut end = list.len();
        for (pos, &ri) in list.iter().enumerate() {
            let Some(rule) = rs.rules.get(ri) else { continue };
            if flow.passes(rule) {
                continue;
            }
            if init::starter_reads_fixed(rule) {
                self.current = Some(rule);
                self.matched_len = 0;
                if !self.probe(rule) {
                    // Matches nothing whatever it would do on a match: it changes nothing.
                    fixed.push(ri);
                    continue;
                }
                if init::fixed(rule) {
                    fixed.push(ri);
                    let (mode, removed, removed_targets) = (self.mode, self.removed.len(), self.removed_targets.len());
                    let (records, matched_id) =
                        (self.records.len(), self.scalar_ids.get(Scalar::MatchedVar as usize).copied());
                    if self.run_rule(1, ri, false, &mut flow).is_break()
                        || self.intervention.is_some()
                        || self.allow.is_some()
                    {
                        return None;
                    }
                    if let Some(r) = self.records.get(records) {
                        steps.push(init::Step::Record {
                            rule: ri,
                            severity: r.rule.severity,
                            log: r.log,
                            msg: r.msg.clone(),
                            logdata: r.logdata.clone(),
                            var_name: r.var_name.clone(),
                        });
                    }
                    if self.mode != mode {
                        steps.push(init::Step::Mode(self.mode));
                    }
                    if let Some(new) = self.removed.get(removed..).filter(|n| !n.is_empty()) {
                        steps.push(init::Step::Remove(new.to_vec()));
                    }
                    if let Some(new) = self.removed_targets.get(removed_targets..).filter(|n| !n.is_empty()) {
                        let new = new.iter().map(|(s, t)| (RuleSel::clone(s), Arc::new(Target::clone(t)))).collect();
                        steps.push(init::Step::RemoveTargets(new));
                    }
                    if self.scalar_ids.get(Scalar::MatchedVar as usize).copied() != matched_id {
                        matched_at = Some(steps.len());
                    }
                    if rule.skip_after.is_some() && flow.skip_after.is_some() {
                        skip_after_rule = Some(ri);
                    }
                    continue;
                }
            } else if init::commutes(rule) {
                steps.push(init::Step::Eval(ri));
                continue;
            }
            end = pos;
            break;
        }
        if fixed.is_empty() {
            return None;
        }
        if let Some(i) = matched_at {
            steps.insert(i, init::Step::Matched);
        }
        // Rules anywhere later that read only variables no later rule writes: decided now, on the final stores.
        let mut verdicts = vec![init::UNKNOWN; rs.rules.len()];
        let mut matches = Vec::new();
        let mut args = Vec::new();
        if let Some(writes) = init::Writes::of(&rs.rules, &fixed) {
            for op in rs.rules.iter().flat_map(init::links).filter_map(|l| l.op.as_ref()) {
                let Some(t) = op.macro_template() else { continue };
                if let Some((m, _)) = rs.templates.get(t).filter(|(m, _)| writes.macro_frozen(m)) {
                    args.push(((t.as_ptr() as usize, t.len()), Arc::from(self.expand_cow(m))));
                }
            }
            args.sort_by_key(|(k, _)| *k);
            for (ri, rule) in rs.rules.iter().enumerate() {
                if rule.marker.is_some() || fixed.contains(&ri) || !writes.starter_frozen(rule) {
                    continue;
                }
                if self.targets_removed(rule) {
                    continue;
                }
                self.current = Some(rule);
                self.matched_len = 0;
                let verdict = if rule.capture || rule.multi_match {
                    if self.probe(rule) {
                        init::UNKNOWN
                    } else {
                        init::NO_MATCH
                    }
                } else {
                    let found = self.starter_matches(rule);
                    if found.is_empty() {
                        init::NO_MATCH
                    } else {
                        matches.push(found);
                        u32::try_from(matches.len() - 1).unwrap_or(init::UNKNOWN)
                    }
                };
                if let Some(v) = verdicts.get_mut(ri) {
                    *v = verdict;
                }
            }
        }
        let (pristine, pristine_at) = self.pristine_verdicts(&fixed, &verdicts, &mut matches);
        let frozen_arg = |t: &str| init::arg_in(&args, t).is_some();
        let scalar_frozen = rs
            .rules
            .iter()
            .map(|r| {
                r.chain.is_none()
                    && r.exclusions.is_empty()
                    && matches!(r.targets.as_slice(), [t] if matches!(t.var, Var::Scalar(_)) && !t.count && !t.exclude)
                    && r.op.as_ref().and_then(|op| op.macro_template()).is_some_and(frozen_arg)
            })
            .collect();
        let set = |bits: &mut Vec<u64>, i: usize| {
            if let Some(w) = bits.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
        };
        let mut passable: [Vec<u64>; 5] = Default::default();
        let mut jumpable: [Vec<u64>; 5] = Default::default();
        let mut jumps: [Vec<init::Jump>; 5] = Default::default();
        let mut jump_text = Vec::new();
        let mut jump_texts: Vec<(u32, u32)> = Vec::new();
        let mut frozen_vars = Vec::new();
        for (p, (list, walk)) in rs.phases.iter().zip(&rs.walks).enumerate() {
            let (Some(pass), Some(jumpable), Some(jumps)) =
                (passable.get_mut(p), jumpable.get_mut(p), jumps.get_mut(p))
            else {
                continue;
            };
            *pass = vec![0u64; list.len().div_ceil(64)];
            *jumpable = vec![0u64; list.len().div_ceil(64)];
            for (i, &ri) in list.iter().enumerate() {
                let (Some(r), Some(&v)) = (rs.rules.get(ri), verdicts.get(ri)) else { continue };
                let mut reads = || {
                    for (t, _) in &r.includes {
                        if !frozen_vars.contains(&t.var) {
                            frozen_vars.push(t.var);
                        }
                    }
                };
                if r.marker.is_some() || v == init::NO_MATCH {
                    reads();
                    set(pass, i);
                    continue;
                }
                let resume = walk.at.get(i).map_or(NO_POS, |a| a.resume);
                let records_and_jumps = v != init::UNKNOWN
                    && r.only_records()
                    && !r.log
                    && r.msg.is_none()
                    && r.logdata.is_none()
                    && r.severity.is_none()
                    && r.skip == 0
                    && r.skip_after.is_some()
                    && resume != NO_POS;
                let found = matches.get(v as usize).map_or(&[][..], Vec::as_slice);
                if let (true, Ok(at), Some((first, _)), Some((last_name, last_value))) =
                    (records_and_jumps, u32::try_from(i), found.first(), found.last())
                {
                    // A text already there is shared (the CRS's jumps all match TX:DETECTION_PARANOIA_LEVEL: a
                    // transaction copies that name into its records once, see `replay_jump`).
                    let mut add = |b: &[u8]| {
                        let text = |&(s, e): &(u32, u32)| jump_text.get(s as usize..e as usize);
                        if let Some(&at) = jump_texts.iter().find(|at| text(at) == Some(b)) {
                            return at;
                        }
                        let start = u32::try_from(jump_text.len()).unwrap_or(u32::MAX);
                        jump_text.extend_from_slice(b);
                        let at = (start, u32::try_from(jump_text.len()).unwrap_or(u32::MAX));
                        jump_texts.push(at);
                        at
                    };
                    let (first_name, last_name, last_value) = (add(first), add(last_name), add(last_value));
                    reads();
                    set(jumpable, i);
                    jumps.push(init::Jump { at, resume, first_name, last_name, last_value });
                }
            }
        }
        Some(init::Snapshot {
            passable,
            jump_rank: init::Snapshot::ranks(&jumpable),
            jumpable,
            jumps,
            jump_text,
            frozen_vars,
            steps,
            stores: std::mem::take(&mut self.stores),
            text: std::mem::take(&mut self.record_text),
            matched: (self.scalar(Scalar::MatchedVar).to_vec(), self.scalar(Scalar::MatchedVarName).to_vec()),
            fixed,
            end,
            skip: flow.skip,
            skip_after_rule: flow.skip_after.and(skip_after_rule),
            verdicts,
            matches,
            pristine,
            pristine_at,
            scalar_frozen,
            args,
            id: init::next_id(),
        })
    }

    /// The snapshot's [`init::Pristine`] verdicts, made on this transaction's stores as the fixed rules (`fixed`)
    /// left them: per rule its index in the list, or `UNKNOWN`. Matches go into `matches` (after the frozen
    /// starters' of `verdicts`, whose indexes a rule with both keeps).
    fn pristine_verdicts(
        &mut self,
        fixed: &[usize],
        verdicts: &[u32],
        matches: &mut Vec<Vec<(Vec<u8>, Vec<u8>)>>,
    ) -> (Vec<u32>, Vec<init::Pristine>) {
        let rs = self.rs;
        let (mut of_rule, mut list) = (vec![init::UNKNOWN; rs.rules.len()], Vec::new());
        for (ri, rule) in rs.rules.iter().enumerate() {
            let frozen = verdicts.get(ri).copied().unwrap_or(init::UNKNOWN);
            if rule.marker.is_some()
                || frozen == init::NO_MATCH
                || fixed.contains(&ri)
                || !init::starter_reads_fixed(rule)
                || self.targets_removed(rule)
            {
                continue;
            }
            let Some(tx) = self.stores.get(TX_STORE) else { break };
            let template = rule.op.as_ref().and_then(|op| op.macro_template()).map(MacroStr::parse);
            let Some(mut reads) = tx_positions(tx, rule.targets.iter().map(|t| (t.var, &t.key)), template.iter())
            else {
                continue;
            };
            // TX read by a regex key (922110's `TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/`): a variable added since
            // must not be one it selects (`Store::adds`).
            let added = rule.targets.iter().any(|t| tx_by_key(t));
            self.current = Some(rule);
            self.matched_len = 0;
            let mut writes = Vec::new();
            let verdict = if rule.op.is_some() && !self.probe(rule) {
                init::NO_MATCH
            } else if !init::replays_pristine(rule) {
                continue;
            } else {
                let Some(more) = setvar_reads(tx, rule) else { continue };
                reads.iter_mut().zip(more).for_each(|(r, m)| *r |= m);
                let before = self.stores.clone();
                self.run_effects(rule);
                let made = tx_writes(&before, &self.stores);
                self.stores = before;
                let Some(made) = made else { continue };
                writes = made;
                if frozen != init::UNKNOWN {
                    frozen
                } else {
                    matches.push(if rule.op.is_some() { self.starter_matches(rule) } else { Vec::new() });
                    u32::try_from(matches.len() - 1).unwrap_or(init::UNKNOWN)
                }
            };
            if let (Some(slot), Ok(i)) = (of_rule.get_mut(ri), u32::try_from(list.len())) {
                *slot = i;
                list.push(init::Pristine { verdict, reads, writes, added });
            }
        }
        (of_rule, list)
    }

    /// Whether some value of the rule's variables matches its operator (the starter alone; nothing is written).
    fn probe(&self, rule: &Rule) -> bool {
        if rule.op.is_none() {
            return true;
        }
        let mut hit = false;
        self.visit(rule, rule.id, &mut |v| {
            hit = hit || self.check(rule, &v.value, v.id);
        });
        hit
    }

    /// Replay a snapshot at the start of phase 1 (see `init`): the stores as the fixed rules left them, their
    /// records in order, and the commuting rules evaluated at their places.
    fn replay(&mut self, snap: &init::Snapshot, use_memo: bool) -> ControlFlow<Option<Intervention>> {
        let rs = self.rs;
        // Into buffers kept from an earlier transaction: copying allocates nothing once they have grown.
        let mut stores = std::mem::take(&mut self.spare_stores);
        stores.truncate(snap.stores.len());
        stores.resize_with(snap.stores.len(), Store::default);
        stores.iter_mut().zip(&snap.stores).for_each(|(s, from)| s.restore(from, snap.id));
        self.spare_stores = std::mem::replace(&mut self.stores, stores);
        self.stores_gen += 1;
        // Commuting rules have no flow actions: this stays empty.
        let mut flow = Flow::default();
        // The records' texts at once; each record's ranges are the snapshot's, shifted.
        let base = self.record_text.len();
        self.record_text.extend_from_slice(&snap.text);
        let shift = |r: &Range<usize>| r.start + base..r.end + base;
        self.records.reserve(snap.steps.len());
        self.built = OnceCell::new();
        // The records' lowest severity, noted before a commuting rule runs (it may record a match too) and at the end.
        let mut lowest = None;
        for step in &snap.steps {
            match step {
                init::Step::Record { rule, severity, log, msg, logdata, var_name } => {
                    let Some(rule) = rs.rules.get(*rule) else { continue };
                    let r = Record {
                        rule,
                        phase: 1,
                        log: *log,
                        msg: shift(msg),
                        logdata: shift(logdata),
                        var_name: shift(var_name),
                    };
                    self.records.push(r);
                    if let Some(sev) = *severity {
                        lowest = Some(lowest.map_or(sev, |l: u8| l.min(sev)));
                    }
                }
                init::Step::Matched => {
                    self.set_scalar_from(Scalar::MatchedVar, &snap.matched.0);
                    self.set_scalar_from(Scalar::MatchedVarName, &snap.matched.1);
                }
                init::Step::Eval(ri) => {
                    self.note_severity(lowest.take());
                    self.run_rule(1, *ri, use_memo, &mut flow)?;
                }
                init::Step::Mode(m) => self.mode = *m,
                init::Step::Remove(sels) => self.removed.extend(sels.iter().cloned()),
                init::Step::RemoveTargets(t) => self
                    .removed_targets
                    .extend(t.iter().map(|(s, x)| (Cow::Owned(s.clone()), Cow::Owned(Target::clone(x))))),
            }
        }
        self.note_severity(lowest);
        ControlFlow::Continue(())
    }

    /// Whether a ctl target removal names one of the variables `rule` reads (its values may then differ from the
    /// snapshot's).
    fn targets_removed(&self, rule: &Rule) -> bool {
        self.removed_targets.iter().any(|(_, x)| rule.includes.iter().any(|(t, _)| t.var == x.var))
    }

    /// Append a match, and lower HIGHEST_SEVERITY to the rule's severity.
    pub(crate) fn push_record(&mut self, r: Record<'r>) {
        let sev = r.rule.severity;
        self.push_record_with(r, sev);
    }

    /// [`Transaction::push_record`] with the rule's severity known (the snapshot's replay does not read the rule).
    fn push_record_with(&mut self, r: Record<'r>, sev: Option<u8>) {
        self.records.push(r);
        self.built = OnceCell::new();
        self.note_severity(sev);
    }

    /// Lower HIGHEST_SEVERITY to `sev`.
    fn note_severity(&mut self, sev: Option<u8>) {
        if let Some(sev) = sev.filter(|&s| s < self.highest_severity) {
            self.highest_severity = sev;
            self.set_scalar_num(Scalar::HighestSeverity, i64::from(sev));
        }
    }

    /// Whether pure rule number `p` may match a value in this phase. `false` only when every value of its group's
    /// variables is known (from the memo, or evaluated now and remembered) not to match: then evaluating the rule
    /// would match nothing and change nothing. `true` sends the rule through the normal evaluation.
    fn may_match(&mut self, rule: &'r Rule, p: u32) -> bool {
        let rs = self.rs;
        let Some(&g) = rs.pure.group.get(p as usize) else { return true };
        if !self.group_enumerated(g) {
            return true;
        }
        // The phase's row, made as the targets were enumerated: no bit means every value is known not to match.
        if !self.group_may(g, p) {
            return false;
        }
        // A rule not asked about before this phase: its values were enumerated without it (`phase_asked`); it is
        // evaluated normally this time, and known from the next phase on.
        if self.phase_asked.get((p / 64) as usize).is_none_or(|w| w >> (p % 64) & 1 == 0) {
            memo::with(rs.id, rs.pure.count(), |m| m.ask(p));
            return true;
        }
        let this: &Self = self;
        let Some(targets) = rs.pure.group_targets.get(g as usize) else { return true };
        memo::with(rs.id, rs.pure.count(), |m| {
            for &t in targets {
                let Some(&(start, len)) = this.target_spans.get(t as usize) else { return true };
                let Some(vals) = this.pure_vals.get(start as usize..(start + len) as usize) else { return true };
                for &(e, id) in vals {
                    if e == memo::NO_ENTRY {
                        return true;
                    }
                    let hit = match m.get(e, p) {
                        Some(hit) => hit,
                        None => this.check_entry(rule, p, m, e, id),
                    };
                    if hit {
                        return true;
                    }
                }
            }
            false
        })
    }

    /// Make group `g` ready for this phase on first use: its targets' values enumerated (each target once per phase,
    /// whichever group needs it first) and added to the phase's row. `None` when the plan is inconsistent (the
    /// caller then evaluates normally).
    #[inline(never)]
    fn enumerate_group(&mut self, g: u32) -> Option<()> {
        let rs = self.rs;
        let phase = usize::from(self.phase.wrapping_sub(1));
        // The phase's first: all of the phase's targets at once, and every group of the phase is ready.
        if let (Some(all), Some(groups), false) =
            (rs.pure.phase_targets.get(phase), rs.pure.phase_groups.get(phase), self.batched)
        {
            self.batched = true;
            // The phase's targets are its groups' targets: every group of the phase is ready (when the plan is
            // inconsistent, each group is checked below when it is asked about).
            if self.enumerate_targets(all) {
                for &h in groups {
                    if let Some(r) = self.group_ready.get_mut(h as usize) {
                        *r = true;
                    }
                }
            }
        }
        self.enumerate_targets(rs.pure.group_targets.get(g as usize)?);
        self.mark_ready_if_enumerated(g).then_some(())
    }

    /// Mark group `g` ready when all of its targets are enumerated in this phase; whether it is.
    fn mark_ready_if_enumerated(&mut self, g: u32) -> bool {
        let Some(targets) = self.rs.pure.group_targets.get(g as usize) else { return false };
        let done = targets.iter().all(|&ti| self.target_spans.get(ti as usize).is_some_and(|s| s.0 != UNSET));
        match self.group_ready.get_mut(g as usize) {
            Some(r) if done => {
                *r = true;
                true
            }
            _ => false,
        }
    }

    /// Enumerate the targets of `targets` not enumerated yet in this phase: their values (memo entries), added to
    /// the phase's row. Whether every target of `targets` is enumerated now (`false` only when the plan is
    /// inconsistent).
    fn enumerate_targets(&mut self, targets: &[u32]) -> bool {
        let rs = self.rs;
        let words = memo::row_words(rs.pure.count());
        let mut row = std::mem::take(&mut self.phase_maybe);
        if row.len() != words {
            // Not made at the phase's start (cannot happen): every rule may match.
            row.clear();
            row.resize(words, u64::MAX);
        }
        let mut spans = std::mem::take(&mut self.target_spans);
        let mut complete = true;
        memo::with(rs.id, rs.pure.count(), |m| {
            let mut add = Adder {
                m,
                bytes: &rs.pure.bytes,
                vals: std::mem::take(&mut self.pure_vals),
                ids: std::mem::take(&mut self.entry_of_id),
                last: &self.last_entries.0,
                counts: self.count_entries.0,
                row: std::mem::take(&mut row),
                asked: &self.phase_asked,
                reading: &[],
                readers: &[],
            };
            for &ti in targets {
                let (Some(t), Some(span)) = (rs.pure.targets.get(ti as usize), spans.get_mut(ti as usize)) else {
                    complete = false;
                    continue;
                };
                if span.0 != UNSET {
                    continue;
                }
                let start = add.vals.len();
                let rows = ti as usize * words..(ti as usize + 1) * words;
                // Which of the rules reading this target may match one of its values (see `Memo::or_maybe`). A value
                // known to match none of them is not kept: `may_match` asks only about the others.
                let Some(reading) = rs.pure.target_rules.get(rows.clone()) else {
                    // No row of readers (cannot happen): every rule may match.
                    add.row.fill(u64::MAX);
                    complete = false;
                    continue;
                };
                // No rule reading the target was asked about (the CRS's rules above the paranoia level, which the walk
                // skips): every one of them may match (`may_match` evaluates such a rule as usual and asks about it,
                // and its targets are enumerated from the next phase on), and its values are not looked at.
                if !reading.iter().zip(add.asked).any(|(r, a)| r & a != 0) {
                    add.row.iter_mut().zip(reading).for_each(|(o, r)| *o |= r);
                    *span = (u32::try_from(start).unwrap_or(UNSET), 0);
                    continue;
                }
                add.reading = reading;
                add.readers = rs.pure.var_rules.get(rows).unwrap_or_default();
                // What `values` gives, without a call per value through `dyn FnMut` for the common kinds.
                match t.var {
                    // `&VAR`: its count, as `visit` gives it (a pure rule excludes nothing from a counted variable;
                    // a removal before this phase may: then every rule reading it may match).
                    _ if t.count => {
                        if self.removed_targets.iter().any(|(_, x)| x.var == t.var) {
                            add.unknown();
                        } else {
                            let mut n = 0usize;
                            match t.var {
                                Var::Coll(c) | Var::Names(c)
                                    if !matches!(c, Coll::Xml | Coll::Rule | Coll::Store(_)) =>
                                {
                                    for (list, _) in self.pairs(c) {
                                        for_members(list, &t.key, |_, _| n += 1);
                                    }
                                }
                                _ => self.values(t, &mut |_| n += 1),
                            }
                            add.count(n);
                        }
                    }
                    Var::Scalar(s) => {
                        if let Some((v, id)) = self.scalar_val(s) {
                            add.value(v, id);
                        }
                    }
                    Var::Coll(c) if !matches!(c, Coll::Xml | Coll::Rule | Coll::Store(_)) => {
                        for (list, base) in self.pairs(c) {
                            for_members(list, &t.key, |i, (_, v)| add.value(v, member_id(base, i, 0)));
                        }
                    }
                    Var::Names(c) => {
                        for (list, base) in self.pairs(c) {
                            for_members(list, &t.key, |i, (k, _)| add.value(k, member_id(base, i, 1)));
                        }
                    }
                    Var::Coll(_) => self.values(t, &mut |v| add.value(&v.value, v.id)),
                }
                *span = (u32::try_from(start).unwrap_or(UNSET), u32::try_from(add.vals.len() - start).unwrap_or(0));
            }
            self.pure_vals = add.vals;
            self.entry_of_id = add.ids;
            self.count_entries.0 = add.counts;
            row = add.row;
        });
        self.phase_maybe = row;
        self.target_spans = spans;
        complete
    }

    /// [`Transaction::check`] of pure rule `p` (`rule`) on memo entry `e` (value number `id`), remembered in the memo.
    /// A rule of a regex set (`PurePlan::rx_sets`) runs the set on the value: every member it finds not to match is
    /// remembered so (their operators would answer the same, on the same transformed value); a member it finds to
    /// match is checked as usual (captures).
    fn check_entry(&self, rule: &Rule, p: u32, m: &mut memo::Memo, e: u32, id: u32) -> bool {
        let pure = &self.rs.pure;
        let set = pure.rx_set_of.get(p as usize).copied().flatten();
        if let Some(((set, members), at)) = set.and_then(|(s, at)| Some((pure.rx_sets.get(s as usize)?, at))) {
            let found = set.matches(&self.transformed(rule, m.key(e), id));
            for (i, &q) in members.iter().enumerate() {
                if found >> i & 1 == 0 && m.get(e, q).is_none() {
                    m.set(e, q, false);
                }
            }
            if found >> at & 1 == 0 {
                return false;
            }
        }
        let hit = self.check(rule, m.key(e), id);
        m.set(e, p, hit);
        hit
    }

    /// Whether a pure rule's operator matches `value` after its transformations (no captures, no effects): what
    /// [`Transaction::eval_rule`] decides for one value.
    fn check(&self, rule: &Rule, value: &[u8], id: u32) -> bool {
        #[cfg(test)]
        CHECKS.with(|n| n.set(n.get() + 1));
        let Some(op) = &rule.op else { return true };
        if rule.multi_match {
            // Rules that `pre_need` rules out never get here (as below); each form is checked for `need_bytes`.
            let may = |v: &[u8]| rule.need_bytes.as_ref().is_none_or(|need| palisade_waf_ops::has_any_byte(v, need));
            if may(value) && op.matches(value, self, None) {
                return true;
            }
            let known = if id == NO_ID { 0 } else { self.cache.borrow().unchanged(id) };
            let mut unchanged = known;
            let mut cur: Cow<'_, [u8]> = Cow::Borrowed(value);
            let mut hit = false;
            for t in &rule.transforms {
                let raw = matches!(cur, Cow::Borrowed(_));
                if let Some(n) = apply_noting(*t, &cur, raw, &mut unchanged) {
                    cur = Cow::Owned(n);
                    if may(&cur) && op.matches(&cur, self, None) {
                        hit = true;
                        break;
                    }
                }
            }
            if unchanged != known {
                self.cache.borrow_mut().add_unchanged(id, unchanged);
            }
            hit
        } else {
            // Rules that `pre_need` rules out for this value never get here: the memo entry was made with them
            // known not to match (`memo::ByteRule`).
            let tv = self.transformed(rule, value, id);
            // A value with none of the bytes every match contains cannot match: no regex run.
            if let Some(need) = &rule.need_bytes {
                if !palisade_waf_ops::has_any_byte(&tv, need) {
                    return false;
                }
            }
            op.matches(&tv, self, None)
        }
    }

    /// Evaluate a rule and its chain; when all of them matched, the starter's first matched variable name (its
    /// range in `record_text`).
    /// `verdict`: the snapshot's on the starter (`init::UNKNOWN`: evaluate it).
    fn eval_chain(&mut self, rule: &'r Rule, verdict: u32) -> Option<Range<usize>> {
        if self.links_fail(rule) {
            return None;
        }
        let mark = self.record_text.len();
        let first =
            if verdict == init::UNKNOWN { self.eval_rule(rule, rule.id)? } else { self.replay_match(rule, verdict)? };
        let mut cur = rule;
        let use_memo = self.rs.memo && self.rs.pure.count() > 0;
        while let Some(next) = cur.chain.as_deref() {
            // A pure link none of whose values can match (the memo knows them all) fails without a visit.
            let ruled_out = use_memo && next.link_pure != NOT_PURE && !self.may_match(next, next.link_pure);
            if ruled_out || self.eval_rule(next, rule.id).is_none() {
                self.record_text.truncate(mark);
                return None;
            }
            cur = next;
        }
        // Only the starter's name is kept (the links appended theirs after it).
        self.record_text.truncate(first.end);
        Some(first)
    }

    /// Whether a pure link of `rule`'s chain that can match none of its values (the memo knows them all) fails the
    /// chain before anything it changes: the starter and the links before that link have no effects and no
    /// `capture`, so evaluating them would only set MATCHED_VAR(S) and MATCHED_VAR_NAME, which no rule of the set
    /// reads before its own match replaces them (`RuleSet::links_first`) and the next rule's evaluation starts
    /// afresh. The chain then fails as evaluation would, without evaluating the starter (the CRS's 920170 and
    /// 920171: a GET matches their starter, and their links look for body headers a GET does not have).
    fn links_fail(&mut self, rule: &'r Rule) -> bool {
        let rs = self.rs;
        if !(rs.links_first && rs.memo && rs.pure.count() > 0) {
            return false;
        }
        let mut prev = rule;
        while let Some(next) = prev.chain.as_deref() {
            if !prev.effects.is_empty() || prev.capture {
                return false;
            }
            if next.link_pure != NOT_PURE && !self.may_match(next, next.link_pure) {
                return true;
            }
            prev = next;
        }
        false
    }

    /// [`Transaction::eval_chain`] for a replayable chain (see `outcome`): a non-matching outcome remembered for the
    /// same stores and starter values is replayed instead, and a new one is remembered.
    fn eval_chain_remembered(&mut self, ri: usize, rule: &'r Rule) -> Option<Range<usize>> {
        let mut key = std::mem::take(&mut self.outcome_key);
        let found = if !self.outcome_key(ri, rule, &mut key) {
            self.eval_chain(rule, init::UNKNOWN)
        } else if outcome::lookup(self.rs.id, &key, |o| self.replay_outcome(o)).is_some() {
            None
        } else {
            let ids = self.matched_ids();
            let marks: Vec<(usize, u32)> = self.stores.iter().map(|s| (s.written.len(), s.removals)).collect();
            let found = self.eval_chain(rule, init::UNKNOWN);
            if found.is_none() {
                if let Some(o) = self.outcome_since(&marks, ids) {
                    outcome::remember(self.rs.id, &key, o);
                }
            }
            found
        };
        self.outcome_key = key;
        found
    }

    /// The outcome memo's key for chain `ri` now: the rule, the stores, and the starter's values (names and bytes).
    /// The stores are written as the snapshot they were copied from (its id) and the variables written since, when
    /// there is one and nothing was deleted; else as every variable in order. `false` when the key would be longer
    /// than the memo keeps.
    fn outcome_key(&self, ri: usize, rule: &Rule, key: &mut Vec<u8>) -> bool {
        key.clear();
        key.extend_from_slice(&u32::try_from(ri).unwrap_or(u32::MAX).to_le_bytes());
        let relative = self.stores.iter().all(|s| s.removals == 0 && s.written.len() <= outcome::MAX_WRITES);
        match self.snap.as_ref().filter(|_| relative) {
            Some(snap) => {
                key.push(1);
                key.extend_from_slice(&snap.id.to_le_bytes());
                for st in &self.stores {
                    key.extend_from_slice(&u32::try_from(st.entries.len()).unwrap_or(u32::MAX).to_le_bytes());
                    for p in st.first_writes(0).into_iter().flatten() {
                        let Some((n, v)) = st.entries.get(p as usize) else { return false };
                        key.extend_from_slice(&p.to_le_bytes());
                        outcome::push_field(key, n);
                        outcome::push_field(key, v);
                        if key.len() > outcome::MAX_KEY {
                            return false;
                        }
                    }
                    // Ends the store's changes (no position is this large).
                    key.extend_from_slice(&u32::MAX.to_le_bytes());
                }
            }
            None => {
                key.push(0);
                for st in &self.stores {
                    key.extend_from_slice(&u32::try_from(st.entries.len()).unwrap_or(u32::MAX).to_le_bytes());
                    for (n, v) in &st.entries {
                        outcome::push_field(key, n);
                        outcome::push_field(key, v);
                    }
                    if key.len() > outcome::MAX_KEY {
                        return false;
                    }
                }
            }
        }
        for (t, _) in &rule.includes {
            self.values(t, &mut |v| {
                outcome::push_field(key, &v.key);
                outcome::push_field(key, &v.value);
            });
            // Ends the target's values (no field is this long).
            key.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        key.len() <= outcome::MAX_KEY
    }

    /// The cache ids of MATCHED_VAR and MATCHED_VAR_NAME (new ones whenever they are set).
    fn matched_ids(&self) -> [u32; 2] {
        [Scalar::MatchedVar, Scalar::MatchedVarName].map(|s| self.scalar_ids.get(s as usize).copied().unwrap_or(NO_ID))
    }

    /// What changed since `marks` (per store, the length of its write log and its deletions then) and `ids`
    /// ([`Transaction::matched_ids`] then). `None` when a variable was deleted (not replayable by writes).
    fn outcome_since(&self, marks: &[(usize, u32)], ids: [u32; 2]) -> Option<outcome::Outcome> {
        if marks.len() != self.stores.len() {
            return None;
        }
        let mut o = outcome::Outcome::default();
        for (s, (st, &(mark, removals))) in self.stores.iter().zip(marks).enumerate() {
            if st.removals != removals {
                return None;
            }
            for p in st.first_writes(mark)? {
                let (name, value) = st.entries.get(p as usize)?;
                o.writes.push((s, name.clone(), name_hash(name), value.clone()));
            }
        }
        if self.matched_ids() != ids {
            o.matched = Some((self.scalar(Scalar::MatchedVar).to_vec(), self.scalar(Scalar::MatchedVarName).to_vec()));
        }
        Some(o)
    }

    /// Leave the transaction as the chain did when it produced `o`.
    fn replay_outcome(&mut self, o: &outcome::Outcome) {
        if !o.writes.is_empty() {
            self.stores_gen += 1;
        }
        for (s, name, h, value) in &o.writes {
            if let Some(st) = self.stores.get_mut(*s) {
                st.set_from(name, *h, value);
            }
        }
        if let Some((value, name)) = &o.matched {
            self.set_scalar_from(Scalar::MatchedVar, value);
            self.set_scalar_from(Scalar::MatchedVarName, name);
        }
    }

    /// Evaluate one rule; on a match, record MATCHED_VAR(S), captures, and run its setvar/ctl per matched value, and
    /// return the first matched variable's name, appended to `record_text`.
    fn eval_rule(&mut self, rule: &'r Rule, starter_id: u32) -> Option<Range<usize>> {
        let Some(op) = &rule.op else {
            self.run_effects(rule);
            let at = self.record_text.len();
            return Some(at..at);
        };
        // Matched values go into buffers the transaction keeps (taken here, put back below): most rules that match
        // match once, and allocating per match was a large share of a request's cost.
        let mut matched = std::mem::take(&mut self.matched_buf);
        let mut bytes = std::mem::take(&mut self.matched_bytes);
        matched.clear();
        bytes.clear();
        {
            let this: &Self = self;
            let mut caps: Vec<Vec<u8>> = Vec::new();
            this.visit(rule, starter_id, &mut |v: Val<'_>| {
                let start = bytes.len();
                let mut mid = start;
                let mut hit;
                if rule.pre_need.as_ref().is_some_and(|pre| !palisade_waf_ops::has_any_byte(&v.value, pre)) {
                    // No transformation of this value (nor the value, for multiMatch) can contain what every match
                    // contains.
                    hit = false;
                } else if rule.multi_match {
                    let mut cur: Cow<'_, [u8]> = Cow::Borrowed(&*v.value);
                    let check = |data: &[u8], caps: &mut Vec<Vec<u8>>| {
                        caps.clear();
                        rule.need_bytes.as_ref().is_none_or(|need| palisade_waf_ops::has_any_byte(data, need))
                            && op.matches(data, this, if rule.capture { Some(caps) } else { None })
                    };
                    hit = check(&cur, &mut caps);
                    for t in &rule.transforms {
                        if hit {
                            break;
                        }
                        if let Some(n) = t.apply(&cur) {
                            cur = Cow::Owned(n);
                            hit = check(&cur, &mut caps);
                        }
                    }
                    if hit {
                        bytes.extend_from_slice(&v.key);
                        mid = bytes.len();
                        bytes.extend_from_slice(&cur);
                    }
                } else {
                    let tv = this.transformed(rule, &v.value, v.id);
                    caps.clear();
                    hit = op.matches(&tv, this, if rule.capture { Some(&mut caps) } else { None });
                    if hit {
                        bytes.extend_from_slice(&v.key);
                        mid = bytes.len();
                        bytes.extend_from_slice(&tv);
                    }
                }
                if hit {
                    let captures = if rule.capture { std::mem::take(&mut caps) } else { Vec::new() };
                    matched.push(Matched { var: v.var, key: start..mid, value: mid..bytes.len(), captures });
                }
            });
        }
        let mut first = None;
        let mut name = std::mem::take(&mut self.name_buf);
        for m in matched.iter_mut() {
            if !m.captures.is_empty() {
                self.stores_gen += 1;
                if let Some(tx) = self.stores.get_mut(TX_STORE) {
                    for (n, c) in CAPTURE_NAMES.iter().zip(std::mem::take(&mut m.captures)) {
                        tx.set(n, c);
                    }
                }
            }
            let key = bytes.get(m.key.clone()).unwrap_or_default();
            let value = bytes.get(m.value.clone()).unwrap_or_default();
            name.clear();
            name.extend_from_slice(m.var.name().as_bytes());
            if !key.is_empty() {
                name.push(b':');
                name.extend_from_slice(key);
            }
            if first.is_none() {
                let start = self.record_text.len();
                self.record_text.extend_from_slice(&name);
                first = Some(start..self.record_text.len());
            }
            self.set_scalar_from(Scalar::MatchedVar, value);
            self.set_scalar_from(Scalar::MatchedVarName, &name);
            self.push_matched_var(&name, value);
            self.run_effects(rule);
        }
        self.name_buf = name;
        self.matched_buf = matched;
        self.matched_bytes = bytes;
        first
    }

    /// What [`Transaction::eval_rule`] does after a match, for a frozen starter whose matches the snapshot found
    /// (match `i` of `init::Snapshot::matches`; such a starter has no `capture`).
    fn replay_match(&mut self, rule: &'r Rule, i: u32) -> Option<Range<usize>> {
        // Taken for the loop and put back (no reference count traffic).
        let snap = self.snap.take()?;
        let mut first = None;
        for (name, value) in snap.matches.get(i as usize).map_or(&[][..], Vec::as_slice) {
            self.note_match(name, value, &mut first);
            self.run_effects(rule);
        }
        self.snap = Some(snap);
        first
    }

    /// A replayed match of (MATCHED_VAR_NAME, MATCHED_VAR): the matched variables, and the first one's name in
    /// `record_text` (into `first`).
    #[inline]
    fn note_match(&mut self, name: &[u8], value: &[u8], first: &mut Option<Range<usize>>) {
        if first.is_none() {
            let start = self.record_text.len();
            self.record_text.extend_from_slice(name);
            *first = Some(start..self.record_text.len());
        }
        self.set_scalar_from(Scalar::MatchedVar, value);
        self.set_scalar_from(Scalar::MatchedVarName, name);
        self.push_matched_var(name, value);
    }

    /// The values a starter without `capture` and `multiMatch` matches: (MATCHED_VAR_NAME, MATCHED_VAR) of each, as
    /// [`Transaction::eval_rule`] records them (nothing is written).
    fn starter_matches(&self, rule: &Rule) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let Some(op) = &rule.op else { return out };
        self.visit(rule, rule.id, &mut |v| {
            let tv = self.transformed(rule, &v.value, v.id);
            if op.matches(&tv, self, None) {
                let mut name = v.var.name().as_bytes().to_vec();
                if !v.key.is_empty() {
                    name.push(b':');
                    name.extend_from_slice(&v.key);
                }
                out.push((name, tv.to_vec()));
            }
        });
        out
    }

    /// The rule's transformations applied to `value`, through the per-transaction cache.
    fn transformed<'v>(&'v self, rule: &Rule, value: &'v [u8], id: u32) -> Tv<'v> {
        if rule.transforms.is_empty() {
            return Tv::Same(value);
        }
        if value.len() > CACHE_MAX_VALUE {
            return transform_uncached(rule, value);
        }
        let mut cache_ref = self.cache.borrow_mut();
        let cache = &mut *cache_ref;
        let id = if id != NO_ID {
            id
        } else {
            let h = hash_bytes(value);
            let known = cache.inputs.get(&h).and_then(|b| b.iter().find(|(v, _)| **v == *value)).map(|(_, id)| *id);
            match known {
                Some(id) => id,
                None => {
                    let id = cache.reserve(1);
                    if id == NO_ID {
                        return transform_uncached(rule, value);
                    }
                    cache.inputs.entry(h).or_default().push((Arc::from(value), id));
                    id
                }
            }
        };
        let Some(row) = cache.row(id) else { return transform_uncached(rule, value) };
        // Longest cached prefix of the chain for this value.
        let mut start = 0usize;
        let mut cur: Option<Arc<[u8]>> = None;
        let last = rule.tchain.len().saturating_sub(1);
        for (i, node) in rule.tchain.iter().enumerate().rev() {
            let idx = row + *node as usize;
            match cache.cells.get(idx).copied() {
                Some(SAME) if i == last => return Tv::Same(value),
                Some(c) if c >= FIRST_NEW && i == last => {
                    // The whole chain is cached (the common case): lend the cached bytes, no refcount traffic.
                    drop(cache_ref);
                    let r = Ref::filter_map(self.cache.borrow(), |c| {
                        c.cells.get(idx).and_then(|&n| c.results.get(n.checked_sub(FIRST_NEW)? as usize)).map(|a| &**a)
                    });
                    return match r {
                        Ok(r) => Tv::Cached(r),
                        Err(_) => transform_uncached(rule, value),
                    };
                }
                Some(SAME) => {}
                Some(c) if c >= FIRST_NEW => match cache.results.get((c - FIRST_NEW) as usize) {
                    Some(a) => cur = Some(Arc::clone(a)),
                    None => continue,
                },
                _ => continue,
            }
            start = i + 1;
            break;
        }
        let mut unchanged = cache.unchanged(id);
        let known = unchanged;
        for (i, t) in rule.transforms.iter().enumerate().skip(start) {
            if let Some(out) = apply_noting(*t, cur.as_deref().unwrap_or(value), cur.is_none(), &mut unchanged) {
                cur = Some(Arc::from(out));
            }
            let value = match &cur {
                None => SAME,
                Some(a) => match u32::try_from(cache.results.len()).ok().and_then(|n| n.checked_add(FIRST_NEW)) {
                    Some(n) => {
                        cache.results.push(Arc::clone(a));
                        n
                    }
                    None => UNKNOWN,
                },
            };
            if let Some(cell) = rule.tchain.get(i).and_then(|n| cache.cells.get_mut(row + *n as usize)) {
                *cell = value;
            }
        }
        if unchanged != known {
            cache.add_unchanged(id, unchanged);
        }
        cur.map_or(Tv::Same(value), Tv::New)
    }

    fn run_effects(&mut self, rule: &'r Rule) {
        // Expansions go into two buffers the transaction keeps (CRS rules write a TX variable per matched value).
        let (mut nbuf, mut vbuf) = std::mem::take(&mut self.expand_bufs);
        for e in &rule.effects {
            match e {
                Effect::SetVar { store, name, op, value } => {
                    self.stores_gen += 1;
                    let (name, h) = match name.literal_hashed() {
                        Some(lit) => lit,
                        None => {
                            let n = self.expand_in(name, &mut nbuf);
                            (n, name_hash(n))
                        }
                    };
                    let value = self.expand_in(value, &mut vbuf);
                    let Some(st) = self.stores.get_mut(*store) else { continue };
                    match op {
                        SetOp::Delete => st.remove(name),
                        SetOp::Set => st.set_from(name, h, value),
                        SetOp::Add => st.update_i64(name, h, |old| old.saturating_add(parse_i64(value))),
                        SetOp::Sub => st.update_i64(name, h, |old| old.saturating_sub(parse_i64(value))),
                    }
                }
                Effect::Ctl(c) => match c {
                    Ctl::RuleRemove(sel) => self.removed.push(sel.clone()),
                    Ctl::RuleRemoveTarget(sel, t) => {
                        self.removed_targets.push((Cow::Borrowed(sel), Cow::Borrowed(&**t)))
                    }
                    Ctl::RuleEngine(m) => self.mode = *m,
                    Ctl::RequestBodyProcessor(p) => self.set_body_proc(Some(*p)),
                    Ctl::RequestBodyAccess(b) => self.request_body_access = *b,
                    Ctl::ForceRequestBodyVariable(b) => self.force_body_var = *b,
                    Ctl::ResponseBodyAccess(b) => self.response_body_access = *b,
                    Ctl::Ignored => {}
                },
            }
        }
        self.expand_bufs = (nbuf, vbuf);
    }

    /// All values the rule's targets select, minus exclusions (the rule's `!` targets and ctl removals).
    fn visit<'a>(&'a self, rule: &Rule, starter_id: u32, f: &mut dyn FnMut(Val<'a>)) {
        let starter = self.current;
        // A removal only ever excludes values of its own variable (`Target::excludes`): when none names a variable
        // this rule reads, which of them select the starter (a tag search per rule) does not matter.
        let applies = self.removed_targets.iter().any(|(_, x)| rule.includes.iter().any(|(t, _)| t.var == x.var));
        let mut memo = applies.then(|| self.extra_memo.borrow_mut());
        if let Some(memo) = memo.as_mut() {
            let key = (self.removed_targets.len(), starter_id);
            if memo.0 != key {
                memo.0 = key;
                memo.1.clear();
                memo.1.extend(
                    self.removed_targets
                        .iter()
                        .enumerate()
                        .filter(|(_, (sel, _))| match (&**sel, starter) {
                            (RuleSel::Ids(r), _) => r.iter().any(|r| r.contains(&starter_id)),
                            (RuleSel::Tag(_), Some(s)) => sel.selects(s),
                            (RuleSel::Tag(_), None) => false,
                        })
                        .map(|(i, _)| i),
                );
            }
        }
        // Held for the whole visit: nothing a visit calls (operators, macro expansion) visits again.
        let extra_at: &[usize] = memo.as_ref().map_or(&[], |m| &m.1);
        let extra = || extra_at.iter().filter_map(|&i| self.removed_targets.get(i)).map(|(_, t)| &**t);
        let excluded = |var: Var, key: &[u8]| {
            rule.exclusions.iter().any(|t| t.excludes(var, key)) || extra().any(|t| t.excludes(var, key))
        };
        for (t, rule_excludes) in &rule.includes {
            if extra().any(|x| x.var == t.var && matches!(x.key, Key::All)) {
                continue;
            }
            let relevant = *rule_excludes || extra().any(|x| x.var == t.var);
            if t.count {
                let mut n = 0usize;
                self.values(t, &mut |v| {
                    if !(relevant && excluded(v.var, &v.key)) {
                        n += 1;
                    }
                });
                let value = match small_number(n) {
                    Some(b) => Cow::Borrowed(b),
                    None => Cow::Owned(n.to_string().into_bytes()),
                };
                f(Val { var: t.var, key: Cow::Borrowed(b""), value, id: NO_ID });
            } else if relevant {
                self.values(t, &mut |v| {
                    if !excluded(v.var, &v.key) {
                        f(v);
                    }
                });
            } else {
                self.values(t, f);
            }
        }
    }

    /// The member lists of a collection (ARGS is two lists) with their id bases; no allocation, this runs for
    /// every target.
    fn pairs(&self, c: Coll) -> [(&[Pair], u32); 2] {
        let none: (&[Pair], u32) = (&[], NO_ID);
        let b = |s: Slot| self.bases.get(s as usize).copied().unwrap_or(NO_ID);
        match c {
            Coll::Args => [(&self.args_get, b(Slot::ArgsGet)), (&self.args_post, b(Slot::ArgsPost))],
            Coll::ArgsGet => [(&self.args_get, b(Slot::ArgsGet)), none],
            Coll::ArgsPost => [(&self.args_post, b(Slot::ArgsPost)), none],
            Coll::ReqHeaders => [(&self.headers, b(Slot::Headers)), none],
            Coll::ReqCookies => [(&self.cookies, b(Slot::Cookies)), none],
            Coll::Files => [(&self.files, b(Slot::Files)), none],
            Coll::FilesSizes => [(&self.files_sizes, b(Slot::FilesSizes)), none],
            Coll::PartHeaders => [(&self.part_headers, b(Slot::PartHeaders)), none],
            Coll::RespHeaders => [(&self.resp_headers, b(Slot::RespHeaders)), none],
            // Changed while rules run (cleared per rule, setvar): looked up by content.
            Coll::MatchedVars => [(self.matched_vars.get(..self.matched_len).unwrap_or_default(), NO_ID), none],
            Coll::Store(i) => [(self.stores.get(i).map_or(&[][..], |s| s.entries.as_slice()), NO_ID), none],
            Coll::FilesTmpNames | Coll::FilesTmpContent | Coll::Env | Coll::Geo | Coll::Rule | Coll::Xml => {
                [none, none]
            }
        }
    }

    /// Append the values of one (non-exclusion) target.
    fn values<'a>(&'a self, t: &Target, f: &mut dyn FnMut(Val<'a>)) {
        self.values_of(t.var, &t.key, &t.key_text, f);
    }

    /// A scalar variable's value and number; `None` when it has no value: ModSecurity has no value for unset
    /// body/response variables (count 0 for them).
    #[inline]
    fn scalar_val(&self, s: Scalar) -> Option<(&[u8], u32)> {
        let v = self.scalar(s);
        if v.is_empty() && !scalar_always_present(s) {
            return None;
        }
        Some((v, self.scalar_ids.get(s as usize).copied().unwrap_or(NO_ID)))
    }

    /// The values of `var` selected by `key` (`key_text`: the key as written, for XML paths).
    fn values_of<'a>(&'a self, var: Var, key: &Key, key_text: &str, f: &mut dyn FnMut(Val<'a>)) {
        match var {
            Var::Scalar(s) => {
                if let Some((v, id)) = self.scalar_val(s) {
                    f(Val { var, key: Cow::Borrowed(b""), value: Cow::Borrowed(v), id });
                }
            }
            Var::Coll(Coll::Xml) => {
                let list = if key_text.contains('@') { &self.xml_attrs } else { &self.xml_text };
                for v in list {
                    f(Val { var, key: Cow::Owned(key_text.as_bytes().to_vec()), value: Cow::Borrowed(v), id: NO_ID });
                }
            }
            Var::Coll(Coll::Rule) => {
                if let Some(r) = self.current {
                    for (k, v) in rule_fields(r) {
                        if key.matches(k.as_bytes()) {
                            f(Val { var, key: Cow::Borrowed(k.as_bytes()), value: Cow::Owned(v), id: NO_ID });
                        }
                    }
                }
            }
            Var::Coll(c) => {
                if let (Coll::Store(i), Key::Name(n, h)) = (c, key) {
                    // Direct lookup for TX:name (the common case).
                    if let Some(st) = self.stores.get(i) {
                        if let Some(idx) = st.position_hashed(n, *h) {
                            if let Some((k, v)) = st.entries.get(idx) {
                                f(Val { var, key: Cow::Borrowed(k), value: Cow::Borrowed(v), id: NO_ID });
                            }
                        }
                    }
                    return;
                }
                for (list, base) in self.pairs(c) {
                    for_members(list, key, |i, (k, v)| {
                        let id = member_id(base, i, 0);
                        f(Val { var, key: Cow::Borrowed(k), value: Cow::Borrowed(v), id });
                    });
                }
            }
            Var::Names(c) => {
                for (list, base) in self.pairs(c) {
                    for_members(list, key, |i, (k, _)| {
                        let id = member_id(base, i, 1);
                        f(Val { var, key: Cow::Borrowed(k), value: Cow::Borrowed(k), id });
                    });
                }
            }
        }
    }

    /// The first value of a macro reference.
    /// Append the first value of a macro reference to `out`.
    fn macro_value(&self, var: Var, key: &Key, out: &mut Vec<u8>) {
        let mut first = true;
        self.values_of(var, key, "", &mut |v| {
            if std::mem::take(&mut first) {
                out.extend_from_slice(&v.value);
            }
        });
    }

    /// The expansion of `m`, borrowed when it is a plain literal (most setvar names and values).
    fn expand_cow<'m>(&self, m: &'m MacroStr) -> Cow<'m, [u8]> {
        if let Some(l) = m.literal() {
            return Cow::Borrowed(l);
        }
        let mut out = Vec::new();
        self.expand_into(m, &mut out);
        Cow::Owned(out)
    }

    /// The expansion of `m`: its literal text, or the expansion written into `buf`.
    fn expand_in<'a>(&self, m: &'a MacroStr, buf: &'a mut Vec<u8>) -> &'a [u8] {
        if let Some(l) = m.literal() {
            return l;
        }
        buf.clear();
        self.expand_into(m, buf);
        buf
    }

    /// Append the expansion of `m` to `out`.
    fn expand_into(&self, m: &MacroStr, out: &mut Vec<u8>) {
        for p in &m.parts {
            match p {
                Part::Lit(l) => out.extend_from_slice(l),
                Part::Ref(var, key) => self.macro_value(*var, key, out),
            }
        }
    }

    fn expand_str(&self, m: &MacroStr) -> String {
        match self.expand_cow(m) {
            Cow::Borrowed(b) => String::from_utf8_lossy(b).into_owned(),
            Cow::Owned(v) => {
                String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            }
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // This transaction's entries become the last ones when it looked any up; the older table's buffer is the
        // next one's.
        let mut entries = std::mem::take(&mut self.entry_of_id);
        let mut last = std::mem::take(&mut self.last_entries);
        if !entries.is_empty() {
            std::mem::swap(&mut entries, &mut last.0);
            last.1 = self.entries_generation;
        }
        let cache = self.cache.get_mut();
        Scratch {
            pure_vals: std::mem::take(&mut self.pure_vals),
            entry_of_id: entries,
            last_entries: last,
            count_entries: self.count_entries,
            walk_pass: std::mem::take(&mut self.walk_pass),
            target_spans: std::mem::take(&mut self.target_spans),
            phase_maybe: std::mem::take(&mut self.phase_maybe),
            phase_asked: std::mem::take(&mut self.phase_asked),
            group_ready: std::mem::take(&mut self.group_ready),
            matched_bytes: std::mem::take(&mut self.matched_bytes),
            matched_buf: std::mem::take(&mut self.matched_buf),
            record_text: std::mem::take(&mut self.record_text),
            name_buf: std::mem::take(&mut self.name_buf),
            expand_bufs: std::mem::take(&mut self.expand_bufs),
            rows: std::mem::take(&mut cache.rows),
            cells: std::mem::take(&mut cache.cells),
            unchanged: std::mem::take(&mut cache.unchanged),
            outcome_key: std::mem::take(&mut self.outcome_key),
            scalars: std::mem::take(&mut self.scalars),
            scalar_ids: std::mem::take(&mut self.scalar_ids),
            matched_vars: std::mem::take(&mut self.matched_vars),
            inputs: std::mem::take(&mut cache.inputs),
            results: std::mem::take(&mut cache.results),
            extra_memo: std::mem::take(&mut self.extra_memo.get_mut().1),
            stores: std::mem::take(&mut self.stores),
            initial: std::mem::take(&mut self.spare_stores),
            records: self.records.len().min(MAX_RECORDS_HINT),
            uses: self.scratch_uses,
            pairs: ALL_SLOTS.map(|slot| {
                let filled = std::mem::take(self.collection_mut(slot));
                match self.pair_pool.get_mut(slot as usize) {
                    Some(spare) if filled.capacity() == 0 => std::mem::take(spare),
                    _ => filled,
                }
            }),
        }
        .give_back();
    }
}

impl MacroEnv for Transaction<'_> {
    fn expand(&self, template: &str) -> Arc<[u8]> {
        if let Some(v) = self.snap.as_ref().and_then(|s| s.arg(template)) {
            return Arc::clone(v);
        }
        let Some((m, stores_only)) = self.rs.templates.get(template) else {
            return Arc::from(self.expand_cow(&MacroStr::parse(template)));
        };
        if !*stores_only {
            return Arc::from(self.expand_cow(m));
        }
        // Reads only TX and the other stores: the expansion holds until one of them changes.
        let key = template.as_ptr() as usize;
        let mut cache = self.arg_cache.borrow_mut();
        if cache.0 != self.stores_gen {
            cache.0 = self.stores_gen;
            cache.1.clear();
        }
        if let Some((_, v)) = cache.1.iter().find(|(k, _)| *k == key) {
            return Arc::clone(v);
        }
        let v: Arc<[u8]> = Arc::from(self.expand_cow(m));
        cache.1.push((key, Arc::clone(&v)));
        v
    }
}

/// Call `f` with each member of `list` (and its position) that `key` selects: the key's kind is decided once per
/// list, not per member (collections are enumerated for every target of every rule that runs).
#[inline]
fn for_members<'a>(list: &'a [Pair], key: &Key, mut f: impl FnMut(usize, &'a Pair)) {
    let members = list.iter().enumerate();
    match key {
        Key::All => members.for_each(|(i, m)| f(i, m)),
        Key::Name(n, _) => {
            members.filter(|(_, (k, _))| k.len() == n.len() && k.eq_ignore_ascii_case(n)).for_each(|(i, m)| f(i, m));
        }
        // Every name the key matches has its literal: shorter names (most TX names for the CRS's TX:/.../ keys) are
        // passed over before the key's test.
        Key::Regex(_, lit, _) => {
            members.filter(|(_, (k, _))| k.len() >= lit.len() && key.matches(k)).for_each(|(i, m)| f(i, m));
        }
    }
}

/// One empty store per collection, in buffers kept from an earlier transaction.
fn emptied(mut stores: Vec<Store>) -> Vec<Store> {
    stores.truncate(STORES.len());
    stores.iter_mut().for_each(Store::clear);
    stores.resize_with(STORES.len(), Store::default);
    stores
}

/// Variables that exist (possibly empty) in every transaction.
fn scalar_always_present(s: Scalar) -> bool {
    !matches!(
        s,
        Scalar::RequestBody
            | Scalar::ResponseBody
            | Scalar::ReqbodyErrorMsg
            | Scalar::ReqbodyProcessorErrorMsg
            | Scalar::ResponseStatus
            | Scalar::ResponseContentType
            | Scalar::ResponseContentLength
            | Scalar::ResponseProtocol
            | Scalar::StatusLine
            | Scalar::WebserverErrorLog
            | Scalar::MatchedVar
            | Scalar::MatchedVarName
            | Scalar::MultipartFilename
            | Scalar::MultipartName
            | Scalar::AuthType
    )
}

fn rule_fields(r: &Rule) -> Vec<(&'static str, Vec<u8>)> {
    let lit = |m: &Option<MacroStr>| m.as_ref().and_then(|m| m.literal()).unwrap_or_default().to_vec();
    vec![
        ("id", r.id.to_string().into_bytes()),
        ("phase", r.phase.to_string().into_bytes()),
        ("msg", lit(&r.msg)),
        ("logdata", lit(&r.logdata)),
        ("severity", r.severity.map(|s| s.to_string()).unwrap_or_default().into_bytes()),
        ("rev", r.rev.clone().into_bytes()),
        ("ver", r.ver.clone().into_bytes()),
    ]
}

/// The decimal text of `n` in `buf` (20 bytes hold any i64).
fn format_i64(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut u = n.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(b) = buf.get_mut(i) {
            // u % 10 < 10: the cast cannot truncate.
            *b = b'0' + (u % 10) as u8;
        }
        u /= 10;
        if u == 0 || i == 0 {
            break;
        }
    }
    if n < 0 && i > 0 {
        i -= 1;
        if let Some(b) = buf.get_mut(i) {
            *b = b'-';
        }
    }
    buf.get(i..).unwrap_or_default()
}

/// The decimal text of `n` below 100 without allocating (counts, `&TX:name`, are read by many rules).
fn small_number(n: usize) -> Option<&'static [u8]> {
    const TWO: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    match n {
        0..=9 => TWO.get(2 * n + 1..2 * n + 2),
        10..=99 => TWO.get(2 * n..2 * n + 2),
        _ => None,
    }
}

fn parse_i64(v: &[u8]) -> i64 {
    // Fast path: plain ASCII digits (what setvar writes), no allocation.
    if let Some(n) = parse_plain_i64(v) {
        return n;
    }
    let s = String::from_utf8_lossy(v);
    let s = s.trim();
    s.parse::<i64>().unwrap_or_else(|_| {
        // ModSecurity uses atoi: leading digits count, the rest is ignored.
        let (neg, digits) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let n: i64 = digits
            .bytes()
            .take_while(u8::is_ascii_digit)
            .fold(0i64, |acc, d| acc.saturating_mul(10).saturating_add(i64::from(d - b'0')));
        if neg {
            -n
        } else {
            n
        }
    })
}

/// `[-]digits` without overflow, or `None`.
fn parse_plain_i64(v: &[u8]) -> Option<i64> {
    let (neg, digits) = match v.split_first() {
        Some((b'-', r)) => (true, r),
        _ => (false, v),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
    Some(if neg { -n } else { n })
}

/// `%XX` decoding (no `+`) of `b` into `out` (emptied first); invalid escapes stay as written.
fn percent_decode_into(b: &[u8], out: &mut Vec<u8>) {
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    out.clear();
    out.reserve(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&x| hex(x)), b.get(i + 2).and_then(|&x| hex(x))) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
}

/// `t` applied to `input` (`None`: unchanged). When `input` is the value itself (`raw`), a transformation
/// `unchanged` already lists is not run, and one found to leave it unchanged is added (see `TCache::unchanged`).
fn apply_noting(t: Transform, input: &[u8], raw: bool, unchanged: &mut u64) -> Option<Vec<u8>> {
    let bit = 1u64 << (t.index() % 64);
    if raw && *unchanged & bit != 0 {
        return None;
    }
    let out = t.apply(input);
    if raw && out.is_none() {
        *unchanged |= bit;
    }
    out
}

#[cfg(test)]
thread_local! {
    /// Calls of `Transaction::check` on this thread (tests only).
    static CHECKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Calls of `Transaction::check` this thread has made (for tests).
#[cfg(test)]
pub(crate) fn checks() -> u64 {
    CHECKS.with(std::cell::Cell::get)
}

/// The rule's transformations applied to `value` without the cache.
fn transform_uncached<'v>(rule: &Rule, value: &'v [u8]) -> Tv<'v> {
    let mut cur: Option<Vec<u8>> = None;
    for t in &rule.transforms {
        if let Some(out) = t.apply(cur.as_deref().unwrap_or(value)) {
            cur = Some(out);
        }
    }
    cur.map_or(Tv::Same(value), Tv::Owned)
}

/// The cache id of member `i` of a collection numbered from `base` (`which`: 0 value, 1 name).
fn member_id(base: u32, i: usize, which: u32) -> u32 {
    if base == NO_ID {
        return NO_ID;
    }
    u32::try_from(i)
        .ok()
        .and_then(|i| i.checked_mul(2))
        .and_then(|o| o.checked_add(which))
        .and_then(|o| base.checked_add(o))
        .filter(|&id| id < NO_ID)
        .unwrap_or(NO_ID)
}

/// Counts (`&VAR` values) whose memo entries a transaction keeps at hand (see `Transaction::count_entries`).
const COUNTS: usize = 16;

/// What [`Transaction::enumerate_targets`] adds values with: their memo entries, kept in the phase's value list
/// and ORed into its row, for the target being enumerated (`reading`, `readers`: its rows of `PurePlan`).
struct Adder<'a> {
    m: &'a mut memo::Memo,
    bytes: &'a memo::ByteRule,
    vals: Vec<(u32, u32)>,
    /// Per value id, its entry found earlier in the transaction (a value several targets share is looked up once).
    ids: Vec<u32>,
    /// The same for the thread's last transaction, used when that entry's bytes are the value's.
    last: &'a [u32],
    /// The entries of small counts (see `Transaction::count_entries`).
    counts: [u32; COUNTS],
    row: Vec<u64>,
    asked: &'a [u64],
    /// The rules reading the target (`PurePlan::target_rules`), and those a new entry's strings may rule out
    /// (`PurePlan::var_rules`).
    reading: &'a [u64],
    readers: &'a [u64],
}

impl Adder<'_> {
    /// Add entry `e` of the value numbered `id`: its rules among `reading` that may match go into the row, and the
    /// value is kept when there is one.
    #[inline]
    fn add(&mut self, e: u32, id: u32) {
        if self.m.or_maybe(e, self.reading, self.asked, &mut self.row) {
            self.vals.push((e, id));
        }
    }

    /// A value numbered `id` (looked up by content when it has no number).
    #[inline]
    fn value(&mut self, value: &[u8], id: u32) {
        let e = match usize::try_from(id) {
            Ok(i) if id != NO_ID => {
                if i >= self.ids.len() {
                    self.ids.resize(i + 1, UNSET);
                }
                match self.ids.get_mut(i) {
                    Some(slot) if *slot != UNSET => *slot,
                    Some(slot) => {
                        *slot = match self.last.get(i) {
                            Some(&e) if e != UNSET && e != memo::NO_ENTRY && self.m.key(e) == value => e,
                            _ => self.m.entry(value, self.bytes, || self.readers),
                        };
                        *slot
                    }
                    None => memo::NO_ENTRY,
                }
            }
            _ => self.m.entry(value, self.bytes, || self.readers),
        };
        self.add(e, id);
    }

    /// A count (`&VAR`): its decimal text, through `counts` for small ones.
    fn count(&mut self, n: usize) {
        let e = match (self.counts.get_mut(n), small_number(n)) {
            (Some(slot), Some(text)) => {
                if *slot == UNSET {
                    *slot = self.m.entry(text, self.bytes, || self.readers);
                }
                *slot
            }
            _ => self.m.entry(n.to_string().as_bytes(), self.bytes, || self.readers),
        };
        self.add(e, NO_ID);
    }

    /// A value not known: every rule reading it may match.
    fn unknown(&mut self) {
        self.add(memo::NO_ENTRY, NO_ID);
    }
}

/// A bit per position in `tx` (below 256) of the variables `vars` and the references of `texts` select; `None`
/// unless each names a TX variable `tx` has, is a TX key selecting by pattern (the variables of `tx` it selects; what
/// it would select among variables added later is `Store::adds`'s), or is of the RULE collection (which no rule
/// writes).
fn tx_positions<'a>(
    tx: &Store,
    vars: impl Iterator<Item = (Var, &'a Key)>,
    texts: impl Iterator<Item = &'a MacroStr>,
) -> Option<[u64; 4]> {
    let mut bits = [0u64; 4];
    let mut set = |p: usize| bits.get_mut(p / 64).map(|w| *w |= 1 << (p % 64));
    for (v, k) in vars.chain(texts.flat_map(MacroStr::refs)) {
        match (v, k) {
            (Var::Coll(Coll::Rule), _) => {}
            (Var::Coll(Coll::Store(TX_STORE)), Key::Name(n, h)) => set(tx.position_hashed(n, *h)?)?,
            (Var::Coll(Coll::Store(TX_STORE)), _) => {
                for (p, _) in tx.entries.iter().enumerate().filter(|(_, (n, _))| k.matches(n)) {
                    set(p)?;
                }
            }
            _ => return None,
        }
    }
    Some(bits)
}

/// Whether target `t` includes TX variables by a regex key (or all of them): variables added after the snapshot may
/// be among its values (see `init::Pristine::added`).
fn tx_by_key(t: &Target) -> bool {
    t.var == Var::Coll(Coll::Store(TX_STORE)) && !t.exclude && !matches!(t.key, Key::Name(..))
}

/// The TX variables (bits as [`tx_positions`] makes them) that the `setvar`s of `rule` (`init::replays_pristine`)
/// and its message and log data read, so that what the rule writes follows from them: each `setvar` names a TX
/// variable; one `tx` has is read (`=+` reads its value), a new one must be set (`=`) before the rule reads it.
/// `None` when they read anything else or delete a variable.
fn setvar_reads(tx: &Store, rule: &Rule) -> Option<[u64; 4]> {
    let tx_var = Var::Coll(Coll::Store(TX_STORE));
    let (mut names, mut made): (Vec<Key>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
    let mut texts = vec![rule.msg.as_ref(), rule.logdata.as_ref()];
    for e in &rule.effects {
        let Effect::SetVar { store: TX_STORE, name, op, value } = e else { return None };
        let (n, h) = name.literal_hashed()?;
        let lower = n.to_ascii_lowercase();
        texts.push(Some(value));
        if tx.position_hashed(n, h).is_some() {
            names.push(Key::Name(lower, h));
        } else if !made.contains(&lower) {
            // A new variable: set before it is read or updated.
            matches!(op, SetOp::Set).then_some(())?;
            made.push(lower);
        }
        (!matches!(op, SetOp::Delete)).then_some(())?;
    }
    tx_positions(tx, names.iter().map(|k| (tx_var, k)), texts.into_iter().flatten())
}

/// What was written to TX from `before` to `after` (nothing else changed and nothing was deleted): each variable
/// changed or added, in order, as (name, [`name_hash`], value); `None` otherwise.
fn tx_writes(before: &[Store], after: &[Store]) -> Option<Vec<init::TxWrite>> {
    let others_same = before.len() == after.len()
        && before.iter().zip(after).enumerate().all(|(i, (b, a))| i == TX_STORE || b.entries == a.entries);
    let (b, a) = (before.get(TX_STORE)?, after.get(TX_STORE)?);
    if !others_same || a.entries.len() < b.entries.len() || a.removals != b.removals {
        return None;
    }
    // Names keep their places (a write changes a value; a new variable is appended).
    if a.entries.iter().zip(&b.entries).any(|(x, y)| x.0 != y.0) {
        return None;
    }
    let changed = a.entries.iter().enumerate().filter(|(i, e)| b.entries.get(*i) != Some(*e));
    Some(changed.map(|(_, (n, v))| (n.clone(), name_hash(n), v.clone())).collect())
}

/// A variable to set before phase 1 ([`Transaction::set_vars`]), parsed once: its store, name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresetVar {
    store: usize,
    name: Vec<u8>,
    hash: u64,
    value: Vec<u8>,
}

impl PresetVar {
    /// `name` as `setvar` writes it (`tx.blocking_paranoia_level`; without a collection, TX); `None` when its
    /// collection is not a store (TX, IP, GLOBAL, RESOURCE, SESSION, USER).
    pub fn new(name: &str, value: &str) -> Option<PresetVar> {
        let (coll, key) = name.split_once('.').unwrap_or(("tx", name));
        let store = STORES.iter().position(|s| s.eq_ignore_ascii_case(coll))?;
        Some(PresetVar::in_store(store, key, value))
    }

    /// TX variable `key` (`blocking_paranoia_level`), which cannot fail to be set.
    pub fn tx(key: &str, value: &str) -> PresetVar {
        PresetVar::in_store(TX_STORE, key, value)
    }

    fn in_store(store: usize, key: &str, value: &str) -> PresetVar {
        let name = key.as_bytes().to_vec();
        PresetVar { store, hash: name_hash(&name), name, value: value.as_bytes().to_vec() }
    }
}

/// A fast non-cryptographic hash for cache keys (entries also compare the full input, so collisions are harmless).
fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (b.len() as u64);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }
    for &x in chunks.remainder() {
        h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set of buffers an unusual request grew past `SCRATCH_MAX_BYTES` is kept for at most
    /// `SCRATCH_CHECK_EVERY` more transactions on its thread, then dropped; an ordinary set is kept.
    #[test]
    fn an_oversized_buffer_set_is_dropped_within_the_check_interval() {
        let rs = RuleSet::parse_str(
            "SecRuleEngine On\nSecRule REQUEST_HEADERS \"@rx ^x\" \
             \"id:1,phase:1,pass,nolog,setvar:tx.h=%{MATCHED_VAR}\"\n",
            "scratch.conf",
        )
        .unwrap();
        let big = vec![b'x'; 2 * SCRATCH_MAX_BYTES];
        let request = |value: &[u8]| {
            let head =
                RequestHead { method: "GET", uri: b"/", protocol: "HTTP/1.1", headers: vec![(&b"X-Big"[..], value)] };
            let mut tx = rs.transaction("t", IpAddr::from([192, 0, 2, 1]));
            assert!(tx.process_request_headers(&head).is_none());
        };
        // Runs on a thread of its own: the pool starts empty and holds what these transactions leave.
        std::thread::scope(|s| {
            s.spawn(|| {
                let pooled =
                    || SCRATCH.with(|p| p.borrow_mut().iter_mut().map(Scratch::held_bytes).collect::<Vec<_>>());
                request(&big);
                assert!(pooled().iter().any(|&b| b > SCRATCH_MAX_BYTES), "kept until its next check");
                let mut checks = 1;
                while pooled().iter().any(|&b| b > SCRATCH_MAX_BYTES) {
                    assert!(checks < SCRATCH_CHECK_EVERY, "still kept after {checks} more transactions");
                    request(b"xyz");
                    checks += 1;
                }
                assert_eq!(checks, SCRATCH_CHECK_EVERY);
                // The next set is an ordinary one, and stays.
                for _ in 0..2 * SCRATCH_CHECK_EVERY {
                    request(b"xyz");
                }
                assert_eq!(pooled().len(), 1);
            });
        });
    }

    /// `may_match` answers from the memo only for the pure rules asked about before the phase: a rule asked for the
    /// first time is evaluated normally and noted; from then on, a value known to match none of the noted rules that
    /// read it is left out of the phase's values. A rule never reached (skipped, as the CRS skips rules above the
    /// paranoia level) is never noted, so it keeps no value in the lists.
    #[test]
    fn values_are_listed_for_the_rules_asked_about() {
        let rs = RuleSet::parse_str(
            "SecRuleEngine On\nSecRule ARGS \"@rx ^[a-z]{4}$\" \"id:1,phase:2,pass,log\"\n\
             SecAction \"id:2,phase:2,pass,nolog,skipAfter:END\"\n\
             SecRule ARGS \"@rx ^[a-z]{6}$\" \"id:3,phase:2,pass,log\"\nSecMarker END\n",
            "asked.conf",
        )
        .unwrap();
        let pure = |id: u32| rs.pure.of_rule[rs.rules.iter().position(|r| r.id == id).unwrap()];
        let (p1, p3) = (pure(1), pure(3));
        assert!(p1 != crate::compile::NOT_PURE && p3 != crate::compile::NOT_PURE);
        let bit = |row: &[u64], p: u32| row[(p / 64) as usize] >> (p % 64) & 1 == 1;
        // Neither rule has a byte or string a value must contain: the memo rules out neither for any value.
        // A thread of its own: its memo starts empty.
        std::thread::scope(|s| {
            s.spawn(|| {
                let run = |uri: &[u8]| {
                    let head = RequestHead {
                        method: "GET",
                        uri,
                        protocol: "HTTP/1.1",
                        headers: vec![(&b"Host"[..], &b"h"[..])],
                    };
                    let mut tx = rs.transaction("t", IpAddr::from([192, 0, 2, 1]));
                    assert!(tx.process_request_headers(&head).is_none());
                    assert!(tx.process_request_body(b"").is_none());
                    let ids: Vec<u32> = tx.matches().iter().map(|m| m.id).collect();
                    (ids, tx.pure_vals.len())
                };
                let asked = || memo::with(rs.id, rs.pure.count(), |m| m.asked().to_vec());
                assert_eq!(run(b"/a?q=hello").0, [2]);
                assert!(bit(&asked(), p1) && !bit(&asked(), p3));
                // Asked before this one: "hello" and "evil" are evaluated through the memo and remembered.
                assert_eq!(run(b"/a?q=hello&x=evil").0, [1, 2]);
                // Only "evil" is listed: "hello" is known to match no asked rule (3 was never asked).
                assert_eq!(run(b"/a?q=hello&x=evil"), (vec![1, 2], 1));
                assert!(!bit(&asked(), p3));
            });
        });
    }

    /// MATCHED_VAR and MATCHED_VAR_NAME after a match the snapshot replays as a jump are what the rule would have
    /// left there, for the next rule that reads them, with the snapshot on as off.
    #[test]
    fn a_snapshot_jump_leaves_matched_var_for_the_next_reader() {
        let src = "SecRuleEngine On\n\
            SecAction \"id:1,phase:1,pass,nolog,setvar:tx.level=1\"\n\
            SecRule TX:level \"@lt 2\" \"id:2,phase:2,pass,nolog,skipAfter:END\"\n\
            SecRule ARGS \"@rx evil\" \"id:3,phase:2,pass,log\"\n\
            SecMarker END\n\
            SecAction \"id:4,phase:2,pass,nolog,setvar:'tx.seen=%{MATCHED_VAR_NAME}=%{MATCHED_VAR}'\"\n";
        let on = RuleSet::parse_str(src, "j.conf").unwrap();
        let mut off = RuleSet::parse_str(src, "j.conf").unwrap();
        off.set_init_snapshot(false);
        off.set_verdict_memo(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let run = |rs: &RuleSet| {
                    let head = RequestHead { method: "GET", uri: b"/?q=evil", protocol: "HTTP/1.1", headers: vec![] };
                    let mut tx = rs.transaction("t", IpAddr::from([192, 0, 2, 1]));
                    assert!(tx.process_request_headers(&head).is_none());
                    assert!(tx.process_request_body(b"").is_none());
                    let ids: Vec<u32> = tx.matches().iter().map(|m| m.id).collect();
                    (ids, tx.var("tx.seen").unwrap_or_default(), tx.matched_var())
                };
                let expected = (vec![1, 2, 4], "TX:level=1".to_owned(), ("1".to_owned(), "TX:level".to_owned()));
                for _ in 0..3 {
                    assert_eq!(run(&off), expected);
                    assert_eq!(run(&on), expected);
                }
            });
        });
    }

    /// The walk's bit row: markers and pure starters known to match none of their values are passed over, a pure
    /// starter that may match and a rule over TX are read.
    #[test]
    fn the_walk_passes_over_markers_and_pure_rules_that_cannot_match() {
        let rs = RuleSet::parse_str(
            "SecRuleEngine On\nSecRule ARGS \"@rx ^evil\" \"id:1,phase:2,pass,log\"\nSecMarker M\n\
             SecRule TX:x \"@eq 1\" \"id:2,phase:2,pass,log\"\n\
             SecRule REQUEST_HEADERS:Host \"@rx ^bad\" \"id:3,phase:2,pass,log\"\n",
            "w.conf",
        )
        .unwrap();
        let list = &rs.phases[1];
        let at = |f: &dyn Fn(&Rule) -> bool| list.iter().position(|&ri| f(&rs.rules[ri])).unwrap();
        let (one, marker) = (at(&|r| r.id == 1), at(&|r| r.marker.is_some()));
        let (two, three) = (at(&|r| r.id == 2), at(&|r| r.id == 3));
        std::thread::scope(|s| {
            s.spawn(|| {
                // (matches, passable positions one, marker, two, three) after phase 2.
                let run = |uri: &[u8]| {
                    let headers = vec![(&b"Host"[..], &b"h"[..])];
                    let head = RequestHead { method: "GET", uri, protocol: "HTTP/1.1", headers };
                    let mut tx = rs.transaction("t", IpAddr::from([192, 0, 2, 1]));
                    assert!(tx.process_request_headers(&head).is_none());
                    assert!(tx.process_request_body(b"").is_none());
                    let ids: Vec<u32> = tx.matches().iter().map(|m| m.id).collect();
                    let bits = [one, marker, two, three].map(|i| init::bit(&tx.walk_pass, i));
                    (ids, bits)
                };
                // The first request asks the memo about the rules; then it answers.
                run(b"/?q=evil");
                assert_eq!(run(b"/?q=evil"), (vec![1], [false, true, false, true]));
                assert_eq!(run(b"/?q=hello"), (vec![], [true, true, false, true]));
            });
        });
    }

    /// A value at the id where the thread's last transaction had a memo entry with the same bytes takes that entry
    /// without a lookup by content; a value whose bytes differ there is looked up, and decided as usual.
    #[test]
    fn values_at_the_last_transactions_ids_are_found_without_a_lookup() {
        let rs =
            RuleSet::parse_str("SecRuleEngine On\nSecRule ARGS \"@rx ^evil\" \"id:1,phase:2,pass,log\"\n", "l.conf")
                .unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // (matches, lookups by content) of one request.
                let run = |uri: &[u8]| {
                    let head = RequestHead { method: "GET", uri, protocol: "HTTP/1.1", headers: vec![] };
                    let before = memo::lookups();
                    let mut tx = rs.transaction("t", IpAddr::from([192, 0, 2, 1]));
                    assert!(tx.process_request_headers(&head).is_none());
                    assert!(tx.process_request_body(b"").is_none());
                    let ids: Vec<u32> = tx.matches().iter().map(|m| m.id).collect();
                    drop(tx);
                    (ids, memo::lookups() - before)
                };
                // No value is looked at before the thread's transactions ask about the rule (the first one does).
                assert_eq!(run(b"/?q=warm"), (vec![], 0));
                assert_eq!(run(b"/?q=hello&x=world"), (vec![], 2));
                assert_eq!(run(b"/?q=hello&x=world"), (vec![], 0));
                assert_eq!(run(b"/?q=evil&x=world"), (vec![1], 1));
                assert_eq!(run(b"/?q=hello&x=world"), (vec![], 1));
                assert_eq!(run(b"/?q=hello&x=evil"), (vec![1], 1));
                assert_eq!(run(b"/?q=hello&x=evil"), (vec![1], 0));
            });
        });
    }

    /// `&` counts are pure values (decided through the memo, warm or cold) unless the rule excludes members of the
    /// counted variable or a `ctl` of the set removes targets; a removal made for the transaction before the phase
    /// still counts (the memo is not asked: the count without it would say "no match" here).
    #[test]
    fn counts_are_pure_values_unless_members_can_be_excluded() {
        let src = "SecRuleEngine On\n\
            SecRule &REQUEST_HEADERS:Host \"@eq 0\" \"id:1,phase:1,deny,status:400\"\n\
            SecRule &ARGS \"@lt 2\" \"id:2,phase:1,pass,log\"\n\
            SecRule &REQUEST_HEADERS|!REQUEST_HEADERS:Cookie \"@gt 5\" \"id:3,phase:1,pass,log\"\n";
        let with_ctl = format!("{src}SecAction \"id:4,phase:2,pass,nolog,ctl:ruleRemoveTargetById=2;ARGS:b\"\n");
        let (rs, ctl) = (RuleSet::parse_str(src, "n.conf").unwrap(), RuleSet::parse_str(&with_ctl, "c.conf").unwrap());
        let pure = |rs: &RuleSet, id: u32| rs.pure.of_rule[rs.rules.iter().position(|r| r.id == id).unwrap()];
        assert_ne!(pure(&rs, 1), crate::compile::NOT_PURE);
        assert_ne!(pure(&rs, 2), crate::compile::NOT_PURE);
        assert_eq!(pure(&rs, 3), crate::compile::NOT_PURE);
        assert_ne!(pure(&ctl, 1), crate::compile::NOT_PURE);
        assert_eq!(pure(&ctl, 2), crate::compile::NOT_PURE);
        std::thread::scope(|s| {
            s.spawn(|| {
                let run = |host: bool, remove: bool| {
                    let mut headers = vec![(&b"Accept"[..], &b"*/*"[..])];
                    if host {
                        headers.push((&b"Host"[..], &b"h"[..]));
                    }
                    let head = RequestHead { method: "GET", uri: b"/?a=1&b=2", protocol: "HTTP/1.1", headers };
                    let mut tx = rs.transaction("t", IpAddr::from([192, 0, 2, 1]));
                    if remove {
                        tx.remove_rule_target(2, "ARGS:b");
                    }
                    let status = tx.process_request_headers(&head).map(|i| i.status);
                    (status, tx.matches().iter().map(|m| m.id).collect::<Vec<u32>>())
                };
                for _ in 0..3 {
                    assert_eq!(run(true, false), (None, vec![]));
                    assert_eq!(run(false, false), (Some(400), vec![1]));
                    assert_eq!(run(true, true), (None, vec![2]));
                }
            });
        });
    }

    /// A chain whose pure link can match none of its values fails without its starter being evaluated, when no rule
    /// reads what the starter's match would leave in MATCHED_VAR; with a rule that does (a SecAction here), the
    /// starter is evaluated as written. Either way the chain's verdict and what the rules read are as without the
    /// memo.
    #[test]
    fn chains_fail_on_their_pure_links_first_unless_matched_var_is_read() {
        const CHAIN: &str = "SecRuleEngine On\n\
            SecRule ARGS:a \"@rx ^x\" \"id:1,phase:1,pass,log,chain\"\n\
            SecRule REQUEST_HEADERS:Content-Length \"@rx .\" \"setvar:tx.hit=1\"\n";
        let reader = format!("{CHAIN}SecAction \"id:2,phase:1,pass,nolog,setvar:'tx.seen=%{{MATCHED_VAR}}'\"\n");
        let (quiet, read) =
            (RuleSet::parse_str(CHAIN, "c.conf").unwrap(), RuleSet::parse_str(&reader, "r.conf").unwrap());
        assert!(quiet.links_first && !read.links_first);
        let link = quiet.rules.iter().find(|r| r.id == 1).and_then(|r| r.chain.as_deref()).unwrap();
        assert_ne!(link.link_pure, crate::compile::NOT_PURE);
        std::thread::scope(|s| {
            s.spawn(|| {
                // (matches, MATCHED_VAR, tx.seen) for a=x with and without Content-Length.
                let run = |rs: &RuleSet, length: Option<&'static str>| {
                    let mut headers = vec![(&b"Host"[..], &b"h"[..])];
                    headers.extend(length.map(|l| (&b"Content-Length"[..], l.as_bytes())));
                    let head = RequestHead { method: "GET", uri: b"/?a=xyz", protocol: "HTTP/1.1", headers };
                    let mut tx = rs.transaction("t", IpAddr::from([192, 0, 2, 1]));
                    assert!(tx.process_request_headers(&head).is_none());
                    let ids: Vec<u32> = tx.matches().iter().map(|m| m.id).collect();
                    (ids, tx.matched_var().1, tx.var("tx.seen").unwrap_or_default())
                };
                // The first request asks the memo about the link; from the second on the memo answers for it.
                for _ in 0..3 {
                    assert_eq!(run(&read, None), (vec![2], "ARGS:a".to_owned(), "xyz".to_owned()));
                    assert_eq!(
                        run(&read, Some("1")),
                        (vec![1, 2], "REQUEST_HEADERS:Content-Length".to_owned(), "1".to_owned())
                    );
                    assert_eq!(run(&quiet, Some("1")).0, [1]);
                }
                // The starter was not evaluated: it would have left ARGS:a in MATCHED_VAR_NAME.
                assert_eq!(run(&quiet, None), (vec![], String::new(), String::new()));
            });
        });
    }

    #[test]
    fn integers_format_and_parse_without_allocation() {
        let mut buf = [0u8; 20];
        assert_eq!(format_i64(0, &mut buf), b"0");
        assert_eq!(format_i64(-42, &mut buf), b"-42");
        assert_eq!(format_i64(i64::MAX, &mut buf), b"9223372036854775807");
        assert_eq!(format_i64(i64::MIN, &mut buf), b"-9223372036854775808");
        assert_eq!(parse_plain_i64(b"-17"), Some(-17));
        assert_eq!(parse_plain_i64(b" 5"), None);
        assert_eq!(parse_i64(b" 5x"), 5);
        assert_eq!(parse_i64(b"9223372036854775807"), i64::MAX);
    }

    #[test]
    fn name_hashes_fold_ascii_case_only() {
        let all: Vec<u8> = (0..=255u8).collect();
        for b in 0..=255u8 {
            let folded = b.to_ascii_lowercase();
            for at in 0..20 {
                let mut x = all[..20].to_vec();
                x[at] = b;
                let mut y = x.clone();
                y[at] = folded;
                assert_eq!(name_hash(&x), name_hash(&y), "byte {b} at {at}");
                if folded != b || b.is_ascii_lowercase() {
                    continue;
                }
                // Bytes with no case stay distinct from their 0x20 neighbour.
                y[at] = b ^ 0x20;
                assert_ne!(name_hash(&x), name_hash(&y), "byte {b} at {at}");
            }
        }
        assert_ne!(name_hash(b"ab"), name_hash(b"ab\0"));
        assert_ne!(name_hash(b""), name_hash(b"\0"));
    }

    #[test]
    fn colliding_names_are_still_found() {
        let mut st = Store::default();
        st.set(b"a", b"1".to_vec());
        // As if "b" had "a"'s hash: its hash leads to "a", and "b" was appended unindexed.
        st.index.insert(name_hash(b"b"), 0);
        st.collided = true;
        st.entries.push((b"b".to_vec(), b"2".to_vec()));
        assert_eq!(st.get(b"B"), Some(&b"2"[..]));
        assert_eq!(st.get(b"A"), Some(&b"1"[..]));
        st.remove(b"a");
        assert_eq!((st.get(b"b"), st.get(b"a")), (Some(&b"2"[..]), None));
    }

    #[test]
    fn a_copy_keeps_the_dropped_variables_buffers_for_new_ones() {
        let mut base = Store::default();
        base.set(b"kept", b"1".to_vec());
        let mut st = Store::default();
        st.copy_from(&base);
        st.set_from(b"added_by_the_last_request", name_hash(b"added_by_the_last_request"), b"some value");
        let name_buf = st.entries.get(1).map(|(n, _)| n.as_ptr());
        // The next request's copy drops the variable; its buffers come back for the next new one.
        st.copy_from(&base);
        assert_eq!((st.entries.len(), st.spare.len()), (1, 1));
        st.update_i64(b"new", name_hash(b"new"), |n| n + 7);
        assert_eq!(st.entries.get(1).map(|(n, _)| n.as_ptr()), name_buf);
        assert_eq!((st.get(b"NEW"), st.get(b"kept"), st.spare.len()), (Some(&b"7"[..]), Some(&b"1"[..]), 0));
        assert_eq!(st.get(b"added_by_the_last_request"), None);
    }

    #[test]
    fn restoring_undoes_the_changes_since_the_copy_from_the_same_snapshot() {
        let mut snap = Store::default();
        for (n, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
            snap.set(n.as_bytes(), v.as_bytes().to_vec());
        }
        let entries = |st: &Store| st.entries.clone();
        let mut st = Store::default();
        st.restore(&snap, 7);
        assert_eq!(entries(&st), entries(&snap));
        // A request's changes: a value rewritten (twice), a number updated, two variables added.
        st.set_from(b"B", name_hash(b"b"), b"changed");
        st.update_i64(b"c", name_hash(b"c"), |n| n + 40);
        st.set_from(b"b", name_hash(b"b"), b"again");
        st.set_from(b"new1", name_hash(b"new1"), b"x");
        st.update_i64(b"new2", name_hash(b"new2"), |n| n + 1);
        st.restore(&snap, 7);
        assert_eq!(entries(&st), entries(&snap));
        assert_eq!((st.get(b"new1"), st.get(b"NEW2"), st.get(b"c")), (None, None, Some(&b"3"[..])));
        assert_eq!((st.spare.len(), st.written.len()), (2, 0));
        // Undone, not copied: a variable nothing wrote is not read from the snapshot again (a snapshot id names one
        // content, so this store never meets another; here one stands in to show which variables are copied).
        let mut changed = Store::default();
        changed.copy_from(&snap);
        changed.set(b"a", b"other".to_vec());
        st.set_from(b"b", name_hash(b"b"), b"written");
        st.restore(&changed, 7);
        assert_eq!((st.get(b"a"), st.get(b"b")), (Some(&b"1"[..]), Some(&b"2"[..])));
        st.restore(&snap, 7);
        st.set_from(b"again", name_hash(b"again"), b"y");
        assert_eq!(st.get(b"again"), Some(&b"y"[..]));
        // A deletion, or another snapshot: copied whole.
        st.remove(b"a");
        st.restore(&snap, 7);
        assert_eq!(entries(&st), entries(&snap));
        let mut other = Store::default();
        other.set(b"z", b"9".to_vec());
        st.restore(&other, 8);
        assert_eq!((entries(&st), st.get(b"a")), (entries(&other), None));
        st.restore(&snap, 7);
        assert_eq!((entries(&st), st.get(b"z"), st.get(b"a")), (entries(&snap), None, Some(&b"1"[..])));
    }

    /// Slots of variables a restore dropped stay in the index, stale: another variable at their position, or the
    /// same name added again, finds what it should, and no more than `STALE_SLOTS` gather.
    #[test]
    fn stale_index_slots_find_nothing_and_are_bounded() {
        let mut snap = Store::default();
        snap.set(b"a", b"1".to_vec());
        let mut st = Store::default();
        st.restore(&snap, 7);
        st.set_from(b"x", name_hash(b"x"), b"1");
        st.restore(&snap, 7);
        assert_eq!(st.get(b"x"), None);
        // "y" now at x's old position: x's slot points at it.
        st.set_from(b"y", name_hash(b"y"), b"2");
        assert_eq!((st.get(b"x"), st.get(b"Y")), (None, Some(&b"2"[..])));
        st.set_from(b"x", name_hash(b"x"), b"3");
        assert_eq!((st.get(b"x"), st.get(b"y"), st.entries.len()), (Some(&b"3"[..]), Some(&b"2"[..]), 3));
        assert!(!st.collided);
        for i in 0..200 {
            st.restore(&snap, 7);
            let n = format!("v{i}");
            st.set_from(n.as_bytes(), name_hash(n.as_bytes()), b"z");
            assert_eq!(st.get(n.as_bytes()), Some(&b"z"[..]));
            assert!(st.index.len() <= 1 + STALE_SLOTS + 1, "{}", st.index.len());
        }
        st.restore(&snap, 7);
        assert_eq!((st.get(b"v199"), st.get(b"a"), st.index.len() > 1), (None, Some(&b"1"[..]), true));
    }

    #[test]
    fn store_overwrites_in_place_case_insensitively() {
        let mut st = Store::default();
        st.set_from(b"Anomaly_Score", name_hash(b"anomaly_SCORE"), b"5");
        st.update_i64(b"anomaly_score", name_hash(b"anomaly_score"), |n| n + 5);
        st.set_from(b"other", name_hash(b"other"), b"x");
        st.update_i64(b"new", name_hash(b"new"), |n| n - 3);
        assert_eq!(st.get(b"ANOMALY_SCORE"), Some(&b"10"[..]));
        assert_eq!(st.get(b"new"), Some(&b"-3"[..]));
        assert_eq!(st.entries.len(), 3);
        assert_eq!(st.entries[0].0, b"Anomaly_Score");
        st.remove(b"ANOMALY_score");
        assert_eq!(st.get(b"other"), Some(&b"x"[..]));
        assert_eq!(st.get(b"anomaly_score"), None);
    }

    #[test]
    fn transformation_rows_are_capped() {
        let mut c = TCache::new(3, HashMap::default(), Vec::new(), (Vec::new(), Vec::new(), Vec::new()));
        assert_eq!(c.row(5), Some(0));
        assert_eq!(c.row(1), Some(3));
        assert_eq!(c.row(5), Some(0));
        for id in 10..(10 + MAX_ROWS as u32) {
            c.row(id);
        }
        assert_eq!(c.cells.len(), 3 * MAX_ROWS);
        assert_eq!(c.row(99_999), None);
    }

    /// A request: method, headers, body.
    type Req<'a> = (&'a str, &'a [(&'a [u8], &'a [u8])], &'a [u8]);

    /// Phase 1's start replayed from a snapshot (`init`) must record, write and decide exactly what evaluating it
    /// rule by rule does: with and without variables set before phase 1 (one makes rule 13 change the engine mode
    /// and remove rule 8), for requests that a commuting rule sees differently, when a removal selects a fixed
    /// rule, and when `set_var` changes a frozen variable after phase 1 (rule 14 must then match).
    #[test]
    fn init_snapshot_decides_as_rule_by_rule() {
        let src = r#"
SecRuleEngine On
SecRequestBodyAccess On
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:1,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecAction "id:2,phase:1,pass,nolog,setvar:tx.score=0,setvar:tx.allowed=GET HEAD POST"
SecRule &TX:limit "@eq 0" "id:3,phase:1,pass,nolog,setvar:tx.limit=5"
SecRule TX:limit "@gt 3" "id:4,phase:1,pass,log,severity:4,msg:'limit %{tx.limit}',logdata:'%{rule.id}',setvar:tx.score=+1"
SecRule TX:nope "@eq 1" "id:5,phase:1,pass,setvar:tx.ua=%{REQUEST_HEADERS.User-Agent}"
SecRule TX:limit "@gt 150" "id:13,phase:1,pass,nolog,ctl:ruleEngine=DetectionOnly,ctl:ruleRemoveById=8"
SecRule TX:limit "@lt 100" "id:6,phase:1,pass,nolog,severity:5,skipAfter:END-X"
SecRule UNIQUE_ID "@rx ." "id:7,phase:1,pass,nolog,setvar:tx.skipped=1"
SecMarker END-X
SecRule REQUEST_HEADERS:Content-Type "@rx json" "id:11,phase:1,pass,log,severity:2,msg:'json'"
SecRule REQUEST_METHOD "!@within %{tx.allowed}" "id:8,phase:1,deny,status:405,msg:'method %{MATCHED_VAR}'"
SecRule MATCHED_VAR "@rx ." "id:9,phase:1,pass,nolog,setvar:tx.mv=%{MATCHED_VAR},setvar:tx.hs=%{HIGHEST_SEVERITY}"
SecRule ARGS:a "@rx ." "id:10,phase:2,pass,setvar:tx.final=%{tx.score}-%{tx.mv}"
SecRule TX:limit "@lt 3" "id:14,phase:2,pass,log,msg:'low %{tx.limit}'"
SecRule TX:score "@lt 3" "id:15,phase:2,pass,log,msg:'score',logdata:'%{MATCHED_VAR_NAME}=%{MATCHED_VAR}'"
SecRule TX:limit "@ge 0" "id:16,phase:2,pass,log,msg:'m %{MATCHED_VAR}',setvar:tx.seen=%{MATCHED_VAR_NAME}=%{MATCHED_VAR},chain"
    SecRule ARGS:a "@rx 1" "setvar:tx.chained=%{MATCHED_VAR}-%{MATCHED_VARS_NAMES}"
"#;
        let mut rs = RuleSet::parse_str(src, "init.conf").unwrap();
        let requests: [Req<'_>; 3] = [
            ("GET", &[(b"User-Agent", b"x")], b""),
            ("POST", &[(b"Content-Type", b"application/json")], br#"{"a":"1"}"#),
            ("DELETE", &[], b""),
        ];
        let presets: [&[(&str, &str)]; 3] = [&[], &[("tx.limit", "2")], &[("tx.limit", "200")]];
        let run = |rs: &RuleSet, req: &Req<'_>, preset: &[(&str, &str)], remove: bool, late: bool| {
            let mut tx = rs.transaction("abc", IpAddr::from([192, 0, 2, 1]));
            for (n, v) in preset {
                tx.set_var(n, v);
            }
            if remove {
                tx.remove_rule_ids(&[4..=4]);
            }
            let head = RequestHead { method: req.0, uri: b"/x?a=1", protocol: "HTTP/1.1", headers: req.1.to_vec() };
            let iv = tx.process_request_headers(&head).or_else(|| {
                if late {
                    tx.set_var("tx.limit", "1");
                }
                tx.process_request_body(req.2)
            });
            let vars: Vec<_> =
                ["score", "limit", "ua", "skipped", "mv", "hs", "final", "seen", "chained"].map(|v| tx.var(v)).into();
            (tx.matches().to_vec(), vars, iv)
        };
        for req in &requests {
            for preset in presets {
                for (remove, late) in [(false, false), (true, false), (false, true)] {
                    rs.set_init_snapshot(false);
                    let expected = run(&rs, req, preset, remove, late);
                    rs.set_init_snapshot(true);
                    assert_eq!(run(&rs, req, preset, remove, late), expected, "{} {preset:?} {remove} {late}", req.0);
                }
            }
        }
        // Not vacuous: the snapshot covers rules 2-6 and 13 and evaluates 1 and 11 at their places.
        let tx = rs.transaction("abc", IpAddr::from([192, 0, 2, 1]));
        let snap = tx.init_snapshot().expect("a snapshot");
        let ids = |v: &[usize]| v.iter().map(|&i| rs.rules[i].id).collect::<Vec<_>>();
        assert_eq!(ids(&snap.fixed), [2, 3, 4, 5, 13, 6]);
        let evals: Vec<usize> =
            snap.steps.iter().filter_map(|s| if let init::Step::Eval(i) = s { Some(*i) } else { None }).collect();
        assert_eq!(ids(&evals), [1, 11]);
        assert_eq!(snap.steps.iter().filter(|s| matches!(s, init::Step::Record { .. })).count(), 4);
        // Rule 14 reads TX:limit, which only fixed rules write, and does not match its 5; rules 15 and 16 read
        // TX:score and TX:limit, also written by fixed rules only, and match (their matches are replayed, 16's
        // effects and chain run); rule 10 reads ARGS.
        let index = |id: u32| rs.rules.iter().position(|r| r.id == id).unwrap();
        assert_eq!(snap.verdict(index(14)), init::NO_MATCH);
        assert_eq!(snap.verdict(index(10)), init::UNKNOWN);
        let found = |id: u32| snap.matches.get(snap.verdict(index(id)) as usize).cloned();
        assert_eq!(found(15), Some(vec![(b"TX:score".to_vec(), b"1".to_vec())]));
        assert_eq!(found(16), Some(vec![(b"TX:limit".to_vec(), b"5".to_vec())]));
    }

    /// Rules reading only named TX variables are decided on the snapshot's TX while the variables they read are
    /// unwritten (`init::Pristine`), exactly as evaluating them: a request whose rules write other TX variables
    /// (TX:0, tx.seen) keeps them; one that writes tx.score evaluates rules 20 and 30 again (and blocks).
    #[test]
    fn pristine_verdicts_hold_while_their_variables_are_unwritten() {
        let src = r#"
SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.score=0,setvar:tx.pl=1,setvar:tx.threshold=5,setvar:tx.total=0,setvar:tx.n=0"
SecRule ARGS "@rx attack" "id:10,phase:1,pass,nolog,setvar:tx.score=+5"
SecRule ARGS "@rx (.)" "id:11,phase:1,pass,nolog,capture,setvar:tx.seen=%{tx.1}"
SecRule ARGS:h "@rx ^(.+)$" "id:12,phase:1,pass,nolog,capture,setvar:tx.hdr_x=%{tx.1}"
SecRule TX:PL "@ge 1" "id:20,phase:2,pass,nolog,setvar:tx.total=+%{tx.score}"
SecAction "id:21,phase:2,pass,log,msg:'pl %{tx.pl}',setvar:tx.pl=1"
SecAction "id:22,phase:2,pass,nolog,setvar:tx.fresh=0"
SecAction "id:23,phase:2,pass,nolog,setvar:tx.n=+1"
SecAction "id:24,phase:2,pass,nolog,setvar:tx.m=+1"
SecRule TX:TOTAL "@ge %{tx.threshold}" "id:30,phase:2,deny,msg:'total %{tx.total}'"
SecRule TX:TOTAL "@eq 0" "id:31,phase:2,pass,log,msg:'clean %{tx.total}'"
SecRule TX:/^hdr_/ "@rx evil" "id:32,phase:2,pass,log,msg:'hdr'"
"#;
        let mut rs = RuleSet::parse_str(src, "pristine.conf").unwrap();
        let run = |rs: &RuleSet, uri: &str| {
            let mut tx = rs.transaction("abc", IpAddr::from([192, 0, 2, 1]));
            let head = RequestHead { method: "GET", uri: uri.as_bytes(), protocol: "HTTP/1.1", headers: vec![] };
            let iv = tx.process_request_headers(&head).or_else(|| tx.process_request_body(b""));
            (tx.matches().to_vec(), tx.tx_vars(), iv.map(|i| i.status), tx.pristine_taken.get())
        };
        for (uri, taken) in [("/?a=hello", 7), ("/?a=attack", 3), ("/", 7), ("/?h=evil", 6), ("/?h=good", 6)] {
            rs.set_init_snapshot(false);
            let expected = run(&rs, uri);
            assert_eq!(expected.3, 0);
            rs.set_init_snapshot(true);
            for _ in 0..2 {
                let got = run(&rs, uri);
                assert_eq!((&got.0, &got.1, got.2), (&expected.0, &expected.1, expected.2), "{uri}");
                // 20-23, 30-32 from the snapshot when tx.score is unwritten; 21-23 after an attack (30 denies before
                // 32); not 32 once rule 12 has added a variable its key selects.
                assert_eq!(got.3, taken, "{uri}");
            }
        }
        assert_eq!(run(&rs, "/?a=attack").2, Some(403));
        let ids: Vec<u32> = run(&rs, "/?a=hello").0.iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 11, 20, 21, 22, 23, 24, 31]);
        let ids: Vec<u32> = run(&rs, "/?h=evil").0.iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 11, 12, 20, 21, 22, 23, 24, 31, 32]);
        let tx = rs.transaction("abc", IpAddr::from([192, 0, 2, 1]));
        let snap = tx.init_snapshot().expect("a snapshot");
        let index = |id: u32| rs.rules.iter().position(|r| r.id == id).unwrap();
        // 24 updates a variable TX does not have; 10 and 11 read ARGS.
        for id in [10, 11, 24] {
            assert_eq!(snap.pristine(index(id)), None, "{id}");
        }
        assert_eq!(snap.pristine(index(30)).map(|p| p.verdict), Some(init::NO_MATCH));
        assert_eq!(snap.pristine(index(32)).map(|p| (p.verdict, p.added)), Some((init::NO_MATCH, true)));
        let found = |id: u32| snap.pristine(index(id)).and_then(|p| snap.matches.get(p.verdict as usize)).cloned();
        assert_eq!(found(20), Some(vec![(b"TX:pl".to_vec(), b"1".to_vec())]));
        assert_eq!(found(21), Some(vec![]));
        assert_eq!(found(31), Some(vec![(b"TX:total".to_vec(), b"0".to_vec())]));
        // 22 creates a variable and 23 changes one: their writes are made; 20 and 21 write nothing new.
        let writes = |id: u32| snap.pristine(index(id)).map(|p| p.writes.clone());
        assert_eq!(writes(22), Some(vec![(b"fresh".to_vec(), name_hash(b"fresh"), b"0".to_vec())]));
        assert_eq!(writes(23), Some(vec![(b"n".to_vec(), name_hash(b"n"), b"1".to_vec())]));
        assert_eq!((writes(20), writes(21)), (Some(vec![]), Some(vec![])));
    }

    /// `Snapshot::jump` finds each jump by its position through the ranks of the jumpable bits, and nothing
    /// elsewhere (CRS at paranoia level 1: its level checks in every phase, across words of the bits).
    #[test]
    fn snapshot_jumps_are_found_by_position() {
        let crs = "Include /work/shared/data/crs/crs-setup.conf.example\nInclude /work/shared/data/crs/rules/*.conf\n";
        let rs = RuleSet::parse_str(&format!("SecRuleEngine On\n{crs}"), "crs.conf").unwrap();
        let tx = rs.transaction("j", IpAddr::from([192, 0, 2, 1]));
        let snap = tx.init_snapshot().expect("a snapshot");
        let mut found = 0;
        for phase in 1..=5u8 {
            let jumps = &snap.jumps[usize::from(phase - 1)];
            for i in 0..rs.phases[usize::from(phase - 1)].len() + 70 {
                let expected = jumps.iter().find(|j| j.at as usize == i);
                assert_eq!(snap.jump(phase, i), expected, "phase {phase} position {i}");
                found += usize::from(expected.is_some());
            }
        }
        assert!(found > 40, "{found} jumps");
        // Their matched names are one text, copied into a transaction's records once.
        let names: std::collections::HashSet<(u32, u32)> = snap.jumps.iter().flatten().map(|j| j.first_name).collect();
        assert_eq!(names.len(), 1);
        let name = snap.jump_text(*names.iter().next().unwrap()).to_vec();
        let mut tx = rs.transaction("j", IpAddr::from([192, 0, 2, 1]));
        let headers: Vec<(&[u8], &[u8])> =
            vec![(b"Host", b"shop.example"), (b"User-Agent", b"Mozilla/5.0"), (b"Accept", b"text/html")];
        let head = RequestHead { method: "GET", uri: b"/a?b=c", protocol: "HTTP/1.1", headers };
        assert!(tx.process_request_headers(&head).is_none() && tx.process_request_body(b"").is_none());
        let jump_ids: std::collections::HashSet<u32> = (0..5)
            .flat_map(|p| snap.jumps[p].iter().map(move |j| (p, j.at as usize)))
            .map(|(p, at)| rs.rules[rs.phases[p][at]].id)
            .collect();
        let recorded: Vec<&RuleMatch> = tx.matches().iter().filter(|m| jump_ids.contains(&m.id)).collect();
        assert!(recorded.len() > 20, "{}", recorded.len());
        assert!(recorded.iter().all(|m| m.var_name.as_bytes() == name.as_slice()));
        let ranges: std::collections::HashSet<Range<usize>> =
            tx.records.iter().filter(|r| jump_ids.contains(&r.rule.id)).map(|r| r.var_name.clone()).collect();
        assert_eq!(ranges.len(), 1);
    }

    /// A rule decided by one scalar against an argument the snapshot froze is not evaluated again for a value this
    /// thread's transactions found it not to match under the same snapshot; under another snapshot (another
    /// starting TX, another argument) it is.
    #[test]
    fn scalar_rules_on_frozen_arguments_remember_their_misses() {
        let src = r#"
SecRuleEngine On
SecRule &TX:allowed "@eq 0" "id:1,phase:1,pass,nolog,setvar:'tx.allowed=GET POST'"
SecRule REQUEST_METHOD "!@within %{tx.allowed}" "id:2,phase:1,deny,status:405"
SecRule ARGS "@rx x" "id:3,phase:1,pass,log"
"#;
        let rs = RuleSet::parse_str(src, "frozen.conf").unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let run = |method: &str, allowed: Option<&str>| {
                    let mut tx = rs.transaction("f", IpAddr::from([192, 0, 2, 1]));
                    if let Some(a) = allowed {
                        tx.set_var("tx.allowed", a);
                    }
                    let head = RequestHead { method, uri: b"/?a=x", protocol: "HTTP/1.1", headers: vec![] };
                    let iv = tx.process_request_headers(&head).map(|i| i.status);
                    let ids: Vec<u32> = tx.matches().iter().map(|m| m.id).collect();
                    (iv, ids, tx.frozen_taken)
                };
                let snap = rs.transaction("f", IpAddr::from([192, 0, 2, 1])).init_snapshot().unwrap();
                let index = |id: u32| rs.rules.iter().position(|r| r.id == id).unwrap();
                assert!(snap.scalar_frozen(index(2)) && !snap.scalar_frozen(index(3)));
                assert_eq!(run("GET", None), (None, vec![1, 3], 0));
                assert_eq!(run("GET", None), (None, vec![1, 3], 1));
                assert_eq!(run("DELETE", None), (Some(405), vec![1, 2], 0));
                assert_eq!(run("DELETE", None), (Some(405), vec![1, 2], 0));
                assert_eq!(run("POST", None), (None, vec![1, 3], 0));
                assert_eq!(run("POST", None), (None, vec![1, 3], 1));
                // Another starting TX, another snapshot: POST is evaluated against "GET" and refused.
                assert_eq!(run("POST", Some("GET")), (Some(405), vec![2], 0));
                assert_eq!(run("GET", Some("GET")), (None, vec![3], 0));
                assert_eq!(run("GET", Some("GET")), (None, vec![3], 1));
                assert_eq!(run("POST", None), (None, vec![1, 3], 1));
            });
        });
    }

    /// The gateway keeps a transaction (with the snapshot it replayed) across await points and threads.
    #[test]
    fn transactions_are_send() {
        fn send<T: Send>() {}
        send::<Transaction<'static>>();
        send::<crate::OwnedTransaction>();
    }

    /// A phase's row has a rule's bit only from the targets its group reads. Once a request evaluated both rules
    /// on their values, the next like it finds neither in the row: a value's memo row stays "not evaluated" for the
    /// rule that never reads it, which must not count as "may match" there.
    #[test]
    fn the_phase_row_keeps_each_rule_to_the_targets_it_reads() {
        let src = r#"
SecRuleEngine On
SecRule ARGS "@rx attack" "id:1,phase:2,pass,log"
SecRule REQUEST_HEADERS:User-Agent "@rx evil" "id:2,phase:2,pass,log"
"#;
        let rs = RuleSet::parse_str(src, "union.conf").unwrap();
        assert_eq!(rs.pure.count(), 2);
        let run = |ua: &'static [u8]| {
            let mut tx = rs.transaction("u", IpAddr::from([192, 0, 2, 1]));
            let head = RequestHead {
                method: "GET",
                uri: b"/x?a=hello",
                protocol: "HTTP/1.1",
                headers: vec![(b"User-Agent", ua)],
            };
            assert!(tx.process_request_headers(&head).is_none());
            assert!(tx.process_request_body(b"").is_none());
            (tx.phase_maybe.clone(), tx.matches().iter().map(|m| m.id).collect::<Vec<_>>())
        };
        assert_eq!(run(b"curl").1, Vec::<u32>::new());
        assert_eq!(run(b"curl"), (vec![0], vec![]));
        // A value that matches keeps its rule's bit, and the rule is evaluated.
        assert_eq!(run(b"evil bot"), (vec![0b10], vec![2]));
    }

    #[test]
    fn small_numbers_are_their_decimal_text() {
        for n in 0..150usize {
            match super::small_number(n) {
                Some(b) => assert_eq!(b, n.to_string().as_bytes(), "{n}"),
                None => assert!(n >= 100, "{n}"),
            }
        }
    }
}
