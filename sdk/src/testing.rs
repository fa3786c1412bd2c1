//! A recording [`Host`] for native unit tests of plugin logic.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::backup::{
    BackupError, CompareReport, ForgetPolicy, ForgetReport, QueryResult, RestoreReport,
    RestoreRequest, SnapshotInfo, SnapshotReport, VerifyReport,
};
use crate::context::{Context, Host, Level};
use crate::exec::{CommandResult, ExecError};
use crate::faults::{Fault, FaultError, FaultSpec};
use crate::http::{HttpError, HttpRequest, HttpResponse};
use crate::logs::{LogLines, LogQuery, LogsError};
use crate::notify::{Notification, NotifyError};
use crate::services::{ServiceError, ServiceStatus, Verb};
use crate::system::{Fact, FactValue, SystemError};

/// Records every capability call and answers HTTP requests from a queue of canned
/// responses (an empty queue answers `Connection("no canned response")`).
#[derive(Default)]
pub struct MockHost {
    http_answers: RefCell<VecDeque<Result<HttpResponse, HttpError>>>,
    /// Requests the plugin sent, in order.
    pub requests: RefCell<Vec<HttpRequest>>,
    /// Log lines the plugin wrote, in order.
    pub logs: RefCell<Vec<(Level, String)>>,
    /// Messages the plugin sent, with their channel, in order.
    pub notifications: RefCell<Vec<(String, Notification)>>,
    /// Channels that accept messages; others are denied.
    pub channels: Vec<String>,
    /// Answers to service verbs, in order; an empty queue denies.
    service_answers: RefCell<VecDeque<Result<ServiceStatus, ServiceError>>>,
    /// Service verbs the plugin asked for, in order.
    pub service_calls: RefCell<Vec<(String, Verb)>>,
    /// Secrets the plugin may read, by name.
    pub secrets: Vec<(String, String)>,
    /// Faults injected (and not reverted), in order.
    pub faults: RefCell<Vec<Fault>>,
    /// Fault ids reverted, in order.
    pub reverted: RefCell<Vec<String>>,
    /// Whether `inject` succeeds.
    pub allow_faults: bool,
    /// Answers to backup operations, in order; an empty queue denies.
    backup_answers: RefCell<VecDeque<BackupAnswer>>,
    /// Backup operations the plugin asked for, in order, one line each
    /// (`snapshot db main`, `restore latest of db from main into scratch`, ...).
    pub backup_calls: RefCell<Vec<String>>,
    /// Answers to host facts, in order; an empty queue denies.
    system_answers: RefCell<VecDeque<Result<FactValue, SystemError>>>,
    /// Host facts the plugin asked for, in order.
    pub system_calls: RefCell<Vec<Fact>>,
    /// Answers to declared commands, in order; an empty queue denies.
    exec_answers: RefCell<VecDeque<Result<CommandResult, ExecError>>>,
    /// Commands the plugin ran, in order, with their (hole, value) arguments.
    pub exec_calls: RefCell<Vec<ExecCall>>,
    /// Answers to log reads, in order; an empty queue denies.
    log_read_answers: RefCell<VecDeque<Result<LogLines, LogsError>>>,
    /// Log reads the plugin asked for, in order.
    pub log_reads: RefCell<Vec<LogQuery>>,
}

/// A command a plugin ran: its name and its (hole, value) arguments.
pub type ExecCall = (String, Vec<(String, String)>);

/// The canned answer to one backup operation; it must match the operation asked for.
#[derive(Debug, Clone)]
pub enum BackupAnswer {
    Snapshot(Result<SnapshotReport, BackupError>),
    Verify(Result<VerifyReport, BackupError>),
    Restore(Result<RestoreReport, BackupError>),
    Compare(Result<CompareReport, BackupError>),
    Forget(Result<ForgetReport, BackupError>),
    List(Result<Vec<SnapshotInfo>, BackupError>),
    Query(Result<QueryResult, BackupError>),
}

