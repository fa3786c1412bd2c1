//! Recording and replaying an action's capability calls (`runcap call --record/--replay`).
//!
//! While recording, every capability call that brings an answer back (all but `log`)
//! is kept with what was asked and what came back, redacted like everything else
//! runcap writes. While replaying, the same calls are answered from the recording and
//! nothing leaves the host, so a plugin's behaviour against real responses can be
//! tested offline, in any language, in CI. A replayed plugin must ask exactly what was
//! recorded, in the same order; anything else stops the action with the difference.

use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// One call and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapeEntry {
    /// `http.send`, `services.control`, …
    pub call: String,
    /// The call's arguments, in order.
    pub args: Value,
    /// What the host answered.
    pub answer: Value,
}

/// Whether a tape is being written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapeMode {
    Record,
    Replay,
}

/// Why a replay cannot answer a call.
#[derive(Debug, Error, PartialEq)]
pub enum TapeError {
    #[error(
        "replay: call {index} is `{call}` with {args}, but the recording has `{want_call}` with {want_args} there"
    )]
    Mismatch {
        index: usize,
        call: String,
        args: String,
        want_call: String,
        want_args: String,
    },
    #[error(
        "replay: call {index} is `{call}` with {args}, but the recording ends after {recorded} calls"
    )]
    Exhausted {
        index: usize,
        call: String,
        args: String,
        recorded: usize,
    },
    #[error("replay: the recorded answer to `{call}` no longer fits its type: {error}")]
    Answer { call: String, error: String },
}

/// The calls of one action, being recorded or replayed.
pub struct Tape {
    mode: TapeMode,
    entries: Vec<TapeEntry>,
    next: usize,
    redactor: Arc<runcap_redact::Redactor>,
}

/// A tape shared by an action's capability views.
pub type SharedTape = Arc<Mutex<Tape>>;

/// What a capability does with a call: answer it from the recording, or make it (and
/// keep the question to record beside the answer).
pub enum Taped<R> {
    Replayed(R),
    Live(Option<(String, Value)>),
}

impl Tape {
    /// An empty tape to record into; what it keeps passes through `redactor`.
    pub fn recording(redactor: Arc<runcap_redact::Redactor>) -> SharedTape {
        Arc::new(Mutex::new(Tape {
            mode: TapeMode::Record,
            entries: Vec::new(),
            next: 0,
            redactor,
        }))
    }

    /// A tape that answers `entries` in order; live arguments are redacted with
    /// `redactor` before they are compared with the recorded ones.
    pub fn replaying(
        entries: Vec<TapeEntry>,
        redactor: Arc<runcap_redact::Redactor>,
    ) -> SharedTape {
        Arc::new(Mutex::new(Tape {
            mode: TapeMode::Replay,
            entries,
            next: 0,
            redactor,
        }))
    }

    /// The calls recorded (or, replaying, the recording).
    pub fn entries(&self) -> &[TapeEntry] {
        &self.entries
    }

    /// How many calls a replay has answered.
    pub fn answered(&self) -> usize {
        self.next
    }

    /// What a call looks like on the tape: JSON, redacted, with byte lists scanned as
    /// text (an HTTP body is a `list<u8>`).
    fn redacted<T: Serialize>(&self, value: &T) -> Value {
        let mut v = serde_json::to_value(value).unwrap_or(Value::Null);
        scrub_byte_lists(&self.redactor, &mut v);
        crate::redaction::scrub_json(&self.redactor, &mut v);
        v
    }

    /// Called before a capability call `call` with `args`.
    pub fn ask<A: Serialize, R: DeserializeOwned>(
        &mut self,
        call: &str,
        args: &A,
    ) -> Result<Taped<R>, TapeError> {
        let args = self.redacted(args);
        if self.mode == TapeMode::Record {
            return Ok(Taped::Live(Some((call.to_string(), args))));
        }
        let index = self.next + 1;
        let Some(want) = self.entries.get(self.next) else {
            return Err(TapeError::Exhausted {
                index,
                call: call.to_string(),
                args: args.to_string(),
                recorded: self.entries.len(),
            });
        };
        if want.call != call || want.args != args {
            return Err(TapeError::Mismatch {
                index,
                call: call.to_string(),
                args: args.to_string(),
                want_call: want.call.clone(),
                want_args: want.args.to_string(),
            });
        }
        self.next += 1;
        serde_json::from_value(want.answer.clone())
            .map(Taped::Replayed)
            .map_err(|e| TapeError::Answer {
                call: call.to_string(),
                error: e.to_string(),
            })
    }

