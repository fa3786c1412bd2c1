//! The examples in the repository stay valid: their pins match the plugins this
//! checkout builds (plugin builds are reproducible), and `runcap check` passes.

use runcap_e2e::Sandbox;

#[test]
fn every_example_checks_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            // Manifests, not the policy files beside them.
            let manifest = std::fs::read_to_string(&file).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.starts_with("environment") || l.starts_with("extends"))
            });
            if file.extension().is_some_and(|e| e == "toml") && manifest {
                let sb = Sandbox::new();
                let state = sb.path().join("state");
                let out = sb.run(&[
                    "check",
                    "--env",
                    file.to_str().unwrap(),
                    "--state-dir",
                    state.to_str().unwrap(),
                ]);
                assert_eq!(
                    out.code(),
                    0,
                    "{} does not check cleanly (after changing a plugin, run `./dev pin`):\n{}",
                    file.display(),
                    out.stderr()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 2, "found only {checked} example manifests");
}
