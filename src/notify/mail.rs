//! Email transports: SMTP (implicit TLS, required STARTTLS, or plaintext to loopback only) and a
//! directory of `.eml` files.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{
    Address, AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::NotifyError;
use super::config::{EmailConfig, EmailTransport, SmtpConfig, SmtpSecurity};
use super::messages::{RenderedEmail, single_line};

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File {
        transport: AsyncFileTransport<Tokio1Executor>,
        dir: PathBuf,
    },
}

/// Builds and delivers messages for one configured `[email]` section.
pub struct MailSender {
    transport: Transport,
    from: Mailbox,
    timeout: Duration,
}

impl MailSender {
    pub fn new(config: &EmailConfig) -> Result<Self, NotifyError> {
        let transport = match &config.transport {
            EmailTransport::Smtp(smtp) => Transport::Smtp(smtp_transport(smtp, config.timeout)?),
            EmailTransport::File { dir } => {
                // New directories only its owner may read: the messages hold login codes.
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| {
                        NotifyError::Setup(format!(
                            "email.dir: cannot create {}: {e}",
                            dir.display()
                        ))
                    })?;
                Transport::File {
                    transport: AsyncFileTransport::new(dir),
                    dir: dir.clone(),
                }
            }
        };
        Ok(MailSender {
            transport,
            from: config.from.clone(),
            timeout: config.timeout,
        })
    }

    /// Sends `rendered` (plain text and HTML alternatives) to `to`, dated `date`.
    pub async fn send(
        &self,
        to: &str,
        display_name: &str,
        rendered: &RenderedEmail,
        date: SystemTime,
    ) -> Result<(), NotifyError> {
        let message = self.message(to, display_name, rendered, date)?;
        match &self.transport {
            Transport::Smtp(smtp) => tokio::time::timeout(self.timeout, smtp.send(message))
                .await
                .map_err(|_| NotifyError::Timeout)?
                .map(|_| ())
                .map_err(|e| NotifyError::Send(e.to_string())),
            Transport::File { transport, .. } => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| NotifyError::Send(e.to_string())),
        }
    }

    /// SMTP: connect, TLS, EHLO, AUTH if configured, NOOP. File: the directory exists.
    pub async fn check(&self) -> Result<(), NotifyError> {
        match &self.transport {
            Transport::Smtp(smtp) => {
                match tokio::time::timeout(self.timeout, smtp.test_connection()).await {
                    Err(_) => Err(NotifyError::Timeout),
                    Ok(Ok(true)) => Ok(()),
                    Ok(Ok(false)) => Err(NotifyError::Send(
                        "the SMTP server did not answer NOOP".to_string(),
                    )),
                    Ok(Err(e)) => Err(NotifyError::Send(e.to_string())),
                }
            }
            Transport::File { dir, .. } => match tokio::fs::metadata(dir).await {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(NotifyError::Send(format!(
                    "{} is not a directory",
                    dir.display()
                ))),
                Err(e) => Err(NotifyError::Send(format!("{}: {e}", dir.display()))),
            },
        }
    }

    fn message(
        &self,
        to: &str,
        display_name: &str,
        rendered: &RenderedEmail,
        date: SystemTime,
    ) -> Result<Message, NotifyError> {
        let address: Address = to.trim().parse().map_err(|_| NotifyError::InvalidAddress)?;
        let name = single_line(display_name);
        let recipient = Mailbox::new((!name.is_empty()).then_some(name), address);
        Message::builder()
            .from(self.from.clone())
            .to(recipient)
            .subject(single_line(&rendered.subject))
            .date(date)
            .multipart(MultiPart::alternative_plain_html(
                rendered.text.clone(),
                rendered.html.clone(),
            ))
            .map_err(|e| NotifyError::Render(e.to_string()))
    }
}

fn smtp_transport(
    config: &SmtpConfig,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
    // The connection pool spawns its housekeeping task on the current runtime.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(NotifyError::Setup(
            "the SMTP transport must be built inside a Tokio runtime".to_string(),
        ));
    }
    let tls = match config.security {
        SmtpSecurity::ImplicitTls => Tls::Wrapper(tls_parameters(config)?),
        SmtpSecurity::StartTls => Tls::Required(tls_parameters(config)?),
        SmtpSecurity::Plaintext => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
        .port(config.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(credentials) = &config.credentials {
        builder = builder.credentials(Credentials::new(
            credentials.username.clone(),
            credentials.password.expose().to_string(),
        ));
    }
    Ok(builder.build())
}

/// Web PKI roots plus the optional `ca_file`; the certificate must name `config.host`.
fn tls_parameters(config: &SmtpConfig) -> Result<TlsParameters, NotifyError> {
    let mut builder = TlsParameters::builder(config.host.clone())
        .certificate_store(CertificateStore::WebpkiRoots);
    if let Some(path) = &config.ca_file {
        let setup = |reason: String| {
            NotifyError::Setup(format!("email.ca_file: {}: {reason}", path.display()))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| setup(e.to_string()))?;
        if certs.is_empty() {
            return Err(setup("no PEM certificate found".to_string()));
        }
        for cert in certs {
            let cert = Certificate::from_der(cert.to_vec()).map_err(|e| setup(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build_rustls()
        .map_err(|e| NotifyError::Setup(format!("email: TLS setup: {e}")))
}
