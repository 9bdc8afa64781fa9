//! The drift report: how two runs of a step produced different outputs, told so that a
//! person can fix it — a small, bounded diffoscope.
//!
//! A step is run twice, the second time with variations that must not matter (another
//! time, build path, hostname, umask, locale, timezone, file order); when the output trees
//! differ, [`compare`] says how: which files differ or exist on one side only, mode and
//! symlink differences, a bounded unified diff of text, the first differing offset of
//! binary data, the member and field of archives (tar, gzip, zip, ar, nested up to three
//! levels), the sections of ELF files and their build-id. [`Hint`]s name the variation the
//! differing bytes most likely come from (an embedded date, the build path, a hostname…).
//!
//! Every part is bounded: the lines of diff per file and per report, the members and files
//! listed, the depth of nested archives, the bytes read into memory, and the time and
//! output of `diffoscope`, which is run in addition when it is installed.

mod archive;
mod content;
mod diffoscope;
mod elf;
mod gzip;
mod hints;
mod render;
mod util;
mod walk;
mod zip;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Nested archives are opened this many levels deep; deeper members compare as bytes.
pub const MAX_ARCHIVE_DEPTH: usize = 3;
/// A file (or an inflated member) larger than this is compared as bytes only, by streaming.
pub const MAX_ANALYSED_BYTES: u64 = 256 << 20;
/// Member differences listed per archive; the rest are counted.
pub const MAX_MEMBER_DRIFTS: usize = 50;
/// Entries of a report; the rest are counted.
pub const MAX_ENTRIES: usize = 2000;
/// Hints of a report.
pub const MAX_HINTS: usize = 200;
/// Files that `diffoscope` is run on per report.
pub const MAX_DIFFOSCOPE_FILES: usize = 8;
/// How long `diffoscope` may run on one file.
pub const DIFFOSCOPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// A Unix time within this many seconds of a run's time is taken for a timestamp.
pub const TIME_WINDOW_SECS: i64 = 2 * 86_400;

/// How to compare two output trees.
#[derive(Clone, Copy, Debug)]
pub struct CompareOptions<'a> {
    /// The absolute root the first run built in (a path embedded in its outputs).
    pub a_root_hint: &'a str,
    /// The absolute root the second run built in.
    pub b_root_hint: &'a str,
    /// Hostnames the runs ran under.
    pub hostnames: &'a [&'a str],
    /// Lines of unified diff shown per file.
    pub max_diff_lines: usize,
    /// Run `diffoscope` on differing files when it is installed.
    pub use_diffoscope: bool,
    /// Lines of unified diff shown in the whole report.
    pub max_report_lines: usize,
    /// The Unix times (seconds) at which the runs ran; empty: the time of the comparison.
    pub run_times: &'a [i64],
}

impl Default for CompareOptions<'_> {
    fn default() -> Self {
        Self {
            a_root_hint: "",
            b_root_hint: "",
            hostnames: &[],
            max_diff_lines: 200,
            use_diffoscope: true,
            max_report_lines: 1000,
            run_times: &[],
        }
    }
}

/// Why two trees could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// A file or directory could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A listed path is absolute or leaves the root.
    #[error("output path {path:?} is not a relative path below the roots")]
    BadPath { path: String },
}

/// One of the two runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    A,
    B,
}

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Other,
}

/// A format the report opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Tar,
    Gzip,
    Zip,
    Ar,
    Elf,
}

/// The field of an archive member (or of a gzip header) that differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Modification (or access, change) time.
    Mtime,
    /// The same members, in another order.
    Order,
    /// Permission bits.
    Mode,
    /// uid, gid, user or group name.
    Owner,
    /// The member's data: `detail` says how.
    Content,
    /// The file name a gzip header stores.
    Name,
    /// The operating system a gzip header names.
    Os,
    /// The same data, compressed differently (method, level or implementation).
    Compression,
    /// Another header field (flags, extra fields, comments, versions).
    Header,
    /// A link's target.
    Link,
    /// The member's type (file, directory, link…).
    Type,
    /// A member of the first run's archive only.
    OnlyInA,
    /// A member of the second run's archive only.
    OnlyInB,
}

