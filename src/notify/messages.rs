//! What Stepgate says in its emails and text messages, in every language it speaks.
//!
//! All the wording lives in one [`Catalogue`] per language. Values (the product title, the
//! user's name, the code) are put into the catalogue's `{placeholders}` in a single pass, then
//! the askama templates in `templates/` lay the result out as plain text and as HTML, escaping
//! it for HTML there.

use std::time::Duration;

use askama::Template;

use super::{Lang, Notice};

/// How long an emailed sign-in code stays valid, as the message tells the user.
pub const EMAIL_CODE_VALIDITY: Duration = Duration::from_secs(10 * 60);

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
    /// `{minutes}`
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
    pub notice_not_you: &'static str,
    /// `{product}`
    pub signature: &'static str,
}

pub const EN: Catalogue = Catalogue {
    greeting: "Hello {name},",
    greeting_anonymous: "Hello,",
    code_subject: "Your {product} verification code",
    code_intro: "Here is your {product} verification code:",
    code_validity: "It is valid for {minutes} minutes and can be used only once.",
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
    notice_not_you: "If this was not you, change your password and tell your administrator.",
    signature: "{product}",
};

pub const FR: Catalogue = Catalogue {
    greeting: "Bonjour {name},",
    greeting_anonymous: "Bonjour,",
    code_subject: "Votre code de vérification {product}",
    code_intro: "Voici votre code de vérification {product} :",
    code_validity: "Il est valable {minutes} minutes et ne peut servir qu'une fois.",
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

/// The email carrying a sign-in code.
pub fn code_email(
    lang: Lang,
    product: &str,
    display_name: &str,
    code: &str,
) -> Result<RenderedEmail, askama::Error> {
    let cat = lang.catalogue();
    let p = [("product", product)];
    let minutes = (EMAIL_CODE_VALIDITY.as_secs() / 60).to_string();
    render(&Content {
        lang: lang_tag(lang),
        subject: fill(cat.code_subject, &p),
        greeting: greeting(cat, display_name),
        before: vec![fill(cat.code_intro, &p)],
        code: Some(code),
        after: vec![
            fill(cat.code_validity, &[("minutes", &minutes)]),
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
        let mail = code_email(Lang::En, "Acme Portal", "Ada", "482913").expect("render");
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
        let mail = code_email(Lang::Fr, "Acme", "Zoé", "482913").expect("render");
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
        let mail = code_email(Lang::En, "Acme", "Eve\nBcc: x", "1").expect("render");
        assert!(
            mail.text.starts_with("Hello Eve Bcc: x,\n"),
            "{}",
            mail.text
        );
    }

    #[test]
    fn empty_display_name_gets_a_plain_greeting() {
        let mail = code_email(Lang::En, "Acme", "  ", "1").expect("render");
        assert!(mail.text.starts_with("Hello,\n"), "{}", mail.text);
    }

    #[test]
    fn every_notice_has_its_own_subject_in_each_language() {
        let notices = [
            Notice::TwoFactorEnabled,
            Notice::TwoFactorDisabled,
            Notice::BackupCodeUsed { remaining: 3 },
            Notice::PasswordChanged,
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
        let mail = code_email(Lang::En, "Acme", "Ada", "482913").expect("render");
        let shown = format!("{mail:?}");
        assert!(!shown.contains("482913"));
        assert!(shown.contains("[redacted]"));
    }
}
