//! Round-trip time estimation and the retransmission timeout (RFC 6298).
//!
//! Time is `u64` milliseconds of the driver's monotonic clock. Which acknowledgments may yield a
//! sample is the endpoint's decision, made with [`karn_sample`] (send times) or
//! [`TimestampClock::rtt_from_echo`] (RFC 7323 timestamps); this module only folds samples in.

/// The RTO bounds and starting point, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttConfig {
    /// RTO before any sample (RFC 6298 §2.1: 1 s).
    pub initial_rto_ms: u32,
    /// Lower bound on the computed RTO. RFC 6298 §2.4 says 1 s; the default is Linux's 200 ms
    /// (`TCP_RTO_MIN`). Both legs of the proxy usually run over short paths (the middlebox sits
    /// next to one endpoint), where a 1 s floor turns every tail loss into a second-long stall,
    /// five times what the endpoints themselves would wait; RFC 6298 §4 notes the 1 s floor is a
    /// conservative choice, and the spurious-timeout risk it guards against (a peer's delayed ACK,
    /// at most 200 ms on Linux, 500 ms by RFC 9293 §3.8.6.3) is what 200 ms plus SRTT already
    /// covers for Linux peers. Set it to 1000 for strict RFC behaviour.
    pub min_rto_ms: u32,
    /// Upper bound, including backoff (RFC 6298 §2.5: at least 60 s).
    pub max_rto_ms: u32,
    /// Clock granularity G (RFC 6298 §2.3): our clock ticks in 1 ms.
    pub granularity_ms: u32,
}

impl Default for RttConfig {
    fn default() -> RttConfig {
        RttConfig {
            initial_rto_ms: 1_000,
            min_rto_ms: 200,
            max_rto_ms: 60_000,
            granularity_ms: 1,
        }
    }
}

/// RFC 6298 §5.7: the RTO to start data transfer with when the SYN had to be retransmitted and
/// no RTT was measured.
const SYN_LOSS_FALLBACK_RTO_MS: u32 = 3_000;

/// Samples are clamped to this, so the fixed-point state (1/8 ms units in a `u32`) cannot
/// overflow; an RTT of over an hour is a broken clock or a broken peer, not a path.
const MAX_SAMPLE_MS: u64 = 3_600_000;

/// SRTT, RTTVAR and the backed-off RTO of one connection (RFC 6298 §2, §5).
///
/// SRTT and RTTVAR are kept in 1/8 ms so that the gains α = 1/8 and β = 1/4 do not truncate
/// small RTTs to nothing (Linux keeps `srtt_us << 3` for the same reason).
#[derive(Clone, Debug)]
pub struct RttEstimator {
    config: RttConfig,
    /// SRTT × 8 in ms; meaningful once `has_sample`.
    srtt_x8: u32,
    /// RTTVAR × 8 in ms.
    rttvar_x8: u32,
    has_sample: bool,
    /// RTO before backoff when there is no sample yet (initial or the §5.7 fallback).
    unmeasured_rto_ms: u32,
    /// How many times the timer has been backed off since the last valid sample (§5.5).
    backoff: u8,
}

impl Default for RttEstimator {
    fn default() -> RttEstimator {
        RttEstimator::new(RttConfig::default())
    }
}

impl RttEstimator {
    pub fn new(config: RttConfig) -> RttEstimator {
        RttEstimator {
            config,
            srtt_x8: 0,
            rttvar_x8: 0,
            has_sample: false,
            unmeasured_rto_ms: config.initial_rto_ms,
            backoff: 0,
        }
    }

    pub fn config(&self) -> &RttConfig {
        &self.config
    }

    /// Folds in a valid RTT measurement (RFC 6298 §2.2, §2.3) and, since it came from an
    /// acknowledgment the endpoint trusts, clears the backoff (§5.7, Karn: the backed-off RTO is
    /// kept only until a sample from a segment that was not retransmitted arrives).
    pub fn on_sample(&mut self, rtt_ms: u64) {
        let r_x8 = rtt_ms.min(MAX_SAMPLE_MS) * 8;
        if !self.has_sample {
            // §2.2: SRTT <- R, RTTVAR <- R/2.
            self.srtt_x8 = r_x8 as u32;
            self.rttvar_x8 = (r_x8 / 2) as u32;
            self.has_sample = true;
        } else {
            // §2.3, RTTVAR first: it uses the SRTT from before this sample.
            let srtt = u64::from(self.srtt_x8);
            let rttvar = u64::from(self.rttvar_x8);
            let err = srtt.abs_diff(r_x8);
            self.rttvar_x8 = ((3 * rttvar + err) / 4) as u32; // (1 - 1/4) RTTVAR + 1/4 |SRTT - R'|
            self.srtt_x8 = ((7 * srtt + r_x8) / 8) as u32; // (1 - 1/8) SRTT + 1/8 R'
        }
        self.reset_backoff();
    }

