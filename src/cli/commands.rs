//! The subcommands: index, share, search, get, peers.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use super::{Command, connect, interrupt_token, output, parse_host_port};
use peershare::identity::Identity;
use peershare::index::{CacheConfig, IndexConfig, IndexServer, IndexStore};
use peershare::node::{ShareConfig, start_share};
use peershare::rate::RateLimiter;
use peershare::tls::Tls;

/// Runs one subcommand.
pub async fn run(cmd: Command, state: PathBuf) -> anyhow::Result<()> {
    match cmd {
        Command::Index {
            listen,
            db,
            lease,
            forget_after,
            max_connections,
            search_cache,
            io_threads: _,
            private,
            advertise,
            metrics,
            no_relay,
            relay_rate,
        } => {
            // The database's directory: in plain words if it cannot be one (the state
            // directory was checked already).
            if let Some(dir) = db
                .as_ref()
                .and_then(|d| d.parent())
                .filter(|d| !d.as_os_str().is_empty())
                && let Some(db) = &db
            {
                super::errors::check_dir("--db", db, dir)?;
            }
            let db = db.unwrap_or_else(|| state.join("index.sqlite"));
            let config = IndexConfig {
                lease,
                forget_after,
                max_connections,
                search_cache: CacheConfig {
                    max_entries: search_cache,
                    ..CacheConfig::default()
                },
                relay: peershare::index::RelayConfig {
                    enabled: !no_relay,
                    rate: relay_rate,
                    ..Default::default()
                },
                ..IndexConfig::default()
            };
            run_index(listen, &db, config, private, advertise, metrics).await
        }
        Command::Join { token } => super::group::join(&token).await,
        Command::Link { id, index, invite } => {
            super::group::link(&id, index.resolve(false), invite).await
        }
        Command::Share {
            dirs,
            dht,
            index,
            listen,
            advertise,
            hidden,
            rescan,
            no_index,
            upload_slots,
            max_upload_rate,
            wish_interval,
            no_wishes,
            port_mapping,
            volunteer,
            no_lan,
        } => {
            super::errors::check_share_dirs(&dirs)?;
            let (index, index_key, group) =
                super::share_index::share_index(&index, &dht, no_index).await?;
            let mut config = ShareConfig::new(dirs, index, state);
            config.index_key = index_key;
            config.group = group;
            config.dht = dht.config(true);
            config.advertise = advertise.map(|a| parse_host_port(&a)).transpose()?;
            config.port_mapping = port_mapping.config();
            config.relay = volunteer.config();
            config.scan.include_hidden = hidden;
            config.scan.progress = Some(hashing_progress(std::io::stderr().is_terminal()));
            config.rescan_interval = rescan;
            config.peer.upload_slots = upload_slots.max(1);
            config.peer.upload_rate = max_upload_rate.map(|r| Arc::new(RateLimiter::new(r)));
            config.lan = !no_lan;
            config.wishes = (!no_wishes).then(|| peershare::node::WishSchedule {
                interval: wish_interval.max(Duration::from_secs(1)),
                ..Default::default()
            });
            run_share(config, listen).await
        }
        Command::Search {
            query,
            filters,
            dht,
            lan,
            index,
            limit,
            page,
            json,
        } => {
            let query = filters.query(&query);
            let search = filters.search(&query, limit, super::filters::offset_of(page, limit)?);
            if dht.dht || lan.lan {
                return super::dht::search(search, index.resolve(true), &dht, &lan, json).await;
            }
            let mut client = connect(&index.resolve(false).unwrap_or_default()).await?;
            let results = client.search_with(search.clone()).await?;
            output::search(&mut std::io::stdout().lock(), &search, &results, json)?;
            if results.files.is_empty() {
                match results.total {
                    0 => bail!("no file matches {query:?}"),
                    n => bail!("page {page} is past the last of the {n} files matching {query:?}"),
                }
            }
            Ok(())
        }
        Command::Dht {
            command:
                super::DhtCommand::Node {
                    listen,
                    bootstrap,
                    no_bootstrap,
                    tuning,
                },
        } => {
            let config = peershare::dht::DhtConfig {
                bootstrap,
                no_bootstrap,
                port: listen.port(),
                bind: *listen.ip(),
                server: true,
                request_timeout: tuning.dht_request_timeout,
                max_keys: tuning.dht_max_keys,
            };
            super::dht::run_node(listen, &config).await
        }
        Command::Bench { command } => match command {
            super::BenchCommand::Populate {
                index,
                files,
                peers,
            } => {
                super::bench::populate(&index.resolve(false).unwrap_or_default(), files, peers)
                    .await
            }
            super::BenchCommand::Search {
                index,
                clients,
                duration,
                lookup,
                files,
                json,
            } => {
                let addr = index.resolve(false).unwrap_or_default();
                let r = super::bench::load(&addr, clients, duration, lookup, files).await?;
                let rps = r.requests as f64 / r.seconds;
                if json {
                    let doc = serde_json::json!({
                        "requests": r.requests, "errors": r.errors, "seconds": r.seconds,
                        "requests_per_sec": rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                    });
                    super::outln!("{doc:#}")?;
                } else {
                    super::outln!(
                        "{} {} clients: {rps:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                        if lookup { "lookup" } else { "search" },
                        clients,
                        r.p50_ms,
                        r.p99_ms,
                        r.errors
                    )?;
                }
                Ok(())
            }
        },
        Command::Peers { index, json } => {
            let mut client = connect(&index.resolve(false).unwrap_or_default()).await?;
            let list = client.list_peers().await?;
            output::peers(&mut std::io::stdout().lock(), &list, json)?;
            Ok(())
        }
        Command::Get(args) => {
            if super::node::get_via_node(&args, &state).await?.is_some() {
                return Ok(());
            }
            if args.wait {
                bail!(
                    "--wait follows a running node's queue; none runs for {}",
                    state.display()
                );
            }
            super::errors::check_output_dir(&args.output)?;
            super::get::run_get(*args).await
        }
        Command::Node(args) => super::node::run_node(*args, state).await,
        Command::Status { json } => super::node::status(&state, json).await,
        Command::Browse(args) => super::browse::run_browse(args).await,
        Command::Invite(args) => super::group::invite(args, &state),
        Command::Members(args) => super::group::members(args, &state),
        Command::Completions { shell } => super::completions(shell),
        Command::Man { dir } => super::man_pages(&dir),
        Command::Wish { command } => super::wish::run(command, &state).await,
    }
}

