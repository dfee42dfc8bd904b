//! IPsec over TCP as the `ctcp-peer` emulator speaks it (Cisco cTCP, RFC 8229 and RFC 8229
//! framing without its prefix), as pure functions over byte slices: the TCP header and its
//! checksum, the datagrams of each mode, the check block every datagram body starts with, and
//! the acknowledgement number. No I/O here: `ctcp-peer` sends and receives what this builds
//! and parses, and `pcap-gen` writes it into capture files.

use std::net::Ipv4Addr;

use tollgate_core::wire::ip::PROTO_TCP;
use tollgate_core::wire::{checksum, emit};

/// The MSS both ends announce, and the limit on one segment's payload.
pub const MSS: u16 = 1460;
pub const TCP_HEADER_LEN: usize = 20;
/// A SYN's or SYN-ACK's header: 20 bytes and the 4-byte MSS option.
pub const TCP_SYN_HEADER_LEN: usize = 24;
pub const WINDOW: u16 = 65535;

pub use tollgate_core::wire::tcp::flags::{ACK, FIN, PSH, RST, SYN};

/// cTCP's per-datagram trailer. Its content is opaque to the peer; this emulator writes the
/// datagram's length (2 bytes, big-endian) and 14 zero bytes, and checks that on receipt.
pub const CTCP_TRAILER_LEN: usize = 16;
pub const UDP_HEADER_LEN: usize = 8;
pub const IKE_PORT: u16 = 500;
pub const IKE_HEADER_LEN: usize = 28;
/// RFC 8229 section 3: four zero bytes before an IKE message, where ESP has its SPI.
pub const NON_ESP_MARKER_LEN: usize = 4;
/// RFC 8229 section 3: the initiator's stream prefix.
pub const STREAM_PREFIX: &[u8; 6] = b"IKETCP";
/// RFC 8229's length field counts itself.
pub const FRAME_LEN_LEN: usize = 2;
/// SPI and sequence number.
pub const ESP_HEADER_LEN: usize = 8;
/// The check block at the start of every datagram body (see [`write_body`]).
pub const CHECK_BLOCK_LEN: usize = 20;
/// What the first four bytes of a cTCP IKE datagram are (UDP ports 500 and 500): never an SPI.
pub const CTCP_IKE_MARK: u32 = 0x01f4_01f4;

/// How datagrams are carried in the TCP stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Cisco's IPsec over TCP: IKE in a UDP 500→500 packet, raw ESP, a 16-byte trailer after
    /// each datagram; IKEv1.
    Ctcp,
    /// RFC 8229: the client's stream begins with `IKETCP`; each message has a 2-byte length
    /// (counting itself); IKE after a 4-byte zero non-ESP marker; IKEv2.
    Rfc8229,
    /// RFC 8229 framing without the `IKETCP` prefix; IKEv2.
    Framed,
}

/// What a datagram is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ike = 1,
    Esp = 2,
}

impl Kind {
    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Ike),
            2 => Some(Kind::Esp),
            _ => None,
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

// --- TCP ---------------------------------------------------------------------------------------

/// The fields of a TCP header this emulator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// The MSS option, written on SYN and SYN-ACK only.
    pub mss: Option<u16>,
}

/// The TCP checksum of `segment` (header and payload) over the IPv4 pseudo-header (RFC 793
/// section 3.1). With the checksum field zeroed this is the value to write; over a segment
/// whose field is filled in, it is 0 when the segment is intact.
pub fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    checksum::transport_checksum_v4(src, dst, PROTO_TCP, segment)
}

/// A whole TCP segment (header, the MSS option if asked, payload) with its checksum.
pub fn build_segment(src: Ipv4Addr, dst: Ipv4Addr, h: &TcpHeader, payload: &[u8]) -> Vec<u8> {
    let header_len = if h.mss.is_some() {
        TCP_SYN_HEADER_LEN
    } else {
        TCP_HEADER_LEN
    };
    let mut s = vec![0u8; TCP_HEADER_LEN];
    emit::tcp(&mut s, h.sport, h.dport, h.seq, h.ack, h.flags, h.window);
    s[12] = ((header_len / 4) as u8) << 4;
    if let Some(mss) = h.mss {
        s.extend_from_slice(&[2, 4]);
        s.extend_from_slice(&mss.to_be_bytes());
    }
    s.extend_from_slice(payload);
    let sum = tcp_checksum(src, dst, &s);
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

/// A received IPv4 packet carrying TCP, as the raw socket hands it over (IPv4 header first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: &'a [u8],
    pub payload: &'a [u8],
    pub checksum_ok: bool,
}

