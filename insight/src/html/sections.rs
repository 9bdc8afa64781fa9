//! The page's sections, one function each, over the shown runs (oldest first).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::fmt::{self as f, esc};
use super::stats::{self, CacheTally};
use super::svg::{self, Bar, Segment};
use super::{badge, card, empty, link, open_section, plural};
use crate::record::{RunRecord, Status};

/// Rows a long table shows before it says how many more there are.
const MAX_ROWS: usize = 25;
/// Failed runs whose findings the autopsy section shows.
const AUTOPSY_RUNS: usize = 3;

/// The CSS class of a status's bar.
fn bar_class(s: Status) -> &'static str {
    match s {
        Status::Success => "b-success",
        Status::Failed => "b-failed",
        Status::Canceled => "b-canceled",
        Status::Skipped => "b-skipped",
    }
}

/// The x label of a run: when it started, else its place.
fn x_label(r: &RunRecord, i: usize) -> String {
    f::axis_time(&r.started_at).unwrap_or_else(|| format!("#{}", i + 1))
}

/// A run's one-line name: when, plan, branch.
fn run_name(r: &RunRecord) -> String {
    let mut s = f::when(&r.started_at);
    if let Some(p) = &r.plan {
        let _ = write!(s, " · {p}");
    }
    if let Some(b) = &r.branch {
        let _ = write!(s, " · {b}");
    }
    s
}

/// "and N more" under a cut table.
fn more(out: &mut String, total: usize, shown: usize, what: &str) {
    if total > shown {
        let _ = writeln!(
            out,
            "<p class=\"note\">… and {} more {what} not listed.</p>",
            total - shown
        );
    }
}

/// A count cell: dimmed when zero.
fn num(n: usize) -> String {
    if n == 0 {
        "<td class=\"num zero\">0</td>".into()
    } else {
        format!("<td class=\"num\">{}</td>", f::count(n as u64))
    }
}

/// Run health: figures, the duration trend, and a row per run.
pub(super) fn health(runs: &[RunRecord]) -> String {
    let mut out = open_section("health", "Run health");
    if runs.is_empty() {
        out.push_str(&empty(
            "runs",
            "Each <code>ci-intel run PLAN</code> appends one record to <code>STATE_DIR/runs.ndjson</code>; \
             the report reads them from there.",
        ));
        out.push_str(
            "<div class=\"sub\" id=\"trend\"><h3>Duration trend</h3>\
             <p class=\"note\">Nothing to chart until runs are recorded.</p></div>\n",
        );
        out.push_str("</section>\n");
        return out;
    }
    let ok = runs.iter().filter(|r| r.status == Status::Success).count();
    let failed = runs.iter().filter(|r| r.status == Status::Failed).count();
    let walls: Vec<u64> = runs.iter().filter_map(stats::wall_ms).collect();
    let med = stats::median(&walls);
    let latest = &runs[runs.len() - 1];
    out.push_str("<div class=\"cards\">");
    let rate = stats::share(ok, runs.len()).unwrap_or(0.0);
    out.push_str(&card(
        &f::percent(rate),
        "success rate",
        &format!(
            "{ok} of {} {}",
            runs.len(),
            plural(runs.len(), "run", "runs")
        ),
        if ok == runs.len() { "good" } else { "" },
    ));
    out.push_str(&card(
        &med.map_or_else(|| "–".into(), f::duration),
        "median wall time",
        &format!(
            "over {} {}",
            walls.len(),
            plural(walls.len(), "run", "runs")
        ),
        "",
    ));
    out.push_str(&card(
        &failed.to_string(),
        "failed runs",
        &format!(
            "{} canceled",
            runs.iter().filter(|r| r.status == Status::Canceled).count()
        ),
        if failed > 0 { "bad" } else { "" },
    ));
    out.push_str(&card(
        &badge(latest.status),
        "latest run",
        &esc(&f::when(&latest.started_at)),
        "",
    ));
    out.push_str("</div>\n");

    out.push_str("<div class=\"sub\" id=\"trend\"><h3>Duration trend</h3>\n");
    if walls.is_empty() {
        out.push_str(&empty(
            "run durations",
            "A record's <code>wall_ms</code>, or its start and end times, give its duration.",
        ));
    } else {
        let bars: Vec<Bar> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let w = stats::wall_ms(r);
                let value = w.map(|v| v as f64);
                Bar {
                    value,
                    class: bar_class(r.status),
                    mark: match r.status {
                        Status::Failed => Some("\u{2715}"),
                        Status::Canceled => Some("\u{2298}"),
                        Status::Success | Status::Skipped => None,
                    },
                    label: x_label(r, i),
                    title: format!(
                        "{} · {} · {}",
                        run_name(r),
                        r.status.as_str(),
                        w.map_or_else(|| "no duration".into(), f::duration)
                    ),
                }
            })
            .collect();
        let axis = svg::duration_axis(walls.iter().copied().max().unwrap_or(0), "wall time");
        let reference = med.map(|m| m as f64);
        out.push_str("<figure>");
        out.push_str(&svg::bar_chart(
            "Wall time of each run, oldest to newest, coloured by status",
            &bars,
            &axis,
            "run start (UTC), oldest → newest",
            reference,
        ));
        let _ = writeln!(
            out,
            "<figcaption><ul class=\"legend\">\
             <li><span class=\"swatch b-success\"></span>success</li>\
             <li><span class=\"swatch b-failed\"></span>✕ failed</li>\
             <li><span class=\"swatch b-canceled\"></span>⊘ canceled</li>\
             <li><span class=\"swatch ref\"></span>median wall time ({})</li></ul></figcaption></figure>",
            med.map_or_else(|| "–".into(), f::duration)
        );
    }
    out.push_str("</div>\n");

    out.push_str(
        "<h3>Runs, newest first</h3>\n<div class=\"tablewrap\"><table class=\"runs\"><thead><tr>\
         <th>Status</th><th>Started</th><th>Plan</th><th>Branch</th><th>Commit</th>\
         <th class=\"num\">Wall time</th><th class=\"num\">Passed</th><th class=\"num\">Failed</th>\
         <th class=\"num\">Cached</th></tr></thead><tbody>\n",
    );
    for r in runs.iter().rev() {
        let c = stats::job_counts(r);
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"when\">{}</td><td class=\"clip\">{}</td><td class=\"clip\">{}</td>",
            badge(r.status),
            esc(&f::when(&r.started_at)),
            r.plan.as_deref().map_or_else(|| "–".into(), esc),
            match (&r.branch, r.pr) {
                (Some(b), Some(pr)) => format!("{} <span class=\"zero\">#{pr}</span>", esc(b)),
                (Some(b), None) => esc(b),
                (None, Some(pr)) => format!("#{pr}"),
                (None, None) => "–".into(),
            },
        );
        match &r.commit_sha {
            Some(sha) => {
                let _ = write!(
                    out,
                    "<td><code title=\"{}\">{}</code></td>",
                    esc(sha),
                    esc(f::short_sha(sha))
                );
            }
            None => out.push_str("<td>–</td>"),
        }
        let _ = writeln!(
            out,
            "<td class=\"num\">{}</td>{}{}{}</tr>",
            stats::wall_ms(r).map_or_else(|| "–".into(), f::duration),
            num(c.passed),
            num(c.failed),
            num(c.cached),
        );
    }
    out.push_str("</tbody></table></div>\n</section>\n");
    out
}

