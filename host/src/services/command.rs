//! The `command` driver: operator-written shell commands per verb (how systemd, docker
//! compose or kubectl are driven). The plugin chooses the verb; the command line is the
//! operator's alone.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ServiceConfig, ServiceError, ServiceState, Status, Verb, only_for, parse_duration_or};
use crate::manifest::{KeyPath, Validator};

/// A validated command service.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CommandDef {
    pub start: Option<String>,
    pub stop: Option<String>,
    pub restart: Option<String>,
    pub status: Option<String>,
    pub cwd: PathBuf,
    pub timeout: Duration,
}

pub(super) fn validate(
    v: &mut Validator,
    path: &KeyPath,
    c: ServiceConfig,
    cwd: PathBuf,
) -> Option<CommandDef> {
    only_for(
        v,
        path,
        "command",
        &[
            ("command", c.command.is_some()),
            ("args", !c.args.is_empty()),
            ("env", !c.env.is_empty()),
            ("pid_file", c.pid_file.is_some()),
            ("stop_signal", c.stop_signal.is_some()),
            ("grace", c.grace.is_some()),
        ],
    );
    if c.start.is_none() && c.stop.is_none() && c.restart.is_none() && c.status.is_none() {
        v.error(
            path,
            "a command service needs at least one of start, stop, restart, status",
            "add e.g. restart = \"systemctl restart nginx\"",
        );
        return None;
    }
    let timeout = parse_duration_or(
        v,
        &path.key("timeout"),
        c.timeout.as_ref(),
        Duration::from_secs(60),
    );
    Some(CommandDef {
        start: c.start,
        stop: c.stop,
        restart: c.restart,
        status: c.status,
        cwd,
        timeout,
    })
}

/// Runs one shell command with a time limit; returns its exit code and the tail of its output.
fn run(cmd: &str, def: &CommandDef) -> Result<(i32, String), ServiceError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(&def.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ServiceError::Spawn {
            cmd: cmd.to_string(),
            source,
        })?;
    // Drain both pipes while the command runs, so a chatty command cannot block on a
    // full pipe. A command that leaves a daemon holding the pipes open (`server &`) must
    // not hang us, so the result is read without waiting for the pipes to close.
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + def.timeout;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(ServiceError::Wait)? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ServiceError::TimedOut {
                cmd: cmd.to_string(),
                timeout: def.timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let settle = Instant::now() + Duration::from_millis(200);
    let done = |c: &Captured| c.lock().unwrap_or_else(|e| e.into_inner()).1;
    while !(done(&out) && done(&err)) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(5));
    }
    let tail = tail(&(text(&out) + &text(&err)));
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok((code, tail))
}

/// What a drained pipe has given so far, and whether it has closed.
type Captured = std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>;

/// Reads a pipe on a thread of its own until it closes, keeping at most 64 KiB.
fn drain(pipe: Option<Box<dyn Read + Send>>) -> Captured {
    let captured: Captured = Default::default();
    let sink = captured.clone();
    std::thread::spawn(move || {
        if let Some(mut p) = pipe {
            let mut buf = [0u8; 8192];
            while let Ok(n) = p.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut c = sink.lock().unwrap_or_else(|e| e.into_inner());
                if c.0.len() < 64 * 1024 {
                    c.0.extend_from_slice(&buf[..n]);
                }
            }
        }
        sink.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
    });
    captured
}

fn text(c: &Captured) -> String {
    String::from_utf8_lossy(&c.lock().unwrap_or_else(|e| e.into_inner()).0).into_owned()
}

/// The last three non-blank lines of a command's output, on one line.
fn tail(output: &str) -> String {
    let tail: Vec<&str> = output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(3)
        .collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

fn status_of(name: &str, def: &CommandDef) -> Result<Status, ServiceError> {
    let mut st = Status {
        name: name.to_string(),
        state: ServiceState::Unknown,
        pid: None,
        uptime_ms: None,
        last_exit_code: None,
        health_url: None,
        detail: "no status command is configured".into(),
    };
    if let Some(cmd) = &def.status {
        let (code, out) = run(cmd, def)?;
        st.state = match code {
            0 => ServiceState::Running,
            3 => ServiceState::Stopped,
            _ => ServiceState::Unknown,
        };
        st.detail = if out.is_empty() {
            format!("status exited {code}")
        } else {
            format!("status exited {code}: {out}")
        };
    }
    Ok(st)
}

pub(super) fn control(name: &str, def: &CommandDef, verb: Verb) -> Result<Status, ServiceError> {
    let step = |cmd: &Option<String>, what: &'static str| -> Result<String, ServiceError> {
        let Some(cmd) = cmd else {
            return Err(ServiceError::NoCommand {
                name: name.to_string(),
                verb: what,
            });
        };
        let (code, out) = run(cmd, def)?;
        if code != 0 {
            return Err(ServiceError::CommandFailed {
                cmd: cmd.clone(),
                code,
                output: out,
            });
        }
        Ok(out)
    };
    let did = match verb {
        Verb::Status => return status_of(name, def),
        Verb::Start => step(&def.start, "start")?,
        Verb::Stop => step(&def.stop, "stop")?,
        Verb::Restart if def.restart.is_some() => step(&def.restart, "restart")?,
        Verb::Restart => {
            step(&def.stop, "stop")?;
            step(&def.start, "start")?
        }
    };
    let mut st = status_of(name, def)?;
    st.detail = format!(
        "{} done{}; {}",
        verb.as_str(),
        if did.is_empty() {
            String::new()
        } else {
            format!(" ({did})")
        },
        st.detail
    );
    Ok(st)
}
