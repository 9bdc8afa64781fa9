//! The isolated spawn, for real: namespaces, the fresh root, pid 1, limits, the proxy port.
//!
//! These tests need user, mount, pid and network namespaces and Landlock, which this
//! project's CI hosts provide; `ci-intel doctor` says what a host lacks.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use ci_intel_sandbox::{Exit, Isolation, Limits, NetworkMode, Policy, SpawnError, spawn};
use nix::sys::signal::Signal;

fn pipe() -> (std::fs::File, OwnedFd) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (std::fs::File::from(r), w)
}

fn sh(script: &str) -> Vec<OsString> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

fn policy(iso: Isolation, cwd: &Path) -> Policy {
    Policy::new(cwd).env("PATH", "/usr/bin:/bin").isolate(iso)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

/// Runs `script` isolated with `iso` in `cwd`; returns the exit and the output.
async fn run(iso: Isolation, cwd: &Path, script: &str) -> (Exit, String) {
    let (mut r, w) = pipe();
    let child = spawn(&policy(iso, cwd), &sh(script), w, None)
        .unwrap_or_else(|e| panic!("spawn failed: {}", chain(&e)));
    child.exited().await.unwrap();
    let exit = child.reap().unwrap();
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    (exit, out)
}

fn deny() -> Isolation {
    Isolation::builder().network(NetworkMode::Deny).build()
}

#[tokio::test]
async fn runs_as_an_unprivileged_user_without_capabilities_in_a_fresh_root() {
    let (exit, out) = run(
        deny(),
        Path::new("/"),
        "id -u; id -g; hostname; echo pid=$$; ls -A /; grep ^ci: /etc/passwd; \
         grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
         ls /proc | grep -cE '^[0-9]+$'; echo HOME=$HOME",
    )
    .await;
    assert!(exit.success(), "{exit:?}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..4], ["1000", "1000", "ci-intel", "pid=2"], "{out}");
    let root: Vec<&str> = lines[4..]
        .iter()
        .take_while(|l| !l.starts_with("ci:"))
        .copied()
        .collect();
    for present in ["usr", "bin", "etc", "dev", "proc", "tmp", "home"] {
        assert!(root.contains(&present), "/{present} missing from {root:?}");
    }
    for absent in ["root", "sys", "var", "run", "boot", "work", "mnt"] {
        assert!(
            !root.contains(&absent),
            "/{absent} must not be visible: {root:?}"
        );
    }
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000000")),
            "{set} not empty:\n{out}"
        );
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // pid 1 (the sandbox's init), the shell, ls/grep: only the sandbox's own processes.
    let procs: usize = lines[lines.len() - 2].parse().unwrap();
    assert!(procs <= 4, "sees {procs} processes");
}

#[tokio::test]
async fn declared_paths_are_visible_as_declared_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(root.join("out")).unwrap();
    std::fs::write(root.join("src/in.txt"), "input").unwrap();
    std::fs::write(root.join("secret.txt"), "no").unwrap();
    let iso = Isolation::builder()
        .ro(root.join("src"))
        .rw(root.join("out"))
        .network(NetworkMode::Deny)
        .build();
    let (exit, out) = run(
        iso,
        root,
        "cat src/in.txt; echo; \
         cat secret.txt 2>/dev/null || echo secret-hidden; \
         (echo x > src/new) 2>/dev/null || echo src-read-only; \
         echo made > out/result && echo out-writable; \
         (echo x > /usr/x) 2>/dev/null || echo usr-read-only; \
         (echo x > /x) 2>/dev/null || echo root-read-only; \
         echo t > /tmp/t && echo tmp-writable; echo h > /home/ci/h && echo home-writable",
    )
    .await;
    assert!(exit.success(), "{exit:?}\n{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "input",
            "secret-hidden",
            "src-read-only",
            "out-writable",
            "usr-read-only",
            "root-read-only",
            "tmp-writable",
            "home-writable"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(root.join("out/result")).unwrap(),
        "made\n"
    );
    assert!(!root.join("src/new").exists());
}

#[tokio::test]
async fn exit_codes_and_signals_of_the_command_pass_through_pid_1() {
    let (exit, _) = run(deny(), Path::new("/"), "exit 42").await;
    assert_eq!((exit.code, exit.signal), (Some(42), None));
    let (exit, _) = run(deny(), Path::new("/"), "kill -TERM $$").await;
    assert_eq!((exit.code, exit.signal), (None, Some(libc::SIGTERM)));
}

