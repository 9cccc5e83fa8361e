//! Second factors by canonical username, and one-time code state by `username \0 channel`.
//!
//! Every change is a compare-and-swap of the whole record, retried on contention, and flushed
//! before returning: two concurrent uses of one TOTP step, backup code or one-time code cannot
//! both see it unused, and a success is on disk before the caller acts on it.

use crate::auth::factors::codes::Channel;
use crate::auth::factors::state::{CodeState, UserFactors};
use crate::auth::user::Username;
use crate::store::records::{CodeRecord, FactorRecord, decode, encode};
use crate::store::{Scan, Store, StoreError};

const FACTORS: &str = "second factor";
const CODES: &str = "one-time code";

/// `username \0 channel`: usernames never contain `\0`, so a prefix scan on `username \0`
/// finds exactly that user's channels.
fn code_key(username: &Username, channel: Channel) -> Vec<u8> {
    let mut k = user_prefix(username);
    k.extend_from_slice(channel.as_str().as_bytes());
    k
}

fn user_prefix(username: &Username) -> Vec<u8> {
    let mut p = username.as_str().as_bytes().to_vec();
    p.push(0);
    p
}

/// Shared compare-and-swap loop: `update` sees the current value and returns the next one (an
/// empty value deletes the record) plus a result for the caller. If `update` fails nothing is
/// written. If the value did not change nothing is written either. `update` may run more than
/// once under contention, so it must be a pure function of its input.
fn cas_loop<S, T, E>(
    store: &Store,
    tree: &sled::Tree,
    key: &[u8],
    read: impl Fn(&[u8]) -> Result<S, StoreError>,
    write: impl Fn(&S) -> Result<Option<Vec<u8>>, StoreError>,
    update: impl Fn(S) -> Result<(S, T), E>,
) -> Result<T, E>
where
    S: Default + PartialEq + Clone,
    E: From<StoreError>,
{
    loop {
        let current_raw = tree.get(key).map_err(StoreError::from)?;
        let current = match &current_raw {
            None => S::default(),
            Some(raw) => read(raw)?,
        };
        let (next, out) = update(current.clone())?;
        if next == current {
            return Ok(out);
        }
        let next_raw = write(&next)?;
        if tree
            .compare_and_swap(key, current_raw, next_raw)
            .map_err(StoreError::from)?
            .is_ok()
        {
            store.flush()?;
            return Ok(out);
        }
    }
}

impl Store {
    /// Whether any account has second-factor settings stored (sealed with the key file).
    pub fn holds_second_factors(&self) -> bool {
        !self.factors.is_empty()
    }

    /// The second factors of `username` (empty if none are stored).
    pub fn get_factors(&self, username: &Username) -> Result<UserFactors, StoreError> {
        match self.factors.get(username.as_str().as_bytes())? {
            None => Ok(UserFactors::default()),
            Some(raw) => decode::<FactorRecord>(FACTORS, &raw)?.into_factors(),
        }
    }

    /// Atomically replaces the factors of `username` with what `update` returns and hands back
    /// its result; flushed before returning. See [`cas_loop`] for the contract of `update`.
    pub fn update_factors<T, E: From<StoreError>>(
        &self,
        username: &Username,
        update: impl Fn(UserFactors) -> Result<(UserFactors, T), E>,
    ) -> Result<T, E> {
        cas_loop(
            self,
            &self.factors,
            username.as_str().as_bytes(),
            |raw| decode::<FactorRecord>(FACTORS, raw)?.into_factors(),
            |next| {
                if next.is_empty() {
                    Ok(None)
                } else {
                    encode(FACTORS, &FactorRecord::from_factors(next)).map(Some)
                }
            },
            update,
        )
    }