/// A variation between the two runs that a difference likely comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variation {
    /// The clock: an embedded date, time or timestamp, a file's mtime.
    Time,
    /// The absolute directory the step ran in.
    BuildPath,
    /// The machine's name.
    Hostname,
    /// Randomness: seeds, temporary names, process ids, hashes of something that varies.
    Random,
    /// The order files are listed in (a directory's order, a hash map's).
    Order,
    /// The umask: permission bits.
    Umask,
    /// The locale: number formats, translated text, collation.
    Locale,
    /// The timezone: local times, zone names and offsets.
    Timezone,
    /// The user the step ran as: uid, gid, names.
    User,
}

impl Variation {
    /// The variation's name, as in the report's JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Time => "time",
            Self::BuildPath => "build_path",
            Self::Hostname => "hostname",
            Self::Random => "random",
            Self::Order => "order",
            Self::Umask => "umask",
            Self::Locale => "locale",
            Self::Timezone => "timezone",
            Self::User => "user",
        }
    }
}

/// How one path differs. A path may have several entries (its mode and its content).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DriftKind {
    /// The path exists on one side only.
    OnlyIn { side: Side, entry: EntryType },
    /// The path is of a different type on each side.
    Type { a: EntryType, b: EntryType },
    /// Permission bits (`mode & 0o7777`).
    Mode { a: u32, b: u32 },
    /// A symlink's target.
    Symlink { a: String, b: String },
    /// Text (UTF-8 without NUL): a unified diff with 3 lines of context. `lines` is the
    /// length of the whole diff; `truncated` says that `diff` holds only its start.
    Text {
        diff: String,
        truncated: bool,
        lines: usize,
    },
    /// Bytes: the first differing offset and a hex dump around it on each side.
    Binary {
        offset: u64,
        a_context: String,
        b_context: String,
        a_size: u64,
        b_size: u64,
    },
    /// An archive's member differs in `field`; `detail` says how its content differs.
    Archive {
        format: Format,
        member: String,
        field: Field,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        a: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        b: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<Box<DriftKind>>,
    },
    /// The GNU build-ids of two ELF files differ; `other_sections` differ besides.
    ElfBuildId {
        a: String,
        b: String,
        other_sections: Vec<String>,
    },
    /// ELF files with the same (or no) build-id whose sections differ.
    ElfSections { sections: Vec<String> },
    /// How one ELF section differs (offsets are within the section).
    ElfSection {
        name: String,
        detail: Box<DriftKind>,
    },
    /// The file looks like `format` but could not be read as such; the next entry
    /// compares it as bytes.
    Unreadable { format: Format, reason: String },
    /// More differences than the report lists.
    Omitted { count: usize, what: String },
}

impl DriftKind {
    /// Whether this entry is about the file's content (not its metadata).
    fn is_content(&self) -> bool {
        !matches!(
            self,
            Self::OnlyIn { .. }
                | Self::Type { .. }
                | Self::Mode { .. }
                | Self::Symlink { .. }
                | Self::Omitted { .. }
        )
    }
}

/// One difference of one path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileDrift {
    /// The path relative to the roots (`.` for a root itself).
    pub path: String,
    pub kind: DriftKind,
    /// `diffoscope`'s text for this file (on its first content entry), bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diffoscope: Option<String>,
}

/// A likely cause seen in the differing bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    /// Where: a path, `path!member` inside archives, `path[section]` inside ELF files.
    pub path: String,
    pub variation: Variation,
    pub message: String,
}

/// How two output trees differ.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    pub identical: bool,
    pub files: Vec<FileDrift>,
    pub hints: Vec<Hint>,
    /// `diffoscope`'s version when it was used, a note when it is not installed, `None`
    /// when it was not asked for.
    pub diffoscope: Option<String>,
}

