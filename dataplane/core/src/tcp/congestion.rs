//! Congestion control: NewReno (RFC 5681, RFC 6582) with appropriate byte counting (RFC 3465),
//! limited transmit (RFC 3042) and the cwnd side of SACK-based loss recovery (RFC 6675).
//!
//! All windows and amounts are **bytes** (`usize`), as in RFC 5681; SMSS is the sender maximum
//! segment size of the leg, the payload bytes of a full segment. The struct decides how much may
//! be sent; what to send (which hole, new data) is the endpoint's, with the scoreboard's
//! [`next_seg`](super::sack::SackScoreboard::next_seg) under SACK and SND.UNA otherwise.

use super::seq::SeqNumber;

/// RFC 5681 §3.2 (and RFC 6675's DupThresh): duplicate ACKs that signal a loss.
pub const DUP_THRESH: u32 = 3;

/// RFC 3465 §2.2's L: slow start grows cwnd by at most this many SMSS per ACK, so a stretch ACK
/// (or an ACK after a lost one) cannot make a burst.
const ABC_LIMIT_SEGMENTS: usize = 2;

/// Where the sender is in the RFC 5681 / RFC 6582 cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Slow start or congestion avoidance (cwnd against ssthresh says which).
    Open,
    /// Fast recovery, entered on DupThresh duplicate ACKs (or RFC 6675 IsLost), until an ACK
    /// covers `recover`.
    Recovery,
    /// After a retransmission timeout, until an ACK covers `recover`: slow start from the loss
    /// window, and no fast retransmit (RFC 6582 §3.2 step 1: duplicate ACKs below `recover` are
    /// echoes of the timeout's go-back-N, not a new loss).
    Loss,
}

/// What a duplicate ACK means for the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DupAckOutcome {
    /// Counted, below DupThresh (limited transmit may send new data: [`NewReno::can_send`]
    /// allows it), or at/above it after a timeout, where RFC 6582 forbids fast retransmit.
    Counted,
    /// DupThresh reached: call [`NewReno::enter_recovery`] and retransmit the segment at SND.UNA
    /// (RFC 5681 §3.2 step 2; RFC 6675 §5 step 4 under SACK).
    FastRetransmit,
    /// Already in fast recovery: without SACK cwnd was inflated by one SMSS (RFC 5681 §3.2 step
    /// 4), so new data may go out; under SACK pipe governs and nothing changed here.
    InRecovery,
}

/// What an ACK of new data means for the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Not in fast recovery: cwnd grew by slow start or congestion avoidance.
    Normal,
    /// RFC 6582 §3.2 step 3, partial ACK: still in recovery. Without SACK, retransmit the first
    /// unacknowledged segment; under SACK, carry on with NextSeg. `first` is set for the first
    /// partial ACK of this recovery, the one that re-arms the retransmission timer (RFC 6582 §3.2
    /// step 3, §4 "Impatient" variant).
    PartialAck { first: bool },
    /// The ACK covered `recover`: recovery is over and cwnd was set from ssthresh.
    RecoveryDone,
}

/// NewReno congestion state for one direction of one leg.
#[derive(Clone, Debug)]
pub struct NewReno {
    smss: usize,
    cwnd: usize,
    ssthresh: usize,
    phase: Phase,
    /// RFC 6582 `recover`, held as SND.NXT at the time it was set (the RFC's "highest sequence
    /// number transmitted" plus one), so "covers recover" is `ack >= recover`. Cleared once an
    /// ACK passes it, so a long-lived connection never compares against a point 2^31 behind.
    recover: Option<SeqNumber>,
    dup_acks: u32,
    /// RFC 3465 §2.1's bytes_acked, for congestion avoidance.
    bytes_acked: usize,
    sack: bool,
    partial_ack_seen: bool,
    /// A timeout happened and no ACK of new data came since: a further timeout is the same
    /// segment timing out again, and RFC 5681 §3.1 holds ssthresh for it.
    timed_out: bool,
}

impl NewReno {
    /// `smss` in bytes (clamped to at least 1); `sack` when both ends negotiated SACK-permitted,
    /// which switches recovery to RFC 6675 (no cwnd inflation, sending governed by pipe).
    pub fn new(smss: usize, sack: bool) -> NewReno {
        let smss = smss.max(1);
        NewReno {
            smss,
            cwnd: initial_window(smss),
            // RFC 5681 §3.1: "arbitrarily high", so the first loss decides.
            ssthresh: usize::MAX,
            phase: Phase::Open,
            recover: None,
            dup_acks: 0,
            bytes_acked: 0,
            sack,
            partial_ack_seen: false,
            timed_out: false,
        }
    }