pub async fn run_index(
    listen: std::net::SocketAddr,
    db: &Path,
    config: IndexConfig,
    private: bool,
    advertise: Option<String>,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let listener = peershare::protocol::listen::bind_tcp(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let metrics = match metrics {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for --metrics"))?,
        ),
        None => None,
    };
    serve_index(listener, db, config, private, advertise, metrics).await
}

/// Runs the index on a bound listener (the menu binds first, to say where it listens).
pub(super) async fn serve_index(
    listener: TcpListener,
    db: &Path,
    config: IndexConfig,
    private: bool,
    advertise: Option<String>,
    metrics: Option<TcpListener>,
) -> anyhow::Result<()> {
    let store = tokio::task::spawn_blocking({
        let db = db.to_path_buf();
        move || IndexStore::open(&db)
    })
    .await??;
    let addr = listener.local_addr()?;
    let lease = config.lease;
    // The index's key lives in its database: `--db` carries its identity.
    let identity = Identity::from_secret(store.index_secret()?);
    let tls = Tls::new(&identity)?;
    // Where members reach it, for invites and links: as told, else where it listens.
    let reach = match advertise {
        Some(a) => Some(a),
        None if !addr.ip().is_unspecified() => Some(addr.to_string()),
        None => None,
    };
    if let Some(a) = &reach {
        store.set_meta("address", a.as_bytes())?;
    }
    store.set_meta("private", if private { b"1" } else { b"0" })?;
    super::outln!(
        "peershare index listening on {addr} (store {}, lease {}){}",
        db.display(),
        humantime::format_duration(lease),
        if private {
            ", private: members only"
        } else {
            ""
        }
    )?;
    let shown = reach.unwrap_or_else(|| addr.to_string());
    super::outln!(
        "index key {}: clients connect with --index {shown}#{}",
        identity.fingerprint(),
        identity.fingerprint()
    )?;
    let server = IndexServer::new(store, config, tls);
    let server = if private {
        server.private(identity)
    } else {
        server
    };
    let stop = interrupt_token();
    if let Some(listener) = metrics {
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            eprintln!(
                "peershare: warning: metrics on {addr}, not a loopback address: anyone who \
                 reaches it reads them (plain HTTP, no authentication)"
            );
        }
        super::outln!("metrics at http://{addr}/metrics")?;
        let source = server.metrics();
        let render: peershare::metrics::http::Render = Arc::new(move || source.render());
        tokio::spawn(peershare::metrics::http::serve(
            listener,
            render,
            stop.clone(),
        ));
    }
    // The UDP side (hole punching, docs/PROTOCOL.md §7.11) on the same port number.
    let udp = server.udp();
    match udp.bind(listener.local_addr()?) {
        Ok(endpoint) => {
            tokio::spawn(udp.run(endpoint, stop.clone()));
        }
        Err(e) => eprintln!("peershare: warning: no UDP on {addr} (no hole punching): {e}"),
    }
    std::io::stdout().flush()?;
    server.run(listener, stop).await;
    super::outln!("peershare index stopped")?;
    Ok(())
}

