//! The control-socket protocol: one JSON [`Request`] line in, one JSON [`Response`] line out.
//!
//! Requests carry password *hashes*, never passwords: the CLI hashes on its side, so a plaintext
//! password never crosses the socket. Both the socket server and the CLI's offline path run a
//! request through [`execute`], so the two behave the same.
//!
//! ```text
//! {"op":"set_disabled","username":"alice","disabled":true}
//! {"result":"done"}
//! {"result":"error","kind":"not_found","message":"no user named alice"}
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::auth::directory::{AccountEdit, NewUser, UserDirectory};
use crate::auth::password::PasswordHash;
use crate::auth::user::{User, Username};
use crate::clock::Timestamp;
use crate::store::StoreError;

/// Longest request line the socket server reads, newline included.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 256;
/// Longest e-mail address, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
pub use crate::auth::user::MAX_GROUP_BYTES;
/// Most groups one account may have.
pub const MAX_GROUPS: usize = 256;

/// A PHC password hash as it travels in a request. `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HashField(pub String);

impl fmt::Debug for HashField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One administrative operation on the user directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    CreateUser {
        username: String,
        #[serde(default)]
        display_name: Option<String>,
        #[serde(default)]
        email: Option<String>,
        #[serde(default)]
        groups: Vec<String>,
        password_hash: HashField,
    },
    SetPassword {
        username: String,
        password_hash: HashField,
    },
    SetDisabled {
        username: String,
        disabled: bool,
    },
    /// Changes the fields given; an empty display name means the username, an empty e-mail
    /// address none, an empty list no groups.
    EditUser {
        username: String,
        #[serde(default)]
        display_name: Option<String>,
        #[serde(default)]
        email: Option<String>,
        #[serde(default)]
        groups: Option<Vec<String>>,
    },
    Delete {
        username: String,
    },
    List,
    Get {
        username: String,
    },
    ResetTwoFactor {
        username: String,
    },
}

/// An account as shown to an administrator: everything but the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserView {
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: Timestamp,
    /// `not_enabled`, `enabled` or `expired`.
    #[serde(default)]
    pub two_factor_state: String,
    #[serde(default)]
    pub two_factor_methods: Vec<String>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            username: u.username.as_str().to_string(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            groups: u.groups.clone(),
            disabled: u.disabled,
            created_at: u.created_at,
            two_factor_state: String::new(),
            two_factor_methods: Vec::new(),
        }
    }
}

/// The account with its second-factor state, as `user show` and `user list` print it.
fn view(users: &UserDirectory, user: &User) -> UserView {
    let mut v = UserView::from(user);
    match users.two_factor(user) {
        Ok(summary) => {
            v.two_factor_state = summary.state.as_str().to_string();
            v.two_factor_methods = summary
                .methods
                .iter()
                .map(|m| m.as_str().to_string())
                .collect();
        }
        Err(e) => v.two_factor_state = format!("unknown ({e})"),
    }
    v
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line is not a request (malformed JSON, unknown operation, too long, too slow).
    BadRequest,
    /// A field is invalid (username, e-mail, group, hash).
    Invalid,
    NotFound,
    AlreadyExists,
    /// The store failed; details are in the gateway's log.
    Internal,
}

/// The answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The change was made (and is on disk).
    Done,
    User {
        user: Box<UserView>,
    },
    Users {
        users: Vec<UserView>,
        /// The names of account records that could not be read (damaged, or written by a
        /// newer version).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unreadable: Vec<String>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error {
            kind,
            message: message.into(),
        }
    }
}

/// Parses one request line; anything that is not a request becomes a [`ErrorKind::BadRequest`]
/// response to send back.
pub fn parse_request(line: &[u8]) -> Result<Request, Response> {
    serde_json::from_slice(line).map_err(|e| {
        Response::error(
            ErrorKind::BadRequest,
            format!("not a valid request: {}", one_line(&e.to_string())),
        )
    })
}

