//! The plan root as a sandboxed step sees it.
//!
//! A sandboxed step sees nothing of the root but three kinds of path, each bound into its
//! sandbox at the same absolute path:
//!
//! - its declared **inputs**, read-only: [`visible_inputs`] turns the input globs into the
//!   fewest host paths that make exactly the matching files visible;
//! - the declared outputs of the steps it needs, read-only (the caller binds them as they
//!   are);
//! - its own declared **outputs**, writable and empty at start: [`Staging`] gives each
//!   attempt a private staging directory, bound over the output locations, and moves what
//!   the step produced into the root once the attempt has succeeded.
//!
//! Paths here are the plan's: input globs and output paths are relative to the root, an
//! output with a trailing `/` is a directory, and neither may leave the root.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

/// Most alternatives a glob's `{a,b}` groups may expand to before the walk stops pruning
/// by them (matching is unaffected; only the walk gets wider).
const MAX_ALTERNATIVES: usize = 256;

/// Most symbolic links followed while checking where one link of an output resolves (the
/// kernel's own limit).
const MAX_LINK_HOPS: u32 = 40;

/// Set-user-ID and set-group-ID permission bits.
const SETID_BITS: u32 = 0o6000;

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/// Why the visible inputs of a step could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    /// An input is not a valid glob.
    #[error("invalid input glob `{glob}`")]
    Glob {
        /// The glob as declared.
        glob: String,
        /// The cause.
        #[source]
        source: globset::Error,
    },
    /// An input is absolute or climbs out of the root with `..`.
    #[error("input `{glob}` is outside the plan root")]
    OutsideRoot {
        /// The glob as declared.
        glob: String,
    },
    /// A directory or file of the root could not be read.
    #[error("could not read {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The input globs of a step, compiled the one way every consumer must match them.
///
/// Globs are matched against paths relative to the root, with `/` separators, using
/// [`globset`] syntax (`*`, `?`, `**`, `[abc]`, `{a,b}`) with
/// [`literal_separator`](globset::GlobBuilder::literal_separator) on: `*`, `?` and `[...]`
/// stay within one path component, and only `**` crosses directories, so `src/*.c` matches
/// `src/main.c` but not `src/sub/x.c`. Leading `./` is ignored. Globs name files: a glob
/// that matches a directory's own path (`src`) does not make its contents visible;
/// write `src/**` for that.
#[derive(Clone, Debug)]
pub struct InputGlobs {
    /// Every glob, for matching.
    set: GlobSet,
    /// Every brace alternative of every glob, split for pruning the walk.
    patterns: Vec<Pattern>,
}

impl InputGlobs {
    /// Compiles `inputs`. Globs that are absolute or contain a `..` component are errors,
    /// as they are when the plan is loaded.
    pub fn new(inputs: &[String]) -> Result<Self, InputsError> {
        let mut set = GlobSetBuilder::new();
        let mut patterns = Vec::new();
        for declared in inputs {
            let glob = strip_dot_slash(declared);
            if escapes_root(glob) {
                return Err(InputsError::OutsideRoot {
                    glob: declared.clone(),
                });
            }
            set.add(build_glob(glob).map_err(|source| InputsError::Glob {
                glob: declared.clone(),
                source,
            })?);
            patterns.extend(analyse(glob));
        }
        let set = set.build().map_err(|source| InputsError::Glob {
            glob: inputs.join(", "),
            source,
        })?;
        Ok(Self { set, patterns })
    }

    /// True when the file at `path` (relative to the root) matches one of the globs.
    pub fn is_match(&self, path: &Path) -> bool {
        self.set.is_match(path)
    }

    /// True when a file beneath the directory `dir` (relative to the root; empty for the
    /// root) could match. False answers are exact; true answers may be generous.
    fn could_match_beneath(&self, dir: &Path) -> bool {
        let dir: Vec<&OsStr> = dir.components().map(Component::as_os_str).collect();
        self.patterns.iter().any(|p| p.could_match_beneath(&dir))
    }

    /// The directories (relative, as components) the walk has to start from: the literal
    /// prefixes of the globs, without those inside another.
    fn walk_starts(&self) -> Vec<Vec<OsString>> {
        let mut prefixes: Vec<&Vec<OsString>> = self.patterns.iter().map(|p| &p.prefix).collect();
        prefixes.sort();
        prefixes.dedup();
        let mut starts: Vec<Vec<OsString>> = Vec::new();
        for p in prefixes {
            if !starts.iter().any(|s| p.starts_with(s)) {
                starts.push(p.clone());
            }
        }
        starts
    }
}

/// The input globs of many steps in one set, matched as [`InputGlobs`] matches them: for
/// counting, in one pass over a list of paths, how many of them each step's inputs match.
#[derive(Clone, Debug)]
pub struct InputGlobIndex {
    set: GlobSet,
    /// The step (its position in the list given) of each glob in `set`.
    owner: Vec<usize>,
    steps: usize,
}

impl InputGlobIndex {
    /// Compiles each step's `inputs` (step `i` is `steps[i]`). A step whose globs do not
    /// compile matches nothing (the plan loader has refused such plans already).
    pub fn new<'a>(steps: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut set = GlobSetBuilder::new();
        let mut owner = Vec::new();
        let mut count = 0;
        for (i, inputs) in steps.into_iter().enumerate() {
            count = i + 1;
            for declared in inputs {
                let glob = strip_dot_slash(declared);
                if escapes_root(glob) {
                    continue;
                }
                if let Ok(g) = build_glob(glob) {
                    set.add(g);
                    owner.push(i);
                }
            }
        }
        let set = set.build().unwrap_or_else(|_| GlobSet::empty());
        if set.is_empty() {
            owner.clear();
        }
        Self {
            set,
            owner,
            steps: count,
        }
    }

    /// For each step, how many of `paths` (relative to the root) its inputs match.
    pub fn counts<'p>(&self, paths: impl IntoIterator<Item = &'p Path>) -> Vec<u64> {
        let mut counts = vec![0; self.steps];
        let mut hits = Vec::new();
        let mut owners = Vec::new();
        for path in paths {
            self.set.matches_into(path, &mut hits);
            owners.clear();
            owners.extend(hits.iter().map(|&g| self.owner[g]));
            owners.sort_unstable();
            owners.dedup();
            for &o in &owners {
                counts[o] += 1;
            }
        }
        counts
    }
}

/// Builds one glob the way inputs are matched.
fn build_glob(glob: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(glob).literal_separator(true).build()
}

/// `glob` without leading `./`.
fn strip_dot_slash(mut glob: &str) -> &str {
    while let Some(rest) = glob.strip_prefix("./") {
        glob = rest.trim_start_matches('/');
    }
    glob
}

/// True when a glob is absolute or climbs out of the root, in any brace alternative (the
/// rule the plan loader applies).
fn escapes_root(glob: &str) -> bool {
    glob.starts_with('/')
        || glob.contains("{/")
        || glob.contains(",/")
        || glob.split(['/', '{', '}', ',']).any(|c| c == "..")
}

/// One brace alternative of a glob, split into path components for pruning the walk.
#[derive(Clone, Debug)]
struct Pattern {
    /// The leading components without any glob syntax.
    prefix: Vec<OsString>,
    /// The components after the prefix; `None` when they cannot be split safely (character
    /// classes, escapes, too many alternatives), which means "anything beneath the prefix".
    rest: Option<Vec<Part>>,
}

/// One component of a glob after its literal prefix.
#[derive(Clone, Debug)]
enum Part {
    /// `**`: any number of components.
    AnyDepth,
    /// A single component.
    Name(GlobMatcher),
}

impl Pattern {
    /// True when a file beneath `dir` (components relative to the root) could match.
    fn could_match_beneath(&self, dir: &[&OsStr]) -> bool {
        let p = self.prefix.len();
        if dir.len() < p {
            return self.prefix[..dir.len()]
                .iter()
                .zip(dir)
                .all(|(a, b)| a.as_os_str() == *b);
        }
        if !self
            .prefix
            .iter()
            .zip(dir)
            .all(|(a, b)| a.as_os_str() == *b)
        {
            return false;
        }
        let Some(rest) = &self.rest else {
            return true;
        };
        let below = &dir[p..];
        for (i, name) in below.iter().enumerate() {
            match rest.get(i) {
                None => return false,
                Some(Part::AnyDepth) => return true,
                Some(Part::Name(m)) => {
                    if !m.is_match(name) {
                        return false;
                    }
                }
            }
        }
        rest.len() > below.len()
    }
}

