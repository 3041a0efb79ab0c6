//! The `nft-masq-agent` binary: command line, logging, and the chosen mode.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result};
use nft_masq_agent::analysis::{Packet, explain};
use nft_masq_agent::config::{Config, ConfigSource, Loaded, Source};
use nft_masq_agent::kernel::nft::{self, NftSocket};
use nft_masq_agent::model::{self, TABLE_NAME, Table, TableFlags};

fn main() -> ExitCode {
    let cli = cli::Cli::parse_args();
    cli::init_logging(&cli);
    // An ip-masq-agent DaemonSet's flags that we accept without implementing: said once.
    if let Some(warning) = cli.foreign_warning() {
        tracing::warn!("{warning}");
    }
    if let Some(warning) = cli.missing_config_warning() {
        tracing::warn!("{warning}");
    }
    let json = cli.log_format == cli::LogFormat::Json;
    match run(cli) {
        Ok(code) => code,
        Err(e) if json => {
            // One JSON line like every other, the config's problems as an array.
            nft_masq_agent::report::jsonlog::error_with_problems(&format!("{e:#}"), "");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("nft-masq-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    // Every mode but --dry-run and --explain (which reads the kernel only if it may) talks to
    // nf_tables: without CAP_NET_ADMIN, say why, up front.
    if !matches!(cli.mode(), cli::Mode::DryRun | cli::Mode::Explain) {
        nft_masq_agent::kernel::privilege::require_net_admin()?;
    }
    match cli.mode() {
        cli::Mode::DryRun => {
            let config = config(&cli)?;
            let table = model::desired(&config, &cli.policy_flags(), TableFlags::default());
            print!("{}", table.render(Some(&model::annotate(&table, &config))));
            Ok(ExitCode::SUCCESS)
        }
        cli::Mode::Once => once(&cli),
        cli::Mode::Dump => dump(&cli),
        cli::Mode::Cleanup => cleanup(),
        cli::Mode::Explain => explain(&cli),
        cli::Mode::Daemon => {
            nft_masq_agent::daemon::run(cli.daemon_options())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The config, validated the one way every mode uses.
fn config(cli: &cli::Cli) -> Result<Config> {
    let Loaded { config, notes } =
        ConfigSource::with_paths(cli.config.clone(), cli.policy_flags()).load()?;
    for note in &notes {
        tracing::info!("{note}");
    }
    Ok(config)
}

/// The table the config asks for.
fn desired(cli: &cli::Cli) -> Result<Table> {
    Ok(model::desired(
        &config(cli)?,
        &cli.policy_flags(),
        TableFlags::default(),
    ))
}

/// Whether `addr` is an address of this node: binding to it succeeds exactly then, unless
/// the namespace binds anything (its loopback down, `ip_nonlocal_bind`): a documentation
/// address that is never local tells which.
fn is_local(addr: std::net::IpAddr) -> Option<bool> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
    let canary: IpAddr = match addr {
        IpAddr::V4(_) => Ipv4Addr::new(192, 0, 2, 254).into(),
        IpAddr::V6(_) => Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0xfe).into(),
    };
    if UdpSocket::bind((canary, 0)).is_ok() {
        return None;
    }
    Some(UdpSocket::bind((addr, 0)).is_ok())
}

/// `--explain`: the config's decision, then what the kernel holds (if it may be read).
fn explain(cli: &cli::Cli) -> Result<ExitCode> {
    let dst = cli.explain.context("--explain needs a destination")?;
    let packet = Packet {
        src: cli.source,
        oif: cli.out_interface.clone(),
        dst_local: is_local(dst),
        ..Packet::to(dst)
    };
    // A question about a packet that cannot exist is refused before anything is read.
    explain::check(&packet)?;
    let config = config(cli)?;
    let read = NftSocket::open().and_then(|mut s| {
        let live = s.read_table(TABLE_NAME)?;
        let others = s.read_nat_tables(TABLE_NAME, cli.max_foreign_elements)?;
        Ok((live, others))
    });
    let e = explain::with_kernel(
        &config,
        &cli.policy_flags(),
        &packet,
        read,
        &nft::legacy::legacy_nat_tables(),
        cli.max_foreign_elements,
    );
    match cli.output {
        cli::Output::Text => print!("{}", e.text()),
        cli::Output::Json => println!("{}", serde_json::to_string_pretty(&e)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn open() -> Result<NftSocket> {
    NftSocket::open().context("opening the nf_tables netlink socket")
}

fn once(cli: &cli::Cli) -> Result<ExitCode> {
    let table = desired(cli)?;
    let mut sock = open()?;
    let start = std::time::Instant::now();
    // Starting from the table found: only the difference is sent, nothing when the config
    // is already in force. A table that cannot be read (or is not ours) means the full form.
    if let Err(e) = sock.learn(TABLE_NAME) {
        tracing::debug!("reading table inet {TABLE_NAME} first failed: {e}");
    }
    let report = nft::replace_table(&mut sock, &table)
        .with_context(|| format!("committing table inet {TABLE_NAME}"))?;
    tracing::info!(
        prefixes = table.prefix_count(),
        elements = report.elements,
        sent = report.sent,
        form = report.form.as_str(),
        bytes = report.bytes,
        duration_ms = start.elapsed().as_secs_f64() * 1e3,
        "committed table inet {TABLE_NAME}"
    );
    if let Some(chain) = cli.take_over_chain() {
        // The table is in force: a failure here is reported, and the exit status says so.
        nft::takeover::take_over(&mut sock, &chain)
            .context("the table is committed; run again to retry the takeover")?
            .log();
    }
    Ok(ExitCode::SUCCESS)
}

/// `--dump`: the live table as the kernel reports it, each element tied to the config
/// entries it comes from when the config can be read.
fn dump(cli: &cli::Cli) -> Result<ExitCode> {
    let table = open()?
        .read_table(TABLE_NAME)
        .with_context(|| format!("reading table inet {TABLE_NAME}"))?;
    match table {
        Some(table) => {
            let notes = match config(cli) {
                Ok(config) => Some(model::annotate(&table, &config)),
                Err(e) => {
                    eprintln!("nft-masq-agent: no element comments: {e:#}");
                    None
                }
            };
            print!("{}", table.render(notes.as_ref()));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "nft-masq-agent: table inet {TABLE_NAME} does not exist in this network \
                 namespace (is the agent running here?)"
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn cleanup() -> Result<ExitCode> {
    let deleted = nft::delete_table(&mut open()?, TABLE_NAME)
        .with_context(|| format!("deleting table inet {TABLE_NAME}"))?;
    if deleted {
        tracing::info!("deleted table inet {TABLE_NAME}");
    } else {
        tracing::info!("table inet {TABLE_NAME} did not exist; nothing to delete");
    }
    Ok(ExitCode::SUCCESS)
}
