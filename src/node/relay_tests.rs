//! The relays end to end, seen from inside: what the index, or a member volunteering as a
//! relay, forwards is the peers' own TLS. (Here, above the index and the peer, the shares and
//! the download they run between.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::content::Digest;
use crate::download::{DownloadReport, RelayRoute};
use crate::identity::Identity;
use crate::index::{IndexClient, IndexConfig, IndexServer, IndexStore};
use crate::node::{GetOptions, ShareConfig, ShareHandle, download_all, start_share};
use crate::protocol::{FileHit, Limits};
use crate::tls::Tls;

/// Bytes no encryption would leave as they are: a name and a recognisable body.
const NAME: &str = "relay-must-not-see-this-name.txt";

fn body() -> Vec<u8> {
    let mut b = Vec::new();
    let mut i = 0u64;
    while b.len() < 600_000 {
        b.extend_from_slice(format!("plaintext line {i} that a relay must never see\n").as_bytes());
        i += 1;
    }
    b
}

/// An index server with `config` in `tmp`, not yet running: it, its listener, address and key.
async fn index_server(
    tmp: &std::path::Path,
    config: IndexConfig,
) -> (IndexServer, TcpListener, String, Digest) {
    let store = IndexStore::open(&tmp.join("index.sqlite")).unwrap();
    let tls = Tls::new(&Identity::from_secret(store.index_secret().unwrap())).unwrap();
    let key = tls.public_key();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (IndexServer::new(store, config, tls), listener, addr, key)
}

/// A share of [`NAME`] holding [`body`] that the index cannot reach (it advertises a port
/// nobody listens on), registered through a relay and listening.
async fn hidden_share(tmp: &std::path::Path, index: &str) -> ShareHandle {
    let shared = tmp.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join(NAME), body()).unwrap();
    let mut config = ShareConfig::new(vec![shared], Some(index.to_string()), tmp.join("s"));
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.advertise = Some(("127.0.0.1".into(), dead.local_addr().unwrap().port()));
    drop(dead);
    let mut share = start_share(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    share
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("registered through a relay and listening");
    share
}

/// Searches the index for the hidden share's file and downloads it through a relay the index
/// arranges; checks the file, and that it came relayed from one source.
async fn download_relayed(
    tmp: &std::path::Path,
    index: &str,
    index_key: Digest,
) -> (FileHit, DownloadReport) {
    let mut c = IndexClient::connect(index, None, Some(index_key), Limits::default())
        .await
        .unwrap();
    let found = c.search("relay-must-not", 10).await.unwrap();
    assert_eq!(found.files.len(), 1);
    let out = tmp.join("out");
    let opts = GetOptions {
        relay: Some(RelayRoute {
            index: index.to_string(),
            index_key: Some(index_key),
        }),
        ..GetOptions::default()
    };
    let report = download_all(&found.files, &out, &opts, 1)
        .await
        .into_iter()
        .next()
        .unwrap()
        .expect("downloaded through the relay");
    assert_eq!(std::fs::read(out.join(NAME)).unwrap(), body());
    let used: Vec<_> = report.sources.iter().filter(|s| s.bytes > 0).collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].reached, Some("relayed"));
    assert_eq!(used[0].bytes, body().len() as u64);
    (found.files[0].clone(), report)
}

/// What a relay forwarded (`tap`) holds the file's bytes' worth, and neither its name, its
/// contents nor its content id; returns how many bytes it forwarded.
fn assert_unseen(tap: &Arc<Mutex<Vec<u8>>>, file: &FileHit) -> u64 {
    let seen = tap.lock().unwrap().clone();
    assert!(
        seen.len() > body().len(),
        "the file went through the relay: {} bytes forwarded",
        seen.len()
    );
    let contains = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(NAME.as_bytes()), "the relay saw the file's name");
    assert!(!contains(b"relay-must-not"), "the relay saw the query");
    assert!(
        !contains(b"that a relay must never see"),
        "the relay saw the contents"
    );
    assert!(
        !contains(file.content_id.as_bytes()),
        "the relay saw the content id"
    );
    seen.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_sees_neither_names_nor_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, listener, index, index_key) =
        index_server(tmp.path(), IndexConfig::default()).await;
    let tap = server.relay_tap();
    let metrics = server.metrics();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(listener, stop.clone()));
    let share = hidden_share(tmp.path(), &index).await;

    let (file, _) = download_relayed(tmp.path(), &index, index_key).await;
    let forwarded = assert_unseen(&tap, &file);
    assert_eq!(
        metrics.metrics().relay_bytes.get(),
        forwarded,
        "relay_bytes counts what was forwarded"
    );
    share.shutdown().await;
    stop.cancel();
}

/// The same through a member volunteering as a relay (`share --relay`), at an index that does
/// not relay itself: the volunteer forwards only the peers' own TLS, and the index nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_relay_sees_neither_names_nor_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let config = IndexConfig {
        relay: crate::index::RelayConfig {
            enabled: false,
            ..Default::default()
        },
        ..IndexConfig::default()
    };
    let (server, listener, index, index_key) = index_server(tmp.path(), config).await;
    let metrics = server.metrics();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(listener, stop.clone()));
    let tap = crate::peer::relay_desk::tap::start();

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut config = ShareConfig::new(vec![empty], Some(index.clone()), tmp.path().join("v"));
    config.relay = Some(crate::splice::SpliceLimits::default());
    let mut volunteer = start_share(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    volunteer
        .wait_for(Duration::from_secs(20), |s| {
            s.volunteer == Some(true) && s.listening
        })
        .await
        .expect("taken as a volunteer, listening");
    let share = hidden_share(tmp.path(), &index).await;

    let before = crate::metrics::node().bytes_relayed.get();
    let (file, report) = download_relayed(tmp.path(), &index, index_key).await;
    let v_addr = volunteer.local_addr.to_string();
    assert_eq!(report.sources[0].relay.as_deref(), Some(v_addr.as_str()));
    let forwarded = assert_unseen(&tap, &file);
    assert!(crate::metrics::node().bytes_relayed.get() - before >= forwarded);
    assert_eq!(
        metrics.metrics().relay_bytes.get(),
        0,
        "the index relayed nothing"
    );
    share.shutdown().await;
    volunteer.shutdown().await;
    stop.cancel();
}
