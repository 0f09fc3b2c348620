//! The private-group commands, `invite` and `members`: run on the index's database, beside the running index.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

use super::output::time;
use peershare::content::ContentId;
use peershare::group::{Invite, ShareLink, is_host_port};
use peershare::identity::{Fingerprint, Identity};
use peershare::index::{GroupStore, MemberRow};
use peershare::node::MemberRecord;
use peershare::query::now_ms;

/// `peershare invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// How many new members the invite admits
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    uses: u32,
    /// How long the invite stays good
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration, value_name = "DURATION")]
    expires: Duration,
    /// Address members reach the index at [default: the address the index advertises]
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// Index database file [default: index.sqlite in the state directory]
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

/// `peershare members`.
#[derive(Debug, Args)]
pub struct MembersArgs {
    #[command(subcommand)]
    command: Option<MembersCommand>,
    /// Print one JSON document
    #[arg(long)]
    json: bool,
    /// Index database file [default: index.sqlite in the state directory]
    #[arg(long, value_name = "PATH", global = true)]
    db: Option<PathBuf>,
}

/// `peershare members …`.
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Remove a member: the index stops admitting its key and tells sharing peers to refuse it
    Remove {
        /// The member's id, as `peershare members` lists it
        id: i64,
    },
}

/// The index database: --db, else the one `peershare index` uses.
fn db_path(db: Option<PathBuf>, state: &Path) -> PathBuf {
    db.unwrap_or_else(|| state.join("index.sqlite"))
}

/// Where members will reach the index: --address, else the address the index stored.
fn invite_address(flag: Option<String>, store: &GroupStore) -> anyhow::Result<String> {
    let address = match flag {
        Some(a) if is_host_port(&a) => a,
        Some(a) => bail!(
            "--address {a:?} is not HOST:PORT (a host name or IP address, IPv6 in brackets, and a port)"
        ),
        None => {
            let Some(stored) = store.get_meta("address")? else {
                bail!(
                    "no address known for this index: start `peershare index` once or pass --address"
                );
            };
            match String::from_utf8(stored) {
                Ok(a) if is_host_port(&a) => a,
                _ => bail!(
                    "the address stored in the index database is not HOST:PORT; pass --address"
                ),
            }
        }
    };
    let host = address.rsplit_once(':').map_or("", |(h, _)| h);
    if matches!(host, "0.0.0.0" | "[::]") {
        bail!(
            "{address} is where the index listens, not an address members can reach; pass --address"
        );
    }
    Ok(address)
}

/// Makes an invite: the token alone on stdout (for `$(peershare invite)`), what it allows on stderr.
pub fn invite(args: InviteArgs, state: &Path) -> anyhow::Result<()> {
    let db = db_path(args.db, state);
    let mut store = GroupStore::open(&db)?;
    let address = invite_address(args.address, &store)?;
    let key = Identity::from_secret(store.index_secret()?).fingerprint();
    let invite = Invite::new(address, key)?;
    let now = now_ms();
    let lifetime = i64::try_from(args.expires.as_millis()).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lifetime);
    store.create_invite(&invite.secret_hash(), args.uses, expires, now)?;
    super::outln!("{invite}")?;
    let uses = match args.uses {
        1 => "one new member".to_string(),
        n => format!("{n} new members"),
    };
    eprintln!(
        "invite to {} for {uses}, good until {}",
        invite.index,
        time(expires)
    );
    if store.get_meta("private")?.as_deref() != Some(b"1") {
        eprintln!(
            "note: this index is not marked private (yet): anyone can use it without an invite"
        );
    }
    Ok(())
}

