//! Line-by-line streaming with bounded memory.
//!
//! Complete lines are processed straight out of the reader's buffer; runs of lines that need no
//! change are written with one call and never copied. Only a line that straddles two buffer
//! fills is assembled in a side buffer.
//!
//! A line longer than the cap is processed in windows. Each window is scanned whole, but only
//! written up to a commit point an overlap before its end (further, when a match crosses that
//! point: the match is written redacted whole). The next window starts with the bytes after the
//! commit point plus some already-written context before it, so every value shorter than the
//! overlap is seen whole, with its surroundings, by one scan. A match that runs into the end of
//! a window (a token longer than the overlap, an unterminated private key) carries on into the
//! next one.

use std::io::{self, BufRead, Write};

use memchr::memchr;

use crate::engine::Span;
use crate::{Counts, Redactor, Stats, pem};

/// Default cap on the bytes of one line processed at once (1 MiB).
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// Bytes at the end of a window of an over-long line that are scanned again with the next
/// window instead of being written: more than the longest bounded match of any built-in rule
/// (an email address is at most 64 + 1 + 253 bytes, a private key a few KiB).
const OVERLAP: usize = 16 * 1024;

/// Already-written bytes kept before the next window's first new byte, so that matches
/// found there see what precedes them (a key name before its value, `Bearer` before a token).
const CONTEXT: usize = 1024;

/// The state of text redaction across the lines (and windows) of one stream.
pub(crate) struct Scanner<'r> {
    pub(crate) red: &'r Redactor,
    spans: Vec<Span>,
    /// Replacements per rule slot.
    pub(crate) tally: Vec<u64>,
    /// A private-key block is open: lines of key material are replaced until its end.
    pem_open: bool,
    /// A match ran into the end of the previous window of this line: the token goes on.
    token_open: bool,
}

impl<'r> Scanner<'r> {
    pub(crate) fn new(red: &'r Redactor) -> Scanner<'r> {
        Scanner {
            red,
            spans: Vec::new(),
            tally: vec![0; red.rule_slots()],
            pem_open: false,
            token_open: false,
        }
    }

    fn pem_replacement(&self) -> &'r [u8] {
        let red: &'r Redactor = self.red;
        red.private_key
            .map_or(&b""[..], |rule| red.replacement(rule).as_bytes())
    }

    /// Redacts one whole line of plain text into `out`; false (and `out` untouched) when
    /// nothing changed.
    pub(crate) fn text_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        let mut from = 0;
        if self.pem_open {
            match pem::continues(line) {
                pem::Continues::Whole => {
                    if line.trim_ascii().is_empty() {
                        return false;
                    }
                    out.extend_from_slice(self.pem_replacement());
                    return true;
                }
                pem::Continues::EndsAt(end) => {
                    self.pem_open = false;
                    out.extend_from_slice(self.pem_replacement());
                    from = end;
                }
                pem::Continues::No => self.pem_open = false,
            }
        }
        let rest = &line[from..];
        let info = self.red.collect_spans(rest, &mut self.spans);
        self.pem_open = info.pem_open;
        if self.spans.is_empty() {
            if from > 0 {
                out.extend_from_slice(rest);
            }
            return from > 0;
        }
        for sp in &self.spans {
            self.tally[sp.rule as usize] += 1;
        }
        self.red.write_redacted(rest, &self.spans, out);
        true
    }

    /// Redacts one window of an over-long line into `out` and returns how far it was written.
    ///
    /// `text[..ctx]` was written before (it is context only). Matches starting before
    /// `target` are written, redacted, and the commit point moves past the last of them;
    /// the rest is left for the next window. `last` marks the line's final window, which is
    /// written whole. Returns the commit point and whether anything was replaced.
    fn window(
        &mut self,
        text: &[u8],
        ctx: usize,
        target: usize,
        last: bool,
        out: &mut Vec<u8>,
    ) -> (usize, bool) {
        let mut pos = ctx;
        let mut changed = false;
        // A private key or a token from the previous window (or, for a line's first window,
        // a private key from the previous line) goes on here.
        if self.pem_open {
            let (end, open) = pem::swallow(text, ctx);
            if end > ctx && ctx == 0 {
                out.extend_from_slice(self.pem_replacement());
                changed = true;
            }
            pos = end;
            self.pem_open = open;
        } else if self.token_open {
            pos = token_end(text, ctx);
            self.token_open = pos == text.len();
        }
        if (self.pem_open || self.token_open) && !last {
            return (text.len(), changed);
        }
        self.token_open = false;

        let info = self.red.collect_spans(text, &mut self.spans);
        let commit_target = if last { text.len() } else { target.max(pos) };
        let mut commit = commit_target;
        for i in 0..self.spans.len() {
            let sp = self.spans[i];
            if sp.end <= pos {
                continue;
            }
            let start = sp.start.max(pos);
            if start >= commit_target {
                break;
            }
            out.extend_from_slice(&text[pos..start]);
            out.extend_from_slice(self.red.replacement(sp.rule).as_bytes());
            self.tally[sp.rule as usize] += 1;
            changed = true;
            pos = sp.end;
            commit = commit.max(sp.end);
            if sp.end == text.len() {
                let is_pem = info.pem_open && i + 1 == self.spans.len();
                if is_pem {
                    self.pem_open = true;
                } else if !last {
                    self.token_open = true;
                }
            }
        }
        out.extend_from_slice(&text[pos..commit]);
        (commit, changed)
    }
}

