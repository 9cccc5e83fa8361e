//! What Stepgate says in its emails and text messages, in every language it speaks.
//!
//! All the wording lives in one [`Catalogue`] per language. Values (the product title, the
//! user's name, the code) are put into the catalogue's `{placeholders}` in a single pass, then
//! the askama templates in `templates/` lay the result out as plain text and as HTML, escaping
//! it for HTML there.

use std::time::Duration;

use askama::Template;

use super::{Lang, Notice};

/// The placeholders an `[sms] template` may use.
pub const SMS_PLACEHOLDERS: [&str; 2] = ["code", "product"];

/// Every text of one language. `{name}`-style placeholders are filled by [`fill`].
#[derive(Debug)]
pub struct Catalogue {
    /// `{name}`
    pub greeting: &'static str,
    pub greeting_anonymous: &'static str,
    /// `{product}`
    pub code_subject: &'static str,
    /// `{product}`
    pub code_intro: &'static str,
    /// `{duration}` (see [`duration_words`])
    pub code_validity: &'static str,
    pub code_not_you: &'static str,
    /// `{code}`, `{product}`
    pub sms: &'static str,
    /// `{product}` in every notice subject and body.
    pub two_factor_enabled_subject: &'static str,
    pub two_factor_enabled_body: &'static str,
    pub two_factor_disabled_subject: &'static str,
    pub two_factor_disabled_body: &'static str,
    pub backup_code_used_subject: &'static str,
    pub backup_code_used_body: &'static str,
    /// `{remaining}`
    pub backup_codes_left: &'static str,
    pub password_changed_subject: &'static str,
    pub password_changed_body: &'static str,
    pub factors_changed_subject: &'static str,
    pub factors_changed_body: &'static str,
    pub second_factor_failures_subject: &'static str,
    pub second_factor_failures_body: &'static str,
    pub notice_not_you: &'static str,
    /// `{product}`
    pub signature: &'static str,
}

pub const EN: Catalogue = Catalogue {
    greeting: "Hello {name},",
    greeting_anonymous: "Hello,",
    code_subject: "Your {product} verification code",
    code_intro: "Here is your {product} verification code:",
    code_validity: "It is valid for {duration} and can be used only once.",
    code_not_you: "If you did not try to sign in, change your password: someone else knows it.",
    sms: "{code} is your {product} verification code",
    two_factor_enabled_subject: "{product}: two-step verification enabled",
    two_factor_enabled_body: "Two-step verification was enabled on your {product} account.",
    two_factor_disabled_subject: "{product}: two-step verification disabled",
    two_factor_disabled_body: "Two-step verification was disabled on your {product} account. \
                               Signing in now needs only your password.",
    backup_code_used_subject: "{product}: a backup code was used",
    backup_code_used_body: "A backup code was used to sign in to your {product} account.",
    backup_codes_left: "Backup codes left: {remaining}.",
    password_changed_subject: "{product}: password changed",
    password_changed_body: "The password of your {product} account was changed.",
    factors_changed_subject: "{product}: two-step verification changed",
    factors_changed_body: "The two-step verification of your {product} account was changed: \
                           new backup codes, a new authenticator app, a new phone number, or \
                           email codes turned on or off.",
    second_factor_failures_subject: "{product}: sign-in stopped at the second step",
    second_factor_failures_body: "Someone signed in to your {product} account with the right \
                                  password, then entered wrong verification codes until \
                                  signing in was blocked for a while.",
    notice_not_you: "If this was not you, change your password and tell your administrator.",
    signature: "{product}",
};

