//! `peershare wish`: saved searches that `share` repeats (or `wish run` runs now), each new
//! match downloaded once ([`peershare::node::WishList`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;

use super::filters::FilterArgs;
use super::{IndexAddr, connect, output};
use peershare::node::{
    GetOptions, MAX_WISH_MATCHES, MAX_WISH_NEW, Wish, WishError, WishEvent, WishList, WishOptions,
    run_round,
};
use peershare::query::Filters;
use peershare::text::Escaped;

#[derive(Debug, clap::Subcommand)]
pub enum WishCommand {
    /// Save a search: `peershare share` repeats it every --wish-interval (and `wish run` now),
    /// downloading each new match once into DIR
    Add {
        /// Words to look for, as `search` reads them (-word to exclude, "a phrase"), or a
        /// content id
        #[arg(required = true, value_name = "WORDS")]
        words: Vec<String>,
        #[command(flatten)]
        filters: FilterArgs,
        /// Directory to download its files into [default: the current directory]
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// List the wishes: query, filters, directory, files fetched, last run
    List {
        /// Print one JSON document
        #[arg(long)]
        json: bool,
    },
    /// Remove a wish (the files it downloaded stay)
    Remove {
        /// The wish's number, as `wish list` shows it
        #[arg(value_name = "ID")]
        id: u32,
    },
    /// Run every wish once now, in the foreground, printing what was downloaded; exits
    /// non-zero if the index cannot be reached or a download failed
    Run {
        #[command(flatten)]
        index: IndexAddr,
        /// Most new files per wish in this run (of its best 1000 matches)
        #[arg(long, default_value_t = MAX_WISH_NEW, value_name = "N")]
        max_new: usize,
        /// Most files downloaded at once
        #[arg(long, default_value_t = 3, value_name = "N")]
        parallel: usize,
    },
}

/// Runs a `wish` subcommand.
pub async fn run(cmd: WishCommand, state: &Path) -> anyhow::Result<()> {
    let list = WishList::new(state);
    match cmd {
        WishCommand::Add {
            words,
            filters,
            output,
        } => {
            let query = filters.query(&words);
            let dir = output.unwrap_or_else(|| PathBuf::from("."));
            let wish = list.add(&query, filters.filters(), &dir)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "wish {}: {}{} into {}",
                wish.id,
                output::shown(&wish.query),
                match describe(&wish.filters) {
                    d if d.is_empty() => String::new(),
                    d => format!(" ({d})"),
                },
                output::shown(&wish.dir.display().to_string())
            )?;
            writeln!(
                out,
                "`peershare share` looks for it every --wish-interval (15m by default), \
                 `peershare wish run` now; each new match is downloaded once"
            )?;
            Ok(())
        }
        WishCommand::List { json } => {
            let wishes = list.load()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if json {
                let doc = WishesJson {
                    file: list.file().display().to_string(),
                    wishes: wishes.iter().map(WishJson::new).collect(),
                };
                let text = serde_json::to_string_pretty(&doc)?;
                writeln!(out, "{}", peershare::text::json_safe(&text))?;
            } else if wishes.is_empty() {
                writeln!(out, "no wishes (add one with `peershare wish add WORDS`)")?;
            } else {
                for w in &wishes {
                    list_text(&mut out, w)?;
                }
            }
            out.flush()?;
            Ok(())
        }
        WishCommand::Remove { id } => match list.remove(id) {
            Ok(w) => {
                println!(
                    "removed wish {}: {} (its {} downloaded files stay in {})",
                    w.id,
                    output::shown(&w.query),
                    w.fetched_total,
                    output::shown(&w.dir.display().to_string())
                );
                Ok(())
            }
            Err(WishError::NoSuchWish(id)) => {
                bail!("no wish {id}; `peershare wish list` shows their numbers")
            }
            Err(e) => Err(e.into()),
        },
        WishCommand::Run {
            index,
            max_new,
            parallel,
        } => {
            // Read first: a broken list is said before the index is asked.
            if list.load()?.is_empty() {
                println!("no wishes (add one with `peershare wish add WORDS`)");
                return Ok(());
            }
            peershare::protocol::raise_open_file_limit();
            let mut client = connect(&index.resolve(false).unwrap_or_default()).await?;
            let ctx = super::client_context()?;
            let opts = WishOptions {
                get: GetOptions {
                    tls: Some(ctx.tls.clone()),
                    ..GetOptions::default()
                },
                parallel: parallel.max(1),
                max_new: max_new.max(1),
                own_key: Some(ctx.tls.public_key()),
            };
            let round = run_round(&list, &mut client, &opts, &print_event).await?;
            match (round.failed, round.skipped) {
                (0, 0) => Ok(()),
                (f, 0) => bail!("{f} downloads failed; the next round tries them again"),
                (0, s) => bail!("{s} wishes could not be run"),
                (f, s) => bail!(
                    "{f} downloads failed (the next round tries them again) and {s} wishes \
                     could not be run"
                ),
            }
        }
    }
}

