//! The step graph: priorities, selection and rendering.

use std::fmt::Write as _;
use std::time::Duration;

use crate::estimate::DurationEstimator;
use crate::plan::{Plan, closest};

/// Longest estimated path from each step to the end of the plan, the step included.
///
/// Computed in one pass over the reverse topological order: `O(steps + needs)`.
pub fn priorities(plan: &Plan, estimator: &dyn DurationEstimator) -> Vec<Duration> {
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
        prio[i] = below + estimator.estimate(&plan.steps[i]);
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

fn quote(id: &str) -> String {
    format!("\"{}\"", id.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The plan as a Graphviz digraph; edges point from a step to the steps that need it.
pub fn render_dot(plan: &Plan, prio: Option<&[Duration]>) -> String {
    let mut s = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
        quote(&plan.name)
    );
    for (i, step) in plan.steps.iter().enumerate() {
        match prio {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "  {} [label={}];",
                    quote(&step.id),
                    quote(&format!("{}\\n{:.1}s", step.id, p[i].as_secs_f64()))
                );
            }
            None => {
                let _ = writeln!(s, "  {};", quote(&step.id));
            }
        }
    }
    for step in &plan.steps {
        for &d in &step.needs {
            let _ = writeln!(s, "  {} -> {};", quote(&plan.steps[d].id), quote(&step.id));
        }
    }
    s.push_str("}\n");
    s
}

/// The plan as a Mermaid flowchart; edges point from a step to the steps that need it.
pub fn render_mermaid(plan: &Plan) -> String {
    // Mermaid node ids must be simple; use s0, s1, … with the step id as the label.
    let mut s = String::from("flowchart LR\n");
    for (i, step) in plan.steps.iter().enumerate() {
        let _ = writeln!(s, "  s{i}[\"{}\"]", step.id.replace('"', "#quot;"));
    }
    for (i, step) in plan.steps.iter().enumerate() {
        for &d in &step.needs {
            let _ = writeln!(s, "  s{d} --> s{i}");
        }
    }
    s
}
