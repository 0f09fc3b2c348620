//! `peershare browse`: what one peer shares under a directory, from the index's listing (directories with sizes and file counts, then files).

use std::io::Write;

use anyhow::bail;
use serde_json::json;

use super::output::{shown, size};
use super::{IndexAddr, connect};
use peershare::node::MAX_FOLDER_FILES;
use peershare::protocol::{Browse, DirEntry, ListedFile, MAX_BROWSE_LIMIT};

/// What `peershare browse` was asked.
#[derive(Debug, clap::Args)]
pub struct BrowseArgs {
    /// The peer, by its id at the index (as `peers` and `search` show it)
    #[arg(value_name = "PEER_ID")]
    pub peer: u64,
    /// A directory of its share (`docs/python3`); the top if left out
    #[arg(value_name = "PATH")]
    pub path: Option<String>,
    /// Every file below the directory, with its path, instead of what is directly in it
    #[arg(short, long)]
    pub recursive: bool,
    #[command(flatten)]
    pub index: IndexAddr,
    /// Print one JSON document
    #[arg(long)]
    pub json: bool,
}

/// Runs `peershare browse`: every page of the listing (the index sends at most 1000 entries
/// a page), then one table or one JSON document.
pub async fn run_browse(a: BrowseArgs) -> anyhow::Result<()> {
    let mut client = connect(&a.index.resolve(false).unwrap_or_default()).await?;
    let (mut dirs, mut files): (Vec<DirEntry>, Vec<ListedFile>) = (Vec::new(), Vec::new());
    let mut offset = 0;
    let first = loop {
        let page = client
            .browse(Browse {
                peer_id: a.peer,
                path: a.path.clone().unwrap_or_default(),
                recursive: a.recursive,
                offset,
                limit: MAX_BROWSE_LIMIT,
            })
            .await?;
        let got = page.dirs.len() + page.files.len();
        dirs.extend(page.dirs.iter().cloned());
        files.extend(page.files.iter().cloned());
        if dirs.len() + files.len() > MAX_FOLDER_FILES {
            bail!("the listing has more than {MAX_FOLDER_FILES} entries; browse a subdirectory");
        }
        match page.next {
            None => break page,
            Some(n) if n > offset && got > 0 => offset = n,
            Some(_) => bail!("the index's listing does not page forward"),
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.json {
        let doc = json!({
            "peer_id": first.peer_id,
            "path": first.path,
            "file": first.file,
            "total": first.total,
            "dirs": dirs.iter().map(|d| json!({
                "name": d.name, "size": d.size, "files": d.files,
            })).collect::<Vec<_>>(),
            "files": files.iter().map(|f| json!({
                "path": f.path,
                "size": f.size,
                "content_id": f.content_id.to_hex(),
                "mtime": f.mtime,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", peershare::text::json_safe(&format!("{doc:#}")))?;
        return Ok(out.flush()?);
    }
    let what = match first.path.as_str() {
        "" => "/".to_string(),
        p => shown(p).into_owned(),
    };
    writeln!(
        out,
        "peer {} {what}: {}, {}",
        first.peer_id,
        count(dirs.len() as u64, "directory", "directories"),
        count(files.len() as u64, "file", "files")
    )?;
    for d in &dirs {
        writeln!(
            out,
            "{:>10}  {:<64}  {}/",
            size(d.size),
            count(d.files, "file", "files"),
            shown(&d.name)
        )?;
    }
    for f in &files {
        writeln!(
            out,
            "{:>10}  {}  {}",
            size(f.size),
            f.content_id.to_hex(),
            shown(&f.path)
        )?;
    }
    Ok(out.flush()?)
}

/// "1 file", "2 files".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
