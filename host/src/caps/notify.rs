//! `notify`: messages to webhook channels the operator names.
//!
//! | | |
//! |---|---|
//! | grants | sending a message to each channel listed; never choosing a URL |
//! | manifest | `[plugins.NAME.grants.notify.channels.oncall]` `url = "https://hooks.slack.com/…"`, `format = "slack"` (or `"json"`) |
//! | default | no grant: the interface cannot be imported; an unlisted channel is denied |
//! | enforced | the plugin names a channel; the host owns its URL and payload format; nothing is sent in dry-run |
//! | audit | one call record per message: channel, decision, the webhook's answer |
//!
//! Payloads: `json` posts `{severity, title, text, fields, environment, runbook, run_id,
//! step, sent_at}`; `slack` posts an incoming-webhook body (`text` plus `blocks`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::bindings::runcap::plugin::notify as wit;
use crate::caps::compare::{Change, ChangeKind};
use crate::caps::{ActionInfo, CallRecord, HostState, now_ms};
use crate::manifest::{KeyPath, Validator};

/// The WIT interface this module implements.
pub const INTERFACE: &str = "runcap:plugin/notify";

/// `[plugins.NAME.grants.notify]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyGrantConfig {
    /// `[plugins.NAME.grants.notify.channels.CHANNEL]`
    pub channels: BTreeMap<String, ChannelConfig>,
}

/// One channel as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// `url = "https://…"`: where messages are POSTed.
    pub url: String,
    /// `format = "json"` (default) or `"slack"`.
    pub format: Option<String>,
}

/// The payload a channel expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Slack,
}

/// A validated channel.
#[derive(Debug, Clone)]
pub struct Channel {
    pub url: Url,
    pub format: Format,
}

/// A validated notify grant.
#[derive(Debug, Clone)]
pub struct NotifyGrant {
    pub channels: BTreeMap<String, Channel>,
    /// `plugins.NAME.grants.notify`, for denial messages.
    pub key: String,
}

impl NotifyGrant {
    /// Checks a raw grant, recording every problem in `v`.
    pub fn validate(
        v: &mut Validator,
        path: &KeyPath,
        raw: NotifyGrantConfig,
    ) -> Option<Arc<Self>> {
        let mut channels = BTreeMap::new();
        let mut ok = true;
        for (name, c) in raw.channels {
            let cp = path.key("channels").key(&name);
            ok &= v.name(&cp, "channel", &name);
            let url = match Url::parse(&c.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
                _ => {
                    v.error(
                        &cp.key("url"),
                        format!("`{}` is not an http(s) URL", c.url),
                        "",
                    );
                    None
                }
            };
            let format = match c.format.as_deref() {
                None | Some("json") => Some(Format::Json),
                Some("slack") => Some(Format::Slack),
                Some(other) => {
                    v.error(
                        &cp.key("format"),
                        format!("`{other}` is not a payload format"),
                        "use \"json\" or \"slack\"",
                    );
                    None
                }
            };
            match (url, format) {
                (Some(url), Some(format)) => {
                    channels.insert(name, Channel { url, format });
                }
                _ => ok = false,
            }
        }
        ok.then(|| {
            Arc::new(NotifyGrant {
                channels,
                key: path.to_string(),
            })
        })
    }

    /// One line per channel, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        self.channels
            .iter()
            .map(|(name, c)| {
                let origin = crate::caps::http::policy::origin_of(&c.url);
                format!(
                    "channel {name} → {origin} ({})",
                    if c.format == Format::Slack {
                        "slack"
                    } else {
                        "json"
                    }
                )
            })
            .collect()
    }
}