/// Slowest steps and the latest critical path.
pub(super) fn slowest(runs: &[RunRecord]) -> String {
    let mut out = open_section("slowest", "Slowest steps");
    let steps = stats::slowest_steps(runs);
    if steps.is_empty() {
        out.push_str(&empty(
            "step durations",
            "Every step a <code>ci-intel run</code> executes (rather than restores from the cache) \
             adds its duration to the run record.",
        ));
    } else {
        let _ = writeln!(
            out,
            "<p class=\"note\">Median and longest duration over the {} shown {} in which the step ran. \
             Cache hits are counted but not timed: they measure the restore, not the step. \
             The bar is the median; the tick is the longest.</p>",
            runs.len(),
            plural(runs.len(), "run", "runs")
        );
        let scale = steps.iter().map(|s| s.max_ms).max().unwrap_or(1);
        out.push_str(
            "<div class=\"tablewrap\"><table class=\"steps\"><thead><tr><th>Step</th>\
             <th class=\"num\">Median</th><th></th><th class=\"num\">Longest</th><th class=\"num\">Ran</th>\
             <th class=\"num\">Cache hits</th><th class=\"num\">Failed</th></tr></thead><tbody>\n",
        );
        for s in steps.iter().take(MAX_ROWS) {
            let _ = writeln!(
                out,
                "<tr data-step=\"{id}\"><td class=\"brk\"><code>{id}</code></td><td class=\"num\">{med}</td>\
                 <td class=\"bar\">{bar}</td><td class=\"num\">{max}</td>{ran}{cached}{failed}</tr>",
                id = esc(&s.id),
                med = f::duration(s.median_ms),
                bar = svg::inline_bar(
                    s.median_ms,
                    s.max_ms,
                    scale,
                    &format!(
                        "{}: median {}, longest {}",
                        s.id,
                        f::duration(s.median_ms),
                        f::duration(s.max_ms)
                    )
                ),
                max = f::duration(s.max_ms),
                ran = num(s.ran),
                cached = num(s.cached),
                failed = num(s.failed),
            );
        }
        out.push_str("</tbody></table></div>\n");
        more(&mut out, steps.len(), MAX_ROWS, "steps");
    }
    critical_path(&mut out, runs);
    out.push_str("</section>\n");
    out
}

