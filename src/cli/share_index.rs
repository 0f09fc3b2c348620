//! Which index a `share` or a `node` registers with, with its key and the private group.

use std::sync::Arc;

/// The index a share (or a node) registers with, its key, and the private group it is a
/// member of there (`None`s without an index).
pub async fn share_index(
    index: &super::IndexAddr,
    dht: &super::DhtArgs,
    no_index: bool,
) -> anyhow::Result<(
    Option<String>,
    Option<peershare::content::Digest>,
    Option<Arc<peershare::group::GroupState>>,
)> {
    let index = if no_index {
        None
    } else {
        index.resolve(dht.dht)
    };
    // The index's key: given with its address, else pinned (by a first connection now
    // if need be; if the index is not up yet, the share's first connection sets it for
    // this run). The share requires it on every connection after.
    let (index, index_key) = match index {
        Some(spec) => {
            let (addr, given) = peershare::identity::split_address(&spec)?;
            let known = &super::client_context()?.known;
            let key = match given.or(known.pinned(addr)?) {
                Some(k) => Some(k.0),
                None => super::connect(&spec).await.ok().map(|c| c.server_key()),
            };
            (Some(addr.to_string()), key)
        }
        None => (None, None),
    };
    // Sharing with the private group's index: as a member (members only are served).
    let ctx = super::client_context()?;
    // The group's index is known by its key, however its address is written.
    let group = match (&ctx.member, index_key, &index) {
        (Some(m), Some(key), _) if m.group().is_some_and(|g| g.0 == key) => {
            ctx.tls.group().cloned()
        }
        (Some(m), None, Some(addr)) if m.index == *addr => ctx.tls.group().cloned(),
        _ => None,
    };
    Ok((index, index_key, group))
}
