//! `runcap new NAME --lang rust|python|js`: a plugin project that builds and passes its own
//! tests as written: a params type, one condition, a unit test against the mock host,
//! and a manifest that grants it one origin and runs it (its digest added by `runcap pin`).

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The languages a plugin can be scaffolded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    /// The files of its scaffold.
    fn templates(self) -> &'static [Template] {
        match self {
            Lang::Rust => RUST,
            Lang::Python => PYTHON,
            Lang::Js => JS,
        }
    }

    /// Its SDK's directory in the checkout this runcap was built from.
    fn default_sdk(self) -> PathBuf {
        let dir = match self {
            Lang::Rust => "sdk",
            Lang::Python => "sdk-python",
            Lang::Js => "sdk-js",
        };
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
    }

    /// A file that marks the SDK's directory.
    fn sdk_marker(self) -> &'static str {
        match self {
            Lang::Rust => "Cargo.toml",
            Lang::Python | Lang::Js => "dev.sh",
        }
    }

    /// The commands, run in the project, that set it up and test it, then build its
    /// component; `sdk` is the SDK's directory and `crate_name` the component's file stem.
    fn steps(self, sdk: &str, crate_name: &str) -> Vec<String> {
        match self {
            Lang::Rust => vec![
                "cargo test".into(),
                "cargo build --release --target wasm32-wasip2".into(),
            ],
            Lang::Python => vec![
                format!("PYTHONPATH={sdk}:. python3 -m unittest discover -s tests"),
                format!("{sdk}/dev.sh build . target/wasm32-wasip2/release/{crate_name}.wasm"),
            ],
            Lang::Js => vec![
                "npm install".into(),
                "npm test".into(),
                "npm run build".into(),
            ],
        }
    }
}

/// One file of a scaffold: where it goes in the project, and its template.
struct Template {
    path: &'static str,
    text: &'static str,
}

const RUST: &[Template] = &[
    Template {
        path: "Cargo.toml",
        text: include_str!("../../templates/rust/Cargo.toml.tmpl"),
    },
    Template {
        path: "src/lib.rs",
        text: include_str!("../../templates/rust/src/lib.rs.tmpl"),
    },
    MANIFEST,
];

const PYTHON: &[Template] = &[
    Template {
        path: "app.py",
        text: include_str!("../../templates/python/app.py.tmpl"),
    },
    Template {
        path: "tests/test_app.py",
        text: include_str!("../../templates/python/tests/test_app.py.tmpl"),
    },
    MANIFEST,
];

const JS: &[Template] = &[
    Template {
        path: "package.json",
        text: include_str!("../../templates/js/package.json.tmpl"),
    },
    Template {
        path: "index.js",
        text: include_str!("../../templates/js/index.js.tmpl"),
    },
    Template {
        path: "test/index.test.js",
        text: include_str!("../../templates/js/test/index.test.js.tmpl"),
    },
    MANIFEST,
];

const MANIFEST: Template = Template {
    path: "runcap.toml",
    text: include_str!("../../templates/runcap.toml.tmpl"),
};

/// The runbook the scaffold's manifest declares.
const RUNBOOK: &str = "try";

/// Why a project cannot be created.
#[derive(Debug, Error)]
pub enum NewError {
    #[error(
        "`{0}` is not a plugin name: use lower-case letters, digits and `-`, starting with a letter"
    )]
    BadName(String),
    #[error("{0} already exists; pick another name or remove it")]
    Exists(PathBuf),
    #[error("`{0}` is not an http(s) URL such as http://127.0.0.1:8080/health")]
    BadUrl(String),
    #[error(
        "the SDK is not at {0}; pass --sdk with the path of runcap's `sdk` (Rust), `sdk-python` or `sdk-js` directory"
    )]
    NoSdk(PathBuf),
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// What `runcap new` was asked for.
pub struct NewArgs<'a> {
    pub name: &'a str,
    pub lang: Lang,
    /// Where the project goes (default: `./NAME`).
    pub dir: Option<&'a Path>,
    /// The endpoint the scaffold's check probes, and whose origin its grant allows.
    pub url: &'a str,
    /// The language's SDK directory (default: the one this runcap was built from).
    pub sdk: Option<&'a Path>,
}