/// End of the rest of a token cut by a window's end: the next blank, quote, bracket or
/// separator.
fn token_end(text: &[u8], from: usize) -> usize {
    text[from..]
        .iter()
        .position(|&b| {
            b.is_ascii_whitespace()
                || b.is_ascii_control()
                || matches!(
                    b,
                    b'"' | b'\''
                        | b'`'
                        | b','
                        | b';'
                        | b'<'
                        | b'>'
                        | b'('
                        | b')'
                        | b'['
                        | b']'
                        | b'{'
                        | b'}'
                        | b'|'
                        | b'&'
                        | b'\\'
                )
        })
        .map_or(text.len(), |p| from + p)
}

/// Callback deciding one whole line: fill `out` and return `true` to replace the text, or
/// return `false` (leaving `out` untouched) to keep it.
pub(crate) trait LineFn: FnMut(&mut Scanner<'_>, &[u8], &mut Vec<u8>) -> bool {}
impl<F: FnMut(&mut Scanner<'_>, &[u8], &mut Vec<u8>) -> bool> LineFn for F {}

struct Driver<'r, W: Write, F: LineFn> {
    writer: W,
    f: F,
    scanner: Scanner<'r>,
    max_line: usize,
    overlap: usize,
    /// The line being assembled; its first `ctx` bytes were written already.
    partial: Vec<u8>,
    ctx: usize,
    /// The line being assembled already had windows written.
    in_oversized: bool,
    /// A window of the current over-long line was changed.
    piece_changed: bool,
    out: Vec<u8>,
    stats: Stats,
}

impl<W: Write, F: LineFn> Driver<'_, W, F> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stats.bytes_out += bytes.len() as u64;
        self.writer.write_all(bytes)
    }

    /// Processes complete lines inside `buf` in place; returns where the unfinished tail starts.
    fn lines_in_place(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut unwritten = 0;
        let mut pos = 0;
        while let Some(off) = memchr(b'\n', &buf[pos..]) {
            let nl = pos + off;
            let content = strip_cr(&buf[pos..nl]);
            self.stats.lines += 1;
            self.out.clear();
            if (self.f)(&mut self.scanner, content, &mut self.out) {
                self.stats.lines_redacted += 1;
                self.write_range(buf, unwritten, pos)?;
                let out = std::mem::take(&mut self.out);
                self.write(&out)?;
                self.out = out;
                self.write(&buf[pos + content.len()..=nl])?;
                unwritten = nl + 1;
            }
            pos = nl + 1;
        }
        self.write_range(buf, unwritten, pos)?;
        Ok(pos)
    }

    fn write_range(&mut self, buf: &[u8], from: usize, to: usize) -> io::Result<()> {
        if to > from {
            self.write(&buf[from..to])?;
        }
        Ok(())
    }

    /// Writes windows of `partial` while it holds more than a cap and an overlap of new bytes.
    fn cut_windows(&mut self) -> io::Result<()> {
        while self.partial.len() - self.ctx > self.max_line + self.overlap {
            let target = self.partial.len() - self.overlap;
            let (commit, changed) = self.run_window(target, false)?;
            let keep = CONTEXT.min(commit);
            self.partial.drain(..commit - keep);
            self.ctx = keep;
            self.piece_changed |= changed;
            if !self.in_oversized {
                self.in_oversized = true;
                self.stats.oversized_lines += 1;
            }
        }
        Ok(())
    }

    fn run_window(&mut self, target: usize, last: bool) -> io::Result<(usize, bool)> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let (commit, changed) =
            self.scanner
                .window(&self.partial, self.ctx, target, last, &mut out);
        let res = self.write(&out);
        self.out = out;
        res.map(|()| (commit, changed))
    }

    /// Finishes the line assembled in `partial`; `ending` is its line terminator (empty at EOF).
    fn finish_partial(&mut self, ending: &[u8]) -> io::Result<()> {
        self.cut_windows()?;
        let mut term: &[u8] = ending;
        if self.partial.len() > self.ctx && self.partial.last() == Some(&b'\r') && ending == b"\n" {
            self.partial.pop();
            term = b"\r\n";
        }
        self.stats.lines += 1;
        if self.in_oversized {
            let (_, changed) = self.run_window(self.partial.len(), true)?;
            if self.piece_changed || changed {
                self.stats.lines_redacted += 1;
            }
        } else {
            let text = std::mem::take(&mut self.partial);
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            let changed = (self.f)(&mut self.scanner, &text, &mut out);
            let res = if changed {
                self.stats.lines_redacted += 1;
                self.write(&out)
            } else {
                self.write(&text)
            };
            self.out = out;
            self.partial = text;
            res?;
        }
        self.write(term)?;
        self.partial.clear();
        self.ctx = 0;
        self.in_oversized = false;
        self.piece_changed = false;
        Ok(())
    }
}

