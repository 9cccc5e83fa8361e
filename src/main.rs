//! The `stepgate` command line: parse arguments, load configuration, call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use stepgate::clock::SystemClock;
use stepgate::config;

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
    CheckConfig(ConfigArg),
    /// Start a self-contained demo: the gateway in front of a built-in demo console.
    Demo(stepgate::demo::DemoOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => match config::load(&args.config) {
            Ok(_) => {
                println!("{}: configuration is valid", args.config.display());
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
        },
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
    }
}

fn run(fut: impl std::future::Future<Output = std::io::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
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
