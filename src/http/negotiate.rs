//! Content negotiation: does this client want an HTML page or JSON?

use http::HeaderMap;
use http::header::ACCEPT;

/// How an answer should be rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
}

/// Quality the `Accept` header gives to `text/html` and to `application/json`.
fn qualities(headers: &HeaderMap) -> (f32, f32) {
    let mut html: f32 = 0.0;
    let mut json: f32 = 0.0;
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let Ok(m) = item.trim().parse::<mime::Mime>() else {
                continue;
            };
            let q = m
                .get_param("q")
                .and_then(|q| q.as_str().parse::<f32>().ok())
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            match (m.type_(), m.subtype()) {
                (mime::TEXT, mime::HTML) => html = html.max(q),
                (mime::APPLICATION, mime::JSON) => json = json.max(q),
                _ => {}
            }
        }
    }
    (html, json)
}

/// A browser navigating: it prefers HTML (see [`preferred`]) and is not a script
/// (`X-Requested-With`). Such clients are redirected; everyone else gets a status and JSON.
pub fn is_browser(headers: &HeaderMap) -> bool {
    preferred(headers) == Format::Html && !headers.contains_key("x-requested-with")
}

/// JSON when the client prefers `application/json` over `text/html`, or does not ask for HTML at
/// all (API clients, curl); HTML otherwise.
pub fn preferred(headers: &HeaderMap) -> Format {
    let (html, json) = qualities(headers);
    if json > html || html == 0.0 {
        Format::Json
    } else {
        Format::Html
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn browsers_get_html() {
        let h = accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");
        assert_eq!(preferred(&h), Format::Html);
        assert!(is_browser(&h));
    }

    #[test]
    fn api_clients_get_json() {
        assert_eq!(preferred(&accept("application/json")), Format::Json);
        assert_eq!(preferred(&accept("*/*")), Format::Json);
        assert_eq!(preferred(&HeaderMap::new()), Format::Json);
        assert_eq!(
            preferred(&accept("text/html;q=0.5, application/json")),
            Format::Json
        );
        assert!(!is_browser(&accept("application/json")));
    }

    #[test]
    fn xhr_is_not_a_browser_navigation() {
        let mut h = accept("text/html");
        h.insert(
            "x-requested-with",
            HeaderValue::from_static("XMLHttpRequest"),
        );
        assert!(!is_browser(&h));
    }
}
