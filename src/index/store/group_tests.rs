//! Tests of the group tables: the index key, invites (every refusal, and a race for the last
//! use), members, and a second process's handle writing beside the running index.

use std::sync::{Arc, Barrier};

use super::*;
use crate::content::Digest;

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

fn key(n: u8) -> Digest {
    Digest([n; 32])
}

fn open() -> (tempfile::TempDir, std::path::PathBuf, IndexStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    let store = IndexStore::open(&path).unwrap();
    (dir, path, store)
}

#[test]
fn the_index_key_is_made_once_and_kept_in_the_database() {
    let (_dir, path, store) = open();
    let secret = store.index_secret().unwrap();
    assert_ne!(secret, [0; 32]);
    assert_eq!(store.index_secret().unwrap(), secret);
    drop(store);
    assert_eq!(
        IndexStore::open(&path).unwrap().index_secret().unwrap(),
        secret
    );
    assert_eq!(
        GroupStore::open(&path).unwrap().index_secret().unwrap(),
        secret
    );
    // A database whose first key was made by the command line keeps it too.
    let other = path.with_file_name("other.sqlite");
    let made = GroupStore::open(&other).unwrap().index_secret().unwrap();
    assert_eq!(
        IndexStore::open(&other).unwrap().index_secret().unwrap(),
        made
    );
    assert_ne!(made, secret);
}

/// A damaged key is reported, never replaced by a new one (which would change the index's
/// identity under its members' feet).
#[test]
fn a_damaged_index_key_is_an_error() {
    let (_dir, _path, store) = open();
    store.set_meta("index_secret", b"short").unwrap();
    let e = store.index_secret().unwrap_err();
    assert!(matches!(e, StoreError::BadSecret(5)), "{e}");
    assert_eq!(store.get_meta("index_secret").unwrap().unwrap(), b"short");
}

#[test]
fn meta_values_are_stored_and_replaced() {
    let (_dir, path, store) = open();
    assert_eq!(store.get_meta("address").unwrap(), None);
    store.set_meta("address", b"example.org:4000").unwrap();
    store.set_meta("address", b"example.org:5000").unwrap();
    store.set_meta("private", b"1").unwrap();
    let other = GroupStore::open(&path).unwrap();
    assert_eq!(
        other.get_meta("address").unwrap().unwrap(),
        b"example.org:5000"
    );
    assert_eq!(other.get_meta("private").unwrap().unwrap(), b"1");
}

#[test]
fn an_invite_admits_as_many_keys_as_it_has_uses() {
    let (_dir, _path, store) = open();
    store.create_invite(&key(1), 2, NOW + DAY, NOW).unwrap();
    let a = store.redeem_invite(&key(1), &key(10), NOW).unwrap();
    assert_eq!(
        (a.public_key, a.joined, a.last_seen, a.revoked),
        (key(10), NOW, NOW, None)
    );
    let b = store.redeem_invite(&key(1), &key(11), NOW + 1).unwrap();
    assert!(b.id > a.id);
    let used = store.redeem_invite(&key(1), &key(12), NOW + 2).unwrap_err();
    assert!(matches!(used, RedeemError::UsedUp), "{used}");
    assert_eq!(store.members().unwrap(), vec![a.clone(), b]);
    assert_eq!(store.member(&key(10)).unwrap(), Some(a));
    assert_eq!(store.member(&key(12)).unwrap(), None);
}