/// Parses an IPv4 packet holding a whole TCP segment; `None` for anything else (other
/// protocols, fragments, truncated or inconsistent headers).
pub fn parse_ipv4_tcp(packet: &[u8]) -> Option<Received<'_>> {
    let first = *packet.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 {
        return None;
    }
    let total = usize::from(be16(packet, 2)?);
    let fragment = be16(packet, 6)?;
    if *packet.get(9)? != 6 || fragment & 0x3fff != 0 || total < ihl || total > packet.len() {
        return None;
    }
    let src = Ipv4Addr::from(be32(packet, 12)?);
    let dst = Ipv4Addr::from(be32(packet, 16)?);
    let tcp = &packet[ihl..total];
    let data_offset = usize::from(*tcp.get(12)? >> 4) * 4;
    if data_offset < TCP_HEADER_LEN || data_offset > tcp.len() {
        return None;
    }
    Some(Received {
        src,
        dst,
        sport: be16(tcp, 0)?,
        dport: be16(tcp, 2)?,
        seq: be32(tcp, 4)?,
        ack: be32(tcp, 8)?,
        flags: tcp[13],
        window: be16(tcp, 14)?,
        options: &tcp[TCP_HEADER_LEN..data_offset],
        payload: &tcp[data_offset..],
        checksum_ok: tcp_checksum(src, dst, tcp) == 0,
    })
}

/// The MSS option's value and the kinds of every option, in order (for the report: a proxy's
/// SYN shows its own options).
pub fn tcp_options(options: &[u8]) -> (Option<u16>, Vec<u8>) {
    let (mut mss, mut kinds, mut at) = (None, Vec::new(), 0);
    while let Some(&kind) = options.get(at) {
        match kind {
            0 => break,
            1 => {
                kinds.push(kind);
                at += 1;
            }
            _ => {
                let len = usize::from(*options.get(at + 1).unwrap_or(&0));
                if len < 2 {
                    break;
                }
                kinds.push(kind);
                if kind == 2 && len == 4 {
                    mss = be16(options, at + 2);
                }
                at += len;
            }
        }
    }
    (mss, kinds)
}

/// `a` is before `b` in sequence space (RFC 793's modular comparison).
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The acknowledgement number after receiving `len` bytes at `seq` when it was `ack`: the
/// highest sequence end seen so far, whether or not the bytes before it came (acks go past
/// holes, as cTCP's do).
pub fn ack_after(ack: u32, seq: u32, len: u32) -> u32 {
    let end = seq.wrapping_add(len);
    if seq_lt(ack, end) {
        end
    } else {
        ack
    }
}

// --- Check block -------------------------------------------------------------------------------

/// FNV-1a, 64 bits.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The pseudo-random filler of datagram `index`'s body after the check block (splitmix64
/// seeded with the index, each output written big-endian).
pub fn fill_pattern(index: u32, out: &mut [u8]) {
    let mut state = u64::from(index) ^ 0x6a09_e667_f3bc_c909;
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_be_bytes()[..chunk.len()]);
    }
}

/// A datagram body of `len` bytes (at least [`CHECK_BLOCK_LEN`]): the check block, then the
/// filler of `index`. The check block: the TCP sequence number of the segment carrying the
/// datagram (4 bytes), the datagram's index in its direction (4), its kind (1: IKE, 2: ESP),
/// 3 zero bytes, then the FNV-1a-64 hash of the filler (8), all big-endian.
pub fn write_body(len: usize, tcp_seq: u32, index: u32, kind: Kind) -> Vec<u8> {
    let mut body = vec![0u8; len.max(CHECK_BLOCK_LEN)];
    let (block, filler) = body.split_at_mut(CHECK_BLOCK_LEN);
    fill_pattern(index, filler);
    block[0..4].copy_from_slice(&tcp_seq.to_be_bytes());
    block[4..8].copy_from_slice(&index.to_be_bytes());
    block[8] = kind as u8;
    block[12..20].copy_from_slice(&fnv1a64(filler).to_be_bytes());
    body
}

