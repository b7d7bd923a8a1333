//! The on-disk spool: `instance` (the random instance id), `cursor` (last acknowledged seq),
//! `lock`, and segments of records, one line each: `seg-<first seq>.spool` lines are
//! `<crc32 of the JSON, 8 hex digits> <AuditRecord JSON>`, so that reading one back needs a
//! checksum, not a JSON parse; `seg-<first seq>.ndjson` (written by shippers before checksums)
//! are plain JSON lines, still read (parsed) after an upgrade.
//! Invariants: seqs only grow, a segment's records all precede the next segment's first seq,
//! only the last segment is ever appended to, and a line is sent only once it is fsynced
//! (`durable`), so a torn last line (a crash mid-write) is never sent: it is cut on open.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use palisade_core::audit::AuditEvent;
use serde::Deserialize;

use crate::ShipperError;

const INSTANCE_FILE: &str = "instance";
const CURSOR_FILE: &str = "cursor";
const CURSOR_TMP: &str = "cursor.tmp";
const LOCK_FILE: &str = "lock";
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".spool";
const OLD_SEGMENT_SUFFIX: &str = ".ndjson";
/// Bytes in front of a record's JSON in a `.spool` line: 8 hex digits and a space.
pub(crate) const LINE_PREFIX: usize = 9;

/// How a segment's lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Format {
    /// `.ndjson`, before checksums: a line is a record if it parses as one.
    Json,
    /// `.spool`: a line is a record if its checksum matches.
    Checksummed,
}

/// A segment file: its first seq, path and format.
#[derive(Debug, Clone)]
pub(crate) struct SegmentFile {
    pub(crate) first: u64,
    pub(crate) path: PathBuf,
    pub(crate) format: Format,
}

/// The name of a segment this shipper writes (always checksummed).
pub(crate) fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<(u64, Format)> {
    let rest = name.strip_prefix(SEGMENT_PREFIX)?;
    let (digits, format) = match rest.strip_suffix(SEGMENT_SUFFIX) {
        Some(d) => (d, Format::Checksummed),
        None => (rest.strip_suffix(OLD_SEGMENT_SUFFIX)?, Format::Json),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, format))
}

/// The segments in `dir`, by first seq (an old-format one before a new one of the same first seq).
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some((first, format)) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push(SegmentFile { first, path: entry.path(), format });
        }
    }
    out.sort_unstable_by_key(|s| (s.first, s.format));
    Ok(out)
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

fn id_seq(id: &[u8]) -> Option<u64> {
    let dash = id.iter().rposition(|&b| b == b'-')?;
    let seq = id.get(dash.saturating_add(1)..)?;
    if seq.is_empty() || seq.len() > 20 || !seq.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(seq).ok()?.parse().ok()
}

/// The seq of one old-format spool line (`{"id":"<instance>-<seq>",...}`), or `None` if the line
/// is not a record. Parses the whole line.
pub(crate) fn line_seq(line: &[u8]) -> Option<u64> {
    let parsed: IdOnly<'_> = serde_json::from_slice(line).ok()?;
    id_seq(parsed.id.as_bytes())
}

/// The 8-hex-digit, space prefix of a checksummed line holding `json`.
pub(crate) fn line_prefix(json: &[u8]) -> [u8; LINE_PREFIX] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let crc = crc32fast::hash(json);
    let mut out = [b' '; LINE_PREFIX];
    for (i, o) in out.iter_mut().take(8).enumerate() {
        let nibble = (crc >> (28 - 4 * i)) & 0xf;
        *o = HEX.get(nibble as usize).copied().unwrap_or(b'0');
    }
    out
}

