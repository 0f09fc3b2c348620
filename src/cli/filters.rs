//! Search filters on the command line (`--ext`, `--type`, sizes, dates) and paging, shared by
//! `search` and `get --query`.

use std::time::{SystemTime, UNIX_EPOCH};

use peershare::protocol::{MAX_SEARCH_LIMIT, MAX_SEARCH_OFFSET, Search};
use peershare::query::Filters;

/// Extensions of each `--type`.
pub const TYPES: [(&str, &[&str]); 5] = [
    (
        "audio",
        &[
            "mp3", "flac", "ogg", "oga", "opus", "m4a", "aac", "wav", "wma", "aiff", "ape", "mka",
        ],
    ),
    (
        "video",
        &[
            "mp4", "mkv", "avi", "mov", "webm", "wmv", "flv", "m4v", "mpg", "mpeg", "ts", "ogv",
        ],
    ),
    (
        "image",
        &[
            "jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff", "svg", "heic", "raw", "ico",
        ],
    ),
    (
        "document",
        &[
            "pdf", "epub", "mobi", "djvu", "doc", "docx", "odt", "rtf", "txt", "md", "tex", "xls",
            "xlsx", "ods", "ppt", "pptx", "odp", "html", "htm",
        ],
    ),
    (
        "archive",
        &[
            "zip", "tar", "gz", "tgz", "bz2", "xz", "zst", "7z", "rar", "iso", "deb", "rpm",
        ],
    ),
];

/// What to look for beside the words.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only names with these extensions (comma-separated, repeatable), e.g. pdf,epub
    #[arg(long = "ext", value_name = "EXT,...", value_delimiter = ',')]
    pub exts: Vec<String>,
    /// Only files of this kind (by extension): audio, video, image, document, archive
    #[arg(long = "type", value_name = "KIND", value_parser = ["audio", "video", "image", "document", "archive"])]
    pub kinds: Vec<String>,
    /// Only files of at least this size, e.g. 10MiB
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub min_size: Option<u64>,
    /// Only files of at most this size, e.g. 700MB
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_size: Option<u64>,
    /// Only files modified on or after this date (2024-01-31, an RFC 3339 time, or an age such
    /// as 30days)
    #[arg(long, value_parser = parse_when, value_name = "DATE|AGE")]
    pub newer: Option<i64>,
    /// Only files modified before this date (as for --newer)
    #[arg(long, value_parser = parse_when, value_name = "DATE|AGE")]
    pub older: Option<i64>,
    /// Leave out files whose path holds this word (repeatable; also written -WORD among the
    /// words)
    #[arg(long = "exclude", value_name = "WORD")]
    pub exclude: Vec<String>,
}

impl FilterArgs {
    /// The filters these flags ask for.
    pub fn filters(&self) -> Filters {
        let mut exts: Vec<String> = self
            .exts
            .iter()
            .map(|e| e.trim().trim_start_matches('.').to_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        for kind in &self.kinds {
            if let Some((_, list)) = TYPES.iter().find(|(k, _)| k == kind) {
                exts.extend(list.iter().map(|e| e.to_string()));
            }
        }
        Filters {
            exts,
            min_size: self.min_size,
            max_size: self.max_size,
            newer: self.newer,
            older: self.older,
        }
        .normalized()
    }

    /// The query words with the excluded ones written back in as `-word` (quoted when they
    /// hold a space).
    pub fn query(&self, words: &[String]) -> String {
        let mut q = words.join(" ");
        for x in &self.exclude {
            let x = x.trim();
            if x.is_empty() {
                continue;
            }
            if !q.is_empty() {
                q.push(' ');
            }
            if x.contains(char::is_whitespace) && !x.starts_with('"') {
                q += &format!("-\"{x}\"");
            } else {
                q += &format!("-{x}");
            }
        }
        q
    }

    /// A `Search` of `query` with these filters, for the page starting at `offset`.
    pub fn search(&self, query: &str, limit: u32, offset: u32) -> Search {
        let mut s = Search {
            query: query.to_string(),
            limit,
            offset,
            ..Search::default()
        };
        s.set_filters(self.filters());
        s
    }
}

/// Most results per page: the index's limit.
pub fn limit_parser() -> clap::builder::RangedU64ValueParser<u32> {
    clap::builder::RangedU64ValueParser::<u32>::new().range(1..=u64::from(MAX_SEARCH_LIMIT))
}

/// The offset of page `page` (1-based) of `limit` results, or why it is past the index's reach.
pub fn offset_of(page: u32, limit: u32) -> anyhow::Result<u32> {
    let offset = u64::from(page.saturating_sub(1)) * u64::from(limit);
    if offset > u64::from(MAX_SEARCH_OFFSET) {
        anyhow::bail!(
            "--page {page} starts past result {MAX_SEARCH_OFFSET}, the most an index pages to; narrow the query"
        );
    }
    Ok(offset as u32)
}

/// A size such as `10MiB`, `700MB` or `1234` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    peershare::rate::parse_rate(s).map_err(|e| e.replace("rate like", "size like"))
}

