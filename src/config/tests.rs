use figment::Figment;
use figment::providers::{Format, Toml};

use super::*;

fn parse(toml: &str) -> Result<Config, ConfigErrors> {
    from_figment(&Figment::from(Toml::string(toml)))
}

fn keys(errors: &ConfigErrors) -> Vec<String> {
    errors.problems().iter().map(|p| p.key.clone()).collect()
}

const MINIMAL: &str = r#"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.listen, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(c.portal.prefix, "/.stepgate");
    assert_eq!(c.upstreams[0].timeout, Duration::from_secs(60));
    assert!(c.upstreams[0].host.is_none());
    assert!(c.server.trusted_proxies.is_empty());
}

#[test]
fn names_the_key_of_a_bad_upstream_scheme() {
    let errs = parse(
        r#"
[[upstreams]]
host = "a.example.com"
url = "http://127.0.0.1:3000"
[[upstreams]]
url = "ftp://127.0.0.1:21"
"#,
    )
    .unwrap_err();
    assert_eq!(
        errs.to_string(),
        "upstreams[1].url: scheme must be http or https"
    );
}

#[test]
fn reports_every_problem_at_once() {
    let errs = parse(
        r#"
[server]
listen = "nowhere"
trusted_proxies = ["10.0.0.0/8", "bogus"]
[limits]
idle_timeout = "forever"
[portal]
prefix = "stepgate/"
[[upstreams]]
url = "http://127.0.0.1:3000/app"
timeout = "5 parsecs"
"#,
    )
    .unwrap_err();
    assert_eq!(
        keys(&errs),
        vec![
            "server.listen",
            "server.trusted_proxies[1]",
            "limits.idle_timeout",
            "upstreams[0].url",
            "upstreams[0].timeout",
            "portal.prefix",
        ]
    );
}

#[test]
fn trusted_proxies_wider_than_a_proxy_fleet_are_refused() {
    let errs = parse(
        r#"
[server]
trusted_proxies = ["0.0.0.0/0", "::/0", "10.0.0.0/7", "2001::/31", "::ffff:0:0/96", "::ffff:10.0.0.0/103", "fc00::/6"]
"#,
    )
    .unwrap_err();
    assert_eq!(
        keys(&errs),
        (0..7)
            .map(|i| format!("server.trusted_proxies[{i}]"))
            .collect::<Vec<_>>()
    );
    assert!(errs.to_string().contains("0.0.0.0/0 spans"), "{errs}");
    let c = parse(
        r#"
[server]
trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "::ffff:10.0.0.0/104", "127.0.0.1", "fd00::1", "fd00::/8", "fc00::/7", "::ffff:192.0.2.1"]
"#,
    )
    .unwrap();
    let trusted: Vec<String> = c
        .server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    // IPv4-mapped entries stand for their IPv4 network, as clients' addresses are compared.
    assert_eq!(
        trusted,
        [
            "10.0.0.0/8",
            "2001:db8::/32",
            "10.0.0.0/8",
            "127.0.0.1/32",
            "fd00::1/128",
            "fd00::/8",
            "fc00::/7",
            "192.0.2.1/32"
        ]
    );
}

#[test]
fn unknown_keys_are_errors_with_their_path() {
    let errs = parse(
        r#"
[server]
listen = "127.0.0.1:8080"
lisen = "oops"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
    )
    .unwrap_err();
    let p = &errs.problems()[0];
    assert_eq!(p.key, "server.lisen");
    assert!(p.reason.starts_with("unknown key"), "{}", p.reason);
}

#[test]
fn unknown_key_inside_an_upstream_names_its_index() {
    let errs = parse(
        r#"
[[upstreams]]
url = "http://127.0.0.1:3000"
[[upstreams]]
host = "b.example.com"
url = "http://127.0.0.1:3001"
timout = "5s"
"#,
    )
    .unwrap_err();
    assert_eq!(errs.problems()[0].key, "upstreams[1].timout");
}

