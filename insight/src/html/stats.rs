//! The figures the page shows, computed from records: pure functions, no HTML.

use std::collections::{BTreeMap, HashMap};

use crate::record::{Job, Prediction, RunRecord, Status};

/// An RFC 3339 time (`2026-05-01T12:00:00.123Z`, `…+02:00`) as milliseconds since the
/// Unix epoch; `None` for anything else.
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 3)];
        frac_ms = digits.parse::<i64>().ok()? * 10_i64.pow(3 - u32::try_from(digits.len()).ok()?);
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's method), the inverse
/// of [`crate::record::civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The run's wall time: `wall_ms`, else its end minus its start.
pub(crate) fn wall_ms(r: &RunRecord) -> Option<u64> {
    r.wall_ms.or_else(|| {
        let (s, e) = (
            parse_rfc3339_ms(&r.started_at)?,
            parse_rfc3339_ms(&r.ended_at)?,
        );
        u64::try_from(e - s).ok()
    })
}

/// The median; the mean of the middle two for an even count.
pub(crate) fn median(values: &[u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        v[mid - 1] / 2 + v[mid] / 2 + (v[mid - 1] % 2 + v[mid] % 2) / 2
    })
}

/// `part / whole` as a float, `None` when `whole` is zero.
pub(crate) fn share(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// `part / whole` for durations, `None` when `whole` is zero.
pub(crate) fn share_u64(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Whether the cache served the job.
pub(crate) fn cache_hit(j: &Job) -> bool {
    j.cache.as_ref().is_some_and(|c| c.hit) || j.state.as_deref() == Some("cached")
}

/// A run's jobs by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobCounts {
    /// Succeeded (restored from the cache included).
    pub(crate) passed: usize,
    /// Failed.
    pub(crate) failed: usize,
    /// Restored from the cache.
    pub(crate) cached: usize,
    /// Canceled or skipped.
    pub(crate) other: usize,
}

/// How the run's jobs ended.
pub(crate) fn job_counts(r: &RunRecord) -> JobCounts {
    let mut c = JobCounts::default();
    for j in &r.jobs {
        match j.status {
            Status::Success => c.passed += 1,
            Status::Failed => c.failed += 1,
            Status::Canceled | Status::Skipped => c.other += 1,
        }
        if cache_hit(j) {
            c.cached += 1;
        }
    }
    c
}

/// The flake index over runs: jobs that passed on a retry (attempt > 1, success) over
/// jobs that ran (not skipped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Flake {
    /// The share.
    pub(crate) index: f64,
    /// Jobs that passed on a retry.
    pub(crate) flaky: usize,
    /// Jobs that ran.
    pub(crate) jobs: usize,
}

/// The flake index of `runs`; `None` when no job ran.
pub(crate) fn flake_index(runs: &[RunRecord]) -> Option<Flake> {
    let ran = runs
        .iter()
        .flat_map(|r| &r.jobs)
        .filter(|j| j.status != Status::Skipped);
    let (mut flaky, mut jobs) = (0, 0);
    for j in ran {
        jobs += 1;
        if j.status == Status::Success && j.attempt.unwrap_or(1) > 1 {
            flaky += 1;
        }
    }
    Some(Flake {
        index: share(flaky, jobs)?,
        flaky,
        jobs,
    })
}

/// Mean time to recovery over runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mttr {
    /// The mean, when at least one failure was followed by a success.
    pub(crate) mean_ms: Option<u64>,
    /// Recoveries measured.
    pub(crate) recoveries: usize,
    /// Plans whose last shown run of a failure streak has no success after it.
    pub(crate) still_failing: usize,
}

/// For each plan, each streak of failed runs opens at the first failed run's end and
/// closes at the end of the next successful run of the same plan; the mean of those
/// spans. Canceled runs neither open nor close a streak. Runs are oldest first.
pub(crate) fn mttr(runs: &[RunRecord]) -> Mttr {
    let mut open: HashMap<Option<&str>, i64> = HashMap::new();
    let mut spans: Vec<u64> = Vec::new();
    for r in runs {
        let plan = r.plan.as_deref();
        let Some(end) = parse_rfc3339_ms(&r.ended_at) else {
            continue;
        };
        match r.status {
            Status::Failed => {
                open.entry(plan).or_insert(end);
            }
            Status::Success => {
                if let Some(since) = open.remove(&plan) {
                    spans.push(u64::try_from(end - since).unwrap_or(0));
                }
            }
            Status::Canceled | Status::Skipped => {}
        }
    }
    let mean_ms = (!spans.is_empty()).then(|| {
        let total: u128 = spans.iter().map(|&s| u128::from(s)).sum();
        u64::try_from(total / spans.len() as u128).unwrap_or(u64::MAX)
    });
    Mttr {
        mean_ms,
        recoveries: spans.len(),
        still_failing: open.len(),
    }
}

