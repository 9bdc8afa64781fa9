//! A real case: part of the zstd C library (the sources the `zstd-sys` crate bundles),
//! built into `libzstd.a` and packed with its headers as `dist/dist.tar.gz` by
//! tests/fixtures/real_build/Makefile.
//!
//! - Built by hand (`make`, outside any sandbox) in two directories at two times, the two
//!   tarballs differ: the tar member times, the `ar` member times (`ar rcU`) and the build
//!   directory in the debug info.
//! - Built by ci-intel with the usual fixes (`-ffile-prefix-map`, `ar D`, the plan's
//!   `source_date_epoch`, `normalize`), `deterministic = true` passes, and runs from two
//!   directories give the same bytes.
//! - Without the fixes the determinism check fails the step, and its drift report names the
//!   build path.
//! - `normalize = ["ar"]` does not reach the library inside the tarball (archives inside
//!   archives are not normalised): `ar rcU` still drifts.
//!
//! `-- --nocapture` prints the drift reports.
#[path = "support/records.rs"]
mod records;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ci_intel_repro::drift::{self, CompareOptions, DriftKind, Field, Format, Variation};

/// When the sources were checked out: every source file's mtime, in both builds. The
/// plans' `source_date_epoch` (1714554000) is the same time.
const CHECKOUT: &str = "2024-05-01 09:00:00 UTC";
/// When the first build by hand ran (its objects' and library's mtimes).
const BUILT_A: (&str, i64) = ("2024-05-02 10:00:00 UTC", 1_714_644_000);
/// When the second one ran, a day and an hour and a half later.
const BUILT_B: (&str, i64) = ("2024-05-03 11:30:00 UTC", 1_714_735_800);

/// What `tar tvf --utc` shows for each time.
const LISTED_CHECKOUT: &str = "2024-05-01 09:00";
const LISTED_A: &str = "2024-05-02 10:00";
const LISTED_B: &str = "2024-05-03 11:30";

/// The public headers shipped beside the library.
const HEADERS: [&str; 3] = ["zstd.h", "zstd_errors.h", "zdict.h"];

/// The fixed plan: prefix maps for the debug info, a deterministic `ar`, the checkout time
/// as `SOURCE_DATE_EPOCH`, and the tarball normalised. Objects go to the sandbox's `/tmp`:
/// only the declared outputs are writable.
const FIXED_PLAN: &str = r#"version = 1
name = "zstd"
source_date_epoch = 1714554000

[steps.dist]
run = 'make BUILD=/tmp/build ARFLAGS=rcD CFLAGS="-g -O1 -ffile-prefix-map=$PWD=."'
inputs = ["Makefile", "lib/**"]
outputs = ["dist/"]
deterministic = true
normalize = ["tar", "gzip"]
"#;

/// The developer's build as it is: `-g` with no prefix map, `ar rcU`, no normaliser.
const UNFIXED_PLAN: &str = r#"version = 1
name = "zstd"
source_date_epoch = 1714554000

[steps.dist]
run = "make BUILD=/tmp/build"
inputs = ["Makefile", "lib/**"]
outputs = ["dist/"]
deterministic = true
"#;

/// Fails with what to install unless every tool the builds use runs.
fn require_tools() {
    for (tool, package) in [
        ("cc", "gcc"),
        ("make", "make"),
        ("ar", "binutils"),
        ("tar", "tar"),
        ("gzip", "gzip"),
        ("touch", "coreutils"),
        ("find", "findutils"),
    ] {
        assert!(
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "this test needs `{tool}` (apt-get install {package})"
        );
    }
}

/// zstd's `lib/` directory as the `zstd-sys` crate this workspace locks ships it.
fn zstd_sources() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == r#"name = "zstd-sys""#))
        .and_then(|p| {
            p.lines()
                .find_map(|l| l.trim().strip_prefix("version = "))
                .map(|v| v.trim_matches('"').to_string())
        })
        .expect("Cargo.lock locks zstd-sys (a dependency of the cache crate)");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let registry = cargo_home.join("registry/src");
    let mut indexes: Vec<PathBuf> = std::fs::read_dir(&registry)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    indexes.sort();
    indexes
        .into_iter()
        .map(|index| index.join(format!("zstd-sys-{version}/zstd/lib")))
        .find(|lib| lib.join("zstd.h").is_file() && lib.join("compress").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "zstd-sys {version}'s bundled C sources are not under {}/*/zstd-sys-{version}/zstd/lib \
                 (run `cargo fetch`)",
                registry.display()
            )
        })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A checkout of the project at `at`: the Makefile, zstd's `common/` and `compress/`
