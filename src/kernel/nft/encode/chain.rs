//! Chains and their rules: NEWCHAIN (with the hook of a base chain), the flush, and each
//! rule's statements lowered to expressions and written.

use super::batch::BatchWriter;
use crate::kernel::nft::stmt::lower;
use crate::kernel::nft::uapi::*;

/// NEWCHAIN (created, or its policy updated), then, when `flush`, DELRULE naming only the
/// chain (the kernel's "flush chain"), then its rules.
pub(super) fn chain_messages(
    bw: &mut BatchWriter,
    table: &str,
    chain: &crate::model::Chain,
    set_id: &dyn Fn(&str) -> Option<u32>,
    flush: bool,
) {
    let m = bw.begin(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
    bw.w.put_str(NFTA_CHAIN_TABLE, table);
    bw.w.put_str(NFTA_CHAIN_NAME, &chain.name);
    if let Some(base) = &chain.base {
        let h = bw.w.begin_nest(NFTA_CHAIN_HOOK);
        bw.w.put_u32(NFTA_HOOK_HOOKNUM, base.hook);
        bw.w.put_u32(NFTA_HOOK_PRIORITY, base.priority as u32);
        bw.w.end_nest(h);
        bw.w.put_u32(NFTA_CHAIN_POLICY, base.policy);
        bw.w.put_str(NFTA_CHAIN_TYPE, &base.kind);
    }
    bw.end(m, NFT_MSG_NEWCHAIN, format!("NEWCHAIN {}", chain.name));
    if flush {
        flush_chain(bw, table, &chain.name);
    }
    for (i, rule) in chain.rules.iter().enumerate() {
        let m = bw.begin(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        bw.w.put_str(NFTA_RULE_TABLE, table);
        bw.w.put_str(NFTA_RULE_CHAIN, &chain.name);
        let list = bw.w.begin_nest(NFTA_RULE_EXPRESSIONS);
        for e in lower(&rule.stmts, set_id) {
            e.encode(&mut bw.w);
        }
        bw.w.end_nest(list);
        bw.end(
            m,
            NFT_MSG_NEWRULE,
            format!("NEWRULE {} #{}: {rule}", chain.name, i + 1),
        );
    }
}

/// DELRULE naming only the chain: the kernel's "flush chain".
pub(super) fn flush_chain(bw: &mut BatchWriter, table: &str, chain: &str) {
    let m = bw.begin(NFT_MSG_DELRULE, 0);
    bw.w.put_str(NFTA_RULE_TABLE, table);
    bw.w.put_str(NFTA_RULE_CHAIN, chain);
    bw.end(m, NFT_MSG_DELRULE, format!("DELRULE {chain} (flush)"));
}
