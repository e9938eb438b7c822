//! Downlink protection: when the link from the server to one participant is too thin for all
//! the video it receives, that participant gets less video (a lower simulcast layer, then no
//! video at all) so that its audio stays clear, and gets it back when the link recovers.
//!
//! A mediation stands on what is said: a party on a weak mobile connection who cannot hear
//! the mediator is worse off than one who cannot see them. Video is most of what a receiver
//! gets (three 500 kbps videos against three 40 kbps voices in a four-person room), so on a
//! link that loses packets because it is full, taking the video away is what frees room for
//! the audio.
//!
//! The signal is the loss each receiver reports in its RTCP receiver reports on the streams the
//! server sends it, less what its publisher's packets had already lost on the way in: forwarded
//! packets keep the publisher's sequence gaps (see the engine's sequence numbering), and a
//! receiver counts a gap as lost like any other. [`Gaps`] keeps, per line, how many gaps were
//! forwarded up to which sequence number, so each report is matched with exactly the packets it
//! covers (its highest sequence number and cumulative loss against the previous report's).
//! [`Downlink`] sums one second's reports over the receiver's lines and turns the figure into a
//! level:
//!
//! * **Step down** after two congested seconds in a row (loss of [`CONGESTED`] or more, or
//!   queueing, below) or one very congested second ([`SEVERE`]): from full video to reduced
//!   (the lowest simulcast layer, when some received video has layers) and from there, or
//!   directly, to no video.
//! * **Step up** one level once [`HOLD_START`] (doubled, up to [`HOLD_MAX`], for a step down
//!   within [`RELAPSE`] of a step up; back to the start after [`STABLE`] clean at full) has
//!   passed at the lower level and the last [`CLEAN_NEEDED`] seconds were clean (loss under
//!   [`CLEAN`], little queueing). A second in which nothing at all was sent (no audio to
//!   measure by) is clean.
//! * A second without a report (a receiver may report on audio only every few seconds) counts
//!   neither way: it breaks no run of congested or clean seconds.
//! * Reports from before a change still describe the old level, so the seconds within
//!   [`SETTLE`] of a change count neither way.
//! * A receiver that gets no video stays at full: there is nothing to take away.
//!
//! Queueing counts as well as loss. A link with a deep buffer (common on mobile networks) does
//! not lose what it cannot carry at once: it holds it, and the receiver hears the others
//! seconds late before anything is dropped. The receiver reports also give the round trip of
//! the server's sender reports (their timestamp and the receiver's delay before answering), and
//! a sender report waits in the same buffer as the media. The lowest round trip of the last
//! [`BASE_WINDOW`] is the link's own; what a second's highest round trip adds to it is taken as
//! queueing. [`QUEUED`] or more counts as a congested second, [`QUEUED_SEVERE`] as a very
//! congested one, and a clean second needs less than [`QUEUED_CLEAN`] as well as little loss.
//! The round trip cannot tell which way the queue is: a receiver whose own uplink queues (its
//! reports wait) is treated the same. Browsers pace their uplink to their own estimate, so a
//! standing uplink queue is the rarer case; a wrong step down costs that receiver video for a
//! while, never audio. str0m's delay-based estimator (`enable_bwe`), which reads the one-way
//! delay from transport-wide feedback, was not used: it turns on str0m's pacer, which holds
//! every forwarded packet in a queue; see the engine's docs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A second with this much downlink loss (fraction of the packets sent) or more is congested.
pub const CONGESTED: f64 = 0.10;
/// One second this bad steps down at once.
pub const SEVERE: f64 = 0.30;
/// A second with less loss than this is clean.
pub const CLEAN: f64 = 0.03;
/// Clean seconds in a row needed before a step up.
pub const CLEAN_NEEDED: u32 = 3;
/// How long a lower level is held before the first try to step up.
pub const HOLD_START: Duration = Duration::from_secs(8);
/// The longest hold, after repeated relapses.
pub const HOLD_MAX: Duration = Duration::from_secs(64);
/// Congestion this soon after a step up doubles the hold.
pub const RELAPSE: Duration = Duration::from_secs(30);
/// A level kept this long without congestion resets the hold to [`HOLD_START`].
pub const STABLE: Duration = Duration::from_secs(60);
/// Seconds this close to a change are not counted (their reports describe the old level).
pub const SETTLE: Duration = Duration::from_secs(2);
/// Queueing delay (a second's highest round trip above the link's lowest recent one) that
/// makes a second congested.
pub const QUEUED: Duration = Duration::from_millis(400);
/// Queueing delay that steps down at once.
pub const QUEUED_SEVERE: Duration = Duration::from_millis(1500);
/// A clean second has less queueing delay than this.
pub const QUEUED_CLEAN: Duration = Duration::from_millis(150);
/// How far back the link's lowest round trip is looked for.
pub const BASE_WINDOW: Duration = Duration::from_secs(30);