#[test]
fn wrong_types_name_the_key() {
    let errs = parse(
        r#"
[limits]
max_connections = "many"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
    )
    .unwrap_err();
    assert_eq!(errs.problems()[0].key, "limits.max_connections");
}

#[test]
fn a_value_of_the_wrong_type_is_never_repeated_in_the_error() {
    // A password made of digits reads as a number (an environment variable does too).
    let errs = parse(
        r#"
[email]
url = "smtp://mail.example.com"
password = 482913
[limits]
max_connections = "plenty-of-them"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
    )
    .unwrap_err();
    let text = errs.to_string();
    assert!(
        keys(&errs).contains(&"email.password".to_string()),
        "{text}"
    );
    assert!(text.contains("found an integer"), "{text}");
    assert!(!text.contains("482913"), "{text}");
    assert!(!text.contains("plenty-of-them"), "{text}");
}

#[test]
fn a_refused_url_is_never_repeated_in_the_error() {
    for (key, url) in [
        ("portal", "https://admin:hunter2@auth.example.com"),
        ("portal", "https://auth.example.com:99999/?token=hunter2"),
    ] {
        let errs = parse(&format!("{MINIMAL}\n[{key}]\nurl = \"{url}\"\n")).unwrap_err();
        let text = errs.to_string();
        assert!(keys(&errs).contains(&"portal.url".to_string()), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    let errs = parse("[[upstreams]]\nurl = \"http://u:hunter2@127.0.0.1:99x9/\"\n").unwrap_err();
    assert!(!errs.to_string().contains("hunter2"), "{errs}");
}

/// The control socket lives in the store: a path too long for a Unix socket address would let
/// `serve` fail at its last start-up step, and every `user` command after it.
#[test]
fn a_storage_path_too_long_for_the_control_socket_is_refused() {
    let fits = format!("/{}", "d".repeat(78));
    assert!(parse(&format!("[storage]\npath = \"{fits}\"\n{MINIMAL}")).is_ok());
    let long = format!("/{}", "d".repeat(79));
    let errs = parse(&format!("[storage]\npath = \"{long}\"\n{MINIMAL}")).unwrap_err();
    assert_eq!(keys(&errs), ["storage.path"], "{errs}");
    assert!(errs.to_string().contains("at most 79 bytes"), "{errs}");
}

#[test]
fn a_syntax_error_never_quotes_the_line() {
    // A backslash in a generated password is an invalid escape in a basic string.
    let errs = parse(
        r#"
[email]
url = "smtp://mail.example.com"
password = "Tr0ub\dor&3"
"#,
    )
    .unwrap_err();
    let text = errs.to_string();
    assert!(text.contains("line 4"), "{text}");
    assert!(text.contains("invalid escape"), "{text}");
    assert!(!text.contains("Tr0ub"), "{text}");
}

/// Runs `test` while no other test's figment `Jail` can move the working directory, against
/// which relative storage paths are resolved (`Jail` moves it into a directory of its own for
/// as long as it runs, and takes a lock that every `Jail` waits for).
// The closure's error type is figment's own; its size is not ours to change.
#[allow(clippy::result_large_err)]
fn with_steady_working_directory(test: impl FnOnce()) {
    figment::Jail::expect_with(|_jail| {
        test();
        Ok(())
    });
}

#[test]
fn the_key_file_cannot_hide_inside_the_store_behind_a_dot() {
    with_steady_working_directory(the_key_file_behind_a_dot);
}

fn the_key_file_behind_a_dot() {
    for (store, key) in [
        ("data", "data/k"),
        ("data", "./data/k"),
        ("./data", "data/k"),
    ] {
        let errs = parse(&format!(
            "[storage]\npath = \"{store}\"\nkey_file = \"{key}\"\n{MINIMAL}"
        ))
        .unwrap_err();
        assert_eq!(keys(&errs), ["storage.key_file"], "{store} / {key}");
    }
    assert!(
        parse(&format!(
            "[storage]\npath = \"./data\"\nkey_file = \"data.key\"\n{MINIMAL}"
        ))
        .is_ok()
    );
}

#[test]
fn the_key_file_cannot_reach_inside_the_store_another_way() {
    with_steady_working_directory(the_key_file_another_way);
}

fn the_key_file_another_way() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let store = root.join("data");
    std::fs::create_dir(&store).unwrap();
    std::fs::create_dir(root.join("x")).unwrap();
    std::os::unix::fs::symlink(&store, root.join("link")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    for key in [
        root.join("x/../data/k"),
        root.join("link/k"),
        root.join("nothing/../data/k"),
        root.join("data/new/../k"),
    ] {
        let errs = parse(&format!(
            "[storage]\npath = \"{}\"\nkey_file = \"{}\"\n{MINIMAL}",
            store.display(),
            key.display()
        ))
        .unwrap_err();
        assert_eq!(keys(&errs), ["storage.key_file"], "{}", key.display());
    }
    // A relative store path against an absolute key path.
    let errs = parse(&format!(
        "[storage]\npath = \"data-rel\"\nkey_file = \"{}\"\n{MINIMAL}",
        cwd.join("data-rel/k").display()
    ))
    .unwrap_err();
    assert_eq!(keys(&errs), ["storage.key_file"]);
    // Beside the store is fine, even through `..`.
    assert!(
        parse(&format!(
            "[storage]\npath = \"{}\"\nkey_file = \"{}\"\n{MINIMAL}",
            store.display(),
            root.join("data/../data.key").display()
        ))
        .is_ok()
    );
}

#[test]
fn the_audit_trail_keeps_a_bounded_number_of_events() {
    assert_eq!(
        parse("").unwrap().storage.audit_max_events,
        StorageConfig::DEFAULT_AUDIT_MAX_EVENTS
    );
    let c = parse("[storage]\naudit_max_events = 5000\n").unwrap();
    assert_eq!(c.storage.audit_max_events, 5000);
    for bad in ["0", "999", "-1"] {
        let errs = parse(&format!("[storage]\naudit_max_events = {bad}\n")).unwrap_err();
        assert_eq!(keys(&errs), ["storage.audit_max_events"], "{bad}");
    }
}

#[test]
fn no_upstream_is_valid_and_at_most_one_default() {
    // Forward-auth only: nothing to proxy to.
    let c = parse("").unwrap();
    assert!(c.upstreams.is_empty());
    let errs = parse(
        r#"
[[upstreams]]
url = "http://127.0.0.1:3000"
[[upstreams]]
url = "http://127.0.0.1:3001"
"#,
    )
    .unwrap_err();
    assert_eq!(keys(&errs), vec!["upstreams[1].host"]);
}

#[test]
fn two_upstreams_for_one_host_are_refused() {
    let errs = parse(
        r#"
[[upstreams]]
host = "app.example.com"
url = "http://127.0.0.1:3000"
[[upstreams]]
host = "*.example.com"
url = "http://127.0.0.1:3001"
[[upstreams]]
host = "App.Example.com"
url = "http://127.0.0.1:3002"
"#,
    )
    .unwrap_err();
    assert_eq!(keys(&errs), vec!["upstreams[2].host"]);
    assert!(
        errs.to_string()
            .contains("upstreams[0] already serves app.example.com")
    );
}

#[test]
fn email_codes_by_default_need_a_way_to_send_them() {
    let errs = parse(&format!("{MINIMAL}\n[mfa]\nemail_default = true\n")).unwrap_err();
    assert_eq!(keys(&errs), vec!["mfa.email_default"]);
    parse(&format!(
        "{MINIMAL}\n[mfa]\nemail_default = true\n[email]\ntransport = \"file\"\ndir = \"/tmp/outbox\"\nfrom = \"gate@example.com\"\n"
    ))
    .unwrap();
}

#[test]
fn form_memory_holds_at_least_one_form() {
    let errs = parse(&format!(
        "{MINIMAL}\n[limits]\nmax_form_memory_bytes = 1000\n"
    ))
    .unwrap_err();
    assert_eq!(keys(&errs), vec!["limits.max_form_memory_bytes"]);
    let c = parse(&format!(
        "{MINIMAL}\n[limits]\nmax_form_memory_bytes = 65536\n"
    ))
    .unwrap();
    assert_eq!(c.limits.max_form_memory_bytes, 65536);
    assert_eq!(
        parse(MINIMAL).unwrap().limits.max_form_memory_bytes,
        64 << 20
    );
}

#[test]
fn tls_listener_needs_certificate_and_key() {
    let errs = parse(
        r#"
[server]
tls_listen = "127.0.0.1:8443"
tls_cert = "cert.pem"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
    )
    .unwrap_err();
    assert_eq!(keys(&errs), vec!["server.tls_key"]);
}

#[test]
#[allow(clippy::result_large_err)]
fn environment_overrides_file_values() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "stepgate.toml",
            r#"
[server]
listen = "127.0.0.1:8080"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
        )?;
        jail.set_env("STEPGATE_SERVER__LISTEN", "127.0.0.1:9999");
        jail.set_env("STEPGATE_CONFIG", "stepgate.toml");
        jail.set_env("STEPGATE_PORTAL__TITLE", "Acme Console");
        let c = load(std::path::Path::new("stepgate.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.server.listen, Some("127.0.0.1:9999".parse().unwrap()));
        assert_eq!(c.portal.title, "Acme Console");
        Ok(())
    });
}

