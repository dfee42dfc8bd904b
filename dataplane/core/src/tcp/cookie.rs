//! SYN cookies: answering a client's SYN without keeping any state, for a worker with too many
//! embryonic proxied connections (issue 4, point 2; what Linux SYNPROXY and ASA TCP Intercept do).
//!
//! The SYN-ACK's initial sequence number *is* the state: the client's ACK echoes it plus one, and
//! the cookie proves the SYN-ACK was ours and says which MSS the client asked for. The layout is
//! Linux's (`net/ipv4/syncookies.c`, `secure_tcp_syn_cookie`):
//!
//! ```text
//! cookie = H0 + (count << 24) + ((H1(count) + mss_index) mod 2^24)
//! H0        = SipHash-2-4(secret, four-tuple, client ISN)            (32 bits)
//! H1(count) = SipHash-2-4(secret, four-tuple, client ISN, count)     (24 bits)
//! count     = now / 64 s
//! ```
//!
//! `H0` hides the clock in the top byte, so cookies do not reveal uptime or follow a pattern
//! across connections. Validation removes `H0`, reads the counter's low byte, and recomputes `H1`
//! with the full counter, so a cookie from 256 periods ago (4.5 hours) does not pass as a fresh
//! one. A random ACK passes when its top byte lands on one of the two accepted counters and its
//! low 24 bits on one of the four MSS indices: 2/256 × 4/2^24 = 2^-29.
//!
//! Unlike Linux, the client's ISN goes *into* the hashes instead of being added to the cookie:
//! with the ISN added, an ACK whose sequence number is off by one or two would shift the MSS
//! index and still validate.
//!
//! Options that do not fit in 32 bits (window scale, SACK-permitted) ride in the low bits of the
//! SYN-ACK's timestamp, which the client echoes in every segment's TSecr (Linux's
//! `cookie_init_timestamp`). A client that sent no timestamps gets a SYN-ACK with the MSS option
//! only, and the connection runs without window scaling or SACK: the usual trade-off of stateless
//! set-up, which costs throughput on long fat paths and nothing else.
//!
//! With cookies the client's handshake completes before the server has been asked, so a closed
//! server port shows up as a reset after the client's ACK rather than in answer to its SYN; that
//! is the price of staying stateless, and why cookies are only for a worker under pressure.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::segment::MAX_WINDOW_SCALE;
use super::seq::SeqNumber;

/// MSS values a cookie can carry over IPv4, from Linux: 536 is the RFC 9293 default, 1300 covers
/// tunnels, 1440 PPPoE and friends, 1460 plain Ethernet.
pub const MSS_TABLE_V4: [u16; 4] = [536, 1300, 1440, 1460];

/// MSS values over IPv6, from Linux: 1220 is what the minimum MTU (1280) leaves, then
/// 1480-byte tunnels, Ethernet, and 9000-byte jumbo frames.
pub const MSS_TABLE_V6: [u16; 4] = [1220, 1420, 1440, 8940];

/// The counter in a cookie ticks every 64 seconds.
pub const COOKIE_PERIOD_MS: u64 = 64_000;

/// A cookie is good in the period it was made in and the next one (Linux's
/// `MAX_SYNCOOKIE_AGE`): between 64 and 128 seconds, enough for a handshake's ACK even after a
/// few retransmitted SYNs.
pub const MAX_AGE_PERIODS: u32 = 2;

const COUNTER_SHIFT: u32 = 24;
const HASH_MASK: u32 = (1 << COUNTER_SHIFT) - 1;

/// Low bits of the SYN-ACK's TSval that carry options: four for the window shift (0..=14, 15
/// meaning none), one for SACK-permitted. Linux keeps a sixth for ECN, which tollgate does not
/// negotiate.
const TS_OPTION_BITS: u32 = 5;
const TS_OPTION_MASK: u32 = (1 << TS_OPTION_BITS) - 1;
const TS_WINDOW_SCALE_MASK: u32 = 0xf;
const TS_NO_WINDOW_SCALE: u32 = 0xf;
const TS_SACK_PERMITTED: u32 = 1 << 4;

/// A TCP connection's addresses and ports, seen from the client that sent the SYN.
///
/// The family is the client's; a tuple mixing families (which no packet carries) hashes as
/// written and uses the client's MSS table. IPv6 flow labels and scope ids are not part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FourTuple {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

impl FourTuple {
    pub fn new(client: SocketAddr, server: SocketAddr) -> FourTuple {
        FourTuple { client, server }
    }

