//! Stateless forwarding of a flow handed over from the proxy: the translation of each segment's
//! sequence and acknowledgment numbers, SACK blocks, timestamps and window between the two legs'
//! spaces, in place, with the checksum fixed incrementally (RFC 1624), as Linux's seqadj does.
//! A flow that was never proxied passes untouched and needs none of this.

use crate::flow::Direction;
use crate::tcp::segment::MAX_WINDOW_SCALE;
use crate::wire::checksum;
use crate::wire::tcp::{
    flags, TcpSegment, HEADER_LEN, OPTION_END_OF_LIST, OPTION_NO_OPERATION, OPTION_SACK,
    OPTION_TIMESTAMPS,
};
use crate::wire::Malformed;

const CHECKSUM_AT: usize = 16;

/// How to rewrite the segments going one way once a flow is pass-through, so that each endpoint
/// sees the numbers it negotiated with the proxy's leg (the Linux seqadj approach). Every delta is
/// a wrapping addition; [`Translation::apply`] does it all on a segment's TCP bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Translation {
    /// Added to SEG.SEQ.
    pub seq_delta: u32,
    /// Added to SEG.ACK and to the SACK block edges: the other direction's `seq_delta`, negated.
    pub ack_delta: u32,
    /// Added to TSval: the receiver's PAWS check compares it with what the proxy's leg sent.
    pub tsval_delta: u32,
    /// Added to TSecr: the other direction's `tsval_delta`, negated, so echoes come home.
    pub tsecr_delta: u32,
    /// `(sender's shift, receiver's shift)` when they differ (only after a SYN cookie).
    pub window_scale: Option<(u8, u8)>,
}

impl Translation {
    /// Nothing to change: the worker may forward segments untouched.
    pub fn is_identity(&self) -> bool {
        *self == Translation::default()
    }

    /// Rewrites a whole TCP segment (header and payload, for the checksum) in place, fixing the
    /// checksum incrementally. A segment whose header cannot be read is left untouched and the
    /// reason returned (the shifts validate the options before changing anything, the same way).
    pub fn apply(&self, tcp_bytes: &mut [u8]) -> Result<(), Malformed> {
        if self.seq_delta != 0 || self.ack_delta != 0 {
            shift_seq(tcp_bytes, self.seq_delta, self.ack_delta)?;
        }
        if self.tsval_delta != 0 || self.tsecr_delta != 0 {
            shift_timestamps(tcp_bytes, self.tsval_delta, self.tsecr_delta)?;
        }
        if let Some((from, to)) = self.window_scale {
            rescale_window(tcp_bytes, from, to)?;
        }
        Ok(())
    }
}

/// What the worker must do to carry on a flow as pass-through: forward every segment of the flow
/// with [`Handover::translation`] of its direction applied, after showing it to
/// `TcpProxy::on_passthrough`, and keep driving the proxy (`poll_transmit`, `poll_at`,
/// `on_timer`) while `TcpProxy::owes` says it still has bytes to deliver.
///
/// Those are what the proxy owes the endpoints: data one side has been acknowledged for and the
/// other has not acknowledged yet (each leg's send queue and what was received but not yet
/// relayed), a FIN likewise, and the out-of-order data held above a hole. Their sender was told
/// they arrived and will not send them again, so the proxy keeps them, sends them within the
/// receiver's window and retransmits them until the receiver acknowledges them
/// (`OwedStream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handover {
    pub client_to_server: Translation,
    pub server_to_client: Translation,
}

impl Handover {
    pub fn translation(&self, direction: Direction) -> &Translation {
        match direction {
            Direction::ClientToServer => &self.client_to_server,
            Direction::ServerToClient => &self.server_to_client,
        }
    }
}

