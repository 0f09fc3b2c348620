//! Tests of query parsing and matching.

use super::*;

/// A stand-in for a content id: 64 hex characters of one repeated byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Id(u8);

impl FromStr for Id {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let b = s
            .get(..2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(())?;
        (s.len() == 64 && s == format!("{b:02x}").repeat(32))
            .then_some(Id(b))
            .ok_or(())
    }
}

fn facts(path: &str) -> FileFacts<'_> {
    FileFacts {
        path: path.as_bytes(),
        size: 100,
        mtime: 1_000,
    }
}

fn words(q: &Query<Id>) -> (&[String], &[String]) {
    match q {
        Query::Words { words, exclude, .. } => (words, exclude),
        Query::Id(_) => panic!("words expected"),
    }
}

#[test]
fn parse_words_and_ids() {
    let q = Query::<Id>::parse("  Isaac  PY isaac ");
    assert_eq!(words(&q).0, ["isaac", "py"]);
    let Query::Words { whole, .. } = &q else {
        panic!()
    };
    assert_eq!(whole, "isaac py");
    assert_eq!(Query::parse(&"ab".repeat(32)), Query::Id(Id(0xab)));
    assert_eq!(
        Query::parse(&format!(" {} ", "ab".repeat(32))),
        Query::Id(Id(0xab))
    );
}

#[test]
fn phrases_and_exclusions() {
    let q = Query::<Id>::parse(r#"python3 "Change  Log" -debian -"old stuff" - x-y "open"#);
    let (w, x) = words(&q);
    assert_eq!(w, ["python3", "change log", "-", "x-y", "open"]);
    assert_eq!(x, ["debian", "old stuff"]);
    assert!(q.matches_facts(&facts("usr/python3/Change Log x-y - open.txt")));
    assert!(!q.matches_facts(&facts("usr/python3/debian/Change Log x-y - open")));
    assert!(
        !q.matches_facts(&facts("python3/change  log x-y - open")),
        "one space"
    );
    let only_excluded = Query::<Id>::parse("-tmp");
    assert!(only_excluded.matches_facts(&facts("a/b.txt")));
    assert!(!only_excluded.matches_facts(&facts("tmp/b.txt")));
}

#[test]
fn words_are_capped_and_deduplicated() {
    let q: String = (0..40).map(|i| format!("w{i} w{i} -x{i} ")).collect();
    let q = Query::<Id>::parse(&q);
    let (w, x) = words(&q);
    assert_eq!(w.len() + x.len(), MAX_QUERY_WORDS);
    assert_eq!(w[0], "w0");
    assert_eq!(x[0], "x0");
}

#[test]
fn matching_ignores_case_needs_every_word_and_reads_the_path() {
    let q = Query::parse("PY isaac");
    assert!(q.matches(&facts("Old ISAAC.py"), &Id(1)));
    assert!(!q.matches(&facts("isaac.rs"), &Id(1)));
    assert!(
        q.matches(&facts("py/isaac.rs"), &Id(1)),
        "a word in a directory"
    );
    assert!(q.in_name(b"isaac.py"));
    assert!(!q.in_name(b"isaac.rs"));
    assert!(Query::<Id>::parse("").matches(&facts("anything"), &Id(1)));
    assert!(Query::parse("über").matches(&facts("ÜBER.txt"), &Id(1)));
    let by_id = Query::Id(Id(7));
    assert!(by_id.matches(&facts("whatever"), &Id(7)));
    assert!(!by_id.matches(&facts("whatever"), &Id(8)));
}

#[test]
fn filters() {
    let f = |filters: Filters, path: &str, size: u64, mtime: i64| {
        Query::<Id>::with_filters("", filters).matches_facts(&FileFacts {
            path: path.as_bytes(),
            size,
            mtime,
        })
    };
    let pdf = Filters {
        exts: vec!["pdf".into(), "epub".into()],
        ..Filters::default()
    };
    assert!(f(pdf.clone(), "a/b.PDF", 1, 0));
    assert!(f(pdf.clone(), "b.tar.epub", 1, 0));
    assert!(!f(pdf.clone(), "pdf/b.txt", 1, 0));
    assert!(!f(pdf.clone(), ".pdf", 1, 0), "a dot-file has no extension");
    assert!(!f(pdf, "b.", 1, 0));
    let sized = Filters {
        min_size: Some(10),
        max_size: Some(20),
        ..Filters::default()
    };
    assert!(f(sized.clone(), "x", 10, 0) && f(sized.clone(), "x", 20, 0));
    assert!(!f(sized.clone(), "x", 9, 0) && !f(sized, "x", 21, 0));
    let dated = Filters {
        newer: Some(100),
        older: Some(200),
        ..Filters::default()
    };
    assert!(f(dated.clone(), "x", 0, 100) && f(dated.clone(), "x", 0, 199));
    assert!(!f(dated.clone(), "x", 0, 99) && !f(dated, "x", 0, 200));
    let bad = Filters {
        exts: vec!["a.b".into()],
        ..Filters::default()
    };
    assert!(bad.check().is_err());
    let many = Filters {
        exts: (0..=MAX_EXTS).map(|i| format!("e{i}")).collect(),
        ..Filters::default()
    };
    assert!(many.check().is_err());
    assert_eq!(extension(b"A.Tar.GZ").as_deref(), Some("gz"));
}

#[test]
fn exact_names() {
    let q = Query::<Id>::parse(" Isaac   PY ");
    assert!(q.is_exact_name("ISAAC py"));
    assert!(!q.is_exact_name("isaac  py"));
    assert!(!Query::<Id>::parse("").is_exact_name(""));
    assert!(!Query::Id(Id(1)).is_exact_name("x"));
}

#[test]
fn names_of_paths() {
    assert_eq!(name_of(b"a/b/c.txt"), b"c.txt");
    assert_eq!(name_of(b"c.txt"), b"c.txt");
    assert_eq!(name_of(b"a/"), b"");
}

#[test]
fn the_clock_is_past_2020() {
    assert!(now_ms() > 1_577_836_800_000);
}
