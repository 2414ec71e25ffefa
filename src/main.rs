//! The `loggate` command: run the gateway, read stored logs, create access keys and
//! certificates, check a configuration and a running gateway.

mod commands;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use loggate::config::{Config, SecurityProtocol};
use loggate::ingest::auth::{generate_key, KeyStore, SecretHash};
use loggate::ingest::catalog::Catalog;
use loggate::ingest::Ingest;
use loggate::kafka::pool::DecodePool;
use loggate::kafka::Broker;
use loggate::metrics::Metrics;
use loggate::reload::{Reloader, Stores};
use loggate::server::{self, tls};
use loggate::config::Backend;
use loggate_storage::clickhouse::{ClickHouseOptions, ClickHouseStore, Endpoint, RetentionTarget};
use loggate_storage::local::LocalStore;
use loggate_storage::{LogStorage, Router, StreamId};

/// Kafka-protocol log ingestion gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default command).
    Serve(ServeArgs),
    /// Print stored logs (JSON lines or a table), filtered by offset, time and fields.
    Logs(LogsArgs),
    /// Create an access key: prints the secret once and the config lines with its hash.
    Keygen(KeygenArgs),
    /// Write a CA and a server certificate for the given host names.
    Cert(CertArgs),
    /// Validate a configuration file (with the environment) and print what it would serve.
    CheckConfig(CheckConfigArgs),
    /// Ask a running gateway's /readyz (or /healthz): exit 0 when it answers 200, else 1.
    Health(HealthArgs),
}

#[derive(clap::Args)]
struct CheckConfigArgs {
    /// The file [default: $LOGGATE_CONFIG, else config/loggate.toml].
    #[arg(env = "LOGGATE_CONFIG")]
    file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct HealthArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address of the metrics endpoint [default: the configuration's `[metrics] bind`,
    /// its loopback when that is every interface].
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// Check /healthz (the process serves) instead of /readyz (it takes clients).
    #[arg(long)]
    live: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
}

#[derive(clap::Args, Clone, Default)]
struct ConfigArgs {
    /// Configuration file [default: config/loggate.toml when it exists].
    #[arg(long, env = "LOGGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration file).
    #[arg(long, env = "LOGGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Log line format: `human` or `json` (overrides `[log] format`). Which lines are
    /// logged: `RUST_LOG`, e.g. `RUST_LOG=info,loggate::server=debug`.
    #[arg(long, env = "LOGGATE_LOG_FORMAT", value_parser = ["human", "json"])]
    log_format: Option<String>,
}

#[derive(clap::Args)]
struct LogsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[arg(long)]
    project: String,
    #[arg(long)]
    logstore: String,
    /// One shard only (default: every shard of the logstore, merged by event time).
    #[arg(long)]
    shard: Option<u32>,
    /// Start here: an offset (of every shard) or an event time: 2024-05-01T12:00:00Z,
    /// 2024-05-01, -15m, now-2h, @<epoch ms>.
    #[arg(long, alias = "from-offset", allow_hyphen_values = true)]
    from: Option<String>,
    /// Stop here (inclusive): an offset or an event time, as for --from.
    #[arg(long, allow_hyphen_values = true)]
    to: Option<String>,
    /// Only logs whose field equals a value (`field=value`) or matches a regex
    /// (`field~regex`); meta fields such as __source__ count; repeatable (all must hold).
    #[arg(long = "where", value_name = "CONDITION")]
    wheres: Vec<String>,
    /// Stop after printing this many logs.
    #[arg(long)]
    limit: Option<u64>,
    /// Keep printing logs as they arrive.
    #[arg(long)]
    follow: bool,
    /// `json` (one object per line) or `table`.
    #[arg(long, default_value = "json", value_parser = ["json", "table"])]
    output: String,
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// `project/logstore` patterns the key may write (`*` for any); repeatable.
    #[arg(long = "allow", required = true)]
    allow: Vec<String>,
    /// Access key id (random when omitted).
    #[arg(long)]
    id: Option<String>,
    /// Use this secret instead of a random one (for scripted setups).
    #[arg(long, env = "LOGGATE_KEY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// PBKDF2 iterations of the SASL/SCRAM credentials (4096 to 16384, as Kafka allows).
    #[arg(long, default_value_t = loggate::ingest::auth::scram::MIN_ITERATIONS,
        value_parser = clap::value_parser!(u32).range(4096..=16384))]
    scram_iterations: u32,
}

