//! The writer: one [`AuditLog`] per directory appends records to the active segment, writes
//! signed checkpoints and the signed head, rotates segments and applies retention.
//! Invariant: in memory (seq, hash) is always the state of the bytes handed to the file; after a
//! failed write the log is poisoned and must be reopened (open repairs only a torn last line).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::signature::Ed25519KeyPair;

use crate::error::{damaged, AuditLogError, ProblemKind as K};
use crate::format::{
    self, check_event, encode_record, record_hash, segment_name, Checkpoint, CpKind, GENESIS, HEAD_FILE, RETENTION_FILE,
};
use crate::verify::{check_signed_file, list_segments, split_lines, walk_segment};

/// When appended bytes are forced to disk.
///
/// The trade-off is durability against throughput: `Always` loses at most the record being
/// written on a power cut but costs one `fsync` per record; `Batch` (the default) loses at most
/// the batch in flight for one `fsync` per [`AuditLog::append_batch`] call (plus the head file's);
/// `Never` is fastest but a power cut may lose any amount of recent records, and since the OS
/// may then persist the head file before the records it names, reopening can fail with
/// `truncated` (a process crash alone loses nothing: the bytes are in the page cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fsync {
    Always,
    #[default]
    Batch,
    Never,
}

/// Where and how the log is written.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// A signed checkpoint after this many records (at least 1).
    pub checkpoint_every: u64,
    /// A segment is closed (rotated) once it has reached this size.
    pub segment_max_bytes: u64,
    pub fsync: Fsync,
}

impl LogConfig {
    /// Defaults: a checkpoint every 1000 records, 64 MiB segments, `Fsync::Batch`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig { dir: dir.into(), checkpoint_every: 1000, segment_max_bytes: 64 << 20, fsync: Fsync::Batch }
    }
}

/// What open found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// The directory held no log; segment 1 was started.
    pub created: bool,
    /// A torn last line (a crash in the middle of a write) that was cut off.
    pub torn: Option<TornTail>,
    /// The seq the next appended record gets.
    pub next_seq: u64,
    /// Complete records after the last signed head (their batch's head update did not land);
    /// kept, and signed now by the resume checkpoint.
    pub unsigned_records_adopted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: String,
    /// 1-based line number of the torn line.
    pub line: u64,
    pub bytes_cut: u64,
}

/// Which segments retention may delete: the oldest closed segments, while older than `max_age`
/// (by the time of their closing checkpoint) or while the log is larger than `max_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Segment files deleted, oldest first.
    pub deleted: Vec<String>,
    pub bytes_freed: u64,
    /// The first seq still in the log (the next to be written if no record is left).
    pub first_seq: u64,
}

/// An open, append-only audit log. One writer per directory.
///
/// Dropping it without [`AuditLog::close`] is like a crash after the last batch: nothing is lost
/// (the head was written), the close checkpoint is simply missing.
pub struct AuditLog {
    dir: PathBuf,
    every: u64,
    segment_max_bytes: u64,
    fsync: Fsync,
    // ring keeps the private key inside; the caller's seed is not copied by this crate.
    key: Ed25519KeyPair,
    public_key: [u8; 32],
    key_id: String,
    file: File,
    seg_num: u64,
    seg_bytes: u64,
    seg_records: u64,
    seq: u64,
    hash: [u8; 32],
    poisoned: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("key_id", &self.key_id)
            .field("segment", &segment_name(self.seg_num))
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AuditLogError + 'a {
    move |source| AuditLogError::Io { what, path: path.to_path_buf(), source }
}

fn sync_dir(dir: &Path) -> Result<(), AuditLogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", dir))
}

/// Write to a temp file, fsync, rename over `name`, fsync the directory: readers see the old or
/// the new content, never a mix.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<(), AuditLogError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(bytes).map_err(io_err("writing", &tmp))?;
    if sync {
        f.sync_all().map_err(io_err("syncing", &tmp))?;
    }
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

