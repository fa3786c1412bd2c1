//! `runcap:plugin/fs`: files of the fs grant read and written in 1 MiB pieces.
//!
//! WASI's file streams hand a plugin at most 64 KiB per call, each on a blocking-pool
//! thread woken for it: a 100 MB log cost 1,600 hand-offs each way, and the wake-ups
//! took more of the plugin's time than its own extra work over native code. Here each
//! open file has a thread of its own that reads ahead (or writes behind) one piece while
//! the plugin works on the one before, and hands over a megabyte at a time.
//!
//! Confinement is the fs grant's: a path is the one the plugin sees (`/NAME/...`), opened
//! below the granted directory by `cap-primitives` (the same resolution wasmtime-wasi's
//! preopens use: no `..` above it, no symbolic link out of it); a read-only directory,
//! and every directory in a dry run, refuses `create`. Like single WASI file operations,
//! opens are confined, not recorded one by one; a refused one is recorded as a denial.
//!
//! Every file operation runs on the file's thread, never on the thread running the
//! action, so a FIFO no one writes or a stuck file system cannot hold the action past its
//! time limit: the call is awaited, and abandoned when the limit strikes.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cap_primitives::fs::OpenOptions;
use tokio::sync::{mpsc, oneshot};

use super::{Fs, FsGrant, Mode};
use crate::bindings::runcap::plugin::fs as wit;
use crate::caps::core::{CallRecord, CapCtx, Capability};

/// The most bytes one `read` hands over.
pub const PIECE: usize = 1024 * 1024;
/// Files one action may have open at once. Each has a thread and holds at most three
/// pieces on the host (one queued, one being read or written, one being handed over):
/// 24 MiB at most.
pub const MAX_OPEN: usize = 8;

/// The open files of one action, by handle; dropped (and so closed) when it ends.
#[derive(Default)]
pub struct OpenFiles {
    next: u32,
    open: HashMap<u32, OpenFile>,
}

/// One open file: the plugin's end of its thread's channel.
enum OpenFile {
    Reading {
        /// The pieces read ahead, in order; an empty one is the end.
        pieces: mpsc::Receiver<io::Result<Vec<u8>>>,
        /// Set once the end or a failure has been handed over: reads repeat it.
        finished: Option<Result<(), String>>,
    },
    Writing {
        /// Pieces (and flush requests) to the writing thread.
        pieces: mpsc::Sender<ToWriter>,
        /// The thread's last word: its first failure, or success once the channel closes.
        done: Option<oneshot::Receiver<io::Result<()>>>,
        /// The first failure, once known: every later call reports it.
        failed: Option<String>,
    },
}

/// What the plugin sends a writing thread.
enum ToWriter {
    Bytes(Vec<u8>),
    /// Answered once everything sent before it is written.
    Flush(oneshot::Sender<()>),
}

