//! `stepgate user ...` and `stepgate hash-password` with no gateway running: the CLI opens the
//! store itself.

mod common;

use common::cli::{CliEnv, run_in};
use stepgate::auth::audit::AuditKind;
use stepgate::auth::password::{HashParams, Password, PasswordHash, PasswordHasher};
use stepgate::auth::user::Username;
use stepgate::store::Store;

const PW: &str = "correct horse battery\n";

fn stored_hash(env: &CliEnv, name: &str) -> Option<PasswordHash> {
    let store = Store::open(&env.storage).expect("store");
    let user = store
        .get_user(&Username::parse(name).expect("username"))
        .expect("read user")?;
    Some(user.password_hash)
}

async fn verifies(hash: &PasswordHash, password: &str) -> bool {
    let hasher = PasswordHasher::new(
        HashParams {
            m_kib: 256,
            t: 1,
            p: 1,
        },
        1,
    )
    .expect("hasher");
    hasher
        .verify(Password::new(password.to_string()), Some(hash))
        .await
}

#[tokio::test]
async fn offline_user_lifecycle() {
    let env = CliEnv::new("");
    let out = env
        .run(
            &[
                "user",
                "add",
                "alice",
                "--email",
                "alice@example.com",
                "--name",
                "Alice Liddell",
                "--groups",
                "admins,dev",
                "--password-stdin",
            ],
            Some(PW),
        )
        .ok();
    // The first account makes the store, and says where.
    assert_eq!(
        out.stdout,
        format!(
            "created user alice in a new store at {}\n",
            env.storage.display()
        )
    );

    let list = env.run(&["user", "list"], None).ok().stdout;
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    for column in [
        "USERNAME",
        "DISPLAY NAME",
        "EMAIL",
        "GROUPS",
        "DISABLED",
        "CREATED",
    ] {
        assert!(lines[0].contains(column), "{list}");
    }
    for value in [
        "alice",
        "Alice Liddell",
        "alice@example.com",
        "admins,dev",
        "no",
    ] {
        assert!(lines[1].contains(value), "{list}");
    }

    // `Alice` is the same account as `alice`.
    let again = env.run(&["user", "add", "Alice", "--password-stdin"], Some(PW));
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(again.stderr.contains("already exists"), "{again:#?}");

    let show = env.run(&["user", "show", "ALICE"], None).ok().stdout;
    assert!(show.contains("username:     alice\n"), "{show}");
    assert!(show.contains("display name: Alice Liddell\n"), "{show}");
    assert!(show.contains("groups:       admins, dev\n"), "{show}");
    assert!(show.contains("disabled:     no\n"), "{show}");

    env.run(&["user", "disable", "alice"], None).ok();
    let show = env.run(&["user", "show", "alice"], None).ok().stdout;
    assert!(show.contains("disabled:     yes\n"), "{show}");
    env.run(&["user", "enable", "alice"], None).ok();
    let show = env.run(&["user", "show", "alice"], None).ok().stdout;
    assert!(show.contains("disabled:     no\n"), "{show}");

    let before = stored_hash(&env, "alice").expect("alice exists");
    assert!(verifies(&before, "correct horse battery").await);
    env.run(
        &["user", "passwd", "alice", "--password-stdin"],
        Some("a brand new secret\r\n"),
    )
    .ok();
    let after = stored_hash(&env, "alice").expect("alice exists");
    assert!(verifies(&after, "a brand new secret").await);
    assert!(!verifies(&after, "correct horse battery").await);

    env.run(&["user", "delete", "alice"], None).ok();
    assert_eq!(stored_hash(&env, "alice"), None);
    assert_eq!(env.run(&["user", "list"], None).ok().stdout, "no users\n");
    let gone = env.run(&["user", "show", "alice"], None);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("no user named alice"), "{gone:#?}");

    // Every change went through the user directory, so it was audited.
    let store = Store::open(&env.storage).expect("store");
    let kinds: Vec<AuditKind> = store
        .recent_audit(100)
        .expect("audit")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for kind in [
        AuditKind::UserCreated,
        AuditKind::UserDisabled,
        AuditKind::UserEnabled,
        AuditKind::PasswordChanged,
        AuditKind::UserDeleted,
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

#[test]
fn rejects_a_password_shorter_than_the_policy() {
    let env = CliEnv::new("");
    let out = env.run(&["user", "add", "bob", "--password-stdin"], Some("short\n"));
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("too short"), "{out:#?}");
    assert!(out.stderr.contains("at least 10"), "{out:#?}");
    assert_eq!(stored_hash(&env, "bob"), None);
}

