//! Archives made by the real tools on this machine, twice with different times, orders
//! or owners: they differ before normalisation, are byte-identical after it, and the tools
//! still accept them and extract the same contents.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ci_intel_repro::normalize::{Kind, Normalized, normalize_file, normalize_tree};

/// 2020-09-13T12:26:40Z.
const SDE: u64 = 1_600_000_000;

/// Fails with how to install `tool` when it is not on `PATH`.
fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    assert!(
        found,
        "`{tool}` is not installed; install it with `apt-get install {package}`"
    );
}

/// Runs `script` with `sh -e` in `dir`; its stdout. Fails (with stderr) unless it succeeds.
fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("running sh");
    assert!(
        out.status.success(),
        "`{script}` failed in {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files of a small project: a directory, an executable, text, a long path.
fn populate(dir: &Path) {
    let long =
        "a-directory-name-long-enough/to-need/more-than-one-hundred-bytes-of-path/in-a-tar-header";
    sh(
        dir,
        &format!(
            "mkdir -p src bin {long}
             printf 'fn main() {{}}\\n' > src/main.rs
             seq 1 2000 > src/numbers.txt
             printf '#!/bin/sh\\necho hi\\n' > bin/run.sh
             chmod 755 bin/run.sh
             chmod 644 src/main.rs src/numbers.txt
             printf 'deep\\n' > {long}/file.txt"
        ),
    );
}

/// Sets every file's time under `dir` to `when` (a `touch -d` date).
fn touch_all(dir: &Path, when: &str) {
    sh(dir, &format!("find . -exec touch -h -d '{when}' {{}} +"));
}

/// Two build directories with the same files, their times set to two different dates.
fn two_builds() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (dir, when) in [(&a, "2001-02-03 04:05:06"), (&b, "2019-08-07 06:05:04")] {
        fs::create_dir(dir).unwrap();
        populate(dir);
        touch_all(dir, when);
    }
    (tmp, a, b)
}