fn open_append(path: &Path) -> Result<File, AuditLogError> {
    OpenOptions::new().append(true).open(path).map_err(io_err("opening for append", path))
}

impl AuditLog {
    /// Opens the log in `config.dir` (created if missing), signing with the Ed25519 key derived
    /// from `seed`. Resumes an existing log: a torn last line is cut and reported; any other
    /// damage in the last segment or the head is an error. A resume checkpoint marks the restart.
    pub fn open(config: LogConfig, seed: &[u8; 32]) -> Result<(AuditLog, OpenReport), AuditLogError> {
        if config.checkpoint_every == 0 {
            return Err(AuditLogError::Config("checkpoint_every must be at least 1"));
        }
        if config.segment_max_bytes == 0 {
            return Err(AuditLogError::Config("segment_max_bytes must be at least 1"));
        }
        let key = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| AuditLogError::BadSeed)?;
        let public_key = format::public_key_of(&key);
        let key_id = format::key_id(&public_key);
        let dir = config.dir;
        std::fs::create_dir_all(&dir).map_err(io_err("creating directory", &dir))?;
        let segments = list_segments(&dir).map_err(io_err("listing", &dir))?;

        let Some((last_num, last_name)) = segments.last().cloned() else {
            for f in [HEAD_FILE, RETENTION_FILE] {
                if dir.join(f).exists() {
                    let why = format!("{f} exists but no segment file does");
                    return Err(AuditLogError::Damaged(damaged(K::MissingSegment, &segment_name(1), None, None, why)));
                }
            }
            let (file, seg_bytes) = create_segment(&dir, 1, 0, &GENESIS, config.checkpoint_every, &key, &key_id)?;
            let mut log = AuditLog {
                dir,
                every: config.checkpoint_every,
                segment_max_bytes: config.segment_max_bytes,
                fsync: config.fsync,
                key,
                public_key,
                key_id,
                file,
                seg_num: 1,
                seg_bytes,
                seg_records: 0,
                seq: 0,
                hash: GENESIS,
                poisoned: false,
            };
            log.write_head()?;
            let report = OpenReport { created: true, torn: None, next_seq: 1, unsigned_records_adopted: 0 };
            return Ok((log, report));
        };

        let head_path = dir.join(HEAD_FILE);
        let head_bytes = std::fs::read(&head_path).map_err(io_err("reading", &head_path))?;
        let head =
            check_signed_file(HEAD_FILE, &head_bytes, CpKind::Head, &public_key).map_err(AuditLogError::Damaged)?;

        let path = dir.join(&last_name);
        let data = std::fs::read(&path).map_err(io_err("reading", &path))?;
        let (lines, torn) = split_lines(&data);
        let body_len = data.len().saturating_sub(torn.len());
        let body = data.get(..body_len).unwrap_or_default();
        let mut hash_at_head = None;
        let mut seen = |seq: u64, hash: &[u8; 32]| {
            if seq == head.seq {
                hash_at_head = Some(*hash);
            }
        };
        let (chain, stats) =
            walk_segment(&last_name, body, None, &public_key, &mut seen).map_err(AuditLogError::Damaged)?;
        if head.seq > chain.seq {
            return Err(AuditLogError::Damaged(damaged(
                K::Truncated,
                &last_name,
                Some(stats.lines.saturating_add(1)),
                Some(chain.seq.saturating_add(1)),
                format!("signed head is at seq {}, the log ends at seq {}", head.seq, chain.seq),
            )));
        }
        if hash_at_head.is_some_and(|h| h != head.hash) {
            let why = "head hash differs from the chain";
            return Err(AuditLogError::Damaged(damaged(K::Modified, HEAD_FILE, Some(1), Some(head.seq), why)));
        }

        let torn_report = if torn.is_empty() {
            None
        } else {
            let f = OpenOptions::new().write(true).open(&path).map_err(io_err("opening to cut torn line", &path))?;
            f.set_len(body_len as u64).map_err(io_err("cutting torn line", &path))?;
            f.sync_all().map_err(io_err("syncing", &path))?;
            Some(TornTail { segment: last_name.clone(), line: lines.len() as u64 + 1, bytes_cut: torn.len() as u64 })
        };

