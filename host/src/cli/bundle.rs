//! `runcap bundle`: one archive with everything recorded in a time window, to attach to
//! an incident ticket or hand to another team.

use std::io::Write;
use std::path::PathBuf;

use crate::caps::now_ms;
use crate::cli::{EnvArgs, StateArgs};

pub fn run(env: &EnvArgs, state: &StateArgs, since: &str, out: Option<PathBuf>) -> u8 {
    let window = match crate::manifest::units::parse_duration(since) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --since {e}");
            return 2;
        }
    };
    let store = match super::open_store(env, state) {
        Ok(s) => s,
        Err(code) => return code,
    };
    super::note_leftovers(&store, env);
    let now = now_ms() as i64;
    let since_ms = now - window.as_millis() as i64;
    let out = out.unwrap_or_else(|| PathBuf::from(format!("runcap-bundle-{now}.tar.gz")));
    let redactor = match super::output_redactor(env) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match write(&store, &redactor, since_ms, since, &out) {
        Ok(n) => {
            println!(
                "wrote {} ({n} runs since {})",
                out.display(),
                super::history::time(since_ms)
            );
            0
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e:#}", out.display());
            2
        }
    }
}

fn write(
    store: &crate::store::Store,
    redactor: &runcap_redact::Redactor,
    since_ms: i64,
    since: &str,
    out: &std::path::Path,
) -> anyhow::Result<usize> {
    let runs = store.runs_since(since_ms)?;
    let mut details = Vec::new();
    for r in &runs {
        if let Some(d) = store.run(&r.id)? {
            details.push(d);
        }
    }
    let incidents = store.incidents(true, since_ms)?;
    let mut audit = store.audit_since(since_ms)?;
    // Redacted again on the way out (see `crate::redaction`); the audit rows keep their
    // hashes, which `runcap audit verify` checks against the store itself.
    let details = crate::redaction::scrub_serde(redactor, &details)
        .ok_or_else(|| anyhow::anyhow!("the runs could not be redacted"))?;
    let incidents = crate::redaction::scrub_serde(redactor, &incidents)
        .ok_or_else(|| anyhow::anyhow!("the incidents could not be redacted"))?;
    for row in &mut audit {
        crate::redaction::scrub_json(redactor, row);
    }
    let verdict = store.verify_audit(None)?;

    let file = tempfile::NamedTempFile::new_in(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new(".")),
    )?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, bytes: Vec<u8>| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(now_ms() / 1000);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("runcap-bundle/{name}"),
            bytes.as_slice(),
        )
    };
    let readme = format!(
        "runcap incident bundle\nwindow: since {since} ({})\nruns: {}\nincidents: {}\naudit rows: {}\naudit chain: {}\n\nruns.json       every run in the window with its steps, outcomes, logs, output and capability calls\nincidents.json  incidents updated in the window, with timelines\naudit.jsonl     audit rows in the window (hash-chained; see `runcap audit verify`)\n",
        super::history::time(since_ms),
        runs.len(),
        incidents.len(),
        audit.len(),
        match &verdict.broken {
            None => format!("intact ({} rows)", verdict.rows),
            Some(b) => format!("BROKEN at row {}: {}", b.seq, b.problem),
        }
    );
    add("README.txt", readme.into_bytes())?;
    add("runs.json", serde_json::to_vec_pretty(&details)?)?;
    add("incidents.json", serde_json::to_vec_pretty(&incidents)?)?;
    let mut lines = Vec::new();
    for row in &audit {
        serde_json::to_writer(&mut lines, row)?;
        lines.write_all(b"\n")?;
    }
    add("audit.jsonl", lines)?;
    let gz = tar.into_inner()?;
    let file = gz.finish()?;
    file.as_file().sync_all()?;
    file.persist(out).map_err(|e| e.error)?;
    Ok(runs.len())
}