/// Splits a (valid, normalised) glob into patterns for pruning.
fn analyse(glob: &str) -> Vec<Pattern> {
    if !glob.contains(['[', '\\']) {
        if let Some(alternatives) = expand_braces(glob) {
            return alternatives.iter().map(|a| split_pattern(a)).collect();
        }
    }
    vec![Pattern {
        prefix: literal_prefix(glob),
        rest: None,
    }]
}

/// The non-empty components of a glob, without `.` ones.
fn components(glob: &str) -> impl Iterator<Item = &str> {
    glob.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// True when a component has no glob syntax.
fn is_literal(component: &str) -> bool {
    !component.contains(['*', '?', '[', '{', '\\'])
}

/// The leading components of `glob` without glob syntax.
fn literal_prefix(glob: &str) -> Vec<OsString> {
    components(glob)
        .take_while(|c| is_literal(c))
        .map(OsString::from)
        .collect()
}

/// Splits a glob without braces, classes or escapes into its prefix and parts.
fn split_pattern(glob: &str) -> Pattern {
    let prefix = literal_prefix(glob);
    let mut rest = Vec::new();
    for c in components(glob).skip(prefix.len()) {
        if c == "**" {
            rest.push(Part::AnyDepth);
        } else if let Ok(g) = build_glob(c) {
            rest.push(Part::Name(g.compile_matcher()));
        } else {
            return Pattern { prefix, rest: None };
        }
    }
    Pattern {
        prefix,
        rest: Some(rest),
    }
}

/// Every alternative of a glob's `{a,b}` groups (globset does not nest them); `None` past
/// [`MAX_ALTERNATIVES`].
fn expand_braces(glob: &str) -> Option<Vec<String>> {
    let Some(open) = glob.find('{') else {
        return Some(vec![glob.to_string()]);
    };
    let close = open + glob[open..].find('}')?;
    let head = &glob[..open];
    let tails = expand_braces(&glob[close + 1..])?;
    let mut out = Vec::new();
    for alternative in glob[open + 1..close].split(',') {
        for tail in &tails {
            out.push(format!("{head}{alternative}{tail}"));
            if out.len() > MAX_ALTERNATIVES {
                return None;
            }
        }
    }
    Some(out)
}

/// The host paths that make a step's inputs visible, from [`visible_inputs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VisibleInputs {
    /// Absolute host paths to bind read-only at the same path: files, and directories
    /// whose every entry is visible. Sorted; none is inside another.
    pub paths: Vec<PathBuf>,
    /// Symbolic links that were not made visible, sorted: links matching a glob whose
    /// target is outside the root, inside an excluded path, a directory or missing, and
    /// links to directories the walk would have entered. The caller should warn about
    /// them: the step will not see them.
    pub skipped_symlinks: Vec<PathBuf>,
}

/// The absolute host paths to bind read-only into a step's sandbox so that exactly the
/// files of `root` matching one of the `inputs` globs (see [`InputGlobs`]) are visible.
///
/// - Only the literal prefix of each glob is walked: `src/*.c` reads `src/` (and learns
///   whether its subdirectories are empty), `**/*.rs` walks the whole root.
/// - Symbolic links to directories are never followed.
/// - `exclude` paths (absolute, or relative to the root) are skipped entirely, whether
///   they exist or not, and no returned directory contains one: pass the state directory
///   and every declared output of the plan, so outputs never leak in as inputs.
/// - Directories are coalesced: when every entry beneath a directory is a matching file
///   (empty subdirectories do not count), none is a symbolic link, and no excluded path is
///   beneath it, the directory itself is returned instead of its files. The bind shows
///   files added to it later too.
/// - A symbolic link that matches is returned (its own path: the bind resolves it) only
///   when its canonical target is a file inside the root and outside every excluded
///   path; otherwise it is reported in [`VisibleInputs::skipped_symlinks`].
/// - Globs that match nothing are fine.
pub fn visible_inputs(
    root: &Path,
    inputs: &[String],
    exclude: &[PathBuf],
) -> Result<VisibleInputs, InputsError> {
    visible_inputs_excluding(root, inputs, &[&Exclusions::new(root, exclude)])
}

/// [`visible_inputs`] with exclusions built beforehand: a run builds the plan-wide ones
/// (every step's outputs, the state directory) once, not once per attempt.
pub fn visible_inputs_excluding(
    root: &Path,
    inputs: &[String],
    exclusions: &[&Exclusions],
) -> Result<VisibleInputs, InputsError> {
    let globs = InputGlobs::new(inputs)?;
    let mut walker = Walker::new(root, &globs, exclusions)?;
    walker.run()?;
    Ok(walker.finish())
}

/// Paths never visible as inputs, relative to a root, with their ancestors (a directory
/// with an excluded path beneath is never bound whole).
#[derive(Clone, Debug, Default)]
pub struct Exclusions {
    excluded: HashSet<PathBuf>,
    ancestors: HashSet<PathBuf>,
}

impl Exclusions {
    /// The exclusions of `paths` (absolute, or relative to `root`); paths outside the root
    /// are ignored. A root that cannot be resolved is taken as written.
    pub fn new(root: &Path, paths: &[PathBuf]) -> Exclusions {
        let root = normalize(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()));
        let canonical_root = fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
        let mut x = Exclusions::default();
        for e in paths {
            let e = normalize(&root.join(e));
            let Some(rel) = e
                .strip_prefix(&root)
                .or_else(|_| e.strip_prefix(&canonical_root))
                .ok()
            else {
                continue;
            };
            for a in rel.ancestors().skip(1) {
                x.ancestors.insert(a.to_path_buf());
            }
            x.excluded.insert(rel.to_path_buf());
        }
        x
    }
}

/// The state of a walk over the root for [`visible_inputs`].
#[derive(Debug)]
struct Walker<'a> {
    /// The root, absolute.
    root: PathBuf,
    /// The root, canonical.
    canonical_root: PathBuf,
    /// What to match.
    globs: &'a InputGlobs,
    /// Excluded paths, relative to the root, with their ancestors.
    exclusions: &'a [&'a Exclusions],
    /// Paths found so far.
    paths: Vec<PathBuf>,
    /// Symbolic links skipped so far.
    skipped: Vec<PathBuf>,
    /// Directories listed, for tests of how far the walk goes.
    #[cfg(test)]
    dirs_read: Vec<PathBuf>,
}

/// What a walk found beneath one directory.
#[derive(Clone, Copy, Debug)]
struct DirState {
    /// Every entry beneath is a matching file (or an empty directory) and nothing
    /// excluded is beneath.
    complete: bool,
    /// At least one matching file is beneath.
    matched: bool,
}

