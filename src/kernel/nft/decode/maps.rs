//! The maps read back: the `snatRules` maps (`snat-v4`, `snat-v6`: source intervals to the
//! address they leave with) into a [`Map`], the block dispatch maps (`nonmasq-dispatch-v4`:
//! address blocks to their chains) into a [`Dispatch`], and which element data a read keeps.
//! A map of other key or data types or flags, an interval without data, or a verdict other
//! than the jump to the block's chain, is described as foreign instead. Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Element, SetKind, SetMsg, addr_family, interval_spans, key_to_u128};
use crate::addr::prefix::Family;
use crate::addr::prefix::span_to_prefixes;
use crate::kernel::nft::expr::ImmData;
use crate::kernel::nft::uapi::{NFT_JUMP, NFT_SET_MAP};
use crate::kernel::nft::uapi::{NFT_SET_ANONYMOUS, NFT_SET_INTERVAL};
use crate::model::{Dispatch, Map, MapEntry, exemption_base, shard};

/// What a read keeps of one element's data (a map's), by key: `(key, value)` as numbers,
/// apart from the [`Element`] so that the elements of the large sets stay small. Only values
/// of up to 16 bytes (an address) are kept; nothing reads longer ones.
pub(super) fn datum(key: &[u8], data: Option<&[u8]>) -> Option<(u128, u128)> {
    data.filter(|d| d.len() <= 16 && key.len() <= 16)
        .map(|d| (key_to_u128(key), key_to_u128(d)))
}

/// The data kept for each key (`(key, value)` pairs in any order), looked up by key.
fn data_by_key(data: &[(u128, u128)]) -> impl Fn(u128) -> Option<u128> {
    let mut by_key = data.to_vec();
    by_key.sort_unstable();
    move |key| {
        by_key
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| by_key[i].1)
    }
}

/// What a read keeps of a verdict (a dispatch map's element data): a 128-bit FNV-1a digest
/// of its code and chain, by key. The agent's verdicts are a function of the key (the jump
/// to the block's chain), so the digest of the expected verdict is all a read must match,
/// and the elements stay as small as those of an address map.
pub(super) fn verdict_datum(key: &[u8], verdict: &ImmData) -> Option<(u128, u128)> {
    match verdict {
        ImmData::Verdict(code, chain) if key.len() <= 16 => Some((
            key_to_u128(key),
            verdict_digest(*code, chain.as_deref().unwrap_or("")),
        )),
        _ => None,
    }
}

/// The digest [`verdict_datum`] keeps for a verdict.
pub(crate) fn verdict_digest(code: i32, chain: &str) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    code.to_be_bytes()
        .iter()
        .chain([0u8].iter())
        .chain(chain.as_bytes())
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

/// An interval verdict map of address blocks, each interval one aligned block whose element
/// jumps to the block's chain ([`Dispatch`]).
pub(super) fn dispatch_kind(s: SetMsg, elems: &[Element], data: &[(u128, u128)]) -> SetKind {
    let Some(family) = addr_family(s.key_type, s.key_len) else {
        return SetKind::Foreign(format!(
            "verdict map {} of key type {} ({} bytes) with {} elements",
            s.name,
            s.key_type,
            s.key_len,
            elems.len()
        ));
    };
    if s.flags & (NFT_SET_ANONYMOUS | NFT_SET_INTERVAL | NFT_SET_MAP)
        != NFT_SET_INTERVAL | NFT_SET_MAP
    {
        return SetKind::Foreign(format!(
            "verdict map {} with flags 0x{:x} (expected an interval map)",
            s.name, s.flags
        ));
    }
    let datum = data_by_key(data);
    let mut blocks = Vec::new();
    for span in interval_spans(elems, family.addr_len(), family.max()) {
        let mut nets = Vec::new();
        span_to_prefixes(span, family.bits(), &mut nets);
        let [block] = nets[..] else {
            return SetKind::Foreign(format!(
                "verdict map {} holds an interval that is no block (0x{:x}-0x{:x})",
                s.name, span.lo, span.hi
            ));
        };
        let chain = shard::block_name(exemption_base(family), &block);
        let found = datum(span.lo);
        if found != Some(verdict_digest(NFT_JUMP, &chain)) {
            return SetKind::Foreign(format!(
                "verdict map {} sends {block} elsewhere than `jump {chain}`",
                s.name
            ));
        }
        blocks.push(block);
    }
    SetKind::Dispatch(Dispatch {
        name: s.name,
        family,
        blocks,
    })
}