impl MockHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues the answer to the next HTTP request.
    pub fn answer_http(self, answer: Result<HttpResponse, HttpError>) -> Self {
        self.http_answers.borrow_mut().push_back(answer);
        self
    }

    /// Queues the answer to the next service verb.
    pub fn answer_service(self, answer: Result<ServiceStatus, ServiceError>) -> Self {
        self.service_answers.borrow_mut().push_back(answer);
        self
    }

    /// Lets the plugin inject faults (each is recorded, nothing happens).
    pub fn grant_faults(mut self) -> Self {
        self.allow_faults = true;
        self
    }

    /// Queues the answer to the next backup operation.
    pub fn answer_backup(self, answer: BackupAnswer) -> Self {
        self.backup_answers.borrow_mut().push_back(answer);
        self
    }

    fn next_backup(&self, call: String) -> Option<BackupAnswer> {
        self.backup_calls.borrow_mut().push(call);
        self.backup_answers.borrow_mut().pop_front()
    }

    /// Queues the answer to the next host fact.
    pub fn answer_system(self, answer: Result<FactValue, SystemError>) -> Self {
        self.system_answers.borrow_mut().push_back(answer);
        self
    }

    /// Queues the answer to the next command run.
    pub fn answer_exec(self, answer: Result<CommandResult, ExecError>) -> Self {
        self.exec_answers.borrow_mut().push_back(answer);
        self
    }

    /// Queues the answer to the next log read.
    pub fn answer_log_read(self, answer: Result<LogLines, LogsError>) -> Self {
        self.log_read_answers.borrow_mut().push_back(answer);
        self
    }

    /// Lets the plugin read a secret.
    pub fn grant_secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.push((name.to_string(), value.to_string()));
        self
    }

    /// Accepts messages to `channel`.
    pub fn grant_channel(mut self, channel: &str) -> Self {
        self.channels.push(channel.to_string());
        self
    }

    /// A context whose capabilities are this mock.
    pub fn context(&self) -> Context<'_> {
        Context::new(self)
    }
}

