//! runcap's own diagnostics (`--log-level`, `RUNCAP_LOG`) on stderr, redacted like
//! everything else it prints: every formatted event passes through the environment's
//! redaction (its rules and every secret value runcap can read) before it is written, at
//! any level — including the trace output of the crates runcap is built on, which shows
//! what plugins pass to WASI.

use std::io::Write;
use std::sync::{Arc, RwLock};

use runcap_redact::Redactor;
use tracing_subscriber::fmt::MakeWriter;

/// The redaction diagnostics go through: the default rules until the environment's is
/// known ([`use_redactor`]).
static REDACTOR: RwLock<Option<Arc<Redactor>>> = RwLock::new(None);

/// From now on, diagnostics are redacted with `r` (the environment's rules and secrets).
pub fn use_redactor(r: Arc<Redactor>) {
    *REDACTOR.write().unwrap_or_else(|p| p.into_inner()) = Some(r);
}

fn current() -> Arc<Redactor> {
    REDACTOR
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Where the subscriber writes: stderr, one redacted event at a time.
#[derive(Clone, Copy, Default)]
pub struct RedactedStderr;

impl<'a> MakeWriter<'a> for RedactedStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter(Vec::new())
    }
}

/// Collects one event's text and writes it, redacted as a whole, when dropped: a value
/// is never split between two writes, so none is half-redacted.
pub struct EventWriter(Vec<u8>);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl EventWriter {
    /// The event's text as it is written: redacted as a whole.
    fn redacted(&self) -> String {
        current()
            .redact_str(&String::from_utf8_lossy(&self.0))
            .into_owned()
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let _ = std::io::stderr()
            .lock()
            .write_all(self.redacted().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_redacted_whole() {
        let mut w = RedactedStderr.make_writer();
        // Written in two pieces, the address is still redacted: the event is one unit.
        w.write_all(b"trace: mail to jane.doe@exa").unwrap();
        w.write_all(b"mple.com failed\n").unwrap();
        assert_eq!(w.redacted(), "trace: mail to [EMAIL_REDACTED] failed\n");
        // With the environment's redactor, its secrets go too.
        let secret = "s3cr3t-value-for-diagnostics";
        let r = Redactor::default()
            .with_literals([("token", secret)])
            .unwrap();
        use_redactor(Arc::new(r));
        let mut w = RedactedStderr.make_writer();
        w.write_all(format!("debug: header {secret}\n").as_bytes())
            .unwrap();
        assert_eq!(w.redacted(), "debug: header [SECRET_REDACTED]\n");
    }
}