/// The critical path of the newest run that recorded one.
fn critical_path(out: &mut String, runs: &[RunRecord]) {
    out.push_str(
        "<div class=\"sub\" id=\"critical-path\"><h3>Critical path of the latest run</h3>\n",
    );
    let Some((pos, run)) = runs
        .iter()
        .enumerate()
        .rev()
        .find(|(_, r)| r.jobs.iter().any(|j| j.critical))
    else {
        out.push_str(&empty(
            "critical path",
            "A run marks the chain of needs that ended last (<code>jobs[].critical</code>); \
             runs that ran no step record none.",
        ));
        out.push_str("</div>\n");
        return;
    };
    let path = stats::critical_path(run);
    let total: u64 = path.iter().map(|j| j.duration_ms).sum();
    let _ = write!(
        out,
        "<p class=\"note\">Run of {}: {} {} in a chain of needs, {} end to end.",
        esc(&run_name(run)),
        path.len(),
        plural(path.len(), "step", "steps"),
        f::duration(total)
    );
    if pos + 1 != runs.len() {
        out.push_str(" The newest run recorded no critical path.");
    }
    out.push_str(" Shortening any of these shortens the run.</p>\n");
    let segments: Vec<Segment> = path
        .iter()
        .map(|j| Segment {
            label: j.id.clone(),
            ms: j.duration_ms,
            title: format!("{}: {}", j.id, f::duration(j.duration_ms)),
        })
        .collect();
    out.push_str(&svg::timeline(
        "Critical path, each step as long as it took",
        &segments,
    ));
    out.push_str(
        "<div class=\"tablewrap\"><table class=\"critical\"><thead><tr><th class=\"num\">#</th><th>Step</th>\
         <th>Status</th><th class=\"num\">Duration</th><th class=\"num\">Share of path</th></tr></thead><tbody>\n",
    );
    for (i, j) in path.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr data-critical=\"{id}\"><td class=\"num\">{n}</td><td class=\"brk\"><code>{id}</code>{cached}</td>\
             <td>{b}</td><td class=\"num\">{d}</td><td class=\"num\">{s}</td></tr>",
            n = i + 1,
            id = esc(&j.id),
            cached = if stats::cache_hit(j) {
                " <span class=\"zero\">(cache hit)</span>"
            } else {
                ""
            },
            b = badge(j.status),
            d = f::duration(j.duration_ms),
            s = stats::share_u64(j.duration_ms, total).map_or_else(|| "–".into(), f::percent),
        );
    }
    out.push_str("</tbody></table></div>\n</div>\n");
}

/// Cache hit ratio per run and overall; quarantines; why jobs were not cacheable.
pub(super) fn cache(runs: &[RunRecord]) -> String {
    let mut out = open_section("cache", "Cache");
    let tallies: Vec<CacheTally> = runs.iter().map(stats::cache_tally).collect();
    let mut total = CacheTally::default();
    for t in &tallies {
        total.add(*t);
    }
    if total.lookups() == 0 && total.uncacheable == 0 {
        out.push_str(&empty(
            "cache lookups",
            "Sandboxed steps are looked up in the cache unless they opt out (<code>cache = false</code>) \
             or the run says <code>--no-cache</code>; each lookup is a <code>cache_events</code> entry.",
        ));
        out.push_str("</section>\n");
        return out;
    }
    out.push_str("<div class=\"cards\">");
    out.push_str(&card(
        &total.ratio().map_or_else(|| "–".into(), f::percent),
        "hit ratio, overall",
        &format!(
            "{} of {} {} hit",
            total.hit,
            total.lookups(),
            plural(total.lookups(), "lookup", "lookups")
        ),
        "",
    ));
    let latest = tallies.last().copied().unwrap_or_default();
    out.push_str(&card(
        &latest.ratio().map_or_else(|| "–".into(), f::percent),
        "hit ratio, latest run",
        &format!("{} of {}", latest.hit, latest.lookups()),
        "",
    ));
    out.push_str(&card(
        &total.quarantine.to_string(),
        "quarantined",
        "entries that failed verification",
        if total.quarantine > 0 { "bad" } else { "" },
    ));
    out.push_str(&card(
        &total.uncacheable.to_string(),
        "not cacheable",
        "jobs not looked up",
        "",
    ));
    out.push_str("</div>\n");

    let bars: Vec<Bar> = runs
        .iter()
        .zip(&tallies)
        .enumerate()
        .map(|(i, (r, t))| Bar {
            value: t.ratio(),
            class: "b-neutral",
            mark: None,
            label: x_label(r, i),
            title: match t.ratio() {
                Some(q) => format!(
                    "{} · {} of {} lookups hit ({})",
                    run_name(r),
                    t.hit,
                    t.lookups(),
                    f::percent(q)
                ),
                None => format!("{} · no lookups", run_name(r)),
            },
        })
        .collect();
    out.push_str("<figure id=\"cache-chart\">");
    out.push_str(&svg::bar_chart(
        "Cache hit ratio of each run, oldest to newest",
        &bars,
        &svg::share_axis(1.0, "hit ratio", true),
        "run start (UTC), oldest → newest",
        None,
    ));
    out.push_str(
        "<figcaption><ul class=\"legend\"><li><span class=\"swatch b-neutral\"></span>hits over lookups \
         (hits, misses and quarantines)</li><li>dashed: no lookups in that run</li></ul></figcaption></figure>\n",
    );

    out.push_str("<h3>Quarantines</h3>\n");
    let quarantines: Vec<(&RunRecord, &crate::record::CacheEvent)> = runs
        .iter()
        .rev()
        .flat_map(|r| {
            r.cache_events
                .iter()
                .filter(|e| e.result == "quarantine")
                .map(move |e| (r, e))
        })
        .collect();
    if quarantines.is_empty() {
        out.push_str("<p class=\"note\">No entry was quarantined in the shown runs.</p>\n");
    } else {
        out.push_str(
            "<p class=\"note\">A quarantined entry failed verification (signature or content digest) \
             and was set aside; the job ran as on a miss.</p>\n<div class=\"tablewrap\"><table class=\"quarantines\">\
             <thead><tr><th>Run</th><th>Job</th><th>Namespace</th><th>Reason</th></tr></thead><tbody>\n",
        );
        for (r, e) in quarantines.iter().take(MAX_ROWS) {
            let _ = writeln!(
                out,
                "<tr><td class=\"when\">{}</td><td class=\"brk\"><code>{}</code></td><td>{}</td><td class=\"brk\">{}</td></tr>",
                esc(&f::when(&r.started_at)),
                esc(&e.job),
                e.namespace.as_deref().map_or_else(|| "–".into(), esc),
                e.reason.as_deref().map_or_else(|| "–".into(), esc),
            );
        }
        out.push_str("</tbody></table></div>\n");
        more(&mut out, quarantines.len(), MAX_ROWS, "quarantines");
    }

    let mut uncacheable: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for e in runs.iter().flat_map(|r| &r.cache_events) {
        if e.result == "uncacheable" {
            *uncacheable
                .entry((&e.job, e.reason.as_deref().unwrap_or("")))
                .or_default() += 1;
        }
    }
    if !uncacheable.is_empty() {
        out.push_str(
            "<h3>Not cacheable</h3>\n<div class=\"tablewrap\"><table class=\"uncacheable\"><thead><tr>\
             <th>Job</th><th>Why</th><th class=\"num\">Runs</th></tr></thead><tbody>\n",
        );
        let mut rows: Vec<_> = uncacheable.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for ((job, why), n) in rows.iter().take(MAX_ROWS) {
            let _ = writeln!(
                out,
                "<tr><td class=\"brk\"><code>{}</code></td><td class=\"brk\">{}</td>{}</tr>",
                esc(job),
                if why.is_empty() {
                    "–".into()
                } else {
                    esc(why)
                },
                num(*n)
            );
        }
        out.push_str("</tbody></table></div>\n");
        more(&mut out, rows.len(), MAX_ROWS, "jobs");
    }
    out.push_str("</section>\n");
    out
}