/// What a body's check block says, and whether the body agrees with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyCheck {
    pub tcp_seq: u32,
    pub index: u32,
    pub kind: Option<Kind>,
    /// Reserved bytes zero, the hash matches the filler and the filler is the index's.
    pub intact: bool,
}

/// Reads and verifies a body's check block; `None` if the body is too short to hold one.
pub fn check_body(body: &[u8]) -> Option<BodyCheck> {
    let block = body.get(..CHECK_BLOCK_LEN)?;
    let filler = &body[CHECK_BLOCK_LEN..];
    let index = be32(block, 4)?;
    let kind = Kind::from_code(block[8]);
    let mut expected = vec![0u8; filler.len()];
    fill_pattern(index, &mut expected);
    let intact = kind.is_some()
        && block[9..12] == [0, 0, 0]
        && be64(block, 12) == Some(fnv1a64(filler))
        && expected == filler;
    Some(BodyCheck {
        tcp_seq: be32(block, 0)?,
        index,
        kind,
        intact,
    })
}

// --- Datagrams ---------------------------------------------------------------------------------

/// An ISAKMP/IKE header (RFC 2408 section 3.1, RFC 7296 section 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeHeader {
    pub initiator_spi: u64,
    pub responder_spi: u64,
    pub next_payload: u8,
    pub version: u8,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
    /// The whole message, header included.
    pub length: u32,
}

