//! The index server's metrics (`peershare_index_*`): one set per server.

use prometheus_client::registry::Registry;

use super::{ByLabel, Counter, Gauge, Histogram, labels};

labels!(
    /// How a `Register` ended.
    pub enum RegisterOutcome("outcome") {
        /// The peer is registered.
        Accepted = "accepted",
        /// Refused (bad signature, unreachable address, busy...) or failed.
        Refused = "refused",
    }
);

labels!(
    /// What a search asks for.
    pub enum QueryKind("query") {
        /// Words (a name search).
        Words = "words",
        /// A content id (a lookup).
        ContentId = "content_id",
    }
);

labels!(
    /// How a search ended.
    pub enum SearchOutcome("outcome") {
        /// Answered by running the search.
        Answered = "answered",
        /// Answered from the reply cache.
        Cached = "cached",
        /// Refused (a bad request, or a reply too large).
        Refused = "refused",
    }
);

labels!(
    /// The requests of the index protocol (PROTOCOL §7).
    pub enum IndexRequestKind("request") {
        /// `Hello` after the handshake (refused).
        Hello = "hello",
        /// `Join`.
        Join = "join",
        /// `Register`.
        Register = "register",
        /// `UpdateFiles`.
        UpdateFiles = "update_files",
        /// `Heartbeat`.
        Heartbeat = "heartbeat",
        /// `Unregister`.
        Unregister = "unregister",
        /// `Search`.
        Search = "search",
        /// `Browse`.
        Browse = "browse",
        /// `ListPeers`.
        ListPeers = "list_peers",
        /// `Listen` (§7.10).
        Listen = "listen",
        /// `RelayConnect` (§7.10).
        RelayConnect = "relay_connect",
        /// `RelayAccept` (§7.10).
        RelayAccept = "relay_accept",
    }
);

labels!(
    /// One-line kinds of errors: an error reply's code (the connection goes on), or why a
    /// connection was closed by an error.
    pub enum ConnectionError("kind") {
        /// Reply `BAD_REQUEST`.
        BadRequest = "bad_request",
        /// Reply `NOT_FOUND`.
        NotFound = "not_found",
        /// Reply `UNAUTHORIZED`.
        Unauthorized = "unauthorized",
        /// Reply `UNSUPPORTED_VERSION`, or a connection closed for it.
        UnsupportedVersion = "unsupported_version",
        /// Reply `BUSY`.
        Busy = "busy",
        /// Reply `FORBIDDEN`, or a connection refused for it.
        Forbidden = "forbidden",
        /// Reply `UNREACHABLE`.
        Unreachable = "unreachable",
        /// Reply `INTERNAL`, or a connection closed by a failure of the index.
        Internal = "internal",
        /// Closed: nothing (complete) arrived in time, or no `Hello` within the handshake time.
        Timeout = "timeout",
        /// Closed: a frame or message that breaks the protocol.
        BadFrame = "bad_frame",
        /// Closed to make room for another connection.
        Evicted = "evicted",
        /// Closed: no memory for a large request in time.
        NoMemory = "no_memory",
        /// Closed: the connection failed (reset, closed mid-frame).
        Io = "io",
        /// Closed before or during the TLS handshake: it failed (not TLS, not 1.3, a bad key),
        /// took too long, or the connection was evicted meanwhile.
        Tls = "tls",
    }
);

/// The metrics of one index server: counters its connections add to, and the gauges and
/// counters [`crate::index::IndexMetricsSource::render`] sets from the server's state when
/// they are read. Clones share their values.
#[derive(Debug, Clone, Default)]
pub struct IndexMetrics {
    /// Connections accepted.
    pub connections: Counter,
    /// Connections refused at accept (set when rendered).
    pub connections_refused: Counter,
    /// Connections closed to make room (set when rendered).
    pub connections_evicted: Counter,
    /// Connections open (set when rendered).
    pub connections_open: Gauge,
    /// Requests by kind.
    pub requests: ByLabel<IndexRequestKind, Counter>,
    /// `Register`s by outcome.
    pub registrations: ByLabel<RegisterOutcome, Counter>,
    /// `Unregister`s that took effect.
    pub unregistrations: Counter,
    /// Searches (words) by outcome.
    pub searches: ByLabel<SearchOutcome, Counter>,
    /// Lookups (content id searches) by outcome.
    pub lookups: ByLabel<SearchOutcome, Counter>,
    /// Seconds from a search's arrival to its reply being ready, by query kind.
    pub search_seconds: ByLabel<QueryKind, Histogram>,
    /// Errors by kind.
    pub errors: ByLabel<ConnectionError, Counter>,
    /// Files listed, of every peer (set when rendered).
    pub rows: Gauge,
    /// Distinct content ids listed (set when rendered).
    pub files: Gauge,
    /// Peers registered and heard from within the lease (set when rendered).
    pub peers_live: Gauge,
    /// Peers the index remembers (set when rendered).
    pub peers_known: Gauge,
    /// Bytes the index relayed between peers (§7.10), both directions counted.
    pub relay_bytes: Counter,
}

impl IndexMetrics {
    /// The searches or the lookups, by what was asked.
    pub fn searches_of(&self, kind: QueryKind) -> &ByLabel<SearchOutcome, Counter> {
        match kind {
            QueryKind::Words => &self.searches,
            QueryKind::ContentId => &self.lookups,
        }
    }

    /// A registry of these metrics, for [`super::render`].
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        let p = "peershare_index_";
        let c = |r: &mut Registry, name: &str, help: &str, m: &Counter| {
            r.register(format!("{p}{name}"), help, m.clone())
        };
        c(
            &mut r,
            "connections",
            "Connections accepted",
            &self.connections,
        );
        c(
            &mut r,
            "connections_refused",
            "Connections refused at accept: every connection was being served",
            &self.connections_refused,
        );
        c(
            &mut r,
            "connections_evicted",
            "Connections closed to make room for new ones",
            &self.connections_evicted,
        );
        r.register(
            format!("{p}connections_open"),
            "Connections open now",
            self.connections_open.clone(),
        );
        r.register(
            format!("{p}requests"),
            "Requests received, by kind",
            self.requests.clone(),
        );
        r.register(
            format!("{p}registrations"),
            "Register requests, by outcome",
            self.registrations.clone(),
        );
        c(
            &mut r,
            "unregistrations",
            "Unregister requests that took effect",
            &self.unregistrations,
        );
        r.register(
            format!("{p}searches"),
            "Searches by words, by outcome",
            self.searches.clone(),
        );
        r.register(
            format!("{p}lookups"),
            "Searches by content id, by outcome",
            self.lookups.clone(),
        );
        r.register(
            format!("{p}search_duration_seconds"),
            "Time from a search's arrival to its reply being ready, refused ones excepted",
            self.search_seconds.clone(),
        );
        r.register(
            format!("{p}errors"),
            "Error replies sent (by code) and connections closed by an error (by cause)",
            self.errors.clone(),
        );
        r.register(
            format!("{p}rows"),
            "Files listed, one per peer sharing it",
            self.rows.clone(),
        );
        r.register(
            format!("{p}files"),
            "Distinct content ids listed",
            self.files.clone(),
        );
        r.register(
            format!("{p}peers_live"),
            "Peers registered and heard from within the lease",
            self.peers_live.clone(),
        );
        r.register(
            format!("{p}peers_known"),
            "Peers the index remembers, live or not",
            self.peers_known.clone(),
        );
        c(
            &mut r,
            "relay_bytes",
            "Bytes the index relayed between peers, both directions counted",
            &self.relay_bytes,
        );
        r
    }
}
