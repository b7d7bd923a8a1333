//! Reading records back in order (for rebuilding a query index). Checks every record's hash and
//! the chain as it goes, but not signatures: run [`crate::verify`] for those. A torn line at the
//! very end is a write in progress and ends the iteration quietly.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{damaged, AuditLogError, ProblemKind as K};
use crate::format::{parse_checkpoint, parse_record, record_hash, CpKind, CP_PREFIX};
use crate::verify::list_segments;

/// Longest line read: far above any audit record, low enough that a hostile file cannot make
/// the reader buffer gigabytes.
const MAX_LINE: u64 = 16 << 20;

/// Iterator over `(seq, record bytes)` from [`read_from`].
#[derive(Debug)]
pub struct Records {
    dir: PathBuf,
    segments: Vec<String>,
    next_segment: usize,
    reader: Option<BufReader<File>>,
    name: String,
    line: u64,
    chain: Option<(u64, [u8; 32])>,
    from: u64,
    buf: Vec<u8>,
    done: bool,
}

/// Records with seq >= `from_seq`, in order, from the log in `dir`. Starts in the segment that
/// holds `from_seq` (or the oldest retained one).
pub fn read_from(dir: &Path, from_seq: u64) -> Result<Records, AuditLogError> {
    let segments =
        list_segments(dir).map_err(|source| AuditLogError::Io { what: "listing", path: dir.to_path_buf(), source })?;
    let mut start = 0;
    for (i, (_, name)) in segments.iter().enumerate() {
        let mut r = open(dir, name)?;
        let mut line = Vec::new();
        read_line(&mut r, &mut line, dir, name)?;
        let anchor = opening(&line, name)?;
        if anchor.0 < from_seq {
            start = i;
        } else {
            break;
        }
    }
    Ok(Records {
        dir: dir.to_path_buf(),
        segments: segments.into_iter().skip(start).map(|(_, n)| n).collect(),
        next_segment: 0,
        reader: None,
        name: String::new(),
        line: 0,
        chain: None,
        from: from_seq,
        buf: Vec::new(),
        done: false,
    })
}

fn open(dir: &Path, name: &str) -> Result<BufReader<File>, AuditLogError> {
    let p = dir.join(name);
    File::open(&p).map(BufReader::new).map_err(|source| AuditLogError::Io { what: "opening", path: p, source })
}

/// Reads one line into `buf` (cleared first), returning whether it ended in `\n`.
fn read_line(r: &mut BufReader<File>, buf: &mut Vec<u8>, dir: &Path, name: &str) -> Result<bool, AuditLogError> {
    buf.clear();
    r.by_ref().take(MAX_LINE).read_until(b'\n', buf).map_err(|source| AuditLogError::Io {
        what: "reading",
        path: dir.join(name),
        source,
    })?;
    Ok(buf.pop_if(|b| *b == b'\n').is_some())
}

fn opening(line: &[u8], name: &str) -> Result<(u64, [u8; 32]), AuditLogError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    parse_checkpoint(line).filter(|c| c.cp.kind == CpKind::Open).map(|c| (c.cp.seq, c.cp.hash)).ok_or_else(|| {
        AuditLogError::Damaged(damaged(K::MissingCheckpoint, name, Some(1), None, "no opening checkpoint"))
    })
}

impl Records {
    fn step(&mut self) -> Result<Option<(u64, Vec<u8>)>, AuditLogError> {
        loop {
            let Some(reader) = self.reader.as_mut() else {
                let Some(name) = self.segments.get(self.next_segment).cloned() else {
                    return Ok(None);
                };
                self.next_segment = self.next_segment.saturating_add(1);
                let mut r = open(&self.dir, &name)?;
                read_line(&mut r, &mut self.buf, &self.dir, &name)?;
                let anchor = opening(&self.buf, &name)?;
                if let Some(c) = self.chain {
                    if c != anchor {
                        let why = "segment anchor does not continue the chain";
                        return Err(AuditLogError::Damaged(damaged(
                            K::Deleted,
                            &name,
                            Some(1),
                            Some(c.0.saturating_add(1)),
                            why,
                        )));
                    }
                }
                self.chain = Some(anchor);
                self.reader = Some(r);
                self.name = name;
                self.line = 1;
                continue;
            };
            let complete = read_line(reader, &mut self.buf, &self.dir, &self.name)?;
            self.line = self.line.saturating_add(1);
            if self.buf.is_empty() && !complete {
                self.reader = None;
                continue;
            }
            let (seq, hash) = self.chain.unwrap_or_default();
            let bad = |kind, why: &str| AuditLogError::Damaged(damaged(kind, &self.name, Some(self.line), None, why));
            if !complete {
                if self.next_segment >= self.segments.len() {
                    return Ok(None);
                }
                return Err(bad(K::Truncated, "segment ends inside a line"));
            }
            if self.buf.starts_with(CP_PREFIX) {
                match parse_checkpoint(&self.buf) {
                    Some(c) if c.cp.seq == seq && c.cp.hash == hash => continue,
                    Some(_) => return Err(bad(K::Modified, "checkpoint disagrees with the chain")),
                    None => return Err(bad(K::Malformed, "not a valid checkpoint line")),
                }
            }
            let Some(r) = parse_record(&self.buf) else {
                return Err(bad(K::Malformed, "not a valid record line"));
            };
            if record_hash(r.seq, &r.prev, r.event) != r.hash {
                return Err(bad(K::Modified, "record bytes do not match its hash"));
            }
            if Some(r.seq) != seq.checked_add(1) || r.prev != hash {
                return Err(bad(K::Modified, "record does not continue the chain"));
            }
            self.chain = Some((r.seq, r.hash));
            if r.seq >= self.from {
                return Ok(Some((r.seq, r.event.to_vec())));
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<(u64, Vec<u8>), AuditLogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
