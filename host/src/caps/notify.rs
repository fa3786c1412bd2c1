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
use wasmtime::component::Linker;

use crate::bindings::runcap::plugin::notify as wit;
use crate::caps::compare::{Change, ChangeKind};
use crate::caps::core::{
    ActionInfo, CallRecord, CapCtx, CapData, Capability, Declared, HostState, PrepareError,
    Resources, now_ms,
};
use crate::manifest::{KeyPath, Validator};
use crate::store::records::Severity;

/// The `notify` capability.
pub struct Notify;

impl Capability for Notify {
    const NAME: &'static str = "notify";
    const INTERFACE: &'static str = "runcap:plugin/notify";
    const WIT: Option<&'static str> = Some(include_str!("../../../wit/notify.wit"));
    type Config = NotifyGrantConfig;
    type Grant = NotifyGrant;
    type Access = Notifier;
    type State = ();

    fn hint(plugin: &str) -> String {
        format!(
            "[plugins.{plugin}.grants.notify.channels.oncall]\nurl = \"https://hooks.example.com/oncall\"   # a webhook the plugin may post to"
        )
    }

    fn validate(
        v: &mut Validator,
        at: &KeyPath,
        raw: NotifyGrantConfig,
        _: &Declared,
    ) -> Option<NotifyGrant> {
        NotifyGrant::validate(v, at, raw)
    }

    fn diff(old: &NotifyGrantConfig, new: &NotifyGrantConfig) -> Vec<Change> {
        diff(old, new)
    }

    fn describe(grant: &NotifyGrant) -> Vec<String> {
        grant.describe()
    }

    fn prepare(grant: Arc<NotifyGrant>, _: &Resources) -> Result<Notifier, PrepareError> {
        Notifier::new(grant)
    }

