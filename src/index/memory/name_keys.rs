//! A name's first bytes as a number that orders as the name does: the key the ranking
//! ([`super::rank`]) compares names by before reading them whole.

/// A name's first 8 bytes as a number that orders like the name (ties need the whole name).
#[inline]
pub(super) fn prefix(name: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    let n = name.len().min(8);
    k[..n].copy_from_slice(&name[..n]);
    u64::from_be_bytes(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_as_names_do() {
        let mut names: Vec<&[u8]> = vec![
            b"",
            b"a",
            b"a\0",
            b"ab",
            b"b",
            b"abcdefgh",
            b"abcdefgi",
            b"\xff",
            b"Z",
        ];
        names.sort();
        for w in names.windows(2) {
            assert!(prefix(w[0]) <= prefix(w[1]), "{w:?}");
        }
        assert!(prefix(b"abcdefghX") == prefix(b"abcdefghY"), "8 bytes only");
        assert_eq!(
            prefix(b"a"),
            prefix(b"a\0"),
            "zeros pad: ties need the whole name"
        );
    }
}