    /// RFC 5681 §3.1: when the SYN or SYN-ACK was lost, the initial window is one segment.
    pub fn on_syn_retransmitted(&mut self) {
        self.cwnd = self.smss;
    }

    pub fn smss(&self) -> usize {
        self.smss
    }

    pub fn cwnd(&self) -> usize {
        self.cwnd
    }

    pub fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn in_recovery(&self) -> bool {
        self.phase == Phase::Recovery
    }

    pub fn in_slow_start(&self) -> bool {
        self.cwnd < self.ssthresh
    }

    pub fn recover(&self) -> Option<SeqNumber> {
        self.recover
    }

    pub fn dup_acks(&self) -> u32 {
        self.dup_acks
    }

    pub fn sack(&self) -> bool {
        self.sack
    }

    /// RFC 6582 §3.2 step 1: fast retransmit only when the cumulative ACK covers more than
    /// `recover`; otherwise the duplicates are the receiver answering a timeout's retransmissions
    /// of data it already had, and a second reduction would be spurious. Also false while in
    /// recovery. The SACK path (RFC 6675 IsLost before DupThresh) asks this before entering.
    pub fn can_enter_recovery(&self, ack: SeqNumber) -> bool {
        self.phase != Phase::Recovery && self.recover.is_none_or(|recover| ack >= recover)
    }

    /// A duplicate ACK (RFC 5681 §2 definition, or RFC 6675 §2's when SACK is in use: the
    /// endpoint classifies), with `ack` its acknowledgment number (= SND.UNA).
    pub fn on_dup_ack(&mut self, ack: SeqNumber) -> DupAckOutcome {
        if self.phase == Phase::Recovery {
            if !self.sack {
                self.cwnd = self.cwnd.saturating_add(self.smss);
            }
            return DupAckOutcome::InRecovery;
        }
        self.dup_acks = self.dup_acks.saturating_add(1);
        if self.dup_acks >= DUP_THRESH && self.can_enter_recovery(ack) {
            DupAckOutcome::FastRetransmit
        } else {
            DupAckOutcome::Counted
        }
    }

    /// Enter fast recovery (RFC 5681 §3.2 step 2, RFC 6675 §5 step 4). `flight_size` is the
    /// bytes outstanding (SND.NXT − SND.UNA), `snd_nxt` the highest sequence number sent plus one
    /// (SND.MAX if the endpoint ever rewinds SND.NXT): it becomes `recover`.
    pub fn enter_recovery(&mut self, flight_size: usize, snd_nxt: SeqNumber) {
        self.ssthresh = self.reduced_ssthresh(flight_size);
        self.cwnd = if self.sack {
            // RFC 6675 §5 (4.2): cwnd = ssthresh; pipe, not inflation, accounts for what left.
            self.ssthresh
        } else {
            // RFC 5681 §3.2 step 3: the three duplicates are three segments that left the network.
            self.ssthresh
                .saturating_add(DUP_THRESH as usize * self.smss)
        };
        self.recover = Some(snd_nxt);
        self.phase = Phase::Recovery;
        self.bytes_acked = 0;
        self.partial_ack_seen = false;
    }