/// Prediction accuracy per run and the latest run's predicted against actual.
pub(super) fn prediction(runs: &[RunRecord]) -> String {
    let mut out = open_section("prediction", "Prediction accuracy");
    let Some(latest) = runs.iter().rev().find(|r| !r.prediction.is_empty()) else {
        out.push_str(&empty(
            "predictions",
            "Once the runtime model has history for a step, each run records its predicted \
             duration (p50, p80) against what the step took.",
        ));
        out.push_str("</section>\n");
        return out;
    };
    let acc: Vec<stats::Accuracy> = runs
        .iter()
        .map(|r| stats::accuracy(&r.prediction))
        .collect();
    let pooled = stats::accuracy(runs.iter().flat_map(|r| &r.prediction));
    let last = stats::accuracy(&latest.prediction);
    let pct = |v: Option<f64>| v.map_or_else(|| "–".into(), f::percent);
    out.push_str("<div class=\"cards\">");
    out.push_str(&card(
        &pct(last.wape),
        "WAPE, latest run",
        "Σ|actual − p50| / Σ actual",
        "",
    ));
    out.push_str(&card(
        &pct(pooled.wape),
        "WAPE, shown runs",
        &format!(
            "{} {} pooled",
            pooled.n,
            plural(pooled.n, "prediction", "predictions")
        ),
        "",
    ));
    out.push_str(&card(
        &pct(last.mape),
        "MAPE, latest run",
        "mean |error| / actual, steps ≥ 1 s",
        "",
    ));
    out.push_str(&card(
        &pct(stats::share(last.within_p80, last.with_p80)),
        "within p80, latest run",
        &format!("{} of {} steps", last.within_p80, last.with_p80),
        "",
    ));
    out.push_str("</div>\n");

    let bars: Vec<Bar> = runs
        .iter()
        .zip(&acc)
        .enumerate()
        .map(|(i, (r, a))| Bar {
            value: a.wape,
            class: "b-neutral",
            mark: None,
            label: x_label(r, i),
            title: match a.wape {
                Some(w) => format!(
                    "{} · WAPE {} over {} steps · MAPE {} · within p80: {} of {}",
                    run_name(r),
                    f::percent(w),
                    a.n,
                    a.mape.map_or_else(|| "–".into(), f::percent),
                    a.within_p80,
                    a.with_p80
                ),
                None => format!("{} · no predictions", run_name(r)),
            },
        })
        .collect();
    let top = acc.iter().filter_map(|a| a.wape).fold(0.0_f64, f64::max);
    out.push_str("<figure id=\"prediction-chart\">");
    out.push_str(&svg::bar_chart(
        "Prediction error (WAPE) of each run, oldest to newest",
        &bars,
        &svg::share_axis(top, "WAPE (lower is better)", false),
        "run start (UTC), oldest → newest",
        None,
    ));
    out.push_str(
        "<figcaption><ul class=\"legend\"><li><span class=\"swatch b-neutral\"></span>WAPE: total absolute \
         error over total actual time</li><li>dashed: no predictions in that run</li></ul></figcaption></figure>\n",
    );

    let _ = writeln!(
        out,
        "<h3>Predicted against actual, run of {}</h3>",
        esc(&run_name(latest))
    );
    let mut preds: Vec<&crate::record::Prediction> = latest.prediction.iter().collect();
    preds.sort_by(|a, b| {
        b.actual_ms
            .cmp(&a.actual_ms)
            .then_with(|| a.job.cmp(&b.job))
    });
    out.push_str(
        "<div class=\"tablewrap\"><table class=\"predictions\"><thead><tr><th>Step</th><th>Model</th>\
         <th class=\"num\">p50</th><th class=\"num\">p80</th><th class=\"num\">Actual</th>\
         <th class=\"num\">Error</th><th>Within p80</th></tr></thead><tbody>\n",
    );
    for p in preds.iter().take(MAX_ROWS) {
        let err = i64::try_from(p.actual_ms).unwrap_or(i64::MAX)
            - i64::try_from(p.p50_ms).unwrap_or(i64::MAX);
        let rel = stats::share_u64(p.actual_ms.abs_diff(p.p50_ms), p.actual_ms)
            .map_or_else(String::new, |r| {
                format!(" <span class=\"zero\">({})</span>", f::percent(r))
            });
        let within = match p.p80_ms {
            Some(p80) if p.actual_ms <= p80 => "<span class=\"badge s-success\">✓ yes</span>",
            Some(_) => "<span class=\"badge s-failed\">✕ no</span>",
            None => "<span class=\"zero\">no p80</span>",
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"brk\"><code>{}</code>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}{}</td><td>{}</td></tr>",
            esc(&p.job),
            if p.cache_hit == Some(true) {
                " <span class=\"zero\">(cache hit)</span>"
            } else {
                ""
            },
            p.model.as_deref().map_or_else(|| "–".into(), esc),
            f::duration(p.p50_ms),
            p.p80_ms.map_or_else(|| "–".into(), f::duration),
            f::duration(p.actual_ms),
            f::signed_duration(err),
            rel,
            within,
        );
    }
    out.push_str("</tbody></table></div>\n");
    more(&mut out, preds.len(), MAX_ROWS, "steps");
    out.push_str("</section>\n");
    out
}

