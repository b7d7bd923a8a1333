//! Request-rate anomaly per route. Time is cut into fixed intervals of `interval` (aligned to the
//! epoch); each route counts its events per interval. A closed interval's count `x` is folded
//! into an exponentially weighted mean and variance (Finch 2009, "Incremental calculation of
//! weighted mean and variance"):
//!
//! ```text
//! d = x - mean;  mean += alpha * d;  var = (1 - alpha) * (var + alpha * d * d)
//! z = (x - mean) / sqrt(max(var, mean, 1))
//! ```
//!
//! The variance is floored at the mean (request counts are roughly Poisson, whose variance is
//! the mean) and at 1, so a perfectly steady or near-idle route does not alert on a handful of
//! requests. A route is judged only after `min_intervals` complete intervals (its first,
//! partial interval is never folded). Spike: the open interval's count reaches `min_count` and
//! `z > z_threshold`, judged on every event so the alert comes during the spike, once per
//! interval. Drop: a closed interval with `z < -z_threshold` while the mean is at least
//! `min_count`. Empty intervals between two events count as zeros (at most `MAX_GAP` folded).

use super::Draft;
use crate::alert::{clean, AlertKind, Severity};
use crate::bounded::BoundedMap;
use crate::config::RateAnomalyConfig;
use crate::time::dur_ms;

/// Most empty intervals folded for one gap; by then the mean has decayed to about zero anyway.
const MAX_GAP: u64 = 1_000;

#[derive(Debug, Default)]
struct Route {
    /// Index of the open interval (time / interval).
    bucket: u64,
    count: u64,
    ids: Vec<String>,
    first: u64,
    /// The open interval is the route's first (partial) one.
    partial: bool,
    spike_fired: bool,
    mean: f64,
    var: f64,
    /// Complete intervals folded in.
    n: u32,
}

impl Route {
    fn z(&self, x: f64) -> f64 {
        let sd = self.var.max(self.mean).max(1.0).sqrt();
        (x - self.mean) / sd
    }

    fn fold(&mut self, x: f64, alpha: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            self.mean += alpha * d;
            self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        }
        self.n = self.n.saturating_add(1);
    }
}

#[derive(Debug)]
pub(crate) struct Rate {
    cfg: RateAnomalyConfig,
    interval: u64,
    routes: BoundedMap<String, Route>,
}

impl Rate {
    pub(crate) fn new(cfg: RateAnomalyConfig, max_keys: usize) -> Self {
        let interval = dur_ms(cfg.interval).max(1);
        Rate { cfg, interval, routes: BoundedMap::new(max_keys) }
    }

    pub(crate) fn observe(&mut self, route: &str, t: u64, id: &str, max_ids: usize, out: &mut Vec<Draft>) {
        let b = t / self.interval;
        let cfg = &self.cfg;
        let interval = self.interval;
        let r =
            self.routes.touch(&route.to_owned(), || Route { bucket: b, partial: true, first: t, ..Route::default() });
        if b > r.bucket {
            // Close the open interval, then the empty ones up to `b`.
            let mut drop_alert = None;
            let gap = (b - r.bucket - 1).min(MAX_GAP);
            let closing = std::iter::once(r.count).chain(std::iter::repeat_n(0, usize::try_from(gap).unwrap_or(0)));
            for (i, x) in closing.enumerate() {
                let judged = !(i == 0 && r.partial);
                if judged {
                    let x = x as f64;
                    let z = r.z(x);
                    if drop_alert.is_none()
                        && cfg.detect_drops
                        && r.n >= cfg.min_intervals
                        && r.mean >= cfg.min_count as f64
                        && z < -cfg.z_threshold
                    {
                        let start = r.bucket.saturating_add(i as u64).saturating_mul(interval);
                        drop_alert = Some((start, x, r.mean, z, if i == 0 { r.ids.clone() } else { Vec::new() }));
                    }
                    r.fold(x, cfg.alpha);
                }
            }
            if let Some((start, x, mean, z, ids)) = drop_alert {
                out.push(Draft {
                    kind: AlertKind::RateDrop,
                    severity: Severity::Low,
                    key: format!("rate_drop:route:{}", clean(route, 128)),
                    summary: format!(
                        "Route {} received {x:.0} requests in one {}s interval, far below its mean of {mean:.1} (z = {z:.1})",
                        clean(route, 128),
                        interval / 1000
                    ),
                    event_ids: ids,
                    first: start,
                    last: start.saturating_add(interval),
                    count: 1,
                });
            }
            r.bucket = b;
            r.count = 0;
            r.ids.clear();
            r.first = t;
            r.partial = false;
            r.spike_fired = false;
        }
        r.count = r.count.saturating_add(1);
        if r.ids.len() < max_ids {
            r.ids.push(id.to_owned());
        }
        if !r.spike_fired && !r.partial && r.n >= cfg.min_intervals && r.count >= cfg.min_count {
            let z = r.z(r.count as f64);
            if z > cfg.z_threshold {
                r.spike_fired = true;
                out.push(Draft {
                    kind: AlertKind::RateSpike,
                    severity: Severity::Medium,
                    key: format!("rate_spike:route:{}", clean(route, 128)),
                    summary: format!(
                        "Route {} received {} requests in the current {}s interval, far above its mean of {:.1} (z = {z:.1})",
                        clean(route, 128),
                        r.count,
                        interval / 1000,
                        r.mean
                    ),
                    event_ids: r.ids.clone(),
                    first: r.first,
                    last: t,
                    count: 1,
                });
            }
        }
    }
}
