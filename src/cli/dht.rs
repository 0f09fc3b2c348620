//! The DHT side of the CLI: `dht node`, searching through the DHT and/or the LAN (merged with
//! an index), finding sources.

use std::io::Write;
use std::net::SocketAddrV4;

use anyhow::{Context, bail};

use super::{DhtArgs, output};
use super::{connect, interrupt_token};
use peershare::dht::{self, DhtConfig, DhtFile};
use peershare::peer::ask::Origin;
use peershare::protocol::{CatalogQuery, Search, SearchResults};

/// `peershare dht node`: a server-mode DHT node until interrupted.
pub async fn run_node(listen: SocketAddrV4, config: &DhtConfig) -> anyhow::Result<()> {
    let node =
        dht::start_node(config).with_context(|| format!("cannot start a DHT node on {listen}"))?;
    let addr = node.info().await.local_addr();
    super::outln!(
        "peershare dht node listening on {addr} (use --bootstrap {addr} from other peers)"
    )?;
    std::io::stdout().flush()?;
    interrupt_token().cancelled().await;
    super::outln!("peershare dht node stopped")?;
    Ok(())
}

/// A read-only DHT client for one command.
fn client(args: &DhtArgs) -> anyhow::Result<mainline::async_dht::AsyncDht> {
    let config = args.config(false).unwrap_or_default();
    dht::start_node(&config).context("cannot join the DHT")
}

/// `search --dht` and/or `search --lan`: the DHT, the LAN's peers, and the index too when one
/// is given; one merged list.
pub async fn search(
    search: Search,
    index: Option<String>,
    args: &DhtArgs,
    lan: &super::lan::LanArgs,
    json: bool,
) -> anyhow::Result<()> {
    let only = match (args.dht, lan.lan) {
        (true, true) => "the DHT and the LAN",
        (true, false) => "the DHT",
        _ => "the LAN",
    };
    let query = search.query.as_str();
    let limit = search.limit;
    let from_index: Option<SearchResults> = match &index {
        Some(addr) => {
            match async {
                Ok::<_, anyhow::Error>(connect(addr).await?.search_with(search.clone()).await?)
            }
            .await
            {
                Ok(r) => Some(r),
                Err(e) => {
                    let e = super::errors::error_line(&e);
                    eprintln!(
                        "peershare: index unavailable, searching {only} only: {}",
                        peershare::text::Escaped(&e)
                    );
                    None
                }
            }
        }
        None => None,
    };
    let tls = &super::client_context()?.tls;
    // Listening on the LAN while the DHT is looked up.
    let lan_peers = super::lan::peers(lan, tls);
    let node = args.dht.then(|| client(args)).transpose()?;
    let mut catalog = CatalogQuery {
        query: search.query.clone(),
        limit,
        offset: search.offset,
        ..CatalogQuery::default()
    };
    catalog.set_filters(search.filters());
    let from_dht = async {
        match &node {
            Some(node) => dht::find_files(node, &catalog, Some(tls)).await,
            None => Vec::new(),
        }
    };
    let from_lan = async {
        match lan_peers.await? {
            Some(peers) => {
                anyhow::Ok(peershare::lan::find_files(&peers, &catalog, Some(tls)).await)
            }
            None => Ok(Vec::new()),
        }
    };
    let (from_dht, from_lan) = tokio::join!(from_dht, from_lan);
    let from_lan = from_lan?;
    let (files, truncated, total) = peershare::peer::ask::merge_answers(
        from_index.as_ref(),
        &[(Origin::Dht, &from_dht), (Origin::Lan, &from_lan)],
        query,
        limit as usize,
    );
    // Peers answer with this page of their matches and no count: the files before this page
    // and the ones shown are a lower bound, and the total is only an estimate when a peer had
    // more than it sent.
    let dht_cut = from_dht
        .iter()
        .chain(&from_lan)
        .any(|(_, (_, r))| r.truncated);
    let total = total.max(u64::from(search.offset) + files.len() as u64);
    output::search_merged(
        &mut std::io::stdout().lock(),
        &search,
        &files,
        (
            truncated,
            total,
            from_index.as_ref().is_some_and(|r| r.estimated) || dht_cut,
        ),
        json,
    )?;
    if files.is_empty() {
        bail!("no file matches {query:?}");
    }
    Ok(())
}

/// A DHT client for `get --dht`.
pub fn get_client(args: &DhtArgs) -> anyhow::Result<Option<mainline::async_dht::AsyncDht>> {
    if args.dht {
        Ok(Some(client(args)?))
    } else {
        Ok(None)
    }
}

pub fn merged_json(files: &[DhtFile]) -> Vec<serde_json::Value> {
    files
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "size": f.size,
                "content_id": f.content_id.to_hex(),
                "peers": f.peers.iter().map(|p| {
                    let via: Vec<&str> = [
                        p.via_index.then_some("index"),
                        p.via_dht.then_some("dht"),
                        p.via_lan.then_some("lan"),
                    ]
                        .into_iter()
                        .flatten()
                        .collect();
                    serde_json::json!({
                    "peer_id": (p.peer.peer_id != 0).then_some(p.peer.peer_id),
                    "host": p.peer.host,
                    "port": p.peer.port,
                    "path": p.peer.path,
                    "shared_at": p.via_index.then(|| output::time(p.peer.shared_at)),
                    "last_seen": output::time(p.peer.last_seen),
                    "via": via,
                })}).collect::<Vec<_>>(),
            })
        })
        .collect()
}
