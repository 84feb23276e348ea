//! The `cistern` command: parse the command line, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use cistern::config::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "cistern",
    version,
    about = "A Docker API proxy that makes shared CI runners safe and fast"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Docker API on the configured listeners.
    Serve {
        /// Configuration file (YAML). Without it, the embedded default runs.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format; overrides `log.format` in the configuration.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Check a configuration file and exit: 0 if valid, 1 with the error.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Check that the configuration can run on this host (daemon, listeners,
    /// ports, directories, CA) and say what to fix: 0 if nothing failed, 1
    /// otherwise.
    Doctor {
        /// Configuration file (YAML). Default: the embedded configuration.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// With `caching:` and cistern running: start a container and check
        /// that it reaches the caching proxy.
        #[arg(long)]
        container_check: bool,
        /// The probe container's image (on the daemon, with `wget`).
        #[arg(long, default_value = "busybox:latest", requires = "container_check")]
        container_image: String,
    },
    /// Print the version.
    Version,
    /// Maintain the caching proxy's disk cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        /// Configuration file (YAML) with a `caching:` section. Default: the
        /// embedded configuration.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// List tenants and what they own (daemon labels and the image state file).
    Tenants {
        /// Configuration file (YAML). Default: the embedded configuration.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Remove everything one tenant owns: containers (forced), networks,
    /// volumes, images it built, tags it created.
    Cleanup {
        /// The tenant, e.g. `uid-1000` or a configured name.
        #[arg(long)]
        tenant: String,
        /// Configuration file (YAML). Default: the embedded configuration.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Look at or rotate the caching proxy's CA.
    Ca {
        #[command(subcommand)]
        action: CaAction,
        /// Configuration file (YAML) with a `caching:` section. Default: the
        /// embedded configuration.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Entries, bytes and the size limit; with a shared tier, its counters
    /// as the running server last saved them.
    Stats,
    /// The cached set: configured domains, the repository hosts learned
    /// from this host's package managers and where each was found, and the
    /// hosts left out.
    Domains,
    /// Read every entry and drop those that fail their integrity check.
    Verify,
    /// Evict down to the size limit and delete unreferenced content.
    Gc {
        /// Also expire the shared tier (`caching.cache.shared`): remove
        /// what no runner used (stored, revalidated or hit) for this long
        /// (`30d`; uses are recorded to within `touch_every`, 1d).
        #[arg(long, value_name = "AGE")]
        shared_older_than: Option<humantime::Duration>,
        /// Also expire the shared tier down to this many bytes of bodies
        /// (`500GB`), least recently used first.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        shared_max_size: Option<u64>,
    },
    /// Remove entries whose URL matches a glob (`https://deb.example.test/**`);
    /// without one, everything.
    Purge {
        /// URL glob: `**` any text, `*` any text without `/`.
        pattern: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaAction {
    /// Print the current CA certificate (PEM), its SHA-256 fingerprint and
    /// expiry. Never the key.
    Show {
        /// Print every CA generation valid now, not only the current one.
        #[arg(long)]
        all: bool,
    },
    /// Create a new CA generation now.
    Rotate,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("cistern {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => match config::load(&file) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} listener{}, upstream {})",
                    file.display(),
                    cfg.listeners.len(),
                    if cfg.listeners.len() == 1 { "" } else { "s" },
                    cfg.upstream.endpoint
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Doctor {
            config,
            container_check,
            container_image,
        } => {
            let options = cistern::doctor::Options {
                container_image: container_check.then_some(container_image),
            };
            doctor(config.as_deref(), &options)
        }
        Command::Cache { action, config } => caching_command(config, |caching, admin| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                use cistern::mitm::commands;
                match &action {
                    CacheAction::Stats => commands::cache_stats(caching).await,
                    CacheAction::Domains => {
                        let running = match &admin {
                            Some(admin) => cistern::admin::client::cache_hit_ratios(admin).await,
                            None => None,
                        };
                        Ok(commands::cache_domains(caching, running.as_ref()))
                    }
                    CacheAction::Verify => commands::cache_verify(caching).await,
                    CacheAction::Gc {
                        shared_older_than,
                        shared_max_size,
                    } => {
                        let shared = cistern_cache::Expiry {
                            older_than: shared_older_than.map(Into::into),
                            max_size: *shared_max_size,
                        };
                        commands::cache_gc(caching, shared).await
                    }
                    CacheAction::Purge { pattern } => {
                        commands::cache_purge(caching, pattern.as_deref()).await
                    }
                }
            })
        }),
        Command::Ca { action, config } => caching_command(config, |caching, _| match action {
            CaAction::Show { all } => cistern::mitm::commands::ca_show(caching, all),
            CaAction::Rotate => cistern::mitm::commands::ca_rotate(caching),
        }),
        Command::Tenants { config } => ownership_command(config, |cfg| {
            Box::pin(cistern::tenancy::ownership::cleanup::tenants_command(
                &cfg.upstream,
                &cfg.instance,
                &cfg.state_dir,
            ))
        }),
        Command::Cleanup { tenant, config } => ownership_command(config, move |cfg| {
            Box::pin(async move {
                cistern::tenancy::ownership::cleanup::cleanup_command(
                    &cfg.upstream,
                    &cfg.instance,
                    &cfg.state_dir,
                    &tenant,
                )
                .await
            })
        }),
        Command::Serve { config, log_format } => {
            let cfg = match load_config(config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            let format = match log_format {
                Some(LogFormatArg::Json) => LogFormat::Json,
                Some(LogFormatArg::Human) => LogFormat::Human,
                None => cfg.log.format,
            };
            cistern::telemetry::init(format, &cfg.log.level);
            match serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %err, "cistern stopped");
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Loads the configuration file, or the embedded default without one; an
/// error is printed and becomes the exit code.
fn load_config(path: Option<PathBuf>) -> Result<config::Config, ExitCode> {
    match path {
        Some(path) => config::load(&path).map_err(|err| {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }),
        None => Ok(config::embedded_default()),
    }
}

/// Loads the configuration (or the embedded one), requires its `caching:`
/// section, runs `command` on it and prints the result.
fn caching_command(
    path: Option<PathBuf>,
    command: impl FnOnce(
        &cistern::mitm::CachingConfig,
        Option<cistern::admin::AdminConfig>,
    ) -> Result<String, String>,
) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let Some(mut caching) = cfg.caching else {
        eprintln!("error: the configuration has no `caching:` section");
        return ExitCode::FAILURE;
    };
    // The same cached set as `serve` (the CA commands make CAs for it).
    caching.learn_at_start();
    match command(&caching, cfg.admin) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration (or the embedded one), runs an ownership command
/// against its daemon and prints the result.
fn ownership_command(
    path: Option<PathBuf>,
    command: impl for<'a> FnOnce(
        &'a config::Config,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<String, String>> + 'a>,
    >,
) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(command(&cfg)));
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `cistern doctor`: one line per check; fails when any check failed.
fn doctor(path: Option<&std::path::Path>, options: &cistern::doctor::Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let checks = runtime.block_on(cistern::doctor::run(path, options));
    print!("{}", cistern::doctor::render(&checks));
    match cistern::doctor::failed(&checks) {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    }
}

fn serve(cfg: config::Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        cistern::server::serve(cfg, shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The first SIGTERM/SIGINT starts a graceful shutdown; a second one exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}

/// `--shared-max-size`: `1048576`, `500MB`, `10GiB`.
fn parse_size(text: &str) -> Result<u64, String> {
    cistern::units::ByteSize::parse(text)
        .ok_or_else(|| format!("`{text}` is not a size (500MB, 10GiB)"))
}
