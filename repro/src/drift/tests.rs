use std::fs;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::Path;

use proptest::prelude::*;

use super::archive::tests::{tar, tar_entry};
use super::*;

fn opts() -> CompareOptions<'static> {
    CompareOptions {
        use_diffoscope: false,
        ..CompareOptions::default()
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn kinds<'r>(r: &'r DriftReport, path: &str) -> Vec<&'r DriftKind> {
    r.files
        .iter()
        .filter(|f| f.path == path)
        .map(|f| &f.kind)
        .collect()
}

#[test]
fn identical_trees() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for root in [a.path(), b.path()] {
        write(root, "out/x.txt", b"same\n");
        write(root, "out/sub/y.bin", &[0, 1, 2]);
    }
    let r = compare(a.path(), b.path(), &["out".to_owned()], &opts()).unwrap();
    assert!(
        r.identical && r.files.is_empty() && r.hints.is_empty(),
        "{r:?}"
    );
    assert_eq!(r.diffoscope, None);
    assert_eq!(r.render_text(), "no drift: the outputs are identical\n");
    // Missing on both sides is no drift either.
    let r = compare(a.path(), b.path(), &["nothing".to_owned()], &opts()).unwrap();
    assert!(r.identical);
}

#[test]
fn tree_differences() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), "only-a.txt", b"x");
    write(b.path(), "only-b.txt", b"x");
    write(a.path(), "mode.sh", b"#!/bin/sh\n");
    write(b.path(), "mode.sh", b"#!/bin/sh\n");
    fs::set_permissions(a.path().join("mode.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(b.path().join("mode.sh"), fs::Permissions::from_mode(0o775)).unwrap();
    symlink("/build/a/lib", a.path().join("link")).unwrap();
    symlink("/build/b/lib", b.path().join("link")).unwrap();
    write(a.path(), "kind", b"file");
    fs::create_dir(b.path().join("kind")).unwrap();
    let o = CompareOptions {
        a_root_hint: "/build/a",
        b_root_hint: "/build/b",
        ..opts()
    };
    let r = compare(a.path(), b.path(), &[], &o).unwrap();
    assert!(!r.identical);
    assert_eq!(
        kinds(&r, "kind"),
        [&DriftKind::Type {
            a: EntryType::File,
            b: EntryType::Dir
        }]
    );
    assert_eq!(
        kinds(&r, "mode.sh"),
        [&DriftKind::Mode { a: 0o755, b: 0o775 }]
    );
    assert_eq!(
        kinds(&r, "link"),
        [&DriftKind::Symlink {
            a: "/build/a/lib".to_owned(),
            b: "/build/b/lib".to_owned()
        }]
    );
    assert_eq!(
        kinds(&r, "only-a.txt"),
        [&DriftKind::OnlyIn {
            side: Side::A,
            entry: EntryType::File
        }]
    );
    assert_eq!(
        kinds(&r, "only-b.txt"),
        [&DriftKind::OnlyIn {
            side: Side::B,
            entry: EntryType::File
        }]
    );
    assert_eq!(r.causes(), ["build_path", "umask"], "{:?}", r.hints);
    let text = r.render_text();
    assert!(
        text.starts_with("drift: 5 paths differ (5 differences)\n"),
        "{text}"
    );
    assert!(
        text.contains("\n== mode.sh\n  mode: 0755 in a, 0775 in b\n"),
        "{text}"
    );
}

#[test]
fn text_diff_is_bounded() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let body = |tag: &str| -> String { (0..100).map(|i| format!("{tag} line {i}\n")).collect() };
    for name in ["one.txt", "two.txt"] {
        write(a.path(), name, body("old").as_bytes());
        write(b.path(), name, body("new").as_bytes());
    }
    write(a.path(), "small.txt", b"1\n2\n3\n4\n5\n6\n7\n8\n9\n");
    write(b.path(), "small.txt", b"1\n2\n3\n4\nfive\n6\n7\n8\n9\n");
    let o = CompareOptions {
        max_diff_lines: 20,
        max_report_lines: 30,
        ..opts()
    };
    let r = compare(a.path(), b.path(), &[], &o).unwrap();
    let texts: Vec<(&str, &str, bool, usize)> = r
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            DriftKind::Text {
                diff,
                truncated,
                lines,
            } => Some((f.path.as_str(), diff.as_str(), *truncated, *lines)),
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 3);
    let (_, diff, truncated, lines) = texts[0];
    assert_eq!((diff.lines().count(), truncated, lines), (20, true, 203));
    assert!(
        diff.starts_with("--- a/one.txt\n+++ b/one.txt\n@@ -1,100 +1,100 @@\n-old line 0\n"),
        "{diff}"
    );
    // The report's bound: 10 lines were left for the second file, none for the third.
    assert_eq!(
        (
            texts[1].0,
            texts[1].1.lines().count(),
            texts[1].2,
            texts[1].3
        ),
        ("small.txt", 10, true, 11)
    );
    assert_eq!(
        (texts[2].0, texts[2].1, texts[2].2, texts[2].3),
        ("two.txt", "", true, 203)
    );
    let rendered = r.render_text();
    assert!(
        rendered.contains("… diff cut at 20 of 203 lines"),
        "{rendered}"
    );

    let o = CompareOptions {
        max_diff_lines: 200,
        ..opts()
    };
    let r = compare(a.path(), b.path(), &["small.txt".to_owned()], &o).unwrap();
    let [
        DriftKind::Text {
            diff,
            truncated: false,
            ..
        },
    ] = kinds(&r, "small.txt")[..]
    else {
        panic!("{r:?}")
    };
    assert_eq!(
        diff,
        "--- a/small.txt\n+++ b/small.txt\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
    );
}