/// What a directory holds: path → (mode bits, content or link target).
fn contents(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, (0o777, target.into_os_string().into_encoded_bytes()));
            } else if meta.is_dir() {
                out.insert(rel, (meta.mode() & 0o777, Vec::new()));
                walk(root, &path, out);
            } else {
                out.insert(rel, (meta.mode() & 0o777, fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Normalises both archives as `kind`: they differ before and are identical after.
fn normalise_pair(a: &Path, b: &Path, kind: Kind) -> Vec<u8> {
    assert_ne!(
        fs::read(a).unwrap(),
        fs::read(b).unwrap(),
        "the two archives already agree"
    );
    assert_eq!(normalize_file(a, kind, SDE).unwrap(), Normalized::Rewritten);
    assert_eq!(normalize_file(b, kind, SDE).unwrap(), Normalized::Rewritten);
    let (na, nb) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    assert!(
        na == nb,
        "{} and {} differ after normalisation",
        a.display(),
        b.display()
    );
    assert_eq!(normalize_file(a, kind, SDE).unwrap(), Normalized::Unchanged);
    na
}

#[test]
fn python_zipfile_archives() {
    need("python3", "python3");
    let (tmp, a, b) = two_builds();
    let t = tmp.path();
    // The zipfile module, entries in two orders and at two times, stored and deflated.
    let script = r#"
import sys, zipfile
out, when, order = sys.argv[1], int(sys.argv[2]), sys.argv[3]
names = ["src/main.rs", "src/numbers.txt", "bin/run.sh"]
if order == "reverse":
    names.reverse()
with zipfile.ZipFile(out, "w") as z:
    for i, n in enumerate(names):
        info = zipfile.ZipInfo(n, date_time=(1990 + when, 1 + i, 2, 3, 4, 6))
        info.compress_type = zipfile.ZIP_DEFLATED if n.endswith(".txt") else zipfile.ZIP_STORED
        info.external_attr = (0o100755 if n.endswith(".sh") else 0o100644) << 16
        z.writestr(info, open(n, "rb").read())
    z.comment = b"built by a test"
"#;
    fs::write(t.join("mk.py"), script).unwrap();
    sh(&a, "python3 ../mk.py ../one.zip 1 forward");
    sh(&b, "python3 ../mk.py ../two.zip 20 reverse");
    let zip = normalise_pair(&t.join("one.zip"), &t.join("two.zip"), Kind::Zip);
    assert!(zip.ends_with(b"built by a test"));
    sh(
        t,
        "python3 -m zipfile -t one.zip && python3 -m zipfile -e one.zip x",
    );
    assert_eq!(
        fs::read(t.join("x/src/numbers.txt")).unwrap(),
        fs::read(a.join("src/numbers.txt")).unwrap()
    );
    assert_eq!(
        fs::read(t.join("x/bin/run.sh")).unwrap(),
        fs::read(a.join("bin/run.sh")).unwrap()
    );

    // `python3 -m zipfile -c`, from trees whose files have different times.
    sh(&a, "python3 -m zipfile -c ../c1.zip src bin");
    sh(&b, "python3 -m zipfile -c ../c2.zip src bin");
    normalise_pair(&t.join("c1.zip"), &t.join("c2.zip"), Kind::Zip);
    sh(
        t,
        "python3 -m zipfile -t c1.zip && python3 -m zipfile -e c1.zip y",
    );
    assert_eq!(
        fs::read(t.join("y/src/main.rs")).unwrap(),
        fs::read(a.join("src/main.rs")).unwrap()
    );
}

#[test]
fn zip_cli_archives() {
    need("zip", "zip");
    need("unzip", "unzip");
    let (tmp, a, b) = two_builds();
    let t = tmp.path();
    // Info-ZIP adds UT (times) and ux (uid/gid) extra fields; the order follows the arguments.
    sh(
        &a,
        "zip -q -r ../one.zip src bin a-directory-name-long-enough",
    );
    sh(
        &b,
        "chown -R 1234:5678 . 2>/dev/null || true; zip -q -r ../two.zip a-directory-name-long-enough bin src",
    );
    normalise_pair(&t.join("one.zip"), &t.join("two.zip"), Kind::Zip);
    let listing = sh(t, "unzip -t one.zip && unzip -Z -l one.zip");
    assert!(listing.contains("No errors detected"), "{listing}");
    sh(t, "mkdir x && cd x && unzip -q ../one.zip");
    let (x, want) = (contents(&t.join("x")), contents(&a));
    assert_eq!(
        x, want,
        "extracted contents and modes differ from the originals"
    );
    assert_eq!(x["bin/run.sh"].0, 0o755);
    assert_eq!(x["src/main.rs"].0, 0o644);
}

#[test]
fn jar_archives() {
    let (tmp, a, b) = two_builds();
    let t = tmp.path();
    let has_jar = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("jar").is_file()));
    if has_jar {
        sh(&a, "jar cf ../one.jar src bin");
        sh(&b, "jar cf ../two.jar bin src");
    } else {
        // Without a JDK: what `jar` writes, a zip with the manifest, made by Python.
        need("python3", "python3");
        let script = r#"
import sys, zipfile
out, order = sys.argv[1], sys.argv[2]
names = ["src/main.rs", "bin/run.sh"]
if order == "reverse":
    names.reverse()
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    if order == "reverse":
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
        z.writestr("META-INF/", "")
    else:
        z.writestr("META-INF/", "")
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
    for n in names:
        z.write(n)
"#;
        fs::write(t.join("mk.py"), script).unwrap();
        sh(&a, "python3 ../mk.py ../one.jar forward");
        sh(&b, "python3 ../mk.py ../two.jar reverse");
    }
    let jar = normalise_pair(&t.join("one.jar"), &t.join("two.jar"), Kind::Jar);
    // META-INF/ then the manifest come first, as the JAR format wants.
    assert_eq!(&jar[30..39], b"META-INF/");
    let second = jar
        .windows(20)
        .position(|w| w == b"META-INF/MANIFEST.MF")
        .unwrap();
    assert!(second < 200, "the manifest is not the second entry");
    need("python3", "python3");
    sh(
        t,
        "python3 -m zipfile -t one.jar && python3 -m zipfile -e one.jar x",
    );
    assert_eq!(
        fs::read(t.join("x/bin/run.sh")).unwrap(),
        fs::read(a.join("bin/run.sh")).unwrap()
    );
    if has_jar {
        let listing = sh(t, "jar tf one.jar");
        assert!(
            listing.starts_with("META-INF/\nMETA-INF/MANIFEST.MF\n"),
            "{listing}"
        );
        assert!(listing.contains("src/main.rs"), "{listing}");
    }
}

#[test]
fn gnu_tar_archives() {
    need("tar", "tar");
    let (tmp, a, b) = two_builds();
    let t = tmp.path();
    for dir in [&a, &b] {
        // A symbolic link and a hard link: tar stores the first name it meets with the data.
        sh(
            dir,
            "ln -s main.rs src/link.rs && ln src/numbers.txt src/hard.txt",
        );
    }
    sh(&a, "tar cf ../one.tar src bin a-directory-name-long-enough");
    // Other order, other owner, and the POSIX (pax) format with its PaxHeaders names.
    sh(
        &b,
        "tar cf ../two.tar --format=posix --owner=nobody:4321 --group=users:8765 bin a-directory-name-long-enough src",
    );
    sh(
        &b,
        "tar cf ../three.tar --format=gnu --mtime='2030-01-01' a-directory-name-long-enough src bin",
    );
    let one = normalise_pair(&t.join("one.tar"), &t.join("two.tar"), Kind::Tar);
    assert_eq!(
        normalize_file(&t.join("three.tar"), Kind::Tar, SDE).unwrap(),
        Normalized::Rewritten
    );
    assert!(
        fs::read(t.join("three.tar")).unwrap() == one,
        "the GNU-format archive differs"
    );
    let listing = sh(t, "tar -tvf one.tar");
    assert!(listing.contains("0/0"), "{listing}");
    assert!(listing.contains("2020-09-13"), "{listing}");
    assert!(listing.contains("-rwxr-xr-x"), "{listing}");
    assert!(listing.contains("src/link.rs -> main.rs"), "{listing}");
    // The hard link's data goes with the first name in order, whichever tar met first.
    assert!(
        listing.contains("src/numbers.txt link to src/hard.txt"),
        "{listing}"
    );
    let names = sh(t, "tar -tf one.tar");
    let mut sorted: Vec<&str> = names.lines().collect();
    sorted.sort();
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        sorted,
        "members are not sorted by path"
    );
    sh(t, "mkdir x && tar xf one.tar -C x");
    assert_eq!(contents(&t.join("x")), contents(&a));
    let (hard, numbers) = (t.join("x/src/hard.txt"), t.join("x/src/numbers.txt"));
    assert_eq!(
        fs::metadata(hard).unwrap().ino(),
        fs::metadata(numbers).unwrap().ino()
    );
}