#[derive(clap::Args)]
struct CertArgs {
    /// Directory to write ca.pem, ca.key, server.pem, server.key into (with --client:
    /// client.pem, client.key).
    #[arg(long)]
    out: PathBuf,
    /// Host names and IP addresses the server certificate is valid for; repeatable.
    #[arg(long = "host", required_unless_present = "client", conflicts_with = "client")]
    hosts: Vec<String>,
    /// Write a client certificate for mutual TLS instead, signed by the CA of --ca, naming
    /// --project and --key-id.
    #[arg(long, requires_all = ["project", "key_id"])]
    client: bool,
    /// With --client: the project the certificate writes to.
    #[arg(long, requires = "client")]
    project: Option<String>,
    /// With --client: the access key id whose grants apply.
    #[arg(long, requires = "client")]
    key_id: Option<String>,
    /// With --client: the directory holding the signing CA's ca.pem and ca.key.
    #[arg(long, default_value = "data/tls", requires = "client")]
    ca: PathBuf,
}

/// mimalloc: the decode path allocates and frees large, short-lived buffers per request,
/// which glibc's allocator serves with fresh mmaps (page faults, zeroing); see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Access key id and secret of the demo key in the shipped `config/loggate.toml`.
/// The server prints them only while the configured demo key still has this secret.
const DEMO_KEY: (&str, &str) = ("LGDEMOACCESSKEY", "demo-secret-replace-me");

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::Logs(args) => logs(args),
        Command::Keygen(args) => {
            keygen(args);
            Ok(())
        }
        Command::Cert(args) => cert(args),
        Command::CheckConfig(args) => check_config(args),
        Command::Health(args) => health(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loggate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cert(args: CertArgs) -> Result<(), String> {
    let (Some(project), Some(key_id)) = (args.project.as_deref().filter(|_| args.client), args.key_id.as_deref()) else {
        return tls::generate(&args.out, &args.hosts).map_err(|e| e.to_string());
    };
    tls::generate_client(&args.ca, &args.out, project, key_id).map_err(|e| e.to_string())?;
    println!("wrote {0}/client.pem and {0}/client.key: project {project}, access key {key_id}", args.out.display());
    Ok(())
}

fn load_config(args: &ConfigArgs) -> Result<(Config, Option<PathBuf>), String> {
    let default = PathBuf::from("config/loggate.toml");
    let path = args.config.clone().or_else(|| default.exists().then_some(default));
    let mut config = match &path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::from_env(&loggate::config::env::process_env()).map_err(|e| e.to_string())?,
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    Ok((config, path))
}

fn check_config(args: CheckConfigArgs) -> Result<(), String> {
    let default = PathBuf::from("config/loggate.toml");
    let path = args.file.unwrap_or(default);
    let report = commands::check_config(&path, &loggate::config::env::process_env(), DEMO_KEY)?;
    print!("{report}");
    Ok(())
}

fn health(args: HealthArgs) -> Result<(), String> {
    let addr = match args.addr {
        Some(addr) => addr,
        None => {
            let (config, _) = load_config(&args.config)?;
            let bind = config.metrics.bind.ok_or("no [metrics] bind configured (nor --addr): nothing to check")?;
            commands::dial_address(bind)
        }
    };
    let path = if args.live { "/healthz" } else { "/readyz" };
    let body = commands::health(addr, path, std::time::Duration::from_secs(args.timeout)).map_err(|e| e.to_string())?;
    println!("{body}");
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())
}