/// A record line of either format (without its `\n`): its seq and where its JSON starts, or `None`
/// if it is not one (damaged). A checksummed line's seq is read from the id at the start of its
/// JSON, which the writer put there and the checksum vouches for; an old one is parsed.
pub(crate) fn record_in_line(line: &[u8], format: Format) -> Option<(u64, usize)> {
    match format {
        Format::Json => line_seq(line).map(|seq| (seq, 0)),
        Format::Checksummed => {
            let (prefix, json) = line.split_at_checked(LINE_PREFIX)?;
            if prefix != line_prefix(json) {
                return None;
            }
            let id = json.strip_prefix(b"{\"id\":\"")?;
            let end = id.iter().take(64).position(|&b| b == b'"')?;
            Some((id_seq(id.get(..end)?)?, LINE_PREFIX))
        }
    }
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl Fn(io::Error) -> ShipperError + 'a {
    move |e| ShipperError::Spool { path: path.to_owned(), what, source: e }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replace `dir/name` with `contents` atomically: temp file, fsync, rename, and (`sync_rename`)
/// fsync the directory, so that the rename itself survives a power loss.
fn write_atomic(dir: &Path, tmp: &str, name: &str, contents: &[u8], sync_rename: bool) -> io::Result<()> {
    let tmp = dir.join(tmp);
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode_0600().open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    if sync_rename {
        sync_dir(dir)?;
    }
    Ok(())
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}
impl Mode0600 for OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// Record that every seq up to `acked` was acknowledged by the server. Written once per batch:
/// the new cursor's contents are fsynced before the rename (a crash never leaves a torn cursor),
/// the rename is not (one fsync fewer per batch). A power loss can then bring back an older
/// cursor: the events after it are re-sent and the server, deduplicating by id, stores none twice.
pub(crate) fn write_cursor(dir: &Path, acked: u64) -> io::Result<()> {
    write_atomic(dir, CURSOR_TMP, CURSOR_FILE, format!("{acked}\n").as_bytes(), false)
}

/// The spool as found (and repaired) on open.
pub(crate) struct Opened {
    pub(crate) instance: String,
    pub(crate) acked: u64,
    /// Seq for the next record written: past every seq in the spool and the cursor.
    pub(crate) next_seq: u64,
    /// Bytes of all segment files.
    pub(crate) bytes: u64,
    /// Bytes cut off the last segment (a torn line).
    pub(crate) cut: u64,
    /// Held for as long as the spool is in use: a second shipper on the same directory fails.
    pub(crate) lock: File,
}

/// Open (creating, mode 0700) and repair the spool directory.
pub(crate) fn open_dir(dir: &Path) -> Result<Opened, ShipperError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), "audit spool directory is accessible to other users; expected mode 0700");
            }
        }
        Ok(_) => {
            return Err(ShipperError::Spool {
                path: dir.to_owned(),
                what: "using the spool directory",
                source: io::Error::new(io::ErrorKind::AlreadyExists, "not a directory"),
            })
        }
        Err(_) => DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir, "creating"))?,
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode_0600()
        .open(&lock_path)
        .map_err(io_err(&lock_path, "opening"))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(ShipperError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, "locking")(e)),
    }

    let instance = read_or_create_instance(dir)?;
    let acked = read_cursor(dir)?;
    let mut segments = list_segments(dir).map_err(io_err(dir, "listing"))?;
    let mut cut = 0u64;
    let mut last_seq = 0u64;
    if let Some(last) = segments.last() {
        let (seq, c, empty) = repair_last_segment(last)?;
        cut = c;
        // A non-empty segment's first seq is used even if none of its lines is readable, so the
        // writer's next segment never takes the same name.
        last_seq = if empty { last.first.saturating_sub(1) } else { seq.max(last.first) };
        if empty && last.format == Format::Json {
            // An empty old-format segment: the writer's first (new-format) segment would start at
            // the same seq. Nothing in it, so nothing is lost.
            std::fs::remove_file(&last.path).map_err(io_err(&last.path, "removing"))?;
            segments.pop();
        }
    }
    let mut bytes = 0u64;
    for s in &segments {
        bytes = bytes.saturating_add(std::fs::metadata(&s.path).map_err(io_err(&s.path, "reading"))?.len());
    }
    let next_seq = acked.max(last_seq).saturating_add(1);
    Ok(Opened { instance, acked, next_seq, bytes, cut, lock })
}

fn read_or_create_instance(dir: &Path) -> Result<String, ShipperError> {
    let path = dir.join(INSTANCE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let id = s.trim_end();
            if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(ShipperError::Corrupt { path, detail: "expected 32 lowercase hex digits".into() });
            }
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use ring::rand::SecureRandom;
            let mut raw = [0u8; 16];
            ring::rand::SystemRandom::new().fill(&mut raw).map_err(|_| ShipperError::Random)?;
            let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            write_atomic(dir, "instance.tmp", INSTANCE_FILE, format!("{id}\n").as_bytes(), true)
                .map_err(io_err(&path, "writing"))?;
            Ok(id)
        }
        Err(e) => Err(io_err(&path, "reading")(e)),
    }
}

fn read_cursor(dir: &Path) -> Result<u64, ShipperError> {
    let path = dir.join(CURSOR_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            s.trim_end().parse().map_err(|_| ShipperError::Corrupt { path, detail: "expected a decimal seq".into() })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(&path, "reading")(e)),
    }
}

/// Cut a torn last line off the last segment (fsynced); return its highest seq, the bytes cut
/// and whether it is empty now.
fn repair_last_segment(segment: &SegmentFile) -> Result<(u64, u64, bool), ShipperError> {
    let path = &segment.path;
    let mut data = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut data)).map_err(io_err(path, "reading"))?;
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i.saturating_add(1));
    let cut = data.len().saturating_sub(keep) as u64;
    if cut > 0 {
        let f = OpenOptions::new().write(true).open(path).map_err(io_err(path, "repairing"))?;
        f.set_len(keep as u64).map_err(io_err(path, "repairing"))?;
        f.sync_all().map_err(io_err(path, "repairing"))?;
        tracing::warn!(segment = %path.display(), bytes = cut, "audit spool: cut a torn last line (crash mid-write); it was never sent");
    }
    let max = data
        .get(..keep)
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .filter_map(|line| record_in_line(line, segment.format).map(|(seq, _)| seq))
        .max()
        .unwrap_or(0);
    Ok((max, cut, keep == 0))
}

