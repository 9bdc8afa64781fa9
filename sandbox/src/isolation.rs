//! What an isolated process may see: the [`Isolation`] half of a policy, and the file system
//! [`Layout`] it turns into.
//!
//! Building the layout is pure (it only looks at the host's paths), so it is tested here;
//! mounting it happens in the sandbox's first process (see `ns.rs`).

use std::ffi::OsString;
use std::marker::PhantomData;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The port of the egress proxy inside a sandbox with [`NetworkMode::Proxy`].
pub const PROXY_PORT: u16 = 3128;

/// The user and group id a sandboxed process runs as, whoever runs the orchestrator.
pub const SANDBOX_UID: u32 = 1000;

/// The hostname of every sandbox.
pub const HOSTNAME: &str = "ci-intel";

/// `$HOME` inside the sandbox: a private tmpfs.
pub const HOME: &str = "/home/ci";

/// System directories visible read-only when the host has them. Symbolic links (merged
/// `/usr`) are recreated as links.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// The parts of the host's `/etc` that tools need to work and that hold no secrets. The
/// rest of `/etc` is absent; `passwd`, `group`, `hosts` and `hostname` are synthetic.
/// (`ld.so.conf` and `ca-certificates` are for `ldconfig` and `update-ca-certificates`;
/// programs read `ld.so.cache` and `ssl/certs`. Never `ssl/private`.)
const SYSTEM_ETC: &[&str] = &[
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/protocols",
    "/etc/services",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
];

/// Device nodes bound from the host into the sandbox's `/dev`. No `tty`: a sandboxed
/// process has no controlling terminal.
pub(crate) const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// How a sandbox reaches the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// A network namespace with only loopback, and no TCP at all (Landlock).
    Deny,
    /// A network namespace with only loopback; servers and clients on it work.
    Loopback,
    /// Only the egress proxy: a listener on `127.0.0.1:`[`PROXY_PORT`] inside the
    /// namespace, handed to the caller ([`Child::take_proxy_listener`](crate::Child)).
    Proxy,
}

/// Resource limits of a sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Per-process data segment limit (`RLIMIT_DATA`), bytes; `None` for the host's RAM.
    pub memory: Option<u64>,
    /// Processes and threads of the sandbox's user (`RLIMIT_NPROC`).
    pub pids: u64,
    /// Open files per process (`RLIMIT_NOFILE`).
    pub nofile: u64,
    /// Size of each private tmpfs (`/tmp`, `$HOME`, `/dev/shm`), bytes.
    pub tmpfs: u64,
    /// CPU time of the whole step, in thousandths of a CPU (`1500` is one and a half CPUs'
    /// worth of time per period), at least 10 (the kernel's smallest quota, 1 ms per
    /// 100 ms period); `None` for no limit. Enforced only by a cgroup v1 `cpu` cgroup (as
    /// root); the posture says whether the host gives one.
    pub millicpus: Option<u32>,
}

impl Limits {
    /// The smallest CPU limit, in CPUs: the kernel's smallest CFS quota (1 ms) per the
    /// sandbox's 100 ms period.
    pub const MIN_CPUS: f64 = 0.01;
    /// The largest CPU limit, in CPUs; more is surely a mistake.
    pub const MAX_CPUS: f64 = 1024.0;

    /// A limit of `cpus` CPUs as [`millicpus`](Limits::millicpus), rounded to the nearest
    /// thousandth; `None` unless `cpus` is between [`MIN_CPUS`](Limits::MIN_CPUS) and
    /// [`MAX_CPUS`](Limits::MAX_CPUS).
    pub fn millicpus_of(cpus: f64) -> Option<u32> {
        // In range, the rounded product is between 10 and 1024000: the cast is exact.
        (Self::MIN_CPUS..=Self::MAX_CPUS)
            .contains(&cpus)
            .then(|| (cpus * 1000.0).round() as u32)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: None,
            pids: 4096,
            nofile: 8192,
            tmpfs: 1 << 30,
            millicpus: None,
        }
    }
}

