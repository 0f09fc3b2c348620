//! Command-line interface: subcommands for scripts and people, and the original numbered menu.

mod bench;
mod browse;
mod commands;
pub mod config;
pub mod errors;
mod get;
pub use get::GetArgs;
mod dht;
mod filters;
mod get_query;
mod lan;
pub use filters::rewrite_exclusions;
mod group;
mod menu;
mod node;
mod output;
mod port_mapping;
mod share_index;
mod volunteer;
mod wish;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::sync::OnceLock;

use peershare::identity::Identity;
use peershare::index::IndexClient;
use peershare::node::{KnownIndexes, MemberRecord};
use peershare::protocol::Limits;
use peershare::tls::Tls;
use tokio_util::sync::CancellationToken;

pub use menu::run_menu;

/// Default index address when neither --index nor PEERSHARE_INDEX is given.
pub const DEFAULT_INDEX: &str = "127.0.0.1:50000";

/// Writes a line to standard output like `println!`, but returns the error (a closed pipe)
/// for `?` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}
pub(crate) use outln;

/// The configuration file, in `peershare --help` and the manual page.
const CONFIG_HELP: &str = "\
Configuration file: $XDG_CONFIG_HOME/peershare/config.toml (else ~/.config/peershare/config.toml), \
or the one --config or PEERSHARE_CONFIG names. Optional TOML with any of the keys index, \
index_key, state_dir, download_dir (get -o), max_upload_rate, max_download_rate, upload_slots, \
bootstrap. A flag overrides its environment variable, which overrides the file, which overrides \
the built-in default.

Shell completions: peershare completions bash|zsh|fish|elvish|powershell.";

#[derive(Debug, Parser)]
#[command(
    name = "peershare",
    version,
    about = "Peer-to-peer file sharing with BLAKE3-verified downloads.\n\nWith no subcommand, runs the interactive menu.",
    after_long_help = CONFIG_HELP
)]
pub struct Cli {
    /// State directory: identity key, hash cache, index database [env: PEERSHARE_HOME; else
    /// `state_dir` in the configuration file; default: the user's data directory]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Configuration file of defaults (index, download directory, rates...) [default:
    /// $XDG_CONFIG_HOME/peershare/config.toml, else ~/.config/peershare/config.toml, if it exists]
    #[arg(long, global = true, env = "PEERSHARE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args, Clone)]
pub struct IndexAddr {
    /// Index server address (port 50000 when none is given; a host name or an IP address, an
    /// IPv6 one in brackets), with its key fingerprint to require it (else the key seen first
    /// is pinned) [default: 127.0.0.1:50000, or none with --dht, or with search/get --lan]
    #[arg(
        long = "index",
        env = "PEERSHARE_INDEX",
        value_name = "HOST:PORT[#KEY]",
        value_parser = parse_index
    )]
    pub addr: Option<String>,
    /// The key fingerprint the index must hold (the same as HOST:PORT#KEY)
    #[arg(long = "index-key", env = "PEERSHARE_INDEX_KEY", value_name = "KEY")]
    pub key: Option<String>,
}

/// `--index`: an index address as users write it, with the default port when none is given.
fn parse_index(s: &str) -> Result<String, String> {
    peershare::identity::index_address(s).map_err(|e| e.to_string())
}

