//! Table messages: NEWTABLE (with the owner and persist flags), DELTABLE, and the batch that
//! deletes the agent's table.

use super::batch::{Batch, BatchWriter, single};
use crate::kernel::nft::uapi::*;

impl BatchWriter {
    /// A NEWTABLE (created if missing, with `flags` when given) or DELTABLE of table `name`.
    pub(super) fn table(&mut self, kind: u16, name: &str, flags: Option<u32>) {
        let m = self.begin(
            kind,
            if kind == NFT_MSG_NEWTABLE {
                NLM_F_CREATE
            } else {
                0
            },
        );
        self.w.put_str(NFTA_TABLE_NAME, name);
        if let Some(f) = flags {
            self.w.put_u32(NFTA_TABLE_FLAGS, f);
        }
        self.end(m, kind, format!("{} inet {name}", msg_name(kind)));
    }
}

/// The batch that deletes the table `name`.
pub fn delete(name: &str, seq: u32) -> Batch {
    single(
        NFT_MSG_DELTABLE,
        NFPROTO_INET,
        seq,
        format!("DELTABLE inet {name}"),
        |w| w.put_str(NFTA_TABLE_NAME, name),
    )
}
