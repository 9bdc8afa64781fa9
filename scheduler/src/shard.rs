//! CI shards: the selected steps split over N runners by predicted duration ([`split`]).

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::time::Duration;

use crate::graph::Selection;
use crate::plan::Plan;

/// The most shards a plan can be split into.
pub const MAX_SHARDS: usize = 1024;

/// The imbalance, in percent, above which components are split.
const SPLIT_ABOVE_PERCENT: u128 = 5;

/// Why a plan could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Zero shards were asked for.
    #[error("the number of shards must be at least 1")]
    NoShards,
    /// More than [`MAX_SHARDS`] shards were asked for.
    #[error("{shards} shards are more than the {max} supported")]
    TooManyShards {
        /// The number asked for.
        shards: usize,
        /// [`MAX_SHARDS`].
        max: usize,
    },
    /// The estimates do not match the plan's steps one for one.
    #[error("{found} duration estimates for a plan of {expected} steps")]
    Estimates {
        /// The plan's number of steps.
        expected: usize,
        /// The number of estimates given.
        found: usize,
    },
}

/// One shard: steps one runner runs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Shard {
    /// Step indices into [`Plan::steps`], in plan order. Empty when there is less work
    /// than shards.
    pub steps: Vec<usize>,
    /// The sum of its steps' estimates.
    pub predicted: Duration,
}

impl Shard {
    /// True when the shard has no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The selected steps of a plan split into shards ([`split`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharding {
    /// The shards; the first is shard 1 of N.
    pub shards: Vec<Shard>,
    /// The longest chain of selected steps by estimate: no split finishes sooner.
    pub critical_path: Duration,
}

impl Sharding {
    /// The predicted time of the slowest shard.
    pub fn makespan(&self) -> Duration {
        self.shards
            .iter()
            .map(|s| s.predicted)
            .max()
            .unwrap_or_default()
    }

    /// The slowest shard's predicted time over the mean, minus one: 0 when all are equal
    /// (or there is nothing to do), 0.05 when the slowest is 5% above the mean.
    pub fn imbalance(&self) -> f64 {
        let total: Duration = self.shards.iter().map(|s| s.predicted).sum();
        if total.is_zero() {
            return 0.0;
        }
        let mean = total.as_secs_f64() / self.shards.len() as f64;
        self.makespan().as_secs_f64() / mean - 1.0
    }

    /// The selection that runs shard `index` (0-based), or `None` when there is no such
    /// shard.
    pub fn selection(&self, plan: &Plan, index: usize) -> Option<Selection> {
        let shard = self.shards.get(index)?;
        let mut selected = vec![false; plan.steps.len()];
        for &i in &shard.steps {
            selected[i] = true;
        }
        Some(Selection::from_flags(selected))
    }
}