impl IndexAddr {
    /// The index to use: the one given, else the private group's one (for a member), else
    /// the default one unless the DHT replaces it.
    pub fn resolve(&self, dht: bool) -> Option<String> {
        let member = client_context()
            .ok()
            .and_then(|c| c.member.as_ref())
            .map(MemberRecord::index_spec);
        match (&self.addr, member) {
            // --index-key adds the key to an address that does not carry one.
            (Some(a), _) => Some(match (&self.key, a.contains('#')) {
                (Some(k), false) => format!("{a}#{k}"),
                _ => a.clone(),
            }),
            (None, Some(m)) => Some(m),
            (None, None) if dht => None,
            (None, None) => Some(DEFAULT_INDEX.to_string()),
        }
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct DhtArgs {
    /// Use the BitTorrent Mainline DHT (serverless); an index is used too only when given
    #[arg(long)]
    pub dht: bool,
    /// DHT bootstrap node, repeatable [default: the public Mainline bootstrap nodes]
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// UDP port of this DHT node (0: any free port)
    #[arg(long, default_value_t = 0, value_name = "PORT")]
    pub dht_port: u16,
    #[command(flatten)]
    pub tuning: DhtTuning,
}

/// DHT settings shared by every command that runs a DHT node.
#[derive(Debug, Args, Clone)]
pub struct DhtTuning {
    /// How long to wait for one DHT node's answer before it counts as failed (a lookup moves on
    /// from a slow node sooner, after a few round-trip times)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub dht_request_timeout: std::time::Duration,
    /// Keys this node stores other peers' announcements for, when it serves the DHT (share, dht
    /// node); the least recently announced are dropped first
    #[arg(long, value_name = "N", default_value_t = peershare::dht::DEFAULT_MAX_KEYS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub dht_max_keys: usize,
}

impl Default for DhtTuning {
    fn default() -> Self {
        DhtTuning {
            dht_request_timeout: peershare::dht::DEFAULT_REQUEST_TIMEOUT,
            dht_max_keys: peershare::dht::DEFAULT_MAX_KEYS,
        }
    }
}

impl DhtArgs {
    /// The DHT settings, when --dht is on; `server` for long-running peers.
    pub fn config(&self, server: bool) -> Option<peershare::dht::DhtConfig> {
        self.dht.then(|| peershare::dht::DhtConfig {
            bootstrap: self.bootstrap.clone(),
            port: self.dht_port,
            server,
            request_timeout: self.tuning.dht_request_timeout,
            max_keys: self.tuning.dht_max_keys,
            ..Default::default()
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Register synthetic peers sharing synthetic files (names from a fixed word list)
    Populate {
        #[command(flatten)]
        index: IndexAddr,
        /// Files in all
        #[arg(long, default_value_t = 100_000)]
        files: u64,
        /// Peers sharing them
        #[arg(long, default_value_t = 10)]
        peers: u64,
    },
    /// Search one word per request from many connections; print requests/s, p50, p99, errors
    Search {
        #[command(flatten)]
        index: IndexAddr,
        /// Concurrent connections
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// How long to run
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Look up content ids of the populated files instead of searching words
        #[arg(long)]
        lookup: bool,
        /// Files the index was populated with (for --lookup)
        #[arg(long, default_value_t = 100_000)]
        files: u64,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DhtCommand {
    /// Run a long-running DHT node, e.g. as a group's own bootstrap node
    Node {
        /// UDP address to listen on
        #[arg(long, default_value = "0.0.0.0:6881")]
        listen: std::net::SocketAddrV4,
        /// Other bootstrap nodes, repeatable [default: the public Mainline bootstrap nodes]
        #[arg(long = "bootstrap", value_name = "HOST:PORT")]
        bootstrap: Vec<String>,
        /// Contact no bootstrap node: the first node of a private network
        #[arg(long, conflicts_with = "bootstrap")]
        no_bootstrap: bool,
        #[command(flatten)]
        tuning: DhtTuning,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the indexing server (embedded SQLite store)
    Index {
        /// Address to listen on ([::]: IPv6 and IPv4; 0.0.0.0: IPv4 only)
        #[arg(long, default_value = "[::]:50000")]
        listen: SocketAddr,
        /// Database file [default: index.sqlite in the state directory]
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// How long a peer stays listed without a heartbeat
        #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
        lease: Duration,
        /// How long a peer not heard from is remembered (its files, its id) before it is
        /// forgotten; at least two leases. Throw-away peers of `get` go after two leases
        #[arg(long, default_value = "7days", value_parser = humantime::parse_duration, value_name = "DURATION")]
        forget_after: Duration,
        /// Most connections open at once; past it, the one waiting longest for a request is
        /// closed to make room (at most 64 from one address once half are open)
        #[arg(long, default_value_t = peershare::index::MAX_CONNECTIONS)]
        max_connections: usize,
        /// Most distinct search replies kept for repeated queries (0: no cache)
        #[arg(long, default_value_t = 4096, value_name = "N")]
        search_cache: usize,
        /// Threads serving connections and short searches (longer searches and database
        /// writes run on threads of their own, one per CPU)
        #[arg(long, default_value_t = 1, value_name = "N")]
        io_threads: usize,
        /// Admit members only: anyone else may only join with an invite (`peershare invite`)
        #[arg(long)]
        private: bool,
        /// Address members reach this index at, written into invites and links
        /// [default: --listen, unless it is a wildcard address]
        #[arg(long, value_name = "HOST:PORT")]
        advertise: Option<String>,
        /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no authentication:
        /// keep it on loopback or a monitoring network; port 0: any free port)
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        /// Relay no connections: a peer this index cannot reach is refused (UNREACHABLE)
        /// instead of being registered as reached through the relay
        #[arg(long)]
        no_relay: bool,
        /// Limit on all relayed traffic together, e.g. 10MiB (per second; 0: none); each
        /// member's relayed connections get at most a quarter of it
        #[arg(long, default_value = "10MiB", value_parser = parse_relay_rate, value_name = "RATE")]
        relay_rate: u64,
    },
    /// Share directories: register them with the index, then serve them (runs until interrupted)
    Share {
        /// Directories to share
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        #[command(flatten)]
        dht: DhtArgs,
        #[command(flatten)]
        index: IndexAddr,
        /// Address to serve other peers on ([::]: IPv6 and IPv4; port 0: any free port)
        #[arg(long, default_value = "[::]:0")]
        listen: SocketAddr,
        /// Address other peers must use, when it differs from --listen (NAT, proxy)
        #[arg(long, value_name = "HOST:PORT")]
        advertise: Option<String>,
        /// Share dot-files and dot-directories too
        #[arg(long)]
        hidden: bool,
        /// Rescan this often even without filesystem events
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        rescan: Duration,
        /// Serve only; do not register with an index
        #[arg(long)]
        no_index: bool,
        /// Peers sent pieces at once; others wait in a queue (a holder idle for 3 s loses its
        /// slot, one address keeps at most 2 while others wait)
        #[arg(long, default_value_t = peershare::peer::UPLOAD_SLOTS, value_name = "N")]
        upload_slots: usize,
        /// Limit on total upload bandwidth, e.g. 10MiB (per second)
        #[arg(long, value_parser = peershare::rate::parse_rate, value_name = "RATE")]
        max_upload_rate: Option<u64>,
        /// Run the wishes (`peershare wish add`) this often, the first time once registered;
        /// each round downloads at most 100 new files per wish
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration, value_name = "TIME")]
        wish_interval: Duration,
        /// Do not run the wishes
        #[arg(long)]
        no_wishes: bool,
        #[command(flatten)]
        port_mapping: port_mapping::PortMapArgs,
        #[command(flatten)]
        volunteer: volunteer::VolunteerArgs,
        /// Do not announce this share on the local network (mDNS/DNS-SD)
        #[arg(long)]
        no_lan: bool,
    },
    /// Search the index: files whose path (directories and name) contains every word (or a
    /// content id); names holding every word come first
    Search {
        /// Words to look for (case-insensitive, substrings count), "a phrase" (quoted for the
        /// shell too: '"a phrase"'), -word to exclude, or a 64-hex content id; none with a
        /// filter or an exclusion: every file that passes them
        #[arg(required_unless_present_any = ["exts", "kinds", "min_size", "max_size", "newer", "older", "exclude"])]
        query: Vec<String>,
        #[command(flatten)]
        filters: filters::FilterArgs,
        #[command(flatten)]
        dht: DhtArgs,
        #[command(flatten)]
        lan: lan::LanArgs,
        #[command(flatten)]
        index: IndexAddr,
        /// Most files to list, 1 to 1000 (the index's maximum; --page goes further)
        #[arg(long, default_value_t = 100, value_parser = filters::limit_parser())]
        limit: u32,
        /// Which page of --limit files to list (1: the best)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        page: u32,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Download files by content id, or a peer's file or folder by path (PEER_ID:PATH),
    /// verified piece by piece (with a node running for this state directory: added to its
    /// queue)
    Get(Box<GetArgs>),
    /// Share directories and download through a queue, with an HTTP API and web UI (runs
    /// until interrupted; prints the web UI's address)
    Node(Box<node::NodeArgs>),
    /// The running node's transfers, queue, shares and peers (`peershare node` with this
    /// state directory)
    Status {
        /// Print one JSON document (the API's /api/v1/status)
        #[arg(long)]
        json: bool,
    },
    /// The DHT: run a node
    Dht {
        #[command(subcommand)]
        command: DhtCommand,
    },
    /// Load-test an index: fill it with synthetic peers, then search or look up under load
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Join a private group with an invite token (from `peershare invite`)
    Join {
        /// The token
        token: String,
    },
    /// Print a share link for a file the index lists: its id, name and size, and the index's
    /// address and key (`get` takes the link)
    Link {
        /// The file's content id
        #[arg(value_name = "HASH")]
        id: String,
        #[command(flatten)]
        index: IndexAddr,
        /// An invite token to put in the link, so that whoever opens it joins the group
        #[arg(long, value_name = "TOKEN")]
        invite: Option<String>,
    },
    /// Make an invite to this (private) index; prints the token alone
    Invite(group::InviteArgs),
    /// List the members of this (private) index, or remove one
    Members(group::MembersArgs),
    /// List the peers registered with the index
    Peers {
        #[command(flatten)]
        index: IndexAddr,
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script, e.g. `peershare completions bash >
    /// ~/.local/share/bash-completion/completions/peershare`
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (peershare.1 and one per subcommand) into a directory; the
    /// committed ones in docs/man are made so (scripts/man)
    #[command(hide = true)]
    Man {
        /// Where to write them
        #[arg(default_value = "docs/man", value_name = "DIR")]
        dir: PathBuf,
    },
    /// List what a peer shares under a directory: directories with their sizes and file
    /// counts, then files with their content ids (`get PEER_ID:PATH` downloads it)
    Browse(browse::BrowseArgs),
    /// Wishlists: saved searches that `share` repeats, downloading each new match once
    Wish {
        #[command(subcommand)]
        command: wish::WishCommand,
    },
}

/// The state directory: --state-dir, else PEERSHARE_HOME, else the configuration file's
/// `state_dir`, else `<data dir>/peershare`.
pub fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("PEERSHARE_HOME").map(PathBuf::from))
        .or_else(|| config::get().state_dir.clone())
        .or_else(|| dirs::data_dir().map(|d| d.join("peershare")))
        .unwrap_or_else(|| PathBuf::from(".peershare"))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let state = state_dir(cli.state_dir);
    let _ = STATE_DIR.set(state.clone());
    // In plain words when the state directory cannot be one (not for an index given --db, which
    // may not use it, nor for commands that write no state).
    let uses_state = match &cli.command {
        Some(Command::Completions { .. } | Command::Man { .. }) => false,
        Some(Command::Index { db, .. }) => db.is_none(),
        _ => true,
    };
    if uses_state {
        errors::check_dir("state directory", &state, &state)?;
    }
    // The index serves connections on `--io-threads` threads (one by default: its requests are
    // short, and the work that is not runs on the blocking pool). The load generator runs on
    // one thread, as redis-benchmark does, leaving the other cores to the server it measures.
    let workers = match &cli.command {
        Some(Command::Bench {
            command: BenchCommand::Search { .. },
        }) => None,
        Some(Command::Index { io_threads, .. }) => Some((*io_threads).max(1)),
        _ => Some(std::thread::available_parallelism().map_or(2, |n| n.get())),
    };
    let rt = match workers {
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    match cli.command {
        None => {
            let stdin = std::io::stdin();
            run_menu(&rt, &mut stdin.lock(), &mut std::io::stdout(), &state)
        }
        Some(cmd) => rt.block_on(commands::run(cmd, state)),
    }
}

/// Cancelled on Ctrl-C or SIGTERM.
pub fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
        t.cancel();
    });
    token
}

/// What client commands connect as: the state directory's identity (a member's key in a
/// private group), and the index keys pinned there.
pub struct ClientContext {
    /// The identity's TLS setup (with the group's state, for a member).
    pub tls: Tls,
    /// The keys of the indexes this user connected to.
    pub known: KnownIndexes,
    /// The private group this user joined, if any.
    pub member: Option<MemberRecord>,
    /// The state directory.
    pub state: PathBuf,
}

impl ClientContext {
    /// Keeps a newer certificate the index issued (on connecting, or on a heartbeat).
    pub fn save_renewal(&self) {
        let (Some(rec), Some(group)) = (&self.member, self.tls.group()) else {
            return;
        };
        let (Some(now), old) = (group.membership(), rec.membership()) else {
            return;
        };
        if old.is_none_or(|o| o.expires < now.expires)
            && let Err(e) = rec.renewed(&now).save(&self.state)
        {
            tracing::warn!("keeping the renewed membership: {e}");
        }
    }
}

static STATE_DIR: OnceLock<PathBuf> = OnceLock::new();
/// The context in use; replaced (the old one leaked: a command joins a group at most once)
/// when a `join` changes it.
static CLIENT: std::sync::RwLock<Option<&'static ClientContext>> = std::sync::RwLock::new(None);

/// The client context of this process's state directory (its identity made on first use).
pub fn client_context() -> anyhow::Result<&'static ClientContext> {
    if let Some(c) = *CLIENT.read().unwrap_or_else(|p| p.into_inner()) {
        return Ok(c);
    }
    reload_client_context()
}

/// Reads the client context from the state directory again (after joining a group).
pub fn reload_client_context() -> anyhow::Result<&'static ClientContext> {
    let state = STATE_DIR.get().cloned().unwrap_or_else(|| state_dir(None));
    let identity = Identity::load_or_create(&state)?;
    let member = MemberRecord::load(&state)?;
    let mut tls = Tls::new(&identity)?;
    if let Some(group) = member.as_ref().and_then(MemberRecord::state) {
        tls = tls.with_group(group);
    }
    let ctx = ClientContext {
        tls,
        known: KnownIndexes::new(&state),
        member,
        state,
    };
    let ctx: &'static ClientContext = Box::leak(Box::new(ctx));
    *CLIENT.write().unwrap_or_else(|p| p.into_inner()) = Some(ctx);
    Ok(ctx)
}

/// A connection to the index at `spec` (`HOST:PORT`, or `HOST:PORT#FINGERPRINT` to require
/// that key), with the default limits; its key is pinned on first use.
pub async fn connect(spec: &str) -> anyhow::Result<IndexClient> {
    let ctx = client_context()?;
    let c = ctx
        .known
        .connect(spec, Some(&ctx.tls), Limits::default())
        .await?;
    ctx.save_renewal();
    Ok(c)
}

/// `--advertise HOST:PORT`: the IP address and port to register. A name is looked up here,
/// once (the user typed it), since the index records and hands out IP addresses only.
pub fn parse_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?} is not HOST:PORT"))?;
    let port: u16 = port.parse().with_context(|| format!("bad port in {s:?}"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || port == 0 {
        bail!("{s:?} is not HOST:PORT");
    }
    if let Some(ip) = peershare::protocol::host::parse_ip(bare) {
        return Ok((ip.to_string(), port));
    }
    let ip = std::net::ToSocketAddrs::to_socket_addrs(&(bare, port))
        .with_context(|| format!("cannot resolve {bare:?}"))?
        .next()
        .with_context(|| format!("{bare:?} has no address"))?
        .ip();
    Ok((ip.to_string(), port))
}

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "peershare", &mut script);
    std::io::stdout().write_all(&script)?;
    Ok(())
}

/// Writes the manual pages into `dir` (made if need be): from the command line as built,
/// without the configuration file's defaults, so that they are the same on every machine.
pub fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the manual pages in {}", dir.display()))?;
    Ok(())
}

/// `--relay-rate` (of `index`, and of `share --relay`): a rate, or 0 for no limit.
fn parse_relay_rate(s: &str) -> Result<u64, String> {
    match s.trim() {
        "0" => Ok(0),
        _ => peershare::rate::parse_rate(s),
    }
}