/// Performs `request` on `users`. Every change goes through [`UserDirectory`], so disabling or
/// deleting an account ends its sessions and every change is audited.
pub fn execute(users: &UserDirectory, request: Request) -> Response {
    run(users, request).unwrap_or_else(|error| error)
}

fn run(users: &UserDirectory, request: Request) -> Result<Response, Response> {
    match request {
        Request::CreateUser {
            username,
            display_name,
            email,
            groups,
            password_hash,
        } => {
            let new = NewUser {
                username: username_field(&username)?,
                display_name: display_name_field(display_name)?,
                email: email_field(email)?,
                groups: groups_field(groups)?,
                password_hash: hash_field(password_hash)?,
            };
            users.create(new).map_err(store_error)?;
            Ok(Response::Done)
        }
        Request::SetPassword {
            username,
            password_hash,
        } => {
            let username = username_field(&username)?;
            let hash = hash_field(password_hash)?;
            users.set_password(&username, hash).map_err(store_error)?;
            Ok(Response::Done)
        }
        Request::SetDisabled { username, disabled } => {
            let username = username_field(&username)?;
            users
                .set_disabled(&username, disabled)
                .map_err(store_error)?;
            Ok(Response::Done)
        }
        Request::EditUser {
            username,
            display_name,
            email,
            groups,
        } => {
            let username = username_field(&username)?;
            let edit = AccountEdit {
                display_name: display_name
                    .map(|name| display_name_field(Some(name)))
                    .transpose()?,
                email: email.map(|email| email_field(Some(email))).transpose()?,
                groups: groups.map(groups_field).transpose()?,
            };
            if edit.is_empty() {
                return Err(invalid(
                    "edit",
                    "nothing to change: give a display name, an e-mail address or groups",
                ));
            }
            let user = users.edit(&username, &edit).map_err(store_error)?;
            Ok(Response::User {
                user: Box::new(view(users, &user)),
            })
        }
        Request::Delete { username } => {
            let username = username_field(&username)?;
            users.delete(&username).map_err(store_error)?;
            Ok(Response::Done)
        }
        Request::List => {
            let scan = users.list().map_err(store_error)?;
            let mut list = scan.readable;
            list.sort_by(|a, b| a.username.cmp(&b.username));
            Ok(Response::Users {
                users: list.iter().map(|u| view(users, u)).collect(),
                unreadable: scan
                    .unreadable
                    .iter()
                    .map(|key| String::from_utf8_lossy(key).escape_debug().to_string())
                    .collect(),
            })
        }
        Request::ResetTwoFactor { username } => {
            let username = username_field(&username)?;
            users.reset_two_factor(&username).map_err(store_error)?;
            Ok(Response::Done)
        }
        Request::Get { username } => {
            let name = username_field(&username)?;
            match users.get(&name).map_err(store_error)? {
                Some(user) => Ok(Response::User {
                    user: Box::new(view(users, user.as_ref())),
                }),
                None => Err(Response::error(
                    ErrorKind::NotFound,
                    format!("no user named {name}"),
                )),
            }
        }
    }
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::UserExists(name) => Response::error(
            ErrorKind::AlreadyExists,
            format!("user {name} already exists"),
        ),
        StoreError::NoSuchUser(name) => {
            Response::error(ErrorKind::NotFound, format!("no user named {name}"))
        }
        other @ (StoreError::Open { .. }
        | StoreError::NewerSchema { .. }
        | StoreError::Io(_)
        | StoreError::Corrupt { .. }) => {
            tracing::error!(error = %other, "user administration failed in the store");
            Response::error(ErrorKind::Internal, format!("store error: {other}"))
        }
    }
}

fn invalid(field: &str, reason: impl fmt::Display) -> Response {
    Response::error(ErrorKind::Invalid, format!("{field}: {reason}"))
}