    /// Forgets every factor of `username`; returns whether anything was stored. Flushed.
    pub fn delete_factors(&self, username: &Username) -> Result<bool, StoreError> {
        let existed = self.factors.remove(username.as_str().as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }

    /// The code state of `username` on `channel` (empty if none is stored).
    pub fn get_code_state(
        &self,
        username: &Username,
        channel: Channel,
    ) -> Result<CodeState, StoreError> {
        match self.factor_codes.get(code_key(username, channel))? {
            None => Ok(CodeState::default()),
            Some(raw) => decode::<CodeRecord>(CODES, &raw)?.into_state(),
        }
    }

    /// Atomically replaces the code state of `username` on `channel`; flushed before
    /// returning. Same contract as [`Store::update_factors`].
    pub fn update_code_state<T, E: From<StoreError>>(
        &self,
        username: &Username,
        channel: Channel,
        update: impl Fn(CodeState) -> Result<(CodeState, T), E>,
    ) -> Result<T, E> {
        cas_loop(
            self,
            &self.factor_codes,
            &code_key(username, channel),
            |raw| decode::<CodeRecord>(CODES, raw)?.into_state(),
            |next| {
                if next.is_empty() {
                    Ok(None)
                } else {
                    encode(CODES, &CodeRecord::from_state(next)).map(Some)
                }
            },
            update,
        )
    }

    /// The code records of `username` (for wiping them): the channels whose record reads, and
    /// the keys of those that do not (a channel this version does not know, or a record it
    /// cannot decode). No login can use an unreadable one.
    pub fn code_channels_of_user(&self, username: &Username) -> Result<Scan<Channel>, StoreError> {
        let prefix = user_prefix(username);
        let mut scan = Scan::default();
        for entry in self.factor_codes.scan_prefix(&prefix) {
            let (k, raw) = entry?;
            let channel = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(Channel::parse)
                .filter(|_| {
                    decode::<CodeRecord>(CODES, &raw).is_ok_and(|r| r.into_state().is_ok())
                });
            match channel {
                Some(channel) => scan.readable.push(channel),
                None => scan.unreadable.push(k),
            }
        }
        Ok(scan)
    }

    /// Deletes the code record under `key` (one that [`Store::code_channels_of_user`] could
    /// not read); flushed before returning.
    pub fn remove_code_record(&self, key: &[u8]) -> Result<(), StoreError> {
        self.factor_codes.remove(key)?;
        self.flush()
    }

    /// Every `(username, channel)` with stored code state (for housekeeping), and the keys
    /// that name none.
    pub fn list_code_states(&self) -> Result<Scan<(Username, Channel)>, StoreError> {
        let mut scan = Scan::default();
        for entry in self.factor_codes.iter() {
            let (k, _) = entry?;
            let parsed = k.iter().position(|b| *b == 0).and_then(|i| {
                let name = std::str::from_utf8(&k[..i]).ok()?;
                let channel = std::str::from_utf8(&k[i + 1..]).ok()?;
                let user = Username::parse(name).ok().filter(|u| u.as_str() == name)?;
                Some((user, Channel::parse(channel)?))
            });
            match parsed {
                Some(pair) => scan.readable.push(pair),
                None => scan.unreadable.push(k),
            }
        }
        Ok(scan)
    }

    /// Every username with stored factors (for housekeeping), and the keys that name none.
    pub fn list_factor_users(&self) -> Result<Scan<Username>, StoreError> {
        let mut scan = Scan::default();
        for entry in self.factors.iter() {
            let (k, _) = entry?;
            let user = std::str::from_utf8(&k)
                .ok()
                .and_then(|name| Username::parse(name).ok().filter(|u| u.as_str() == name));
            match user {
                Some(user) => scan.readable.push(user),
                None => scan.unreadable.push(k),
            }
        }
        Ok(scan)
    }

    #[cfg(test)]
    pub(crate) fn put_raw_code_for_test(&self, key: &[u8], raw: &[u8]) {
        self.factor_codes.insert(key, raw).unwrap();
    }

    #[cfg(test)]
    pub(crate) fn get_raw_factors_for_test(&self, username: &Username) -> Option<Vec<u8>> {
        self.factors
            .get(username.as_str().as_bytes())
            .unwrap()
            .map(|v| v.to_vec())
    }

    #[cfg(test)]
    pub(crate) fn put_raw_factors_for_test(&self, username: &Username, raw: &[u8]) {
        self.factors
            .insert(username.as_str().as_bytes(), raw)
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::factors::settings::TotpAlgorithm;
    use crate::auth::factors::state::{Phone, Sealed, TotpFactor, TotpParams};
    use crate::clock::Timestamp;

    fn alice() -> Username {
        Username::parse("alice").unwrap()
    }

    #[test]
    fn update_persists_and_empty_deletes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .update_factors(&alice(), |mut f| {
                    f.phone = Some(Phone {
                        number: "+15550001111".into(),
                        verified: false,
                    });
                    Ok::<_, StoreError>((f, ()))
                })
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let f = store.get_factors(&alice()).unwrap();
        assert_eq!(f.phone.unwrap().number, "+15550001111");
        assert_eq!(store.list_factor_users().unwrap().readable, [alice()]);
        store
            .update_factors(&alice(), |_| {
                Ok::<_, StoreError>((UserFactors::default(), ()))
            })
            .unwrap();
        assert!(store.factors.is_empty());
    }

    #[test]
    fn failed_update_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r: Result<(), StoreError> = store.update_factors(&alice(), |mut f| {
            f.email_verification = Some(true);
            Err(StoreError::corrupt("test", "abort"))?;
            Ok((f, ()))
        });
        assert!(r.is_err());
        assert!(store.factors.is_empty());
    }