#[test]
fn rejects_an_empty_password_on_stdin() {
    let env = CliEnv::new("");
    let out = env.run(&["user", "add", "bob", "--password-stdin"], Some(""));
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("no password"), "{out:#?}");
    assert_eq!(stored_hash(&env, "bob"), None);
}

#[test]
fn rejects_invalid_usernames_with_the_reason() {
    let env = CliEnv::new("");
    for (name, reason) in [
        ("bad name", "may contain only"),
        ("\u{212A}elvin", "may contain only"),
        ("_hidden", "must start with a letter or a digit"),
    ] {
        let out = env.run(&["user", "add", name, "--password-stdin"], Some(PW));
        assert_eq!(out.code, 1, "{out:#?}");
        assert!(out.stderr.contains("invalid username"), "{out:#?}");
        assert!(out.stderr.contains(reason), "{out:#?}");
    }
    // Refused before anything was stored: not even a store was made.
    assert!(!env.storage.exists());
}

#[test]
fn rejects_header_injection_through_display_name() {
    let env = CliEnv::new("");
    let out = env.run(
        &[
            "user",
            "add",
            "mallory",
            "--name",
            "Mallory\r\nRemote-User: admin",
            "--password-stdin",
        ],
        Some(PW),
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("display name"), "{out:#?}");
    assert_eq!(stored_hash(&env, "mallory"), None);
}

/// Whether the account can take the change is known before a password is asked for: an unknown
/// account for `passwd`, an existing one for `add` (standard input is empty here, so a prompt or
/// a read would fail with another message).
#[test]
fn account_is_checked_before_the_password_is_asked() {
    let env = CliEnv::new("");
    env.run(&["user", "add", "alice", "--password-stdin"], Some(PW))
        .ok();
    let out = env.run(&["user", "passwd", "ghost", "--password-stdin"], None);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("no user named ghost"), "{out:#?}");
    let out = env.run(&["user", "add", "alice", "--password-stdin"], None);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("user alice already exists"), "{out:#?}");
}

#[test]
fn unknown_user_changes_fail() {
    let env = CliEnv::new("");
    drop(stepgate::store::Store::open(&env.storage).expect("an empty store"));
    for cmd in ["disable", "enable", "delete", "show"] {
        let out = env.run(&["user", cmd, "nobody"], None);
        assert_eq!(out.code, 1, "{cmd}: {out:#?}");
        assert!(out.stderr.contains("no user named nobody"), "{out:#?}");
    }
}

/// A mistyped `storage.path` must not quietly become a second, empty store: commands other than
/// adding an account refuse, name the path, and create nothing.
#[test]
fn commands_on_a_store_that_does_not_exist_say_so_and_create_nothing() {
    let env = CliEnv::new("");
    for args in [
        &["user", "list"][..],
        &["user", "show", "alice"],
        &["user", "disable", "alice"],
        &["user", "delete", "alice"],
        &["user", "reset-2fa", "alice"],
    ] {
        let out = env.run(args, None);
        assert_eq!(out.code, 1, "{args:?}: {out:#?}");
        assert!(
            out.stderr.contains("no store at")
                && out.stderr.contains(&env.storage.display().to_string()),
            "{args:?}: {out:#?}"
        );
        assert!(!env.storage.exists(), "{args:?} created the store");
    }
    // An existing directory that holds no store is no better (a mistyped `/var/lib`).
    std::fs::create_dir(&env.storage).expect("directory");
    let out = env.run(&["user", "list"], None);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("no store at"), "{out:#?}");
    assert_eq!(
        std::fs::read_dir(&env.storage).expect("dir").count(),
        0,
        "a store was created in the directory"
    );
}

#[test]
fn usage_errors_exit_with_2() {
    let env = CliEnv::new("");
    assert_eq!(env.run(&["user"], None).code, 2);
    assert_eq!(env.run(&["user", "add"], None).code, 2);
    assert_eq!(env.run(&["user", "frobnicate", "x"], None).code, 2);
}