#[test]
fn binary_offset_and_context() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut d: Vec<u8> = (0..=255u8).collect();
    write(a.path(), "x.bin", &d);
    d[0x42] = 0xff;
    d.push(9);
    write(b.path(), "x.bin", &d);
    let r = compare(a.path(), b.path(), &[], &opts()).unwrap();
    let [
        DriftKind::Binary {
            offset,
            a_context,
            b_context,
            a_size,
            b_size,
        },
    ] = kinds(&r, "x.bin")[..]
    else {
        panic!("{r:?}")
    };
    assert_eq!((*offset, *a_size, *b_size), (0x42, 256, 257));
    assert!(a_context.contains("00000040  40 41 42 43"), "{a_context}");
    assert!(b_context.contains("00000040  40 41 ff 43"), "{b_context}");
    assert!(
        r.render_text()
            .contains("bytes differ from offset 0x42 (66); 256 bytes in a, 257 in b")
    );
}

fn gz(data: &[u8], mtime: u32) -> Vec<u8> {
    use std::io::Write as _;
    let mut w = flate2::GzBuilder::new()
        .mtime(mtime)
        .write(Vec::new(), flate2::Compression::default());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

#[test]
fn nested_archives_say_member_and_field() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ta = tar(&[tar_entry(
        "pkg/VERSION",
        b"built 2026-11-28\n",
        1000,
        0o644,
        0,
    )]);
    let tb = tar(&[tar_entry(
        "pkg/VERSION",
        b"built 2026-11-29\n",
        1000,
        0o644,
        0,
    )]);
    write(a.path(), "pkg.tar.gz", &gz(&ta, 0));
    write(b.path(), "pkg.tar.gz", &gz(&tb, 0));
    let r = compare(a.path(), b.path(), &[], &opts()).unwrap();
    let [
        DriftKind::Archive {
            format: Format::Gzip,
            member,
            field: Field::Content,
            detail: Some(inner),
            ..
        },
    ] = kinds(&r, "pkg.tar.gz")[..]
    else {
        panic!("{r:?}")
    };
    assert_eq!(member, "pkg.tar");
    let DriftKind::Archive {
        format: Format::Tar,
        member,
        field: Field::Content,
        detail: Some(text),
        ..
    } = inner.as_ref()
    else {
        panic!("{inner:?}")
    };
    assert_eq!(member, "pkg/VERSION");
    assert!(
        matches!(text.as_ref(), DriftKind::Text { diff, .. } if diff.contains("-built 2026-11-28\n+built 2026-11-29\n"))
    );
    assert_eq!(r.causes(), ["time"]);
    assert_eq!(r.hints[0].path, "pkg.tar.gz!pkg.tar!pkg/VERSION");
    let text = r.render_text();
    assert!(
        text.contains("  gzip member `pkg.tar`: content\n    tar member `pkg/VERSION`: content\n      text differs (5 lines of diff):\n"),
        "{text}"
    );
}