impl<'a> Walker<'a> {
    /// A walk of `root` for `globs`, skipping `exclusions`.
    fn new(
        root: &Path,
        globs: &'a InputGlobs,
        exclusions: &'a [&'a Exclusions],
    ) -> Result<Self, InputsError> {
        let read_error = |source| InputsError::Read {
            path: root.to_path_buf(),
            source,
        };
        let root = normalize(&std::path::absolute(root).map_err(read_error)?);
        let canonical_root = fs::canonicalize(&root).map_err(read_error)?;
        Ok(Self {
            root,
            canonical_root,
            globs,
            exclusions,
            paths: Vec::new(),
            skipped: Vec::new(),
            #[cfg(test)]
            dirs_read: Vec::new(),
        })
    }

    /// Whether `rel` itself is excluded.
    fn excluded(&self, rel: &Path) -> bool {
        self.exclusions.iter().any(|x| x.excluded.contains(rel))
    }

    /// Whether an excluded path lies beneath `rel`.
    fn excludes_beneath(&self, rel: &Path) -> bool {
        self.exclusions.iter().any(|x| x.ancestors.contains(rel))
    }

    /// The host path of `rel`.
    fn host(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Wraps an error reading `rel`.
    fn read_error(&self, rel: &Path) -> impl FnOnce(io::Error) -> InputsError + use<> {
        let path = self.host(rel);
        move |source| InputsError::Read { path, source }
    }

    /// Walks from every literal prefix.
    fn run(&mut self) -> Result<(), InputsError> {
        if self.excluded(Path::new("")) {
            return Ok(());
        }
        for start in self.globs.walk_starts() {
            self.walk_from(&start)?;
        }
        Ok(())
    }

    /// The result, sorted.
    fn finish(mut self) -> VisibleInputs {
        self.paths.sort();
        self.paths.dedup();
        self.skipped.sort();
        self.skipped.dedup();
        VisibleInputs {
            paths: self.paths,
            skipped_symlinks: self.skipped,
        }
    }

    /// Follows a literal prefix down from the root without following links, then walks
    /// the directory it names.
    fn walk_from(&mut self, prefix: &[OsString]) -> Result<(), InputsError> {
        let mut rel = PathBuf::new();
        for (i, c) in prefix.iter().enumerate() {
            rel.push(c);
            if self.excluded(&rel) {
                return Ok(());
            }
            let meta = match fs::symlink_metadata(self.host(&rel)) {
                Ok(m) => m,
                Err(e) if is_missing(&e) => return Ok(()),
                Err(e) => return Err(self.read_error(&rel)(e)),
            };
            if meta.file_type().is_symlink() {
                self.symlink(&rel);
                return Ok(());
            }
            if !meta.is_dir() {
                if i + 1 == prefix.len() && self.globs.is_match(&rel) {
                    self.paths.push(self.host(&rel));
                }
                return Ok(());
            }
        }
        if !self.globs.could_match_beneath(&rel) {
            return Ok(());
        }
        let state = self.walk_dir(&rel)?;
        if state.complete && state.matched {
            self.paths.push(self.host(&rel));
        }
        Ok(())
    }

    /// Walks the real directory `rel`, pushing what is visible beneath it unless the whole
    /// directory is (then the caller decides whether to push it or its parent).
    fn walk_dir(&mut self, rel: &Path) -> Result<DirState, InputsError> {
        let start = self.paths.len();
        let mut complete = !self.excludes_beneath(rel);
        let mut matched = false;
        let mut opaque = Vec::new();
        #[cfg(test)]
        self.dirs_read.push(rel.to_path_buf());
        let entries = match fs::read_dir(self.host(rel)) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => {
                return Ok(DirState {
                    complete: false,
                    matched: false,
                });
            }
            Err(e) => return Err(self.read_error(rel)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(self.read_error(rel))?;
            let rel_e = rel.join(entry.file_name());
            if self.excluded(&rel_e) {
                complete = false;
                continue;
            }
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) if is_missing(&e) => {
                    complete = false;
                    continue;
                }
                Err(e) => return Err(self.read_error(&rel_e)(e)),
            };
            if file_type.is_dir() {
                if self.globs.could_match_beneath(&rel_e) {
                    let state = self.walk_dir(&rel_e)?;
                    if !state.complete {
                        complete = false;
                    } else if state.matched {
                        self.paths.push(self.host(&rel_e));
                        matched = true;
                    }
                } else {
                    opaque.push(rel_e);
                }
            } else if file_type.is_symlink() {
                complete = false;
                self.symlink(&rel_e);
            } else if file_type.is_socket() || file_type.is_fifo() {
                // A socket or FIFO in the workspace (a daemon's, a docker.sock) is a door
                // out of the sandbox, not an input: never visible, and its directory is
                // never bound whole.
                complete = false;
            } else if self.globs.is_match(&rel_e) {
                self.paths.push(self.host(&rel_e));
                matched = true;
            } else {
                complete = false;
            }
        }
        if complete {
            complete = opaque.iter().all(|o| self.is_empty_dir(o));
        }
        if complete {
            self.paths.truncate(start);
        }
        Ok(DirState { complete, matched })
    }

    /// True when the directory `rel` has no entries (an unreadable one counts as full).
    fn is_empty_dir(&mut self, rel: &Path) -> bool {
        #[cfg(test)]
        self.dirs_read.push(rel.to_path_buf());
        fs::read_dir(self.host(rel)).is_ok_and(|mut entries| entries.next().is_none())
    }

    /// Handles the symbolic link `rel`: visible when it matches and resolves to a file of
    /// the root outside every excluded path, reported when it matches otherwise or leads to
    /// a directory the walk would have entered.
    fn symlink(&mut self, rel: &Path) {
        let host = self.host(rel);
        if self.globs.is_match(rel) {
            if self.link_target_is_visible(&host) {
                self.paths.push(host);
            } else {
                self.skipped.push(host);
            }
        } else if self.globs.could_match_beneath(rel)
            && fs::metadata(&host).is_ok_and(|m| m.is_dir())
        {
            self.skipped.push(host);
        }
    }

    /// True when the link at `host` resolves to a non-directory inside the root and
    /// outside every excluded path.
    fn link_target_is_visible(&self, host: &Path) -> bool {
        let Ok(target) = fs::canonicalize(host) else {
            return false;
        };
        let Ok(rel) = target.strip_prefix(&self.canonical_root) else {
            return false;
        };
        if rel.ancestors().any(|a| self.excluded(a)) {
            return false;
        }
        fs::metadata(&target).is_ok_and(|m| !m.is_dir())
    }
}

/// True for errors meaning the path (no longer) exists.
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// `path` with `.` components dropped and `..` applied lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------

