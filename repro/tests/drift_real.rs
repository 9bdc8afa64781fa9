//! The drift report on outputs of real tools: tar, gzip, Python's zipfile, ar, cc.
//! Each test makes the same output twice with one variation and checks that the report
//! names the member, the field or the section, and the variation.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ci_intel_repro::drift::{CompareOptions, DriftKind, DriftReport, Field, Format, compare};

/// Fails with a clear message when a tool the test needs is missing.
fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(
        found,
        "this test needs `{tool}` on PATH (Debian: apt-get install tar gzip binutils gcc python3)"
    );
}

fn run(dir: &Path, cmd: &str, args: &[&str], env: &[(&str, &str)]) {
    need(cmd);
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn touch(dir: &Path, when: &str, files: &[&str]) {
    let mut args = vec!["-d", when];
    args.extend_from_slice(files);
    run(dir, "touch", &args, &[]);
}

/// Two output roots `a` and `b` and a work directory, under one temporary directory.
struct Runs {
    _tmp: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    work: PathBuf,
}

fn runs() -> Runs {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, work) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("work"),
    );
    for d in [&a, &b, &work] {
        fs::create_dir_all(d).unwrap();
    }
    Runs {
        _tmp: tmp,
        a,
        b,
        work,
    }
}

fn opts() -> CompareOptions<'static> {
    CompareOptions {
        use_diffoscope: false,
        ..CompareOptions::default()
    }
}

fn report(r: &Runs, path: &str, o: &CompareOptions<'_>) -> DriftReport {
    let report = compare(&r.a, &r.b, &[path.to_owned()], o).unwrap();
    // The rendered report, for the test log (and the docs' examples).
    eprintln!("{}", report.render_text());
    assert!(!report.identical);
    report
}

/// Every (format, member, field) of archive entries, nested ones included.
fn archive_fields(report: &DriftReport) -> Vec<(Format, String, Field)> {
    fn walk(k: &DriftKind, out: &mut Vec<(Format, String, Field)>) {
        if let DriftKind::Archive {
            format,
            member,
            field,
            detail,
            ..
        } = k
        {
            out.push((*format, member.clone(), *field));
            if let Some(d) = detail {
                walk(d, out);
            }
        }
    }
    let mut out = Vec::new();
    for f in &report.files {
        walk(&f.kind, &mut out);
    }
    out
}

fn field(format: Format, member: &str, field: Field) -> (Format, String, Field) {
    (format, member.to_owned(), field)
}

#[test]
fn tar_made_at_two_times_differs_in_member_mtimes() {
    let r = runs();
    fs::write(r.work.join("one.txt"), "one\n").unwrap();
    fs::write(r.work.join("two.txt"), "two\n").unwrap();
    touch(&r.work, "2026-11-28 10:00:00 UTC", &["one.txt", "two.txt"]);
    let out_a = r.a.join("out.tar");
    run(
        &r.work,
        "tar",
        &["cf", out_a.to_str().unwrap(), "one.txt", "two.txt"],
        &[],
    );
    touch(&r.work, "2026-11-29 11:30:00 UTC", &["one.txt", "two.txt"]);
    let out_b = r.b.join("out.tar");
    run(
        &r.work,
        "tar",
        &["cf", out_b.to_str().unwrap(), "one.txt", "two.txt"],
        &[],
    );
    let rep = report(&r, "out.tar", &opts());
    assert_eq!(
        archive_fields(&rep),
        [
            field(Format::Tar, "one.txt", Field::Mtime),
            field(Format::Tar, "two.txt", Field::Mtime),
        ]
    );
    let DriftKind::Archive {
        a: Some(a),
        b: Some(b),
        ..
    } = &rep.files[0].kind
    else {
        panic!("{rep:?}");
    };
    assert_eq!(a, "1795860000 (2026-11-28 10:00:00 UTC)");
    assert_eq!(b, "1795951800 (2026-11-29 11:30:00 UTC)");
    assert_eq!(rep.causes(), ["time"]);
}

