//! Passive health: consecutive connect failures eject a backend for a time
//! that grows with each ejection (base × n, capped), never more than the
//! allowed share of backends at once.

use std::time::Duration;

use tokio::time::Instant;

use super::OutlierSettings;
use crate::endpoint::Outlier;

/// Records one connect failure at `now`. Returns when the backend is
/// ejected until, if this failure ejects it. `ejected_now` and `total` count
/// the ejected and all backends, for the share limit.
pub(crate) fn on_failure(
    o: &mut Outlier,
    s: &OutlierSettings,
    now: Instant,
    ejected_now: usize,
    total: usize,
) -> Option<Instant> {
    // Failures while ejected (panic mode, connections picked before the
    // ejection) neither extend it nor count toward the next one.
    if o.ejected_until.is_some_and(|t| t > now) {
        return None;
    }
    o.consecutive_failures = o.consecutive_failures.saturating_add(1);
    if s.consecutive_failures == 0 || o.consecutive_failures < s.consecutive_failures {
        return None;
    }
    let share_ok =
        ejected_now == 0 || (ejected_now + 1) * 100 <= s.max_ejected_percent as usize * total;
    if !share_ok {
        return None;
    }
    // A backend that stayed in for `max_ejection` starts from the base again.
    if o.ejected_until
        .is_some_and(|t| now.saturating_duration_since(t) >= s.max_ejection)
    {
        o.times_ejected = 0;
    }
    o.times_ejected = o.times_ejected.saturating_add(1);
    o.ejections += 1;
    let time = ejection_time(s, o.times_ejected);
    o.consecutive_failures = 0;
    let until = now + time;
    o.ejected_until = Some(until);
    o.returning = true;
    Some(until)
}

/// Records a successful connect: the failure streak ends.
pub(crate) fn on_success(o: &mut Outlier) {
    o.consecutive_failures = 0;
}

/// How long the `n`-th ejection lasts.
pub fn ejection_time(s: &OutlierSettings, n: u32) -> Duration {
    s.base_ejection.saturating_mul(n.max(1)).min(s.max_ejection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 2,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn ejects_after_the_streak_for_growing_capped_times() {
        let s = settings();
        let mut o = Outlier::default();
        let t0 = Instant::now();
        assert_eq!(on_failure(&mut o, &s, t0, 0, 4), None);
        assert_eq!(
            on_failure(&mut o, &s, t0, 0, 4),
            Some(t0 + Duration::from_secs(10))
        );
        // Failures while ejected do not extend it.
        assert_eq!(on_failure(&mut o, &s, t0, 1, 4), None);
        let t1 = t0 + Duration::from_secs(11);
        on_failure(&mut o, &s, t1, 0, 4);
        assert_eq!(
            on_failure(&mut o, &s, t1, 0, 4),
            Some(t1 + Duration::from_secs(20))
        );
        let t2 = t1 + Duration::from_secs(21);
        on_failure(&mut o, &s, t2, 0, 4);
        // 30 s capped at 25 s.
        assert_eq!(
            on_failure(&mut o, &s, t2, 0, 4),
            Some(t2 + Duration::from_secs(25))
        );
        // Long enough in, the time starts from the base again; the count
        // of ejections goes on.
        let t3 = t2 + Duration::from_secs(25 + 25);
        on_failure(&mut o, &s, t3, 0, 4);
        assert_eq!(
            on_failure(&mut o, &s, t3, 0, 4),
            Some(t3 + Duration::from_secs(10))
        );
        assert_eq!(o.ejections, 4);
    }

    #[test]
    fn a_success_breaks_the_streak() {
        let s = settings();
        let mut o = Outlier::default();
        let t0 = Instant::now();
        on_failure(&mut o, &s, t0, 0, 4);
        on_success(&mut o);
        assert_eq!(on_failure(&mut o, &s, t0, 0, 4), None);
    }

    #[test]
    fn the_ejected_share_is_capped_but_one_may_always_go() {
        let s = settings();
        let t0 = Instant::now();
        let mut o = Outlier {
            consecutive_failures: 1,
            ..Default::default()
        };
        // 1 of 4 ejected: a second (50 %) is allowed.
        assert!(on_failure(&mut o.clone(), &s, t0, 1, 4).is_some());
        // 2 of 4 ejected: a third (75 %) is not.
        assert!(on_failure(&mut o.clone(), &s, t0, 2, 4).is_none());
        // Of two backends none is ejected: one may go even at 50 % of 1.
        assert!(on_failure(&mut o, &s, t0, 0, 1).is_some());
    }

    #[test]
    fn a_long_stay_resets_the_growth() {
        let s = settings();
        let t0 = Instant::now();
        let mut o = Outlier::default();
        on_failure(&mut o, &s, t0, 0, 4);
        on_failure(&mut o, &s, t0, 0, 4);
        let later = t0 + Duration::from_secs(10 + 25);
        on_failure(&mut o, &s, later, 0, 4);
        assert_eq!(
            on_failure(&mut o, &s, later, 0, 4),
            Some(later + Duration::from_secs(10))
        );
    }

    #[test]
    fn zero_threshold_never_ejects() {
        let s = OutlierSettings {
            consecutive_failures: 0,
            ..settings()
        };
        let mut o = Outlier::default();
        for _ in 0..10 {
            assert!(on_failure(&mut o, &s, Instant::now(), 0, 4).is_none());
        }
    }
}