impl wit::Host for CapCtx<'_, Fs> {
    async fn open_read(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<wit::Handle, wit::FileError>> {
        Ok(self.open(path, Purpose::Read).await)
    }

    async fn read(
        &mut self,
        file: wit::Handle,
    ) -> wasmtime::Result<Result<Vec<u8>, wit::FileError>> {
        let Some(open) = self.state.open.get_mut(&file) else {
            return Ok(Err(wit::FileError::BadHandle));
        };
        let OpenFile::Reading { pieces, finished } = open else {
            return Ok(Err(wit::FileError::Denied(format!(
                "file {file} is open for writing, not reading"
            ))));
        };
        if let Some(end) = finished {
            return Ok(end.clone().map(|()| Vec::new()).map_err(wit::FileError::Io));
        }
        let answer = match pieces.recv().await {
            Some(Ok(piece)) => {
                if piece.is_empty() {
                    *finished = Some(Ok(()));
                }
                Ok(piece)
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err("the file's reading thread stopped".to_string()),
        };
        if let Err(e) = &answer {
            *finished = Some(Err(e.clone()));
        }
        Ok(answer.map_err(wit::FileError::Io))
    }

    async fn create(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<wit::Handle, wit::FileError>> {
        Ok(self.open(path, Purpose::Write).await)
    }

    async fn write(
        &mut self,
        file: wit::Handle,
        bytes: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wit::FileError>> {
        if bytes.is_empty() {
            return Ok(self.writer(file).map(|_| ()));
        }
        Ok(self.send(file, ToWriter::Bytes(bytes)).await)
    }

    async fn flush(&mut self, file: wit::Handle) -> wasmtime::Result<Result<(), wit::FileError>> {
        let (written, rx) = oneshot::channel();
        if let Err(e) = self.send(file, ToWriter::Flush(written)).await {
            return Ok(Err(e));
        }
        if rx.await.is_ok() {
            return Ok(Ok(()));
        }
        // The thread stopped before it got there: it failed, and says why.
        Ok(self.stopped(file).await)
    }

    async fn close(&mut self, file: wit::Handle) -> wasmtime::Result<Result<(), wit::FileError>> {
        let Some(open) = self.state.open.remove(&file) else {
            return Ok(Err(wit::FileError::BadHandle));
        };
        let OpenFile::Writing {
            pieces,
            done,
            failed,
        } = open
        else {
            // A reading thread ends at its next hand-off, finding no one to take it.
            return Ok(Ok(()));
        };
        drop(pieces);
        if let Some(e) = failed {
            return Ok(Err(wit::FileError::Io(e)));
        }
        Ok(match done {
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(wit::FileError::Io(e.to_string())),
                Err(_) => Err(wit::FileError::Io(
                    "the file's writing thread stopped".into(),
                )),
            },
            None => Ok(()),
        })
    }
}

/// Why a file is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Read,
    Write,
}

impl CapCtx<'_, Fs> {
    /// Checks `path` against the grant, opens it on a thread of its own and registers it.
    async fn open(
        &mut self,
        path: String,
        purpose: Purpose,
    ) -> Result<wit::Handle, wit::FileError> {
        let operation = match purpose {
            Purpose::Read => "open-read",
            Purpose::Write => "create",
        };
        let Some(grant) = self.access.cloned() else {
            let reason = self.not_granted();
            return Err(wit::FileError::Denied(self.deny(operation, &path, reason)));
        };
        let (dir, below) = place(&grant, &path)?;
        if purpose == Purpose::Write && dir.mode == Mode::ReadOnly {
            let reason = format!(
                "{} is read-only ({}.{} has mode = \"ro\")",
                dir.guest, grant.key, dir.name
            );
            return Err(wit::FileError::Denied(self.deny(operation, &path, reason)));
        }
        if purpose == Purpose::Write && self.dry_run() {
            let reason = format!("{} is read-only in a dry run", dir.guest);
            self.record(CallRecord::dry_run(Fs::NAME, operation, &path).with_result(&reason));
            return Err(wit::FileError::Denied(reason));
        }
        if self.state.open.len() >= MAX_OPEN {
            let reason =
                format!("too many open files: at most {MAX_OPEN} at once; close one first");
            return Err(wit::FileError::Denied(self.deny(operation, &path, reason)));
        }
        let place = (dir.host.clone(), below);
        let opened = match purpose {
            Purpose::Read => start_reading(place).await,
            Purpose::Write => start_writing(place).await,
        };
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                let reason = format!("{path}: {e}");
                return Err(wit::FileError::Denied(self.deny(operation, &path, reason)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(wit::FileError::NotFound(format!("{path}: {e}")));
            }
            Err(e) => return Err(wit::FileError::Io(format!("{path}: {e}"))),
        };
        let files = &mut *self.state;
        let mut handle = files.next;
        while files.open.contains_key(&handle) {
            handle = handle.wrapping_add(1);
        }
        files.next = handle.wrapping_add(1);
        files.open.insert(handle, file);
        Ok(handle)
    }

    /// The writing end of `file`, or why there is none.
    fn writer(&mut self, file: wit::Handle) -> Result<&mut OpenFile, wit::FileError> {
        match self.state.open.get_mut(&file) {
            None => Err(wit::FileError::BadHandle),
            Some(OpenFile::Reading { .. }) => Err(wit::FileError::Denied(format!(
                "file {file} is open for reading, not writing"
            ))),
            Some(OpenFile::Writing {
                failed: Some(e), ..
            }) => Err(wit::FileError::Io(e.clone())),
            Some(w) => Ok(w),
        }
    }

    /// Hands `message` to `file`'s writing thread, waiting while its queue is full.
    async fn send(&mut self, file: wit::Handle, message: ToWriter) -> Result<(), wit::FileError> {
        let sent = match self.writer(file)? {
            OpenFile::Writing { pieces, .. } => pieces.send(message).await.is_ok(),
            OpenFile::Reading { .. } => false,
        };
        if sent {
            return Ok(());
        }
        self.stopped(file).await
    }

    /// `file`'s writing thread stopped early: why, kept for every later call.
    async fn stopped(&mut self, file: wit::Handle) -> Result<(), wit::FileError> {
        let Some(OpenFile::Writing { done, failed, .. }) = self.state.open.get_mut(&file) else {
            return Err(wit::FileError::BadHandle);
        };
        let why = match done.take() {
            Some(rx) => match rx.await {
                Ok(Err(e)) => e.to_string(),
                _ => "the file's writing thread stopped".to_string(),
            },
            None => "the file's writing thread stopped".to_string(),
        };
        *failed = Some(why.clone());
        Err(wit::FileError::Io(why))
    }
}

