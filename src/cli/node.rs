//! `peershare node` (share, download queue and HTTP API in one long-running process), and
//! `peershare status` / `peershare get` talking to a running node through its API.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{DhtArgs, IndexAddr, interrupt_token, parse_host_port};
use peershare::node::{NodeConfig, NodeHandle, Settings, SettingsPatch, ShareConfig};
use peershare::web::client::{ClientError, NodeClient};
use peershare::web::{self, AppState, WebConfig};

/// What `peershare node` was asked.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Directories to share
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Directory the queue downloads into
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Address of the HTTP API and web UI (a loopback address unless --web-allow-remote)
    #[arg(long, default_value = web::DEFAULT_WEB, value_name = "ADDR")]
    pub web: SocketAddr,
    /// Allow --web on an address that is not a loopback one (there is no TLS: the token
    /// crosses the network in the clear; prefer an SSH tunnel or a TLS proxy)
    #[arg(long)]
    pub web_allow_remote: bool,
    /// A host name the web API is reached by (besides IP addresses and localhost); requests
    /// naming another host are refused (DNS rebinding). Repeatable
    #[arg(long, value_name = "NAME")]
    pub web_host: Vec<String>,
    #[command(flatten)]
    pub dht: DhtArgs,
    #[command(flatten)]
    pub index: IndexAddr,
    /// Address to serve other peers on ([::]: IPv6 and IPv4; port 0: any free port)
    #[arg(long, default_value = "[::]:0")]
    pub listen: SocketAddr,
    /// Address other peers must use, when it differs from --listen (NAT, proxy)
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Share dot-files and dot-directories too
    #[arg(long)]
    pub hidden: bool,
    /// Rescan this often even without filesystem events
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub rescan: Duration,
    /// Serve only; do not register with an index (the queue then finds sources through the
    /// DHT only)
    #[arg(long)]
    pub no_index: bool,
    /// Do not announce this node on the local network (mDNS/DNS-SD)
    #[arg(long)]
    pub no_lan: bool,
    /// Peers sent pieces at once [default: the saved setting, else 8]; saved
    #[arg(long, value_name = "N")]
    pub upload_slots: Option<usize>,
    /// Limit on total upload bandwidth, e.g. 10MiB (per second; 0: none) [default: the
    /// saved setting, else none]; saved
    #[arg(long, value_parser = peershare::rate::parse_rate, value_name = "RATE")]
    pub max_upload_rate: Option<u64>,
    /// Limit on total download bandwidth, e.g. 10MiB (per second; 0: none) [default: the
    /// saved setting, else none]; saved
    #[arg(long, value_parser = peershare::rate::parse_rate, value_name = "RATE")]
    pub max_download_rate: Option<u64>,
    /// Queue items downloaded at once, 1 to 64 [default: the saved setting, else 3]; saved
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Also look in this directory (recursively; repeatable) for files already downloaded
    #[arg(long, value_name = "DIR")]
    pub look_in: Vec<PathBuf>,
    #[command(flatten)]
    pub port_mapping: super::port_mapping::PortMapArgs,
    #[command(flatten)]
    pub volunteer: super::volunteer::VolunteerArgs,
}

