//! Raw deflate streams: inflating one to check it (zip entries, gzip members) and to find
//! where it ends, and the CRC-32 both formats use.

use std::io::Write;

use flate2::{Crc, Decompress, FlushDecompress, Status};

use super::{Fail, Input, Kind, wr};

/// What inflating a stream found.
#[derive(Debug)]
pub(super) struct Inflated {
    /// Compressed bytes the stream took.
    pub(super) consumed: u64,
    /// CRC-32 of the inflated bytes.
    pub(super) crc: u32,
    /// How many bytes it inflated to.
    pub(super) size: u64,
}

const CHUNK: usize = 64 * 1024;

/// Inflates the raw deflate stream at `start`, reading no further than `limit`, and passes
/// the inflated bytes to `sink`. Fails as a corrupt `kind` archive if the stream is invalid,
/// does not end before `limit`, or inflates to more than `max_size` bytes (a zip entry's
/// stated size: no need to inflate a bomb to its end to know it lies).
pub(super) fn inflate(
    input: &Input,
    start: u64,
    limit: u64,
    max_size: u64,
    sink: &mut dyn Write,
    kind: Kind,
) -> Result<Inflated, Fail> {
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
            let n = input.read_at(next, &mut inbuf[..want])?;
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
                Fail::Corrupt(
                    kind,
                    format!("invalid deflate data in the stream at offset {start}: {e}"),
                )
            })?;
        let used = (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        ibeg += used;
        crc.update(&outbuf[..produced]);
        size += produced as u64;
        if size > max_size {
            return Err(Fail::Corrupt(
                kind,
                format!(
                    "the deflate stream at offset {start} inflates to more than {max_size} bytes"
                ),
            ));
        }
        wr(sink, &outbuf[..produced])?;
        match status {
            Status::StreamEnd => break,
            _ if used == 0 && produced == 0 && (eof || ibeg < iend) => {
                return Err(Fail::Corrupt(
                    kind,
                    format!("truncated deflate stream at offset {start}"),
                ));
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
pub(super) fn crc32(data: &[u8]) -> u32 {
    let mut crc = Crc::new();
    crc.update(data);
    crc.sum()
}
