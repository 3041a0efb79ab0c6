//! The reading and writing helpers every expression's file shares: the expression's data
//! attributes with typed accessors ([`Fields`]), a run of `u32` attributes, and hex for
//! descriptions. Kept apart so each expression's file holds only its own format.

use super::Expr;
use crate::kernel::netlink::{Attr, Malformed, Writer};
use crate::kernel::nft::uapi::*;

/// The name and data attributes of one expression, with typed accessors.
pub(super) struct Fields<'a> {
    pub(super) name: String,
    data: Vec<Attr<'a>>,
}

impl<'a> Fields<'a> {
    pub(super) fn of(elem: &Attr<'a>) -> Result<Fields<'a>, Malformed> {
        let mut name = None;
        let mut data = Vec::new();
        for a in elem.nested() {
            let a = a?;
            match a.ty {
                // Expression names are the kernel's own (ASCII); lossy keeps a bad one
                // readable instead of failing the whole rule.
                NFTA_EXPR_NAME => name = Some(a.str_lossy().into_owned()),
                NFTA_EXPR_DATA => data = a.nested().collect::<Result<_, _>>()?,
                _ => {}
            }
        }
        let name = name.ok_or_else(|| Malformed("expression without a name".into()))?;
        Ok(Fields { name, data })
    }

    pub(super) fn find(&self, ty: u16) -> Option<&Attr<'a>> {
        self.data.iter().find(|a| a.ty == ty)
    }

    pub(super) fn opt_u32(&self, ty: u16) -> Result<Option<u32>, Malformed> {
        self.find(ty).map(Attr::u32).transpose()
    }

    pub(super) fn u32(&self, ty: u16) -> Result<u32, Malformed> {
        self.opt_u32(ty)?
            .ok_or_else(|| Malformed(format!("{}: attribute {ty} missing", self.name)))
    }

    pub(super) fn u64_or_0(&self, ty: u16) -> Result<u64, Malformed> {
        Ok(self.find(ty).map(Attr::u64).transpose()?.unwrap_or(0))
    }

    /// A string attribute, empty when absent; lossy, as names are someone else's choice.
    pub(super) fn str_or_empty(&self, ty: u16) -> String {
        self.find(ty)
            .map(|a| a.str_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The value inside an `NFTA_DATA_VALUE` nest (cmp's and immediate's data).
    pub(super) fn value(&self, ty: u16) -> Result<Vec<u8>, Malformed> {
        let nest = self
            .find(ty)
            .ok_or_else(|| Malformed(format!("{} without data", self.name)))?;
        for inner in nest.nested() {
            let inner = inner?;
            if inner.ty == NFTA_DATA_VALUE {
                return Ok(inner.data.to_vec());
            }
        }
        Err(Malformed(format!("{}: data without a value", self.name)))
    }

    /// The expression kept by name only (a form the agent does not model).
    pub(super) fn other(&self) -> Expr {
        Expr::Other {
            name: self.name.clone(),
        }
    }
}

/// Writes `values` as `u32` attributes of the types in `attrs`, pairwise.
pub(super) fn put_u32s(w: &mut Writer, attrs: &[u16], values: &[u32]) {
    for (ty, v) in attrs.iter().zip(values) {
        w.put_u32(*ty, *v);
    }
}

/// Writes `data` as an `NFTA_DATA_VALUE` inside a nest of type `ty`.
pub(super) fn put_value(w: &mut Writer, ty: u16, data: &[u8]) {
    let n = w.begin_nest(ty);
    w.put(NFTA_DATA_VALUE, data);
    w.end_nest(n);
}

/// Bytes as lower-case hex, for descriptions.
pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