/// Why the outputs of an attempt could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// An output is empty, absolute or climbs out of the root.
    #[error("output `{output}` is not a path inside the plan root")]
    InvalidOutput {
        /// The output as declared.
        output: String,
    },
    /// A directory on the way to an output is a symbolic link.
    #[error("{} is a symbolic link; outputs must be under real directories of the plan root", path.display())]
    SymlinkInPath {
        /// The link.
        path: PathBuf,
    },
    /// A path on the way to an output is not a directory.
    #[error("{} is not a directory, so no output can be placed under it", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A path could not be inspected.
    #[error("could not inspect {}", path.display())]
    Inspect {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A stale output or staging directory could not be removed.
    #[error("could not remove {}", path.display())]
    Remove {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A directory, mount point or placeholder could not be created.
    #[error("could not create {}", path.display())]
    Create {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Why the outputs of a successful attempt could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A declared output does not exist in the staging directory.
    #[error("declared output {output} was not produced")]
    NotProduced {
        /// The output as declared.
        output: String,
    },
    /// A file output was produced as a directory.
    #[error(
        "declared output {output} is a directory; declare directory outputs with a trailing `/`"
    )]
    NotAFile {
        /// The output as declared.
        output: String,
    },
    /// A directory output is no longer a directory.
    #[error("declared output {output} is not a directory")]
    NotADirectory {
        /// The output as declared.
        output: String,
    },
    /// A symbolic link in an output is absolute or resolves outside the output.
    #[error("output {path} is a symbolic link to {}, outside the output", target.display())]
    EscapingSymlink {
        /// The link, relative to the root.
        path: String,
        /// Its target, as written in the link.
        target: PathBuf,
    },
    /// A symbolic link in an output resolves through too many links.
    #[error("output {path} is a symbolic link that does not resolve (too many levels of links)")]
    SymlinkLoop {
        /// The link, relative to the root.
        path: String,
    },
    /// A directory on the way to an output is a symbolic link.
    #[error("{} is a symbolic link; outputs must be under real directories of the plan root", path.display())]
    SymlinkInPath {
        /// The link.
        path: PathBuf,
    },
    /// A path on the way to an output is not a directory.
    #[error("{} is not a directory, so no output can be placed under it", path.display())]
    NotADirectoryInPath {
        /// The path.
        path: PathBuf,
    },
    /// A staged path could not be inspected or its permissions fixed.
    #[error("could not inspect {}", path.display())]
    Inspect {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A directory on the way to an output could not be created.
    #[error("could not create {}", path.display())]
    Create {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// What was at an output's place in the root could not be removed.
    #[error("could not remove {}", path.display())]
    Remove {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An output could not be renamed into place.
    #[error("could not move {} to {}", from.display(), to.display())]
    Move {
        /// The staged output.
        from: PathBuf,
        /// Its place in the root.
        to: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An output on another file system could not be copied into place.
    #[error("could not copy {} to {}", from.display(), to.display())]
    Copy {
        /// The staged path.
        from: PathBuf,
        /// Where it was being copied.
        to: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// One declared output.
#[derive(Clone, Debug)]
struct Output {
    /// Relative to the root, normalised.
    rel: PathBuf,
    /// Declared with a trailing `/`.
    dir: bool,
    /// As declared, for messages.
    declared: String,
}

impl Output {
    /// Parses a declared output; `None` if it is empty, absolute or climbs out.
    fn parse(declared: &str) -> Option<Self> {
        let mut rel = PathBuf::new();
        for c in Path::new(declared).components() {
            match c {
                Component::Normal(s) => rel.push(s),
                Component::CurDir => {}
                _ => return None,
            }
        }
        (!rel.as_os_str().is_empty()).then(|| Self {
            rel,
            dir: declared.ends_with('/'),
            declared: declared.to_string(),
        })
    }

    /// The parent directory, relative; `None` for an output directly in the root.
    fn parent(&self) -> Option<&Path> {
        self.rel.parent().filter(|p| !p.as_os_str().is_empty())
    }
}

/// The outputs of one attempt, staged in a private directory.
///
/// [`Staging::prepare`] empties the outputs in the root and creates the staging directory
/// and the mount points; the sandbox binds each pair of [`Staging::binds`] writable; after a
/// successful attempt, [`Staging::collect`] moves each declared output into the root. Output
/// locations are mapped like this:
///
/// - a directory output `o/` is staged in `STAGING/o`, bound at `ROOT/o`;
/// - a file output `d/f` is staged in `STAGING/d/f`, and `STAGING/d` is bound at `ROOT/d`
///   (once per distinct parent): the step sees only its own outputs there, and may create,
///   rename and delete files freely; what else it writes there is discarded. Read-only
///   paths under `ROOT/d` (inputs, needs' outputs) need mount points in `STAGING/d`, made
///   by [`Staging::make_mount_points`], and must be bound after it;
/// - a file output `f` directly in the root is an empty file `STAGING/f` bound at `ROOT/f`
///   (binding a directory at the root would hide the whole root): the step can write it in
///   place, but not delete it or rename another file over it (`EBUSY`), which tools that
///   write a temporary file and rename it do. Declare outputs in a directory for those.
///
/// A pair whose target is inside another pair's target is dropped: the staging directory
/// mirrors the root, so the outer bind shows it already.
#[derive(Debug)]
pub struct Staging {
    /// The root, absolute.
    root: PathBuf,
    /// The staging directory, absolute.
    staging_dir: PathBuf,
    /// The declared outputs.
    outputs: Vec<Output>,
    /// Source in the staging directory, target under the root.
    binds: Vec<(PathBuf, PathBuf)>,
}

impl Staging {
    /// Stages `outputs` (relative to `root`, a trailing `/` for directories) in
    /// `staging_dir`, which is removed first if it exists.
    ///
    /// In the root, every output is emptied now ("empty at start"): a directory output is
    /// replaced by an empty directory, a file output is removed (in the root itself, replaced
    /// by an empty file, its mount point), and the parents of file outputs are created.
    /// Files next to a file output are left alone. Every directory on the way to an output
    /// must be a real directory, not a symbolic link.
    pub fn prepare(
        root: &Path,
        staging_dir: &Path,
        outputs: &[String],
    ) -> Result<Self, StagingError> {
        let root = absolute(root).map_err(|source| StagingError::Inspect {
            path: root.to_path_buf(),
            source,
        })?;
        let staging_dir = absolute(staging_dir).map_err(|source| StagingError::Inspect {
            path: staging_dir.to_path_buf(),
            source,
        })?;
        let outputs = outputs
            .iter()
            .map(|o| {
                Output::parse(o).ok_or_else(|| StagingError::InvalidOutput { output: o.clone() })
            })
            .collect::<Result<Vec<_>, _>>()?;

        remove_any(&staging_dir).map_err(|(path, source)| StagingError::Remove { path, source })?;
        // Nothing to stage, nothing to create.
        if !outputs.is_empty() {
            create_dir_all(&staging_dir)?;
        }

        let mut binds = Vec::new();
        for o in &outputs {
            let host = root.join(&o.rel);
            let staged = staging_dir.join(&o.rel);
            if let Some(parent) = o.parent() {
                real_dirs(&root, parent)?;
            }
            remove_any(&host).map_err(|(path, source)| StagingError::Remove { path, source })?;
            if o.dir {
                create_dir_all(&host)?;
                create_dir_all(&staged)?;
                binds.push((staged, host));
            } else if let Some(parent) = o.parent() {
                let staged_parent = staging_dir.join(parent);
                create_dir_all(&staged_parent)?;
                binds.push((staged_parent, root.join(parent)));
            } else {
                create_file(&host)?;
                create_file(&staged)?;
                binds.push((staged, host));
            }
        }
        binds.sort_by(|a, b| a.1.cmp(&b.1));
        binds.dedup_by(|a, b| a.1 == b.1);
        let mut kept: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(binds.len());
        for pair in binds {
            if !kept.iter().any(|k| pair.1.starts_with(&k.1)) {
                kept.push(pair);
            }
        }
        Ok(Self {
            root,
            staging_dir,
            outputs,
            binds: kept,
        })
    }

    /// The writable binds: (host source in the staging directory, path inside the sandbox,
    /// which is the output's place under the root). Sorted by target; none inside another.
    pub fn binds(&self) -> &[(PathBuf, PathBuf)] {
        &self.binds
    }

    /// The staging directory.
    pub fn staging_dir(&self) -> &Path {
        &self.staging_dir
    }

    /// Creates, inside the staged directories, mount points for those of `read_only`
    /// (absolute host paths to be bound read-only, e.g. from [`visible_inputs`]) that a
    /// staged directory bind would hide: an empty directory for a directory, an empty file
    /// otherwise. The sandbox must then bind the staged directories before the read-only
    /// paths beneath them (parents before children). Returns the paths concerned.
    pub fn make_mount_points(&self, read_only: &[PathBuf]) -> Result<Vec<PathBuf>, StagingError> {
        let mut shadowed = Vec::new();
        for path in read_only {
            let Some((source, rel)) = self.binds.iter().find_map(|(source, target)| {
                path.strip_prefix(target)
                    .ok()
                    .filter(|r| !r.as_os_str().is_empty())
                    .map(|r| (source, r))
            }) else {
                continue;
            };
            let point = source.join(rel);
            if let Some(parent) = point.parent() {
                create_dir_all(parent)?;
            }
            if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
                create_dir_all(&point)?;
            } else {
                match fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&point)
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(source) => {
                        return Err(StagingError::Create {
                            path: point,
                            source,
                        });
                    }
                }
            }
            shadowed.push(path.clone());
        }
        Ok(shadowed)
    }

    /// Moves every declared output from the staging directory into the root, replacing
    /// what is there, and returns their paths in the root (in declaration order).
    ///
    /// Every output is checked before any is moved: a missing one is an error, and so is a
    /// symbolic link (at any depth) that is absolute or resolves, through the output's own
    /// links, outside the output's tree; a file output may not be a link at all. Links are
    /// never followed: relative links that stay inside are moved as links. Set-user-ID and
    /// set-group-ID bits are cleared from regular files, so a step cannot leave a set-ID
    /// program of the runner's user in the root.
    ///
    /// Outputs are renamed into place, or copied when the staging directory is on another
    /// file system. Renaming hard-linked files is fine: inside the sandbox a hard link
    /// cannot cross from another mount into a staged directory (`link` fails with `EXDEV`
    /// across mounts), so every other name of a staged file is staged too, or in the step's
    /// private `/tmp`, which is discarded.
    pub fn collect(&self) -> Result<Vec<PathBuf>, CollectError> {
        for o in &self.outputs {
            self.inspect(o)?;
        }
        let mut collected = Vec::with_capacity(self.outputs.len());
        for o in &self.outputs {
            if let Some(parent) = o.parent() {
                real_dirs(&self.root, parent)?;
            }
            let dest = self.root.join(&o.rel);
            move_into_place(&self.staging_dir.join(&o.rel), &dest)?;
            collected.push(dest);
        }
        Ok(collected)
    }

    /// Checks one staged output and clears set-ID bits in it.
    fn inspect(&self, o: &Output) -> Result<(), CollectError> {
        let staged = self.staging_dir.join(&o.rel);
        let meta = match fs::symlink_metadata(&staged) {
            Ok(m) => m,
            Err(e) if is_missing(&e) => {
                return Err(CollectError::NotProduced {
                    output: o.declared.clone(),
                });
            }
            Err(source) => {
                return Err(CollectError::Inspect {
                    path: staged,
                    source,
                });
            }
        };
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            return Err(CollectError::EscapingSymlink {
                path: display_rel(&o.rel),
                target: read_link(&staged)?,
            });
        }
        if o.dir {
            if !file_type.is_dir() {
                return Err(CollectError::NotADirectory {
                    output: o.declared.clone(),
                });
            }
            check_tree(&staged, &mut Vec::new(), &o.rel)
        } else if file_type.is_dir() {
            Err(CollectError::NotAFile {
                output: o.declared.clone(),
            })
        } else {
            clear_setid(&staged, &meta)
        }
    }
}

/// `path`, absolute.
fn absolute(path: &Path) -> io::Result<PathBuf> {
    std::path::absolute(path).map(|p| normalize(&p))
}

/// A relative path for messages, with `/` separators.
fn display_rel(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// Removes whatever is at `path` without following a link there; fine if nothing is.
fn remove_any(path: &Path) -> Result<(), (PathBuf, io::Error)> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err((path.to_path_buf(), e)),
        _ => Ok(()),
    }
}

/// [`fs::create_dir_all`], with the path in the error.
fn create_dir_all(path: &Path) -> Result<(), StagingError> {
    fs::create_dir_all(path).map_err(|source| StagingError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates an empty file (truncating one that exists), with the path in the error.
fn create_file(path: &Path) -> Result<(), StagingError> {
    fs::File::create(path)
        .map(drop)
        .map_err(|source| StagingError::Create {
            path: path.to_path_buf(),
            source,
        })
}

/// Why the directories on the way to an output are not usable.
#[derive(Debug)]
enum PathFault {
    Symlink(PathBuf),
    NotADirectory(PathBuf),
    Inspect(PathBuf, io::Error),
    Create(PathBuf, io::Error),
}

impl From<PathFault> for StagingError {
    fn from(f: PathFault) -> Self {
        match f {
            PathFault::Symlink(path) => Self::SymlinkInPath { path },
            PathFault::NotADirectory(path) => Self::NotADirectory { path },
            PathFault::Inspect(path, source) => Self::Inspect { path, source },
            PathFault::Create(path, source) => Self::Create { path, source },
        }
    }
}

impl From<PathFault> for CollectError {
    fn from(f: PathFault) -> Self {
        match f {
            PathFault::Symlink(path) => Self::SymlinkInPath { path },
            PathFault::NotADirectory(path) => Self::NotADirectoryInPath { path },
            PathFault::Inspect(path, source) => Self::Inspect { path, source },
            PathFault::Create(path, source) => Self::Create { path, source },
        }
    }
}

/// Makes sure every component of `rel` under `root` is a real directory (not a symbolic
/// link), creating the missing ones, so nothing is created through a link to elsewhere.
fn real_dirs(root: &Path, rel: &Path) -> Result<(), PathFault> {
    let mut path = root.to_path_buf();
    for c in rel.components() {
        path.push(c);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&path) {
                Ok(()) => continue,
                // Created concurrently (another step's output in the same directory).
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    fs::symlink_metadata(&path).map_err(|e| PathFault::Inspect(path.clone(), e))?
                }
                Err(e) => return Err(PathFault::Create(path, e)),
            },
            Err(e) => return Err(PathFault::Inspect(path, e)),
        };
        if meta.file_type().is_symlink() {
            return Err(PathFault::Symlink(path));
        }
        if !meta.is_dir() {
            return Err(PathFault::NotADirectory(path));
        }
    }
    Ok(())
}

