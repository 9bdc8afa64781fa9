//! Finding a tool on `PATH` as `execvp` would, through links to the real file, and telling
//! its versions apart by content.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use ci_intel_cache::digest::Digest;
use ci_intel_cache::tools::{ToolError, resolve};

fn write_tool(path: &Path, content: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn path_of(dirs: &[&Path]) -> OsString {
    std::env::join_paths(dirs).unwrap()
}

/// A `PATH` of three directories: `empty/`, `bin/` holding `cc`, a link to
/// `../real/gcc-12` through `cc-alt`, and `later/` with another `cc`.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("empty")).unwrap();
        write_tool(&d.join("real/gcc-12"), b"#!/bin/sh\necho gcc 12\n", 0o755);
        fs::create_dir_all(d.join("bin")).unwrap();
        std::os::unix::fs::symlink("../real/gcc-12", d.join("bin/cc-alt")).unwrap();
        std::os::unix::fs::symlink("cc-alt", d.join("bin/cc")).unwrap();
        write_tool(&d.join("later/cc"), b"#!/bin/sh\necho another\n", 0o755);
        Host { dir }
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn path_var(&self) -> OsString {
        path_of(&[&self.at("empty"), &self.at("bin"), &self.at("later")])
    }
}

#[test]
fn a_name_is_found_on_path_and_followed_to_the_real_file() {
    let host = Host::new();
    let tool = resolve("cc", &host.path_var()).unwrap();
    assert_eq!(tool.name, "cc");
    assert_eq!(
        tool.path,
        host.at("bin/cc"),
        "the first directory that has it"
    );
    assert_eq!(
        tool.resolved,
        fs::canonicalize(host.at("real/gcc-12")).unwrap(),
        "links followed, all the way"
    );
    assert!(tool.resolved.is_absolute());
    assert_eq!(tool.digest, Digest::of(b"#!/bin/sh\necho gcc 12\n"));
}

#[test]
fn changing_the_tool_changes_its_digest() {
    let host = Host::new();
    let before = resolve("cc", &host.path_var()).unwrap();
    write_tool(
        &host.at("real/gcc-12"),
        b"#!/bin/sh\necho gcc 12.1\n",
        0o755,
    );
    let after = resolve("cc", &host.path_var()).unwrap();
    assert_eq!(after.resolved, before.resolved);
    assert_ne!(after.digest, before.digest);
    // Pointing the link elsewhere changes it too.
    fs::remove_file(host.at("bin/cc-alt")).unwrap();
    std::os::unix::fs::symlink("../later/cc", host.at("bin/cc-alt")).unwrap();
    let moved = resolve("cc", &host.path_var()).unwrap();
    assert_eq!(
        moved.resolved,
        fs::canonicalize(host.at("later/cc")).unwrap()
    );
    assert_ne!(moved.digest, after.digest);
}

#[test]
fn files_that_cannot_run_and_directories_are_passed_over() {
    let host = Host::new();
    // Earlier on PATH: a non-executable file and a directory of the same name.
    write_tool(&host.at("first/cc"), b"not a program", 0o644);
    fs::create_dir_all(host.at("second/cc")).unwrap();
    let path = path_of(&[&host.at("first"), &host.at("second"), &host.at("bin")]);
    let tool = resolve("cc", &path).unwrap();
    assert_eq!(tool.path, host.at("bin/cc"));

    // Only a non-executable file: that is the error, not "not found".
    let err = resolve("cc", &path_of(&[&host.at("first")])).unwrap_err();
    assert!(
        matches!(&err, ToolError::NotExecutable { path } if *path == host.at("first/cc")),
        "{err:?}"
    );
}

#[test]
fn a_missing_tool_names_where_it_was_looked_for() {
    let host = Host::new();
    let err = resolve("ld.gold", &host.path_var()).unwrap_err();
    match &err {
        ToolError::NotFound { name, searched } => {
            assert_eq!(name, "ld.gold");
            assert_eq!(
                *searched,
                [host.at("empty"), host.at("bin"), host.at("later")]
            );
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("`ld.gold` not found"), "{msg}");
    assert!(
        msg.contains(&host.at("later").display().to_string()),
        "{msg}"
    );
    assert!(matches!(
        resolve("cc", OsStr::new("")),
        Err(ToolError::NotFound { .. })
    ));
    assert!(matches!(
        resolve("", &host.path_var()),
        Err(ToolError::NotFound { .. })
    ));
}

#[test]
fn a_name_with_a_slash_is_a_path() {
    let host = Host::new();
    let given = host.at("bin/cc");
    // PATH does not matter for a path.
    let tool = resolve(given.to_str().unwrap(), OsStr::new("")).unwrap();
    assert_eq!(tool.path, given);
    assert_eq!(
        tool.resolved,
        fs::canonicalize(host.at("real/gcc-12")).unwrap()
    );
    let missing = host.at("bin/nope");
    assert!(matches!(
        resolve(missing.to_str().unwrap(), &host.path_var()),
        Err(ToolError::NotFound { searched, .. }) if searched == [missing.clone()]
    ));
    assert!(matches!(
        resolve(host.at("real").to_str().unwrap(), &host.path_var()),
        Err(ToolError::NotExecutable { .. })
    ));
}
