//! The on-disk format: record lines, checkpoint lines (also the head file and the retention
//! marker), the record hash and the signed message. Parsing is strict and never panics: a line is
//! either exactly what the writer produces or it is rejected.

use ring::digest;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The `prev` of record 1 and the hash of "no record yet" (seq 0).
pub(crate) const GENESIS: [u8; 32] = [0; 32];

pub(crate) const HEAD_FILE: &str = "head.json";
pub(crate) const RETENTION_FILE: &str = "retention.json";

const RECORD_DOMAIN: &[u8] = b"palisade-auditlog record v1\0";
const SIGN_DOMAIN: &[u8] = b"palisade-auditlog checkpoint v1\0";
const KEY_ID_DOMAIN: &[u8] = b"palisade-auditlog key id v1\0";

/// SHA-256 over (domain, seq, prev, length of the record, record): the length keeps the encoding
/// unambiguous although the record is last.
pub(crate) fn record_hash(seq: u64, prev: &[u8; 32], event: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(RECORD_DOMAIN);
    ctx.update(&seq.to_be_bytes());
    ctx.update(prev);
    ctx.update(&(event.len() as u64).to_be_bytes());
    ctx.update(event);
    to_array(ctx.finish().as_ref())
}

/// First 16 hex digits of SHA-256 over the public key: stable for a key, names it in checkpoints.
pub(crate) fn key_id(public_key: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(KEY_ID_DOMAIN);
    ctx.update(public_key);
    let d = ctx.finish();
    hex(d.as_ref().get(..8).unwrap_or_default())
}

fn to_array(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Lowercase hex only: the writer never produces anything else, so anything else is tampering.
pub(crate) fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [hi, lo] => (nibble(*hi)?, nibble(*lo)?),
            _ => return None,
        };
        *o = (hi << 4) | lo;
    }
    Some(out)
}

/// Segment file names: at least six decimal digits and `.log`, so they sort in order.
pub(crate) fn segment_name(n: u64) -> String {
    format!("{n:06}.log")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() < 6 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = stem.parse().ok()?;
    // Only the canonical spelling: `0000001.log` is not segment 1.
    (segment_name(n) == name).then_some(n)
}

// ---------------------------------------------------------------- records

const REC_PREFIX: &[u8] = b"{\"seq\":";
const REC_PREV: &[u8] = b",\"prev\":\"";
const REC_HASH: &[u8] = b"\",\"hash\":\"";
const REC_EVENT: &[u8] = b"\",\"event\":";

pub(crate) struct RecordLine<'a> {
    pub seq: u64,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
    pub event: &'a [u8],
}

/// `{"seq":N,"prev":"<hex>","hash":"<hex>","event":<record>}` plus `\n`; the record is embedded
/// verbatim so the hash is over exactly the caller's bytes.
pub(crate) fn encode_record(out: &mut Vec<u8>, seq: u64, prev: &[u8; 32], hash: &[u8; 32], event: &[u8]) {
    out.extend_from_slice(REC_PREFIX);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(REC_PREV);
    out.extend_from_slice(hex(prev).as_bytes());
    out.extend_from_slice(REC_HASH);
    out.extend_from_slice(hex(hash).as_bytes());
    out.extend_from_slice(REC_EVENT);
    out.extend_from_slice(event);
    out.extend_from_slice(b"}\n");
}

pub(crate) fn is_record_line(line: &[u8]) -> bool {
    line.starts_with(REC_PREFIX)
}

