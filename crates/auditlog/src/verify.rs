//! Verification: walk every segment from the oldest retained one, re-hash every record, check the
//! chain, every checkpoint's signature and place, and the signed head. The first bad line wins.
//! Reads whole segments into memory (they are bounded by `segment_max_bytes`); never panics.

use std::path::Path;

use crate::error::{damaged, Problem, ProblemKind as K, VerifyError};
use crate::format::{
    self, parse_checkpoint, parse_record, record_hash, record_seq, segment_name, Checkpoint, CpKind, SigCheck,
    SignedCheckpoint, CP_PREFIX, GENESIS, HEAD_FILE, RETENTION_FILE,
};

/// The running state of the chain: the last record seen (or the anchor) and the checkpoint rule.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    pub seq: u64,
    pub hash: [u8; 32],
    pub since_cp: u64,
    pub every: u64,
}

#[derive(Debug, Default)]
pub(crate) struct SegStats {
    /// Complete lines (ending in `\n`).
    pub lines: u64,
    pub records: u64,
    pub checkpoints: u64,
    pub first_seq: Option<u64>,
    pub last_kind: Option<CpKind>,
    /// Seq of the last checkpoint in the segment (covered by a signature).
    pub signed_seq: Option<u64>,
}

/// Splits at `\n`: the complete lines and what follows the last `\n` (a torn line, or empty).
pub(crate) fn split_lines(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let (body, torn) = match data.iter().rposition(|b| *b == b'\n') {
        Some(i) => data.split_at(i.saturating_add(1)),
        None => data.split_at(0),
    };
    let mut lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    // `body` ends in `\n` (or is empty), so the last piece is always empty.
    lines.pop();
    (lines, torn)
}

fn sig_problem(sc: &SignedCheckpoint, public_key: &[u8], name: &str, line: Option<u64>) -> Result<(), Box<Problem>> {
    let (seq, key_id) = (sc.cp.seq, &sc.key_id);
    match sc.check(public_key) {
        // The key id is not signed: it must name the verifying key so no byte goes unchecked.
        SigCheck::Ok if *key_id == format::key_id(public_key) => Ok(()),
        SigCheck::Ok => Err(damaged(K::BadSignature, name, line, Some(seq), "key id does not name the signing key")),
        SigCheck::Missing => Err(damaged(K::BadSignature, name, line, Some(seq), "checkpoint has no signature")),
        SigCheck::Bad => Err(damaged(
            K::BadSignature,
            name,
            line,
            Some(seq),
            format!("checkpoint signature does not verify (line names key {key_id})"),
        )),
    }
}

