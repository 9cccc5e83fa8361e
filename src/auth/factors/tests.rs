//! Behaviour of [`Factors`] over a real store, with a manual clock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::state::TotpParams;
use super::*;
use crate::auth::password::PasswordHash;
use crate::clock::{Clock, ManualClock};

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);
/// 5 s into a 30 s step, so a few seconds either way stay in the same step.
const T0_SECS: i64 = 56_666_667 * 30 + 5;

pub(super) struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: ManualClock,
    pub(super) factors: Arc<Factors>,
    pub(super) alice: User,
}

fn user(name: &str, email: Option<&str>) -> User {
    User {
        username: Username::parse(name).unwrap(),
        display_name: name.into(),
        email: email.map(String::from),
        groups: vec![],
        disabled: false,
        password_hash: PasswordHash::new_unchecked("$argon2id$v=19$x".into()),
        created_at: Timestamp(0),
    }
}

fn store_path(dir: &Path) -> PathBuf {
    dir.join("store")
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join("store.key")
}

fn fixture_with(settings: MfaSettings) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&store_path(dir.path())).unwrap());
    let clock = ManualClock::new(Timestamp(T0_SECS * 1000));
    let alice = user("alice", Some("alice@example.com"));
    store.create_user(&alice).unwrap();
    store
        .create_user(&user("bob", Some("bob@example.com")))
        .unwrap();
    store.create_user(&user("nomail", None)).unwrap();
    let factors = Arc::new(Factors::new(
        store.clone(),
        Arc::new(clock.clone()),
        SecretBox::load_or_create(&key_path(dir.path())).unwrap(),
        settings,
    ));
    Fixture {
        dir,
        store,
        clock,
        factors,
        alice,
    }
}

pub(super) fn fixture() -> Fixture {
    fixture_with(MfaSettings::default())
}

impl Fixture {
    fn name(&self) -> &Username {
        &self.alice.username
    }

    fn now_secs(&self) -> u64 {
        u64::try_from(self.clock.now().as_secs()).unwrap()
    }

    /// The code an authenticator app shows for `e` at the clock's time plus `offset` steps.
    fn app_code(&self, e: &TotpEnrolment, offset: i64) -> String {
        let s = &self.factors.settings;
        let params = TotpParams {
            algorithm: s.totp_algorithm,
            digits: s.totp_digits,
            period: s.totp_period.as_secs(),
        };
        let secret = totp_rs::Secret::try_from_base32(&e.secret_base32).unwrap();
        let g = totp::generator(secret.as_bytes(), params, None).unwrap();
        let t = self
            .now_secs()
            .checked_add_signed(offset * params.period as i64)
            .unwrap();
        g.generate(t).to_string()
    }

    /// Enrols TOTP for alice; returns the enrolment and the backup codes.
    fn enrol(&self) -> (TotpEnrolment, Vec<String>) {
        let e = self.factors.begin_totp(&self.alice).unwrap();
        let codes = self
            .factors
            .confirm_totp(&self.alice, &self.app_code(&e, 0))
            .unwrap();
        (e, codes)
    }

    /// Moves to the next time step (same offset inside it).
    fn next_step(&self) {
        self.clock.advance(Duration::from_secs(30));
    }

    fn summary(&self) -> FactorSummary {
        self.factors.summary(&self.alice).unwrap()
    }

