//! The portal's languages: which one a request gets, and its message catalogue.
//!
//! Texts live in `locales/<tag>.toml` (one file per language, sections of `key = "text"`),
//! embedded in the binary and parsed once. A page asks for `section.key`; `{name}` placeholders
//! are filled by [`Tr::fill`] and escaped by the template like any other value.
//!
//! The language is, in order: `?lang=en|fr` on the request (then remembered in the
//! `stepgate_lang` cookie), that cookie, `Accept-Language`, English.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::sync::LazyLock;

use cookie::{Cookie, SameSite};
use http::HeaderMap;
use http::header::ACCEPT_LANGUAGE;

use crate::notify::Lang;
use crate::notify::messages::fill;

/// The cookie that remembers a language chosen with `?lang=`.
pub const LANG_COOKIE: &str = "stepgate_lang";
/// How long the language cookie lasts: one year.
pub const LANG_COOKIE_MAX_AGE_SECS: i64 = 365 * 24 * 60 * 60;

/// Every language the portal speaks, English (the fallback) first.
pub const LANGS: [Lang; 2] = [Lang::En, Lang::Fr];

const EN_SOURCE: &str = include_str!("../../locales/en.toml");
const FR_SOURCE: &str = include_str!("../../locales/fr.toml");

fn source(lang: Lang) -> &'static str {
    match lang {
        Lang::En => EN_SOURCE,
        Lang::Fr => FR_SOURCE,
    }
}

/// One language's texts, by `section.key`.
type Catalogue = HashMap<String, String>;

/// Parses a catalogue: top-level tables of strings, flattened to `section.key`.
fn parse(text: &str) -> Result<Catalogue, String> {
    let tables: BTreeMap<String, BTreeMap<String, String>> =
        toml::from_str(text).map_err(|e| e.to_string())?;
    Ok(tables
        .into_iter()
        .flat_map(|(section, entries)| {
            entries
                .into_iter()
                .map(move |(key, text)| (format!("{section}.{key}"), text))
        })
        .collect())
}

static CATALOGUES: LazyLock<[Catalogue; 2]> = LazyLock::new(|| {
    LANGS.map(|lang| {
        parse(source(lang)).unwrap_or_else(|e| {
            // Cannot happen with the embedded files: `every_catalogue_parses` pins it.
            tracing::error!(lang = lang.tag(), error = %e, "portal catalogue does not parse");
            Catalogue::new()
        })
    })
});

fn catalogue(lang: Lang) -> &'static Catalogue {
    &CATALOGUES[match lang {
        Lang::En => 0,
        Lang::Fr => 1,
    }]
}

/// The texts of one language, as pages use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tr {
    lang: Lang,
}

impl Tr {
    pub fn new(lang: Lang) -> Tr {
        Tr { lang }
    }

    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// The BCP 47 tag, for `<html lang>`.
    pub fn tag(&self) -> &'static str {
        self.lang.tag()
    }

    /// The text of `key`; English when this language lacks it, the key itself when no
    /// catalogue has it (the catalogue tests make both impossible).
    pub fn get<'k>(&self, key: &'k str) -> &'k str {
        catalogue(self.lang)
            .get(key)
            .or_else(|| catalogue(Lang::En).get(key))
            .map(String::as_str)
            .unwrap_or(key)
    }

    /// The text of `key` with its `{name}` placeholder replaced by `value`.
    pub fn fill(&self, key: &str, name: &str, value: impl Display) -> String {
        fill(self.get(key), &[(name, &value.to_string())])
    }
}

/// The language a `?lang=` query asks for, when it names one we speak.
pub fn from_query(query: Option<&str>) -> Option<Lang> {
    let query = query?;
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "lang")
        .find_map(|(_, v)| exact(&v))
}

/// `en` or `fr`, exactly (any case): a parameter or a cookie, not a negotiation.
fn exact(value: &str) -> Option<Lang> {
    LANGS
        .into_iter()
        .find(|l| l.tag().eq_ignore_ascii_case(value.trim()))
}

fn from_cookie(headers: &HeaderMap) -> Option<Lang> {
    crate::http::cookies::read(headers, LANG_COOKIE)
        .into_iter()
        .find_map(exact)
}

/// The best language of an `Accept-Language` value: the supported range with the highest
/// weight, the earliest on ties; `*` means English; `None` when nothing we speak is accepted.
pub fn from_accept_language(value: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q.is_nan() || q <= 0.0 {
            continue;
        }
        let primary = range.split(['-', '_']).next().unwrap_or("");
        let lang = if primary == "*" {
            Some(Lang::En)
        } else {
            exact(primary)
        };
        if let Some(lang) = lang
            && best.is_none_or(|(b, _)| q > b)
        {
            best = Some((q, lang));
        }
    }
    best.map(|(_, lang)| lang)
}

/// The language of a request: `?lang=`, then the cookie, then `Accept-Language`, then English.
pub fn negotiate(headers: &HeaderMap, query: Option<&str>) -> Lang {
    from_query(query)
        .or_else(|| from_cookie(headers))
        .or_else(|| {
            headers
                .get_all(ACCEPT_LANGUAGE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(from_accept_language)
        })
        .unwrap_or(Lang::En)
}

/// `Set-Cookie` value remembering `lang` for a year, on every path (error pages of proxied
/// paths speak it too).
pub fn lang_cookie(lang: Lang, tls: bool) -> String {
    Cookie::build((LANG_COOKIE, lang.tag()))
        .path("/")
        .http_only(true)
        .secure(tls)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(LANG_COOKIE_MAX_AGE_SECS))
        .build()
        .to_string()
}