pub async fn run_share(config: ShareConfig, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = peershare::protocol::listen::bind_tcp(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let index = config.index.clone();
    let mut handle = start_share(config, listener).await?;
    let status = handle.status.borrow().clone();
    super::outln!(
        "peershare share listening on {} ({} files)",
        handle.local_addr,
        status.files_shared
    )?;
    if let Some(a) = handle.dht_addr {
        super::outln!("DHT node on udp {a}")?;
    }
    match &handle.lan {
        Some(Ok(name)) => super::outln!("announced on the LAN as {name}")?,
        Some(Err(e)) => eprintln!(
            "peershare: not announced on the LAN: {}",
            peershare::text::Escaped(e)
        ),
        None => {}
    }
    if let Some(mut udp) = handle.udp.clone() {
        // Hole punching (docs/PROTOCOL.md §7.11) needs the address the index sees our UDP
        // socket at: said once known, and again when the NAT's mapping changes.
        tokio::spawn(async move {
            let mut last = None;
            while udp.changed().await.is_ok() {
                let seen = udp.borrow_and_update().observed;
                if let Some(a) = seen.filter(|_| seen != last) {
                    let _ = super::outln!(
                        "reachable over UDP at {a} (as the index sees it: hole punching)"
                    );
                    let _ = std::io::stdout().flush();
                }
                last = seen;
            }
        });
    }
    std::io::stdout().flush()?;
    let stop = interrupt_token();
    let mut last = status;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            r = handle.status.changed() => {
                if r.is_err() { break; }
                let s = handle.status.borrow_and_update().clone();
                if let (Some(addr), Some(id), Some(files), true) = (&index, s.peer_id, s.files_registered, s.in_sync)
                    && (last.peer_id != s.peer_id || last.files_registered != s.files_registered || !last.in_sync)
                {
                    super::outln!("registered with index {addr} as peer {id}: {files} files")?;
                    std::io::stdout().flush()?;
                }
                if let Some(m) = &s.port_mapped && last.port_mapped.as_ref() != Some(m) {
                    super::outln!("reachable at {m}")?;
                }
                // How others reach this peer, as the index found (§7.10).
                if (&s.reach, &s.reachable_at) != (&last.reach, &last.reachable_at) {
                    match (s.reach.as_deref(), &s.reachable_at) {
                        (Some(peershare::protocol::relay::reach::RELAY), _) => super::outln!(
                            "reachable through the index's relay (the index cannot connect to this \
                             peer; it sees it at {})",
                            s.observed.as_deref().unwrap_or("an unknown address")
                        )?,
                        (_, Some(at)) if s.port_mapped.is_none() => super::outln!("reachable at {at}")?,
                        _ => {}
                    }
                    std::io::stdout().flush()?;
                }
                // Volunteering as a relay (--relay): whether the index took this peer.
                if s.volunteer != last.volunteer {
                    match s.volunteer {
                        Some(true) => super::outln!(
                            "relaying for the other members through this peer's port (--relay)"
                        )?,
                        Some(false) => eprintln!(
                            "peershare: not relaying for others: the index takes as a relay only \
                             a peer it can connect to"
                        ),
                        None => {}
                    }
                    std::io::stdout().flush()?;
                }
                if let Some(n) = s.dht_announced && last.dht_announced != s.dht_announced {
                    super::outln!("published on the DHT: {n} of {} keys ({} files)", s.dht_keys, s.files_shared)?;
                    std::io::stdout().flush()?;
                }
                if let Some(e) = &s.last_error && last.last_error.as_ref() != Some(e) {
                    let e = e.to_string();
                    eprintln!(
                        "peershare: no registration with the index, retrying: {}",
                        peershare::text::Escaped(&e)
                    );
                }
                last = s;
            }
        }
    }
    handle.shutdown().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    super::outln!("peershare share stopped")?;
    Ok(())
}