/// sources and its public headers, under `lib/`. Returns `at`, canonical.
fn checkout(at: &Path) -> PathBuf {
    let zstd = zstd_sources();
    std::fs::create_dir_all(at.join("lib")).unwrap();
    for dir in ["common", "compress"] {
        copy_dir(&zstd.join(dir), &at.join("lib").join(dir));
    }
    for header in HEADERS {
        std::fs::copy(zstd.join(header), at.join("lib").join(header)).unwrap();
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real_build/Makefile"),
        at.join("Makefile"),
    )
    .unwrap();
    at.canonicalize().unwrap()
}

/// `sh -c script` in `dir` with none of the caller's build settings, in the C locale and
/// UTC (`touch -d` reads its dates in both).
fn sh(dir: &Path, script: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]).current_dir(dir);
    for name in [
        "CFLAGS",
        "ARFLAGS",
        "BUILD",
        "CC",
        "AR",
        "MAKEFLAGS",
        "MFLAGS",
        "MAKELEVEL",
        "SOURCE_DATE_EPOCH",
        "TAR_OPTIONS",
        "GZIP",
    ] {
        cmd.env_remove(name);
    }
    cmd.env("LC_ALL", "C")
        .env("TZ", "UTC")
        .envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds the checkout at `dir` by hand, as though at `when`: the sources as checked out
/// at [`CHECKOUT`], `make objs`, the objects as compiled at `when`, `make lib` (`ar rcU`
/// writes those times), the library as archived at `when`, `make dist` (`tar czf`).
fn build_by_hand(dir: &Path, when: &str) -> Vec<u8> {
    let script = r#"set -e
find . -type f -exec touch -d "$CHECKOUT" {} +
make objs
find build -name '*.o' -exec touch -d "$WHEN" {} +
make lib
touch -d "$WHEN" build/stage/libzstd.a
make dist
"#;
    let out = sh(dir, script, &[("CHECKOUT", CHECKOUT), ("WHEN", when)]);
    assert!(
        out.status.success(),
        "make in {}: {}",
        dir.display(),
        text(&out)
    );
    std::fs::read(dir.join("dist/dist.tar.gz")).unwrap()
}

/// `tar tvf --utc` of `tarball`, one line per member.
fn listing(tarball: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("tvf")
        .arg(tarball)
        .arg("--utc")
        .env("LC_ALL", "C")
        .env_remove("TAR_OPTIONS")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar tvf: {}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The line of `listing` that lists `member`.
fn member_line<'a>(listing: &'a [String], member: &str) -> &'a str {
    listing
        .iter()
        .find(|l| l.ends_with(&format!(" {member}")))
        .unwrap_or_else(|| panic!("no {member} in {listing:#?}"))
}

