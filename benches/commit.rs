//! Commit benchmark: one full replace of the agent's table with N prefixes, measured inside
//! a throwaway network namespace, next to `nft -f` of the identical ruleset (the agent's
//! `--dry-run` text) in the same run. Prints a table; needs root.
//!
//! `cargo bench --bench commit [-- --sizes 64,1000,10000,100000 --runs 9]`

mod support;

use std::time::Instant;

use nft_masq_agent::config::{Config, PolicyFlags};
use nft_masq_agent::model::{self, TableFlags};
use nft_masq_agent::nft::{self, NftSocket, encode};
use support::{Netns, Stats, prefixes};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "64,1000,10000,100000".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let runs: usize = arg("--runs").map_or(Ok(9), |s| s.parse())?;
    let ns = Netns::new("commit");
    ns.enter();
    let mut sock = NftSocket::open()?;
    let flags = PolicyFlags::default();
    println!(
        "commit: one full replace of table inet nft-masq-agent ({runs} runs, median (min-max))"
    );
    println!(
        "{:>9} {:>9} {:>24} {:>24} {:>24} {:>7}",
        "prefixes",
        "elements",
        "agent encode",
        "agent encode+commit",
        "nft -f (same ruleset)",
        "ratio"
    );
    for &n in &sizes {
        let mut config = Config::defaults(&flags);
        config.non_masquerade_cidrs = prefixes(n);
        config.masq_link_local = true;
        config.cidr_limit = n;
        let table = model::desired(&config, &flags, TableFlags::default());
        let path = std::env::temp_dir().join(format!("nma-bench-{}-{n}.nft", std::process::id()));
        std::fs::write(&path, table.to_string())?;

        let mut encode_t = Vec::new();
        let mut commit_t = Vec::new();
        let mut elements = 0;
        nft::replace_table(&mut sock, &table)?; // the steady state: replace an existing table
        for _ in 0..runs {
            let t0 = Instant::now();
            let batch = encode::replace(&table, sock.next_seq(), nft::ReplaceForm::AddDeleteAdd);
            encode_t.push(t0.elapsed());
            sock.send_batch(&batch)?;
            commit_t.push(t0.elapsed());
            elements = batch.elements;
        }
        let mut nft_t = Vec::new();
        for _ in 0..runs {
            // nft -f adds to an existing table; flush it first, outside the timing, so
            // both sides end in the same state.
            nft::delete_table(&mut sock, &table.name)?;
            let t0 = Instant::now();
            let st = std::process::Command::new("nft")
                .arg("-f")
                .arg(&path)
                .status()?;
            nft_t.push(t0.elapsed());
            anyhow::ensure!(st.success(), "nft -f failed");
        }
        let _ = std::fs::remove_file(&path);
        let (e, c, f) = (Stats::of(encode_t), Stats::of(commit_t), Stats::of(nft_t));
        println!(
            "{:>9} {:>9} {:>24} {:>24} {:>24} {:>6.2}x",
            n,
            elements,
            e.ms(),
            c.ms(),
            f.ms(),
            c.median.as_secs_f64() / f.median.as_secs_f64().max(1e-9)
        );
    }
    nft::delete_table(&mut sock, model::TABLE_NAME)?;
    Ok(())
}
