//! The program a tool name runs, and the digest of its bytes.
//!
//! A step's key depends on the compilers and tools it runs, not just their names: `cc` on
//! one machine is not `cc` on another, and an upgrade changes what it produces. [`resolve`]
//! finds a name as `execvp` would (the first executable regular file in a `PATH`
//! directory; an empty `PATH` element is the current directory; a name with a `/` is a
//! path), follows symbolic links to the real file (`/usr/bin/cc` →
//! `/usr/bin/x86_64-linux-gnu-gcc-12`) and hashes it.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::digest::{self, Digest};

/// A tool, found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The name asked for.
    pub name: String,
    /// Where it was found: the `PATH` directory joined with the name, or the path given.
    pub path: PathBuf,
    /// The file that runs: `path` with every symbolic link followed, absolute.
    pub resolved: PathBuf,
    /// The BLAKE3 digest of `resolved`'s content.
    pub digest: Digest,
}

/// Why a tool could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// No directory of `PATH` holds a file of that name (or the path given does not exist).
    #[error("tool `{name}` not found (searched {})", Searched(searched))]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where it was looked for: each `PATH` directory, or the path given.
        searched: Vec<PathBuf>,
    },
    /// A file of that name exists but cannot be run: not a regular file, or not
    /// executable by this process. For a bare name, the first such file on `PATH`.
    #[error("{} is not an executable file", path.display())]
    NotExecutable {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be inspected or read.
    #[error("could not read the tool {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A list of searched places, for a message.
struct Searched<'a>(&'a [PathBuf]);

impl fmt::Display for Searched<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nowhere");
        }
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", p.display())?;
        }
        Ok(())
    }
}

/// Whether this process may execute `path` (its effective user and groups, as `execve`
/// checks).
fn executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; faccessat only
    // reads it and touches no other memory.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) == 0 }
}

/// What `path` is, following links: `Ok(true)` an executable regular file, `Ok(false)`
/// something else that exists, `Err` missing or unreadable.
fn runnable(path: &Path) -> io::Result<bool> {
    let meta = fs::metadata(path)?;
    Ok(meta.is_file() && executable(path))
}

/// Finds `name` as `execvp` would with `path_var` as `PATH`, follows links to the real
/// file and hashes it.
pub fn resolve(name: &str, path_var: &OsStr) -> Result<Tool, ToolError> {
    let path = if name.contains('/') {
        let path = PathBuf::from(name);
        match runnable(&path) {
            Ok(true) => path,
            Ok(false) => return Err(ToolError::NotExecutable { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ToolError::NotFound {
                    name: name.to_owned(),
                    searched: vec![path],
                });
            }
            Err(source) => return Err(ToolError::Io { path, source }),
        }
    } else {
        search(name, path_var)?
    };
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ToolError::Io { path, source }
    };
    let resolved = fs::canonicalize(&path).map_err(io_err(&path))?;
    let (digest, _) = digest::of_file(&resolved).map_err(io_err(&resolved))?;
    Ok(Tool {
        name: name.to_owned(),
        path,
        resolved,
        digest,
    })
}

/// The first executable regular file called `name` in the directories of `path_var`.
fn search(name: &str, path_var: &OsStr) -> Result<PathBuf, ToolError> {
    let mut searched = Vec::new();
    let mut not_executable = None;
    if !name.is_empty() {
        for dir in std::env::split_paths(path_var) {
            // An empty element is the current directory, as for execvp.
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            let candidate = dir.join(name);
            searched.push(dir);
            match runnable(&candidate) {
                Ok(true) => return Ok(candidate),
                Ok(false) => {
                    if not_executable.is_none() && candidate.is_file() {
                        not_executable = Some(candidate);
                    }
                }
                // Missing here, or a directory that cannot be searched: execvp moves on.
                Err(_) => {}
            }
        }
    }
    Err(match not_executable {
        Some(path) => ToolError::NotExecutable { path },
        None => ToolError::NotFound {
            name: name.to_owned(),
            searched,
        },
    })
}