/// The mean of the values present, and how many were.
pub(crate) fn mean_present(values: impl Iterator<Item = Option<f64>>) -> Option<(f64, usize)> {
    let (mut sum, mut n) = (0.0, 0_usize);
    for v in values.flatten() {
        sum += v;
        n += 1;
    }
    let mean = (n > 0).then(|| sum / n as f64)?;
    Some((mean, n))
}

/// A run's cache lookups by result.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheTally {
    /// Restored.
    pub(crate) hit: usize,
    /// Looked up, not found.
    pub(crate) miss: usize,
    /// Found, failed verification, set aside.
    pub(crate) quarantine: usize,
    /// Not looked up: the job cannot be cached.
    pub(crate) uncacheable: usize,
}

impl CacheTally {
    /// Lookups made: hits, misses and quarantines.
    pub(crate) fn lookups(self) -> usize {
        self.hit + self.miss + self.quarantine
    }

    /// Hits over lookups.
    pub(crate) fn ratio(self) -> Option<f64> {
        share(self.hit, self.lookups())
    }

    /// Adds another tally.
    pub(crate) fn add(&mut self, o: CacheTally) {
        self.hit += o.hit;
        self.miss += o.miss;
        self.quarantine += o.quarantine;
        self.uncacheable += o.uncacheable;
    }
}

/// A run's cache lookups: its `cache_events`, and for a job with a `cache` but no event,
/// that job's `cache.hit`.
pub(crate) fn cache_tally(r: &RunRecord) -> CacheTally {
    let mut t = CacheTally::default();
    for e in &r.cache_events {
        match e.result.as_str() {
            "hit" => t.hit += 1,
            "miss" => t.miss += 1,
            "quarantine" => t.quarantine += 1,
            _ => t.uncacheable += 1,
        }
    }
    for j in &r.jobs {
        let Some(c) = &j.cache else { continue };
        if r.cache_events.iter().any(|e| e.job == j.id) {
            continue;
        }
        if c.hit {
            t.hit += 1;
        } else {
            t.miss += 1;
        }
    }
    t
}

/// Prediction accuracy of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Accuracy {
    /// Sum of |actual − p50| over sum of actual.
    pub(crate) wape: Option<f64>,
    /// Mean of |actual − p50| / actual over jobs that took at least a second.
    pub(crate) mape: Option<f64>,
    /// Jobs at or under their p80, of jobs with a p80.
    pub(crate) within_p80: usize,
    /// Jobs with a p80.
    pub(crate) with_p80: usize,
    /// Predictions.
    pub(crate) n: usize,
}

/// Jobs shorter than this are left out of MAPE: a 10 ms job predicted at 30 ms is a 200%
/// error that says nothing.
pub(crate) const MAPE_FLOOR_MS: u64 = 1000;

/// The accuracy of predictions (one run's, or several runs' pooled).
pub(crate) fn accuracy<'a>(predictions: impl IntoIterator<Item = &'a Prediction>) -> Accuracy {
    let mut a = Accuracy::default();
    let (mut abs_err, mut actual) = (0_u128, 0_u128);
    let (mut ape_sum, mut ape_n) = (0.0, 0_usize);
    for p in predictions {
        a.n += 1;
        let err = p.actual_ms.abs_diff(p.p50_ms);
        abs_err += u128::from(err);
        actual += u128::from(p.actual_ms);
        if p.actual_ms >= MAPE_FLOOR_MS {
            ape_sum += err as f64 / p.actual_ms as f64;
            ape_n += 1;
        }
        if let Some(p80) = p.p80_ms {
            a.with_p80 += 1;
            if p.actual_ms <= p80 {
                a.within_p80 += 1;
            }
        }
    }
    a.wape = (actual > 0).then(|| abs_err as f64 / actual as f64);
    a.mape = (ape_n > 0).then(|| ape_sum / ape_n as f64);
    a
}

/// One step's durations over runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepTimes {
    /// The step id.
    pub(crate) id: String,
    /// Median duration of the runs in which it ran.
    pub(crate) median_ms: u64,
    /// Longest.
    pub(crate) max_ms: u64,
    /// Runs in which it ran.
    pub(crate) ran: usize,
    /// Runs in which the cache served it.
    pub(crate) cached: usize,
    /// Runs in which it failed.
    pub(crate) failed: usize,
}

