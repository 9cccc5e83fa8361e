//! SMS through a JSON webhook: `POST {"to": "+33...", "message": "..."}`.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

use super::config::SmsConfig;
use super::{Lang, NotifyError, messages};

type WebhookClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Posts codes to the configured webhook.
pub struct SmsSender {
    client: WebhookClient,
    config: SmsConfig,
}

impl SmsSender {
    pub fn new(config: &SmsConfig) -> Result<Self, NotifyError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| NotifyError::Setup(format!("sms: TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.timeout));
        // Configuration allows plain http only to loopback hosts.
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(SmsSender {
            client,
            config: config.clone(),
        })
    }

    pub async fn send_code(
        &self,
        to_phone: &str,
        lang: Lang,
        product: &str,
        code: &str,
    ) -> Result<(), NotifyError> {
        let to = e164(to_phone).ok_or(NotifyError::InvalidAddress)?;
        let message = messages::sms_text(self.config.template.as_deref(), lang, product, code);
        let body = serde_json::json!({ "to": to, "message": message }).to_string();
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.config.webhook_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, "Stepgate");
        if let Some(token) = &self.config.bearer_token {
            let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| NotifyError::Setup("sms.bearer_token is not a header value".into()))?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| NotifyError::Send(e.to_string()))?;
        let response = tokio::time::timeout(self.config.timeout, self.client.request(request))
            .await
            .map_err(|_| NotifyError::Timeout)?
            .map_err(|e| {
                let text = format!("SMS webhook: {}", error_chain(&e));
                if e.is_connect() {
                    NotifyError::Send(text)
                } else {
                    NotifyError::Interrupted(text)
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(NotifyError::Webhook {
                status: status.as_u16(),
            })
        }
    }
}

/// `+` then 7 to 15 digits, the first not 0; spaces, dots, dashes and parentheses are dropped.
pub fn e164(phone: &str) -> Option<String> {
    let compact: String = phone
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+')?;
    let ok = (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then_some(compact)
}

/// An error and its sources on one line (hyper's "client error (Connect)" alone says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_must_be_e164() {
        assert_eq!(e164("+33 6 12 34 56 78").as_deref(), Some("+33612345678"));
        assert_eq!(e164("+1 (555) 010-9999").as_deref(), Some("+15550109999"));
        assert_eq!(e164("0612345678"), None);
        assert_eq!(e164("+0612345678"), None);
        assert_eq!(e164("+33 6 12 34 56 78 90 12 34"), None);
        assert_eq!(e164("+336123x5678"), None);
        assert_eq!(e164("+123"), None);
        assert_eq!(e164(""), None);
    }
}