/// What happened to one event handed to [`SpoolWriter::append`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    Written,
    /// The spool cap would be exceeded: the event was dropped.
    Full,
}

/// A write or fsync failed: the segment is abandoned (the next line starts a new one) and the
/// `lost` events not yet known durable are dropped. Their seqs stay used: part of them may be on
/// disk, and a seq must never name two events.
#[derive(Debug)]
pub(crate) struct WriteFailed {
    pub(crate) error: io::Error,
    pub(crate) lost: u64,
}

/// Durable records, serialized once: the NDJSON lines as written to the spool (without the
/// checksum prefix), handed to the sender as they are. `lines` holds each line's seq and end
/// offset in `data`.
pub(crate) struct Chunk {
    pub(crate) data: bytes::Bytes,
    pub(crate) lines: Vec<(u64, usize)>,
}

impl Chunk {
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.lines.last().map(|(seq, _)| *seq)
    }
}

struct Segment {
    file: File,
    /// Bytes in the file plus the bytes of this tick's lines meant for it, not yet written.
    bytes: u64,
}

/// Appends records to the last segment; owned by the writer thread. One tick's lines are
/// serialized into one buffer, copied with their checksum prefixes into a second (reused) one,
/// written with one `write` per segment and fsynced once; the first buffer becomes the [`Chunk`]
/// the sender ships.
pub(crate) struct SpoolWriter {
    dir: PathBuf,
    instance: String,
    next_seq: u64,
    current: Option<Segment>,
    segment_bytes: u64,
    max_spool_bytes: u64,
    spool_bytes: Arc<AtomicU64>,
    /// Segments created so far (the sender deletes acknowledged ones only after one is).
    rolls: Arc<AtomicU64>,
    /// This tick's lines; `buf[..written]` is written and fsynced, as are `lines[..synced]`.
    buf: Vec<u8>,
    lines: Vec<(u64, usize)>,
    written: usize,
    synced: usize,
    /// The bytes of one `write`: lines with their checksum prefixes.
    file_buf: Vec<u8>,
}

impl SpoolWriter {
    pub(crate) fn new(
        dir: PathBuf,
        instance: String,
        next_seq: u64,
        segment_bytes: u64,
        max_spool_bytes: u64,
        spool_bytes: Arc<AtomicU64>,
        rolls: Arc<AtomicU64>,
    ) -> SpoolWriter {
        SpoolWriter {
            dir,
            instance,
            next_seq,
            current: None,
            segment_bytes,
            max_spool_bytes,
            spool_bytes,
            rolls,
            buf: Vec::new(),
            lines: Vec::new(),
            written: 0,
            synced: 0,
            file_buf: Vec::new(),
        }
    }

    /// Give `event` the next id and serialize it into this tick's buffer ([`SpoolWriter::sync`]
    /// writes and fsyncs it). A full segment is completed (written, fsynced) before the next is
    /// created: the spool reader relies on it.
    pub(crate) fn append(&mut self, event: &AuditEvent) -> Result<Appended, WriteFailed> {
        let seq = self.next_seq;
        let start = self.buf.len();
        serialize_record(&mut self.buf, &self.instance, seq, event);
        // Bytes in the file: the line and its checksum prefix.
        let len = (self.buf.len().saturating_sub(start) as u64).saturating_add(LINE_PREFIX as u64);
        let unwritten_lines = self.lines.len().saturating_sub(self.synced) as u64;
        let unwritten = (start.saturating_sub(self.written) as u64)
            .saturating_add(unwritten_lines.saturating_mul(LINE_PREFIX as u64));
        if self.spool_bytes.load(Ordering::Acquire).saturating_add(unwritten).saturating_add(len) > self.max_spool_bytes
        {
            self.buf.truncate(start);
            return Ok(Appended::Full);
        }
        if self.current.as_ref().is_some_and(|s| s.bytes >= self.segment_bytes) {
            let done = self.write_out(start);
            self.current = None;
            if let Err(error) = done {
                return Err(self.fail(error, 1));
            }
        }
        if self.current.is_none() {
            if let Err(error) = self.open_segment(seq) {
                return Err(self.fail(error, 1));
            }
        }
        if let Some(s) = &mut self.current {
            s.bytes = s.bytes.saturating_add(len);
        }
        self.next_seq = seq.saturating_add(1);
        self.lines.push((seq, self.buf.len()));
        Ok(Appended::Written)
    }