#[test]
fn invalid_config_is_reported() {
    let env = CliEnv::new("[password]\nmin_length = 0\n");
    let out = env.run(&["user", "list"], None);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("password"), "{out:#?}");
}

#[tokio::test]
async fn hash_password_without_config_uses_default_params() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_in(
        dir.path(),
        &["hash-password", "--password-stdin"],
        Some("correct horse battery\n"),
    )
    .ok();
    let line = out.stdout.trim_end();
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(
        line.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{line}"
    );
    let hash = PasswordHash::parse(line).expect("a valid PHC string");
    let hasher = PasswordHasher::new(HashParams::default(), 1).expect("hasher");
    assert!(
        hasher
            .verify(Password::new("correct horse battery".into()), Some(&hash))
            .await
    );
}

#[test]
fn hash_password_uses_configured_params_and_policy() {
    let env = CliEnv::new("");
    let out = env
        .run(&["hash-password", "--password-stdin"], Some(PW))
        .ok();
    assert!(
        out.stdout.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
        "{out:#?}"
    );
    let short = env.run(&["hash-password", "--password-stdin"], Some("short\n"));
    assert_eq!(short.code, 1);
    assert!(short.stderr.contains("too short"), "{short:#?}");
}

#[test]
fn explains_a_store_locked_without_a_control_socket() {
    let env = CliEnv::new("");
    // This process holds the store, as a gateway would, but listens on no control socket.
    let _held = Store::open(&env.storage).expect("store");
    let out = env.run(&["user", "list"], None);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("locked by another process"), "{out:#?}");
}

#[test]
fn offline_edit_changes_fields_and_refuses_nothing_to_change() {
    let env = CliEnv::new("");
    env.run(
        &[
            "user",
            "add",
            "alice",
            "--email",
            "alice@example.com",
            "--groups",
            "dev",
            "--password-stdin",
        ],
        Some(PW),
    )
    .ok();
    let hash = stored_hash(&env, "alice");

    let out = env
        .run(
            &[
                "user",
                "edit",
                "Alice",
                "--groups",
                "ops,admins",
                "--name",
                "Alice L.",
            ],
            None,
        )
        .ok();
    assert!(out.stdout.starts_with("updated alice\n"), "{out:#?}");
    let show = env.run(&["user", "show", "alice"], None).ok().stdout;
    assert!(show.contains("display name: Alice L.\n"), "{show}");
    assert!(show.contains("email:        alice@example.com\n"), "{show}");
    assert!(show.contains("groups:       ops, admins\n"), "{show}");

    // Empty values clear; the password is untouched by any of it.
    env.run(
        &["user", "edit", "alice", "--email", "", "--groups", ""],
        None,
    )
    .ok();
    let show = env.run(&["user", "show", "alice"], None).ok().stdout;
    assert!(show.contains("email:        -\n"), "{show}");
    assert!(show.contains("groups:       -\n"), "{show}");
    assert!(show.contains("display name: Alice L.\n"), "{show}");
    assert_eq!(stored_hash(&env, "alice"), hash);

    // Nothing to change is a usage error; a bad value or an unknown account changes nothing.
    let none = env.run(&["user", "edit", "alice"], None);
    assert_eq!(none.code, 2, "{none:#?}");
    let bad = env.run(
        &[
            "user",
            "edit",
            "alice",
            "--email",
            "not-an-address",
            "--groups",
            "x",
        ],
        None,
    );
    assert_eq!(bad.code, 1, "{bad:#?}");
    assert!(bad.stderr.contains("email"), "{bad:#?}");
    let show = env.run(&["user", "show", "alice"], None).ok().stdout;
    assert!(show.contains("groups:       -\n"), "{show}");
    let unknown = env.run(&["user", "edit", "bob", "--groups", "x"], None);
    assert_eq!(unknown.code, 1, "{unknown:#?}");
    assert!(unknown.stderr.contains("no user named bob"), "{unknown:#?}");

    let store = Store::open(&env.storage).expect("store");
    let updates = store
        .recent_audit(100)
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == AuditKind::UserUpdated)
        .count();
    assert_eq!(updates, 2);
}