/// How much video a receiver gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// All the video it asked for.
    Full,
    /// Simulcast video at its lowest layer; video without layers as before.
    Reduced,
    /// No video; audio only.
    Paused,
}

/// One receiver's downlink state; see the module docs.
#[derive(Debug)]
pub struct Downlink {
    level: Level,
    /// When the level last changed.
    since: Instant,
    hold: Duration,
    last_up: Option<Instant>,
    bad: u32,
    clean: u32,
    /// This second's reports: packets sent, and packets lost on the downlink.
    sent: f64,
    lost: f64,
    /// The last second's loss figure, for the metrics (`None`: nothing reported).
    loss: Option<f64>,
    /// This second's highest reported round trip.
    rtt: Option<Duration>,
    /// Each second's highest round trip over the last [`BASE_WINDOW`], oldest first.
    rtts: VecDeque<(Instant, Duration)>,
    /// The last second's queueing delay, for the metrics (`None`: no round trip reported).
    queue: Option<Duration>,
}

impl Downlink {
    pub fn new(now: Instant) -> Downlink {
        Downlink {
            level: Level::Full,
            since: now,
            hold: HOLD_START,
            last_up: None,
            bad: 0,
            clean: 0,
            sent: 0.0,
            lost: 0.0,
            loss: None,
            rtt: None,
            rtts: VecDeque::new(),
            queue: None,
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// The last second's downlink loss, when the receiver reported any.
    pub fn loss(&self) -> Option<f64> {
        self.loss
    }

    /// A receiver report on one line, as [`Gaps::report`] worked it out: `sent` packets the
    /// server had for it, `lost` of them on the way to the receiver.
    pub fn report(&mut self, sent: u64, lost: u64) {
        self.sent += sent as f64;
        self.lost += lost.min(sent) as f64;
    }

    /// The last second's queueing delay, when the receiver reported a round trip.
    pub fn queue(&self) -> Option<Duration> {
        self.queue
    }

    /// A receiver report's round trip (str0m's, from the report's sender-report timestamp and
    /// delay); only reports new since the last one on their line.
    pub fn round_trip(&mut self, rtt: Duration) {
        self.rtt = self.rtt.max(Some(rtt));
    }

    /// Takes the second's round trip into the window and returns its queueing delay.
    fn queueing(&mut self, now: Instant) -> Option<Duration> {
        let rtt = self.rtt.take()?;
        while self
            .rtts
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > BASE_WINDOW)
        {
            self.rtts.pop_front();
        }
        self.rtts.push_back((now, rtt));
        let base = self.rtts.iter().map(|(_, r)| *r).min().unwrap_or(rtt);
        Some(rtt.saturating_sub(base))
    }

    /// Once a second: takes the second's reports and returns the new level if it changed.
    /// `video`: the receiver gets some video (without any, there is nothing to take away, and
    /// the level stays full); `layers`: some of it has simulcast layers (so [`Level::Reduced`]
    /// means something); `sent`: anything at all was sent to it this second.
    pub fn evaluate(
        &mut self,
        now: Instant,
        video: bool,
        layers: bool,
        sent: bool,
    ) -> Option<Level> {
        let loss = (self.sent > 0.0).then(|| self.lost / self.sent);
        self.loss = loss;
        self.sent = 0.0;
        self.lost = 0.0;
        // Taken in every second, settling or not: the window needs them all.
        let queue = self.queueing(now);
        self.queue = queue;
        if now.saturating_duration_since(self.since) < SETTLE
            || (!video && self.level == Level::Full)
        {
            self.bad = 0;
            return None;
        }
        let congested = loss.is_some_and(|l| l >= CONGESTED) || queue.is_some_and(|q| q >= QUEUED);
        let clean = match (loss, queue) {
            // Nothing sent at a lower level (no audio to measure by): nothing lost either.
            (None, None) if !sent && self.level != Level::Full => true,
            // No report in this second (a receiver may report on audio only every few
            // seconds): it tells nothing, and breaks no run of congested or clean ones.
            (None, None) => return None,
            _ => loss.is_none_or(|l| l < CLEAN) && queue.is_none_or(|q| q < QUEUED_CLEAN),
        };
        if congested {
            self.clean = 0;
            self.bad += 1;
            let severe =
                loss.is_some_and(|l| l >= SEVERE) || queue.is_some_and(|q| q >= QUEUED_SEVERE);
            if (self.bad >= 2 || severe) && self.level != Level::Paused {
                if self
                    .last_up
                    .is_some_and(|t| now.saturating_duration_since(t) < RELAPSE)
                {
                    self.hold = (self.hold * 2).min(HOLD_MAX);
                }
                let next = if self.level == Level::Full && layers {
                    Level::Reduced
                } else {
                    Level::Paused
                };
                return Some(self.change(now, next));
            }
            return None;
        }
        self.bad = 0;
        if !clean {
            self.clean = 0;
            return None;
        }
        self.clean += 1;
        if self.level == Level::Full {
            if self
                .last_up
                .is_some_and(|t| now.saturating_duration_since(t) >= STABLE)
            {
                self.hold = HOLD_START;
                self.last_up = None;
            }
            return None;
        }
        if self.clean >= CLEAN_NEEDED && now.saturating_duration_since(self.since) >= self.hold {
            let next = if self.level == Level::Paused && layers {
                Level::Reduced
            } else {
                Level::Full
            };
            self.last_up = Some(now);
            return Some(self.change(now, next));
        }
        None
    }

    fn change(&mut self, now: Instant, to: Level) -> Level {
        self.level = to;
        self.since = now;
        self.bad = 0;
        self.clean = 0;
        to
    }
}

/// How many gap marks a line keeps between two reports (one per gap; a report a second).
const MAX_MARKS: usize = 512;

/// The sequence gaps one of a receiver's lines forwarded (packets its publisher lost on the way
/// in, which nobody resent), to tell them from what the receiver's own link lost.
#[derive(Debug, Default)]
pub struct Gaps {
    /// The highest sequence number forwarded.
    last: Option<u64>,
    /// Gaps forwarded so far.
    total: u64,
    /// (sequence number, gaps forwarded before it), one where each gap ended; pruned up to the
    /// last report.
    marks: VecDeque<(u64, u64)>,
    /// The last report taken: highest sequence number, cumulative lost, gaps up to it.
    report: Option<(u64, u64, u64)>,
}

impl Gaps {
    /// A packet went out on the line with sequence number `seq`.
    pub fn forwarded(&mut self, seq: u64) {
        match self.last {
            Some(last) if seq > last + 1 => {
                self.total += seq - last - 1;
                self.mark(seq);
                self.last = Some(seq);
            }
            Some(last) if seq <= last => {
                // Late: it fills a gap (a retransmission the publisher sent after all).
                if self.total > 0 {
                    self.total -= 1;
                    self.mark(last);
                }
            }
            _ => self.last = Some(seq),
        }
    }

