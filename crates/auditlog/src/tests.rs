//! End-to-end tests: write real logs into temp dirs, tamper with copies, check what verify,
//! open and read_from say, with exact segment, line, seq and kind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::format::{parse_checkpoint, record_seq, segment_name, CpKind};
use crate::*;

const SEED: [u8; 32] = [0x42; 32];
const RECORDS: u64 = 310;
const EVERY: u64 = 25;

fn event(i: u64) -> Vec<u8> {
    format!(r#"{{"id":"r-{i:05}","decision":"deny","reason":"padding padding padding padding"}}"#).into_bytes()
}

fn config(dir: &Path) -> LogConfig {
    LogConfig { dir: dir.to_path_buf(), checkpoint_every: EVERY, segment_max_bytes: 7000, fsync: Fsync::Batch }
}

/// A log of `RECORDS` records in batches of 7, left open (dropped, not closed) so the file ends
/// with records; the last periodic checkpoint is at 300.
fn build(dir: &Path) -> [u8; 32] {
    let (mut log, report) = AuditLog::open(config(dir), &SEED).unwrap();
    assert!(report.created);
    let mut i = 1;
    while i <= RECORDS {
        let batch: Vec<Vec<u8>> = (i..(i + 7).min(RECORDS + 1)).map(event).collect();
        let refs: Vec<&[u8]> = batch.iter().map(|b| b.as_slice()).collect();
        let got = log.append_batch(&refs).unwrap();
        assert_eq!(got, i..i + refs.len() as u64);
        i += refs.len() as u64;
    }
    log.public_key()
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    let mut v: Vec<Vec<u8>> = data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    assert_eq!(v.pop().unwrap(), b"");
    v
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    std::fs::write(path, out).unwrap();
}

/// (segment, 1-based line) of the record with `seq`.
fn locate(dir: &Path, seq: u64) -> (String, usize) {
    for s in segments(dir) {
        for (i, l) in lines_of(&dir.join(&s)).iter().enumerate() {
            if record_seq(l) == Some(seq) {
                return (s, i + 1);
            }
        }
    }
    panic!("seq {seq} not found");
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

fn problem(dir: &Path, pk: &[u8]) -> Problem {
    match verify(dir, pk) {
        Err(VerifyError::Damaged(p)) => *p,
        other => panic!("expected damage, got {other:?}"),
    }
}

fn assert_problem(p: &Problem, kind: ProblemKind, segment: &str, line: Option<u64>, seq: Option<u64>) {
    assert_eq!((p.kind, p.segment.as_str(), p.line, p.seq), (kind, segment, line, seq), "{p}");
}

struct Template {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    pk: [u8; 32],
}

fn template() -> Template {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let pk = build(&dir);
    Template { dir, pk, _tmp: tmp }
}

#[test]
fn clean_log_with_rotation_verifies() {
    let t = template();
    let segs = segments(&t.dir);
    let n = segs.len() as u64;
    assert!(n >= 5, "{segs:?}");
    assert_eq!(segs[0], "000001.log");
    assert_eq!(segs.last().unwrap(), &segment_name(n));
    let r = verify(&t.dir, &t.pk).unwrap();
    // Every segment opens with a checkpoint, every closed one ends with one, plus 12 periodic.
    let periodic = RECORDS / EVERY;
    assert_eq!(
        r,
        VerifyReport {
            records: RECORDS,
            segments: n,
            first_seq: Some(1),
            last_seq: RECORDS,
            checkpoints: n + (n - 1) + periodic,
            head_seq: RECORDS,
            unsigned_tail: 0,
            retention_deleted_through: None,
            key_id: format::key_id(&t.pk),
        }
    );
    // The record bytes are embedded verbatim.
    let (seg, line) = locate(&t.dir, 42);
    let l = &lines_of(&t.dir.join(seg))[line - 1];
    assert!(l.ends_with(&[&b",\"event\":"[..], &event(42), b"}"].concat()));
    assert!(l.starts_with(b"{\"seq\":42,\"prev\":\""));
}

#[test]
fn edited_byte_is_modified() {
    let t = template();
    let d = copy_dir(&t.dir);
    let (seg, line) = locate(d.path(), 120);
    let p = d.path().join(&seg);
    let mut lines = lines_of(&p);
    let l = &mut lines[line - 1];
    let pos = l.windows(6).position(|w| w == b"r-0012").unwrap() + 5;
    l[pos] = b'9';
    write_lines(&p, &lines);
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::Modified, &seg, Some(line as u64), Some(120));
}

#[test]
fn deleted_line_is_deleted() {
    let t = template();
    let d = copy_dir(&t.dir);
    let (seg, line) = locate(d.path(), 120);
    let p = d.path().join(&seg);
    let mut lines = lines_of(&p);
    lines.remove(line - 1);
    write_lines(&p, &lines);
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::Deleted, &seg, Some(line as u64), Some(120));
}