/// A date (`2024-01-31`), an RFC 3339 time, or an age (`30days`: that long ago), as seconds
/// since the Unix epoch.
pub fn parse_when(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let at = if let Ok(age) = humantime::parse_duration(t) {
        SystemTime::now()
            .checked_sub(age)
            .ok_or_else(|| format!("{s:?} is too long ago"))?
    } else if let Ok(time) = humantime::parse_rfc3339_weak(t) {
        time
    } else if let Ok(time) = humantime::parse_rfc3339_weak(&format!("{t} 00:00:00")) {
        time
    } else {
        return Err(format!(
            "{s:?} is not a date (2024-01-31), a time (2024-01-31T12:00:00Z) or an age (30days)"
        ));
    };
    Ok(match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

/// Rewrites `-word` arguments of `search` (and of `get` after `--query`) into
/// `--exclude=word`, so that clap does not take them for unknown flags: a query can then be
/// typed as it reads (`peershare search stdio.h -bits`). A lone `-x` that is one of the
/// subcommand's short flags is left alone, as is everything after `--`.
pub fn rewrite_exclusions(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let cmd = super::Cli::command();
    let Some((at, sub)) = args.iter().enumerate().skip(1).find_map(|(i, a)| {
        let a = a.to_str()?;
        cmd.find_subcommand(a).map(|s| (i, s))
    }) else {
        return args;
    };
    // `wish add WORDS`: the words follow `add`.
    let (at, sub) = match sub.get_name() {
        "wish" => {
            let add = args.iter().enumerate().skip(at + 1).find_map(|(i, a)| {
                (a.to_str()? == "add")
                    .then(|| sub.find_subcommand("add"))
                    .flatten()
                    .map(|s| (i, s))
            });
            match add {
                Some(found) => found,
                None => return args,
            }
        }
        _ => (at, sub),
    };
    let name = sub.get_name();
    if name != "search" && name != "get" && name != "add" {
        return args;
    }
    let shorts: Vec<char> = sub.get_arguments().filter_map(|a| a.get_short()).collect();
    let mut on = name != "get";
    let mut out = args[..=at].to_vec();
    let mut rest = args[at + 1..].iter();
    for a in rest.by_ref() {
        let Some(s) = a.to_str() else {
            out.push(a.clone());
            continue;
        };
        if s == "--" {
            out.push(a.clone());
            break;
        }
        if s == "--query" {
            on = true;
        }
        // `-o` alone is a flag; `-old` is a word (write `-o DIR` apart among the words).
        let word = s.strip_prefix('-').filter(|w| {
            let flag = w.chars().count() == 1 && w.starts_with(|c: char| shorts.contains(&c));
            !w.is_empty() && !w.starts_with('-') && !flag
        });
        match word {
            Some(w) if on => out.push(format!("--exclude={w}").into()),
            _ => out.push(a.clone()),
        }
    }
    out.extend(rest.cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_extensions_make_one_sorted_list() {
        let f = FilterArgs {
            exts: vec![".PDF".into(), "epub".into()],
            kinds: vec!["document".into()],
            ..FilterArgs::default()
        }
        .filters();
        assert!(f.exts.contains(&"pdf".to_string()) && f.exts.contains(&"docx".to_string()));
        assert!(f.exts.windows(2).all(|w| w[0] < w[1]));
        assert!(f.check().is_ok());
    }

    #[test]
    fn dates_times_and_ages() {
        assert_eq!(parse_when("2024-01-31"), Ok(1_706_659_200));
        assert_eq!(parse_when("2024-01-31T00:00:10Z"), Ok(1_706_659_210));
        let day_ago = parse_when("1day").unwrap_or(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        assert!((now - 86_400 - day_ago).abs() < 5);
        assert!(parse_when("yesterday-ish").is_err());
        assert_eq!(parse_size("10KiB"), Ok(10_240));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("ten").is_err());
    }

    #[test]
    fn minus_words_become_exclusions() {
        let args = |v: &[&str]| -> Vec<String> {
            rewrite_exclusions(v.iter().map(std::ffi::OsString::from))
                .into_iter()
                .map(|a| a.into_string().unwrap_or_default())
                .collect()
        };
        assert_eq!(
            args(&[
                "peershare",
                "search",
                "stdio.h",
                "-bits",
                "--index",
                "h:1",
                "-x"
            ]),
            [
                "peershare",
                "search",
                "stdio.h",
                "--exclude=bits",
                "--index",
                "h:1",
                "--exclude=x"
            ]
        );
        assert_eq!(
            args(&["p", "--state-dir", "d", "search", "a", "--", "-b"]),
            ["p", "--state-dir", "d", "search", "a", "--", "-b"]
        );
        assert_eq!(
            args(&["p", "get", "-o", "x", "--query", "a", "-b", "-o", "y"]),
            [
                "p",
                "get",
                "-o",
                "x",
                "--query",
                "a",
                "--exclude=b",
                "-o",
                "y"
            ]
        );
        assert_eq!(args(&["p", "peers", "-x"]), ["p", "peers", "-x"]);
        assert_eq!(
            args(&["p", "wish", "add", "changelog", "-old", "-o", "d", "-x"]),
            [
                "p",
                "wish",
                "add",
                "changelog",
                "--exclude=old",
                "-o",
                "d",
                "--exclude=x"
            ]
        );
        assert_eq!(
            args(&["p", "wish", "remove", "-1"]),
            ["p", "wish", "remove", "-1"]
        );
        let f = FilterArgs {
            exclude: vec!["b".into(), "old stuff".into()],
            ..FilterArgs::default()
        };
        assert_eq!(f.query(&["a".into()]), "a -b -\"old stuff\"");
    }

    #[test]
    fn pages_stop_where_the_index_stops() {
        assert_eq!(offset_of(1, 100).ok(), Some(0));
        assert_eq!(offset_of(3, 100).ok(), Some(200));
        assert!(offset_of(2_002, 100).is_err());
    }
}