/// [`fs::read_link`], with the path in the error.
fn read_link(path: &Path) -> Result<PathBuf, CollectError> {
    fs::read_link(path).map_err(|source| CollectError::Inspect {
        path: path.to_path_buf(),
        source,
    })
}

/// Clears set-user-ID and set-group-ID bits of a regular file.
fn clear_setid(path: &Path, meta: &fs::Metadata) -> Result<(), CollectError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mode = meta.permissions().mode();
    if meta.is_file() && mode & SETID_BITS != 0 {
        let err = |source| CollectError::Inspect {
            path: path.to_path_buf(),
            source,
        };
        // Through a descriptor opened without following a link: a path swapped for a
        // symbolic link in between must not change the link's target.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(err)?;
        if !file.metadata().map_err(err)?.is_file() {
            return Err(err(std::io::Error::from(std::io::ErrorKind::InvalidInput)));
        }
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777 & !SETID_BITS))
            .map_err(err)?;
    }
    Ok(())
}

/// Checks the directory `tree/at` of the output `output` (relative to the root): every
/// link beneath must resolve inside `tree`; clears set-ID bits of files.
fn check_tree(tree: &Path, at: &mut Vec<OsString>, output: &Path) -> Result<(), CollectError> {
    let dir: PathBuf = std::iter::once(tree.as_os_str())
        .chain(at.iter().map(OsString::as_os_str))
        .collect();
    let inspect = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CollectError::Inspect { path, source }
    };
    for entry in fs::read_dir(&dir).map_err(inspect(&dir))? {
        let entry = entry.map_err(inspect(&dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(inspect(&path))?;
        let name = entry.file_name();
        if meta.file_type().is_symlink() {
            let target = read_link(&path)?;
            let mut stack = at.clone();
            let mut hops = MAX_LINK_HOPS;
            let shown = || {
                let mut p = output.to_path_buf();
                p.extend(at.iter());
                p.push(&name);
                display_rel(&p)
            };
            match resolve_in_tree(tree, &mut stack, &target, &mut hops) {
                Ok(()) => {}
                Err(Escape::Outside) => {
                    return Err(CollectError::EscapingSymlink {
                        path: shown(),
                        target,
                    });
                }
                Err(Escape::Loop) => return Err(CollectError::SymlinkLoop { path: shown() }),
            }
        } else if meta.is_dir() {
            at.push(name);
            check_tree(tree, at, output)?;
            at.pop();
        } else {
            clear_setid(&path, &meta)?;
        }
    }
    Ok(())
}

/// How a link fails to stay inside its output.
#[derive(Debug, PartialEq, Eq)]
enum Escape {
    /// It is absolute or climbs above the output's top directory.
    Outside,
    /// It goes through more than [`MAX_LINK_HOPS`] links.
    Loop,
}

/// Resolves `target` from the directory `stack` (components relative to `tree`) the way the
/// kernel would, following links met on the way that lie inside `tree`, and fails when the
/// path leaves `tree`. Components that do not exist are taken lexically.
fn resolve_in_tree(
    tree: &Path,
    stack: &mut Vec<OsString>,
    target: &Path,
    hops: &mut u32,
) -> Result<(), Escape> {
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Err(Escape::Outside),
            Component::CurDir => {}
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return Err(Escape::Outside);
                }
            }
            Component::Normal(name) => {
                stack.push(name.to_owned());
                let here: PathBuf = std::iter::once(tree.as_os_str())
                    .chain(stack.iter().map(OsString::as_os_str))
                    .collect();
                let is_link = fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink());
                if is_link {
                    if *hops == 0 {
                        return Err(Escape::Loop);
                    }
                    *hops -= 1;
                    let next = fs::read_link(&here).map_err(|_| Escape::Outside)?;
                    stack.pop();
                    resolve_in_tree(tree, stack, &next, hops)?;
                }
            }
        }
    }
    Ok(())
}

/// Renames `from` to `to`, replacing what is there; copies across file systems.
fn move_into_place(from: &Path, to: &Path) -> Result<(), CollectError> {
    if fs::symlink_metadata(to).is_ok_and(|m| m.is_dir()) {
        remove_any(to).map_err(|(path, source)| CollectError::Remove { path, source })?;
    }
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => copy_into_place(from, to),
        Err(source) => Err(CollectError::Move {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        }),
    }
}

/// Copies `from` next to `to`, renames the copy over `to`, then removes `from`.
fn copy_into_place(from: &Path, to: &Path) -> Result<(), CollectError> {
    let mut name = OsString::from(".");
    name.push(to.file_name().unwrap_or_default());
    name.push(".ci-intel-partial");
    let partial = to.with_file_name(name);
    remove_any(&partial).map_err(|(path, source)| CollectError::Remove { path, source })?;
    copy_tree(from, &partial)?;
    if fs::symlink_metadata(to).is_ok_and(|m| m.is_dir()) {
        remove_any(to).map_err(|(path, source)| CollectError::Remove { path, source })?;
    }
    fs::rename(&partial, to).map_err(|source| CollectError::Move {
        from: partial.clone(),
        to: to.to_path_buf(),
        source,
    })?;
    remove_any(from).map_err(|(path, source)| CollectError::Remove { path, source })
}