#[test]
fn inserted_copy_is_inserted() {
    let t = template();
    // A copy of a record from an earlier segment, and one from the same segment.
    for src in [3u64, 118] {
        let d = copy_dir(&t.dir);
        let (src_seg, src_line) = locate(d.path(), src);
        let copy = lines_of(&d.path().join(&src_seg))[src_line - 1].clone();
        let (seg, line) = locate(d.path(), 120);
        let p = d.path().join(&seg);
        let mut lines = lines_of(&p);
        lines.insert(line, copy);
        write_lines(&p, &lines);
        assert_problem(&problem(d.path(), &t.pk), ProblemKind::Inserted, &seg, Some(line as u64 + 1), Some(src));
    }
    // A copy of a later record placed earlier.
    let d = copy_dir(&t.dir);
    let (seg, line) = locate(d.path(), 120);
    let p = d.path().join(&seg);
    let mut lines = lines_of(&p);
    let later = lines[line + 1].clone();
    assert_eq!(record_seq(&later), Some(122));
    lines.insert(line, later);
    write_lines(&p, &lines);
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::Inserted, &seg, Some(line as u64 + 1), Some(122));
}

#[test]
fn swapped_lines_are_reordered() {
    let t = template();
    let d = copy_dir(&t.dir);
    let (seg, line) = locate(d.path(), 120);
    assert_eq!(locate(d.path(), 121), (seg.clone(), line + 1));
    let p = d.path().join(&seg);
    let mut lines = lines_of(&p);
    lines.swap(line - 1, line);
    write_lines(&p, &lines);
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::Reordered, &seg, Some(line as u64), Some(121));
}

#[test]
fn file_cut_inside_a_line_is_truncated() {
    let t = template();
    let d = copy_dir(&t.dir);
    let (seg, line) = locate(d.path(), 305);
    let p = d.path().join(&seg);
    let lines = lines_of(&p);
    let mut data: Vec<u8> = lines[..line - 1].iter().flat_map(|l| [l.as_slice(), b"\n"].concat()).collect();
    data.extend_from_slice(&lines[line - 1][..40]);
    std::fs::write(&p, data).unwrap();
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::Truncated, &seg, Some(line as u64), Some(305));

    // In a middle segment too.
    let d = copy_dir(&t.dir);
    let (seg, line) = locate(d.path(), 60);
    assert_ne!(&seg, segments(d.path()).last().unwrap());
    let p = d.path().join(&seg);
    let lines = lines_of(&p);
    let mut data: Vec<u8> = lines[..line - 1].iter().flat_map(|l| [l.as_slice(), b"\n"].concat()).collect();
    data.extend_from_slice(&lines[line - 1][..10]);
    std::fs::write(&p, data).unwrap();
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::Truncated, &seg, Some(line as u64), Some(60));
}

