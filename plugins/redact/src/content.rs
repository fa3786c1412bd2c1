//! What a file holds, judged by its first bytes: text; text compressed with gzip or zstd,
//! decoded here so that the text is what gets redacted; or content that cannot be redacted
//! (binary data, other compression formats), which is reported and never copied.

use std::io::{self, BufRead, BufReader, Cursor, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

/// Bytes looked at to tell binary data from text: a NUL byte among them means binary (text
/// in any ASCII-compatible encoding never holds one).
pub const SNIFF: usize = 8 * 1024;

/// A compression format the plugin decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The name of the decoded copy of a file called `name`: its compression suffix dropped
    /// (`app.log.gz` is written as `app.log`, `x.tgz` as `x.tar`); a name without one is kept.
    pub fn decoded_name(self, name: &str) -> String {
        let suffixes: &[(&str, &str)] = match self {
            Compression::Gzip => &[(".gz", ""), (".gzip", ""), (".tgz", ".tar")],
            Compression::Zstd => &[(".zst", ""), (".zstd", ""), (".tzst", ".tar")],
        };
        for (suffix, replacement) in suffixes {
            if name.len() > suffix.len()
                && name
                    .get(name.len() - suffix.len()..)
                    .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
            {
                return format!("{}{replacement}", &name[..name.len() - suffix.len()]);
            }
        }
        name.to_owned()
    }
}

/// A file opened for redaction.
pub enum Content {
    /// Text to redact, decoded when the file was compressed.
    Text {
        reader: Box<dyn BufRead>,
        compression: Option<Compression>,
    },
    /// Content that is not redacted, and why (it is not copied either).
    Unredactable(String),
}

/// Formats recognised by their magic bytes that are not decoded.
const UNSUPPORTED: &[(&[u8], &str)] = &[
    (&[0xFD, b'7', b'z', b'X', b'Z', 0x00], "xz"),
    (b"BZh", "bzip2"),
    (&[0x04, 0x22, 0x4D, 0x18], "lz4"),
    (b"PK\x03\x04", "zip"),
    (&[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C], "7z"),
];

/// Looks at the start of `reader` and decides what it holds; decoded text is read through a
/// buffer of `buf` bytes.
pub fn open<R: BufRead + 'static>(mut reader: R, buf: usize) -> io::Result<Content> {
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1F, 0x8B]) {
        let decoder = flate2::bufread::MultiGzDecoder::new(reader);
        return decoded_text(Box::new(decoder), Compression::Gzip, buf);
    }
    if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        let decoder = ZstdFrames::new(reader)?;
        return decoded_text(Box::new(decoder), Compression::Zstd, buf);
    }
    if let Some((_, name)) = UNSUPPORTED.iter().find(|(m, _)| head.starts_with(m)) {
        return Ok(Content::Unredactable(format!(
            "{name}-compressed; only gzip and zstd are decoded"
        )));
    }
    if head[..head.len().min(SNIFF)].contains(&0) {
        return Ok(Content::Unredactable("binary data, not text".into()));
    }
    Ok(Content::Text {
        reader: Box::new(reader),
        compression: None,
    })
}

/// Reads the start of decoded content to tell text from binary data, then hands back a
/// reader over all of it.
fn decoded_text(
    mut decoded: Box<dyn Read>,
    compression: Compression,
    buf: usize,
) -> io::Result<Content> {
    let mut head = Vec::with_capacity(SNIFF);
    (&mut decoded).take(SNIFF as u64).read_to_end(&mut head)?;
    if head.contains(&0) {
        return Ok(Content::Unredactable(format!(
            "{}-compressed binary data, not text",
            compression.as_str()
        )));
    }
    Ok(Content::Text {
        reader: Box::new(BufReader::with_capacity(
            buf,
            Cursor::new(head).chain(decoded),
        )),
        compression: Some(compression),
    })
}

