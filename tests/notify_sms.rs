//! SMS codes through the JSON webhook, against an in-process sink.

mod common;

use figment::Figment;
use figment::providers::{Format, Toml};

use common::{SmsSink, refused_addr, toml_string};
use stepgate::config::ConfigErrors;
use stepgate::notify::{Lang, Notifier, NotifyError, RawSms, SmsConfig, validate_sms};

const CODE: &str = "482913";

fn sms_config(toml: &str) -> SmsConfig {
    #[derive(serde::Deserialize)]
    struct Doc {
        sms: RawSms,
    }
    let doc: Doc = Figment::from(Toml::string(toml))
        .extract()
        .expect("[sms] section");
    let mut errors = ConfigErrors::default();
    let config = validate_sms(&doc.sms, &mut errors);
    assert!(errors.is_empty(), "{errors}");
    config.expect("valid [sms]")
}

fn notifier(url: &str, extra: &str) -> Notifier {
    let config = sms_config(&format!(
        "[sms]\nwebhook_url = {}\n{extra}",
        toml_string(url)
    ));
    Notifier::new(None, Some(&config), "Acme").expect("notifier")
}

#[tokio::test]
async fn sms_post_body_and_headers_are_exact() {
    let sink = SmsSink::start().await;
    let notifier = notifier(
        &sink.url(),
        "bearer_token = \"tok-123\"\ntemplate = \"{code} is your {product} code\"",
    );
    assert!(notifier.sms_enabled());
    assert!(!notifier.email_enabled());
    notifier
        .send_sms_code("+33 6 12 34 56 78", Lang::Fr, CODE)
        .await
        .expect("sent");

    let request = sink.wait_for_requests(1).await.remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/send");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("authorization"), Some("Bearer tok-123"));
    assert_eq!(
        request.json(),
        serde_json::json!({ "to": "+33612345678", "message": "482913 is your Acme code" })
    );
}

#[tokio::test]
async fn sms_default_text_follows_the_language_and_sends_no_token() {
    let sink = SmsSink::start().await;
    let notifier = notifier(&sink.url(), "");
    notifier
        .send_sms_code("+15550109999", Lang::Fr, CODE)
        .await
        .expect("sent");
    notifier
        .send_sms_code("+15550109999", Lang::En, CODE)
        .await
        .expect("sent");
    let requests = sink.wait_for_requests(2).await;
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(
        requests[0].json()["message"],
        "482913 est votre code de vérification Acme"
    );
    assert_eq!(
        requests[1].json()["message"],
        "482913 is your Acme verification code"
    );
}

#[tokio::test]
async fn webhook_error_status_is_reported() {
    let sink = SmsSink::start_with_status(500).await;
    let notifier = notifier(&sink.url(), "");
    let result = notifier.send_sms_code("+33612345678", Lang::En, CODE).await;
    assert_eq!(result, Err(NotifyError::Webhook { status: 500 }));
    assert_eq!(sink.received().len(), 1);

    sink.set_status(429);
    let result = notifier.send_sms_code("+33612345678", Lang::En, CODE).await;
    assert_eq!(result, Err(NotifyError::Webhook { status: 429 }));

    sink.set_status(202);
    notifier
        .send_sms_code("+33612345678", Lang::En, CODE)
        .await
        .expect("2xx is success");
}

#[tokio::test]
async fn unreachable_webhook_is_an_error() {
    let notifier = notifier(&format!("http://{}/send", refused_addr()), "");
    let result = notifier.send_sms_code("+33612345678", Lang::En, CODE).await;
    match result {
        Err(NotifyError::Send(reason)) => assert!(!reason.contains(CODE), "{reason}"),
        other => panic!("expected a send error, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_phone_number_is_refused_before_posting() {
    let sink = SmsSink::start().await;
    let notifier = notifier(&sink.url(), "");
    for phone in [
        "0612345678",
        "+33 6 12 34 56 7x",
        "",
        "+33612345678\r\nX: 1",
    ] {
        let result = notifier.send_sms_code(phone, Lang::En, CODE).await;
        assert_eq!(result, Err(NotifyError::InvalidAddress), "{phone:?}");
    }
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn rejects_placeholder_injection_through_the_product_title() {
    let sink = SmsSink::start().await;
    let config = sms_config(&format!(
        "[sms]\nwebhook_url = {}\ntemplate = \"{{product}}: {{code}}\"",
        toml_string(&sink.url())
    ));
    let notifier = Notifier::new(None, Some(&config), "{code}").expect("notifier");
    notifier
        .send_sms_code("+33612345678", Lang::En, CODE)
        .await
        .expect("sent");
    let request = sink.wait_for_requests(1).await.remove(0);
    assert_eq!(request.json()["message"], "{code}: 482913");
}