/// Runs `peershare node` until interrupted.
pub async fn run_node(a: NodeArgs, state: PathBuf) -> anyhow::Result<()> {
    super::errors::check_share_dirs(&a.dirs)?;
    super::errors::check_output_dir(&a.output)?;
    if !a.web.ip().is_loopback() && !a.web_allow_remote {
        bail!(
            "--web {} is reachable from other machines; add --web-allow-remote to mean it",
            a.web
        );
    }
    let (index, index_key, group) =
        super::share_index::share_index(&a.index, &a.dht, a.no_index).await?;
    let mut share = ShareConfig::new(a.dirs.clone(), index, state.clone());
    share.index_key = index_key;
    share.group = group;
    share.dht = a.dht.config(true);
    share.advertise = a.advertise.map(|a| parse_host_port(&a)).transpose()?;
    share.port_mapping = a.port_mapping.config();
    share.relay = a.volunteer.config();
    share.scan.include_hidden = a.hidden;
    share.rescan_interval = a.rescan;
    share.wishes = None;
    share.lan = !a.no_lan;
    let ctx = super::client_context()?;
    let config = NodeConfig {
        share,
        output: a.output.clone(),
        tls: Some(ctx.tls.clone()),
        dht: super::dht::get_client(&a.dht)?,
        settings: Settings::default(),
        look_in: a.look_in.clone(),
    };
    peershare::protocol::raise_open_file_limit();
    let peers = peershare::protocol::listen::bind_tcp(a.listen)
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let web_listener = TcpListener::bind(a.web)
        .await
        .with_context(|| format!("--web: cannot listen on {}", a.web))?;
    let web_addr = web_listener.local_addr()?;
    let node = NodeHandle::start(config, peers)?;
    let patch = SettingsPatch {
        max_download_rate: a.max_download_rate,
        max_upload_rate: a.max_upload_rate,
        upload_slots: a.upload_slots,
        parallel: a.parallel,
    };
    if patch.max_download_rate.is_some()
        || patch.max_upload_rate.is_some()
        || patch.upload_slots.is_some()
        || patch.parallel.is_some()
    {
        node.set_settings(patch)?;
    }
    let (token, _) = web::auth::load_or_create_token(&state)
        .with_context(|| format!("cannot write the token in {}", state.display()))?;
    let guard = Arc::new(web::auth::Guard::new(
        token.clone(),
        web_addr.port(),
        a.web_host.clone(),
    ));
    let config = WebConfig {
        names: a.web_host.clone(),
        ..WebConfig::default()
    };
    let router = web::router(
        AppState {
            node: node.clone(),
            guard,
        },
        &config,
    );
    let stop = interrupt_token();
    let server = tokio::spawn(web::serve(web_listener, router, config, stop.clone()));
    web::write_node_file(&state, web_addr)
        .with_context(|| format!("cannot write {} in {}", web::NODE_FILE, state.display()))?;
    if let Some(w) = web::exposed_warning(web_addr) {
        eprintln!("peershare: warning: {w}");
    }
    let url = web::local_url(web_addr);
    super::outln!("web UI at {url}?token={token}")?;
    super::outln!(
        "API at {url}api/v1/ (Authorization: Bearer: the token in {})",
        state.join(web::auth::TOKEN_FILE).display()
    )?;
    std::io::stdout().flush()?;
    stop.cancelled().await;
    web::remove_node_file(&state);
    let _ = server.await;
    node.shutdown().await;
    Ok(())
}

