//! nf_tables notifications: the `NFNLGRP_NFTABLES` multicast group.
//!
//! Every committed transaction produces one message per changed object (table, chain, rule,
//! set, element), each naming its table and carrying the committing socket's port id, then a
//! `NEWGEN` with the new generation id. [`classify`] is the pure part; [`EventSocket`] reads
//! the group without blocking, for tokio.

use std::io;

use tokio::io::unix::AsyncFd;

use super::decode;
use super::error::NftError;
use super::uapi::*;
use crate::kernel::netlink::{Msg, NetlinkSocket, Shared, messages};
use crate::model::TABLE_NAME;

/// One notification, reduced to what the agent acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An object of a table changed.
    Object {
        /// `NFT_MSG_*` type (NEWRULE, DELTABLE, ...).
        kind: u16,
        /// nfgenmsg family.
        family: u8,
        /// The table the object belongs to.
        table: String,
        /// Port id of the socket that committed the change.
        port_id: u32,
        /// What changed, decoded for our own table only ([`Detail::None`] elsewhere).
        detail: Detail,
    },
    /// A transaction ended.
    Generation {
        /// The new generation id.
        id: u32,
        /// Port id of the committing socket.
        port_id: u32,
        /// The committing process, as the kernel names it.
        proc_name: Option<String>,
        /// Its PID as the kernel sees it (the host PID in a pod).
        pid: Option<u32>,
    },
}

/// What an object notification of our table changed, as far as the live-table model
/// follows it ([`crate::kernel::nft::live`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// Not decoded: another table, or a kind the model does not follow (a set, a chain or
    /// the table itself).
    None,
    /// Elements of set `set` added or deleted (by the message kind): `(key, is_end)`.
    Elements {
        /// The set.
        set: String,
        /// The elements.
        keys: Vec<(u128, bool)>,
    },
    /// A rule of chain `chain` added or deleted.
    Rule {
        /// The chain.
        chain: String,
    },
    /// An element or rule message of our table that did not decode.
    Undecodable,
}

/// The detail the live-table model needs of an object notification of our table: elements
/// for element messages, the chain for rule messages.
fn detail(kind: u16, msg: &Msg<'_>) -> Detail {
    match kind {
        NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM | NFT_MSG_DESTROYSETELEM => {
            let Ok(m) = decode::elements(msg) else {
                return Detail::Undecodable;
            };
            let mut keys = Vec::with_capacity(m.elements.len());
            for e in &m.elements {
                match e.key() {
                    Some(k) if !k.is_empty() => keys.push((
                        decode::key_to_u128(k),
                        e.flags & NFT_SET_ELEM_INTERVAL_END != 0,
                    )),
                    _ => return Detail::Undecodable,
                }
            }
            Detail::Elements { set: m.set, keys }
        }
        NFT_MSG_NEWRULE | NFT_MSG_DELRULE | NFT_MSG_DESTROYRULE => {
            // Only the chain's name: the rule's expressions may be anything.
            let chain = msg
                .attrs()
                .map_while(Result::ok)
                .find(|a| a.ty == NFTA_RULE_CHAIN)
                .map(|a| a.str_lossy().into_owned());
            chain.map_or(Detail::Undecodable, |chain| Detail::Rule { chain })
        }
        _ => Detail::None,
    }
}

/// Reduces one notification message to an [`Event`]; `None` for anything else.
pub fn classify(msg: &Msg<'_>) -> Option<Event> {
    let kind = msg.nft_msg()?;
    if kind == NFT_MSG_NEWGEN {
        let g = decode::generation(msg).ok()?;
        return Some(Event::Generation {
            id: g.id,
            port_id: msg.pid,
            proc_name: g.proc_name,
            pid: g.pid,
        });
    }
    // Lossy: a table whose name is not UTF-8 is not ours, but still a change to notice.
    let table = String::from_utf8_lossy(decode::table_of(msg)?).into_owned();
    let family = msg.family();
    // Decoded for our table only: another component's element floods cost nothing more.
    let detail = if table == TABLE_NAME && family == NFPROTO_INET {
        detail(kind, msg)
    } else {
        Detail::None
    };
    Some(Event::Object {
        kind,
        family,
        table,
        port_id: msg.pid,
        detail,
    })
}

/// What one drain of the socket produced.
#[derive(Debug, Default)]
pub struct Drained {
    /// Events in arrival order.
    pub events: Vec<Event>,
    /// The kernel dropped notifications (ENOBUFS): a full check is needed.
    pub lost: bool,
    /// Element keys gathered (bounded by [`MAX_KEYS`]).
    pub keys: usize,
}

/// A socket subscribed to the nf_tables notification group, read without blocking.
#[derive(Debug)]
pub struct EventSocket {
    sock: Shared,
    buf: Vec<u8>,
}

impl std::os::fd::AsFd for EventSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// The [`EventSocket`] registered with tokio: the event loop awaits notifications on it.
#[derive(Debug)]
pub struct AsyncEventSocket {
    fd: AsyncFd<Shared>,
    buf: Vec<u8>,
}

