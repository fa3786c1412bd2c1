//! The records runcap keeps about what an action did: capability calls and plugin log
//! lines. They are defined here, beside the store that writes them, so that whatever
//! produces them (the capabilities) and whatever stores them (SQLite today, another
//! database later) share one definition and neither depends on the other.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Declares an enum of words a record holds: each variant with the one word that names it
/// in records, reports and manifests (`as_str`, `parse`, `Display`, serde, SQLite), so a
/// word this runcap does not know is an error, never a silent default.
macro_rules! words {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word records use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The value a word names; `None` for a word this runcap does not know.
            pub fn parse(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = String::deserialize(d)?;
                $name::parse(&word).ok_or_else(|| {
                    let known: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    serde::de::Error::custom(format!(
                        "`{word}` is not a {}; expected one of {}",
                        stringify!($name),
                        known.join(", ")
                    ))
                })
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let word = v.as_str()?;
                $name::parse(word).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(
                        format!("the store holds `{word}`, which is not a {}", stringify!($name)).into(),
                    )
                })
            }
        }
    };
}

words! {
    /// What the host decided about one capability call.
    pub enum Decision {
        /// The grant allows it and it was carried out.
        Allowed = "allowed",
        /// The grant does not allow it; the plugin got an error value.
        Denied = "denied",
        /// Allowed, recorded, and not carried out because the run is a dry run.
        DryRun = "dry-run",
    }
}

words! {
    /// How important a plugin's log line is.
    pub enum Level {
        Debug = "debug",
        Info = "info",
        Warn = "warn",
        Error = "error",
    }
}

words! {
    /// A kind of chaos-drill fault, as the fault journal records it.
    pub enum FaultKind {
        Kill = "kill",
        Stop = "stop",
        Latency = "latency",
        Drop = "drop",
        Partition = "partition",
        CorruptFile = "corrupt-file",
        CertExpiry = "cert-expiry",
    }
}

words! {
    /// Where a fault is in its life.
    pub enum FaultState {
        /// Journaled, about to be applied.
        Pending = "pending",
        /// Applied and not yet reverted.
        Active = "active",
        /// Undone.
        Reverted = "reverted",
        /// Undoing it failed; it needs a human.
        RevertFailed = "revert-failed",
    }
}

impl FaultState {
    /// Whether the fault may still be in effect.
    pub fn is_open(self) -> bool {
        matches!(self, FaultState::Pending | FaultState::Active)
    }
}

words! {
    /// How an action judged what it looked at, or that its step did not run.
    pub enum StepStatus {
        /// The step's `when` was false; it did not run.
        Skipped = "skipped",
        Ok = "ok",
        Warn = "warn",
        Fail = "fail",
    }
}

words! {
    /// A stored step: running, cut short by a dead runcap, or finished with a status.
    pub enum StepState {
        Running = "running",
        Interrupted = "interrupted",
        Skipped = "skipped",
        Ok = "ok",
        Warn = "warn",
        Fail = "fail",
    }
}

impl From<StepStatus> for StepState {
    fn from(s: StepStatus) -> Self {
        match s {
            StepStatus::Skipped => StepState::Skipped,
            StepStatus::Ok => StepState::Ok,
            StepStatus::Warn => StepState::Warn,
            StepStatus::Fail => StepState::Fail,
        }
    }
}

words! {
    /// Why an action produced no outcome of its own.
    pub enum FailureKind {
        InvalidParams = "invalid-params",
        Denied = "denied",
        PluginError = "plugin-error",
        Timeout = "timeout",
        OutOfMemory = "out-of-memory",
        Trap = "trap",
        OutputTooLarge = "output-too-large",
        Load = "load",
        /// The run was cancelled (Ctrl-C, SIGTERM) while the action ran.
        Cancelled = "cancelled",
    }
}

words! {
    /// Which part of a run a step belongs to.
    pub enum Phase {
        Main = "main",
        Handler = "handler",
        Rollback = "rollback",
        Escalation = "escalation",
    }
}

words! {
    /// How a run ended.
    pub enum RunStatus {
        Ok = "ok",
        Warn = "warn",
        Fail = "fail",
        Cancelled = "cancelled",
    }
}

