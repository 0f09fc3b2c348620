//! The `invite` and `members` commands of the real binary: tokens that parse and admit, member listings, removal beside a running index, exit codes.

mod common;

use std::path::Path;

use common::run_peershare;
use peershare::content::Digest;
use peershare::group::Invite;
use peershare::identity::{Fingerprint, Identity};
use peershare::index::{GroupStore, IndexStore};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(args: &[&str], home: &Path) -> std::process::Output {
    run_peershare(args, home)
}

#[test]
fn invite_prints_a_token_that_admits_one_member() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");

    let out = run(&["invite"], &home);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no address known for this index"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = run(&["invite", "--address", "example.org:4000"], &home);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "the token alone: {stdout}");
    let invite: Invite = stdout.trim().parse().unwrap();
    assert_eq!(invite.index, "example.org:4000");
    assert!(
        text(&out.stderr).contains("for one new member"),
        "{}",
        text(&out.stderr)
    );

    // The token names the key kept in the database, which stores only the secret's hash.
    let db = home.join("index.sqlite");
    let mut store = GroupStore::open(&db).unwrap();
    let key = Identity::from_secret(store.index_secret().unwrap()).fingerprint();
    assert_eq!(invite.key, key);
    // (WAL mode: what was written may still be in the -wal file.)
    let mut raw = std::fs::read(&db).unwrap();
    raw.extend(std::fs::read(db.with_extension("sqlite-wal")).unwrap_or_default());
    assert!(raw.windows(32).any(|w| w == invite.secret_hash().0));
    assert!(
        !raw.windows(32).any(|w| w == invite.secret),
        "the secret is not stored"
    );
    let now = peershare::query::now_ms();
    store
        .redeem_invite(&invite.secret_hash(), &Digest([1; 32]), now)
        .unwrap();
    let used = store.redeem_invite(&invite.secret_hash(), &Digest([2; 32]), now);
    assert!(used.is_err());

    // With the address the index stored, and several uses.
    store.set_meta("address", b"[2001:db8::1]:5000").unwrap();
    let out = run(&["invite", "--uses", "3", "--expires", "1h"], &home);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let invite: Invite = text(&out.stdout).trim().parse().unwrap();
    assert_eq!(invite.index, "[2001:db8::1]:5000");
    assert!(text(&out.stderr).contains("for 3 new members"));
    for k in 3..6 {
        store
            .redeem_invite(&invite.secret_hash(), &Digest([k; 32]), now)
            .unwrap();
    }

    for bad in [
        &["invite", "--uses", "0"][..],
        &["invite", "--address", "example.org"],
    ] {
        let out = run(bad, &home);
        assert!(!out.status.success(), "{bad:?}");
        assert!(out.stdout.is_empty(), "{bad:?}");
    }
}

#[test]
fn members_are_listed_and_removed_while_the_index_runs() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("home");
    let db = t.path().join("elsewhere/index.sqlite");
    let dbs = db.to_str().unwrap();

    let out = run(&["members", "--db", dbs], &home);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no index database"),
        "{}",
        text(&out.stderr)
    );

    // The running index's store, open throughout.
    let index = IndexStore::open(&db).unwrap();
    let now = peershare::query::now_ms();
    index
        .create_invite(&Digest([9; 32]), 2, now + 60_000, now)
        .unwrap();
    let keys = [
        Identity::from_secret([1; 32]),
        Identity::from_secret([2; 32]),
    ];
    for k in &keys {
        index
            .redeem_invite(&Digest([9; 32]), &k.public_key(), now)
            .unwrap();
    }

    let out = run(&["members", "--db", dbs], &home);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert_eq!(listing.lines().count(), 3, "{listing}");
    for (n, k) in keys.iter().enumerate() {
        let line = listing.lines().nth(n + 1).unwrap();
        assert!(
            line.trim_start().starts_with(&format!("{} ", n + 1)),
            "{line}"
        );
        assert!(
            line.contains(&k.fingerprint().to_string()) && line.ends_with("member"),
            "{line}"
        );
    }

    let out = run(&["members", "remove", "1", "--db", dbs], &home);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("revoked member 1 ({})", keys[0].fingerprint())
    );
    // The index sees it at once, and will announce it.
    assert!(
        index
            .member(&keys[0].public_key())
            .unwrap()
            .unwrap()
            .revoked
            .is_some()
    );
    assert_eq!(
        index.revoked_since(now).unwrap(),
        vec![keys[0].public_key()]
    );

    let out = run(&["members", "remove", "99", "--db", dbs], &home);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no member with id 99") && err.trim().lines().count() == 1,
        "{err}"
    );

    let out = run(&["members", "--json", "--db", dbs], &home);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let rows = doc.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], 1);
    let fp: Fingerprint = rows[0]["fingerprint"].as_str().unwrap().parse().unwrap();
    assert_eq!(fp, keys[0].fingerprint());
    assert!(rows[0]["revoked"].as_str().unwrap().ends_with('Z'));
    assert!(rows[1]["revoked"].is_null());
    assert!(rows[1]["joined"].as_str().unwrap().ends_with('Z'));
    assert!(rows[1]["last_seen"].as_str().unwrap().ends_with('Z'));
}
