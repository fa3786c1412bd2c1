//! Files below the plugin's granted directories (`grants.fs`), read and written in large
//! pieces through the host: [`FileReader`] and [`FileWriter`].
//!
//! The standard library reaches the same files through WASI, 4 KiB at a time and at most
//! 64 KiB per call into the host; these hand over a megabyte per call while the host reads
//! the next piece (or writes the last one) on a thread of its own, so a plugin that
//! streams a large file spends its time on the file's content. Paths are the ones the
//! plugin sees (`/NAME/...` for the directory granted as `NAME`). In native unit tests they
//! are plain files behind buffers of the same size.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;

/// Bytes the host hands over per read, and the writer's buffer.
pub const PIECE: usize = 1024 * 1024;

/// A file opened for reading; the host reads ahead while the plugin works.
pub struct FileReader {
    #[cfg(target_arch = "wasm32")]
    inner: wasm::Reader,
    #[cfg(not(target_arch = "wasm32"))]
    inner: io::BufReader<std::fs::File>,
}

impl FileReader {
    /// Opens `path` for reading.
    pub fn open(path: impl AsRef<Path>) -> io::Result<FileReader> {
        #[cfg(target_arch = "wasm32")]
        let inner = wasm::Reader::open(path.as_ref())?;
        #[cfg(not(target_arch = "wasm32"))]
        let inner = io::BufReader::with_capacity(PIECE, std::fs::File::open(path)?);
        Ok(FileReader { inner })
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for FileReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount)
    }
}

/// A file created (or emptied) for writing; the host writes behind while the plugin works.
/// [`FileWriter::finish`] reports whether every write succeeded; dropping it without that
/// closes the file and loses the report.
pub struct FileWriter {
    #[cfg(target_arch = "wasm32")]
    inner: wasm::Writer,
    #[cfg(not(target_arch = "wasm32"))]
    inner: io::BufWriter<std::fs::File>,
}

impl FileWriter {
    /// Creates `path`, or empties it if it exists.
    pub fn create(path: impl AsRef<Path>) -> io::Result<FileWriter> {
        #[cfg(target_arch = "wasm32")]
        let inner = wasm::Writer::create(path.as_ref())?;
        #[cfg(not(target_arch = "wasm32"))]
        let inner = io::BufWriter::with_capacity(PIECE, std::fs::File::create(path)?);
        Ok(FileWriter { inner })
    }

    /// Writes what is buffered, waits until the host has written everything, and closes
    /// the file, reporting the first write that failed.
    pub fn finish(self) -> io::Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            self.inner.finish()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.inner.into_inner().map_err(|e| e.into_error())?;
            Ok(())
        }
    }
}

impl Write for FileWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.inner.write(data)
    }

    /// Hands over what is buffered and waits until the host has written all of it.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use std::io::{self, Write};
    use std::path::Path;

    use crate::bindings::runcap::plugin::fs as wit;

    fn error(e: wit::FileError) -> io::Error {
        match e {
            wit::FileError::NotFound(m) => io::Error::new(io::ErrorKind::NotFound, m),
            wit::FileError::Denied(m) => io::Error::new(io::ErrorKind::PermissionDenied, m),
            wit::FileError::Io(m) => io::Error::other(m),
            wit::FileError::BadHandle => io::Error::other("the file is not open"),
        }
    }

    fn path_str(path: &Path) -> io::Result<&str> {
        path.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the path is not valid UTF-8")
        })
    }

    /// An open file's pieces as the host hands them over.
    pub struct Reader {
        file: wit::Handle,
        piece: Vec<u8>,
        pos: usize,
        ended: bool,
    }

    impl Reader {
        pub fn open(path: &Path) -> io::Result<Reader> {
            let file = wit::open_read(path_str(path)?).map_err(error)?;
            Ok(Reader {
                file,
                piece: Vec::new(),
                pos: 0,
                ended: false,
            })
        }

        pub fn fill_buf(&mut self) -> io::Result<&[u8]> {
            if self.pos >= self.piece.len() && !self.ended {
                self.piece = wit::read(self.file).map_err(error)?;
                self.pos = 0;
                self.ended = self.piece.is_empty();
            }
            Ok(&self.piece[self.pos..])
        }

        pub fn consume(&mut self, amount: usize) {
            self.pos = (self.pos + amount).min(self.piece.len());
        }
    }

    impl Drop for Reader {
        fn drop(&mut self) {
            let _ = wit::close(self.file);
        }
    }

    /// Bytes gathered into whole pieces before they are handed over.
    pub struct Writer {
        file: Option<wit::Handle>,
        buf: Vec<u8>,
    }

    impl Writer {
        pub fn create(path: &Path) -> io::Result<Writer> {
            let file = wit::create(path_str(path)?).map_err(error)?;
            Ok(Writer {
                file: Some(file),
                buf: Vec::with_capacity(super::PIECE),
            })
        }

        fn handle(&self) -> io::Result<wit::Handle> {
            self.file
                .ok_or_else(|| io::Error::other("the file is closed"))
        }

        fn hand_over(&mut self) -> io::Result<()> {
            if !self.buf.is_empty() {
                wit::write(self.handle()?, &self.buf).map_err(error)?;
                self.buf.clear();
            }
            Ok(())
        }

        pub fn finish(mut self) -> io::Result<()> {
            self.hand_over()?;
            let file = self.handle()?;
            self.file = None;
            wit::close(file).map_err(error)
        }
    }

    impl Write for Writer {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.buf.is_empty() && data.len() >= super::PIECE {
                wit::write(self.handle()?, &data[..super::PIECE]).map_err(error)?;
                return Ok(super::PIECE);
            }
            let n = (super::PIECE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            if self.buf.len() == super::PIECE {
                self.hand_over()?;
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            self.hand_over()?;
            wit::flush(self.handle()?).map_err(error)
        }
    }

    impl Drop for Writer {
        /// What `BufWriter` does when dropped: hand over the rest, then close.
        fn drop(&mut self) {
            if let Some(file) = self.file.take() {
                if !self.buf.is_empty() {
                    let _ = wit::write(file, &self.buf);
                }
                let _ = wit::close(file);
            }
        }
    }
}