/// A scan's hashing shows its progress once it has taken this long (a few files changed
/// since the last scan show nothing).
const HASHING_QUIET: Duration = Duration::from_millis(500);

/// A scan's hashing progress on stderr: files and bytes hashed, rate and ETA, as a bar on a
/// terminal, else as a line every [`progress_interval`](super::get::progress_interval)
/// (`PEERSHARE_PROGRESS_INTERVAL`, default 5 s) and one when it ends.
fn hashing_progress(terminal: bool) -> peershare::peer::HashProgress {
    use peershare::peer::HashStatus;
    struct Shown {
        started: std::time::Instant,
        bar: Option<indicatif::ProgressBar>,
        /// When the last line was told (not on a terminal).
        told: Option<std::time::Instant>,
    }
    let every = super::get::progress_interval();
    let state: std::sync::Mutex<Option<Shown>> = std::sync::Mutex::default();
    Arc::new(move |st: HashStatus| {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let shown = state.get_or_insert_with(|| Shown {
            started: std::time::Instant::now(),
            bar: None,
            told: None,
        });
        let elapsed = shown.started.elapsed();
        let files = format!("{} of {} files", st.files_done, st.files);
        if terminal {
            if shown.bar.is_none() && elapsed >= HASHING_QUIET && !st.finished() {
                let b = indicatif::ProgressBar::new(st.bytes);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "hashing {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b.set_position(st.bytes_done);
                b.reset_eta();
                shown.bar = Some(b);
            }
            if let Some(b) = &shown.bar {
                b.set_length(st.bytes);
                b.set_position(st.bytes_done);
                b.set_message(files);
            }
        } else if shown
            .told
            .map_or(elapsed >= every, |t| t.elapsed() >= every)
            && !st.finished()
        {
            let secs = elapsed.as_secs_f64().max(0.001);
            let rate = st.bytes_done as f64 / secs;
            let eta = match rate > 0.0 {
                true => humantime::format_duration(Duration::from_secs(
                    (st.bytes.saturating_sub(st.bytes_done) as f64 / rate).ceil() as u64,
                ))
                .to_string(),
                false => "unknown".into(),
            };
            eprintln!(
                "peershare: hashing: {files}, {} of {}, {}/s, eta {eta}",
                output::size(st.bytes_done),
                output::size(st.bytes),
                output::size(rate as u64),
            );
            shown.told = Some(std::time::Instant::now());
        }
        if st.finished() {
            if let Some(b) = shown.bar.take() {
                b.finish_and_clear();
            }
            if shown.told.is_some() {
                eprintln!(
                    "peershare: hashed {} files ({}) in {}",
                    st.files,
                    output::size(st.bytes),
                    humantime::format_duration(Duration::from_millis(elapsed.as_millis() as u64))
                );
            }
            *state = None;
        }
    })
}