    fn mss_table(&self) -> &'static [u16; 4] {
        if self.client.is_ipv6() {
            &MSS_TABLE_V6
        } else {
            &MSS_TABLE_V4
        }
    }

    /// The hash input: family, both addresses and ports, the client's ISN, and a domain byte so
    /// that `H0` and `H1` never hash the same message under the one key.
    fn write_to(&self, client_isn: SeqNumber, domain: u8, out: &mut Message) {
        let family = if self.client.is_ipv6() { 6 } else { 4 };
        out.push(&[family, domain]);
        for addr in [self.client.ip(), self.server.ip()] {
            match addr {
                IpAddr::V4(v4) => out.push(&v4.octets()),
                IpAddr::V6(v6) => out.push(&v6.octets()),
            }
        }
        out.push(&self.client.port().to_be_bytes());
        out.push(&self.server.port().to_be_bytes());
        out.push(&client_isn.0.to_be_bytes());
    }
}

/// A short message assembled on the stack: the longest (IPv6 with a counter) is 48 bytes.
struct Message {
    bytes: [u8; 48],
    len: usize,
}

impl Message {
    fn new() -> Message {
        Message {
            bytes: [0; 48],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What a valid cookie (and the timestamp echoed with it) says about the client's SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieParams {
    /// The client's MSS, rounded down to the table: what to send it at most.
    pub mss: u16,
    /// The client's window shift, when it offered window scaling and timestamps.
    pub window_scale: Option<u8>,
    /// The client offered SACK (and timestamps, which carried the fact).
    pub sack_permitted: bool,
    /// The client echoed a timestamp, so both sides use them (RFC 7323).
    pub timestamps: bool,
}

/// Makes and checks SYN cookies under one secret.
///
/// The secret is the worker's, drawn from a good random source at start and never shared: anyone
/// who knows it can forge cookies and open connections without a handshake. Cookies do not
/// survive a restart, which only costs the handshakes in flight.
#[derive(Clone)]
pub struct CookieJar {
    secret: [u8; 16],
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieJar").finish_non_exhaustive()
    }
}

impl CookieJar {
    pub fn new(secret: [u8; 16]) -> CookieJar {
        CookieJar { secret }
    }

    /// The ISN for a SYN-ACK answering a SYN with `client_isn` and MSS option `mss`, and the MSS
    /// the cookie remembers: the largest table entry not above `mss`, or the smallest entry when
    /// `mss` is below all of them (as Linux does; every IPv4 host must take 536 bytes, RFC 9293
    /// section 3.7.1, and every IPv6 link 1280). A SYN without the option means the RFC 9293
    /// default, 536 (IPv4) or 1220 (IPv6); pass that.
    pub fn syn_ack_isn(
        &self,
        tuple: &FourTuple,
        client_isn: SeqNumber,
        mss: u16,
        now_ms: u64,
    ) -> (SeqNumber, u16) {
        let table = tuple.mss_table();
        let index = table.iter().rposition(|&entry| entry <= mss).unwrap_or(0);
        let count = counter(now_ms);
        let cookie = self
            .outer_hash(tuple, client_isn)
            .wrapping_add(count << COUNTER_SHIFT)
            .wrapping_add(
                self.inner_hash(tuple, client_isn, count)
                    .wrapping_add(index as u32)
                    & HASH_MASK,
            );
        (SeqNumber(cookie), table[index])
    }

    /// The TSval for a cookie SYN-ACK to a client that sent timestamps, with its window shift
    /// and SACK-permitted in the low bits.
    ///
    /// `tsval_now` is the value the client-facing endpoint's timestamp clock would send now. The
    /// result is never above it, so the connection's later TSvals never run backwards (the
    /// client's PAWS check, RFC 7323 section 5, would drop them); it is at most 32 ticks behind.
    pub fn timestamp_for(window_scale: Option<u8>, sack_permitted: bool, tsval_now: u32) -> u32 {
        let mut options = match window_scale {
            Some(shift) => u32::from(shift.min(MAX_WINDOW_SCALE)),
            None => TS_NO_WINDOW_SCALE,
        };
        if sack_permitted {
            options |= TS_SACK_PERMITTED;
        }
        let tsval = (tsval_now & !TS_OPTION_MASK) | options;
        if tsval > tsval_now {
            // The previous block of 32 ticks; wrapping keeps the low bits when the clock is near 0.
            tsval.wrapping_sub(1 << TS_OPTION_BITS)
        } else {
            tsval
        }
    }