#[test]
fn nesting_is_bounded() {
    // Four tars deep: the fourth is compared as bytes.
    let (mut a, mut b) = (b"a\n".to_vec(), b"b\n".to_vec());
    for level in 0..4 {
        let name = format!("l{level}");
        a = tar(&[tar_entry(&name, &a, 1, 0o644, 0)]);
        b = tar(&[tar_entry(&name, &b, 1, 0o644, 0)]);
    }
    let o = opts();
    let mut ctx = Ctx::new(&o);
    let kinds = content::compare_bytes(&mut ctx, "t", &a, &b, 0);
    let mut k = &kinds[0];
    let mut depth = 0;
    while let DriftKind::Archive {
        detail: Some(d), ..
    } = k
    {
        k = d;
        depth += 1;
    }
    assert_eq!(depth, MAX_ARCHIVE_DEPTH);
    assert!(matches!(k, DriftKind::Binary { .. }), "{k:?}");
}

#[test]
fn corrupt_archives_fall_back_to_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let good = gz(b"hello world\n", 0);
    let mut bad = good.clone();
    bad.truncate(good.len() - 6);
    write(a.path(), "x.gz", &good);
    write(b.path(), "x.gz", &bad);
    write(a.path(), "y.zip", b"PK\x03\x04\0\0 not really a zip");
    write(b.path(), "y.zip", b"PK\x03\x04\0\0 not really a zip either");
    let r = compare(a.path(), b.path(), &[], &opts()).unwrap();
    let k = kinds(&r, "x.gz");
    assert!(
        matches!(k[..], [DriftKind::Unreadable { format: Format::Gzip, reason }, DriftKind::Binary { .. }] if reason.starts_with("b: ")),
        "{k:?}"
    );
    let k = kinds(&r, "y.zip");
    assert!(
        matches!(
            k[..],
            [
                DriftKind::Unreadable {
                    format: Format::Zip,
                    ..
                },
                DriftKind::Binary { .. }
            ]
        ),
        "{k:?}"
    );
    assert!(r.render_text().contains("could not be read as gzip: b: "));
}

#[test]
fn elf_and_zip_through_compare() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), "bin/p", &elf::tests::elf(&[1; 20], b"x"));
    write(b.path(), "bin/p", &elf::tests::elf(&[2; 20], b"x"));
    write(
        a.path(),
        "w.whl",
        &zip::tests::zip(&[("m/__init__.py", b"", 0x5b7c, 0, false)]),
    );
    write(
        b.path(),
        "w.whl",
        &zip::tests::zip(&[("m/__init__.py", b"", 0x5b7c, 2, false)]),
    );
    let r = compare(
        a.path(),
        b.path(),
        &["bin".to_owned(), "w.whl".to_owned()],
        &opts(),
    )
    .unwrap();
    assert!(
        matches!(kinds(&r, "bin/p")[..], [DriftKind::ElfBuildId { other_sections, .. }] if other_sections.is_empty())
    );
    assert!(matches!(
        kinds(&r, "w.whl")[..],
        [DriftKind::Archive {
            format: Format::Zip,
            field: Field::Mtime,
            ..
        }]
    ));
    let text = r.render_text();
    assert!(text.contains("ELF build-id drift: 0101010101010101010101010101010101010101 in a, 0202020202020202020202020202020202020202 in b"), "{text}");
    assert!(text.contains("zip member `m/__init__.py`: mtime differs: 2025-11-28 00:00:00 (DOS time) in a, 2025-11-28 00:00:04 (DOS time) in b"), "{text}");
}

#[test]
fn errors_name_the_path() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), "f", b"x");
    let e = compare(a.path(), b.path(), &["f/inside".to_owned()], &opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot read {}", a.path().join("f/inside").display())
    );
    assert!(std::error::Error::source(&e).is_some());
    let e = compare(a.path(), b.path(), &["../up".to_owned()], &opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "output path \"../up\" is not a relative path below the roots"
    );
}