    fn mark(&mut self, seq: u64) {
        match self.marks.back_mut() {
            Some(b) if b.0 == seq => b.1 = self.total,
            _ => self.marks.push_back((seq, self.total)),
        }
        if self.marks.len() > MAX_MARKS {
            self.marks.pop_front();
        }
    }

    /// Gaps forwarded up to sequence number `seq`.
    fn upto(&self, seq: u64) -> u64 {
        self.marks
            .iter()
            .rev()
            .find(|(s, _)| *s <= seq)
            .map_or(0, |m| m.1)
    }

    /// A receiver report on the line: the highest sequence number received and the cumulative
    /// number lost. Returns, since the previous report, the packets the server had for it and
    /// how many of those did not reach it; `None` for the first report or one with nothing new.
    pub fn report(&mut self, max: u64, lost: u64) -> Option<(u64, u64)> {
        if self.report.is_some_and(|(m, _, _)| max <= m) {
            return None;
        }
        let gaps = self.upto(max);
        let prev = self.report.replace((max, lost, gaps));
        // Only the last mark up to this report is needed from now on.
        while self.marks.len() >= 2 && self.marks[1].0 <= max {
            self.marks.pop_front();
        }
        let (prev_max, prev_lost, prev_gaps) = prev?;
        let expected = max - prev_max;
        let upstream = gaps.saturating_sub(prev_gaps).min(expected);
        let had = expected - upstream;
        let lost_here = lost.saturating_sub(prev_lost).saturating_sub(upstream);
        Some((had, lost_here.min(had)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one second with `loss` on 100 packets (or nothing) and evaluates it.
    fn second(d: &mut Downlink, t: &mut Instant, loss: Option<f64>, layers: bool) -> Option<Level> {
        *t += Duration::from_secs(1);
        if let Some(l) = loss {
            d.report(100, (l * 100.0).round() as u64);
        }
        d.evaluate(*t, true, layers, true)
    }

    #[test]
    fn two_congested_seconds_pause_video_and_clean_ones_bring_it_back_after_the_hold() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        for _ in 0..5 {
            assert_eq!(second(&mut d, &mut t, Some(0.0), false), None);
        }
        // One congested second is not enough; the second one is.
        assert_eq!(second(&mut d, &mut t, Some(0.15), false), None);
        assert_eq!(
            second(&mut d, &mut t, Some(0.15), false),
            Some(Level::Paused)
        );
        let paused_at = t;
        // Clean from now on: nothing until the hold has passed.
        let mut up = None;
        while up.is_none() {
            up = second(&mut d, &mut t, Some(0.0), false);
            assert!(t - paused_at <= HOLD_START + Duration::from_secs(1));
        }
        assert_eq!(up, Some(Level::Full));
        assert!(t - paused_at >= HOLD_START);
        assert_eq!(d.level(), Level::Full);
    }

    #[test]
    fn a_severe_second_steps_down_at_once_and_layers_mean_reduced_first() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        second(&mut d, &mut t, Some(0.0), true);
        second(&mut d, &mut t, Some(0.0), true);
        assert_eq!(
            second(&mut d, &mut t, Some(0.5), true),
            Some(Level::Reduced)
        );
        // Reports within the settling time are not counted.
        assert_eq!(second(&mut d, &mut t, Some(0.5), true), None);
        assert_eq!(second(&mut d, &mut t, Some(0.5), true), Some(Level::Paused));
        // Back up one level at a time.
        let mut levels = Vec::new();
        for _ in 0..40 {
            if let Some(l) = second(&mut d, &mut t, Some(0.0), true) {
                levels.push(l);
            }
        }
        assert_eq!(levels, [Level::Reduced, Level::Full]);
    }

    #[test]
    fn a_second_without_a_report_tells_nothing_unless_nothing_was_sent() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        // Nothing reported at full level: no change and no loss figure.
        for _ in 0..5 {
            assert_eq!(second(&mut d, &mut t, None, false), None);
        }
        assert_eq!(d.loss(), None);
        // Congested reports with report-less seconds between them are still two in a row.
        second(&mut d, &mut t, Some(0.15), false);
        for _ in 0..4 {
            assert_eq!(second(&mut d, &mut t, None, false), None);
        }
        assert_eq!(
            second(&mut d, &mut t, Some(0.15), false),
            Some(Level::Paused)
        );
        // Paused, audio still sent but reported only every fifth second: the clean seconds
        // needed are reports, so the step up waits for three of them.
        let mut up = None;
        let mut clean_reports = 0;
        for n in 1..=40 {
            let loss = (n % 5 == 0).then_some(0.0);
            clean_reports += u32::from(loss.is_some());
            if let Some(l) = second(&mut d, &mut t, loss, false) {
                up = Some(l);
                break;
            }
        }
        assert_eq!(up, Some(Level::Full));
        assert_eq!(clean_reports, CLEAN_NEEDED);
        // Paused with nothing sent at all (no audio): silence is clean.
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        t += Duration::from_secs(3);
        d.report(100, 50);
        assert_eq!(d.evaluate(t, true, false, true), Some(Level::Paused));
        let mut up = None;
        for _ in 0..20 {
            t += Duration::from_secs(1);
            up = up.or(d.evaluate(t, true, false, false));
        }
        assert_eq!(up, Some(Level::Full));
    }