#[test]
fn gzip_files() {
    need("gzip", "gzip");
    let (tmp, a, b) = two_builds();
    let t = tmp.path();
    // The name and time of the input are in the header; -n leaves both out.
    sh(&a, "gzip -c src/numbers.txt > ../one.gz");
    sh(
        &b,
        "cp src/numbers.txt ../other-name.txt && touch -d '2024-01-01' ../other-name.txt && gzip -c ../other-name.txt > ../two.gz",
    );
    sh(&b, "gzip -n -c src/numbers.txt > ../three.gz");
    let one = normalise_pair(&t.join("one.gz"), &t.join("two.gz"), Kind::Gzip);
    // gzip -n on Linux already writes the normal form.
    assert_eq!(
        normalize_file(&t.join("three.gz"), Kind::Gzip, SDE).unwrap(),
        Normalized::Unchanged
    );
    assert_eq!(fs::read(t.join("three.gz")).unwrap(), one);
    sh(t, "gzip -t one.gz");
    assert_eq!(
        sh(t, "gzip -dc one.gz").into_bytes(),
        fs::read(a.join("src/numbers.txt")).unwrap()
    );
    // gzip -N would restore a name and time: there are none.
    let listing = sh(t, "gzip -l -v -N one.gz");
    assert!(!listing.contains("numbers"), "{listing}");
}