#[test]
fn missing_file_is_a_clear_error() {
    let errs = load(std::path::Path::new("/nonexistent/stepgate.toml")).unwrap_err();
    assert!(errs.to_string().contains("/nonexistent/stepgate.toml"));
}

#[test]
fn portal_accent_is_validated_and_normalised() {
    let ok = parse(
        r##"
[portal]
accent = "#A3c"
[[upstreams]]
url = "http://127.0.0.1:3000"
"##,
    )
    .unwrap();
    assert_eq!(ok.portal.accent.as_deref(), Some("#aa33cc"));
    for bad in ["red", "#12345", "#ggg", "#fff;}body{", "123456"] {
        let errs = parse(&format!(
            "[portal]\naccent = {bad:?}\n[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n"
        ))
        .unwrap_err();
        assert_eq!(keys(&errs), vec!["portal.accent"], "{bad}");
    }
}

#[test]
fn portal_logo_is_read_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("logo.svg");
    std::fs::write(&logo, "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
    let c = parse(&format!(
        "[portal]\nlogo = {:?}\n[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n",
        logo.display().to_string()
    ))
    .unwrap();
    let got = c.portal.logo.unwrap();
    assert_eq!(got.content_type, "image/svg+xml");
    assert!(got.bytes.starts_with(b"<svg"));

    let missing = dir.path().join("none.png");
    let text = dir.path().join("logo.txt");
    std::fs::write(&text, "x").unwrap();
    for path in [missing, text] {
        let errs = parse(&format!(
            "[portal]\nlogo = {:?}\n[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n",
            path.display().to_string()
        ))
        .unwrap_err();
        assert_eq!(keys(&errs), vec!["portal.logo"], "{}", path.display());
    }
}

