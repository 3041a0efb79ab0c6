//! Pure decoding: kernel messages (dump replies and notifications) into the model.
//!
//! The reader gathers the NEWTABLE, NEWSET, NEWSETELEM, NEWCHAIN and NEWRULE messages of one
//! table and [`assemble`]s them into a [`Table`](crate::model::Table). Interval elements become prefixes again;
//! expressions go through [`raise`](super::stmt::raise); whatever the model cannot express is kept as text in
//! [`Table::foreign`](crate::model::Table::foreign) or [`Stmt::Unknown`](crate::model::Stmt::Unknown).
//!
//! The messages of sets and maps have one layout and are decoded here; what a map's set,
//! elements and their data mean (the `snatRules` maps) is read in `maps.rs`.

use ipnet::IpNet;

use super::expr::Expr;
use super::expr::parse_verdict;
use super::uapi::*;
use crate::addr::prefix::{Family, Span, span_to_prefixes};
use crate::kernel::netlink::{Malformed, Msg};
use crate::model::{BaseChain, Chain, TableFlags};

// A table's parts into the model, and the decoder of a read's replies.
mod assemble;
// The `snatRules` maps: which element data are kept, and a map's set and elements into a
// `Map`.
mod maps;

use assemble::SetKind;
pub use assemble::{SetRead, TableDecoder, assemble, table_from_dump};

/// A table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMsg {
    /// Name.
    pub name: String,
    /// Flags.
    pub flags: TableFlags,
    /// Port id of the owning socket, for an owned table.
    pub owner: Option<u32>,
}

/// A set as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetMsg {
    /// Table name.
    pub table: String,
    /// Set name.
    pub name: String,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// Key length in bytes.
    pub key_len: u32,
    /// Key data type (nft's: `ipv4_addr` 7, `ipv6_addr` 8, `ifname` 41).
    pub key_type: u32,
    /// A map's data type (0 for a set).
    pub data_type: u32,
    /// A map's data length in bytes (0 for a set).
    pub data_len: u32,
}

/// A chain as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainMsg {
    /// Table name.
    pub table: String,
    /// The chain (without rules).
    pub chain: Chain,
}

/// A rule as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMsg {
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// Rule handle.
    pub handle: u64,
    /// Raw expressions.
    pub exprs: Vec<Expr>,
}

/// A set element: key bytes and `NFT_SET_ELEM_*` flags.
///
/// Keys of up to 16 bytes (addresses, interface names) are kept inline: a table read holds
/// hundreds of thousands of elements, and a heap allocation for each one made the read the
/// agent's peak of memory. A longer key (a concatenation in someone else's set) keeps only
/// its length; nothing reads such keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element {
    key: [u8; 16],
    len: u16,
    /// Flags.
    pub flags: u32,
}

impl Element {
    /// An element with key `key` (big-endian) and `flags`.
    pub fn new(key: &[u8], flags: u32) -> Element {
        let mut inline = [0u8; 16];
        if let Some(dst) = inline.get_mut(..key.len()) {
            dst.copy_from_slice(key);
        }
        Element {
            key: inline,
            len: u16::try_from(key.len()).unwrap_or(u16::MAX),
            flags,
        }
    }

    /// The key's length in bytes.
    pub fn key_len(&self) -> usize {
        usize::from(self.len)
    }

    /// The key, when it is at most 16 bytes long.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.get(..self.key_len())
    }

    /// The key as a number, when it is `key_len` bytes long.
    fn key_u128(&self, key_len: usize) -> Option<u128> {
        (self.key_len() == key_len).then_some(())?;
        Some(key_to_u128(self.key()?))
    }
}

/// The elements of one NEWSETELEM message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementsMsg {
    /// Table name.
    pub table: String,
    /// Set name.
    pub set: String,
    /// Elements.
    pub elements: Vec<Element>,
    /// The data of the elements that carry a value (a map's), by key: kept apart from
    /// [`Element`] so that the elements of the large sets stay small.
    pub data: Vec<(u128, u128)>,
}

/// A NEWGEN notification: the end of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenMsg {
    /// The new generation id.
    pub id: u32,
    /// PID of the committing process as the kernel sees it (the host PID in a pod).
    pub pid: Option<u32>,
    /// Name of the committing process.
    pub proc_name: Option<String>,
}