#[tokio::test]
async fn missing_command_and_bad_paths_are_typed_errors() {
    let (_r, w) = pipe();
    let err = spawn(
        &policy(deny(), Path::new("/")),
        &["/nonexistent/ci-intel-nope".into()],
        w,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, SpawnError::NotFound { .. }), "{err:?}");
    let (_r, w) = pipe();
    let iso = Isolation::builder()
        .ro("/nonexistent/ci-intel")
        .network(NetworkMode::Deny)
        .build();
    let err = spawn(&policy(iso, Path::new("/")), &sh("true"), w, None).unwrap_err();
    assert_eq!(
        chain(&err),
        "could not isolate /bin/sh: invalid sandbox layout: sandbox path /nonexistent/ci-intel \
         does not exist: No such file or directory (os error 2)"
    );
}

/// True while a process whose command line contains `marker` runs on the host.
fn running_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(marker))
            .unwrap_or(false)
    })
}

#[tokio::test]
async fn a_daemon_left_behind_dies_with_the_sandbox() {
    let marker = format!("ci-intel-daemon-{}", std::process::id());
    let script = format!("setsid sh -c 'sleep 300; : {marker}' >/dev/null 2>&1 & echo started");
    let (exit, out) = run(deny(), Path::new("/"), &script).await;
    assert!(exit.success(), "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while running_with(&marker) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!running_with(&marker), "the daemon survived its sandbox");
}

#[tokio::test]
async fn sigterm_to_the_group_reaches_the_command_through_pid_1() {
    let (r, w) = pipe();
    let child = spawn(
        &policy(deny(), Path::new("/")),
        &sh("trap 'echo got-term; exit 7' TERM; echo ready; sleep 100 & wait"),
        w,
        None,
    )
    .unwrap();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    child.signal_group(Signal::SIGTERM).unwrap();
    child.exited().await.unwrap();
    let exit = child.reap().unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert_eq!((exit.code, rest.as_str()), (Some(7), "got-term\n"));
}

#[tokio::test]
async fn the_network_has_only_loopback_and_no_dns() {
    let (exit, out) = run(
        Isolation::builder().network(NetworkMode::Loopback).build(),
        Path::new("/"),
        "ls /sys/class/net 2>/dev/null || cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; \
         getent hosts example.com || echo no-dns; \
         python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); \
         c=socket.create_connection(s.getsockname()); print(\"loopback-ok\")'",
    )
    .await;
    assert!(exit.success(), "{exit:?}\n{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["lo", "no-dns", "loopback-ok"]
    );
}

#[tokio::test]
async fn deny_mode_forbids_tcp_even_on_loopback() {
    let (exit, out) = run(
        deny(),
        Path::new("/"),
        "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0))' 2>&1 | tail -1",
    )
    .await;
    assert!(exit.success(), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
}

#[tokio::test]
async fn proxy_mode_hands_out_the_port_and_nothing_else_connects() {
    let (r, w) = pipe();
    let mut child = spawn(
        &policy(
            Isolation::builder().network(NetworkMode::Proxy).build(),
            Path::new("/"),
        ),
        &sh(
            "curl -sS -x http://127.0.0.1:3128 http://example.test/hello; echo; \
             curl -sS --max-time 5 http://127.0.0.1:3129/ 2>&1 | head -c 60; echo",
        ),
        w,
        None,
    )
    .unwrap();
    let listener = child.take_proxy_listener().expect("proxy listener");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nproxied!",
        )
        .unwrap();
        String::from_utf8(head).unwrap()
    });
    child.exited().await.unwrap();
    let exit = child.reap().unwrap();
    let head = server.join().unwrap();
    let mut out = String::new();
    let mut r = r;
    r.read_to_string(&mut out).unwrap();
    assert!(exit.success(), "{exit:?} {out}");
    assert!(
        head.starts_with("GET http://example.test/hello HTTP/1.1\r\n"),
        "{head}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "proxied!");
    assert!(lines[1].contains("Failed to connect"), "{out}");
}