/// Every key of the given language's catalogue (for tests and tooling).
pub fn keys(lang: Lang) -> impl Iterator<Item = &'static str> {
    catalogue(lang).keys().map(String::as_str)
}

/// Does the catalogue of `lang` hold `key`?
pub fn has_key(lang: Lang, key: &str) -> bool {
    catalogue(lang).contains_key(key)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn header(name: http::header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().unwrap());
        h
    }

    #[test]
    fn every_catalogue_parses() {
        for lang in LANGS {
            let cat = parse(source(lang)).unwrap_or_else(|e| panic!("{}: {e}", lang.tag()));
            assert!(cat.len() > 100, "{}: only {} keys", lang.tag(), cat.len());
        }
    }

    #[test]
    fn no_key_is_missing_from_any_catalogue() {
        let en: BTreeSet<&str> = keys(Lang::En).collect();
        for lang in LANGS {
            let other: BTreeSet<&str> = keys(lang).collect();
            let missing: Vec<_> = en.difference(&other).collect();
            let extra: Vec<_> = other.difference(&en).collect();
            assert!(missing.is_empty(), "{} lacks {missing:?}", lang.tag());
            assert!(
                extra.is_empty(),
                "{} has keys English lacks: {extra:?}",
                lang.tag()
            );
        }
    }

    #[test]
    fn translations_keep_the_placeholders_of_english() {
        for key in keys(Lang::En) {
            let mut want = crate::notify::messages::placeholders(Tr::new(Lang::En).get(key));
            want.sort_unstable();
            for lang in LANGS {
                let mut got = crate::notify::messages::placeholders(Tr::new(lang).get(key));
                got.sort_unstable();
                assert_eq!(got, want, "{} {key}", lang.tag());
            }
        }
    }

    #[test]
    fn french_is_not_english_copied() {
        let fr = Tr::new(Lang::Fr);
        let en = Tr::new(Lang::En);
        // A handful of keys must differ; names of languages may not.
        for key in ["login.submit", "settings.heading", "error.forbidden_title"] {
            assert_ne!(fr.get(key), en.get(key), "{key}");
        }
    }

    /// Every `t.get("…")` / `t.fill("…", …)` key a template uses exists in every catalogue.
    #[test]
    fn templates_use_only_known_keys() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/portal/templates");
        let pattern = regex::Regex::new(r#"\bt\.(?:get|fill)\("([^"]+)""#).unwrap();
        let mut used = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for cap in pattern.captures_iter(&text) {
                used += 1;
                for lang in LANGS {
                    assert!(
                        has_key(lang, &cap[1]),
                        "{} uses {:?}, missing from {}",
                        path.display(),
                        &cap[1],
                        lang.tag()
                    );
                }
            }
        }
        assert!(
            used > 50,
            "only {used} keys found: is the pattern still right?"
        );
    }

    #[test]
    fn missing_key_falls_back_to_the_key() {
        assert_eq!(Tr::new(Lang::Fr).get("no.such_key"), "no.such_key");
    }

    #[test]
    fn fill_puts_the_value_in_place() {
        assert_eq!(
            Tr::new(Lang::Fr).fill("error.retry_seconds", "seconds", 42),
            "Réessayez dans 42 secondes."
        );
    }

    #[test]
    fn accept_language_weights_are_honoured() {
        assert_eq!(
            from_accept_language("fr-FR,fr;q=0.9,en;q=0.8"),
            Some(Lang::Fr)
        );
        assert_eq!(
            from_accept_language("de, en;q=0.5, fr;q=0.7"),
            Some(Lang::Fr)
        );
        assert_eq!(from_accept_language("en-GB"), Some(Lang::En));
        assert_eq!(from_accept_language("de-DE, it"), None);
        assert_eq!(from_accept_language("fr;q=0, en;q=0.1"), Some(Lang::En));
        assert_eq!(from_accept_language("*"), Some(Lang::En));
        assert_eq!(from_accept_language("FR-ca"), Some(Lang::Fr));
        assert_eq!(from_accept_language(""), None);
    }

    #[test]
    fn query_beats_cookie_beats_accept_language() {
        let mut h = header(ACCEPT_LANGUAGE, "fr");
        assert_eq!(negotiate(&h, None), Lang::Fr);
        h.insert(http::header::COOKIE, "stepgate_lang=en".parse().unwrap());
        assert_eq!(negotiate(&h, None), Lang::En);
        assert_eq!(negotiate(&h, Some("rd=%2F&lang=fr")), Lang::Fr);
        assert_eq!(negotiate(&HeaderMap::new(), None), Lang::En);
    }

    #[test]
    fn unknown_language_values_are_ignored() {
        let h = header(http::header::COOKIE, "stepgate_lang=<script>");
        assert_eq!(negotiate(&h, Some("lang=de")), Lang::En);
        assert_eq!(from_query(Some("lang=fr-x")), None);
        assert_eq!(from_query(Some("xlang=fr")), None);
    }

    #[test]
    fn the_language_cookie_lasts_a_year_and_stays_first_party() {
        let c = lang_cookie(Lang::Fr, true);
        assert!(c.starts_with("stepgate_lang=fr"), "{c}");
        assert!(c.contains("SameSite=Lax"), "{c}");
        assert!(c.contains("Max-Age=31536000"), "{c}");
        assert!(c.contains("Path=/"), "{c}");
        assert!(c.contains("Secure"), "{c}");
        assert!(!lang_cookie(Lang::En, false).contains("Secure"));
    }
}