#[test]
fn tar_of_the_same_files_in_another_order() {
    let r = runs();
    fs::write(r.work.join("one.txt"), "one\n").unwrap();
    fs::write(r.work.join("two.txt"), "two\n").unwrap();
    touch(&r.work, "2026-11-28 10:00:00 UTC", &["one.txt", "two.txt"]);
    let (out_a, out_b) = (r.a.join("out.tar"), r.b.join("out.tar"));
    run(
        &r.work,
        "tar",
        &["cf", out_a.to_str().unwrap(), "one.txt", "two.txt"],
        &[],
    );
    run(
        &r.work,
        "tar",
        &["cf", out_b.to_str().unwrap(), "two.txt", "one.txt"],
        &[],
    );
    let rep = report(&r, "out.tar", &opts());
    assert_eq!(archive_fields(&rep), [field(Format::Tar, "", Field::Order)]);
    let DriftKind::Archive {
        a: Some(a),
        b: Some(b),
        ..
    } = &rep.files[0].kind
    else {
        panic!("{rep:?}");
    };
    assert_eq!(
        (a.as_str(), b.as_str()),
        ("one.txt, two.txt", "two.txt, one.txt")
    );
    assert_eq!(rep.causes(), ["order"]);
}

#[test]
fn gzip_with_and_without_n_at_two_times() {
    let r = runs();
    fs::write(r.work.join("data.txt"), "data\n".repeat(100)).unwrap();
    touch(&r.work, "2026-11-28 10:00:00 UTC", &["data.txt"]);
    let gzip_to = |args: &[&str], out: &Path| {
        need("gzip");
        let o = Command::new("gzip")
            .args(args)
            .current_dir(&r.work)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "gzip {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        fs::write(out, o.stdout).unwrap();
    };
    gzip_to(&["-c", "data.txt"], &r.a.join("data.txt.gz"));
    touch(&r.work, "2026-11-29 10:00:00 UTC", &["data.txt"]);
    gzip_to(&["-n", "-c", "data.txt"], &r.b.join("data.txt.gz"));
    // Without -n both times: only the mtime.
    gzip_to(&["-c", "data.txt"], &r.b.join("again.gz"));
    fs::copy(r.a.join("data.txt.gz"), r.a.join("again.gz")).unwrap();

    let rep = report(&r, "data.txt.gz", &opts());
    assert_eq!(
        archive_fields(&rep),
        [
            field(Format::Gzip, "data.txt", Field::Mtime),
            field(Format::Gzip, "data.txt", Field::Name),
        ]
    );
    let DriftKind::Archive {
        a: Some(a),
        b: Some(b),
        ..
    } = &rep.files[1].kind
    else {
        panic!("{rep:?}");
    };
    assert_eq!((a.as_str(), b.as_str()), ("\"data.txt\"", "(not stored)"));
    let rep = report(&r, "again.gz", &opts());
    assert_eq!(
        archive_fields(&rep),
        [field(Format::Gzip, "data.txt", Field::Mtime)]
    );
    let DriftKind::Archive {
        a: Some(a),
        b: Some(b),
        ..
    } = &rep.files[0].kind
    else {
        panic!("{rep:?}");
    };
    assert_eq!(
        (a.as_str(), b.as_str()),
        (
            "1795860000 (2026-11-28 10:00:00 UTC)",
            "1795946400 (2026-11-29 10:00:00 UTC)"
        )
    );
    assert_eq!(rep.causes(), ["time"]);
}

