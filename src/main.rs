//! The `nft-masq-agent` binary: command line, logging, and the chosen mode.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use nft_masq_agent::config::{ConfigSource, Loaded, Source};
use nft_masq_agent::model::{self, TABLE_NAME, Table, TableFlags};
use nft_masq_agent::nft::{self, NftSocket};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nft-masq-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    // Every mode but --dry-run talks to nf_tables: without CAP_NET_ADMIN, say why, up front.
    if cli.mode() != cli::Mode::DryRun {
        nft_masq_agent::privilege::require_net_admin()?;
    }
    match cli.mode() {
        cli::Mode::DryRun => {
            print!("{}", desired(&cli)?);
            Ok(ExitCode::SUCCESS)
        }
        cli::Mode::Once => once(&cli),
        cli::Mode::Dump => dump(),
        cli::Mode::Cleanup => cleanup(),
        cli::Mode::Daemon => {
            nft_masq_agent::daemon::run(cli.daemon_options())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The table the config asks for, validated the one way every mode uses.
fn desired(cli: &cli::Cli) -> Result<Table> {
    let flags = cli.policy_flags();
    let Loaded { config, notes } =
        ConfigSource::with_paths(cli.config.clone(), flags.clone()).load()?;
    for note in &notes {
        tracing::info!("{note}");
    }
    Ok(model::desired(&config, &flags, TableFlags::default()))
}

fn open() -> Result<NftSocket> {
    NftSocket::open().context("opening the nf_tables netlink socket")
}

fn once(cli: &cli::Cli) -> Result<ExitCode> {
    let table = desired(cli)?;
    let mut sock = open()?;
    let start = std::time::Instant::now();
    let report = nft::replace_table(&mut sock, &table)
        .with_context(|| format!("committing table inet {TABLE_NAME}"))?;
    tracing::info!(
        prefixes = table.prefix_count(),
        elements = report.elements,
        bytes = report.bytes,
        duration_ms = start.elapsed().as_secs_f64() * 1e3,
        "committed table inet {TABLE_NAME}"
    );
    Ok(ExitCode::SUCCESS)
}

fn dump() -> Result<ExitCode> {
    let table = open()?
        .read_table(TABLE_NAME)
        .with_context(|| format!("reading table inet {TABLE_NAME}"))?;
    match table {
        Some(table) => {
            print!("{table}");
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