pub const FR: Catalogue = Catalogue {
    greeting: "Bonjour {name},",
    greeting_anonymous: "Bonjour,",
    code_subject: "Votre code de vérification {product}",
    code_intro: "Voici votre code de vérification {product} :",
    code_validity: "Il est valable {duration} et ne peut servir qu'une fois.",
    code_not_you: "Si vous n'avez pas tenté de vous connecter, changez votre mot de passe : \
                   quelqu'un d'autre le connaît.",
    sms: "{code} est votre code de vérification {product}",
    two_factor_enabled_subject: "{product} : validation en deux étapes activée",
    two_factor_enabled_body: "La validation en deux étapes a été activée sur votre compte {product}.",
    two_factor_disabled_subject: "{product} : validation en deux étapes désactivée",
    two_factor_disabled_body: "La validation en deux étapes a été désactivée sur votre compte \
                               {product}. Votre mot de passe suffit désormais pour vous connecter.",
    backup_code_used_subject: "{product} : un code de secours a été utilisé",
    backup_code_used_body: "Un code de secours a servi à vous connecter à votre compte {product}.",
    backup_codes_left: "Codes de secours restants : {remaining}.",
    password_changed_subject: "{product} : mot de passe modifié",
    password_changed_body: "Le mot de passe de votre compte {product} a été modifié.",
    factors_changed_subject: "{product} : validation en deux étapes modifiée",
    factors_changed_body: "La validation en deux étapes de votre compte {product} a été \
                           modifiée : nouveaux codes de secours, nouvelle application \
                           d'authentification, nouveau numéro de téléphone, ou codes par \
                           e-mail activés ou désactivés.",
    second_factor_failures_subject: "{product} : connexion arrêtée à la deuxième étape",
    second_factor_failures_body: "Quelqu'un s'est connecté à votre compte {product} avec le bon \
                                  mot de passe, puis a saisi de mauvais codes de vérification \
                                  jusqu'à ce que la connexion soit bloquée pour un moment.",
    notice_not_you: "Si ce n'était pas vous, changez votre mot de passe et prévenez votre \
                     administrateur.",
    signature: "{product}",
};

impl Lang {
    pub fn catalogue(self) -> &'static Catalogue {
        match self {
            Lang::En => &EN,
            Lang::Fr => &FR,
        }
    }
}

/// A template cut at its `{name}` placeholders (names are `[a-z_]+`; any other brace is text).
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        // `{` is one byte, and a name is ASCII: every index below is a char boundary.
        let after = &rest[open + 1..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        if name_len > 0 && after.as_bytes().get(name_len) == Some(&b'}') {
            out.push(Piece::Text(&rest[..open]));
            out.push(Piece::Placeholder(&after[..name_len]));
            rest = &after[name_len + 1..];
        } else {
            out.push(Piece::Text(&rest[..=open]));
            rest = after;
        }
    }
    out.push(Piece::Text(rest));
    out
}

/// The placeholder names used in `template`, in order (`"{code} {x}"` -> `["code", "x"]`).
pub fn placeholders(template: &str) -> Vec<&str> {
    pieces(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Placeholder(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Replaces each `{name}` of `template` with its value, in one pass: a value that itself
/// contains `{code}` stays as it is. Unknown placeholders are left untouched.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(name) => match values.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            },
        }
    }
    out
}

/// One email, ready for the transport.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for RenderedEmail {
    /// A code email's body holds the code: only the subject is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedEmail")
            .field("subject", &self.subject)
            .field("body", &"[redacted]")
            .finish()
    }
}

/// What both layouts show: a greeting, paragraphs, optionally a code between them, a signature.
struct Content<'a> {
    lang: &'a str,
    subject: String,
    greeting: String,
    before: Vec<String>,
    code: Option<&'a str>,
    after: Vec<String>,
    signature: String,
}

#[derive(Template)]
#[template(path = "notify_email.txt")]
struct TextEmail<'a> {
    c: &'a Content<'a>,
}

#[derive(Template)]
#[template(path = "notify_email.html")]
struct HtmlEmail<'a> {
    c: &'a Content<'a>,
}

fn lang_tag(lang: Lang) -> &'static str {
    match lang {
        Lang::En => "en",
        Lang::Fr => "fr",
    }
}

