//! `parse_plan` on arbitrary text (input bytes that are not UTF-8 are converted lossily):
//! it must never panic, errors are fine. Every diagnostic is rendered (positions and
//! snippets are computed from the source), and a plan that parses is put through the graph
//! functions the CLI runs on it.
#![no_main]

use std::path::Path;

use ci_intel_scheduler::{
    LoadError, Selection, StaticEstimator, parse_plan, priorities, render_dot, render_mermaid,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    match parse_plan(Path::new("fuzz/plan.toml"), &source) {
        Ok(plan) => {
            assert_eq!(plan.topo.len(), plan.steps.len(), "topological order");
            let prio = priorities(&plan, &StaticEstimator::default());
            assert_eq!(prio.len(), plan.steps.len());
            let predicted = ci_intel_scheduler::Predicted {
                p50: &prio,
                p80: &prio,
                order: &prio,
            };
            let _ = render_dot(&plan, Some(&predicted));
            let _ = render_mermaid(&plan, Some(&predicted));
            assert_eq!(Selection::all(&plan).len(), plan.steps.len());
        }
        Err(e @ LoadError::Invalid { .. }) => {
            let LoadError::Invalid { diagnostics } = &e else {
                unreachable!()
            };
            assert!(
                !diagnostics.is_empty(),
                "an invalid plan with no diagnostic"
            );
            for d in diagnostics {
                assert!(d.line >= 1 && d.col >= 1, "{d:?}");
            }
            let _ = e.to_string();
        }
        Err(e) => panic!("parse_plan reads no file, yet: {e}"),
    }
});
