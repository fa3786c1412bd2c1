//! `notify`: sends one message to a notification channel (webhook, Slack) that the
//! manifest grants. Escalation steps use it to page whoever is on call:
//!
//! ```toml
//! [[runbooks.service-down.incident.escalate]]
//! uses = "notify"
//! with = { channel = "oncall", severity = "{{ incident.severity }}", title = "{{ incident.runbook }} failed {{ incident.failures }} times", text = "last failed step: {{ incident.failed_step }}" }
//! ```

use std::collections::BTreeMap;

use runcap_sdk::{ActionError, Context, Notification, Outcome, Severity};

/// Params of one message.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Channel name under `grants.notify.channels`.
    #[schemars(extend("x-runcap-grant" = "notify.channels"))]
    pub channel: String,
    /// critical, high, medium, low or info (default: info).
    #[serde(default)]
    pub severity: Severity,
    /// One line.
    pub title: String,
    /// The body.
    #[serde(default)]
    pub text: String,
    /// Extra key/value lines, shown as fields; numbers and booleans are written as text.
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// Sends the message; a channel that is not granted is a denial, a webhook that fails is a `fail` outcome.
pub fn run(ctx: &Context, p: Params) -> Result<Outcome, ActionError> {
    let message = Notification {
        severity: p.severity,
        title: p.title.clone(),
        text: p.text,
        fields: p
            .fields
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
    };
    match ctx.notify(&p.channel, &message) {
        Ok(()) if ctx.dry_run => Ok(Outcome::ok(format!(
            "dry run: would notify {}: {}",
            p.channel, p.title
        ))),
        Ok(()) => Ok(Outcome::ok(format!("notified {}: {}", p.channel, p.title))
            .detail("channel", p.channel)),
        Err(runcap_sdk::NotifyError::Denied(m)) => Err(ActionError::Denied(m)),
        Err(runcap_sdk::NotifyError::Failed(m)) => Ok(Outcome::fail(format!(
            "could not notify {}: {m}",
            p.channel
        ))
        .detail("channel", p.channel)
        .detail("error", m)),
    }
}

runcap_sdk::plugin!(name: "notify", description: "Sends a message to a granted notification channel.", run: run);

#[cfg(test)]
mod tests {
    use super::*;
    use runcap_sdk::Status;
    use runcap_sdk::testing::MockHost;

    fn params(channel: &str, severity: Severity) -> Params {
        Params {
            channel: channel.into(),
            severity,
            title: "api down".into(),
            text: "probe failed twice".into(),
            fields: [("incident".to_string(), serde_json::json!(7))].into(),
        }
    }

    #[test]
    fn sends_to_a_granted_channel() {
        let host = MockHost::new().grant_channel("oncall");
        let out = run(&host.context(), params("oncall", Severity::High)).unwrap();
        assert_eq!(out.status, Status::Ok);
        let sent = host.notifications.borrow();
        assert_eq!(sent[0].0, "oncall");
        assert_eq!(
            sent[0].1.fields,
            vec![("incident".to_string(), "7".to_string())]
        );
    }

    #[test]
    fn refuses_ungranted_channels_and_bad_severities() {
        let host = MockHost::new().grant_channel("oncall");
        assert!(matches!(
            run(&host.context(), params("everyone", Severity::High)),
            Err(ActionError::Denied(_))
        ));
        // A severity that is not one is refused when params are read (at `runcap check`).
        let bad = serde_json::from_value::<Params>(
            serde_json::json!({"channel": "oncall", "severity": "urgent", "title": "x"}),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("unknown variant `urgent`"), "{bad}");
        assert!(host.notifications.borrow().is_empty());
    }
}