impl RunStatus {
    /// The process exit code for this status: 0 ok or warn, 1 failed, 130 cancelled.
    pub fn exit_code(self) -> u8 {
        match self {
            RunStatus::Ok | RunStatus::Warn => 0,
            RunStatus::Fail => 1,
            RunStatus::Cancelled => 130,
        }
    }
}

words! {
    /// A stored run: running, cut short by a dead runcap, or ended with a status.
    pub enum RunState {
        Running = "running",
        Interrupted = "interrupted",
        Ok = "ok",
        Warn = "warn",
        Fail = "fail",
        Cancelled = "cancelled",
    }
}

impl From<RunStatus> for RunState {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Ok => RunState::Ok,
            RunStatus::Warn => RunState::Warn,
            RunStatus::Fail => RunState::Fail,
            RunStatus::Cancelled => RunState::Cancelled,
        }
    }
}

words! {
    /// Where a registered rollback is.
    pub enum RollbackState {
        /// Not run yet (or cut short): `runcap recover` runs it.
        Pending = "pending",
        Done = "done",
        Failed = "failed",
    }
}

words! {
    /// How urgent an incident or a notification is.
    pub enum Severity {
        Critical = "critical",
        High = "high",
        Medium = "medium",
        Low = "low",
        Info = "info",
    }
}

/// One use of a capability, allowed or denied, as run records and the audit log keep it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallRecord {
    /// The capability's name (`http`).
    pub capability: &'static str,
    /// What was asked (`GET`, `restart`, `get`).
    pub operation: String,
    /// What it was asked of (a URL, a service, a secret's name; never a secret's value).
    pub target: String,
    pub decision: Decision,
    /// Why it was denied, naming the manifest key that would allow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What came of it (a status code, a service state, an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The call read something and changed nothing, so its record may wait for the
    /// store's next durable write (see [`crate::store::Store::record_call`]).
    #[serde(skip)]
    pub read_only: bool,
}

impl CallRecord {
    fn new(capability: &'static str, operation: &str, target: &str, decision: Decision) -> Self {
        CallRecord {
            capability,
            operation: operation.to_string(),
            target: target.to_string(),
            decision,
            reason: None,
            result: None,
            at_ms: now_ms(),
            read_only: false,
        }
    }

    /// A call the grant allows.
    pub fn allowed(capability: &'static str, operation: &str, target: &str) -> Self {
        Self::new(capability, operation, target, Decision::Allowed)
    }

    /// A call the grant refuses, with the reason the plugin is told.
    pub fn denied(capability: &'static str, operation: &str, target: &str, reason: &str) -> Self {
        let mut r = Self::new(capability, operation, target, Decision::Denied);
        r.reason = Some(reason.to_string());
        r
    }

    /// A mutating call recorded, not made, in a dry run.
    pub fn dry_run(capability: &'static str, operation: &str, target: &str) -> Self {
        Self::new(capability, operation, target, Decision::DryRun)
    }

    /// The same record with what came of the call.
    pub fn with_result(mut self, result: impl Into<String>) -> Self {
        self.result = Some(result.into());
        self
    }

    /// The same record, marked as a call that changed nothing (a `GET`, a fact read):
    /// losing it to a crash loses no trace of a change.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
}

/// One line a plugin wrote through the `log` capability.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A fault as the journal and `runcap faults` show it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRow {
    pub id: String,
    pub run_id: String,
    pub plugin: String,
    pub kind: FaultKind,
    pub target: String,
    pub state: FaultState,
    pub detail: String,
    pub injected_at: i64,
    pub expires_at: i64,
    pub reverted_at: Option<i64>,
    /// Why it was reverted: plugin, run-end, expiry, signal, recovery, apply-failed.
    pub reverted_by: Option<String>,
    pub revert_result: Option<String>,
}

/// An open fault with what the journal keeps to undo it, and the runcap process that
/// applied it (to tell whether it is orphaned).
#[derive(Debug, Clone)]
pub struct OpenFault {
    pub row: FaultRow,
    /// The recipe that undoes it, as JSON.
    pub revert: String,
    pub pid: u32,
    pub pid_start: u64,
}
