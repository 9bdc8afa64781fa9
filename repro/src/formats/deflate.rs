//! Raw deflate streams (zip entries, gzip members): inflated to check them, to find where
//! they end, and for their content.

use std::io::Write;

use flate2::{Crc, Decompress, FlushDecompress, Status};

use super::{FormatError, Source};

/// What inflating a stream found.
#[derive(Debug)]
pub(crate) struct Inflated {
    /// Compressed bytes the stream took.
    pub(crate) consumed: u64,
    /// CRC-32 of the inflated bytes.
    pub(crate) crc: u32,
    /// How many bytes it inflated to.
    pub(crate) size: u64,
}

const CHUNK: usize = 64 * 1024;

/// Inflates the raw deflate stream at `start`, reading no further than `limit`, and passes
/// the inflated bytes to `sink`. Fails if the stream is invalid, does not end before
/// `limit`, or inflates to more than `max_size` bytes (a zip entry's stated size: no need
/// to inflate a bomb to its end to know it lies).
pub(crate) fn inflate<S: Source + ?Sized>(
    src: &S,
    start: u64,
    limit: u64,
    max_size: u64,
    sink: &mut dyn Write,
) -> Result<Inflated, FormatError> {
    let mut d = Decompress::new(false);
    let mut crc = Crc::new();
    let mut size = 0u64;
    let mut inbuf = vec![0; CHUNK];
    let mut outbuf = vec![0; CHUNK];
    let (mut ibeg, mut iend) = (0usize, 0usize);
    let mut next = start;
    let mut eof = false;
    loop {
        if ibeg == iend && !eof {
            let want = (limit.saturating_sub(next)).min(CHUNK as u64) as usize;
            let n = src
                .read_at(next, &mut inbuf[..want])
                .map_err(FormatError::Read)?;
            next += n as u64;
            (ibeg, iend) = (0, n);
            eof = n == 0;
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let flush = if eof {
            FlushDecompress::Finish
        } else {
            FlushDecompress::None
        };
        let status = d
            .decompress(&inbuf[ibeg..iend], &mut outbuf, flush)
            .map_err(|e| {
                FormatError::Corrupt(format!(
                    "invalid deflate data in the stream at offset {start}: {e}"
                ))
            })?;
        let used = (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        ibeg += used;
        crc.update(&outbuf[..produced]);
        size += produced as u64;
        if size > max_size {
            return Err(FormatError::Corrupt(format!(
                "the deflate stream at offset {start} inflates to more than {max_size} bytes"
            )));
        }
        sink.write_all(&outbuf[..produced])
            .map_err(FormatError::Write)?;
        match status {
            Status::StreamEnd => break,
            _ if used == 0 && produced == 0 && (eof || ibeg < iend) => {
                return Err(FormatError::Corrupt(format!(
                    "truncated deflate stream at offset {start}"
                )));
            }
            _ => {}
        }
    }
    Ok(Inflated {
        consumed: d.total_in(),
        crc: crc.sum(),
        size,
    })
}

/// CRC-32 (the zip and gzip one) of `data`.
#[cfg(test)]
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = Crc::new();
    crc.update(data);
    crc.sum()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn streams_inflate_checked_and_bounded() {
        let data = b"some text, some text, some text\n".repeat(40);
        let mut d = b"head".to_vec();
        d.extend(deflate(&data));
        let stream_len = d.len() as u64 - 4;
        d.extend_from_slice(b"tail");
        let mut out = Vec::new();
        let r = inflate(&d[..], 4, d.len() as u64, u64::MAX, &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(
            (r.consumed, r.crc, r.size),
            (stream_len, crc32(&data), data.len() as u64)
        );
        let err = inflate(&d[..], 4, d.len() as u64, 10, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("inflates to more than 10 bytes"));
        let err = inflate(&d[..], 4, 10, u64::MAX, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("truncated deflate stream"),
            "{err}"
        );
        let err = inflate(&[0xffu8; 8][..], 0, 8, u64::MAX, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("invalid deflate data"), "{err}");
    }
}
