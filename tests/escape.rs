//! The escape test suite: every test runs one probe of `tests/escape/probes.c` inside
//! `ci-intel exec` and names the layer of the sandbox that stops it.
//!
//! A probe prints one line: `BLOCKED <what happened>` or `ESCAPED <evidence>`. Run directly
//! on a host, most probes print `ESCAPED`, which is what makes each test able to fail.
//! Where the outcome shows on the host (a process that must survive `kill -1`, a daemon
//! that must not outlive the step, a listener that must see no connection), the test
//! checks the host side as well.
//!
//! CI runs as root, GitHub-hosted runners do not: when the tests run as root, a
//! representative subset runs a second time as uid 65534 (`setpriv`), the `_unprivileged`
//! tests. Every fixture is readable by that user.
//!
//! The probe program is compiled once per run with `cc` into `target/tmp/escape-probes/`,
//! which each `ci-intel exec` gets read-only.
mod support;

use std::ffi::OsString;
use std::fmt;
use std::io::{ErrorKind, Read};
use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use support::BIN;
/// Where fixtures live: inside the workspace's `target/`, like a step's inputs would.
const SCRATCH: &str = env!("CARGO_TARGET_TMPDIR");
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/escape/probes.c");
/// How long one `ci-intel exec` may take before it is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(30);
/// The unprivileged user of the `_unprivileged` tests.
const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------------------
// The probe program

/// The compiled probe program and its directory.
struct Probes {
    dir: PathBuf,
    bin: PathBuf,
}

fn probes() -> &'static Probes {
    static PROBES: OnceLock<Probes> = OnceLock::new();
    PROBES.get_or_init(|| {
        let dir = Path::new(SCRATCH).join("escape-probes");
        std::fs::create_dir_all(&dir).expect("creating target/tmp/escape-probes");
        world_readable(&dir);
        let bin = dir.join("probes");
        // Compiled under a name of its own, then renamed: a sandbox of an earlier run may
        // still have the old file open.
        let fresh = dir.join(format!("probes.{}", std::process::id()));
        let output = Command::new("cc")
            .args(["-O1", "-Wall", "-o"])
            .arg(&fresh)
            .arg(SOURCE)
            .output();
        let output = match output {
            Ok(output) => output,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "the escape tests compile {SOURCE} with `cc`, which is not installed: \
                 install a C compiler (e.g. `apt-get install gcc`)"
            ),
            Err(e) => panic!("running cc: {e}"),
        };
        assert!(
            output.status.success(),
            "compiling {SOURCE} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))
            .expect("chmod of the probe program");
        std::fs::rename(&fresh, &bin).expect("renaming the probe program");
        Probes { dir, bin }
    })
}

fn world_readable(path: &Path) {
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A fresh directory under `target/tmp`, readable by every user.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("escape-")
        .tempdir_in(SCRATCH)
        .expect("creating a scratch directory");
    world_readable(dir.path());
    dir
}

/// Writes a file readable by every user.
fn fixture(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("creating a fixture directory");
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    world_readable(path);
}