/// Text from a user or the configuration made fit for a header or a one-line greeting: control
/// characters (line breaks included) become spaces, surrounding space is trimmed. Encoding is
/// left to lettre and escaping to askama.
pub fn single_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

fn greeting(cat: &Catalogue, display_name: &str) -> String {
    let name = single_line(display_name);
    if name.is_empty() {
        cat.greeting_anonymous.to_string()
    } else {
        fill(cat.greeting, &[("name", &name)])
    }
}

fn render(content: &Content<'_>) -> Result<RenderedEmail, askama::Error> {
    Ok(RenderedEmail {
        subject: content.subject.clone(),
        text: TextEmail { c: content }.render()?,
        html: HtmlEmail { c: content }.render()?,
    })
}

/// How long something lasts, in words a message can use: seconds under two minutes, minutes
/// under two hours, hours from there ("30 seconds", "10 minutes", "1 hour"; in French "30
/// secondes", "10 minutes", "1 heure"). Rounded down: a code is never said to last longer
/// than it does.
pub fn duration_words(lang: Lang, d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs < 120 {
        (secs, 0)
    } else if secs < 2 * 3600 {
        (secs / 60, 1)
    } else {
        (secs / 3600, 2)
    };
    let plural = n != 1;
    let word = match (lang, unit, plural) {
        (Lang::En, 0, false) => "second",
        (Lang::En, 0, true) => "seconds",
        (Lang::En, 1, false) => "minute",
        (Lang::En, 1, true) => "minutes",
        (Lang::En, _, false) => "hour",
        (Lang::En, _, true) => "hours",
        (Lang::Fr, 0, false) => "seconde",
        (Lang::Fr, 0, true) => "secondes",
        (Lang::Fr, 1, false) => "minute",
        (Lang::Fr, 1, true) => "minutes",
        (Lang::Fr, _, false) => "heure",
        (Lang::Fr, _, true) => "heures",
    };
    format!("{n} {word}")
}

/// The email carrying a sign-in code, valid for `valid_for` (`mfa.code_ttl`).
pub fn code_email(
    lang: Lang,
    product: &str,
    display_name: &str,
    code: &str,
    valid_for: Duration,
) -> Result<RenderedEmail, askama::Error> {
    let cat = lang.catalogue();
    let p = [("product", product)];
    let duration = duration_words(lang, valid_for);
    render(&Content {
        lang: lang_tag(lang),
        subject: fill(cat.code_subject, &p),
        greeting: greeting(cat, display_name),
        before: vec![fill(cat.code_intro, &p)],
        code: Some(code),
        after: vec![
            fill(cat.code_validity, &[("duration", &duration)]),
            cat.code_not_you.to_string(),
        ],
        signature: fill(cat.signature, &p),
    })
}

/// A notice about a change to the account.
pub fn notice_email(
    lang: Lang,
    product: &str,
    display_name: &str,
    notice: Notice,
) -> Result<RenderedEmail, askama::Error> {
    let cat = lang.catalogue();
    let p = [("product", product)];
    let (subject, mut body) = match notice {
        Notice::TwoFactorEnabled => (
            cat.two_factor_enabled_subject,
            vec![fill(cat.two_factor_enabled_body, &p)],
        ),
        Notice::TwoFactorDisabled => (
            cat.two_factor_disabled_subject,
            vec![fill(cat.two_factor_disabled_body, &p)],
        ),
        Notice::BackupCodeUsed { remaining } => (
            cat.backup_code_used_subject,
            vec![
                fill(cat.backup_code_used_body, &p),
                fill(
                    cat.backup_codes_left,
                    &[("remaining", &remaining.to_string())],
                ),
            ],
        ),
        Notice::PasswordChanged => (
            cat.password_changed_subject,
            vec![fill(cat.password_changed_body, &p)],
        ),
        Notice::FactorsChanged => (
            cat.factors_changed_subject,
            vec![fill(cat.factors_changed_body, &p)],
        ),
        Notice::SecondFactorFailures => (
            cat.second_factor_failures_subject,
            vec![fill(cat.second_factor_failures_body, &p)],
        ),
    };
    body.push(cat.notice_not_you.to_string());
    render(&Content {
        lang: lang_tag(lang),
        subject: fill(subject, &p),
        greeting: greeting(cat, display_name),
        before: body,
        code: None,
        after: Vec::new(),
        signature: fill(cat.signature, &p),
    })
}

