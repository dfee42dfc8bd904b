//! Classic libpcap capture files (the format `tcpdump -w` writes; not pcapng), as Pktgen-DPDK's
//! `-s P:file` replay, DPDK's `net_pcap` driver, tcpdump and Wireshark read them.
//!
//! A file is a 24-byte global header, then one record per frame: a 16-byte record header
//! (seconds, microseconds, bytes captured, bytes on the wire) and the frame's bytes, from the
//! destination MAC to the end of the payload, without the 4-byte FCS. [`PcapWriter`] writes
//! little-endian files with microsecond timestamps and link type Ethernet; [`read`] reads
//! either byte order and microsecond or nanosecond timestamps.

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

/// The magic number of a file with microsecond timestamps, in its writer's byte order.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// The magic number of a file with nanosecond timestamps.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
pub const VERSION_MAJOR: u16 = 2;
pub const VERSION_MINOR: u16 = 4;
/// LINKTYPE_ETHERNET: records start with an Ethernet header.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// The largest record this writer's files announce.
pub const SNAPLEN: u32 = 65_535;
pub const GLOBAL_HEADER_LEN: usize = 24;
pub const RECORD_HEADER_LEN: usize = 16;

/// The global header of a little-endian, microsecond, Ethernet file.
pub fn global_header() -> [u8; GLOBAL_HEADER_LEN] {
    let mut h = [0u8; GLOBAL_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_MICROS.to_le_bytes());
    h[4..6].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    h[6..8].copy_from_slice(&VERSION_MINOR.to_le_bytes());
    // 8..12: time zone offset, 12..16: timestamp accuracy; both 0 as every writer does.
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// Writes frames into a capture file, each whole (captured length = length on the wire).
pub struct PcapWriter<W: Write> {
    out: W,
    frames: u64,
    bytes: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header.
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        out.write_all(&global_header())?;
        Ok(PcapWriter {
            out,
            frames: 0,
            bytes: 0,
        })
    }

    /// Appends one frame, stamped `at` after the epoch.
    pub fn write(&mut self, at: Duration, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l <= SNAPLEN)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a {}-byte frame is over the {SNAPLEN}-byte snap length",
                        frame.len()
                    ),
                )
            })?;
        let secs = u32::try_from(at.as_secs()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a timestamp past 2106 does not fit a pcap record",
            )
        })?;
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&at.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(frame)?;
        self.frames += 1;
        self.bytes += u64::from(len);
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frame bytes written so far (record headers not counted).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and hands the output back.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One record of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The timestamp, after the epoch.
    pub at: Duration,
    /// The frame's length on the wire; `data` may be shorter if the capture cut it.
    pub orig_len: u32,
    pub data: &'a [u8],
}

/// A file [`read`] cannot make sense of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcapError {
    /// Shorter than a global header.
    NoHeader,
    /// Not a classic pcap file (pcapng starts with 0x0a0d0d0a).
    BadMagic(u32),
    /// Not Ethernet.
    LinkType(u32),
    /// Record `index` (from 0) runs past the end of the file.
    Truncated { index: usize },
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::NoHeader => write!(f, "shorter than a pcap global header (24 bytes)"),
            PcapError::BadMagic(m) => write!(
                f,
                "magic number {m:#010x} is not a classic pcap file's (a pcapng file? convert it with editcap -F pcap)"
            ),
            PcapError::LinkType(t) => write!(f, "link type {t}, not Ethernet (1)"),
            PcapError::Truncated { index } => {
                write!(f, "record {index} runs past the end of the file")
            }
        }
    }
}

impl std::error::Error for PcapError {}