#[tokio::test]
async fn a_symbolic_link_in_a_writable_path_cannot_steer_mount_points_out_of_the_sandbox() {
    // A previous step left `cache/x -> <host dir>` in a writable host path; this step binds
    // something beneath `cache/x`. Building the mount point must not create anything in the
    // host directory the link points to.
    let dir = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::symlink(host.path(), cache.join("x")).unwrap();
    let iso = Isolation::builder()
        .rw(&cache)
        .ro_at("/usr/bin", cache.join("x/y/bin"))
        .network(NetworkMode::Deny)
        .build();
    let (_r, w) = pipe();
    let err = spawn(&policy(iso, Path::new("/")), &sh("true"), w, None).unwrap_err();
    let msg = chain(&err);
    assert!(msg.contains("creating a mount point"), "{msg}");
    assert!(msg.contains("Too many levels of symbolic links"), "{msg}");
    assert_eq!(
        std::fs::read_dir(host.path()).unwrap().count(),
        0,
        "something was created through the link"
    );
}

/// The cgroup v1 `cpu` hierarchy, or a panic saying why this host cannot run a test of it.
fn cpu_hierarchy() -> &'static Path {
    let root = Path::new("/sys/fs/cgroup/cpu");
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: sandboxes get a cgroup v1 cpu cgroup only as root"
    );
    assert!(
        root.join("cgroup.procs").exists(),
        "this test needs the cgroup v1 cpu hierarchy mounted at {}",
        root.display()
    );
    root
}

/// The directory of `pid`'s cgroup in the v1 hierarchy of `controller` mounted at `root`.
fn cgroup_of(pid: i32, controller: &str, root: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = text
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then_some(path)
        })
        .unwrap_or_else(|| panic!("pid {pid} has no {controller} cgroup:\n{text}"));
    root.join(path.trim_start_matches('/'))
}

fn tasks(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("tasks"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_cpu_limit_puts_the_whole_step_in_a_cpu_cgroup_removed_with_it() {
    let root = cpu_hierarchy();
    let marker = format!("ci-intel-cpu-{}", std::process::id());
    let iso = Isolation::builder()
        .limits(Limits {
            millicpus: Some(500),
            ..Limits::default()
        })
        .network(NetworkMode::Deny)
        .build();
    let (r, w) = pipe();
    let child = spawn(
        &policy(iso, Path::new("/")),
        &sh(&format!("echo ready; sleep 300; : {marker}")),
        w,
        None,
    )
    .unwrap_or_else(|e| panic!("spawn failed: {}", chain(&e)));
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    assert!(child.has_cgroup());

    let dir = cgroup_of(child.pid(), "cpu", root);
    let own = cgroup_of(std::process::id() as i32, "cpu", root);
    assert_eq!(
        dir.parent(),
        Some(own.as_path()),
        "the sandbox's cpu cgroup is a child of the orchestrator's"
    );
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
    assert_eq!(read("cpu.cfs_period_us"), "100000\n");
    assert_eq!(read("cpu.cfs_quota_us"), "50000\n", "half of each period");
    // The command, not only pid 1, is in it (a shell whose command line has the marker).
    let in_cgroup = tasks(&dir);
    assert!(in_cgroup.contains(&child.pid()), "{in_cgroup:?}");
    let shell = in_cgroup.iter().any(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
    });
    assert!(
        shell,
        "the command is not in {}: {in_cgroup:?}",
        dir.display()
    );

    child.signal_group(Signal::SIGKILL).unwrap();
    child.exited().await.unwrap();
    child.reap().unwrap();
    assert!(
        !dir.exists(),
        "{} is left behind after the sandbox ended",
        dir.display()
    );
}

#[tokio::test]
async fn without_a_cpu_limit_there_is_no_cpu_cgroup() {
    let root = cpu_hierarchy();
    let (r, w) = pipe();
    let child = spawn(
        &policy(deny(), Path::new("/")),
        &sh("echo ready; sleep 300"),
        w,
        None,
    )
    .unwrap_or_else(|e| panic!("spawn failed: {}", chain(&e)));
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    assert_eq!(
        cgroup_of(child.pid(), "cpu", root),
        cgroup_of(std::process::id() as i32, "cpu", root),
        "the sandbox stays in the orchestrator's cpu cgroup"
    );
    child.signal_group(Signal::SIGKILL).unwrap();
    child.exited().await.unwrap();
    child.reap().unwrap();
}