#[test]
fn cut_tail_after_last_checkpoint_is_truncated_via_head() {
    let t = template();
    let d = copy_dir(&t.dir);
    let last = segments(d.path()).pop().unwrap();
    let p = d.path().join(&last);
    let mut lines = lines_of(&p);
    let k = 4;
    assert!(lines[lines.len() - k..].iter().all(|l| record_seq(l).is_some()), "{} lines in {last}", lines.len());
    lines.truncate(lines.len() - k);
    write_lines(&p, &lines);
    let p2 = problem(d.path(), &t.pk);
    assert_problem(&p2, ProblemKind::Truncated, &last, Some(lines.len() as u64 + 1), Some(RECORDS - k as u64 + 1));
    assert_eq!(
        p2.to_string(),
        format!(
            "{last} line {} (seq 307): truncated: signed head is at seq 310, the log ends at seq 306",
            lines.len() + 1
        )
    );
    // Open refuses it too rather than carrying on from 306.
    let err = AuditLog::open(config(d.path()), &SEED).unwrap_err();
    match err {
        AuditLogError::Damaged(p) => assert_eq!((p.kind, p.seq), (ProblemKind::Truncated, Some(307))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deleted_middle_segment_is_missing() {
    let t = template();
    let d = copy_dir(&t.dir);
    let (_, line) = locate(d.path(), 1);
    assert_eq!(line, 2);
    let first_of_3 = lines_of(&d.path().join("000003.log")).iter().find_map(|l| record_seq(l)).unwrap();
    std::fs::remove_file(d.path().join("000003.log")).unwrap();
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::MissingSegment, "000003.log", None, Some(first_of_3));

    // The first segment, with no retention marker.
    let d = copy_dir(&t.dir);
    std::fs::remove_file(d.path().join("000001.log")).unwrap();
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::MissingSegment, "000001.log", None, Some(1));
}

#[test]
fn bad_checkpoint_signature_and_wrong_key() {
    let t = template();
    let d = copy_dir(&t.dir);
    // The periodic checkpoint at seq 100 sits right after record 100.
    let (seg, line) = locate(d.path(), 100);
    let p = d.path().join(&seg);
    let mut lines = lines_of(&p);
    let cp = &mut lines[line];
    assert_eq!(parse_checkpoint(cp).unwrap().cp.kind, CpKind::Periodic);
    let pos = cp.windows(7).position(|w| w == b"\"sig\":\"").unwrap() + 7;
    cp[pos] = if cp[pos] == b'0' { b'1' } else { b'0' };
    write_lines(&p, &lines);
    let pr = problem(d.path(), &t.pk);
    assert_problem(&pr, ProblemKind::BadSignature, &seg, Some(line as u64 + 1), Some(100));
    assert_eq!(pr.kind.to_string(), "bad signature");

    let other = AuditLog::open(config(tempfile::tempdir().unwrap().path()), &[9; 32]).unwrap().0.public_key();
    assert_problem(&problem(&t.dir, &other), ProblemKind::BadSignature, "000001.log", Some(1), Some(0));
    assert!(matches!(verify(&t.dir, &other[..31]), Err(VerifyError::BadPublicKey(31))));
    // Opening with another seed is refused, not re-signed.
    let err = AuditLog::open(config(&t.dir), &[9; 32]).unwrap_err();
    assert!(matches!(err, AuditLogError::Damaged(ref p) if p.kind == ProblemKind::BadSignature), "{err}");
}

#[test]
fn removed_checkpoint_lines_are_detected() {
    let t = template();
    // A periodic checkpoint removed: the line after record 100 must be a checkpoint.
    let d = copy_dir(&t.dir);
    let (seg, line) = locate(d.path(), 100);
    let p = d.path().join(&seg);
    let mut lines = lines_of(&p);
    assert_eq!(parse_checkpoint(&lines[line]).unwrap().cp.seq, 100);
    lines.remove(line);
    write_lines(&p, &lines);
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::MissingCheckpoint, &seg, Some(line as u64 + 1), Some(100));
    // A segment's closing checkpoint removed.
    let d = copy_dir(&t.dir);
    let p = d.path().join("000002.log");
    let mut lines = lines_of(&p);
    let last = lines.pop().unwrap();
    assert_eq!(parse_checkpoint(&last).unwrap().cp.kind, CpKind::Rotate);
    let last_seq = parse_checkpoint(&last).unwrap().cp.seq;
    write_lines(&p, &lines);
    assert_problem(
        &problem(d.path(), &t.pk),
        ProblemKind::Truncated,
        "000002.log",
        Some(lines.len() as u64 + 1),
        Some(last_seq + 1),
    );
}