    fn granted_names(grant: Option<&NotifyGrant>, kind: &str) -> Option<Vec<String>> {
        (kind == "channels").then(|| {
            grant
                .map(|g| g.channels.keys().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, CapData<Self>>(linker, HostState::view::<Self>)
    }
}

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
    pub fn validate(v: &mut Validator, path: &KeyPath, raw: NotifyGrantConfig) -> Option<Self> {
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
        ok.then(|| NotifyGrant {
            channels,
            key: path.to_string(),
        })
    }

    /// One line per channel, for `runcap caps`.
    pub fn describe(&self) -> Vec<String> {
        self.channels
            .iter()
            .map(|(name, c)| {
                let origin = crate::net::origin_of(&c.url);
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
    pub fn new(grant: Arc<NotifyGrant>) -> Result<Self, PrepareError> {
        let tls = crate::net::tls_config(&[], None).map_err(|e| PrepareError(e.to_string()))?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| PrepareError(e.to_string()))?;
        Ok(Notifier { grant, client })
    }
}

/// The host's word for a message's severity.
fn severity(s: wit::Severity) -> Severity {
    match s {
        wit::Severity::Critical => Severity::Critical,
        wit::Severity::High => Severity::High,
        wit::Severity::Medium => Severity::Medium,
        wit::Severity::Low => Severity::Low,
        wit::Severity::Info => Severity::Info,
    }
}

/// The body a channel receives.
pub fn payload(format: Format, m: &wit::Message, info: &ActionInfo) -> serde_json::Value {
    let severity = severity(m.severity);
    let fields: serde_json::Map<String, serde_json::Value> = m
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    match format {
        Format::Json => serde_json::json!({
            "severity": severity,
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
            let icon = match severity {
                Severity::Critical | Severity::High => ":rotating_light:",
                Severity::Medium => ":warning:",
                Severity::Low | Severity::Info => ":information_source:",
            };
            let headline = format!(
                "{icon} *[{}] {}*",
                severity.as_str().to_uppercase(),
                m.title
            );
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

impl wit::Host for CapCtx<'_, Notify> {
    async fn send(
        &mut self,
        channel: String,
        message: wit::Message,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        crate::taped!(
            self,
            "notify.send",
            (channel, message),
            self.send_live(channel, message)
        )
    }
}

/// The calls themselves; the [`wit::Host`] impl above records or replays them.
impl CapCtx<'_, Notify> {
    async fn send_live(
        &mut self,
        channel: String,
        message: wit::Message,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        let op = "send";
        let Some(notifier) = self.access else {
            let reason = self.not_granted();
            return Ok(Err(wit::Error::Denied(self.deny(op, &channel, reason))));
        };
        let Some(target) = notifier.grant.channels.get(&channel) else {
            let reason = format!(
                "channel `{channel}` is not granted; add it under [{}.channels.{channel}] with its url",
                notifier.grant.key
            );
            return Ok(Err(wit::Error::Denied(self.deny(op, &channel, reason))));
        };
        if self.dry_run() {
            self.record(
                CallRecord::dry_run(Notify::NAME, op, &channel)
                    .with_result(format!("would post “{}”", message.title)),
            );
            return Ok(Ok(()));
        }
        let body = payload(target.format, &message, &self.core.action);
        let timeout = self.core.remaining().min(Duration::from_secs(10));
        self.core.before_change();
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
        let record = CallRecord::allowed(Notify::NAME, op, &channel);
        match &result {
            Ok(()) => self.record(record.with_result("delivered")),
            Err(e) => self.record(record.with_result(e.clone())),
        }
        Ok(result.map_err(wit::Error::Failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testing::{self, Decl, HttpServer};

    fn message(title: &str) -> wit::Message {
        wit::Message {
            severity: wit::Severity::High,
            title: title.into(),
            text: "api is down".into(),
            fields: vec![("service".into(), "api".into())],
        }
    }

    async fn setup(dry_run: bool) -> (HttpServer, testing::Action) {
        let server = HttpServer::start(200, "").await;
        let manifest = format!(
            "[plugins.p.grants.notify.channels.oncall]\nurl = \"{}/hook\"\nformat = \"json\"\n",
            server.origin()
        );
        let (_d, dir) = testing::dir();
        let grant = testing::grant::<Notify>(&manifest, &dir, &Decl::default()).unwrap();
        let prepared = testing::prepared::<Notify>(grant, &Resources::none());
        (server, testing::recorded(prepared, dry_run, 1 << 20))
    }

    #[tokio::test]
    async fn a_granted_channel_gets_the_payload_and_others_are_denied() {
        let (server, mut action) = setup(false).await;
        let mut ctx = action.state.view::<Notify>();
        wit::Host::send(&mut ctx, "oncall".into(), message("api down"))
            .await
            .unwrap()
            .unwrap();
        let denied = wit::Host::send(&mut ctx, "ceo".into(), message("hi"))
            .await
            .unwrap();
        assert!(
            matches!(&denied, Err(wit::Error::Denied(m)) if m.contains("[plugins.p.grants.notify.channels.ceo]")),
            "{denied:?}"
        );
        let requests = server.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert!(requests[0].starts_with("POST /hook "), "{}", requests[0]);
        let body = &requests[0][requests[0].find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["title"], "api down");
        assert_eq!(json["run_id"], "run-1");
        assert_eq!(
            action.audit(),
            vec![
                ("notify".into(), "allowed".into(), "oncall".into()),
                ("notify".into(), "denied".into(), "ceo".into())
            ]
        );
    }

    #[tokio::test]
    async fn a_dry_run_posts_nothing() {
        let (server, mut action) = setup(true).await;
        let mut ctx = action.state.view::<Notify>();
        wit::Host::send(&mut ctx, "oncall".into(), message("drill"))
            .await
            .unwrap()
            .unwrap();
        assert!(server.requests.lock().unwrap().is_empty());
        assert_eq!(action.audit()[0].1, "dry-run");
    }

    #[test]
    fn grant_errors_and_the_hint() {
        let (_d, dir) = testing::dir();
        let errors = testing::grant::<Notify>(
            "[plugins.p.grants.notify.channels.oncall]\nurl = \"ftp://x\"\nformat = \"teams\"\n",
            &dir,
            &Decl::default(),
        )
        .unwrap_err()
        .join("\n");
        assert!(
            errors.contains("`ftp://x` is not an http(s) URL"),
            "{errors}"
        );
        assert!(
            errors.contains("`teams` is not a payload format"),
            "{errors}"
        );
        testing::grant::<Notify>(&Notify::hint("p"), &dir, &Decl::default()).unwrap();
    }
}
