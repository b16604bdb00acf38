//! CORS for a UI served from another origin (Geti's dev setup, `CORS_ORIGINS` as Geti's
//! backend has it). Unset: no CORS headers at all, and a preflight is an ordinary request.

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::SettingError;

/// The layer for `CORS_ORIGINS` (comma-separated origins or `*`), or `None` when unset.
pub fn layer(setting: Option<&str>) -> Result<Option<CorsLayer>, SettingError> {
    let Some(list) = setting.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let bad = |reason: String| SettingError {
        setting: "CORS_ORIGINS",
        reason,
    };
    let origin = if list == "*" {
        AllowOrigin::any()
    } else {
        let mut origins = Vec::new();
        for o in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if o == "*" {
                return Err(bad("`*` must stand alone".into()));
            }
            let scheme_ok = o.starts_with("http://") || o.starts_with("https://");
            if !scheme_ok || o.ends_with('/') || o.chars().any(char::is_whitespace) {
                return Err(bad(format!(
                    "{o:?} is not an origin (scheme://host[:port], no path), e.g. https://ui.example.com"
                )));
            }
            origins.push(
                HeaderValue::from_str(o)
                    .map_err(|_| bad(format!("{o:?} is not a valid origin")))?,
            );
        }
        AllowOrigin::list(origins)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::IF_MATCH,
                HeaderName::from_static("x-session-id"),
            ])
            .expose_headers([
                header::LOCATION,
                header::LINK,
                header::ETAG,
                header::RETRY_AFTER,
                HeaderName::from_static("x-session-id"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(layer(None).unwrap().is_none());
        assert!(layer(Some(" ")).unwrap().is_none());
        assert!(layer(Some("*")).unwrap().is_some());
        assert!(layer(Some("https://a.example, http://localhost:3000"))
            .unwrap()
            .is_some());
        for bad in [
            "a.example",
            "https://a.example/",
            "*,https://a.example",
            "https://a b",
        ] {
            assert!(layer(Some(bad)).is_err(), "{bad}");
        }
    }
}
