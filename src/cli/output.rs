//! Output: human-readable lines and JSON documents for search results, peers and downloads.

use std::io::{self, Write};

use serde_json::json;

use peershare::content::{ContentId, PieceLayout};
use peershare::download::DownloadReport;
use peershare::protocol::{FileHit, MAX_SEARCH_LIMIT, PeerHit, PeerList, Search, SearchResults};

/// RFC 3339 UTC time, to the second, from milliseconds since the Unix epoch. Times come from
/// the network: clamped to 1970..=9999, as humantime fails (and `to_string` then panics) past
/// year 9999.
pub fn time(ms: i64) -> String {
    humantime::format_rfc3339_seconds(peershare::group::system_time(ms)).to_string()
}

/// A name from the network made safe to print: control characters (terminal escapes) shown escaped.
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    peershare::text::escape(name)
}

/// A file's heading line in search results: content id, size, name.
fn file_line(out: &mut impl Write, id: &ContentId, bytes: u64, name: &str) -> io::Result<()> {
    writeln!(out, "{id}  {:>10}  {}", size(bytes), shown(name))
}

/// Bytes in binary units, e.g. "1.5 MiB".
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// For a peer still downloading the file: how many of its pieces it has verified.
pub fn pieces_have(f: &FileHit, p: &PeerHit) -> Option<u64> {
    let bitmap = p.have.as_ref()?;
    let pieces = PieceLayout::new(f.size).piece_count();
    let full_bytes = (pieces / 8).min(bitmap.len() as u64) as usize;
    let mut n: u64 = bitmap[..full_bytes]
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    if let Some(last) = bitmap.get(full_bytes)
        && !pieces.is_multiple_of(8)
    {
        n += u64::from((last & !(0xffu8 >> (pieces % 8))).count_ones());
    }
    Some(n)
}

pub fn file_json(f: &FileHit) -> serde_json::Value {
    json!({
        "name": f.name,
        "size": f.size,
        "content_id": f.content_id.to_hex(),
        "peers": f.peers.iter().map(|p| json!({
            "peer_id": p.peer_id,
            "host": p.host,
            "port": p.port,
            "shared_at": time(p.shared_at),
            "last_seen": time(p.last_seen),
            "path": p.path,
            "partial": p.have.is_some(),
            "pieces_have": pieces_have(f, p),
        })).collect::<Vec<_>>(),
    })
}

/// The line after a page of results: which files were shown of how many, and what reaches
/// the others (only what can help: a wider page up to the index's maximum, the next page).
pub fn page_summary(
    search: &Search,
    shown_files: usize,
    truncated: bool,
    (total, estimated): (u64, bool),
) -> String {
    let first = u64::from(search.offset) + 1;
    let last = u64::from(search.offset) + shown_files as u64;
    let of = if estimated {
        format!("about {total}")
    } else {
        total.to_string()
    };
    let mut line = match (shown_files, total) {
        (0, _) => format!("no files on this page of {of}"),
        (_, t) if t <= 1 => "1 file".to_string(),
        _ if first == 1 && !truncated => format!("{of} files"),
        _ => format!("files {first}-{last} of {of}"),
    };
    if truncated {
        let page = search.offset / search.limit.max(1) + 2;
        line += &format!("; --page {page} for the next {}", search.limit);
        if search.limit < MAX_SEARCH_LIMIT {
            line += &format!(" (or --limit up to {MAX_SEARCH_LIMIT})");
        }
    }
    line
}

pub fn search(
    out: &mut impl Write,
    search: &Search,
    r: &SearchResults,
    as_json: bool,
) -> io::Result<()> {
    if as_json {
        let doc = json!({
            "query": search.query,
            "total": r.total,
            "total_estimated": r.estimated,
            "offset": search.offset,
            "truncated": r.truncated,
            "files": r.files.iter().map(file_json).collect::<Vec<_>>(),
        });
        return writeln!(out, "{}", peershare::text::json_safe(&format!("{doc:#}")));
    }
    for f in &r.files {
        file_line(out, &f.content_id, f.size, &f.name)?;
        let pieces = PieceLayout::new(f.size).piece_count();
        for p in &f.peers {
            let partial = match pieces_have(f, p) {
                Some(n) => format!("  (downloading: {n} of {pieces} pieces)"),
                None => String::new(),
            };
            writeln!(
                out,
                "    peer {:<5} {}:{}  {}  shared {}  last seen {}{partial}",
                p.peer_id,
                shown(&p.host),
                p.port,
                shown(p.path.as_deref().unwrap_or(&f.name)),
                time(p.shared_at),
                time(p.last_seen)
            )?;
        }
    }
    if !r.files.is_empty() || r.total > 0 {
        writeln!(
            out,
            "({})",
            page_summary(search, r.files.len(), r.truncated, (r.total, r.estimated))
        )?;
    }
    Ok(())
}

