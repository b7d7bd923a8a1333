//! The multipart/form-data body processor, a strict line parser after ModSecurity v2's `msc_multipart.c`, with
//! the same flags (`MULTIPART_*`) and the same hard errors (each `MultipartError` is one of its messages).
//!
//! The body is read line by line (a line ends at `\n`); a line starting with `--` is a boundary candidate.
//! A part's value is the byte range from the end of its header block to the start of the next boundary line,
//! minus that last line's CRLF/LF, so values are copied once, when the result is built. ModSecurity's
//! 4096-byte line buffer shows through in two places, kept on purpose: a part header line of 4096 bytes or
//! more is an error, and only the first 4096 bytes of a data line are searched for a stray boundary.

use crate::{is_c_space, names_budget, BodyError, Pair, DEFAULT_MAX_ARGS};

/// ModSecurity's `MULTIPART_BUF_SIZE`.
const BUF_SIZE: usize = 4096;
/// Upper bound on headers in one part (real clients send one to three); keeps the duplicate check linear.
const MAX_PART_HEADERS: usize = 100;

/// The `MULTIPART_*` flags. All are set while parsing; on failure they come with the error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MultipartFlags {
    /// The body or its `Content-Type` could not be parsed (the error is in the `BodyError`).
    pub error: bool,
    /// `MULTIPART_BOUNDARY_QUOTED`: the boundary parameter was quoted.
    pub boundary_quoted: bool,
    /// `MULTIPART_BOUNDARY_WHITESPACE`: whitespace around the `=` of the boundary parameter.
    pub boundary_whitespace: bool,
    /// `MULTIPART_DATA_BEFORE`: bytes before the first boundary.
    pub data_before: bool,
    /// `MULTIPART_DATA_AFTER`: bytes after the final boundary line.
    pub data_after: bool,
    /// `MULTIPART_HEADER_FOLDING`: a part header was continued on the next line.
    pub header_folding: bool,
    /// `MULTIPART_LF_LINE`: a boundary or header line ended with a bare LF.
    pub lf_line: bool,
    /// A boundary or header line ended with CRLF (`MULTIPART_CRLF_LF_LINES` is this and `lf_line`).
    pub crlf_line: bool,
    /// `MULTIPART_MISSING_SEMICOLON`: no `;` between the MIME type and `boundary` in `Content-Type`.
    pub missing_semicolon: bool,
    /// `MULTIPART_INVALID_QUOTING`: single quotes, or junk after a quoted `Content-Disposition` value.
    pub invalid_quoting: bool,
    /// `MULTIPART_INVALID_PART`: a part without a name was skipped.
    pub invalid_part: bool,
    /// `MULTIPART_INVALID_HEADER_FOLDING`: folding with whitespace other than SP/HTAB.
    pub invalid_header_folding: bool,
    /// `MULTIPART_FILE_LIMIT_EXCEEDED`: more file parts than [`MultipartLimits::max_files`].
    pub file_limit_exceeded: bool,
    /// `MULTIPART_UNMATCHED_BOUNDARY`: a line that looks like a boundary but is not ours, or `--boundary` inside
    /// a data line.
    pub unmatched_boundary: bool,
}

impl MultipartFlags {
    /// `MULTIPART_STRICT_ERROR`: any flag ModSecurity folds into it (not `unmatched_boundary`, and a CRLF-only
    /// body is fine).
    #[must_use]
    pub fn strict_error(&self) -> bool {
        self.error
            || self.boundary_quoted
            || self.boundary_whitespace
            || self.data_before
            || self.data_after
            || self.header_folding
            || self.lf_line
            || self.missing_semicolon
            || self.invalid_quoting
            || self.invalid_part
            || self.invalid_header_folding
            || self.file_limit_exceeded
    }

    /// `MULTIPART_CRLF_LF_LINES`: both line endings were used.
    #[must_use]
    pub fn crlf_lf_lines(&self) -> bool {
        self.crlf_line && self.lf_line
    }
}

/// Bounds for one multipart body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartLimits {
    /// More parts than this is an error ([`MultipartError::TooManyParts`]).
    pub max_parts: usize,
    /// More file parts than this raises [`MultipartFlags::file_limit_exceeded`] (ModSecurity's
    /// `SecUploadFileLimit`, default 100); parsing goes on.
    pub max_files: usize,
}