#[test]
fn ar_archives_match_ar_deterministic_mode() {
    need("ar", "binutils");
    need("cc", "gcc");
    let (tmp, a, b) = two_builds();
    let t = tmp.path();
    for (dir, when) in [(&a, "2001-02-03"), (&b, "2019-08-07")] {
        sh(
            dir,
            &format!(
                "printf 'int f(void) {{ return 1; }}\\n' > f.c && printf 'int g(void) {{ return 2; }}\\n' > g.c
                 cc -c f.c g.c && chmod 600 g.o && touch -d '{when}' f.o g.o"
            ),
        );
    }
    // `U`: real times, owners and modes (Debian's ar is deterministic by default).
    sh(&a, "ar rcsU ../one.a f.o g.o src/main.rs");
    sh(&b, "ar rcsU ../two.a f.o g.o src/main.rs");
    sh(&a, "ar rcsD ../det.a f.o g.o src/main.rs");
    let one = normalise_pair(&t.join("one.a"), &t.join("two.a"), Kind::Ar);
    assert!(
        fs::read(t.join("det.a")).unwrap() == one,
        "not what `ar D` writes"
    );
    // Order is kept (not sorted): f.o, g.o, main.rs.
    assert_eq!(sh(t, "ar t one.a"), "f.o\ng.o\nmain.rs\n");
    // The symbol table is kept: the linker still finds `g` in it.
    assert!(sh(t, "nm -s one.a").contains("g in g.o"));
    assert_eq!(
        sh(t, "ar p one.a main.rs").into_bytes(),
        fs::read(a.join("src/main.rs")).unwrap()
    );
    let verbose = sh(t, "ar tv one.a");
    assert!(
        verbose.lines().all(|l| l.starts_with("rw-r--r-- 0/0")),
        "{verbose}"
    );
}

#[test]
fn tar_gz_with_tar_and_gzip_declared() {
    need("tar", "tar");
    need("gzip", "gzip");
    let (tmp, a, b) = two_builds();
    let t = tmp.path();
    fs::create_dir(t.join("out1")).unwrap();
    fs::create_dir(t.join("out2")).unwrap();
    // Members differing only in mtime; the second one compressed harder by gzip itself,
    // which keeps the tar's name and time in the header.
    sh(&a, "tar czf ../out1/dist.tar.gz src bin");
    sh(
        &b,
        "tar cf ../out2/dist.tar src bin && touch -d '2022-02-22' ../out2/dist.tar && gzip -9 ../out2/dist.tar",
    );
    let (p1, p2) = (t.join("out1/dist.tar.gz"), t.join("out2/dist.tar.gz"));
    assert_ne!(fs::read(&p1).unwrap(), fs::read(&p2).unwrap());
    // gzip alone normalises the header only (tar czf already writes a normal one): the
    // tars inside, and how they were compressed, still differ.
    assert_eq!(
        normalize_tree(&t.join("out1"), &[Kind::Gzip], SDE).unwrap(),
        vec![]
    );
    assert_eq!(
        normalize_tree(&t.join("out2"), &[Kind::Gzip], SDE).unwrap(),
        vec![("dist.tar.gz".to_string(), Kind::Gzip)]
    );
    assert_ne!(fs::read(&p1).unwrap(), fs::read(&p2).unwrap());
    for out in ["out1", "out2"] {
        let done = normalize_tree(&t.join(out), &[Kind::Tar, Kind::Gzip], SDE).unwrap();
        assert_eq!(done, vec![("dist.tar.gz".to_string(), Kind::Gzip)]);
    }
    assert!(
        fs::read(&p1).unwrap() == fs::read(&p2).unwrap(),
        "the .tar.gz files differ"
    );
    sh(
        t,
        "gzip -t out1/dist.tar.gz && tar -tzvf out1/dist.tar.gz >/dev/null && mkdir x && tar xzf out1/dist.tar.gz -C x",
    );
    let mut want = contents(&a);
    want.retain(|k, _| k.starts_with("src") || k.starts_with("bin"));
    assert_eq!(contents(&t.join("x")), want);
}