/// Search results merged from an index and the DHT, saying where each source came from.
pub fn search_merged(
    out: &mut impl Write,
    search: &Search,
    files: &[peershare::dht::DhtFile],
    (truncated, total, estimated): (bool, u64, bool),
    as_json: bool,
) -> io::Result<()> {
    if as_json {
        let doc = json!({
            "query": search.query,
            "total": total,
            "total_estimated": estimated,
            "offset": search.offset,
            "truncated": truncated,
            "files": super::dht::merged_json(files),
        });
        return writeln!(out, "{}", peershare::text::json_safe(&format!("{doc:#}")));
    }
    for f in files {
        file_line(out, &f.content_id, f.size, &f.name)?;
        for p in &f.peers {
            let id = if p.peer.peer_id == 0 {
                "-".to_string()
            } else {
                p.peer.peer_id.to_string()
            };
            let via = [
                p.via_index.then_some("index"),
                p.via_dht.then_some("dht"),
                p.via_lan.then_some("lan"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("+");
            writeln!(
                out,
                "    peer {id:<5} {}:{}  {}  via {via}",
                shown(&p.peer.host),
                p.peer.port,
                shown(p.peer.path.as_deref().unwrap_or(&f.name)),
            )?;
        }
    }
    if !files.is_empty() {
        writeln!(
            out,
            "({})",
            page_summary(search, files.len(), truncated, (total, estimated))
        )?;
    }
    Ok(())
}

pub fn peers(out: &mut impl Write, list: &PeerList, as_json: bool) -> io::Result<()> {
    if as_json {
        let doc = json!({
            "peers": list.peers.iter().map(|p| json!({
                "peer_id": p.peer_id,
                "host": p.host,
                "port": p.port,
                "files": p.files,
                "last_seen": time(p.last_seen),
                "live": p.live,
            })).collect::<Vec<_>>(),
        });
        return writeln!(out, "{}", peershare::text::json_safe(&format!("{doc:#}")));
    }
    writeln!(
        out,
        "{:<6} {:<28} {:>8}  {:<21} STATUS",
        "ID", "ADDRESS", "FILES", "LAST SEEN"
    )?;
    for p in &list.peers {
        writeln!(
            out,
            "{:<6} {:<28} {:>8}  {:<21} {}",
            p.peer_id,
            format!("{}:{}", shown(&p.host), p.port),
            p.files,
            time(p.last_seen),
            if p.live { "live" } else { "expired" }
        )?;
    }
    Ok(())
}

/// The `--json` document of `get`: every finished download, and why the others failed.
#[derive(serde::Serialize)]
pub struct GetJson<'a> {
    pub downloads: Vec<DownloadJson<'a>>,
    pub failed: &'a [String],
}

/// One finished download as `get --json` prints it (serialized directly: thousands of
/// downloads print in milliseconds).
#[derive(serde::Serialize)]
pub struct DownloadJson<'a> {
    content_id: String,
    path: &'a std::path::Path,
    size: u64,
    seconds: f64,
    bytes_fetched: u64,
    bytes_resumed: u64,
    sources_used: usize,
    pieces_rejected: u64,
    sources: &'a [peershare::download::SourceReport],
    /// `downloaded`, or `already_have`: the file was already at `already_at` (and `path`),
    /// nothing was fetched.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    already_at: Option<&'a std::path::Path>,
}

impl<'a> DownloadJson<'a> {
    pub fn new(r: &'a DownloadReport) -> Self {
        DownloadJson {
            content_id: r.content_id.to_hex(),
            path: &r.path,
            size: r.size,
            seconds: r.seconds,
            bytes_fetched: r.bytes_fetched,
            bytes_resumed: r.bytes_resumed,
            sources_used: r.sources_used(),
            pieces_rejected: r.pieces_rejected,
            sources: &r.sources,
            status: if r.already_had {
                "already_have"
            } else {
                "downloaded"
            },
            already_at: r.already_had.then_some(r.path.as_path()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(size(12), "12 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(time(i64::MAX), "9999-12-31T23:59:59Z");
    }
}