impl Default for MultipartLimits {
    fn default() -> Self {
        MultipartLimits { max_parts: DEFAULT_MAX_ARGS, max_files: 100 }
    }
}

/// The collections of one parsed multipart body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Multipart {
    /// `ARGS_POST`: (field name, value) of every non-file part, in order.
    pub args: Vec<Pair>,
    /// `FILES`: (field name, file name as sent) of every file part.
    pub files: Vec<Pair>,
    /// `FILES_NAMES`: the field names of the file parts.
    pub files_names: Vec<Vec<u8>>,
    /// `FILES_SIZES`: (field name, size in bytes) of every file part.
    pub files_sizes: Vec<(Vec<u8>, u64)>,
    /// `FILES_COMBINED_SIZE`.
    pub files_combined_size: u64,
    /// `MULTIPART_PART_HEADERS`: (field name, header line as sent, e.g. `Content-Type: text/plain`), folded
    /// continuations joined with one space.
    pub part_headers: Vec<Pair>,
    pub flags: MultipartFlags,
}

/// Why a multipart body was rejected; `Display` is ModSecurity's message (without the echoed input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultipartError {
    #[error("Multipart: Invalid boundary in C-T (length).")]
    ContentTypeTooLong,
    #[error("Multipart: Invalid MIME type.")]
    InvalidMimeType,
    #[error("Multipart: Multiple boundary parameters in C-T.")]
    MultipleBoundaries,
    #[error("Multipart: Invalid boundary in C-T (malformed).")]
    BoundaryMalformed,
    #[error("Multipart: Invalid boundary in C-T (parameter name).")]
    BoundaryParameterName,
    #[error("Multipart: Invalid boundary in C-T (quote).")]
    BoundaryQuote,
    #[error("Multipart: Invalid boundary in C-T (content).")]
    BoundaryContent,
    #[error("Multipart: Invalid boundary in C-T (characters).")]
    BoundaryCharacters,
    #[error("Multipart: Invalid boundary in C-T (empty).")]
    BoundaryEmpty,
    #[error("Multipart: Invalid boundary in C-T (case sensitivity).")]
    BoundaryCaseSensitivity,
    #[error("Multipart: Boundary not found in C-T.")]
    BoundaryNotFound,
    #[error("Multipart: Invalid boundary.")]
    InvalidBoundary,
    #[error("Multipart: Invalid boundary (final duplicate).")]
    FinalBoundaryDuplicate,
    #[error("Multipart: Invalid boundary (quotes).")]
    BoundaryQuotes,
    #[error("Multipart: Invalid boundary (whitespace).")]
    BoundaryWhitespace,
    #[error("Multipart: Part header line over 4096 bytes long")]
    HeaderLineTooLong,
    #[error("Multipart: Nul byte in part headers.")]
    NulInPartHeaders,
    #[error("Multipart: Part missing Content-Disposition header.")]
    MissingContentDisposition,
    #[error("Multipart: Invalid Content-Disposition header ({0}).")]
    InvalidContentDisposition(i32),
    #[error("Multipart: Content-Disposition header missing name field.")]
    MissingName,
    #[error("Multipart: Invalid Content-Disposition header (filename).")]
    FilenameNotLiteral,
    #[error("Multipart: Invalid part header (folding error).")]
    FoldingError,
    #[error("Multipart: Part header too long.")]
    HeaderTooLong,
    #[error("Multipart: Invalid part header (colon missing).")]
    ColonMissing,
    #[error("Multipart: Invalid part header (header name missing).")]
    HeaderNameMissing,
    #[error("Multipart: Duplicate part header.")]
    DuplicatePartHeader,
    #[error("Multipart: Too many part headers (limit {MAX_PART_HEADERS}).")]
    TooManyPartHeaders,
    #[error("Multipart: Final boundary missing.")]
    FinalBoundaryMissing,
    #[error("Multipart: No boundaries found in payload.")]
    NoBoundaries,
    #[error("Multipart: Too many parts (limit {0}).")]
    TooManyParts(usize),
    /// The field names repeated in `MULTIPART_PART_HEADERS` and `FILES*` exceed [`names_budget`].
    #[error("Multipart: Field names exceed {0} bytes.")]
    NamesTooLarge(usize),
}

/// Parse a multipart/form-data body with [`MultipartLimits::default`]. `content_type` is the raw
/// `Content-Type` header value (it carries the boundary). An empty body is not an error.
pub fn parse_multipart(body: &[u8], content_type: &[u8]) -> Result<Multipart, BodyError> {
    parse_multipart_with_limits(body, content_type, MultipartLimits::default())
}