impl Host for MockHost {
    fn read_logs(&self, query: &LogQuery) -> Result<LogLines, LogsError> {
        self.log_reads.borrow_mut().push(query.clone());
        self.log_read_answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| {
                Err(LogsError::Denied(format!(
                    "log `{}` is not granted",
                    query.source
                )))
            })
    }

    fn exec(&self, command: &str, args: &[(&str, &str)]) -> Result<CommandResult, ExecError> {
        let args = args
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.exec_calls
            .borrow_mut()
            .push((command.to_string(), args));
        self.exec_answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| {
                Err(ExecError::Denied(format!(
                    "command `{command}` is not granted"
                )))
            })
    }

    fn system(&self, fact: &Fact) -> Result<FactValue, SystemError> {
        self.system_calls.borrow_mut().push(fact.clone());
        self.system_answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err(SystemError::Denied(format!("{fact:?} is not granted"))))
    }

    fn log(&self, level: Level, message: &str, _fields: &[(&str, &str)]) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn notify(&self, channel: &str, message: &Notification) -> Result<(), NotifyError> {
        if !self.channels.iter().any(|c| c == channel) {
            return Err(NotifyError::Denied(format!(
                "channel `{channel}` is not granted"
            )));
        }
        self.notifications
            .borrow_mut()
            .push((channel.to_string(), message.clone()));
        Ok(())
    }

    fn inject(&self, spec: &FaultSpec) -> Result<Fault, FaultError> {
        if !self.allow_faults {
            return Err(FaultError::Denied(format!(
                "{} faults are not granted",
                spec.kind.as_str()
            )));
        }
        let n = self.faults.borrow().len() + self.reverted.borrow().len();
        let f = Fault {
            id: format!("f-{n}"),
            kind: spec.kind,
            target: spec.target.clone(),
            injected_at_ms: crate::context::now_ms(),
            expires_at_ms: crate::context::now_ms() + spec.duration.as_millis() as u64,
            detail: format!("{} on {}", spec.kind.as_str(), spec.target),
        };
        self.faults.borrow_mut().push(f.clone());
        Ok(f)
    }

    fn revert_fault(&self, id: &str) -> Result<(), FaultError> {
        let mut faults = self.faults.borrow_mut();
        let before = faults.len();
        faults.retain(|f| f.id != id);
        if faults.len() == before {
            return Err(FaultError::Failed(format!("no active fault {id}")));
        }
        self.reverted.borrow_mut().push(id.to_string());
        Ok(())
    }

    fn active_faults(&self) -> Vec<Fault> {
        self.faults.borrow().clone()
    }

    fn secret(&self, name: &str) -> Result<String, crate::ActionError> {
        self.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| crate::ActionError::Denied(format!("secret `{name}` is not granted")))
    }

    fn service(&self, name: &str, verb: Verb) -> Result<ServiceStatus, ServiceError> {
        self.service_calls
            .borrow_mut()
            .push((name.to_string(), verb));
        self.service_answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| {
                Err(ServiceError::Denied(format!(
                    "service `{name}` is not granted"
                )))
            })
    }

    fn backup_snapshot(
        &self,
        source: &str,
        repository: &str,
        _tags: &[String],
    ) -> Result<SnapshotReport, BackupError> {
        match self.next_backup(format!("snapshot {source} {repository}")) {
            Some(BackupAnswer::Snapshot(r)) => r,
            other => unexpected("snapshot", other),
        }
    }

    fn backup_verify(
        &self,
        repository: &str,
        read_data: bool,
    ) -> Result<VerifyReport, BackupError> {
        let call = format!(
            "verify {repository}{}",
            if read_data { " read-data" } else { "" }
        );
        match self.next_backup(call) {
            Some(BackupAnswer::Verify(r)) => r,
            other => unexpected("verify", other),
        }
    }

    fn backup_restore(&self, r: &RestoreRequest) -> Result<RestoreReport, BackupError> {
        let what = match (&r.snapshot, &r.source) {
            (Some(id), _) => id.clone(),
            (None, Some(s)) => format!("latest of {s}"),
            (None, None) => "nothing".into(),
        };
        let mut call = format!("restore {what} from {} into {}", r.repository, r.target);
        for (flag, on) in [
            ("dry-run", r.dry_run),
            ("overwrite", r.overwrite),
            ("clean", r.clean),
        ] {
            if on {
                call += &format!(" {flag}");
            }
        }
        match self.next_backup(call) {
            Some(BackupAnswer::Restore(r)) => r,
            other => unexpected("restore", other),
        }
    }

    fn backup_compare(
        &self,
        repository: &str,
        snapshot: &str,
        target: &str,
    ) -> Result<CompareReport, BackupError> {
        match self.next_backup(format!(
            "compare {snapshot} from {repository} with {target}"
        )) {
            Some(BackupAnswer::Compare(r)) => r,
            other => unexpected("compare", other),
        }
    }

    fn backup_forget(
        &self,
        repository: &str,
        p: &ForgetPolicy,
        prune: bool,
    ) -> Result<ForgetReport, BackupError> {
        let call = format!(
            "forget {repository} last {} daily {} weekly {} monthly {}{}",
            p.keep_last,
            p.keep_daily,
            p.keep_weekly,
            p.keep_monthly,
            if prune { " prune" } else { "" }
        );
        match self.next_backup(call) {
            Some(BackupAnswer::Forget(r)) => r,
            other => unexpected("forget", other),
        }
    }

    fn backup_list(
        &self,
        repository: &str,
        source: Option<&str>,
    ) -> Result<Vec<SnapshotInfo>, BackupError> {
        let call = match source {
            Some(s) => format!("list {repository} {s}"),
            None => format!("list {repository}"),
        };
        match self.next_backup(call) {
            Some(BackupAnswer::List(r)) => r,
            other => unexpected("list", other),
        }
    }

    fn backup_query(&self, name: &str) -> Result<QueryResult, BackupError> {
        match self.next_backup(format!("query {name}")) {
            Some(BackupAnswer::Query(r)) => r,
            other => unexpected("query", other),
        }
    }

    fn http(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        self.requests.borrow_mut().push(request.clone());
        self.http_answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err(HttpError::Connection("no canned response".into())))
    }
}

/// An empty queue denies (as an ungranted host would); a wrong answer is a bug in the test.
fn unexpected<T>(op: &str, answer: Option<BackupAnswer>) -> Result<T, BackupError> {
    match answer {
        None => Err(BackupError::Denied(format!(
            "backup {op} is not granted (no canned answer)"
        ))),
        Some(a) => panic!("the plugin asked for backup {op}, but the next canned answer is {a:?}"),
    }
}