/// Marker of an [`IsolationBuilder`] whose network mode is not chosen yet.
#[derive(Clone, Copy, Debug)]
pub struct NetworkUnset;

/// Marker of an [`IsolationBuilder`] whose network mode is chosen.
#[derive(Clone, Copy, Debug)]
pub struct NetworkSet;

/// What an isolated process sees: the file system, the network and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    pub(crate) ro: Vec<(PathBuf, PathBuf)>,
    pub(crate) rw: Vec<(PathBuf, PathBuf)>,
    pub(crate) tmpfs: Vec<PathBuf>,
    pub(crate) network: NetworkMode,
    pub(crate) limits: Limits,
    pub(crate) hostname: String,
}

/// Builds an [`Isolation`]. The network mode must be chosen before [`build`]: there is no
/// default to forget.
///
/// [`build`]: IsolationBuilder::build
#[derive(Clone, Debug)]
pub struct IsolationBuilder<N> {
    inner: Isolation,
    state: PhantomData<N>,
}

impl Isolation {
    /// Starts a builder: system directories read-only, nothing else of the host.
    pub fn builder() -> IsolationBuilder<NetworkUnset> {
        IsolationBuilder {
            inner: Isolation {
                ro: Vec::new(),
                rw: Vec::new(),
                tmpfs: Vec::new(),
                network: NetworkMode::Deny,
                limits: Limits::default(),
                hostname: HOSTNAME.to_string(),
            },
            state: PhantomData,
        }
    }

    /// The network mode.
    pub fn network(&self) -> NetworkMode {
        self.network
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The variables a process isolated this way is given, whoever starts it: `HOME` (the
    /// private one), `USER`, `LOGNAME`, `HOSTNAME`, and in proxy mode `HTTP(S)_PROXY` and
    /// `NO_PROXY`, both spellings.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("HOME", HOME.to_string()),
            ("USER", "ci".to_string()),
            ("LOGNAME", "ci".to_string()),
            ("HOSTNAME", self.hostname.clone()),
        ];
        if self.network == NetworkMode::Proxy {
            let url = format!("http://127.0.0.1:{PROXY_PORT}");
            for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
                env.push((name, url.clone()));
            }
            for name in ["NO_PROXY", "no_proxy"] {
                env.push((name, "localhost,127.0.0.1,::1".to_string()));
            }
        }
        env
    }
}

impl<N> IsolationBuilder<N> {
    /// Makes a host path (file or directory) visible read-only at the same path.
    #[must_use]
    pub fn ro(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.inner.ro.push((path.clone(), path));
        self
    }

    /// Makes the host path `source` visible read-only at `target`.
    #[must_use]
    pub fn ro_at(mut self, source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        self.inner.ro.push((source.into(), target.into()));
        self
    }

    /// Makes the host path `source` visible read-write at `target` (a step's staged
    /// outputs appear where the step expects them).
    #[must_use]
    pub fn rw_at(mut self, source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        self.inner.rw.push((source.into(), target.into()));
        self
    }

    /// Makes a host path visible read-write at the same path.
    #[must_use]
    pub fn rw(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.inner.rw.push((path.clone(), path));
        self
    }

    /// Mounts an empty private tmpfs at `path`.
    #[must_use]
    pub fn tmpfs(mut self, path: impl Into<PathBuf>) -> Self {
        self.inner.tmpfs.push(path.into());
        self
    }

    /// Sets the limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.inner.limits = limits;
        self
    }

    /// The hostname inside (default [`HOSTNAME`]): a determinism check's second run uses
    /// another, to show a step's outputs do not depend on it. A name the kernel would
    /// refuse (empty, over 64 bytes, a NUL) is replaced by the default.
    #[must_use]
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !name.is_empty() && name.len() <= 64 && !name.contains('\0') {
            self.inner.hostname = name;
        }
        self
    }
}

