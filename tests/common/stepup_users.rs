//! The users step-up tests start from: a TOTP user whose step-up window has passed, and a user
//! with no second factor, logged in with the password only.
//!
//! ```ignore
//! let (rig, alice) = alice_past_the_window(SETTINGS_STEP_UP).await;
//! let bob = password_only_login(&rig, "bob").await;   // a one_factor session cookie
//! ```

use super::mfa::Rig;
use super::stepup::{FreshUser, SIX_MINUTES, fresh_totp_user};

/// Creates `name` with TOTP, logs them in with a code (see [`fresh_totp_user`]), then moves the
/// clock six minutes on: past a five-minute step-up window.
pub async fn user_past_the_window(rig: &Rig, name: &str) -> FreshUser {
    let user = fresh_totp_user(rig, name).await;
    rig.advance(SIX_MINUTES);
    user
}

/// A rig started with `config` (TOML) and "alice" from [`user_past_the_window`].
pub async fn alice_past_the_window(config: &str) -> (Rig, FreshUser) {
    let rig = Rig::start(config).await;
    let alice = user_past_the_window(&rig, "alice").await;
    (rig, alice)
}

/// Creates `name` without any second factor and logs them in with the password: returns the
/// one_factor session cookie.
pub async fn password_only_login(rig: &Rig, name: &str) -> String {
    rig.user(name, None, &[]).await;
    rig.login_one_factor(name).await
}
