//! `gateway`: the binary. See `gateway --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use gateway::app::unix_now;
use gateway::config::{Cli, Command, Settings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.settings);
    let result = match cli.command {
        Some(Command::Credentials { user, ttl }) => credentials(&cli.settings, &user, ttl),
        None | Some(Command::Run) => run(cli.settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let _running = gateway::run::start(settings).await?;
        wait_for_shutdown().await;
        tracing::info!("shutting down");
        Ok(())
    })
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn credentials(settings: &Settings, user: &str, ttl: Option<u64>) -> anyhow::Result<()> {
    let ring = settings.secrets()?.ok_or_else(|| {
        anyhow::anyhow!(
            "TURN_SECRET is not set: a credential minted under a random secret would not \
             verify anywhere; set TURN_SECRET (or --turn-secret) to the relay's secret"
        )
    })?;
    let ttl = ttl.unwrap_or(settings.turn_credential_ttl);
    let c = ring.mint(user, unix_now(), ttl)?;
    let doc = serde_json::json!({
        "username": c.username,
        "password": c.password,
        "ttl": c.ttl,
        "uris": settings.turn_uris(),
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