#[test]
fn zips_written_with_two_date_times() {
    let r = runs();
    need("python3");
    let script = r#"
import sys, zipfile
out, year = sys.argv[1], int(sys.argv[2])
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name, text in (("pkg/__init__.py", "x = 1\n"), ("pkg/data.txt", "same\n" * 50)):
        info = zipfile.ZipInfo(name, date_time=(year, 11, 28, 10, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, text)
"#;
    // A wheel is a zip whatever its name says.
    let wheel = |root: &Path, year: &str| {
        let out = root.join("pkg-1.0-py3-none-any.whl");
        run(
            &r.work,
            "python3",
            &["-c", script, out.to_str().unwrap(), year],
            &[],
        );
    };
    wheel(&r.a, "2026");
    wheel(&r.b, "2027");
    let rep = report(&r, "pkg-1.0-py3-none-any.whl", &opts());
    assert_eq!(
        archive_fields(&rep),
        [
            field(Format::Zip, "pkg/__init__.py", Field::Mtime),
            field(Format::Zip, "pkg/data.txt", Field::Mtime),
        ]
    );
    let DriftKind::Archive {
        a: Some(a),
        b: Some(b),
        ..
    } = &rep.files[0].kind
    else {
        panic!("{rep:?}");
    };
    assert_eq!(
        (a.as_str(), b.as_str()),
        (
            "2026-11-28 10:00:00 (DOS time)",
            "2027-11-28 10:00:00 (DOS time)"
        )
    );
    assert_eq!(rep.causes(), ["time"]);
}

#[test]
fn ar_archives_made_at_two_times() {
    let r = runs();
    fs::write(r.work.join("x.o"), b"\x7fnot really an object\0").unwrap();
    fs::write(r.work.join("y.o"), b"another\0").unwrap();
    // Debian's ar is deterministic by default (D); U keeps the files' real times.
    touch(&r.work, "2026-11-28 10:00:00 UTC", &["x.o", "y.o"]);
    let (out_a, out_b) = (r.a.join("libx.a"), r.b.join("libx.a"));
    run(
        &r.work,
        "ar",
        &["rcU", out_a.to_str().unwrap(), "x.o", "y.o"],
        &[],
    );
    touch(&r.work, "2026-11-28 10:05:00 UTC", &["x.o"]);
    run(
        &r.work,
        "ar",
        &["rcU", out_b.to_str().unwrap(), "x.o", "y.o"],
        &[],
    );
    let rep = report(&r, "libx.a", &opts());
    assert_eq!(
        archive_fields(&rep),
        [field(Format::Ar, "x.o", Field::Mtime)]
    );
    assert_eq!(rep.causes(), ["time"]);
}

const HELLO: &str = "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n";

#[test]
fn cc_in_two_build_directories_embeds_the_build_path() {
    let r = runs();
    let (dir_a, dir_b) = (r.work.join("build-a"), r.work.join("build-b"));
    for (dir, out) in [(&dir_a, &r.a), (&dir_b, &r.b)] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("hello.c"), HELLO).unwrap();
        let prog = out.join("hello");
        run(
            dir,
            "cc",
            &["-g", "-O0", "-o", prog.to_str().unwrap(), "hello.c"],
            &[],
        );
    }
    let (ra, rb) = (dir_a.to_str().unwrap(), dir_b.to_str().unwrap());
    let o = CompareOptions {
        a_root_hint: ra,
        b_root_hint: rb,
        ..opts()
    };
    let rep = report(&r, "hello", &o);
    let sections: Vec<String> = match &rep.files[0].kind {
        DriftKind::ElfBuildId { other_sections, .. } => other_sections.clone(),
        DriftKind::ElfSections { sections } => sections.clone(),
        k => panic!("not an ELF drift: {k:?}"),
    };
    assert!(
        sections
            .iter()
            .any(|s| s == ".debug_str" || s == ".debug_line_str"),
        "{sections:?}"
    );
    assert!(rep.causes().contains(&"build_path"), "{:?}", rep.hints);
    let hint = rep
        .hints
        .iter()
        .find(|h| h.variation.as_str() == "build_path")
        .unwrap();
    assert!(
        hint.message.contains(ra) && hint.message.contains(rb),
        "{hint:?}"
    );
    // The string section's diff shows the paths.
    let shown = rep.render_text();
    assert!(
        shown.contains(&format!("-{ra}")) && shown.contains(&format!("+{rb}")),
        "{shown}"
    );
}