    /// Checks the handshake-completing ACK of a cookie connection: `ack` is the cookie plus one,
    /// `client_seq` the client's ISN plus one, `tsecr` the echoed timestamp when the segment has
    /// the option. `None` when the cookie is not ours, not for this tuple and ISN, or more than
    /// [`MAX_AGE_PERIODS`] periods old: the segment gets a RST or is dropped, as for any ACK
    /// without a connection.
    ///
    /// The options in `tsecr` are the client's word about its own connection; nothing
    /// authenticates them, and nothing needs to.
    pub fn validate(
        &self,
        tuple: &FourTuple,
        ack: SeqNumber,
        client_seq: SeqNumber,
        tsecr: Option<u32>,
        now_ms: u64,
    ) -> Option<CookieParams> {
        let cookie = (ack - 1).0;
        let client_isn = client_seq - 1;
        let layered = cookie.wrapping_sub(self.outer_hash(tuple, client_isn));
        let count = counter(now_ms);
        let age = count.wrapping_sub(layered >> COUNTER_SHIFT) & (u32::MAX >> COUNTER_SHIFT);
        if age >= MAX_AGE_PERIODS {
            return None;
        }
        let made_at = count.wrapping_sub(age);
        let index = layered.wrapping_sub(self.inner_hash(tuple, client_isn, made_at)) & HASH_MASK;
        let mss = *tuple.mss_table().get(index as usize)?;
        let (window_scale, sack_permitted) = match tsecr {
            Some(tsecr) => {
                let shift = tsecr & TS_WINDOW_SCALE_MASK;
                let window_scale =
                    (shift != TS_NO_WINDOW_SCALE).then(|| (shift as u8).min(MAX_WINDOW_SCALE));
                (window_scale, tsecr & TS_SACK_PERMITTED != 0)
            }
            None => (None, false),
        };
        Some(CookieParams {
            mss,
            window_scale,
            sack_permitted,
            timestamps: tsecr.is_some(),
        })
    }

    /// The offset of the timestamp clock a cookie SYN-ACK and the connection it opens use
    /// toward the client (see `proxy::cookie_syn_ack`): a keyed hash of the tuple, so the worker
    /// finds it again from the completing ACK without keeping state, and the TSvals reveal
    /// neither uptime nor a pattern across connections. A domain of its own keeps it apart
    /// from the cookie's hashes.
    pub fn clock_offset(&self, tuple: &FourTuple) -> u32 {
        let mut message = Message::new();
        tuple.write_to(SeqNumber(0), 2, &mut message);
        siphash_2_4(&self.secret, message.as_slice()) as u32
    }

    fn outer_hash(&self, tuple: &FourTuple, client_isn: SeqNumber) -> u32 {
        let mut message = Message::new();
        tuple.write_to(client_isn, 0, &mut message);
        siphash_2_4(&self.secret, message.as_slice()) as u32
    }

