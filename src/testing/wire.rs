//! Netlink messages as the kernel sends them, built byte by byte: what the decoders' tests
//! and the fuzz seeds feed in. A table's messages need no builder here: the encoder's batch
//! has the layout of the kernel's dumps and notifications
//! ([`encode::replace`](crate::kernel::nft::encode::replace)).

use crate::kernel::netlink::Writer;
use crate::kernel::netlink::uapi::{NLM_F_ACK_TLVS, NLMSG_ERROR, NLMSG_HDRLEN};
use crate::kernel::nft::uapi::{
    NFPROTO_UNSPEC, NFT_MSG_NEWGEN, NFTA_GEN_ID, NFTA_GEN_PROC_NAME, NFTA_GEN_PROC_PID, nft_type,
};

/// An acknowledgement (`NLMSG_ERROR`): the error code (0 for success, else a negative
/// errno), the echoed header of request `seq`, and extended attributes (`NLMSGERR_ATTR_*`,
/// with `NLM_F_ACK_TLVS` set when there are any).
pub fn ack(error: i32, seq: u32, tlvs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut payload = error.to_ne_bytes().to_vec();
    let mut hdr = [0u8; NLMSG_HDRLEN];
    hdr[8..12].copy_from_slice(&seq.to_ne_bytes());
    payload.extend_from_slice(&hdr);
    for (ty, data) in tlvs {
        payload.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&ty.to_ne_bytes());
        payload.extend_from_slice(data);
        payload.resize((payload.len() + 3) & !3, 0);
    }
    let flags = if tlvs.is_empty() { 0 } else { NLM_F_ACK_TLVS };
    let mut out = ((NLMSG_HDRLEN + payload.len()) as u32)
        .to_ne_bytes()
        .to_vec();
    out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&payload);
    out
}

/// The `NEWGEN` notification that ends a transaction: generation `id`, committed by the
/// socket with netlink port `port_id`, with the committing process's pid and name (raw
/// bytes, NUL-terminated as the kernel sends them) when given.
pub fn new_generation(
    id: u32,
    port_id: u32,
    pid: Option<u32>,
    proc_name: Option<&[u8]>,
) -> Vec<u8> {
    let mut w = Writer::default();
    let m = w.begin_msg(nft_type(NFT_MSG_NEWGEN), 0, 0, NFPROTO_UNSPEC, 0);
    w.put_u32(NFTA_GEN_ID, id);
    if let Some(pid) = pid {
        w.put_u32(NFTA_GEN_PROC_PID, pid);
    }
    if let Some(name) = proc_name {
        w.put(NFTA_GEN_PROC_NAME, name);
    }
    w.end_msg(m);
    let mut bytes = w.into_bytes();
    bytes[12..16].copy_from_slice(&port_id.to_ne_bytes());
    bytes
}
