//! Recognising IPsec carried over TCP from a proxied flow's first payload (issue 5).
//!
//! Cisco's IPsec over TCP (cTCP) and RFC 8229 put IKE and ESP datagrams in TCP segments but do
//! not behave like TCP: cTCP never retransmits, so a proxy that waits for a lost segment waits
//! forever (`reference/ipsec-over-tcp-fails-through-asa.txt`). Such a flow must pass through
//! before the first loss, so it is recognised from its first payload segments, each looked at on
//! its own as it arrives (in order or not: a flow whose first data segment was lost must still be
//! recognised from the second).
//!
//! What is recognised, each by a structure a TCP byte stream has no reason to show:
//! - cTCP IKE: a whole UDP packet from port 500 to port 500 whose length field covers the
//!   segment but for cTCP's 16-byte trailer, holding an ISAKMP header (IKEv1 or IKEv2) whose
//!   own length field ends where the UDP packet does.
//! - RFC 8229: the `IKETCP` stream prefix the initiator sends first (section 3), split across
//!   segments or not.
//! - Length-framed IKE (RFC 8229 framing without the prefix): a 2-byte length, the 4-byte
//!   non-ESP marker, then an ISAKMP header whose length field agrees.
//! - ESP, raw with cTCP's trailer or length-framed: an SPI and a sequence number say little
//!   alone, so it takes two segments of one direction with the same SPI and a sequence number
//!   a few steps on (RFC 4303: one SA's numbers count up from 1), both small as a young SA's
//!   are. Text (HTTP, SSH banners) never passes that test, since its bytes put the sequence
//!   number far above 2^24, and neither does TLS, whose records change type and length.
//!
//! The first payload that fits none of these decides the flow is not IPsec, as does a handful of
//! segments without a decision; nothing is kept per flow but a few counters and one SPI and
//! sequence number per direction.

/// How a flow showed it carries IPsec (as `flows list` names it: "ctcp-ike", "ctcp-esp",
/// "rfc8229", "framed-ike", "framed-esp").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum IpsecFraming {
    /// cTCP: a UDP 500→500 packet with an ISAKMP message, then the 16-byte trailer.
    CtcpIke = 1,
    /// cTCP: raw ESP, then the trailer.
    CtcpEsp = 2,
    /// RFC 8229's `IKETCP` prefix.
    Rfc8229 = 3,
    /// RFC 8229 framing without the prefix, carrying IKE.
    FramedIke = 4,
    /// RFC 8229 framing without the prefix, carrying ESP.
    FramedEsp = 5,
}

impl std::fmt::Display for IpsecFraming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl IpsecFraming {
    pub const ALL: [IpsecFraming; 5] = [
        IpsecFraming::CtcpIke,
        IpsecFraming::CtcpEsp,
        IpsecFraming::Rfc8229,
        IpsecFraming::FramedIke,
        IpsecFraming::FramedEsp,
    ];

    /// The name `flows list` and the counters use.
    pub fn name(self) -> &'static str {
        match self {
            IpsecFraming::CtcpIke => "ctcp-ike",
            IpsecFraming::CtcpEsp => "ctcp-esp",
            IpsecFraming::Rfc8229 => "rfc8229",
            IpsecFraming::FramedIke => "framed-ike",
            IpsecFraming::FramedEsp => "framed-esp",
        }
    }

    /// The inverse of `self as u8`, for the byte a flow entry keeps.
    pub fn from_code(code: u8) -> Option<IpsecFraming> {
        IpsecFraming::ALL.into_iter().find(|f| *f as u8 == code)
    }
}

/// What the payload seen so far says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// Nothing decided yet: look at the next payload segment.
    Undecided,
    IpsecOverTcp(IpsecFraming),
    /// Not IPsec over TCP: stop looking.
    NotIpsec,
}