    fn verified_phone(&self) {
        self.factors
            .set_phone(self.name(), "+4915112345678")
            .unwrap();
        let code = self
            .factors
            .issue_code(self.name(), Channel::PhoneConfirm)
            .unwrap();
        self.factors
            .confirm_phone(self.name(), code.as_str())
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Summary rules

#[test]
fn a_user_without_factors_has_nothing_enabled() {
    let f = fixture();
    let s = f.summary();
    assert_eq!(s.state, TwoFactorState::NotEnabled);
    assert!(s.methods.is_empty());
    assert_eq!(s.preferred, None);
    assert_eq!(s.backup_codes_remaining, 0);
    assert_eq!(s.enrolled_at, None);
    assert!(!s.email_verification && !s.totp && !s.phone_verified);
    assert_eq!(s.phone, None);
}

#[test]
fn email_is_available_when_the_user_turns_it_on_and_has_an_address() {
    let f = fixture();
    f.factors.set_email_verification(f.name(), true).unwrap();
    let s = f.summary();
    assert_eq!(s.state, TwoFactorState::Enabled);
    assert_eq!(s.methods, [Method::Email]);
    assert_eq!(s.preferred, Some(Method::Email));
    assert!(s.email_verification);

    let nomail = user("nomail", None);
    f.factors
        .set_email_verification(&nomail.username, true)
        .unwrap();
    let s = f.factors.summary(&nomail).unwrap();
    assert!(s.email_verification);
    assert!(s.methods.is_empty());
    assert_eq!(s.state, TwoFactorState::NotEnabled);
}

#[test]
fn email_default_applies_unless_the_user_turned_it_off() {
    let f = fixture_with(MfaSettings {
        email_default: true,
        ..MfaSettings::default()
    });
    assert_eq!(f.summary().methods, [Method::Email]);
    f.factors.set_email_verification(f.name(), false).unwrap();
    let s = f.summary();
    assert!(s.methods.is_empty());
    assert!(!s.email_verification);
    assert_eq!(s.state, TwoFactorState::NotEnabled);
    let nomail = user("nomail", None);
    assert!(f.factors.summary(&nomail).unwrap().methods.is_empty());
}

#[test]
fn totp_takes_over_from_email_as_the_default() {
    let f = fixture_with(MfaSettings {
        email_default: true,
        ..MfaSettings::default()
    });
    assert_eq!(f.summary().preferred, Some(Method::Email));
    f.enrol();
    let s = f.summary();
    assert_eq!(s.preferred, Some(Method::Totp));
    assert_eq!(s.methods, [Method::Totp, Method::Email, Method::Backup]);
}

#[test]
fn preferred_method_must_be_available_and_falls_back_when_it_is_not() {
    let f = fixture();
    f.enrol();
    f.factors.set_email_verification(f.name(), true).unwrap();
    for m in [Method::Sms, Method::Backup] {
        assert!(matches!(
            f.factors.set_preferred(f.name(), m),
            Err(FactorError::MethodUnavailable)
        ));
    }
    f.factors.set_preferred(f.name(), Method::Email).unwrap();
    let s = f.summary();
    assert_eq!(s.preferred, Some(Method::Email));
    assert_eq!(s.methods, [Method::Email, Method::Totp, Method::Backup]);

    f.verified_phone();
    f.factors.set_preferred(f.name(), Method::Sms).unwrap();
    assert_eq!(
        f.summary().methods,
        [Method::Sms, Method::Totp, Method::Email, Method::Backup]
    );
    // A new number waiting for its code leaves SMS, and the preference for it, as they were.
    f.factors.set_phone(f.name(), "+12025550123").unwrap();
    let s = f.summary();
    assert_eq!(s.preferred, Some(Method::Sms));
    assert!(s.phone_verified);
    assert_eq!(s.phone_pending.as_deref(), Some("+12025550123"));
    // Email codes preferred, then turned off: the preference falls back to TOTP.
    f.factors.set_preferred(f.name(), Method::Email).unwrap();
    f.factors.set_email_verification(f.name(), false).unwrap();
    let s = f.summary();
    assert_eq!(s.preferred, Some(Method::Totp));
    assert_eq!(s.methods, [Method::Totp, Method::Sms, Method::Backup]);
}

#[test]
fn set_preferred_for_an_unknown_user_is_an_error() {
    let f = fixture();
    let ghost = Username::parse("ghost").unwrap();
    assert!(matches!(
        f.factors.set_preferred(&ghost, Method::Email),
        Err(FactorError::Store(StoreError::NoSuchUser(_)))
    ));
}

#[test]
fn state_expires_when_the_totp_secret_reaches_max_age_but_stays_usable() {
    let f = fixture();
    let (e, _) = f.enrol();
    let s = f.summary();
    assert_eq!(s.state, TwoFactorState::Enabled);
    assert_eq!(s.enrolled_at, Some(f.clock.now()));
    f.clock.advance(f.factors.settings().totp_max_age);
    assert_eq!(f.summary().state, TwoFactorState::Enabled);
    f.clock.advance(SEC);
    let s = f.summary();
    assert_eq!(s.state, TwoFactorState::Expired);
    assert_eq!(s.methods, [Method::Totp, Method::Backup]);
    f.factors.verify_totp(f.name(), &f.app_code(&e, 0)).unwrap();
    // A new enrolment resets the age.
    f.enrol();
    assert_eq!(f.summary().state, TwoFactorState::Enabled);
}

// ---------------------------------------------------------------------------------------------
// TOTP enrolment

#[test]
fn enrolment_shows_a_160_bit_secret_uri_and_qr() {
    let f = fixture();
    let e = f.factors.begin_totp(&f.alice).unwrap();
    let secret = totp_rs::Secret::try_from_base32(&e.secret_base32).unwrap();
    assert_eq!(secret.as_bytes().len(), 20);
    assert_eq!(
        e.otpauth_uri,
        format!(
            "otpauth://totp/Stepgate:alice?secret={}&issuer=Stepgate",
            e.secret_base32
        )
    );
    assert!(e.qr_svg.contains("<svg"), "{}", &e.qr_svg[..80]);
    assert!(e.qr_svg.ends_with("</svg>"));
    // Pending is not enrolled.
    assert!(!f.factors.has_totp(f.name()).unwrap());
    assert!(matches!(
        f.factors.verify_totp(f.name(), &f.app_code(&e, 0)),
        Err(FactorError::NotEnrolled)
    ));
    // Two enrolments never share a secret.
    let other = f.factors.begin_totp(&f.alice).unwrap();
    assert_ne!(other.secret_base32, e.secret_base32);
}

#[test]
fn otpauth_uri_names_non_default_parameters() {
    let f = fixture_with(MfaSettings {
        issuer: "Example Corp".into(),
        totp_digits: 8,
        totp_period: Duration::from_secs(60),
        totp_algorithm: TotpAlgorithm::Sha256,
        ..MfaSettings::default()
    });
    let e = f.factors.begin_totp(&f.alice).unwrap();
    let uri = &e.otpauth_uri;
    assert!(
        uri.starts_with("otpauth://totp/Example%20Corp:alice?"),
        "{uri}"
    );
    for part in [
        "digits=8",
        "algorithm=SHA256",
        "period=60",
        "issuer=Example%20Corp",
    ] {
        assert!(uri.contains(part), "{part} missing in {uri}");
    }
    // And the parameters are the ones verification uses.
    f.factors
        .confirm_totp(&f.alice, &f.app_code(&e, 0))
        .unwrap();
    assert!(f.factors.has_totp(f.name()).unwrap());
}

#[test]
fn confirm_needs_a_valid_code_of_the_pending_secret() {
    let f = fixture();
    assert!(matches!(
        f.factors.confirm_totp(&f.alice, "123456"),
        Err(FactorError::NoPendingEnrolment)
    ));
    let e = f.factors.begin_totp(&f.alice).unwrap();
    let good = f.app_code(&e, 0);
    let wrong = if good == "000000" { "000001" } else { "000000" };
    assert!(matches!(
        f.factors.confirm_totp(&f.alice, wrong),
        Err(FactorError::InvalidCode)
    ));
    assert!(!f.factors.has_totp(f.name()).unwrap());
    let codes = f.factors.confirm_totp(&f.alice, &good).unwrap();
    assert_eq!(codes.len(), 6);
    let s = f.summary();
    assert!(s.totp);
    assert_eq!(s.backup_codes_remaining, 6);
    assert_eq!(s.methods, [Method::Totp, Method::Backup]);
    // The pending enrolment is consumed.
    assert!(matches!(
        f.factors.confirm_totp(&f.alice, &good),
        Err(FactorError::NoPendingEnrolment)
    ));
}

#[test]
fn rejects_confirming_with_a_replaced_pending_secret() {
    let f = fixture();
    let first = f.factors.begin_totp(&f.alice).unwrap();
    let second = f.factors.begin_totp(&f.alice).unwrap();
    if f.app_code(&first, 0) != f.app_code(&second, 0) {
        assert!(matches!(
            f.factors.confirm_totp(&f.alice, &f.app_code(&first, 0)),
            Err(FactorError::InvalidCode)
        ));
    }
    f.factors
        .confirm_totp(&f.alice, &f.app_code(&second, 0))
        .unwrap();
}

#[test]
fn pending_enrolment_expires_after_15_minutes() {
    let f = fixture();
    let e = f.factors.begin_totp(&f.alice).unwrap();
    f.clock.advance(15 * MIN);
    assert!(matches!(
        f.factors.confirm_totp(&f.alice, &f.app_code(&e, 0)),
        Err(FactorError::Expired)
    ));
    assert!(!f.factors.has_totp(f.name()).unwrap());
    // Housekeeping removes it.
    assert_eq!(f.factors.prune().unwrap(), 1);
    assert!(f.store.get_factors(f.name()).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// TOTP verification and replay

#[test]
fn rejects_replayed_totp_code() {
    let f = fixture();
    let (e, _) = f.enrol();
    f.next_step();
    let code = f.app_code(&e, 0);
    f.factors.verify_totp(f.name(), &code).unwrap();
    assert!(matches!(
        f.factors.verify_totp(f.name(), &code),
        Err(FactorError::Replayed)
    ));
    // Still replayed a few seconds later, within the window.
    f.clock.advance(20 * SEC);
    assert!(matches!(
        f.factors.verify_totp(f.name(), &code),
        Err(FactorError::Replayed)
    ));
    f.clock.advance(10 * SEC);
    f.factors.verify_totp(f.name(), &f.app_code(&e, 0)).unwrap();
}

#[test]
fn rejects_replay_of_the_code_used_to_confirm() {
    let f = fixture();
    let e = f.factors.begin_totp(&f.alice).unwrap();
    let code = f.app_code(&e, 0);
    f.factors.confirm_totp(&f.alice, &code).unwrap();
    assert!(matches!(
        f.factors.verify_totp(f.name(), &code),
        Err(FactorError::Replayed)
    ));
}

#[test]
fn rejects_an_older_step_after_a_newer_one_was_used() {
    let f = fixture();
    let (e, _) = f.enrol();
    f.clock.advance(5 * MIN);
    let previous = f.app_code(&e, -1);
    let next = f.app_code(&e, 1);
    f.factors.verify_totp(f.name(), &next).unwrap();
    let current = f.app_code(&e, 0);
    for old in [previous, current] {
        assert!(matches!(
            f.factors.verify_totp(f.name(), &old),
            Err(FactorError::Replayed)
        ));
    }
}

#[test]
fn accepts_skew_steps_either_side_and_nothing_beyond() {
    let f = fixture();
    let (e, _) = f.enrol();
    f.clock.advance(10 * MIN);
    for offset in [-3, -2, 2, 3] {
        let code = f.app_code(&e, offset);
        // Skip the (1 in a million) case of a code that also matches a step inside the window.
        if (-1..=1).any(|o| f.app_code(&e, o) == code) {
            continue;
        }
        assert!(
            matches!(
                f.factors.verify_totp(f.name(), &code),
                Err(FactorError::InvalidCode)
            ),
            "offset {offset}"
        );
    }
    f.factors
        .verify_totp(f.name(), &f.app_code(&e, -1))
        .unwrap();
    f.next_step();
    f.next_step();
    // The step before now is the one just after the used one.
    f.factors
        .verify_totp(f.name(), &f.app_code(&e, -1))
        .unwrap();
}

#[test]
fn skew_zero_accepts_only_the_current_step() {
    let f = fixture_with(MfaSettings {
        totp_skew: 0,
        ..MfaSettings::default()
    });
    let (e, _) = f.enrol();
    f.clock.advance(10 * MIN);
    let previous = f.app_code(&e, -1);
    if previous != f.app_code(&e, 0) {
        assert!(matches!(
            f.factors.verify_totp(f.name(), &previous),
            Err(FactorError::InvalidCode)
        ));
    }
    f.factors.verify_totp(f.name(), &f.app_code(&e, 0)).unwrap();
}

#[test]
fn rejects_concurrent_double_use_of_one_totp_code() {
    let f = fixture();
    let (e, _) = f.enrol();
    for round in 0..5 {
        f.next_step();
        let code = f.app_code(&e, 0);
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let factors = f.factors.clone();
                let barrier = barrier.clone();
                let name = f.name().clone();
                let code = code.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    factors.verify_totp(&name, &code)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(()) | Err(FactorError::Replayed))),
            "{results:?}"
        );
    }
}

#[test]
fn used_step_survives_reopening_the_store() {
    let f = fixture();
    let (e, _) = f.enrol();
    f.next_step();
    let code = f.app_code(&e, 0);
    f.factors.verify_totp(f.name(), &code).unwrap();
    let Fixture {
        dir,
        store,
        clock,
        factors,
        alice,
    } = f;
    drop(factors);
    drop(store);
    let store = Arc::new(Store::open(&store_path(dir.path())).unwrap());
    let factors = Factors::new(
        store,
        Arc::new(clock.clone()),
        SecretBox::load_or_create(&key_path(dir.path())).unwrap(),
        MfaSettings::default(),
    );
    assert!(matches!(
        factors.verify_totp(&alice.username, &code),
        Err(FactorError::Replayed)
    ));
    let s = factors.summary(&alice).unwrap();
    assert!(s.totp);
    assert_eq!(s.backup_codes_remaining, 6);
    clock.advance(Duration::from_secs(30));
    let secret = totp_rs::Secret::try_from_base32(&e.secret_base32).unwrap();
    let g = totp::generator(
        secret.as_bytes(),
        TotpParams {
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            period: 30,
        },
        None,
    )
    .unwrap();
    let fresh = g
        .generate(u64::try_from(clock.now().as_secs()).unwrap())
        .to_string();
    factors.verify_totp(&alice.username, &fresh).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Secrets at rest

fn files_under(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(files_under(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn store_without_the_key_file_reveals_no_secret() {
    let f = fixture();
    let (e, backup) = f.enrol();
    let sms_code = {
        f.factors.set_phone(f.name(), "+4915112345678").unwrap();
        f.factors
            .issue_code(f.name(), Channel::PhoneConfirm)
            .unwrap()
    };
    f.store.flush().unwrap();
    let raw_secret = totp_rs::Secret::try_from_base32(&e.secret_base32)
        .unwrap()
        .as_bytes()
        .to_vec();
    let Fixture {
        dir,
        store,
        factors,
        ..
    } = f;
    drop(factors);
    drop(store);
    let bytes = files_under(&store_path(dir.path()));
    assert!(contains(&bytes, b"alice"), "sanity: the store is readable");
    assert!(!contains(&bytes, e.secret_base32.as_bytes()));
    assert!(!contains(&bytes, e.secret_base32.to_lowercase().as_bytes()));
    assert!(!contains(&bytes, &raw_secret));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw_secret);
    assert!(!contains(&bytes, &b64.as_bytes()[..20]));
    for code in &backup {
        assert!(!contains(&bytes, code.as_bytes()), "{code}");
        assert!(
            !contains(&bytes, code.replace('-', "").as_bytes()),
            "{code}"
        );
    }
    // Six digits may occur by chance in binary data; the JSON record never holds them quoted.
    assert!(!contains(
        &bytes,
        format!("\"{}\"", sms_code.as_str()).as_bytes()
    ));
}

#[test]
fn a_copy_of_the_store_with_another_key_cannot_verify() {
    let f = fixture();
    let (e, _) = f.enrol();
    f.next_step();
    let code = f.app_code(&e, 0);
    let Fixture {
        dir,
        store,
        clock,
        factors,
        alice,
    } = f;
    drop(factors);
    drop(store);
    let store = Arc::new(Store::open(&store_path(dir.path())).unwrap());
    let other_key = dir.path().join("other.key");
    let factors = Factors::new(
        store,
        Arc::new(clock),
        SecretBox::load_or_create(&other_key).unwrap(),
        MfaSettings::default(),
    );
    assert!(matches!(
        factors.verify_totp(&alice.username, &code),
        Err(FactorError::Crypto(_))
    ));
}

#[test]
fn rejects_a_totp_record_copied_to_another_user() {
    let f = fixture();
    let (e, _) = f.enrol();
    f.next_step();
    let bob = Username::parse("bob").unwrap();
    let raw = f.store.get_raw_factors_for_test(f.name()).unwrap();
    f.store.put_raw_factors_for_test(&bob, &raw);
    assert!(matches!(
        f.factors.verify_totp(&bob, &f.app_code(&e, 0)),
        Err(FactorError::Crypto(_))
    ));
    // Backup code hashes are bound to the user too.
    let codes = f.factors.regenerate_backup(f.name()).unwrap();
    let raw = f.store.get_raw_factors_for_test(f.name()).unwrap();
    f.store.put_raw_factors_for_test(&bob, &raw);
    assert!(matches!(
        f.factors.verify_backup(&bob, &codes[0]),
        Err(FactorError::InvalidCode)
    ));
}

#[test]
fn debug_output_holds_no_secret() {
    let f = fixture();
    let e = f.factors.begin_totp(&f.alice).unwrap();
    assert_eq!(format!("{e:?}"), "TotpEnrolment([redacted])");
    let code = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    assert_eq!(format!("{code:?}"), "[redacted]");
    let shown = format!("{:?}", f.factors);
    assert!(!shown.contains(&e.secret_base32));
    let record = format!("{:?}", f.store.get_factors(f.name()).unwrap());
    assert!(record.contains("[redacted]"), "{record}");
    let code_state = format!(
        "{:?}",
        f.store.get_code_state(f.name(), Channel::Email).unwrap()
    );
    assert!(!code_state.contains(code.as_str()), "{code_state}");
}

// ---------------------------------------------------------------------------------------------
// Backup codes

#[test]
fn each_backup_code_works_once() {
    let f = fixture();
    let (_, codes) = f.enrol();
    assert_eq!(codes.len(), 6);
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);
    for (i, code) in codes.iter().enumerate() {
        assert_eq!(f.factors.verify_backup(f.name(), code).unwrap(), 5 - i);
        assert!(matches!(
            f.factors.verify_backup(f.name(), code),
            Err(FactorError::InvalidCode)
        ));
    }
    let s = f.summary();
    assert_eq!(s.backup_codes_remaining, 0);
    assert_eq!(s.methods, [Method::Totp]);
}

#[test]
fn backup_input_ignores_case_spaces_and_dashes() {
    let f = fixture_with(MfaSettings {
        backup_codes: 3,
        ..MfaSettings::default()
    });
    let (_, codes) = f.enrol();
    assert_eq!(codes.len(), 3);
    let shouted = codes[0].to_uppercase().replace('-', " ");
    assert_eq!(f.factors.verify_backup(f.name(), &shouted).unwrap(), 2);
    let squashed = format!(" {} ", codes[1].replace('-', ""));
    assert_eq!(f.factors.verify_backup(f.name(), &squashed).unwrap(), 1);
    assert!(matches!(
        f.factors.verify_backup(f.name(), "not a code"),
        Err(FactorError::InvalidCode)
    ));
}

#[test]
fn regenerating_backup_codes_voids_the_old_set() {
    let f = fixture();
    let (_, old) = f.enrol();
    let new = f.factors.regenerate_backup(f.name()).unwrap();
    assert_eq!(new.len(), 6);
    for code in &old {
        assert!(matches!(
            f.factors.verify_backup(f.name(), code),
            Err(FactorError::InvalidCode)
        ));
    }
    assert_eq!(f.factors.verify_backup(f.name(), &new[0]).unwrap(), 5);
}

#[test]
fn backup_codes_need_totp() {
    let f = fixture();
    assert!(matches!(
        f.factors.regenerate_backup(f.name()),
        Err(FactorError::NotEnrolled)
    ));
    assert!(matches!(
        f.factors.verify_backup(f.name(), "abcde-fghjk"),
        Err(FactorError::NotEnrolled)
    ));
}

#[test]
fn rejects_concurrent_double_use_of_one_backup_code() {
    let f = fixture();
    let (_, codes) = f.enrol();
    for code in codes.iter().take(3) {
        let barrier = Arc::new(Barrier::new(6));
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let factors = f.factors.clone();
                let barrier = barrier.clone();
                let name = f.name().clone();
                let code = code.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    factors.verify_backup(&name, &code)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
    }
    assert_eq!(f.summary().backup_codes_remaining, 3);
}

// ---------------------------------------------------------------------------------------------
// One-time codes

#[test]
fn a_one_time_code_is_six_digits_and_single_use() {
    let f = fixture();
    let code = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    assert_eq!(code.as_str().len(), 6);
    assert!(code.as_str().bytes().all(|b| b.is_ascii_digit()));
    f.factors
        .verify_code(f.name(), Channel::Email, code.as_str())
        .unwrap();
    assert!(matches!(
        f.factors
            .verify_code(f.name(), Channel::Email, code.as_str()),
        Err(FactorError::NoCode)
    ));
}

#[test]
fn an_email_code_is_bound_to_the_address_it_went_to() {
    let f = fixture();
    let set_email = |email: Option<&str>| {
        f.store
            .modify_user(f.name(), |u| u.email = email.map(String::from))
            .unwrap();
    };
    // Sent to the old address, typed after the address changed: no match.
    let code = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    set_email(Some("alice@new.example"));
    assert!(matches!(
        f.factors
            .verify_code(f.name(), Channel::Email, code.as_str()),
        Err(FactorError::InvalidCode)
    ));
    // A code for the new address works, and says where it must go.
    f.clock.advance(Duration::from_secs(3600));
    let (code, to) = f.factors.issue_code_to(f.name(), Channel::Email).unwrap();
    assert_eq!(to, "alice@new.example");
    f.factors
        .verify_code(f.name(), Channel::Email, code.as_str())
        .unwrap();
    // No address: no code, and none can be checked.
    set_email(None);
    f.clock.advance(Duration::from_secs(3600));
    assert!(matches!(
        f.factors.issue_code(f.name(), Channel::Email),
        Err(FactorError::MethodUnavailable)
    ));
    assert!(matches!(
        f.factors.verify_code(f.name(), Channel::Email, "123456"),
        Err(FactorError::MethodUnavailable)
    ));
}

#[test]
fn a_code_is_bound_to_its_channel_and_user() {
    let f = fixture();
    f.verified_phone();
    let code = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    assert!(matches!(
        f.factors.verify_code(f.name(), Channel::Sms, code.as_str()),
        Err(FactorError::NoCode)
    ));
    let bob = Username::parse("bob").unwrap();
    let bobs = f.factors.issue_code(&bob, Channel::Email).unwrap();
    if bobs != code {
        assert!(matches!(
            f.factors
                .verify_code(f.name(), Channel::Email, bobs.as_str()),
            Err(FactorError::InvalidCode)
        ));
    }
    f.factors
        .verify_code(f.name(), Channel::Email, &format!(" {} ", code.as_str()))
        .unwrap();
}

#[test]
fn wrong_tries_are_capped_then_the_code_is_void() {
    let f = fixture();
    let code = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    let wrong = if code.as_str() == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..4 {
        assert!(matches!(
            f.factors.verify_code(f.name(), Channel::Email, wrong),
            Err(FactorError::InvalidCode)
        ));
    }
    assert!(matches!(
        f.factors.verify_code(f.name(), Channel::Email, wrong),
        Err(FactorError::TooManyAttempts)
    ));
    // Even the right code is refused now.
    assert!(matches!(
        f.factors
            .verify_code(f.name(), Channel::Email, code.as_str()),
        Err(FactorError::NoCode)
    ));
}

#[test]
fn a_code_expires_after_code_ttl() {
    let f = fixture();
    let code = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    f.clock.advance(10 * MIN);
    assert!(matches!(
        f.factors
            .verify_code(f.name(), Channel::Email, code.as_str()),
        Err(FactorError::Expired)
    ));
    // Just before expiry it works.
    let f = fixture();
    let code = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    f.clock.advance(10 * MIN - SEC);
    f.factors
        .verify_code(f.name(), Channel::Email, code.as_str())
        .unwrap();
}

#[test]
fn only_the_newest_code_is_valid() {
    let f = fixture();
    let first = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    f.clock.advance(MIN);
    let second = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    if first != second {
        assert!(matches!(
            f.factors
                .verify_code(f.name(), Channel::Email, first.as_str()),
            Err(FactorError::InvalidCode)
        ));
    }
    f.factors
        .verify_code(f.name(), Channel::Email, second.as_str())
        .unwrap();
}

#[test]
fn resending_waits_for_the_cooldown() {
    let f = fixture();
    f.factors.issue_code(f.name(), Channel::Email).unwrap();
    f.clock.advance(20 * SEC);
    match f.factors.issue_code(f.name(), Channel::Email) {
        Err(FactorError::Cooldown { retry_after }) => assert_eq!(retry_after, 40 * SEC),
        other => panic!("{other:?}"),
    }
    // Channels are counted separately.
    f.factors.set_phone(f.name(), "+4915112345678").unwrap();
    f.factors
        .issue_code(f.name(), Channel::PhoneConfirm)
        .unwrap();
    f.clock.advance(40 * SEC);
    f.factors.issue_code(f.name(), Channel::Email).unwrap();
}

#[test]
fn sends_are_limited_per_rolling_hour() {
    let f = fixture();
    for _ in 0..5 {
        f.factors.issue_code(f.name(), Channel::Email).unwrap();
        f.clock.advance(2 * MIN);
    }
    // Five sends at T0, +2m, ..., +8m; now is +10m.
    match f.factors.issue_code(f.name(), Channel::Email) {
        Err(FactorError::HourlyLimit { retry_after }) => assert_eq!(retry_after, 50 * MIN),
        other => panic!("{other:?}"),
    }
    f.clock.advance(50 * MIN - SEC);
    assert!(matches!(
        f.factors.issue_code(f.name(), Channel::Email),
        Err(FactorError::HourlyLimit { .. })
    ));
    f.clock.advance(SEC);
    f.factors.issue_code(f.name(), Channel::Email).unwrap();
    // The limit holds for the next one too: the second send of the hour is still inside.
    f.clock.advance(MIN);
    match f.factors.issue_code(f.name(), Channel::Email) {
        Err(FactorError::HourlyLimit { retry_after }) => assert_eq!(retry_after, MIN),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_concurrent_double_use_of_one_code() {
    let f = fixture();
    let code = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let factors = f.factors.clone();
            let barrier = barrier.clone();
            let name = f.name().clone();
            let code = code.as_str().to_string();
            std::thread::spawn(move || {
                barrier.wait();
                factors.verify_code(&name, Channel::Email, &code)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(FactorError::NoCode))),
        "{results:?}"
    );
}

#[test]
fn codes_survive_reopening_the_store() {
    let f = fixture();
    let code = f.factors.issue_code(f.name(), Channel::Email).unwrap();
    let Fixture {
        dir,
        store,
        clock,
        factors,
        alice,
    } = f;
    drop(factors);
    drop(store);
    let store = Arc::new(Store::open(&store_path(dir.path())).unwrap());
    let factors = Factors::new(
        store,
        Arc::new(clock),
        SecretBox::load_or_create(&key_path(dir.path())).unwrap(),
        MfaSettings::default(),
    );
    assert!(matches!(
        factors.issue_code(&alice.username, Channel::Email),
        Err(FactorError::Cooldown { .. })
    ));
    factors
        .verify_code(&alice.username, Channel::Email, code.as_str())
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Phone

#[test]
fn sms_needs_a_confirmed_phone() {
    let f = fixture();
    assert!(matches!(
        f.factors.issue_code(f.name(), Channel::Sms),
        Err(FactorError::MethodUnavailable)
    ));
    assert!(matches!(
        f.factors.set_phone(f.name(), "0151 1234"),
        Err(FactorError::InvalidPhone)
    ));
    assert_eq!(
        f.factors.set_phone(f.name(), "+49 151-1234 5678").unwrap(),
        "+4915112345678"
    );
    let s = f.summary();
    assert_eq!(s.phone.as_deref(), Some("+4915112345678"));
    assert!(!s.phone_verified);
    assert!(s.methods.is_empty());
    assert!(matches!(
        f.factors.issue_code(f.name(), Channel::Sms),
        Err(FactorError::MethodUnavailable)
    ));
    let code = f
        .factors
        .issue_code(f.name(), Channel::PhoneConfirm)
        .unwrap();
    f.factors.confirm_phone(f.name(), code.as_str()).unwrap();
    let s = f.summary();
    assert!(s.phone_verified);
    assert_eq!(s.methods, [Method::Sms]);
    assert_eq!(s.preferred, Some(Method::Sms));
    let sms = f.factors.issue_code(f.name(), Channel::Sms).unwrap();
    f.factors
        .verify_code(f.name(), Channel::Sms, sms.as_str())
        .unwrap();
}

/// A confirmation code proves only the number it was sent to: once another number is entered,
/// it confirms nothing, whether or not a verified phone stays in use meanwhile.
#[test]
fn rejects_confirming_a_new_number_with_a_code_sent_to_the_old_one() {
    for beside_a_verified_phone in [false, true] {
        let f = fixture();
        if beside_a_verified_phone {
            f.verified_phone();
            f.clock.advance(2 * MIN);
        }
        f.factors.set_phone(f.name(), "+12025550123").unwrap();
        let code = f
            .factors
            .issue_code(f.name(), Channel::PhoneConfirm)
            .unwrap();
        f.factors.set_phone(f.name(), "+33612345678").unwrap();
        assert!(matches!(
            f.factors.confirm_phone(f.name(), code.as_str()),
            Err(FactorError::InvalidCode)
        ));
        let s = f.summary();
        assert_eq!(s.phone_verified, beside_a_verified_phone);
        if beside_a_verified_phone {
            assert_eq!(s.phone.as_deref(), Some("+4915112345678"));
            assert_eq!(s.phone_pending.as_deref(), Some("+33612345678"));
        }
    }
}

/// A new number entered beside a verified phone waits for its own code: until then the
/// verified phone keeps receiving SMS codes (a typo or a failed send must not leave the
/// password alone), and the new number replaces it only once confirmed.
#[test]
fn a_new_number_waits_beside_the_verified_phone_until_confirmed() {
    let f = fixture();
    f.verified_phone();
    f.factors.set_phone(f.name(), "+12025550123").unwrap();
    let s = f.summary();
    assert_eq!(s.phone.as_deref(), Some("+4915112345678"));
    assert!(s.phone_verified);
    assert_eq!(s.phone_pending.as_deref(), Some("+12025550123"));
    assert_eq!(s.methods, [Method::Sms], "SMS codes still work");
    assert_eq!(s.state, TwoFactorState::Enabled);
    // A login code still goes to the verified number and works.
    let sms = f.factors.issue_code(f.name(), Channel::Sms).unwrap();
    f.factors
        .verify_code(f.name(), Channel::Sms, sms.as_str())
        .unwrap();

    // The confirmation code is bound to the new number; once it is back, the new number is
    // the phone.
    f.clock.advance(2 * MIN);
    let code = f
        .factors
        .issue_code(f.name(), Channel::PhoneConfirm)
        .unwrap();
    f.factors.confirm_phone(f.name(), code.as_str()).unwrap();
    let s = f.summary();
    assert_eq!(s.phone.as_deref(), Some("+12025550123"));
    assert!(s.phone_verified);
    assert_eq!(s.phone_pending, None);
    assert_eq!(
        f.factors.verified_phone(f.name()).unwrap().as_deref(),
        Some("+12025550123")
    );
}

#[test]
fn confirm_phone_without_a_phone_is_refused() {
    let f = fixture();
    assert!(matches!(
        f.factors.confirm_phone(f.name(), "123456"),
        Err(FactorError::NoPendingEnrolment)
    ));
}

// ---------------------------------------------------------------------------------------------
// Disabling

#[test]
fn disable_all_wipes_every_factor_and_outstanding_code() {
    let f = fixture();
    let (e, backup) = f.enrol();
    f.factors.set_email_verification(f.name(), true).unwrap();
    f.verified_phone();
    f.factors.set_preferred(f.name(), Method::Sms).unwrap();
    f.factors.begin_totp(&f.alice).unwrap();
    let email_code = f.factors.issue_code(f.name(), Channel::Email).unwrap();

    f.factors.disable_all(f.name()).unwrap();

    assert!(f.store.get_factors(f.name()).unwrap().is_empty());
    let s = f.summary();
    assert_eq!(s.state, TwoFactorState::NotEnabled);
    assert!(s.methods.is_empty());
    assert_eq!(s.preferred, None);
    assert_eq!(s.phone, None);
    assert!(!s.totp && !s.email_verification && !s.phone_verified);
    assert_eq!(s.backup_codes_remaining, 0);
    assert!(!f.factors.has_totp(f.name()).unwrap());
    f.next_step();
    assert!(matches!(
        f.factors.verify_totp(f.name(), &f.app_code(&e, 0)),
        Err(FactorError::NotEnrolled)
    ));
    assert!(matches!(
        f.factors.verify_backup(f.name(), &backup[0]),
        Err(FactorError::NotEnrolled)
    ));
    assert!(matches!(
        f.factors.confirm_totp(&f.alice, &f.app_code(&e, 0)),
        Err(FactorError::NoPendingEnrolment)
    ));
    assert!(matches!(
        f.factors
            .verify_code(f.name(), Channel::Email, email_code.as_str()),
        Err(FactorError::NoCode)
    ));
    for channel in [Channel::Email, Channel::Sms, Channel::PhoneConfirm] {
        assert_eq!(
            f.store.get_code_state(f.name(), channel).unwrap().current,
            None
        );
    }
    // Send limits are not reset by disabling.
    assert!(matches!(
        f.factors.issue_code(f.name(), Channel::Email),
        Err(FactorError::Cooldown { .. })
    ));
    // Other users are untouched.
    let bob = Username::parse("bob").unwrap();
    f.factors.set_email_verification(&bob, true).unwrap();
    f.factors.disable_all(f.name()).unwrap();
    assert_eq!(
        f.store.get_factors(&bob).unwrap().email_verification,
        Some(true)
    );
}

#[test]
fn disable_all_deletes_unreadable_code_records_and_keeps_the_readable_sends() {
    let f = fixture();
    f.factors.set_email_verification(f.name(), true).unwrap();
    f.factors.issue_code(f.name(), Channel::Email).unwrap();
    // A channel this version does not know, and a damaged record of a known one.
    f.store.put_raw_code_for_test(b"alice\0pigeon", b"{}");
    f.store.put_raw_code_for_test(b"alice\0sms", b"{\"V1\":");

    f.factors.disable_all(f.name()).unwrap();

    let left = f.store.code_channels_of_user(f.name()).unwrap();
    assert_eq!(left.readable, [Channel::Email]);
    assert!(left.unreadable.is_empty());
    assert!(f.store.get_factors(f.name()).unwrap().is_empty());
    assert!(matches!(
        f.factors.issue_code(f.name(), Channel::Email),
        Err(FactorError::Cooldown { .. })
    ));
}

#[test]
fn prune_drops_stale_code_state() {
    let f = fixture();
    f.factors.issue_code(f.name(), Channel::Email).unwrap();
    assert_eq!(f.factors.prune().unwrap(), 0);
    f.clock.advance(61 * MIN);
    assert_eq!(f.factors.prune().unwrap(), 1);
    assert!(
        f.store
            .get_code_state(f.name(), Channel::Email)
            .unwrap()
            .is_empty()
    );
    assert!(f.store.list_code_states().unwrap().readable.is_empty());
}

#[test]
fn prune_leaves_unreadable_factors_alone_and_prunes_the_others() {
    let f = fixture();
    f.factors.issue_code(f.name(), Channel::Email).unwrap();
    let bob = Username::parse("bob").unwrap();
    f.store.put_raw_factors_for_test(&bob, b"{\"V1\":");
    f.clock.advance(61 * MIN);
    assert_eq!(f.factors.prune().unwrap(), 1);
    assert!(f.store.list_code_states().unwrap().readable.is_empty());
    // Bob's record is still there, unread and untouched: deleting it would drop his factors.
    assert_eq!(
        f.store.get_raw_factors_for_test(&bob).as_deref(),
        Some(b"{\"V1\":".as_slice())
    );
}

/// A pending authenticator app for alice: the right code now, and a wrong one.
fn begun(f: &Fixture) -> (String, &'static str) {
    let e = f.factors.begin_totp(&f.alice).unwrap();
    let right = f.app_code(&e, 0);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    (right, wrong)
}

/// Guessing the code of a pending authenticator app is bounded like any one-time code:
/// `code_max_attempts` confirmations (5 by default), counted before each is judged, then the
/// set-up is void and starts again. A right code within the limit still confirms.
#[test]
fn a_pending_secret_takes_a_bounded_number_of_confirmations() {
    for (wrong_tries, confirms) in [(4, true), (5, false)] {
        let f = fixture();
        let (right, wrong) = begun(&f);
        for _ in 0..wrong_tries {
            assert!(matches!(
                f.factors.confirm_totp(&f.alice, wrong),
                Err(FactorError::InvalidCode)
            ));
        }
        let last = f.factors.confirm_totp(&f.alice, &right);
        if confirms {
            assert!(last.is_ok(), "{wrong_tries} wrong tries: {last:?}");
            continue;
        }
        // Past the limit even the right code is refused: the secret is void.
        assert!(matches!(last, Err(FactorError::NoPendingEnrolment)));
        assert!(
            f.store
                .get_factors(f.name())
                .unwrap()
                .pending_totp
                .is_none()
        );
        assert_eq!(f.summary().state, TwoFactorState::NotEnabled);
    }
}

/// Confirmations sent at once are each counted before being judged: no more than the limit
/// is ever judged.
#[test]
fn confirmations_sent_at_once_are_all_counted() {
    let f = std::sync::Arc::new(fixture());
    let (_, wrong) = begun(&f);
    let judged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (f, judged) = (f.clone(), judged.clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    if matches!(
                        f.factors.confirm_totp(&f.alice, wrong),
                        Err(FactorError::InvalidCode)
                    ) {
                        judged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(judged.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[test]
fn error_messages_name_no_code() {
    let e = FactorError::Cooldown {
        retry_after: Duration::from_millis(1500),
    };
    assert_eq!(
        e.to_string(),
        "a code was sent moments ago; try again in 2 s"
    );
    let e = FactorError::HourlyLimit {
        retry_after: 50 * MIN,
    };
    assert!(e.to_string().contains("3000 s"), "{e}");
}

#[test]
fn method_and_state_names() {
    for m in Method::ALL {
        assert_eq!(Method::parse(m.as_str()), Some(m));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            format!("\"{}\"", m.as_str())
        );
    }
    assert_eq!(Method::parse("TOTP"), None);
    assert_eq!(TwoFactorState::NotEnabled.as_str(), "not_enabled");
    assert_eq!(TwoFactorState::Enabled.as_str(), "enabled");
    assert_eq!(TwoFactorState::Expired.as_str(), "expired");
    assert_eq!(
        serde_json::to_string(&TwoFactorState::NotEnabled).unwrap(),
        "\"not_enabled\""
    );
}
