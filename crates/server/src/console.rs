//! The web console: plain HTML, CSS and JavaScript embedded in the binary and
//! served at `/console` on the listener's own address. It holds no rules and
//! no data of its own: the page calls the public REST API (and its SSE feed)
//! with the credentials the user gives it, so it shows exactly what those
//! credentials may see.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page's Content-Security-Policy: its own scripts, styles and API only;
/// no inline code, no frames, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");
const FAVICON_SVG: &str = include_str!("../console/favicon.svg");

/// What the console is told about this server. (The overview's stuck
/// threshold is the server's, applied by GetOverview itself.)
#[derive(Clone, Debug, Default)]
pub struct ConsoleOptions {
    /// Where a trace id links to: a URL with `{trace_id}` in it
    /// (`--console-trace-url`); no link when `None`.
    pub trace_url: Option<String>,
}

/// Checks a `--console-trace-url` template: an http(s) URL naming `{trace_id}`.
pub fn parse_trace_url(raw: &str) -> Result<String, String> {
    let url: http::Uri = raw
        .replace("{trace_id}", "0")
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
        return Err("must be an http or https url".into());
    }
    if !raw.contains("{trace_id}") {
        return Err("must contain {trace_id}".into());
    }
    Ok(raw.to_owned())
}

/// The console's routes: the page (for every path under `/console` that the
/// page itself routes), its assets and its settings.
pub fn router(options: &ConsoleOptions, credentials_required: bool) -> Router {
    let settings = serde_json::json!({
        "traceUrl": options.trace_url,
        "credentialsRequired": credentials_required,
    })
    .to_string();
    let page = || get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) });
    Router::new()
        .route("/console", page())
        .route("/console/", page())
        .route("/console/overview", page())
        .route("/console/operations/{id}", page())
        .route(
            "/console/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .route(
            "/console/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
        .route(
            "/console/settings.json",
            get(move || {
                let settings = settings.clone();
                async move { asset("application/json", settings) }
            }),
        )
}

fn asset(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change only with the binary; a new binary must not be hidden
    // behind a cached old page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_urls_are_http_templates_naming_the_trace_id() {
        assert!(parse_trace_url("https://jaeger.internal/trace/{trace_id}").is_ok());
        assert!(parse_trace_url("https://jaeger.internal/trace/").is_err());
        assert!(parse_trace_url("javascript:alert({trace_id})").is_err());
        assert!(parse_trace_url("not a url {trace_id}").is_err());
    }

    /// Producer strings reach the page as text only: the script never parses
    /// HTML nor evaluates strings, and the page runs no inline code.
    #[test]
    fn the_page_never_turns_strings_into_markup_or_code() {
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "DOMParser",
            "createContextualFragment",
            "javascript:",
            "localStorage",
            "document.cookie",
        ] {
            assert!(!CONSOLE_JS.contains(banned), "console.js uses {banned}");
        }
        assert!(
            !INDEX_HTML.contains("<script>"),
            "inline script in index.html"
        );
        assert!(!INDEX_HTML.contains(" on"), "inline handler in index.html");
        assert!(!INDEX_HTML.contains("style="), "inline style in index.html");
        for file in [INDEX_HTML, CONSOLE_JS, CONSOLE_CSS] {
            assert!(
                !file.contains("http://") && !file.contains("https://"),
                "an outside url"
            );
        }
    }

    #[test]
    fn the_first_load_is_small() {
        let total = INDEX_HTML.len() + CONSOLE_JS.len() + CONSOLE_CSS.len() + FAVICON_SVG.len();
        assert!(total < 200 * 1024, "{total} bytes");
    }
}
