//! Case-insensitive name comparison: the lowercasing every query and name goes through, and
//! allocation-free tests of it for the index's hot loops.

use std::borrow::Cow;

/// Lowercases a name the way queries are lowercased (borrowing when nothing changes).
#[inline]
pub fn lower(s: &str) -> Cow<'_, str> {
    if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(s)
    } else if s.is_ascii() {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// Whether `name` contains `needle` (already lowercase), ignoring case. Allocates only for
/// names that are not ASCII.
#[inline]
pub fn contains_ci(name: &[u8], needle: &str) -> bool {
    if !name.is_ascii() {
        return String::from_utf8_lossy(name)
            .to_lowercase()
            .contains(needle);
    }
    let n = needle.as_bytes();
    let Some((&first, rest)) = n.split_first() else {
        return true;
    };
    // An ASCII name lowercases to ASCII, which holds no other character.
    if !needle.is_ascii() || name.len() < n.len() {
        return false;
    }
    // `a | fold(b) == b`: `a` is `b` or, when `b` is a lowercase letter, its capital.
    let fold = |b: u8| if b.is_ascii_lowercase() { 0x20 } else { 0 };
    let first_fold = fold(first);
    (0..=name.len() - n.len()).any(|i| {
        (name[i] | first_fold) == first
            && name[i + 1..i + n.len()]
                .iter()
                .zip(rest)
                .all(|(&a, &b)| (a | fold(b)) == b)
    })
}

/// Whether `name` lowercased is `whole`.
#[inline]
pub fn equals_ci(name: &[u8], whole: &str) -> bool {
    if name.is_ascii() {
        name.len() == whole.len() && name.eq_ignore_ascii_case(whole.as_bytes())
    } else {
        String::from_utf8_lossy(name).to_lowercase() == whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_insensitive_tests() {
        assert!(contains_ci(b"Isaac.PY", "saac.py"));
        assert!(!contains_ci(b"Isaac", "isaacs"));
        assert!(contains_ci(b"abc", ""));
        assert!(!contains_ci(b"strasse", "straße"));
        assert!(contains_ci(b"a[B]@c", "[b]@"));
        assert!(!contains_ci(b"a{b}`c", "[b]@"), "only letters fold");
        assert!(!contains_ci(b"ab", "abc"));
        assert!(contains_ci("STRASSE ÜBER".as_bytes(), "über"));
        assert!(equals_ci(b"Isaac.py", "isaac.py"));
        assert!(equals_ci("ÜBER".as_bytes(), "über"));
        assert!(!equals_ci(b"isaac", "isaac.py"));
        assert!(!equals_ci(b"strasse", "straße"));
    }

    #[test]
    fn lower_borrows_when_nothing_changes() {
        assert!(matches!(lower("abc.py"), Cow::Borrowed("abc.py")));
        assert_eq!(lower("AbC"), "abc");
        assert_eq!(lower("ÜBER"), "über");
    }
}
