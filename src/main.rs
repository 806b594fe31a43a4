//! The `notion-gateway` binary: parse the command line, load the configuration, serve.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use notion_gateway::cli::{Cli, Command};
use notion_gateway::{config, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Keys(keys)) = &cli.command {
        return keys_command(keys);
    }
    if let Some(Command::Doctor(args)) = &cli.command {
        return doctor(
            config::load(&cli.global.overrides()).map(|l| l.config),
            args,
        );
    }
    let loaded = match config::load(&cli.global.overrides()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("notion-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.clone().unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            for w in &loaded.warnings {
                eprintln!("notion-gateway: warning: {w}");
            }
            print!("{}", loaded.to_redacted_toml());
            ExitCode::SUCCESS
        }
        Command::Serve => serve(loaded.config, &loaded.warnings, cli.global.overrides()),
        Command::Doctor(_) | Command::Keys(_) => ExitCode::from(2), // handled above
        Command::Healthcheck => healthcheck(loaded.config.server.listen),
        Command::Report(args) => report(&args, loaded.config.log.file.as_deref()),
    }
}

/// `notion-gateway report`: reads the log files given, or the configured `log.file`.
fn report(
    args: &notion_gateway::cli::ReportArgs,
    configured: Option<&std::path::Path>,
) -> ExitCode {
    let files: Vec<std::path::PathBuf> = if args.files.is_empty() {
        match configured {
            Some(f) => vec![f.to_path_buf()],
            None => {
                eprintln!(
                    "notion-gateway report: no log file given and log.file is not set \
                     (notion-gateway report /var/log/notion-gateway/requests.jsonl)"
                );
                return ExitCode::from(2);
            }
        }
    } else {
        args.files.clone()
    };
    let mut analysis = notion_gateway::report::Analysis::new(args.top);
    for f in &files {
        let result = if f.as_os_str() == "-" {
            analysis.read(std::io::stdin().lock(), "standard input")
        } else {
            std::fs::File::open(f).and_then(|file| analysis.read(file, &f.display().to_string()))
        };
        if let Err(e) = result {
            eprintln!("notion-gateway report: {}: {e}", f.display());
            return ExitCode::from(2);
        }
    }
    let report = analysis.finish();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.to_text());
    }
    ExitCode::SUCCESS
}

fn healthcheck(listen: std::net::SocketAddr) -> ExitCode {
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(notion_gateway::doctor::healthcheck(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("notion-gateway healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

fn doctor(
    config: Result<notion_gateway::Config, config::ConfigError>,
    args: &notion_gateway::cli::DoctorArgs,
) -> ExitCode {
    let token = std::env::var(&args.token_env)
        .ok()
        .filter(|t| !t.trim().is_empty());
    let gateway = args.gateway.clone().or_else(|| {
        config
            .as_ref()
            .ok()
            .map(|c| format!("http://{}", c.server.listen))
    });
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let report = runtime.block_on(notion_gateway::doctor::run_with_status_page(
        config,
        notion_gateway::doctor::Options { token, gateway },
        Some(&args.status_url),
    ));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.to_text());
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `notion-gateway keys new NAME --integration INTEGRATION`.
fn keys_command(cmd: &notion_gateway::cli::KeysCommand) -> ExitCode {
    let notion_gateway::cli::KeysCommand::New { name, integration } = cmd;
    if !config::valid_key_name(name) {
        eprintln!(
            "notion-gateway keys new: `{name}`: a name is at most 64 letters, digits and - _ . @ \
             (it is a metric label)"
        );
        return ExitCode::from(2);
    }
    if integration.trim().is_empty() {
        eprintln!("notion-gateway keys new: --integration names an [[integrations]] entry");
        return ExitCode::from(2);
    }
    let key = match notion_gateway::access::new_key() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("notion-gateway keys new: {e}");
            return ExitCode::FAILURE;
        }
    };
    let digest = notion_gateway::access::key_digest_hex(&key);
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    eprintln!(
        "A new gateway key for {name}. Give it to its holder now: it is shown only once and \
         the gateway keeps only its digest. Add the entry below to the configuration file, \
         then reload the gateway (kill -HUP, or restart it)."
    );
    println!("{key}");
    println!();
    println!("[[keys]]");
    println!("name = {}", quote(name));
    println!("key_sha256 = \"{digest}\"");
    println!("integration = {}", quote(integration));
    ExitCode::SUCCESS
}

fn serve(
    config: notion_gateway::Config,
    warnings: &[String],
    overrides: config::Overrides,
) -> ExitCode {
    let _log_guard = telemetry::init(&config.log);
    for w in warnings {
        tracing::warn!("{w}");
    }
    // server.worker_threads (0 was resolved to one per core when the configuration was
    // validated): 1 is tokio's current-thread runtime, serving on this thread; more is the
    // work-stealing runtime with that many workers (docs/decisions.md, "Performance choices").
    let threads = config.server.worker_threads.max(1);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.thread_name(WORKER_THREAD_NAME);
    let Some(runtime) = runtime(&mut builder) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "notion-gateway: cannot listen on {} (server.listen): {e}",
                    config.server.listen
                );
                return ExitCode::FAILURE;
            }
        };
        let reloads = reload_on_sighup(overrides);
        match notion_gateway::server::run_reloading(config, listener, shutdown_signal(), reloads)
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("notion-gateway: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Name of the runtime's threads (workers, and blocking-pool threads when there are any), as
/// `/proc/<pid>/task/*/comm` shows it (at most 15 bytes).
const WORKER_THREAD_NAME: &str = "ngw-worker";

/// The async runtime, or `None` after saying why it could not start.
fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("notion-gateway: cannot start the async runtime: {e}"))
        .ok()
}

/// Each SIGHUP reads the configuration again from the same sources (file, environment,
/// flags; token files re-read) and hands the result to the running gateway.
fn reload_on_sighup(overrides: config::Overrides) -> notion_gateway::server::Reloads {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: configuration reloads are off");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            // Off the runtime's threads: parsing a file of many keys must not stall requests.
            let o = overrides.clone();
            let loaded = tokio::task::spawn_blocking(move || config::load(&o))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map(|l| {
                    for w in &l.warnings {
                        tracing::warn!("{w}");
                    }
                    l.config
                });
            if tx.send(loaded).is_err() {
                return;
            }
        }
    });
    #[cfg(not(unix))]
    drop((tx, overrides));
    rx
}

/// Resolves on SIGTERM (docker stop, systemd) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
