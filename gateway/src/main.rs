//! `gateway`: the binary. See `gateway --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use gateway::config::{Command, Settings};
use relay::io::unix_now;

/// jemalloc instead of glibc's malloc: after a flood of connections (thousands of HTTP heads
/// waiting for bodies, 28 KB each) is cut, glibc kept the freed memory (RSS 16 -> 250 MB,
/// never back); jemalloc's background thread returns it to the system within seconds
/// (tests/hostile, `stalled-bodies`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match gateway::config_file::load_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(gateway::config_file::LoadError::Args(e)) => e.exit(),
        Err(gateway::config_file::LoadError::File(line)) => {
            eprintln!("gateway: {line}");
            return ExitCode::from(2);
        }
    };
    init_logs(&cli.settings);
    let json_logs = cli.settings.log_format == "json";
    let result = match cli.command {
        Some(Command::Credentials { user, ttl }) => credentials(&cli.settings, &user, ttl),
        Some(Command::Doctor { json }) => return doctor(&cli.settings, json),
        None | Some(Command::Run) => run(cli.settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line a person can act on (the messages name the setting and the fix);
            // with JSON logs, one JSON record instead so log pipelines keep it.
            let line = format!("{e:#}").replace(['\n', '\r'], " ");
            if json_logs {
                tracing::error!(error = %line, "gateway stopped");
            } else {
                eprintln!("gateway: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logs(settings: &Settings) {
    // The STUN/TURN parsing crates log a WARN for every malformed message they are given;
    // on a port facing the internet that is a log line per attacker packet. The relay
    // counts bad input itself (`turn_bad_input_total`) and logs it rate-limited, so their
    // lines are kept to errors unless RUST_LOG names them.
    let env = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for noisy in ["stun_types", "turn_types", "stun_proto"] {
        if !env.contains(noisy) {
            if let Ok(d) = format!("{noisy}=error").parse() {
                filter = filter.add_directive(d);
            }
        }
    }
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
    let timeout = std::time::Duration::from_secs(settings.shutdown_timeout);
    rt.block_on(async {
        let running = gateway::run::start(settings).await?;
        wait_for_shutdown(running.reloader.as_deref()).await?;
        running.shutdown(timeout).await;
        anyhow::Ok(())
    })?;
    // Tasks still running (HTTP keep-alive connections, media) end with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C; reloads the certificate on SIGHUP meanwhile.
async fn wait_for_shutdown(reloader: Option<&gateway::reload::Reloader>) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; break; }
                _ = term.recv() => break,
                _ = hup.recv() => match reloader {
                    Some(r) => {
                        tracing::info!("SIGHUP: reloading TLS_CERT/TLS_KEY");
                        let _ = r.reload();
                    }
                    None => tracing::info!(
                        "SIGHUP: nothing to reload (TLS_CERT/TLS_KEY unset, self-signed certificate)"
                    ),
                },
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

fn doctor(settings: &Settings, json: bool) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gateway doctor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let format = if json {
        gateway::doctor::Format::Json
    } else {
        gateway::doctor::Format::Human
    };
    let ok = rt.block_on(gateway::doctor::run(
        settings,
        format,
        &mut std::io::stdout(),
    ));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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