/// Joins and leaves the notification group of an event socket that someone else reads.
#[derive(Debug, Clone)]
pub struct Membership(Shared);

impl Membership {
    /// Joins (`true`) or leaves the group. The agent leaves it during its own commits: the
    /// kernel builds no notifications when nobody listens, which keeps a 100,000-prefix
    /// commit from tripling in cost and from flooding the socket with our own elements.
    pub fn subscribe(&self, on: bool) -> Result<(), NftError> {
        self.0
            .set_membership(NFNLGRP_NFTABLES, on)
            .map_err(|source| NftError::Io {
                op: if on {
                    "NETLINK_ADD_MEMBERSHIP"
                } else {
                    "NETLINK_DROP_MEMBERSHIP"
                },
                source,
            })
    }
}

/// A big buffer rides out a burst of foreign element notifications; past it the kernel
/// reports ENOBUFS and the agent does a full check.
const EVENT_RCVBUF: usize = 8 << 20;
/// One read: the kernel batches notifications into datagrams of up to a page or so.
const EVENT_READ_BUF: usize = 256 * 1024;

impl EventSocket {
    /// Opens the socket and joins the group.
    pub fn open() -> Result<EventSocket, NftError> {
        let io = |op| move |source| NftError::Io { op, source };
        let sock = NetlinkSocket::open_netfilter().map_err(io("socket (events)"))?;
        sock.set_nonblocking().map_err(io("O_NONBLOCK"))?;
        let _ = sock.grow_recv_buffer(EVENT_RCVBUF);
        let s = EventSocket {
            sock: Shared::new(sock),
            buf: vec![0; EVENT_READ_BUF],
        };
        s.membership().subscribe(true)?;
        Ok(s)
    }

    /// A handle to join and leave the group while the socket itself is read elsewhere.
    pub fn membership(&self) -> Membership {
        Membership(self.sock.clone())
    }

    /// Joins (`true`) or leaves the group; see [`Membership::subscribe`].
    pub fn subscribe(&self, on: bool) -> Result<(), NftError> {
        self.membership().subscribe(on)
    }

    /// Registers the socket with the tokio reactor.
    pub fn into_async(self) -> io::Result<AsyncEventSocket> {
        Ok(AsyncEventSocket {
            fd: self.sock.into_async()?,
            buf: self.buf,
        })
    }

    /// Reads everything queued, without blocking.
    pub fn drain(&mut self) -> Result<Drained, NftError> {
        drain(&self.sock, &mut self.buf)
    }
}

impl AsyncEventSocket {
    /// Waits for notifications, then reads everything queued.
    pub async fn next(&mut self) -> Result<Drained, NftError> {
        let mut guard = self.fd.readable().await.map_err(|source| NftError::Io {
            op: "poll (events)",
            source,
        })?;
        let drained = drain(guard.get_inner(), &mut self.buf);
        // We read until EWOULDBLOCK, so readiness is really gone.
        guard.clear_ready();
        drained
    }
}

/// The most distinct events one drain keeps; past it the rest count as lost (and the agent
/// does a full check), so a flood of notifications cannot grow the agent's memory.
pub const MAX_EVENTS: usize = 4096;

/// The most element keys one drain keeps (about 10 MiB); past it the rest count as lost.
/// A flush of our set at the prefix cap (300,000 elements) fits.
pub const MAX_KEYS: usize = 320_000;

impl Drained {
    /// Adds an event, folding a repeat of the previous one (a 100,000-element commit
    /// notifies once per element: one event says the same; for our own table the
    /// elements are gathered into that one event).
    fn push(&mut self, mut ev: Event) {
        if let Event::Object {
            detail: Detail::Elements { keys, .. },
            ..
        } = &mut ev
        {
            self.keys += keys.len();
            if self.keys > MAX_KEYS {
                self.lost = true;
                keys.clear();
            }
        }
        if let (
            Some(Event::Object {
                kind,
                family,
                table,
                port_id,
                detail: Detail::Elements { set, keys },
            }),
            Event::Object {
                kind: k2,
                family: f2,
                table: t2,
                port_id: p2,
                detail:
                    Detail::Elements {
                        set: s2,
                        keys: more,
                    },
            },
        ) = (self.events.last_mut(), &mut ev)
        {
            if (*kind, *family, &*table, *port_id, &*set) == (*k2, *f2, &*t2, *p2, &*s2) {
                keys.append(more);
                return;
            }
        }
        if self.events.last() == Some(&ev) {
            return;
        }
        if self.events.len() >= MAX_EVENTS {
            self.lost = true;
            return;
        }
        self.events.push(ev);
    }
}