/// The records of a whole capture file held in memory.
pub fn read(file: &[u8]) -> Result<Vec<Record<'_>>, PcapError> {
    let header = file.get(..GLOBAL_HEADER_LEN).ok_or(PcapError::NoHeader)?;
    let word = |b: &[u8], at: usize, big: bool| {
        let w: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        if big {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    let magic = word(header, 0, false);
    let (big, nanos) = match magic {
        MAGIC_MICROS => (false, false),
        MAGIC_NANOS => (false, true),
        m if m.swap_bytes() == MAGIC_MICROS => (true, false),
        m if m.swap_bytes() == MAGIC_NANOS => (true, true),
        m => return Err(PcapError::BadMagic(m)),
    };
    let link = word(header, 20, big);
    if link != LINKTYPE_ETHERNET {
        return Err(PcapError::LinkType(link));
    }
    let mut records = Vec::new();
    let mut at = GLOBAL_HEADER_LEN;
    while at < file.len() {
        let index = records.len();
        let h = file
            .get(at..at + RECORD_HEADER_LEN)
            .ok_or(PcapError::Truncated { index })?;
        let (secs, frac) = (word(h, 0, big), word(h, 4, big));
        let (incl, orig) = (word(h, 8, big) as usize, word(h, 12, big));
        let start = at + RECORD_HEADER_LEN;
        let data = file
            .get(start..start + incl)
            .ok_or(PcapError::Truncated { index })?;
        let frac = if nanos {
            frac
        } else {
            frac.saturating_mul(1000)
        };
        records.push(Record {
            at: Duration::new(u64::from(secs), frac),
            orig_len: orig,
            data,
        });
        at = start + incl;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_header_is_tcpdumps() {
        // What `tcpdump -w` writes on a little-endian machine for an Ethernet capture with
        // snaplen 65535: d4 c3 b2 a1, version 2.4, zone 0, sigfigs 0, 65535, 1.
        assert_eq!(
            global_header(),
            [
                0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0,
                0, 0
            ]
        );
    }

    #[test]
    fn records_are_laid_out_as_libpcap_reads_them() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(Duration::new(1_700_000_000, 1_000), &[0xaa; 60])
            .unwrap();
        w.write(Duration::new(1_700_000_001, 999_999_000), &[0xbb; 1514])
            .unwrap();
        assert_eq!((w.frames(), w.bytes()), (2, 1574));
        let file = w.finish().unwrap();
        assert_eq!(file.len(), 24 + 16 + 60 + 16 + 1514);

        let first = &file[24..40];
        assert_eq!(&first[0..4], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&first[4..8], &1u32.to_le_bytes(), "microseconds");
        assert_eq!(&first[8..12], &60u32.to_le_bytes(), "captured length");
        assert_eq!(&first[12..16], &60u32.to_le_bytes(), "length on the wire");
        assert!(file[40..100].iter().all(|&b| b == 0xaa));
        let second = &file[100..116];
        assert_eq!(&second[4..8], &999_999u32.to_le_bytes());
        assert_eq!(&second[8..12], &1514u32.to_le_bytes());

        let records = read(&file).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].at, Duration::new(1_700_000_000, 1_000));
        assert_eq!(records[1].orig_len, 1514);
        assert_eq!(records[1].data, &[0xbb; 1514][..]);
    }

    #[test]
    fn big_endian_and_nanosecond_files_read_too() {
        let mut file = Vec::new();
        file.extend_from_slice(&MAGIC_NANOS.to_be_bytes());
        file.extend_from_slice(&[
            0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 1,
        ]);
        file.extend_from_slice(&5u32.to_be_bytes());
        file.extend_from_slice(&7u32.to_be_bytes());
        file.extend_from_slice(&3u32.to_be_bytes());
        file.extend_from_slice(&64u32.to_be_bytes());
        file.extend_from_slice(&[1, 2, 3]);
        let records = read(&file).unwrap();
        assert_eq!(
            records,
            vec![Record {
                at: Duration::new(5, 7),
                orig_len: 64,
                data: &[1, 2, 3]
            }]
        );
    }

    #[test]
    fn what_is_not_a_pcap_file_is_told_apart() {
        assert_eq!(read(&[0; 10]), Err(PcapError::NoHeader));
        let mut ng = global_header();
        ng[0..4].copy_from_slice(&0x0a0d_0d0au32.to_le_bytes());
        assert_eq!(read(&ng), Err(PcapError::BadMagic(0x0a0d_0d0a)));
        let mut raw_ip = global_header();
        raw_ip[20] = 101;
        assert_eq!(read(&raw_ip), Err(PcapError::LinkType(101)));
        let mut cut = PcapWriter::new(Vec::new()).unwrap();
        cut.write(Duration::ZERO, &[0; 60]).unwrap();
        let mut cut = cut.finish().unwrap();
        cut.truncate(cut.len() - 1);
        assert_eq!(read(&cut), Err(PcapError::Truncated { index: 0 }));
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        assert!(w.write(Duration::ZERO, &vec![0; 65_536]).is_err());
        assert_eq!(w.frames(), 0);
    }
}