/// Splits the selected steps of `plan` into `shards` shards; `estimates[i]` is the
/// predicted duration of step `i`.
///
/// Every selected step is on at least one shard, and every shard holds the selected needs
/// of its steps, so each runner can run its shard on its own. The split is a pure function
/// of its arguments: every runner that computes it from the same estimates gets the same
/// shards.
///
/// How: the selected steps fall into weakly connected components, which are placed whole,
/// heaviest first, each on the least-loaded shard (LPT, longest processing time first).
/// A component is split when it is heavier than the ideal share (total / N), or when the
/// shards are more than 5% out of balance and it sits on the slowest one: its sinks (the
/// steps nothing in the component needs) are then placed like components, each with the
/// transitive closure of its needs, on the shard where the load after adding what that
/// shard does not hold yet is lowest. A step needed by sinks on several shards runs on each
/// of them and is costed on each (when the shards run at once, each builds it). A split is
/// kept only when it lowers the predicted time of the slowest shard. Ties go to the smaller
/// step id, then the lower shard number.
pub fn split(
    plan: &Plan,
    selection: &Selection,
    estimates: &[Duration],
    shards: usize,
) -> Result<Sharding, ShardError> {
    if shards == 0 {
        return Err(ShardError::NoShards);
    }
    if shards > MAX_SHARDS {
        return Err(ShardError::TooManyShards {
            shards,
            max: MAX_SHARDS,
        });
    }
    if estimates.len() != plan.steps.len() {
        return Err(ShardError::Estimates {
            expected: plan.steps.len(),
            found: estimates.len(),
        });
    }
    let graph = Graph::new(plan, selection, estimates);
    let components = graph.components();
    let total: Duration = components.iter().map(|c| c.cost).sum();

    // Components are split one at a time, heaviest first, while it helps.
    let mut split = vec![false; components.len()];
    let mut tried = vec![false; components.len()];
    // The closure cost of each sink of each component tried, computed once.
    let mut sink_costs: Vec<Vec<Duration>> = vec![Vec::new(); components.len()];
    let mut memo = ClosureCosts {
        steps: vec![None; plan.steps.len()],
        needs: HashMap::new(),
    };
    let mut walker = Walker::new(plan.steps.len());
    let mut best = graph.assign(&components, &split, &sink_costs, shards, &mut walker);
    loop {
        let heavy = components.iter().position(|c| {
            c.splittable()
                && !tried[c.index]
                && c.cost.as_nanos() * shards as u128 > total.as_nanos()
        });
        let candidate = heavy.or_else(|| {
            if !best.imbalanced() {
                return None;
            }
            let slowest = best.slowest();
            components.iter().position(|c| {
                c.splittable() && !tried[c.index] && best.placed[c.index] == Some(slowest)
            })
        });
        let Some(c) = candidate else { break };
        tried[c] = true;
        split[c] = true;
        sink_costs[c] = components[c]
            .sinks
            .iter()
            .map(|&sink| graph.closure_cost(sink, &mut memo, &mut walker))
            .collect();
        let next = graph.assign(&components, &split, &sink_costs, shards, &mut walker);
        if next.makespan() < best.makespan() {
            best = next;
        } else {
            split[c] = false;
        }
    }

    let mut out = vec![Shard::default(); shards];
    for (step, holders) in best.holders.iter().enumerate() {
        for &s in holders {
            out[s].steps.push(step);
        }
    }
    for (shard, load) in out.iter_mut().zip(&best.loads) {
        shard.predicted = *load;
    }
    Ok(Sharding {
        shards: out,
        critical_path: graph.critical_path(plan),
    })
}

/// The selected part of the plan.
struct Graph<'a> {
    ids: Vec<&'a str>,
    selected: Vec<bool>,
    /// The selected needs of every selected step in one array, so that walks along needs
    /// read memory mostly in order: step `i`'s are from `starts[i]` to `starts[i + 1]`.
    needs: Vec<usize>,
    starts: Vec<usize>,
    /// Selected steps that need each selected step.
    dependents: Vec<Vec<usize>>,
    estimates: &'a [Duration],
}

/// Closure costs found so far ([`Graph::closure_cost`]): a closure's cost does not depend
/// on the shards.
struct ClosureCosts<'g> {
    /// Of each step's closure.
    steps: Vec<Option<Duration>>,
    /// Of the closures of a list of needs (of a step with several) together.
    needs: HashMap<&'g [usize], Duration>,
}

/// A weakly connected component of the selected steps.
struct Component<'a> {
    /// Its position in the list of components (heaviest first).
    index: usize,
    /// Its steps, in plan order.
    steps: Vec<usize>,
    /// Its steps that nothing in it needs, in plan order.
    sinks: Vec<usize>,
    /// The sum of its steps' estimates.
    cost: Duration,
    /// Its smallest step id, for ties.
    key: &'a str,
}

impl Component<'_> {
    /// Whether splitting it can change anything: it has more than one sink.
    fn splittable(&self) -> bool {
        self.sinks.len() > 1
    }
}

/// What is placed on a shard in one piece.
enum Item {
    /// A whole component (by index).
    Whole(usize),
    /// A sink of a split component and the closure of its needs.
    Sink { component: usize, step: usize },
}

/// One assignment of steps to shards.
struct Assignment {
    /// The shards holding each step (ascending).
    holders: Vec<Vec<usize>>,
    /// The predicted time of each shard.
    loads: Vec<Duration>,
    /// The shard of each component placed whole.
    placed: Vec<Option<usize>>,
}

impl Assignment {
    fn makespan(&self) -> Duration {
        self.loads.iter().copied().max().unwrap_or_default()
    }

    /// The slowest shard; the lowest-numbered one among equals.
    fn slowest(&self) -> usize {
        let max = self.makespan();
        self.loads.iter().position(|&l| l == max).unwrap_or(0)
    }