    /// The retransmission timeout to arm now, backoff included, in ms.
    pub fn rto(&self) -> u64 {
        let max = u64::from(self.config.max_rto_ms);
        let base = self.base_rto();
        // 2^backoff without overflow: past 2^32 × a millisecond we are far beyond any max.
        let backed_off = base
            .checked_shl(u32::from(self.backoff))
            .unwrap_or(u64::MAX);
        backed_off.min(max)
    }

    /// The RTO with at most `doublings` of its backoff: how long a peer on the same path may
    /// reasonably wait before sending again, whatever became of our own segments.
    pub fn rto_backed_off_at_most(&self, doublings: u32) -> u64 {
        let max = u64::from(self.config.max_rto_ms);
        let shift = u32::from(self.backoff).min(doublings);
        self.base_rto()
            .checked_shl(shift)
            .unwrap_or(u64::MAX)
            .min(max)
    }

    /// RTO before backoff: §2.4's SRTT + max(G, K·RTTVAR), K = 4, rounded up to whole
    /// milliseconds (a timer that fires early costs a spurious retransmission; one that fires a
    /// fraction of a millisecond late costs nothing), then raised to the configured minimum.
    fn base_rto(&self) -> u64 {
        let computed = if self.has_sample {
            let g_x8 = u64::from(self.config.granularity_ms) * 8;
            let x8 = u64::from(self.srtt_x8) + g_x8.max(4 * u64::from(self.rttvar_x8));
            x8.div_ceil(8)
        } else {
            u64::from(self.unmeasured_rto_ms)
        };
        computed.max(u64::from(self.config.min_rto_ms))
    }

    /// The retransmission timer expired: double the RTO (§5.5), up to the maximum (§2.5).
    pub fn backoff(&mut self) {
        // Saturate well before the shift could overflow; `rto()` clamps to max anyway.
        if self.rto() < u64::from(self.config.max_rto_ms) {
            self.backoff = self.backoff.saturating_add(1);
        }
    }

    /// Forget the backoff (a new valid sample, or an endpoint that knows the path answers again).
    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// How many times the current RTO has been doubled.
    pub fn backoff_count(&self) -> u32 {
        u32::from(self.backoff)
    }

    /// Smoothed RTT in whole ms (rounded down), once there is a sample.
    pub fn srtt_ms(&self) -> Option<u64> {
        self.has_sample.then_some(u64::from(self.srtt_x8) / 8)
    }

    /// RTT variation in whole ms (rounded down), once there is a sample.
    pub fn rttvar_ms(&self) -> Option<u64> {
        self.has_sample.then_some(u64::from(self.rttvar_x8) / 8)
    }

    pub fn has_sample(&self) -> bool {
        self.has_sample
    }

    /// The handshake is over and data transfer begins. RFC 6298 §5.7: if the SYN (or SYN-ACK)
    /// had to be retransmitted and the RTO in use is below 3 s, start data transfer with 3 s
    /// rather than the initial 1 s; the backoff of the handshake is dropped either way.
    pub fn begin_data_transfer(&mut self, syn_retransmitted: bool) {
        if syn_retransmitted && !self.has_sample {
            self.unmeasured_rto_ms = self.unmeasured_rto_ms.max(SYN_LOSS_FALLBACK_RTO_MS);
        }
        self.reset_backoff();
    }
}

/// An RTT sample from a segment's send time, under Karn's rule (RFC 6298 §3): an acknowledgment
/// for a segment that was retransmitted cannot say which transmission it answers, so it yields
/// no sample. `sent_at_ms` is the (first) transmission time of the segment acknowledged.
pub fn karn_sample(sent_at_ms: u64, now_ms: u64, retransmitted: bool) -> Option<u64> {
    if retransmitted {
        return None;
    }
    now_ms.checked_sub(sent_at_ms)
}