/// Checks one segment. `chain` is the state before it (None: take the anchor from its opening
/// checkpoint, as open does for the last segment). `seen` gets (seq, hash) of the anchor and of
/// every record, so the caller can check the head. A torn last line is `truncated`.
pub(crate) fn walk_segment(
    name: &str,
    data: &[u8],
    chain: Option<&Chain>,
    public_key: &[u8],
    seen: &mut dyn FnMut(u64, &[u8; 32]),
) -> Result<(Chain, SegStats), Box<Problem>> {
    let (lines, torn) = split_lines(data);
    let mut stats = SegStats { lines: lines.len() as u64, ..SegStats::default() };
    let Some(first) = lines.first() else {
        let (kind, why) = if torn.is_empty() {
            (K::MissingCheckpoint, "empty segment: no opening checkpoint")
        } else {
            (K::Truncated, "segment ends inside its first line")
        };
        return Err(damaged(kind, name, Some(1), chain.map(|c| c.seq.saturating_add(1)), why));
    };

    // Line 1: the signed opening checkpoint that anchors the segment.
    let Some(open) = parse_checkpoint(first) else {
        return Err(if format::is_record_line(first) {
            damaged(
                K::MissingCheckpoint,
                name,
                Some(1),
                record_seq(first),
                "segment does not start with its opening checkpoint",
            )
        } else {
            damaged(K::Malformed, name, Some(1), None, "not a checkpoint line")
        });
    };
    sig_problem(&open, public_key, name, Some(1))?;
    let cp = &open.cp;
    if cp.kind != CpKind::Open {
        return Err(damaged(
            K::MissingCheckpoint,
            name,
            Some(1),
            Some(cp.seq),
            "segment does not start with its opening checkpoint",
        ));
    }
    if cp.segment != name {
        return Err(damaged(K::Inserted, name, Some(1), Some(cp.seq), format!("checkpoint belongs to {}", cp.segment)));
    }
    if cp.every == 0 {
        return Err(damaged(K::Malformed, name, Some(1), Some(cp.seq), "checkpoint interval 0"));
    }
    if let Some(c) = chain {
        if cp.seq > c.seq {
            return Err(damaged(
                K::Deleted,
                name,
                Some(1),
                Some(c.seq.saturating_add(1)),
                format!("records {}..={} missing before this segment", c.seq.saturating_add(1), cp.seq),
            ));
        }
        if cp.seq < c.seq {
            return Err(damaged(
                K::Inserted,
                name,
                Some(1),
                Some(cp.seq.saturating_add(1)),
                format!("segment restarts at seq {} after seq {}", cp.seq.saturating_add(1), c.seq),
            ));
        }
        if cp.hash != c.hash {
            return Err(damaged(K::Modified, name, Some(1), Some(cp.seq), "anchor hash differs from the chain"));
        }
    }
    let mut st = Chain { seq: cp.seq, hash: cp.hash, since_cp: 0, every: cp.every };
    seen(st.seq, &st.hash);
    stats.checkpoints = 1;
    stats.signed_seq = Some(st.seq);
    stats.last_kind = Some(CpKind::Open);

    let mut sealed = false;
    // The writer puts a checkpoint right after every record whose seq is a multiple of `every`
    // (in the same write), so a deleted checkpoint line is seen even where a later one follows.
    let mut need_cp: Option<u64> = None;
    for (idx, line) in lines.iter().enumerate().skip(1) {
        let lineno = Some(idx as u64 + 1);
        let rest = lines.get(idx.saturating_add(1)..).unwrap_or_default();
        let earlier = lines.get(..idx).unwrap_or_default();
        let expected =
            st.seq.checked_add(1).ok_or_else(|| damaged(K::Malformed, name, lineno, None, "seq overflow"))?;
        if sealed {
            return Err(damaged(
                K::Inserted,
                name,
                lineno,
                record_seq(line),
                "line after the segment's rotation checkpoint",
            ));
        }
        if let Some(seq) = need_cp.take() {
            if !line.starts_with(CP_PREFIX) {
                let why = format!("no checkpoint after seq {seq} (one every {} records)", st.every);
                return Err(damaged(K::MissingCheckpoint, name, lineno, Some(seq), why));
            }
        }
        if line.starts_with(CP_PREFIX) {
            let Some(sc) = parse_checkpoint(line) else {
                return Err(damaged(K::Malformed, name, lineno, None, "not a valid checkpoint line"));
            };
            let cp: &Checkpoint = &sc.cp;
            sig_problem(&sc, public_key, name, lineno)?;
            match cp.kind {
                CpKind::Open => {
                    return Err(damaged(K::Inserted, name, lineno, Some(cp.seq), "opening checkpoint inside a segment"))
                }
                CpKind::Head | CpKind::Retention => {
                    return Err(damaged(
                        K::Malformed,
                        name,
                        lineno,
                        Some(cp.seq),
                        "head or retention line in a segment",
                    ))
                }
                _ => {}
            }
            if cp.segment != name {
                return Err(damaged(
                    K::Inserted,
                    name,
                    lineno,
                    Some(cp.seq),
                    format!("checkpoint belongs to {}", cp.segment),
                ));
            }
            if cp.seq > st.seq {
                return Err(if rest.iter().any(|l| record_seq(l) == Some(expected)) {
                    damaged(K::Reordered, name, lineno, Some(cp.seq), format!("checkpoint for seq {} early", cp.seq))
                } else {
                    damaged(
                        K::Deleted,
                        name,
                        lineno,
                        Some(expected),
                        format!("records {expected}..={} missing before this checkpoint", cp.seq),
                    )
                });
            }
            if cp.seq < st.seq {
                let kind = if earlier.contains(line) { K::Inserted } else { K::Reordered };
                return Err(damaged(
                    kind,
                    name,
                    lineno,
                    Some(cp.seq),
                    format!("checkpoint for seq {} after seq {}", cp.seq, st.seq),
                ));
            }
            if cp.hash != st.hash {
                return Err(damaged(K::Modified, name, lineno, Some(cp.seq), "signed hash differs from the chain"));
            }
            if cp.every == 0 {
                return Err(damaged(K::Malformed, name, lineno, Some(cp.seq), "checkpoint interval 0"));
            }
            st.since_cp = 0;
            st.every = cp.every;
            stats.checkpoints = stats.checkpoints.saturating_add(1);
            stats.signed_seq = Some(cp.seq);
            stats.last_kind = Some(cp.kind);
            sealed = cp.kind == CpKind::Rotate;
            continue;
        }
        let Some(r) = parse_record(line) else {
            return Err(damaged(K::Malformed, name, lineno, record_seq(line), "not a valid record or checkpoint line"));
        };
        if record_hash(r.seq, &r.prev, r.event) != r.hash {
            return Err(damaged(K::Modified, name, lineno, Some(r.seq), "record bytes do not match its hash"));
        }
        if r.seq < expected {
            // At the first anomaly every seq below `expected` has been seen: this is a second copy
            // (a record moved later shows up first as a gap, reported as `reordered`).
            let why = format!("seq {} appears again after seq {}", r.seq, st.seq);
            return Err(damaged(K::Inserted, name, lineno, Some(r.seq), why));
        }
        if r.seq > expected {
            let later_expected = rest.iter().any(|l| record_seq(l) == Some(expected));
            let again = rest.iter().any(|l| record_seq(l) == Some(r.seq));
            return Err(match (later_expected, again) {
                (true, true) => damaged(
                    K::Inserted,
                    name,
                    lineno,
                    Some(r.seq),
                    format!("copy of seq {} before seq {expected}", r.seq),
                ),
                (true, false) => {
                    damaged(K::Reordered, name, lineno, Some(r.seq), format!("seq {} before seq {expected}", r.seq))
                }
                _ => damaged(
                    K::Deleted,
                    name,
                    lineno,
                    Some(expected),
                    format!("records {expected}..={} missing", r.seq.saturating_sub(1)),
                ),
            });
        }
        if r.prev != st.hash {
            return Err(damaged(K::Modified, name, lineno, Some(r.seq), "record does not chain to the previous one"));
        }
        st.seq = r.seq;
        st.hash = r.hash;
        st.since_cp = st.since_cp.saturating_add(1);
        if st.since_cp > st.every {
            let why = format!("more than {} records without a checkpoint", st.every);
            return Err(damaged(K::MissingCheckpoint, name, lineno, Some(r.seq), why));
        }
        if r.seq.is_multiple_of(st.every) {
            need_cp = Some(r.seq);
        }
        seen(st.seq, &st.hash);
        stats.records = stats.records.saturating_add(1);
        stats.first_seq.get_or_insert(r.seq);
        stats.last_kind = None;
    }
    if !torn.is_empty() {
        return Err(damaged(
            K::Truncated,
            name,
            Some(stats.lines.saturating_add(1)),
            Some(st.seq.saturating_add(1)),
            format!("file ends inside a line ({} bytes after the last newline)", torn.len()),
        ));
    }
    Ok((st, stats))
}

