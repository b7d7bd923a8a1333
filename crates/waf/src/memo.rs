//! The verdict memo: per thread and rule set, what each *pure* check (a chain starter whose operator and
//! transformations depend on the value's bytes alone) answered for a value, remembered across transactions, so a
//! value seen before (a browser's `User-Agent`, a cookie name, a path) costs one bit test per rule instead of
//! transformations and a regex.
//!
//! Invariants: a bit is only ever set from a real evaluation of exactly that (rule, bytes) under exactly this rule
//! set (entries are compared by their full bytes, never by hash alone); memory is bounded (entries, value length,
//! rule sets per thread); the memo only shortens evaluation, it never changes a verdict.

use std::cell::RefCell;
use std::hash::BuildHasher as _;

/// No entry: the value is too long to remember or the memo is full (the caller evaluates normally).
pub(crate) const NO_ENTRY: u32 = u32::MAX;

/// Values longer than this are not remembered (bodies, large arguments): they are rarely seen twice.
const MAX_VALUE: usize = 1024;
/// Bytes of remembered values per memo within one phase, so that long hostile values cannot make a memo large:
/// with [`KEEP`] and the bit rows, a memo stays under about 2.5 MiB.
const MAX_BYTES: usize = 2 << 20;
/// Entries kept between transactions; past this the memo starts over at the next phase start.
const KEEP: usize = 4096;
/// Hard bound within one phase (a request with very many distinct values evaluates the rest normally).
const HARD: usize = 2 * KEEP;
/// Rule sets remembered per thread (a reload makes a new one; several routes may use different sets).
const SETS: usize = 4;

/// For pure rules with `Rule::pre_need` (the bytes a value must contain for any transformation of it to contain
/// what the operator needs), which of them each byte value can keep in play: a new value rules out at once every
/// such rule none of its bytes keeps in play, without a check per rule (exactly what `Transaction::check` would
/// answer first for each of them).
///
/// Pure rules with a [`LiteralNeed`] are ruled out the same way by strings: a value with none of the trigger bytes of
/// the rule's transformations is its own transformation up to ASCII case, so when it contains none of the strings
/// every match contains (one Aho-Corasick pass over the value for all such rules), the rule cannot match it.
#[derive(Debug, Default)]
pub(crate) struct ByteRule {
    words: usize,
    /// Words per row in `by_byte`: [`SMALL`] when `words` fits (rows of a size known when compiling, so the per-byte
    /// step is a few vector instructions), else `words`.
    stride: usize,
    /// Per byte value, two rows of `stride` words (`words` used): the pure rules whose `pre_need` contains it, then
    /// the pure rules with a literal need for whose transformations it is a trigger.
    by_byte: Vec<u64>,
    /// The pure rules that have a `pre_need`.
    filtered: Vec<u64>,
    /// The pure rules that have a literal need.
    literal: Vec<u64>,
    /// All the literal needs' strings, lowercase (searched in the lowercased value, overlapping matches).
    strings: Option<aho_corasick::AhoCorasick>,
    /// Per string (pattern id): the pure rules needing it, as `rules_of[start[id]..start[id + 1]]`.
    start: Vec<u32>,
    rules_of: Vec<u32>,
}

/// A new value is searched for the rules' strings when it is at most this many bytes per rule the search may rule
/// out (see `ByteRule::rule_out`).
const SCAN_BYTES_PER_RULE: usize = 16;
/// Strings are searched by their first this many bytes (see `ByteRule::new`).
const MAX_STRING: usize = 8;

/// Row words up to which `ByteRule::by_byte` rows have a fixed size (512 pure rules; the CRS has ~360).
const SMALL: usize = 8;

/// What a pure rule's value must contain, as [`ByteRule`] uses it: the bytes without which the rule's transformations
/// leave a value as it is up to ASCII case (`Transform::case_identity_unless`, all of the chain's), and strings one
/// of which every match of its operator contains (`Operator::filter_literals`, lowercased).
pub(crate) type LiteralNeed = ([u64; 4], Vec<Vec<u8>>);