impl IsolationBuilder<NetworkUnset> {
    /// Chooses the network mode.
    pub fn network(mut self, mode: NetworkMode) -> IsolationBuilder<NetworkSet> {
        self.inner.network = mode;
        IsolationBuilder {
            inner: self.inner,
            state: PhantomData,
        }
    }
}

impl IsolationBuilder<NetworkSet> {
    /// The finished isolation.
    pub fn build(self) -> Isolation {
        self.inner
    }
}

/// Why an isolation cannot be laid out.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A path is relative or has `..` in it.
    #[error("sandbox path {} must be absolute and without `..`", path.display())]
    NotAbsolute {
        /// The path.
        path: PathBuf,
    },
    /// A path to bind does not exist on the host.
    #[error("sandbox path {} does not exist", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A path the sandbox owns was given.
    #[error("sandbox path {} is reserved (it is the sandbox's own {what})", path.display())]
    Reserved {
        /// The path.
        path: PathBuf,
        /// What the sandbox puts there.
        what: &'static str,
    },
}

/// One thing to put into the sandbox's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A bind of the host path at the same place.
    Bind {
        /// The path inside.
        path: PathBuf,
        /// The host path.
        source: PathBuf,
        /// Read-write (else read-only).
        writable: bool,
        /// A directory (else a file or other non-directory).
        dir: bool,
    },
    /// A symbolic link.
    Symlink {
        /// Where it is.
        path: PathBuf,
        /// What it points to.
        target: OsString,
    },
    /// A private tmpfs.
    Tmpfs {
        /// Where it is mounted.
        path: PathBuf,
        /// Mode of its root.
        mode: u32,
    },
    /// A file with fixed contents, in the read-only root.
    File {
        /// Where it is.
        path: PathBuf,
        /// Its contents.
        contents: Vec<u8>,
    },
    /// An empty directory in the read-only root.
    Dir {
        /// Where it is.
        path: PathBuf,
    },
}

impl Entry {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Entry::Bind { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::Tmpfs { path, .. }
            | Entry::File { path, .. }
            | Entry::Dir { path } => path,
        }
    }
}

/// The whole root of a sandbox, in mount order (parents before children). `/proc` and
/// `/dev` are added by the mounting code itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) entries: Vec<Entry>,
}

/// Paths the sandbox builds itself, which a policy may not bind over.
const RESERVED: &[(&str, &str)] = &[
    ("/", "root"),
    ("/proc", "/proc"),
    ("/dev", "/dev"),
    ("/sys", "absent /sys"),
    ("/etc", "/etc"),
    ("/tmp", "/tmp"),
    ("/home/ci", "$HOME"),
];