/// A namespace of the host (`pid`, `mnt`), as `readlink /proc/self/ns/<kind>` shows it.
fn host_ns(kind: &str) -> String {
    let link = std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap_or_else(|e| panic!("reading /proc/self/ns/{kind}: {e}"));
    link.to_str().expect("a namespace link is text").to_owned()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A string no other run (or test) uses.
fn unique(what: &str) -> String {
    format!(
        "ci-intel-escape-{what}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    )
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("fixture paths are UTF-8")
}

// ---------------------------------------------------------------------------------------
// Running a probe

/// Who runs `ci-intel exec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum User {
    /// Whoever runs the tests (root in CI).
    Runner,
    /// uid and gid 65534 without groups or capabilities, when the tests run as root.
    Nobody,
}

/// One `ci-intel exec` of a probe.
struct Exec {
    user: User,
    exec_args: Vec<OsString>,
    env: Vec<(String, String)>,
    program: PathBuf,
    probe_args: Vec<String>,
}

impl Exec {
    /// `ci-intel exec --ro <probe dir> -- <probe dir>/probes NAME ARGS...`.
    fn probe(name: &str, args: &[&str]) -> Exec {
        let probes = probes();
        Exec {
            user: User::Runner,
            exec_args: vec!["--ro".into(), probes.dir.clone().into()],
            env: Vec::new(),
            program: probes.bin.clone(),
            // `-n`, `-m`: the probes that act on other processes, or on mounts, refuse to
            // when they find themselves in the host's pid or mount namespace.
            probe_args: ["-n", &host_ns("pid"), "-m", &host_ns("mnt"), name]
                .into_iter()
                .chain(args.iter().copied())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// More arguments for `ci-intel exec`.
    fn exec_args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Exec {
        self.exec_args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Makes a host path visible read-only.
    fn ro(self, path: &Path) -> Exec {
        self.exec_args([OsString::from("--ro"), path.into()])
    }

    /// Makes a host path visible read-write.
    fn rw(self, path: &Path) -> Exec {
        self.exec_args([OsString::from("--rw"), path.into()])
    }

    fn user(mut self, user: User) -> Exec {
        self.user = user;
        self
    }

    /// A variable in the environment of `ci-intel exec` itself.
    fn env(mut self, name: &str, value: &str) -> Exec {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs another program (a copy of the probes) with the same arguments.
    fn program(mut self, program: PathBuf) -> Exec {
        self.program = program;
        self
    }

    fn command(&self) -> Command {
        let mut command = if self.user == User::Nobody && is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".to_owned(),
                "--inh-caps=-all".to_owned(),
                BIN.to_owned(),
            ]);
            c
        } else {
            support::ci_intel()
        };
        command
            .arg("exec")
            .args(&self.exec_args)
            .arg("--")
            .arg(&self.program)
            .args(&self.probe_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&probes().dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        command
    }

    fn shown(&self) -> String {
        let command = self.command();
        let mut shown = String::new();
        if !self.env.is_empty() {
            shown.push_str(&format!("({} variables set) ", self.env.len()));
        }
        shown.push_str(&command.get_program().to_string_lossy());
        for arg in command.get_args() {
            shown.push(' ');
            shown.push_str(&arg.to_string_lossy());
        }
        shown
    }

    /// Runs it, killing it (and the test) after [`DEADLINE`].
    fn run(self) -> Run {
        let shown = self.shown();
        let mut child = match self.command().spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound && self.user == User::Nobody => panic!(
                "the unprivileged variants run `ci-intel exec` as uid {NOBODY} with `setpriv` \
                 (util-linux), which is not installed: {e}"
            ),
            Err(e) => panic!("starting `{shown}`: {e}"),
        };
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for ci-intel exec") {
                break Some(status);
            }
            if started.elapsed() > DEADLINE {
                // The whole process group: setpriv execs ci-intel, which leads it.
                let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(5));
        };
        // A process that outlived the step could hold the pipes open: wait a little only.
        let grace = Instant::now() + Duration::from_secs(5);
        let collect = |rx: mpsc::Receiver<Vec<u8>>| match rx
            .recv_timeout(grace.saturating_duration_since(Instant::now()))
        {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => "(still open: some process outlived the step and holds it)".to_owned(),
        };
        let run = Run {
            shown,
            status,
            stdout: collect(stdout),
            stderr: collect(stderr),
        };
        assert!(
            run.status.is_some(),
            "ci-intel exec did not finish within {DEADLINE:?} and was killed\n{run}"
        );
        run
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// `ci-intel exec --ro <probe dir> [EXTRA] -- <probe dir>/probes NAME ARGS...`, as the runner.
fn probe(name: &str, extra_exec_args: &[&str], probe_args: &[&str]) -> Run {
    Exec::probe(name, probe_args)
        .exec_args(extra_exec_args)
        .run()
}

/// How one `ci-intel exec` ended.
struct Run {
    shown: String,
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// The probe stopped: it said BLOCKED and exited 0.
    #[track_caller]
    fn blocked(&self, layer: &str) -> &Run {
        if !self.stdout.starts_with("BLOCKED") || self.code() != Some(0) {
            panic!("{}", self.failure(layer));
        }
        // Shown with `--nocapture`: what stopped each attempt.
        eprintln!("{}\n  {}", self.shown, self.stdout.trim());
        self
    }

    /// The probe stopped, by a refusal or by being killed (SIGKILL, or 137 when a signal
    /// is passed through as 128 + 9).
    #[track_caller]
    fn blocked_or_killed(&self, layer: &str) -> &Run {
        let killed = self.status.is_some_and(|s| s.signal() == Some(9)) || self.code() == Some(137);
        if !killed {
            self.blocked(layer);
        }
        self
    }

    /// The probe got through: the positive control of a test (something declared is
    /// visible), which shows the probe works inside the sandbox.
    #[track_caller]
    fn escaped(&self, why: &str) -> &Run {
        if !self.stdout.starts_with("ESCAPED") || self.code() != Some(1) {
            panic!("control failed: {why}\n{self}");
        }
        self
    }

    fn failure(&self, layer: &str) -> String {
        let what = if self.stdout.starts_with("ESCAPED") {
            "ESCAPE"
        } else {
            "the probe did not report BLOCKED"
        };
        format!("{what}; expected to be stopped by: {layer}\n{self}")
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.shown)?;
        match self.status {
            Some(status) => writeln!(f, "status:  {status}")?,
            None => writeln!(f, "status:  killed after {DEADLINE:?}")?,
        }
        writeln!(f, "stdout:\n{}", indent(&self.stdout))?;
        write!(f, "stderr:\n{}", indent(&self.stderr))
    }
}

fn indent(text: &str) -> String {
    if text.trim().is_empty() {
        return "    (empty)".to_owned();
    }
    text.lines().map(|l| format!("    {l}\n")).collect()
}

// ---------------------------------------------------------------------------------------
// Host processes

/// A process on the host, outside any sandbox, whose command line holds a marker. Killed
/// when dropped.
struct HostProcess {
    child: Child,
    marker: String,
}

impl HostProcess {
    fn start(user: User) -> HostProcess {
        let marker = unique("victim");
        let mut command = if user == User::Nobody && is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".to_owned(),
            ])
            .arg(&probes().bin);
            c
        } else {
            Command::new(&probes().bin)
        };
        let child = command
            .args(["sleep", "120", &marker])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting a host process");
        HostProcess { child, marker }
    }

    /// The marker in two parts: whole, it would show in the command line of the sandbox's
    /// pid 1, a copy of `ci-intel exec` with the probe's arguments.
    fn marker_parts(&self) -> (&str, &str) {
        self.marker.split_at(self.marker.len() / 2)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    #[track_caller]
    fn assert_alive(&mut self, run: &Run) {
        if let Some(status) = self.child.try_wait().expect("waiting for the host process") {
            panic!(
                "ESCAPE: the host process {} died ({status})\n{run}",
                self.child.id()
            );
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Live host processes whose command line holds `marker`.
fn host_processes_with(marker: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            })
            .unwrap_or(true);
        if cmdline.contains(marker) && !zombie {
            found.push((pid, cmdline));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------
// Host files

/// A file under the host's `~/.ssh`, removed (with `~/.ssh` if it made it) when dropped.
struct SshFixture {
    file: PathBuf,
    made_dir: Option<PathBuf>,
}

impl SshFixture {
    fn new() -> SshFixture {
        let home = std::env::var_os("HOME").expect("HOME is set");
        let dir = Path::new(&home).join(".ssh");
        let made_dir = if dir.exists() {
            None
        } else {
            std::fs::create_dir(&dir).expect("creating ~/.ssh");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .expect("chmod ~/.ssh");
            Some(dir.clone())
        };
        let file = dir.join(unique("key"));
        std::fs::write(&file, "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n")
            .expect("writing the ~/.ssh fixture");
        SshFixture { file, made_dir }
    }
}

impl Drop for SshFixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if let Some(dir) = &self.made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Sets file capabilities (`security.capability`, revision 2, effective) on `path`.
fn set_file_capabilities(path: &Path, caps: u64) {
    let mut value = Vec::with_capacity(20);
    value.extend_from_slice(&0x0200_0001_u32.to_le_bytes()); // VFS_CAP_REVISION_2 | effective
    value.extend_from_slice(&(caps as u32).to_le_bytes()); // permitted, low word
    value.extend_from_slice(&0_u32.to_le_bytes()); // inheritable, low word
    value.extend_from_slice(&((caps >> 32) as u32).to_le_bytes()); // permitted, high word
    value.extend_from_slice(&0_u32.to_le_bytes()); // inheritable, high word
    let c_path = std::ffi::CString::new(path_str(path)).expect("no NUL in the path");
    // SAFETY: both strings are NUL-terminated and `value` outlives the call, which only
    // reads `value.len()` bytes of it.
    let result = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        result,
        0,
        "setting file capabilities on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// A copy of the probe program in a fresh read-only-to-be directory.
fn probe_copy(name: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = scratch();
    let copy = dir.path().join(name);
    std::fs::copy(&probes().bin, &copy).expect("copying the probe program");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(mode))
        .expect("chmod of the copy");
    (dir, copy)
}

#[track_caller]
fn needs_root(what: &str) {
    assert!(
        is_root(),
        "this test needs root to {what} (CI runs as root); run `cargo test --test escape` as root"
    );
}

// ---------------------------------------------------------------------------------------
// File system

const SYSTEM_DIRS: &[&str] = &["/", "/usr", "/usr/bin", "/etc", "/home", "/var", "/opt"];
const SYSTEM_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/usr/bin/env",
];
const SYSTEM_LAYER: &str = "mount namespace: the root is a read-only tmpfs and the system \
     directories are read-only binds (EROFS), Landlock grants them read access only";

fn write_system_dirs(user: User) {
    Exec::probe("create", SYSTEM_DIRS)
        .user(user)
        .run()
        .blocked(SYSTEM_LAYER);
    Exec::probe("open_write", SYSTEM_FILES)
        .user(user)
        .run()
        .blocked(SYSTEM_LAYER);
}

#[test]
fn escape_write_system_dirs() {
    write_system_dirs(User::Runner);
}

#[test]
fn escape_write_system_dirs_unprivileged() {
    write_system_dirs(User::Nobody);
}

#[test]
fn escape_write_declared_read_only_dir() {
    let dir = scratch();
    let file = dir.path().join("input.txt");
    fixture(&file, "input\n");
    let layer = "read-only bind of the --ro path (EROFS) and Landlock's read-only rule for it";
    Exec::probe("create", &[path_str(dir.path()), path_str(&probes().dir)])
        .ro(dir.path())
        .run()
        .blocked(layer);
    Exec::probe("open_write", &[path_str(&file)])
        .ro(dir.path())
        .run()
        .blocked(layer);
    assert_eq!(
        std::fs::read_to_string(&file).expect("reading the input"),
        "input\n"
    );
}

fn undeclared_workspace_file(user: User) {
    let ws = scratch();
    let declared = ws.path().join("declared");
    fixture(&declared.join("a.txt"), "declared\n");
    fixture(&ws.path().join("secret.txt"), "undeclared\n");
    fixture(&ws.path().join("other/b.txt"), "undeclared\n");
    world_readable(&declared);
    world_readable(&ws.path().join("other"));

    Exec::probe("read", &[path_str(&declared.join("a.txt"))])
        .ro(&declared)
        .user(user)
        .run()
        .escaped("the declared input must be readable");
    let secret = ws.path().join("secret.txt");
    let sibling = ws.path().join("other/b.txt");
    let through = format!("{}/../secret.txt", declared.display());
    Exec::probe("read", &[path_str(&secret), path_str(&sibling), &through])
        .ro(&declared)
        .user(user)
        .run()
        .blocked("mount namespace: only declared paths are bound into the fresh root");
    Exec::probe("list", &[path_str(ws.path()), "declared"])
        .ro(&declared)
        .user(user)
        .run()
        .blocked("mount namespace: the parent of a declared path holds only the way to it");
}

#[test]
fn escape_read_undeclared_workspace_file() {
    undeclared_workspace_file(User::Runner);
}

#[test]
fn escape_read_undeclared_workspace_file_unprivileged() {
    undeclared_workspace_file(User::Nobody);
}

fn etc_shadow(user: User) {
    Exec::probe(
        "read",
        &[
            "/etc/shadow",
            "/etc/gshadow",
            "/etc/sudoers",
            "/etc/ssh",
            "/etc/ssl/private",
        ],
    )
    .user(user)
    .run()
    .blocked("mount namespace: /etc holds only selected host files, never shadow");
}

#[test]
fn escape_read_etc_shadow() {
    etc_shadow(User::Runner);
}

#[test]
fn escape_read_etc_shadow_unprivileged() {
    etc_shadow(User::Nobody);
}

#[test]
fn escape_read_host_ssh_keys() {
    let key = SshFixture::new();
    let dir = key.file.parent().expect("~/.ssh").to_owned();
    Exec::probe("read", &[path_str(&key.file), path_str(&dir)])
        .run()
        .blocked("mount namespace: $HOME is a private tmpfs, the host's home is not bound");
}

#[test]
fn escape_read_host_ssh_keys_unprivileged() {
    // The unprivileged user's own home, readable by it on the host: a stand-in, since
    // uid 65534 has none.
    let home = scratch();
    let key = home.path().join(".ssh/id_ed25519");
    fixture(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n");
    world_readable(&home.path().join(".ssh"));
    Exec::probe("read", &[path_str(&key)])
        .user(User::Nobody)
        .env("HOME", path_str(home.path()))
        .run()
        .blocked("mount namespace: $HOME is a private tmpfs, the host's home is not bound");
}

#[test]
fn escape_mknod() {
    let out = scratch();
    let layer = "user namespace: no CAP_MKNOD in the init namespace; nodev mounts; seccomp";
    probe("mknod", &[], &["/tmp"]).blocked(layer);
    probe("mknod", &[], &["/dev"]).blocked(layer);
    Exec::probe("mknod", &[path_str(out.path())])
        .rw(out.path())
        .run()
        .blocked(layer);
}

#[test]
fn escape_hard_link_out_of_output_dir() {
    let out = scratch();
    let input = scratch();
    let file = input.path().join("input.txt");
    fixture(&file, "input\n");
    let layer = "mount boundaries: a hard link across mounts fails with EXDEV";
    for target in [path_str(&file), "/etc/passwd", "/usr/bin/env"] {
        Exec::probe("hardlink", &[target, path_str(out.path())])
            .ro(input.path())
            .rw(out.path())
            .run()
            .blocked(layer);
    }
    // The symbolic link is made and left for the output collection, which must not
    // follow it (tested with the executor).
    assert!(
        out.path().join("evil-symlink").is_symlink(),
        "the probe made a symbolic link in the output directory"
    );
    assert!(
        !out.path().join("evil-hard").exists(),
        "ESCAPE: a hard link was made"
    );
}

// ---------------------------------------------------------------------------------------
// /proc, /dev, /sys

#[test]
fn escape_kernel_memory_and_log() {
    probe("read", &[], &["/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/proc/kcore", "/dev/vda", "/dev/sda"])
        .blocked("minimal /dev (null zero full random urandom only); /proc/kcore is root's in the host's user namespace");
}

#[test]
fn escape_write_proc_sys() {
    probe(
        "open_write",
        &[],
        &[
            "/proc/sys/kernel/hostname",
            "/proc/sys/kernel/core_pattern",
            "/proc/sys/kernel/modprobe",
            "/proc/sys/vm/drop_caches",
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sysrq-trigger",
        ],
    )
    .blocked(
        "mount namespace: /proc/sys and /proc/sysrq-trigger are read-only binds (the sandbox \
         user is the host's uid 0 when root runs ci-intel, and /proc/sys checks only the uid); \
         Landlock allows /proc reads only",
    );
}

#[test]
fn escape_sys() {
    let layer = "no /sys in the sandbox";
    probe(
        "read",
        &[],
        &["/sys/kernel", "/sys/fs/cgroup", "/sys/class/net"],
    )
    .blocked(layer);
    probe(
        "open_write",
        &[],
        &[
            "/sys/kernel/uevent_helper",
            "/sys/fs/cgroup/cgroup.procs",
            "/sys/power/state",
        ],
    )
    .blocked(layer);
}

#[test]
fn escape_proc1_is_not_the_host_init() {
    probe("pidns", &[], &[&host_ns("pid")])
        .blocked("pid namespace: pid 1 is the sandbox's own init");
}

#[test]
fn escape_proc1_environ() {
    let canary = unique("canary");
    Exec::probe("proc_environ", &["1", &canary])
        .env("GITHUB_TOKEN", &format!("ghp_{canary}"))
        .env("CI_INTEL_ESCAPE_SECRET", &canary)
        .run()
        .blocked(
            "pid namespace and the init's hygiene: pid 1 inside is the sandbox's init, \
                  whose memory (a copy of ci-intel's, host environment included) is not readable",
        );
}

#[test]
fn escape_proc1_root() {
    let hidden = scratch();
    let marker = hidden.path().join("marker");
    fixture(&marker, "host\n");
    probe("proc_root", &[], &["1", path_str(&marker), "/etc/shadow"]).blocked(
        "pid and mount namespaces: pid 1's root is the sandbox root, and no descriptor of \
         pid 1 or of the step leads back to the host's tree",
    );
}

#[test]
fn escape_proc1_exe() {
    probe("proc_exe", &[], &["1"])
        .blocked("pid 1 is not dumpable: /proc/1/exe (the host's ci-intel binary) is out of reach");
}

#[test]
fn escape_open_by_handle_at() {
    probe("open_by_handle", &[], &["/usr", "/usr/bin/env", "/tmp"])
        .blocked("no CAP_DAC_READ_SEARCH (capabilities cleared, user namespace)");
}

// ---------------------------------------------------------------------------------------
// Processes

fn see_host_processes(user: User) {
    let host = HostProcess::start(user);
    let (head, tail) = host.marker_parts();
    Exec::probe("procs", &[head, tail])
        .user(user)
        .run()
        .blocked("pid namespace: the fresh /proc shows only the sandbox's processes");
}

#[test]
fn escape_see_host_processes() {
    see_host_processes(User::Runner);
}

#[test]
fn escape_see_host_processes_unprivileged() {
    see_host_processes(User::Nobody);
}

fn kill_host_processes(user: User) {
    let mut host = HostProcess::start(user);
    let (head, tail) = host.marker_parts();
    let run = Exec::probe("kill", &[&host.pid(), head, tail])
        .user(user)
        .run();
    run.blocked("pid namespace: kill(-1) and kill(host pid) reach only the sandbox's processes");
    host.assert_alive(&run);
}

#[test]
fn escape_kill_host_processes() {
    kill_host_processes(User::Runner);
}

#[test]
fn escape_kill_host_processes_unprivileged() {
    kill_host_processes(User::Nobody);
}

#[test]
fn escape_ptrace_supervisor() {
    let test_pid = std::process::id().to_string();
    probe("ptrace", &[], &["ppid", "1", &test_pid]).blocked(
        "pid namespace (the supervisor is not visible: its pid is 0) and seccomp (ptrace only \
         of own children); pid 1 is not dumpable",
    );
}

#[test]
fn escape_double_forked_daemon() {
    let marker = unique("daemon");
    let run = probe("daemon", &[], &[&marker]);
    assert!(
        run.stdout.starts_with("DETACHED") && run.code() == Some(0),
        "the probe did not start its daemon\n{run}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut survivors = host_processes_with(&marker);
    while !survivors.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        survivors = host_processes_with(&marker);
    }
    for (pid, _) in &survivors {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    assert!(
        survivors.is_empty(),
        "ESCAPE: the daemon outlived the step (pid namespace: when the sandbox's pid 1 exits \
         the kernel kills the rest): {survivors:?}\n{run}"
    );
}

// ---------------------------------------------------------------------------------------
// Mounts, namespaces, credentials

fn remount(user: User) {
    let layer = "locked mounts: binds made in a less privileged namespace keep their \
         read-only flag; no CAP_SYS_ADMIN; seccomp denies mount after setup";
    for path in ["/usr", path_str(&probes().dir), "/"] {
        Exec::probe("remount", &[path])
            .user(user)
            .run()
            .blocked(layer);
    }
}

#[test]
fn escape_remount_read_only_bind() {
    remount(User::Runner);
}

#[test]
fn escape_remount_read_only_bind_unprivileged() {
    remount(User::Nobody);
}

#[test]
fn escape_umount_to_reveal() {
    let layer = "seccomp denies umount2; no CAP_SYS_ADMIN; locked mounts";
    for path in ["/usr", "/proc", "/tmp", path_str(&probes().dir)] {
        probe("umount", &[], &[path]).blocked(layer);
    }
}

#[test]
fn escape_mount_new_file_system() {
    probe("mount", &[], &["/tmp"]).blocked("seccomp denies mount; no CAP_SYS_ADMIN");
}

fn nested_user_namespace(user: User) {
    Exec::probe("userns", &[])
        .user(user)
        .run()
        .blocked("seccomp denies new namespaces (unshare, clone and clone3)");
}

#[test]
fn escape_nested_user_namespace() {
    nested_user_namespace(User::Runner);
}

#[test]
fn escape_nested_user_namespace_unprivileged() {
    nested_user_namespace(User::Nobody);
}

#[test]
fn escape_setns() {
    probe("setns", &[], &["1"]).blocked("no CAP_SYS_ADMIN for setns; seccomp");
}

fn ids(user: User) {
    Exec::probe("ids", &[]).user(user).run().blocked(
        "user namespace (uid 1000 inside, uid 0 not mapped), capabilities cleared from every \
         set, no_new_privs",
    );
}

#[test]
fn escape_become_root() {
    ids(User::Runner);
}

#[test]
fn escape_become_root_unprivileged() {
    ids(User::Nobody);
}

fn setuid_binary(user: User) {
    needs_root("make a setuid-root binary");
    let (dir, copy) = probe_copy("probes-setuid", 0o4755);
    assert_eq!(std::fs::metadata(&copy).expect("stat").uid(), 0);
    Exec::probe("ids", &[])
        .program(copy)
        .ro(dir.path())
        .user(user)
        .run()
        .blocked("nosuid mounts and no_new_privs: a setuid-root binary runs without privilege");
}

#[test]
fn escape_setuid_binary() {
    setuid_binary(User::Runner);
}

#[test]
fn escape_setuid_binary_unprivileged() {
    setuid_binary(User::Nobody);
}

fn file_capabilities(user: User) {
    needs_root("give a file capabilities");
    let (dir, copy) = probe_copy("probes-caps", 0o755);
    // CAP_DAC_READ_SEARCH, CAP_SETUID, CAP_NET_RAW, CAP_SYS_ADMIN
    set_file_capabilities(&copy, (1 << 2) | (1 << 7) | (1 << 13) | (1 << 21));
    Exec::probe("ids", &[])
        .program(copy)
        .ro(dir.path())
        .user(user)
        .run()
        .blocked("nosuid mounts, no_new_privs and an empty bounding set: file capabilities grant nothing");
}

#[test]
fn escape_file_capabilities() {
    file_capabilities(User::Runner);
}

#[test]
fn escape_file_capabilities_unprivileged() {
    file_capabilities(User::Nobody);
}

#[test]
fn escape_tiocsti() {
    probe("tiocsti", &[], &[]).blocked(
        "seccomp denies TIOCSTI, comparing the low 32 bits (so the bit-32 variant too); setsid \
         leaves no controlling terminal",
    );
}

#[test]
fn escape_env_leak() {
    let canary = unique("canary");
    Exec::probe("env", &[&canary])
        .env("GITHUB_TOKEN", &format!("ghp_{canary}"))
        .env("AWS_SECRET_ACCESS_KEY", &canary)
        .env("CI_INTEL_ESCAPE_SECRET", &canary)
        .run()
        .blocked("fixed environment: the host's environment is never inherited");
}

// ---------------------------------------------------------------------------------------
// Kernel interfaces

#[test]
fn escape_bpf() {
    probe("syscall", &[], &["bpf"]).blocked("seccomp denies bpf");
}

#[test]
fn escape_perf_event_open() {
    probe("syscall", &[], &["perf_event_open"]).blocked("seccomp denies perf_event_open");
}

#[test]
fn escape_userfaultfd() {
    probe("syscall", &[], &["userfaultfd"]).blocked("seccomp denies userfaultfd");
}

#[test]
fn escape_io_uring() {
    probe("syscall", &[], &["io_uring"]).blocked("seccomp denies io_uring_setup");
}

#[test]
fn escape_keyctl() {
    probe("syscall", &[], &["keyctl"]).blocked("seccomp denies add_key and keyctl");
}

#[test]
fn escape_syslog() {
    probe("syscall", &[], &["syslog"]).blocked("no CAP_SYSLOG (dmesg_restrict), seccomp");
}

// ---------------------------------------------------------------------------------------
// Network

const NET_LAYER: &str = "network namespace with loopback only (ENETUNREACH), and Landlock \
     denies TCP connect (EACCES)";

fn tcp_outside(user: User) {
    Exec::probe(
        "tcp",
        &[
            "1.1.1.1",
            "443",
            "10.0.0.1",
            "80",
            "2606:4700:4700::1111",
            "443",
        ],
    )
    .user(user)
    .run()
    .blocked(NET_LAYER);
}

#[test]
fn escape_tcp_outside() {
    tcp_outside(User::Runner);
}

#[test]
fn escape_tcp_outside_unprivileged() {
    tcp_outside(User::Nobody);
}

#[test]
fn escape_udp_outside() {
    probe(
        "udp",
        &[],
        &[
            "1.1.1.1",
            "53",
            "10.0.0.1",
            "53",
            "2606:4700:4700::1111",
            "53",
        ],
    )
    .blocked("network namespace with loopback only (ENETUNREACH)");
}

/// Asserts that a host listener saw no connection.
#[track_caller]
fn no_connection(listener: &TcpListener, run: &Run) {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => {
            panic!("ESCAPE: the host listener accepted a connection from {peer}\n{run}")
        }
        Err(e) => panic!("accept on the host listener: {e}"),
    }
}

/// Asserts that a host UDP socket received nothing.
#[track_caller]
fn no_datagram(socket: &UdpSocket, run: &Run) {
    socket.set_nonblocking(true).expect("nonblocking socket");
    let mut buf = [0; 512];
    match socket.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((n, peer)) => panic!("ESCAPE: the host socket received {n} bytes from {peer}\n{run}"),
        Err(e) => panic!("recv on the host socket: {e}"),
    }
}

#[test]
fn escape_tcp_host_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a host listener");
    let port = listener
        .local_addr()
        .expect("its address")
        .port()
        .to_string();
    let run = probe("tcp", &[], &["127.0.0.1", &port]);
    run.blocked(NET_LAYER);
    no_connection(&listener, &run);
    // With loopback allowed, the namespace's own loopback is not the host's.
    let run = probe("tcp", &["--net", "loopback"], &["127.0.0.1", &port]);
    run.blocked("network namespace: its loopback is its own (ECONNREFUSED)");
    no_connection(&listener, &run);
}

#[test]
fn escape_udp_host_loopback() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a host UDP socket");
    let port = socket.local_addr().expect("its address").port().to_string();
    for net in ["deny", "loopback"] {
        let run = probe("udp", &["--net", net], &["127.0.0.1", &port]);
        run.blocked("network namespace: its loopback is its own (ECONNREFUSED)");
        no_datagram(&socket, &run);
    }
}