/// An interval map of addresses to addresses of the same family (`snatRules`): each span
/// with the data of its start element.
pub(super) fn map_kind(s: SetMsg, elems: &[Element], data: &[(u128, u128)]) -> SetKind {
    let key = addr_family(s.key_type, s.key_len);
    let Some(family) = key.filter(|_| addr_family(s.data_type, s.data_len) == key) else {
        return SetKind::Foreign(format!(
            "map {} of key type {} ({} bytes) and data type {} ({} bytes) with {} elements",
            s.name,
            s.key_type,
            s.key_len,
            s.data_type,
            s.data_len,
            elems.len()
        ));
    };
    if s.flags & (NFT_SET_ANONYMOUS | NFT_SET_INTERVAL) != NFT_SET_INTERVAL {
        return SetKind::Foreign(format!(
            "map {} with flags 0x{:x} (expected an interval map)",
            s.name, s.flags
        ));
    }
    let datum = data_by_key(data);
    let mut entries = Vec::new();
    for span in interval_spans(elems, family.addr_len(), family.max()) {
        let found = datum(span.lo);
        let Some(to) = found else {
            return SetKind::Foreign(format!(
                "map {} holds an interval without data (0x{:x}-0x{:x})",
                s.name, span.lo, span.hi
            ));
        };
        let to = match family {
            Family::V4 => IpAddr::from(Ipv4Addr::from(to as u32)),
            Family::V6 => IpAddr::from(Ipv6Addr::from(to)),
        };
        entries.push(MapEntry { span, to });
    }
    SetKind::Map(Map {
        name: s.name,
        family,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use crate::kernel::nft::decode;
    use crate::kernel::nft::uapi::*;
    use crate::model::TableFlags;

    #[test]
    fn a_map_the_model_cannot_express_is_shown_as_foreign() {
        let set = |data_type, data_len| decode::SetMsg {
            table: "t".into(),
            name: "snat-v4".into(),
            flags: NFT_SET_INTERVAL | NFT_SET_MAP,
            key_len: 4,
            key_type: NFT_TYPE_IPADDR,
            data_type,
            data_len,
        };
        let elems = vec![
            decode::Element::new(&[10, 0, 0, 0], 0),
            decode::Element::new(&[11, 0, 0, 0], NFT_SET_ELEM_INTERVAL_END),
        ];
        let info = decode::TableMsg {
            name: "t".into(),
            flags: TableFlags::default(),
            owner: None,
        };
        let read = |s, data: Vec<(u128, u128)>| {
            decode::assemble(info.clone(), vec![(s, elems.clone(), data)], vec![], vec![])
        };
        let ok = read(set(NFT_TYPE_IPADDR, 4), vec![(0x0a00_0000, 0xc000_0201)]);
        assert_eq!(ok.maps[0].entries[0].to.to_string(), "192.0.2.1");
        assert!(ok.foreign.is_empty());
        let no_data = read(set(NFT_TYPE_IPADDR, 4), vec![]);
        assert!(no_data.maps.is_empty());
        assert!(
            no_data.foreign[0].contains("an interval without data"),
            "{:?}",
            no_data.foreign
        );
        let verdicts = read(set(NFT_DATA_VERDICT, 16), vec![]);
        assert!(
            verdicts.foreign[0].contains("elsewhere than `jump nonmasq-v4-10.0.0.0/8`"),
            "{:?}",
            verdicts.foreign
        );
        let addrs = read(set(NFT_TYPE_IP6ADDR, 16), vec![(0x0a00_0000, 1)]);
        assert!(
            addrs.foreign[0].starts_with("map snat-v4 of key type 7"),
            "{:?}",
            addrs.foreign
        );
    }

    #[test]
    fn a_dispatch_map_reads_back_only_when_each_block_jumps_to_its_chain() {
        let set = decode::SetMsg {
            table: "t".into(),
            name: "nonmasq-dispatch-v4".into(),
            flags: NFT_SET_INTERVAL | NFT_SET_MAP,
            key_len: 4,
            key_type: NFT_TYPE_IPADDR,
            data_type: NFT_DATA_VERDICT,
            data_len: 16,
        };
        // 10.0.0.0/9 and 10.128.0.0/9: adjacent, so the first end is the second start.
        let elems = vec![
            decode::Element::new(&[0, 0, 0, 0], NFT_SET_ELEM_INTERVAL_END),
            decode::Element::new(&[10, 0, 0, 0], 0),
            decode::Element::new(&[10, 128, 0, 0], NFT_SET_ELEM_INTERVAL_END),
            decode::Element::new(&[10, 128, 0, 0], 0),
            decode::Element::new(&[11, 0, 0, 0], NFT_SET_ELEM_INTERVAL_END),
        ];
        let info = decode::TableMsg {
            name: "t".into(),
            flags: TableFlags::default(),
            owner: None,
        };
        let jump = |chain: &str| super::verdict_digest(NFT_JUMP, chain);
        let read = |data: Vec<(u128, u128)>| {
            decode::assemble(
                info.clone(),
                vec![(set.clone(), elems.clone(), data)],
                vec![],
                vec![],
            )
        };
        let ok = read(vec![
            (0x0a00_0000, jump("nonmasq-v4-10.0.0.0/9")),
            (0x0a80_0000, jump("nonmasq-v4-10.128.0.0/9")),
        ]);
        assert!(ok.foreign.is_empty(), "{:?}", ok.foreign);
        let blocks: Vec<String> = ok.dispatch[0]
            .blocks
            .iter()
            .map(|b| b.to_string())
            .collect();
        assert_eq!(blocks, ["10.0.0.0/9", "10.128.0.0/9"]);
        // Swapped targets, a goto, another chain: foreign, so the table differs.
        for wrong in [
            jump("nonmasq-v4-10.0.0.0/9"),
            super::verdict_digest(NFT_GOTO, "nonmasq-v4-10.128.0.0/9"),
            jump("elsewhere"),
        ] {
            let t = read(vec![
                (0x0a00_0000, jump("nonmasq-v4-10.0.0.0/9")),
                (0x0a80_0000, wrong),
            ]);
            assert!(t.dispatch.is_empty());
            assert!(
                t.foreign[0].contains("sends 10.128.0.0/9 elsewhere"),
                "{:?}",
                t.foreign
            );
        }
    }
}