/// Lists members, or removes one.
pub fn members(args: MembersArgs, state: &Path) -> anyhow::Result<()> {
    let db = db_path(args.db, state);
    if !db.exists() {
        bail!(
            "no index database at {}: pass --db, or run `peershare index` first",
            db.display()
        );
    }
    let mut store = GroupStore::open(&db)?;
    match args.command {
        None => list(&store.members()?, args.json),
        Some(MembersCommand::Remove { id }) => {
            let now = now_ms();
            let Some(row) = store.revoke_member(id, now)? else {
                bail!("no member with id {id} (`peershare members` lists them)");
            };
            let fp = Fingerprint(row.public_key);
            match row.revoked {
                Some(at) if at < now => {
                    super::outln!("member {id} ({fp}) was revoked already, at {}", time(at))?
                }
                _ => super::outln!("revoked member {id} ({fp})")?,
            }
            Ok(())
        }
    }
}

fn status(row: &MemberRow) -> String {
    match row.revoked {
        None => "member".into(),
        Some(at) => format!("revoked at {}", time(at)),
    }
}

fn list(rows: &[MemberRow], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let doc: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "fingerprint": Fingerprint(r.public_key).to_string(),
                    "joined": time(r.joined),
                    "last_seen": time(r.last_seen),
                    "revoked": r.revoked.map(time),
                })
            })
            .collect();
        writeln!(out, "{:#}", serde_json::Value::from(doc))?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "no members yet (`peershare invite` makes an invite)")?;
        return Ok(());
    }
    let width = rows
        .iter()
        .map(|r| r.id.to_string().len())
        .max()
        .unwrap_or(2)
        .max(2);
    writeln!(
        out,
        "{:>width$}  {:52}  {:20}  {:20}  STATUS",
        "ID", "FINGERPRINT", "JOINED", "LAST SEEN"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:>width$}  {}  {:20}  {:20}  {}",
            r.id,
            Fingerprint(r.public_key),
            time(r.joined),
            time(r.last_seen),
            status(r)
        )?;
    }
    Ok(())
}

/// `peershare join TOKEN`: enrolls this user's key in the private group the invite is for, and
/// keeps the membership in the state directory (the group's index becomes the default one).
pub async fn join(token: &str) -> anyhow::Result<()> {
    let invite: Invite = token.trim().parse()?;
    let ctx = super::client_context()?;
    let spec = format!("{}#{}", invite.index, invite.key);
    let mut client = super::connect(&spec).await?;
    let joined = client.join(&invite.secret).await?;
    let membership = joined.membership;
    // The index we reached holds the invite's key (checked in TLS); its certificate must be one.
    membership
        .check(&invite.key.0, &ctx.tls.public_key(), now_ms())
        .map_err(|e| anyhow::anyhow!("the index answered with a bad certificate: {e}"))?;
    MemberRecord::new(&invite.index, &membership, &joined.dht_secret).save(&ctx.state)?;
    super::reload_client_context()?;
    super::outln!(
        "joined the private group of the index at {} (key {}) as {}; membership valid until {}",
        invite.index,
        invite.key,
        Fingerprint(ctx.tls.public_key()),
        time(membership.expires)
    )?;
    Ok(())
}

/// `peershare link HASH`: a share link for a file the index lists, naming the index by its
/// address and key (and carrying an invite, if given).
pub async fn link(id: &str, index: Option<String>, invite: Option<String>) -> anyhow::Result<()> {
    let content_id: ContentId = id.parse()?;
    let Some(spec) = index else {
        bail!("no index: pass --index HOST:PORT");
    };
    let invite: Option<Invite> = invite.map(|t| t.trim().parse()).transpose()?;
    let mut client = super::connect(&spec).await?;
    let found = client.search(&content_id.to_string(), 1).await?;
    let Some(file) = found.files.into_iter().find(|f| f.content_id == content_id) else {
        bail!("the index lists no peer with {content_id}");
    };
    let (addr, _) = peershare::identity::split_address(&spec)?;
    let link = ShareLink {
        content_id,
        name: file.name,
        size: file.size,
        index: Some(format!("{addr}#{}", Fingerprint(client.server_key()))),
        invite,
    };
    // The name came from the network: the link's own rules decide whether it can carry it.
    let text = link.to_string();
    let _: ShareLink = text
        .parse()
        .map_err(|e| anyhow::anyhow!("cannot make a link for this file: {e}"))?;
    super::outln!("{text}")?;
    Ok(())
}