/// Parses a record line (without its `\n`). Checks the structure, not the hash.
pub(crate) fn parse_record(line: &[u8]) -> Option<RecordLine<'_>> {
    let rest = line.strip_prefix(REC_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let num = rest.get(..digits)?;
    if num.is_empty() || num.len() > 20 || (num.len() > 1 && num.first() == Some(&b'0')) {
        return None;
    }
    let seq: u64 = std::str::from_utf8(num).ok()?.parse().ok()?;
    let rest = rest.get(digits..)?.strip_prefix(REC_PREV)?;
    let prev = unhex::<32>(rest.get(..64)?)?;
    let rest = rest.get(64..)?.strip_prefix(REC_HASH)?;
    let hash = unhex::<32>(rest.get(..64)?)?;
    let event = rest.get(64..)?.strip_prefix(REC_EVENT)?.strip_suffix(b"}")?;
    if event.is_empty() {
        return None;
    }
    Some(RecordLine { seq, prev, hash, event })
}

/// Only the seq of a record line: the cheap look-ahead used to tell deletion from reordering.
pub(crate) fn record_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(REC_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(rest.get(..digits)?).ok()?.parse().ok()
}

/// A record the caller may append: one JSON object on one line, nothing around it.
pub(crate) fn check_event(event: &[u8]) -> Result<(), &'static str> {
    if event.first() != Some(&b'{') || event.last() != Some(&b'}') {
        return Err("not a JSON object (must start with '{' and end with '}', no surrounding whitespace)");
    }
    if event.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return Err("contains a line break");
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(event).map_err(|_| "not valid JSON")?;
    Ok(())
}

// ---------------------------------------------------------------- checkpoints

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CpKind {
    /// First line of every segment: anchors (seq, hash) of the record before the segment's first.
    Open,
    /// Every `checkpoint_every` records, and on request.
    Periodic,
    /// Last line of a segment that is full.
    Rotate,
    /// Clean close.
    Close,
    /// Written when an existing log is opened again (after a close or a crash).
    Resume,
    /// The head file: seq and hash of the last durable record.
    Head,
    /// The retention marker: segments before `segment` were deleted; (seq, hash) is its anchor.
    Retention,
}

impl CpKind {
    fn tag(self) -> u8 {
        match self {
            CpKind::Open => 1,
            CpKind::Periodic => 2,
            CpKind::Rotate => 3,
            CpKind::Close => 4,
            CpKind::Resume => 5,
            CpKind::Head => 6,
            CpKind::Retention => 7,
        }
    }
}