#[test]
fn cc_embedding_date_and_time_at_two_faked_times() {
    let r = runs();
    let src = "#include <stdio.h>\nint main(void) { puts(\"built \" __DATE__ \" \" __TIME__); return 0; }\n";
    fs::write(r.work.join("stamp.c"), src).unwrap();
    for (epoch, out) in [("1795860000", &r.a), ("1795951800", &r.b)] {
        let prog = out.join("stamp");
        run(
            &r.work,
            "cc",
            &["-O0", "-o", prog.to_str().unwrap(), "stamp.c"],
            &[("SOURCE_DATE_EPOCH", epoch)],
        );
    }
    let rep = report(&r, "stamp", &opts());
    let sections: Vec<String> = match &rep.files[0].kind {
        DriftKind::ElfBuildId { other_sections, .. } => other_sections.clone(),
        DriftKind::ElfSections { sections } => sections.clone(),
        k => panic!("not an ELF drift: {k:?}"),
    };
    assert!(sections.contains(&".rodata".to_owned()), "{sections:?}");
    assert!(rep.causes().contains(&"time"), "{:?}", rep.hints);
    let hint = rep
        .hints
        .iter()
        .find(|h| h.variation.as_str() == "time")
        .unwrap();
    assert_eq!(hint.path, "stamp[.rodata]");
    assert!(
        hint.message.contains("`Nov 28 2026 10:00:00` in a")
            && hint.message.contains("`Nov 29 2026 11:30:00` in b"),
        "{hint:?}"
    );
}

#[test]
fn elf_files_differing_only_in_their_build_id() {
    let r = runs();
    fs::write(r.work.join("hello.c"), HELLO).unwrap();
    let ids = [
        "0x0123456789abcdef0123456789abcdef01234567",
        "0xfedcba9876543210fedcba9876543210fedcba98",
    ];
    for (id, out) in ids.iter().zip([&r.a, &r.b]) {
        let prog = out.join("hello");
        run(
            &r.work,
            "cc",
            &[
                "-O0",
                &format!("-Wl,--build-id={id}"),
                "-o",
                prog.to_str().unwrap(),
                "hello.c",
            ],
            &[],
        );
    }
    let rep = report(&r, "hello", &opts());
    assert_eq!(
        rep.files.iter().map(|f| &f.kind).collect::<Vec<_>>(),
        [&DriftKind::ElfBuildId {
            a: ids[0][2..].to_owned(),
            b: ids[1][2..].to_owned(),
            other_sections: vec![],
        }]
    );
    assert!(rep.render_text().contains("nothing else differs"));
}

#[test]
fn a_text_file_with_a_differing_line() {
    let r = runs();
    let lines = |changed: &str| -> String {
        (1..=10)
            .map(|i| {
                if i == 6 {
                    format!("{changed}\n")
                } else {
                    format!("line {i}\n")
                }
            })
            .collect()
    };
    fs::create_dir_all(r.a.join("doc")).unwrap();
    fs::create_dir_all(r.b.join("doc")).unwrap();
    fs::write(r.a.join("doc/notes.txt"), lines("generated on builder-a")).unwrap();
    fs::write(r.b.join("doc/notes.txt"), lines("generated on builder-b")).unwrap();
    let hosts = ["builder-a", "builder-b"];
    let o = CompareOptions {
        hostnames: &hosts,
        ..opts()
    };
    let rep = report(&r, "doc", &o);
    let [
        DriftKind::Text {
            diff,
            truncated: false,
            ..
        },
    ] = &rep.files.iter().map(|f| f.kind.clone()).collect::<Vec<_>>()[..]
    else {
        panic!("{rep:?}");
    };
    assert_eq!(
        diff,
        "--- a/doc/notes.txt\n+++ b/doc/notes.txt\n@@ -3,7 +3,7 @@\n line 3\n line 4\n line 5\n-generated on builder-a\n+generated on builder-b\n line 7\n line 8\n line 9\n"
    );
    assert_eq!(rep.causes(), ["hostname"]);
}