        let mut log = AuditLog {
            dir,
            every: config.checkpoint_every,
            segment_max_bytes: config.segment_max_bytes,
            fsync: config.fsync,
            key,
            public_key,
            key_id,
            file: open_append(&path)?,
            seg_num: last_num,
            seg_bytes: body_len as u64,
            seg_records: stats.records,
            seq: chain.seq,
            hash: chain.hash,
            poisoned: false,
        };
        if stats.last_kind == Some(CpKind::Rotate) {
            // A crash between closing a full segment and starting the next: start it now.
            log.start_next_segment()?;
        } else {
            log.write_checkpoint(CpKind::Resume)?;
        }
        log.write_head()?;
        let report = OpenReport {
            created: false,
            torn: torn_report,
            next_seq: log.seq.saturating_add(1),
            unsigned_records_adopted: chain.seq.saturating_sub(head.seq.max(stats.signed_seq.unwrap_or(0))),
        };
        Ok((log, report))
    }

    /// Appends records (each a single-line JSON object) and returns the seqs they got. The whole
    /// batch is checked before anything is written; then written, flushed per the fsync policy,
    /// and the head is updated.
    pub fn append_batch(&mut self, records: &[&[u8]]) -> Result<Range<u64>, AuditLogError> {
        if self.poisoned {
            return Err(AuditLogError::Poisoned);
        }
        for (index, r) in records.iter().enumerate() {
            check_event(r).map_err(|reason| AuditLogError::InvalidRecord { index, reason })?;
        }
        let first = self.seq.checked_add(1).ok_or(AuditLogError::SeqExhausted)?;
        let end = first.checked_add(records.len() as u64).ok_or(AuditLogError::SeqExhausted)?;
        if records.is_empty() {
            return Ok(first..first);
        }
        let res = self.append_inner(records);
        if res.is_err() {
            self.poisoned = true;
        }
        res.map(|()| first..end)
    }

    fn append_inner(&mut self, records: &[&[u8]]) -> Result<(), AuditLogError> {
        let mut buf = Vec::new();
        for r in records {
            if self.seg_records > 0 && self.seg_bytes.saturating_add(buf.len() as u64) >= self.segment_max_bytes {
                self.write_raw(&buf)?;
                buf.clear();
                self.rotate()?;
            }
            let seq = self.seq.saturating_add(1);
            let hash = record_hash(seq, &self.hash, r);
            encode_record(&mut buf, seq, &self.hash, &hash, r);
            self.seq = seq;
            self.hash = hash;
            self.seg_records = self.seg_records.saturating_add(1);
            // At fixed seqs, so a reader knows where to expect one; rotation and resume
            // checkpoints only ever shorten the gap that verify allows (`every` records).
            if seq.is_multiple_of(self.every) {
                buf.extend_from_slice(&self.checkpoint_line(CpKind::Periodic));
            }
            if self.fsync == Fsync::Always {
                self.write_raw(&buf)?;
                buf.clear();
                self.sync()?;
            }
        }
        if !buf.is_empty() {
            self.write_raw(&buf)?;
            if self.fsync == Fsync::Batch {
                self.sync()?;
            }
        }
        self.write_head()
    }

    /// Writes a signed checkpoint now (and the head).
    pub fn checkpoint(&mut self) -> Result<(), AuditLogError> {
        if self.poisoned {
            return Err(AuditLogError::Poisoned);
        }
        let res = self.write_checkpoint(CpKind::Periodic).and_then(|()| self.write_head());
        if res.is_err() {
            self.poisoned = true;
        }
        res
    }

    /// Clean close: a signed close checkpoint, fsync (whatever the policy) and the head.
    pub fn close(mut self) -> Result<(), AuditLogError> {
        if self.poisoned {
            return Err(AuditLogError::Poisoned);
        }
        self.fsync = Fsync::Always;
        self.write_checkpoint(CpKind::Close)?;
        self.write_head()
    }

    /// (seq, hash) of the last record written (0 and zeros for an empty log).
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.seq, self.hash)
    }

    /// The Ed25519 public key that verifies this log.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// A stable id of the public key (16 hex digits of a SHA-256 over it), named in checkpoints.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Deletes whole oldest closed segments per `policy` (never the active one), after writing a
    /// signed retention marker that anchors the first kept segment, so the rest still verifies.
    pub fn apply_retention(&mut self, policy: Retention) -> Result<RetentionReport, AuditLogError> {
        self.apply_retention_at(policy, now_secs())
    }

    pub(crate) fn apply_retention_at(&mut self, policy: Retention, now: u64) -> Result<RetentionReport, AuditLogError> {
        if self.poisoned {
            return Err(AuditLogError::Poisoned);
        }
        let segments = list_segments(&self.dir).map_err(io_err("listing", &self.dir))?;
        let marker_path = self.dir.join(RETENTION_FILE);
        let marker_first = match std::fs::read(&marker_path) {
            Ok(b) => {
                let m = check_signed_file(RETENTION_FILE, &b, CpKind::Retention, &self.public_key)
                    .map_err(AuditLogError::Damaged)?;
                format::parse_segment_name(&m.segment).unwrap_or(0)
            }
            Err(_) => 0,
        };
        let mut sizes = Vec::with_capacity(segments.len());
        for (_, name) in &segments {
            let p = self.dir.join(name);
            sizes.push(std::fs::metadata(&p).map_err(io_err("reading metadata of", &p))?.len());
        }
        let mut total: u64 = sizes.iter().sum();
        let mut delete = Vec::new();
        for ((num, name), size) in segments.iter().zip(&sizes) {
            if *num >= self.seg_num {
                break;
            }
            let leftover = *num < marker_first;
            let too_big = policy.max_bytes.is_some_and(|max| total > max);
            let too_old = match policy.max_age {
                Some(age) if !leftover && !too_big => closed_at(&self.dir, name)?.saturating_add(age.as_secs()) <= now,
                _ => false,
            };
            if !(leftover || too_big || too_old) {
                break;
            }
            total = total.saturating_sub(*size);
            delete.push((name.clone(), *size));
        }
        let kept_num = segments.get(delete.len()).map(|(n, _)| *n).unwrap_or(self.seg_num);
        let kept_name = segment_name(kept_num);
        let kept_path = self.dir.join(&kept_name);
        let anchor = opening_checkpoint(&kept_path, &kept_name, &self.public_key)?;
        if delete.is_empty() {
            return Ok(RetentionReport { deleted: vec![], bytes_freed: 0, first_seq: anchor.seq.saturating_add(1) });
        }
        if kept_num > marker_first {
            let marker = Checkpoint {
                kind: CpKind::Retention,
                seq: anchor.seq,
                hash: anchor.hash,
                segment: kept_name,
                time: now,
                every: anchor.every,
            };
            write_atomic(&self.dir, RETENTION_FILE, &marker.encode(&self.key, &self.key_id), true)?;
        }
        let mut report = RetentionReport { first_seq: anchor.seq.saturating_add(1), ..RetentionReport::default() };
        for (name, size) in delete {
            let p = self.dir.join(&name);
            std::fs::remove_file(&p).map_err(io_err("deleting", &p))?;
            report.bytes_freed = report.bytes_freed.saturating_add(size);
            report.deleted.push(name);
        }
        sync_dir(&self.dir)?;
        Ok(report)
    }

    // ------------------------------------------------------------ internals

    fn checkpoint_line(&self, kind: CpKind) -> Vec<u8> {
        Checkpoint {
            kind,
            seq: self.seq,
            hash: self.hash,
            segment: segment_name(self.seg_num),
            time: now_secs(),
            every: self.every,
        }
        .encode(&self.key, &self.key_id)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), AuditLogError> {
        let path = self.dir.join(segment_name(self.seg_num));
        self.file.write_all(bytes).map_err(io_err("appending to", &path))?;
        self.seg_bytes = self.seg_bytes.saturating_add(bytes.len() as u64);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), AuditLogError> {
        let path = self.dir.join(segment_name(self.seg_num));
        self.file.sync_data().map_err(io_err("syncing", &path))
    }

    pub(crate) fn write_checkpoint(&mut self, kind: CpKind) -> Result<(), AuditLogError> {
        let line = self.checkpoint_line(kind);
        self.write_raw(&line)?;
        if self.fsync != Fsync::Never {
            self.sync()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), AuditLogError> {
        self.write_checkpoint(CpKind::Rotate)?;
        self.start_next_segment()
    }

    fn start_next_segment(&mut self) -> Result<(), AuditLogError> {
        let num = self.seg_num.checked_add(1).ok_or(AuditLogError::Config("segment numbers exhausted"))?;
        let (file, bytes) = create_segment(&self.dir, num, self.seq, &self.hash, self.every, &self.key, &self.key_id)?;
        self.file = file;
        self.seg_num = num;
        self.seg_bytes = bytes;
        self.seg_records = 0;
        Ok(())
    }

    fn write_head(&mut self) -> Result<(), AuditLogError> {
        let head = Checkpoint {
            kind: CpKind::Head,
            seq: self.seq,
            hash: self.hash,
            segment: segment_name(self.seg_num),
            time: now_secs(),
            every: self.every,
        };
        write_atomic(&self.dir, HEAD_FILE, &head.encode(&self.key, &self.key_id), self.fsync != Fsync::Never)
    }
}

