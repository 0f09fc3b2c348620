//! "2 - Run Peer": searching the index and downloading a match, or registering a directory
//! and serving it, in the original's words.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use super::super::errors::chain_line as one_line;
use super::prompt::{self, Prompter};
use super::{End, Menu, logs};
use crate::cli::output::{pieces_have, size, time};
use crate::cli::{client_context, connect, interrupt_token};
use peershare::content::PieceLayout;
use peershare::node::{GetOptions, ShareConfig, download_hit, start_share};
use peershare::protocol::{FileHit, SearchResults};

/// Most files one search lists: the default `--limit` of `peershare search`, so that the
/// menu finds what the command finds. When more match, the menu says so.
pub const SEARCH_LIMIT: u32 = 100;

/// Where downloads go instead of the current directory, when set.
pub const DOWNLOAD_DIR_ENV: &str = "PEERSHARE_DOWNLOAD_DIR";

impl<R: BufRead, W: Write> Menu<'_, R, W> {
    /// The peer's questions: the index's port and IP, then search or register, until the
    /// user quits or registers.
    pub(super) fn peer(&mut self) -> Result<(), End> {
        self.p.say("Welcome Client.");
        let port = self
            .p
            .ask("Please enter server's port number", prompt::port(false))?;
        let host = self.p.ask(
            "Please enter servers IP number in the following format XXX.XXX.XXX.XXX and 0 for localhost",
            prompt::host,
        )?;
        let index = SocketAddr::new(host.ip, port).to_string();
        loop {
            let pick = self.p.menu(
                &[
                    "1 - Search for a filename and download it.",
                    "2 - Register to the indexing server.",
                ],
                "Please select whichever you want.",
            )?;
            match pick {
                1 => self.search(&index)?,
                _ => return self.register(&index),
            }
        }
    }

    /// "1 - Search for a filename and download it.": the CLI's search, every match shown in
    /// the original's lines, then the download of one match from one peer.
    fn search(&mut self, index: &str) -> Result<(), End> {
        let query = self.p.ask(
            "Please enter the filename to search for (one or more words)",
            |a| match a.is_empty() {
                true => Err("Please enter a filename, or words of one".to_string()),
                false => Ok(a.to_string()),
            },
        )?;
        let found = self.asking.block_on(async {
            let mut c = connect(index).await?;
            anyhow::Ok(c.search(&query, SEARCH_LIMIT).await?)
        });
        let results = match found {
            Ok(r) => r,
            Err(e) => {
                self.p.say(&format!("Search failed: {}", one_line(&e)));
                self.failures += 1;
                return Ok(());
            }
        };
        if results.files.is_empty() {
            self.p
                .say(&format!("File {query} was not found in any peer."));
            self.failures += 1;
            return Ok(());
        }
        show(&mut self.p, &query, &results);
        let n = results.files.len();
        if n > 1 {
            self.p.say(&format!(
                "Answer Y to download match 1, or the number of the match to download (1-{n})."
            ));
        }
        let pick = self.p.ask("Do you want to download it (Y/N):", |a| {
            match a.to_ascii_lowercase().as_str() {
                "y" | "yes" => Ok(Some(0)),
                "n" | "no" => Ok(None),
                k => match k.parse::<usize>() {
                    Ok(k) if (1..=n).contains(&k) => Ok(Some(k - 1)),
                    _ if n > 1 => Err(format!(
                        "Please answer Y or N, or a match number from 1 to {n}"
                    )),
                    _ => Err("Please answer Y or N".to_string()),
                },
            }
        })?;
        let Some(file) = pick.and_then(|k| results.files.get(k)) else {
            return Ok(());
        };
        self.download(file)
    }

    /// "Please specify Peer ID", then the download into the current directory (or
    /// `PEERSHARE_DOWNLOAD_DIR`), verified against the content id.
    fn download(&mut self, file: &FileHit) -> Result<(), End> {
        let ids: Vec<u64> = file.peers.iter().map(|x| x.peer_id).collect();
        if ids.is_empty() {
            // Only a broken or hostile index lists a file without a peer: nothing to ask.
            self.p.say("No peer is listed for this file.");
            self.failures += 1;
            return Ok(());
        }
        let peer = self
            .p
            .ask("Please specify Peer ID", |a| match a.parse::<u64>() {
                Ok(id) if ids.contains(&id) => Ok(id),
                _ => Err(format!(
                    "\"{a}\" is not one of the peers listed for this file: {}",
                    ids.iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            })?;
        let dir = download_dir();
        let got = self.asking.block_on(async {
            let ctx = client_context()?;
            let opts = GetOptions {
                only_peer: Some(peer),
                // A member of a private group downloads as the member it is.
                tls: Some(ctx.tls.clone()),
                // A file already in the directory is not downloaded again.
                have_already: Some(std::sync::Arc::new(peershare::node::HaveAlready::new(
                    Vec::new(),
                    Some(&ctx.state),
                ))),
                ..GetOptions::default()
            };
            anyhow::Ok(download_hit(file, 0, &dir, &opts).await?)
        });
        match got {
            Ok(r) => {
                self.p.say("Successfully got the file");
                let saved = if r.already_had {
                    "Already there, not downloaded again:"
                } else {
                    "Saved as"
                };
                self.p.say(&format!(
                    "{saved} {} ({}, verified against content id {})",
                    r.path.display(),
                    size(r.size),
                    r.content_id
                ));
                self.p.say("connection closed");
            }
            Err(e) => {
                self.p.say(&format!("Download failed: {}", one_line(&e)));
                self.failures += 1;
            }
        }
        Ok(())
    }

    /// "2 - Register to the indexing server.": asks where to serve and what, registers, and
    /// serves until interrupted.
    fn register(&mut self, index: &str) -> Result<(), End> {
        let port = self
            .p
            .ask("Please enter your port number", prompt::port(true))?;
        let host = self.p.ask(
            "Please enter your IP number in the following format XXX.XXX.XXX.XXX and 0 for localhost",
            prompt::host,
        )?;
        let dir = self.p.ask(
            "Please enter the directory path of which you want to share its files.",
            existing_dir,
        )?;
        let rt = logs::serving(&self.logs)?;
        let listen = SocketAddr::new(host.ip, port);
        let r = rt.block_on(share(&mut self.p, index, dir, listen, self.state));
        rt.shutdown_timeout(Duration::from_secs(5));
        Ok(r?)
    }
}

/// Prints every match in the original's lines, each block headed by its number, size and
/// content id; then whether more files matched than were listed.
fn show<R: BufRead, W: Write>(p: &mut Prompter<R, W>, query: &str, r: &SearchResults) {
    let n = r.files.len();
    if n > 1 {
        p.say(&format!("{n} files match {query}:"));
    }
    for (i, f) in r.files.iter().enumerate() {
        p.say(&format!(
            "Match {} of {n}: {}, content id {}",
            i + 1,
            size(f.size),
            f.content_id
        ));
        p.say(&format!(
            "File {} was found in the following one or more peers. Peer/s details are:",
            f.name
        ));
        for peer in &f.peers {
            p.say(&format!("Peer ID: {}", peer.peer_id));
            p.say(&format!("Peer port: {}", peer.port));
            p.say(&format!("Peer host: {}", peer.host));
            p.say(&format!("File shared at: {}", shared_at(peer.shared_at)));
            if let Some(path) = &peer.path {
                p.say(&format!("File path at the peer: {path}"));
            }
            if let Some(k) = pieces_have(f, peer) {
                p.say(&format!(
                    "Peer has {k} of {} pieces (still downloading)",
                    PieceLayout::new(f.size).piece_count()
                ));
            }
            p.say("-----");
        }
    }
    if r.truncated {
        p.say(&format!(
            "More files matched than the {n} listed ({}{} in all); add words to narrow the search.",
            if r.estimated { "about " } else { "" },
            r.total
        ));
    }
}

/// "2022-01-03 19:51:33 UTC", as the original showed times (it showed local time, unlabelled).
fn shared_at(ms: i64) -> String {
    let t = time(ms);
    format!("{} UTC", t.trim_end_matches('Z').replacen('T', " ", 1))
}

/// Where a download goes: `PEERSHARE_DOWNLOAD_DIR` if set, else the current directory.
fn download_dir() -> PathBuf {
    match std::env::var_os(DOWNLOAD_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}

fn existing_dir(answer: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(answer);
    if !answer.is_empty() && p.is_dir() {
        Ok(p)
    } else {
        Err(format!(
            "\"{answer}\" is not an existing directory; please enter the path of one"
        ))
    }
}

/// Shares `dir` as `peershare share` does (the index's pinned key required, as a member for
/// a private group's index), says so in the original's words once registered, and serves
/// until interrupted.
async fn share<R: BufRead, W: Write>(
    p: &mut Prompter<'_, R, W>,
    index: &str,
    dir: PathBuf,
    listen: SocketAddr,
    state: &Path,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let ctx = client_context()?;
    let key = match ctx.known.pinned(index)? {
        Some(k) => Some(k.0),
        None => connect(index).await.ok().map(|c| c.server_key()),
    };
    let group = match (&ctx.member, key) {
        (Some(m), Some(key)) if m.group().is_some_and(|g| g.0 == key) => ctx.tls.group().cloned(),
        (Some(m), None) if m.index == index => ctx.tls.group().cloned(),
        _ => None,
    };
    let mut config = ShareConfig::new(vec![dir], Some(index.to_string()), state.to_path_buf());
    config.index_key = key;
    config.group = group;
    let mut handle = start_share(config, listener).await?;
    let files = handle.status.borrow().files_shared;
    p.say(&format!(
        "peershare share listening on {} ({files} files)",
        handle.local_addr
    ));
    let stop = interrupt_token();
    let (mut registered, mut error) = (None, None);
    loop {
        let s = handle.status.borrow_and_update().clone();
        if let (Some(id), Some(files), true) = (s.peer_id, s.files_registered, s.in_sync)
            && registered != Some((id, files))
        {
            p.say(&format!(
                "registered with index {index} as peer {id}: {files} files"
            ));
            if registered.is_none() {
                p.say("Congratulations you have been registered successfully.");
                p.say("[*] You will now be put to the listening state.");
                logs::listening();
            }
            registered = Some((id, files));
        }
        if s.last_error.is_some() && s.last_error != error {
            let e = s.last_error.clone().unwrap_or_default();
            eprintln!(
                "peershare: no registration with the index, retrying: {}",
                peershare::text::Escaped(&e)
            );
        }
        error = s.last_error;
        tokio::select! {
            _ = stop.cancelled() => break,
            r = handle.status.changed() => if r.is_err() { break },
        }
    }
    handle.shutdown().await;
    p.say("peershare share stopped");
    Ok(())
}