#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    match line.last() {
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    }
}

impl Redactor {
    /// Streams text from `reader` to `writer`, redacting line by line, and adds what was
    /// replaced to `counts`. Memory stays bounded by the reader's buffer and the line cap
    /// (see [`with_max_line`](Self::with_max_line)); line endings are preserved.
    pub fn redact_text_stream<R: BufRead, W: Write>(
        &self,
        reader: R,
        writer: W,
        counts: &mut Counts,
    ) -> io::Result<Stats> {
        let (stats, tally) = self.drive(
            reader,
            writer,
            |s: &mut Scanner<'_>, text: &[u8], out: &mut Vec<u8>| s.text_line(text, out),
        )?;
        self.finish_tally(&tally, counts, stats)
    }

    /// Runs a stream through `f` line by line (and over-long lines through text windows);
    /// returns the stream's statistics and the replacements per rule slot.
    pub(crate) fn drive<R: BufRead, W: Write, F: LineFn>(
        &self,
        mut reader: R,
        writer: W,
        f: F,
    ) -> io::Result<(Stats, Vec<u64>)> {
        let mut d = Driver {
            writer,
            f,
            scanner: Scanner::new(self),
            max_line: self.max_line,
            overlap: OVERLAP.max(self.longest_literal_line() + 64),
            partial: Vec::new(),
            ctx: 0,
            in_oversized: false,
            piece_changed: false,
            out: Vec::new(),
            stats: Stats::default(),
        };
        loop {
            let buf = match reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            let len = buf.len();
            d.stats.bytes_in += len as u64;
            let mut pos = 0;
            if !d.partial.is_empty() || d.in_oversized {
                match memchr(b'\n', buf) {
                    Some(nl) => {
                        d.partial.extend_from_slice(&buf[..nl]);
                        d.finish_partial(b"\n")?;
                        pos = nl + 1;
                    }
                    None => {
                        d.partial.extend_from_slice(buf);
                        d.cut_windows()?;
                        pos = len;
                    }
                }
            }
            if pos < len {
                let rest = &buf[pos..];
                let tail = d.lines_in_place(rest)?;
                if tail < rest.len() {
                    d.partial.extend_from_slice(&rest[tail..]);
                    d.cut_windows()?;
                }
            }
            reader.consume(len);
        }
        if !d.partial.is_empty() || d.in_oversized {
            d.finish_partial(b"")?;
        }
        d.writer.flush()?;
        Ok((d.stats, d.scanner.tally))
    }

    pub(crate) fn finish_tally(
        &self,
        tally: &[u64],
        counts: &mut Counts,
        mut stats: Stats,
    ) -> io::Result<Stats> {
        self.add_tally(tally, counts);
        stats.redactions = tally.iter().sum();
        Ok(stats)
    }
}
