//! The status page at `/`: server-rendered HTML, no script, readable on a phone. Each
//! runbook shows its last results as a strip of coloured bars (oldest left), its
//! current state, when it last ran and what it said; then open incidents and faults.
//! It reloads itself every 10 seconds. Every text passes the environment's redaction.

use std::fmt::Write;

use super::Server;
use crate::store::StoreError;

/// How many results each runbook's strip shows.
const STRIP: usize = 30;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn class_of(status: &str) -> &'static str {
    match status {
        "ok" => "ok",
        "warn" => "warn",
        "running" => "running",
        "cancelled" | "interrupted" => "cancelled",
        _ => "fail",
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;background:#fafafa;color:#222}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin:0}
.rb{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.8rem;margin:.6rem 0}
.head{display:flex;justify-content:space-between;align-items:center;gap:.5rem;flex-wrap:wrap}
.state{font-weight:600;padding:.1rem .5rem;border-radius:4px;color:#fff}
.strip{display:flex;gap:2px;margin:.5rem 0;height:1.6rem}
.bar{flex:1;max-width:12px;border-radius:2px}
.ok{background:#2e9d4f}.warn{background:#d9a400}.fail{background:#d23c3c}.cancelled{background:#888}.running{background:#3a7bd5}.none{background:#bbb}
.meta{font-size:.85rem;color:#555;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{text-align:left;padding:.3rem;border-bottom:1px solid #eee}";

/// The page, from the store as it is now.
pub fn render(server: &Server) -> Result<String, StoreError> {
    let env = &server.env;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <title>runcap · {}</title><style>{STYLE}</style></head><body>\
         <h1>runcap · environment {}</h1>",
        escape(&env.name),
        escape(&env.name)
    );
    for (name, rb) in &env.runbooks {
        let mut runs = server.store.history(Some(name), STRIP)?;
        runs.reverse();
        let runs = server
            .redacted(&runs)
            .and_then(|v| serde_json::from_value::<Vec<crate::store::RunRow>>(v).ok())
            .unwrap_or_default();
        let last = runs.last();
        let (state, class) = match last {
            Some(r) => (r.status.to_string(), class_of(&r.status.to_string())),
            None => ("no runs yet".to_string(), "none"),
        };
        let _ = write!(
            html,
            "<section class=\"rb\" id=\"rb-{id}\" data-state=\"{class}\"><div class=\"head\"><h2>{id}</h2>\
             <span class=\"state {class}\">{state}</span></div>",
            id = escape(name),
            state = escape(&state),
        );
        if let Some(d) = &rb.description {
            let _ = write!(html, "<div class=\"meta\">{}</div>", escape(d));
        }
        html.push_str("<div class=\"strip\">");
        for r in &runs {
            let status = r.status.to_string();
            let _ = write!(
                html,
                "<span class=\"bar {}\" title=\"{} · {}\"></span>",
                class_of(&status),
                escape(&status),
                escape(&crate::cli::history::time(r.started_at))
            );
        }
        html.push_str("</div>");
        let schedule = rb
            .schedule
            .as_ref()
            .map(|s| format!(" · {}", s.text))
            .unwrap_or_default();
        match last {
            Some(r) => {
                let _ = write!(
                    html,
                    "<div class=\"meta\">last run {} UTC · {}{}</div>",
                    escape(&crate::cli::history::time(r.started_at)),
                    escape(&r.summary),
                    escape(&schedule)
                );
            }
            None => {
                let _ = write!(
                    html,
                    "<div class=\"meta\">{}</div>",
                    escape(schedule.trim_start_matches(" · "))
                );
            }
        }
        html.push_str("</section>");
    }
    let incidents = server.store.incidents(false, 0)?;
    let incidents = server.redacted(&incidents).unwrap_or_default();
    html.push_str("<h2>Open incidents</h2>");
    match incidents.as_array().filter(|a| !a.is_empty()) {
        None => html.push_str("<p class=\"meta\" id=\"no-incidents\">none</p>"),
        Some(list) => {
            html.push_str("<table id=\"incidents\"><tr><th>#</th><th>runbook</th><th>severity</th><th>failures</th></tr>");
            for i in list {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    i["id"],
                    escape(i["runbook"].as_str().unwrap_or_default()),
                    escape(i["severity"].as_str().unwrap_or_default()),
                    i["failures"]
                );
            }
            html.push_str("</table>");
        }
    }
    let faults = server.store.open_faults()?;
    html.push_str("<h2>Open faults</h2>");
    if faults.is_empty() {
        html.push_str("<p class=\"meta\" id=\"no-faults\">none</p>");
    } else {
        html.push_str("<table id=\"faults\"><tr><th>fault</th><th>kind</th><th>target</th></tr>");
        for f in &faults {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&f.row.id),
                escape(f.row.kind.as_str()),
                escape(&f.row.target)
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>");
    Ok(html)
}
