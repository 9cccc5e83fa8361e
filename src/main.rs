//! The `stepgate` command line: parse arguments, load configuration, call into the library.

/// jemalloc keeps buffers of different sizes apart and gives freed pages back to the system:
/// after a burst of thousands of connections (each holding HTTP buffers for a moment), an idle
/// gateway shrinks back instead of keeping its peak.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use stepgate::admin::client::{self, AdminError, PasswordSource, UserCommand};
use stepgate::admin::policy_check::{self, PolicyQuery};
use stepgate::auth::factors::secret_box::{KeyFileState, LOOSE_KEY_FILE, SecretBox};
use stepgate::auth::password::PasswordSettings;
use stepgate::clock::SystemClock;
use stepgate::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "stepgate",
    version,
    about = "Reverse-proxy authentication gateway with 2FA and step-up"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file (TOML). Environment variables STEPGATE_SECTION__KEY override its values.
    #[arg(
        long,
        short,
        env = "STEPGATE_CONFIG",
        default_value = "config/stepgate.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Validate a configuration file: exit 0, or print every problem and exit 1.
    CheckConfig(CheckConfigArgs),
    /// Start a self-contained demo: the gateway in front of a built-in demo console.
    Demo(stepgate::demo::DemoOptions),
    /// Manage user accounts (through the running gateway, or on the store when it is stopped).
    User(UserArgs),
    /// Print an argon2id PHC hash of a password, with the configured parameters.
    HashPassword(HashPasswordArgs),
    /// Show which access rule a request meets and what it decides.
    CheckPolicy(CheckPolicyArgs),
}

const DEFAULT_CONFIG: &str = "config/stepgate.toml";

#[derive(clap::Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Also connect to the configured SMTP server (TLS, EHLO, AUTH) and report the outcome.
    #[arg(long)]
    smtp: bool,
}