    fn inner_hash(&self, tuple: &FourTuple, client_isn: SeqNumber, count: u32) -> u32 {
        let mut message = Message::new();
        tuple.write_to(client_isn, 1, &mut message);
        message.push(&count.to_be_bytes());
        siphash_2_4(&self.secret, message.as_slice()) as u32
    }
}

/// The full counter; only its low byte travels in the cookie, the rest is checked through `H1`.
fn counter(now_ms: u64) -> u32 {
    (now_ms / COOKIE_PERIOD_MS) as u32
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of `message` under `key`: a keyed hash built for
/// short inputs, the MAC Linux uses for cookies and for RFC 6528 ISNs. Written out here because
/// std's `DefaultHasher` is SipHash-1-3 and promises no stable output across Rust releases.
pub(crate) fn siphash_2_4(key: &[u8; 16], message: &[u8]) -> u64 {
    let word = |bytes: &[u8]| {
        let mut le = [0u8; 8];
        le[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(le)
    };
    let (k0, k1) = (word(&key[..8]), word(&key[8..]));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let compress = |m: u64, rounds: usize, v: &mut [u64; 4]| {
        v[3] ^= m;
        for _ in 0..rounds {
            sip_round(v);
        }
        v[0] ^= m;
    };
    let blocks = message.chunks_exact(8);
    let tail = blocks.remainder();
    for block in blocks {
        compress(word(block), 2, &mut v);
    }
    // The last block carries the message length mod 256 in its top byte.
    let last = word(tail) | (message.len() as u64) << 56;
    compress(last, 2, &mut v);
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::TestRng as Rng;

    const SECRET: [u8; 16] = *b"tollgate-secret!";
    /// 10:00 into some period, so "same period" has room on both sides.
    const NOW: u64 = 1_000 * COOKIE_PERIOD_MS + 10_000;

    fn v4_tuple() -> FourTuple {
        FourTuple::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.19.0.2:443".parse().unwrap(),
        )
    }

    fn v6_tuple() -> FourTuple {
        FourTuple::new(
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:443".parse().unwrap(),
        )
    }

    /// The client's ACK for a cookie: `(ack, seq)`.
    fn ack_for(cookie: SeqNumber, client_isn: SeqNumber) -> (SeqNumber, SeqNumber) {
        (cookie + 1, client_isn + 1)
    }

    #[test]
    fn siphash_reference_vectors() {
        // The 64 vectors of the reference implementation (vectors.h): key 00..0f, message
        // 00 01 .. (i-1) for i in 0..64, output as a little-endian u64.
        const EXPECTED: [u64; 64] = [
            0x726fdb47dd0e0e31,
            0x74f839c593dc67fd,
            0x0d6c8009d9a94f5a,
            0x85676696d7fb7e2d,
            0xcf2794e0277187b7,
            0x18765564cd99a68d,
            0xcbc9466e58fee3ce,
            0xab0200f58b01d137,
            0x93f5f5799a932462,
            0x9e0082df0ba9e4b0,
            0x7a5dbbc594ddb9f3,
            0xf4b32f46226bada7,
            0x751e8fbc860ee5fb,
            0x14ea5627c0843d90,
            0xf723ca908e7af2ee,
            0xa129ca6149be45e5,
            0x3f2acc7f57c29bdb,
            0x699ae9f52cbe4794,
            0x4bc1b3f0968dd39c,
            0xbb6dc91da77961bd,
            0xbed65cf21aa2ee98,
            0xd0f2cbb02e3b67c7,
            0x93536795e3a33e88,
            0xa80c038ccd5ccec8,
            0xb8ad50c6f649af94,
            0xbce192de8a85b8ea,
            0x17d835b85bbb15f3,
            0x2f2e6163076bcfad,
            0xde4daaaca71dc9a5,
            0xa6a2506687956571,
            0xad87a3535c49ef28,
            0x32d892fad841c342,
            0x7127512f72f27cce,
            0xa7f32346f95978e3,
            0x12e0b01abb051238,
            0x15e034d40fa197ae,
            0x314dffbe0815a3b4,
            0x027990f029623981,
            0xcadcd4e59ef40c4d,
            0x9abfd8766a33735c,
            0x0e3ea96b5304a7d0,
            0xad0c42d6fc585992,
            0x187306c89bc215a9,
            0xd4a60abcf3792b95,
            0xf935451de4f21df2,
            0xa9538f0419755787,
            0xdb9acddff56ca510,
            0xd06c98cd5c0975eb,
            0xe612a3cb9ecba951,
            0xc766e62cfcadaf96,
            0xee64435a9752fe72,
            0xa192d576b245165a,
            0x0a8787bf8ecb74b2,
            0x81b3e73d20b49b6f,
            0x7fa8220ba3b2ecea,
            0x245731c13ca42499,
            0xb78dbfaf3a8d83bd,
            0xea1ad565322a1a0b,
            0x60e61c23a3795013,
            0x6606d7e446282b93,
            0x6ca4ecb15c5f91e1,
            0x9f626da15c9625f3,
            0xe51b38608ef25f57,
            0x958a324ceb064572,
        ];
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let message: Vec<u8> = (0..64).collect();
        for (len, &expected) in EXPECTED.iter().enumerate() {
            assert_eq!(
                siphash_2_4(&key, &message[..len]),
                expected,
                "message of {len} bytes"
            );
        }
    }

    #[test]
    fn round_trip_recovers_every_field() {
        let jar = CookieJar::new(SECRET);
        for tuple in [v4_tuple(), v6_tuple()] {
            for &mss in tuple.mss_table() {
                for window_scale in [None, Some(0), Some(7), Some(14)] {
                    for sack_permitted in [false, true] {
                        let isn = SeqNumber(0xffff_fffe); // the ACK's seq wraps to 0xffff_ffff
                        let (cookie, used) = jar.syn_ack_isn(&tuple, isn, mss, NOW);
                        assert_eq!(used, mss);
                        let tsval =
                            CookieJar::timestamp_for(window_scale, sack_permitted, NOW as u32);
                        let (ack, seq) = ack_for(cookie, isn);
                        let params = jar.validate(&tuple, ack, seq, Some(tsval), NOW + 1_500);
                        assert_eq!(
                            params,
                            Some(CookieParams {
                                mss,
                                window_scale,
                                sack_permitted,
                                timestamps: true,
                            }),
                            "{tuple:?} mss {mss}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn without_timestamps_only_the_mss_survives() {
        let jar = CookieJar::new(SECRET);
        let tuple = v4_tuple();
        let isn = SeqNumber(12345);
        let (cookie, mss) = jar.syn_ack_isn(&tuple, isn, 1460, NOW);
        let (ack, seq) = ack_for(cookie, isn);
        assert_eq!(
            jar.validate(&tuple, ack, seq, None, NOW),
            Some(CookieParams {
                mss,
                window_scale: None,
                sack_permitted: false,
                timestamps: false,
            })
        );
    }

    #[test]
    fn mss_rounds_down_to_the_table() {
        let jar = CookieJar::new(SECRET);
        let isn = SeqNumber(7);
        let cases_v4 = [
            (65535, 1460),
            (1460, 1460),
            (1459, 1440),
            (1452, 1440),
            (1400, 1300),
            (1299, 536),
            (536, 536),
            // Below the smallest entry: the smallest, as Linux does.
            (100, 536),
            (0, 536),
        ];
        let cases_v6 = [
            (9000, 8940),
            (8939, 1440),
            (1440, 1440),
            (1430, 1420),
            (1220, 1220),
            (500, 1220),
        ];
        for (tuple, cases) in [(v4_tuple(), &cases_v4[..]), (v6_tuple(), &cases_v6[..])] {
            for &(offered, expected) in cases {
                let (cookie, used) = jar.syn_ack_isn(&tuple, isn, offered, NOW);
                assert_eq!(used, expected, "{tuple:?} offered {offered}");
                let (ack, seq) = ack_for(cookie, isn);
                let params = jar.validate(&tuple, ack, seq, None, NOW).unwrap();
                assert_eq!(params.mss, expected);
            }
        }
    }

    #[test]
    fn wrong_tuple_isn_or_secret_is_rejected() {
        let jar = CookieJar::new(SECRET);
        let tuple = v4_tuple();
        let isn = SeqNumber(0x1234_5678);
        let (cookie, _) = jar.syn_ack_isn(&tuple, isn, 1460, NOW);
        let (ack, seq) = ack_for(cookie, isn);
        assert!(jar.validate(&tuple, ack, seq, None, NOW).is_some());

        let mut other_ports = tuple;
        other_ports.client.set_port(40001);
        let mut swapped = tuple;
        (swapped.client, swapped.server) = (tuple.server, tuple.client);
        let mut other_server = tuple;
        other_server.server.set_ip("198.19.0.3".parse().unwrap());
        let mapped = FourTuple::new(
            "[::ffff:198.18.0.1]:40000".parse().unwrap(),
            "[::ffff:198.19.0.2]:443".parse().unwrap(),
        );
        for wrong in [other_ports, swapped, other_server, mapped] {
            assert_eq!(jar.validate(&wrong, ack, seq, None, NOW), None, "{wrong:?}");
        }
        // Off-by-a-little ISNs: with Linux's additive layout these could shift the MSS index
        // and pass.
        for delta in [1, 2, 3, 4, 0x100_0000] {
            assert_eq!(jar.validate(&tuple, ack, seq + delta, None, NOW), None);
            assert_eq!(jar.validate(&tuple, ack, seq - delta, None, NOW), None);
            assert_eq!(jar.validate(&tuple, ack + delta, seq, None, NOW), None);
        }
        let mut other_secret = SECRET;
        other_secret[15] ^= 1;
        assert_eq!(
            CookieJar::new(other_secret).validate(&tuple, ack, seq, None, NOW),
            None
        );
    }

    #[test]
    fn cookies_live_two_periods() {
        let jar = CookieJar::new(SECRET);
        let tuple = v6_tuple();
        let isn = SeqNumber(99);
        let period_start = NOW - NOW % COOKIE_PERIOD_MS;
        let (cookie, _) = jar.syn_ack_isn(&tuple, isn, 1440, period_start);
        let (ack, seq) = ack_for(cookie, isn);
        let valid_at = |now: u64| jar.validate(&tuple, ack, seq, None, now).is_some();
        assert!(valid_at(period_start));
        assert!(valid_at(period_start + COOKIE_PERIOD_MS - 1));
        assert!(valid_at(period_start + 2 * COOKIE_PERIOD_MS - 1));
        assert!(!valid_at(period_start + 2 * COOKIE_PERIOD_MS));
        assert!(!valid_at(period_start + 10 * COOKIE_PERIOD_MS));
        // From the future (a clock that went backwards): rejected.
        assert!(!valid_at(period_start - 1));
        // The counter byte comes round again after 256 periods; the full counter in H1 does not.
        assert!(!valid_at(period_start + 256 * COOKIE_PERIOD_MS));
        assert!(!valid_at(period_start + 257 * COOKIE_PERIOD_MS - 1));
    }

    #[test]
    fn timestamp_carries_options_and_never_runs_ahead() {
        let mut rng = Rng::new(5);
        for _ in 0..10_000 {
            let tsval_now = match rng.below(4) {
                0 => rng.below(64) as u32, // near the wrap
                _ => rng.u32(),
            };
            let window_scale = match rng.below(17) {
                16 => None,
                shift => Some(shift as u8), // 15 is clamped to 14
            };
            let sack_permitted = rng.chance(50);
            let tsval = CookieJar::timestamp_for(window_scale, sack_permitted, tsval_now);
            let behind = tsval_now.wrapping_sub(tsval);
            assert!(behind < 32, "{tsval} is {behind} ticks behind {tsval_now}");

            let jar = CookieJar::new(SECRET);
            let isn = SeqNumber(rng.u32());
            let (cookie, _) = jar.syn_ack_isn(&v4_tuple(), isn, 1460, NOW);
            let (ack, seq) = ack_for(cookie, isn);
            let params = jar
                .validate(&v4_tuple(), ack, seq, Some(tsval), NOW)
                .unwrap();
            assert_eq!(params.window_scale, window_scale.map(|s| s.min(14)));
            assert_eq!(params.sack_permitted, sack_permitted);
            assert!(params.timestamps);
        }
        // Shift 7 and SACK are 23; 992 + 23 would be ahead of 1000, so the block before.
        assert_eq!(CookieJar::timestamp_for(Some(7), true, 1000), 960 + 23);
        assert_eq!(CookieJar::timestamp_for(None, false, 3), 0xffff_ffe0 + 15);
        assert_eq!(CookieJar::timestamp_for(None, true, 31), 31);
    }

    #[test]
    fn random_acks_are_not_accepted() {
        // A forged ACK passes with probability 2^-29 (module docs): none in 100k tries, whether
        // the tuple and ISN are right (only the cookie guessed) or everything is random.
        let jar = CookieJar::new(SECRET);
        let mut rng = Rng::new(0x5eed);
        let tuple = v4_tuple();
        let isn = SeqNumber(4242);
        let mut accepted = 0;
        for i in 0..100_000u32 {
            let guess = SeqNumber(rng.u32());
            if i % 2 == 0 {
                accepted += u32::from(jar.validate(&tuple, guess, isn + 1, None, NOW).is_some());
            } else {
                let client =
                    SocketAddr::new(IpAddr::from(rng.u32().to_be_bytes()), rng.u32() as u16);
                let random = FourTuple::new(client, tuple.server);
                let seq = SeqNumber(rng.u32());
                accepted += u32::from(jar.validate(&random, guess, seq, None, NOW).is_some());
            }
        }
        assert_eq!(accepted, 0);
    }

    #[test]
    fn cookies_look_unrelated_across_connections() {
        // The counter is hidden under H0: consecutive connections' cookies share no top byte
        // pattern, so an observer learns neither the clock nor the next cookie.
        let jar = CookieJar::new(SECRET);
        let mut top_bytes = std::collections::HashSet::new();
        let mut tuple = v4_tuple();
        for port in 0..64 {
            tuple.client.set_port(50_000 + port);
            let (cookie, _) = jar.syn_ack_isn(&tuple, SeqNumber(1), 1460, NOW);
            top_bytes.insert(cookie.0 >> 24);
        }
        assert!(
            top_bytes.len() > 40,
            "{} distinct top bytes",
            top_bytes.len()
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        assert_eq!(format!("{:?}", CookieJar::new(SECRET)), "CookieJar { .. }");
    }
}
