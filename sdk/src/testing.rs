//! A recording [`Host`] for native unit tests of plugin logic.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::context::{Context, Host, Level};
use crate::faults::{Fault, FaultError, FaultSpec};
use crate::http::{HttpError, HttpRequest, HttpResponse};
use crate::notify::{Notification, NotifyError};
use crate::services::{ServiceError, ServiceStatus, Verb};

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

    fn http(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        self.requests.borrow_mut().push(request.clone());
        self.http_answers
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err(HttpError::Connection("no canned response".into())))
    }
}
