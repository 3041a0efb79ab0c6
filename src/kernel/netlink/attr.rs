//! Netlink message and attribute framing: a writer that builds messages into one buffer and
//! a zero-copy reader. Header integers are host order (netlink's rule); the big-endian
//! helpers are for nf_tables attribute payloads, which are network order.

use super::uapi::{NFNETLINK_V0, NFNL_SUBSYS_NFTABLES, NLA_F_NESTED, NLA_TYPE_MASK, NLMSG_HDRLEN};

/// A message or attribute that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed netlink data: {0}")]
pub struct Malformed(pub String);

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds netlink messages back to back into one buffer (a batch is one `sendmsg`).
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Starts a message with a `nlmsghdr` and a `nfgenmsg`; returns its offset for
    /// [`Writer::end_msg`].
    pub fn begin_msg(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by end_msg
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: 0 = to the kernel
        // struct nfgenmsg: family, version, res_id (big-endian)
        self.buf.push(family);
        self.buf.push(NFNETLINK_V0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Finishes the message started at `start` by writing its length.
    pub fn end_msg(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Sets `flags` in the header of the message that starts at `start`.
    pub fn add_msg_flags(&mut self, start: usize, flags: u16) {
        let at = start + 6;
        let old = u16::from_ne_bytes([self.buf[at], self.buf[at + 1]]);
        self.buf[at..at + 2].copy_from_slice(&(old | flags).to_ne_bytes());
    }

    /// Appends an attribute with a raw payload, padded to 4 bytes.
    pub fn put(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        assert!(len <= usize::from(u16::MAX), "netlink attribute too long");
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Appends a big-endian u32 attribute.
    pub fn put_u32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    /// Appends a big-endian u64 attribute.
    pub fn put_u64(&mut self, ty: u16, v: u64) {
        self.put(ty, &v.to_be_bytes());
    }

    /// Appends a NUL-terminated string attribute.
    pub fn put_str(&mut self, ty: u16, s: &str) {
        let len = 4 + s.len() + 1;
        assert!(len <= usize::from(u16::MAX), "netlink attribute too long");
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Starts a nested attribute; returns its offset for [`Writer::end_nest`].
    pub fn begin_nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    /// Finishes a nested attribute by writing its length. Panics above 64 KiB: the encoder
    /// splits element lists well below that, so this only fires on an encoder bug.
    pub fn end_nest(&mut self, start: usize) {
        let len = self.buf.len() - start;
        assert!(
            len <= usize::from(u16::MAX),
            "nested netlink attribute too long"
        );
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    }
}

/// One netlink message, borrowed from a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`: for notifications, the port id of the socket that made the change.
    pub pid: u32,
    /// Everything after the `nlmsghdr`.
    pub payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The nf_tables message type (low byte), when this is an nf_tables message.
    pub fn nft_msg(&self) -> Option<u16> {
        (self.ty >> 8 == NFNL_SUBSYS_NFTABLES).then_some(self.ty & 0xff)
    }

    /// The `nfgenmsg` family.
    pub fn family(&self) -> u8 {
        self.payload.first().copied().unwrap_or(0)
    }

    /// The `nfgenmsg` res_id, which carries the low 16 bits of the generation in dumps.
    pub fn res_id(&self) -> u16 {
        match self.payload.get(2..4) {
            Some(b) => u16::from_be_bytes([b[0], b[1]]),
            None => 0,
        }
    }

    /// The attributes after the `nfgenmsg`.
    pub fn attrs(&self) -> Attrs<'a> {
        Attrs::new(self.payload.get(4..).unwrap_or(&[]))
    }
}

/// Iterates over the messages in a buffer received from (or built for) the kernel.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Msg<'_>, Malformed>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < NLMSG_HDRLEN {
            rest = &[];
            return Some(Err(Malformed("truncated message header".into())));
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            rest = &[];
            return Some(Err(Malformed(format!("bad message length {len}"))));
        }
        let msg = Msg {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            pid: u32::from_ne_bytes([rest[12], rest[13], rest[14], rest[15]]),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        rest = &rest[align4(len).min(rest.len())..];
        Some(Ok(msg))
    })
}

/// One attribute.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    /// Type, without the nested and byte-order flags.
    pub ty: u16,
    /// Payload.
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    /// A big-endian u32 payload.
    pub fn u32(&self) -> Result<u32, Malformed> {
        let b: [u8; 4] = self
            .data
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Malformed(format!("attribute {} is not a u32", self.ty)))?;
        Ok(u32::from_be_bytes(b))
    }

    /// A big-endian u64 payload.
    pub fn u64(&self) -> Result<u64, Malformed> {
        let b: [u8; 8] = self
            .data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Malformed(format!("attribute {} is not a u64", self.ty)))?;
        Ok(u64::from_be_bytes(b))
    }

    /// The payload up to its NUL terminator (or all of it).
    fn until_nul(&self) -> &'a [u8] {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.data.len());
        &self.data[..end]
    }

    /// A string payload, without its NUL terminator. For names the agent wrote itself.
    pub fn str(&self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.until_nul())
            .map_err(|_| Malformed(format!("attribute {} is not UTF-8", self.ty)))
    }

    /// A string payload decoded lossily: for names others chose (tables, chains, process
    /// names), which the kernel does not require to be UTF-8 and which must never make a
    /// read fail.
    pub fn str_lossy(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.until_nul())
    }

    /// The nested attributes.
    pub fn nested(&self) -> Attrs<'a> {
        Attrs::new(self.data)
    }
}

/// Iterator over attributes; stops with an error on a bad length.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    /// Attributes packed in `data`.
    pub fn new(data: &'a [u8]) -> Attrs<'a> {
        Attrs { rest: data }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([self.rest[0], self.rest[1]]));
        let ty = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(Malformed(format!("bad attribute length {len}"))));
        }
        let attr = Attr {
            ty,
            data: &self.rest[4..len],
        };
        self.rest = &self.rest[align4(len).min(self.rest.len())..];
        Some(Ok(attr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested_lengths_patched() {
        let mut w = Writer::default();
        let n = w.begin_nest(3);
        w.put_str(1, "abc");
        w.put_u32(2, 0x0102_0304);
        w.end_nest(n);
        let bytes = w.into_bytes();
        assert_eq!(
            bytes,
            [
                20, 0, 3, 0x80, // nest: len 20, type 3 | NLA_F_NESTED
                8, 0, 1, 0, b'a', b'b', b'c', 0, // "abc\0"
                8, 0, 2, 0, 1, 2, 3, 4, // u32 big-endian
            ]
        );
        let outer: Vec<_> = Attrs::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].ty, 3);
        let inner: Vec<_> = outer[0].nested().collect::<Result<_, _>>().unwrap();
        assert_eq!(inner[0].str().unwrap(), "abc");
        assert_eq!(inner[1].u32().unwrap(), 0x0102_0304);
    }

    #[test]
    fn bad_lengths_are_errors_not_panics() {
        assert!(Attrs::new(&[2, 0, 1, 0]).next().unwrap().is_err());
        assert!(Attrs::new(&[200, 0, 1, 0, 0, 0]).next().unwrap().is_err());
        assert!(messages(&[1, 2, 3]).next().unwrap().is_err());
        let mut hdr = vec![0u8; 16];
        hdr[0] = 64; // claims more than there is
        assert!(messages(&hdr).next().unwrap().is_err());
    }
}
