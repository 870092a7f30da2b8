//! `atrest monitor`: a long-running Prometheus exporter of encryption coverage. The engine is
//! `atrest-monitor`, the HTTP endpoints `atrest-http`; this module parses flags and wires them up.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use atrest_monitor::{Monitor, MonitorOptions};

use super::common::parse_duration;
use super::etcd_args::{ConfigArgs, EtcdArgs};
use super::kms::{init_serve_logging, LogFormat};

#[derive(clap::Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Serve /metrics, /healthz and /readyz on this address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9465")]
    pub listen: SocketAddr,
    /// Full rescan of etcd this often (heals any drift), e.g. 1h, 30m.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub resync: Duration,
    /// Re-read --config this often and apply it when its sha256 changed (kube-apiserver: 1m).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub config_poll_interval: Duration,
    /// Ask each KMS v2 plugin of the config for its Status this often.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub kms_poll_interval: Duration,
    /// Log format on stderr (level from ATREST_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

pub fn run(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    init_serve_logging(args.log_format);
    let mut opts = MonitorOptions::new(args.etcd.settings(), args.config.config.clone());
    opts.etcd_prefix = args.etcd.etcd_prefix.clone();
    opts.load_options = args.config.load_options()?;
    opts.resync = args.resync;
    opts.config_poll = args.config_poll_interval;
    opts.kms_poll = args.kms_poll_interval;

    // The HTTP side has a runtime of its own: nothing the engine does can delay a scrape.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("atrest-monitor-http")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let listener = rt.block_on(atrest_http::bind(args.listen))?;
    let monitor = Monitor::start(opts, super::kms::connector())?;
    rt.block_on(async {
        let server = atrest_http::spawn(
            listener,
            monitor.endpoints(),
            atrest_http::Limits::default(),
        );
        let addr = server.local_addr();
        tracing::info!(
            listen = %addr.map(|a| a.to_string()).unwrap_or_default(),
            config = %args.config.config.display(),
            "atrest monitor serving /metrics, /healthz, /readyz"
        );
        atrest_kms::server::termination_signal().await;
        tracing::info!("shutting down");
        drop(server);
    });
    monitor.shutdown();
    Ok(ExitCode::SUCCESS)
}