/// Adds `seq_delta` to the sequence number and `ack_delta` to the acknowledgment number and to
/// both edges of every SACK block, fixing the checksum incrementally (RFC 1624), so a flow moved
/// from proxy to pass-through keeps both endpoints' views consistent where the two legs'
/// sequence spaces differ (the Linux seqadj approach). Negative offsets are wrapping additions.
///
/// SACK blocks acknowledge the same sequence space as the ACK field (RFC 2018 section 3), so
/// they move with it. The acknowledgment number is only shifted when ACK is set: without it the
/// field carries no meaning (RFC 9293 section 3.1) and is left as sent. Every SACK option is
/// rewritten, not only the first, so that a receiver reading the last copy sees the same result.
///
/// On a segment that is too short or whose options do not parse, nothing is changed and the
/// reason is returned.
pub fn shift_seq(tcp_bytes: &mut [u8], seq_delta: u32, ack_delta: u32) -> Result<(), Malformed> {
    let (header_len, found) = find_options(tcp_bytes, OPTION_SACK)?;
    let mut sum = read_u16(tcp_bytes, CHECKSUM_AT);
    sum = add_to_u32(tcp_bytes, 4, seq_delta, sum);
    if tcp_bytes[13] & flags::ACK != 0 {
        sum = add_to_u32(tcp_bytes, 8, ack_delta, sum);
    }
    for &(at, len) in found.as_slice() {
        // Body of `len - 2` bytes of 4-byte edges; `find_options` checked it lies in the header.
        let mut edge = at + 2;
        while edge + 4 <= (at + len).min(header_len) {
            sum = add_to_u32(tcp_bytes, edge, ack_delta, sum);
            edge += 4;
        }
    }
    tcp_bytes[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Adds the deltas to TSval and TSecr of every timestamps option (RFC 7323 section 3), fixing the
/// checksum incrementally, so that a flow moved to pass-through presents each endpoint with the
/// timestamp clock it negotiated with (PAWS, RFC 7323 section 5, rejects anything else).
///
/// On a segment that is too short or whose options do not parse, nothing is changed and the
/// reason is returned. A segment without timestamps is left as it is.
pub fn shift_timestamps(
    tcp_bytes: &mut [u8],
    tsval_delta: u32,
    tsecr_delta: u32,
) -> Result<(), Malformed> {
    let (header_len, found) = find_options(tcp_bytes, OPTION_TIMESTAMPS)?;
    let mut sum = read_u16(tcp_bytes, CHECKSUM_AT);
    for &(at, len) in found.as_slice() {
        if len == 10 && at + 10 <= header_len {
            sum = add_to_u32(tcp_bytes, at + 2, tsval_delta, sum);
            sum = add_to_u32(tcp_bytes, at + 6, tsecr_delta, sum);
        }
    }
    tcp_bytes[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Rewrites the window field for a receiver that reads it with `to_shift` when the sender wrote
/// it with `from_shift` (RFC 7323 section 2.3), fixing the checksum incrementally: after a flow
/// moves to pass-through, an endpoint whose SYN-ACK came from a SYN cookie expects the shift the
/// cookie offered, not the one the other endpoint chose. The window is rounded down (offering
/// less than the sender did is always safe) and capped at 65535 units. SYN segments are left
/// alone: their window is never scaled (RFC 7323 section 2.2).
pub fn rescale_window(tcp_bytes: &mut [u8], from_shift: u8, to_shift: u8) -> Result<(), Malformed> {
    if tcp_bytes.len() < HEADER_LEN {
        return Err(Malformed::TcpTruncated);
    }
    if from_shift == to_shift || tcp_bytes[13] & flags::SYN != 0 {
        return Ok(());
    }
    const WINDOW_AT: usize = 14;
    let old = read_u16(tcp_bytes, WINDOW_AT);
    let bytes = u64::from(old) << from_shift.min(MAX_WINDOW_SCALE);
    let new = (bytes >> to_shift.min(MAX_WINDOW_SCALE)).min(u64::from(u16::MAX)) as u16;
    tcp_bytes[WINDOW_AT..WINDOW_AT + 2].copy_from_slice(&new.to_be_bytes());
    let sum = checksum::update_u16(read_u16(tcp_bytes, CHECKSUM_AT), old, new);
    tcp_bytes[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Where options of one kind sit: `(offset in the segment, option length)`. Each is at least 10
/// bytes for the kinds looked for, so four fill the 40-byte option space.
struct Found {
    at: [(usize, usize); 4],
    count: usize,
}

impl Found {
    fn as_slice(&self) -> &[(usize, usize)] {
        &self.at[..self.count]
    }
}

/// Checks the header length and every option (with the parser's rules), then finds the options
/// of `kind`. Checking everything first is what lets the rewrites be all or nothing.
fn find_options(tcp_bytes: &[u8], kind: u8) -> Result<(usize, Found), Malformed> {
    let segment = TcpSegment::new_checked(tcp_bytes)?;
    for option in segment.iter_options() {
        option?;
    }
    let header_len = segment.header_len();
    let mut found = Found {
        at: [(0, 0); 4],
        count: 0,
    };
    let mut at = HEADER_LEN;
    while at < header_len {
        let this = tcp_bytes[at];
        if this == OPTION_END_OF_LIST {
            break;
        }
        if this == OPTION_NO_OPERATION {
            at += 1;
            continue;
        }
        // The iteration above guarantees a length byte of at least 2 that stays in the header;
        // the fallbacks only keep panics out.
        let len = usize::from(tcp_bytes.get(at + 1).copied().unwrap_or(0)).max(2);
        if this == kind {
            let slot = found
                .at
                .get_mut(found.count)
                .ok_or(Malformed::TcpBadOption)?;
            *slot = (at, len);
            found.count += 1;
        }
        at += len;
    }
    Ok((header_len, found))
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Adds `delta` to the big-endian word at `at` and returns `checksum` updated for the change.
///
/// RFC 1624's update assumes the field lies on 16-bit boundaries of the summed data. Options
/// need not be aligned (a lone NOP before SACK puts its edges at odd offsets); a field shifted by
/// one byte contributes its byte-swapped sum, since in one's complement arithmetic a byte swap
/// is multiplication by 2^8 (RFC 1071 section 2(B)).
fn add_to_u32(bytes: &mut [u8], at: usize, delta: u32, checksum: u16) -> u16 {
    let field: &mut [u8; 4] = match bytes
        .get_mut(at..at + 4)
        .and_then(|field| field.try_into().ok())
    {
        Some(field) => field,
        None => return checksum,
    };
    let old = u32::from_be_bytes(*field);
    let new = old.wrapping_add(delta);
    *field = new.to_be_bytes();
    if at & 1 == 0 {
        checksum::update_u32(checksum, old, new)
    } else {
        let swapped = |value: u32| {
            checksum::fold(u64::from(value >> 16) + u64::from(value & 0xffff)).swap_bytes()
        };
        checksum::update_u16(checksum, swapped(old), swapped(new))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::tcp::segment::{fill_checksum_v4, TcpFlags};
    use crate::tcp::seq::SeqNumber;
    use crate::tcp::testkit::{
        header, parse_bytes, same_checksum, segment_bytes as emit_vec,
        segment_with_options as tcp_with_options, stored_checksum,
    };
    use crate::test_rng::TestRng as Rng;

    const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const DST4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);

    fn sack_edges(bytes: &[u8]) -> Vec<(u32, u32)> {
        parse_bytes(bytes)
            .unwrap()
            .options
            .sack
            .iter()
            .map(|(l, r)| (l.0, r.0))
            .collect()
    }

    #[test]
    fn shift_seq_wraps_and_moves_sack_blocks() {
        let mut ack = header();
        ack.flags = TcpFlags::ACK;
        ack.seq = SeqNumber(0xffff_fff0);
        ack.ack = SeqNumber(0xffff_ff00);
        ack.options.timestamps = Some((5, 6));
        ack.options
            .sack
            .push(SeqNumber(0xffff_ff80), SeqNumber(0x0000_0040));
        ack.options
            .sack
            .push(SeqNumber(0xffff_fe00), SeqNumber(0xffff_fe10));
        let mut bytes = emit_vec(&ack, b"payload");
        fill_checksum_v4(&mut bytes, SRC4, DST4).unwrap();

        shift_seq(&mut bytes, 0x20, 0x100).unwrap();
        let shifted = parse_bytes(&bytes).unwrap();
        assert_eq!(shifted.seq, SeqNumber(0x10));
        assert_eq!(shifted.ack, SeqNumber(0));
        assert_eq!(
            sack_edges(&bytes),
            [(0x80, 0x140), (0xffff_ff00, 0xffff_ff10)]
        );
        assert_eq!(shifted.options.timestamps, Some((5, 6)));
        assert!(TcpSegment::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum_v4(SRC4, DST4));
        let incremental = stored_checksum(&bytes);
        fill_checksum_v4(&mut bytes, SRC4, DST4).unwrap();
        assert!(same_checksum(incremental, stored_checksum(&bytes)));

        // Shifting back by the negated deltas restores the original numbers.
        shift_seq(&mut bytes, 0x20u32.wrapping_neg(), 0x100u32.wrapping_neg()).unwrap();
        let restored = parse_bytes(&bytes).unwrap();
        assert_eq!(restored, ack);
    }

    #[test]
    fn shift_seq_leaves_ack_alone_without_the_ack_flag() {
        let mut syn = header();
        syn.ack = SeqNumber(1234);
        let mut bytes = emit_vec(&syn, &[]);
        fill_checksum_v4(&mut bytes, SRC4, DST4).unwrap();
        shift_seq(&mut bytes, 1, 1).unwrap();
        let shifted = parse_bytes(&bytes).unwrap();
        assert_eq!(shifted.seq, SeqNumber(0x0102_0305));
        assert_eq!(shifted.ack, SeqNumber(1234));
        assert!(TcpSegment::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum_v4(SRC4, DST4));
    }

    #[test]
    fn shift_seq_handles_unaligned_and_repeated_sack_options() {
        // NOP, SACK(1 block), SACK(1 block), padding: edges at odd offsets, two SACK options.
        let mut options = vec![1, 5, 10, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
        options.extend_from_slice(&[5, 10, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0]);
        let mut bytes = tcp_with_options(&options);
        bytes[13] = flags::ACK;
        bytes.extend_from_slice(b"odd payload");
        fill_checksum_v4(&mut bytes, SRC4, DST4).unwrap();
        let mut rng = Rng::new(99);
        for _ in 0..200 {
            let (seq_delta, ack_delta) = (rng.u32(), rng.u32());
            let before = bytes.clone();
            shift_seq(&mut bytes, seq_delta, ack_delta).unwrap();
            let read = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
            for at in [23, 27, 33, 37] {
                assert_eq!(read(&bytes, at), read(&before, at).wrapping_add(ack_delta));
            }
            let incremental = stored_checksum(&bytes);
            let segment = TcpSegment::new_checked(&bytes[..]).unwrap();
            assert!(segment.verify_checksum_v4(SRC4, DST4));
            let mut recomputed = bytes.clone();
            fill_checksum_v4(&mut recomputed, SRC4, DST4).unwrap();
            assert!(same_checksum(incremental, stored_checksum(&recomputed)));
        }
    }

    #[test]
    fn shift_timestamps_moves_both_clocks() {
        let mut ack = header();
        ack.flags = TcpFlags::ACK;
        ack.options.timestamps = Some((0xffff_fffe, 10));
        ack.options.sack.push(SeqNumber(1), SeqNumber(2));
        let mut bytes = emit_vec(&ack, b"x");
        fill_checksum_v4(&mut bytes, SRC4, DST4).unwrap();
        shift_timestamps(&mut bytes, 3, 0u32.wrapping_sub(11)).unwrap();
        let shifted = parse_bytes(&bytes).unwrap();
        assert_eq!(shifted.options.timestamps, Some((1, u32::MAX)));
        assert_eq!(shifted.seq, ack.seq);
        assert_eq!(shifted.options.sack, ack.options.sack);
        assert!(TcpSegment::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum_v4(SRC4, DST4));

        // No timestamps: nothing to do, and nothing changes.
        let mut bytes = emit_vec(&header(), &[]);
        let before = bytes.clone();
        shift_timestamps(&mut bytes, 1, 1).unwrap();
        assert_eq!(bytes, before);
    }

    #[test]
    fn rescale_window_converts_units_and_keeps_the_checksum() {
        let mut ack = header();
        ack.flags = TcpFlags::ACK;
        ack.window = 1000;
        let mut bytes = emit_vec(&ack, b"data");
        fill_checksum_v4(&mut bytes, SRC4, DST4).unwrap();
        // 1000 units of 2^7 bytes are 500 units of 2^8.
        rescale_window(&mut bytes, 7, 8).unwrap();
        assert_eq!(parse_bytes(&bytes).unwrap().window, 500);
        assert!(TcpSegment::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum_v4(SRC4, DST4));
        // Towards a smaller shift the value grows, capped at the field's maximum.
        rescale_window(&mut bytes, 8, 0).unwrap();
        assert_eq!(parse_bytes(&bytes).unwrap().window, u16::MAX);
        assert!(TcpSegment::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum_v4(SRC4, DST4));
        // Rounded down, never up: 3 units of 2^1 are 0 units of 2^4.
        ack.window = 3;
        let mut bytes = emit_vec(&ack, &[]);
        rescale_window(&mut bytes, 1, 4).unwrap();
        assert_eq!(parse_bytes(&bytes).unwrap().window, 0);
        // A SYN's window is not scaled, so it stays as it is.
        let mut syn = emit_vec(&header(), &[]);
        let before = syn.clone();
        rescale_window(&mut syn, 0, 7).unwrap();
        assert_eq!(syn, before);
        assert_eq!(
            rescale_window(&mut [0u8; 19], 0, 1),
            Err(Malformed::TcpTruncated)
        );
    }

    #[test]
    fn rewrites_refuse_malformed_segments_untouched() {
        let cases: [&[u8]; 4] = [
            &[2, 3, 0, 0],              // MSS of length 3
            &[5, 10, 0, 0],             // SACK running past the header
            &[1, 1, 1, 30],             // no length byte
            &[8, 10, 0, 0, 0, 0, 0, 0], // timestamps cut short
        ];
        for options in cases {
            let mut bytes = tcp_with_options(options);
            bytes[13] = flags::ACK;
            let before = bytes.clone();
            assert_eq!(shift_seq(&mut bytes, 1, 1), Err(Malformed::TcpBadOption));
            assert_eq!(
                shift_timestamps(&mut bytes, 1, 1),
                Err(Malformed::TcpBadOption)
            );
            assert_eq!(bytes, before, "{options:?}");
        }
        let mut short = [0u8; 12];
        assert_eq!(shift_seq(&mut short, 1, 1), Err(Malformed::TcpTruncated));
        let mut bad_offset = emit_vec(&header(), &[]);
        bad_offset[12] = 0x60;
        let before = bad_offset.clone();
        assert_eq!(
            shift_timestamps(&mut bad_offset, 1, 1),
            Err(Malformed::TcpBadDataOffset)
        );
        assert_eq!(bad_offset, before);
    }

    #[test]
    fn rewrites_never_panic_and_keep_checksums_valid() {
        let mut rng = Rng::new(0xdead_beef);
        for _ in 0..20_000 {
            let len = rng.below(70) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u32() as u8).collect();
            if len >= 20 {
                // Mostly plausible data offsets, with options drawn from real kinds.
                if rng.chance(80) {
                    let words = 5 + rng.below(((len - 20) / 4 + 1) as u64) as u8;
                    bytes[12] = words << 4;
                }
                for byte in bytes.iter_mut().skip(20).take(40) {
                    if rng.chance(50) {
                        *byte = [0, 1, 2, 3, 4, 5, 8, 10, 18][rng.below(9) as usize];
                    }
                }
                fill_checksum_v4(&mut bytes, SRC4, DST4).unwrap();
            }
            let before = bytes.clone();
            let result = if rng.chance(50) {
                shift_seq(&mut bytes, rng.u32(), rng.u32())
            } else {
                shift_timestamps(&mut bytes, rng.u32(), rng.u32())
            };
            match result {
                Ok(()) => assert!(TcpSegment::new_checked(&bytes[..])
                    .unwrap()
                    .verify_checksum_v4(SRC4, DST4)),
                Err(_) => assert_eq!(bytes, before),
            }
        }
    }
}
