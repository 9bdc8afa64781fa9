//! What a run leaves behind for people and for machines.
//!
//! This crate owns the evidence of a run once it is over: the run record (one NDJSON line
//! per run, schema `pipeline_run.v1.3`, and its downgrade to the platform's v1.2), where a
//! run comes from (repository, commit, branch, pull request), what it costs (configured
//! rates per runner class), the failure autopsy (rule-first classification of a failed
//! step's log), the JUnit XML file, the GitHub step summary and annotations, and the
//! static HTML report built from past records, and the summary and pages of a chaos night
//! (a plan run with and without seeded fault injection).
//!
//! It does not run anything, read plans or touch the cache: the binary hands it what the
//! scheduler, the executor and the sandbox observed, as plain data. It depends on no
//! other crate of the workspace.

pub mod autopsy;
pub mod chaos;
pub mod github;
pub mod html;
pub mod junit;
pub mod origin;
pub mod rates;
pub mod record;
