//! The step graph: priorities, selection and rendering.

use std::fmt::Write as _;
use std::time::Duration;

use crate::estimate::DurationEstimator;
use crate::plan::{Plan, closest};

/// Longest estimated path from each step to the end of the plan, the step included.
///
/// Computed in one pass over the reverse topological order: `O(steps + needs)`.
pub fn priorities(plan: &Plan, estimator: &dyn DurationEstimator) -> Vec<Duration> {
    let estimates: Vec<Duration> = plan.steps.iter().map(|s| estimator.estimate(s)).collect();
    priorities_from(plan, &estimates)
}

/// [`priorities`] from estimates already made: `estimates[i]` is step `i`'s.
///
/// # Panics
///
/// When there are fewer estimates than steps.
pub fn priorities_from(plan: &Plan, estimates: &[Duration]) -> Vec<Duration> {
    let n = plan.steps.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, s) in plan.steps.iter().enumerate() {
        for &d in &s.needs {
            dependents[d].push(i);
        }
    }
    let mut prio = vec![Duration::ZERO; n];
    for &i in plan.topo.iter().rev() {
        let below = dependents[i]
            .iter()
            .map(|&j| prio[j])
            .max()
            .unwrap_or_default();
        prio[i] = below + estimates[i];
    }
    prio
}

/// Which steps a run covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    selected: Vec<bool>,
}

/// Why a selection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// A `--step` names no step of the plan.
    #[error("no step `{id}` in plan `{plan}`")]
    UnknownStep {
        /// The id given.
        id: String,
        /// The plan's name.
        plan: String,
        /// A close id, if one exists.
        suggestion: Option<String>,
    },
}

impl Selection {
    /// Every step.
    pub fn all(plan: &Plan) -> Selection {
        Selection {
            selected: vec![true; plan.steps.len()],
        }
    }

    /// The named steps and everything they need, transitively.
    pub fn of(plan: &Plan, ids: &[String]) -> Result<Selection, SelectionError> {
        if ids.is_empty() {
            return Ok(Selection::all(plan));
        }
        let mut selected = vec![false; plan.steps.len()];
        let mut stack = Vec::new();
        for id in ids {
            let Some(i) = plan.step_index(id) else {
                let suggestion =
                    closest(id, plan.steps.iter().map(|s| s.id.as_str())).map(str::to_string);
                return Err(SelectionError::UnknownStep {
                    id: id.clone(),
                    plan: plan.name.clone(),
                    suggestion,
                });
            };
            stack.push(i);
        }
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut selected[i], true) {
                stack.extend(plan.steps[i].needs.iter().copied());
            }
        }
        Ok(Selection { selected })
    }

    /// Exactly the steps whose flag is set (`selected[i]` for step `i`).
    pub(crate) fn from_flags(selected: Vec<bool>) -> Selection {
        Selection { selected }
    }

    /// Whether step `i` is selected.
    pub fn contains(&self, i: usize) -> bool {
        self.selected[i]
    }

    /// How many steps are selected.
    pub fn len(&self) -> usize {
        self.selected.iter().filter(|s| **s).count()
    }

    /// True when nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A predicted duration for a label: milliseconds under a second, else seconds.
fn short(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `id` escaped for a dot string.
fn escape(id: &str) -> String {
    id.replace('\\', "\\\\").replace('"', "\\\"")
}

fn quote(id: &str) -> String {
    format!("\"{}\"", escape(id))
}

/// Predicted durations to draw on a graph.
#[derive(Clone, Copy, Debug)]
pub struct Predicted<'a> {
    /// Each step's predicted median.
    pub p50: &'a [Duration],
    /// Each step's predicted p80.
    pub p80: &'a [Duration],
    /// Each step's estimate as the scheduler orders by it: the critical path follows these.
    pub order: &'a [Duration],
}

/// The critical path by `estimates`: the longest chain of steps, from a step nothing
/// needs to precede it to a step nothing needs, in order.
pub fn critical_path(plan: &Plan, estimates: &[Duration]) -> Vec<usize> {
    let prio = priorities_from(plan, estimates);
    let n = plan.steps.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, s) in plan.steps.iter().enumerate() {
        for &d in &s.needs {
            dependents[d].push(i);
        }
    }
    // Ties go to the step first in the plan, so the path is the same every time.
    let best = |it: &mut dyn Iterator<Item = usize>| {
        it.fold(None, |acc: Option<usize>, i| match acc {
            Some(b) if prio[b] >= prio[i] => Some(b),
            _ => Some(i),
        })
    };
    let mut path = Vec::new();
    let mut at = best(&mut (0..n).filter(|&i| plan.steps[i].needs.is_empty()));
    while let Some(i) = at {
        path.push(i);
        at = best(&mut dependents[i].iter().copied());
    }
    path
}

/// The critical path's steps and edges, for drawing.
fn on_path(plan: &Plan, predicted: Option<&Predicted<'_>>) -> (Vec<bool>, Vec<(usize, usize)>) {
    let mut nodes = vec![false; plan.steps.len()];
    let mut edges = Vec::new();
    if let Some(p) = predicted {
        let path = critical_path(plan, p.order);
        for &i in &path {
            nodes[i] = true;
        }
        edges.extend(path.windows(2).map(|w| (w[0], w[1])));
    }
    (nodes, edges)
}