    /// An ACK that advanced SND.UNA to `ack`, acknowledging `newly_acked` bytes; `flight_size`
    /// is what is still outstanding after it (SND.NXT − `ack`). An ACK that acknowledges nothing
    /// new is a duplicate or a window update, not this (it returns `Normal` and changes nothing).
    pub fn on_ack(&mut self, ack: SeqNumber, newly_acked: usize, flight_size: usize) -> AckOutcome {
        if newly_acked == 0 {
            return AckOutcome::Normal;
        }
        self.dup_acks = 0;
        self.timed_out = false;
        match self.phase {
            Phase::Recovery => {
                if self.recover.is_none_or(|recover| ack >= recover) {
                    // RFC 6582 §3.2 step 3, full ACK, option (1): no more than ssthresh, and no
                    // more than one segment beyond what is in flight, so leaving recovery with
                    // little outstanding does not release a burst.
                    let floor = flight_size.max(self.smss).saturating_add(self.smss);
                    self.cwnd = self.ssthresh.min(floor);
                    self.phase = Phase::Open;
                    self.recover = None;
                    self.bytes_acked = 0;
                    AckOutcome::RecoveryDone
                } else {
                    if !self.sack {
                        // RFC 6582 §3.2 step 3, partial ACK: deflate by what left the network,
                        // add back one SMSS for the retransmission this ACK triggers. The floor
                        // of one SMSS is ours: the retransmission must always fit.
                        let mut cwnd = self.cwnd.saturating_sub(newly_acked);
                        if newly_acked >= self.smss {
                            cwnd = cwnd.saturating_add(self.smss);
                        }
                        self.cwnd = cwnd.max(self.smss);
                    }
                    let first = !self.partial_ack_seen;
                    self.partial_ack_seen = true;
                    AckOutcome::PartialAck { first }
                }
            }
            Phase::Loss => {
                // RFC 3465 §2.3: L = 1 SMSS in the slow start after a timeout, since ACKs then
                // often cover data the receiver already held, and would otherwise burst.
                self.grow(newly_acked, self.smss);
                if self.recover.is_none_or(|recover| ack >= recover) {
                    self.phase = Phase::Open;
                    self.recover = None;
                }
                AckOutcome::Normal
            }
            Phase::Open => {
                self.grow(newly_acked, ABC_LIMIT_SEGMENTS * self.smss);
                AckOutcome::Normal
            }
        }
    }

    /// Slow start below ssthresh, congestion avoidance from it, by bytes acknowledged (RFC 3465).
    fn grow(&mut self, newly_acked: usize, slow_start_limit: usize) {
        let mut acked = newly_acked;
        if self.cwnd < self.ssthresh {
            // RFC 3465 §2.2: cwnd += min(N, L).
            let increase = acked.min(slow_start_limit);
            let room = self.ssthresh - self.cwnd;
            if increase <= room {
                self.cwnd += increase;
                return;
            }
            // Reaching ssthresh mid-ACK: the rest counts towards congestion avoidance, as
            // Linux's tcp_slow_start() hands back its leftover.
            self.cwnd = self.ssthresh;
            acked -= room;
        }
        // RFC 3465 §2.1 / RFC 5681 §3.1: one SMSS per cwnd's worth of bytes acknowledged.
        self.bytes_acked = self.bytes_acked.saturating_add(acked);
        if self.bytes_acked >= self.cwnd {
            self.bytes_acked -= self.cwnd;
            self.cwnd = self.cwnd.saturating_add(self.smss);
        }
    }

    /// The retransmission timer expired (RFC 5681 §3.1, RFC 6582 §3.2 step 4). `flight_size`
    /// and `snd_nxt` as for [`enter_recovery`](Self::enter_recovery).
    pub fn on_rto(&mut self, flight_size: usize, snd_nxt: SeqNumber) {
        // RFC 5681 §3.1, equation (4), except when the same segment times out again: then
        // FlightSize is what the first timeout left, and halving again would punish one loss twice.
        if !self.timed_out {
            self.ssthresh = self.reduced_ssthresh(flight_size);
        }
        self.timed_out = true;
        // The loss window LW: one segment.
        self.cwnd = self.smss;
        self.recover = Some(match self.recover {
            Some(recover) => recover.max(snd_nxt),
            None => snd_nxt,
        });
        self.phase = Phase::Loss;
        self.dup_acks = 0;
        self.bytes_acked = 0;
        self.partial_ack_seen = false;
    }

    /// An ECE (RFC 3168 §6.1.2): ssthresh and cwnd as after a loss, without fast recovery,
    /// since nothing was lost. The caller keeps it to once a window.
    pub fn on_congestion_echo(&mut self, flight_size: usize) {
        self.ssthresh = self.reduced_ssthresh(flight_size);
        self.cwnd = self.ssthresh;
        self.bytes_acked = 0;
    }

    /// RFC 5681 §3.1 equation (4): ssthresh = max(FlightSize / 2, 2·SMSS).
    fn reduced_ssthresh(&self, flight_size: usize) -> usize {
        (flight_size / 2).max(2 * self.smss)
    }

