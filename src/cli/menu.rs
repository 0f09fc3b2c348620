//! The original numbered menu, line by line on any input (a terminal or a piped script).

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::runtime::Runtime;

use super::commands::{run_index, run_share};
use super::connect;
use super::output::{size, time};
use peershare::index::IndexConfig;
use peershare::node::ShareConfig;
use peershare::node::{GetOptions, download_hit};

/// End of input: the menu stops quietly.
struct Eof;

struct Prompter<'a, R, W> {
    input: &'a mut R,
    out: &'a mut W,
}

impl<R: BufRead, W: Write> Prompter<'_, R, W> {
    fn say(&mut self, text: &str) {
        // Lines quote names, hosts and errors from the network: escaped whole.
        let _ = writeln!(self.out, "{}", peershare::text::Escaped(text));
        let _ = self.out.flush();
    }

    /// Asks until `parse` accepts the (trimmed) answer.
    fn ask<T>(
        &mut self,
        prompt: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, Eof> {
        loop {
            let _ = write!(self.out, "{prompt}");
            let _ = self.out.flush();
            let mut line = String::new();
            match self.input.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    self.say("");
                    return Err(Eof);
                }
                Ok(_) => {}
            }
            match parse(line.trim()) {
                Ok(v) => return Ok(v),
                Err(msg) => self.say(&msg),
            }
        }
    }
}

fn ip(answer: &str) -> Result<IpAddr, String> {
    if answer == "0" || answer.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    answer.parse().map_err(|_| {
        format!("{answer:?} is not an IP address; enter one like 192.168.1.20, or 0 for localhost")
    })
}

fn port(allow_zero: bool) -> impl Fn(&str) -> Result<u16, String> {
    move |answer| match answer.parse::<u16>() {
        Ok(0) if !allow_zero => Err("Please enter a port number between 1 and 65535".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!(
            "{answer:?} is not a port number; enter a number between {} and 65535",
            if allow_zero { 0 } else { 1 }
        )),
    }
}

fn choice(max: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |answer| match answer.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("Please enter a number from 1 to {max}")),
    }
}

fn existing_dir(answer: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(if answer.is_empty() { "." } else { answer });
    if p.is_dir() {
        Ok(p)
    } else {
        Err(format!(
            "{} is not an existing directory; try again",
            p.display()
        ))
    }
}

/// Runs the menu of the original design until the input ends.
pub fn run_menu(
    rt: &Runtime,
    input: &mut impl BufRead,
    out: &mut impl Write,
    state: &Path,
) -> anyhow::Result<()> {
    let mut p = Prompter { input, out };
    match menu(rt, &mut p, state) {
        Ok(r) => r,
        Err(Eof) => Ok(()),
    }
}

fn menu<R: BufRead, W: Write>(
    rt: &Runtime,
    p: &mut Prompter<R, W>,
    state: &Path,
) -> Result<anyhow::Result<()>, Eof> {
    p.say("Welcome to peershare");
    p.say("1 - Run Indexing Server");
    p.say("2 - Run Peer");
    if p.ask("Enter your choice: ", choice(2))? == 1 {
        let host = p.ask("Enter the server IP (0 for localhost): ", ip)?;
        let port = p.ask("Enter the server port: ", port(false))?;
        let db = state.join("index.sqlite");
        p.say(&format!(
            "Running the indexing server on {host}:{port} (Ctrl-C to stop)"
        ));
        return Ok(rt.block_on(run_index(
            SocketAddr::new(host, port),
            &db,
            IndexConfig::default(),
            false,
            None,
        )));
    }
    let index_port = p.ask("Enter the indexing server port: ", port(false))?;
    let index_ip = p.ask("Enter the indexing server IP (0 for localhost): ", ip)?;
    let index = SocketAddr::new(index_ip, index_port).to_string();
    loop {
        p.say("1 - Search for a filename and download it");
        p.say("2 - Register to the indexing server");
        if p.ask("Enter your choice: ", choice(2))? == 2 {
            let port = p.ask(
                "Enter the port to share on (0 for any free port): ",
                port(true),
            )?;
            let host = p.ask("Enter this peer's IP (0 for localhost): ", ip)?;
            let dir = p.ask("Enter the directory to share: ", existing_dir)?;
            p.say(&format!(
                "Registering {} with {index} and listening (Ctrl-C to stop)",
                dir.display()
            ));
            let config = ShareConfig::new(vec![dir], Some(index.clone()), state.to_path_buf());
            return Ok(rt.block_on(run_share(config, SocketAddr::new(host, port))));
        }
        let name = p.ask("Enter the filename: ", |a| {
            if a.is_empty() {
                Err("Please enter a filename (or part of one)".to_string())
            } else {
                Ok(a.to_string())
            }
        })?;
        let results = match rt.block_on(async {
            let mut c = connect(&index).await?;
            Ok::<_, anyhow::Error>(c.search(&name, 100).await?)
        }) {
            Ok(r) => r,
            Err(e) => {
                p.say(&format!("Search failed: {e:#}"));
                continue;
            }
        };
        if results.files.is_empty() {
            p.say(&format!("No peer has a file matching {name:?}"));
            continue;
        }
        for (n, f) in results.files.iter().enumerate() {
            p.say(&format!(
                "File {}: {} ({}, content id {})",
                n + 1,
                f.name,
                size(f.size),
                f.content_id
            ));
            for peer in &f.peers {
                p.say(&format!("Peer ID: {}", peer.peer_id));
                p.say(&format!("Port: {}", peer.port));
                p.say(&format!("Host: {}", peer.host));
                p.say(&format!("Time shared: {}", time(peer.shared_at)));
                p.say("-----");
            }
        }
        let yes = p.ask("Do you want to download it (Y/N): ", |a| {
            match a.to_ascii_lowercase().as_str() {
                "y" | "yes" => Ok(true),
                "n" | "no" => Ok(false),
                _ => Err("Please answer Y or N".into()),
            }
        })?;
        if !yes {
            continue;
        }
        let file = if results.files.len() == 1 {
            &results.files[0]
        } else {
            &results.files[p.ask(
                "Please specify the file number: ",
                choice(results.files.len()),
            )? - 1]
        };
        let ids: Vec<u64> = file.peers.iter().map(|x| x.peer_id).collect();
        let peer = p.ask("Please specify Peer ID: ", |a| match a.parse::<u64>() {
            Ok(id) if ids.contains(&id) => Ok(id),
            _ => Err(format!(
                "{a:?} is not one of the peers listed for this file: {}",
                ids.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        })?;
        let dir = p.ask(
            "Enter the directory to download into (empty for the current directory): ",
            existing_dir,
        )?;
        match rt
            .block_on(download_hit(
                file,
                0,
                &dir,
                &GetOptions {
                    only_peer: Some(peer),
                    ..GetOptions::default()
                },
            ))
            .context("download failed")
        {
            Ok(r) => p.say(&format!(
                "File downloaded successfully to {} ({}, verified against content id {})",
                r.path.display(),
                size(r.size),
                r.content_id
            )),
            Err(e) => p.say(&format!("{e:#}")),
        }
    }
}