/// Logs to stderr, as human text lines or JSON objects, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: loggate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        loggate::config::LogFormat::Json => builder.json().with_current_span(false).with_span_list(false).init(),
        loggate::config::LogFormat::Human => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let (config, config_path) = load_config(&args.config)?;
    let log_format = match args.log_format.as_deref() {
        Some("json") => loggate::config::LogFormat::Json,
        Some(_) => loggate::config::LogFormat::Human,
        None => config.log.format,
    };
    init_logging(log_format);
    let rt = runtime()?;
    let metrics = Arc::new(Metrics::new());
    // `/healthz` answers from here on, while storage is recovered; `/readyz` once the
    // gateway takes clients.
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let http = match config.metrics.bind {
        Some(addr) => {
            let tcp = rt.block_on(server::http::bind(addr)).map_err(|e| e.to_string())?;
            tracing::info!(bind = %addr, "serving /metrics, /healthz and /readyz");
            let state = Arc::new(server::http::HttpState { metrics: metrics.clone() });
            Some(rt.spawn(server::http::serve(tcp, state, http_stopped)))
        }
        None => None,
    };
    // Connections and segment files are descriptors: take all the kernel allows before
    // opening any (the server then holds max_connections to what fits).
    match server::fds::raise_nofile_limit() {
        Ok((before, after)) if after.soft > before.soft => tracing::info!(
            from = before.soft, to = after.soft, hard = after.hard, "raised the RLIMIT_NOFILE soft limit to the hard limit"),
        Ok((_, after)) => tracing::info!(soft = after.soft, hard = after.hard, "RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the RLIMIT_NOFILE soft limit"),
    }
    // Fsynced with every directory it creates, so that a crash cannot lose them.
    loggate_storage::local::create_dir_durable(&config.data_dir)
        .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    if config.listeners.iter().any(|l| l.protocol.uses_tls()) && !config.cert_path().exists() {
        if !config.tls.generate {
            return Err(format!(
                "TLS certificate {} does not exist (mount it there, or set [tls] generate = true for a development one)",
                config.cert_path().display()
            ));
        }
        let dir = config.cert_path().parent().map(Path::to_path_buf).unwrap_or_default();
        let hosts = commands::dev_cert_hosts(&config);
        tls::generate(&dir, &hosts).map_err(|e| e.to_string())?;
        tracing::info!(dir = %dir.display(), "generated a development CA and server certificate");
    }
    let local = Arc::new(LocalStore::open(&config.data_dir, config.local_store_options()).map_err(|e| e.to_string())?);
    local.set_unpacker(Arc::new(loggate::ingest::packed::Unpacker));
    // From here on SIGTERM/SIGINT stop the gateway in order, even while it is starting.
    let mut stopped = {
        let _runtime = rt.enter();
        shutdown_signal().map_err(|e| format!("cannot handle SIGTERM/SIGINT: {e}"))?
    };
    metrics.attach_local(local.clone());
    // Recover every local shard (cutting torn tails) and apply retention before taking
    // clients; connect to ClickHouse (creating its table) when a logstore is stored there.
    let Some(stores) = rt.block_on(unless_stopped(&mut stopped, async {
        let clickhouse: Option<Arc<ClickHouseStore>> = if config.uses_clickhouse() {
            let store = ClickHouseStore::open(clickhouse_options(&config))
                .await
                .map_err(|e| format!("ClickHouse: {e}"))?;
            Some(Arc::new(store))
        } else {
            None
        };
        for project in &config.projects {
            for store in &project.logstores {
                if config.backend_of(project, store) == Backend::Local {
                    let stream = StreamId::new(&project.name, &store.name);
                    local.open_stream(&stream, store.shards).await.map_err(|e| format!("logstore {stream}: {e}"))?;
                }
            }
        }
        let default: Arc<dyn LogStorage> = local.clone();
        let more = clickhouse.iter().map(|ch| ch.clone() as Arc<dyn LogStorage>);
        let router = Arc::new(Router::new(default, Default::default(), more));
        let stores = Stores { router, local: local.clone(), clickhouse };
        stores.router.set_routes(stores.routes(&config).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        Ok::<_, String>(stores)
    }))?
    else {
        return Ok(());
    };
    let storage: Arc<dyn LogStorage> = stores.router.clone();
    let keys = KeyStore::from_config(&config.access_keys)?;
    let catalog = Catalog::from_config(&config.projects, &config.limits);
    let node_id = config.node_id;
    let cluster = loggate::cluster::Cluster::from_config(&config);
    let mut ingest = Ingest::new(catalog, keys, storage.clone(), node_id);
    if let Some(cluster) = &cluster {
        ingest = ingest.with_membership(cluster.membership());
    }
    let ingest = Arc::new(ingest);
    let recovery_entries = config.limits.producer_recovery_entries;
    let recovery = async { ingest.recover_producers(recovery_entries).await.map_err(|e| e.to_string()) };
    let Some(batches) = rt.block_on(unless_stopped(&mut stopped, recovery))? else {
        return Ok(());
    };
    tracing::info!(batches, "idempotent producer state recovered");
    metrics.attach(ingest.clone(), storage.clone());
    if let Some(ch) = &stores.clickhouse {
        metrics.attach_clickhouse(ch.clone());
    }
    let pool = DecodePool::new(config.limits.decode_threads, config.limits.max_decoded_inflight_bytes);
    let quotas = Arc::new(loggate::ingest::quota::Quotas::new(&config));
    let limits = arc_swap::ArcSwap::from_pointee(config.limits.clone());
    let broker = Arc::new(Broker { ingest, limits, metrics, pool, node_id, cluster: cluster.clone(), quotas });
    let certificates = if config.listeners.iter().any(|l| l.protocol.uses_tls()) {
        let (cert, key) = (config.cert_path(), config.key_path());
        Some(tls::Certificates::load(server::tls_files(&config, &cert, &key)).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let reload_args = args.config.clone();
    let load = Box::new(move || load_config(&reload_args).map(|(config, _)| config));
    let reloader = Reloader::new(load, config.clone(), broker.clone(), certificates.clone(), stores);
    rt.block_on(async {
        print_banner(&config, config_path.as_deref(), args.config.data_dir.as_deref());
        let (stop_checks, checks_stopped) = tokio::sync::watch::channel(false);
        if let Some(cluster) = cluster {
            tokio::spawn(cluster.run(checks_stopped.clone()));
        }
        let watch_interval =
            (config.reload.watch_interval_ms > 0).then(|| std::time::Duration::from_millis(config.reload.watch_interval_ms));
        tokio::spawn(reloader.run(config_path.clone(), watch_interval, checks_stopped));
        server::run(config, broker, certificates, stopped).await.map_err(|e| e.to_string())?;
        let _ = stop_checks.send(true);
        let closed = storage.close().await.map_err(|e| e.to_string());
        let _ = stop_http.send(true);
        if let Some(http) = http {
            let _ = http.await;
        }
        closed
    })
}

/// What the ClickHouse backend needs from the configuration.
fn clickhouse_options(config: &Config) -> ClickHouseOptions {
    let ch = &config.clickhouse;
    let endpoint = Endpoint {
        urls: ch.urls.clone(),
        user: ch.user.clone(),
        password: ch.password.clone(),
        ca_file: ch.ca_file.clone(),
        timeout: std::time::Duration::from_secs(ch.timeout_secs),
    };
    let mut opts = ClickHouseOptions::new(endpoint, &ch.database, &ch.table);
    opts.create_tables = ch.create_tables;
    opts.node_id = config.node_id as u16;
    opts.max_entry_bytes = config.storage.max_log_bytes;
    opts.insert_max_rows = ch.insert_max_rows;
    opts.insert_max_bytes = ch.insert_max_bytes;
    opts.insert_window = std::time::Duration::from_millis(ch.insert_window_ms);
    opts.max_pending_bytes = ch.max_pending_bytes;
    opts.producer_lookback = std::time::Duration::from_secs(config.limits.producer_expiry_secs);
    if !ch.retention_urls.is_empty() {
        opts.retention = Some(RetentionTarget {
            urls: ch.retention_urls.clone(),
            table: ch.retention_table.clone().unwrap_or_else(|| ch.table.clone()),
        });
    }
    for project in &config.projects {
        for store in &project.logstores {
            if let Some(hours) = store.retention_hours {
                opts.retention_hours.insert(StreamId::new(&project.name, &store.name), hours.ceil() as u32);
            }
        }
    }
    opts
}

/// Takes over SIGTERM and SIGINT now (in a runtime's context); the future resolves at
/// the first of them.
fn shutdown_signal() -> std::io::Result<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }))
}

