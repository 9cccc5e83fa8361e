//! The open-file limit against `limits.max_connections`: every connection is a descriptor, and
//! most have an upstream connection too. Below what the connection cap needs, `accept` fails
//! (EMFILE) long before the cap is reached, and so do the store and upstream connections; the
//! gateway keeps going, but says so at start-up.
//!
//! The limit is read from `/proc/self/limits` (Linux; elsewhere, or when it cannot be read,
//! nothing is said). Not through `getrlimit`/`setrlimit`: the systemd unit forbids changing
//! resource limits (`SystemCallFilter=~@resources`), and on some systemd versions that set also
//! holds `prlimit64`, which reading the limit would go through, and the process would be killed.
//! The soft limit is not raised here for the same reason: the unit sets `LimitNOFILE=`.

/// Descriptors the gateway needs for `max_connections` client connections: one for each, one
/// for an upstream connection for each, and room for the listeners, the store and the logs.
pub(crate) fn needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(64)
}

/// The soft limit on open files in the text of `/proc/self/limits` (`u64::MAX` for
/// `unlimited`); `None` when the text has no readable line for it.
fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    match line.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// The soft limit, when it is below what `max_connections` needs.
pub(crate) fn too_low(limits: &str, max_connections: usize) -> Option<u64> {
    soft_open_files(limits).filter(|&soft| soft < needed(max_connections))
}

/// Warns when the process may open fewer files than `max_connections` needs.
pub(crate) fn warn_if_too_low(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    if let Some(soft) = too_low(&limits, max_connections) {
        tracing::warn!(
            open_files = soft,
            needed = needed(max_connections),
            max_connections,
            "the open-file limit is below what limits.max_connections needs (a descriptor for \
             each connection and its upstream connection): connections will be refused before \
             the cap; raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower \
             limits.max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/self/limits` as Linux writes it (columns padded with spaces).
    fn limits(soft: &str, hard: &str) -> String {
        format!(
            "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max cpu time              unlimited            unlimited            seconds   \n\
             Max open files            {soft:<20} {hard:<20} files     \n\
             Max locked memory         8388608              8388608              bytes     \n"
        )
    }

    #[test]
    fn the_soft_limit_is_read_from_proc_self_limits() {
        assert_eq!(soft_open_files(&limits("1024", "524288")), Some(1024));
        assert_eq!(
            soft_open_files(&limits("unlimited", "unlimited")),
            Some(u64::MAX)
        );
        assert_eq!(soft_open_files("Limit Soft Hard Units\n"), None);
        assert_eq!(soft_open_files(&limits("many", "1024")), None);
    }

    #[test]
    fn a_limit_below_two_descriptors_per_connection_is_too_low() {
        assert_eq!(needed(10_000), 20_064);
        // systemd's default soft limit against the default max_connections.
        assert_eq!(too_low(&limits("1024", "524288"), 10_000), Some(1024));
        assert_eq!(too_low(&limits("20063", "65536"), 10_000), Some(20063));
        assert_eq!(too_low(&limits("20064", "65536"), 10_000), None);
        // The unit's LimitNOFILE=65536.
        assert_eq!(too_low(&limits("65536", "65536"), 10_000), None);
        assert_eq!(too_low(&limits("1024", "1024"), 400), None);
        assert_eq!(too_low(&limits("unlimited", "unlimited"), 10_000_000), None);
        // Unreadable: nothing to say.
        assert_eq!(too_low("", 10_000), None);
    }
}