impl ByteRule {
    /// `pre_need` and literal need per pure rule number.
    pub(crate) fn new(pre_need: &[Option<[u64; 4]>], literal: &[Option<LiteralNeed>]) -> ByteRule {
        let words = row_words(pre_need.len().max(literal.len()));
        let stride = if words <= SMALL { SMALL } else { words };
        let mut t = ByteRule {
            words,
            stride,
            by_byte: vec![0; 2 * 256 * stride],
            filtered: vec![0; words],
            literal: vec![0; words],
            ..ByteRule::default()
        };
        let has = |set: &[u64; 4], b: usize| set.get(b / 64).is_some_and(|x| x >> (b % 64) & 1 == 1);
        for (p, pre) in pre_need.iter().enumerate() {
            let Some(pre) = pre else { continue };
            let (w, bit) = (p / 64, 1u64 << (p % 64));
            if let Some(f) = t.filtered.get_mut(w) {
                *f |= bit;
            }
            for b in (0..256usize).filter(|&b| has(pre, b)) {
                if let Some(x) = t.by_byte.get_mut(2 * b * stride + w) {
                    *x |= bit;
                }
            }
        }
        // The strings, each once, with the rules needing it.
        let mut ids: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
        let mut strings: Vec<&[u8]> = Vec::new();
        let mut needing: Vec<Vec<u32>> = Vec::new();
        for (p, need) in literal.iter().enumerate() {
            let Some((triggers, lits)) = need else { continue };
            let (Ok(p32), w, bit) = (u32::try_from(p), p / 64, 1u64 << (p % 64)) else { continue };
            if lits.is_empty() || lits.iter().any(Vec::is_empty) {
                continue;
            }
            if let Some(l) = t.literal.get_mut(w) {
                *l |= bit;
            }
            for b in (0..256usize).filter(|&b| has(triggers, b)) {
                if let Some(x) = t.by_byte.get_mut((2 * b + 1) * stride + w) {
                    *x |= bit;
                }
            }
            for l in lits {
                // A value without a string's first bytes does not contain the string.
                let l = l.get(..l.len().min(MAX_STRING)).unwrap_or(l);
                let id = *ids.entry(l).or_insert_with(|| {
                    strings.push(l);
                    needing.push(Vec::new());
                    strings.len() - 1
                });
                if let Some(n) = needing.get_mut(id).filter(|n| n.last() != Some(&p32)) {
                    n.push(p32);
                }
            }
        }
        // The strings are lowercase and so is what `rule_out` searches (case-sensitive: half the transitions).
        // A DFA: the overlapping search costs half the NFA's per byte (~2k instructions per request with new values).
        // Cut strings keep it small (CRS: 3,710 strings, 6.9 MB; whole strings would take about 42 MB).
        let built = aho_corasick::AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&strings)
            .or_else(|_| aho_corasick::AhoCorasick::builder().build(&strings));
        match built {
            Ok(ac) if !strings.is_empty() => {
                t.strings = Some(ac);
                for n in &needing {
                    t.start.push(u32::try_from(t.rules_of.len()).unwrap_or(u32::MAX));
                    t.rules_of.extend_from_slice(n);
                }
                t.start.push(u32::try_from(t.rules_of.len()).unwrap_or(u32::MAX));
            }
            // Too many strings for the automaton (cannot happen with the CRS): no rule is ruled out by them.
            _ => t.literal.iter_mut().for_each(|l| *l = 0),
        }
        t
    }

    /// Fill `known`, a new memo row's "evaluated" bits, with the rules `value` rules out (known not to match): the
    /// filtered rules none of its bytes keeps in play, and the rules of `readers` with a literal need none of whose
    /// triggers and strings it contains. `lower`: a buffer to reuse for the lowercased value.
    #[inline(never)]
    fn rule_out(&self, value: &[u8], known: &mut [u64], readers: &[u64], lower: &mut Vec<u8>) {
        let (words, stride) = (self.words, self.stride);
        if words != known.len() {
            return;
        }
        // The rules still ruled out by bytes (`stride` words), then the rules the string search may still rule out
        // (zeroed on the stack: no larger than the rows need).
        let (mut small, mut large);
        let state: &mut [u64] = if stride == SMALL {
            small = [0u64; 2 * SMALL];
            &mut small
        } else {
            large = [0u64; 2 * ROW_STACK];
            let Some(s) = large.get_mut(..2 * stride) else { return };
            s
        };
        let (by_bytes, by_strings) = state.split_at_mut(stride);
        by_bytes.iter_mut().zip(&self.filtered).for_each(|(s, f)| *s = *f);
        by_strings.iter_mut().zip(&self.literal).zip(readers).for_each(|((s, l), r)| *s = l & r);
        // Each distinct byte once.
        let mut seen = [0u64; 4];
        for &b in value {
            if let Some(s) = seen.get_mut(usize::from(b >> 6)) {
                *s |= 1u64 << (b & 63);
            }
        }
        let fixed = <&mut [u64; 2 * SMALL]>::try_from(&mut *state).ok().zip(match self.by_byte.as_chunks::<SMALL>() {
            (rows, []) => Some(rows),
            _ => None,
        });
        if let Some((st, rows)) = fixed {
            // Rows of a fixed size: the loop below compiles to a few vector instructions per byte.
            let (mut bytes_row, mut strings_row) = ([0u64; SMALL], [0u64; SMALL]);
            each_byte(&seen, |b| {
                if let (Some(need), Some(trigger)) = (rows.get(2 * b), rows.get(2 * b + 1)) {
                    for i in 0..SMALL {
                        bytes_row[i] |= need[i];
                        strings_row[i] |= trigger[i];
                    }
                }
            });
            for i in 0..SMALL {
                st[i] &= !bytes_row[i];
                st[SMALL + i] &= !strings_row[i];
            }
        } else {
            each_byte(&seen, |b| {
                if let Some(r) = self.by_byte.get(2 * b * stride..2 * (b + 1) * stride) {
                    state.iter_mut().zip(r).for_each(|(s, r)| *s &= !r);
                }
            });
        }
        let (by_bytes, by_strings) = state.split_at_mut(stride);
        known.iter_mut().zip(by_bytes.iter()).for_each(|(k, s)| *k = *s);
        // The pass costs ~60 instructions per byte and a rule it rules out saves ~800 (a check): a long value left
        // with few candidates (a URI, whose `/`, `&` and `%` trigger most rules) is not worth it.
        let candidates: u32 = by_strings.iter().map(|w| w.count_ones()).sum();
        if candidates == 0 || (candidates as usize).saturating_mul(SCAN_BYTES_PER_RULE) < value.len() {
            return;
        }
        if let Some(ac) = &self.strings {
            lower.clear();
            lower.extend_from_slice(value);
            lower.make_ascii_lowercase();
            // The last strings found: a URI repeats `=` and `&`, whose rules are kept once.
            let mut recent = [u32::MAX; 8];
            for (n, m) in ac.find_overlapping_iter(&**lower).enumerate() {
                let id = m.pattern().as_u32();
                if recent.contains(&id) {
                    continue;
                }
                if let Some(r) = recent.get_mut(n % 8) {
                    *r = id;
                }
                let (Some(&a), Some(&z)) = (self.start.get(id as usize), self.start.get(id as usize + 1)) else {
                    continue;
                };
                for &p in self.rules_of.get(a as usize..z as usize).unwrap_or_default() {
                    if let Some(w) = by_strings.get_mut((p / 64) as usize) {
                        *w &= !(1u64 << (p % 64));
                    }
                }
                // Every rule kept: nothing left to rule out.
                if by_strings.iter().all(|w| *w == 0) {
                    return;
                }
            }
        }
        known.iter_mut().zip(by_strings.iter()).for_each(|(k, s)| *k |= s);
    }
}

