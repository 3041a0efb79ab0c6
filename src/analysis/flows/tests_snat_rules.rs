//! Conntrack reconciliation with `snatRules`: a change of address for a source is a change
//! of decision; sources whose address stays are not affected.

use std::net::IpAddr;

use super::*;
use crate::config::{PolicyFlags, parse};
use crate::kernel::conntrack::{L4, Tuple};
use crate::model::{self, TableFlags};

const UDP: u8 = 17;

fn table(yaml: &str) -> Table {
    let flags = PolicyFlags {
        enable_ipv6: true,
        ..PolicyFlags::default()
    };
    let config = parse(yaml.as_bytes(), "/c".as_ref(), &flags)
        .unwrap()
        .config;
    model::desired(&config, &flags, TableFlags::default())
}

fn flow(src: &str, dst: &str) -> Flow {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let l4 = L4::Ports {
        src: 40000,
        dst: 53,
    };
    Flow {
        family: Family::of_addr(&src),
        protocol: UDP,
        original: Tuple { src, dst, l4 },
        reply: Tuple {
            src: dst,
            dst: src,
            l4,
        },
        status: 0,
        id: None,
        zone: None,
        mark: None,
        timeout: None,
    }
}

fn rules(nested_to: &str) -> String {
    format!(
        "snatRules:\n- sourceCIDRs: [10.244.0.0/16, 'fd00::/64']\n  snatTo: [192.0.2.20, \
         '2001:db8::20']\n- sourceCIDRs: [10.244.5.0/24]\n  snatTo: [{nested_to}]\n"
    )
}

#[test]
fn a_source_whose_entry_changes_address_is_affected_and_no_other() {
    let (old, new) = (table(&rules("192.0.2.21")), table(&rules("192.0.2.22")));
    let c = Change::new(&old, &new);
    assert!(c.any());
    assert!(c.affects(&flow("10.244.5.7", "203.0.113.9")));
    // The rest of the /16 keeps its address; a source in no entry keeps masquerade; an
    // exempt destination stays untranslated.
    assert!(!c.affects(&flow("10.244.6.7", "203.0.113.9")));
    assert!(!c.affects(&flow("10.99.0.1", "203.0.113.9")));
    assert!(!c.affects(&flow("10.244.5.7", "10.1.2.3")));
    assert!(!c.affects(&flow("fd00::5", "2001:db8:ff::1")));
    let m = Evaluator::new(&new).outcome(&flow("10.244.5.7", "203.0.113.9"));
    assert!(
        matches!(m, Outcome::Mapped { to, .. } if to.to_string() == "192.0.2.22"),
        "{m:?}"
    );
}

#[test]
fn entering_or_leaving_the_map_is_a_change_of_decision() {
    let none = table("snatTo: [198.51.100.10]\n");
    let some = table(&rules("192.0.2.21"));
    let c = Change::new(&none, &some);
    assert!(c.affects(&flow("10.244.5.7", "203.0.113.9")));
    let back = Change::new(&some, &none);
    assert!(back.affects(&flow("10.244.9.7", "203.0.113.9")));
}