#[test]
fn escape_ipv6_host_loopback() {
    let listener = TcpListener::bind("[::1]:0")
        .expect("the host needs IPv6 on loopback (::1) for this test; enable it with sysctl net.ipv6.conf.lo.disable_ipv6=0");
    let socket = UdpSocket::bind("[::1]:0").expect("a host UDP socket on ::1");
    let tcp_port = listener.local_addr().expect("address").port().to_string();
    let udp_port = socket.local_addr().expect("address").port().to_string();
    for net in ["deny", "loopback"] {
        let run = probe("tcp", &["--net", net], &["::1", &tcp_port]);
        run.blocked("network namespace: its loopback is its own; Landlock denies TCP connect");
        no_connection(&listener, &run);
        let run = probe("udp", &["--net", net], &["::1", &udp_port]);
        run.blocked("network namespace: its loopback is its own");
        no_datagram(&socket, &run);
    }
}

#[test]
fn escape_icmp() {
    for target in ["1.1.1.1", "2606:4700:4700::1111", "127.0.0.1"] {
        probe("icmp", &[], &[target]).blocked(
            "seccomp denies raw sockets; ping sockets are off (ping_group_range) and the network \
             namespace has no route out",
        );
    }
}

#[test]
fn escape_raw_socket() {
    probe("socket", &[], &["raw"]).blocked("seccomp denies SOCK_RAW; no CAP_NET_RAW");
}