#[test]
fn every_single_byte_change_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = LogConfig { dir: dir.to_path_buf(), checkpoint_every: 2, segment_max_bytes: 450, fsync: Fsync::Never };
    let (mut log, _) = AuditLog::open(cfg, &SEED).unwrap();
    for i in 1..=6 {
        log.append_batch(&[&event(i)]).unwrap();
    }
    let pk = log.public_key();
    log.close().unwrap();
    verify(dir, &pk).unwrap();
    let mut files = segments(dir);
    assert!(files.len() >= 3, "{files:?}");
    files.push("head.json".into());
    let mut rng = fastrand::Rng::with_seed(7);
    let mut checked = 0;
    // Every byte of the head and the first segment; every third byte (all three phases across
    // files) elsewhere, to keep unoptimised Ed25519 within a few seconds.
    for (n, f) in files.iter().enumerate() {
        let p = dir.join(f);
        let orig = std::fs::read(&p).unwrap();
        let stride = if n == 0 || f == "head.json" { 1 } else { 3 };
        for i in (n % stride..orig.len()).step_by(stride) {
            let mut m = orig.clone();
            m[i] ^= rng.u8(1..=255);
            std::fs::write(&p, &m).unwrap();
            assert!(verify(dir, &pk).is_err(), "{f} byte {i} changed to {:?} went unnoticed", m[i] as char);
            checked += 1;
        }
        std::fs::write(&p, &orig).unwrap();
    }
    assert!(checked > 2000, "{checked}");
    verify(dir, &pk).unwrap();
}

#[test]
fn retention_deletes_oldest_segments_and_the_rest_verifies() {
    let t = template();
    let d = copy_dir(&t.dir);
    let segs = segments(d.path());
    let total: u64 = segs.iter().map(|s| std::fs::metadata(d.path().join(s)).unwrap().len()).sum();
    let (mut log, _) = AuditLog::open(config(d.path()), &SEED).unwrap();
    let report = log.apply_retention(Retention { max_age: None, max_bytes: Some(total - 10_000) }).unwrap();
    // 7000-byte segments: two of them must go to free 10 000 bytes.
    assert_eq!(report.deleted, vec!["000001.log".to_string(), "000002.log".to_string()]);
    let first_kept = lines_of(&d.path().join("000003.log")).iter().find_map(|l| record_seq(l)).unwrap();
    assert_eq!(report.first_seq, first_kept);
    let r = verify(d.path(), &t.pk).unwrap();
    assert_eq!(
        (r.first_seq, r.last_seq, r.records, r.segments, r.retention_deleted_through),
        (Some(first_kept), RECORDS, RECORDS - first_kept + 1, segs.len() as u64 - 2, Some(first_kept - 1))
    );
    // The log goes on after retention, and still verifies.
    assert_eq!(log.append_batch(&[&event(311)]).unwrap(), 311..312);
    log.close().unwrap();
    assert_eq!(verify(d.path(), &t.pk).unwrap().last_seq, 311);
    let read: Vec<u64> = read_from(d.path(), 1).unwrap().map(|r| r.unwrap().0).collect();
    assert_eq!(read, (first_kept..=311).collect::<Vec<_>>());

    // Deleting one more segment by hand is not retention.
    let e = copy_dir(d.path());
    std::fs::remove_file(e.path().join("000003.log")).unwrap();
    let last_of_2 = first_kept; // the first missing record is the first of segment 3
    assert_problem(&problem(e.path(), &t.pk), ProblemKind::MissingSegment, "000003.log", None, Some(last_of_2));
    // Nor is deleting the marker.
    let e = copy_dir(d.path());
    std::fs::remove_file(e.path().join("retention.json")).unwrap();
    assert_problem(&problem(e.path(), &t.pk), ProblemKind::MissingSegment, "000001.log", None, Some(1));

    // By age: everything closed is older than an hour a day from now; the active segment stays.
    let (mut log, _) = AuditLog::open(config(d.path()), &SEED).unwrap();
    let segs = segments(d.path());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let policy = Retention { max_age: Some(Duration::from_secs(3600)), max_bytes: None };
    assert_eq!(log.apply_retention_at(policy, now).unwrap().deleted, Vec::<String>::new());
    let r = log.apply_retention_at(policy, now + 86_400).unwrap();
    assert_eq!(r.deleted.len(), segs.len() - 1);
    assert_eq!(segments(d.path()), vec![segs.last().unwrap().clone()]);
    let v = verify(d.path(), &t.pk).unwrap();
    assert_eq!((v.segments, v.last_seq, v.first_seq), (1, 311, Some(r.first_seq)));
}