/// What a clean log holds. Only [`verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records in the retained segments.
    pub records: u64,
    /// Retained segment files walked.
    pub segments: u64,
    /// First retained record (None: no record).
    pub first_seq: Option<u64>,
    /// Last record (0: none ever written).
    pub last_seq: u64,
    /// Checkpoint lines whose signatures and places were verified (the head and marker not counted).
    pub checkpoints: u64,
    /// Seq in the signed head file.
    pub head_seq: u64,
    /// Records after the last signature (head or checkpoint): written by a batch whose head update
    /// did not land (a crash, or a writer racing this read), or appended by someone without the key.
    pub unsigned_tail: u64,
    /// When a signed retention marker exists: records up to this seq were deleted by retention.
    pub retention_deleted_through: Option<u64>,
    /// The key id of the public key the log verified with.
    pub key_id: String,
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Io { path: path.to_path_buf(), source }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, VerifyError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Segment files in the directory, sorted by number.
pub(crate) fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            if let Some(n) = format::parse_segment_name(name) {
                out.push((n, name.to_owned()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parses and checks a one-line signed file (head or retention marker) of the given kind.
pub(crate) fn check_signed_file(
    name: &str,
    data: &[u8],
    kind: CpKind,
    public_key: &[u8],
) -> Result<Checkpoint, Box<Problem>> {
    let line = data.strip_suffix(b"\n").unwrap_or_default();
    let Some(sc) = parse_checkpoint(line).filter(|sc| sc.cp.kind == kind) else {
        return Err(damaged(K::Malformed, name, Some(1), None, "not a signed head or retention line"));
    };
    sig_problem(&sc, public_key, name, Some(1))?;
    Ok(sc.cp)
}

/// Verifies the whole log in `dir` with the Ed25519 `public_key` (32 bytes).
///
/// The head file and retention marker are read first, then the segments, so a log being
/// appended to concurrently verifies (the newest records may count as `unsigned_tail`).
/// Segments numbered below the retention marker's first segment (left over when a retention
/// run was interrupted) are skipped: the signed marker says they are deleted.
///
/// Limits: without an outside witness, replacing the whole tail *and* the head file with an
/// older signed state (a rollback) is not detectable; ship checkpoints elsewhere for that.
pub fn verify(dir: &Path, public_key: &[u8]) -> Result<VerifyReport, VerifyError> {
    if public_key.len() != 32 {
        return Err(VerifyError::BadPublicKey(public_key.len()));
    }
    let dmg = |p: Box<Problem>| VerifyError::Damaged(p);
    let head_path = dir.join(HEAD_FILE);
    let head_bytes = read_optional(&head_path)?;
    let ret_path = dir.join(RETENTION_FILE);
    let ret_bytes = read_optional(&ret_path)?;
    let segments = list_segments(dir).map_err(io(dir))?;

    // Where the chain starts: segment 1 from genesis, or the signed retention anchor.
    let (start, anchor, retention) = match &ret_bytes {
        None => (1, Chain { seq: 0, hash: GENESIS, since_cp: 0, every: 1 }, None),
        Some(b) => {
            let m = check_signed_file(RETENTION_FILE, b, CpKind::Retention, public_key).map_err(dmg)?;
            let Some(n) = format::parse_segment_name(&m.segment) else {
                return Err(dmg(damaged(K::Malformed, RETENTION_FILE, Some(1), None, "bad segment name")));
            };
            (n, Chain { seq: m.seq, hash: m.hash, since_cp: 0, every: m.every.max(1) }, Some(m.seq))
        }
    };
    let retained: Vec<&(u64, String)> = segments.iter().filter(|(n, _)| *n >= start).collect();
    let first_missing = |n: u64, seq: u64, why: &str| {
        dmg(damaged(K::MissingSegment, &segment_name(n), None, Some(seq), why.to_owned()))
    };
    match retained.first() {
        Some((n, _)) if *n == start => {}
        _ => {
            let why = if retention.is_some() {
                "first segment after the retention marker is missing"
            } else {
                "first segment missing and no retention marker"
            };
            return Err(first_missing(start, anchor.seq.saturating_add(1), why));
        }
    }

    let head_seq = match &head_bytes {
        Some(b) => check_signed_file(HEAD_FILE, b, CpKind::Head, public_key).ok().map(|h| (h.seq, h.hash)),
        None => None,
    };
    let mut hash_at_head: Option<[u8; 32]> = None;
    let mut chain = anchor;
    let mut records = 0u64;
    let mut checkpoints = 0u64;
    let mut first_seq = None;
    let mut signed_seq = 0u64;
    let mut last_name = String::new();
    let mut last_lines = 0u64;
    let mut prev_num: Option<u64> = None;
    for (i, (num, name)) in retained.iter().enumerate() {
        if let Some(p) = prev_num {
            if *num != p.saturating_add(1) {
                return Err(first_missing(p.saturating_add(1), chain.seq.saturating_add(1), "segment file missing"));
            }
        }
        prev_num = Some(*num);
        let path = dir.join(name);
        let data = std::fs::read(&path).map_err(io(&path))?;
        let mut seen = |seq: u64, hash: &[u8; 32]| {
            if head_seq.map(|h| h.0) == Some(seq) {
                hash_at_head = Some(*hash);
            }
        };
        let (next, stats) = walk_segment(name, &data, Some(&chain), public_key, &mut seen).map_err(dmg)?;
        let is_last = i.saturating_add(1) == retained.len();
        if !is_last && stats.last_kind != Some(CpKind::Rotate) {
            return Err(dmg(damaged(
                K::Truncated,
                name,
                Some(stats.lines.saturating_add(1)),
                Some(next.seq.saturating_add(1)),
                "segment ends without its rotation checkpoint",
            )));
        }
        chain = next;
        records = records.saturating_add(stats.records);
        checkpoints = checkpoints.saturating_add(stats.checkpoints);
        if first_seq.is_none() {
            first_seq = stats.first_seq;
        }
        signed_seq = stats.signed_seq.unwrap_or(signed_seq).max(signed_seq);
        last_name.clone_from(name);
        last_lines = stats.lines;
    }

    // The signed head: catches a tail cut after the last checkpoint.
    let Some(hb) = head_bytes else {
        return Err(dmg(damaged(K::MissingCheckpoint, HEAD_FILE, None, None, "head file missing")));
    };
    let head = check_signed_file(HEAD_FILE, &hb, CpKind::Head, public_key).map_err(dmg)?;
    if head.seq > chain.seq {
        return Err(dmg(damaged(
            K::Truncated,
            &last_name,
            Some(last_lines.saturating_add(1)),
            Some(chain.seq.saturating_add(1)),
            format!("signed head is at seq {}, the log ends at seq {}", head.seq, chain.seq),
        )));
    }
    match hash_at_head {
        Some(h) if h == head.hash => {}
        Some(_) => {
            return Err(dmg(damaged(
                K::Modified,
                HEAD_FILE,
                Some(1),
                Some(head.seq),
                "head hash differs from the chain",
            )))
        }
        None => {
            return Err(dmg(damaged(
                K::Modified,
                HEAD_FILE,
                Some(1),
                Some(head.seq),
                "head names a seq before the retained log",
            )))
        }
    }
    signed_seq = signed_seq.max(head.seq);
    Ok(VerifyReport {
        records,
        segments: retained.len() as u64,
        first_seq,
        last_seq: chain.seq,
        checkpoints,
        head_seq: head.seq,
        unsigned_tail: chain.seq.saturating_sub(signed_seq),
        retention_deleted_through: retention,
        key_id: format::key_id(public_key),
    })
}