    /// Bytes that may be sent now beyond what is in the network: `in_flight` is RFC 6675 pipe
    /// when SACK is in use, FlightSize (SND.NXT − SND.UNA) otherwise. The receive window is the
    /// endpoint's to apply on top.
    pub fn can_send(&self, in_flight: usize) -> usize {
        let mut window = self.cwnd;
        if self.phase == Phase::Open && self.dup_acks > 0 && self.dup_acks < DUP_THRESH {
            // RFC 3042 limited transmit: each of the first DupThresh − 1 duplicates lets one new
            // segment out beyond cwnd, so a small window still gets enough duplicates back for
            // fast retransmit. cwnd itself does not change.
            window = window.saturating_add(self.dup_acks as usize * self.smss);
        }
        let allowed = window.saturating_sub(in_flight);
        if self.sack && self.phase == Phase::Recovery && allowed < self.smss {
            // RFC 6675 §5 step (C): send only while cwnd − pipe ≥ 1 SMSS.
            return 0;
        }
        allowed
    }
}

/// The initial window, RFC 6928 §2: min(10·SMSS, max(2·SMSS, 14600)) bytes.
pub fn initial_window(smss: usize) -> usize {
    (10 * smss).min((2 * smss).max(14_600))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1_000;

    fn s(n: u32) -> SeqNumber {
        SeqNumber(n)
    }

    /// A sender past slow start with a known cwnd, as a test starting point.
    fn open_with(cwnd: usize, ssthresh: usize, sack: bool) -> NewReno {
        let mut cc = NewReno::new(MSS, sack);
        cc.cwnd = cwnd;
        cc.ssthresh = ssthresh;
        cc
    }

    #[test]
    fn initial_window_follows_rfc_6928() {
        assert_eq!(initial_window(1_460), 14_600);
        assert_eq!(initial_window(1_000), 10_000);
        assert_eq!(initial_window(536), 5_360);
        assert_eq!(initial_window(9_000), 18_000, "jumbo: 2·SMSS beats 14600");
        assert_eq!(initial_window(1_500), 14_600);
        let cc = NewReno::new(1_460, false);
        assert_eq!(cc.cwnd(), 14_600);
        assert_eq!(cc.ssthresh(), usize::MAX);
        assert!(cc.in_slow_start());
    }

    #[test]
    fn lost_syn_shrinks_the_initial_window_to_one_segment() {
        let mut cc = NewReno::new(MSS, false);
        cc.on_syn_retransmitted();
        assert_eq!(cc.cwnd(), MSS);
    }

    #[test]
    fn slow_start_counts_bytes_with_limit_two_segments() {
        let mut cc = NewReno::new(MSS, false);
        assert_eq!(cc.on_ack(s(1_000), 1_000, 0), AckOutcome::Normal);
        assert_eq!(cc.cwnd(), 11_000);
        cc.on_ack(s(1_500), 500, 0);
        assert_eq!(
            cc.cwnd(),
            11_500,
            "a small ACK grows cwnd by what it acknowledged"
        );
        cc.on_ack(s(6_500), 5_000, 0);
        assert_eq!(
            cc.cwnd(),
            13_500,
            "a stretch ACK grows cwnd by at most L = 2 SMSS"
        );
    }

    #[test]
    fn slow_start_stops_at_ssthresh_and_hands_the_rest_to_avoidance() {
        let mut cc = open_with(9_500, 10_000, false);
        cc.on_ack(s(2_000), 2_000, 0);
        assert_eq!(cc.cwnd(), 10_000);
        assert_eq!(cc.bytes_acked, 1_500);
        assert!(!cc.in_slow_start());
    }

    #[test]
    fn congestion_avoidance_adds_one_segment_per_window_acknowledged() {
        let mut cc = open_with(4_000, 4_000, false);
        for i in 1..=3 {
            cc.on_ack(s(i * 1_000), 1_000, 3_000);
            assert_eq!(cc.cwnd(), 4_000);
        }
        cc.on_ack(s(4_000), 1_000, 3_000);
        assert_eq!(cc.cwnd(), 5_000);
        assert_eq!(cc.bytes_acked, 0);
        // The next increase needs the new cwnd's worth: five more segments.
        for i in 5..=8 {
            cc.on_ack(s(i * 1_000), 1_000, 4_000);
        }
        assert_eq!(cc.cwnd(), 5_000);
        cc.on_ack(s(9_000), 1_000, 4_000);
        assert_eq!(cc.cwnd(), 6_000);
    }

    #[test]
    fn three_duplicates_trigger_fast_retransmit_with_limited_transmit_before() {
        let mut cc = open_with(10_000, usize::MAX, false);
        assert_eq!(cc.can_send(10_000), 0);
        assert_eq!(cc.on_dup_ack(s(0)), DupAckOutcome::Counted);
        assert_eq!(cc.can_send(10_000), MSS, "RFC 3042: one new segment");
        assert_eq!(cc.on_dup_ack(s(0)), DupAckOutcome::Counted);
        assert_eq!(cc.can_send(11_000), MSS, "and one more");
        assert_eq!(cc.can_send(12_000), 0);
        assert_eq!(cc.cwnd(), 10_000, "limited transmit leaves cwnd alone");
        assert_eq!(cc.on_dup_ack(s(0)), DupAckOutcome::FastRetransmit);
        assert_eq!(cc.dup_acks(), 3);
    }

    #[test]
    fn a_cumulative_ack_resets_the_duplicate_count() {
        let mut cc = open_with(10_000, usize::MAX, false);
        cc.on_dup_ack(s(0));
        cc.on_dup_ack(s(0));
        cc.on_ack(s(1_000), 1_000, 9_000);
        assert_eq!(cc.dup_acks(), 0);
        assert_eq!(cc.on_dup_ack(s(1_000)), DupAckOutcome::Counted);
    }

    #[test]
    fn entering_recovery_halves_flight_and_inflates_by_three_segments() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.enter_recovery(20_000, s(20_000));
        assert_eq!(cc.ssthresh(), 10_000);
        assert_eq!(cc.cwnd(), 13_000);
        assert!(cc.in_recovery());
        assert_eq!(cc.recover(), Some(s(20_000)));

        let mut small = open_with(3_000, usize::MAX, false);
        small.enter_recovery(3_000, s(3_000));
        assert_eq!(small.ssthresh(), 2 * MSS, "never below 2 SMSS");
    }

    #[test]
    fn duplicates_in_reno_recovery_inflate_cwnd() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.enter_recovery(20_000, s(20_000));
        assert_eq!(cc.on_dup_ack(s(0)), DupAckOutcome::InRecovery);
        assert_eq!(cc.cwnd(), 14_000);
        assert_eq!(cc.can_send(20_000), 0);
        for _ in 0..7 {
            cc.on_dup_ack(s(0));
        }
        // Ten duplicates in all (three plus seven): half the window has left, new data may go.
        assert_eq!(cc.cwnd(), 21_000);
        assert_eq!(cc.can_send(20_000), 1_000);
    }

    #[test]
    fn partial_acks_deflate_and_only_the_first_rearms_the_timer() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.enter_recovery(20_000, s(20_000));
        let cwnd = cc.cwnd(); // 13_000
        assert_eq!(
            cc.on_ack(s(3_000), 3_000, 17_000),
            AckOutcome::PartialAck { first: true }
        );
        assert_eq!(cc.cwnd(), cwnd - 3_000 + MSS);
        assert!(cc.in_recovery());
        assert_eq!(
            cc.on_ack(s(3_500), 500, 16_500),
            AckOutcome::PartialAck { first: false }
        );
        assert_eq!(
            cc.cwnd(),
            cwnd - 3_000 + MSS - 500,
            "less than SMSS: no add-back"
        );
    }

    #[test]
    fn recovery_ends_exactly_at_recover() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.enter_recovery(20_000, s(20_000));
        assert_eq!(
            cc.on_ack(s(19_999), 19_999, 1),
            AckOutcome::PartialAck { first: true }
        );
        assert!(cc.in_recovery());
        assert_eq!(cc.on_ack(s(20_000), 1, 5_000), AckOutcome::RecoveryDone);
        assert!(!cc.in_recovery());
        assert_eq!(cc.phase(), Phase::Open);
        assert_eq!(cc.recover(), None);
        // Full ACK with 5000 still in flight (new data sent during recovery): min(ssthresh,
        // flight + SMSS).
        assert_eq!(cc.cwnd(), 6_000);
    }

    #[test]
    fn full_ack_with_a_full_pipe_sets_cwnd_to_ssthresh() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.enter_recovery(20_000, s(20_000));
        assert_eq!(
            cc.on_ack(s(25_000), 25_000, 15_000),
            AckOutcome::RecoveryDone
        );
        assert_eq!(cc.cwnd(), 10_000);
        // Back in congestion avoidance: cwnd == ssthresh.
        assert!(!cc.in_slow_start());
    }

    #[test]
    fn recovery_across_the_sequence_wrap() {
        let base = s(u32::MAX - 4_999);
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.enter_recovery(20_000, base + 20_000);
        assert_eq!(
            cc.on_ack(base + 10_000, 10_000, 10_000),
            AckOutcome::PartialAck { first: true }
        );
        assert_eq!(
            cc.on_ack(base + 20_000, 10_000, 0),
            AckOutcome::RecoveryDone
        );
    }

    #[test]
    fn sack_recovery_neither_inflates_nor_deflates_and_needs_a_full_segment() {
        let mut cc = open_with(20_000, usize::MAX, true);
        cc.enter_recovery(20_000, s(20_000));
        assert_eq!(cc.cwnd(), 10_000, "RFC 6675: cwnd = ssthresh");
        cc.on_dup_ack(s(0));
        assert_eq!(cc.cwnd(), 10_000);
        assert_eq!(
            cc.on_ack(s(4_000), 4_000, 16_000),
            AckOutcome::PartialAck { first: true }
        );
        assert_eq!(cc.cwnd(), 10_000);
        assert_eq!(cc.can_send(8_000), 2_000);
        assert_eq!(cc.can_send(9_500), 0, "cwnd − pipe below one SMSS");
        assert_eq!(cc.can_send(12_000), 0);
    }

    #[test]
    fn rto_collapses_to_the_loss_window_and_blocks_fast_retransmit_until_recover() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.on_rto(20_000, s(20_000));
        assert_eq!(cc.ssthresh(), 10_000);
        assert_eq!(cc.cwnd(), MSS);
        assert_eq!(cc.phase(), Phase::Loss);
        assert_eq!(cc.recover(), Some(s(20_000)));
        // Go-back-N resends data the receiver already had: its duplicates must not count as a
        // new loss (RFC 6582 §3.2 step 1).
        cc.on_ack(s(1_000), 1_000, 19_000);
        for _ in 0..5 {
            assert_eq!(cc.on_dup_ack(s(1_000)), DupAckOutcome::Counted);
        }
        assert!(!cc.can_enter_recovery(s(19_999)));
        assert!(cc.can_enter_recovery(s(20_000)));
    }

    #[test]
    fn slow_start_after_rto_counts_at_most_one_segment_per_ack() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.on_rto(20_000, s(20_000));
        cc.on_ack(s(3_000), 3_000, 17_000);
        assert_eq!(cc.cwnd(), 2 * MSS, "L = 1 SMSS after a timeout");
        cc.on_ack(s(20_000), 17_000, 0);
        assert_eq!(cc.cwnd(), 3 * MSS);
        assert_eq!(cc.phase(), Phase::Open);
        assert_eq!(cc.recover(), None);
        cc.on_ack(s(25_000), 5_000, 0);
        assert_eq!(cc.cwnd(), 5 * MSS, "L = 2 SMSS again");
    }

    #[test]
    fn a_repeated_timeout_holds_ssthresh() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.on_rto(20_000, s(20_000));
        cc.on_rto(20_000, s(20_000));
        assert_eq!(
            cc.ssthresh(),
            10_000,
            "not halved from the one-segment flight again"
        );
        // Once an ACK of new data arrives, the next timeout is a new loss.
        cc.on_ack(s(1_000), 1_000, 19_000);
        cc.on_rto(4_000, s(20_000));
        assert_eq!(cc.ssthresh(), 2_000);
    }

    #[test]
    fn rto_during_recovery_leaves_recovery() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.enter_recovery(20_000, s(20_000));
        cc.on_rto(20_000, s(22_000));
        assert_eq!(cc.phase(), Phase::Loss);
        assert_eq!(cc.recover(), Some(s(22_000)));
        assert_eq!(cc.cwnd(), MSS);
    }

    #[test]
    fn fast_retransmit_refused_below_recover_after_timeout() {
        let mut cc = open_with(20_000, usize::MAX, false);
        cc.on_rto(20_000, s(20_000));
        for _ in 0..3 {
            cc.on_dup_ack(s(0));
        }
        assert_eq!(cc.on_dup_ack(s(0)), DupAckOutcome::Counted);
        assert_eq!(cc.phase(), Phase::Loss);
    }

    #[test]
    fn an_ack_of_nothing_changes_nothing() {
        let mut cc = open_with(10_000, usize::MAX, false);
        cc.on_dup_ack(s(0));
        assert_eq!(cc.on_ack(s(0), 0, 10_000), AckOutcome::Normal);
        assert_eq!(cc.cwnd(), 10_000);
        assert_eq!(cc.dup_acks(), 1);
    }
}
