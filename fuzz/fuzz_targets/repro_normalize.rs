//! The archive normalisers on arbitrary bytes (a step's outputs are untrusted): the input
//! is written as a file of each kind (`input.zip`, `.jar`, `.tar`, `.gz`, `.a`) and
//! normalised as that kind, and as `input.tar.gz` with `normalize_tar_gz`. So that
//! mutated tar headers get past their checksums, the input is also normalised as a tar
//! with every non-zero 512-byte block's checksum set right, and that, gzip-compressed, as
//! a `.tar.gz`.
//!
//! Nothing may panic. An error, `NotThisKind` or `Unchanged` leaves the file exactly as it
//! was; a rewrite leaves no temporary file behind and its result is in normal form and
//! still an archive of the kind: normalising it again reads it whole and is `Unchanged`.
#![no_main]

use std::fs;
use std::io::Write as _;
use std::path::Path;

use ci_intel_repro::normalize::{
    Kind, NormalizeError, Normalized, normalize_file, normalize_tar_gz,
};
use libfuzzer_sys::fuzz_target;

/// The `SOURCE_DATE_EPOCH` stamped on entries: 2020-09-13T12:26:40Z.
const SDE: u64 = 1_600_000_000;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for kind in Kind::ALL {
        let name = format!("input.{}", kind.extensions()[0]);
        check(&dir.path().join(name), data, kind.name(), |p| {
            normalize_file(p, kind, SDE)
        });
    }
    let tar_gz = |p: &Path| normalize_tar_gz(p, SDE);
    check(&dir.path().join("input.tar.gz"), data, "tar.gz", tar_gz);
    let fixed = with_tar_checksums(data);
    if fixed != data {
        check(
            &dir.path().join("fixed.tar"),
            &fixed,
            "tar (checksums set)",
            |p| normalize_file(p, Kind::Tar, SDE),
        );
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&fixed).expect("compressing in memory");
    let gz = gz.finish().expect("compressing in memory");
    check(
        &dir.path().join("fixed.tgz"),
        &gz,
        "tgz (checksums set)",
        tar_gz,
    );
});

/// `data` with the checksum field of every 512-byte block that is not all zero set to the
/// block's sum, as a tar header's.
fn with_tar_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for block in out.chunks_exact_mut(512) {
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
    out
}

/// Writes `data` at `path`, normalises it with `normalize` and checks the outcome; then
/// removes the file.
fn check(
    path: &Path,
    data: &[u8],
    what: &str,
    normalize: impl Fn(&Path) -> Result<Normalized, NormalizeError>,
) {
    fs::write(path, data).expect("writing the input");
    let dir = path.parent().expect("the input's directory");
    let result = normalize(path);
    let after = fs::read(path).expect("reading the result");
    assert_eq!(
        fs::read_dir(dir).expect("listing the directory").count(),
        1,
        "{what}: a temporary file was left ({result:?})"
    );
    match result {
        Err(_) | Ok(Normalized::NotThisKind | Normalized::Unchanged) => {
            assert!(after == data, "{what}: {result:?}, but the file changed");
        }
        Ok(Normalized::Rewritten) => {
            assert!(after != data, "{what}: rewritten with the same bytes");
            match normalize(path) {
                Ok(Normalized::Unchanged) => {}
                again => panic!("{what}: normalising the normalised file again: {again:?}"),
            }
            assert!(fs::read(path).expect("reading the result") == after);
        }
    }
    fs::remove_file(path).expect("removing the input");
}
