//! Opening files for bulk reading and writing.
//!
//! Natively (unit tests) these are `std` files behind large buffers. In the component they use
//! WASI streams directly, because that is where the time goes: the standard library's WASI
//! layer reads and writes files in 4 KiB steps, each a round trip into the host. Here a file
//! is read 64 KiB at a time (the most the host hands over at once) with the next chunk's read
//! already under way on a host I/O thread while the plugin scans the current one, and written
//! 64 KiB at a time with each write done in the background while the plugin goes on. The host
//! does every file operation on its I/O threads anyway (so a stuck file cannot hold the
//! action past its time limit); streaming lets those hand-offs overlap the scanning instead
//! of adding to it.

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
    use wasip2::io::poll::Pollable;
    use wasip2::io::streams::{InputStream, OutputStream, StreamError};

    /// Bytes per read: the most the host hands over in one call.
    const CHUNK: usize = 64 * 1024;
    /// Bytes per write: the most the host takes in one call.
    const WRITE_CHUNK: usize = 64 * 1024;

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
            ChunkReader::new(file)
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
            ChunkWriter::new(file)
        }
    }

    /// Reads a file through a WASI input stream, one chunk ahead: as soon as a chunk is
    /// handed over, the read of the next one starts on a host I/O thread, so reading overlaps
    /// the scanning of the chunk before it. The caller borrows chunks; nothing is copied.
    pub struct ChunkReader {
        chunk: Vec<u8>,
        pos: usize,
        done: bool,
        // Declared before the descriptor: a stream is dropped before the file it reads.
        stream: InputStream,
        _file: Descriptor,
    }

    impl ChunkReader {
        fn new(file: Descriptor) -> io::Result<ChunkReader> {
            let stream = file.read_via_stream(0).map_err(fs_error)?;
            let mut reader = ChunkReader {
                chunk: Vec::new(),
                pos: 0,
                done: false,
                stream,
                _file: file,
            };
            reader.read_ahead()?;
            Ok(reader)
        }

        /// Starts the next chunk's read in the background. A stream that already holds data
        /// (a host that reads ahead on its own) hands it over here; it is kept.
        fn read_ahead(&mut self) -> io::Result<()> {
            match self.stream.read(CHUNK as u64) {
                Ok(data) => {
                    // Called only with the current chunk unread from its start.
                    self.chunk.extend_from_slice(&data);
                    Ok(())
                }
                Err(StreamError::Closed) => Ok(()),
                Err(StreamError::LastOperationFailed(e)) => Err(stream_error(e)),
            }
        }
    }

    impl BufRead for ChunkReader {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            while self.pos >= self.chunk.len() && !self.done {
                match self.stream.blocking_read(CHUNK as u64) {
                    Ok(data) => {
                        self.chunk = data;
                        self.pos = 0;
                        self.read_ahead()?;
                    }
                    Err(StreamError::Closed) => self.done = true,
                    Err(StreamError::LastOperationFailed(e)) => return Err(stream_error(e)),
                }
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

    /// Writes a file through a WASI output stream: each write is handed to a host I/O thread
    /// and done while the plugin goes on; the next write waits only if that one has not
    /// finished. `flush` waits for the last one and reports any failure.
    pub struct ChunkWriter {
        buf: Vec<u8>,
        // Declared in drop order: the pollable, then the stream, then the file.
        ready: Pollable,
        stream: OutputStream,
        _file: Descriptor,
    }

    impl ChunkWriter {
        fn new(file: Descriptor) -> io::Result<ChunkWriter> {
            let stream = file.write_via_stream(0).map_err(fs_error)?;
            Ok(ChunkWriter {
                buf: Vec::with_capacity(WRITE_CHUNK),
                ready: stream.subscribe(),
                stream,
                _file: file,
            })
        }

        fn send(&mut self, mut bytes: &[u8]) -> io::Result<()> {
            while !bytes.is_empty() {
                let permit = self.stream.check_write().map_err(write_error)? as usize;
                if permit == 0 {
                    self.ready.block();
                    continue;
                }
                let n = permit.min(bytes.len());
                self.stream.write(&bytes[..n]).map_err(write_error)?;
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
            self.stream.blocking_flush().map_err(write_error)?;
            // A failure of the last write surfaces on the next check.
            self.stream.check_write().map_err(write_error)?;
            Ok(())
        }
    }

    fn stream_error(e: wasip2::io::error::Error) -> io::Error {
        io::Error::other(e.to_debug_string())
    }

    fn write_error(e: StreamError) -> io::Error {
        match e {
            StreamError::Closed => io::ErrorKind::BrokenPipe.into(),
            StreamError::LastOperationFailed(e) => stream_error(e),
        }
    }
}
