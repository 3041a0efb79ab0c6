//! A tiny UDP probe for the demo: `probe listen PORT [TIMEOUT_MS]` prints the source address
//! of the first datagram it receives; `probe send ADDR PORT` sends one.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("listen") => {
            let port: u16 = args
                .get(2)
                .ok_or_else(|| anyhow::anyhow!("port"))?
                .parse()?;
            let ms: u64 = args.get(3).map_or(Ok(3000), |s| s.parse())?;
            let s = UdpSocket::bind(("0.0.0.0", port))?;
            s.set_read_timeout(Some(Duration::from_millis(ms)))?;
            let mut buf = [0u8; 64];
            let (_, from) = s.recv_from(&mut buf)?;
            println!("{}", from.ip());
        }
        Some("send") => {
            let addr: IpAddr = args
                .get(2)
                .ok_or_else(|| anyhow::anyhow!("addr"))?
                .parse()?;
            let port: u16 = args
                .get(3)
                .ok_or_else(|| anyhow::anyhow!("port"))?
                .parse()?;
            let s = UdpSocket::bind(("0.0.0.0", 0))?;
            for _ in 0..3 {
                s.send_to(b"nft-masq-agent demo", SocketAddr::new(addr, port))?;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        _ => anyhow::bail!("usage: probe listen PORT [TIMEOUT_MS] | probe send ADDR PORT"),
    }
    Ok(())
}