/// The granted directory holding `path` (as the plugin sees it) and the path below it.
fn place<'g>(grant: &'g FsGrant, path: &str) -> Result<(&'g super::Dir, PathBuf), wit::FileError> {
    grant
        .dirs
        .iter()
        .find_map(|d| {
            let below = Path::new(path).strip_prefix(&d.guest).ok()?;
            let below = if below.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                below.to_path_buf()
            };
            Some((d, below))
        })
        .ok_or_else(|| {
            let granted: Vec<&str> = grant.dirs.iter().map(|d| d.guest.as_str()).collect();
            wit::FileError::NotFound(format!(
                "{path} is not in a granted directory ({})",
                granted.join(", ")
            ))
        })
}

/// Opens `below` inside `dir`, confined to it.
fn open_below(dir: &Path, below: &Path, options: &OpenOptions) -> io::Result<std::fs::File> {
    let base = cap_primitives::fs::open_ambient_dir(dir, cap_primitives::ambient_authority())?;
    cap_primitives::fs::open(&base, below, options)
}

/// Opens `below` inside `dir` with `options` on a thread of its own, which then runs
/// `work` on the file with `kept` (its end of the channels to the plugin); returns once the
/// file is open. A caller that stopped waiting (the action's time limit) leaves the thread
/// to close the file and end.
async fn open_on_own_thread<K: Send + 'static>(
    name: &str,
    (dir, below): (PathBuf, PathBuf),
    options: OpenOptions,
    kept: K,
    work: impl FnOnce(std::fs::File, K) + Send + 'static,
) -> io::Result<()> {
    let (opened, is_open) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || match open_below(&dir, &below, &options) {
            Ok(file) => {
                if opened.send(Ok(())).is_ok() {
                    work(file, kept);
                }
            }
            Err(e) => drop(opened.send(Err(e))),
        })?;
    is_open
        .await
        .map_err(|_| io::Error::other("the file's thread stopped"))?
}

/// Opens the file for reading on a thread that then reads it ahead.
async fn start_reading(place: (PathBuf, PathBuf)) -> io::Result<OpenFile> {
    let (tx, pieces) = mpsc::channel(1);
    let mut options = OpenOptions::new();
    options.read(true);
    open_on_own_thread("runcap-file-read", place, options, tx, |file, tx| {
        read_ahead(file, &tx)
    })
    .await?;
    Ok(OpenFile::Reading {
        pieces,
        finished: None,
    })
}

/// Reads `file` a piece at a time into `tx` until its end, a failure, or no one reads.
fn read_ahead(file: std::fs::File, tx: &mpsc::Sender<io::Result<Vec<u8>>>) {
    let mut file = file;
    loop {
        let mut piece = Vec::with_capacity(PIECE);
        let read = (&mut file).take(PIECE as u64).read_to_end(&mut piece);
        let last = !matches!(read, Ok(n) if n > 0);
        if tx.blocking_send(read.map(|_| piece)).is_err() || last {
            return;
        }
    }
}

/// Creates (or empties) the file on a thread that then writes what it is sent.
async fn start_writing(place: (PathBuf, PathBuf)) -> io::Result<OpenFile> {
    let (pieces, rx) = mpsc::channel(1);
    let (done_tx, done) = oneshot::channel();
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    open_on_own_thread(
        "runcap-file-write",
        place,
        options,
        (rx, done_tx),
        |file, (rx, done_tx)| drop(done_tx.send(write_behind(file, rx))),
    )
    .await?;
    Ok(OpenFile::Writing {
        pieces,
        done: Some(done),
        failed: None,
    })
}