/// [`parse_multipart`] with explicit limits.
pub fn parse_multipart_with_limits(
    body: &[u8],
    content_type: &[u8],
    limits: MultipartLimits,
) -> Result<Multipart, BodyError> {
    let mut flags = MultipartFlags::default();
    let fail = |kind: MultipartError, mut flags: MultipartFlags| {
        flags.error = true;
        BodyError::Multipart { kind, flags }
    };
    let boundary = match parse_boundary(content_type, &mut flags) {
        Ok(b) => b,
        Err(kind) => return Err(fail(kind, flags)),
    };
    let mut dash_boundary = Vec::with_capacity(boundary.len() + 2);
    dash_boundary.extend_from_slice(b"--");
    dash_boundary.extend_from_slice(boundary);
    let mut p = Parser {
        body,
        boundary,
        finder: memchr::memmem::Finder::new(&dash_boundary),
        limits,
        out: Multipart::default(),
        part: None,
        parts_started: 0,
        is_complete: false,
        boundary_count: 0,
        names_left: names_budget(body.len()),
    };
    p.out.flags = flags;
    match p.run() {
        Ok(()) => Ok(p.out),
        Err(kind) => Err(fail(kind, p.out.flags)),
    }
}

/// The boundary from `Content-Type`, as `multipart_init` checks it.
fn parse_boundary<'a>(ct: &'a [u8], flags: &mut MultipartFlags) -> Result<&'a [u8], MultipartError> {
    const MIME: &[u8] = b"multipart/form-data";
    if ct.len() > 1024 {
        return Err(MultipartError::ContentTypeTooLong);
    }
    if !ct.get(..MIME.len()).is_some_and(|m| m.eq_ignore_ascii_case(MIME)) {
        return Err(MultipartError::InvalidMimeType);
    }
    if count_boundary_params(ct) > 1 {
        return Err(MultipartError::MultipleBoundaries);
    }
    let Some(at) = memchr::memmem::find(ct, b"boundary") else {
        return Err(if count_boundary_params(ct) > 0 {
            MultipartError::BoundaryCaseSensitivity
        } else {
            MultipartError::BoundaryNotFound
        });
    };
    let mut seen_semicolon = false;
    for &c in ct.get(MIME.len()..at).unwrap_or_default() {
        if !is_c_space(c) {
            if !seen_semicolon && c == b';' {
                seen_semicolon = true;
            } else {
                return Err(MultipartError::BoundaryMalformed);
            }
        }
    }
    if !seen_semicolon {
        flags.missing_semicolon = true;
    }
    let after_name = at + b"boundary".len();
    let Some(eq) = memchr::memchr(b'=', &ct[after_name..]).map(|i| after_name + i) else {
        return Err(MultipartError::BoundaryMalformed);
    };
    for &c in &ct[after_name..eq] {
        if is_c_space(c) {
            flags.boundary_whitespace = true;
        } else {
            return Err(MultipartError::BoundaryParameterName);
        }
    }
    let value = &ct[eq + 1..];
    if value.first().is_some_and(|&c| is_c_space(c)) {
        flags.boundary_whitespace = true;
    }
    let boundary = match value {
        [b'"', inner @ .., b'"'] => {
            flags.boundary_quoted = true;
            inner
        }
        [b'"', ..] | [_, .., b'"'] => return Err(MultipartError::BoundaryQuote),
        _ => value,
    };
    if count_boundary_params(boundary) != 0 {
        return Err(MultipartError::BoundaryContent);
    }
    if !boundary_characters_valid(boundary) {
        return Err(MultipartError::BoundaryCharacters);
    }
    if boundary.is_empty() {
        return Err(MultipartError::BoundaryEmpty);
    }
    Ok(boundary)
}

/// How many case-insensitive `boundary` words have a `=` somewhere after them (ModSecurity's count).
fn count_boundary_params(s: &[u8]) -> usize {
    let Some(last_eq) = memchr::memrchr(b'=', s) else { return 0 };
    let lower = s.to_ascii_lowercase();
    memchr::memmem::find_iter(&lower, b"boundary").filter(|&i| i + b"boundary".len() <= last_eq).count()
}

