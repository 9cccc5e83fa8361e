//! Checks of the gateway's answers that many tests make: a redirect to a given place, and the
//! JSON challenge of a request that needs a new step-up verification.
//!
//! ```ignore
//! let resp = get(&gw, "/admin", None, Client::Browser).await;
//! assert_redirect(&resp, 302, "/.stepgate/login?rd=%2Fadmin", "anonymous browser");
//! let resp = get(&gw, "/settings", Some(&cookie), Client::Api).await;
//! let body = assert_step_up_required(resp, "after the window").await;
//! ```

use super::auth::{json, location};

/// Asserts that `resp` has `status` and a `Location` header of exactly `to`. `case` names the
/// request in the failure message.
pub fn assert_redirect(resp: &reqwest::Response, status: u16, to: &str, case: &str) {
    assert_eq!(resp.status().as_u16(), status, "{case}: status");
    assert_eq!(location(resp).as_deref(), Some(to), "{case}: Location");
}

/// Asserts that `resp` is a 401 whose JSON body says `"error": "step_up_required"`, and
/// returns the body. `case` names the request in the failure message.
pub async fn assert_step_up_required(resp: reqwest::Response, case: &str) -> serde_json::Value {
    assert_eq!(resp.status(), 401, "{case}");
    let body = json(resp).await;
    assert_eq!(body["error"], "step_up_required", "{case}: {body}");
    body
}