    #[test]
    fn a_minute_at_full_resets_the_hold() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        let pause_and_count_hold = |d: &mut Downlink, t: &mut Instant| {
            second(d, t, Some(0.0), false);
            second(d, t, Some(0.0), false);
            assert_eq!(second(d, t, Some(0.9), false), Some(Level::Paused));
            let mut n = 1;
            while second(d, t, Some(0.0), false).is_none() {
                n += 1;
            }
            n
        };
        assert_eq!(pause_and_count_hold(&mut d, &mut t), HOLD_START.as_secs());
        // A relapse soon after doubles it...
        assert_eq!(
            pause_and_count_hold(&mut d, &mut t),
            2 * HOLD_START.as_secs()
        );
        // ...and a clean minute at full brings it back.
        for _ in 0..STABLE.as_secs() + 1 {
            assert_eq!(second(&mut d, &mut t, Some(0.0), false), None);
        }
        assert_eq!(pause_and_count_hold(&mut d, &mut t), HOLD_START.as_secs());
    }

    #[test]
    fn without_video_there_is_nothing_to_take_away() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        for _ in 0..5 {
            t += Duration::from_secs(1);
            d.report(100, 50);
            assert_eq!(d.evaluate(t, false, false, true), None);
            // The loss is still measured, for the metrics.
            assert!((d.loss().unwrap() - 0.5).abs() < 1e-9);
        }
        assert_eq!(d.level(), Level::Full);
        // Video arrives, and the link is still lossy: now it counts, from the first second.
        t += Duration::from_secs(1);
        d.report(100, 15);
        assert_eq!(d.evaluate(t, true, false, true), None);
        t += Duration::from_secs(1);
        d.report(100, 15);
        assert_eq!(d.evaluate(t, true, false, true), Some(Level::Paused));
    }

    /// Feeds one second with no loss on 100 packets and a round trip of `rtt_ms`.
    fn second_rtt(d: &mut Downlink, t: &mut Instant, rtt_ms: u64) -> Option<Level> {
        *t += Duration::from_secs(1);
        d.report(100, 0);
        d.round_trip(Duration::from_millis(rtt_ms));
        d.evaluate(*t, true, false, true)
    }

    #[test]
    fn a_queue_on_the_link_steps_down_without_any_loss() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        for _ in 0..5 {
            assert_eq!(second_rtt(&mut d, &mut t, 80), None);
        }
        assert_eq!(d.queue(), Some(Duration::ZERO));
        // 300 ms of queueing is not enough; 500 ms twice in a row is.
        assert_eq!(second_rtt(&mut d, &mut t, 380), None);
        assert_eq!(second_rtt(&mut d, &mut t, 580), None);
        assert_eq!(d.queue(), Some(Duration::from_millis(500)));
        assert_eq!(second_rtt(&mut d, &mut t, 1_100), Some(Level::Paused));
        let paused_at = t;
        // The queue drains slowly: 200 ms is not clean, so no step up while it lasts.
        for _ in 0..15 {
            assert_eq!(second_rtt(&mut d, &mut t, 280), None);
        }
        // Drained: back up once three seconds were clean.
        let mut up = None;
        let mut clean = 0;
        while up.is_none() {
            up = second_rtt(&mut d, &mut t, 100);
            clean += 1;
        }
        assert_eq!(up, Some(Level::Full));
        assert_eq!(clean, CLEAN_NEEDED);
        assert!(t - paused_at > HOLD_START);
        // A second of very long queueing steps down at once.
        for _ in 0..3 {
            second_rtt(&mut d, &mut t, 80);
        }
        assert_eq!(second_rtt(&mut d, &mut t, 1_700), Some(Level::Paused));
    }

    #[test]
    fn a_long_steady_round_trip_is_the_links_own() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        // A party far away: 900 ms every second, from the start. Nothing queues.
        for _ in 0..40 {
            assert_eq!(second_rtt(&mut d, &mut t, 900), None);
        }
        assert_eq!(d.queue(), Some(Duration::ZERO));
        // A path that got longer for good: congested at first (the two cannot be told apart)...
        for _ in 0..3 {
            second_rtt(&mut d, &mut t, 100);
        }
        assert_eq!(second_rtt(&mut d, &mut t, 700), None);
        assert_eq!(second_rtt(&mut d, &mut t, 700), Some(Level::Paused));
        // ...until the window no longer holds the short one: then it is clean again.
        let mut up = None;
        for _ in 0..BASE_WINDOW.as_secs() + HOLD_START.as_secs() {
            up = up.or(second_rtt(&mut d, &mut t, 700));
        }
        assert_eq!(up, Some(Level::Full));
        assert_eq!(d.queue(), Some(Duration::ZERO));
    }

    #[test]
    fn gaps_forwarded_are_not_the_receivers_loss() {
        let mut g = Gaps::default();
        // 1..=100 forwarded; the first report (nothing to compare with yet).
        for seq in 1..=100 {
            g.forwarded(seq);
        }
        assert_eq!(g.report(100, 0), None);
        // 101..=200 with every other packet missing upstream: 50 gaps. The receiver reports
        // exactly those 50 lost: none of it is its link's.
        for seq in (102..=200).step_by(2) {
            g.forwarded(seq);
        }
        assert_eq!(g.report(200, 50), Some((50, 0)));
        // 201..=300 all forwarded; the receiver lost 30 of them itself.
        for seq in 201..=300 {
            g.forwarded(seq);
        }
        assert_eq!(g.report(300, 80), Some((100, 30)));
        // A report covering part of what was forwarded: gaps counted only up to its number.
        for seq in (302..=400).step_by(2) {
            g.forwarded(seq);
        }
        // Up to 350: 25 gaps upstream, 10 more lost downlink.
        assert_eq!(g.report(350, 80 + 25 + 10), Some((25, 10)));
        assert_eq!(g.report(400, 80 + 50 + 10), Some((25, 0)));
        // Nothing new: no figure.
        assert_eq!(g.report(400, 140), None);
        assert_eq!(g.report(390, 140), None);
    }

    #[test]
    fn a_late_packet_fills_its_gap() {
        let mut g = Gaps::default();
        for seq in 1..=10 {
            g.forwarded(seq);
        }
        assert_eq!(g.report(10, 0), None);
        // 11 missing, 12..=20 forwarded, then 11 arrives (the publisher resent it).
        for seq in 12..=20 {
            g.forwarded(seq);
        }
        g.forwarded(11);
        // The receiver got everything: nothing lost on either side.
        assert_eq!(g.report(20, 0), Some((10, 0)));
    }

    #[test]
    fn reports_are_weighted_by_packets() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        t += Duration::from_secs(3);
        // A video line with 300 packets and no loss, an audio line with 100 and 20 lost.
        d.report(300, 0);
        d.report(100, 20);
        d.report(0, 0);
        d.evaluate(t, true, false, true);
        assert!((d.loss().unwrap() - 0.05).abs() < 1e-9);
    }
}