/// What `wish run` prints as it goes: a line per wish, the path of each file downloaded
/// (stdout), failures (stderr).
fn print_event(e: WishEvent<'_>) {
    // A closed stdout does not stop the downloads (they are recorded all the same).
    let mut out = std::io::stdout().lock();
    let _ = match e {
        WishEvent::Searched {
            wish,
            matches,
            total,
            new,
            more,
        } => writeln!(
            out,
            "wish {} \"{}\": {new} new of {} matching{}",
            wish.id,
            output::shown(&wish.query),
            total.max(matches as u64),
            match (more, total > MAX_WISH_MATCHES as u64) {
                (true, _) => "; more next run",
                (false, true) => "; only the best 1000 are looked at: narrow it",
                _ => "",
            }
        ),
        WishEvent::Fetched { report, .. } => {
            writeln!(out, "{}", output::shown(&report.path.display().to_string()))
        }
        WishEvent::Skipped { wish, error } => {
            let _ = out.flush();
            eprintln!("peershare: wish {} not run: {}", wish.id, Escaped(&error));
            Ok(())
        }
        WishEvent::Failed { wish, hit, error } => {
            let _ = out.flush();
            let e = peershare::text::error_chain(error);
            eprintln!(
                "peershare: wish {}: {} not downloaded: {}",
                wish.id,
                output::shown(&hit.name),
                Escaped(&e)
            );
            Ok(())
        }
    };
    let _ = out.flush();
}

/// The filters in words, e.g. `ext gz,pdf; at least 10.0 KiB`.
pub fn describe(f: &Filters) -> String {
    let mut parts = Vec::new();
    if !f.exts.is_empty() {
        parts.push(format!("ext {}", f.exts.join(",")));
    }
    if let Some(n) = f.min_size {
        parts.push(format!("at least {}", output::size(n)));
    }
    if let Some(n) = f.max_size {
        parts.push(format!("at most {}", output::size(n)));
    }
    if let Some(t) = f.newer {
        parts.push(format!("modified since {}", date(t)));
    }
    if let Some(t) = f.older {
        parts.push(format!("modified before {}", date(t)));
    }
    parts.join("; ")
}

/// Seconds since the Unix epoch as an RFC 3339 time.
fn date(secs: i64) -> String {
    let d = std::time::Duration::from_secs(secs.unsigned_abs());
    let t = match secs >= 0 {
        true => std::time::UNIX_EPOCH.checked_add(d),
        false => std::time::UNIX_EPOCH.checked_sub(d),
    };
    match t {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => format!("{secs} s after 1970"),
    }
}

fn list_text(out: &mut impl Write, w: &Wish) -> std::io::Result<()> {
    writeln!(out, "wish {}: {}", w.id, output::shown(&w.query))?;
    let filters = describe(&w.filters);
    if !filters.is_empty() {
        writeln!(out, "  filters: {filters}")?;
    }
    writeln!(
        out,
        "  into:    {}",
        output::shown(&w.dir.display().to_string())
    )?;
    let last = match (w.last_run, &w.last_outcome) {
        (Some(t), Some(o)) => format!("{} ({})", date(t), output::shown(o)),
        (Some(t), None) => date(t),
        _ => "never".into(),
    };
    writeln!(
        out,
        "  fetched: {} files; last run: {last}",
        w.fetched_total
    )
}

#[derive(Serialize)]
struct WishesJson<'a> {
    file: String,
    wishes: Vec<WishJson<'a>>,
}

#[derive(Serialize)]
struct FiltersJson<'a> {
    exts: &'a [String],
    min_size: Option<u64>,
    max_size: Option<u64>,
    newer: Option<String>,
    older: Option<String>,
}

#[derive(Serialize)]
struct WishJson<'a> {
    id: u32,
    query: &'a str,
    filters: FiltersJson<'a>,
    dir: String,
    created: String,
    last_run: Option<String>,
    last_outcome: Option<&'a str>,
    /// Files downloaded for it in all.
    fetched: u64,
}

impl<'a> WishJson<'a> {
    fn new(w: &'a Wish) -> Self {
        WishJson {
            id: w.id,
            query: &w.query,
            filters: FiltersJson {
                exts: &w.filters.exts,
                min_size: w.filters.min_size,
                max_size: w.filters.max_size,
                newer: w.filters.newer.map(date),
                older: w.filters.older.map(date),
            },
            dir: w.dir.display().to_string(),
            created: date(w.created),
            last_run: w.last_run.map(date),
            last_outcome: w.last_outcome.as_deref(),
            fetched: w.fetched_total,
        }
    }
}