fn username_field(raw: &str) -> Result<Username, Response> {
    Username::parse(raw).map_err(|reason| invalid("username", reason))
}

fn hash_field(raw: HashField) -> Result<PasswordHash, Response> {
    PasswordHash::parse(&raw.0).map_err(|e| invalid("password hash", e))
}

/// A display name is sent to the upstream in a header and shown on pages: no control
/// characters, bounded length. Empty means "use the username".
pub fn display_name_field(raw: Option<String>) -> Result<Option<String>, Response> {
    let Some(raw) = raw else { return Ok(None) };
    let name = raw.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            "display name",
            "must not contain control characters",
        ));
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(invalid(
            "display name",
            format!("must be at most {MAX_DISPLAY_NAME_CHARS} characters"),
        ));
    }
    Ok(Some(name.to_string()))
}

/// An e-mail address: one `@` with text on both sides, no whitespace or control characters.
/// Deliverability is not checked here.
pub fn email_field(raw: Option<String>) -> Result<Option<String>, Response> {
    let Some(raw) = raw else { return Ok(None) };
    let email = raw.trim();
    if email.is_empty() {
        return Ok(None);
    }
    if email.len() > MAX_EMAIL_BYTES {
        return Err(invalid(
            "email",
            format!("must be at most {MAX_EMAIL_BYTES} bytes"),
        ));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "email",
            "must not contain spaces or control characters",
        ));
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(Some(email.to_string()))
        }
        _ => Err(invalid(
            "email",
            format!("{email:?} is not an address like name@example.com"),
        )),
    }
}

/// Group names are compared exactly by access rules and sent comma-separated in a header, so
/// each must be printable ASCII without spaces or commas. Duplicates are dropped, order kept.
pub fn groups_field(raw: Vec<String>) -> Result<Vec<String>, Response> {
    let mut groups: Vec<String> = Vec::with_capacity(raw.len());
    for g in raw {
        let g = g.trim();
        if g.is_empty() {
            continue;
        }
        if let Some(reason) = crate::auth::user::group_name_problem(g) {
            return Err(invalid("groups", format!("{g:?}: {reason}")));
        }
        if !groups.iter().any(|have| have == g) {
            groups.push(g.to_string());
        }
    }
    if groups.len() > MAX_GROUPS {
        return Err(invalid("groups", format!("at most {MAX_GROUPS} groups")));
    }
    Ok(groups)
}

