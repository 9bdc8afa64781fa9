//! Turborepo's remote cache API (`turbo run build --api http://cache.internal:9090
//! --token TOKEN --team TEAM`), under `/v8/artifacts`:
//!
//! - `GET /v8/artifacts/status`: `{"status":"enabled"}`;
//! - `PUT`, `GET`, `HEAD /v8/artifacts/<hash>`: an artifact; its `x-artifact-duration`
//!   (milliseconds the task took) and `x-artifact-tag` (its signature, when turbo signs
//!   artifacts) are given back as they were uploaded; a miss is 404;
//! - `POST /v8/artifacts` with `{"hashes": [...]}`: for each hash, `null` or its `size`,
//!   `taskDurationMs` and `tag`;
//! - `POST /v8/artifacts/events`: the client's hit and miss events, counted.
//!
//! Authentication is the token (turbo sends it as `Bearer`). The team is the token's: a
//! `teamId` or `slug` query parameter (turbo sends `slug` for `--team`) that names another
//! team is 403. A hash is 1–128 ASCII letters and digits (turbo's are hex), else 400.
//!
//! Artifacts are blobs (kind `cas`, key the hash) in the team's space `TEAM/turbo`; an
//! untrusted token reads it, then `TEAM/untrusted/turbo`, and writes only the latter. Each
//! entry is one line of JSON (the duration and the tag) followed by the artifact.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::auth::Identity;
use super::server::{
    Service, Want, blocking, lookup, read_entry, read_spaces, space, text, too_many, write_entry,
    write_refusal,
};
use super::store::Kind;

/// The store spaces' protocol name.
const PROTOCOL: &str = "turbo";

/// Longest hash.
const MAX_HASH: usize = 128;

/// Longest tag (the API's limit).
const MAX_TAG: usize = 600;

/// Longest metadata line of an entry, newline included.
const MAX_META: usize = 4096;

/// Most hashes one query may ask about.
const MAX_QUERY: usize = 10_000;

/// What is stored before an artifact.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Meta {
    /// How long the task took, milliseconds (`x-artifact-duration`).
    duration_ms: u64,
    /// The artifact's signature (`x-artifact-tag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
}

impl Meta {
    /// The line stored before the artifact.
    fn line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        line.push(b'\n');
        line
    }

    /// The metadata at the start of an entry, and the length of its line.
    fn parse(entry: &[u8]) -> Option<(Meta, usize)> {
        let end = entry.iter().take(MAX_META).position(|&b| b == b'\n')?;
        let meta = serde_json::from_slice(&entry[..end]).ok()?;
        Some((meta, end + 1))
    }
}

/// The team query parameters.
#[derive(Debug, serde::Deserialize)]
struct TeamParams {
    #[serde(rename = "teamId")]
    team_id: Option<String>,
    slug: Option<String>,
}

/// Whether `hash` can name an artifact.
fn valid_hash(hash: &str) -> bool {
    (1..=MAX_HASH).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut r = (status, value.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves a request for `path` (what follows `/v8/artifacts`) from `id`.
pub(super) async fn serve(
    svc: &Arc<Service>,
    method: &Method,
    path: &str,
    uri: &Uri,
    headers: &HeaderMap,
    id: &Identity,
    body: Bytes,
) -> Response {
    let Ok(Query(params)) = Query::<TeamParams>::try_from_uri(uri) else {
        return text(StatusCode::BAD_REQUEST, "malformed query string");
    };
    if [&params.team_id, &params.slug]
        .into_iter()
        .flatten()
        .any(|team| *team != id.team)
    {
        svc.count_denial(&id.team);
        return text(
            StatusCode::FORBIDDEN,
            "the token is not one of this team's (teamId or slug)",
        );
    }
    match (path, method) {
        ("" | "/", &Method::POST) => query(svc, id, &body).await,
        ("/status", &Method::GET | &Method::HEAD) => {
            json(StatusCode::OK, &serde_json::json!({ "status": "enabled" }))
        }
        ("/events", &Method::POST) => events(svc, id, &body),
        ("" | "/", _) => text(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        ("/status", _) => text(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        ("/events", _) => text(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        _ => {
            let hash = &path[1..];
            if !valid_hash(hash) {
                return text(
                    StatusCode::BAD_REQUEST,
                    "an artifact hash must be 1-128 ASCII letters and digits",
                );
            }
            match *method {
                Method::GET | Method::HEAD => get(svc, id, hash, *method == Method::HEAD).await,
                Method::PUT => put(svc, id, hash, headers, body).await,
                _ => text(StatusCode::METHOD_NOT_ALLOWED, "use GET, HEAD or PUT"),
            }
        }
    }
}

/// A stored entry that does not start with its metadata: 500.
fn corrupt(hash: &str) -> Response {
    tracing::error!("cache service: the stored Turborepo artifact {hash} has no metadata line");
    text(StatusCode::INTERNAL_SERVER_ERROR, "corrupt entry")
}

async fn get(svc: &Arc<Service>, id: &Identity, hash: &str, head: bool) -> Response {
    let spaces = read_spaces(id, PROTOCOL, None);
    let want = if head {
        Want::Prefix(MAX_META)
    } else {
        Want::All
    };
    let hit = match read_entry(svc, id, spaces, Kind::Cas, hash.to_string(), want).await {
        Err(r) => return r,
        Ok(None) => return text(StatusCode::NOT_FOUND, "not found"),
        Ok(Some(hit)) => hit,
    };
    let Some((meta, start)) = Meta::parse(&hit.bytes) else {
        return corrupt(hash);
    };
    let size = hit.size.saturating_sub(start as u64);
    let mut r = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(Bytes::from(hit.bytes).slice(start..)))
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert("x-artifact-duration", HeaderValue::from(meta.duration_ms));
    if let Some(tag) = meta.tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        h.insert("x-artifact-tag", tag);
    }
    r
}

async fn put(
    svc: &Arc<Service>,
    id: &Identity,
    hash: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let duration_ms = match headers.get("x-artifact-duration").map(|v| v.to_str()) {
        None => 0,
        Some(Ok(v)) => match v.trim().parse() {
            Ok(ms) => ms,
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "x-artifact-duration must be a whole number of milliseconds",
                );
            }
        },
        Some(Err(_)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "x-artifact-duration must be a whole number of milliseconds",
            );
        }
    };
    let tag = match headers.get("x-artifact-tag").map(|v| v.to_str()) {
        None => None,
        Some(Ok(t)) if t.len() <= MAX_TAG => Some(t.to_string()),
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "x-artifact-tag must be at most 600 visible ASCII characters",
            );
        }
    };
    if let Some(r) = write_refusal(svc, id, body.len() as u64) {
        return r;
    }
    let meta = Meta { duration_ms, tag };
    let space = space(&id.team, id.trust, PROTOCOL, None);
    let parts = vec![Bytes::from(meta.line()), body];
    match write_entry(svc, id, space, Kind::Cas, hash.to_string(), parts).await {
        Err(r) => r,
        Ok(()) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "urls": [format!("/v8/artifacts/{hash}")] }),
        ),
    }
}