/// The `IKETCP` stream prefix (RFC 8229 section 3).
const STREAM_PREFIX: &[u8; 6] = b"IKETCP";
/// cTCP appends this many bytes to each datagram.
const CTCP_TRAILER_LEN: usize = 16;
const UDP_HEADER_LEN: usize = 8;
const IKE_PORT: u16 = 500;
const IKE_HEADER_LEN: usize = 28;
/// RFC 8229 puts four zero bytes before IKE messages, where ESP has its SPI.
const NON_ESP_MARKER_LEN: usize = 4;
/// SPI and sequence number, and at least an 8-byte IV or ICV after them.
const ESP_MIN_LEN: usize = 16;
/// SPIs 1-255 are reserved (RFC 4303 section 2.1) and 0 is the non-ESP marker.
const ESP_MIN_SPI: u32 = 256;
/// A young SA's sequence numbers are small: text puts these four bytes above 0x20000000.
const ESP_MAX_FIRST_SEQ: u32 = 1 << 24;
/// How far one ESP sequence number may be from the one before it in the same direction: a few
/// datagrams may have been lost between them.
const ESP_MAX_SEQ_STEP: u32 = 4;
/// Payload segments looked at before giving up.
const MAX_SEGMENTS: u8 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EspRecord {
    framing: IpsecFraming,
    spi: u32,
    seq: u32,
}

/// One flow's detection state: a few bytes, kept while nothing is decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpsecDetector {
    segments: u8,
    /// How much of [`STREAM_PREFIX`] the client's stream has begun with, when its first
    /// payload was shorter than the prefix.
    prefix_seen: u8,
    /// The last ESP record seen each way (client to server first).
    esp: [Option<EspRecord>; 2],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The length an ISAKMP header at the start of `b` gives its message, if `b` starts with one
/// (RFC 2408 section 3.1 for IKEv1, RFC 7296 section 3.1 for IKEv2).
fn ike_message_len(b: &[u8]) -> Option<usize> {
    let header = b.get(..IKE_HEADER_LEN)?;
    if header[..8].iter().all(|&x| x == 0) {
        return None; // the initiator's SPI is never zero
    }
    let (next_payload, version, exchange, flags) = (header[16], header[17], header[18], header[19]);
    let valid = match version {
        0x10 => {
            matches!(exchange, 1..=6 | 32 | 33)
                && flags & !0x07 == 0
                && matches!(next_payload, 1..=20 | 128..=255)
        }
        0x20 => {
            matches!(exchange, 34..=38 | 43 | 44)
                && flags & !0x38 == 0
                && matches!(next_payload, 0 | 33..=60)
        }
        _ => false,
    };
    let len = be32(header, 24)? as usize;
    (valid && len >= IKE_HEADER_LEN).then_some(len)
}

/// A cTCP segment holding a UDP 500→500 packet with a whole IKE message, and the trailer.
fn is_ctcp_ike(p: &[u8]) -> bool {
    let (Some(sport), Some(dport), Some(udp_len)) = (be16(p, 0), be16(p, 2), be16(p, 4)) else {
        return false;
    };
    let udp_len = usize::from(udp_len);
    sport == IKE_PORT
        && dport == IKE_PORT
        && udp_len >= UDP_HEADER_LEN + IKE_HEADER_LEN
        && p.len() == udp_len + CTCP_TRAILER_LEN
        && ike_message_len(&p[UDP_HEADER_LEN..]) == Some(udp_len - UDP_HEADER_LEN)
}

/// A segment that begins with a length-framed IKE message (RFC 8229 section 3).
fn is_framed_ike(p: &[u8]) -> bool {
    let Some(len) = be16(p, 0).map(usize::from) else {
        return false;
    };
    let body = 2 + NON_ESP_MARKER_LEN;
    len >= body + IKE_HEADER_LEN
        && len <= p.len()
        && p[2..body].iter().all(|&x| x == 0)
        && ike_message_len(&p[body..]) == Some(len - body)
}

/// The ESP header a segment may begin with: length-framed, or raw with cTCP's trailer.
fn esp_record(p: &[u8]) -> Option<EspRecord> {
    let header_at = |at: usize, framing: IpsecFraming| {
        let (spi, seq) = (be32(p, at)?, be32(p, at + 4)?);
        (spi >= ESP_MIN_SPI && (1..ESP_MAX_FIRST_SEQ).contains(&seq)).then_some(EspRecord {
            framing,
            spi,
            seq,
        })
    };
    let framed_len = usize::from(be16(p, 0)?);
    if framed_len >= 2 + ESP_MIN_LEN && framed_len <= p.len() {
        if let Some(record) = header_at(2, IpsecFraming::FramedEsp) {
            return Some(record);
        }
    }
    if p.len() >= ESP_MIN_LEN + CTCP_TRAILER_LEN {
        return header_at(0, IpsecFraming::CtcpEsp);
    }
    None
}

