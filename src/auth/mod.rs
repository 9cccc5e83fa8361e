//! Authentication: accounts, passwords, server-side sessions, brute-force regulation and the
//! audit trail.

pub mod audit;
pub mod password;
pub mod regulation;
pub mod session;
pub mod user;
