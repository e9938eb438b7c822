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
//! server sends it, less the loss the same packets had already suffered on the way in from
//! their publisher (forwarded packets keep their gaps, see the engine's sequence numbering),
//! averaged over the receiver's streams by packets sent. [`Downlink`] turns one such figure per
//! second (from the reports that arrived in it) into a level:
//!
//! * **Step down** after two congested seconds in a row (loss of [`CONGESTED`] or more) or one
//!   very congested second ([`SEVERE`]): from full video to reduced (the lowest simulcast
//!   layer, when some received video has layers) and from there, or directly, to no video.
//! * **Step up** one level once [`HOLD_START`] (doubled, up to [`HOLD_MAX`], for a step down
//!   within [`RELAPSE`] of a step up; back to the start after [`STABLE`] clean at full) has
//!   passed at the lower level and the last [`CLEAN_NEEDED`] seconds were clean (loss under
//!   [`CLEAN`]). A second in which nothing at all was sent (no audio to measure by) is clean.
//! * A second without a report (a receiver may report on audio only every few seconds) counts
//!   neither way: it breaks no run of congested or clean seconds.
//! * Reports from before a change still describe the old level, so the seconds within
//!   [`SETTLE`] of a change count neither way.
//! * A receiver that gets no video stays at full: there is nothing to take away.
//!
//! Loss-based, not delay-based: a link that queues without losing (a deep modem buffer) is not
//! caught until it drops. str0m's delay-based estimator (`enable_bwe`) would see it earlier, but
//! turns on str0m's pacer, which holds every forwarded packet in a queue; see the engine's docs.

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
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// The last second's downlink loss, when the receiver reported any.
    pub fn loss(&self) -> Option<f64> {
        self.loss
    }

    /// A receiver report on one stream: `packets` sent on it since the last one, `loss` the
    /// fraction the receiver reported lost, `upstream` the fraction already missing when they
    /// arrived from the publisher.
    pub fn report(&mut self, packets: u64, loss: f64, upstream: f64) {
        if packets == 0 || !loss.is_finite() {
            return;
        }
        // Of what arrived from the publisher, the part that did not reach the receiver.
        let kept = (1.0 - upstream).clamp(0.01, 1.0);
        let down = (1.0 - (1.0 - loss.clamp(0.0, 1.0)) / kept).clamp(0.0, 1.0);
        self.sent += packets as f64;
        self.lost += packets as f64 * down;
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
        if now.saturating_duration_since(self.since) < SETTLE
            || (!video && self.level == Level::Full)
        {
            self.bad = 0;
            return None;
        }
        let congested = loss.is_some_and(|l| l >= CONGESTED);
        let clean = match loss {
            Some(l) => l < CLEAN,
            // Nothing sent at a lower level (no audio to measure by): nothing lost either.
            None if !sent && self.level != Level::Full => true,
            // No report in this second (a receiver may report on audio only every few
            // seconds): it tells nothing, and breaks no run of congested or clean ones.
            None => return None,
        };
        if congested {
            self.clean = 0;
            self.bad += 1;
            let severe = loss.is_some_and(|l| l >= SEVERE);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one second with `loss` on 100 packets (or nothing) and evaluates it.
    fn second(d: &mut Downlink, t: &mut Instant, loss: Option<f64>, layers: bool) -> Option<Level> {
        *t += Duration::from_secs(1);
        if let Some(l) = loss {
            d.report(100, l, 0.0);
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
        d.report(100, 0.5, 0.0);
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
            d.report(100, 0.5, 0.0);
            assert_eq!(d.evaluate(t, false, false, true), None);
            // The loss is still measured, for the metrics.
            assert!((d.loss().unwrap() - 0.5).abs() < 1e-9);
        }
        assert_eq!(d.level(), Level::Full);
        // Video arrives, and the link is still lossy: now it counts, from the first second.
        t += Duration::from_secs(1);
        d.report(100, 0.15, 0.0);
        assert_eq!(d.evaluate(t, true, false, true), None);
        t += Duration::from_secs(1);
        d.report(100, 0.15, 0.0);
        assert_eq!(d.evaluate(t, true, false, true), Some(Level::Paused));
    }

    #[test]
    fn loss_already_there_upstream_is_not_the_receivers() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        for _ in 0..6 {
            t += Duration::from_secs(1);
            // The publisher's uplink lost 20 %; the receiver reports exactly that much.
            d.report(100, 0.2, 0.2);
            assert_eq!(d.evaluate(t, true, false, true), None);
            assert!(d.loss().unwrap() < 0.001);
        }
        // 20 % upstream and 60 % reported: half of what arrived was lost on the way down.
        t += Duration::from_secs(1);
        d.report(100, 0.6, 0.2);
        assert_eq!(d.evaluate(t, true, false, true), Some(Level::Paused));
        assert!((d.loss().unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn reports_are_weighted_by_packets() {
        let mut t = Instant::now();
        let mut d = Downlink::new(t);
        t += Duration::from_secs(3);
        // A video stream with 300 packets and no loss, an audio stream with 100 and 20 % loss.
        d.report(300, 0.0, 0.0);
        d.report(100, 0.2, 0.0);
        d.report(0, 1.0, 0.0);
        d.evaluate(t, true, false, true);
        assert!((d.loss().unwrap() - 0.05).abs() < 1e-9);
    }
}