/// Steps by median duration, slowest first. A cache hit is not a duration of the step (it
/// measures the restore), so hits are counted but not timed; a step that was only ever
/// restored is left out.
pub(crate) fn slowest_steps(runs: &[RunRecord]) -> Vec<StepTimes> {
    let mut by_step: BTreeMap<&str, (Vec<u64>, usize, usize)> = BTreeMap::new();
    for j in runs.iter().flat_map(|r| &r.jobs) {
        if j.status == Status::Skipped {
            continue;
        }
        let e = by_step.entry(&j.id).or_default();
        if cache_hit(j) {
            e.1 += 1;
        } else {
            e.0.push(j.duration_ms);
        }
        if j.status == Status::Failed {
            e.2 += 1;
        }
    }
    let mut out: Vec<StepTimes> = by_step
        .into_iter()
        .filter_map(|(id, (times, cached, failed))| {
            Some(StepTimes {
                id: id.to_string(),
                median_ms: median(&times)?,
                max_ms: times.iter().copied().max()?,
                ran: times.len(),
                cached,
                failed,
            })
        })
        .collect();
    out.sort_by(|a, b| b.median_ms.cmp(&a.median_ms).then_with(|| a.id.cmp(&b.id)));
    out
}

/// The run's critical jobs in the order of their needs (a job after every critical job it
/// needs; ties in the record's order).
pub(crate) fn critical_path(r: &RunRecord) -> Vec<&Job> {
    let mut left: Vec<&Job> = r.jobs.iter().filter(|j| j.critical).collect();
    let mut out: Vec<&Job> = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|j| {
                !j.needs
                    .iter()
                    .any(|n| left.iter().any(|other| &other.id == n))
            })
            // A cycle cannot be recorded by a valid plan; keep the rest in record order.
            .unwrap_or(0);
        out.push(left.remove(ready));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::JobCache;

    fn job(id: &str, status: Status, attempt: u32, ms: u64) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": id, "status": status.as_str(), "attempt": attempt, "duration_ms": ms,
        }))
        .unwrap()
    }

    fn run(plan: &str, status: Status, start: &str, end: &str, jobs: Vec<Job>) -> RunRecord {
        let mut r: RunRecord = serde_json::from_value(serde_json::json!({
            "schema": "pipeline_run.v1.3", "run_id": "r", "started_at": start, "ended_at": end,
            "status": status.as_str(), "jobs": [],
            "tests": {"total": 0, "failed": 0, "duration_ms": 0}, "cost": {}, "plan": plan,
        }))
        .unwrap();
        r.jobs = jobs;
        r
    }

    #[test]
    fn rfc3339_parses_utc_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            parse_rfc3339_ms("1970-01-01T01:00:00.123456+01:00"),
            Some(123)
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:00:00-01:00"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00.123Z"),
            Some(951_782_400_123)
        );
        for bad in [
            "",
            "2000-02-29",
            "2000-13-01T00:00:00Z",
            "2000-02-29T00:00:00",
            "2000-02-29T00:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        for ms in [0_u64, 951_782_400_123, 1_798_761_599_999] {
            let s = crate::record::rfc3339_ms(ms);
            assert_eq!(
                parse_rfc3339_ms(&s),
                Some(i64::try_from(ms).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5]), Some(5));
        assert_eq!(median(&[5, 1, 3]), Some(3));
        assert_eq!(median(&[9, 1, 5]), Some(5));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median(&[1, 2]), Some(1));
        assert_eq!(median(&[u64::MAX, u64::MAX]), Some(u64::MAX));
    }

    #[test]
    fn flake_index_counts_passes_on_retry_over_jobs_that_ran() {
        let runs = [
            run(
                "ci",
                Status::Success,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:01:00Z",
                vec![
                    job("a", Status::Success, 1, 10),
                    job("b", Status::Success, 2, 10), // flaky
                    job("c", Status::Skipped, 1, 0),  // not counted
                ],
            ),
            run(
                "ci",
                Status::Failed,
                "2026-01-01T01:00:00Z",
                "2026-01-01T01:01:00Z",
                vec![
                    job("a", Status::Success, 3, 10), // flaky
                    job("b", Status::Failed, 3, 10),  // retried, still failed: not flaky
                ],
            ),
        ];
        let f = flake_index(&runs).unwrap();
        assert_eq!((f.flaky, f.jobs), (2, 4));
        assert!((f.index - 0.5).abs() < 1e-12);
        assert_eq!(flake_index(&[]), None);
    }

    #[test]
    fn mttr_is_the_mean_span_from_a_failure_streak_to_the_next_success_of_its_plan() {
        let r = |plan, status, end: &str| run(plan, status, "2026-01-01T00:00:00Z", end, vec![]);
        let runs = [
            r("ci", Status::Success, "2026-01-01T00:00:00Z"),
            r("ci", Status::Failed, "2026-01-01T01:00:00Z"), // streak opens at 01:00
            r("nightly", Status::Failed, "2026-01-01T01:30:00Z"), // other plan, opens at 01:30
            r("ci", Status::Failed, "2026-01-01T01:40:00Z"), // same streak
            r("ci", Status::Canceled, "2026-01-01T01:50:00Z"), // neither
            r("ci", Status::Success, "2026-01-01T02:00:00Z"), // closes: 60 min
            r("ci", Status::Failed, "2026-01-01T03:00:00Z"), // opens at 03:00
            r("ci", Status::Success, "2026-01-01T03:20:00Z"), // closes: 20 min
            r("ci", Status::Success, "2026-01-01T04:00:00Z"), // nothing open
        ];
        let m = mttr(&runs);
        assert_eq!(m.recoveries, 2);
        assert_eq!(m.mean_ms, Some(40 * 60_000));
        assert_eq!(m.still_failing, 1, "nightly never recovered");
        assert_eq!(mttr(&runs[..2]).mean_ms, None);
    }

    #[test]
    fn cache_tally_merges_events_and_job_hits_without_counting_twice() {
        let mut r = run(
            "ci",
            Status::Success,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:01:00Z",
            vec![
                job("a", Status::Success, 1, 10),
                job("b", Status::Success, 1, 10),
                job("c", Status::Success, 1, 10),
            ],
        );
        r.jobs[0].cache = Some(JobCache {
            hit: true,
            key: None,
        });
        r.jobs[1].cache = Some(JobCache {
            hit: false,
            key: None,
        });
        r.cache_events = serde_json::from_value(serde_json::json!([
            {"job": "a", "result": "hit"},
            {"job": "c", "result": "quarantine", "reason": "bad signature"},
            {"job": "d", "result": "uncacheable", "reason": "declares secrets"},
        ]))
        .unwrap();
        let t = cache_tally(&r);
        assert_eq!(
            t,
            CacheTally {
                hit: 1,
                miss: 1,
                quarantine: 1,
                uncacheable: 1
            }
        );
        assert_eq!(t.ratio(), Some(1.0 / 3.0));
    }

    #[test]
    fn accuracy_wape_mape_and_p80() {
        let mut r = run(
            "ci",
            Status::Success,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:01:00Z",
            vec![],
        );
        let p = |p50, p80, actual| Prediction {
            job: "j".into(),
            p50_ms: p50,
            p80_ms: p80,
            p90_ms: None,
            actual_ms: actual,
            model: None,
            cache_hit: None,
        };
        r.prediction = vec![
            p(1_000, Some(1_500), 2_000), // err 1000, ape 0.5, above p80
            p(4_000, Some(5_000), 3_000), // err 1000, ape 1/3, within
            p(100, None, 500),            // err 400, under the MAPE floor, no p80
        ];
        let a = accuracy(&r.prediction);
        assert!((a.wape.unwrap() - 2400.0 / 5500.0).abs() < 1e-12);
        assert!((a.mape.unwrap() - (0.5 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!((a.within_p80, a.with_p80, a.n), (1, 2, 3));
    }

    #[test]
    fn slowest_steps_leave_cache_hits_untimed() {
        let mut runs = vec![];
        for (i, ms) in [100, 300, 200].into_iter().enumerate() {
            let mut a = job("a", Status::Success, 1, ms);
            if i == 2 {
                a.cache = Some(JobCache {
                    hit: true,
                    key: None,
                });
                a.duration_ms = 1;
            }
            runs.push(run(
                "ci",
                Status::Success,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:01:00Z",
                vec![a, job("b", Status::Failed, 1, 250)],
            ));
        }
        let s = slowest_steps(&runs);
        assert_eq!(s[0].id, "b");
        assert_eq!((s[0].median_ms, s[0].ran, s[0].failed), (250, 3, 3));
        assert_eq!(s[1].id, "a");
        assert_eq!(
            (s[1].median_ms, s[1].max_ms, s[1].ran, s[1].cached),
            (200, 300, 2, 1)
        );
    }

    #[test]
    fn critical_path_follows_needs_not_record_order() {
        let mut jobs = vec![
            job("test", Status::Success, 1, 10),
            job("lint", Status::Success, 1, 10),
            job("build", Status::Success, 1, 10),
            job("fetch", Status::Success, 1, 10),
        ];
        jobs[0].needs = vec!["build".into()];
        jobs[2].needs = vec!["fetch".into()];
        for i in [0, 2, 3] {
            jobs[i].critical = true;
        }
        let r = run(
            "ci",
            Status::Success,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:01:00Z",
            jobs,
        );
        let ids: Vec<&str> = critical_path(&r).iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["fetch", "build", "test"]);
    }
}
