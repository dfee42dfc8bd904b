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

pub(crate) fn read_u16(bytes: &[u8], at: usize) -> u16 {
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