#[test]
fn report_json_digest_and_causes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), "v.txt", b"date: 2026-11-28\nhost: alpha-host\n");
    write(b.path(), "v.txt", b"date: 2026-11-29\nhost: beta-host\n");
    let hosts = ["alpha-host", "beta-host"];
    let o = CompareOptions {
        hostnames: &hosts,
        ..opts()
    };
    let r = compare(a.path(), b.path(), &[], &o).unwrap();
    assert_eq!(r.causes(), ["hostname", "time"]);
    let json = serde_json::to_string(&r).unwrap();
    let back: DriftReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.digest(), r.digest());
    assert_eq!(r.digest().len(), 64);
    let again = compare(a.path(), b.path(), &[], &o).unwrap();
    assert_eq!(again.digest(), r.digest());
    let mut other = r.clone();
    other.hints.pop();
    assert_ne!(other.digest(), r.digest());
    assert!(json.contains(r#""kind":"text""#), "{json}");
    assert!(json.contains(r#""variation":"hostname""#), "{json}");
}

#[test]
fn diffoscope_attached_or_noted_once() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write(a.path(), "x.txt", b"1\n");
    write(b.path(), "x.txt", b"2\n");
    write(a.path(), "y.txt", b"1\n");
    write(b.path(), "y.txt", b"2\n");
    fs::set_permissions(b.path().join("y.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let o = CompareOptions::default();
    assert!(o.use_diffoscope);
    let r = compare_with(a.path(), b.path(), &[], &o, None).unwrap();
    assert_eq!(r.diffoscope.as_deref(), Some(DIFFOSCOPE_NOT_INSTALLED));
    assert!(r.files.iter().all(|f| f.diffoscope.is_none()));
    let text = r.render_text();
    assert_eq!(text.matches("not installed").count(), 1, "{text}");

    let tools = tempfile::tempdir().unwrap();
    let fake = tools.path().join("diffoscope");
    fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'diffoscope 123'; exit 0; }\necho \"--- $3\"; echo \"+++ $4\"; exit 1\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let r = compare_with(a.path(), b.path(), &[], &o, Some(&fake)).unwrap();
    assert_eq!(r.diffoscope.as_deref(), Some("diffoscope 123"));
    // y.txt: its mode entry first, the text entry carries diffoscope's output.
    let y: Vec<&FileDrift> = r.files.iter().filter(|f| f.path == "y.txt").collect();
    assert_eq!(y.len(), 2);
    assert!(matches!(y[0].kind, DriftKind::Mode { .. }) && y[0].diffoscope.is_none());
    assert_eq!(
        y[1].diffoscope.as_deref(),
        Some(
            format!(
                "--- {}\n+++ {}",
                a.path().join("y.txt").display(),
                b.path().join("y.txt").display()
            )
            .as_str()
        )
    );
    assert!(r.render_text().contains("  diffoscope:\n    --- "));
}

/// A small tree: relative paths (one or two levels) and contents.
fn tree() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::btree_map(
        prop::collection::vec("[a-c]{1,2}", 1..3).prop_map(|p| format!("{}.f", p.join("/"))),
        prop::collection::vec(any::<u8>(), 0..600),
        1..8,
    )
    .prop_map(|m| {
        // A file may not also be a directory: keep paths none of which is another's prefix.
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for (p, d) in m {
            let dir = p.trim_end_matches(".f");
            if out.iter().all(|(q, _)| {
                let qd = q.trim_end_matches(".f");
                !qd.starts_with(&format!("{dir}/")) && !dir.starts_with(&format!("{qd}/"))
            }) {
                out.push((p, d));
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_tree_equals_its_copy(files in tree()) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for (p, d) in &files {
            write(a.path(), p, d);
            write(b.path(), p, d);
        }
        let r = compare(a.path(), b.path(), &[], &opts()).unwrap();
        prop_assert!(r.identical, "{:?}", r);
        let r = compare(a.path(), a.path(), &[], &opts()).unwrap();
        prop_assert!(r.identical, "{:?}", r);
    }

    #[test]
    fn a_flipped_byte_is_found_at_its_offset(
        files in tree(),
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let target = pick.index(files.len());
        let mut flipped = 0;
        for (i, (p, d)) in files.iter().enumerate() {
            let mut d = d.clone();
            write(a.path(), p, &d);
            if i == target {
                // Binary content that is no archive: two leading NULs, one survives the flip.
                d.resize(d.len().max(2), 0x20);
                d[0] = 0;
                d[1] = 0;
                write(a.path(), p, &d);
                flipped = at.index(d.len());
                d[flipped] ^= mask;
            }
            write(b.path(), p, &d);
        }
        let r = compare(a.path(), b.path(), &[], &opts()).unwrap();
        let found: Vec<&DriftKind> = r.files.iter().map(|f| &f.kind).collect();
        prop_assert_eq!(r.files.len(), 1, "{:?}", found);
        prop_assert_eq!(&r.files[0].path, &files[target].0);
        let DriftKind::Binary { offset, .. } = &r.files[0].kind else {
            return Err(TestCaseError::fail(format!("{found:?}")));
        };
        prop_assert_eq!(*offset, flipped as u64);
    }
}
