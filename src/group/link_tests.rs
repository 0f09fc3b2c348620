//! Share links: round trips, the exact text, and what a pasted or hostile link is refused for.

use super::*;
use crate::identity::Identity;

fn cid() -> ContentId {
    ContentId::from(blake3::hash(b"hello"))
}

fn link() -> ShareLink {
    ShareLink {
        content_id: cid(),
        name: "Ünïcode report & notes (v2)+%.pdf".into(),
        size: 1234,
        index: None,
        invite: None,
    }
}

fn invite() -> Invite {
    Invite {
        index: "[2001:db8::1]:4000".into(),
        key: Identity::from_secret([7; 32]).fingerprint(),
        secret: [5; 32],
    }
}

#[test]
fn the_text_form_is_exact() {
    let text = link().to_string();
    assert_eq!(
        text,
        format!(
            "peershare:?cid={}&name=%C3%9Cn%C3%AFcode%20report%20%26%20notes%20%28v2%29%2B%25.pdf&size=1234",
            cid()
        )
    );
    let full = ShareLink {
        index: Some(format!("example.org:4000#{}", invite().key)),
        invite: Some(invite()),
        ..link()
    };
    let text = full.to_string();
    let tail = format!(
        "&size=1234&index=example.org%3A4000%23{}&invite=peershare-invite%3A",
        invite().key
    );
    assert!(text.contains(&tail), "{text}");
    assert!(
        text.contains("%40%5B2001%3Adb8%3A%3A1%5D%3A4000%23"),
        "{text}"
    );
}

#[test]
fn links_round_trip() {
    let with_index = ShareLink {
        index: Some("192.0.2.1:50000".into()),
        ..link()
    };
    let with_invite = ShareLink {
        index: Some(format!("h.example:1#{}", invite().key)),
        invite: Some(invite()),
        ..link()
    };
    for l in [link(), with_index, with_invite] {
        assert_eq!(l.to_string().parse::<ShareLink>().unwrap(), l);
    }
}

#[test]
fn keys_in_any_order_unknown_ones_ignored_lowercase_escapes_taken() {
    let text = format!("peershare:?future=1&size=7&x&name=a%c3%a9b&cid={}", cid());
    let l: ShareLink = text.parse().unwrap();
    assert_eq!((l.name.as_str(), l.size, l.index), ("aéb", 7, None));
    let plus = format!("peershare:?cid={}&name=a+b&size=0", cid());
    assert_eq!(plus.parse::<ShareLink>().unwrap().name, "a+b");
}

fn err(text: &str) -> LinkError {
    let e = text.parse::<ShareLink>().unwrap_err();
    let msg = e.to_string();
    assert!(
        !msg.contains('\n') && !msg.contains('\u{1b}') && msg.len() < 300,
        "{msg}"
    );
    e
}

#[test]
fn broken_links_say_what_is_wrong() {
    let c = cid();
    let ok = |rest: &str| format!("peershare:?cid={c}&{rest}");
    assert_eq!(
        err("https://example.org"),
        LinkError::NotLink("https://example.org".into())
    );
    assert_eq!(err("peershare:?"), LinkError::Missing("cid"));
    assert_eq!(err(&ok("size=1")), LinkError::Missing("name"));
    assert_eq!(err(&ok("name=a")), LinkError::Missing("size"));
    assert_eq!(
        err(&ok("name=a&size=1&name=b")),
        LinkError::Duplicate("name")
    );
    assert_eq!(
        err(&format!("peershare:?cid={c}&name=a&size=1&cid={c}")),
        LinkError::Duplicate("cid")
    );
    assert_eq!(
        err("peershare:?cid=abc&name=a&size=1"),
        LinkError::ContentId("abc".into())
    );
    for size in ["", "-1", "+1", "1e3", "18446744073709551616", "%2B1"] {
        assert_eq!(
            err(&ok(&format!("name=a&size={size}"))),
            LinkError::Size(decode(size).unwrap()),
            "{size}"
        );
    }
    for bad in ["%", "%4", "%zz", "%FF", "%C3"] {
        assert_eq!(
            err(&ok(&format!("name={bad}&size=1"))),
            LinkError::Encoding {
                key: "name",
                value: bad.into()
            }
        );
    }
    let long = ok(&format!("name={}&size=1", "a".repeat(MAX_LINK_LEN)));
    assert_eq!(err(&long), LinkError::TooLong(long.len()));
}

#[test]
fn names_that_are_not_file_names_are_refused() {
    let c = cid();
    for (name, why) in [
        ("", "empty"),
        (".", "a directory"),
        ("..", "a directory"),
        ("..%2Fetc%2Fpasswd", "contains '/'"),
        ("a%00b", "contains a NUL"),
        ("a%0Ab", "contains control or invisible characters"),
        ("a%1B%5B2Jb", "contains control or invisible characters"),
        (
            "%E2%80%AEgnp.exe",
            "contains control or invisible characters",
        ),
    ] {
        match err(&format!("peershare:?cid={c}&name={name}&size=1")) {
            LinkError::Name { why: got, .. } => assert_eq!(got, why, "{name}"),
            other => panic!("{name}: {other}"),
        }
    }
    let longest = "é".repeat(127) + "a";
    let ok = format!("peershare:?cid={c}&name={}&size=1", encode(&longest));
    assert_eq!(ok.parse::<ShareLink>().unwrap().name, longest);
    let too_long = format!("peershare:?cid={c}&name={}a&size=1", encode(&longest));
    assert!(matches!(
        err(&too_long),
        LinkError::Name {
            why: "longer than 255 bytes",
            ..
        }
    ));
}

#[test]
fn bad_indexes_and_invites_are_refused() {
    let base = format!("peershare:?cid={}&name=a&size=1", cid());
    for index in [
        "example.org",
        "example.org%3A0",
        "a%20b%3A1",
        "h%3A1%23nokey",
        "%3A1",
    ] {
        assert!(
            matches!(err(&format!("{base}&index={index}")), LinkError::Index(_)),
            "{index}"
        );
    }
    assert!(matches!(
        err(&format!("{base}&invite=peershare-invite%3Aabc")),
        LinkError::Invite(InviteError::Truncated)
    ));
    let other_key = Identity::from_secret([8; 32]).fingerprint();
    let mismatch = format!(
        "{base}&index=h%3A1%23{other_key}&invite={}",
        encode(&invite().to_string())
    );
    assert_eq!(err(&mismatch), LinkError::KeyMismatch);
    let unkeyed = format!(
        "{base}&index=h%3A1&invite={}",
        encode(&invite().to_string())
    );
    assert_eq!(unkeyed.parse::<ShareLink>().unwrap().invite, Some(invite()));
}
