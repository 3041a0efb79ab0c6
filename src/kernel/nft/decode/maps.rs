//! The `snatRules` maps read back (`snat-v4`, `snat-v6`: source intervals to the address
//! they leave with): a map's set message, its interval elements and their data into a
//! [`Map`], and which element data a read keeps. A map of other key or data types or flags,
//! or an interval without data, is described as foreign instead. Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Element, SetKind, SetMsg, interval_spans, key_to_u128};
use crate::addr::prefix::Family;
use crate::kernel::nft::uapi::{
    NFT_SET_ANONYMOUS, NFT_SET_INTERVAL, NFT_TYPE_IP6ADDR, NFT_TYPE_IPADDR,
};
use crate::model::{Map, MapEntry};

/// What a read keeps of one element's data (a map's), by key: `(key, value)` as numbers,
/// apart from the [`Element`] so that the elements of the large sets stay small. Only values
/// of up to 16 bytes (an address) are kept; nothing reads longer ones.
pub(super) fn datum(key: &[u8], data: Option<&[u8]>) -> Option<(u128, u128)> {
    data.filter(|d| d.len() <= 16 && key.len() <= 16)
        .map(|d| (key_to_u128(key), key_to_u128(d)))
}

/// An interval map of addresses to addresses of the same family (`snatRules`): each span
/// with the data of its start element.
pub(super) fn map_kind(s: SetMsg, elems: &[Element], data: &[(u128, u128)]) -> SetKind {
    let family = match (s.key_type, s.key_len, s.data_type, s.data_len) {
        (NFT_TYPE_IPADDR, 4, NFT_TYPE_IPADDR, 4) => Family::V4,
        (NFT_TYPE_IP6ADDR, 16, NFT_TYPE_IP6ADDR, 16) => Family::V6,
        (kt, kl, dt, dl) => {
            return SetKind::Foreign(format!(
                "map {} of key type {kt} ({kl} bytes) and data type {dt} ({dl} bytes) with {} \
                 elements",
                s.name,
                elems.len()
            ));
        }
    };
    if s.flags & (NFT_SET_ANONYMOUS | NFT_SET_INTERVAL) != NFT_SET_INTERVAL {
        return SetKind::Foreign(format!(
            "map {} with flags 0x{:x} (expected an interval map)",
            s.name, s.flags
        ));
    }
    let mut by_key = data.to_vec();
    by_key.sort_unstable();
    let mut entries = Vec::new();
    for span in interval_spans(elems, family.addr_len(), family.max()) {
        let found = by_key
            .binary_search_by_key(&span.lo, |(k, _)| *k)
            .ok()
            .map(|i| by_key[i].1);
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
            verdicts.foreign[0].starts_with("map snat-v4 of key type 7"),
            "{:?}",
            verdicts.foreign
        );
    }
}