/// Every frame of a zstd file, one after the other (a file may hold several).
struct ZstdFrames<R: BufRead> {
    frame: Option<StreamingDecoder<R, FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> io::Result<ZstdFrames<R>> {
        let frame = StreamingDecoder::new(source).map_err(invalid)?;
        Ok(ZstdFrames { frame: Some(frame) })
    }
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(frame) = self.frame.as_mut() else {
                return Ok(0);
            };
            let n = frame.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done: another may follow.
            let (mut source, decoder) = self.frame.take().expect("present").into_parts();
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.frame =
                Some(StreamingDecoder::new_with_decoder(source, decoder).map_err(invalid)?);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn text_of(content: Content) -> (String, Option<Compression>) {
        match content {
            Content::Text {
                mut reader,
                compression,
            } => {
                let mut s = String::new();
                reader.read_to_string(&mut s).unwrap();
                (s, compression)
            }
            Content::Unredactable(why) => panic!("unredactable: {why}"),
        }
    }

    fn why(content: Content) -> String {
        match content {
            Content::Unredactable(why) => why,
            Content::Text { .. } => panic!("read as text"),
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn plain_text_and_binary() {
        let (text, c) = text_of(open(Cursor::new(b"plain\n".to_vec()), 64).unwrap());
        assert_eq!((text.as_str(), c), ("plain\n", None));
        let (text, _) = text_of(open(Cursor::new(Vec::new()), 64).unwrap());
        assert_eq!(text, "", "an empty file is text");
        assert!(why(open(Cursor::new(b"ELF\0\x01".to_vec()), 64).unwrap()).contains("binary"));
        let late_nul = [vec![b'a'; SNIFF], vec![0]].concat();
        assert!(matches!(
            open(Cursor::new(late_nul), 64).unwrap(),
            Content::Text { .. }
        ));
        for (magic, name) in UNSUPPORTED {
            let data = [magic.to_vec(), b"rest".to_vec()].concat();
            assert!(why(open(Cursor::new(data), 64).unwrap()).starts_with(name));
        }
    }

    #[test]
    fn gzip_and_zstd_are_decoded_member_by_member() {
        let two = [gzip(b"one bob@example.com\n"), gzip(b"two\n")].concat();
        let (text, c) = text_of(open(Cursor::new(two), 7).unwrap());
        assert_eq!(
            (text.as_str(), c),
            ("one bob@example.com\ntwo\n", Some(Compression::Gzip))
        );
        let two = [zstd(b"one\n"), zstd(b"two\n")].concat();
        let (text, c) = text_of(open(Cursor::new(two), 7).unwrap());
        assert_eq!((text.as_str(), c), ("one\ntwo\n", Some(Compression::Zstd)));
        assert!(
            why(open(Cursor::new(gzip(b"\0\0bin")), 64).unwrap())
                .starts_with("gzip-compressed binary")
        );
        let mut corrupt = gzip(&[b'x'; 10_000]);
        let n = corrupt.len();
        corrupt.truncate(n / 2);
        let mut content = open(Cursor::new(corrupt), 64);
        if let Ok(Content::Text { reader, .. }) = content.as_mut() {
            let mut sink = Vec::new();
            assert!(
                reader.read_to_end(&mut sink).is_err(),
                "a cut gzip is an error"
            );
        }
    }

    #[test]
    fn decoded_names_drop_the_suffix() {
        assert_eq!(Compression::Gzip.decoded_name("app.log.gz"), "app.log");
        assert_eq!(Compression::Gzip.decoded_name("app.LOG.GZ"), "app.LOG");
        assert_eq!(Compression::Gzip.decoded_name("x.tgz"), "x.tar");
        assert_eq!(Compression::Gzip.decoded_name("rotated"), "rotated");
        assert_eq!(Compression::Gzip.decoded_name(".gz"), ".gz");
        assert_eq!(Compression::Zstd.decoded_name("a.jsonl.zst"), "a.jsonl");
    }
}