/// Our TSval clock (RFC 7323 §5.4): the millisecond clock plus a per-connection offset, so
/// TSvals reveal nothing about uptime and do not repeat across quick reconnections.
///
/// With timestamps the ambiguity Karn's rule avoids is gone (RFC 7323 §4.1, §4.2): a receiver
/// echoes the TSval of the segment that advanced its window, so the echo belongs to the very
/// transmission that was acknowledged, original or retransmission, and the endpoint may take a
/// sample from any acknowledgment of new data, retransmitted or not. RFC 7323 §4.2's advice to
/// take samples only from acknowledgments that advance SND.UNA is the endpoint's to apply.
///
/// A proxy leg may instead carry the TSvals of the endpoint across the proxy
/// ([`TimestampClock::carried`]): then the receiver sees the very clock it would see without
/// the proxy, so the TSval a reconnection's SYN carries is never behind the last one it saw
/// from us (TIME-WAIT accepts such a SYN at once, RFC 6191), and a move to pass-through needs
/// no timestamp shift. A carried clock stands still while the far endpoint is silent, so its
/// echoes say nothing of our own transmissions' times: the endpoint times those by Karn's rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimestampClock {
    pub offset: u32,
    /// The TSvals are the far endpoint's, fed in by the proxy; `offset` only sets the first.
    pub carried: bool,
}

impl TimestampClock {
    pub fn new(offset: u32) -> TimestampClock {
        TimestampClock {
            offset,
            carried: false,
        }
    }

    /// A clock that starts at `tsval` at `now_ms` and then follows the TSvals carried to it.
    pub fn carried(tsval: u32, now_ms: u64) -> TimestampClock {
        TimestampClock {
            offset: tsval.wrapping_sub(now_ms as u32),
            carried: true,
        }
    }

    /// The TSval to send at `now_ms` (1 ms per tick; the clock wraps every 49.7 days, which
    /// PAWS tolerates: RFC 7323 §5.5 only needs ticks between 1 ms and 1 s).
    pub fn tsval(&self, now_ms: u64) -> u32 {
        (now_ms as u32).wrapping_add(self.offset)
    }