impl IpsecDetector {
    /// Looks at one segment's payload (`from_client`: sent by the flow's initiator). Empty
    /// payloads say nothing.
    pub fn on_payload(&mut self, from_client: bool, payload: &[u8]) -> Detection {
        if payload.is_empty() {
            return Detection::Undecided;
        }
        self.segments = self.segments.saturating_add(1);
        if from_client {
            let rest = &STREAM_PREFIX[usize::from(self.prefix_seen)..];
            if payload.starts_with(rest) {
                return Detection::IpsecOverTcp(IpsecFraming::Rfc8229);
            }
            if rest.starts_with(payload) && self.segments < MAX_SEGMENTS {
                self.prefix_seen += payload.len() as u8;
                return Detection::Undecided;
            }
        }
        if is_ctcp_ike(payload) {
            return Detection::IpsecOverTcp(IpsecFraming::CtcpIke);
        }
        if is_framed_ike(payload) {
            return Detection::IpsecOverTcp(IpsecFraming::FramedIke);
        }
        let Some(record) = esp_record(payload) else {
            return Detection::NotIpsec;
        };
        let last = &mut self.esp[usize::from(!from_client)];
        if let Some(before) = *last {
            let step = record.seq.wrapping_sub(before.seq);
            if before.framing == record.framing
                && before.spi == record.spi
                && (1..=ESP_MAX_SEQ_STEP).contains(&step)
            {
                return Detection::IpsecOverTcp(record.framing);
            }
        }
        *last = Some(record);
        if self.segments >= MAX_SEGMENTS {
            Detection::NotIpsec
        } else {
            Detection::Undecided
        }
    }
}

