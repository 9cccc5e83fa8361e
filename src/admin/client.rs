//! The CLI side of user administration: reads and checks new passwords, hashes them locally,
//! sends one request to the running gateway's control socket or, when no gateway answers, opens
//! the store directly and performs the same request in-process, and renders the answer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{self, HashField, Request, Response, UserView};
use super::socket::socket_path;
use crate::app::AppError;
use crate::auth::password::{
    Password, PasswordError, PasswordHash, PasswordSettings, hash_blocking,
};
use crate::auth::user::Username;
use crate::config::Config;
use crate::store::StoreError;

/// How long the CLI waits for the gateway's answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest password line read from standard input, in bytes.
const MAX_PASSWORD_LINE: u64 = 16 * 1024;

/// Everything a CLI command can fail with; each prints as one clear line.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("invalid username {input:?}: {reason}")]
    Username { input: String, reason: String },
    #[error("{0}")]
    Password(#[from] PasswordError),
    #[error("{0}")]
    PasswordInput(String),
    #[error("cannot talk to the gateway on {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the gateway on {} sent an unreadable answer: {reason}", path.display())]
    Protocol { path: PathBuf, reason: String },
    #[error("no gateway answers on {} and the store cannot be opened directly: {source}", socket.display())]
    Offline {
        socket: PathBuf,
        #[source]
        source: AppError,
    },
    #[error(
        "the store is locked by another process, but no gateway answers on {}; is a gateway running without its control socket?",
        socket.display()
    )]
    StoreLocked { socket: PathBuf },
    #[error(
        "no store at {}: nothing has been stored there yet (check storage.path in the configuration; a relative path is taken from the current directory)",
        path.display()
    )]
    NoStore { path: PathBuf },
    /// The gateway (or the offline store) refused the request.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
}

/// Where a request was performed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through the running gateway's control socket.
    Gateway,
    /// In this process, on the store opened directly.
    Offline,
    /// In this process, on a store created for this request (there was none at the path).
    NewStore,
}

/// Sends `request` to the gateway of `config`'s store, or performs it on the store directly
/// when no gateway listens. Error responses are returned as responses.
pub fn perform(config: &Config, request: &Request) -> Result<(Route, Response), AdminError> {
    let path = socket_path(&config.storage.path);
    if let Some(response) = send(&path, request)? {
        return Ok((Route::Gateway, response));
    }
    // A mistyped or relative `storage.path` must not quietly become a second, empty store:
    // only adding an account may create one (the first account, before the first start).
    let store_dir = &config.storage.path;
    let route = if crate::store::exists_at(store_dir) {
        Route::Offline
    } else if matches!(request, Request::CreateUser { .. }) {
        Route::NewStore
    } else {
        return Err(AdminError::NoStore {
            path: std::path::absolute(store_dir).unwrap_or_else(|_| store_dir.clone()),
        });
    };
    let offline =
        super::offline_directory(config).map_err(|source| offline_error(&path, source))?;
    let response = protocol::execute(&offline.users, request.clone());
    offline.close().map_err(|source| AdminError::Offline {
        socket: path,
        source,
    })?;
    Ok((route, response))
}

fn offline_error(socket: &Path, source: AppError) -> AdminError {
    let locked = matches!(
        &source,
        AppError::Store(StoreError::Open { source, .. }) if crate::store::is_lock_held(source)
    );
    if locked {
        AdminError::StoreLocked {
            socket: socket.to_path_buf(),
        }
    } else {
        AdminError::Offline {
            socket: socket.to_path_buf(),
            source,
        }
    }
}

/// Like [`perform`], but an error response becomes [`AdminError::Refused`].
pub fn perform_ok(config: &Config, request: &Request) -> Result<Response, AdminError> {
    match perform(config, request)?.1 {
        Response::Error { message, .. } => Err(AdminError::Refused(message)),
        ok => Ok(ok),
    }
}

