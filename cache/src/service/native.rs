//! The native protocol of `ci-intel run --remote-cache URL`, under `/native/`: the local
//! cache's own entries, shared.
//!
//! - `GET`, `HEAD`, `PUT /native/<namespace>/ac/<64 hex action key>`: a signed manifest,
//!   stored as sent. The service cannot check its signature (it holds no keys) and need
//!   not: clients verify every manifest against their own keyring before a restore, as
//!   they do a local one. It checks the namespace's name and the manifest's size.
//! - `GET`, `HEAD`, `PUT /native/cas/<64 hex BLAKE3>`: a blob as the local cache stores
//!   it (zstd). An upload is decompressed and must hash to its name, else it is refused
//!   (400) and nothing is stored.
//! - `POST /native/cas/missing`: a JSON array of blob digests; the answer is the array of
//!   those the service does not hold (one store query).
//!
//! Manifests live in the team's space `TEAM/native/<namespace>` (kind `ac`: evicted before
//! the blobs they name), blobs in `TEAM/native-cas`. Any token reads them. A trusted token writes any namespace; an
//! untrusted one (a fork's pull request) never writes the `trusted` namespace, only others
//! (`fork-pr-N`), which a trusted run does not read. Blobs are shared by both: a blob is
//! checked against its name on the way in, so whoever uploads it, it is the same bytes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Identity, Trust};
use super::server::{
    Service, Want, blob_response, blocking, read_entry, text, too_many, write_entry, write_refusal,
};
use super::store::Kind;
use crate::manifest::MAX_ENVELOPE;
use crate::namespace::{self, TRUSTED};

/// Most digests one `missing` query may ask about.
pub const MAX_QUERY: usize = 10_000;

/// What a path below `/native/` names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// A manifest: its namespace and action key.
    Manifest(&'a str, &'a str),
    /// A blob: its digest.
    Blob(&'a str),
    /// The missing-blobs query.
    Missing,
}

/// Whether `s` is 64 lowercase hex digits.
fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses a path below `/native/`; `Err` is the 400 message.
fn parse(path: &str) -> Result<Target<'_>, &'static str> {
    const USAGE: &str = "not a native cache path: use /native/<namespace>/ac/<key>, \
                         /native/cas/<digest> or /native/cas/missing";
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["cas", "missing"] => Ok(Target::Missing),
        ["cas", digest] => {
            if is_hex64(digest) {
                Ok(Target::Blob(digest))
            } else {
                Err("a blob digest must be 64 lowercase hex digits (BLAKE3)")
            }
        }
        [ns, "ac", key] => {
            if !namespace::is_valid(ns) || matches!(*ns, "ac" | "cas") {
                Err("a namespace must be 1-64 of a-z, 0-9, `.`, `_` and `-`, and not `ac` or `cas`")
            } else if !is_hex64(key) {
                Err("an action key must be 64 lowercase hex digits")
            } else {
                Ok(Target::Manifest(ns, key))
            }
        }
        _ => Err(USAGE),
    }
}

/// The space of `team`'s manifests of `namespace`.
fn manifest_space(team: &str, namespace: &str) -> String {
    format!("{team}/native/{namespace}")
}

/// The space of `team`'s blobs.
fn blob_space(team: &str) -> String {
    format!("{team}/native-cas")
}

