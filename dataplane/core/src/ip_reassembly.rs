//! IP reassembly of TCP fragments, free of I/O, as a stateful firewall does it ("virtual
//! reassembly"): the fragments of a datagram are held until all have arrived, and then both
//! the whole datagram (for the proxy, which must see whole segments) and the original
//! fragments (for flows forwarded as they are) are at hand.
//!
//! Bounded in every way a sender controls: datagrams in progress, frame bytes held, the
//! reassembled length, fragments per datagram, and time. Whatever goes over a bound, overlaps
//! (RFC 5722 for IPv6; modern IPv4 stacks and firewalls do the same), or carries a first
//! fragment too short for the whole TCP header (RFC 1858) is dropped whole and counted.
//!
//! The table holds whatever the caller gives it for each fragment (an mbuf in the data plane,
//! bytes in tests) and reads the frame's bytes through `AsRef<[u8]>`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::wire::checksum;
use crate::wire::ethernet::{EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ip::{PROTO_IPV6_FRAG, PROTO_TCP};
use crate::wire::{Ipv4Packet, Ipv6Packet};

/// Smallest TCP header; a first fragment must carry at least this much (RFC 1858), and all of
/// the header its data offset announces when that much is there to read.
const TCP_MIN_HEADER: usize = 20;

/// The bounds, from `[reassembly]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// How long the first fragment of a datagram waits for the rest.
    pub timeout_ms: u64,
    /// Datagrams in progress at once, per worker.
    pub max_datagrams: usize,
    /// Frame bytes held in fragments, per worker.
    pub max_held_bytes: usize,
    /// Longest datagram (IP header included) reassembled.
    pub max_datagram_len: usize,
    /// Fragments one datagram may arrive in.
    pub max_fragments: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            timeout_ms: 3_000,
            max_datagrams: 1024,
            max_held_bytes: 4 << 20,
            max_datagram_len: 65_535,
            max_fragments: 64,
        }
    }
}

/// What identifies the fragments of one datagram: RFC 791's (source, destination, protocol,
/// identification) for IPv4, RFC 8200's (source, destination, identification) for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatagramKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IPv4 protocol; 0 for IPv6, whose key leaves it out.
    pub protocol: u8,
    pub id: u32,
}

/// One fragment of a TCP datagram, located in its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    pub key: DatagramKey,
    /// Where the IP header starts.
    pub l3_offset: usize,
    /// The IPv6 fragment header's offset from the IP header (0 for IPv4).
    frag_header: usize,
    /// Offset from the IP header of the byte holding the next-header field that names the
    /// fragment header (IPv6).
    next_header_at: usize,
    /// Where the fragment's data starts in the frame.
    pub data_offset: usize,
    pub data_len: usize,
    /// Where the data goes in the datagram's fragmentable part.
    pub offset: usize,
    pub more: bool,
}

impl FragmentInfo {
    /// The header before the fragmentable part: the IPv4 header, or the IPv6 header and the
    /// extension headers before the fragment header.
    fn unfragmentable_len(&self) -> usize {
        self.data_offset - self.l3_offset - self.frag_header_len()
    }

    fn frag_header_len(&self) -> usize {
        if self.frag_header == 0 {
            0
        } else {
            crate::wire::ipv6::FRAGMENT_HEADER_LEN
        }
    }

    fn end(&self) -> usize {
        self.offset + self.data_len
    }
}