/// `scheme://host[:port]` of an http(s) URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// A project written: where, and the commands that test, build and run it.
pub struct Created {
    pub dir: PathBuf,
    pub steps: Vec<String>,
}

/// Writes the project.
pub fn create(args: &NewArgs) -> Result<Created, NewError> {
    let name = args.name;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64;
    if !valid {
        return Err(NewError::BadName(name.to_string()));
    }
    let dir = args
        .dir
        .map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() {
        return Err(NewError::Exists(dir));
    }
    let origin = origin(args.url).ok_or_else(|| NewError::BadUrl(args.url.to_string()))?;
    let lang = args.lang;
    let sdk = args
        .sdk
        .map_or_else(|| lang.default_sdk(), Path::to_path_buf);
    let sdk = sdk
        .canonicalize()
        .map_err(|_| NewError::NoSdk(sdk.clone()))?;
    if !sdk.join(lang.sdk_marker()).is_file() {
        return Err(NewError::NoSdk(sdk));
    }
    let sdk = sdk.display().to_string();
    let crate_name = name.replace('-', "_");
    let steps = lang.steps(&sdk, &crate_name);
    let build = steps.last().cloned().unwrap_or_default();
    let values = [
        ("{{name}}", name.to_string()),
        ("{{crate}}", crate_name.clone()),
        ("{{sdk}}", sdk.clone()),
        ("{{build}}", build),
        ("{{url}}", args.url.to_string()),
        ("{{origin}}", origin),
        ("{{runbook}}", RUNBOOK.to_string()),
    ];
    for t in lang.templates() {
        let mut text = t.text.to_string();
        for (key, value) in &values {
            text = text.replace(key, value);
        }
        let path = dir.join(t.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| NewError::Io(parent.to_path_buf(), e))?;
        }
        std::fs::write(&path, text).map_err(|e| NewError::Io(path.clone(), e))?;
    }
    Ok(Created { dir, steps })
}

/// `runcap new`: creates the project and prints the commands that build, test and run it.
pub fn run(args: &NewArgs) -> u8 {
    match create(args) {
        Ok(created) => {
            let d = created.dir.display();
            println!("created {d}: a {:?} plugin `{}`", args.lang, args.name);
            println!("next:");
            println!("  cd {d}");
            for step in &created.steps {
                println!("  {step}");
            }
            println!("  runcap pin && runcap check && runcap run {RUNBOOK}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_taken_from_http_urls_only() {
        assert_eq!(
            origin("http://127.0.0.1:8080/health?x=1").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin("https://api.example.com").as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(origin("ftp://x/"), None);
        assert_eq!(origin("http:///x"), None);
    }

    #[test]
    fn bad_names_and_existing_directories_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let args = |name: &'static str, dir: PathBuf| NewArgs {
            name,
            lang: Lang::Rust,
            dir: Some(Box::leak(dir.into_boxed_path())),
            url: "http://127.0.0.1:8080/health",
            sdk: None,
        };
        assert!(matches!(
            create(&args("My_Check", tmp.path().join("a"))),
            Err(NewError::BadName(_))
        ));
        assert!(matches!(
            create(&args("check", tmp.path().to_path_buf())),
            Err(NewError::Exists(_))
        ));
        let made = create(&args("disk-check", tmp.path().join("disk-check")))
            .unwrap()
            .dir;
        let manifest = std::fs::read_to_string(made.join("runcap.toml")).unwrap();
        assert!(manifest.contains("[plugins.disk-check]"), "{manifest}");
        assert!(manifest.contains("release/disk_check.wasm"), "{manifest}");
        assert!(!manifest.contains("{{"), "{manifest}");
    }
}