#[test]
fn torn_last_line_is_cut_on_open_and_seq_continues() {
    let t = template();
    let d = copy_dir(&t.dir);
    let last = segments(d.path()).pop().unwrap();
    let p = d.path().join(&last);
    let n_lines = lines_of(&p).len() as u64;
    let mut data = std::fs::read(&p).unwrap();
    let torn = br#"{"seq":311,"prev":"0123"#;
    data.extend_from_slice(torn);
    std::fs::write(&p, &data).unwrap();
    assert_problem(&problem(d.path(), &t.pk), ProblemKind::Truncated, &last, Some(n_lines + 1), Some(311));
    // The reader treats it as a write in progress.
    assert_eq!(
        read_from(d.path(), 300).unwrap().map(|r| r.unwrap().0).collect::<Vec<_>>(),
        (300..=310).collect::<Vec<_>>()
    );

    let (mut log, report) = AuditLog::open(config(d.path()), &SEED).unwrap();
    assert_eq!(
        report,
        OpenReport {
            created: false,
            torn: Some(TornTail { segment: last.clone(), line: n_lines + 1, bytes_cut: torn.len() as u64 }),
            next_seq: 311,
            unsigned_records_adopted: 0,
        }
    );
    assert_eq!(log.append_batch(&[&event(311), &event(312)]).unwrap(), 311..313);
    assert_eq!(log.head().0, 312);
    drop(log);
    let r = verify(d.path(), &t.pk).unwrap();
    assert_eq!((r.last_seq, r.records, r.unsigned_tail), (312, 312, 0));
}

#[test]
fn records_after_the_head_are_adopted_on_open() {
    // A crash after the batch's lines were written but before the head was replaced.
    let t = template();
    let d = copy_dir(&t.dir);
    let (mut log, _) = AuditLog::open(config(d.path()), &SEED).unwrap();
    let head_resumed = std::fs::read(d.path().join("head.json")).unwrap();
    log.append_batch(&[&event(311), &event(312)]).unwrap();
    drop(log);
    std::fs::write(d.path().join("head.json"), &head_resumed).unwrap();
    assert_eq!(verify(d.path(), &t.pk).unwrap().unsigned_tail, 2);
    let (_, report) = AuditLog::open(config(d.path()), &SEED).unwrap();
    assert_eq!((report.next_seq, report.unsigned_records_adopted, report.torn), (313, 2, None));
    assert_eq!(verify(d.path(), &t.pk).unwrap().unsigned_tail, 0);
}

#[test]
fn reopen_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, r) = AuditLog::open(config(dir), &SEED).unwrap();
    assert_eq!((r.created, r.next_seq), (true, 1));
    let key_id = log.key_id().to_owned();
    assert_eq!(key_id.len(), 16);
    let evs: Vec<Vec<u8>> = (1..=10).map(event).collect();
    let refs: Vec<&[u8]> = evs.iter().map(|e| e.as_slice()).collect();
    assert_eq!(log.append_batch(&refs).unwrap(), 1..11);
    let head = log.head();
    log.close().unwrap();

    let (mut log, r) = AuditLog::open(config(dir), &SEED).unwrap();
    assert_eq!((r.created, r.next_seq, r.torn), (false, 11, None));
    assert_eq!(log.head(), head);
    assert_eq!(log.key_id(), key_id);
    assert_eq!(log.append_batch(&refs).unwrap(), 11..21);
    assert_eq!(log.append_batch(&[]).unwrap(), 21..21);
    log.checkpoint().unwrap();
    let pk = log.public_key();
    drop(log);
    let v = verify(dir, &pk).unwrap();
    // open, close, resume, manual checkpoint; no periodic one before 25 records.
    assert_eq!((v.records, v.last_seq, v.segments, v.checkpoints, v.unsigned_tail), (20, 20, 1, 4, 0));
    let read: Vec<(u64, Vec<u8>)> = read_from(dir, 8).unwrap().map(Result::unwrap).collect();
    assert_eq!(read.len(), 13);
    assert_eq!(read[0], (8, event(8)));
    assert_eq!(read[3], (11, event(1)));
}