/// Serves a request for `path` (below `/native/`) from `id`.
pub(super) async fn serve(
    svc: &Arc<Service>,
    method: &Method,
    path: &str,
    id: &Identity,
    body: Bytes,
) -> Response {
    let target = match parse(path) {
        Ok(t) => t,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let head = *method == Method::HEAD;
    match (target, method) {
        (Target::Missing, &Method::POST) => missing(svc, id, &body).await,
        (Target::Missing, _) => text(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        (Target::Manifest(ns, key), &Method::GET | &Method::HEAD) => {
            read(svc, id, manifest_space(&id.team, ns), Kind::Ac, key, head).await
        }
        (Target::Blob(digest), &Method::GET | &Method::HEAD) => {
            read(svc, id, blob_space(&id.team), Kind::Cas, digest, head).await
        }
        (Target::Manifest(ns, key), &Method::PUT) => put_manifest(svc, id, ns, key, body).await,
        (Target::Blob(digest), &Method::PUT) => put_blob(svc, id, digest, body).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET, HEAD or PUT"),
    }
}

async fn read(
    svc: &Arc<Service>,
    id: &Identity,
    space: String,
    kind: Kind,
    key: &str,
    head: bool,
) -> Response {
    let want = if head { Want::Size } else { Want::All };
    match read_entry(svc, id, vec![space], kind, key.to_string(), want).await {
        Err(r) => r,
        Ok(None) => text(StatusCode::NOT_FOUND, "not found"),
        Ok(Some(hit)) => blob_response(hit.bytes, hit.size, head),
    }
}

async fn put_manifest(
    svc: &Arc<Service>,
    id: &Identity,
    ns: &str,
    key: &str,
    body: Bytes,
) -> Response {
    if ns == TRUSTED && id.trust != Trust::Trusted {
        svc.count_denial(&id.team);
        return text(
            StatusCode::FORBIDDEN,
            "an untrusted token cannot write the trusted namespace",
        );
    }
    if body.is_empty() || body.len() > MAX_ENVELOPE {
        return text(
            StatusCode::BAD_REQUEST,
            "a manifest must be 1 byte to 64 MiB (a signed envelope)",
        );
    }
    if let Some(r) = write_refusal(svc, id, body.len() as u64) {
        return r;
    }
    let space = manifest_space(&id.team, ns);
    match write_entry(svc, id, space, Kind::Ac, key.to_string(), vec![body]).await {
        Err(r) => r,
        Ok(()) => StatusCode::OK.into_response(),
    }
}

async fn put_blob(svc: &Arc<Service>, id: &Identity, digest: &str, body: Bytes) -> Response {
    if let Some(r) = write_refusal(svc, id, body.len() as u64) {
        return r;
    }
    let checked = body.clone();
    let actual = blocking(move || Ok(crate::cas::content_digest(&checked[..]).ok())).await;
    match actual {
        Err(r) => return r,
        Ok(Some((d, _))) if d.to_hex() == digest => {}
        Ok(_) => {
            svc.count_refused_digest(&id.team);
            return text(
                StatusCode::BAD_REQUEST,
                "the body is not a zstd stream whose content's BLAKE3 is the digest in the path; nothing stored",
            );
        }
    }
    let space = blob_space(&id.team);
    match write_entry(svc, id, space, Kind::Cas, digest.to_string(), vec![body]).await {
        Err(r) => r,
        Ok(()) => StatusCode::OK.into_response(),
    }
}

/// `POST /native/cas/missing`: which of a JSON array of digests the service does not hold.
async fn missing(svc: &Arc<Service>, id: &Identity, body: &[u8]) -> Response {
    let Ok(digests) = serde_json::from_slice::<Vec<String>>(body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON array of digests",
        );
    };
    if digests.len() > MAX_QUERY || !digests.iter().all(|d| is_hex64(d)) {
        return text(
            StatusCode::BAD_REQUEST,
            "at most 10000 digests of 64 lowercase hex digits",
        );
    }
    if let Err(wait) = svc.admit(&id.team, 0) {
        return too_many(svc, &id.team, wait);
    }
    let store = Arc::clone(&svc.store);
    let space = blob_space(&id.team);
    match blocking(move || store.missing(&space, Kind::Cas, &digests)).await {
        Err(r) => r,
        Ok(absent) => {
            let mut r = serde_json::to_string(&absent)
                .unwrap_or_else(|_| "[]".into())
                .into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_manifests_blobs_and_the_query_and_bad_ones_are_refused() {
        let h = "0a".repeat(32);
        assert_eq!(
            parse(&format!("fork-pr-3/ac/{h}")),
            Ok(Target::Manifest("fork-pr-3", &h))
        );
        assert_eq!(parse(&format!("cas/{h}")), Ok(Target::Blob(&h)));
        assert_eq!(parse("cas/missing"), Ok(Target::Missing));
        for bad in [
            format!("cas/{}", "A".repeat(64)),
            format!("cas/{}", "a".repeat(63)),
            format!("../ac/{h}"),
            format!("Trusted/ac/{h}"),
            format!("cas/ac/{h}"),
            format!("trusted/cas/{h}"),
            format!("a/b/ac/{h}"),
            String::new(),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}