/// Reads a frame as a fragment of a TCP datagram; `None` for anything else (whole packets,
/// fragments of other protocols, frames that do not parse). Atomic fragments (offset 0, no
/// more to come) are whole datagrams and `None` too.
pub fn tcp_fragment(frame: &[u8]) -> Option<FragmentInfo> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    let l3_offset = ethernet.header_len();
    let l3 = ethernet.payload();
    match ethernet.ethertype() {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            let offset = usize::from(ip.fragment_offset());
            if ip.protocol() != PROTO_TCP || (offset == 0 && !ip.more_fragments()) {
                return None;
            }
            Some(FragmentInfo {
                key: DatagramKey {
                    src: IpAddr::V4(ip.src()),
                    dst: IpAddr::V4(ip.dst()),
                    protocol: PROTO_TCP,
                    id: u32::from(ip.identification()),
                },
                l3_offset,
                frag_header: 0,
                next_header_at: 0,
                data_offset: l3_offset + ip.header_len(),
                data_len: usize::from(ip.total_len()) - ip.header_len(),
                offset,
                more: ip.more_fragments(),
            })
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(l3).ok()?;
            let mut next_header_at = 6;
            for header in ip.extension_headers() {
                let header = header.ok()?;
                if header.protocol != PROTO_IPV6_FRAG {
                    next_header_at = header.offset;
                    continue;
                }
                let field = u16::from_be_bytes([header.bytes[2], header.bytes[3]]);
                let offset = usize::from(field & 0xfff8);
                let more = field & 1 != 0;
                if header.next_header != PROTO_TCP || (offset == 0 && !more) {
                    return None;
                }
                let data_start = header.offset + header.bytes.len();
                return Some(FragmentInfo {
                    key: DatagramKey {
                        src: IpAddr::V6(ip.src()),
                        dst: IpAddr::V6(ip.dst()),
                        protocol: 0,
                        id: u32::from_be_bytes(header.bytes[4..8].try_into().ok()?),
                    },
                    l3_offset,
                    frag_header: header.offset,
                    next_header_at,
                    data_offset: l3_offset + data_start,
                    data_len: ip.total_len() - data_start,
                    offset,
                    more,
                });
            }
            None
        }
        _ => None,
    }
}

/// Why a datagram's fragments were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentDrop {
    /// Not all fragments arrived within the timeout.
    Timeout,
    /// Two fragments covered some of the same bytes differently.
    Overlap,
    /// The same fragment again: only it is dropped, the datagram goes on.
    Duplicate,
    /// Longer than the longest datagram reassembled, or in too many fragments.
    TooBig,
    /// Every slot for a datagram in progress was taken.
    TableFull,
    /// Holding the fragment would pass the bytes held.
    Memory,
    /// A first fragment without the whole TCP header, or one at offset 8 (RFC 1858).
    TinyFirst,
    /// Fragments that cannot make one datagram: two different ends, data past the end, a
    /// fragment other than the last whose length is not a multiple of 8.
    Invalid,
}

/// What became of a fragment given to [`FragmentTable::insert`].
#[derive(Debug)]
pub enum Outcome<H> {
    /// Held until the rest arrives.
    Held,
    /// The last missing fragment arrived.
    Complete(Reassembled<H>),
    /// These frames (the fragment given and, unless a duplicate, the datagram's others) are
    /// dropped.
    Dropped(FragmentDrop, Vec<H>),
}

struct Piece<H> {
    info: FragmentInfo,
    frame: H,
}

struct Datagram<H> {
    /// In arrival order.
    pieces: Vec<Piece<H>>,
    /// Set by the last fragment.
    total: Option<usize>,
    received: usize,
    held_bytes: usize,
    /// Tells this datagram from a later one with the same key, for the expiry queue.
    serial: u64,
}

/// A datagram whose fragments have all arrived.
#[derive(Debug)]
pub struct Reassembled<H> {
    /// The fragments, in arrival order, for forwarding as they came.
    pub fragments: Vec<H>,
    infos: Vec<FragmentInfo>,
    /// Index in `fragments` of the one at offset 0.
    pub first: usize,
    len: usize,
}

impl<H: AsRef<[u8]>> Reassembled<H> {
    /// The length of the whole frame [`write_frame`](Self::write_frame) writes.
    pub fn frame_len(&self) -> usize {
        let first = &self.infos[self.first];
        first.l3_offset + first.unfragmentable_len() + self.len
    }