impl DriftReport {
    /// The report for a person: the log and the terminal.
    #[must_use]
    pub fn render_text(&self) -> String {
        render::render(self)
    }

    /// BLAKE3 (hex) of the report's canonical JSON.
    #[must_use]
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&json).to_hex().to_string()
    }

    /// The distinct variations the hints point at, in the order first seen.
    #[must_use]
    pub fn causes(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for h in &self.hints {
            let name = h.variation.as_str();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

/// The note `DriftReport::diffoscope` holds when `diffoscope` is not installed.
pub const DIFFOSCOPE_NOT_INSTALLED: &str =
    "not installed (no `diffoscope` in PATH): only the report's own comparison was made";

/// Compares the files under `a` and `b` at the relative `paths` (a directory is walked,
/// sorted; no paths: the whole roots). A path missing on both sides is no drift.
pub fn compare(
    a: &Path,
    b: &Path,
    paths: &[String],
    opts: &CompareOptions<'_>,
) -> Result<DriftReport, DriftError> {
    let program = if opts.use_diffoscope {
        diffoscope::locate()
    } else {
        None
    };
    compare_with(a, b, paths, opts, program.as_deref())
}

/// [`compare`] with `diffoscope` at `program` (`None`: not installed).
fn compare_with(
    a: &Path,
    b: &Path,
    paths: &[String],
    opts: &CompareOptions<'_>,
    program: Option<&Path>,
) -> Result<DriftReport, DriftError> {
    let mut ctx = Ctx::new(opts);
    let walked = walk::walk(&mut ctx, a, b, paths)?;
    let mut files = walked.files;
    let note = if !opts.use_diffoscope {
        None
    } else if let Some(program) = program {
        let version = diffoscope::version(program);
        for (n, (shown, rel)) in walked.content_paths.iter().enumerate() {
            let Some(entry) = files
                .iter_mut()
                .find(|f| &f.path == shown && f.kind.is_content())
            else {
                continue;
            };
            entry.diffoscope = Some(if n < MAX_DIFFOSCOPE_FILES {
                diffoscope::run(
                    program,
                    &a.join(rel),
                    &b.join(rel),
                    DIFFOSCOPE_TIMEOUT,
                    opts.max_diff_lines,
                )
            } else {
                format!("not run: diffoscope runs on the first {MAX_DIFFOSCOPE_FILES} files only")
            });
        }
        Some(version)
    } else {
        Some(DIFFOSCOPE_NOT_INSTALLED.to_owned())
    };
    Ok(DriftReport {
        identical: files.is_empty(),
        files,
        hints: ctx.hints,
        diffoscope: note,
    })
}

/// What a comparison carries along: options, hints found, the diff lines left.
#[derive(Debug)]
struct Ctx<'o> {
    opts: &'o CompareOptions<'o>,
    hints: Vec<Hint>,
    lines_left: usize,
    /// Ranges of Unix times taken for "the time of a run".
    windows: Vec<(i64, i64)>,
}

impl<'o> Ctx<'o> {
    fn new(opts: &'o CompareOptions<'o>) -> Self {
        let times: Vec<i64> = if opts.run_times.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            vec![now]
        } else {
            opts.run_times.to_vec()
        };
        Self {
            opts,
            hints: Vec::new(),
            lines_left: opts.max_report_lines,
            windows: times
                .iter()
                .map(|t| {
                    (
                        t.saturating_sub(TIME_WINDOW_SECS),
                        t.saturating_add(TIME_WINDOW_SECS),
                    )
                })
                .collect(),
        }
    }

    fn near_run_time(&self, t: i64) -> bool {
        self.windows.iter().any(|&(lo, hi)| (lo..=hi).contains(&t))
    }

    fn hint(&mut self, path: &str, variation: Variation, message: String) {
        if self.hints.len() >= MAX_HINTS {
            return;
        }
        let h = Hint {
            path: path.to_owned(),
            variation,
            message,
        };
        if !self.hints.contains(&h) {
            self.hints.push(h);
        }
    }
}

#[cfg(test)]
mod tests;