#[derive(clap::Args)]
struct UserArgs {
    /// Configuration file (TOML). Environment variables STEPGATE_SECTION__KEY override its values.
    #[arg(long, short, global = true, env = "STEPGATE_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(clap::Args)]
struct HashPasswordArgs {
    /// Configuration file for the hashing parameters and password policy. Without one (and
    /// without config/stepgate.toml), the defaults apply.
    #[arg(long, short, env = "STEPGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Read the password as one line from standard input instead of prompting.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(clap::Args)]
struct CheckPolicyArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Evaluate as this user (groups come from the store); default: an anonymous request.
    #[arg(long)]
    user: Option<String>,
    /// Client IP address the request comes from.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Request method, e.g. GET.
    method: String,
    /// Absolute URL, e.g. https://app.example.com/admin?x=1
    url: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(CheckConfigArgs { config: args, smtp }) => {
            match config::load(&args.config) {
                Ok(config) => {
                    // The certificate and key are read as `serve` would: a file that is there
                    // but is no PEM chain or key, or a key that does not fit, is found now.
                    if let Some(files) = &config.server.tls
                        && let Err(e) = stepgate::server::tls::acceptor(files)
                    {
                        eprintln!("{e}");
                        eprintln!("{}: 1 problem(s) found", args.config.display());
                        return ExitCode::FAILURE;
                    }
                    // So is the key of second-factor secrets (a missing one is created by
                    // `serve`, and refused there if the store already holds sealed factors).
                    match SecretBox::check_key_file(&config.storage.key_file) {
                        Ok(KeyFileState::OpenToOthers { mode }) => eprintln!(
                            "warning: {} (mode {mode:o}): {LOOSE_KEY_FILE}",
                            config.storage.key_file.display()
                        ),
                        Ok(KeyFileState::Missing | KeyFileState::Private) => {}
                        Err(e) => {
                            eprintln!("{e}");
                            eprintln!("{}: 1 problem(s) found", args.config.display());
                            return ExitCode::FAILURE;
                        }
                    }
                    // The upstreams' and the mail server's CA files are read as `serve`
                    // reads them: a file that is there but holds no usable certificate is
                    // found now, not at start-up. (A file outbox is not created here.)
                    if run(check_transports(&config)) != ExitCode::SUCCESS {
                        eprintln!("{}: 1 problem(s) found", args.config.display());
                        return ExitCode::FAILURE;
                    }
                    println!("{}: configuration is valid", args.config.display());
                    if smtp {
                        return check_smtp(&config);
                    }
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{}", errors);
                    eprintln!(
                        "{}: {} problem(s) found",
                        args.config.display(),
                        errors.problems().len()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let config = match config::load(&args.config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("refusing to start: {} is invalid", args.config.display());
                    return ExitCode::FAILURE;
                }
            };
            stepgate::logging::init(&config.log);
            run(async move {
                let app = stepgate::app::App::new(config, std::sync::Arc::new(SystemClock))
                    .map_err(std::io::Error::other)?;
                stepgate::server::serve_until_signal(app).await
            })
        }
        Command::Demo(opts) => run(stepgate::demo::run(opts)),
        Command::User(args) => {
            let Some(config) = load_config(&args.config) else {
                return ExitCode::FAILURE;
            };
            report(client::run_user_command(&config, args.command))
        }
        Command::HashPassword(args) => {
            let settings = match &args.config {
                Some(path) => load_config(path).map(|c| c.password),
                None if Path::new(DEFAULT_CONFIG).exists() => {
                    load_config(Path::new(DEFAULT_CONFIG)).map(|c| c.password)
                }
                None => Some(default_password_settings()),
            };
            let Some(settings) = settings else {
                return ExitCode::FAILURE;
            };
            let source = if args.password_stdin {
                PasswordSource::Stdin
            } else {
                PasswordSource::Prompt
            };
            report(client::hash_password(&settings, source))
        }
        Command::CheckPolicy(args) => {
            let Some(config) = load_config(&args.config.config) else {
                return ExitCode::FAILURE;
            };
            report(check_policy(&config, &args))
        }
    }
}

fn check_policy(config: &Config, args: &CheckPolicyArgs) -> Result<String, AdminError> {
    let user = match &args.user {
        Some(name) => Some(client::get_user(config, name)?),
        None => None,
    };
    let query = PolicyQuery {
        method: &args.method,
        url: &args.url,
        client_ip: args.ip,
        user: user.as_ref(),
    };
    let report = policy_check::check(config, &query).map_err(AdminError::Usage)?;
    Ok(report.render())
}

/// The `[password]` defaults, as an empty configuration section validates to.
fn default_password_settings() -> PasswordSettings {
    let mut errors = config::ConfigErrors::default();
    stepgate::auth::password::validate(&Default::default(), &mut errors)
}

/// Loads and validates the configuration, printing every problem on failure.
fn load_config(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} problem(s) found",
                path.display(),
                errors.problems().len()
            );
            None
        }
    }
}

/// Prints a command's output, or its error on stderr with exit code 1.
fn report(outcome: Result<String, AdminError>) -> ExitCode {
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stepgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config --smtp`: one real connection to the configured mail server.
/// Builds the upstream clients and the SMTP and SMS senders as `serve` would, connecting to
/// nothing.
async fn check_transports(config: &stepgate::config::Config) -> std::io::Result<()> {
    let cookies = stepgate::http::cookies::SessionCookieNames::new(&config.session);
    stepgate::proxy::upstream::Upstreams::build(&config.upstreams, config.server.workers, &cookies)
        .map_err(std::io::Error::other)?;
    let smtp = config
        .email
        .as_ref()
        .filter(|email| matches!(email.transport, stepgate::notify::EmailTransport::Smtp(_)));
    stepgate::notify::Notifier::new(smtp, config.sms.as_ref(), &config.portal.title)
        .map_err(std::io::Error::other)?;
    Ok(())
}

fn check_smtp(config: &stepgate::config::Config) -> ExitCode {
    let Some(email) = config.email.as_ref() else {
        eprintln!("email: no [email] section is configured");
        return ExitCode::FAILURE;
    };
    let result = run(async {
        let notifier = stepgate::notify::Notifier::new(Some(email), None, &config.portal.title)
            .map_err(std::io::Error::other)?;
        notifier.check_smtp().await.map_err(std::io::Error::other)
    });
    if result == ExitCode::SUCCESS {
        println!("email: the mail server accepted the connection");
    }
    result
}

/// Runs a command on a single-threaded runtime: `serve` hands connections to its own worker
/// threads (`server.workers`), so this one only accepts, keeps house and answers the control
/// socket.
fn run(fut: impl std::future::Future<Output = std::io::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stepgate: {e}");
            ExitCode::FAILURE
        }
    }
}