    fn open_segment(&mut self, first: u64) -> io::Result<()> {
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new().append(true).create(true).mode_0600().open(&path)?;
        let bytes = file.metadata()?.len();
        sync_dir(&self.dir)?;
        self.current = Some(Segment { file, bytes });
        self.rolls.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Write `buf[written..upto]` (whole lines), each behind its checksum prefix, to the current
    /// segment and fsync it.
    fn write_out(&mut self, upto: usize) -> io::Result<()> {
        let Some(segment) = &mut self.current else { return Ok(()) };
        let upto_line = self.lines.partition_point(|(_, end)| *end <= upto);
        let file_buf = &mut self.file_buf;
        file_buf.clear();
        let mut start = self.written;
        for (_, end) in self.lines.get(self.synced..upto_line).unwrap_or_default() {
            let line = self.buf.get(start..*end).unwrap_or_default();
            start = *end;
            let json = line.strip_suffix(b"\n").unwrap_or(line);
            file_buf.extend_from_slice(&line_prefix(json));
            file_buf.extend_from_slice(line);
        }
        if !file_buf.is_empty() {
            // Counted even if the write fails part way: an over-count only makes the cap stricter.
            self.spool_bytes.fetch_add(file_buf.len() as u64, Ordering::AcqRel);
            segment.file.write_all(file_buf)?;
            segment.file.sync_data()?;
        }
        self.written = upto;
        self.synced = upto_line;
        Ok(())
    }

    /// Drop everything after the last fsync (and `extra` events not in the buffer), abandon the segment.
    fn fail(&mut self, error: io::Error, extra: u64) -> WriteFailed {
        let lost = self.lines.len().saturating_sub(self.synced) as u64;
        self.buf.truncate(self.written);
        self.lines.truncate(self.synced);
        self.current = None;
        WriteFailed { error, lost: lost.saturating_add(extra) }
    }

    /// Write and fsync this tick's lines; returns them, serialized, if there are any durable
    /// ones, and the failure if the last write or fsync failed.
    pub(crate) fn sync(&mut self) -> (Option<Chunk>, Option<WriteFailed>) {
        let mut failed = None;
        if self.written < self.buf.len() {
            if let Err(error) = self.write_out(self.buf.len()) {
                failed = Some(self.fail(error, 0));
            }
        }
        // The next tick's buffers start at this tick's size: no growing (copying) them line by line.
        let (size, count) = (self.buf.len(), self.lines.len());
        let chunk = (!self.lines.is_empty()).then(|| Chunk {
            data: bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(size))),
            lines: std::mem::replace(&mut self.lines, Vec::with_capacity(count)),
        });
        self.buf.clear();
        self.written = 0;
        self.synced = 0;
        (chunk, failed)
    }
}

/// Serialize `{"id":"<instance>-<seq>",<the event's fields>}\n` into `out`, byte for byte what
/// `serde_json` makes of an [`AuditRecord`], without building one (the event is not cloned and
/// `flatten` is not used).
pub(crate) fn serialize_record(out: &mut Vec<u8>, instance: &str, seq: u64, event: &AuditEvent) {
    // The instance id is 32 lowercase hex digits (checked on open): nothing in the id needs escaping.
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(instance.as_bytes());
    out.push(b'-');
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b"\",");
    event.write_members(out);
    out.extend_from_slice(b"}\n");
}

/// The records of one request.
pub(crate) struct Batch {
    pub(crate) body: bytes::Bytes,
    pub(crate) count: u64,
    pub(crate) last_seq: u64,
}

/// Reads durable, unacknowledged records in seq order; owned by the sender.
pub(crate) struct SpoolReader {
    dir: PathBuf,
    /// Seq of the last record handed out (initially the cursor).
    last_seq: u64,
    /// First seq (name) and read offset of the segment being read.
    segment: Option<(u64, u64)>,
    /// Lines skipped because they are not records (counted for stats).
    pub(crate) skipped: u64,
    /// The segment file kept open between batches, with what it has read ahead: its first seq
    /// and the offset the reader is at (a batch usually ends inside the buffered data).
    open: Option<(u64, u64, BufReader<File>)>,
    line: Vec<u8>,
}

/// Put the last `n` bytes read back (cheap while they are still buffered).
fn unread(reader: &mut BufReader<File>, n: usize) -> io::Result<()> {
    let back = i64::try_from(n).map_err(io::Error::other)?;
    reader.seek_relative(back.saturating_neg())
}

impl SpoolReader {
    pub(crate) fn new(dir: PathBuf, acked: u64) -> SpoolReader {
        SpoolReader { dir, last_seq: acked, segment: None, skipped: 0, open: None, line: Vec::new() }
    }