impl Layout {
    /// Lays out `isolation` on this host, with `cwd` existing (empty unless bound).
    pub(crate) fn new(isolation: &Isolation, cwd: &Path) -> Result<Layout, LayoutError> {
        let mut entries = system_entries().to_vec();
        let files: [(&str, String); 4] = [
            (
                "/etc/passwd",
                format!(
                    "root:x:0:0:root:/root:/bin/sh\n\
                     ci:x:{SANDBOX_UID}:{SANDBOX_UID}:ci:{HOME}:/bin/sh\n\
                     nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                ),
            ),
            (
                "/etc/group",
                format!("root:x:0:\nci:x:{SANDBOX_UID}:\nnogroup:x:65534:\n"),
            ),
            (
                "/etc/hosts",
                format!(
                    "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                    isolation.hostname
                ),
            ),
            ("/etc/hostname", format!("{}\n", isolation.hostname)),
        ];
        for (path, contents) in files {
            entries.push(Entry::File {
                path: path.into(),
                contents: contents.into_bytes(),
            });
        }
        for path in ["/tmp", HOME] {
            entries.push(Entry::Tmpfs {
                path: path.into(),
                mode: if path == "/tmp" { 0o1777 } else { 0o700 },
            });
        }
        let user = |path: &Path| -> Result<PathBuf, LayoutError> {
            let clean = absolute(path)?;
            if let Some((_, what)) = RESERVED.iter().find(|(p, _)| Path::new(p) == clean) {
                return Err(LayoutError::Reserved { path: clean, what });
            }
            Ok(clean)
        };
        for (paths, writable) in [(&isolation.ro, false), (&isolation.rw, true)] {
            for (source, target) in paths {
                let path = user(target)?;
                let source = absolute(source)?;
                let meta = std::fs::metadata(&source).map_err(|e| LayoutError::Missing {
                    path: source.clone(),
                    source: e,
                })?;
                entries.retain(|e| e.path() != path);
                entries.push(Entry::Bind {
                    path,
                    source,
                    writable,
                    dir: meta.is_dir(),
                });
            }
        }
        for path in &isolation.tmpfs {
            let path = user(path)?;
            entries.retain(|e| e.path() != path);
            entries.push(Entry::Tmpfs { path, mode: 0o1777 });
        }
        let cwd = absolute(cwd)?;
        let bound =
            |e: &Entry| matches!(e, Entry::Bind { dir: true, .. }) && cwd.starts_with(e.path());
        if cwd != Path::new("/") && !entries.iter().any(bound) {
            entries.push(Entry::Dir { path: cwd });
        }
        // Parents before children; among equals the later declaration already won above.
        entries.sort_by_key(|e| depth(e.path()));
        Ok(Layout { entries })
    }
}

fn depth(path: &Path) -> usize {
    path.components().count()
}

/// `path` if it is absolute without `..`, with `.` components and trailing slashes dropped.
fn absolute(path: &Path) -> Result<PathBuf, LayoutError> {
    let bad = || LayoutError::NotAbsolute {
        path: path.to_path_buf(),
    };
    if !path.is_absolute() || path.as_os_str().as_bytes().contains(&0) {
        return Err(bad());
    }
    let mut clean = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            Component::ParentDir | Component::Prefix(_) => return Err(bad()),
        }
    }
    Ok(clean)
}

/// The system part of every layout: read once per process, since a run does not change
/// the host's `/usr` or `/etc` under itself.
fn system_entries() -> &'static [Entry] {
    static SYSTEM: std::sync::OnceLock<Vec<Entry>> = std::sync::OnceLock::new();
    SYSTEM.get_or_init(|| {
        let dirs = SYSTEM_DIRS
            .iter()
            .filter_map(|dir| host_entry(Path::new(dir), false));
        let etc = SYSTEM_ETC.iter().filter_map(|p| etc_entry(Path::new(p)));
        dirs.chain(etc).collect()
    })
}

/// Small regular files of `/etc` are copied into the root instead of bound: a write into
/// the new root costs far less than a mount.
const COPY_UP_TO: u64 = 256 * 1024;

/// An `/etc` entry: a small file is copied, anything else is as [`host_entry`] makes it.
fn etc_entry(path: &Path) -> Option<Entry> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.is_file() && meta.len() <= COPY_UP_TO {
        if let Ok(contents) = std::fs::read(path) {
            return Some(Entry::File {
                path: path.to_path_buf(),
                contents,
            });
        }
    }
    host_entry(path, false)
}