/// The signed statement: "records up to `seq` were written, the last has `hash`", in `segment`
/// at `time` (Unix seconds), with a checkpoint at least every `every` records from here on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub kind: CpKind,
    pub seq: u64,
    pub hash: [u8; 32],
    pub segment: String,
    pub time: u64,
    pub every: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CpWire {
    cp: CpKind,
    seq: u64,
    hash: String,
    segment: String,
    time: u64,
    every: u64,
    key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

pub(crate) const CP_PREFIX: &[u8] = b"{\"cp\":";

impl Checkpoint {
    fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(SIGN_DOMAIN.len() + 64 + self.segment.len());
        m.extend_from_slice(SIGN_DOMAIN);
        m.push(self.kind.tag());
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(&self.hash);
        m.extend_from_slice(&self.time.to_be_bytes());
        m.extend_from_slice(&self.every.to_be_bytes());
        m.extend_from_slice(&(self.segment.len() as u64).to_be_bytes());
        m.extend_from_slice(self.segment.as_bytes());
        m
    }

    /// The signed line, with its `\n`.
    pub(crate) fn encode(&self, key: &Ed25519KeyPair, key_id: &str) -> Vec<u8> {
        let sig = key.sign(&self.message());
        let wire = CpWire {
            cp: self.kind,
            seq: self.seq,
            hash: hex(&self.hash),
            segment: self.segment.clone(),
            time: self.time,
            every: self.every,
            key_id: key_id.to_owned(),
            sig: Some(hex(sig.as_ref())),
        };
        // Serializing a struct of strings and integers cannot fail; an empty line would be
        // rejected by verify anyway.
        let mut out = serde_json::to_vec(&wire).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// A parsed checkpoint whose signature has not been checked yet.
pub(crate) struct SignedCheckpoint {
    pub cp: Checkpoint,
    pub key_id: String,
    sig: Option<[u8; 64]>,
}

pub(crate) enum SigCheck {
    Ok,
    Missing,
    Bad,
}

impl SignedCheckpoint {
    pub(crate) fn check(&self, public_key: &[u8]) -> SigCheck {
        match &self.sig {
            None => SigCheck::Missing,
            Some(sig) => {
                match UnparsedPublicKey::new(&signature::ED25519, public_key).verify(&self.cp.message(), sig) {
                    Ok(()) => SigCheck::Ok,
                    Err(_) => SigCheck::Bad,
                }
            }
        }
    }
}

pub(crate) fn parse_checkpoint(line: &[u8]) -> Option<SignedCheckpoint> {
    if !line.starts_with(CP_PREFIX) {
        return None;
    }
    let w: CpWire = serde_json::from_slice(line).ok()?;
    let hash = unhex::<32>(w.hash.as_bytes())?;
    let sig = match w.sig {
        None => None,
        Some(s) => Some(unhex::<64>(s.as_bytes())?),
    };
    Some(SignedCheckpoint {
        cp: Checkpoint { kind: w.cp, seq: w.seq, hash, segment: w.segment, time: w.time, every: w.every },
        key_id: w.key_id,
        sig,
    })
}

pub(crate) fn public_key_of(key: &Ed25519KeyPair) -> [u8; 32] {
    to_array(key.public_key().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_line_round_trips_and_rejects_variants() {
        let prev = [7u8; 32];
        let h = record_hash(5, &prev, br#"{"a":1}"#);
        let mut out = Vec::new();
        encode_record(&mut out, 5, &prev, &h, br#"{"a":1}"#);
        let line = out.strip_suffix(b"\n").unwrap();
        let r = parse_record(line).unwrap();
        assert_eq!((r.seq, r.prev, r.hash, r.event), (5, prev, h, &br#"{"a":1}"#[..]));
        assert_eq!(record_seq(line), Some(5));
        // Uppercase hex, a leading zero in the seq or a missing brace are not the writer's output.
        let upper = String::from_utf8(line.to_vec()).unwrap().replace("0707", "0A07");
        assert!(parse_record(upper.as_bytes()).is_none());
        assert!(parse_record(&line.to_vec().splice(7..8, *b"05").collect::<Vec<_>>()).is_none());
        assert!(parse_record(&line[..line.len() - 2]).is_none());
    }

    #[test]
    fn record_hash_is_domain_separated_sha256() {
        // Pin the encoding: SHA-256 of the documented byte string.
        let mut m = b"palisade-auditlog record v1\0".to_vec();
        m.extend_from_slice(&1u64.to_be_bytes());
        m.extend_from_slice(&[0u8; 32]);
        m.extend_from_slice(&2u64.to_be_bytes());
        m.extend_from_slice(b"{}");
        let want = digest::digest(&digest::SHA256, &m);
        assert_eq!(&record_hash(1, &GENESIS, b"{}")[..], want.as_ref());
        assert_ne!(record_hash(1, &GENESIS, b"{}"), record_hash(2, &GENESIS, b"{}"));
    }

    #[test]
    fn segment_names_are_canonical() {
        assert_eq!(segment_name(1), "000001.log");
        assert_eq!(segment_name(1234567), "1234567.log");
        assert_eq!(parse_segment_name("000042.log"), Some(42));
        assert_eq!(parse_segment_name("0000042.log"), None);
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("00004a.log"), None);
        assert_eq!(parse_segment_name("head.json"), None);
    }

    #[test]
    fn events_must_be_single_line_objects() {
        assert!(check_event(br#"{"a":"b"}"#).is_ok());
        assert!(check_event(b"[1]").is_err());
        assert!(check_event(b" {}").is_err());
        assert!(check_event(b"{\n}").is_err());
        assert!(check_event(br#"{"a":}"#).is_err());
        assert!(check_event(b"{}{}").is_err());
    }
}
