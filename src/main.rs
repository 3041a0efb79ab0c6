//! The `nft-masq-agent` binary: command line, logging, and the chosen mode.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use nft_masq_agent::config::{self, PolicyFlags};
use nft_masq_agent::model::{self, TABLE_NAME, TableFlags};
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

fn load(cli: &cli::Cli, flags: &PolicyFlags) -> Result<config::Loaded> {
    let loaded = config::load(&cli.config, flags)?;
    for note in &loaded.notes {
        tracing::info!("{note}");
    }
    Ok(loaded)
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    let flags = cli.policy_flags()?;
    // Every mode but --dry-run talks to nf_tables: without CAP_NET_ADMIN, say why, up front.
    if cli.mode() != cli::Mode::DryRun {
        nft_masq_agent::privilege::require_net_admin()?;
    }
    match cli.mode() {
        cli::Mode::DryRun => {
            let loaded = load(&cli, &flags)?;
            let table = model::desired(&loaded.config, &flags, TableFlags::default());
            print!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        cli::Mode::Once => {
            let loaded = load(&cli, &flags)?;
            let table = model::desired(&loaded.config, &flags, TableFlags::default());
            let mut sock = NftSocket::open().context("opening the nf_tables netlink socket")?;
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
        cli::Mode::Dump => {
            let mut sock = NftSocket::open().context("opening the nf_tables netlink socket")?;
            match sock
                .read_table(TABLE_NAME)
                .with_context(|| format!("reading table inet {TABLE_NAME}"))?
            {
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
        cli::Mode::Cleanup => {
            let mut sock = NftSocket::open().context("opening the nf_tables netlink socket")?;
            if nft::delete_table(&mut sock, TABLE_NAME)
                .with_context(|| format!("deleting table inet {TABLE_NAME}"))?
            {
                tracing::info!("deleted table inet {TABLE_NAME}");
            } else {
                tracing::info!("table inet {TABLE_NAME} did not exist; nothing to delete");
            }
            Ok(ExitCode::SUCCESS)
        }
        cli::Mode::Daemon => {
            nft_masq_agent::run::run(cli.daemon_options()?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