/// RFC 2046 `bchars` (ModSecurity v3's check; v2's older list rejected legal `=`, `/`, `:`, `?`, `(`, `)`, `,`).
fn boundary_characters_valid(b: &[u8]) -> bool {
    let last = b.len().saturating_sub(1);
    b.iter().enumerate().all(|(i, &c)| {
        c.is_ascii_alphanumeric()
            || (c == b' ' && i != last)
            || matches!(c, b'\'' | b'(' | b')' | b'+' | b'_' | b',' | b'-' | b'.' | b'/' | b':' | b'=' | b'?')
    })
}

struct Part {
    name: Option<Vec<u8>>,
    filename: Option<Vec<u8>>,
    /// (name, value) per header, and the raw line for `MULTIPART_PART_HEADERS` at the same index.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    raw_lines: Vec<Vec<u8>>,
    last_header: Option<usize>,
    /// Where the data starts: `Some` once the blank line after the headers was seen.
    data_start: Option<usize>,
    is_file: bool,
}

struct Parser<'a> {
    body: &'a [u8],
    boundary: &'a [u8],
    finder: memchr::memmem::Finder<'a>,
    limits: MultipartLimits,
    out: Multipart,
    part: Option<Part>,
    parts_started: usize,
    is_complete: bool,
    boundary_count: usize,
    /// Bytes of cloned field names still allowed (see [`names_budget`]).
    names_left: usize,
}

