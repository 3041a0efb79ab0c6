//! Explaining the kernel's extended ACK: the byte offset of the attribute it rejected, turned
//! into a path of attribute names (`NFTA_SET_ELEM_LIST_ELEMENTS[17].NFTA_SET_ELEM_KEY`) by
//! walking the message we sent. Pure; apart from encoding, which never needs it.

use super::uapi::*;
use crate::kernel::netlink::{Attr, Attrs, Malformed, messages};

/// Names the attribute at `offset` inside one message of ours, e.g.
/// `NFTA_SET_ELEM_LIST_ELEMENTS[17].NFTA_SET_ELEM_KEY`, from the kernel's extended ACK.
pub fn describe(msg: &[u8], offset: usize) -> Option<String> {
    let m = messages(msg).next()?.ok()?;
    let kind = m.nft_msg()?;
    // Attributes start after the nlmsghdr (16) and the nfgenmsg (4).
    let base = NLMSG_HDRLEN + 4;
    let mut path = Vec::new();
    walk(m.attrs(), base, offset, kind, 0, &mut path).ok()?;
    (!path.is_empty()).then(|| path.join("."))
}

fn walk(
    attrs: Attrs<'_>,
    mut pos: usize,
    target: usize,
    kind: u16,
    depth: usize,
    path: &mut Vec<String>,
) -> Result<(), Malformed> {
    for (index, a) in attrs.enumerate() {
        let a: Attr<'_> = a?;
        let total = (4 + a.data.len() + 3) & !3;
        if target >= pos && target < pos + total {
            let parent = path.last().cloned().unwrap_or_default();
            path.push(attr_name(kind, depth, &parent, a.ty, index));
            if target >= pos + 4 && looks_nested(kind, depth, a.ty) {
                walk(a.nested(), pos + 4, target, kind, depth + 1, path)?;
            }
            return Ok(());
        }
        pos += total;
    }
    Ok(())
}

/// Whether the attribute at this place in one of our messages holds nested attributes.
fn looks_nested(kind: u16, depth: usize, ty: u16) -> bool {
    match (kind, depth) {
        (NFT_MSG_NEWCHAIN, 0) => ty == NFTA_CHAIN_HOOK,
        (NFT_MSG_NEWSETELEM, 0) => ty == NFTA_SET_ELEM_LIST_ELEMENTS,
        (NFT_MSG_NEWSETELEM, 1) => true,
        (NFT_MSG_NEWSETELEM, 2) => ty == NFTA_SET_ELEM_KEY,
        (NFT_MSG_NEWRULE, 0) => ty == NFTA_RULE_EXPRESSIONS,
        (NFT_MSG_NEWRULE, 1) => true,
        (NFT_MSG_NEWRULE, 2) => ty == NFTA_EXPR_DATA,
        _ => false,
    }
}