/// A new segment appears whole (via rename) with its signed opening checkpoint, so a segment file
/// never exists without its anchor.
fn create_segment(
    dir: &Path,
    num: u64,
    seq: u64,
    hash: &[u8; 32],
    every: u64,
    key: &Ed25519KeyPair,
    key_id: &str,
) -> Result<(File, u64), AuditLogError> {
    let name = segment_name(num);
    let cp = Checkpoint { kind: CpKind::Open, seq, hash: *hash, segment: name.clone(), time: now_secs(), every };
    let line = cp.encode(key, key_id);
    write_atomic(dir, &name, &line, true)?;
    Ok((open_append(&dir.join(&name))?, line.len() as u64))
}

fn read_lines_of(path: &Path) -> Result<Vec<u8>, AuditLogError> {
    std::fs::read(path).map_err(io_err("reading", path))
}

/// Time of a closed segment's rotation checkpoint (its last line).
fn closed_at(dir: &Path, name: &str) -> Result<u64, AuditLogError> {
    let data = read_lines_of(&dir.join(name))?;
    let (lines, _) = split_lines(&data);
    lines
        .last()
        .and_then(|l| format::parse_checkpoint(l))
        .filter(|c| c.cp.kind == CpKind::Rotate)
        .map(|c| c.cp.time)
        .ok_or_else(|| {
            let n = Some(lines.len() as u64);
            AuditLogError::Damaged(damaged(
                K::MissingCheckpoint,
                name,
                n,
                None,
                "closed segment has no rotation checkpoint",
            ))
        })
}

fn opening_checkpoint(path: &Path, name: &str, public_key: &[u8]) -> Result<Checkpoint, AuditLogError> {
    let data = read_lines_of(path)?;
    let (lines, _) = split_lines(&data);
    let sc = lines.first().and_then(|l| format::parse_checkpoint(l)).filter(|c| c.cp.kind == CpKind::Open);
    match sc {
        Some(sc) if matches!(sc.check(public_key), format::SigCheck::Ok) => Ok(sc.cp),
        _ => Err(AuditLogError::Damaged(damaged(
            K::MissingCheckpoint,
            name,
            Some(1),
            None,
            "no valid signed opening checkpoint",
        ))),
    }
}