impl Parser<'_> {
    fn run(&mut self) -> Result<(), MultipartError> {
        let body = self.body;
        let mut pos = 0;
        while pos < body.len() {
            if self.is_complete {
                self.out.flags.data_after = true;
                return Ok(());
            }
            match memchr::memchr(b'\n', &body[pos..]) {
                Some(i) => {
                    let end = pos + i + 1;
                    self.line(pos, end)?;
                    pos = end;
                }
                None => return self.complete(pos),
            }
        }
        self.complete(body.len())
    }

    /// End of input; `rest` is where the unterminated last line (if any) starts.
    fn complete(&mut self, rest: usize) -> Result<(), MultipartError> {
        if self.body.is_empty() || self.is_complete {
            return Ok(());
        }
        if self.boundary_count == 0 {
            return Err(MultipartError::NoBoundaries);
        }
        // A final boundary without its line ending.
        let tail = &self.body[rest..];
        let blen = self.boundary.len();
        if tail.len() == blen + 4
            && tail.starts_with(b"--")
            && tail.ends_with(b"--")
            && &tail[2..2 + blen] == self.boundary
        {
            self.process_boundary(true, rest)?;
            self.is_complete = true;
            return Ok(());
        }
        Err(MultipartError::FinalBoundaryMissing)
    }

    fn line(&mut self, start: usize, end: usize) -> Result<(), MultipartError> {
        let body = self.body;
        let line = &body[start..end];
        let blen = self.boundary.len();
        if line.len() > 3 && line.starts_with(b"--") {
            if line.len() >= blen + 2 && line[2..].starts_with(self.boundary) {
                let mut rest = &line[2 + blen..];
                let is_final = rest.starts_with(b"--");
                if is_final {
                    rest = &rest[2..];
                    if self.is_complete {
                        return Err(MultipartError::FinalBoundaryDuplicate);
                    }
                }
                match rest {
                    b"\r\n" => self.out.flags.crlf_line = true,
                    b"\n" => self.out.flags.lf_line = true,
                    _ => return Err(MultipartError::InvalidBoundary),
                }
                self.process_boundary(is_final, start)?;
                self.is_complete |= is_final;
                self.boundary_count += 1;
                return Ok(());
            }
            if self.out.flags.boundary_quoted
                && line.len() >= blen + 3
                && line[2] == b'"'
                && line[3..].starts_with(self.boundary)
            {
                return Err(MultipartError::BoundaryQuotes);
            }
            let ws = line[2..].iter().take_while(|&&c| is_c_space(c)).count();
            if ws > 0 && line[2 + ws..].starts_with(self.boundary) {
                return Err(MultipartError::BoundaryWhitespace);
            }
            self.out.flags.unmatched_boundary = true;
        } else if self.finder.find(&line[..line.len().min(BUF_SIZE)]).is_some() {
            self.out.flags.unmatched_boundary = true;
        }
        match &self.part {
            None => self.out.flags.data_before = true,
            Some(part) if part.data_start.is_none() => {
                if line.len() >= BUF_SIZE {
                    return Err(MultipartError::HeaderLineTooLong);
                }
                self.header_line(line, end)?;
            }
            Some(_) => {} // data: the part's value is a range of the body, taken at the next boundary
        }
        Ok(())
    }

    fn header_line(&mut self, line: &[u8], end: usize) -> Result<(), MultipartError> {
        let flags = &mut self.out.flags;
        let Some(part) = self.part.as_mut() else { return Ok(()) };
        if memchr::memchr(0, line).is_some() {
            return Err(MultipartError::NulInPartHeaders);
        }
        if line.len() > 1 && line[line.len() - 2] == b'\r' {
            flags.crlf_line = true;
        } else {
            flags.lf_line = true;
        }
        if line == b"\r\n" || line == b"\n" {
            let Some((_, cd)) = part.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(b"Content-Disposition"))
            else {
                return Err(MultipartError::MissingContentDisposition);
            };
            let (name, filename) =
                parse_content_disposition(cd, flags).map_err(MultipartError::InvalidContentDisposition)?;
            let Some(name) = name else { return Err(MultipartError::MissingName) };
            if filename.is_some() {
                // Crude parsers look for the literal text; reject what they would not understand.
                if memchr::memmem::find(cd, b"filename=").is_none() {
                    return Err(MultipartError::FilenameNotLiteral);
                }
                part.is_file = true;
            }
            part.name = Some(name);
            part.filename = filename;
            part.data_start = Some(end);
            part.last_header = None;
        } else if is_c_space(line[0]) {
            flags.header_folding = true;
            let Some(idx) = part.last_header else { return Err(MultipartError::FoldingError) };
            let ws = line.iter().take_while(|&&c| is_c_space(c)).count();
            if line[..ws].iter().any(|&c| c != b' ' && c != b'\t') {
                flags.invalid_header_folding = true;
            }
            let more = strip_line_end(&line[ws..]);
            let (Some((_, value)), Some(raw)) = (part.headers.get_mut(idx), part.raw_lines.get_mut(idx)) else {
                return Err(MultipartError::FoldingError);
            };
            for v in [value, raw] {
                v.push(b' ');
                v.extend_from_slice(more);
            }
            if part.headers.get(idx).is_some_and(|(_, v)| v.len() > BUF_SIZE) {
                return Err(MultipartError::HeaderTooLong);
            }
        } else {
            let Some(colon) = memchr::memchr(b':', line) else { return Err(MultipartError::ColonMissing) };
            if colon == 0 {
                return Err(MultipartError::HeaderNameMissing);
            }
            let name = &line[..colon];
            let value_start = colon + 1 + line[colon + 1..].iter().take_while(|&&c| c == b' ' || c == b'\t').count();
            let value = strip_line_end(&line[value_start..]);
            if part.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(MultipartError::DuplicatePartHeader);
            }
            if part.headers.len() >= MAX_PART_HEADERS {
                return Err(MultipartError::TooManyPartHeaders);
            }
            part.headers.push((name.to_vec(), value.to_vec()));
            part.raw_lines.push(strip_line_end(line).to_vec());
            part.last_header = Some(part.headers.len() - 1);
        }
        Ok(())
    }

    /// A boundary line starting at `line_start`: finish the current part, start the next unless `last`.
    fn process_boundary(&mut self, last: bool, line_start: usize) -> Result<(), MultipartError> {
        if let Some(part) = self.part.take() {
            match (part.name, part.data_start) {
                (Some(name), Some(data_start)) => {
                    let copies = part.raw_lines.len() + if part.is_file { 3 } else { 1 };
                    self.names_left = name
                        .len()
                        .checked_mul(copies)
                        .and_then(|n| self.names_left.checked_sub(n))
                        .ok_or(MultipartError::NamesTooLarge(names_budget(self.body.len())))?;
                    // The line ending before the boundary belongs to the delimiter, not to the value.
                    let body = self.body;
                    let value = strip_line_end(body.get(data_start..line_start).unwrap_or_default());
                    let out = &mut self.out;
                    for raw in part.raw_lines {
                        out.part_headers.push((name.clone(), raw));
                    }
                    if part.is_file {
                        let size = value.len() as u64;
                        out.files.push((name.clone(), part.filename.unwrap_or_default()));
                        out.files_sizes.push((name.clone(), size));
                        out.files_names.push(name);
                        out.files_combined_size = out.files_combined_size.saturating_add(size);
                        if out.files.len() > self.limits.max_files {
                            out.flags.file_limit_exceeded = true;
                        }
                    } else {
                        out.args.push((name, value.to_vec()));
                    }
                }
                _ => self.out.flags.invalid_part = true,
            }
        }
        if !last {
            self.parts_started += 1;
            if self.parts_started > self.limits.max_parts {
                return Err(MultipartError::TooManyParts(self.limits.max_parts));
            }
            self.part = Some(Part {
                name: None,
                filename: None,
                headers: Vec::new(),
                raw_lines: Vec::new(),
                last_header: None,
                data_start: None,
                is_file: false,
            });
        }
        Ok(())
    }
}