/// Longest answer read from the gateway (the same user's own process): room for the list of
/// a few hundred thousand accounts, and a bound all the same.
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// One request over the socket at `path`. `Ok(None)`: nobody listens there (no socket file, or
/// the connection is refused), so the caller may open the store itself. Any other failure is an
/// error: falling back to the store then would only hit the gateway's lock.
pub fn send(path: &Path, request: &Request) -> Result<Option<Response>, AdminError> {
    let socket_error = |source: io::Error| AdminError::Socket {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(socket_error(e)),
    };
    let mut line = serde_json::to_vec(request).map_err(|e| AdminError::Protocol {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    line.push(b'\n');
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(socket_error)?;
    stream
        .set_write_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(socket_error)?;
    stream.write_all(&line).map_err(socket_error)?;
    let mut answer = Vec::new();
    BufReader::new(stream)
        .take(MAX_ANSWER_BYTES)
        .read_until(b'\n', &mut answer)
        .map_err(socket_error)?;
    if answer.len() as u64 >= MAX_ANSWER_BYTES && answer.last() != Some(&b'\n') {
        return Err(AdminError::Protocol {
            path: path.to_path_buf(),
            reason: format!("the answer is longer than {} MiB", MAX_ANSWER_BYTES >> 20),
        });
    }
    serde_json::from_slice(&answer)
        .map(Some)
        .map_err(|e| AdminError::Protocol {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Checks a username as the store will canonicalise it, with a reason a person can act on.
pub fn parse_username(input: &str) -> Result<Username, AdminError> {
    Username::parse(input).map_err(|reason| AdminError::Username {
        input: input.to_string(),
        reason,
    })
}

/// Where a new password comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// One line on standard input; the trailing newline is removed.
    Stdin,
    /// Typed twice at the terminal without echo.
    Prompt,
}

/// Reads a new password, applies the configured policy and hashes it with the configured
/// parameters, here, so the plaintext never leaves this process.
pub fn new_password_hash(
    settings: &PasswordSettings,
    source: PasswordSource,
) -> Result<PasswordHash, AdminError> {
    let password = read_password(source)?;
    settings.policy.check(&password)?;
    Ok(hash_blocking(settings.params, &password)?)
}

fn read_password(source: PasswordSource) -> Result<Password, AdminError> {
    match source {
        PasswordSource::Stdin => read_password_line(&mut io::stdin().lock()),
        PasswordSource::Prompt => {
            let prompt_error = |e: io::Error| {
                AdminError::PasswordInput(format!(
                    "cannot read a password from the terminal ({e}); use --password-stdin"
                ))
            };
            let first = rpassword::prompt_password("New password: ").map_err(prompt_error)?;
            let second = rpassword::prompt_password("Repeat password: ").map_err(prompt_error)?;
            if first != second {
                return Err(AdminError::PasswordInput(
                    "the two passwords do not match".into(),
                ));
            }
            Ok(Password::new(first))
        }
    }
}

/// One line from `input`, without its line ending (`\n` or `\r\n`).
pub fn read_password_line(input: &mut impl BufRead) -> Result<Password, AdminError> {
    let mut raw = Vec::new();
    input
        .take(MAX_PASSWORD_LINE)
        .read_until(b'\n', &mut raw)
        .map_err(|e| AdminError::PasswordInput(format!("cannot read standard input: {e}")))?;
    if raw.is_empty() {
        return Err(AdminError::PasswordInput(
            "no password on standard input".into(),
        ));
    }
    if raw.last() == Some(&b'\n') {
        raw.pop();
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
    } else if raw.len() as u64 >= MAX_PASSWORD_LINE {
        return Err(AdminError::PasswordInput(format!(
            "the password line is longer than {MAX_PASSWORD_LINE} bytes"
        )));
    }
    let text = String::from_utf8(raw).map_err(|_| {
        AdminError::PasswordInput("the password on standard input is not valid UTF-8".into())
    })?;
    Ok(Password::new(text))
}

/// `stepgate user ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Create an account.
    Add {
        /// Username: letters, digits and . _ @ - (case-insensitive).
        name: String,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Display name (default: the username).
        #[arg(long = "name", value_name = "DISPLAY_NAME")]
        display_name: Option<String>,
        /// Comma-separated group names.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Read the password as one line from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password; the account's sessions end.
    Passwd {
        name: String,
        /// Read the password as one line from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change the display name, e-mail address or groups of an account; its sessions and
    /// second factors stay. An empty value clears the field (`--email ''`); a code e-mailed to
    /// the old address is withdrawn.
    #[command(group(
        clap::ArgGroup::new("change")
            .required(true)
            .multiple(true)
            .args(["email", "display_name", "groups"])
    ))]
    Edit {
        name: String,
        /// New e-mail address ('' for none).
        #[arg(long)]
        email: Option<String>,
        /// New display name ('' for the username).
        #[arg(long = "name", value_name = "DISPLAY_NAME")]
        display_name: Option<String>,
        /// New comma-separated group names, replacing the old ones ('' for none).
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
    },
    /// List every account.
    List,
    /// Show one account.
    Show { name: String },
    /// Disable an account: its sessions end at once and it cannot log in.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// Delete an account and end its sessions.
    Delete { name: String },
    /// Delete every second factor of an account (lost phone): authenticator app, backup codes,
    /// phone and email setting; its sessions end. The user can sign in with the password and
    /// enrol again.
    #[command(name = "reset-2fa")]
    ResetTwoFactor { name: String },
}

fn source(password_stdin: bool) -> PasswordSource {
    if password_stdin {
        PasswordSource::Stdin
    } else {
        PasswordSource::Prompt
    }
}

/// Runs one `stepgate user` command; returns what to print on standard output.
pub fn run_user_command(config: &Config, command: UserCommand) -> Result<String, AdminError> {
    match command {
        UserCommand::Add {
            name,
            email,
            display_name,
            groups,
            password_stdin,
        } => {
            let username = parse_username(&name)?;
            // Check the other fields before asking for a password.
            let display_name = protocol::display_name_field(display_name).map_err(refused)?;
            let email = protocol::email_field(email).map_err(refused)?;
            let groups = protocol::groups_field(groups).map_err(refused)?;
            // An existing account is refused before a password is asked for and hashed.
            let lookup = Request::Get {
                username: username.as_str().to_string(),
            };
            match perform(config, &lookup) {
                Ok((_, Response::User { .. })) => {
                    return Err(AdminError::Refused(format!(
                        "user {username} already exists"
                    )));
                }
                // Not found, or no store yet (adding the first account makes it).
                Ok(_) | Err(AdminError::NoStore { .. }) => {}
                Err(e) => return Err(e),
            }
            let hash = new_password_hash(&config.password, source(password_stdin))?;
            let (route, response) = perform(
                config,
                &Request::CreateUser {
                    username: username.as_str().to_string(),
                    display_name,
                    email,
                    groups,
                    password_hash: HashField(hash.as_str().to_string()),
                },
            )?;
            if let Response::Error { message, .. } = response {
                return Err(AdminError::Refused(message));
            }
            Ok(match route {
                Route::NewStore => {
                    let dir = &config.storage.path;
                    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                    format!(
                        "created user {username} in a new store at {}\n",
                        dir.display()
                    )
                }
                Route::Gateway | Route::Offline => format!("created user {username}\n"),
            })
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let username = parse_username(&name)?;
            // An unknown account is refused before a password is asked for and hashed.
            get_user(config, username.as_str())?;
            let hash = new_password_hash(&config.password, source(password_stdin))?;
            perform_ok(
                config,
                &Request::SetPassword {
                    username: username.as_str().to_string(),
                    password_hash: HashField(hash.as_str().to_string()),
                },
            )?;
            Ok(format!(
                "password changed for {username}; their sessions have ended\n"
            ))
        }
        UserCommand::Edit {
            name,
            email,
            display_name,
            groups,
        } => {
            let username = parse_username(&name)?;
            match perform_ok(
                config,
                &Request::EditUser {
                    username: username.as_str().to_string(),
                    display_name,
                    email,
                    groups,
                },
            )? {
                Response::User { user } => {
                    Ok(format!("updated {username}\n{}", render_user(&user)))
                }
                other => Err(unexpected(other)),
            }
        }
        UserCommand::List => match perform_ok(config, &Request::List)? {
            Response::Users { users, unreadable } => {
                let mut out = render_table(&users);
                for name in unreadable {
                    out.push_str(&format!(
                        "the record of user {name} cannot be read (damaged, or written by a newer \
                         version); `stepgate user delete {name}` removes it\n"
                    ));
                }
                Ok(out)
            }
            other => Err(unexpected(other)),
        },
        UserCommand::Show { name } => {
            let user = get_user(config, &name)?;
            Ok(render_user(&user))
        }
        UserCommand::Disable { name } => {
            let username = set_disabled(config, &name, true)?;
            Ok(format!("disabled {username}; their sessions have ended\n"))
        }
        UserCommand::Enable { name } => {
            let username = set_disabled(config, &name, false)?;
            Ok(format!("enabled {username}\n"))
        }
        UserCommand::ResetTwoFactor { name } => {
            let username = parse_username(&name)?;
            perform_ok(
                config,
                &Request::ResetTwoFactor {
                    username: username.as_str().to_string(),
                },
            )?;
            Ok(format!("second factors of {username} deleted\n"))
        }
        UserCommand::Delete { name } => {
            let username = parse_username(&name)?;
            perform_ok(
                config,
                &Request::Delete {
                    username: username.as_str().to_string(),
                },
            )?;
            Ok(format!("deleted {username}; their sessions have ended\n"))
        }
    }
}

/// Fetches one account (through the gateway when it runs).
pub fn get_user(config: &Config, name: &str) -> Result<UserView, AdminError> {
    let username = parse_username(name)?;
    match perform_ok(
        config,
        &Request::Get {
            username: username.as_str().to_string(),
        },
    )? {
        Response::User { user } => Ok(*user),
        other => Err(unexpected(other)),
    }
}

fn set_disabled(config: &Config, name: &str, disabled: bool) -> Result<Username, AdminError> {
    let username = parse_username(name)?;
    perform_ok(
        config,
        &Request::SetDisabled {
            username: username.as_str().to_string(),
            disabled,
        },
    )?;
    Ok(username)
}

fn refused(response: Response) -> AdminError {
    match response {
        Response::Error { message, .. } => AdminError::Refused(message),
        other => unexpected(other),
    }
}

fn unexpected(response: Response) -> AdminError {
    AdminError::Refused(format!("unexpected answer: {response:?}"))
}

/// `hash-password`: a PHC hash of a password that satisfies the policy.
pub fn hash_password(
    settings: &PasswordSettings,
    source: PasswordSource,
) -> Result<String, AdminError> {
    let hash = new_password_hash(settings, source)?;
    Ok(format!("{}\n", hash.as_str()))
}

/// Makes stored text safe to print on a terminal: control characters (escape sequences, line
/// breaks) are shown escaped rather than interpreted.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The `user list` table: username, display name, email, groups, disabled, created.
pub fn render_table(users: &[UserView]) -> String {
    if users.is_empty() {
        return "no users\n".to_string();
    }
    let header = [
        "USERNAME",
        "DISPLAY NAME",
        "EMAIL",
        "GROUPS",
        "DISABLED",
        "CREATED",
    ];
    let rows: Vec<[String; 6]> = users
        .iter()
        .map(|u| {
            [
                printable(&u.username),
                printable(&u.display_name),
                printable(u.email.as_deref().unwrap_or("-")),
                if u.groups.is_empty() {
                    "-".to_string()
                } else {
                    printable(&u.groups.join(","))
                },
                yes_no(u.disabled).to_string(),
                u.created_at.to_rfc3339(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < cells.len() {
                text.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
        }
        out.push_str(&text);
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

/// The `user show` block.
pub fn render_user(u: &UserView) -> String {
    let groups = if u.groups.is_empty() {
        "-".to_string()
    } else {
        printable(&u.groups.join(", "))
    };
    let methods = if u.two_factor_methods.is_empty() {
        "-".to_string()
    } else {
        printable(&u.two_factor_methods.join(", "))
    };
    format!(
        "username:     {}\ndisplay name: {}\nemail:        {}\ngroups:       {}\ndisabled:     {}\ncreated:      {}\n2fa state:    {}\n2fa methods:  {}\n",
        printable(&u.username),
        printable(&u.display_name),
        printable(u.email.as_deref().unwrap_or("-")),
        groups,
        yes_no(u.disabled),
        u.created_at.to_rfc3339(),
        printable(&u.two_factor_state),
        methods,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    #[test]
    fn password_line_loses_only_its_line_ending() {
        let read = |s: &[u8]| read_password_line(&mut &s[..]);
        for (input, expected) in [
            (&b"secret pass\n"[..], "secret pass"),
            (b"secret pass\r\n", "secret pass"),
            (b"secret pass", "secret pass"),
            (b"  spaced  \n", "  spaced  "),
            (b"first\nsecond\n", "first"),
        ] {
            let pw = read(input).unwrap();
            let policy = crate::auth::password::PasswordPolicy {
                min_length: expected.chars().count(),
                max_length: expected.chars().count(),
            };
            assert!(policy.check(&pw).is_ok(), "{input:?}");
        }
        assert!(read(b"").is_err());
        assert!(read(b"\xff\xfe\n").is_err());
    }

    fn view(name: &str, display: &str) -> UserView {
        UserView {
            username: name.into(),
            display_name: display.into(),
            email: None,
            groups: vec!["admins".into(), "dev".into()],
            disabled: true,
            created_at: Timestamp(0),
            two_factor_state: "not_enabled".into(),
            two_factor_methods: vec![],
        }
    }

    #[test]
    fn reads_a_list_of_users_longer_than_a_few_megabytes() {
        // 30,000 accounts: about 6 MiB of answer on one line.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let users: Vec<UserView> = (0..30_000)
            .map(|i| view(&format!("user{i:05}"), "A Display Name Of Some Length"))
            .collect();
        let mut answer = serde_json::to_vec(&Response::Users {
            users,
            unreadable: Vec::new(),
        })
        .unwrap();
        assert!(answer.len() > 5 << 20);
        answer.push(b'\n');
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            (&stream).write_all(&answer).unwrap();
        });
        match send(&path, &Request::List).unwrap() {
            Some(Response::Users { users, .. }) => assert_eq!(users.len(), 30_000),
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn table_has_every_column_aligned() {
        let out = render_table(&[view("alice", "Alice Liddell"), view("bob", "B")]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("USERNAME  DISPLAY NAME   EMAIL  GROUPS"));
        assert!(lines[1].starts_with("alice     Alice Liddell  -      admins,dev  yes"));
        assert!(lines[2].contains("1970-01-01T00:00:00Z"));
        assert_eq!(render_table(&[]), "no users\n");
    }

    #[test]
    fn rejects_terminal_escape_injection_in_output() {
        let out = render_user(&view("alice", "Evil\u{1b}]0;pwned\u{7}\nusername: root"));
        assert!(!out.contains('\u{1b}'));
        assert!(!out.contains("\nusername: root"));
        assert_eq!(out.lines().count(), 8, "one line per field: {out}");
    }
}