/// Compares two notify grants as written: a new channel, or a channel that posts
/// somewhere else, widens. A channel is within an old one of the same name (or `*`,
/// in a ceiling) whose URL its URL starts with.
pub fn diff(old: &NotifyGrantConfig, new: &NotifyGrantConfig) -> Vec<Change> {
    let mut out = Vec::new();
    let root = KeyPath::root().key("channels");
    for (name, c) in &new.channels {
        let at = root.key(name);
        let bounds: Vec<&ChannelConfig> = [old.channels.get(name), old.channels.get("*")]
            .into_iter()
            .flatten()
            .collect();
        if bounds.iter().any(|b| c.url.starts_with(&b.url)) {
            if let Some(o) = old.channels.get(name)
                && o.format != c.format
            {
                out.push(Change::new(
                    at.key("format"),
                    ChangeKind::Note,
                    format!("channel `{name}` changes its payload format"),
                ));
            }
            continue;
        }
        match old.channels.get(name) {
            Some(o) => out.push(Change::new(
                at.key("url"),
                ChangeKind::Changed,
                format!(
                    "channel `{name}` posts to `{}` instead of `{}`",
                    c.url, o.url
                ),
            )),
            None => out.push(Change::new(
                at,
                ChangeKind::Added,
                format!("may post to channel `{name}` (`{}`)", c.url),
            )),
        }
    }
    for name in old.channels.keys() {
        if name != "*" && !new.channels.contains_key(name) {
            out.push(Change::new(
                root.clone(),
                ChangeKind::Removed,
                format!("may no longer post to channel `{name}`"),
            ));
        }
    }
    out
}

/// Sends messages for one plugin's grant.
pub struct Notifier {
    grant: Arc<NotifyGrant>,
    client: reqwest::Client,
}

impl Notifier {
    pub fn new(grant: Arc<NotifyGrant>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(crate::caps::http::tls_config(&[])?)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Notifier { grant, client })
    }
}

/// The body a channel receives.
pub fn payload(format: Format, m: &wit::Message, info: &ActionInfo) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = m
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    match format {
        Format::Json => serde_json::json!({
            "severity": m.severity,
            "title": m.title,
            "text": m.text,
            "fields": fields,
            "environment": info.environment,
            "runbook": info.runbook,
            "run_id": info.run_id,
            "step": info.step,
            "sent_at": now_ms(),
        }),
        Format::Slack => {
            let icon = match m.severity.as_str() {
                "critical" | "high" => ":rotating_light:",
                "medium" => ":warning:",
                _ => ":information_source:",
            };
            let headline = format!("{icon} *[{}] {}*", m.severity.to_uppercase(), m.title);
            let mut slack_fields: Vec<serde_json::Value> = m
                .fields
                .iter()
                .map(|(k, v)| serde_json::json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")}))
                .collect();
            slack_fields.push(serde_json::json!({"type": "mrkdwn", "text": format!("*environment*\n{}", info.environment)}));
            slack_fields.push(serde_json::json!({"type": "mrkdwn", "text": format!("*run*\n{} ({})", info.run_id, info.runbook)}));
            slack_fields.truncate(10);
            serde_json::json!({
                "text": format!("{headline}\n{}", m.text),
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": m.text}},
                    {"type": "section", "fields": slack_fields},
                ],
            })
        }
    }
}

impl wit::Host for HostState {
    async fn send(
        &mut self,
        channel: String,
        message: wit::Message,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        let op = "send";
        let Some(notifier) = self.granted.notify.clone() else {
            let reason = format!(
                "no notify grant; add [plugins.{}.grants.notify.channels.{channel}]",
                self.plugin
            );
            self.record(CallRecord::denied("notify", op, &channel, &reason));
            return Ok(Err(wit::Error::Denied(reason)));
        };
        let Some(target) = notifier.grant.channels.get(&channel) else {
            let reason = format!(
                "channel `{channel}` is not granted; add it under [{}.channels.{channel}] with its url",
                notifier.grant.key
            );
            self.record(CallRecord::denied("notify", op, &channel, &reason));
            return Ok(Err(wit::Error::Denied(reason)));
        };
        if self.dry_run {
            self.record(
                CallRecord::dry_run("notify", op, &channel)
                    .with_result(format!("would post “{}”", message.title)),
            );
            return Ok(Ok(()));
        }
        let body = payload(target.format, &message, &self.action);
        let timeout = self.remaining().min(Duration::from_secs(10));
        let sent = notifier
            .client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(timeout)
            .send()
            .await;
        let result = match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("the webhook answered {}", r.status())),
            Err(e) if e.is_timeout() => Err("the webhook did not answer in time".to_string()),
            Err(e) => Err(format!("cannot reach the webhook: {e}")),
        };
        let record = CallRecord::allowed("notify", op, &channel);
        match &result {
            Ok(()) => self.record(record.with_result("delivered".into())),
            Err(e) => self.record(record.with_result(e.clone())),
        }
        Ok(result.map_err(wit::Error::Failed))
    }
}