    /// Writes the whole datagram as one frame: the first fragment's link-layer and
    /// unfragmentable headers (without the IPv6 fragment header, with the lengths, flags and
    /// checksum of an unfragmented packet), then the fragments' data in order.
    pub fn write_frame(&self, out: &mut Vec<u8>) {
        out.clear();
        let first = &self.infos[self.first];
        let frame = self.fragments[self.first].as_ref();
        let l3 = first.l3_offset;
        let unfragmentable = first.unfragmentable_len();
        if first.frag_header == 0 {
            out.extend_from_slice(&frame[..l3 + unfragmentable]);
        } else {
            out.extend_from_slice(&frame[..l3 + first.frag_header]);
            // What the fragment header said follows it, in the header that named it.
            out[l3 + first.next_header_at] = frame[l3 + first.frag_header];
        }
        let mut order: Vec<usize> = (0..self.infos.len()).collect();
        order.sort_unstable_by_key(|&i| self.infos[i].offset);
        for i in order {
            let info = &self.infos[i];
            let data = &self.fragments[i].as_ref()[info.data_offset..][..info.data_len];
            out.extend_from_slice(data);
        }
        let ip = &mut out[l3..];
        if first.frag_header == 0 {
            let total = (unfragmentable + self.len) as u16;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            // Keep DF, clear MF and the offset.
            ip[6] &= 0x40;
            ip[7] = 0;
            ip[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum::checksum(&ip[..unfragmentable]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        } else {
            let payload = (unfragmentable - 40 + self.len) as u16;
            ip[4..6].copy_from_slice(&payload.to_be_bytes());
        }
    }
}

/// A worker's datagrams in progress.
pub struct FragmentTable<H> {
    config: ReassemblyConfig,
    datagrams: HashMap<DatagramKey, Datagram<H>>,
    /// (deadline, key, serial), in deadline order since the timeout is one for all.
    deadlines: VecDeque<(u64, DatagramKey, u64)>,
    held_bytes: usize,
    next_serial: u64,
    pub counters: ReassemblyCounters,
}

impl<H: AsRef<[u8]>> FragmentTable<H> {
    pub fn new(config: ReassemblyConfig) -> FragmentTable<H> {
        FragmentTable {
            config,
            datagrams: HashMap::new(),
            deadlines: VecDeque::new(),
            held_bytes: 0,
            next_serial: 0,
            counters: ReassemblyCounters::default(),
        }
    }

    /// Datagrams in progress.
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Frame bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Takes one fragment, read by [`tcp_fragment`] from `frame`.
    pub fn insert(&mut self, info: FragmentInfo, frame: H, now_ms: u64) -> Outcome<H> {
        self.counters.fragments += 1;
        let size = frame.as_ref().len();
        let end = info.end();
        let reason = if info.offset == 8 || (info.offset == 0 && !carries_tcp_header(&info, &frame))
        {
            Some(FragmentDrop::TinyFirst)
        } else if info.data_len == 0 || (info.more && !info.data_len.is_multiple_of(8)) {
            Some(FragmentDrop::Invalid)
        } else if info.data_offset - info.l3_offset - info.frag_header_len() + end
            > self.config.max_datagram_len
        {
            Some(FragmentDrop::TooBig)
        } else {
            None
        };
        if let Some(reason) = reason {
            return self.drop_datagram(&info.key, reason, frame);
        }
        if !self.datagrams.contains_key(&info.key) {
            if self.datagrams.len() >= self.config.max_datagrams {
                return self.drop_fragment(FragmentDrop::TableFull, frame);
            }
            if self.held_bytes + size > self.config.max_held_bytes {
                return self.drop_fragment(FragmentDrop::Memory, frame);
            }
            let serial = self.next_serial;
            self.next_serial += 1;
            self.datagrams.insert(
                info.key,
                Datagram {
                    pieces: Vec::new(),
                    total: None,
                    received: 0,
                    held_bytes: 0,
                    serial,
                },
            );
            self.deadlines
                .push_back((now_ms + self.config.timeout_ms, info.key, serial));
        }
        let datagram = self.datagrams.get(&info.key).expect("present");
        let mut verdict = None;
        for piece in &datagram.pieces {
            let (o, e) = (piece.info.offset, piece.info.end());
            if info.offset < e && o < end {
                verdict = Some(if (o, e) == (info.offset, end) {
                    FragmentDrop::Duplicate
                } else {
                    FragmentDrop::Overlap
                });
                break;
            }
        }
        if verdict.is_none() {
            let total = if info.more { datagram.total } else { Some(end) };
            verdict = if datagram.total.is_some_and(|t| Some(t) != total)
                || total
                    .is_some_and(|t| end > t || datagram.pieces.iter().any(|p| p.info.end() > t))
            {
                Some(FragmentDrop::Invalid)
            } else if datagram.pieces.len() >= self.config.max_fragments {
                Some(FragmentDrop::TooBig)
            } else if self.held_bytes + size > self.config.max_held_bytes {
                Some(FragmentDrop::Memory)
            } else {
                None
            };
        }
        match verdict {
            Some(FragmentDrop::Duplicate) => {
                return self.drop_fragment(FragmentDrop::Duplicate, frame)
            }
            Some(reason) => return self.drop_datagram(&info.key, reason, frame),
            None => {}
        }
        self.held_bytes += size;
        let datagram = self.datagrams.get_mut(&info.key).expect("present");
        datagram.held_bytes += size;
        datagram.received += info.data_len;
        if !info.more {
            datagram.total = Some(end);
        }
        datagram.pieces.push(Piece { info, frame });
        let complete = datagram.total == Some(datagram.received)
            && datagram.pieces.iter().any(|p| p.info.offset == 0);
        if !complete {
            return Outcome::Held;
        }
        let datagram = self.remove(&info.key).expect("present");
        self.counters.reassembled += 1;
        let len = datagram.received;
        let (infos, fragments): (Vec<_>, Vec<_>) = datagram
            .pieces
            .into_iter()
            .map(|p| (p.info, p.frame))
            .unzip();
        let first = infos.iter().position(|i| i.offset == 0).expect("complete");
        Outcome::Complete(Reassembled {
            fragments,
            infos,
            first,
            len,
        })
    }

    /// Drops the datagrams whose time is up, handing their frames to `dropped`.
    pub fn expire(&mut self, now_ms: u64, mut dropped: impl FnMut(H)) {
        while let Some(&(deadline, key, serial)) = self.deadlines.front() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop_front();
            if self.datagrams.get(&key).is_some_and(|d| d.serial == serial) {
                let datagram = self.remove(&key).expect("present");
                self.counters.timeout += 1;
                for piece in datagram.pieces {
                    dropped(piece.frame);
                }
            }
        }
    }

    fn remove(&mut self, key: &DatagramKey) -> Option<Datagram<H>> {
        let datagram = self.datagrams.remove(key)?;
        self.held_bytes -= datagram.held_bytes;
        // Forget a deadline at the front at once; others go when they come up.
        if self.datagrams.is_empty() {
            self.deadlines.clear();
        }
        Some(datagram)
    }

    fn drop_fragment(&mut self, reason: FragmentDrop, frame: H) -> Outcome<H> {
        self.count(reason);
        Outcome::Dropped(reason, vec![frame])
    }

    fn drop_datagram(&mut self, key: &DatagramKey, reason: FragmentDrop, frame: H) -> Outcome<H> {
        self.count(reason);
        let mut frames = vec![frame];
        if let Some(datagram) = self.remove(key) {
            frames.extend(datagram.pieces.into_iter().map(|p| p.frame));
        }
        Outcome::Dropped(reason, frames)
    }

    fn count(&mut self, reason: FragmentDrop) {
        let c = &mut self.counters;
        *match reason {
            FragmentDrop::Timeout => &mut c.timeout,
            FragmentDrop::Overlap => &mut c.overlap,
            FragmentDrop::Duplicate => &mut c.duplicate,
            FragmentDrop::TooBig => &mut c.too_big,
            FragmentDrop::TableFull => &mut c.table_full,
            FragmentDrop::Memory => &mut c.memory,
            FragmentDrop::TinyFirst => &mut c.tiny_first,
            FragmentDrop::Invalid => &mut c.invalid,
        } += 1;
    }
}

/// A first fragment must hold the whole TCP header: its 20 fixed bytes, and the options its
/// data offset announces.
fn carries_tcp_header<H: AsRef<[u8]>>(info: &FragmentInfo, frame: &H) -> bool {
    if info.data_len < TCP_MIN_HEADER {
        return false;
    }
    let data_offset_byte = frame.as_ref()[info.data_offset + 12];
    usize::from(data_offset_byte >> 4) * 4 <= info.data_len
}

/// IP reassembly of TCP fragments (`[reassembly]`): fragments taken, datagrams completed, and
/// datagrams (or, for duplicates and a full table, single fragments) dropped, by why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReassemblyCounters {
    /// TCP fragments taken into reassembly.
    pub fragments: u64,
    /// Datagrams whose fragments all arrived.
    pub reassembled: u64,
    /// Datagrams not complete within `reassembly.timeout_ms`.
    pub timeout: u64,
    /// Datagrams with fragments that overlap (RFC 5722).
    pub overlap: u64,
    /// Fragments that repeated one already held (dropped alone).
    pub duplicate: u64,
    /// Datagrams longer than `reassembly.max_datagram_len`, in more than
    /// `reassembly.max_fragments` fragments, or too long for one packet buffer.
    pub too_big: u64,
    /// Fragments of new datagrams that found `reassembly.max_datagrams` in progress.
    pub table_full: u64,
    /// Datagrams whose next fragment would have passed `reassembly.max_held_bytes`.
    pub memory: u64,
    /// Datagrams whose first fragment lacked the whole TCP header, or with a fragment at
    /// offset 8 (RFC 1858).
    pub tiny_first: u64,
    /// Datagrams whose fragments contradict each other (two ends, data past the end, a
    /// non-last fragment not a multiple of 8 bytes).
    pub invalid: u64,
}

