//! Who is the user: passwords, accounts, sessions, brute-force regulation and the audit trail.

pub mod audit;
pub mod directory;
pub mod factors;
mod hash_memory;
pub mod password;
pub mod regulation;
pub mod session;
pub mod session_ends;
pub mod step_up;
pub mod user;