/// The table an nf_tables object message belongs to, as raw bytes: attribute 1 in every
/// object message (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
/// NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE). Readers filter on this
/// before decoding anything else, so nothing in another table (a name that is not UTF-8, an
/// expression we do not know) can make reading ours fail.
pub fn table_of<'a>(msg: &Msg<'a>) -> Option<&'a [u8]> {
    let a = msg.attrs().map_while(Result::ok).find(|a| a.ty == 1)?;
    let end = a.data.iter().position(|&b| b == 0).unwrap_or(a.data.len());
    Some(&a.data[..end])
}

/// Whether the message belongs to table `name`.
pub fn is_of_table(msg: &Msg<'_>, name: &str) -> bool {
    table_of(msg) == Some(name.as_bytes())
}

/// Names read from the kernel are decoded lossily: others choose them, the kernel does not
/// require UTF-8, and a name we cannot print must not stop us reading a table.
///
/// Decodes a NEWTABLE/DELTABLE message.
pub fn table(msg: &Msg<'_>) -> Result<TableMsg, Malformed> {
    let mut out = TableMsg {
        name: String::new(),
        flags: TableFlags::default(),
        owner: None,
    };
    for a in msg.attrs() {
        let a = a?;
        match a.ty {
            NFTA_TABLE_NAME => out.name = a.str_lossy().into_owned(),
            NFTA_TABLE_FLAGS => out.flags = TableFlags(a.u32()?),
            NFTA_TABLE_OWNER => out.owner = Some(a.u32()?),
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes a NEWSET/DELSET message.
pub fn set(msg: &Msg<'_>) -> Result<SetMsg, Malformed> {
    let mut out = SetMsg {
        table: String::new(),
        name: String::new(),
        flags: 0,
        key_len: 0,
        key_type: 0,
        data_type: 0,
        data_len: 0,
    };
    for a in msg.attrs() {
        let a = a?;
        match a.ty {
            NFTA_SET_TABLE => out.table = a.str_lossy().into_owned(),
            NFTA_SET_NAME => out.name = a.str_lossy().into_owned(),
            NFTA_SET_FLAGS => out.flags = a.u32()?,
            NFTA_SET_KEY_LEN => out.key_len = a.u32()?,
            NFTA_SET_KEY_TYPE => out.key_type = a.u32()?,
            NFTA_SET_DATA_TYPE => out.data_type = a.u32()?,
            NFTA_SET_DATA_LEN => out.data_len = a.u32()?,
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes a NEWSETELEM/DELSETELEM message.
pub fn elements(msg: &Msg<'_>) -> Result<ElementsMsg, Malformed> {
    let mut out = ElementsMsg {
        table: String::new(),
        set: String::new(),
        elements: Vec::new(),
        data: Vec::new(),
    };
    for a in msg.attrs() {
        let a = a?;
        match a.ty {
            NFTA_SET_ELEM_LIST_TABLE => out.table = a.str_lossy().into_owned(),
            NFTA_SET_ELEM_LIST_SET => out.set = a.str_lossy().into_owned(),
            NFTA_SET_ELEM_LIST_ELEMENTS => {
                for e in a.nested() {
                    let (mut key, mut flags): (&[u8], u32) = (&[], 0);
                    let mut data: Option<&[u8]> = None;
                    let mut verdict = None;
                    for f in e?.nested() {
                        let f = f?;
                        match f.ty {
                            NFTA_SET_ELEM_KEY => {
                                for v in f.nested() {
                                    let v = v?;
                                    if v.ty == NFTA_DATA_VALUE {
                                        key = v.data;
                                    }
                                }
                            }
                            NFTA_SET_ELEM_DATA => {
                                for v in f.nested() {
                                    let v = v?;
                                    if v.ty == NFTA_DATA_VALUE {
                                        data = Some(v.data);
                                    } else if v.ty == NFTA_DATA_VERDICT {
                                        verdict = Some(parse_verdict(&v)?);
                                    }
                                }
                            }
                            NFTA_SET_ELEM_FLAGS => flags = f.u32()?,
                            _ => {}
                        }
                    }
                    match verdict {
                        Some(v) => out.data.extend(maps::verdict_datum(key, &v)),
                        None => out.data.extend(maps::datum(key, data)),
                    }
                    out.elements.push(Element::new(key, flags));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes a NEWCHAIN/DELCHAIN message.
pub fn chain(msg: &Msg<'_>) -> Result<ChainMsg, Malformed> {
    let mut table = String::new();
    let mut name = String::new();
    let mut hook = None;
    let mut priority = None;
    let mut policy = None;
    let mut kind = None;
    for a in msg.attrs() {
        let a = a?;
        match a.ty {
            NFTA_CHAIN_TABLE => table = a.str_lossy().into_owned(),
            NFTA_CHAIN_NAME => name = a.str_lossy().into_owned(),
            NFTA_CHAIN_HOOK => {
                for h in a.nested() {
                    let h = h?;
                    match h.ty {
                        NFTA_HOOK_HOOKNUM => hook = Some(h.u32()?),
                        NFTA_HOOK_PRIORITY => priority = Some(h.u32()? as i32),
                        _ => {}
                    }
                }
            }
            NFTA_CHAIN_POLICY => policy = Some(a.u32()?),
            NFTA_CHAIN_TYPE => kind = Some(a.str_lossy().into_owned()),
            _ => {}
        }
    }
    let base = hook.map(|hook| BaseChain {
        kind: kind.unwrap_or_default(),
        hook,
        priority: priority.unwrap_or(0),
        policy: policy.unwrap_or(NF_ACCEPT as u32),
    });
    Ok(ChainMsg {
        table,
        chain: Chain {
            name,
            base,
            rules: Vec::new(),
        },
    })
}

/// Decodes a NEWRULE/DELRULE message.
pub fn rule(msg: &Msg<'_>) -> Result<RuleMsg, Malformed> {
    let mut out = RuleMsg {
        table: String::new(),
        chain: String::new(),
        handle: 0,
        exprs: Vec::new(),
    };
    for a in msg.attrs() {
        let a = a?;
        match a.ty {
            NFTA_RULE_TABLE => out.table = a.str_lossy().into_owned(),
            NFTA_RULE_CHAIN => out.chain = a.str_lossy().into_owned(),
            NFTA_RULE_HANDLE => out.handle = a.u64()?,
            NFTA_RULE_EXPRESSIONS => {
                for e in a.nested() {
                    out.exprs.push(Expr::decode(&e?)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes a NEWGEN message.
pub fn generation(msg: &Msg<'_>) -> Result<GenMsg, Malformed> {
    let mut out = GenMsg {
        id: 0,
        pid: None,
        proc_name: None,
    };
    let mut have_id = false;
    for a in msg.attrs() {
        let a = a?;
        match a.ty {
            NFTA_GEN_ID => {
                out.id = a.u32()?;
                have_id = true;
            }
            NFTA_GEN_PROC_PID => out.pid = Some(a.u32()?),
            NFTA_GEN_PROC_NAME => out.proc_name = Some(a.str_lossy().into_owned()),
            _ => {}
        }
    }
    if !have_id {
        return Err(Malformed("NEWGEN without a generation id".into()));
    }
    Ok(out)
}

/// The address family of a set's keys or a map's data of nft type `ty` and `len` bytes
/// (`ipv4_addr`, `ipv6_addr`); `None` for any other type.
pub(crate) fn addr_family(ty: u32, len: u32) -> Option<Family> {
    match (ty, len) {
        (NFT_TYPE_IPADDR, 4) => Some(Family::V4),
        (NFT_TYPE_IP6ADDR, 16) => Some(Family::V6),
        _ => None,
    }
}

/// A big-endian key of up to 16 bytes as a number.
pub(crate) fn key_to_u128(key: &[u8]) -> u128 {
    key.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}

/// Turns interval elements back into spans of keys of `key_len` bytes.
///
/// Elements are sorted by key (an end before a start at the same key, which is where two
/// adjacent ranges meet); a start opens a range, the next end closes it one below its key, a
/// start with no end runs to the top of the key space (`max`). A leading end element at 0
/// (nft's and our marker for older kernels) closes nothing and is skipped.
pub fn interval_spans(elements: &[Element], key_len: usize, max: u128) -> Vec<Span> {
    // Sized up front: a full table read is the agent's peak of memory, and growing by
    // doubling would add up to half again.
    let mut keys: Vec<(u128, bool)> = Vec::with_capacity(elements.len());
    keys.extend(elements.iter().filter_map(|e| {
        let k = e.key_u128(key_len)?;
        Some((k, e.flags & NFT_SET_ELEM_INTERVAL_END == 0))
    }));
    // false (end) sorts before true (start) at equal keys.
    keys.sort_unstable();
    let mut out = Vec::new();
    let mut open: Option<u128> = None;
    for (key, is_start) in keys {
        if is_start {
            if let Some(lo) = open {
                // Two starts in a row: the first range runs up to the second.
                if key > lo {
                    out.push(Span { lo, hi: key - 1 });
                }
            }
            open = Some(key);
        } else if let Some(lo) = open.take() {
            if key > lo {
                out.push(Span { lo, hi: key - 1 });
            }
        }
    }
    if let Some(lo) = open {
        out.push(Span { lo, hi: max });
    }
    out
}

/// Turns interval elements back into prefixes.
pub fn interval_prefixes(elements: &[Element], family: Family) -> Vec<IpNet> {
    let spans = interval_spans(elements, family.addr_len(), family.max());
    // Canonical tables hold one prefix per span.
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        span_to_prefixes(span, family.bits(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PolicyFlags};
    use crate::model::{self, Stmt};

    fn flags() -> PolicyFlags {
        PolicyFlags {
            nomasq_all_reserved_ranges: true,
            enable_ipv6: true,
            random_fully: true,
            to_ports: Some("1024-29999,32768-65535".parse().unwrap()),
            ..PolicyFlags::default()
        }
    }

    /// Bytes the kernel (6.18) sent for a read of the table committed by
    /// `nft-masq-agent --once --enable-ipv6 --to-ports 1024-29999,32768-65535
    /// --nomasq-all-reserved-ranges`, captured with `examples/capture_dump.rs`.
    const DUMP: &[u8] = include_bytes!("../../../../tests/fixtures/dump-ipv6-to-ports.bin");

    /// The same table after `nft add element ... { 8.8.8.0/24 }`, `nft add rule ... ip daddr
    /// 1.2.3.4 log accept` and `nft add set ... ports { type inet_service; }`.
    const TAMPERED: &[u8] = include_bytes!("../../../../tests/fixtures/dump-tampered.bin");

    #[test]
    fn kernel_dump_decodes_to_the_desired_table() {
        let f = flags();
        let want = model::desired(&Config::defaults(&f), &f, Default::default());
        let got = table_from_dump(DUMP, "nft-masq-agent").unwrap().unwrap();
        assert_eq!(got, want);
        // 240.0.0.0/4 came back although the kernel holds no end element for it.
        assert_eq!(
            got.sets[0].prefixes.last().unwrap().to_string(),
            "240.0.0.0/4"
        );
        assert!(table_from_dump(DUMP, "other").unwrap().is_none());
    }

    /// The table of `--enable-ipv6 --to-ports 1024-29999,32768-65535` with sourceCIDRs,
    /// egressInterfaces ("eth*", eth0, wlan0) and snatTo (an IPv4 range and one IPv6 address)
    /// as kernel 6.18 reports it: its NAT expressions carry NF_NAT_RANGE_MAP_IPS and an
    /// address-max register equal to the min one, neither of which nft or we send.
    const SCOPES: &[u8] = include_bytes!("../../../../tests/fixtures/dump-scopes-snat.bin");

    #[test]
    fn scopes_and_snat_read_back_as_committed() {
        let f = flags();
        let text = "nonMasqueradeCIDRs: [10.0.0.0/8]\n\
                    sourceCIDRs: [10.244.0.0/16, 'fd00:10:244::/48']\n\
                    egressInterfaces: ['eth*', eth0, wlan0]\n\
                    snatTo: [198.51.100.10-198.51.100.20, '2001:db8:ffff::10']\n";
        let c = crate::config::parse_str(text, "/c".as_ref(), &f)
            .unwrap()
            .config;
        let want = model::desired(&c, &f, Default::default());
        let got = table_from_dump(SCOPES, "nft-masq-agent").unwrap().unwrap();
        assert!(got.same_policy(&want), "read back:\n{got}\nwanted:\n{want}");
        assert_eq!(got.name_sets[0].names.len(), 2, "eth0 is inside eth*");
    }

    #[test]
    fn nothing_in_another_table_stops_reading_ours() {
        use crate::kernel::netlink::Writer;
        let f = flags();
        let want = model::desired(&Config::defaults(&f), &f, Default::default());
        let mut w = Writer::default();
        // A chain of another table whose name is not UTF-8.
        let m = w.begin_msg(nft_type(NFT_MSG_NEWCHAIN), 0, 0, NFPROTO_INET, 0);
        w.put_str(NFTA_CHAIN_TABLE, "other");
        w.put(NFTA_CHAIN_NAME, b"\xff\xfe\0");
        w.end_msg(m);
        // A rule of another table with an expression list that does not parse.
        let m = w.begin_msg(nft_type(NFT_MSG_NEWRULE), 0, 0, NFPROTO_INET, 0);
        w.put_str(NFTA_RULE_TABLE, "other");
        w.put(NFTA_RULE_EXPRESSIONS, &[200, 0, 1, 0]);
        w.end_msg(m);
        let mut bytes = w.into_bytes();
        bytes.extend_from_slice(DUMP);
        let got = table_from_dump(&bytes, "nft-masq-agent").unwrap().unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn a_name_in_our_table_that_is_not_utf8_is_shown_not_fatal() {
        use crate::kernel::netlink::Writer;
        let mut w = Writer::default();
        let m = w.begin_msg(nft_type(NFT_MSG_NEWCHAIN), 0, 0, NFPROTO_INET, 0);
        w.put_str(NFTA_CHAIN_TABLE, "nft-masq-agent");
        w.put(NFTA_CHAIN_NAME, b"ev\xffl\0");
        w.end_msg(m);
        let mut bytes = w.into_bytes();
        bytes.extend_from_slice(DUMP);
        let got = table_from_dump(&bytes, "nft-masq-agent").unwrap().unwrap();
        assert!(got.chains.iter().any(|c| c.name == "ev\u{fffd}l"), "{got}");
    }

    #[test]
    fn tampering_is_decoded_and_shown() {
        let f = flags();
        let want = model::desired(&Config::defaults(&f), &f, Default::default());
        let got = table_from_dump(TAMPERED, "nft-masq-agent")
            .unwrap()
            .unwrap();
        assert!(!got.same_policy(&want));
        assert_eq!(got.sets[0].prefixes[0].to_string(), "8.8.8.0/24");
        assert_eq!(
            got.foreign,
            ["set ports of key type 13 with 2-byte keys and 0 elements".to_string()]
        );
        let last = got.chains[0].rules.last().unwrap();
        assert!(
            last.stmts.contains(&Stmt::Unknown("log expression".into())),
            "{last:?}"
        );
        let text = got.to_string();
        // What the agent writes is read as nft shows it; the rest stays raw, as a comment.
        assert!(
            text.contains("# rule not understood by nft-masq-agent: meta nfproto ipv4 ")
                && text.contains(" [log expression] accept"),
            "{text}"
        );
    }

    #[test]
    fn truncated_dump_is_an_error_not_a_panic() {
        for cut in [1, 17, 100, DUMP.len() - 3] {
            let _ = table_from_dump(&DUMP[..cut], "nft-masq-agent");
        }
        assert!(table_from_dump(&DUMP[..17], "nft-masq-agent").is_err());
    }

    #[test]
    fn element_keys_longer_than_16_bytes_keep_only_their_length() {
        let long = Element::new(&[1u8; 40], 0);
        assert_eq!((long.key_len(), long.key()), (40, None));
        let short = Element::new(&[10, 0, 0, 0], NFT_SET_ELEM_INTERVAL_END);
        assert_eq!(short.key(), Some(&[10u8, 0, 0, 0][..]));
        // Only keys of the set's length take part.
        let spans = interval_spans(&[long, Element::new(&[10, 0, 0, 0], 0)], 4, u32::MAX.into());
        assert_eq!(
            spans,
            [Span {
                lo: 0x0a00_0000,
                hi: u32::MAX.into()
            }]
        );
    }

    #[test]
    fn interval_elements_in_any_order() {
        let e = |k: [u8; 4], end: bool| Element::new(&k, u32::from(end));
        // Reverse order, as an rbtree dump may give them; adjacent ranges share a key.
        let elems = vec![
            e([10, 0, 2, 0], true),
            e([10, 0, 1, 0], false),
            e([10, 0, 1, 0], true),
            e([10, 0, 0, 0], false),
            e([0, 0, 0, 0], true),
        ];
        let p: Vec<String> = interval_prefixes(&elems, Family::V4)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(p, ["10.0.0.0/24", "10.0.1.0/24"]);
        // A start with no end runs to the top.
        let p = interval_prefixes(&[e([192, 0, 0, 0], false)], Family::V4);
        assert_eq!(p, ["192.0.0.0/2".parse::<IpNet>().unwrap()]);
    }
}