impl ReassemblyCounters {
    pub fn add(&mut self, o: &ReassemblyCounters) {
        let ReassemblyCounters {
            fragments,
            reassembled,
            timeout,
            overlap,
            duplicate,
            too_big,
            table_full,
            memory,
            tiny_first,
            invalid,
        } = *o;
        self.fragments += fragments;
        self.reassembled += reassembled;
        self.timeout += timeout;
        self.overlap += overlap;
        self.duplicate += duplicate;
        self.too_big += too_big;
        self.table_full += table_full;
        self.memory += memory;
        self.tiny_first += tiny_first;
        self.invalid += invalid;
    }

    pub fn render(&self, out: &mut String) {
        // Destructured, so a counter added later fails to compile until it is shown here.
        let ReassemblyCounters {
            fragments,
            reassembled,
            timeout,
            overlap,
            duplicate,
            too_big,
            table_full,
            memory,
            tiny_first,
            invalid,
        } = *self;
        let _ = writeln!(
            out,
            "reassembly: {fragments} TCP fragments, {reassembled} datagrams reassembled; dropped: \
             {timeout} timed out, {overlap} overlapping, {duplicate} duplicate fragments, \
             {too_big} too big, {table_full} table full, {memory} over the memory bound, \
             {tiny_first} tiny first fragments, {invalid} invalid"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Inbound;
    use crate::synth::{self, Addressing, TcpHeader};
    use crate::wire::parse_frame;
    use crate::wire::tcp::flags;

    fn v4() -> Addressing {
        Addressing::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.2:443".parse().unwrap(),
        )
    }

    fn v6() -> Addressing {
        Addressing::new(
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:443".parse().unwrap(),
        )
    }

    fn segment(a: &Addressing, len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        synth::tcp(
            a,
            TcpHeader {
                flags: flags::ACK,
                seq: 1000,
                ack: 2000,
                ..Default::default()
            },
            &payload,
        )
    }

    fn table() -> FragmentTable<Vec<u8>> {
        FragmentTable::new(ReassemblyConfig::default())
    }

    /// Feeds the fragments in `order`; returns the whole frame once complete.
    fn feed(t: &mut FragmentTable<Vec<u8>>, frags: &[Vec<u8>], order: &[usize]) -> Option<Vec<u8>> {
        let mut whole = None;
        for &i in order {
            let info = tcp_fragment(&frags[i]).expect("a TCP fragment");
            match t.insert(info, frags[i].clone(), 0) {
                Outcome::Held => {}
                Outcome::Complete(r) => {
                    assert_eq!(r.fragments[r.first], frags[0], "offset 0 is the first");
                    let mut out = Vec::new();
                    r.write_frame(&mut out);
                    assert_eq!(out.len(), r.frame_len());
                    whole = Some(out);
                }
                Outcome::Dropped(reason, _) => panic!("dropped: {reason:?}"),
            }
        }
        whole
    }

    /// The datagram `whole` was, as its fragments' sender would have sent it unfragmented:
    /// with their IPv4 identification, and without DF, which a fragment cannot carry.
    fn as_fragmented(whole: &[u8], id: u16) -> Vec<u8> {
        let mut frame = whole.to_vec();
        if frame[12..14] == [0x08, 0x00] {
            let ip = &mut frame[14..34];
            ip[4..6].copy_from_slice(&id.to_be_bytes());
            ip[6] = 0;
            ip[10..12].copy_from_slice(&[0, 0]);
            let sum = checksum::checksum(ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        frame
    }

    #[test]
    fn fragments_in_order_and_out_of_order_give_back_the_segment_exactly() {
        for a in [v4(), v6()] {
            let whole = segment(&a, 3000);
            let frags = synth::fragments(&whole, 1232, 7);
            assert_eq!(frags.len(), 3);
            for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
                let mut t = table();
                let out = feed(&mut t, &frags, &order).expect("complete");
                assert!(out == as_fragmented(&whole, 7), "{order:?}");
                assert!(Inbound::read(&out).is_ok(), "the proxy takes it");
                assert!(t.is_empty());
                assert_eq!(t.held_bytes(), 0);
                assert_eq!(t.counters.fragments, 3);
                assert_eq!(t.counters.reassembled, 1);
            }
        }
    }

    #[test]
    fn other_frames_are_not_fragments_for_reassembly() {
        for a in [v4(), v6()] {
            let whole = segment(&a, 100);
            assert_eq!(tcp_fragment(&whole), None);
            assert_eq!(tcp_fragment(&synth::udp(&a, b"x")), None);
            let udp = synth::fragments(&synth::udp(&a, &[0; 100]), 48, 1);
            assert!(udp.iter().all(|f| tcp_fragment(f).is_none()));
            // A single fragment holding the whole datagram (an atomic fragment).
            let atomic = synth::fragments(&whole, 4096, 1);
            assert_eq!(atomic.len(), 1);
            assert_eq!(tcp_fragment(&atomic[0]), None);
        }
    }

    #[test]
    fn a_duplicate_is_dropped_alone_and_the_datagram_completes() {
        for a in [v4(), v6()] {
            let whole = segment(&a, 2000);
            let frags = synth::fragments(&whole, 800, 9);
            let mut t = table();
            let info = tcp_fragment(&frags[1]).unwrap();
            assert!(matches!(t.insert(info, frags[1].clone(), 0), Outcome::Held));
            let Outcome::Dropped(FragmentDrop::Duplicate, frames) =
                t.insert(info, frags[1].clone(), 0)
            else {
                panic!("a duplicate");
            };
            assert_eq!(frames.len(), 1);
            assert!(feed(&mut t, &frags, &[0, 2]).unwrap() == as_fragmented(&whole, 9));
            assert_eq!(t.counters.duplicate, 1);
            assert_eq!(t.counters.reassembled, 1);
        }
    }

    #[test]
    fn overlapping_fragments_drop_the_whole_datagram() {
        for a in [v4(), v6()] {
            let whole = segment(&a, 2000);
            let frags = synth::fragments(&whole, 800, 9);
            let shifted = synth::fragments(&whole, 808, 9);
            let mut t = table();
            for f in &frags[..2] {
                assert!(matches!(
                    t.insert(tcp_fragment(f).unwrap(), f.clone(), 0),
                    Outcome::Held
                ));
            }
            // Starts inside the second fragment's data.
            let Outcome::Dropped(FragmentDrop::Overlap, frames) =
                t.insert(tcp_fragment(&shifted[1]).unwrap(), shifted[1].clone(), 0)
            else {
                panic!("an overlap");
            };
            assert_eq!(frames.len(), 3, "the datagram's fragments go with it");
            assert!(t.is_empty());
            assert_eq!(t.held_bytes(), 0);
            assert_eq!(t.counters.overlap, 1);
            // What comes after it starts a new datagram, which never completes.
            assert!(matches!(
                t.insert(tcp_fragment(&frags[2]).unwrap(), frags[2].clone(), 0),
                Outcome::Held
            ));
        }
    }

    #[test]
    fn an_incomplete_datagram_times_out_and_its_frames_come_back() {
        let whole = segment(&v6(), 2000);
        let frags = synth::fragments(&whole, 800, 9);
        let mut t = table();
        let timeout = ReassemblyConfig::default().timeout_ms;
        for f in &frags[..2] {
            t.insert(tcp_fragment(f).unwrap(), f.clone(), 10);
        }
        let mut dropped = 0;
        t.expire(10 + timeout - 1, |_| dropped += 1);
        assert_eq!((dropped, t.len()), (0, 1));
        t.expire(10 + timeout, |_| dropped += 1);
        assert_eq!((dropped, t.len()), (2, 0));
        assert_eq!(t.counters.timeout, 1);
        assert_eq!(t.held_bytes(), 0);
        // The last fragment, late, starts over and does not complete anything.
        assert!(matches!(
            t.insert(
                tcp_fragment(&frags[2]).unwrap(),
                frags[2].clone(),
                10 + timeout
            ),
            Outcome::Held
        ));
    }

    #[test]
    fn a_datagram_completed_before_its_deadline_leaves_nothing_to_expire() {
        let timeout = ReassemblyConfig::default().timeout_ms;
        let frags = synth::fragments(&segment(&v4(), 2000), 800, 9);
        let other = synth::fragments(&segment(&v4(), 2000), 800, 10);
        let mut t = table();
        t.insert(tcp_fragment(&other[0]).unwrap(), other[0].clone(), 0);
        feed(&mut t, &frags, &[0, 1, 2]).expect("complete");
        // The same key again, a millisecond later: a new datagram, with its own deadline.
        t.insert(tcp_fragment(&frags[0]).unwrap(), frags[0].clone(), 1);
        let mut dropped = 0;
        t.expire(timeout, |_| dropped += 1);
        assert_eq!(
            (dropped, t.len()),
            (1, 1),
            "only the other datagram's time is up"
        );
        t.expire(timeout + 1, |_| dropped += 1);
        assert_eq!((dropped, t.len(), t.counters.timeout), (2, 0, 2));
    }

    #[test]
    fn tiny_first_fragments_are_dropped_per_rfc_1858() {
        for a in [v4(), v6()] {
            // 16 bytes of TCP header in the first fragment.
            let whole = segment(&a, 100);
            let frags = synth::fragments(&whole, 16, 3);
            let mut t = table();
            let Outcome::Dropped(FragmentDrop::TinyFirst, _) =
                t.insert(tcp_fragment(&frags[0]).unwrap(), frags[0].clone(), 0)
            else {
                panic!("tiny");
            };
            // A fragment at offset 8 would rewrite the flags of a header already checked.
            let frags = synth::fragments(&whole, 8, 3);
            let Outcome::Dropped(FragmentDrop::TinyFirst, _) =
                t.insert(tcp_fragment(&frags[1]).unwrap(), frags[1].clone(), 0)
            else {
                panic!("offset 8");
            };
            assert_eq!(t.counters.tiny_first, 2);
        }
    }

    #[test]
    fn each_bound_holds_and_is_counted() {
        let a = v6();
        let frags_of =
            |id: u32, len: usize, size: usize| synth::fragments(&segment(&a, len), size, id);
        // Datagrams in progress.
        let mut t = FragmentTable::new(ReassemblyConfig {
            max_datagrams: 2,
            ..Default::default()
        });
        for id in 0..3 {
            let f = &frags_of(id, 2000, 800)[0];
            let outcome = t.insert(tcp_fragment(f).unwrap(), f.clone(), 0);
            assert_eq!(matches!(outcome, Outcome::Held), id < 2);
        }
        assert_eq!((t.len(), t.counters.table_full), (2, 1));
        // Bytes held.
        let mut t = FragmentTable::new(ReassemblyConfig {
            max_held_bytes: 2000,
            ..Default::default()
        });
        let f = frags_of(1, 3000, 800);
        assert!(matches!(
            t.insert(tcp_fragment(&f[0]).unwrap(), f[0].clone(), 0),
            Outcome::Held
        ));
        assert!(matches!(
            t.insert(tcp_fragment(&f[1]).unwrap(), f[1].clone(), 0),
            Outcome::Held
        ));
        let Outcome::Dropped(FragmentDrop::Memory, frames) =
            t.insert(tcp_fragment(&f[2]).unwrap(), f[2].clone(), 0)
        else {
            panic!("over the bytes held");
        };
        assert_eq!(frames.len(), 3);
        assert_eq!((t.held_bytes(), t.counters.memory), (0, 1));
        // The reassembled length.
        let mut t = FragmentTable::new(ReassemblyConfig {
            max_datagram_len: 1500,
            ..Default::default()
        });
        let f = frags_of(2, 1600, 800);
        assert!(matches!(
            t.insert(tcp_fragment(&f[0]).unwrap(), f[0].clone(), 0),
            Outcome::Held
        ));
        let Outcome::Dropped(FragmentDrop::TooBig, frames) =
            t.insert(tcp_fragment(&f[2]).unwrap(), f[2].clone(), 0)
        else {
            panic!("too long");
        };
        assert_eq!((frames.len(), t.counters.too_big), (2, 1));
        // Fragments per datagram.
        let mut t = FragmentTable::new(ReassemblyConfig {
            max_fragments: 4,
            ..Default::default()
        });
        let f = frags_of(3, 1000, 200);
        for (i, frag) in f.iter().enumerate().take(5) {
            let outcome = t.insert(tcp_fragment(frag).unwrap(), frag.clone(), 0);
            assert_eq!(matches!(outcome, Outcome::Held), i < 4, "fragment {i}");
        }
        assert_eq!(t.counters.too_big, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn fragments_that_cannot_make_one_datagram_are_invalid() {
        let whole = segment(&v4(), 2000);
        let frags = synth::fragments(&whole, 800, 9);
        let mut t = table();
        t.insert(tcp_fragment(&frags[2]).unwrap(), frags[2].clone(), 0);
        // A second last fragment, ending elsewhere.
        let shorter = synth::fragments(&segment(&v4(), 1580), 800, 9);
        let Outcome::Dropped(FragmentDrop::Invalid, frames) =
            t.insert(tcp_fragment(&shorter[1]).unwrap(), shorter[1].clone(), 0)
        else {
            panic!("two ends");
        };
        assert_eq!(frames.len(), 2);
        assert_eq!(t.counters.invalid, 1);
    }

    #[test]
    fn the_reassembled_frame_parses_as_one_whole_packet() {
        for a in [v4(), v6()] {
            let whole = segment(&a, 1400);
            let frags = synth::fragments(&whole, 600, 5);
            let out = feed(&mut table(), &frags, &[1, 0, 2]).unwrap();
            let ip = parse_frame(&out).unwrap().ip.unwrap();
            assert_eq!(ip.fragment, crate::wire::Fragment::None);
            assert_eq!(ip.ports, Some((40000, 443)));
        }
    }
}