    /// The next batch of records with seq in `(last handed out, durable]`, at most `max_events`
    /// records and `max_bytes` bytes (unless one record alone is larger); `None` if there is none yet.
    /// A checksummed line is checked, not parsed; a line that is not a record is skipped and counted.
    pub(crate) fn next_batch(&mut self, durable: u64, max_events: u64, max_bytes: usize) -> io::Result<Option<Batch>> {
        let mut body = Vec::new();
        let mut count = 0u64;
        let mut last = self.last_seq;
        'segments: loop {
            let segments = list_segments(&self.dir)?;
            let (first, mut offset) = match self.segment {
                Some(s) => s,
                None => {
                    // The segment that may hold last_seq + 1: the last one starting at or before it.
                    let want = self.last_seq.saturating_add(1);
                    let pick = segments.iter().rev().find(|s| s.first <= want).or(segments.first());
                    match pick {
                        Some(s) => (s.first, 0),
                        None => break,
                    }
                }
            };
            let next_segment = segments.iter().find(|s| s.first > first).map(|s| s.first);
            let Some(segment) = segments.iter().find(|s| s.first == first) else {
                // Deleted (fully acknowledged): move on.
                self.segment = next_segment.map(|n| (n, 0));
                if next_segment.is_some() {
                    continue 'segments;
                }
                break 'segments;
            };
            let (path, format) = (&segment.path, segment.format);
            let mut rechecked = false;
            loop {
                let mut reader = match self.open.take() {
                    Some((f, at, r)) if f == first && at == offset => r,
                    _ => {
                        let file = match File::open(path) {
                            Ok(f) => f,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                self.segment = next_segment.map(|n| (n, 0));
                                if next_segment.is_some() {
                                    continue 'segments;
                                }
                                break 'segments;
                            }
                            Err(e) => return Err(e),
                        };
                        let mut r = BufReader::with_capacity(256 * 1024, file);
                        r.seek(SeekFrom::Start(offset))?;
                        r
                    }
                };
                let line = &mut self.line;
                let mut stop = false;
                let torn = loop {
                    line.clear();
                    let n = reader.read_until(b'\n', line)?;
                    if n == 0 {
                        break false;
                    }
                    let Some(text) = line.strip_suffix(b"\n") else {
                        // Not complete (yet): read it again next time.
                        unread(&mut reader, n)?;
                        break true;
                    };
                    let Some((seq, json)) = record_in_line(text, format) else {
                        self.skipped = self.skipped.saturating_add(1);
                        tracing::error!(segment = %path.display(), offset, "audit spool: skipped a line that is not a record");
                        offset = offset.saturating_add(n as u64);
                        continue;
                    };
                    if seq <= last {
                        offset = offset.saturating_add(n as u64);
                        continue;
                    }
                    let record = line.get(json..).unwrap_or_default();
                    if seq > durable
                        || (count > 0 && (count >= max_events || body.len().saturating_add(record.len()) > max_bytes))
                    {
                        unread(&mut reader, n)?;
                        stop = true;
                        break false;
                    }
                    body.extend_from_slice(record);
                    count = count.saturating_add(1);
                    last = seq;
                    offset = offset.saturating_add(n as u64);
                };
                self.segment = Some((first, offset));
                self.open = Some((first, offset, reader));
                if stop {
                    break 'segments;
                }
                let Some(next) = next_segment else { break 'segments };
                if !rechecked {
                    // The writer completes a segment before it creates the next: read once more
                    // now that a next one is known to exist.
                    rechecked = true;
                    continue;
                }
                if torn {
                    self.skipped = self.skipped.saturating_add(1);
                    tracing::error!(segment = %path.display(), offset, "audit spool: skipped a torn line at the end of a segment");
                }
                self.segment = Some((next, 0));
                self.open = None;
                continue 'segments;
            }
        }
        self.last_seq = last;
        if count == 0 {
            return Ok(None);
        }
        Ok(Some(Batch { body: bytes::Bytes::from(body), count, last_seq: last }))
    }
}

