//! The compile cache runs only what was compiled from the pinned component, compiling is
//! bounded, and a component its grants refuse is neither compiled nor cached.

use std::path::PathBuf;

use runcap_e2e::{Sandbox, plugin_lines, plugin_wasm, sha256_file};

/// An environment with the no-op plugin and the http probe (granted or not).
fn sandbox(grant_http: bool) -> Sandbox {
    let sb = Sandbox::new();
    let grant = if grant_http {
        "grants.http = { allow = [\"http://127.0.0.1:9\"] }\n"
    } else {
        ""
    };
    sb.write(
        "runcap.toml",
        &format!(
            r#"
environment = "test"

[plugins.noop]
{noop}
[plugins.probe]
{probe}{grant}
[runbooks.r]
steps = [{{ id = "a", uses = "noop" }}]
"#,
            noop = plugin_lines("noop"),
            probe = plugin_lines("http-probe"),
        ),
    );
    sb
}

/// The cache's compiled artifacts, each with the component digest its header (the
/// `.sum` file beside it) names.
fn entries(sb: &Sandbox) -> Vec<(PathBuf, String)> {
    let dir = sb.path().join(".cache/components");
    let Ok(read) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = read
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .map(|e| {
            let header = std::fs::read(e.path().with_extension("sum")).unwrap();
            (e.path(), hex::encode(&header[8..40]))
        })
        .collect();
    out.sort();
    out
}

fn entry_of(sb: &Sandbox, plugin: &str) -> PathBuf {
    let sha = sha256_file(&plugin_wasm(plugin));
    entries(sb)
        .into_iter()
        .find(|(_, s)| *s == sha)
        .unwrap_or_else(|| panic!("no cache entry for {plugin}: {:?}", entries(sb)))
        .0
}

#[test]
fn a_patched_or_swapped_cache_entry_is_recompiled_not_run() {
    let sb = sandbox(true);
    let first = sb.run(&["check"]).expect_code(0);
    assert!(
        first.stdout().contains("✔ plugin noop: sha256"),
        "{}",
        first.stdout()
    );
    let noop = entry_of(&sb, "noop");
    let probe = entry_of(&sb, "http-probe");
    let original = std::fs::read(&noop).unwrap();
    let cached = sb.run(&["check"]).expect_code(0).stdout();
    assert_eq!(cached.matches("(compiled, cached)").count(), 2, "{cached}");

    // One byte of the compiled code changed: the entry no longer matches its digest.
    let mut patched = original.clone();
    let at = patched.len() / 2;
    patched[at] ^= 0x5a;
    std::fs::write(&noop, &patched).unwrap();
    let out = sb.run(&["check"]).expect_code(0);
    let noop_line = out
        .stdout()
        .lines()
        .find(|l| l.contains("plugin noop"))
        .unwrap()
        .to_string();
    assert!(
        noop_line.contains("(compiled)") && !noop_line.contains("cached"),
        "{noop_line}"
    );
    assert_eq!(
        std::fs::read(&noop).unwrap(),
        original,
        "the entry is rewritten from the component"
    );

    // The no-op plugin's artifact copied under the probe's key, alone or with its header:
    // the probe is recompiled either way.
    std::fs::copy(&noop, &probe).unwrap();
    let out = sb.run(&["check"]).expect_code(0).stdout();
    let probe_line = out.lines().find(|l| l.contains("plugin probe")).unwrap();
    assert!(!probe_line.contains("cached"), "{out}");
    std::fs::copy(&noop, &probe).unwrap();
    std::fs::copy(noop.with_extension("sum"), probe.with_extension("sum")).unwrap();
    let out = sb.run(&["check"]).expect_code(0).stdout();
    let probe_line = out.lines().find(|l| l.contains("plugin probe")).unwrap();
    assert!(!probe_line.contains("cached"), "{out}");
    assert_eq!(entry_of(&sb, "http-probe"), probe);
    // And the probe runs its own code, not the no-op plugin's.
    let described = sb
        .run(&["plugin", "describe", "probe"])
        .expect_code(0)
        .stdout();
    assert!(described.contains("http-probe"), "{described}");
}

#[test]
fn a_component_its_grants_refuse_is_neither_compiled_nor_cached() {
    let sb = sandbox(false);
    let out = sb.run(&["check"]);
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr().contains(
            "plugin `probe` imports `runcap:plugin/http` but the manifest does not grant it"
        ),
        "{}",
        out.stderr()
    );
    let cached: Vec<String> = entries(&sb).into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        cached,
        vec![sha256_file(&plugin_wasm("noop"))],
        "only the accepted plugin is cached"
    );
    // `caps` still shows what the refused component imports, without compiling it.
    let caps = sb.run(&["caps"]);
    assert!(
        caps.stdout().contains("probe"),
        "{}{}",
        caps.stdout(),
        caps.stderr()
    );
    assert_eq!(entries(&sb).len(), 1);
}

#[test]
fn compiling_is_bounded_in_time_and_memory_and_a_failure_caches_nothing() {
    let sb = sandbox(true);
    let out = sb
        .runcap()
        .arg("check")
        .env("RUNCAP_COMPILE_TIMEOUT", "1ms")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot compile")
            && stderr
                .contains("compiling took longer than 0.001s, the limit (RUNCAP_COMPILE_TIMEOUT)"),
        "{stderr}"
    );
    assert!(entries(&sb).is_empty());

    let out = sb
        .runcap()
        .arg("check")
        .env("RUNCAP_COMPILE_MEMORY_MB", "12")
        .env("RUNCAP_COMPILE_TIMEOUT", "60s")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "compiling needed more than 12 MiB of memory, the limit (RUNCAP_COMPILE_MEMORY_MB)"
        ),
        "{stderr}"
    );
    assert!(entries(&sb).is_empty());

    // Within the limits everything compiles; with a 1 MiB bound on the cache only the
    // entry stored last is kept.
    let out = sb
        .runcap()
        .arg("check")
        .env("RUNCAP_CACHE_MAX_MB", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entries(&sb).len(), 1, "{:?}", entries(&sb));
}