#[test]
fn appending_after_reopen_of_a_rotated_log_keeps_verifying() {
    let t = template();
    let d = copy_dir(&t.dir);
    for round in 0..3u64 {
        let mut cfg = config(d.path());
        cfg.fsync = [Fsync::Always, Fsync::Batch, Fsync::Never][round as usize];
        let (mut log, r) = AuditLog::open(cfg, &SEED).unwrap();
        let base = RECORDS + round * 50;
        assert_eq!(r.next_seq, base + 1);
        for i in 0..50 {
            log.append_batch(&[&event(base + i + 1)]).unwrap();
        }
        if round != 1 {
            log.close().unwrap();
        }
        let v = verify(d.path(), &t.pk).unwrap();
        assert_eq!((v.last_seq, v.records), (base + 50, base + 50));
    }
    let all: Vec<u64> = read_from(d.path(), 1).unwrap().map(|r| r.unwrap().0).collect();
    assert_eq!(all, (1..=RECORDS + 150).collect::<Vec<_>>());
}

#[test]
fn read_from_yields_records_in_order() {
    let t = template();
    let all: Vec<(u64, Vec<u8>)> = read_from(&t.dir, 1).unwrap().map(Result::unwrap).collect();
    assert_eq!(all.len() as u64, RECORDS);
    for (i, (seq, bytes)) in all.iter().enumerate() {
        assert_eq!((*seq, bytes), (i as u64 + 1, &event(i as u64 + 1)));
    }
    let tail: Vec<u64> = read_from(&t.dir, 250).unwrap().map(|r| r.unwrap().0).collect();
    assert_eq!(tail, (250..=RECORDS).collect::<Vec<_>>());
    assert_eq!(read_from(&t.dir, RECORDS + 1).unwrap().count(), 0);
    // A modified record stops the reader with an error.
    let d = copy_dir(&t.dir);
    let (seg, line) = locate(d.path(), 200);
    let p = d.path().join(&seg);
    let mut lines = lines_of(&p);
    let pos = lines[line - 1].len() - 3;
    lines[line - 1][pos] = b'X';
    write_lines(&p, &lines);
    let got: Vec<_> = read_from(d.path(), 190).unwrap().collect();
    assert_eq!(got.len(), 11);
    assert!(
        matches!(&got[10], Err(AuditLogError::Damaged(p)) if p.kind == ProblemKind::Modified && p.line == Some(line as u64))
    );
}

