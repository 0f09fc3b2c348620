//! The original numbered menu, line by line on any input (a terminal or a piped script).
//!
//! It asks the original's questions, in the original's words and order, one line each, and
//! reads one answer line for each: a script drives it with `printf '...' | peershare`. A bad
//! answer is asked again. Besides the original's choices, each menu has "0 - Quit".
//! The end of input where a menu waits for a choice is the same as quitting; anywhere else
//! (in the middle of a flow) it is an error: the menu exits non-zero, saying what it was
//! asking. Quitting exits non-zero too if a search found nothing or a download failed, so a
//! script can tell. Downloads go into the current directory, as in the original, or into
//! `PEERSHARE_DOWNLOAD_DIR` when set.

mod logs;
mod peer;
mod prompt;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use super::commands::serve_index;
use peershare::index::IndexConfig;
use prompt::{Prompter, Stop};

/// How the menu ended early.
enum End {
    /// The user quit (or the input ended where a menu waited for a choice).
    Quit,
    /// The input ended in the middle of a flow, while asking this.
    Eof(String),
    /// The index or share could not run.
    Failed(anyhow::Error),
}

impl From<Stop> for End {
    fn from(s: Stop) -> End {
        match s {
            Stop::Quit => End::Quit,
            Stop::Eof(q) => End::Eof(q),
        }
    }
}

impl From<anyhow::Error> for End {
    fn from(e: anyhow::Error) -> End {
        End::Failed(e)
    }
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> End {
        End::Failed(e.into())
    }
}

struct Menu<'a, R, W> {
    p: Prompter<'a, R, W>,
    state: &'a Path,
    /// The menu's log subscriber (quiet until the listening state).
    logs: tracing::Dispatch,
    /// Where searches and downloads run: idle while a question waits.
    asking: Runtime,
    /// Searches that found nothing or failed, and downloads that failed.
    failures: usize,
}

/// Runs the menu of the original design until the user quits, the input ends, or the index
/// or share it starts is interrupted. The menu runs on runtimes of its own (see [`logs`]),
/// not on `_rt`, so that it decides what is logged while it asks.
pub fn run_menu(
    _rt: &Runtime,
    input: &mut impl BufRead,
    out: &mut impl Write,
    state: &Path,
) -> anyhow::Result<()> {
    let d = logs::dispatch();
    tracing::dispatcher::with_default(&d, || {
        let mut m = Menu {
            p: Prompter::new(input, out),
            state,
            logs: d.clone(),
            asking: logs::asking(&d)?,
            failures: 0,
        };
        let end = m.run();
        m.asking.shutdown_timeout(Duration::from_secs(1));
        match end {
            Ok(()) => Ok(()),
            Err(End::Quit) if m.failures == 0 => Ok(()),
            Err(End::Quit) => Err(anyhow!(
                "{} search(es) or download(s) failed (see above)",
                m.failures
            )),
            Err(End::Eof(q)) => Err(anyhow!("end of input while the menu asked \"{q}\"")),
            Err(End::Failed(e)) => Err(e),
        }
    })
}

impl<R: BufRead, W: Write> Menu<'_, R, W> {
    fn run(&mut self) -> Result<(), End> {
        let pick = self.p.menu(
            &["1 - Run Indexing Server", "2 - Run Peer"],
            "Please select whichever you want.",
        )?;
        match pick {
            1 => self.index(),
            _ => self.peer(),
        }
    }

    /// "1 - Run Indexing Server": asks where, listens, says so, and serves until interrupted.
    fn index(&mut self) -> Result<(), End> {
        let host = self.p.ask(
            "Please enter the IP of the server in this format XXX.XXX.XXX.XXX. Enter 0 to run as localhost",
            prompt::host,
        )?;
        let port = self.p.ask(
            "Please enter the port number of which the server is going to listen to.",
            prompt::port(true),
        )?;
        let rt = logs::serving(&self.logs)?;
        let addr = SocketAddr::new(host.ip, port);
        let listener = rt
            .block_on(TcpListener::bind(addr))
            .with_context(|| format!("cannot listen on {addr}"))?;
        let port = listener.local_addr()?.port();
        self.p
            .say(&format!("[*] Started listening on {} : {port}", host.shown));
        logs::listening();
        let db = self.state.join("index.sqlite");
        let r = rt.block_on(serve_index(
            listener,
            &db,
            IndexConfig::default(),
            false,
            None,
            None,
        ));
        rt.shutdown_timeout(Duration::from_secs(5));
        Ok(r?)
    }
}