    /// Called after a live call: keeps the question and its answer.
    pub fn answer<R: Serialize>(&mut self, question: (String, Value), answer: &R) {
        let answer = self.redacted(answer);
        let (call, args) = question;
        self.entries.push(TapeEntry { call, args, answer });
    }
}

/// Redacts, in place, every JSON array that is a list of bytes holding UTF-8 text: a
/// secret in an HTTP body must not reach the tape as numbers.
fn scrub_byte_lists(r: &runcap_redact::Redactor, value: &mut Value) {
    match value {
        Value::Array(items) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            match bytes {
                Some(bytes) if !bytes.is_empty() => {
                    if let Ok(text) = std::str::from_utf8(&bytes)
                        && let std::borrow::Cow::Owned(clean) = r.redact_str(text)
                    {
                        *items = clean.bytes().map(Value::from).collect();
                    }
                }
                _ => items.iter_mut().for_each(|v| scrub_byte_lists(r, v)),
            }
        }
        Value::Object(map) => map.values_mut().for_each(|v| scrub_byte_lists(r, v)),
        _ => {}
    }
}

/// Wraps one capability call so it can be recorded or replayed: `$ctx` is the
/// capability's view, `$call` the tape's name for it, `$args` what it was asked, and
/// `$live` the future that makes the call. Outside `runcap call --record/--replay` it
/// only runs `$live`.
#[macro_export]
macro_rules! taped {
    ($ctx:ident, $call:literal, ($($arg:expr),*), $live:expr) => {{
        match $ctx.tape_ask($call, &($(&$arg,)*))? {
            $crate::caps::tape::Taped::Replayed(answer) => Ok(answer),
            $crate::caps::tape::Taped::Live(question) => {
                let answer = $live.await?;
                if let Some(question) = question {
                    $ctx.tape_answer(question, &answer);
                }
                Ok(answer)
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secret: &str) -> Arc<runcap_redact::Redactor> {
        let spec = crate::redaction::Spec {
            config: Default::default(),
            literals: vec![("token".into(), secret.into())],
        };
        crate::redaction::host_redactor(&spec).unwrap()
    }

    #[test]
    fn a_recording_replays_and_a_different_question_is_named() {
        let r = redactor("s3cr3t-t0ken-value");
        let rec = Tape::recording(r.clone());
        let mut t = rec.lock().unwrap();
        let Taped::Live(Some(q)) = t.ask::<_, u16>("http.send", &("http://x/", 1)).unwrap() else {
            panic!("recording asks live")
        };
        t.answer(q, &200u16);
        let entries = t.entries().to_vec();
        drop(t);

        let play = Tape::replaying(entries.clone(), r.clone());
        let mut p = play.lock().unwrap();
        let Taped::Replayed(answer) = p.ask::<_, u16>("http.send", &("http://x/", 1)).unwrap()
        else {
            panic!("replaying answers")
        };
        assert_eq!(answer, 200);
        let more = p.ask::<_, u16>("http.send", &("http://x/", 1));
        assert!(matches!(
            more,
            Err(TapeError::Exhausted { recorded: 1, .. })
        ));

        let play = Tape::replaying(entries, r);
        let mut p = play.lock().unwrap();
        let err = p
            .ask::<_, u16>("http.send", &("http://y/", 1))
            .err()
            .unwrap();
        assert!(err.to_string().contains("\"http://y/\""), "{err}");
        assert!(err.to_string().contains("\"http://x/\""), "{err}");
    }

    #[test]
    fn secrets_in_text_and_in_byte_lists_are_redacted_on_the_tape() {
        let secret = "s3cr3t-t0ken-value";
        let rec = Tape::recording(redactor(secret));
        let mut t = rec.lock().unwrap();
        let body: Vec<u8> = format!("{{\"token\":\"{secret}\"}}").into_bytes();
        let Taped::Live(Some(q)) = t.ask::<_, ()>("http.send", &(secret, &body)).unwrap() else {
            panic!()
        };
        t.answer(q, &(body.clone(), format!("x{secret}\ny")));
        let written = serde_json::to_string(t.entries()).unwrap();
        assert!(!written.contains(secret), "{written}");
        let numbers = serde_json::to_string(&body).unwrap();
        assert!(
            !written.contains(&numbers[1..numbers.len() - 1]),
            "{written}"
        );
    }
}