/// Copies a tree without following links: links are recreated, directories and files keep
/// their permission bits, FIFOs are recreated; sockets and devices are errors.
fn copy_tree(from: &Path, to: &Path) -> Result<(), CollectError> {
    let fail = |source| CollectError::Copy {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(from).map_err(fail)?;
    let file_type = meta.file_type();
    let mode = meta.permissions().mode() & 0o7777;
    if file_type.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from).map_err(fail)?, to).map_err(fail)
    } else if file_type.is_dir() {
        fs::create_dir(to).map_err(fail)?;
        for entry in fs::read_dir(from).map_err(fail)? {
            let entry = entry.map_err(fail)?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(fail)
    } else if file_type.is_file() {
        fs::copy(from, to).map(drop).map_err(fail)
    } else if file_type.is_fifo() {
        nix::unistd::mkfifo(to, nix::sys::stat::Mode::from_bits_truncate(mode))
            .map_err(|e| fail(io::Error::from(e)))?;
        fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(fail)
    } else {
        Err(fail(io::Error::new(
            io::ErrorKind::Unsupported,
            "only files, directories, symbolic links and fifos can be copied",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::symlink;

    use proptest::prelude::*;
    use tempfile::TempDir;

    /// Creates the files (paths ending in `/` are empty directories) under `root`.
    fn tree(root: &Path, paths: &[&str]) {
        for p in paths {
            let path = root.join(p);
            if p.ends_with('/') {
                fs::create_dir_all(&path).unwrap();
            } else {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, p).unwrap();
            }
        }
    }

    fn strings(globs: &[&str]) -> Vec<String> {
        globs.iter().map(|g| (*g).to_string()).collect()
    }

    /// A temporary root, canonical (tempdirs may be under a link such as /tmp).
    fn temp_root() -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        (dir, root)
    }

    fn visible(root: &Path, globs: &[&str], exclude: &[&str]) -> VisibleInputs {
        let exclude: Vec<PathBuf> = exclude.iter().map(|e| root.join(e)).collect();
        visible_inputs(root, &strings(globs), &exclude).unwrap()
    }

    fn rel(root: &Path, paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| {
                let r = p.strip_prefix(root).unwrap();
                if r.as_os_str().is_empty() {
                    ".".to_string()
                } else {
                    display_rel(r)
                }
            })
            .collect()
    }

    // ---- inputs -------------------------------------------------------------------

    #[test]
    fn a_directory_whose_files_all_match_is_returned_whole() {
        let (_d, root) = temp_root();
        tree(&root, &["src/a.c", "src/b.c", "src/empty/", "README"]);
        let v = visible(&root, &["src/*.c"], &[]);
        assert_eq!(rel(&root, &v.paths), ["src"]);
        assert!(v.skipped_symlinks.is_empty());
    }

    #[test]
    fn one_file_that_does_not_match_keeps_the_files_separate() {
        let (_d, root) = temp_root();
        tree(&root, &["src/a.c", "src/b.c", "src/README"]);
        let v = visible(&root, &["src/*.c"], &[]);
        assert_eq!(rel(&root, &v.paths), ["src/a.c", "src/b.c"]);
    }

    #[test]
    fn a_star_stays_within_one_component() {
        let (_d, root) = temp_root();
        tree(&root, &["src/a.c", "src/sub/x.c"]);
        let v = visible(&root, &["src/*.c"], &[]);
        assert_eq!(rel(&root, &v.paths), ["src/a.c"]);
        let v = visible(&root, &["src/**/*.c"], &[]);
        assert_eq!(rel(&root, &v.paths), ["src"]);
    }

    #[test]
    fn subdirectories_are_coalesced_on_their_own() {
        let (_d, root) = temp_root();
        tree(
            &root,
            &[
                "tests/unit/a",
                "tests/unit/b/c",
                "tests/data/x",
                "tests/data/y",
            ],
        );
        assert_eq!(
            rel(&root, &visible(&root, &["tests/**"], &[]).paths),
            ["tests"]
        );
        let v = visible(&root, &["tests/**"], &["tests/data/y"]);
        assert_eq!(rel(&root, &v.paths), ["tests/data/x", "tests/unit"]);
    }

    #[test]
    fn the_whole_root_when_everything_matches() {
        let (_d, root) = temp_root();
        tree(&root, &["a.rs", "src/b.rs"]);
        assert_eq!(rel(&root, &visible(&root, &["**/*.rs"], &[]).paths), ["."]);
    }

    #[test]
    fn outputs_and_the_state_directory_are_excluded() {
        let (_d, root) = temp_root();
        tree(
            &root,
            &[
                ".ci-intel/runs/1/log",
                "build/x.o",
                "build/y.o",
                "src/a.c",
                "gen/a.h",
            ],
        );
        let v = visible(&root, &["**"], &[".ci-intel", "build/x.o", "gen/b.h"]);
        // `gen/b.h` does not exist yet, but another step may write it while this one runs.
        assert_eq!(rel(&root, &v.paths), ["build/y.o", "gen/a.h", "src"]);
        let v = visible(&root, &["build/*"], &["build/"]);
        assert!(v.paths.is_empty(), "{:?}", v.paths);
    }

    #[test]
    fn excluded_paths_may_be_given_relative_or_unnormalised() {
        let (_d, root) = temp_root();
        tree(&root, &["out/a", "src/a"]);
        let exclude = [PathBuf::from("out"), root.join("src/../src/./a")];
        let v = visible_inputs(&root, &strings(&["**"]), &exclude).unwrap();
        assert!(v.paths.is_empty(), "{:?}", v.paths);
    }

    #[test]
    fn a_narrow_glob_reads_only_its_own_directory() {
        let (_d, root) = temp_root();
        tree(
            &root,
            &[
                "src/a.c",
                "src/sub/deep/x",
                "target/debug/deep/y",
                "Cargo.toml",
                ".ci-intel/",
            ],
        );
        let globs = InputGlobs::new(&strings(&["src/*.c"])).unwrap();
        let mut w = Walker::new(&root, &globs, &[]).unwrap();
        w.run().unwrap();
        // `src/sub` is listed once to learn that it is not empty, and never entered.
        assert_eq!(
            w.dirs_read,
            [PathBuf::from("src"), PathBuf::from("src/sub")]
        );
        assert_eq!(rel(&root, &w.finish().paths), ["src/a.c"]);

        let globs = InputGlobs::new(&strings(&["*.toml", "src/{x,y}/*.c"])).unwrap();
        let exclude = Exclusions::new(&root, &[root.join(".ci-intel")]);
        let exclusions = [&exclude];
        let mut w = Walker::new(&root, &globs, &exclusions).unwrap();
        w.run().unwrap();
        // The root cannot be coalesced (the state directory is in it), so no subdirectory
        // is even listed; `src` is listed for `src/{x,y}`, but not `src/sub`.
        assert_eq!(w.dirs_read, [PathBuf::new(), PathBuf::from("src")]);
        assert_eq!(rel(&root, &w.finish().paths), ["Cargo.toml"]);
    }

    #[test]
    fn literal_globs_name_files_not_directories() {
        let (_d, root) = temp_root();
        tree(&root, &["Cargo.toml", "src/a.c"]);
        assert_eq!(
            rel(&root, &visible(&root, &["Cargo.toml"], &[]).paths),
            ["Cargo.toml"]
        );
        assert_eq!(
            rel(&root, &visible(&root, &["./Cargo.toml"], &[]).paths),
            ["Cargo.toml"]
        );
        assert!(visible(&root, &["src"], &[]).paths.is_empty());
        assert!(
            visible(&root, &["missing/*.c", "nope"], &[])
                .paths
                .is_empty()
        );
    }

    #[test]
    fn brace_alternatives_are_walked_separately() {
        let (_d, root) = temp_root();
        tree(&root, &["src/a.c", "include/a.h", "docs/x.c", "big/tree/z"]);
        let globs = InputGlobs::new(&strings(&["{src,include}/*.{c,h}"])).unwrap();
        let mut w = Walker::new(&root, &globs, &[]).unwrap();
        w.run().unwrap();
        assert!(
            !w.dirs_read.iter().any(|d| d.starts_with("big")),
            "{:?}",
            w.dirs_read
        );
        assert_eq!(rel(&root, &w.finish().paths), ["include", "src"]);
    }

    #[test]
    fn symbolic_links_out_of_the_root_are_skipped_and_reported() {
        let (_d, root) = temp_root();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        tree(&root, &["src/a.c", "lib/b.c", "build/out.c"]);
        symlink(outside.path().join("secret"), root.join("src/evil.c")).unwrap();
        symlink("a.c", root.join("src/good.c")).unwrap();
        symlink("../build/out.c", root.join("src/gen.c")).unwrap();
        symlink("missing.c", root.join("src/dangling.c")).unwrap();
        symlink("../lib", root.join("src/lib")).unwrap();
        let v = visible(&root, &["src/**"], &["build"]);
        // Links are never inside a returned directory, so `src` is not coalesced.
        assert_eq!(rel(&root, &v.paths), ["src/a.c", "src/good.c"]);
        assert_eq!(
            rel(&root, &v.skipped_symlinks),
            ["src/dangling.c", "src/evil.c", "src/gen.c", "src/lib"]
        );
    }

    #[test]
    fn a_symbolic_link_on_the_literal_prefix_is_not_followed() {
        let (_d, root) = temp_root();
        tree(&root, &["real/a.c"]);
        symlink("real", root.join("src")).unwrap();
        let v = visible(&root, &["src/*.c"], &[]);
        assert!(v.paths.is_empty());
        assert_eq!(rel(&root, &v.skipped_symlinks), ["src"]);
    }

    #[test]
    fn invalid_and_escaping_globs_are_errors() {
        let (_d, root) = temp_root();
        let err = visible_inputs(&root, &strings(&["src/[a"]), &[]).unwrap_err();
        assert!(matches!(err, InputsError::Glob { .. }), "{err:?}");
        assert_eq!(err.to_string(), "invalid input glob `src/[a`");
        for g in ["../x/*", "/etc/*", "{a,../b}/*", "a/{/etc,b}"] {
            let err = visible_inputs(&root, &strings(&[g]), &[]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("input `{g}` is outside the plan root")
            );
        }
    }

    #[test]
    fn globs_with_classes_still_match_exactly() {
        let (_d, root) = temp_root();
        tree(&root, &["src/a1.c", "src/b2.c", "src/sub/a3.c"]);
        let v = visible(&root, &["src/[a]*.c", "src/**/[!b]3.c"], &[]);
        assert_eq!(rel(&root, &v.paths), ["src/a1.c", "src/sub"]);
    }

    /// Every non-directory beneath `dir`, without following links.
    fn files_beneath(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                files_beneath(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }

    const UNIVERSE: &[&str] = &[
        "a.c",
        "b.h",
        "c.txt",
        "src/a.c",
        "src/b.h",
        "src/c.txt",
        "src/sub/a.c",
        "src/sub/b.h",
        "src/sub/deep/c.txt",
        "inc/a.h",
        "inc/b.h",
        "t/x/a.c",
        "t/x/b.c",
        "t/y/",
        "t/z/c.txt",
        "empty/",
    ];

    const GLOBS: &[&str] = &[
        "src/*.c",
        "**/*.h",
        "src/**",
        "*.txt",
        "inc/*",
        "{src,inc}/*.c",
        "t/**/*.c",
        "**",
        "src/sub/*",
        "?.c",
        "t/*/[ab].c",
        "src/**/deep/*",
        "nothing/*",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Exactly the matching files that are not excluded are covered, by sorted,
        /// disjoint paths.
        #[test]
        fn exactly_the_matching_files_are_visible(
            present in proptest::sample::subsequence(UNIVERSE.to_vec(), 0..=UNIVERSE.len()),
            globs in proptest::sample::subsequence(GLOBS.to_vec(), 1..=3),
            exclude in proptest::sample::subsequence(
                vec!["src/b.h", "src/sub/", "t/x/a.c", "inc/", "gen/out.h", "c.txt"], 0..=2),
        ) {
            let (_d, root) = temp_root();
            tree(&root, &present);
            let v = visible(&root, &globs, &exclude);
            let matcher = InputGlobs::new(&strings(&globs)).unwrap();
            let excluded = |r: &Path| exclude.iter().any(|e| r.starts_with(e));

            for w in v.paths.windows(2) {
                prop_assert!(w[0] < w[1]);
                prop_assert!(!w[1].starts_with(&w[0]), "{:?} inside {:?}", w[1], w[0]);
            }
            for p in &v.paths {
                let r = p.strip_prefix(&root).unwrap();
                if p.is_dir() {
                    prop_assert!(!exclude.iter().any(|e| Path::new(e).starts_with(r)),
                        "{r:?} contains an excluded path");
                    let mut files = Vec::new();
                    files_beneath(p, &mut files);
                    prop_assert!(!files.is_empty());
                    for f in files {
                        let fr = f.strip_prefix(&root).unwrap();
                        prop_assert!(matcher.is_match(fr), "{fr:?} visible but not matching");
                    }
                } else {
                    prop_assert!(matcher.is_match(r) && !excluded(r), "{r:?}");
                }
            }
            let mut all = Vec::new();
            files_beneath(&root, &mut all);
            for f in all {
                let r = f.strip_prefix(&root).unwrap();
                let expected = matcher.is_match(r) && !excluded(r);
                let covered = v.paths.iter().any(|p| f.starts_with(p));
                prop_assert_eq!(expected, covered, "{:?}", r);
            }
        }
    }

    // ---- outputs ------------------------------------------------------------------

    fn binds_rel(root: &Path, staging: &Path, s: &Staging) -> Vec<(String, String)> {
        s.binds()
            .iter()
            .map(|(src, dst)| {
                (
                    display_rel(src.strip_prefix(staging).unwrap()),
                    display_rel(dst.strip_prefix(root).unwrap()),
                )
            })
            .collect()
    }

    fn is_empty_dir(p: &Path) -> bool {
        fs::read_dir(p).unwrap().next().is_none()
    }

    #[test]
    fn prepare_pairs_outputs_and_empties_stale_ones() {
        let (_d, root) = temp_root();
        let staging = root.join(".ci-intel/staging/build-1");
        tree(
            &root,
            &[
                "build/bin/old",
                "build/obj/wc.o",
                "build/obj/keep.txt",
                "out.txt",
            ],
        );
        tree(&staging, &["junk/x"]);
        let s = Staging::prepare(
            &root,
            &staging,
            &strings(&[
                "build/bin/",
                "build/obj/wc.o",
                "build/obj/main.o",
                "out.txt",
            ]),
        )
        .unwrap();
        assert_eq!(
            binds_rel(&root, &staging, &s),
            [
                ("build/bin".into(), "build/bin".into()),
                ("build/obj".into(), "build/obj".into()),
                ("out.txt".into(), "out.txt".into()),
            ]
        );
        assert!(is_empty_dir(&root.join("build/bin")));
        assert!(!root.join("build/obj/wc.o").exists());
        assert!(root.join("build/obj/keep.txt").exists());
        assert_eq!(fs::read(root.join("out.txt")).unwrap(), b"");
        assert!(!staging.join("junk").exists());
        assert!(is_empty_dir(&staging.join("build/bin")));
        assert!(is_empty_dir(&staging.join("build/obj")));
        assert_eq!(fs::read(staging.join("out.txt")).unwrap(), b"");
    }

    #[test]
    fn prepare_creates_mount_points_and_drops_nested_pairs() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["a/x", "a/b/c/", "d/e/"])).unwrap();
        assert_eq!(
            binds_rel(&root, &staging, &s),
            [("a".into(), "a".into()), ("d/e".into(), "d/e".into())]
        );
        assert!(root.join("a/b/c").is_dir());
        assert!(root.join("d/e").is_dir());
        assert!(staging.join("a/b/c").is_dir());
    }

    #[test]
    fn prepare_rejects_paths_outside_the_root() {
        let (_d, root) = temp_root();
        for o in ["../x", "/etc/x", "", "a/../../x"] {
            let err = Staging::prepare(&root, &root.join("st"), &strings(&[o])).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("output `{o}` is not a path inside the plan root")
            );
        }
    }

    #[test]
    fn prepare_refuses_a_symlinked_parent() {
        let (_d, root) = temp_root();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), root.join("build")).unwrap();
        let err =
            Staging::prepare(&root, &root.join("st"), &strings(&["build/obj/x.o"])).unwrap_err();
        assert!(
            matches!(err, StagingError::SymlinkInPath { ref path } if *path == root.join("build"))
        );
        assert!(is_empty_dir(outside.path()));
    }

    #[test]
    fn make_mount_points_covers_read_only_paths_under_staged_directories() {
        let (_d, root) = temp_root();
        tree(&root, &["src/a.c", "src/inc/x.h", "lib/b.c"]);
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["src/version.h", "out/"])).unwrap();
        let ro = [
            root.join("src/a.c"),
            root.join("src/inc"),
            root.join("lib/b.c"),
        ];
        let shadowed = s.make_mount_points(&ro).unwrap();
        assert_eq!(shadowed, [root.join("src/a.c"), root.join("src/inc")]);
        assert!(staging.join("src/a.c").is_file());
        assert!(staging.join("src/inc").is_dir());
        assert!(!staging.join("lib").exists());
    }

    #[test]
    fn collect_moves_files_and_directories_into_the_root() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        tree(&root, &["build/obj/keep.txt"]);
        let s = Staging::prepare(
            &root,
            &staging,
            &strings(&["build/bin/", "build/obj/wc.o", "out.txt"]),
        )
        .unwrap();
        tree(
            &staging,
            &[
                "build/bin/wc",
                "build/bin/share/doc/README",
                "build/obj/wc.o",
                "build/obj/tmp.o",
            ],
        );
        fs::write(staging.join("out.txt"), "report").unwrap();
        symlink("../wc", staging.join("build/bin/share/wc")).unwrap();
        let collected = s.collect().unwrap();
        assert_eq!(
            collected,
            [
                root.join("build/bin"),
                root.join("build/obj/wc.o"),
                root.join("out.txt")
            ]
        );
        assert_eq!(
            fs::read_to_string(root.join("build/bin/wc")).unwrap(),
            "build/bin/wc"
        );
        assert!(root.join("build/bin/share/doc/README").is_file());
        assert_eq!(
            fs::read_link(root.join("build/bin/share/wc")).unwrap(),
            Path::new("../wc")
        );
        assert_eq!(
            fs::read_to_string(root.join("build/obj/wc.o")).unwrap(),
            "build/obj/wc.o"
        );
        assert!(
            root.join("build/obj/keep.txt").exists(),
            "neighbours are kept"
        );
        assert!(
            !root.join("build/obj/tmp.o").exists(),
            "undeclared files are not collected"
        );
        assert_eq!(fs::read_to_string(root.join("out.txt")).unwrap(), "report");
        assert!(!staging.join("build/bin").exists());
    }

    #[test]
    fn collect_replaces_what_is_in_the_root() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["d/", "f/x"])).unwrap();
        tree(&staging, &["d/new", "f/x"]);
        // Written in the root behind the sandbox's back while the step ran.
        tree(&root, &["d/stale/y", "f/x/z"]);
        s.collect().unwrap();
        assert!(root.join("d/new").is_file());
        assert!(!root.join("d/stale").exists());
        assert!(root.join("f/x").is_file());
    }

    #[test]
    fn collect_reports_a_missing_output() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["build/bin/", "build/x.o"])).unwrap();
        tree(&staging, &["build/bin/tool"]);
        let err = s.collect().unwrap_err();
        assert_eq!(
            err.to_string(),
            "declared output build/x.o was not produced"
        );
        assert!(
            !root.join("build/bin/tool").exists(),
            "nothing is moved on error"
        );
    }

    #[test]
    fn collect_rejects_an_absolute_symlink() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["build/bin/"])).unwrap();
        symlink("/etc/passwd", staging.join("build/bin/evil")).unwrap();
        let err = s.collect().unwrap_err();
        assert_eq!(
            err.to_string(),
            "output build/bin/evil is a symbolic link to /etc/passwd, outside the output"
        );
        assert!(is_empty_dir(&root.join("build/bin")));
    }

    #[test]
    fn collect_rejects_a_symlink_climbing_out_at_depth() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["build/bin/"])).unwrap();
        tree(&staging, &["build/bin/a/b/"]);
        symlink("../../../../etc", staging.join("build/bin/a/b/evil")).unwrap();
        let err = s.collect().unwrap_err();
        assert_eq!(
            err.to_string(),
            "output build/bin/a/b/evil is a symbolic link to ../../../../etc, outside the output"
        );
    }

    #[test]
    fn collect_rejects_a_symlink_escaping_through_another_link() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["out/"])).unwrap();
        // Lexically `here/..` is the output itself, but `here` is the output, so `..` is
        // its parent.
        symlink(".", staging.join("out/here")).unwrap();
        symlink("here/..", staging.join("out/up")).unwrap();
        let err = s.collect().unwrap_err();
        assert!(
            matches!(err, CollectError::EscapingSymlink { ref path, .. } if path == "out/up"),
            "{err}"
        );
    }

    #[test]
    fn collect_rejects_a_symlink_loop() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["out/"])).unwrap();
        symlink("b", staging.join("out/a")).unwrap();
        symlink("a", staging.join("out/b")).unwrap();
        let err = s.collect().unwrap_err();
        assert!(matches!(err, CollectError::SymlinkLoop { .. }), "{err}");
    }

    #[test]
    fn collect_accepts_relative_symlinks_inside_and_dangling_ones() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["out/"])).unwrap();
        tree(&staging, &["out/lib/libx.so.1", "out/bin/"]);
        symlink("libx.so.1", staging.join("out/lib/libx.so")).unwrap();
        symlink("../lib/./libx.so", staging.join("out/bin/via-link")).unwrap();
        symlink("not-yet", staging.join("out/bin/dangling")).unwrap();
        s.collect().unwrap();
        assert_eq!(
            fs::read_link(root.join("out/bin/via-link")).unwrap(),
            Path::new("../lib/./libx.so")
        );
        assert_eq!(
            fs::read_to_string(root.join("out/bin/via-link")).unwrap(),
            "out/lib/libx.so.1"
        );
    }

    #[test]
    fn a_file_output_may_not_be_a_symlink_or_a_directory() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["lib/libx.so"])).unwrap();
        tree(&staging, &["lib/libx.so.1"]);
        symlink("libx.so.1", staging.join("lib/libx.so")).unwrap();
        let err = s.collect().unwrap_err();
        assert_eq!(
            err.to_string(),
            "output lib/libx.so is a symbolic link to libx.so.1, outside the output"
        );
        fs::remove_file(staging.join("lib/libx.so")).unwrap();
        fs::create_dir(staging.join("lib/libx.so")).unwrap();
        let err = s.collect().unwrap_err();
        assert!(matches!(err, CollectError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn collect_clears_set_id_bits() {
        let (_d, root) = temp_root();
        let staging = root.join("st");
        let s = Staging::prepare(&root, &staging, &strings(&["bin/", "tool"])).unwrap();
        tree(&staging, &["bin/suid"]);
        fs::write(staging.join("tool"), "t").unwrap();
        for p in ["bin/suid", "tool"] {
            fs::set_permissions(staging.join(p), fs::Permissions::from_mode(0o6755)).unwrap();
        }
        s.collect().unwrap();
        for p in ["bin/suid", "tool"] {
            let mode = fs::metadata(root.join(p)).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o755, "{p}");
        }
    }

    #[test]
    fn a_copy_across_file_systems_keeps_links_modes_and_fifos() {
        let (_d, root) = temp_root();
        tree(&root, &["from/sub/file", "to/stale"]);
        fs::set_permissions(
            root.join("from/sub/file"),
            fs::Permissions::from_mode(0o751),
        )
        .unwrap();
        fs::set_permissions(root.join("from/sub"), fs::Permissions::from_mode(0o700)).unwrap();
        symlink("sub/file", root.join("from/link")).unwrap();
        nix::unistd::mkfifo(
            &root.join("from/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        copy_into_place(&root.join("from"), &root.join("to")).unwrap();
        assert!(!root.join("from").exists());
        assert!(!root.join("to/stale").exists());
        assert!(!root.join(".to.ci-intel-partial").exists());
        let mode = |p: &str| {
            fs::symlink_metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("to/sub/file"), 0o751);
        assert_eq!(mode("to/sub"), 0o700);
        assert_eq!(
            fs::read_link(root.join("to/link")).unwrap(),
            Path::new("sub/file")
        );
        assert!(
            fs::symlink_metadata(root.join("to/fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }

    #[test]
    fn resolution_follows_links_inside_the_tree() {
        let (_d, root) = temp_root();
        tree(&root, &["a/b/c"]);
        symlink("a/b", root.join("ab")).unwrap();
        let resolve = |from: &[&str], target: &str| {
            let mut stack: Vec<OsString> = from.iter().map(OsString::from).collect();
            let mut hops = MAX_LINK_HOPS;
            resolve_in_tree(&root, &mut stack, Path::new(target), &mut hops).map(|()| stack)
        };
        assert_eq!(
            resolve(&[], "ab/c"),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(resolve(&[], "ab/../.."), Ok(vec![]));
        assert_eq!(resolve(&["a"], "../ab/../../x"), Ok(vec!["x".into()]));
        assert_eq!(resolve(&["a"], "../ab/../../../x"), Err(Escape::Outside));
        assert_eq!(resolve(&["a", "b"], "/a"), Err(Escape::Outside));
    }

    #[test]
    fn sockets_and_fifos_are_never_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("run")).unwrap();
        fs::write(root.join("run/a.txt"), "a").unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(root.join("run/docker.sock")).unwrap();
        nix::unistd::mkfifo(
            &root.join("run/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let v = visible_inputs(root, &["run/**".to_string()], &[]).unwrap();
        assert_eq!(
            v.paths,
            vec![root.join("run/a.txt")],
            "only the regular file, not the directory"
        );
    }

    #[test]
    fn a_glob_index_counts_each_steps_matching_paths_once() {
        let steps: Vec<Vec<String>> = vec![
            vec!["src/*.c".into(), "src/**".into()],
            vec!["./include/*.h".into()],
            vec![],
            vec!["../escape/**".into(), "docs/{a,b}.md".into()],
        ];
        let index = InputGlobIndex::new(steps.iter().map(Vec::as_slice));
        let paths = [
            "src/main.c",
            "src/sub/x.c",
            "include/wc.h",
            "include/sub/no.h",
            "docs/a.md",
            "README.md",
        ];
        // src/main.c matches both of step 0's globs and counts once.
        assert_eq!(
            index.counts(paths.iter().map(Path::new)),
            [2, 1, 0, 1],
            "as InputGlobs matches: `*` stays in one directory, `./` is ignored"
        );
        for (i, globs) in steps.iter().enumerate().take(2) {
            let one = InputGlobs::new(globs).unwrap();
            let n = paths.iter().filter(|p| one.is_match(Path::new(p))).count();
            assert_eq!(index.counts(paths.iter().map(Path::new))[i], n as u64);
        }
    }
}
