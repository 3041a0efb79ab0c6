//! Captures the kernel's reply to a table read, for the decoder's fixture tests.
//!
//! Run as root inside a throwaway network namespace holding the table, e.g.
//! `ip netns exec nma-capture cargo run --example capture_dump -- tests/fixtures/x.bin`.
//! The file holds the NEWTABLE/NEWSET/NEWSETELEM/NEWCHAIN/NEWRULE messages back to back.

use nft_masq_agent::kernel::nft::NftSocket;
use nft_masq_agent::model::TABLE_NAME;

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: capture_dump FILE"))?;
    let mut sock = NftSocket::open()?;
    let bytes = sock
        .read_table_raw(TABLE_NAME)?
        .ok_or_else(|| anyhow::anyhow!("table inet {TABLE_NAME} does not exist"))?;
    std::fs::write(&out, &bytes)?;
    eprintln!("wrote {} bytes to {out}", bytes.len());
    Ok(())
}