/// ModSecurity's `remove_lf_crlf_inplace`: drop a trailing `\n`, and then a `\r` before it.
fn strip_line_end(s: &[u8]) -> &[u8] {
    match s {
        [rest @ .., b'\r', b'\n'] | [rest @ .., b'\n'] => rest,
        _ => s,
    }
}

/// RFC 2616 token characters (`is_token_char`).
fn is_token_char(c: u8) -> bool {
    c > 32
        && c < 127
        && !matches!(
            c,
            b'(' | b')' | b'<' | b'>' | b'@' | b',' | b';' | b':' | b'\\' | b'"' | b'/' | b'[' | b']' | b'?' | b'='
        )
}

type NameAndFilename = (Option<Vec<u8>>, Option<Vec<u8>>);

/// `multipart_parse_content_disposition`: `Err` carries ModSecurity's negative code.
fn parse_content_disposition(v: &[u8], flags: &mut MultipartFlags) -> Result<NameAndFilename, i32> {
    let at = |i: usize| v.get(i).copied();
    let skip_ws = |mut i: usize| {
        while matches!(at(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        i
    };
    let (mut name, mut filename): NameAndFilename = (None, None);
    if !v.starts_with(b"form-data") {
        return Err(-1);
    }
    let mut p = skip_ws(9);
    if p >= v.len() {
        return Ok((name, filename));
    }
    if at(p) != Some(b';') {
        return Err(-2);
    }
    p += 1;
    while p < v.len() {
        p = skip_ws(p);
        if p >= v.len() {
            return Err(-3);
        }
        let start = p;
        while matches!(at(p), Some(c) if c != b'=' && c != b'\t' && c != b' ') {
            p += 1;
        }
        if p >= v.len() {
            return Err(-4);
        }
        let param = &v[start..p];
        p = skip_ws(p);
        if p >= v.len() {
            return Err(-5);
        }
        if at(p) != Some(b'=') {
            return Err(-13);
        }
        p = skip_ws(p + 1);
        if p >= v.len() {
            return Err(-6);
        }
        let value = match at(p) {
            Some(quote @ (b'"' | b'\'')) => {
                if quote == b'\'' {
                    flags.invalid_quoting = true;
                }
                p += 1;
                if p >= v.len() {
                    return Err(-7);
                }
                let mut value = Vec::new();
                loop {
                    let Some(c) = at(p) else { return Err(-10) };
                    if c == b'\\' {
                        match at(p + 1) {
                            None => return Err(-8),
                            // Only the quote and the backslash can be escaped; other backslashes stay.
                            Some(n) if n == quote || n == b'\\' => p += 1,
                            Some(_) => {}
                        }
                    } else if c == quote {
                        break;
                    }
                    value.push(v[p]);
                    p += 1;
                }
                p += 1; // closing quote
                value
            }
            _ => {
                let start = p;
                while matches!(at(p), Some(c) if is_token_char(c)) {
                    p += 1;
                }
                v[start..p].to_vec()
            }
        };
        let slot = match param {
            b"name" => &mut name,
            b"filename" => &mut filename,
            _ => return Err(-11),
        };
        if value.contains(&b'\'') {
            flags.invalid_quoting = true;
        }
        if slot.is_some() {
            return Err(if param == b"name" { -14 } else { -15 });
        }
        *slot = Some(value);
        if p < v.len() {
            p = skip_ws(p);
            if p >= v.len() {
                return Ok((name, filename));
            }
            if at(p) != Some(b';') {
                if matches!(p.checked_sub(1).and_then(at), Some(b'\'' | b'"')) {
                    flags.invalid_quoting = true;
                }
                return Err(-12);
            }
            p += 1;
        }
    }
    Ok((name, filename))
}

#[cfg(test)]
mod tests;
