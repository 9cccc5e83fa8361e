//! Loopback ports for servers a test starts on a port it must know in advance (a proxy whose
//! address goes into the gateway's configuration, chromedriver, a TLS listener).
//!
//! A port chosen by binding port 0 and releasing it comes from the kernel's ephemeral range,
//! where the next outgoing connection of any test running beside this one, or another bind
//! to port 0, can take it before the server binds it. The ports handed out here come from
//! below that range (Linux's default starts at 32768), are never handed out twice in one test
//! process, and were free when handed out.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Below Linux's default ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999).
const FIRST: u32 = 20_000;
const COUNT: u32 = 12_000;

/// Where this process starts in the range: test binaries that run at the same time (two
/// `cargo test` runs) start at different places.
fn start() -> u32 {
    (std::process::id().wrapping_mul(2_654_435_761)) % COUNT
}

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port that no other caller in this process was given and that was free a moment
/// ago.
pub fn reserve() -> u16 {
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let _ = NEXT.compare_exchange(u32::MAX, start(), Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..COUNT {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % COUNT;
        let port = u16::try_from(FIRST + offset).expect("port range fits u16");
        if TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}