/// A start-up step, unless SIGTERM/SIGINT comes first: then None, and the gateway exits
/// without serving (it has acknowledged nothing yet; storage recovery is crash-safe).
async fn unless_stopped<T>(
    stopped: &mut std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
    step: impl std::future::Future<Output = Result<T, String>>,
) -> Result<Option<T>, String> {
    tokio::select! {
        result = step => result.map(Some),
        () = stopped.as_mut() => {
            tracing::info!("stopped while starting, before serving");
            Ok(None)
        }
    }
}

/// Tells the user how to connect, with a kcat command that works as printed.
fn print_banner(config: &Config, config_path: Option<&Path>, data_dir_flag: Option<&Path>) {
    let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    println!("loggate {} is running", env!("CARGO_PKG_VERSION"));
    for l in &config.listeners {
        let adv = l.advertised.clone().unwrap_or_else(|| l.bind.to_string());
        println!("  listener {:?} on {} (advertised {adv})", l.protocol, l.bind);
    }
    if let Some(addr) = config.metrics.bind {
        println!("  metrics on http://{addr}/metrics (health: /healthz, /readyz)");
    }
    let uses_tls = config.listeners.iter().any(|l| l.protocol.uses_tls());
    if uses_tls {
        println!("  CA certificate: {}", abs(config.ca_path()).display());
    }
    let demo = config.access_keys.iter().find(|k| k.id == DEMO_KEY.0).filter(|k| {
        SecretHash::parse(&k.secret_hash).map(|h| h.verify(DEMO_KEY.1)).unwrap_or(false)
    });
    let (Some(key), Some(listener)) =
        (demo, config.listeners.iter().find(|l| l.protocol == SecurityProtocol::SaslSsl))
    else {
        return;
    };
    let project = config.projects.iter().find(|p| key.allow.iter().any(|a| a == &p.name || a.starts_with(&format!("{}/", p.name)) || a.starts_with('*')));
    let Some(project) = project else { return };
    let Some(store) = project.logstores.first() else { return };
    let broker = listener.advertised.clone().unwrap_or_else(|| listener.bind.to_string());
    let mut cfg = config_path.map(|p| format!(" --config {}", p.display())).unwrap_or_default();
    if let Some(dir) = data_dir_flag {
        cfg.push_str(&format!(" --data-dir {}", dir.display()));
    }
    println!("  demo access key {} is active: replace it before real use (loggate keygen)", key.id);
    println!("Send a log:");
    println!(
        "  echo 'hello loggate' | kcat -P -b {broker} -t {} -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN -X sasl.username={} -X 'sasl.password={}#{}' -X ssl.ca.location={}",
        store.name, project.name, DEMO_KEY.0, DEMO_KEY.1, abs(config.ca_path()).display()
    );
    println!("Read it back:");
    println!("  loggate logs{cfg} --project {} --logstore {}", project.name, store.name);
}