#[test]
fn connection_memory_settings_have_defaults_and_are_checked() {
    let c = parse(
        r#"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
    )
    .unwrap();
    assert_eq!(c.limits.idle_release_after, Duration::from_secs(2));
    assert_eq!(c.upstreams[0].max_idle_connections, 128);

    let c = parse(
        r#"
[limits]
idle_release_after = "250ms"
[[upstreams]]
url = "http://127.0.0.1:3000"
max_idle_connections = 0
"#,
    )
    .unwrap();
    assert_eq!(c.limits.idle_release_after, Duration::from_millis(250));
    assert_eq!(c.upstreams[0].max_idle_connections, 0);

    let errs = parse(
        r#"
[limits]
idle_release_after = "0s"
[[upstreams]]
url = "http://127.0.0.1:3000"
max_idle_connections = 1000000
"#,
    )
    .unwrap_err();
    assert_eq!(
        keys(&errs),
        vec![
            "limits.idle_release_after",
            "upstreams[0].max_idle_connections"
        ]
    );
}

#[test]
fn upstream_connection_bound_has_a_default_and_is_checked() {
    let upstream = |extra: &str| format!("[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n{extra}");
    let c = parse(&upstream("")).unwrap();
    assert_eq!(c.upstreams[0].max_connections, 1024);
    let c = parse(&upstream("max_connections = 8")).unwrap();
    assert_eq!(c.upstreams[0].max_connections, 8);
    for bad in ["0", "1000001", "-1"] {
        let errs = parse(&upstream(&format!("max_connections = {bad}"))).unwrap_err();
        assert_eq!(keys(&errs), vec!["upstreams[0].max_connections"], "{bad}");
    }
}