/// Egress denials and allowed totals.
pub(super) fn egress(runs: &[RunRecord]) -> String {
    let mut out = open_section("egress", "Network egress");
    let decisions = runs
        .iter()
        .flat_map(|r| r.egress.iter().map(move |e| (r, e)));
    #[derive(Default)]
    struct Denied<'a> {
        count: usize,
        last: &'a str,
    }
    #[derive(Default)]
    struct Allowed<'a> {
        count: usize,
        jobs: BTreeSet<&'a str>,
        up: u64,
        down: u64,
    }
    let mut denied: BTreeMap<(&str, &str, u16, &str), Denied<'_>> = BTreeMap::new();
    let mut allowed: BTreeMap<(&str, u16), Allowed<'_>> = BTreeMap::new();
    let (mut n_denied, mut n_allowed, mut up, mut down) = (0, 0, 0_u64, 0_u64);
    for (r, e) in decisions {
        if e.allowed {
            n_allowed += 1;
            let a = allowed.entry((&e.host, e.port)).or_default();
            a.count += 1;
            a.jobs.insert(&e.job);
            a.up = a.up.saturating_add(e.bytes_up.unwrap_or(0));
            a.down = a.down.saturating_add(e.bytes_down.unwrap_or(0));
            up = up.saturating_add(e.bytes_up.unwrap_or(0));
            down = down.saturating_add(e.bytes_down.unwrap_or(0));
        } else {
            n_denied += 1;
            let d = denied
                .entry((&e.job, &e.host, e.port, e.reason.as_deref().unwrap_or("")))
                .or_default();
            d.count += 1;
            d.last = &r.started_at;
        }
    }
    if n_denied + n_allowed == 0 {
        out.push_str(&empty(
            "egress decisions",
            "Steps with <code>network = \"allowlist\"</code> reach the network only through the egress \
             proxy, which records every connection it allows or denies.",
        ));
        out.push_str("</section>\n");
        return out;
    }
    out.push_str("<div class=\"cards\">");
    out.push_str(&card(
        &n_denied.to_string(),
        "denied",
        "connections refused by the proxy",
        if n_denied > 0 { "bad" } else { "good" },
    ));
    out.push_str(&card(
        &n_allowed.to_string(),
        "allowed",
        &format!(
            "to {} {}",
            allowed.len(),
            plural(allowed.len(), "destination", "destinations")
        ),
        "",
    ));
    out.push_str(&card(
        &f::bytes(up),
        "sent",
        "through allowed connections",
        "",
    ));
    out.push_str(&card(
        &f::bytes(down),
        "received",
        "through allowed connections",
        "",
    ));
    out.push_str("</div>\n<h3>Denied</h3>\n");
    if denied.is_empty() {
        out.push_str("<p class=\"note\">No connection was denied in the shown runs.</p>\n");
    } else {
        let mut rows: Vec<_> = denied.into_iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        out.push_str(
            "<div class=\"tablewrap\"><table class=\"denials\"><thead><tr><th>Job</th><th>Destination</th>\
             <th>Reason</th><th class=\"num\">Count</th><th>Last seen</th></tr></thead><tbody>\n",
        );
        for ((job, host, port, reason), d) in rows.iter().take(MAX_ROWS) {
            let _ = writeln!(
                out,
                "<tr><td class=\"brk\"><code>{}</code></td><td class=\"brk\"><code>{}:{port}</code></td>\
                 <td class=\"brk\">{}</td>{}<td class=\"when\">{}</td></tr>",
                esc(job),
                esc(host),
                if reason.is_empty() {
                    "–".into()
                } else {
                    esc(reason)
                },
                num(d.count),
                esc(&f::when(d.last)),
            );
        }
        out.push_str("</tbody></table></div>\n");
        more(&mut out, rows.len(), MAX_ROWS, "denials");
    }
    if !allowed.is_empty() {
        let mut rows: Vec<_> = allowed.into_iter().collect();
        rows.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        out.push_str(
            "<h3>Allowed</h3>\n<div class=\"tablewrap\"><table class=\"allowed\"><thead><tr><th>Destination</th>\
             <th>Jobs</th><th class=\"num\">Connections</th><th class=\"num\">Sent</th>\
             <th class=\"num\">Received</th></tr></thead><tbody>\n",
        );
        for ((host, port), a) in rows.iter().take(MAX_ROWS) {
            let jobs: Vec<String> = a.jobs.iter().map(|j| esc(j)).collect();
            let _ = writeln!(
                out,
                "<tr><td class=\"brk\"><code>{}:{port}</code></td><td class=\"brk\">{}</td>{}\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(host),
                jobs.join(", "),
                num(a.count),
                f::bytes(a.up),
                f::bytes(a.down),
            );
        }
        out.push_str("</tbody></table></div>\n");
        more(&mut out, rows.len(), MAX_ROWS, "destinations");
    }
    out.push_str("</section>\n");
    out
}

