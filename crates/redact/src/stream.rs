//! Line-by-line streaming with bounded memory.
//!
//! Complete lines are processed straight out of the reader's buffer; runs of lines that need no
//! change are written with one call and never copied. Only a line that straddles two buffer
//! fills is assembled in a side buffer, and a line longer than the cap is processed in pieces.

use std::io::{self, BufRead, Write};

use memchr::memchr;

use crate::engine::Span;
use crate::{Counts, Redactor, Stats};

/// Default cap on the bytes of one line processed at once (1 MiB).
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// How far back from the cap a cut point at whitespace is looked for.
const CUT_WINDOW: usize = 4096;

/// Which kind of text the line callback receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A whole line, without its line ending.
    Line,
    /// Part of a line longer than the cap.
    Piece,
}

/// Callback deciding one line: fill `out` and return `true` to replace the text, or return
/// `false` to keep it.
pub(crate) trait LineFn: FnMut(&[u8], Segment, &mut Vec<u8>) -> bool {}
impl<F: FnMut(&[u8], Segment, &mut Vec<u8>) -> bool> LineFn for F {}

struct Driver<W: Write, F: LineFn> {
    writer: W,
    f: F,
    max_line: usize,
    partial: Vec<u8>,
    /// The line being assembled in `partial` already had pieces written.
    in_oversized: bool,
    /// A piece of the current over-long line was changed.
    piece_changed: bool,
    out: Vec<u8>,
    stats: Stats,
}

impl<W: Write, F: LineFn> Driver<W, F> {
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
            if (self.f)(content, Segment::Line, &mut self.out) {
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

    /// Cuts pieces off `partial` while it holds more than a cap's worth of one line.
    fn cut_pieces(&mut self) -> io::Result<()> {
        while self.partial.len() > self.max_line {
            let cut = cut_point(&self.partial, self.max_line);
            let piece = std::mem::take(&mut self.partial);
            self.emit(&piece[..cut], Segment::Piece)?;
            self.partial = piece;
            self.partial.drain(..cut);
            if !self.in_oversized {
                self.in_oversized = true;
                self.stats.oversized_lines += 1;
            }
        }
        Ok(())
    }

    /// Runs the callback on assembled text and writes the result or the original.
    fn emit(&mut self, text: &[u8], seg: Segment) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let changed = (self.f)(text, seg, &mut out);
        let res = if changed {
            match seg {
                Segment::Line => self.stats.lines_redacted += 1,
                Segment::Piece => self.piece_changed = true,
            }
            self.write(&out)
        } else {
            self.write(text)
        };
        self.out = out;
        res
    }

    /// Finishes the line assembled in `partial`; `ending` is its line terminator (empty at EOF).
    fn finish_partial(&mut self, ending: &[u8]) -> io::Result<()> {
        self.cut_pieces()?;
        let mut text = std::mem::take(&mut self.partial);
        let mut term: &[u8] = ending;
        if text.last() == Some(&b'\r') && ending == b"\n" {
            text.pop();
            term = b"\r\n";
        }
        self.stats.lines += 1;
        let seg = if self.in_oversized {
            Segment::Piece
        } else {
            Segment::Line
        };
        if !text.is_empty() || seg == Segment::Line {
            self.emit(&text, seg)?;
        }
        self.write(term)?;
        text.clear();
        self.partial = text;
        if self.piece_changed {
            self.stats.lines_redacted += 1;
        }
        self.in_oversized = false;
        self.piece_changed = false;
        Ok(())
    }

    fn run<R: BufRead>(mut self, mut reader: R) -> io::Result<Stats> {
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
            self.stats.bytes_in += len as u64;
            let mut pos = 0;
            if !self.partial.is_empty() || self.in_oversized {
                match memchr(b'\n', buf) {
                    Some(nl) => {
                        self.partial.extend_from_slice(&buf[..nl]);
                        self.finish_partial(b"\n")?;
                        pos = nl + 1;
                    }
                    None => {
                        self.partial.extend_from_slice(buf);
                        self.cut_pieces()?;
                        pos = len;
                    }
                }
            }
            if pos < len {
                let rest = &buf[pos..];
                let tail = self.lines_in_place(rest)?;
                if tail < rest.len() {
                    self.partial.extend_from_slice(&rest[tail..]);
                    self.cut_pieces()?;
                }
            }
            reader.consume(len);
        }
        if !self.partial.is_empty() || self.in_oversized {
            self.finish_partial(b"")?;
        }
        self.writer.flush()?;
        Ok(self.stats)
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    match line.last() {
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    }
}

/// Where to cut an over-long line: after the last blank within the window before the cap, or
/// at the cap moved back to a UTF-8 character boundary. `buf` is longer than `max`.
fn cut_point(buf: &[u8], max: usize) -> usize {
    let lo = max.saturating_sub(CUT_WINDOW).max(1);
    if let Some(i) = (lo..max).rev().find(|&i| matches!(buf[i], b' ' | b'\t')) {
        return i + 1;
    }
    let mut cut = max;
    let mut steps = 0;
    while cut > 1 && steps < 3 && (buf[cut] & 0xC0) == 0x80 {
        cut -= 1;
        steps += 1;
    }
    cut
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
        let mut tally = vec![0u64; self.rule_slots()];
        let mut spans: Vec<Span> = Vec::new();
        let f = |text: &[u8], _seg: Segment, out: &mut Vec<u8>| {
            self.redact_line_into(text, &mut spans, &mut tally, out)
        };
        let stats = self.drive(reader, writer, f)?;
        self.finish_tally(&tally, counts, stats)
    }

    pub(crate) fn drive<R: BufRead, W: Write, F: LineFn>(
        &self,
        reader: R,
        writer: W,
        f: F,
    ) -> io::Result<Stats> {
        Driver {
            writer,
            f,
            max_line: self.max_line,
            partial: Vec::new(),
            in_oversized: false,
            piece_changed: false,
            out: Vec::new(),
            stats: Stats::default(),
        }
        .run(reader)
    }

    /// Redacts one line of plain text into `out`; false (and `out` untouched) when nothing matched.
    pub(crate) fn redact_line_into(
        &self,
        text: &[u8],
        spans: &mut Vec<Span>,
        tally: &mut [u64],
        out: &mut Vec<u8>,
    ) -> bool {
        self.collect_spans(text, spans);
        if spans.is_empty() {
            return false;
        }
        for sp in spans.iter() {
            tally[sp.rule as usize] += 1;
        }
        self.write_redacted(text, spans, out);
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_prefers_blanks_and_char_boundaries() {
        let mut v = vec![b'a'; 120];
        v[90] = b' ';
        assert_eq!(cut_point(&v, 100), 91);
        let s = "é".repeat(60);
        let cut = cut_point(s.as_bytes(), 101);
        assert!(s.is_char_boundary(cut) && (98..=101).contains(&cut));
    }
}