/// A system path as an entry: a symlink stays a symlink, anything else is a read-only bind.
fn host_entry(path: &Path, writable: bool) -> Option<Entry> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).ok()?;
        return Some(Entry::Symlink {
            path: path.into(),
            target: target.into_os_string(),
        });
    }
    Some(Entry::Bind {
        path: path.into(),
        source: path.into(),
        writable,
        dir: meta.is_dir(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(iso: &Isolation, cwd: &Path) -> Layout {
        Layout::new(iso, cwd).unwrap()
    }

    #[test]
    fn system_dirs_are_read_only_and_secrets_of_etc_are_absent() {
        let iso = Isolation::builder().network(NetworkMode::Deny).build();
        let l = layout(&iso, Path::new("/"));
        let usr = l.entries.iter().find(|e| e.path() == Path::new("/usr"));
        assert!(
            matches!(
                usr,
                Some(Entry::Bind {
                    writable: false,
                    dir: true,
                    ..
                })
            ),
            "{usr:?}"
        );
        for secret in [
            "/etc/shadow",
            "/etc/gshadow",
            "/root",
            "/home",
            "/var",
            "/run",
            "/sys",
        ] {
            assert!(
                !l.entries.iter().any(|e| e.path() == Path::new(secret)),
                "{secret} must not be in the sandbox"
            );
        }
        let passwd = l
            .entries
            .iter()
            .find_map(|e| match e {
                Entry::File { path, contents } if path == Path::new("/etc/passwd") => {
                    Some(String::from_utf8(contents.clone()).unwrap())
                }
                _ => None,
            })
            .unwrap();
        assert!(
            passwd.contains("ci:x:1000:1000:ci:/home/ci:/bin/sh"),
            "{passwd}"
        );
    }

    #[test]
    fn policy_paths_are_bound_in_depth_order_and_later_declarations_win() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(dir.path().join("input.txt"), "x").unwrap();
        let iso = Isolation::builder()
            .rw(&out)
            .ro(dir.path())
            .ro(dir.path().join("input.txt"))
            .rw(dir.path().join("input.txt"))
            .network(NetworkMode::Loopback)
            .build();
        let l = layout(&iso, dir.path());
        let pos = |p: &Path| l.entries.iter().position(|e| e.path() == p).unwrap();
        assert!(pos(dir.path()) < pos(&out), "parent before child");
        assert_eq!(
            l.entries[pos(&dir.path().join("input.txt"))],
            Entry::Bind {
                path: dir.path().join("input.txt"),
                source: dir.path().join("input.txt"),
                writable: true,
                dir: false
            }
        );
        assert_eq!(
            l.entries
                .iter()
                .filter(|e| e.path() == dir.path().join("input.txt"))
                .count(),
            1
        );
        assert!(
            !l.entries.iter().any(|e| matches!(e, Entry::Dir { .. })),
            "cwd is bound"
        );
    }

    #[test]
    fn the_sandbox_env_names_the_private_home_and_the_proxy_only_in_proxy_mode() {
        let names = |mode| {
            let iso = Isolation::builder().network(mode).build();
            iso.env().into_iter().map(|(k, _)| k).collect::<Vec<_>>()
        };
        assert_eq!(
            names(NetworkMode::Deny),
            ["HOME", "USER", "LOGNAME", "HOSTNAME"]
        );
        let proxy = Isolation::builder()
            .network(NetworkMode::Proxy)
            .build()
            .env();
        assert!(proxy.contains(&("HTTPS_PROXY", "http://127.0.0.1:3128".to_string())));
        assert!(proxy.contains(&("HOME", "/home/ci".to_string())));
    }

    #[test]
    fn unbound_cwd_becomes_an_empty_directory() {
        let iso = Isolation::builder().network(NetworkMode::Deny).build();
        let l = layout(&iso, Path::new("/work/x/./y/"));
        assert!(l.entries.contains(&Entry::Dir {
            path: "/work/x/y".into()
        }));
    }

    #[test]
    fn relative_missing_and_reserved_paths_are_errors() {
        let build = |p: &str| {
            let iso = Isolation::builder()
                .ro(p)
                .network(NetworkMode::Deny)
                .build();
            Layout::new(&iso, Path::new("/")).unwrap_err().to_string()
        };
        assert_eq!(
            build("rel/path"),
            "sandbox path rel/path must be absolute and without `..`"
        );
        assert_eq!(
            build("/usr/../etc"),
            "sandbox path /usr/../etc must be absolute and without `..`"
        );
        assert_eq!(
            build("/nonexistent-ci-intel"),
            "sandbox path /nonexistent-ci-intel does not exist"
        );
        assert_eq!(
            build("/proc/"),
            "sandbox path /proc is reserved (it is the sandbox's own /proc)"
        );
    }
}
