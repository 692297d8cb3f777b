//! Drawing service times from a [`Service`] distribution.
//!
//! Only `rand`'s uniform draws are used; exponential and log-normal come from
//! inversion and Box-Muller, so a seed gives the same times on every machine.

use std::time::Duration;

use rand::Rng;

use crate::scenario::Service;

/// One service time from `service`.
pub fn sample<R: Rng + ?Sized>(service: &Service, rng: &mut R) -> Duration {
    let secs = match *service {
        Service::Fixed { value } => value.0.as_secs_f64(),
        Service::Exponential { mean } => mean.0.as_secs_f64() * exp1(rng),
        Service::LogNormal { median, sigma } => {
            median.0.as_secs_f64() * (sigma * std_normal(rng)).exp()
        }
        Service::Bimodal { fast, slow, p_slow } => {
            if rng.gen::<f64>() < p_slow {
                slow.0.as_secs_f64()
            } else {
                fast.0.as_secs_f64()
            }
        }
    };
    Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
}

/// An exponential draw with mean 1.
pub fn exp1<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // 1 - U is in (0, 1], so the log is finite.
    -(1.0 - rng.gen::<f64>()).ln()
}

/// A standard normal draw (Box-Muller).
fn std_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.gen::<f64>();
    let u2 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Dur;
    use rand::{rngs::SmallRng, SeedableRng};

    fn mean_ms(s: Service) -> f64 {
        let mut rng = SmallRng::seed_from_u64(7);
        let n = 20_000;
        (0..n)
            .map(|_| sample(&s, &mut rng).as_secs_f64() * 1e3)
            .sum::<f64>()
            / n as f64
    }

    fn ms(x: u64) -> Dur {
        Dur(Duration::from_millis(x))
    }

    #[test]
    fn means_match_the_distributions() {
        assert!((mean_ms(Service::Fixed { value: ms(4) }) - 4.0).abs() < 1e-9);
        let e = mean_ms(Service::Exponential { mean: ms(10) });
        assert!((e - 10.0).abs() < 0.4, "{e}");
        // log-normal mean = median × e^(σ²/2)
        let l = mean_ms(Service::LogNormal {
            median: ms(10),
            sigma: 0.5,
        });
        assert!((l - 10.0 * (0.125f64).exp()).abs() < 0.4, "{l}");
        let b = mean_ms(Service::Bimodal {
            fast: ms(1),
            slow: ms(101),
            p_slow: 0.1,
        });
        assert!((b - 11.0).abs() < 0.6, "{b}");
    }
}