/// Writes what arrives on `rx` until the channel closes or a write fails.
fn write_behind(mut file: std::fs::File, mut rx: mpsc::Receiver<ToWriter>) -> io::Result<()> {
    while let Some(message) = rx.blocking_recv() {
        match message {
            ToWriter::Bytes(bytes) => file.write_all(&bytes)?,
            ToWriter::Flush(written) => drop(written.send(())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::core::{Decision, HostState};
    use crate::caps::testing::{self, Decl};
    use wit::Host as _;

    /// An action of a plugin granted `grant` (TOML under `[plugins.p.grants.fs]`) in `dir`.
    fn action(dir: &Path, grant: &str, dry_run: bool) -> HostState {
        let decl = Decl::default();
        let grant = testing::grant::<Fs>(&format!("[plugins.p.grants.fs]\n{grant}"), dir, &decl)
            .expect("the grant is valid");
        let env = testing::resources(&decl, &dir.join(".runcap"), None);
        testing::action(testing::prepared::<Fs>(grant, &env), dry_run, 1024)
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    async fn read_all(state: &mut HostState, path: &str) -> Result<Vec<u8>, wit::FileError> {
        let mut ctx = state.view::<Fs>();
        let file = ctx.open_read(path.into()).await.unwrap()?;
        let mut all = Vec::new();
        loop {
            let piece = ctx.read(file).await.unwrap()?;
            assert!(piece.len() <= PIECE, "a piece of {} bytes", piece.len());
            if piece.is_empty() {
                break;
            }
            all.extend(piece);
        }
        assert_eq!(
            ctx.read(file).await.unwrap(),
            Ok(Vec::new()),
            "the end repeats"
        );
        ctx.close(file).await.unwrap()?;
        Ok(all)
    }

    #[tokio::test]
    async fn files_arrive_whole_in_pieces_of_at_most_a_megabyte() {
        let (_d, dir) = testing::dir();
        std::fs::create_dir(dir.join("logs")).unwrap();
        let mut state = action(&dir, "input = { path = \"logs\" }", false);
        for len in [0, 1, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE + 7] {
            let data = bytes(len);
            std::fs::write(dir.join(format!("logs/{len}.log")), &data).unwrap();
            let read = read_all(&mut state, &format!("/input/{len}.log"))
                .await
                .unwrap();
            assert!(read == data, "{len} bytes read back as {}", read.len());
        }
        assert!(
            state.core.calls.is_empty(),
            "opens are not recorded one by one"
        );
    }

    #[tokio::test]
    async fn writes_are_done_in_order_and_flush_waits_for_them() {
        let (_d, dir) = testing::dir();
        let mut state = action(&dir, "output = { path = \"out\", mode = \"rw\" }", false);
        std::fs::create_dir(dir.join("out")).unwrap();
        let mut ctx = state.view::<Fs>();
        let file = ctx
            .create("/output/copy.log".into())
            .await
            .unwrap()
            .unwrap();
        let data = bytes(3 * PIECE + 5);
        let (first, rest) = data.split_at(PIECE + 3);
        for part in [first, &[][..], &rest[..10]] {
            ctx.write(file, part.to_vec()).await.unwrap().unwrap();
        }
        ctx.flush(file).await.unwrap().unwrap();
        let on_disk = std::fs::read(dir.join("out/copy.log")).unwrap();
        assert!(
            on_disk == data[..PIECE + 13],
            "{} bytes after flush",
            on_disk.len()
        );
        ctx.write(file, rest[10..].to_vec()).await.unwrap().unwrap();
        ctx.close(file).await.unwrap().unwrap();
        assert!(std::fs::read(dir.join("out/copy.log")).unwrap() == data);
        assert_eq!(
            ctx.write(file, b"late".to_vec()).await.unwrap(),
            Err(wit::FileError::BadHandle)
        );
        assert_eq!(
            ctx.close(file).await.unwrap(),
            Err(wit::FileError::BadHandle)
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_by_every_later_call() {
        let (_d, dir) = testing::dir();
        // /dev/full takes the open and refuses every write: a disk that filled up.
        let mut state = action(&dir, "dev = { path = \"/dev\", mode = \"rw\" }", false);
        let mut ctx = state.view::<Fs>();
        let file = ctx.create("/dev/full".into()).await.unwrap().unwrap();
        ctx.write(file, vec![1; 10]).await.unwrap().unwrap();
        let failed = ctx.flush(file).await.unwrap();
        assert!(
            matches!(&failed, Err(wit::FileError::Io(m)) if m.contains("No space left")),
            "{failed:?}"
        );
        assert_eq!(ctx.write(file, vec![2; 10]).await.unwrap(), failed);
        assert_eq!(ctx.close(file).await.unwrap(), failed);
    }

    #[tokio::test]
    async fn paths_stay_inside_their_grant_and_its_mode() {
        let (_d, dir) = testing::dir();
        std::fs::create_dir_all(dir.join("logs/sub")).unwrap();
        std::fs::write(dir.join("logs/app.log"), "inside\n").unwrap();
        std::fs::write(dir.join("outside.txt"), "OUTSIDE\n").unwrap();
        std::os::unix::fs::symlink("../outside.txt", dir.join("logs/escape")).unwrap();
        std::os::unix::fs::symlink(dir.join("outside.txt"), dir.join("logs/escape-abs")).unwrap();
        let mut state = action(&dir, "input = { path = \"logs\" }", false);
        assert_eq!(
            read_all(&mut state, "/input/sub/../app.log").await.unwrap(),
            b"inside\n"
        );
        for path in [
            "/input/../outside.txt",
            "/input/escape",
            "/input/escape-abs",
        ] {
            let refused = read_all(&mut state, path).await;
            assert!(
                matches!(refused, Err(wit::FileError::Denied(_))),
                "{path}: {refused:?}"
            );
        }
        for path in ["/etc/passwd", "/inputs/app.log", "input/app.log", ""] {
            let refused = read_all(&mut state, path).await;
            assert!(
                matches!(&refused, Err(wit::FileError::NotFound(m)) if m.contains("not in a granted directory (/input)")),
                "{path}: {refused:?}"
            );
        }
        let dir_read = read_all(&mut state, "/input/sub").await;
        assert!(
            matches!(dir_read, Err(wit::FileError::Io(_))),
            "{dir_read:?}"
        );
        let mut ctx = state.view::<Fs>();
        let refused = ctx.create("/input/new.log".into()).await.unwrap();
        assert_eq!(
            refused,
            Err(wit::FileError::Denied(
                "/input is read-only (plugins.p.grants.fs.input has mode = \"ro\")".into()
            ))
        );
        assert!(!dir.join("logs/new.log").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("outside.txt")).unwrap(),
            "OUTSIDE\n"
        );
        let denied: Vec<(&str, &str)> = state
            .core
            .calls
            .iter()
            .filter(|c| c.decision == Decision::Denied)
            .map(|c| (c.operation.as_str(), c.target.as_str()))
            .collect();
        assert_eq!(
            denied,
            [
                ("open-read", "/input/../outside.txt"),
                ("open-read", "/input/escape"),
                ("open-read", "/input/escape-abs"),
                ("create", "/input/new.log"),
            ]
        );
    }

    #[tokio::test]
    async fn a_dry_run_creates_nothing_and_no_grant_reaches_nothing() {
        let (_d, dir) = testing::dir();
        std::fs::create_dir(dir.join("out")).unwrap();
        let mut state = action(&dir, "output = { path = \"out\", mode = \"rw\" }", true);
        let mut ctx = state.view::<Fs>();
        let refused = ctx.create("/output/x.log".into()).await.unwrap();
        assert_eq!(
            refused,
            Err(wit::FileError::Denied(
                "/output is read-only in a dry run".into()
            ))
        );
        assert!(!dir.join("out/x.log").exists());
        assert_eq!(state.core.calls[0].decision, Decision::DryRun);

        let mut bare = testing::action(Default::default(), false, 1024);
        let mut ctx = bare.view::<Fs>();
        let refused = ctx.open_read("/input/app.log".into()).await.unwrap();
        assert!(
            matches!(&refused, Err(wit::FileError::Denied(m)) if m.contains("[plugins.p.grants.fs]")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn an_action_has_at_most_eight_files_open() {
        let (_d, dir) = testing::dir();
        std::fs::create_dir(dir.join("logs")).unwrap();
        std::fs::write(dir.join("logs/app.log"), "x").unwrap();
        let mut state = action(&dir, "input = { path = \"logs\" }", false);
        let mut ctx = state.view::<Fs>();
        let mut open = Vec::new();
        for _ in 0..MAX_OPEN {
            open.push(
                ctx.open_read("/input/app.log".into())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let refused = ctx.open_read("/input/app.log".into()).await.unwrap();
        assert!(
            matches!(&refused, Err(wit::FileError::Denied(m)) if m.starts_with("too many open files")),
            "{refused:?}"
        );
        ctx.close(open[3]).await.unwrap().unwrap();
        let again = ctx
            .open_read("/input/app.log".into())
            .await
            .unwrap()
            .unwrap();
        assert!(!open[..3].contains(&again) && !open[4..].contains(&again));
        assert_eq!(ctx.read(again).await.unwrap(), Ok(b"x".to_vec()));
        assert_eq!(
            ctx.write(again, b"y".to_vec()).await.unwrap(),
            Err(wit::FileError::Denied(format!(
                "file {again} is open for reading, not writing"
            )))
        );
    }
}