/// The text message carrying a sign-in code: the configured template, or the language's own.
pub fn sms_text(template: Option<&str>, lang: Lang, product: &str, code: &str) -> String {
    let template = template.unwrap_or(lang.catalogue().sms);
    fill(template, &[("code", code), ("product", product)])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    #[test]
    fn durations_in_words_in_both_languages() {
        let cases = [
            (1, "1 second", "1 seconde"),
            (30, "30 seconds", "30 secondes"),
            (119, "119 seconds", "119 secondes"),
            (120, "2 minutes", "2 minutes"),
            (600, "10 minutes", "10 minutes"),
            (7199, "119 minutes", "119 minutes"),
            (7200, "2 hours", "2 heures"),
            (86_400, "24 hours", "24 heures"),
        ];
        for (secs, en, fr) in cases {
            let d = Duration::from_secs(secs);
            assert_eq!(duration_words(Lang::En, d), en);
            assert_eq!(duration_words(Lang::Fr, d), fr);
        }
    }

    #[test]
    fn the_code_email_says_how_long_the_code_lasts() {
        let mail =
            code_email(Lang::En, "Acme", "Ada", "1", Duration::from_secs(30)).expect("render");
        assert!(mail.text.contains("valid for 30 seconds"), "{}", mail.text);
        let mail = code_email(Lang::Fr, "Acme", "Ada", "1", Duration::from_secs(3 * 3600))
            .expect("render");
        assert!(mail.text.contains("valable 3 heures"), "{}", mail.text);
    }

    #[test]
    fn fill_replaces_known_placeholders_once() {
        assert_eq!(
            fill(
                "{code} is your {product} code",
                &[("code", "123456"), ("product", "Acme")]
            ),
            "123456 is your Acme code"
        );
        assert_eq!(fill("{unknown} {code}", &[("code", "1")]), "{unknown} 1");
    }

    #[test]
    fn rejects_placeholder_injection_through_a_value() {
        // A product title or display name holding `{code}` must not pull the code in twice
        // (nor anything else in): values are never scanned again.
        let text = fill(
            "{product}: {code}",
            &[("product", "{code}{code}"), ("code", "999")],
        );
        assert_eq!(text, "{code}{code}: 999");
    }

    #[test]
    fn placeholders_are_listed_in_order() {
        assert_eq!(
            placeholders("{code} a {product} {x_y} {Bad} {} {{code}} {open"),
            ["code", "product", "x_y", "code"]
        );
        assert_eq!(fill("{{code}} {", &[("code", "1")]), "{1} {");
    }

    #[test]
    fn code_email_has_code_validity_and_warning_in_both_parts() {
        let mail =
            code_email(Lang::En, "Acme Portal", "Ada", "482913", TEN_MINUTES).expect("render");
        assert_eq!(mail.subject, "Your Acme Portal verification code");
        for part in [&mail.text, &mail.html] {
            assert!(part.contains("482913"), "{part}");
            assert!(part.contains("Hello Ada,"), "{part}");
            assert!(part.contains("valid for 10 minutes"), "{part}");
            assert!(
                part.contains("If you did not try to sign in, change your password"),
                "{part}"
            );
        }
        assert!(mail.html.contains("<html lang=\"en\">"));
    }

    #[test]
    fn code_email_in_french() {
        let mail = code_email(Lang::Fr, "Acme", "Zoé", "482913", TEN_MINUTES).expect("render");
        assert_eq!(mail.subject, "Votre code de vérification Acme");
        assert!(mail.text.contains("Bonjour Zoé,"));
        assert!(mail.text.contains("valable 10 minutes"));
        assert!(mail.text.contains("changez votre mot de passe"));
        assert!(mail.html.contains("<html lang=\"fr\">"));
        assert!(mail.html.contains("482913"));
    }

    #[test]
    fn rejects_html_injection_through_display_name_and_product() {
        let mail = code_email(
            Lang::En,
            "<b>Acme</b>",
            "<script>alert(1)</script>",
            "482913",
            TEN_MINUTES,
        )
        .expect("render");
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(!mail.html.contains("<b>Acme</b>"), "{}", mail.html);
        assert!(
            mail.html.contains("&#60;script&#62;alert(1)"),
            "{}",
            mail.html
        );
        // The plain-text part is not HTML: it shows the name as typed.
        assert!(mail.text.contains("Hello <script>alert(1)</script>,"));
    }

    #[test]
    fn single_line_removes_line_breaks() {
        assert_eq!(
            single_line(" Eve\r\nBcc: x@evil.example "),
            "Eve  Bcc: x@evil.example"
        );
        assert_eq!(single_line("Zoé"), "Zoé");
        let mail = code_email(Lang::En, "Acme", "Eve\nBcc: x", "1", TEN_MINUTES).expect("render");
        assert!(
            mail.text.starts_with("Hello Eve Bcc: x,\n"),
            "{}",
            mail.text
        );
    }

    #[test]
    fn empty_display_name_gets_a_plain_greeting() {
        let mail = code_email(Lang::En, "Acme", "  ", "1", TEN_MINUTES).expect("render");
        assert!(mail.text.starts_with("Hello,\n"), "{}", mail.text);
    }

    #[test]
    fn every_notice_has_its_own_subject_in_each_language() {
        let notices = [
            Notice::TwoFactorEnabled,
            Notice::TwoFactorDisabled,
            Notice::BackupCodeUsed { remaining: 3 },
            Notice::PasswordChanged,
            Notice::FactorsChanged,
            Notice::SecondFactorFailures,
        ];
        for lang in [Lang::En, Lang::Fr] {
            let mut subjects = Vec::new();
            for notice in notices {
                let mail = notice_email(lang, "Acme", "Ada", notice).expect("render");
                assert!(mail.subject.starts_with("Acme"), "{}", mail.subject);
                assert!(mail.text.contains(lang.catalogue().notice_not_you));
                assert!(mail.html.contains("Ada"));
                subjects.push(mail.subject);
            }
            subjects.sort();
            subjects.dedup();
            assert_eq!(subjects.len(), notices.len());
        }
        let used = notice_email(
            Lang::En,
            "Acme",
            "Ada",
            Notice::BackupCodeUsed { remaining: 3 },
        )
        .expect("render");
        assert!(used.text.contains("Backup codes left: 3."));
        let fr = notice_email(Lang::Fr, "Acme", "Ada", Notice::PasswordChanged).expect("render");
        assert!(
            fr.text
                .contains("Le mot de passe de votre compte Acme a été modifié.")
        );
    }

    #[test]
    fn sms_uses_the_template_or_the_language_default() {
        assert_eq!(
            sms_text(Some("Code {code} ({product})"), Lang::Fr, "Acme", "123456"),
            "Code 123456 (Acme)"
        );
        assert_eq!(
            sms_text(None, Lang::En, "Acme", "123456"),
            "123456 is your Acme verification code"
        );
        assert_eq!(
            sms_text(None, Lang::Fr, "Acme", "123456"),
            "123456 est votre code de vérification Acme"
        );
    }

    #[test]
    fn rendered_email_debug_hides_the_body() {
        let mail = code_email(Lang::En, "Acme", "Ada", "482913", TEN_MINUTES).expect("render");
        let shown = format!("{mail:?}");
        assert!(!shown.contains("482913"));
        assert!(shown.contains("[redacted]"));
    }
}