#[test]
fn escape_af_packet() {
    probe("socket", &[], &["packet"]).blocked("seccomp denies AF_PACKET; no CAP_NET_RAW");
}

#[test]
fn escape_af_vsock() {
    probe("socket", &[], &["vsock"]).blocked("seccomp denies AF_VSOCK");
}

#[test]
fn escape_mptcp() {
    probe("socket", &[], &["mptcp"]).blocked("seccomp denies IPPROTO_MPTCP");
}

#[test]
fn escape_other_socket_families() {
    probe("families", &[], &[])
        .blocked("seccomp allows only AF_UNIX, AF_INET, AF_INET6 (and netlink route reads)");
}

#[test]
fn escape_netlink() {
    probe("netlink", &[], &[]).blocked(
        "seccomp denies netlink protocols other than NETLINK_ROUTE; no CAP_NET_ADMIN for route \
         writes",
    );
}

#[test]
fn escape_abstract_unix_socket() {
    let name = unique("abstract");
    let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("an abstract name");
    let listener = UnixListener::bind_addr(&address).expect("a host abstract socket");
    for net in ["deny", "loopback"] {
        let run = probe("abstract", &["--net", net], &[&name]);
        run.blocked("network namespace (abstract names are per namespace) and Landlock's abstract unix socket scope");
        listener.set_nonblocking(true).expect("nonblocking");
        if let Ok((_, peer)) = listener.accept() {
            panic!("ESCAPE: the host's abstract socket accepted {peer:?}\n{run}");
        }
    }
}