/// Delete every segment whose records are all acknowledged (`<= acked`), never the last one.
/// Returns the bytes freed and the number of segments left.
pub(crate) fn delete_acked(dir: &Path, acked: u64) -> io::Result<(u64, usize)> {
    let segments = list_segments(dir)?;
    let mut freed = 0u64;
    let mut left = segments.len();
    for pair in segments.windows(2) {
        let [this, next] = pair else { continue };
        if next.first.saturating_sub(1) > acked {
            break;
        }
        let len = std::fs::metadata(&this.path).map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&this.path) {
            Ok(()) => freed = freed.saturating_add(len),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        left = left.saturating_sub(1);
    }
    Ok((freed, left))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::audit::{AuditRecord, Decision, Stage};

    pub(crate) fn event(n: u64) -> AuditEvent {
        AuditEvent {
            time: "2026-11-26T03:00:00.000Z".into(),
            source: "gateway".into(),
            service: None,
            request_id: format!("r{n}"),
            decision: Decision::Deny,
            stage: Stage::Authz,
            reason: "no policy allows".into(),
            principal: "User::\"alice\"".into(),
            client_id: None,
            auth_method: None,
            route: "api".into(),
            method: "GET".into(),
            path: "/x".into(),
            client_ip: "127.0.0.1".into(),
            policy_ids: vec![],
            status: 403,
            latency_ms: 0.5,
            waf: Vec::new(),
        }
    }

    fn writer(dir: &Path, o: &Opened, segment_bytes: u64, max: u64, bytes: &Arc<AtomicU64>) -> SpoolWriter {
        SpoolWriter::new(
            dir.to_owned(),
            o.instance.clone(),
            o.next_seq,
            segment_bytes,
            max,
            bytes.clone(),
            Arc::default(),
        )
    }

    #[test]
    fn segment_names_sort_and_parse() {
        assert_eq!(segment_name(42), "seg-00000000000000000042.spool");
        assert_eq!(parse_segment_name("seg-00000000000000000042.spool"), Some((42, Format::Checksummed)));
        assert_eq!(parse_segment_name("seg-00000000000000000042.ndjson"), Some((42, Format::Json)));
        assert_eq!(parse_segment_name("seg-.ndjson"), None);
        assert_eq!(parse_segment_name("seg-+1.spool"), None);
        assert_eq!(parse_segment_name("seg-1.spool.tmp"), None);
        assert_eq!(parse_segment_name("cursor"), None);
        assert_eq!(line_seq(br#"{"id":"ab-17","x":1}"#), Some(17));
        assert_eq!(line_seq(br#"{"id":"ab-","x":1}"#), None);
        assert_eq!(line_seq(br#"{"id":"ab-1"#), None);
        assert_eq!(line_seq(b"\xff"), None);
    }

    #[test]
    fn writes_reads_in_batches_rolls_and_deletes_acked_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        let o = open_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!((o.acked, o.next_seq, o.bytes, o.cut), (0, 1, 0, 0));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut w = writer(&dir, &o, 4096, 1 << 20, &bytes);
        for n in 1..=100 {
            assert_eq!(w.append(&event(n)).unwrap(), Appended::Written);
        }
        let (chunk, failed) = w.sync();
        assert!(failed.is_none());
        let chunk = chunk.unwrap();
        assert_eq!((chunk.lines.len(), chunk.last_seq()), (100, Some(100)));
        assert_eq!(chunk.lines.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>());
        assert!(matches!(w.sync(), (None, None)));
        let segments = list_segments(&dir).unwrap();
        assert!(segments.len() > 3, "{}", segments.len());
        let on_disk: u64 = segments.iter().map(|s| std::fs::metadata(&s.path).unwrap().len()).sum();
        assert_eq!(bytes.load(Ordering::Acquire), on_disk);
        assert_eq!(on_disk, chunk.data.len() as u64 + 100 * LINE_PREFIX as u64);
        // The chunk handed to the sender is the spool's lines, each without its checksum prefix.
        let files: Vec<u8> = segments.iter().flat_map(|s| std::fs::read(&s.path).unwrap()).collect();
        let mut unprefixed = Vec::new();
        for line in files.split_inclusive(|&b| b == b'\n') {
            let (prefix, rest) = line.split_at(LINE_PREFIX);
            assert_eq!(prefix, &line_prefix(rest.strip_suffix(b"\n").unwrap())[..]);
            unprefixed.extend_from_slice(rest);
        }
        assert_eq!(&chunk.data[..], &unprefixed[..]);
        let mut start = 0;
        for (seq, end) in &chunk.lines {
            assert_eq!(line_seq(&chunk.data[start..*end]), Some(*seq));
            start = *end;
        }

        let mut r = SpoolReader::new(dir.clone(), 0);
        // Only durable records: nothing beyond seq 30.
        let b = r.next_batch(30, 7, 1 << 20).unwrap().unwrap();
        assert_eq!((b.count, b.last_seq), (7, 7));
        let mut seen = 7;
        while let Some(b) = r.next_batch(30, 7, 1 << 20).unwrap() {
            seen += b.count;
            assert_eq!(b.last_seq, seen);
        }
        assert_eq!(seen, 30);
        let b = r.next_batch(100, 1000, 2000).unwrap().unwrap();
        assert!(b.body.len() <= 2000 && b.count > 1);
        let lines: Vec<_> =
            b.body.split(|&c| c == b'\n').filter(|l| !l.is_empty()).map(|l| line_seq(l).unwrap()).collect();
        assert_eq!(lines, (31..31 + b.count).collect::<Vec<_>>());

        let (freed, _) = delete_acked(&dir, 50).unwrap();
        let left = list_segments(&dir).unwrap();
        assert!(freed > 0 && left.len() < segments.len());
        assert!(left.first().unwrap().first <= 51, "a segment holding seq 51 must stay");
        // Everything acknowledged: the last segment still stays.
        assert_eq!(delete_acked(&dir, 100).unwrap().1, 1);
        assert_eq!(list_segments(&dir).unwrap().len(), 1);
    }

    #[test]
    fn reopen_cuts_a_torn_line_continues_seq_and_is_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let o = open_dir(&dir).unwrap();
        assert!(matches!(open_dir(&dir), Err(ShipperError::Locked(_))));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut w = writer(&dir, &o, 1 << 20, 1 << 20, &bytes);
        for n in 1..=5 {
            w.append(&event(n)).unwrap();
        }
        assert_eq!(w.sync().0.unwrap().lines.len(), 5);
        let instance = o.instance.clone();
        drop((w, o));
        let seg = list_segments(&dir).unwrap().pop().unwrap().path;
        let good = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new().append(true).open(&seg).unwrap().write_all(br#"{"id":"x-6","ti"#).unwrap();
        write_cursor(&dir, 2).unwrap();
        let o = open_dir(&dir).unwrap();
        assert_eq!((o.instance.as_str(), o.acked, o.next_seq, o.cut, o.bytes), (instance.as_str(), 2, 6, 15, good));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), good);
        let mut r = SpoolReader::new(dir.clone(), o.acked);
        let b = r.next_batch(5, 100, 1 << 20).unwrap().unwrap();
        assert_eq!((b.count, b.last_seq), (3, 5));
    }

    #[test]
    fn a_line_is_byte_for_byte_the_serialized_audit_record() {
        let mut e = event(7);
        e.service = Some("spiffe://x/\"quoted\"\n".into());
        e.policy_ids = vec!["p1".into(), "p\u{e9}".into()];
        e.waf = vec![palisade_core::audit::WafHit {
            rule: 942100,
            msg: "SQLi <x>".into(),
            var: "ARGS:id".into(),
            severity: Some(2),
        }];
        e.latency_ms = 0.1 + 0.2;
        for (ev, seq) in [(event(1), 1u64), (e, u64::MAX)] {
            let mut out = b"previous line\n".to_vec();
            serialize_record(&mut out, "0123456789abcdef0123456789abcdef", seq, &ev);
            let record = AuditRecord { id: format!("0123456789abcdef0123456789abcdef-{seq}"), event: ev };
            let mut want = b"previous line\n".to_vec();
            want.extend(serde_json::to_vec(&record).unwrap());
            want.push(b'\n');
            assert_eq!(String::from_utf8(out.clone()).unwrap(), String::from_utf8(want).unwrap());
            let line = out.get(14..out.len() - 1).unwrap();
            assert_eq!(serde_json::from_slice::<AuditRecord>(line).unwrap(), record);
        }
    }

    #[test]
    fn full_spool_drops_and_corrupt_files_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let o = open_dir(&dir).unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let mut w = writer(&dir, &o, 4096, 2000, &bytes);
        let mut written = 0;
        for n in 1..=20 {
            if w.append(&event(n)).unwrap() == Appended::Written {
                written += 1;
            }
        }
        let line = serde_json::to_vec(&AuditRecord { id: format!("{}-1", o.instance), event: event(1) }).unwrap().len()
            + 1
            + LINE_PREFIX;
        assert_eq!(written, 2000 / line as u64);
        drop((w, o));
        std::fs::write(dir.join(CURSOR_FILE), "seven\n").unwrap();
        assert!(matches!(open_dir(&dir), Err(ShipperError::Corrupt { .. })));
        std::fs::write(dir.join(CURSOR_FILE), "7\n").unwrap();
        std::fs::write(dir.join(INSTANCE_FILE), "nothex\n").unwrap();
        assert!(matches!(open_dir(&dir), Err(ShipperError::Corrupt { .. })));
    }

    #[test]
    fn a_checksummed_line_is_checked_not_parsed() {
        let mut json = Vec::new();
        serialize_record(&mut json, "0123456789abcdef0123456789abcdef", 4711, &event(1));
        json.pop();
        // CRC-32 (IEEE) of "123456789" is cbf43926 (the check value of the standard).
        assert_eq!(&line_prefix(b"123456789"), b"cbf43926 ");
        let line = [&line_prefix(&json)[..], &json].concat();
        assert_eq!(record_in_line(&line, Format::Checksummed), Some((4711, LINE_PREFIX)));
        // One changed byte anywhere (here inside a string, still valid JSON): not a record.
        let mut changed = line.clone();
        let at = changed.windows(5).position(|w| w == b"alice").unwrap();
        changed[at] = b'A';
        assert!(serde_json::from_slice::<AuditRecord>(&changed[LINE_PREFIX..]).is_ok());
        assert_eq!(record_in_line(&changed, Format::Checksummed), None);
        let mut prefix_changed = line.clone();
        prefix_changed[0] = if prefix_changed[0] == b'0' { b'1' } else { b'0' };
        assert_eq!(record_in_line(&prefix_changed, Format::Checksummed), None);
        assert_eq!(record_in_line(&line[..5], Format::Checksummed), None);
        assert_eq!(record_in_line(b"", Format::Checksummed), None);
        // An old-format line is a record if it parses; a checksummed one read as old is not.
        assert_eq!(record_in_line(&json, Format::Json), Some((4711, 0)));
        assert_eq!(record_in_line(&line, Format::Json), None);
        assert_eq!(record_in_line(&json, Format::Checksummed), None);
    }

    /// An old-format segment as a shipper before checksums wrote it: JSON lines for `seqs`.
    fn old_segment(dir: &Path, instance: &str, seqs: std::ops::RangeInclusive<u64>) -> PathBuf {
        let path = dir.join(format!("seg-{:020}.ndjson", seqs.start()));
        let mut out = Vec::new();
        for seq in seqs {
            serialize_record(&mut out, instance, seq, &event(seq));
        }
        std::fs::write(&path, out).unwrap();
        path
    }

    #[test]
    fn an_old_format_spool_is_read_after_an_upgrade_then_new_segments_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let o = open_dir(&dir).unwrap();
        let instance = o.instance.clone();
        drop(o);
        old_segment(&dir, &instance, 1..=4);
        let old = old_segment(&dir, &instance, 5..=7);
        // A torn old-format line at the end is cut, as before.
        OpenOptions::new().append(true).open(&old).unwrap().write_all(br#"{"id":"x-8","ti"#).unwrap();
        write_cursor(&dir, 2).unwrap();
        let o = open_dir(&dir).unwrap();
        assert_eq!((o.acked, o.next_seq, o.cut), (2, 8, 15));
        let bytes = Arc::new(AtomicU64::new(o.bytes));
        let mut w = writer(&dir, &o, 1 << 20, 1 << 20, &bytes);
        for n in 8..=10 {
            w.append(&event(n)).unwrap();
        }
        assert_eq!(w.sync().0.unwrap().last_seq(), Some(10));
        let names: Vec<String> =
            list_segments(&dir).unwrap().iter().map(|s| s.path.file_name().unwrap().to_str().unwrap().into()).collect();
        assert_eq!(
            names,
            ["seg-00000000000000000001.ndjson", "seg-00000000000000000005.ndjson", "seg-00000000000000000008.spool"]
        );
        let mut r = SpoolReader::new(dir.clone(), o.acked);
        let mut seqs = Vec::new();
        while let Some(b) = r.next_batch(10, 2, 1 << 20).unwrap() {
            for line in b.body.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
                let rec: AuditRecord = serde_json::from_slice(line).unwrap();
                assert_eq!(rec.event, event(line_seq(line).unwrap()));
                seqs.push(line_seq(line).unwrap());
            }
        }
        assert_eq!(seqs, (3..=10).collect::<Vec<_>>());
        assert_eq!(r.skipped, 0);
    }

    #[test]
    fn an_empty_old_format_last_segment_is_removed_so_names_never_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let o = open_dir(&dir).unwrap();
        let instance = o.instance.clone();
        drop(o);
        old_segment(&dir, &instance, 1..=3);
        let empty = dir.join(format!("seg-{:020}.ndjson", 4));
        std::fs::write(&empty, b"").unwrap();
        let o = open_dir(&dir).unwrap();
        assert_eq!(o.next_seq, 4);
        assert!(!empty.exists());
        drop(o);
        // A non-empty last segment whose lines are all unreadable still uses its first seq.
        std::fs::write(dir.join(format!("seg-{:020}.ndjson", 4)), b"garbage\n").unwrap();
        assert_eq!(open_dir(&dir).unwrap().next_seq, 5);
    }

    #[test]
    fn a_damaged_line_is_skipped_and_counted_and_reading_goes_on() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let o = open_dir(&dir).unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let mut w = writer(&dir, &o, 1 << 20, 1 << 20, &bytes);
        for n in 1..=6 {
            w.append(&event(n)).unwrap();
        }
        w.sync();
        let seg = list_segments(&dir).unwrap().pop().unwrap().path;
        let mut data = std::fs::read(&seg).unwrap();
        // Line 2: a changed digit in the request id (valid JSON still); line 4: a cut in the middle.
        let at = data.windows(3).position(|x| x == b"\"r2").unwrap();
        data[at + 2] = b'7';
        let lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
        let mut damaged = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            damaged.extend_from_slice(if i == 3 { &l[..40] } else { l });
            if i == 3 {
                damaged.push(b'\n');
            }
        }
        std::fs::write(&seg, &damaged).unwrap();
        let mut r = SpoolReader::new(dir.clone(), 0);
        let b = r.next_batch(6, 100, 1 << 20).unwrap().unwrap();
        let seqs: Vec<u64> =
            b.body.split(|&c| c == b'\n').filter(|l| !l.is_empty()).map(|l| line_seq(l).unwrap()).collect();
        assert_eq!(seqs, [1, 3, 5, 6]);
        assert_eq!((b.count, b.last_seq, r.skipped), (4, 6, 2));
    }

    #[test]
    fn the_open_reader_picks_up_appended_lines_and_a_line_completed_later() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let o = open_dir(&dir).unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let mut w = writer(&dir, &o, 1 << 20, 1 << 20, &bytes);
        for n in 1..=5 {
            w.append(&event(n)).unwrap();
        }
        w.sync();
        let mut r = SpoolReader::new(dir.clone(), 0);
        // Stops inside the buffered data (2 of 5), then goes on from there.
        assert_eq!(r.next_batch(5, 2, 1 << 20).unwrap().unwrap().last_seq, 2);
        assert_eq!(r.next_batch(5, 100, 1 << 20).unwrap().unwrap().last_seq, 5);
        assert!(r.next_batch(5, 100, 1 << 20).unwrap().is_none());
        // Seq 6, written in two halves (as a reader may see a write in progress).
        let mut json = Vec::new();
        serialize_record(&mut json, &o.instance, 6, &event(6));
        let line = [&line_prefix(json.strip_suffix(b"\n").unwrap())[..], &json].concat();
        let seg = list_segments(&dir).unwrap().pop().unwrap().path;
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&line[..100]).unwrap();
        assert!(r.next_batch(6, 100, 1 << 20).unwrap().is_none());
        f.write_all(&line[100..]).unwrap();
        let b = r.next_batch(6, 100, 1 << 20).unwrap().unwrap();
        assert_eq!((b.count, b.last_seq, r.skipped), (1, 6, 0));
        assert_eq!(&b.body[..], &json[..]);
    }
}