fn attr_name(kind: u16, depth: usize, parent: &str, ty: u16, index: usize) -> String {
    let name = match (kind, depth, ty) {
        (NFT_MSG_NEWTABLE | NFT_MSG_DELTABLE, 0, NFTA_TABLE_NAME) => "NFTA_TABLE_NAME",
        (NFT_MSG_NEWTABLE | NFT_MSG_DELTABLE, 0, NFTA_TABLE_FLAGS) => "NFTA_TABLE_FLAGS",
        (NFT_MSG_NEWCHAIN, 0, NFTA_CHAIN_TABLE) => "NFTA_CHAIN_TABLE",
        (NFT_MSG_NEWCHAIN, 0, NFTA_CHAIN_NAME) => "NFTA_CHAIN_NAME",
        (NFT_MSG_NEWCHAIN, 0, NFTA_CHAIN_HOOK) => "NFTA_CHAIN_HOOK",
        (NFT_MSG_NEWCHAIN, 0, NFTA_CHAIN_POLICY) => "NFTA_CHAIN_POLICY",
        (NFT_MSG_NEWCHAIN, 0, NFTA_CHAIN_TYPE) => "NFTA_CHAIN_TYPE",
        (NFT_MSG_NEWCHAIN, 1, NFTA_HOOK_HOOKNUM) => "NFTA_HOOK_HOOKNUM",
        (NFT_MSG_NEWCHAIN, 1, NFTA_HOOK_PRIORITY) => "NFTA_HOOK_PRIORITY",
        (NFT_MSG_NEWSET, 0, NFTA_SET_TABLE) => "NFTA_SET_TABLE",
        (NFT_MSG_NEWSET, 0, NFTA_SET_NAME) => "NFTA_SET_NAME",
        (NFT_MSG_NEWSET, 0, NFTA_SET_FLAGS) => "NFTA_SET_FLAGS",
        (NFT_MSG_NEWSET, 0, NFTA_SET_KEY_TYPE) => "NFTA_SET_KEY_TYPE",
        (NFT_MSG_NEWSET, 0, NFTA_SET_KEY_LEN) => "NFTA_SET_KEY_LEN",
        (NFT_MSG_NEWSET, 0, NFTA_SET_ID) => "NFTA_SET_ID",
        (NFT_MSG_NEWSETELEM, 0, NFTA_SET_ELEM_LIST_TABLE) => "NFTA_SET_ELEM_LIST_TABLE",
        (NFT_MSG_NEWSETELEM, 0, NFTA_SET_ELEM_LIST_SET) => "NFTA_SET_ELEM_LIST_SET",
        (NFT_MSG_NEWSETELEM, 0, NFTA_SET_ELEM_LIST_ELEMENTS) => "NFTA_SET_ELEM_LIST_ELEMENTS",
        (NFT_MSG_NEWSETELEM, 1, _) => return format!("[{index}]"),
        (NFT_MSG_NEWSETELEM, 2, NFTA_SET_ELEM_KEY) => "NFTA_SET_ELEM_KEY",
        (NFT_MSG_NEWSETELEM, 2, NFTA_SET_ELEM_FLAGS) => "NFTA_SET_ELEM_FLAGS",
        (NFT_MSG_NEWSETELEM, 3, NFTA_DATA_VALUE) => "NFTA_DATA_VALUE",
        (NFT_MSG_NEWRULE, 0, NFTA_RULE_TABLE) => "NFTA_RULE_TABLE",
        (NFT_MSG_NEWRULE, 0, NFTA_RULE_CHAIN) => "NFTA_RULE_CHAIN",
        (NFT_MSG_NEWRULE, 0, NFTA_RULE_EXPRESSIONS) => "NFTA_RULE_EXPRESSIONS",
        (NFT_MSG_NEWRULE, 1, _) => return format!("[{index}]"),
        (NFT_MSG_NEWRULE, 2, NFTA_EXPR_NAME) => "NFTA_EXPR_NAME",
        (NFT_MSG_NEWRULE, 2, NFTA_EXPR_DATA) => "NFTA_EXPR_DATA",
        _ => return format!("attribute {ty} (under {parent})"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PolicyFlags};
    use crate::kernel::nft::encode::{ReplaceForm, replace};
    use crate::model::{self, TableFlags};

    fn defaults() -> model::Table {
        let flags = PolicyFlags::default();
        model::desired(&Config::defaults(&flags), &flags, TableFlags::default())
    }

    #[test]
    fn error_offsets_name_the_attribute() {
        let mut t = defaults();
        t.chains.clear();
        let b = replace(&t, 1, ReplaceForm::AddDeleteAdd);
        let m = b
            .msgs
            .iter()
            .find(|m| m.kind == NFT_MSG_NEWSETELEM)
            .unwrap();
        let msg = &b.bytes[m.offset..m.offset + m.len];
        // Offset of the third element's key value: find its bytes (10.0.0.0 starts element 1,
        // 11.0.0.0 is element 2).
        let pos = msg.windows(4).position(|w| w == [11, 0, 0, 0]).unwrap();
        assert_eq!(
            describe(msg, pos - 4).as_deref(),
            Some("NFTA_SET_ELEM_LIST_ELEMENTS.[2].NFTA_SET_ELEM_KEY.NFTA_DATA_VALUE")
        );
        let first = &b.bytes[b.msgs[0].offset..b.msgs[0].offset + b.msgs[0].len];
        assert_eq!(describe(first, 20).as_deref(), Some("NFTA_TABLE_NAME"));
    }
}
