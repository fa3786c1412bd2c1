//! Opening files for bulk reading and writing.
//!
//! Natively (unit tests) these are `std` files behind large buffers. In the component they use
//! WASI directly, because that is where the time goes: the standard library's WASI layer reads
//! and writes files in 4 KiB steps, each a round trip into the host. Here every read is one
//! positioned read of a whole 64 KiB chunk (the most the host hands over at once; the caller
//! borrows it, nothing is copied) and every write one positioned write of 1 MiB, each done by
//! the host on the calling thread. (WASI streams, which read ahead and write in the background
//! on the host's blocking threads, were measured too: with 64 KiB per hand-off, the hand-offs
//! cost more than the overlap saved.)

use std::io::{self, BufRead, Write};
use std::path::Path;

/// Opens files below the granted directories.
pub struct Files {
    #[cfg(target_arch = "wasm32")]
    preopens: wasi::Preopens,
}

impl Files {
    /// Looks the granted directories up once per run.
    pub fn new() -> Files {
        Files {
            #[cfg(target_arch = "wasm32")]
            preopens: wasi::Preopens::get(),
        }
    }

    /// A buffered reader over `path`.
    pub fn open(&self, path: &Path) -> io::Result<impl BufRead + use<>> {
        #[cfg(target_arch = "wasm32")]
        {
            self.preopens.open_read(path)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            Ok(io::BufReader::with_capacity(
                crate::IO_BUF,
                std::fs::File::open(path)?,
            ))
        }
    }

    /// A buffered writer to a new (or truncated) file at `path`; `flush` completes it.
    pub fn create(&self, path: &Path) -> io::Result<impl Write + use<>> {
        #[cfg(target_arch = "wasm32")]
        {
            self.preopens.create(path)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            Ok(io::BufWriter::with_capacity(
                crate::IO_BUF,
                std::fs::File::create(path)?,
            ))
        }
    }
}

impl Default for Files {
    fn default() -> Self {
        Files::new()
    }
}

#[cfg(target_arch = "wasm32")]
mod wasi {
    use std::io::{self, BufRead, Read, Write};
    use std::path::{Component, Path};

    use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

    /// Bytes per read: the most the host hands over in one call.
    const CHUNK: usize = 64 * 1024;
    /// Bytes per write.
    const WRITE_CHUNK: usize = 1024 * 1024;

    fn fs_error(e: ErrorCode) -> io::Error {
        let kind = match e {
            ErrorCode::NoEntry => io::ErrorKind::NotFound,
            ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => {
                io::ErrorKind::PermissionDenied
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{e:?}"))
    }

    /// The directories the host preopened (the plugin's fs grant).
    pub struct Preopens(Vec<(Descriptor, String)>);

    impl Preopens {
        pub fn get() -> Preopens {
            Preopens(wasip2::filesystem::preopens::get_directories())
        }

        /// The preopened directory holding `path`, and the path relative to it.
        fn resolve(&self, path: &Path) -> io::Result<(&Descriptor, String)> {
            let (dir, root) = self
                .0
                .iter()
                .filter(|(_, name)| path.starts_with(name))
                .max_by_key(|(_, name)| name.len())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} is not in a granted directory", path.display()),
                    )
                })?;
            let rel = path.strip_prefix(root).map_err(io::Error::other)?;
            let mut parts = Vec::new();
            for c in rel.components() {
                match c {
                    Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                    Component::CurDir => {}
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{}: only plain relative paths", path.display()),
                        ));
                    }
                }
            }
            Ok((dir, parts.join("/")))
        }

        pub fn open_read(&self, path: &Path) -> io::Result<ChunkReader> {
            let (dir, rel) = self.resolve(path)?;
            let file = dir
                .open_at(
                    PathFlags::empty(),
                    &rel,
                    OpenFlags::empty(),
                    DescriptorFlags::READ,
                )
                .map_err(fs_error)?;
            Ok(ChunkReader {
                chunk: Vec::new(),
                pos: 0,
                offset: 0,
                done: false,
                file,
            })
        }

        pub fn create(&self, path: &Path) -> io::Result<ChunkWriter> {
            let (dir, rel) = self.resolve(path)?;
            let file = dir
                .open_at(
                    PathFlags::empty(),
                    &rel,
                    OpenFlags::CREATE | OpenFlags::TRUNCATE,
                    DescriptorFlags::WRITE,
                )
                .map_err(fs_error)?;
            Ok(ChunkWriter {
                buf: Vec::with_capacity(WRITE_CHUNK),
                offset: 0,
                file,
            })
        }
    }

    /// Reads a file chunk by chunk with positioned reads. The caller borrows chunks; nothing
    /// is copied.
    pub struct ChunkReader {
        chunk: Vec<u8>,
        pos: usize,
        offset: u64,
        done: bool,
        file: Descriptor,
    }

    impl BufRead for ChunkReader {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            while self.pos >= self.chunk.len() && !self.done {
                let (data, end) = self
                    .file
                    .read(CHUNK as u64, self.offset)
                    .map_err(fs_error)?;
                self.offset += data.len() as u64;
                self.done = end || data.is_empty();
                self.chunk = data;
                self.pos = 0;
            }
            Ok(&self.chunk[self.pos.min(self.chunk.len())..])
        }

        fn consume(&mut self, amt: usize) {
            self.pos += amt;
        }
    }

    impl Read for ChunkReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            self.consume(n);
            Ok(n)
        }
    }

    /// Writes a file in large positioned writes.
    pub struct ChunkWriter {
        buf: Vec<u8>,
        offset: u64,
        file: Descriptor,
    }

    impl ChunkWriter {
        fn send(&mut self, mut bytes: &[u8]) -> io::Result<()> {
            while !bytes.is_empty() {
                let n = self.file.write(bytes, self.offset).map_err(fs_error)? as usize;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                self.offset += n as u64;
                bytes = &bytes[n..];
            }
            Ok(())
        }

        fn send_buf(&mut self) -> io::Result<()> {
            let buf = std::mem::take(&mut self.buf);
            let result = self.send(&buf);
            self.buf = buf;
            self.buf.clear();
            result
        }
    }

    impl Write for ChunkWriter {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.buf.is_empty() && data.len() >= WRITE_CHUNK {
                self.send(&data[..WRITE_CHUNK])?;
                return Ok(WRITE_CHUNK);
            }
            let n = (WRITE_CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            if self.buf.len() == WRITE_CHUNK {
                self.send_buf()?;
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            if !self.buf.is_empty() {
                self.send_buf()?;
            }
            Ok(())
        }
    }
}