/// Reads until the socket would block. Lost notifications (ENOBUFS, a truncated datagram,
/// an unparsable message, more than [`MAX_EVENTS`]) are reported as `lost`: the agent then
/// looks at the table itself.
fn drain(sock: &NetlinkSocket, buf: &mut [u8]) -> Result<Drained, NftError> {
    let mut out = Drained::default();
    loop {
        match sock.recv(buf, true) {
            Ok((0, _)) => break,
            Ok((n, truncated)) => {
                out.lost |= truncated;
                for m in messages(&buf[..n]) {
                    match m {
                        Ok(m) => {
                            if let Some(ev) = classify(&m) {
                                out.push(ev);
                            }
                        }
                        Err(_) => out.lost = true,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.lost = true,
            Err(source) => {
                return Err(NftError::Io {
                    op: "recvmsg (events)",
                    source,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PolicyFlags};
    use crate::kernel::nft::encode;
    use crate::model::{self, TableFlags};
    use crate::testing::wire::new_generation;

    #[test]
    fn a_flood_of_notifications_is_folded_and_bounded() {
        let ev = |table: &str| Event::Object {
            kind: NFT_MSG_NEWSETELEM,
            family: NFPROTO_INET,
            table: table.into(),
            port_id: 9,
            detail: Detail::None,
        };
        let mut d = Drained::default();
        for _ in 0..100_000 {
            d.push(ev("kube-proxy"));
        }
        assert_eq!((d.events.len(), d.lost), (1, false));
        for i in 0..MAX_EVENTS * 2 {
            d.push(ev(&format!("t{i}")));
        }
        assert_eq!(d.events.len(), MAX_EVENTS);
        assert!(d.lost, "what was dropped is reported as lost");
    }

    #[test]
    fn object_messages_name_their_table() {
        // Notifications have the layout of the requests; classify our own batch.
        let f = PolicyFlags::default();
        let t = model::desired(&Config::defaults(&f), &f, TableFlags::default());
        let b = encode::replace(&t, 1, encode::ReplaceForm::AddDeleteAdd);
        let events: Vec<Event> = messages(&b.bytes)
            .filter_map(|m| classify(&m.unwrap()))
            .collect();
        assert_eq!(events.len(), b.msgs.len());
        for e in &events {
            match e {
                Event::Object { table, family, .. } => {
                    assert_eq!(table, "nft-masq-agent");
                    assert_eq!(*family, NFPROTO_INET);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn element_and_rule_messages_of_our_table_carry_what_changed() {
        // Notifications have the layout of the requests: a difference that deletes one
        // interval and refills a chain, classified.
        let f = PolicyFlags::default();
        let t = model::desired(&Config::defaults(&f), &f, TableFlags::default());
        let mut less = t.clone();
        let gone = less.sets[0].prefixes.remove(0);
        less.chains[0].rules.pop();
        let b = encode::delta(&t, &less, 1, 7).unwrap();
        let mut d = Drained::default();
        for m in messages(&b.bytes) {
            if let Some(ev) = classify(&m.unwrap()) {
                d.push(ev);
            }
        }
        let span = crate::addr::prefix::Span::of(&gone);
        let elements: Vec<&Detail> = d
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Object { kind, detail, .. } if *kind == NFT_MSG_DELSETELEM => Some(detail),
                _ => None,
            })
            .collect();
        assert_eq!(
            elements,
            [&Detail::Elements {
                set: t.sets[0].name.clone(),
                keys: vec![(span.lo, false), (span.hi + 1, true)],
            }]
        );
        assert!(d.events.iter().any(|e| matches!(e,
            Event::Object { detail: Detail::Rule { chain }, .. } if *chain == t.chains[0].name)));
    }

    #[test]
    fn element_floods_of_our_table_fold_into_one_event_and_are_bounded() {
        let ev = |key: u128| Event::Object {
            kind: NFT_MSG_DELSETELEM,
            family: NFPROTO_INET,
            table: TABLE_NAME.into(),
            port_id: 9,
            detail: Detail::Elements {
                set: "s".into(),
                keys: vec![(key, false)],
            },
        };
        let mut d = Drained::default();
        for k in 0..1000 {
            d.push(ev(k));
        }
        assert_eq!(d.events.len(), 1);
        assert!(matches!(&d.events[0],
            Event::Object { detail: Detail::Elements { keys, .. }, .. } if keys.len() == 1000));
        for k in 0..MAX_KEYS as u128 {
            d.push(ev(k));
        }
        assert!(
            d.lost,
            "past the bound the rest is lost, and a full check follows"
        );
    }

    #[test]
    fn generation_message() {
        // Committed by the socket with port id 777.
        let bytes = new_generation(42, 777, Some(1234), Some(b"nft\0"));
        let msg = messages(&bytes).next().unwrap().unwrap();
        assert_eq!(
            classify(&msg),
            Some(Event::Generation {
                id: 42,
                port_id: 777,
                proc_name: Some("nft".into()),
                pid: Some(1234),
            })
        );
    }

    #[test]
    fn a_process_name_that_is_not_utf8_still_ends_the_transaction() {
        // `nft` started through a symlink named "\xff": the repair must not wait for a resync.
        let bytes = new_generation(7, 0, None, Some(b"\xff\0"));
        let msg = messages(&bytes).next().unwrap().unwrap();
        assert!(matches!(
            classify(&msg),
            Some(Event::Generation { id: 7, proc_name: Some(n), .. }) if n == "\u{fffd}"
        ));
    }
}
