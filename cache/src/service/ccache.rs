//! ccache's HTTP storage protocol (ccache 4.4 and later), under `/ccache/`:
//!
//! ```text
//! remote_storage = http://ci:TOKEN@cache.internal:9090/ccache|layout=subdirs
//! ```
//!
//! `GET`, `HEAD`, `PUT` and `DELETE` of `/ccache/<key>` (`layout=flat`),
//! `/ccache/<first 2 characters>/<rest>` (`layout=subdirs`, ccache's default) or
//! `/ccache/ac/<64 hex digits>` (`layout=bazel`). A key is its path's components joined,
//! so `flat` and `subdirs` name the same entries; `bazel` names them by other keys. Keys
//! are 1–128 ASCII letters and digits: anything else (`..`, an empty component, a third
//! component) is 400.
//!
//! ccache sends the URL's `user:password` as Basic credentials: the token is the password.
//! Entries are blobs (kind `cas`, not verified: a ccache key is not a hash of its entry) in
//! the team's space `TEAM/ccache`. As everywhere, an untrusted token reads that space, then
//! `TEAM/untrusted/ccache`, and writes (or deletes) only in the latter.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::Identity;
use super::server::{
    Service, Want, blob_response, blocking, read_entry, read_spaces, space, text, write_entry,
    write_refusal,
};
use super::store::Kind;

/// The store spaces' protocol name.
const PROTOCOL: &str = "ccache";

/// Longest key (the store's limit).
const MAX_KEY: usize = 128;

/// The key a path below `/ccache/` names, in any of ccache's layouts; `Err` is the 400
/// message.
pub(super) fn parse_key(path: &str) -> Result<String, &'static str> {
    let parts: Vec<&str> = path.split('/').collect();
    let key = match parts.as_slice() {
        [key] => key.to_string(),
        [head, rest] if head.len() == 2 => format!("{head}{rest}"),
        _ => {
            return Err(
                "not a ccache path: use /ccache/<key>, /ccache/<2 characters>/<rest> or /ccache/ac/<hex>",
            );
        }
    };
    if key.is_empty()
        || key.len() > MAX_KEY
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err("a ccache key must be 1-128 ASCII letters and digits");
    }
    Ok(key)
}

/// Serves a request for `path` (below `/ccache/`) from `id`.
pub(super) async fn serve(
    svc: &Arc<Service>,
    method: &Method,
    path: &str,
    id: &Identity,
    body: Bytes,
) -> Response {
    let key = match parse_key(path) {
        Ok(key) => key,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    match *method {
        Method::GET | Method::HEAD => {
            let head = *method == Method::HEAD;
            let want = if head { Want::Size } else { Want::All };
            let spaces = read_spaces(id, PROTOCOL, None);
            match read_entry(svc, id, spaces, Kind::Cas, key, want).await {
                Err(r) => r,
                Ok(None) => text(StatusCode::NOT_FOUND, "not found"),
                Ok(Some(hit)) => blob_response(hit.bytes, hit.size, head),
            }
        }
        Method::PUT => {
            if let Some(r) = write_refusal(svc, id, body.len() as u64) {
                return r;
            }
            let space = space(&id.team, id.trust, PROTOCOL, None);
            match write_entry(svc, id, space, Kind::Cas, key, vec![body]).await {
                Err(r) => r,
                Ok(()) => StatusCode::OK.into_response(),
            }
        }
        Method::DELETE => {
            if let Some(r) = write_refusal(svc, id, 0) {
                return r;
            }
            let space = space(&id.team, id.trust, PROTOCOL, None);
            let store = Arc::clone(&svc.store);
            match blocking(move || store.delete(&space, Kind::Cas, &key)).await {
                Err(r) => r,
                Ok(true) => StatusCode::OK.into_response(),
                Ok(false) => text(StatusCode::NOT_FOUND, "not found"),
            }
        }
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, HEAD, PUT or DELETE",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_layouts_name_keys_and_anything_else_is_refused() {
        let key = "0a1bc2d3e4f5g6h7i8j9k0l1m2n3o4p5q";
        // flat and subdirs name the same entry.
        assert_eq!(parse_key(key).unwrap(), key);
        assert_eq!(
            parse_key(&format!("{}/{}", &key[..2], &key[2..])).unwrap(),
            key
        );
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(parse_key(&format!("ac/{hex}")).unwrap(), format!("ac{hex}"));
        for bad in [
            "",
            "..",
            "../etc",
            "ab/..",
            "./x",
            "abc/def",
            "ab/cd/ef",
            "ab//cd",
            "ab/",
            "/ab",
            "a-b",
            "a.b",
            "a%2eb",
            &"a".repeat(129),
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
        assert!(parse_key(&"a".repeat(128)).is_ok());
    }
}