    #[test]
    fn concurrent_step_updates_are_serialised() {
        // Many threads each try to move last_used_step forward past the value they read; every
        // thread that claims a step must claim a distinct one.
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        store
            .update_factors(&alice(), |mut f| {
                f.totp = Some(TotpFactor {
                    secret: Sealed(vec![0]),
                    params: TotpParams {
                        algorithm: TotpAlgorithm::Sha1,
                        digits: 6,
                        period: 30,
                    },
                    created_at: Timestamp(0),
                    last_used_step: Some(0),
                });
                Ok::<_, StoreError>((f, ()))
            })
            .unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|_| {
                            store
                                .update_factors(&alice(), |mut f| {
                                    let t = f.totp.as_mut().unwrap();
                                    let next = t.last_used_step.unwrap() + 1;
                                    t.last_used_step = Some(next);
                                    Ok::<_, StoreError>((f, next))
                                })
                                .unwrap()
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (1..=40).collect::<Vec<u64>>());
    }

    #[test]
    fn code_keys_do_not_mix_users_or_channels() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let al = Username::parse("al").unwrap();
        for (u, c) in [
            (alice(), Channel::Email),
            (alice(), Channel::Sms),
            (al.clone(), Channel::Email),
        ] {
            store
                .update_code_state(&u, c, |mut s| {
                    s.sends.push(Timestamp(1));
                    Ok::<_, StoreError>((s, ()))
                })
                .unwrap();
        }
        let mut chans = store.code_channels_of_user(&alice()).unwrap().readable;
        chans.sort_by_key(|c| c.as_str());
        assert_eq!(chans, [Channel::Email, Channel::Sms]);
        assert_eq!(
            store.code_channels_of_user(&al).unwrap().readable,
            [Channel::Email]
        );
        assert_eq!(store.list_code_states().unwrap().readable.len(), 3);
        assert!(store.get_code_state(&al, Channel::Sms).unwrap().is_empty());
    }

    #[test]
    fn unreadable_code_records_are_listed_apart_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .update_code_state(&alice(), Channel::Email, |mut s| {
                s.sends.push(Timestamp(1));
                Ok::<_, StoreError>((s, ()))
            })
            .unwrap();
        store.put_raw_code_for_test(b"alice\0pigeon", b"{}");
        store.put_raw_code_for_test(b"alice\0sms", b"{\"V1\":");
        let scan = store.code_channels_of_user(&alice()).unwrap();
        assert_eq!(scan.readable, [Channel::Email]);
        let mut unreadable: Vec<&[u8]> = scan.unreadable.iter().map(|k| k.as_ref()).collect();
        unreadable.sort();
        assert_eq!(unreadable, [&b"alice\0pigeon"[..], &b"alice\0sms"[..]]);
        for key in &scan.unreadable {
            store.remove_code_record(key).unwrap();
        }
        let after = store.code_channels_of_user(&alice()).unwrap();
        assert_eq!(after.readable, [Channel::Email]);
        assert!(after.unreadable.is_empty());
    }

    #[test]
    fn garbled_factor_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_raw_factors_for_test(&alice(), b"{\"V1\":");
        assert!(matches!(
            store.get_factors(&alice()),
            Err(StoreError::Corrupt { .. })
        ));
        let r: Result<(), StoreError> = store.update_factors(&alice(), |f| Ok((f, ())));
        assert!(r.is_err());
        assert!(store.delete_factors(&alice()).unwrap());
    }
}
