//! A name's first bytes as a number that orders as the name does: the keys both the rank order
//! ([`super::order`]) and the ranking ([`super::rank`]) compare names by before reading them whole.

/// A name's first 8 bytes as a number that orders like the name (ties need the whole name).
#[inline]
pub(super) fn prefix(name: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    let n = name.len().min(8);
    k[..n].copy_from_slice(&name[..n]);
    u64::from_be_bytes(k)
}

/// The first 16 bytes of a name (zeros past its end) as a number that orders as they do.
#[inline]
pub(super) fn name_key(name: &[u8]) -> u128 {
    u128::from_be_bytes(std::array::from_fn(|i| name.get(i).copied().unwrap_or(0)))
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
            assert!(name_key(w[0]) <= name_key(w[1]), "{w:?}");
        }
        assert!(prefix(b"abcdefghX") == prefix(b"abcdefghY"), "8 bytes only");
        assert!(name_key(b"abcdefghijklmnopX") == name_key(b"abcdefghijklmnopY"));
        assert!(name_key(b"abcdefghijklmnoX") < name_key(b"abcdefghijklmnoY"));
        assert_eq!(
            prefix(b"a"),
            prefix(b"a\0"),
            "zeros pad: ties need the whole name"
        );
    }
}