    /// Whether the slowest shard is more than [`SPLIT_ABOVE_PERCENT`] above the mean,
    /// computed exactly on nanoseconds.
    fn imbalanced(&self) -> bool {
        let sum: u128 = self.loads.iter().map(Duration::as_nanos).sum();
        let n = self.loads.len() as u128;
        self.makespan().as_nanos() * n * 100 > sum * (100 + SPLIT_ABOVE_PERCENT)
    }
}

impl<'a> Graph<'a> {
    fn new(plan: &'a Plan, selection: &Selection, estimates: &'a [Duration]) -> Graph<'a> {
        let n = plan.steps.len();
        let selected: Vec<bool> = (0..n).map(|i| selection.contains(i)).collect();
        let mut needs = Vec::new();
        let mut starts = Vec::with_capacity(n + 1);
        starts.push(0);
        let mut dependents = vec![Vec::new(); n];
        for (i, step) in plan.steps.iter().enumerate() {
            let start = needs.len();
            if selected[i] {
                for &d in &step.needs {
                    if selected[d] && !needs[start..].contains(&d) {
                        needs.push(d);
                        dependents[d].push(i);
                    }
                }
            }
            starts.push(needs.len());
        }
        Graph {
            ids: plan.steps.iter().map(|s| s.id.as_str()).collect(),
            selected,
            needs,
            starts,
            dependents,
            estimates,
        }
    }

    /// The selected needs of step `i`.
    fn needs(&self, i: usize) -> &[usize] {
        &self.needs[self.starts[i]..self.starts[i + 1]]
    }

    /// The weakly connected components of the selected steps, heaviest first; among
    /// equals, the one with the smaller least step id first.
    fn components(&self) -> Vec<Component<'a>> {
        let n = self.ids.len();
        let mut seen = vec![false; n];
        let mut out = Vec::new();
        let mut stack = Vec::new();
        for start in 0..n {
            if !self.selected[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let mut steps = Vec::new();
            while let Some(i) = stack.pop() {
                steps.push(i);
                for &j in self.needs(i).iter().chain(&self.dependents[i]) {
                    if !std::mem::replace(&mut seen[j], true) {
                        stack.push(j);
                    }
                }
            }
            steps.sort_unstable();
            let sinks = steps
                .iter()
                .copied()
                .filter(|&i| self.dependents[i].is_empty())
                .collect();
            let cost = steps.iter().map(|&i| self.estimates[i]).sum();
            let key = steps.iter().map(|&i| self.ids[i]).min().unwrap_or_default();
            out.push(Component {
                index: 0,
                steps,
                sinks,
                cost,
                key,
            });
        }
        out.sort_by(|a, b| b.cost.cmp(&a.cost).then_with(|| a.key.cmp(b.key)));
        for (index, c) in out.iter_mut().enumerate() {
            c.index = index;
        }
        out
    }

    /// The cost of `step`'s closure (the step and what it needs, transitively).
    ///
    /// A step costs itself plus the closure of its needs. With a single need that is the
    /// need's closure, so chains are summed once; the closure of several needs is walked
    /// once for each list of needs. `memo` keeps every cost found.
    fn closure_cost<'g>(
        &'g self,
        step: usize,
        memo: &mut ClosureCosts<'g>,
        walker: &mut Walker,
    ) -> Duration {
        let mut chain = Vec::new();
        let mut i = step;
        let mut cost = loop {
            if let Some(cost) = memo.steps[i] {
                break cost;
            }
            chain.push(i);
            match *self.needs(i) {
                [] => break Duration::ZERO,
                [need] => i = need,
                ref needs => {
                    break *memo.needs.entry(needs).or_insert_with(|| {
                        self.missing_cost(i, |_| false, walker, Duration::MAX) - self.estimates[i]
                    });
                }
            }
        };
        for &j in chain.iter().rev() {
            cost += self.estimates[j];
            memo.steps[j] = Some(cost);
        }
        cost
    }

    /// Calls `f` on every step of `sink`'s closure (the sink and what it needs,
    /// transitively) that is not `held`, until `f` breaks. What a shard holds is closed
    /// under needs, so the walk stops at a step it holds.
    fn missing_from(
        &self,
        sink: usize,
        held: impl Fn(usize) -> bool,
        walker: &mut Walker,
        mut f: impl FnMut(usize) -> ControlFlow<()>,
    ) {
        if held(sink) {
            return;
        }
        walker.start();
        walker.visit(sink);
        let mut stack = std::mem::take(&mut walker.stack);
        stack.push(sink);
        while let Some(i) = stack.pop() {
            if f(i).is_break() {
                stack.clear();
                break;
            }
            for &d in self.needs(i) {
                if !held(d) && walker.visit(d) {
                    stack.push(d);
                }
            }
        }
        walker.stack = stack;
    }

    /// The sum of the estimates of the steps of `sink`'s closure that are not `held`, or
    /// some duration above `cap` once the sum is known to exceed it.
    fn missing_cost(
        &self,
        sink: usize,
        held: impl Fn(usize) -> bool,
        walker: &mut Walker,
        cap: Duration,
    ) -> Duration {
        let mut cost = Duration::ZERO;
        self.missing_from(sink, held, walker, |i| {
            cost += self.estimates[i];
            if cost > cap {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        cost
    }

    /// LPT over whole components and the sinks of the components marked in `split`, whose
    /// closure costs are in `sink_costs` (in the order of [`Component::sinks`]).
    fn assign(
        &self,
        components: &[Component<'a>],
        split: &[bool],
        sink_costs: &[Vec<Duration>],
        shards: usize,
        walker: &mut Walker,
    ) -> Assignment {
        let mut items: Vec<(Duration, &str, Item)> = Vec::new();
        for c in components {
            if split[c.index] {
                for (&sink, &cost) in c.sinks.iter().zip(&sink_costs[c.index]) {
                    items.push((
                        cost,
                        self.ids[sink],
                        Item::Sink {
                            component: c.index,
                            step: sink,
                        },
                    ));
                }
            } else {
                items.push((c.cost, c.key, Item::Whole(c.index)));
            }
        }
        items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));

        let mut a = Assignment {
            holders: vec![Vec::new(); self.ids.len()],
            loads: Vec::new(),
            placed: vec![None; components.len()],
        };
        let mut loads = Loads::new(shards);
        // The shards holding some step of each split component, ascending.
        let mut touched: Vec<Vec<usize>> = vec![Vec::new(); components.len()];
        let mut added = Vec::new();
        for (cost, _, item) in items {
            match item {
                Item::Whole(c) => {
                    let s = loads.least(|_, _| Duration::ZERO);
                    for &i in &components[c].steps {
                        a.holders[i].push(s);
                    }
                    loads.add(s, cost);
                    a.placed[c] = Some(s);
                }
                Item::Sink { component, step } => {
                    let holders = &a.holders;
                    let held_by = |s: usize| move |i: usize| holders[i].binary_search(&s).is_ok();
                    // A shard holding nothing of the component would take the whole
                    // closure; one holding part of it, only what it lacks.
                    let marginal = |s: usize, cap: Duration| {
                        if touched[component].binary_search(&s).is_err() {
                            return cost;
                        }
                        self.missing_cost(step, held_by(s), walker, cap)
                    };
                    let s = loads.least(marginal);
                    self.missing_from(step, held_by(s), walker, |i| {
                        added.push(i);
                        ControlFlow::Continue(())
                    });
                    let mut load = Duration::ZERO;
                    for i in added.drain(..) {
                        if let Err(at) = a.holders[i].binary_search(&s) {
                            a.holders[i].insert(at, s);
                        }
                        load += self.estimates[i];
                    }
                    loads.add(s, load);
                    if let Err(at) = touched[component].binary_search(&s) {
                        touched[component].insert(at, s);
                    }
                }
            }
        }
        a.loads = loads.loads;
        a
    }

    /// The longest chain of selected steps, by estimate.
    fn critical_path(&self, plan: &Plan) -> Duration {
        let mut longest = vec![Duration::ZERO; self.ids.len()];
        for &i in plan.topo.iter().filter(|&&i| self.selected[i]) {
            let before = self
                .needs(i)
                .iter()
                .map(|&d| longest[d])
                .max()
                .unwrap_or_default();
            longest[i] = before + self.estimates[i];
        }
        longest.into_iter().max().unwrap_or_default()
    }
}

/// Scratch space for walks over the steps: a mark per step, stamped with the number of the
/// walk that reached it, so a walk neither allocates nor clears anything.
struct Walker {
    marks: Vec<u32>,
    walk: u32,
    stack: Vec<usize>,
}

impl Walker {
    fn new(steps: usize) -> Walker {
        Walker {
            marks: vec![0; steps],
            walk: 0,
            stack: Vec::new(),
        }
    }

    /// Starts a walk: no step is visited yet.
    fn start(&mut self) {
        self.walk = self.walk.wrapping_add(1);
        if self.walk == 0 {
            self.marks.fill(0);
            self.walk = 1;
        }
    }

    /// Marks step `i` visited in this walk; false when it already was.
    fn visit(&mut self, i: usize) -> bool {
        std::mem::replace(&mut self.marks[i], self.walk) != self.walk
    }
}

/// The predicted time of each shard, and the shards in order of it.
struct Loads {
    loads: Vec<Duration>,
    /// `(load, shard)`, ascending.
    order: BTreeSet<(Duration, usize)>,
}

impl Loads {
    fn new(shards: usize) -> Loads {
        Loads {
            loads: vec![Duration::ZERO; shards],
            order: (0..shards).map(|s| (Duration::ZERO, s)).collect(),
        }
    }

    /// Adds `more` to the load of `shard`.
    fn add(&mut self, shard: usize, more: Duration) {
        let load = &mut self.loads[shard];
        self.order.remove(&(*load, shard));
        *load += more;
        self.order.insert((*load, shard));
    }

    /// The shard whose load plus `extra(shard, cap)` is least; the lowest-numbered among
    /// equals. `extra` may return any duration above `cap` once it knows its result exceeds
    /// `cap`: that shard cannot be the one.
    ///
    /// Shards are tried from the least loaded up, and the search stops at the first shard
    /// whose load alone is no better than the best found, so `extra` is not called for
    /// shards that cannot win.
    fn least(&self, mut extra: impl FnMut(usize, Duration) -> Duration) -> usize {
        let mut best: Option<(Duration, usize)> = None;
        for &(load, s) in &self.order {
            let cap = match best {
                None => Duration::MAX,
                Some(best) if (load, s) >= best => break,
                // Ties go to the lower shard number.
                Some((after, b)) if s < b => after - load,
                Some((after, _)) => after - load - Duration::from_nanos(1),
            };
            let after = (load + extra(s, cap), s);
            if best.is_none_or(|best| after < best) {
                best = Some(after);
            }
        }
        best.map_or(0, |(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    /// A plan of `(id, needs)` steps that all run `true`.
    fn plan(steps: &[(&str, &[&str])]) -> Plan {
        let mut text = String::from("version = 1\nname = \"p\"\n");
        for (id, needs) in steps {
            let needs: Vec<String> = needs.iter().map(|n| format!("\"{n}\"")).collect();
            let _ = write!(
                text,
                "\n[steps.{id}]\nrun = \"true\"\nneeds = [{}]\n",
                needs.join(", ")
            );
        }
        crate::parse_plan(Path::new("plan.toml"), &text).expect("a valid plan")
    }

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().copied().map(Duration::from_secs).collect()
    }

    /// Each shard's step ids.
    fn ids(plan: &Plan, sharding: &Sharding) -> Vec<Vec<String>> {
        sharding
            .shards
            .iter()
            .map(|s| s.steps.iter().map(|&i| plan.steps[i].id.clone()).collect())
            .collect()
    }

    /// Every selected step is on a shard, and each shard holds the needs of its steps.
    fn assert_covered_and_closed(plan: &Plan, selection: &Selection, sharding: &Sharding) {
        for i in (0..plan.steps.len()).filter(|&i| selection.contains(i)) {
            assert!(
                sharding.shards.iter().any(|s| s.steps.contains(&i)),
                "step {} is on no shard: {sharding:?}",
                plan.steps[i].id
            );
        }
        for (k, shard) in sharding.shards.iter().enumerate() {
            for &i in &shard.steps {
                assert!(selection.contains(i), "shard {k} has unselected step {i}");
                for &d in &plan.steps[i].needs {
                    assert!(
                        shard.steps.contains(&d),
                        "shard {k} has {} but not its need {}",
                        plan.steps[i].id,
                        plan.steps[d].id
                    );
                }
            }
            assert!(shard.steps.windows(2).all(|w| w[0] < w[1]), "plan order");
        }
    }

    #[test]
    fn independent_equal_steps_split_evenly() {
        let p = plan(&[
            ("a", &[]),
            ("b", &[]),
            ("c", &[]),
            ("d", &[]),
            ("e", &[]),
            ("f", &[]),
        ]);
        let s = split(&p, &Selection::all(&p), &secs(&[2; 6]), 3).unwrap();
        assert_eq!(ids(&p, &s), [["a", "d"], ["b", "e"], ["c", "f"]]);
        assert!(
            s.shards
                .iter()
                .all(|s| s.predicted == Duration::from_secs(4))
        );
        assert_eq!(s.imbalance(), 0.0);
        assert_eq!(s.critical_path, Duration::from_secs(2));
        assert_covered_and_closed(&p, &Selection::all(&p), &s);
    }

    #[test]
    fn heaviest_components_go_first_each_on_the_least_loaded_shard() {
        let p = plan(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[]), ("e", &[])]);
        // LPT: b 7 → 1, d 5 → 2, c 4 → 2 (5 < 7), a 3 → 1 (7 < 9), e 1 → 2 (9 < 10).
        let s = split(&p, &Selection::all(&p), &secs(&[3, 7, 4, 5, 1]), 2).unwrap();
        assert_eq!(ids(&p, &s), [vec!["a", "b"], vec!["c", "d", "e"]]);
        assert_eq!(
            s.shards.iter().map(|s| s.predicted).collect::<Vec<_>>(),
            secs(&[10, 10])
        );
    }

    #[test]
    fn a_chain_stays_on_one_shard() {
        let p = plan(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &["c"])]);
        let s = split(&p, &Selection::all(&p), &secs(&[5, 5, 5, 5]), 3).unwrap();
        assert_eq!(
            ids(&p, &s),
            [vec!["a", "b", "c", "d"], Vec::<&str>::new(), vec![]]
        );
        assert!(s.shards[1].is_empty() && s.shards[2].is_empty());
        assert_eq!(s.critical_path, Duration::from_secs(20));
        assert_eq!(s.makespan(), s.critical_path);
        // 20 s against a mean of 20/3: two shards have nothing to do.
        assert!((s.imbalance() - 2.0).abs() < 1e-9, "{}", s.imbalance());
    }

    #[test]
    fn a_diamond_with_heavy_fan_out_splits_by_sinks_with_the_closure_of_needs() {
        // setup → (x, y) → link → four heavy tests.
        let p = plan(&[
            ("setup", &[]),
            ("x", &["setup"]),
            ("y", &["setup"]),
            ("link", &["x", "y"]),
            ("t1", &["link"]),
            ("t2", &["link"]),
            ("t3", &["link"]),
            ("t4", &["link"]),
        ]);
        let all = Selection::all(&p);
        let s = split(&p, &all, &secs(&[2, 1, 1, 1, 10, 10, 10, 10]), 2).unwrap();
        assert_eq!(
            ids(&p, &s),
            [
                ["setup", "x", "y", "link", "t1", "t3"],
                ["setup", "x", "y", "link", "t2", "t4"]
            ]
        );
        assert_eq!(
            s.shards.iter().map(|s| s.predicted).collect::<Vec<_>>(),
            secs(&[25, 25])
        );
        assert_eq!(s.critical_path, Duration::from_secs(14));
        assert_covered_and_closed(&p, &all, &s);
    }

    #[test]
    fn a_long_chain_fanning_out_to_many_sinks_splits_with_the_chain_on_every_shard() {
        const CHAIN: usize = 2000;
        const SINKS: usize = 2000;
        let names: Vec<String> = (0..CHAIN)
            .map(|i| format!("c{i:04}"))
            .chain((0..SINKS).map(|i| format!("t{i:04}")))
            .collect();
        let needs: Vec<Vec<&str>> = (0..CHAIN + SINKS)
            .map(|i| match i {
                0 => vec![],
                i if i < CHAIN => vec![names[i - 1].as_str()],
                _ => vec![names[CHAIN - 1].as_str()],
            })
            .collect();
        let steps: Vec<(&str, &[&str])> = names
            .iter()
            .zip(&needs)
            .map(|(id, n)| (id.as_str(), n.as_slice()))
            .collect();
        let p = plan(&steps);
        let all = Selection::all(&p);
        let s = split(&p, &all, &vec![Duration::from_secs(1); CHAIN + SINKS], 4).unwrap();
        assert_covered_and_closed(&p, &all, &s);
        // Every sink costs the whole chain plus itself: the first four go one to a shard,
        // then each shard only lacks the sink, and equal loads take them in turn by id.
        for (k, shard) in s.shards.iter().enumerate() {
            assert_eq!(shard.steps.len(), CHAIN + SINKS / 4, "shard {k}");
            assert!(
                shard.steps[..CHAIN].iter().copied().eq(0..CHAIN),
                "shard {k}"
            );
            assert!(
                shard.steps[CHAIN..].iter().all(|&i| (i - CHAIN) % 4 == k),
                "shard {k}"
            );
            assert_eq!(shard.predicted, Duration::from_secs(2500), "shard {k}");
        }
        assert_eq!(s.critical_path, Duration::from_secs(2001));
    }

    #[test]
    fn a_split_that_does_not_shorten_the_slowest_shard_is_not_made() {
        // An expensive shared need and two free sinks: on two shards, each would still
        // take 10 s, so the component stays whole.
        let p = plan(&[("base", &[]), ("a", &["base"]), ("b", &["base"])]);
        let s = split(&p, &Selection::all(&p), &secs(&[10, 0, 0]), 2).unwrap();
        assert_eq!(ids(&p, &s), [vec!["base", "a", "b"], vec![]]);
    }

    #[test]
    fn an_imbalance_above_five_percent_splits_the_component_on_the_slowest_shard() {
        // Two components on two shards, the one with two sinks on the slowest shard.
        let p = plan(&[
            ("base", &[]),
            ("a", &["base"]),
            ("b", &["base"]),
            ("solo", &[]),
        ]);
        let all = Selection::all(&p);
        let s = split(&p, &all, &secs(&[2, 5, 5, 8]), 2).unwrap();
        // Whole: 12 and 8 (20% over the mean). Split: solo 8 → 1, a 7 → 2, b → 2 (12, not
        // 15): the slowest shard still takes 12 s, so the component stays whole.
        assert_eq!(ids(&p, &s), [vec!["base", "a", "b"], vec!["solo"]]);

        let s = split(&p, &all, &secs(&[1, 6, 6, 2]), 2).unwrap();
        // Whole: 13 and 2 (imbalance 73%). Split: a 7 → 1, b 7 → 2, solo 2 → 1: 9 and 7.
        assert_eq!(ids(&p, &s), [vec!["base", "a", "solo"], vec!["base", "b"]]);
        assert_eq!(
            s.shards.iter().map(|s| s.predicted).collect::<Vec<_>>(),
            secs(&[9, 7])
        );
        assert_covered_and_closed(&p, &all, &s);
    }

    #[test]
    fn ties_are_broken_by_step_id_not_plan_order() {
        let p = plan(&[("zeta", &[]), ("alpha", &[]), ("mid", &[])]);
        let s = split(&p, &Selection::all(&p), &secs(&[1, 1, 1]), 2).unwrap();
        // alpha first (shard 1), then mid (shard 2), then zeta (shard 1).
        assert_eq!(ids(&p, &s), [vec!["zeta", "alpha"], vec!["mid"]]);
    }

    #[test]
    fn the_same_input_gives_the_same_split() {
        let p = plan(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("d", &[]),
            ("e", &["d"]),
            ("f", &["d", "c"]),
            ("g", &[]),
        ]);
        let est = secs(&[3, 3, 3, 3, 3, 3, 3]);
        let first = split(&p, &Selection::all(&p), &est, 3).unwrap();
        for _ in 0..20 {
            assert_eq!(split(&p, &Selection::all(&p), &est, 3).unwrap(), first);
        }
    }

    #[test]
    fn only_selected_steps_are_placed() {
        let p = plan(&[("a", &[]), ("b", &["a"]), ("c", &[]), ("d", &[])]);
        let sel = Selection::of(&p, &["b".into(), "c".into()]).unwrap();
        let s = split(&p, &sel, &secs(&[1, 1, 1, 1]), 2).unwrap();
        assert_eq!(ids(&p, &s), [vec!["a", "b"], vec!["c"]]);
        let one = s.selection(&p, 1).unwrap();
        assert_eq!(
            (0..4).map(|i| one.contains(i)).collect::<Vec<_>>(),
            [false, false, true, false]
        );
        assert!(s.selection(&p, 2).is_none());
    }

    #[test]
    fn more_shards_than_work_leaves_shards_empty() {
        let p = plan(&[("a", &[]), ("b", &[])]);
        let s = split(&p, &Selection::all(&p), &secs(&[1, 1]), 4).unwrap();
        assert_eq!(s.shards.iter().filter(|s| s.is_empty()).count(), 2);
        assert!(s.selection(&p, 3).unwrap().is_empty());
    }

    #[test]
    fn nothing_to_do_is_balanced() {
        let p = plan(&[("a", &[]), ("b", &[])]);
        let s = split(&p, &Selection::all(&p), &secs(&[0, 0]), 2).unwrap();
        assert_eq!(s.imbalance(), 0.0);
        assert_eq!(s.critical_path, Duration::ZERO);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let p = plan(&[("a", &[])]);
        let all = Selection::all(&p);
        assert_eq!(
            split(&p, &all, &secs(&[1]), 0).unwrap_err(),
            ShardError::NoShards
        );
        assert_eq!(
            split(&p, &all, &secs(&[1]), MAX_SHARDS + 1).unwrap_err(),
            ShardError::TooManyShards {
                shards: MAX_SHARDS + 1,
                max: MAX_SHARDS
            }
        );
        let e = split(&p, &all, &secs(&[1, 1]), 2).unwrap_err();
        assert_eq!(e.to_string(), "2 duration estimates for a plan of 1 steps");
        assert_eq!(
            ShardError::NoShards.to_string(),
            "the number of shards must be at least 1"
        );
    }

    /// A random DAG: step `i` needs some of the steps before it.
    fn dag() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<u64>, Vec<bool>, usize)> {
        (1usize..24).prop_flat_map(|n| {
            let needs = (0..n)
                .map(|i| proptest::sample::subsequence((0..i).collect::<Vec<_>>(), 0..=i.min(3)))
                .collect::<Vec<_>>();
            (
                needs,
                proptest::collection::vec(0u64..5_000, n),
                proptest::collection::vec(proptest::bool::weighted(0.3), n),
                1usize..7,
            )
        })
    }

    proptest! {
        #[test]
        fn every_selected_step_is_on_a_shard_and_shards_are_closed_under_needs(
            (needs, millis, picked, shards) in dag()
        ) {
            let names: Vec<String> = (0..needs.len()).map(|i| format!("s{i}")).collect();
            let steps: Vec<(&str, Vec<&str>)> = needs
                .iter()
                .enumerate()
                .map(|(i, n)| (names[i].as_str(), n.iter().map(|&d| names[d].as_str()).collect()))
                .collect();
            let borrowed: Vec<(&str, &[&str])> =
                steps.iter().map(|(id, n)| (*id, n.as_slice())).collect();
            let p = plan(&borrowed);
            let picked: Vec<String> = picked
                .iter()
                .enumerate()
                .filter(|(_, b)| **b)
                .map(|(i, _)| names[i].clone())
                .collect();
            let selection = Selection::of(&p, &picked).unwrap();
            let est: Vec<Duration> = millis.iter().copied().map(Duration::from_millis).collect();
            let s = split(&p, &selection, &est, shards).unwrap();
            prop_assert_eq!(s.shards.len(), shards);
            assert_covered_and_closed(&p, &selection, &s);
            for shard in &s.shards {
                let sum: Duration = shard.steps.iter().map(|&i| est[i]).sum();
                prop_assert_eq!(shard.predicted, sum);
            }
            // No shard is slower than running everything selected on one runner, and
            // none beats the critical path.
            let all: Duration = (0..p.steps.len())
                .filter(|&i| selection.contains(i))
                .map(|i| est[i])
                .sum();
            prop_assert!(s.makespan() <= all);
            prop_assert!(s.makespan() >= s.critical_path);
            prop_assert_eq!(split(&p, &selection, &est, shards).unwrap(), s);
        }
    }
}
