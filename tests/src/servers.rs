//! Real servers for the tests that need them, from Debian's packages: a throwaway
//! PostgreSQL and a NATS server with JetStream, each in its own temporary directory on
//! its own port, stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Where Debian installs PostgreSQL's server binaries (`/usr/lib/postgresql/N/bin`).
pub fn postgres_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A throwaway PostgreSQL server on a Unix socket in a temporary directory, stopped on drop.
/// PostgreSQL refuses to run as root, so under root it runs as the `postgres` user the Debian
/// package creates.
pub struct Postgres {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    port: u16,
    as_user: Option<&'static str>,
}

impl Postgres {
    /// A server on its Unix socket only.
    pub fn start() -> Option<Postgres> {
        Self::start_with(None)
    }

    /// A server that also listens on `localhost` over TLS, with this certificate and key
    /// (PEM); connect with [`Postgres::tcp_conn_string`].
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<Postgres> {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Option<Postgres> {
        let Some(bin) = postgres_bin() else {
            eprintln!(
                "\n\n*** SKIPPED: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb). \
                 `./dev setup` installs it with apt-get (postgresql, postgresql-client). ***\n"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("runcap-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let as_user = is_root().then_some("postgres");
        let data = dir.path().join("data");
        let socket = dir.path().to_path_buf();
        if let Some(user) = as_user {
            let ok = Command::new("chown")
                .args([user, dir.path().to_str().unwrap()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown to {user} failed: is there a `{user}` user?");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            _dir: dir,
            bin,
            data,
            socket,
            port,
            as_user,
        };
        pg.server_cmd(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let mut opts = format!("-p {} -k {} -c fsync=off", pg.port, pg.socket.display());
        match tls {
            None => opts += " -c listen_addresses=''",
            Some((cert, key)) => {
                let (cert_file, key_file) =
                    (pg.socket.join("server.crt"), pg.socket.join("server.key"));
                std::fs::write(&cert_file, cert).unwrap();
                std::fs::write(&key_file, key).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
                    .unwrap();
                if let Some(user) = as_user {
                    for f in [&cert_file, &key_file] {
                        let ok = Command::new("chown")
                            .arg(user)
                            .arg(f)
                            .status()
                            .unwrap()
                            .success();
                        assert!(ok, "chown {} failed", f.display());
                    }
                }
                opts += &format!(
                    " -c listen_addresses=localhost -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                    cert_file.display(),
                    key_file.display()
                );
            }
        }
        let log = pg.socket.join("server.log");
        pg.server_cmd(
            "pg_ctl",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Some(pg)
    }

    /// Runs a server binary as the server's user, panicking with its output on failure.
    pub fn server_cmd(&self, name: &str, args: &[&str]) {
        let exe = self.bin.join(name);
        let mut c = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = c.args(args).current_dir("/tmp").output().unwrap();
        assert!(
            out.status.success(),
            "{name} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A libpq connection string for database `db` over the server's Unix socket.
    pub fn conn_string(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.socket.display(),
            self.port
        )
    }

    /// A libpq connection string for database `db` over TCP to `localhost` (a server
    /// started with [`Postgres::start_tls`]).
    pub fn tcp_conn_string(&self, db: &str) -> String {
        format!(
            "host=localhost port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// `-h SOCKET -p PORT -U postgres`, for client commands.
    pub fn conn(&self) -> String {
        format!("-h {} -p {} -U postgres", self.socket.display(), self.port)
    }

    /// Runs SQL with psql against `db` and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "psql -X -q -tA -v ON_ERROR_STOP=1 {} -d {db}",
                self.conn()
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let mut c = match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let _ = c
            .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"])
            .current_dir("/tmp")
            .output();
    }
}

/// A `nats-server -js` on a loopback port with file storage in its own directory, and the
/// configuration a test gives it. Restartable on the same port and storage; killed on drop.
pub struct Nats {
    dir: tempfile::TempDir,
    pub port: u16,
    config: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Nats {
    /// Starts nats-server with `config` (extra configuration text, e.g. an
    /// `authorization` block) and `env` (variables the configuration reads); `None`,
    /// saying why, when nats-server is not installed.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Option<Nats> {
        Self::start_on(crate::free_port(), config, env)
    }

    /// As [`Nats::start`], on a port chosen beforehand (one a configuration names).
    pub fn start_on(port: u16, config: &str, env: &[(&str, &str)]) -> Option<Nats> {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!(
                "\n\n*** SKIPPED: nats-server is not installed. `./dev setup` installs it with apt-get (nats-server). ***\n"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("runcap-nats-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut nats = Nats {
            dir,
            port,
            config: config.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        nats.restart();
        Some(nats)
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server at once, as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the server on the same port and storage, and waits until it takes
    /// connections.
    pub fn restart(&mut self) {
        self.kill();
        let conf = self.dir.path().join("nats.conf");
        let store = self.dir.path().join("js");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\n{}\n",
                self.port,
                store.display(),
                self.config
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("nats.log")).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