#[test]
fn bad_records_and_config_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut log, _) = AuditLog::open(config(tmp.path()), &SEED).unwrap();
    for (bad, reason_part) in
        [(&b"[1]"[..], "not a JSON object"), (b"{\"a\":\n1}", "line break"), (b"{\"a\":}", "not valid JSON")]
    {
        match log.append_batch(&[b"{}", bad]) {
            Err(AuditLogError::InvalidRecord { index: 1, reason }) => assert!(reason.contains(reason_part), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    // Nothing of a rejected batch was written.
    assert_eq!(log.append_batch(&[b"{}"]).unwrap(), 1..2);
    let mut cfg = config(tmp.path());
    cfg.checkpoint_every = 0;
    assert!(matches!(AuditLog::open(cfg, &SEED), Err(AuditLogError::Config(_))));
    // A head file without segments is damage, not a fresh log.
    let e = tempfile::tempdir().unwrap();
    std::fs::copy(tmp.path().join("head.json"), e.path().join("head.json")).unwrap();
    assert!(matches!(AuditLog::open(config(e.path()), &SEED), Err(AuditLogError::Damaged(_))));
}

#[test]
fn modified_last_segment_is_an_error_at_open() {
    let t = template();
    let d = copy_dir(&t.dir);
    let (seg, line) = locate(d.path(), 309);
    let p = d.path().join(&seg);
    let mut lines = lines_of(&p);
    let pos = lines[line - 1].len() - 3;
    lines[line - 1][pos] = b'X';
    write_lines(&p, &lines);
    let before = std::fs::read(&p).unwrap();
    match AuditLog::open(config(d.path()), &SEED) {
        Err(AuditLogError::Damaged(pr)) => {
            assert_problem(&pr, ProblemKind::Modified, &seg, Some(line as u64), Some(309))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&p).unwrap(), before, "open must not touch a damaged log");
}

#[test]
fn verify_and_open_never_panic_on_garbage() {
    let t = template();
    let real: Vec<(String, Vec<u8>)> = std::fs::read_dir(&t.dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(0xa0d17);
    for round in 0..200 {
        let d = tempfile::tempdir().unwrap();
        for (name, data) in &real {
            let mut m = data.clone();
            match rng.u8(0..6) {
                0 => m = (0..rng.usize(0..2000)).map(|_| rng.u8(..)).collect(),
                1 => {
                    for _ in 0..rng.usize(1..20) {
                        if !m.is_empty() {
                            let i = rng.usize(..m.len());
                            m[i] = rng.u8(..);
                        }
                    }
                }
                2 => m.truncate(rng.usize(0..=m.len())),
                3 => {
                    let a = rng.usize(0..=m.len());
                    let b = rng.usize(a..=m.len());
                    let chunk = m[a..b].to_vec();
                    let at = rng.usize(0..=m.len());
                    m.splice(at..at, chunk);
                }
                4 => m = b"{\"cp\":\"open\",\"seq\":18446744073709551615,\"hash\":\"00\"}\n".to_vec(),
                _ => {}
            }
            if rng.u8(0..10) != 0 {
                std::fs::write(d.path().join(name), m).unwrap();
            }
        }
        if round % 3 == 0 {
            let g: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
            std::fs::write(d.path().join("retention.json"), g).unwrap();
        }
        let _ = verify(d.path(), &t.pk);
        if let Ok(it) = read_from(d.path(), rng.u64(0..400)) {
            for r in it.take(500) {
                let _ = r;
            }
        }
        let _ = AuditLog::open(config(d.path()), &SEED).map(|(mut log, _)| log.append_batch(&[b"{}"]));
    }
}

#[test]
fn crash_between_rotation_and_next_segment_is_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut log, _) = AuditLog::open(config(dir), &SEED).unwrap();
    log.append_batch(&[&event(1), &event(2)]).unwrap();
    // The closing checkpoint of segment 1 landed, segment 2 was never created.
    log.write_checkpoint(CpKind::Rotate).unwrap();
    drop(log);
    assert_eq!(segments(dir), vec!["000001.log"]);
    let (mut log, report) = AuditLog::open(config(dir), &SEED).unwrap();
    assert_eq!((report.next_seq, report.torn), (3, None));
    assert_eq!(segments(dir), vec!["000001.log", "000002.log"]);
    assert_eq!(log.append_batch(&[&event(3)]).unwrap(), 3..4);
    let pk = log.public_key();
    log.close().unwrap();
    let v = verify(dir, &pk).unwrap();
    assert_eq!((v.segments, v.records, v.last_seq, v.checkpoints), (2, 3, 3, 4));
}

#[test]
fn problem_kinds_display() {
    let all = [
        (ProblemKind::Modified, "modified"),
        (ProblemKind::Deleted, "deleted"),
        (ProblemKind::Inserted, "inserted"),
        (ProblemKind::Reordered, "reordered"),
        (ProblemKind::Truncated, "truncated"),
        (ProblemKind::BadSignature, "bad signature"),
        (ProblemKind::Malformed, "malformed"),
        (ProblemKind::MissingSegment, "missing segment"),
        (ProblemKind::MissingCheckpoint, "missing checkpoint"),
    ];
    for (k, s) in all {
        assert_eq!(k.to_string(), s);
    }
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(verify(&tmp.path().join("none"), &[0; 32]), Err(VerifyError::Io { .. })));
    let empty = verify(tmp.path(), &[0; 32]).unwrap_err();
    assert_problem(empty.problem().unwrap(), ProblemKind::MissingSegment, "000001.log", None, Some(1));
}
