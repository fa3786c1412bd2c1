//! The WASI a plugin gets: clocks, random, and captured stdout/stderr. No
//! environment, no arguments, no sockets, no preopened directories unless a
//! filesystem grant adds them.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// WASI interface families a plugin may import and use (the filesystem only through
/// the preopens an `fs` grant adds).
pub const ALLOWED_FAMILIES: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

/// WASI interface families a plugin may import but never use: language runtimes
/// (CPython, StarlingMonkey) import sockets whether or not a plugin opens one, so the
/// import loads and every use is denied at runtime ([`builder`] allows no TCP, UDP or
/// name lookup). A plugin reaches the network only through `runcap:plugin/http`.
pub const DENIED_AT_RUNTIME_FAMILIES: &[&str] = &["wasi:sockets/"];

/// What runcap does with a WASI (or other non-capability) import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasiImport {
    /// Provided and usable.
    Allowed,
    /// Provided so the component loads; every use fails.
    DeniedAtRuntime,
    /// Not provided: the component is refused at load.
    NotProvided,
}

/// How runcap treats `interface`, an import that is not a capability interface.
pub fn classify(interface: &str) -> WasiImport {
    if ALLOWED_FAMILIES.iter().any(|f| interface.starts_with(f)) {
        WasiImport::Allowed
    } else if DENIED_AT_RUNTIME_FAMILIES
        .iter()
        .any(|f| interface.starts_with(f))
    {
        WasiImport::DeniedAtRuntime
    } else {
        WasiImport::NotProvided
    }
}

/// The interface family of an import (`wasi:sockets` for `wasi:sockets/tcp@0.2.0`).
pub fn family(interface: &str) -> &str {
    interface.split('/').next().unwrap_or(interface)
}

/// Builds the WASI context of one action.
pub fn context(stdout: &Capture, stderr: &Capture) -> WasiCtx {
    builder(stdout, stderr).build()
}

/// The WASI context of one action before it is built, for grants (the `fs` capability's
/// preopens) to add to.
pub fn builder(stdout: &Capture, stderr: &Capture) -> WasiCtxBuilder {
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    b
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: u64,
}

/// A bounded sink for a guest's stdout or stderr: keeps the first `cap` bytes and
/// counts the rest, so a chatty plugin neither fails nor fills the host's memory.
#[derive(Clone)]
pub struct Capture {
    cap: usize,
    buf: Arc<Mutex<Buffer>>,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            cap,
            buf: Arc::default(),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let room = self.cap.saturating_sub(b.bytes.len());
        let keep = room.min(data.len());
        b.bytes.extend_from_slice(&data[..keep]);
        b.dropped += (data.len() - keep) as u64;
    }

    /// What was kept, as text, and how many bytes were dropped.
    pub fn take(&self) -> (String, u64) {
        let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let text = String::from_utf8_lossy(&b.bytes).into_owned();
        let dropped = b.dropped;
        *b = Buffer::default();
        (text, dropped)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_head_and_counts_the_rest() {
        let c = Capture::new(5);
        c.push(b"hello world");
        c.push(b"!");
        assert_eq!(c.take(), ("hello".to_string(), 7));
    }
}
