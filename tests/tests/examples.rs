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
            if file.extension().is_some_and(|e| e == "toml") && !file.ends_with("runcap.lock") {
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
