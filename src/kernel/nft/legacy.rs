//! iptables-legacy's tables live outside nf_tables, so no netlink read sees their rules.
//! Whether its nat table exists in this network namespace is cheap to tell: the kernel lists
//! the x_tables tables in use in `/proc/net/ip_tables_names` (and `ip6_tables_names`).

/// The families (`ip`, `ip6`) whose iptables-legacy nat table exists here.
pub fn legacy_nat_tables() -> Vec<&'static str> {
    [
        ("ip", "/proc/net/ip_tables_names"),
        ("ip6", "/proc/net/ip6_tables_names"),
    ]
    .into_iter()
    .filter(|(_, path)| {
        std::fs::read_to_string(path).is_ok_and(|names| names.lines().any(|l| l.trim() == "nat"))
    })
    .map(|(family, _)| family)
    .collect()
}

/// The note to give when iptables-legacy has a nat table: its rules run too, unseen.
pub fn note(families: &[&str]) -> Option<String> {
    (!families.is_empty()).then(|| {
        format!(
            "iptables-legacy has a nat table here ({}): its rules also run at the postrouting \
             hook, before ours, and cannot be read over nf_tables; check them with \
             `iptables-legacy -t nat -S`",
            families.join(", ")
        )
    })
}
