use super::*;

const CT: &[u8] = b"multipart/form-data; boundary=abc";

fn ok(body: &[u8]) -> Multipart {
    parse_multipart(body, CT).unwrap()
}

fn err(body: &[u8], ct: &[u8]) -> (MultipartError, MultipartFlags) {
    match parse_multipart(body, ct) {
        Err(BodyError::Multipart { kind, flags }) => {
            assert!(flags.error && flags.strict_error());
            (kind, flags)
        }
        other => panic!("expected a multipart error, got {other:?}"),
    }
}

fn kind(body: &[u8]) -> MultipartError {
    err(body, CT).0
}

fn part(name: &str, value: &str) -> String {
    format!("--abc\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// ModSecurity's own regression test "multipart parser (normal)" (tests/regression/misc/00-multipart-parser.t).
#[test]
fn modsecurity_normal_request() {
    let body = b"--0000\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nBrian Rectanus\r\n--0000\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nbrian.rectanus@breach.com\r\n--0000\r\nContent-Disposition: form-data; name=\"image\"; filename=\"image.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nBINARYDATA\r\n--0000--\r\n";
    let m = parse_multipart(body, b"multipart/form-data; boundary=0000").unwrap();
    assert_eq!(m.args, vec![(b("name"), b("Brian Rectanus")), (b("email"), b("brian.rectanus@breach.com"))]);
    assert_eq!(m.files, vec![(b("image"), b("image.jpg"))]);
    assert_eq!(m.files_names, vec![b("image")]);
    assert_eq!(m.files_sizes, vec![(b("image"), 10)]);
    assert_eq!(m.files_combined_size, 10);
    assert_eq!(
        m.part_headers,
        vec![
            (b("name"), b("Content-Disposition: form-data; name=\"name\"")),
            (b("email"), b("Content-Disposition: form-data; name=\"email\"")),
            (b("image"), b("Content-Disposition: form-data; name=\"image\"; filename=\"image.jpg\"")),
            (b("image"), b("Content-Type: image/jpeg")),
        ]
    );
    assert_eq!(m.flags, MultipartFlags { crlf_line: true, ..MultipartFlags::default() });
    assert!(!m.flags.strict_error());
}

/// CRS 922110 test 2, as go-ftw sends it (YAML block: LF line endings).
#[test]
fn crs_922110_lf_body() {
    let body = b"------WebKitFormBoundary\nContent-Disposition: form-data; name=\"username\"\nContent-Type: text/plain; charset=utf-7\n\n+ADw-img+ACA-src+AD0-x+AD4-\n------WebKitFormBoundary\nContent-Disposition: form-data; name=\"dummy\"\nContent-Type: text/plain; charset=utf-8\n\ntest\n------WebKitFormBoundary--\n";
    let m = parse_multipart(body, b"multipart/form-data; boundary=----WebKitFormBoundary").unwrap();
    assert_eq!(m.args, vec![(b("username"), b("+ADw-img+ACA-src+AD0-x+AD4-")), (b("dummy"), b("test"))]);
    assert_eq!(
        m.part_headers,
        vec![
            (b("username"), b("Content-Disposition: form-data; name=\"username\"")),
            (b("username"), b("Content-Type: text/plain; charset=utf-7")),
            (b("dummy"), b("Content-Disposition: form-data; name=\"dummy\"")),
            (b("dummy"), b("Content-Type: text/plain; charset=utf-8")),
        ]
    );
    assert_eq!(m.flags, MultipartFlags { lf_line: true, ..MultipartFlags::default() });
    assert!(m.flags.strict_error());
    assert!(!m.flags.crlf_lf_lines());
}

/// CRS 922130 test 1 (decoded `encoded_request`): a control byte before a header name is kept in the raw
/// header line for the rule to see; the final boundary has no line ending.
#[test]
fn crs_922130_raw_header_line() {
    let body = b"--boundary\r\n\x0eContent-Disposition: form-data; name=\"file\"; filename=\"1.php\"\r\nContent-Disposition: form-data; name=\"post\"\r\n\r\n<?php var_dump(file_get_contents(\"/etc/passwd\"));\r\n--boundary--";
    let m = parse_multipart(body, b"multipart/form-data; boundary=boundary").unwrap();
    assert_eq!(m.args, vec![(b("post"), b("<?php var_dump(file_get_contents(\"/etc/passwd\"));"))]);
    assert!(m.files.is_empty());
    assert_eq!(
        m.part_headers,
        vec![
            (b("post"), b("\x0eContent-Disposition: form-data; name=\"file\"; filename=\"1.php\"")),
            (b("post"), b("Content-Disposition: form-data; name=\"post\"")),
        ]
    );
    assert!(!m.flags.strict_error());
}

/// CRS 920120: file names with `=`, `;` in names are data for the rules, not parse errors.
#[test]
fn crs_920120_names() {
    let body = b"--abc\r\nContent-Disposition: form-data; name=\"fi;le\"; filename=\"file=.txt\"\r\nContent-Type: text/plain\r\n\r\nhi\r\n--abc--\r\n";
    let m = ok(body);
    assert_eq!(m.files, vec![(b("fi;le"), b("file=.txt"))]);
    assert_eq!(m.files_names, vec![b("fi;le")]);
    assert!(m.args.is_empty());
}

#[test]
fn values_keep_inner_line_breaks_and_lose_the_delimiter_crlf() {
    let body =
        [part("a", "l1\r\nl2"), part("b", ""), part("c", "x\r\n"), part("d", "bare\rcr\nlf"), "--abc--\r\n".into()]
            .concat();
    assert_eq!(
        ok(body.as_bytes()).args,
        vec![(b("a"), b("l1\r\nl2")), (b("b"), b("")), (b("c"), b("x\r\n")), (b("d"), b("bare\rcr\nlf"))]
    );
    // LF before the boundary is stripped the same way
    let m = ok(b"--abc\nContent-Disposition: form-data; name=a\n\nv\n\n--abc--\n");
    assert_eq!(m.args, vec![(b("a"), b("v\n"))]);
}

#[test]
fn empty_name_and_empty_filename_are_valid() {
    let m = ok(b"--abc\r\nContent-Disposition: form-data; name=\"\"; filename=\"\"\r\n\r\n\r\n--abc--\r\n");
    assert_eq!(m.files, vec![(b(""), b(""))]);
    assert_eq!(m.files_sizes, vec![(b(""), 0)]);
}

#[test]
fn empty_body_is_fine() {
    let m = ok(b"");
    assert_eq!(m, Multipart::default());
}

#[test]
fn quoted_value_escapes() {
    let m = ok(b"--abc\r\nContent-Disposition: form-data; name=\"a\\\"b\\\\c\\d\"\r\n\r\nv\r\n--abc--\r\n");
    assert_eq!(m.args, vec![(b("a\"b\\c\\d"), b("v"))]);
    let m =
        ok(b"--abc\r\nContent-Disposition: form-data;name=tok\t;\tfilename=\"C:\\dir\\f.txt\"\r\n\r\nv\r\n--abc--\r\n");
    assert_eq!(m.files, vec![(b("tok"), b("C:\\dir\\f.txt"))]);
}

#[test]
fn content_type_flags() {
    let body = [part("a", "1"), "--abc--\r\n".into()].concat();
    let flags_for = |ct: &[u8]| parse_multipart(body.as_bytes(), ct).unwrap().flags;
    let f = flags_for(b"multipart/form-data; boundary=\"abc\"");
    assert!(f.boundary_quoted && f.strict_error());
    let f = flags_for(b"multipart/form-data; boundary =abc");
    assert!(f.boundary_whitespace && !f.boundary_quoted);
    let f = flags_for(b"multipart/form-data boundary=abc");
    assert!(f.missing_semicolon && f.strict_error());
    let f = flags_for(b"MULTIPART/FORM-DATA;boundary=abc");
    assert!(!f.strict_error());
}

#[test]
fn content_type_errors() {
    let e = |ct: &[u8]| err(b"", ct).0;
    assert_eq!(e(b"text/plain; boundary=abc"), MultipartError::InvalidMimeType);
    assert_eq!(e(b"multipart/form-data"), MultipartError::BoundaryNotFound);
    assert_eq!(e(b"multipart/form-data; Boundary=abc"), MultipartError::BoundaryCaseSensitivity);
    assert_eq!(e(b"multipart/form-data; boundary=abc; boundary=def"), MultipartError::MultipleBoundaries);
    assert_eq!(e(b"multipart/form-data; x; boundary=abc"), MultipartError::BoundaryMalformed);
    assert_eq!(e(b"multipart/form-data; ; boundary=abc"), MultipartError::BoundaryMalformed);
    assert_eq!(e(b"multipart/form-data; boundary"), MultipartError::BoundaryMalformed);
    assert_eq!(e(b"multipart/form-data; boundaryx=abc"), MultipartError::BoundaryParameterName);
    assert_eq!(e(b"multipart/form-data; boundary=\"abc"), MultipartError::BoundaryQuote);
    assert_eq!(e(b"multipart/form-data; boundary=abc\""), MultipartError::BoundaryQuote);
    assert_eq!(e(b"multipart/form-data; boundary=\""), MultipartError::BoundaryQuote);
    assert_eq!(e(b"multipart/form-data; boundary=abc; charset=utf-8"), MultipartError::BoundaryCharacters);
    assert_eq!(e(b"multipart/form-data; boundary=abc "), MultipartError::BoundaryCharacters);
    assert_eq!(e(b"multipart/form-data; boundary="), MultipartError::BoundaryEmpty);
    assert_eq!(e(b"multipart/form-data; boundary=\"\""), MultipartError::BoundaryEmpty);
    let long = [&b"multipart/form-data; boundary="[..], &[b'a'; 1000][..]].concat();
    assert_eq!(e(&long), MultipartError::ContentTypeTooLong);
    // RFC 2046 characters are accepted
    assert!(parse_multipart(b"", b"multipart/form-data; boundary=----=_Part_0/1:2?(x),y+z.'").is_ok());
}

#[test]
fn data_before_and_after() {
    let body = ["preamble\r\n".to_owned(), part("a", "1"), "--abc--\r\n".into(), "epilogue".into()].concat();
    let m = ok(body.as_bytes());
    assert_eq!(m.args, vec![(b("a"), b("1"))]);
    assert!(m.flags.data_before && m.flags.data_after && m.flags.strict_error());
    // even a lone CRLF after the final boundary line is data after it
    let body = [part("a", "1"), "--abc--\r\n\r\n".into()].concat();
    assert!(ok(body.as_bytes()).flags.data_after);
    let body = [part("a", "1"), "--abc--\r\n".into()].concat();
    assert!(!ok(body.as_bytes()).flags.data_after);
}

#[test]
fn header_folding() {
    let m = ok(b"--abc\r\nContent-Disposition: form-data;\r\n\tname=\"a\"\r\n\r\nv\r\n--abc--\r\n");
    assert_eq!(m.args, vec![(b("a"), b("v"))]);
    assert_eq!(m.part_headers, vec![(b("a"), b("Content-Disposition: form-data; name=\"a\""))]);
    assert!(m.flags.header_folding && !m.flags.invalid_header_folding);
    let m = ok(b"--abc\r\nContent-Disposition: form-data;\r\n\x0b name=\"a\"\r\n\r\nv\r\n--abc--\r\n");
    assert!(m.flags.header_folding && m.flags.invalid_header_folding);
    assert_eq!(kind(b"--abc\r\n name=a\r\n\r\n--abc--\r\n"), MultipartError::FoldingError);
}

#[test]
fn line_ending_flags() {
    let m = ok(b"--abc\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n--abc--\r\n");
    assert!(m.flags.lf_line && m.flags.crlf_line && m.flags.crlf_lf_lines());
}

#[test]
fn invalid_quoting() {
    let m = ok(b"--abc\r\nContent-Disposition: form-data; name='a'\r\n\r\nv\r\n--abc--\r\n");
    assert_eq!(m.args, vec![(b("a"), b("v"))]);
    assert!(m.flags.invalid_quoting && m.flags.strict_error());
    let m = ok(b"--abc\r\nContent-Disposition: form-data; name=\"a'b\"\r\n\r\nv\r\n--abc--\r\n");
    assert!(m.flags.invalid_quoting);
    let (k, f) = err(b"--abc\r\nContent-Disposition: form-data; name=\"a\"x\r\n\r\nv\r\n--abc--\r\n", CT);
    assert_eq!(k, MultipartError::InvalidContentDisposition(-12));
    assert!(f.invalid_quoting);
}

#[test]
fn invalid_part_is_skipped() {
    // the headers never end, so the part has no name
    let body =
        ["--abc\r\nContent-Disposition: form-data; name=\"x\"\r\n".to_owned(), part("a", "1"), "--abc--\r\n".into()]
            .concat();
    let m = ok(body.as_bytes());
    assert_eq!(m.args, vec![(b("a"), b("1"))]);
    assert!(m.flags.invalid_part && m.flags.strict_error());
}

#[test]
fn unmatched_boundary() {
    let m = ok([part("a", "x\r\n--abd\r\ny"), "--abc--\r\n".into()].concat().as_bytes());
    assert_eq!(m.args, vec![(b("a"), b("x\r\n--abd\r\ny"))]);
    assert!(m.flags.unmatched_boundary);
    assert!(!m.flags.strict_error(), "unmatched boundary is not part of MULTIPART_STRICT_ERROR");
    let m = ok([part("a", "text --abc more"), "--abc--\r\n".into()].concat().as_bytes());
    assert!(m.flags.unmatched_boundary);
    // beyond the first 4096 bytes of a line, ModSecurity does not look
    let long = format!("{}--abc", "x".repeat(5000));
    assert!(!ok([part("a", &long), "--abc--\r\n".into()].concat().as_bytes()).flags.unmatched_boundary);
}

#[test]
fn boundary_line_errors() {
    assert_eq!(kind(b"--abcX\r\n"), MultipartError::InvalidBoundary);
    assert_eq!(kind(b"--abc \r\n"), MultipartError::InvalidBoundary);
    assert_eq!(kind(b"--abc--x\r\n"), MultipartError::InvalidBoundary);
    assert_eq!(kind(b"-- abc\r\n"), MultipartError::BoundaryWhitespace);
    let (k, _) = err(b"--\"abc\"\r\n", b"multipart/form-data; boundary=\"abc\"");
    assert_eq!(k, MultipartError::BoundaryQuotes);
}

#[test]
fn missing_boundaries() {
    let (k, f) = err(b"hello", CT);
    assert_eq!(k, MultipartError::NoBoundaries);
    assert!(!f.data_before, "an unterminated line is never processed");
    let (k, f) = err(b"hello\r\nworld\r\n", CT);
    assert_eq!(k, MultipartError::NoBoundaries);
    assert!(f.data_before);
    assert_eq!(kind(part("a", "1").as_bytes()), MultipartError::FinalBoundaryMissing);
    assert_eq!(
        kind(b"--abc\r\nContent-Disposition: form-data; name=a\r\n\r\nunterminated"),
        MultipartError::FinalBoundaryMissing
    );
    assert_eq!(kind([part("a", "1"), "--abc-".into()].concat().as_bytes()), MultipartError::FinalBoundaryMissing);
    // final boundary without a line ending completes the body
    let m = ok([part("a", "1"), "--abc--".into()].concat().as_bytes());
    assert_eq!(m.args, vec![(b("a"), b("1"))]);
    assert!(!m.flags.strict_error());
}

#[test]
fn part_header_errors() {
    let hdrs = |h: &str| kind(format!("--abc\r\n{h}\r\n\r\nv\r\n--abc--\r\n").as_bytes());
    assert_eq!(hdrs("Content-Type: text/plain"), MultipartError::MissingContentDisposition);
    assert_eq!(hdrs("Content-Disposition : form-data; name=a"), MultipartError::MissingContentDisposition);
    assert_eq!(hdrs("Content-Disposition: attachment; name=a"), MultipartError::InvalidContentDisposition(-1));
    assert_eq!(hdrs("Content-Disposition: form-data name=a"), MultipartError::InvalidContentDisposition(-2));
    assert_eq!(hdrs("Content-Disposition: form-data; "), MultipartError::InvalidContentDisposition(-3));
    assert_eq!(hdrs("Content-Disposition: form-data; name"), MultipartError::InvalidContentDisposition(-4));
    assert_eq!(hdrs("Content-Disposition: form-data; name "), MultipartError::InvalidContentDisposition(-5));
    assert_eq!(hdrs("Content-Disposition: form-data; name= "), MultipartError::InvalidContentDisposition(-6));
    assert_eq!(hdrs("Content-Disposition: form-data; name=\""), MultipartError::InvalidContentDisposition(-7));
    assert_eq!(hdrs("Content-Disposition: form-data; name=\"a\\"), MultipartError::InvalidContentDisposition(-8));
    assert_eq!(hdrs("Content-Disposition: form-data; name=\"a"), MultipartError::InvalidContentDisposition(-10));
    assert_eq!(hdrs("Content-Disposition: form-data; name=a; size=3"), MultipartError::InvalidContentDisposition(-11));
    assert_eq!(hdrs("Content-Disposition: form-data; name x"), MultipartError::InvalidContentDisposition(-13));
    assert_eq!(hdrs("Content-Disposition: form-data; name=a; name=b"), MultipartError::InvalidContentDisposition(-14));
    assert_eq!(
        hdrs("Content-Disposition: form-data; name=a; filename=b; filename=c"),
        MultipartError::InvalidContentDisposition(-15)
    );
    assert_eq!(hdrs("Content-Disposition: form-data"), MultipartError::MissingName);
    assert_eq!(hdrs("Content-Disposition: form-data; name=a; filename =\"x\""), MultipartError::FilenameNotLiteral);
    assert_eq!(hdrs("Content-Disposition: form-data; name=a\r\nno colon"), MultipartError::ColonMissing);
    assert_eq!(hdrs(": x\r\nContent-Disposition: form-data; name=a"), MultipartError::HeaderNameMissing);
    assert_eq!(
        hdrs("Content-Disposition: form-data; name=a\r\ncontent-disposition: form-data; name=b"),
        MultipartError::DuplicatePartHeader
    );
    assert_eq!(hdrs("Content-Disposition: form-data; name=\"a\0\""), MultipartError::NulInPartHeaders);
    let long = format!("Content-Disposition: form-data; name=\"{}\"", "a".repeat(4096));
    assert_eq!(hdrs(&long), MultipartError::HeaderLineTooLong);
    let almost = format!("Content-Disposition: form-data; name=\"{}\"", "a".repeat(4054));
    assert_eq!(almost.len() + 2, 4095);
    assert!(parse_multipart(format!("--abc\r\n{almost}\r\n\r\nv\r\n--abc--\r\n").as_bytes(), CT).is_ok());
    let folded = format!("Content-Disposition: form-data; name=a{}", "\r\n x".repeat(3000));
    assert_eq!(hdrs(&folded), MultipartError::HeaderTooLong);
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(hdrs(&format!("{many}Content-Disposition: form-data; name=a")), MultipartError::TooManyPartHeaders);
}

#[test]
fn error_carries_flags_and_no_content() {
    let (k, f) = err(b"secret-preamble\r\n--abc\r\nContent-Disposition: form-data; name=\"hunter2\r\n\r\n", CT);
    assert_eq!(k, MultipartError::InvalidContentDisposition(-10));
    assert!(f.data_before);
    let e = parse_multipart(b"--abc\r\nContent-Disposition: form-data; name=\"hunter2\r\n\r\n", CT).unwrap_err();
    assert_eq!(e.to_string(), "Multipart: Invalid Content-Disposition header (-10).");
}

#[test]
fn file_limit_flag() {
    let file =
        |n: usize| format!("--abc\r\nContent-Disposition: form-data; name=\"f{n}\"; filename=\"x\"\r\n\r\nabc\r\n");
    let body = [file(1), file(2), file(3), "--abc--\r\n".into()].concat();
    let m = parse_multipart_with_limits(body.as_bytes(), CT, MultipartLimits { max_parts: 10, max_files: 2 }).unwrap();
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.files_combined_size, 9);
    assert!(m.flags.file_limit_exceeded && m.flags.strict_error());
    assert!(!ok(body.as_bytes()).flags.file_limit_exceeded);
}

#[test]
fn part_limit() {
    let body: String = (0..5).map(|i| part(&format!("p{i}"), "v")).chain(["--abc--\r\n".to_owned()]).collect();
    let limits = MultipartLimits { max_parts: 4, max_files: 100 };
    assert!(matches!(
        parse_multipart_with_limits(body.as_bytes(), CT, limits),
        Err(BodyError::Multipart { kind: MultipartError::TooManyParts(4), .. })
    ));
    assert_eq!(
        parse_multipart_with_limits(body.as_bytes(), CT, MultipartLimits { max_parts: 5, max_files: 1 })
            .unwrap()
            .args
            .len(),
        5
    );
    // a million empty parts stop at the default limit
    let bomb = "--abc\r\n".repeat(1_000_000);
    assert!(matches!(
        parse_multipart(bomb.as_bytes(), CT),
        Err(BodyError::Multipart { kind: MultipartError::TooManyParts(DEFAULT_MAX_ARGS), .. })
    ));
}

#[test]
fn long_names_repeated_per_header_hit_the_budget() {
    let name = "n".repeat(4000);
    let headers: String = (0..99).map(|i| format!("X-{i}:\r\n")).collect();
    let one = format!("--abc\r\nContent-Disposition: form-data; name=\"{name}\"\r\n{headers}\r\nv\r\n");
    let body = [one.repeat(500), "--abc--\r\n".into()].concat();
    let (k, _) = err(body.as_bytes(), CT);
    assert_eq!(k, MultipartError::NamesTooLarge(crate::names_budget(body.len())));
    assert_eq!(ok([one.repeat(2), "--abc--\r\n".into()].concat().as_bytes()).part_headers.len(), 200);
}

#[test]
fn hostile_bodies_are_linear() {
    // 4 MB of short lines inside one file part, and one 4 MB line: both parse quickly.
    let lines = "-x\n".repeat(1_300_000);
    let body = format!("--abc\r\nContent-Disposition: form-data; name=f; filename=a\r\n\r\n{lines}\r\n--abc--\r\n");
    let m = ok(body.as_bytes());
    assert_eq!(m.files_sizes, vec![(b("f"), lines.len() as u64)]);
    let one = "-".repeat(4_000_000);
    let m = ok([part("a", &one), "--abc--\r\n".into()].concat().as_bytes());
    assert_eq!(m.args[0].1.len(), 4_000_000);
    // lone newlines and dashes before any boundary
    let (k, f) = err("\n--x\n".repeat(100_000).as_bytes(), CT);
    assert_eq!(k, MultipartError::NoBoundaries);
    assert!(f.data_before && f.unmatched_boundary);
}
