//! Reproducibility of a step's outputs: making archives independent of when and in which
//! order they were written (normalisers, like strip-nondeterminism), and explaining how
//! two builds' outputs differ (the drift report, like a small diffoscope).
//!
//! It works on files only: it does not run steps, apply variations or decide a step's
//! verdict (the executor does), and it depends on no other crate of the workspace.

pub mod drift;
mod formats;
pub mod normalize;