/// The findings of the latest failed runs.
pub(super) fn autopsy(runs: &[RunRecord]) -> String {
    let mut out = open_section("autopsy", "Failure autopsy");
    let with: Vec<&RunRecord> = runs
        .iter()
        .rev()
        .filter(|r| {
            r.autopsy
                .as_ref()
                .is_some_and(|a| !a.root_causes.is_empty())
        })
        .take(AUTOPSY_RUNS)
        .collect();
    if with.is_empty() {
        out.push_str(&empty(
            "failure findings",
            "When a step fails, its log is classified and the findings (tool, place, suggestion, \
             how to rerun it) are stored in the run's <code>autopsy</code>.",
        ));
        out.push_str("</section>\n");
        return out;
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">What the logs of failed steps say went wrong, for the {} newest {} with findings.</p>",
        with.len(),
        plural(with.len(), "run", "runs")
    );
    for r in with {
        let _ = write!(
            out,
            "<article class=\"autopsy-run\"><h3>{} Run of {}",
            badge(r.status),
            esc(&run_name(r))
        );
        if let Some(sha) = &r.commit_sha {
            let _ = write!(
                out,
                " at <code title=\"{}\">{}</code>",
                esc(sha),
                esc(f::short_sha(sha))
            );
        }
        out.push_str("</h3>\n");
        for c in r.autopsy.iter().flat_map(|a| &a.root_causes) {
            let sev = c.severity.as_deref().unwrap_or("warn");
            let sev_class = match sev {
                "error" => "sev-error",
                "info" => "sev-info",
                _ => "sev-warn",
            };
            let _ = write!(
                out,
                "<div class=\"finding {sev_class}\"><div class=\"fhead\"><span class=\"sev\">{}</span>",
                esc(sev)
            );
            let mut head: Vec<String> = Vec::new();
            if let Some(job) = &c.job {
                head.push(format!("<strong><code>{}</code></strong>", esc(job)));
            }
            if let Some(tool) = &c.tool {
                head.push(esc(tool));
            }
            if let Some(file) = &c.file {
                head.push(match c.line {
                    Some(l) => format!("<code>{}:{l}</code>", esc(file)),
                    None => format!("<code>{}</code>", esc(file)),
                });
            }
            if let Some(rule) = &c.rule {
                head.push(format!("<span class=\"zero\">rule {}</span>", esc(rule)));
            }
            out.push_str(&head.join(" · "));
            out.push_str("</div>\n");
            let msg = c.message.as_deref().unwrap_or(&c.pattern);
            let _ = write!(
                out,
                "<pre class=\"msg\">{}</pre><p class=\"suggestion\">{}</p>",
                esc(msg),
                f::esc_inline_code(&c.suggestion)
            );
            let mut links: Vec<String> = Vec::new();
            if let Some(d) = &c.docs_uri {
                links.push(format!("docs: {}", link(d, d)));
            }
            let log = c
                .job
                .as_ref()
                .and_then(|j| r.jobs.iter().find(|x| &x.id == j))
                .and_then(|j| j.logs_uri.as_deref());
            if let Some(l) = log {
                links.push(format!("log: {}", link(l, l)));
            }
            if let Some(rp) = &c.repro {
                links.push(format!("rerun: <code class=\"repro\">{}</code>", esc(rp)));
            }
            if !links.is_empty() {
                let _ = write!(out, "<p class=\"links\">{}</p>", links.join(" · "));
            }
            out.push_str("</div>\n");
        }
        out.push_str("</article>\n");
    }
    out.push_str("</section>\n");
    out
}