#[test]
fn workers_default_to_the_cpus_and_are_checked() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let c = parse(
        r#"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
    )
    .unwrap();
    assert_eq!(c.server.workers, cpus);

    let c = parse(
        r#"
[server]
workers = 3
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
    )
    .unwrap();
    assert_eq!(c.server.workers, 3);

    for bad in ["0", "1025", "-1", "\"two\""] {
        let errs = parse(&format!(
            "[server]\nworkers = {bad}\n[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n"
        ))
        .unwrap_err();
        assert_eq!(keys(&errs), vec!["server.workers"], "workers = {bad}");
    }
}

#[test]
fn tunnel_idle_timeout_follows_idle_timeout_unless_set_and_is_checked() {
    let c = parse(
        r#"
[limits]
idle_timeout = "5s"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
    )
    .unwrap();
    assert_eq!(c.limits.tunnel_idle_timeout, Duration::from_secs(5));

    let c = parse(
        r#"
[limits]
idle_timeout = "5s"
tunnel_idle_timeout = "10m"
[[upstreams]]
url = "http://127.0.0.1:3000"
"#,
    )
    .unwrap();
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(5));
    assert_eq!(c.limits.tunnel_idle_timeout, Duration::from_secs(600));

    for bad in ["\"0s\"", "\"soon\""] {
        let errs = parse(&format!(
            "[limits]\ntunnel_idle_timeout = {bad}\n[[upstreams]]\nurl = \"http://127.0.0.1:3000\"\n"
        ))
        .unwrap_err();
        assert_eq!(keys(&errs), vec!["limits.tunnel_idle_timeout"], "{bad}");
    }
}

#[test]
fn connections_per_client_default_to_an_eighth_of_the_cap_and_stay_within_it() {
    assert_eq!(
        parse(MINIMAL).unwrap().limits.max_connections_per_client,
        1250
    );
    let limits = |lines: &str| parse(&format!("{MINIMAL}\n[limits]\n{lines}\n"));
    let per_client = |lines: &str| limits(lines).unwrap().limits.max_connections_per_client;
    // At least 64, never more than the cap.
    assert_eq!(per_client("max_connections = 100"), 64);
    assert_eq!(per_client("max_connections = 10"), 10);
    assert_eq!(per_client("max_connections = 100000"), 12_500);
    assert_eq!(
        per_client("max_connections = 100\nmax_connections_per_client = 100"),
        100
    );
    assert_eq!(per_client("max_connections_per_client = 3"), 3);

    for (lines, allowed) in [
        ("max_connections_per_client = 0", "10000"),
        ("max_connections_per_client = 10001", "10000"),
        (
            "max_connections = 100\nmax_connections_per_client = 101",
            "100",
        ),
    ] {
        let errs = limits(lines).unwrap_err();
        assert_eq!(
            keys(&errs),
            vec!["limits.max_connections_per_client"],
            "{lines}"
        );
        let text = errs.to_string();
        assert!(
            text.contains(&format!("between 1 and limits.max_connections ({allowed})")),
            "{text}"
        );
    }
}