fn logs(args: LogsArgs) -> Result<(), String> {
    use loggate::logs::{parse_bound, print_logs, Format, LogsRequest, Where};
    let (config, _) = load_config(&args.config)?;
    let configured = config
        .projects
        .iter()
        .find(|p| p.name == args.project)
        .and_then(|p| p.logstores.iter().find(|l| l.name == args.logstore).map(|l| (p, l)));
    let shards: Vec<u32> = match (args.shard, configured) {
        (Some(s), _) => vec![s],
        (None, Some((_, l))) => (0..l.shards).collect(),
        (None, None) => return Err(format!("no logstore {}/{} in the configuration", args.project, args.logstore)),
    };
    let backend = configured.map_or(config.storage.backend, |(p, l)| config.backend_of(p, l));
    let now = loggate::ingest::now_ms();
    let req = LogsRequest {
        stream: StreamId { project: args.project.clone(), logstore: args.logstore.clone() },
        shards,
        from: args.from.as_deref().map(|t| parse_bound(t, now)).transpose()?,
        to: args.to.as_deref().map(|t| parse_bound(t, now)).transpose()?,
        wheres: args.wheres.iter().map(|w| Where::parse(w)).collect::<Result<_, _>>()?,
        limit: args.limit,
        follow: args.follow,
        format: if args.output == "table" { Format::Table } else { Format::Json },
    };
    let rt = runtime()?;
    rt.block_on(async {
        let store: Box<dyn loggate::logs::LogSource> = match backend {
            Backend::Local => {
                let store = LocalStore::open_read_only(&config.data_dir).map_err(|e| e.to_string())?;
                store.set_unpacker(Arc::new(loggate::ingest::packed::Unpacker));
                Box::new(store)
            }
            Backend::Clickhouse => Box::new(
                ClickHouseStore::open_read_only(clickhouse_options(&config)).await.map_err(|e| format!("ClickHouse: {e}"))?,
            ),
        };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
        match print_logs(&*store, &req, &mut out).await {
            Ok(_) => Ok(()),
            // `loggate logs | head` closes the pipe: not an error.
            Err(e) if e.contains("Broken pipe") => Ok(()),
            Err(e) => Err(e),
        }
    })
}

fn keygen(args: KeygenArgs) {
    let key = generate_key(args.id, args.secret);
    println!("# AccessKeyId:     {}", key.id);
    println!("# AccessKeySecret: {}", key.secret);
    println!("# The secret is shown only now; the configuration stores its hash.");
    println!("# SASL/PLAIN password: {}#{}", key.id, key.secret);
    println!("[[access_keys]]");
    println!("id = {:?}", key.id);
    println!("secret_hash = {:?}", key.hash.to_string());
    println!("# SASL/SCRAM-SHA-256/512 username: <project>#{}, password as for PLAIN", key.id);
    for (field, credential) in key.scram_credentials(args.scram_iterations) {
        println!("{field} = {:?}", credential.to_string());
    }
    println!("allow = [{}]", args.allow.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "));
}
