//! Captures the kernel's reply to a read of the iptables-nft `nat` tables (chains and rules),
//! for the takeover's fixture tests (`src/kernel/nft/takeover/tests.rs`).
//!
//! Run as root inside a throwaway network namespace where `iptables-nft-restore` (and
//! `ip6tables-nft-restore`) loaded the rules, e.g.
//! `ip netns exec nma-capture cargo run --example capture_nat -- tests/fixtures/takeover`:
//! writes `takeover-ip.bin` and `takeover-ip6.bin` (the NEWCHAIN/NEWRULE messages back to
//! back).

use nft_masq_agent::kernel::nft::NftSocket;
use nft_masq_agent::kernel::nft::takeover::read_raw;
use nft_masq_agent::kernel::nft::uapi::{NFPROTO_IPV4, NFPROTO_IPV6};

fn main() -> anyhow::Result<()> {
    let prefix = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: capture_nat PREFIX"))?;
    let mut sock = NftSocket::open()?;
    for (family, name) in [(NFPROTO_IPV4, "ip"), (NFPROTO_IPV6, "ip6")] {
        let bytes = read_raw(&mut sock, family)?;
        let out = format!("{prefix}-{name}.bin");
        std::fs::write(&out, &bytes)?;
        eprintln!("wrote {} bytes to {out}", bytes.len());
    }
    Ok(())
}
