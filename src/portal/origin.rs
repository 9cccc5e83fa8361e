//! Cross-site request refusal for the portal's state-changing endpoints.
//!
//! A POST is refused when the browser says it is cross-site (`Sec-Fetch-Site: cross-site`) or when
//! its `Origin` is not the gateway's own origin. Requests without either header (non-browser
//! clients) carry no ambient browser authority over another site and are accepted.

use http::HeaderMap;
use http::header::ORIGIN;

use crate::error::Error;

pub fn check_same_origin(
    headers: &HeaderMap,
    proto: &str,
    host: Option<&str>,
) -> Result<(), Error> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes().eq_ignore_ascii_case(b"cross-site")
    {
        return Err(Error::CrossSite);
    }
    let same_origin_fetch = headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"same-origin"));
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().map_err(|_| Error::CrossSite)?;
        // Under `Referrer-Policy: no-referrer` a browser sends `Origin: null` even for its own
        // forms; it then still says where the request came from in `Sec-Fetch-Site`, which
        // pages cannot set.
        if origin == "null" && same_origin_fetch {
            return Ok(());
        }
        let Some(host) = host else {
            return Err(Error::CrossSite);
        };
        let expected = format!("{proto}://{host}");
        if !origin.eq_ignore_ascii_case(&expected) {
            return Err(Error::CrossSite);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn refuses_cross_site_fetch_metadata() {
        let h = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(check_same_origin(&h, "https", Some("auth.example.com")).is_err());
    }

    #[test]
    fn refuses_foreign_or_null_origin() {
        for o in ["https://evil.example", "null", "http://auth.example.com"] {
            let mut h = HeaderMap::new();
            h.insert(ORIGIN, HeaderValue::from_static(o));
            assert!(
                check_same_origin(&h, "https", Some("auth.example.com")).is_err(),
                "{o}"
            );
        }
    }

    #[test]
    fn accepts_null_origin_of_own_form_under_no_referrer() {
        let h = headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]);
        assert!(check_same_origin(&h, "http", Some("127.0.0.1:8080")).is_ok());
    }

    #[test]
    fn refuses_null_origin_from_another_site() {
        for site in ["cross-site", "same-site", "none"] {
            let mut h = headers(&[("origin", "null")]);
            h.insert("sec-fetch-site", HeaderValue::from_static(site));
            assert!(
                check_same_origin(&h, "https", Some("auth.example.com")).is_err(),
                "{site}"
            );
        }
    }

    #[test]
    fn accepts_same_origin_and_plain_clients() {
        let h = headers(&[
            ("origin", "https://auth.example.com"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(check_same_origin(&h, "https", Some("auth.example.com")).is_ok());
        assert!(check_same_origin(&HeaderMap::new(), "https", Some("auth.example.com")).is_ok());
    }
}