#[test]
fn escape_docker_socket_undeclared() {
    let run_dir = scratch();
    let socket = run_dir.path().join("docker.sock");
    let listener = UnixListener::bind(&socket).expect("a host unix socket");
    let run = probe("unix", &[], &[path_str(&socket)]);
    run.blocked("mount namespace: the socket's directory is not in the sandbox");
    listener.set_nonblocking(true).expect("nonblocking");
    assert!(
        listener.accept().is_err(),
        "ESCAPE: the host socket accepted a connection\n{run}"
    );
}

#[test]
fn escape_dns() {
    probe("dns", &[], &["example.com", "pypi.org", "github.com"])
        .blocked("network namespace: no resolver is reachable (and /etc/resolv.conf is absent)");
}

#[test]
fn escape_dns_host_resolver() {
    // The host's own resolver, often on the host's loopback (127.0.0.53).
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let server = conf
        .lines()
        .find_map(|l| l.strip_prefix("nameserver"))
        .map_or("127.0.0.53", str::trim)
        .to_owned();
    let mut args = vec![server.as_str(), "53"];
    if server != "127.0.0.53" {
        args.extend(["127.0.0.53", "53"]);
    }
    probe("udp", &[], &args).blocked("network namespace with loopback only");
}

// ---------------------------------------------------------------------------------------
// Limits