/// JSON errors are one line already; this keeps it so should that change.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::password::{HashParams, Password, hash_blocking};
    use crate::auth::session::{AuthLevel, SessionManager, SessionSettings};
    use crate::clock::{ManualClock, SharedClock};
    use crate::store::Store;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        sessions: Arc<SessionManager>,
        users: UserDirectory,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let clock: SharedClock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
        let sessions = Arc::new(SessionManager::new(
            store.clone(),
            clock.clone(),
            SessionSettings::default(),
        ));
        let users = UserDirectory::new(
            store.clone(),
            sessions.clone(),
            clock,
            crate::auth::factors::MfaSettings::default(),
        );
        Fixture {
            _dir: dir,
            store,
            sessions,
            users,
        }
    }

    fn hash() -> HashField {
        let params = HashParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let h = hash_blocking(params, &Password::new("correct horse".into())).unwrap();
        HashField(h.as_str().to_string())
    }

    /// Every response is an [`ErrorKind::Invalid`] error.
    fn assert_all_invalid(responses: impl IntoIterator<Item = Response>) {
        for bad in responses {
            assert!(
                matches!(
                    bad,
                    Response::Error {
                        kind: ErrorKind::Invalid,
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    fn create(name: &str) -> Request {
        Request::CreateUser {
            username: name.into(),
            display_name: None,
            email: None,
            groups: vec![],
            password_hash: hash(),
        }
    }

    #[test]
    fn requests_round_trip_as_single_json_lines() {
        let all = [
            create("alice"),
            Request::SetPassword {
                username: "alice".into(),
                password_hash: hash(),
            },
            Request::SetDisabled {
                username: "alice".into(),
                disabled: true,
            },
            Request::EditUser {
                username: "alice".into(),
                display_name: None,
                email: Some(String::new()),
                groups: Some(vec!["ops".into()]),
            },
            Request::Delete {
                username: "alice".into(),
            },
            Request::List,
            Request::Get {
                username: "alice".into(),
            },
        ];
        for req in all {
            let line = serde_json::to_string(&req).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(parse_request(line.as_bytes()).unwrap(), req);
        }
    }

    #[test]
    fn malformed_or_unknown_requests_are_bad_requests() {
        for line in [
            &b"{"[..],
            b"not json",
            b"{\"op\":\"drop_everything\"}",
            b"{\"op\":\"delete\"}",
            b"{\"op\":\"delete\",\"username\":\"a\",\"extra\":1}",
            b"\xff\xfe",
        ] {
            match parse_request(line) {
                Err(Response::Error {
                    kind: ErrorKind::BadRequest,
                    ..
                }) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
            }
        }
    }

    #[test]
    fn request_debug_hides_the_hash() {
        let req = create("alice");
        let HashField(h) = match &req {
            Request::CreateUser { password_hash, .. } => password_hash.clone(),
            _ => unreachable!(),
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains(&h), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn create_get_list_and_duplicates() {
        let f = fixture();
        assert_eq!(execute(&f.users, create("Alice")), Response::Done);
        match execute(&f.users, create("alice")) {
            Response::Error {
                kind: ErrorKind::AlreadyExists,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        match execute(
            &f.users,
            Request::Get {
                username: "ALICE".into(),
            },
        ) {
            Response::User { user } => {
                assert_eq!(user.username, "alice");
                assert_eq!(user.display_name, "alice");
                assert!(!user.disabled);
            }
            other => panic!("{other:?}"),
        }
        execute(&f.users, create("bob"));
        match execute(&f.users, Request::List) {
            Response::Users { users, .. } => {
                let names: Vec<_> = users.iter().map(|u| u.username.as_str()).collect();
                assert_eq!(names, ["alice", "bob"]);
            }
            other => panic!("{other:?}"),
        }
    }

    /// One damaged account record is named, and hides none of the others.
    #[test]
    fn a_damaged_account_record_hides_no_other_account() {
        let f = fixture();
        execute(&f.users, create("alice"));
        f.store.put_raw_user_for_test(b"mallory", b"\xff\xfe");
        match execute(&f.users, Request::List) {
            Response::Users { users, unreadable } => {
                let names: Vec<_> = users.iter().map(|u| u.username.as_str()).collect();
                assert_eq!(names, ["alice"]);
                assert_eq!(unreadable, ["mallory"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_a_plaintext_password_in_place_of_a_hash() {
        let f = fixture();
        let req = Request::CreateUser {
            username: "alice".into(),
            display_name: None,
            email: None,
            groups: vec![],
            password_hash: HashField("hunter2hunter2".into()),
        };
        match execute(&f.users, req) {
            Response::Error {
                kind: ErrorKind::Invalid,
                message,
            } => assert!(message.starts_with("password hash:"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            execute(&f.users, Request::List),
            Response::Users { users, .. } if users.is_empty()
        ));
    }

    #[test]
    fn rejects_header_injection_through_groups_and_names() {
        let f = fixture();
        let with = |display: Option<&str>, email: Option<&str>, groups: &[&str]| {
            execute(
                &f.users,
                Request::CreateUser {
                    username: "mallory".into(),
                    display_name: display.map(Into::into),
                    email: email.map(Into::into),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                    password_hash: hash(),
                },
            )
        };
        assert_all_invalid([
            with(Some("Mal\r\nRemote-User: admin"), None, &[]),
            with(None, Some("m@x\r\nRemote-User: admin"), &[]),
            with(None, Some("not-an-address"), &[]),
            with(None, None, &["admins,root"]),
            with(None, None, &["ad mins"]),
            with(None, None, &["adm\u{e9}ns"]),
        ]);
        assert_eq!(
            with(
                Some(" Mallory M. "),
                Some("m@example.com"),
                &["a", "b", "a"]
            ),
            Response::Done
        );
        match execute(
            &f.users,
            Request::Get {
                username: "mallory".into(),
            },
        ) {
            Response::User { user } => {
                assert_eq!(user.display_name, "Mallory M.");
                assert_eq!(user.email.as_deref(), Some("m@example.com"));
                assert_eq!(user.groups, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_edit_checks_every_field_before_changing_anything() {
        let f = fixture();
        execute(&f.users, create("alice"));
        let edit = |display: Option<&str>, email: Option<&str>, groups: Option<&[&str]>| {
            execute(
                &f.users,
                Request::EditUser {
                    username: "alice".into(),
                    display_name: display.map(Into::into),
                    email: email.map(Into::into),
                    groups: groups.map(|g| g.iter().map(|g| g.to_string()).collect()),
                },
            )
        };
        assert_all_invalid([
            // A valid group with an invalid address: neither is written.
            edit(None, Some("a@x\r\nRemote-User: admin"), Some(&["ops"])),
            edit(Some("Al\r\nRemote-User: admin"), None, None),
            edit(None, None, Some(&["admins,root"])),
            edit(None, None, None),
        ]);
        let alice = Username::parse("alice").unwrap();
        assert!(f.users.get(&alice).unwrap().unwrap().groups.is_empty());
        match edit(Some(""), Some(" a@example.com "), Some(&["ops", "", "ops"])) {
            Response::User { user } => {
                assert_eq!(user.display_name, "alice");
                assert_eq!(user.email.as_deref(), Some("a@example.com"));
                assert_eq!(user.groups, ["ops"]);
            }
            other => panic!("{other:?}"),
        }
        match execute(
            &f.users,
            Request::EditUser {
                username: "nobody".into(),
                display_name: Some("N".into()),
                email: None,
                groups: None,
            },
        ) {
            Response::Error {
                kind: ErrorKind::NotFound,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn disabling_and_deleting_end_sessions_at_once() {
        let f = fixture();
        execute(&f.users, create("alice"));
        let alice = Username::parse("alice").unwrap();
        let (id, _) = f
            .sessions
            .create(&alice, AuthLevel::OneFactor, false)
            .unwrap();
        assert!(f.sessions.lookup(&id.cookie_value()).unwrap().is_some());
        let disable = Request::SetDisabled {
            username: "alice".into(),
            disabled: true,
        };
        assert_eq!(execute(&f.users, disable), Response::Done);
        assert!(f.sessions.lookup(&id.cookie_value()).unwrap().is_none());

        let enable = Request::SetDisabled {
            username: "alice".into(),
            disabled: false,
        };
        assert_eq!(execute(&f.users, enable), Response::Done);
        let (id, _) = f
            .sessions
            .create(&alice, AuthLevel::OneFactor, false)
            .unwrap();
        let delete = Request::Delete {
            username: "alice".into(),
        };
        assert_eq!(execute(&f.users, delete.clone()), Response::Done);
        assert!(f.sessions.lookup(&id.cookie_value()).unwrap().is_none());
        assert!(matches!(
            execute(&f.users, delete),
            Response::Error {
                kind: ErrorKind::NotFound,
                ..
            }
        ));
    }

    #[test]
    fn invalid_username_is_reported_with_the_reason() {
        let f = fixture();
        match execute(
            &f.users,
            Request::Get {
                username: "-rf".into(),
            },
        ) {
            Response::Error {
                kind: ErrorKind::Invalid,
                message,
            } => assert!(message.contains("must start with a letter"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