/// What a running node said about adding items, or `None` when no node runs for this state
/// directory (the caller then does the work itself).
pub async fn forward_get(
    state: &Path,
    items: Vec<Value>,
    wait: bool,
    json_out: bool,
) -> anyhow::Result<Option<()>> {
    let Some(client) = NodeClient::find(state) else {
        return Ok(None);
    };
    let added = match client
        .request(
            "POST",
            "/api/v1/transfers",
            Some(&json!({ "items": items })),
        )
        .await
    {
        Ok(v) => v,
        Err(ClientError::NotRunning(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let ids: Vec<i64> = added["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    if !wait {
        if json_out {
            super::outln!("{}", json!({ "node": client.addr, "added": ids }))?;
        } else {
            super::outln!(
                "added to the node's queue at {}: item{} {}",
                client.addr,
                if ids.len() == 1 { "" } else { "s" },
                ids.iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        return Ok(Some(()));
    }
    // --wait: follow every item to its end.
    let mut finished: Vec<Value> = Vec::new();
    let mut pending = ids.clone();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let item = client
                .request("GET", &format!("/api/v1/transfers/{id}"), None)
                .await?;
            match item["state"].as_str() {
                Some("done" | "failed" | "cancelled") => {
                    if !json_out {
                        print_item(&item)?;
                    }
                    finished.push(item);
                }
                _ => still.push(id),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    if json_out {
        super::outln!("{}", Value::Array(finished.clone()))?;
    }
    let failed = finished
        .iter()
        .filter(|i| i["state"].as_str() != Some("done"))
        .count();
    if failed > 0 {
        bail!("{failed} of {} items did not complete", finished.len());
    }
    Ok(Some(()))
}

fn print_item(item: &Value) -> anyhow::Result<()> {
    let name = match item["name"].as_str() {
        Some(n) if !n.is_empty() => n,
        _ => item["target"].as_str().unwrap_or(""),
    };
    let name = peershare::text::Escaped(name).to_string();
    match item["state"].as_str() {
        Some("done") => super::outln!(
            "done: {name} -> {}",
            peershare::text::Escaped(item["path"].as_str().unwrap_or(""))
        )?,
        Some(s) => super::outln!(
            "{s}: {name}: {}",
            peershare::text::Escaped(item["error"].as_str().unwrap_or(""))
        )?,
        None => {}
    }
    Ok(())
}

/// `peershare status`: the running node's transfers, queue, shares and peers.
pub async fn status(state: &Path, json_out: bool) -> anyhow::Result<()> {
    let not_running = || {
        anyhow::anyhow!(
            "no node is running with the state directory {} (start one with `peershare node`)",
            state.display()
        )
    };
    let client = NodeClient::find(state).ok_or_else(not_running)?;
    let st = match client.request("GET", "/api/v1/status", None).await {
        Ok(v) => v,
        Err(ClientError::NotRunning(_)) => return Err(not_running()),
        Err(e) => return Err(e.into()),
    };
    if json_out {
        super::outln!("{st}")?;
        return Ok(());
    }
    let q = &st["queue"];
    let n = |k: &str| q[k].as_u64().unwrap_or(0);
    super::outln!(
        "node at {}: queue {} queued, {} running, {} paused, {} done, {} failed, {} cancelled",
        client.addr,
        n("queued"),
        n("running"),
        n("paused"),
        n("done"),
        n("failed"),
        n("cancelled")
    )?;
    let share = &st["share"];
    let roots: Vec<&str> = share["roots"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let roots = peershare::text::Escaped(&roots.join(", ")).to_string();
    match (share["started"].as_bool(), &share["status"]) {
        (Some(true), s) => super::outln!(
            "sharing {} files from {roots}{}",
            s["files_shared"].as_u64().unwrap_or(0),
            match (s["peer_id"].as_u64(), s["in_sync"].as_bool()) {
                (Some(id), Some(true)) => format!(", registered as peer {id}"),
                _ => String::new(),
            }
        )?,
        _ => {
            let h = &share["hashing"];
            super::outln!(
                "scanning {roots}: hashed {} of {} files",
                h["files_done"].as_u64().unwrap_or(0),
                h["files"].as_u64().unwrap_or(0)
            )?
        }
    }
    for u in st["uploads"].as_array().into_iter().flatten() {
        super::outln!(
            "  uploading {} to {}: {} of {} pieces",
            peershare::text::Escaped(u["name"].as_str().unwrap_or("")),
            u["to"].as_str().unwrap_or(""),
            u["pieces"].as_u64().unwrap_or(0),
            u["piece_count"].as_u64().unwrap_or(0)
        )?;
    }
    for t in st["transfers"].as_array().into_iter().flatten() {
        let name = match t["name"].as_str() {
            Some(n) if !n.is_empty() => n,
            _ => t["target"].as_str().unwrap_or(""),
        };
        let (done, total) = (
            t["bytes_done"].as_u64().unwrap_or(0),
            t["bytes_total"].as_u64(),
        );
        let sources: Vec<String> = t["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "{} ({})",
                    s["address"].as_str().unwrap_or(""),
                    s["reached"].as_str().unwrap_or("")
                )
            })
            .collect();
        super::outln!(
            "  {} {}: {done}{} bytes, {} B/s, from {}",
            t["id"],
            peershare::text::Escaped(name),
            total.map(|t| format!(" of {t}")).unwrap_or_default(),
            t["rate"].as_u64().unwrap_or(0),
            if sources.is_empty() {
                "-".to_string()
            } else {
                sources.join(", ")
            }
        )?;
    }
    Ok(())
}

/// `peershare get` with a node running for this state directory: the ids, links, folders and
/// query go to its queue (`--wait`: followed to their end). `None` when no node runs.
pub async fn get_via_node(a: &super::get::GetArgs, state: &Path) -> anyhow::Result<Option<()>> {
    if NodeClient::find(state).is_none() {
        return Ok(None);
    }
    let mut items = Vec::new();
    for h in &a.hashes {
        if peershare::node::FolderSpec::parse(h).is_some() {
            items.push(json!({ "kind": "folder", "target": h }));
        } else if h.starts_with(peershare::group::LINK_PREFIX) {
            let link: peershare::group::ShareLink = h.parse()?;
            items.push(json!({ "kind": "file", "target": link.content_id.to_hex() }));
        } else {
            let id: peershare::content::ContentId = h.parse()?;
            items.push(json!({ "kind": "file", "target": id.to_hex() }));
        }
    }
    if !a.query.is_empty() {
        let s = a.filters.search("", 1, 0);
        if !s.exts.is_empty()
            || s.min_size.is_some()
            || s.max_size.is_some()
            || s.newer.is_some()
            || s.older.is_some()
            || a.flat
        {
            bail!(
                "a running node takes `get --query WORDS` without filters or --flat; stop the node or leave them out"
            );
        }
        items.push(json!({ "kind": "query", "target": a.filters.query(&a.query) }));
    }
    if a.output != Path::new(".") {
        eprintln!(
            "peershare: a node is running for this state directory: it downloads into its own --output, not {}",
            a.output.display()
        );
    }
    forward_get(state, items, a.wait, a.json).await
}