/// An IKE message: the header (its length field set to the whole message) and `body`.
pub fn ike_message(header: &IkeHeader, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(IKE_HEADER_LEN + body.len());
    m.extend_from_slice(&header.initiator_spi.to_be_bytes());
    m.extend_from_slice(&header.responder_spi.to_be_bytes());
    m.extend_from_slice(&[
        header.next_payload,
        header.version,
        header.exchange,
        header.flags,
    ]);
    m.extend_from_slice(&header.message_id.to_be_bytes());
    m.extend_from_slice(&((IKE_HEADER_LEN + body.len()) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Splits an IKE message into its header and body (whatever its length field says).
pub fn parse_ike(message: &[u8]) -> Option<(IkeHeader, &[u8])> {
    let h = message.get(..IKE_HEADER_LEN)?;
    Some((
        IkeHeader {
            initiator_spi: be64(h, 0)?,
            responder_spi: be64(h, 8)?,
            next_payload: h[16],
            version: h[17],
            exchange: h[18],
            flags: h[19],
            message_id: be32(h, 20)?,
            length: be32(h, 24)?,
        },
        &message[IKE_HEADER_LEN..],
    ))
}

/// An ESP packet as this emulator sends it: SPI, sequence number, `payload` (no real
/// encryption, padding or ICV).
pub fn esp_packet(spi: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(ESP_HEADER_LEN + payload.len());
    p.extend_from_slice(&spi.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A datagram to send, before its mode's encapsulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outgoing<'a> {
    /// A whole IKE message.
    Ike(&'a [u8]),
    /// A whole ESP packet.
    Esp(&'a [u8]),
}

/// The TCP payload carrying one datagram in `mode`. `prefix`: put `IKETCP` first (the
/// rfc8229 client's first segment).
pub fn encapsulate(mode: Mode, datagram: Outgoing<'_>, prefix: bool) -> Vec<u8> {
    let mut p = Vec::new();
    match mode {
        Mode::Ctcp => {
            if let Outgoing::Ike(ike) = datagram {
                p.extend_from_slice(&IKE_PORT.to_be_bytes());
                p.extend_from_slice(&IKE_PORT.to_be_bytes());
                p.extend_from_slice(&((UDP_HEADER_LEN + ike.len()) as u16).to_be_bytes());
                p.extend_from_slice(&[0, 0]);
                p.extend_from_slice(ike);
            } else if let Outgoing::Esp(esp) = datagram {
                p.extend_from_slice(esp);
            }
            p.extend_from_slice(&ctcp_trailer(p.len()));
        }
        Mode::Rfc8229 | Mode::Framed => {
            if prefix {
                p.extend_from_slice(STREAM_PREFIX);
            }
            let message_len = match datagram {
                Outgoing::Ike(ike) => NON_ESP_MARKER_LEN + ike.len(),
                Outgoing::Esp(esp) => esp.len(),
            };
            p.extend_from_slice(&((FRAME_LEN_LEN + message_len) as u16).to_be_bytes());
            match datagram {
                Outgoing::Ike(ike) => {
                    p.extend_from_slice(&[0; NON_ESP_MARKER_LEN]);
                    p.extend_from_slice(ike);
                }
                Outgoing::Esp(esp) => p.extend_from_slice(esp),
            }
        }
    }
    p
}

/// The emulator's cTCP trailer for a datagram of `len` bytes.
pub fn ctcp_trailer(len: usize) -> [u8; CTCP_TRAILER_LEN] {
    let mut t = [0u8; CTCP_TRAILER_LEN];
    t[..2].copy_from_slice(&(len as u16).to_be_bytes());
    t
}

/// The bytes of TCP payload one datagram takes in `mode`, prefix excluded.
pub fn encapsulated_len(mode: Mode, kind: Kind, message_len: usize) -> usize {
    match (mode, kind) {
        (Mode::Ctcp, Kind::Ike) => UDP_HEADER_LEN + message_len + CTCP_TRAILER_LEN,
        (Mode::Ctcp, Kind::Esp) => message_len + CTCP_TRAILER_LEN,
        (_, Kind::Ike) => FRAME_LEN_LEN + NON_ESP_MARKER_LEN + message_len,
        (_, Kind::Esp) => FRAME_LEN_LEN + message_len,
    }
}

/// A received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram<'a> {
    Ike { header: IkeHeader, body: &'a [u8] },
    Esp { spi: u32, seq: u32, body: &'a [u8] },
}

impl<'a> Datagram<'a> {
    pub fn kind(&self) -> Kind {
        match self {
            Datagram::Ike { .. } => Kind::Ike,
            Datagram::Esp { .. } => Kind::Esp,
        }
    }

    pub fn body(&self) -> &'a [u8] {
        match self {
            Datagram::Ike { body, .. } | Datagram::Esp { body, .. } => body,
        }
    }
}

/// One datagram found in a segment's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found<'a> {
    /// Where in the payload the segment that carried it began when it was sent: its frame's
    /// start, or the `IKETCP` prefix's if the prefix came just before it.
    pub origin: usize,
    pub datagram: Datagram<'a>,
    /// Its encapsulation agrees with itself: the trailer (cTCP), the UDP header (cTCP IKE) and
    /// the IKE length field.
    pub consistent: bool,
}

/// What a segment's payload holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// It began with `IKETCP` (framed modes).
    pub prefix: bool,
    pub datagrams: Vec<Found<'a>>,
    /// Bytes that are no whole datagram (a payload this emulator never sends: cut, merged or
    /// rewritten on the way).
    pub malformed: bool,
}

fn ike_datagram(message: &[u8]) -> Option<(Datagram<'_>, bool)> {
    let (header, body) = parse_ike(message)?;
    let consistent = header.length as usize == message.len();
    Some((Datagram::Ike { header, body }, consistent))
}

fn esp_datagram(packet: &[u8]) -> Option<Datagram<'_>> {
    Some(Datagram::Esp {
        spi: be32(packet, 0)?,
        seq: be32(packet, 4)?,
        body: packet.get(ESP_HEADER_LEN..)?,
    })
}

/// Finds the datagrams in one segment's payload. A cTCP segment holds exactly one datagram
/// and its trailer; a framed segment one or more whole frames (the emulator sends one a
/// segment; a middlebox that merged segments leaves several).
pub fn parse_payload(mode: Mode, payload: &[u8]) -> Parsed<'_> {
    let mut parsed = Parsed::default();
    match mode {
        Mode::Ctcp => {
            let Some(split) = payload.len().checked_sub(CTCP_TRAILER_LEN) else {
                parsed.malformed = true;
                return parsed;
            };
            let (datagram, trailer) = payload.split_at(split);
            let trailer_ok = trailer == ctcp_trailer(datagram.len());
            let found = if be32(datagram, 0) == Some(CTCP_IKE_MARK) {
                let udp_ok = be16(datagram, 4).map(usize::from) == Some(datagram.len())
                    && be16(datagram, 6) == Some(0);
                datagram
                    .get(UDP_HEADER_LEN..)
                    .and_then(ike_datagram)
                    .map(|(d, ok)| (d, ok && udp_ok))
            } else {
                esp_datagram(datagram).map(|d| (d, true))
            };
            match found {
                Some((datagram, ok)) => parsed.datagrams.push(Found {
                    origin: 0,
                    datagram,
                    consistent: ok && trailer_ok,
                }),
                None => parsed.malformed = true,
            }
        }
        Mode::Rfc8229 | Mode::Framed => {
            let mut at = 0;
            if payload.starts_with(STREAM_PREFIX) {
                parsed.prefix = true;
                at = STREAM_PREFIX.len();
            }
            let mut origin = 0;
            while at < payload.len() {
                let Some(len) = be16(payload, at).map(usize::from) else {
                    parsed.malformed = true;
                    break;
                };
                let Some(message) = (len >= FRAME_LEN_LEN)
                    .then(|| payload.get(at + FRAME_LEN_LEN..at + len))
                    .flatten()
                else {
                    parsed.malformed = true;
                    break;
                };
                let found = if message.get(..NON_ESP_MARKER_LEN) == Some(&[0; NON_ESP_MARKER_LEN]) {
                    ike_datagram(&message[NON_ESP_MARKER_LEN..])
                } else {
                    esp_datagram(message).map(|d| (d, true))
                };
                match found {
                    Some((datagram, consistent)) => parsed.datagrams.push(Found {
                        origin,
                        datagram,
                        consistent,
                    }),
                    None => parsed.malformed = true,
                }
                at += len;
                origin = at;
            }
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, tcp: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; emit::IPV4_LEN];
        emit::Ipv4Header::new(src, dst, PROTO_TCP, tcp.len()).emit(&mut p);
        p.extend_from_slice(tcp);
        p
    }

    #[test]
    fn checksum_matches_a_known_segment() {
        // A SYN captured from Linux: 10.0.0.1:12345 -> 10.0.0.2:80, seq 1, MSS 1460.
        let h = TcpHeader {
            sport: 12345,
            dport: 80,
            seq: 1,
            ack: 0,
            flags: SYN,
            window: 65535,
            mss: Some(1460),
        };
        let s = build_segment(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            &h,
            &[],
        );
        // Worked by hand: pseudo-header 0x0a00+0x0001+0x0a00+0x0002+0x0006+0x0018, header words
        // 0x3039+0x0050+0x0000+0x0001+0+0+0x6002+0xffff+0+0+0x0204+0x05b4.
        let words: u32 = [
            0x0a00u32, 0x0001, 0x0a00, 0x0002, 0x0006, 0x0018, 0x3039, 0x0050, 0x0000, 0x0001,
            0x6002, 0xffff, 0x0204, 0x05b4,
        ]
        .iter()
        .sum();
        let folded = (words & 0xffff) + (words >> 16);
        assert_eq!(u16::from_be_bytes([s[16], s[17]]), !(folded as u16));
        assert_eq!(
            tcp_checksum(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), &s),
            0
        );
    }

    #[test]
    fn checksum_covers_the_pseudo_header_and_odd_payloads() {
        let h = TcpHeader {
            sport: 40000,
            dport: 10000,
            seq: 0xdead_beef,
            ack: 0x0102_0304,
            flags: ACK | PSH,
            window: WINDOW,
            mss: None,
        };
        let s = build_segment(A, B, &h, b"odd");
        assert_eq!(s.len(), 23);
        assert_eq!(tcp_checksum(A, B, &s), 0);
        // The same bytes towards another address, or with one bit flipped, do not verify
        // (swapping source and destination does: the sum cannot see the order).
        assert_eq!(tcp_checksum(B, A, &s), 0);
        assert_ne!(tcp_checksum(A, Ipv4Addr::new(198, 18, 0, 3), &s), 0);
        assert_ne!(tcp_checksum(Ipv4Addr::new(198, 18, 1, 1), B, &s), 0);
        let mut bad = s.clone();
        bad[22] ^= 1;
        assert_ne!(tcp_checksum(A, B, &bad), 0);
    }

    #[test]
    fn segments_round_trip_through_ipv4() {
        let h = TcpHeader {
            sport: 10000,
            dport: 40000,
            seq: 7,
            ack: 9,
            flags: SYN | ACK,
            window: WINDOW,
            mss: Some(MSS),
        };
        let packet = ipv4(B, A, &build_segment(B, A, &h, &[]));
        let r = parse_ipv4_tcp(&packet).unwrap();
        assert_eq!((r.src, r.dst, r.sport, r.dport), (B, A, 10000, 40000));
        assert_eq!((r.seq, r.ack, r.flags, r.window), (7, 9, SYN | ACK, WINDOW));
        assert!(r.checksum_ok && r.payload.is_empty());
        assert_eq!(tcp_options(r.options), (Some(1460), vec![2]));

        let data = TcpHeader {
            flags: ACK | PSH,
            mss: None,
            ..h
        };
        let mut packet = ipv4(B, A, &build_segment(B, A, &data, b"payload"));
        packet.extend_from_slice(b"ethernet padding"); // beyond the IP total length
        let r = parse_ipv4_tcp(&packet).unwrap();
        assert_eq!(r.payload, b"payload");
        assert!(r.checksum_ok && r.options.is_empty());

        let mut fragment = packet.clone();
        fragment[6] = 0x20; // more fragments
        assert_eq!(parse_ipv4_tcp(&fragment), None);
        assert_eq!(parse_ipv4_tcp(&packet[..30]), None);
    }

    #[test]
    fn options_of_a_linux_syn() {
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(tcp_options(&opts), (Some(1460), vec![2, 4, 8, 1, 3]));
        assert_eq!(tcp_options(&[2, 0]), (None, vec![]));
    }

    #[test]
    fn acks_go_past_holes_and_ignore_old_segments() {
        let isn = 1000u32;
        let mut ack = isn.wrapping_add(1);
        ack = ack_after(ack, 1001, 100); // 1001..1101
        assert_eq!(ack, 1101);
        ack = ack_after(ack, 1201, 100); // 1101..1201 lost: ack past the hole
        assert_eq!(ack, 1301);
        ack = ack_after(ack, 1101, 100); // the hole's bytes late: nothing moves back
        assert_eq!(ack, 1301);
        ack = ack_after(ack, 1301, 0); // a pure ACK
        assert_eq!(ack, 1301);
        // Across the wrap of sequence space.
        let ack = ack_after(0xffff_ff00, 0xffff_ff80, 0x100);
        assert_eq!(ack, 0x80);
        assert_eq!(ack_after(ack, 0xffff_ff00, 0x10), 0x80);
        assert!(seq_lt(0xffff_fff0, 0x10) && !seq_lt(0x10, 0xffff_fff0));
    }

    #[test]
    fn check_block_verifies_and_catches_changes() {
        let body = write_body(200, 0x1234_5678, 42, Kind::Esp);
        assert_eq!(body.len(), 200);
        assert_eq!(&body[..9], &[0x12, 0x34, 0x56, 0x78, 0, 0, 0, 42, 2]);
        let check = check_body(&body).unwrap();
        assert_eq!(
            check,
            BodyCheck {
                tcp_seq: 0x1234_5678,
                index: 42,
                kind: Some(Kind::Esp),
                intact: true
            }
        );
        for at in [9, 15, 20, 199] {
            let mut bad = body.clone();
            bad[at] ^= 0x40;
            assert!(!check_body(&bad).unwrap().intact, "byte {at}");
        }
        // Another datagram's filler with a hash to match is still caught by the index.
        let other = write_body(200, 0x1234_5678, 43, Kind::Esp);
        let mut swapped = body.clone();
        swapped[12..].copy_from_slice(&other[12..]);
        assert!(!check_body(&swapped).unwrap().intact);
        // The smallest body is the check block alone.
        let small = write_body(0, 5, 0, Kind::Ike);
        assert_eq!(small.len(), CHECK_BLOCK_LEN);
        assert!(check_body(&small).unwrap().intact);
        assert_eq!(check_body(&small[..19]), None);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    fn ike_header(version: u8, exchange: u8, flags: u8) -> IkeHeader {
        IkeHeader {
            initiator_spi: 0x1122_3344_5566_7788,
            responder_spi: 0,
            next_payload: 1,
            version,
            exchange,
            flags,
            message_id: 0,
            length: 0,
        }
    }

    #[test]
    fn ctcp_ike_is_a_udp_packet_and_a_trailer() {
        let body = write_body(272, 1001, 0, Kind::Ike);
        let ike = ike_message(&ike_header(0x10, 4, 0), &body);
        assert_eq!(ike.len(), 300);
        let p = encapsulate(Mode::Ctcp, Outgoing::Ike(&ike), false);
        assert_eq!(p.len(), encapsulated_len(Mode::Ctcp, Kind::Ike, 300));
        assert_eq!(&p[..8], &[0x01, 0xf4, 0x01, 0xf4, 0x01, 0x34, 0, 0]); // 500, 500, 308, 0
        assert_eq!(&p[8 + 17..8 + 20], &[0x10, 4, 0]);
        assert_eq!(&p[8 + 24..8 + 28], &300u32.to_be_bytes());
        assert_eq!(
            &p[308..],
            &[0x01, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );

        let parsed = parse_payload(Mode::Ctcp, &p);
        assert!(!parsed.prefix && !parsed.malformed);
        let [found] = parsed.datagrams[..] else {
            panic!("{parsed:?}")
        };
        assert!(found.consistent);
        assert_eq!(found.origin, 0);
        let Datagram::Ike { header, body: got } = found.datagram else {
            panic!()
        };
        assert_eq!(header.initiator_spi, 0x1122_3344_5566_7788);
        assert_eq!(
            (header.version, header.exchange, header.length),
            (0x10, 4, 300)
        );
        assert_eq!(got, &body[..]);

        // A wrong UDP length, IKE length or trailer is an inconsistent datagram.
        for at in [5, 8 + 27, 309] {
            let mut bad = p.clone();
            bad[at] ^= 1;
            assert!(
                !parse_payload(Mode::Ctcp, &bad).datagrams[0].consistent,
                "byte {at}"
            );
        }
    }

    #[test]
    fn ctcp_esp_is_raw_with_a_trailer() {
        let body = write_body(200, 77, 3, Kind::Esp);
        let esp = esp_packet(0x0000_1234, 1, &body);
        let p = encapsulate(Mode::Ctcp, Outgoing::Esp(&esp), false);
        assert_eq!(p.len(), encapsulated_len(Mode::Ctcp, Kind::Esp, 208));
        assert_eq!(&p[..8], &[0, 0, 0x12, 0x34, 0, 0, 0, 1]);
        assert_eq!(&p[208..210], &208u16.to_be_bytes());
        let parsed = parse_payload(Mode::Ctcp, &p);
        assert_eq!(
            parsed.datagrams,
            vec![Found {
                origin: 0,
                datagram: Datagram::Esp {
                    spi: 0x1234,
                    seq: 1,
                    body: &body
                },
                consistent: true
            }]
        );
        assert!(parse_payload(Mode::Ctcp, &p[..15]).malformed);
        assert!(parse_payload(Mode::Ctcp, &p[..20]).malformed); // 4 bytes: no ESP header
    }

    #[test]
    fn rfc8229_frames_ike_after_the_prefix_and_esp_raw() {
        let body = write_body(272, 1001, 0, Kind::Ike);
        let ike = ike_message(&ike_header(0x20, 34, 0x08), &body);
        let p = encapsulate(Mode::Rfc8229, Outgoing::Ike(&ike), true);
        assert_eq!(&p[..6], b"IKETCP");
        assert_eq!(&p[6..8], &306u16.to_be_bytes()); // 2 + 4 + 300
        assert_eq!(&p[8..12], &[0, 0, 0, 0]);
        assert_eq!(p.len(), 6 + encapsulated_len(Mode::Rfc8229, Kind::Ike, 300));
        let parsed = parse_payload(Mode::Rfc8229, &p);
        assert!(parsed.prefix && !parsed.malformed);
        assert_eq!(parsed.datagrams.len(), 1);
        assert_eq!(parsed.datagrams[0].origin, 0);
        assert!(parsed.datagrams[0].consistent);
        assert_eq!(parsed.datagrams[0].datagram.kind(), Kind::Ike);
        assert_eq!(parsed.datagrams[0].datagram.body(), &body[..]);

        let esp_body = write_body(200, 2000, 5, Kind::Esp);
        let esp = esp_packet(0x4242, 3, &esp_body);
        let q = encapsulate(Mode::Rfc8229, Outgoing::Esp(&esp), false);
        assert_eq!(&q[..2], &210u16.to_be_bytes());
        assert_eq!(&q[2..6], &0x4242u32.to_be_bytes());
        let parsed = parse_payload(Mode::Rfc8229, &q);
        assert!(!parsed.prefix);
        assert_eq!(
            parsed.datagrams[0].datagram,
            Datagram::Esp {
                spi: 0x4242,
                seq: 3,
                body: &esp_body
            }
        );

        // Two segments merged into one: both found, each at its own origin.
        let mut merged = p.clone();
        merged.extend_from_slice(&q);
        let parsed = parse_payload(Mode::Rfc8229, &merged);
        assert!(!parsed.malformed);
        let origins: Vec<usize> = parsed.datagrams.iter().map(|f| f.origin).collect();
        assert_eq!(origins, vec![0, p.len()]);

        // A frame cut short is malformed.
        assert!(parse_payload(Mode::Rfc8229, &q[..100]).malformed);
        assert!(parse_payload(Mode::Rfc8229, &[0, 1]).malformed);
    }

    #[test]
    fn framed_is_rfc8229_without_the_prefix() {
        let body = write_body(272, 9, 1, Kind::Ike);
        let ike = ike_message(&ike_header(0x20, 35, 0x20), &body);
        let p = encapsulate(Mode::Framed, Outgoing::Ike(&ike), false);
        assert_eq!(&p[..6], &[0x01, 0x32, 0, 0, 0, 0]);
        let parsed = parse_payload(Mode::Framed, &p);
        assert!(!parsed.prefix && !parsed.malformed);
        assert!(parsed.datagrams[0].consistent);
        let Datagram::Ike { header, .. } = parsed.datagrams[0].datagram else {
            panic!()
        };
        assert_eq!(
            (header.version, header.exchange, header.flags),
            (0x20, 35, 0x20)
        );

        let esp = esp_packet(0x9999, 1, &write_body(20, 9, 3, Kind::Esp));
        let q = encapsulate(Mode::Framed, Outgoing::Esp(&esp), false);
        assert_eq!(q.len(), encapsulated_len(Mode::Framed, Kind::Esp, 28));
        let parsed = parse_payload(Mode::Framed, &q);
        assert_eq!(parsed.datagrams[0].datagram.kind(), Kind::Esp);
        assert!(
            check_body(parsed.datagrams[0].datagram.body())
                .unwrap()
                .intact
        );

        // An IKE length field that disagrees with the frame is inconsistent.
        let mut bad = p.clone();
        bad[6 + 27] ^= 4;
        assert!(!parse_payload(Mode::Framed, &bad).datagrams[0].consistent);
    }
}