/// Payloads in the shapes the emulator in `perf/` sends and real stacks send, for the tests
/// here and the proxy's.
#[cfg(test)]
pub(crate) mod samples {
    /// An ISAKMP message of `len` bytes (header included).
    pub fn ike(version: u8, exchange: u8, flags: u8, next_payload: u8, len: usize) -> Vec<u8> {
        let mut m = vec![0u8; len];
        m[..8].copy_from_slice(&[0x5a, 0x11, 0x9c, 0x03, 0x77, 0x21, 0x40, 0x0e]);
        m[16] = next_payload;
        m[17] = version;
        m[18] = exchange;
        m[19] = flags;
        m[24..28].copy_from_slice(&(len as u32).to_be_bytes());
        for (i, b) in m[28..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        m
    }

    /// IKEv1 aggressive mode, as Cisco's VPN Client opens a cTCP tunnel.
    pub fn ikev1_aggressive(len: usize) -> Vec<u8> {
        ike(0x10, 4, 0, 1, len)
    }

    /// IKEv2 IKE_SA_INIT from the initiator.
    pub fn ikev2_sa_init(len: usize) -> Vec<u8> {
        ike(0x20, 34, 0x08, 33, len)
    }

    pub fn ctcp_trailer() -> [u8; 16] {
        let mut t = [0u8; 16];
        t[0] = 0xc7;
        t
    }

    /// A cTCP segment carrying `ike` in a UDP 500→500 packet.
    pub fn ctcp_ike(ike: &[u8]) -> Vec<u8> {
        let udp_len = (8 + ike.len()) as u16;
        let mut p = Vec::new();
        p.extend_from_slice(&500u16.to_be_bytes());
        p.extend_from_slice(&500u16.to_be_bytes());
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(ike);
        p.extend_from_slice(&ctcp_trailer());
        p
    }

    pub fn esp(spi: u32, seq: u32, body: usize) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&spi.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend((0..body).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seq as u8)));
        p
    }

    pub fn ctcp_esp(spi: u32, seq: u32, body: usize) -> Vec<u8> {
        let mut p = esp(spi, seq, body);
        p.extend_from_slice(&ctcp_trailer());
        p
    }

    /// RFC 8229 framing: the length counts itself.
    pub fn framed(message: &[u8]) -> Vec<u8> {
        let mut p = ((message.len() + 2) as u16).to_be_bytes().to_vec();
        p.extend_from_slice(message);
        p
    }

    pub fn framed_ike(ike: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; 4];
        m.extend_from_slice(ike);
        framed(&m)
    }

    pub const HTTP_GET: &[u8] =
        b"GET /file/1 HTTP/1.1\r\nHost: 198.18.0.2:10000\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
    pub const SSH_BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";

    /// A TLS 1.2/1.3 ClientHello record of `len` bytes of handshake, its first bytes real.
    pub fn tls_client_hello(len: usize) -> Vec<u8> {
        let mut p = vec![0x16, 0x03, 0x01];
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p.extend_from_slice(&[0x01, 0x00]);
        p.extend_from_slice(&((len - 4) as u16).to_be_bytes());
        p.extend_from_slice(&[0x03, 0x03]);
        p.extend((0..len - 6).map(|i| (i * 13) as u8));
        p
    }

    /// TLS 1.3's ChangeCipherSpec and first encrypted record, as a client sends them after
    /// the ServerHello.
    pub fn tls_client_finished() -> Vec<u8> {
        let mut p = vec![
            0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0x17, 0x03, 0x03, 0x00, 0x35,
        ];
        p.extend((0..0x35).map(|i| (i * 31) as u8));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;

    fn detect(segments: &[(bool, Vec<u8>)]) -> Detection {
        let mut d = IpsecDetector::default();
        let mut last = Detection::Undecided;
        for (from_client, p) in segments {
            last = d.on_payload(*from_client, p);
            if last != Detection::Undecided {
                return last;
            }
        }
        last
    }

    #[test]
    fn ctcp_ike_is_recognised_from_one_segment() {
        for ike in [
            ikev1_aggressive(300),
            ikev2_sa_init(512),
            ikev1_aggressive(28),
        ] {
            assert_eq!(
                detect(&[(true, ctcp_ike(&ike))]),
                Detection::IpsecOverTcp(IpsecFraming::CtcpIke)
            );
        }
        // The headend's answer is as telling, should the client's first segment be lost.
        let answer = ike(0x10, 4, 0, 1, 260);
        assert_eq!(
            detect(&[(false, ctcp_ike(&answer))]),
            Detection::IpsecOverTcp(IpsecFraming::CtcpIke)
        );
    }

    #[test]
    fn ctcp_ike_needs_its_lengths_to_agree() {
        let good = ctcp_ike(&ikev1_aggressive(300));
        // Without the trailer, with a longer one, or with a UDP length off by one: not cTCP.
        let mut no_trailer = good.clone();
        no_trailer.truncate(good.len() - 16);
        let mut long_trailer = good.clone();
        long_trailer.push(0);
        let mut bad_udp = good.clone();
        bad_udp[5] = bad_udp[5].wrapping_add(1);
        let mut bad_ike_len = good.clone();
        bad_ike_len[8 + 27] = bad_ike_len[8 + 27].wrapping_add(1);
        let mut other_port = good.clone();
        other_port[1] = 0xf5; // 501
        let mut bad_version = good.clone();
        bad_version[8 + 17] = 0x30;
        let mut zero_spi = good;
        zero_spi[8..16].fill(0);
        for p in [
            no_trailer,
            long_trailer,
            bad_udp,
            bad_ike_len,
            other_port,
            bad_version,
            zero_spi,
        ] {
            assert_ne!(
                detect(&[(true, p)]),
                Detection::IpsecOverTcp(IpsecFraming::CtcpIke)
            );
        }
    }

    #[test]
    fn ctcp_esp_takes_two_segments_of_one_sa() {
        let spi = 0x8e12_44a1;
        assert_eq!(
            detect(&[(true, ctcp_esp(spi, 1, 200)), (true, ctcp_esp(spi, 2, 200))]),
            Detection::IpsecOverTcp(IpsecFraming::CtcpEsp)
        );
        // A datagram lost between them, and the other direction's SA interleaved.
        assert_eq!(
            detect(&[
                (true, ctcp_esp(spi, 7, 200)),
                (false, ctcp_esp(0x0100_0001, 3, 120)),
                (true, ctcp_esp(spi, 9, 180)),
            ]),
            Detection::IpsecOverTcp(IpsecFraming::CtcpEsp)
        );
        let mut d = IpsecDetector::default();
        assert_eq!(
            d.on_payload(true, &ctcp_esp(spi, 1, 200)),
            Detection::Undecided
        );
        // Another SPI, or numbers that do not move forward a little: not one SA.
        assert_eq!(
            d.on_payload(true, &ctcp_esp(spi + 1, 2, 200)),
            Detection::Undecided
        );
        assert_eq!(
            d.on_payload(true, &ctcp_esp(spi + 1, 2, 200)),
            Detection::Undecided
        );
        assert_eq!(
            d.on_payload(true, &ctcp_esp(spi + 1, 200, 200)),
            Detection::Undecided
        );
    }

    #[test]
    fn rfc8229_prefix_whole_or_split() {
        let mut first = b"IKETCP".to_vec();
        first.extend(framed_ike(&ikev2_sa_init(300)));
        assert_eq!(
            detect(&[(true, first)]),
            Detection::IpsecOverTcp(IpsecFraming::Rfc8229)
        );
        assert_eq!(
            detect(&[(true, b"IKETCP".to_vec())]),
            Detection::IpsecOverTcp(IpsecFraming::Rfc8229)
        );
        assert_eq!(
            detect(&[(true, b"IKE".to_vec()), (true, b"TCP\x00\x22".to_vec())]),
            Detection::IpsecOverTcp(IpsecFraming::Rfc8229)
        );
        // From the responder it is no prefix; nor is a near miss.
        assert_eq!(detect(&[(false, b"IKETCP".to_vec())]), Detection::NotIpsec);
        assert_eq!(detect(&[(true, b"IKETCQ".to_vec())]), Detection::NotIpsec);
    }

    #[test]
    fn framed_ike_and_esp_without_the_prefix() {
        assert_eq!(
            detect(&[(true, framed_ike(&ikev2_sa_init(300)))]),
            Detection::IpsecOverTcp(IpsecFraming::FramedIke)
        );
        let spi = 0x0a0b_0c0d;
        assert_eq!(
            detect(&[
                (true, framed(&esp(spi, 1, 100))),
                (true, framed(&esp(spi, 2, 100)))
            ]),
            Detection::IpsecOverTcp(IpsecFraming::FramedEsp)
        );
        // A framed IKE message whose inner length disagrees with the frame's.
        let mut bad = framed_ike(&ikev2_sa_init(300));
        bad[1] = bad[1].wrapping_sub(1);
        assert_ne!(
            detect(&[(true, bad)]),
            Detection::IpsecOverTcp(IpsecFraming::FramedIke)
        );
    }

    #[test]
    fn http_tls_and_ssh_are_not_ipsec() {
        // HTTP: the first request decides; keep-alive requests for numbered paths too.
        assert_eq!(detect(&[(true, HTTP_GET.to_vec())]), Detection::NotIpsec);
        assert_eq!(
            detect(&[
                (true, b"GET /a/1 HTTP/1.1\r\n\r\n".to_vec()),
                (true, b"GET /a/2 HTTP/1.1\r\n\r\n".to_vec())
            ]),
            Detection::NotIpsec
        );
        // SSH: the server speaks first; either banner decides.
        assert_eq!(detect(&[(false, SSH_BANNER.to_vec())]), Detection::NotIpsec);
        assert_eq!(detect(&[(true, SSH_BANNER.to_vec())]), Detection::NotIpsec);
        // TLS: a ClientHello decides at once, unless its record length is a multiple of 256:
        // then it looks like an ESP header until the next record of the same direction.
        assert_eq!(
            detect(&[(true, tls_client_hello(517))]),
            Detection::NotIpsec
        );
        let server_hello = {
            let mut p = tls_client_hello(90);
            p[5] = 0x02;
            p
        };
        assert_eq!(
            detect(&[
                (true, tls_client_hello(512)),
                (false, server_hello),
                (true, tls_client_finished()),
            ]),
            Detection::NotIpsec
        );
    }

    #[test]
    fn undecided_flows_are_given_up_on() {
        let mut d = IpsecDetector::default();
        let mut last = Detection::Undecided;
        // ESP-shaped segments that never continue one SA.
        for i in 0..MAX_SEGMENTS as u32 {
            last = d.on_payload(true, &ctcp_esp(0x1000 + i * 77, 1 + i * 100, 64));
        }
        assert_eq!(last, Detection::NotIpsec);
        // Empty segments do not count.
        let mut d = IpsecDetector::default();
        for _ in 0..100 {
            assert_eq!(d.on_payload(true, &[]), Detection::Undecided);
        }
    }

    #[test]
    fn random_payloads_do_not_panic() {
        let mut rng = crate::test_rng::TestRng::new(0x1dec7);
        let mut matched = 0;
        for _ in 0..20_000 {
            let mut d = IpsecDetector::default();
            for _ in 0..3 {
                let len = rng.below(80) as usize;
                let p: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                if let Detection::IpsecOverTcp(_) = d.on_payload(rng.below(2) == 0, &p) {
                    matched += 1;
                }
            }
        }
        assert_eq!(matched, 0, "random bytes taken for IPsec");
    }

    #[test]
    fn framing_codes_round_trip() {
        for f in IpsecFraming::ALL {
            assert_eq!(IpsecFraming::from_code(f as u8), Some(f));
        }
        assert_eq!(IpsecFraming::from_code(0), None);
    }
}