/// Determinism verdicts.
pub(super) fn determinism(runs: &[RunRecord]) -> String {
    let mut out = open_section("determinism", "Determinism");
    let rows: Vec<(&RunRecord, &crate::record::DeterminismVerdict)> = runs
        .iter()
        .rev()
        .flat_map(|r| r.determinism.iter().map(move |v| (r, v)))
        .collect();
    if rows.is_empty() {
        out.push_str(&empty(
            "determinism verdicts",
            "<code>ci-intel run --verify-determinism</code> runs checked steps a second time under \
             varied conditions and records whether their outputs match.",
        ));
        out.push_str("</section>\n");
        return out;
    }
    let count = |v: &str| rows.iter().filter(|(_, d)| d.verdict == v).count();
    let drift = count("drift");
    out.push_str("<div class=\"cards\">");
    out.push_str(&card(
        &count("reproducible").to_string(),
        "reproducible",
        "identical outputs on the second run",
        "",
    ));
    out.push_str(&card(
        &drift.to_string(),
        "drift",
        "outputs differed",
        if drift > 0 { "bad" } else { "good" },
    ));
    out.push_str(&card(
        &count("not_checked").to_string(),
        "not checked",
        "could not be compared",
        "",
    ));
    out.push_str("</div>\n");
    out.push_str(
        "<div class=\"tablewrap\"><table class=\"determinism\"><thead><tr><th>Run</th><th>Job</th>\
         <th>Verdict</th><th>Cause</th><th class=\"num\">Differing files</th><th>Report</th></tr></thead><tbody>\n",
    );
    for (r, v) in rows.iter().take(MAX_ROWS) {
        let verdict = match v.verdict.as_str() {
            "reproducible" => "<span class=\"badge s-success\">✓ reproducible</span>".to_string(),
            "drift" => "<span class=\"badge s-failed\">≠ drift</span>".to_string(),
            other => format!("<span class=\"badge s-neutral\">{}</span>", esc(other)),
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"when\">{}</td><td class=\"brk\"><code>{}</code></td><td>{verdict}</td>\
             <td class=\"brk\">{}</td><td class=\"num\">{}</td><td class=\"brk\">{}</td></tr>",
            esc(&f::when(&r.started_at)),
            esc(&v.job),
            v.cause.as_deref().map_or_else(|| "–".into(), esc),
            v.differing_files.map_or_else(|| "–".into(), f::count),
            v.report_path
                .as_deref()
                .map_or_else(|| "–".into(), |p| format!("<code>{}</code>", esc(p))),
        );
    }
    out.push_str("</tbody></table></div>\n");
    more(&mut out, rows.len(), MAX_ROWS, "verdicts");
    out.push_str("</section>\n");
    out
}

/// Chaos trials.
pub(super) fn chaos(runs: &[RunRecord]) -> String {
    let mut out = open_section("chaos", "Chaos trials");
    let rows: Vec<(&RunRecord, &crate::record::ChaosTrial)> = runs
        .iter()
        .rev()
        .flat_map(|r| r.chaos.iter().map(move |t| (r, t)))
        .collect();
    if rows.is_empty() {
        out.push_str(&empty(
            "chaos trials",
            "<code>ci-intel run --chaos SPEC</code> and <code>ci-intel chaos night PLAN</code> inject \
             faults into steps and record whether the run recovered.",
        ));
        out.push_str("</section>\n");
        return out;
    }
    let count = |o: &str| rows.iter().filter(|(_, t)| t.outcome == o).count();
    let failed = count("failed");
    out.push_str("<div class=\"cards\">");
    out.push_str(&card(
        &count("recovered").to_string(),
        "recovered",
        "the job succeeded after the fault",
        "",
    ));
    out.push_str(&card(
        &count("degraded").to_string(),
        "degraded",
        "failed cleanly where the plan gave it no way to recover",
        "",
    ));
    out.push_str(&card(
        &failed.to_string(),
        "failed",
        "a recovery path that should have held did not",
        if failed > 0 { "bad" } else { "good" },
    ));
    out.push_str("</div>\n");
    out.push_str(
        "<div class=\"tablewrap\"><table class=\"chaos\"><thead><tr><th>Run</th><th>Fault</th><th>Target</th>\
         <th>Outcome</th><th class=\"num\">Retries</th><th class=\"num\">Recovery</th><th>Detail</th></tr></thead><tbody>\n",
    );
    for (r, t) in rows.iter().take(MAX_ROWS) {
        let outcome = match t.outcome.as_str() {
            "recovered" => "<span class=\"badge s-success\">✓ recovered</span>".to_string(),
            "degraded" => "<span class=\"badge s-canceled\">~ degraded</span>".to_string(),
            "failed" => "<span class=\"badge s-failed\">✕ failed</span>".to_string(),
            other => format!("<span class=\"badge s-neutral\">{}</span>", esc(other)),
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"when\">{}</td><td><code>{}</code></td><td class=\"brk\"><code>{}</code></td>\
             <td>{outcome}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"brk\">{}</td></tr>",
            esc(&f::when(&r.started_at)),
            esc(&t.fault),
            esc(&t.target),
            t.retries.map_or_else(|| "–".into(), |n| n.to_string()),
            t.recovery_ms.map_or_else(|| "–".into(), f::duration),
            t.detail.as_deref().map_or_else(|| "–".into(), esc),
        );
    }
    out.push_str("</tbody></table></div>\n");
    more(&mut out, rows.len(), MAX_ROWS, "trials");
    out.push_str("</section>\n");
    out
}