fn fork_bomb(user: User) {
    Exec::probe("forkbomb", &["1024"])
        .exec_args(["--pids", "64"])
        .user(user)
        .run()
        .blocked(
            "RLIMIT_NPROC in the sandbox's user namespace (and the pids cgroup where delegated)",
        );
}

#[test]
fn escape_fork_bomb() {
    fork_bomb(User::Runner);
}

#[test]
fn escape_fork_bomb_unprivileged() {
    fork_bomb(User::Nobody);
}

#[test]
fn escape_fork_bomb_default_limit() {
    probe("forkbomb", &[], &["16384"]).blocked("the default process limit (RLIMIT_NPROC)");
}

#[test]
fn escape_memory_balloon() {
    let run = probe("balloon", &["--memory", "512MiB"], &["8192"]);
    run.blocked_or_killed("memory limit: RLIMIT_DATA (or the memory cgroup) at 512 MiB");
    let reached = run
        .stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("allocated ")?
                .strip_suffix(" MiB")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(
        reached <= 1024,
        "the balloon reached {reached} MiB under a 512 MiB limit\n{run}"
    );
}

#[test]
fn escape_tmpfs_fill() {
    probe("fill", &[], &["/tmp", "2048"]).blocked("/tmp is a size-limited tmpfs (ENOSPC)");
}

#[test]
fn escape_tmpfs_fill_sized() {
    for dir in ["/tmp", "/home/ci", "/dev/shm"] {
        probe("fill", &["--tmpfs-size", "64MiB"], &[dir, "1024"])
            .blocked("private tmpfs limited by --tmpfs-size (ENOSPC)");
    }
}

#[test]
fn escape_fd_exhaustion() {
    probe("fds", &[], &["16384"]).blocked("RLIMIT_NOFILE (soft and hard)");
}
