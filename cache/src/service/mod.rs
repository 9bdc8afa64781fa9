//! The team cache service behind `ci-intel cache serve` (feature `server`): an HTTP server
//! that a team's runners, Bazel, ccache and Turborepo share.
//!
//! - [`store`]: blobs on disk under a SQLite index, a size cap with least-recently-used
//!   eviction (action results before the blobs they may need), a scrub;
//! - [`auth`]: the configuration file, hashed tokens, teams, scopes and trust;
//! - [`server`]: the HTTP server (axum on hyper, with a header-read timeout), Bazel's remote
//!   cache protocol, per-team token buckets, metrics and access logs;
//! - [`ccache`]: ccache's HTTP storage protocol, under `/ccache/`;
//! - [`turbo`]: Turborepo's remote cache API, under `/v8/artifacts`;
//! - [`native`]: the native protocol of `ci-intel run --remote-cache`, under `/native/`.
//!
//! It does not run steps or sign anything: manifests of the native protocol stay signed
//! end to end and are verified by the client before a restore.

pub mod auth;
pub mod ccache;
pub mod native;
pub mod server;
pub mod store;
pub mod turbo;