/// One figure of the metrics dictionary.
fn metric(
    out: &mut String,
    id: &str,
    name: &str,
    figure: Option<String>,
    none: &str,
    def: &str,
    basis: &str,
) {
    let fig = match figure {
        Some(v) => format!("<dd class=\"figure\">{v}</dd>"),
        None => format!("<dd class=\"figure none\">{none}</dd>"),
    };
    let _ = writeln!(
        out,
        "<div class=\"metric\" id=\"metric-{id}\"><dt>{name}</dt>{fig}<dd class=\"def\">{def}</dd>\
         <dd class=\"basis\">{basis}</dd></div>"
    );
}

/// The metrics dictionary over the shown runs.
pub(super) fn metrics(runs: &[RunRecord]) -> String {
    let mut out = open_section("metrics", "Metrics");
    let _ = writeln!(
        out,
        "<p class=\"note\">Computed over the {} shown {}.</p><dl class=\"metrics\">",
        runs.len(),
        plural(runs.len(), "run", "runs")
    );

    let flake = stats::flake_index(runs);
    metric(
        &mut out,
        "flake-index",
        "Flake index",
        flake.map(|fl| f::percent(fl.index)),
        "no jobs ran",
        "Share of jobs that failed and then passed on a retry: jobs with attempt &gt; 1 that \
         succeeded, over jobs that ran (not skipped).",
        &flake.map_or_else(String::new, |fl| {
            format!("{} of {} jobs", fl.flaky, fl.jobs)
        }),
    );

    let m = stats::mttr(runs);
    let mut basis = match m.recoveries {
        0 => String::new(),
        n => format!("{n} {}", plural(n, "recovery", "recoveries")),
    };
    if m.still_failing > 0 {
        if !basis.is_empty() {
            basis.push_str("; ");
        }
        let _ = write!(
            basis,
            "{} {} still failing",
            m.still_failing,
            plural(m.still_failing, "plan", "plans")
        );
    }
    metric(
        &mut out,
        "mttr",
        "MTTR (mean time to recovery)",
        m.mean_ms.map(f::duration),
        "no failed run was followed by a success",
        "Mean time from the end of a plan's first failed run to the end of its next successful \
         run (a streak of failures counts once; canceled runs are ignored).",
        &basis,
    );

    let cost = stats::mean_present(runs.iter().map(|r| r.cost.usd));
    metric(
        &mut out,
        "cost",
        "Cost per run",
        cost.map(|(v, _)| f::usd(v)),
        "not configured",
        "Mean of <code>cost.usd</code>: the runner class's rate per minute times the run's wall time.",
        &cost.map_or_else(
            || "no run was priced: configure a rate for the runner class".into(),
            |(_, n)| format!("{n} of {} runs priced", runs.len()),
        ),
    );

    let carbon = stats::mean_present(runs.iter().map(|r| r.carbon_g_co2e));
    metric(
        &mut out,
        "carbon",
        "Carbon per run",
        carbon.map(|(v, _)| format!("{v:.1} g CO₂e")),
        "not configured",
        "Mean of <code>carbon_g_co2e</code>: energy used times the configured grid intensity.",
        &carbon.map_or_else(
            || "no run recorded emissions: configure an energy rate".into(),
            |(_, n)| format!("{n} of {} runs measured", runs.len()),
        ),
    );

    let res = runs
        .iter()
        .rev()
        .find_map(|r| r.tests.resilience.as_ref().map(|x| (r, x)));
    metric(
        &mut out,
        "resilience",
        "Resilience (mutation score)",
        res.map(|(_, x)| f::percent(x.score)),
        "no mutation testing recorded",
        "The latest <code>tests.resilience.score</code>: mutants the tests caught over mutants that \
         can be caught (killed / (total − equivalent)).",
        &res.map_or_else(
            || "a step that produces a mutation-testing report adds it".into(),
            |(r, x)| {
                format!(
                    "{} of {} mutants killed, run of {}",
                    x.killed,
                    x.mutants_total,
                    esc(&f::when(&r.started_at))
                )
            },
        ),
    );
    out.push_str("</dl>\n</section>\n");
    out
}