/// The decompressed bytes of a gzip file.
fn gunzip(path: &Path) -> Vec<u8> {
    let out = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
    assert!(out.status.success(), "gzip -dc: {}", text(&out));
    out.stdout
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every entry of a report, nested ones (an archive member's content, an ELF section's)
/// included.
fn entries(report: &drift::DriftReport) -> Vec<&DriftKind> {
    fn walk<'a>(kind: &'a DriftKind, out: &mut Vec<&'a DriftKind>) {
        out.push(kind);
        match kind {
            DriftKind::Archive {
                detail: Some(d), ..
            } => walk(d, out),
            DriftKind::ElfSection { detail, .. } => walk(detail, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for file in &report.files {
        walk(&file.kind, &mut out);
    }
    out
}

/// Whether `report` says that `member` of a `format` archive has a time differing from `a`
/// to `b`.
fn mtime_drift(report: &drift::DriftReport, format: Format, member: &str, a: i64, b: i64) -> bool {
    entries(report).into_iter().any(|k| {
        matches!(k, DriftKind::Archive {
            format: f,
            member: m,
            field: Field::Mtime,
            a: Some(va),
            b: Some(vb),
            ..
        } if *f == format && m == member
            && va.starts_with(&a.to_string()) && vb.starts_with(&b.to_string()))
    })
}

struct Workspace {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Workspace {
    /// A checkout at `DIR/sub` with `plan` as its plan.toml.
    fn new(sub: &str, plan: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let root = checkout(&dir.path().join(sub));
        std::fs::write(root.join("plan.toml"), plan).unwrap();
        Workspace { dir, root }
    }

    fn run(&self) -> Output {
        support::ci_intel()
            .args(["run", "plan.toml", "-k", "--no-cache", "--cache-dir"])
            .arg(self.dir.path().join("cache"))
            .current_dir(&self.root)
            .output()
            .unwrap()
    }

    /// The determinism verdict of step `dist` in the last run record.
    fn verdict(&self) -> serde_json::Value {
        let record = records::read_valid(&self.root.join(".ci-intel/runs.ndjson"))
            .pop()
            .expect("a run record");
        record["determinism"]
            .as_array()
            .unwrap_or_else(|| panic!("no determinism section: {record}"))
            .iter()
            .find(|d| d["job"] == "dist")
            .unwrap_or_else(|| panic!("no verdict for dist: {record}"))
            .clone()
    }

    fn drift_report(&self) -> String {
        let v = self.verdict();
        let path = v["report_path"]
            .as_str()
            .unwrap_or_else(|| panic!("no drift report: {v}"));
        std::fs::read_to_string(path).unwrap()
    }
}

#[test]
fn by_hand_two_builds_of_the_same_sources_differ() {
    require_tools();
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    let a = checkout(&one.path().join("zstd"));
    let b = checkout(&two.path().join("src/zstd-1.5"));
    let tar_a = build_by_hand(&a, BUILT_A.0);
    let tar_b = build_by_hand(&b, BUILT_B.0);
    assert_ne!(tar_a, tar_b, "the two tarballs differ");

    // Not in the gzip header: tar pipes the archive into gzip, which then stores no time
    // (MTIME 0) and no name; the flags and OS byte are the same.
    assert_eq!(tar_a[..10], tar_b[..10], "the gzip headers are equal");
    assert_eq!(tar_a[4..8], [0, 0, 0, 0], "gzip stored no time");

    // In the tar: the library's time. The headers keep the checkout's time in both (cp -p).
    let (list_a, list_b) = (
        listing(&a.join("dist/dist.tar.gz")),
        listing(&b.join("dist/dist.tar.gz")),
    );
    println!("tar tvf, first build:\n{}", list_a.join("\n"));
    println!("tar tvf, second build:\n{}", list_b.join("\n"));
    assert!(member_line(&list_a, "libzstd.a").contains(LISTED_A));
    assert!(member_line(&list_b, "libzstd.a").contains(LISTED_B));
    for header in HEADERS {
        let member = format!("include/{header}");
        let line = member_line(&list_a, &member);
        assert!(line.contains(LISTED_CHECKOUT), "{line}");
        assert_eq!(line, member_line(&list_b, &member));
    }

    // And inside the library: each member's time (`ar rcU`), and the build directory in
    // each object's debug info.
    let (a_hint, b_hint) = (a.display().to_string(), b.display().to_string());
    let report = drift::compare(
        &a.join("dist"),
        &b.join("dist"),
        &["dist.tar.gz".to_string()],
        &CompareOptions {
            a_root_hint: &a_hint,
            b_root_hint: &b_hint,
            run_times: &[BUILT_A.1, BUILT_B.1],
            use_diffoscope: false,
            ..CompareOptions::default()
        },
    )
    .unwrap();
    println!("{}", report.render_text());
    assert!(!report.identical);
    assert!(
        mtime_drift(&report, Format::Tar, "libzstd.a", BUILT_A.1, BUILT_B.1),
        "the tar member's time: {report:#?}"
    );
    // (The symbol table has the time `ar` ran at; the report lists 50 differences per
    // archive, enough for all but the last member.)
    for object in ["debug.o", "xxhash.o", "fse_compress.o"] {
        assert!(
            mtime_drift(&report, Format::Ar, object, BUILT_A.1, BUILT_B.1),
            "the ar member {object}'s time: {report:#?}"
        );
    }
    assert!(
        entries(&report).iter().any(|k| matches!(k,
            DriftKind::ElfSection { name, .. } if name.starts_with(".debug_"))),
        "the objects' debug info names the directories: {report:#?}"
    );
    assert!(
        report
            .hints
            .iter()
            .any(|h| h.variation == Variation::BuildPath
                && h.message.contains(&a_hint)
                && h.message.contains(&b_hint)),
        "a build_path hint names both directories: {:#?}",
        report.hints
    );
    for cause in ["time", "build_path"] {
        assert!(report.causes().contains(&cause), "{:?}", report.causes());
    }
}

#[test]
fn fixed_build_is_reproducible_and_equal_from_two_directories() {
    require_tools();
    let a = Workspace::new("zstd", FIXED_PLAN);
    let b = Workspace::new("src/zstd-1.5", FIXED_PLAN);
    for w in [&a, &b] {
        let out = w.run();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("PASS dist"),
            "{}",
            text(&out)
        );
        let v = w.verdict();
        assert_eq!(v["verdict"], "reproducible", "{v}");
        let varied: Vec<&str> = v["variations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.as_str())
            .collect();
        assert!(
            varied.contains(&"build_path"),
            "the second run built elsewhere: {v}"
        );
    }

    let tar_a = std::fs::read(a.root.join("dist/dist.tar.gz")).unwrap();
    let tar_b = std::fs::read(b.root.join("dist/dist.tar.gz")).unwrap();
    assert!(
        tar_a == tar_b,
        "two runs from {} and {} give the same bytes ({} and {} bytes)",
        a.root.display(),
        b.root.display(),
        tar_a.len(),
        tar_b.len()
    );

    // Every member at the checkout time, owned by 0/0, in name order; no build directory
    // anywhere in the archive.
    let list = listing(&a.root.join("dist/dist.tar.gz"));
    println!("tar tvf, ci-intel's build:\n{}", list.join("\n"));
    let names: Vec<&str> = list.iter().map(|l| l.rsplit(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "include/zdict.h",
            "include/zstd.h",
            "include/zstd_errors.h",
            "libzstd.a"
        ]
    );
    for line in &list {
        assert!(line.contains(" 0/0 "), "{line}");
        assert!(line.contains(LISTED_CHECKOUT), "{line}");
    }
    assert_eq!(tar_a[4..8], [0, 0, 0, 0], "gzip stored no time");
    let tar = gunzip(&a.root.join("dist/dist.tar.gz"));
    for root in [&a.root, &b.root] {
        assert!(
            !contains(&tar, root.display().to_string().as_bytes()),
            "{} is not in the archive",
            root.display()
        );
    }
    assert!(
        !contains(&tar, b"/rebuilt/"),
        "nor the check's build directory"
    );
}

#[test]
fn unfixed_build_fails_the_check_and_the_report_names_the_build_path() {
    require_tools();
    let w = Workspace::new("zstd", UNFIXED_PLAN);
    let out = w.run();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL dist (not reproducible"),
        "{}",
        text(&out)
    );
    let v = w.verdict();
    assert_eq!(v["verdict"], "drift", "{v}");
    let report = w.drift_report();
    println!("{report}");
    let root = w.root.display().to_string();
    assert!(
        report.lines().any(|l| l.contains("[build_path]")
            && l.contains(&format!("`{root}` in a"))
            && l.contains("/rebuilt/elsewhere/")),
        "a build_path hint names both directories: {report}"
    );
    assert!(
        report.contains(&format!("-{root}\n")),
        "the debug info's diff shows the directory: {report}"
    );
    assert!(
        report.contains("ar member `debug.o`: mtime differs"),
        "{report}"
    );
    assert!(
        !w.root.join("dist/dist.tar.gz").exists(),
        "a drifting output is not collected"
    );
}