/// The plan as Graphviz dot: one box per step, an edge from each need to its dependent.
/// With predictions, each box shows the step's p50 and p80, and the critical path (by the
/// scheduler's estimates) is drawn bold and red, its length in a comment.
pub fn render_dot(plan: &Plan, predicted: Option<&Predicted<'_>>) -> String {
    let mut s = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
        quote(&plan.name)
    );
    let (crit, crit_edges) = on_path(plan, predicted);
    if let Some(p) = predicted {
        let total: Duration = (0..plan.steps.len())
            .filter(|&i| crit[i])
            .map(|i| p.order[i])
            .sum();
        let _ = writeln!(
            s,
            "  // critical path (by the scheduler's estimates): {}",
            short(total)
        );
    }
    for (i, step) in plan.steps.iter().enumerate() {
        match predicted {
            Some(p) => {
                let style = if crit[i] {
                    ", color=red, penwidth=2"
                } else {
                    ""
                };
                // The label's `\n` is dot's line break, so it is not escaped.
                let _ = writeln!(
                    s,
                    "  {} [label=\"{}\\np50 {}  p80 {}\"{style}];",
                    quote(&step.id),
                    escape(&step.id),
                    short(p.p50[i]),
                    short(p.p80[i])
                );
            }
            None => {
                let _ = writeln!(s, "  {};", quote(&step.id));
            }
        }
    }
    for (i, step) in plan.steps.iter().enumerate() {
        for &d in &step.needs {
            let style = if crit_edges.contains(&(d, i)) {
                " [color=red, penwidth=2]"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  {} -> {}{style};",
                quote(&plan.steps[d].id),
                quote(&step.id)
            );
        }
    }
    s.push_str("}\n");
    s
}

/// The plan as a Mermaid flowchart; with predictions, as [`render_dot`] draws them.
pub fn render_mermaid(plan: &Plan, predicted: Option<&Predicted<'_>>) -> String {
    // Mermaid node ids must be simple; use s0, s1, … with the step id as the label.
    let mut s = String::from("flowchart LR\n");
    let (crit, _) = on_path(plan, predicted);
    for (i, step) in plan.steps.iter().enumerate() {
        let id = step.id.replace('"', "#quot;");
        match predicted {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "  s{i}[\"{id}<br/>p50 {}  p80 {}\"]",
                    short(p.p50[i]),
                    short(p.p80[i])
                );
            }
            None => {
                let _ = writeln!(s, "  s{i}[\"{id}\"]");
            }
        }
    }
    for (i, step) in plan.steps.iter().enumerate() {
        for &d in &step.needs {
            let _ = writeln!(s, "  s{d} --> s{i}");
        }
    }
    let on: Vec<String> = (0..crit.len())
        .filter(|&i| crit[i])
        .map(|i| format!("s{i}"))
        .collect();
    if !on.is_empty() {
        s.push_str("  classDef critical stroke:#d00,stroke-width:3px\n");
        let _ = writeln!(s, "  class {} critical", on.join(","));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a` feeds `b` (slow) and `c` (quick), which both feed `d`.
    fn diamond() -> Plan {
        crate::parse_plan(
            std::path::Path::new("p.toml"),
            r#"
version = 1
name = "diamond"
[steps.a]
run = "true"
[steps.b]
run = "true"
needs = ["a"]
[steps.c]
run = "true"
needs = ["a"]
[steps.d]
run = "true"
needs = ["b", "c"]
"#,
        )
        .unwrap()
    }

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    #[test]
    fn the_critical_path_follows_the_longest_chain() {
        let plan = diamond();
        let id = |path: Vec<usize>| -> Vec<String> {
            path.into_iter().map(|i| plan.steps[i].id.clone()).collect()
        };
        assert_eq!(
            id(critical_path(&plan, &secs(&[1, 5, 2, 1]))),
            ["a", "b", "d"]
        );
        assert_eq!(
            id(critical_path(&plan, &secs(&[1, 2, 5, 1]))),
            ["a", "c", "d"]
        );
        // A tie goes to the step first in the plan.
        assert_eq!(
            id(critical_path(&plan, &secs(&[1, 3, 3, 1]))),
            ["a", "b", "d"]
        );
    }

    #[test]
    fn predictions_label_the_steps_and_mark_the_critical_path() {
        let plan = diamond();
        let p50 = vec![
            Duration::from_millis(800),
            Duration::from_secs(4),
            Duration::from_secs(1),
            Duration::from_millis(900),
        ];
        let p80 = secs(&[1, 5, 2, 1]);
        let predicted = Predicted {
            p50: &p50,
            p80: &p80,
            order: &p80,
        };
        let dot = render_dot(&plan, Some(&predicted));
        assert!(
            dot.contains("// critical path (by the scheduler's estimates): 7.0s"),
            "{dot}"
        );
        assert!(
            dot.contains(r#""b" [label="b\np50 4.0s  p80 5.0s", color=red, penwidth=2];"#),
            "{dot}"
        );
        assert!(
            dot.contains(r#""c" [label="c\np50 1.0s  p80 2.0s"];"#),
            "{dot}"
        );
        assert!(
            dot.contains(r#""a" -> "b" [color=red, penwidth=2];"#),
            "{dot}"
        );
        assert!(dot.contains("\"a\" -> \"c\";\n"), "{dot}");
        let mermaid = render_mermaid(&plan, Some(&predicted));
        assert!(
            mermaid.contains("s0[\"a<br/>p50 800ms  p80 1.0s\"]"),
            "{mermaid}"
        );
        assert!(mermaid.contains("class s0,s1,s3 critical"), "{mermaid}");
        // Without predictions: no labels, no path.
        let plain = render_dot(&plan, None);
        assert!(
            !plain.contains("critical") && !plain.contains("label"),
            "{plain}"
        );
        assert!(!render_mermaid(&plan, None).contains("critical"));
    }
}
