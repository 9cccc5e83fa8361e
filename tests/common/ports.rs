//! Loopback ports for servers a test starts on a port it must know in advance (a proxy whose
//! address goes into the gateway's configuration, chromedriver, a TLS listener).
//!
//! A port chosen by binding port 0 and releasing it comes from the kernel's ephemeral range,
//! where the next outgoing connection of any test running beside this one, or another bind
//! to port 0, can take it before the server binds it. The ports handed out here come from
//! outside that range (read from `net.ipv4.ip_local_port_range`), are never handed out twice
//! in one test process, and were free (TCP on loopback and on every address, UDP too: Caddy
//! also listens for HTTP/3) when handed out. On a machine whose ephemeral range leaves no
//! room, a port the kernel picks is used, as before.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The window ports are taken from: at least this many ports outside the ephemeral range.
const WINDOW: u32 = 8_000;
/// Ports below this are left alone (well-known and commonly configured services).
const LOWEST: u32 = 10_000;

/// The kernel's ephemeral range, Linux's default when it cannot be read.
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(str::parse::<u32>);
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999))
}

/// The first port of a window of [`WINDOW`] ports outside `ephemeral`: below it if there is
/// room, else above it.
pub fn window_outside((low, high): (u32, u32)) -> Option<u32> {
    if low >= LOWEST + WINDOW {
        Some(low - WINDOW)
    } else if high + WINDOW <= 65_535 {
        Some(high + 1)
    } else {
        None
    }
}

fn window() -> Option<u32> {
    static FIRST: OnceLock<Option<u32>> = OnceLock::new();
    *FIRST.get_or_init(|| window_outside(ephemeral_range()))
}

fn is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok()
        && TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).is_ok()
        && UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))).is_ok()
}

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port outside the ephemeral range that no other caller in this process was given
/// and that was free a moment ago.
pub fn reserve() -> u16 {
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        // Test binaries that run at the same time (two `cargo test` runs) start at different
        // places in the window.
        let start = std::process::id().wrapping_mul(2_654_435_761) % WINDOW;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    let Some(first) = window() else {
        // Nearly every port is ephemeral on this machine: one the kernel picks, which another
        // test's connection may take before the server binds it.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        return listener.local_addr().expect("local addr").port();
    };
    for _ in 0..WINDOW {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % WINDOW;
        let port = u16::try_from(first + offset).expect("ports fit in u16");
        if is_free(port) {
            return port;
        }
    }
    panic!(
        "no free port in {first}..{}: every one is taken",
        first + WINDOW
    );
}