    /// The RTT measured by an echoed TSecr, or `None` when the echo is from the future (a peer
    /// that echoes garbage, or a TSecr of a connection with another offset): a negative sample
    /// would corrupt SRTT.
    pub fn rtt_from_echo(&self, now_ms: u64, tsecr: u32) -> Option<u64> {
        let elapsed = self.tsval(now_ms).wrapping_sub(tsecr) as i32;
        u64::try_from(elapsed).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> RttConfig {
        RttConfig {
            min_rto_ms: 1_000,
            ..RttConfig::default()
        }
    }

    fn unclamped() -> RttConfig {
        RttConfig {
            min_rto_ms: 0,
            ..RttConfig::default()
        }
    }

    #[test]
    fn initial_rto_is_one_second_and_backs_off_to_sixty() {
        let mut e = RttEstimator::default();
        assert_eq!(e.rto(), 1_000);
        assert_eq!(e.srtt_ms(), None);
        let mut seen = vec![];
        for _ in 0..10 {
            e.backoff();
            seen.push(e.rto());
        }
        assert_eq!(
            seen,
            [2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000, 60_000]
        );
        assert_eq!(e.backoff_count(), 6, "stops counting once at the maximum");
    }

    #[test]
    fn first_sample_sets_srtt_and_half_rttvar() {
        let mut e = RttEstimator::new(unclamped());
        e.on_sample(100);
        assert_eq!(e.srtt_ms(), Some(100));
        assert_eq!(e.rttvar_ms(), Some(50));
        assert_eq!(e.rto(), 300); // 100 + 4·50
    }

    #[test]
    fn later_samples_use_the_gains_and_round_up() {
        let mut e = RttEstimator::new(unclamped());
        e.on_sample(100);
        e.on_sample(200);
        // RTTVAR = 3/4·50 + 1/4·|100 − 200| = 62.5; SRTT = 7/8·100 + 1/8·200 = 112.5.
        assert_eq!(e.srtt_x8, 900);
        assert_eq!(e.rttvar_x8, 500);
        // RTO = 112.5 + 4·62.5 = 362.5, rounded up.
        assert_eq!(e.rto(), 363);
        e.on_sample(100);
        // RTTVAR = 3/4·62.5 + 1/4·12.5 = 50; SRTT = 7/8·112.5 + 1/8·100 = 110.9375.
        assert_eq!(e.rttvar_x8, 400);
        assert_eq!(e.srtt_x8, 887); // 887.5 truncated
        assert_eq!(e.rto(), 311); // (887 + 1600) / 8 = 310.875, rounded up
        assert_eq!(e.srtt_ms(), Some(110));
    }

    #[test]
    fn granularity_floors_the_variance_term() {
        let mut e = RttEstimator::new(unclamped());
        for _ in 0..200 {
            e.on_sample(40);
        }
        assert_eq!(e.rttvar_x8, 0);
        assert_eq!(e.rto(), 41, "SRTT + G once RTTVAR has decayed to 0");
    }

    #[test]
    fn minimum_rto_defaults_to_200ms_and_can_be_the_rfc_second() {
        let mut linux = RttEstimator::default();
        let mut rfc = RttEstimator::new(strict());
        for e in [&mut linux, &mut rfc] {
            e.on_sample(10);
        }
        assert_eq!(linux.rto(), 200);
        assert_eq!(rfc.rto(), 1_000);
        linux.backoff();
        assert_eq!(linux.rto(), 400, "backoff doubles the clamped value");
    }

    #[test]
    fn maximum_caps_a_huge_sample() {
        let mut e = RttEstimator::default();
        e.on_sample(100_000);
        assert_eq!(e.rto(), 60_000);
        e.on_sample(u64::MAX);
        assert_eq!(e.rto(), 60_000);
        assert_eq!(e.srtt_ms(), Some(100_000 * 7 / 8 + MAX_SAMPLE_MS / 8));
    }

    #[test]
    fn a_valid_sample_clears_the_backoff() {
        let mut e = RttEstimator::new(unclamped());
        e.on_sample(100);
        e.backoff();
        e.backoff();
        assert_eq!(e.rto(), 1_200);
        e.on_sample(100);
        assert_eq!(e.backoff_count(), 0);
        // RTTVAR = 3/4·50 + 0 = 37.5, SRTT = 100: 100 + 150.
        assert_eq!(e.rto(), 250);
    }

    #[test]
    fn reset_backoff_without_a_sample() {
        let mut e = RttEstimator::default();
        e.backoff();
        assert_eq!(e.rto(), 2_000);
        e.reset_backoff();
        assert_eq!(e.rto(), 1_000);
    }

    #[test]
    fn syn_loss_falls_back_to_three_seconds() {
        let mut e = RttEstimator::default();
        e.backoff();
        e.begin_data_transfer(true);
        assert_eq!(e.rto(), 3_000);
        assert_eq!(e.backoff_count(), 0);

        let mut measured = RttEstimator::default();
        measured.on_sample(50);
        measured.begin_data_transfer(true);
        assert_eq!(measured.rto(), 200, "a measured RTT wins over the fallback");

        let mut clean = RttEstimator::default();
        clean.begin_data_transfer(false);
        assert_eq!(clean.rto(), 1_000);
    }

    #[test]
    fn karn_refuses_retransmitted_segments() {
        assert_eq!(karn_sample(1_000, 1_080, false), Some(80));
        assert_eq!(karn_sample(1_000, 1_080, true), None);
        assert_eq!(karn_sample(1_000, 900, false), None, "clock went backwards");
    }

    #[test]
    fn timestamp_echo_measures_across_the_tsval_wrap() {
        let clock = TimestampClock::new(u32::MAX - 10);
        let sent = clock.tsval(5); // u32::MAX - 5
        assert_eq!(sent, u32::MAX - 5);
        // 30 ms later the TSval has wrapped past zero.
        assert_eq!(clock.tsval(35), 24);
        assert_eq!(clock.rtt_from_echo(35, sent), Some(30));
        // An echo of a value we have not sent yet is no sample.
        assert_eq!(clock.rtt_from_echo(35, 100), None);
    }

    #[test]
    fn timestamp_sample_of_a_retransmission_is_the_retransmission_rtt() {
        // Original sent at 0 and lost; retransmitted at 1000, acknowledged at 1040 echoing the
        // retransmission's TSval: the sample is 40 ms, where send-time sampling would have had
        // to choose between 1040 (wrong) and nothing (Karn).
        let clock = TimestampClock::new(7);
        let retransmission_tsval = clock.tsval(1_000);
        let mut e = RttEstimator::new(unclamped());
        e.on_sample(clock.rtt_from_echo(1_040, retransmission_tsval).unwrap());
        assert_eq!(e.srtt_ms(), Some(40));
        assert_eq!(karn_sample(0, 1_040, true), None);
    }
}