#[test]
fn refused_invites_say_why_in_one_line() {
    let (_dir, _path, store) = open();
    store.create_invite(&key(1), 1, NOW, NOW - DAY).unwrap();
    store.create_invite(&key(2), 0, NOW + DAY, NOW).unwrap();
    let unknown = store.redeem_invite(&key(9), &key(10), NOW - 1).unwrap_err();
    let expired = store.redeem_invite(&key(1), &key(10), NOW).unwrap_err();
    let used = store.redeem_invite(&key(2), &key(10), NOW).unwrap_err();
    assert!(matches!(unknown, RedeemError::Unknown), "{unknown}");
    assert!(matches!(expired, RedeemError::Expired(NOW)), "{expired}");
    assert!(matches!(used, RedeemError::UsedUp), "{used}");
    assert_eq!(
        expired.to_string(),
        "this invite expired at 2027-01-15T08:00:00.000Z; ask for a new one"
    );
    for e in [unknown, expired, used] {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    // Nothing was admitted, and the refusals spent nothing: just before it expires, it works.
    assert!(store.members().unwrap().is_empty());
    store.redeem_invite(&key(1), &key(10), NOW - 1).unwrap();
}

#[test]
fn a_member_joining_again_spends_nothing_and_a_removed_one_is_admitted_again() {
    let (_dir, _path, store) = open();
    store.create_invite(&key(1), 2, NOW + DAY, NOW).unwrap();
    let first = store.redeem_invite(&key(1), &key(10), NOW).unwrap();
    // Again, even with an unknown invite: it is a member already; only last_seen moves.
    let again = store.redeem_invite(&key(1), &key(10), NOW + 5).unwrap();
    assert_eq!(
        again,
        MemberRow {
            last_seen: NOW + 5,
            ..first.clone()
        }
    );
    let unknown = store.redeem_invite(&key(9), &key(10), NOW + 6).unwrap();
    assert_eq!(unknown.id, first.id);

    let revoked = store.revoke_member(first.id, NOW + 10).unwrap().unwrap();
    assert_eq!(revoked.revoked, Some(NOW + 10));
    // Removed, it needs a good invite again...
    let refused = store
        .redeem_invite(&key(9), &key(10), NOW + 11)
        .unwrap_err();
    assert!(matches!(refused, RedeemError::Unknown), "{refused}");
    // ...made after its removal: the invite it joined with, with a use left, does not undo
    // the removal (nor spend that use)...
    let old = store
        .redeem_invite(&key(1), &key(10), NOW + 12)
        .unwrap_err();
    assert!(matches!(old, RedeemError::Removed), "{old}");
    assert!(!old.to_string().contains('\n'));
    // ...a newer one admits it under its old id and spends a use.
    store
        .create_invite(&key(2), 1, NOW + DAY, NOW + 20)
        .unwrap();
    let back = store.redeem_invite(&key(2), &key(10), NOW + 21).unwrap();
    assert_eq!(
        (back.id, back.revoked, back.joined),
        (first.id, None, NOW + 21)
    );
    let used = store
        .redeem_invite(&key(2), &key(11), NOW + 22)
        .unwrap_err();
    assert!(matches!(used, RedeemError::UsedUp), "{used}");
    // The first invite's second use is still there for someone else.
    store.redeem_invite(&key(1), &key(12), NOW + 23).unwrap();
}

#[test]
fn revocations_are_listed_by_time_and_kept() {
    let (_dir, _path, store) = open();
    store.create_invite(&key(1), 3, NOW + DAY, NOW).unwrap();
    let ids: Vec<i64> = (10..13)
        .map(|k| store.redeem_invite(&key(1), &key(k), NOW).unwrap().id)
        .collect();
    assert_eq!(store.revoke_member(999, NOW).unwrap(), None);
    store.revoke_member(ids[0], NOW + 100).unwrap();
    store.revoke_member(ids[2], NOW + 200).unwrap();
    // Removing again keeps the first time, so it is not announced as new.
    let twice = store.revoke_member(ids[0], NOW + 300).unwrap().unwrap();
    assert_eq!(twice.revoked, Some(NOW + 100));
    // Latest removed first.
    assert_eq!(store.revoked_since(NOW).unwrap(), vec![key(12), key(10)]);
    assert_eq!(
        store.revoked_since(NOW + 100).unwrap(),
        vec![key(12), key(10)]
    );
    assert_eq!(store.revoked_since(NOW + 101).unwrap(), vec![key(12)]);
    assert!(store.revoked_since(NOW + 201).unwrap().is_empty());

    store.touch_member(&key(11), NOW + 50).unwrap();
    store.touch_member(&key(11), NOW + 40).unwrap();
    store.touch_member(&key(99), NOW + 50).unwrap();
    assert_eq!(store.member(&key(11)).unwrap().unwrap().last_seen, NOW + 50);
    assert_eq!(store.members().unwrap().len(), 3);
}

/// `peershare members remove` runs in another process while the index runs: a removal through
/// one handle is seen through the other, and each sees the other's new members.
#[test]
fn another_handle_on_the_file_writes_beside_the_index() {
    let (_dir, path, index) = open();
    let mut cli = GroupStore::open(&path).unwrap();
    cli.create_invite(&key(1), 2, NOW + DAY, NOW).unwrap();
    let member = index.redeem_invite(&key(1), &key(10), NOW).unwrap();
    assert_eq!(cli.members().unwrap(), vec![member.clone()]);
    let removed = cli.revoke_member(member.id, NOW + 1).unwrap().unwrap();
    assert_eq!(index.member(&key(10)).unwrap().unwrap(), removed);
    assert_eq!(index.revoked_since(NOW).unwrap(), vec![key(10)]);
    // The index keeps writing while the other handle is open.
    let second = index.redeem_invite(&key(1), &key(11), NOW + 2).unwrap();
    assert_eq!(cli.member(&key(11)).unwrap(), Some(second));
    assert_eq!(cli.revoked_since(NOW).unwrap(), vec![key(10)]);
}

/// Two joins racing for the last use of an invite, through two connections (as two processes
/// would) and through one shared store (as the index's connections do): exactly one wins.
#[test]
fn two_keys_racing_for_one_use_admit_exactly_one() {
    let (_dir, path, index) = open();
    let index = Arc::new(index);
    for round in 0..10u8 {
        let hash = key(round);
        index.create_invite(&hash, 1, NOW + DAY, NOW).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [100u8, 200]
            .into_iter()
            .map(|k| {
                let (path, index, barrier) = (path.clone(), index.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let member = key(k + round);
                    if round % 2 == 0 {
                        let mut own = GroupStore::open(&path).unwrap();
                        barrier.wait();
                        own.redeem_invite(&hash, &member, NOW)
                    } else {
                        barrier.wait();
                        index.redeem_invite(&hash, &member, NOW)
                    }
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(RedeemError::UsedUp))),
            "round {round}: {results:?}"
        );
    }
    assert_eq!(index.members().unwrap().len(), 10);
}