/// `POST /v8/artifacts`: what is known of each of `{"hashes": [...]}`.
async fn query(svc: &Arc<Service>, id: &Identity, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    struct Request {
        hashes: Vec<String>,
    }
    let Ok(Request { hashes }) = serde_json::from_slice::<Request>(body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the body must be {\"hashes\": [\"<hash>\", ...]}",
        );
    };
    if hashes.len() > MAX_QUERY || !hashes.iter().all(|h| valid_hash(h)) {
        return text(
            StatusCode::BAD_REQUEST,
            "at most 10000 hashes of 1-128 ASCII letters and digits",
        );
    }
    if let Err(wait) = svc.admit(&id.team, 0) {
        return too_many(svc, &id.team, wait);
    }
    let spaces = read_spaces(id, PROTOCOL, None);
    let store = Arc::clone(&svc.store);
    let found = blocking(move || {
        let mut out = serde_json::Map::new();
        for hash in hashes {
            let hit = lookup(&store, &spaces, Kind::Cas, &hash, Want::Prefix(MAX_META))?;
            let info = hit.and_then(|hit| {
                let (meta, start) = Meta::parse(&hit.bytes)?;
                let mut info = serde_json::json!({
                    "size": hit.size.saturating_sub(start as u64),
                    "taskDurationMs": meta.duration_ms,
                });
                if let Some(tag) = meta.tag {
                    info["tag"] = tag.into();
                }
                Some(info)
            });
            out.insert(hash, info.unwrap_or(serde_json::Value::Null));
        }
        Ok(out)
    })
    .await;
    match found {
        Err(r) => r,
        Ok(out) => json(StatusCode::OK, &serde_json::Value::Object(out)),
    }
}

/// `POST /v8/artifacts/events`: a JSON array of events, counted.
fn events(svc: &Service, id: &Identity, body: &[u8]) -> Response {
    let Ok(events) = serde_json::from_slice::<Vec<serde_json::Value>>(body) else {
        return text(StatusCode::BAD_REQUEST, "the body must be a JSON array");
    };
    if let Err(wait) = svc.admit(&id.team, 0) {
        return too_many(svc, &id.team, wait);
    }
    svc.count_events(&id.team, events.len() as u64);
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_before_the_artifact() {
        let meta = Meta {
            duration_ms: 1234,
            tag: Some("c2lnbmF0dXJl".into()),
        };
        let mut entry = meta.line();
        let start = entry.len();
        entry.extend_from_slice(b"\n{not json}\nartifact bytes");
        assert_eq!(Meta::parse(&entry), Some((meta, start)));
        let plain = Meta::default().line();
        assert_eq!(plain, b"{\"duration_ms\":0}\n");
        assert_eq!(Meta::parse(b"no metadata line"), None);
        assert_eq!(Meta::parse(&[b' '; MAX_META + 1]), None);
    }

    #[test]
    fn hashes_are_letters_and_digits_up_to_128() {
        assert!(valid_hash("0123abcdef"));
        assert!(valid_hash(&"f".repeat(128)));
        for bad in ["", "..", "a/b", "a.b", "a-b", "%2e", &"f".repeat(129)] {
            assert!(!valid_hash(bad), "{bad:?}");
        }
    }
}