/// Call `f` with each byte value in `set` (a bit set of 256).
#[inline(always)]
fn each_byte(set: &[u64; 4], mut f: impl FnMut(usize)) {
    for (w, &bits) in set.iter().enumerate() {
        let mut bits = bits;
        while bits != 0 {
            f(w * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
}

/// [`Memo::or_maybe`] for an entry's "maybe" row `row` (`8 * N` bytes); any other length of the slices is handled by
/// [`or_maybe_any`].
#[inline]
fn or_maybe_n<const N: usize>(row: &[u8], mask: &[u64], of: &[u64], out: &mut [u64]) -> bool {
    let (Some(Ok(words)), Some(Ok(mask)), Some(Ok(of)), Some(Ok(out))) = (
        row.as_chunks::<8>().0.get(..N).map(<&[[u8; 8]; N]>::try_from),
        mask.get(..N).map(<&[u64; N]>::try_from),
        of.get(..N).map(<&[u64; N]>::try_from),
        out.get_mut(..N).map(<&mut [u64; N]>::try_from),
    ) else {
        return or_maybe_any(row, mask, of, out);
    };
    let mut any = 0;
    for (((o, r), m), a) in out.iter_mut().zip(words).zip(mask).zip(of) {
        let maybe = u64::from_le_bytes(*r) & m;
        *o |= maybe;
        any |= maybe & a;
    }
    any != 0
}

/// [`Memo::or_maybe`] for rows of any length.
fn or_maybe_any(row: &[u8], mask: &[u64], of: &[u64], out: &mut [u64]) -> bool {
    let mut any = 0;
    out.iter_mut().zip(row.chunks_exact(8)).zip(mask).zip(of).for_each(|(((o, r), m), a)| {
        let maybe = r.try_into().map_or(u64::MAX, u64::from_le_bytes) & m;
        *o |= maybe;
        any |= maybe & a;
    });
    any != 0
}

/// A generation no memo has.
pub(crate) const NO_GENERATION: u64 = 0;

static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub(crate) struct Memo {
    set: u64,
    /// 64-bit words per bit row (one bit per pure rule).
    words: usize,
    hasher: foldhash::fast::RandomState,
    /// The entries' numbers by the hash of their value (stored in the entry, so the table holds 4 bytes per slot): a
    /// lookup reads the table's slot, then the entry.
    index: hashbrown::HashTable<u32>,
    /// The entries, each in one piece so that a lookup and the phase's row touch as few cache lines as possible:
    /// the 64-bit hash, the value's length (64 bits), `words` words of "known" bits (evaluated), `words` words of
    /// "maybe" bits (matched, or not evaluated yet: what a phase's row ORs, see `or_maybe`), then the value's bytes
    /// padded to whole words; words little-endian. An entry's number is its first byte's offset.
    data: Vec<u8>,
    /// Entries remembered.
    count: usize,
    /// Sum of the remembered values' lengths.
    key_bytes: usize,
    /// Changed whenever entries are dropped, so a transaction never keeps a stale entry number across phases;
    /// unique in the process (from [`next_generation`]), so one memo's entry numbers are never taken for another's.
    pub(crate) generation: u64,
    /// A new value lowercased, for `ByteRule::rule_out` (kept to reuse its allocation).
    lower: Vec<u8>,
    /// The pure rules `Transaction::may_match` was asked about (kept when entries are dropped).
    asked: Vec<u64>,
    /// Per phase, the pure starters not asked about as a bit per position of the phase's list, and the asked row it
    /// was made for (see [`Memo::unasked`]).
    unasked: [(Vec<u64>, Vec<u64>); 5],
    /// (snapshot id, rule index, value) of scalar values a rule decided by its scalar under that snapshot's frozen
    /// argument did not match (see `init::Snapshot::scalar_frozen`); at most [`FROZEN_MISSES`].
    frozen_misses: Vec<(u64, usize, Vec<u8>)>,
}

/// Values [`Memo::note_frozen_miss`] keeps at most (then it starts over).
const FROZEN_MISSES: usize = 64;

/// Bytes before an entry's bit rows: its hash and its value's length.
const HEAD: usize = 16;
/// Row words a new entry's "known" bits are made in on the stack (rows are ~4 words for the CRS).
const ROW_STACK: usize = 64;

/// The little-endian word at byte `at` of a memo's entries (0 past their end).
fn load(data: &[u8], at: usize) -> u64 {
    data.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// 64-bit words in a row of one bit per pure rule (at least one).
pub(crate) fn row_words(pure: usize) -> usize {
    pure.div_ceil(64).max(1)
}

thread_local! {
    static MEMOS: RefCell<Vec<Memo>> = const { RefCell::new(Vec::new()) };
    /// Values this thread looked up by content (tests only).
    #[cfg(test)]
    static LOOKUPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Values this thread has looked up by content (for tests).
#[cfg(test)]
pub(crate) fn lookups() -> u64 {
    LOOKUPS.with(std::cell::Cell::get)
}

/// Run `f` with this thread's memo for rule set `set` (`pure` bits per entry), made on first use.
pub(crate) fn with<R>(set: u64, pure: usize, f: impl FnOnce(&mut Memo) -> R) -> R {
    MEMOS.with(|cell| {
        let mut memos = cell.borrow_mut();
        match per_set(&mut memos, set, |m| m.set, || Memo::new(set, pure)) {
            Some(m) => f(m),
            None => f(&mut Memo::new(set, pure)),
        }
    })
}

/// The entry for rule set `set` in a per-thread list of at most [`SETS`] (made with `make` on first use, the
/// oldest dropped), moved last: most recently used last, so the oldest set is the one dropped.
pub(crate) fn per_set<T>(
    list: &mut Vec<T>,
    set: u64,
    of: impl Fn(&T) -> u64,
    make: impl FnOnce() -> T,
) -> Option<&mut T> {
    let pos = match list.iter().position(|m| of(m) == set) {
        Some(p) => p,
        None => {
            if list.len() >= SETS {
                list.remove(0);
            }
            list.push(make());
            list.len() - 1
        }
    };
    let last = list.len() - 1;
    if pos != last {
        list.swap(pos, last);
    }
    list.last_mut()
}

impl Memo {
    fn new(set: u64, pure: usize) -> Memo {
        Memo {
            set,
            words: row_words(pure),
            hasher: foldhash::fast::RandomState::default(),
            index: hashbrown::HashTable::new(),
            data: Vec::new(),
            count: 0,
            key_bytes: 0,
            generation: next_generation(),
            lower: Vec::new(),
            asked: vec![0; row_words(pure)],
            unasked: Default::default(),
            frozen_misses: Vec::new(),
        }
    }

    /// Called at the start of a phase: past [`KEEP`] entries, start over.
    pub(crate) fn trim(&mut self) {
        if self.count > KEEP || self.key_bytes > MAX_BYTES / 2 {
            self.index.clear();
            self.data.clear();
            self.count = 0;
            self.key_bytes = 0;
            self.generation = next_generation();
        }
    }

    /// The entry for `value`, made when new; [`NO_ENTRY`] when it cannot be remembered. A new entry starts with the
    /// rules `bytes` rules out already known not to match (see [`ByteRule`]).
    /// `readers`: the rules `bytes` may rule out by strings (those reading the value's variable; a row), asked for
    /// only when the entry is new.
    pub(crate) fn entry<'a>(&mut self, value: &[u8], bytes: &ByteRule, readers: impl FnOnce() -> &'a [u64]) -> u32 {
        if value.len() > MAX_VALUE {
            return NO_ENTRY;
        }
        #[cfg(test)]
        LOOKUPS.with(|n| n.set(n.get() + 1));
        let h = self.hasher.hash_one(value);
        if let Some(&e) = self.index.find(h, |&e| self.key(e) == value) {
            return e;
        }
        if self.count >= HARD || self.key_bytes + value.len() > MAX_BYTES {
            return NO_ENTRY;
        }
        let base = self.data.len();
        let Ok(new) = u32::try_from(base) else { return NO_ENTRY };
        if new == NO_ENTRY {
            return NO_ENTRY;
        }
        let words = self.words;
        let (mut small, mut large);
        let known = if words <= SMALL {
            small = [0u64; SMALL];
            small.get_mut(..words)
        } else {
            large = [0u64; ROW_STACK];
            large.get_mut(..words)
        };
        let known = match known {
            Some(k) => {
                bytes.rule_out(value, k, readers(), &mut self.lower);
                &*k
            }
            None => &[][..],
        };
        self.data.extend_from_slice(&h.to_le_bytes());
        self.data.extend_from_slice(&(value.len() as u64).to_le_bytes());
        // Every rule not ruled out may match (a row too long for the stack starts with nothing known).
        (0..words).for_each(|w| self.data.extend_from_slice(&known.get(w).copied().unwrap_or(0).to_le_bytes()));
        (0..words).for_each(|w| self.data.extend_from_slice(&(!known.get(w).copied().unwrap_or(0)).to_le_bytes()));
        self.data.extend_from_slice(value);
        self.data.resize(self.data.len().next_multiple_of(8), 0);
        let data = &self.data;
        self.index.insert_unique(h, new, |&e| load(data, e as usize));
        self.count += 1;
        self.key_bytes += value.len();
        new
    }

    #[cfg(test)]
    fn entry_t(&mut self, value: &[u8]) -> u32 {
        self.entry(value, &ByteRule::default(), || &[])
    }

    fn load(&self, at: usize) -> u64 {
        load(&self.data, at)
    }

    fn store(&mut self, at: usize, v: u64) {
        if let Some(b) = self.data.get_mut(at..at + 8) {
            b.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// The value of `entry`.
    pub(crate) fn key(&self, entry: u32) -> &[u8] {
        let base = entry as usize;
        let len = self.load(base + 8) as usize;
        let start = base + HEAD + 16 * self.words;
        self.data.get(start..start + len).unwrap_or_default()
    }

    /// The byte offset of the "known" word holding `rule`'s bit in `entry`, and the bit.
    fn word(&self, entry: u32, rule: u32) -> (usize, u64) {
        (entry as usize + HEAD + 8 * (rule / 64) as usize, 1u64 << (rule % 64))
    }

    /// `None` when not evaluated yet, else whether the pure rule `rule` matched the entry's value.
    pub(crate) fn get(&self, entry: u32, rule: u32) -> Option<bool> {
        let (w, bit) = self.word(entry, rule);
        let known = self.load(w) & bit != 0;
        // Known: "maybe" is "matched".
        known.then(|| self.load(w + 8 * self.words) & bit != 0)
    }

    /// OR into `out` (one bit per pure rule) the rules of `mask` that matched the entry's value or were not evaluated
    /// on it yet (all of `mask` for [`NO_ENTRY`]): a rule left 0 over all of a group's values is known to match none
    /// of them. Whether it ORed a rule that is also in `of` (`false`: the value is known to match none of the rules
    /// of both `mask` and `of`).
    #[inline]
    pub(crate) fn or_maybe(&self, entry: u32, mask: &[u64], of: &[u64], out: &mut [u64]) -> bool {
        let words = self.words;
        let base = entry as usize + HEAD + 8 * words;
        let Some(row) = self.data.get(base..base + 8 * words).filter(|_| entry != NO_ENTRY) else {
            out.iter_mut().zip(mask).for_each(|(o, m)| *o |= m);
            return true;
        };
        // Rows of a size known when compiling (the CRS's fit in 6 words) make a few instructions per word.
        match words {
            1 => or_maybe_n::<1>(row, mask, of, out),
            2 => or_maybe_n::<2>(row, mask, of, out),
            3 => or_maybe_n::<3>(row, mask, of, out),
            4 => or_maybe_n::<4>(row, mask, of, out),
            5 => or_maybe_n::<5>(row, mask, of, out),
            6 => or_maybe_n::<6>(row, mask, of, out),
            7 => or_maybe_n::<7>(row, mask, of, out),
            8 => or_maybe_n::<8>(row, mask, of, out),
            _ => or_maybe_any(row, mask, of, out),
        }
    }

    /// The pure rules asked about (see [`Memo::ask`]).
    pub(crate) fn asked(&self) -> &[u64] {
        &self.asked
    }

    /// Note that the transactions of this thread ask whether pure rule `rule` may match (rules above the paranoia
    /// level never are): from the next phase on, values are enumerated for it (`Transaction::enumerate_targets`).
    pub(crate) fn ask(&mut self, rule: u32) {
        if let Some(w) = self.asked.get_mut((rule / 64) as usize) {
            *w |= 1 << (rule % 64);
        }
    }

    /// The positions in phase `phase`'s list (`walk`) of its pure starters that `asked` (a phase's copy of the
    /// asked row) leaves out, a bit each: the walk never passes over them (`Transaction::walk_passable`). Made
    /// again only when `asked` differs from the last call's for the phase (rarely once a thread is warm).
    pub(crate) fn unasked(&mut self, phase: u8, walk: &crate::compile::Walk, asked: &[u64]) -> &[u64] {
        let Some((key, bits)) = self.unasked.get_mut(usize::from(phase.wrapping_sub(1))) else { return &[] };
        if key.as_slice() != asked || bits.len() != walk.at.len().div_ceil(64) {
            key.clear();
            key.extend_from_slice(asked);
            bits.clear();
            bits.resize(walk.at.len().div_ceil(64), 0);
            for (w, &here) in walk.pure_here.iter().enumerate() {
                let mut m = here & !asked.get(w).copied().unwrap_or(0);
                while m != 0 {
                    let p = w * 64 + m.trailing_zeros() as usize;
                    m &= m - 1;
                    let at = walk.pure_pos.get(p).map_or(crate::compile::NO_POS, |&at| at);
                    if let Some(b) = bits.get_mut(at as usize / 64) {
                        *b |= 1 << (at % 64);
                    }
                }
            }
        }
        bits
    }

    /// Whether rule `rule` was found not to match `value` under snapshot `snap` (see `frozen_misses`).
    pub(crate) fn frozen_miss(&self, snap: u64, rule: usize, value: &[u8]) -> bool {
        self.frozen_misses.iter().any(|(s, r, v)| *s == snap && *r == rule && v.as_slice() == value)
    }

    /// Remember that rule `rule` did not match `value` under snapshot `snap`.
    pub(crate) fn note_frozen_miss(&mut self, snap: u64, rule: usize, value: &[u8]) {
        if value.len() > 256 || self.frozen_miss(snap, rule, value) {
            return;
        }
        if self.frozen_misses.len() >= FROZEN_MISSES {
            self.frozen_misses.clear();
        }
        self.frozen_misses.push((snap, rule, value.to_vec()));
    }

    #[cfg(test)]
    pub(crate) fn words(&self) -> usize {
        self.words
    }

    pub(crate) fn set(&mut self, entry: u32, rule: u32, matched: bool) {
        let (w, bit) = self.word(entry, rule);
        let m = w + 8 * self.words;
        self.store(w, self.load(w) | bit);
        self.store(m, if matched { self.load(m) | bit } else { self.load(m) & !bit });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed-size ORs give what the general one gives, for every row size they cover.
    #[test]
    fn fixed_size_rows_or_as_any_size() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        type OrMaybe = fn(&[u8], &[u64], &[u64], &mut [u64]) -> bool;
        let fixed: [OrMaybe; 8] = [
            or_maybe_n::<1>,
            or_maybe_n::<2>,
            or_maybe_n::<3>,
            or_maybe_n::<4>,
            or_maybe_n::<5>,
            or_maybe_n::<6>,
            or_maybe_n::<7>,
            or_maybe_n::<8>,
        ];
        for (n, f) in (1..=8).zip(fixed) {
            for round in 0..200 {
                let row: Vec<u8> = (0..n).flat_map(|_| next().to_le_bytes()).collect();
                // Sparse masks half of the time, so that "no rule of both" happens.
                let sparse = |v: u64| if round % 2 == 0 { v & (v >> 7) & (v >> 13) } else { v };
                let mask: Vec<u64> = (0..n).map(|_| sparse(next())).collect();
                let of: Vec<u64> = (0..n).map(|_| sparse(next())).collect();
                let start: Vec<u64> = (0..n).map(|_| next()).collect();
                let (mut a, mut b) = (start.clone(), start);
                assert_eq!(f(&row, &mask, &of, &mut a), or_maybe_any(&row, &mask, &of, &mut b), "{n} words");
                assert_eq!(a, b, "{n} words");
            }
        }
    }

    #[test]
    fn entries_are_found_by_full_bytes_and_bits_are_per_rule() {
        let mut m = Memo::new(1, 130);
        let a = m.entry_t(b"Mozilla/5.0");
        let b = m.entry_t(b"books");
        assert_ne!(a, b);
        assert_eq!(m.entry_t(b"Mozilla/5.0"), a);
        assert_eq!(m.get(a, 129), None);
        m.set(a, 129, true);
        m.set(a, 3, false);
        assert_eq!((m.get(a, 129), m.get(a, 3), m.get(b, 129)), (Some(true), Some(false), None));
        assert_eq!(m.key(b), b"books");
        let all = vec![u64::MAX; m.words()];
        let mut maybe = vec![0u64; m.words()];
        m.or_maybe(a, &all, &all, &mut maybe);
        // Rule 3 is known not to match; 129 matched; every other rule is unknown.
        assert_eq!(maybe[0] & (1 << 3), 0);
        assert_ne!(maybe[2] & (1 << 1), 0);
        assert_ne!(maybe[0] & (1 << 4), 0);
        // Only the rules of the mask are added; a value the memo could not keep adds all of them.
        let mask = [1u64 << 4 | 1 << 3, 0, 1 << 1];
        let mut maybe = vec![0u64; m.words()];
        assert!(m.or_maybe(a, &mask, &all, &mut maybe));
        assert_eq!(maybe, [1 << 4, 0, 1 << 1]);
        let mut maybe = vec![0u64; m.words()];
        assert!(m.or_maybe(NO_ENTRY, &mask, &[0; 3], &mut maybe));
        assert_eq!(maybe, mask);
        // A value known to match none of the mask's rules adds nothing, and says so.
        let mut maybe = vec![0u64; m.words()];
        assert!(!m.or_maybe(a, &[1 << 3, 0, 0], &all, &mut maybe));
        assert_eq!(maybe, [0, 0, 0]);
        // Nor one that may match only rules outside `of`, though it adds them.
        assert!(!m.or_maybe(a, &mask, &[1 << 3, 0, 0], &mut maybe));
        assert_eq!(maybe, [1 << 4, 0, 1 << 1]);
        assert_eq!(m.entry_t(&vec![b'x'; MAX_VALUE + 1]), NO_ENTRY);
    }

    /// A new value starts with the rules its bytes rule out known not to match, and only those.
    #[test]
    fn a_new_values_bytes_rule_out_rules_at_once() {
        let set = |bytes: &[u8]| {
            let mut s = [0u64; 4];
            for &b in bytes {
                s[usize::from(b >> 6)] |= 1 << (b & 63);
            }
            Some(s)
        };
        // Rule 0 needs a quote, 1 has no filter, 2 needs `%` or `<`, the last needs a byte above 127; with rows of
        // the fixed size and with longer rows.
        for n in [71, 700] {
            let last = n - 1;
            let mut pre = vec![None; n];
            pre[0] = set(b"'");
            pre[2] = set(b"%<");
            pre[last] = set(&[0xc3]);
            let bytes = ByteRule::new(&pre, &[]);
            let mut m = Memo::new(1, n);
            let plain = m.entry(b"running shoes", &bytes, || &[]);
            assert_eq!(
                (m.get(plain, 0), m.get(plain, 1), m.get(plain, 2), m.get(plain, last as u32)),
                (Some(false), None, Some(false), Some(false))
            );
            let odd = m.entry("o'brien <caf\u{e9}>".as_bytes(), &bytes, || &[]);
            assert_eq!((m.get(odd, 0), m.get(odd, 2), m.get(odd, last as u32)), (None, None, None));
            // Rules without a filter are never ruled out; a known entry is not touched again.
            assert_eq!(m.get(odd, 3), None);
            m.set(plain, 1, true);
            assert_eq!(m.entry(b"running shoes", &bytes, || &[]), plain);
            assert_eq!(m.get(plain, 1), Some(true));
        }
    }

    /// A rule with a literal need is ruled out by a new value without its strings (compared ASCII
    /// case-insensitively) and without its transformations' trigger bytes, and only then.
    #[test]
    fn a_new_value_without_a_rules_strings_or_triggers_rules_it_out() {
        let set = |bytes: &[u8]| {
            let mut s = [0u64; 4];
            for &b in bytes {
                s[usize::from(b >> 6)] |= 1 << (b & 63);
            }
            s
        };
        // Rule 0 needs "select" or "union" (triggers `%` and `+`, as urlDecode); rule 1 needs "(" (no triggers);
        // rule 2 has no need; the last needs "sleep" in another row word; with rows of the fixed size and longer.
        for n in [66, 600] {
            let last = n - 1;
            let mut lit = vec![None; n];
            lit[0] = Some((set(b"%+"), vec![b"select".to_vec(), b"union".to_vec()]));
            lit[1] = Some(([0; 4], vec![b"(".to_vec()]));
            lit[last] = Some(([0; 4], vec![b"sleep".to_vec(), b"document.cookie".to_vec()]));
            let bytes = ByteRule::new(&[], &lit);
            let mut m = Memo::new(1, n);
            let readers = vec![u64::MAX; row_words(n)];
            let mut verdicts = |v: &[u8]| {
                let e = m.entry(v, &bytes, || &readers);
                [0, 1, 2, last as u32].map(|p| m.get(e, p))
            };
            let out = Some(false);
            assert_eq!(verdicts(b"running shoes 42"), [out, out, None, out]);
            assert_eq!(verdicts(b"1 UNION all"), [None, out, None, out]);
            assert_eq!(verdicts(b"unio%6e"), [None, out, None, out]);
            assert_eq!(verdicts(b"a+b"), [None, out, None, out]);
            assert_eq!(verdicts(b"f(x) SLeep"), [out, None, None, None]);
            assert_eq!(verdicts(b"selec"), [out, out, None, out]);
            // Long strings are searched by their first 8 bytes: kept on those alone (which costs a check), not
            // without them.
            assert_eq!(verdicts(b"Document.COOKIE"), [out, out, None, None]);
            assert_eq!(verdicts(b"document.write"), [out, out, None, None]);
            assert_eq!(verdicts(b"documen.cookie"), [out, out, None, out]);
        }
    }

    #[test]
    fn the_memo_is_bounded_and_starts_over_past_its_size() {
        let mut m = Memo::new(1, 10);
        let made: Vec<u32> = (0..HARD).map(|i| m.entry_t(format!("v{i}").as_bytes())).collect();
        assert!(!made.contains(&NO_ENTRY));
        // The index grew many times over (entries are re-hashed from the hash they keep): every one is still found.
        for (i, &e) in made.iter().enumerate() {
            assert_eq!(m.entry_t(format!("v{i}").as_bytes()), e);
            assert_eq!(m.key(e), format!("v{i}").as_bytes());
        }
        assert_eq!(m.entry_t(b"one more"), NO_ENTRY);
        let g = m.generation;
        m.trim();
        assert_eq!(m.count, 0);
        assert!(m.generation != g && m.generation != NO_GENERATION);
        assert_eq!(m.entry_t(b"one more"), 0);
    }

    #[test]
    fn long_values_are_bounded_by_bytes() {
        let mut m = Memo::new(1, 10);
        let v = vec![b'a'; MAX_VALUE];
        let fits = MAX_BYTES / MAX_VALUE;
        for i in 0..fits {
            let mut x = v.clone();
            x[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert_ne!(m.entry_t(&x), NO_ENTRY, "{i}");
        }
        assert_eq!(m.entry_t(&[b'b'; 10]), NO_ENTRY);
        m.trim();
        assert_eq!((m.count, m.key_bytes), (0, 0));
    }

    #[test]
    fn each_rule_set_has_its_own_memo() {
        with(7, 10, |m| {
            let e = m.entry_t(b"x");
            m.set(e, 1, true);
        });
        with(8, 10, |m| {
            let e = m.entry_t(b"x");
            assert_eq!(m.get(e, 1), None);
        });
        with(7, 10, |m| {
            let e = m.entry_t(b"x");
            assert_eq!(m.get(e, 1), Some(true));
        });
    }
}
