//! The CLI while the gateway runs in this process and holds the store: requests go over the
//! control socket, and user changes take effect on live sessions at once.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use common::cli::{CliEnv, run_async};
use stepgate::admin::protocol::{ErrorKind, MAX_REQUEST_BYTES, Response};
use stepgate::auth::session::AuthLevel;
use stepgate::auth::user::Username;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const PW: &str = "correct horse battery\n";

/// Sends raw bytes on the control socket and reads the one response line.
async fn exchange(env: &CliEnv, bytes: &[u8]) -> Response {
    let mut stream = UnixStream::connect(env.socket_path())
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .expect("read");
    assert!(line.ends_with('\n'), "{line:?}");
    serde_json::from_str(&line).expect("a response line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_works_while_the_gateway_holds_the_store() {
    let env = CliEnv::new("");
    let running = env.start_gateway().await;

    let out = run_async(
        &env,
        &[
            "user",
            "add",
            "alice",
            "--groups",
            "ops",
            "--password-stdin",
        ],
        Some(PW),
    )
    .await
    .ok();
    assert_eq!(out.stdout, "created user alice\n");
    let alice = Username::parse("alice").unwrap();
    let user = running.app().users.get(&alice).unwrap().expect("created");
    assert_eq!(user.groups, ["ops"]);

    let list = run_async(&env, &["user", "list"], None).await.ok().stdout;
    assert!(list.lines().nth(1).unwrap().starts_with("alice "), "{list}");
    let dup = run_async(
        &env,
        &["user", "add", "ALICE", "--password-stdin"],
        Some(PW),
    )
    .await;
    assert_eq!(dup.code, 1);
    assert!(dup.stderr.contains("already exists"), "{dup:#?}");

    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_socket_is_private_and_removed_on_shutdown() {
    let env = CliEnv::new("");
    let running = env.start_gateway().await;
    let meta = std::fs::symlink_metadata(env.socket_path()).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No staging directory is left next to it.
    let names: Vec<String> = std::fs::read_dir(&env.storage)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".control-")),
        "{names:?}"
    );
    running.shutdown().await.unwrap();
    assert!(!env.socket_path().exists());

    // With the gateway gone the CLI opens the store itself.
    let out = run_async(&env, &["user", "add", "bob", "--password-stdin"], Some(PW))
        .await
        .ok();
    assert_eq!(out.stdout, "created user bob\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_through_the_cli_ends_live_sessions_at_once() {
    let env = CliEnv::new("");
    let running = env.start_gateway().await;
    let app = running.app().clone();
    run_async(
        &env,
        &["user", "add", "alice", "--password-stdin"],
        Some(PW),
    )
    .await
    .ok();
    let alice = Username::parse("alice").unwrap();

    let (id, _) = app
        .sessions
        .create(&alice, AuthLevel::TwoFactor, false)
        .unwrap();
    assert!(app.sessions.lookup(&id.cookie_value()).unwrap().is_some());
    run_async(&env, &["user", "disable", "alice"], None)
        .await
        .ok();
    assert!(app.sessions.lookup(&id.cookie_value()).unwrap().is_none());
    assert!(
        app.users
            .get(&alice)
            .unwrap()
            .expect("still exists")
            .disabled
    );

    run_async(&env, &["user", "enable", "alice"], None)
        .await
        .ok();
    assert!(!app.users.get(&alice).unwrap().expect("exists").disabled);
    let (id, _) = app
        .sessions
        .create(&alice, AuthLevel::OneFactor, true)
        .unwrap();
    run_async(
        &env,
        &["user", "passwd", "alice", "--password-stdin"],
        Some("another long secret\n"),
    )
    .await
    .ok();
    assert!(app.sessions.lookup(&id.cookie_value()).unwrap().is_none());

    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_through_the_cli_ends_live_sessions_at_once() {
    let env = CliEnv::new("");
    let running = env.start_gateway().await;
    let app = running.app().clone();
    run_async(
        &env,
        &["user", "add", "alice", "--password-stdin"],
        Some(PW),
    )
    .await
    .ok();
    let alice = Username::parse("alice").unwrap();
    // Warm the gateway's view of the account, so a stale cache would show.
    assert!(app.users.get(&alice).unwrap().is_some());
    let (id, _) = app
        .sessions
        .create(&alice, AuthLevel::OneFactor, false)
        .unwrap();

    run_async(&env, &["user", "delete", "alice"], None)
        .await
        .ok();
    assert!(app.sessions.lookup(&id.cookie_value()).unwrap().is_none());
    assert!(app.users.get(&alice).unwrap().is_none());

    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_an_error_and_the_socket_keeps_serving() {
    let env = CliEnv::new("");
    let running = env.start_gateway().await;

    for bad in [
        &b"{nope\n"[..],
        b"\n",
        b"{\"op\":\"drop_all_users\"}\n",
        b"\xff\xfe\xfd\n",
    ] {
        match exchange(&env, bad).await {
            Response::Error {
                kind: ErrorKind::BadRequest,
                ..
            } => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // A line past the limit is refused without being read to its end.
    let huge = vec![b'x'; MAX_REQUEST_BYTES + 10];
    match exchange(&env, &huge).await {
        Response::Error {
            kind: ErrorKind::BadRequest,
            message,
        } => assert!(message.contains("longer than"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A request that reads well but names an invalid user is refused, not crashed on.
    match exchange(&env, b"{\"op\":\"get\",\"username\":\"../etc\"}\n").await {
        Response::Error {
            kind: ErrorKind::Invalid,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    // And the socket still serves.
    assert_eq!(
        exchange(&env, b"{\"op\":\"list\"}\n").await,
        Response::Users {
            users: vec![],
            unreadable: vec![]
        }
    );
    let out = run_async(
        &env,
        &["user", "add", "carol", "--password-stdin"],
        Some(PW),
    )
    .await
    .ok();
    assert_eq!(out.stdout, "created user carol\n");

    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced_on_start() {
    let env = CliEnv::new("");
    std::fs::create_dir_all(&env.storage).unwrap();
    // A socket file left by a gateway that died: nothing answers on it.
    drop(std::os::unix::net::UnixListener::bind(env.socket_path()).unwrap());
    assert!(env.socket_path().exists());

    let running = env.start_gateway().await;
    assert_eq!(
        exchange(&env, b"{\"op\":\"list\"}\n").await,
        Response::Users {
            users: vec![],
            unreadable: vec![]
        }
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_take_over_a_socket_someone_answers_on() {
    let env = CliEnv::new("");
    std::fs::create_dir_all(&env.storage).unwrap();
    let _live = std::os::unix::net::UnixListener::bind(env.socket_path()).unwrap();
    let app = stepgate::app::App::new(
        env.config(),
        std::sync::Arc::new(stepgate::clock::SystemClock),
    )
    .unwrap();
    let err = match stepgate::server::start(app).await {
        Ok(_) => panic!("started over a live control socket"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("another process answers"), "{err}");
    assert!(env.socket_path().exists());
}

/// `GET https://app.example.com/admin` as root, through `check-policy`.
const CHECK_ROOT_ON_ADMIN: [&str; 5] = [
    "check-policy",
    "--user",
    "root",
    "GET",
    "https://app.example.com/admin",
];

/// `/admin` for the admins group, with two factors; nothing for anyone else.
const ADMINS_ONLY: &str = r#"
[access]
default_policy = "deny"

[[access.rules]]
path = "^/admin"
subjects = "group:admins"
policy = "two_factor"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_policy_reads_groups_through_the_gateway() {
    let env = CliEnv::new(ADMINS_ONLY);
    let running = env.start_gateway().await;
    run_async(
        &env,
        &[
            "user",
            "add",
            "root",
            "--groups",
            "admins",
            "--password-stdin",
        ],
        Some(PW),
    )
    .await
    .ok();
    let out = run_async(&env, &CHECK_ROOT_ON_ADMIN, None).await.ok();
    assert!(out.stdout.contains("rule:     access.rules[0]"), "{out:#?}");
    assert!(out.stdout.contains("decision: two_factor\n"), "{out:#?}");
    running.shutdown().await.unwrap();
}

/// `user edit` through the running gateway: the new groups apply to the next decision, and the
/// account's live sessions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_groups_through_the_cli_applies_at_once_and_keeps_sessions() {
    let env = CliEnv::new(ADMINS_ONLY);
    let running = env.start_gateway().await;
    let app = running.app().clone();
    run_async(
        &env,
        &["user", "add", "root", "--groups", "dev", "--password-stdin"],
        Some(PW),
    )
    .await
    .ok();
    let root = Username::parse("root").unwrap();
    let (id, _) = app
        .sessions
        .create(&root, AuthLevel::TwoFactor, false)
        .unwrap();
    let out = run_async(&env, &CHECK_ROOT_ON_ADMIN, None).await.ok();
    assert!(out.stdout.contains("decision: deny\n"), "{out:#?}");

    let out = run_async(&env, &["user", "edit", "root", "--groups", "admins"], None)
        .await
        .ok();
    assert!(out.stdout.starts_with("updated root\n"), "{out:#?}");
    assert!(out.stdout.contains("groups:       admins\n"), "{out:#?}");
    let out = run_async(&env, &CHECK_ROOT_ON_ADMIN, None).await.ok();
    assert!(out.stdout.contains("decision: two_factor\n"), "{out:#?}");
    assert_eq!(app.users.get(&root).unwrap().unwrap().groups, ["admins"]);
    assert!(app.sessions.lookup(&id.cookie_value()).unwrap().is_some());
    running.shutdown().await.unwrap();
}
