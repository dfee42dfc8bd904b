//! What the TCP engine's tests share: a simulated link that delays, reorders (jitter), loses
//! and duplicates what it carries, driven by the tests' deterministic generator so that a
//! failing case replays from its seed.

use crate::tcp::segment::{Ecn, SegmentHeader, TcpFlags, TcpOptions};
use crate::tcp::seq::SeqNumber;
use crate::test_rng::TestRng;
use crate::wire::tcp::HEADER_LEN;
use crate::wire::{Malformed, TcpSegment};

/// Something on its way across a [`LossyLink`], due at `at`.
pub struct InFlight<T> {
    pub at: u64,
    /// Sending order, for ties.
    order: u64,
    pub item: T,
}

/// One direction of a simulated link. Percentages for loss and duplication; milliseconds for
/// delay and jitter (each item waits `delay` plus up to `jitter` more, so items overtake one
/// another).
pub struct LossyLink<T> {
    pub delay: u64,
    pub jitter: u64,
    pub loss: u64,
    pub duplication: u64,
    queue: Vec<InFlight<T>>,
    order: u64,
}

impl<T: Clone> LossyLink<T> {
    /// A link that only delays.
    pub fn new(delay: u64) -> LossyLink<T> {
        LossyLink::faulty(delay, 0, 0, 0)
    }

    /// A link with every fault: `jitter` ms of reordering, `loss` and `duplication` percent.
    pub fn faulty(delay: u64, jitter: u64, loss: u64, duplication: u64) -> LossyLink<T> {
        LossyLink {
            delay,
            jitter,
            loss,
            duplication,
            queue: Vec::new(),
            order: 0,
        }
    }

    /// Sends `item` at `now`: duplicated, lost or delayed as the link decides.
    pub fn carry(&mut self, rng: &mut TestRng, item: T, now: u64) {
        let copies = if self.duplication > 0 && rng.chance(self.duplication) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.loss > 0 && rng.chance(self.loss) {
                continue;
            }
            let jitter = if self.jitter > 0 {
                rng.below(self.jitter + 1)
            } else {
                0
            };
            self.order += 1;
            self.queue.push(InFlight {
                at: now + self.delay + jitter,
                order: self.order,
                item: item.clone(),
            });
        }
    }

    /// When the next item is due.
    pub fn next_at(&self) -> Option<u64> {
        self.queue.iter().map(|f| f.at).min()
    }

    /// The earliest item due by `now` (ties in sending order).
    pub fn take_due(&mut self, now: u64) -> Option<InFlight<T>> {
        let index = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, f)| f.at <= now)
            .min_by_key(|(_, f)| (f.at, f.order))
            .map(|(i, _)| i)?;
        Some(self.queue.swap_remove(index))
    }
}

// Segment builders.

/// A SYN from 40000 to 443 with no options: the header builders start from.
pub fn header() -> SegmentHeader {
    SegmentHeader {
        src_port: 40000,
        dst_port: 443,
        seq: SeqNumber(0x0102_0304),
        ack: SeqNumber(0),
        flags: TcpFlags::SYN,
        window: 64240,
        urgent: 0,
        options: TcpOptions::default(),
        ecn: Ecn::NotEct,
    }
}

/// `header` emitted, then `payload`.
pub fn segment_bytes(header: &SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; header.header_len() + payload.len()];
    let len = header.emit(&mut bytes).unwrap();
    assert_eq!(len, header.header_len());
    bytes[len..].copy_from_slice(payload);
    bytes
}

pub fn parse_bytes(bytes: &[u8]) -> Result<SegmentHeader, Malformed> {
    SegmentHeader::parse(&TcpSegment::new_checked(bytes)?)
}

/// [`header`]'s segment with these raw option bytes (whole words) after it.
pub fn segment_with_options(options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut bytes = segment_bytes(&header(), &[]);
    bytes.extend_from_slice(options);
    bytes[12] = (((HEADER_LEN + options.len()) / 4) as u8) << 4;
    bytes
}

/// One's complement has two zeros; incremental updates may produce either.
pub fn same_checksum(a: u16, b: u16) -> bool {
    u32::from(a) % 0xffff == u32::from(b) % 0xffff
}

pub fn stored_checksum(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[16], bytes[17]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_link_delivers_in_order_after_its_delay() {
        let mut rng = TestRng::new(1);
        let mut link = LossyLink::new(5);
        for i in 0..3 {
            link.carry(&mut rng, i, 10);
        }
        assert_eq!(link.next_at(), Some(15));
        assert!(link.take_due(14).is_none());
        let got: Vec<i32> = std::iter::from_fn(|| link.take_due(15).map(|f| f.item)).collect();
        assert_eq!(got, [0, 1, 2]);
    }

    #[test]
    fn loss_duplication_and_jitter_happen_about_as_often_as_asked() {
        let mut rng = TestRng::new(7);
        let mut link = LossyLink::faulty(1, 20, 10, 10);
        for i in 0..10_000u32 {
            link.carry(&mut rng, i, 0);
        }
        let mut arrived = Vec::new();
        while let Some(f) = link.take_due(u64::MAX) {
            assert!((1..=21).contains(&f.at));
            arrived.push(f.item);
        }
        // 10,000 sent, a tenth doubled, a tenth of the copies lost: about 9,900 arrive.
        assert!(
            (9_500..10_300).contains(&arrived.len()),
            "{}",
            arrived.len()
        );
        assert!(arrived.windows(2).any(|w| w[0] > w[1]), "jitter reorders");
    }
}
