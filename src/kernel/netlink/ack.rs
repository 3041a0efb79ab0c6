//! The kernel's acknowledgement: `NLMSG_ERROR` with an error code of 0 (success) or a negative
//! errno, the header of the request it answers, and with extended ACKs a text and the offset
//! of the attribute it rejected. Pure, so it can be tested and fuzzed on bytes.

use super::attr::{Attrs, Msg};
use super::uapi::{NLM_F_ACK_TLVS, NLMSG_HDRLEN, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS};

/// What the kernel said about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Sequence number of the request this answers.
    pub seq: u32,
    /// 0 for success, else the (positive) errno.
    pub errno: i32,
    /// The kernel's explanation (`NLMSGERR_ATTR_MSG`), if it gave one.
    pub message: Option<String>,
    /// Byte offset of the rejected attribute in the request (`NLMSGERR_ATTR_OFFS`).
    pub offset: Option<u32>,
}

/// Parses an `NLMSG_ERROR` message; `None` when it is too short to be one.
///
/// Layout: `struct nlmsgerr { int error; struct nlmsghdr msg; }`, then, when the kernel set
/// `NLM_F_ACK_TLVS`, attributes (host order, as in all generic netlink headers). With
/// `NETLINK_CAP_ACK` the request's payload is not echoed, so the attributes follow at once.
pub fn parse(msg: &Msg<'_>) -> Option<Ack> {
    let p = msg.payload;
    let error = i32::from_ne_bytes(p.get(..4)?.try_into().ok()?);
    let request = p.get(4..4 + NLMSG_HDRLEN)?;
    let seq = u32::from_ne_bytes(request[8..12].try_into().ok()?);
    let mut ack = Ack {
        seq,
        // The kernel sends -errno. Kernel input is never trusted to be in range: negating
        // i32::MIN overflows, so saturate instead of panicking.
        errno: error.saturating_neg(),
        message: None,
        offset: None,
    };
    if msg.flags & NLM_F_ACK_TLVS != 0 {
        for a in Attrs::new(&p[4 + NLMSG_HDRLEN..]).map_while(Result::ok) {
            match a.ty {
                NLMSGERR_ATTR_MSG => ack.message = Some(a.str_lossy().into_owned()),
                NLMSGERR_ATTR_OFFS => {
                    ack.offset = a
                        .data
                        .get(..4)
                        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                }
                _ => {}
            }
        }
    }
    Some(ack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::attr::messages;
    use crate::testing::wire::ack as error_msg;

    fn parsed(bytes: &[u8]) -> Option<Ack> {
        parse(&messages(bytes).next().unwrap().unwrap())
    }

    #[test]
    fn success_and_errno_with_extended_attributes() {
        assert_eq!(parsed(&error_msg(0, 7, &[])).unwrap().errno, 0);
        let ack = parsed(&error_msg(
            -22,
            9,
            &[
                (NLMSGERR_ATTR_MSG, b"bad\0"),
                (NLMSGERR_ATTR_OFFS, &44u32.to_ne_bytes()),
            ],
        ))
        .unwrap();
        assert_eq!(
            ack,
            Ack {
                seq: 9,
                errno: 22,
                message: Some("bad".into()),
                offset: Some(44)
            }
        );
    }

    #[test]
    fn hostile_error_codes_and_texts_do_not_panic() {
        // -i32::MIN overflows: it must saturate, also in debug builds.
        assert_eq!(
            parsed(&error_msg(i32::MIN, 1, &[])).unwrap().errno,
            i32::MAX
        );
        let ack = parsed(&error_msg(-1, 1, &[(NLMSGERR_ATTR_MSG, b"\xff\xfe\0")])).unwrap();
        assert_eq!(ack.message.as_deref(), Some("\u{fffd}\u{fffd}"));
        // Too short to hold the echoed header.
        let mut short = error_msg(-1, 1, &[]);
        short.truncate(NLMSG_HDRLEN + 8);
        short[..4].copy_from_slice(&((NLMSG_HDRLEN + 8) as u32).to_ne_bytes());
        assert_eq!(parsed(&short), None);
    }
}
