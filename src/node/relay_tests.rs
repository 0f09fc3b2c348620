//! The relays end to end, seen from inside: what the index, or a member volunteering as a
//! relay, forwards is the peers' own TLS. (Here, above the index and the peer, the shares and
//! the download they run between.)

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::download::RelayRoute;
use crate::identity::Identity;
use crate::index::{IndexClient, IndexConfig, IndexServer, IndexStore};
use crate::node::{GetOptions, ShareConfig, download_all, start_share};
use crate::protocol::Limits;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_sees_neither_names_nor_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let store = IndexStore::open(&tmp.path().join("index.sqlite")).unwrap();
    let tls = Tls::new(&Identity::from_secret(store.index_secret().unwrap())).unwrap();
    let index_key = tls.public_key();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let index = listener.local_addr().unwrap().to_string();
    let server = IndexServer::new(store, IndexConfig::default(), tls);
    let tap = server.relay_tap();
    let metrics = server.metrics();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(listener, stop.clone()));

    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let body = body();
    std::fs::write(shared.join(NAME), &body).unwrap();
    let mut config = ShareConfig::new(vec![shared], Some(index.clone()), tmp.path().join("s"));
    // A port nobody listens on: the index cannot reach this peer.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    config.advertise = Some(("127.0.0.1".into(), dead.local_addr().unwrap().port()));
    drop(dead);
    let mut share = start_share(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await
        .unwrap();
    share
        .wait_for(Duration::from_secs(20), |s| s.in_sync && s.listening)
        .await
        .expect("registered through the relay and listening");

    let mut c = IndexClient::connect(&index, None, Some(index_key), Limits::default())
        .await
        .unwrap();
    let found = c.search("relay-must-not", 10).await.unwrap();
    assert_eq!(found.files.len(), 1);
    let out = tmp.path().join("out");
    let opts = GetOptions {
        relay: Some(RelayRoute {
            index: index.clone(),
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
    assert_eq!(std::fs::read(out.join(NAME)).unwrap(), body);
    let used: Vec<_> = report.sources.iter().filter(|s| s.bytes > 0).collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].reached, Some("relayed"));
    assert_eq!(used[0].bytes, body.len() as u64);

    let seen = tap.lock().unwrap().clone();
    assert!(
        seen.len() as u64 > body.len() as u64,
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
        !contains(found.files[0].content_id.as_bytes()),
        "the relay saw the content id"
    );
    assert_eq!(
        metrics.metrics().relay_bytes.get(),
        seen.len() as u64,
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
    let store = IndexStore::open(&tmp.path().join("index.sqlite")).unwrap();
    let tls = Tls::new(&Identity::from_secret(store.index_secret().unwrap())).unwrap();
    let index_key = tls.public_key();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let index = listener.local_addr().unwrap().to_string();
    let config = IndexConfig {
        relay: crate::index::RelayConfig {
            enabled: false,
            ..Default::default()
        },
        ..IndexConfig::default()
    };
    let server = IndexServer::new(store, config, tls);
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

    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let body = body();
    std::fs::write(shared.join(NAME), &body).unwrap();
    let mut config = ShareConfig::new(vec![shared], Some(index.clone()), tmp.path().join("s"));
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

    let mut c = IndexClient::connect(&index, None, Some(index_key), Limits::default())
        .await
        .unwrap();
    let found = c.search("relay-must-not", 10).await.unwrap();
    let out = tmp.path().join("out");
    let opts = GetOptions {
        relay: Some(RelayRoute {
            index: index.clone(),
            index_key: Some(index_key),
        }),
        ..GetOptions::default()
    };
    let before = crate::metrics::node().bytes_relayed.get();
    let report = download_all(&found.files, &out, &opts, 1)
        .await
        .into_iter()
        .next()
        .unwrap()
        .expect("downloaded through the volunteer");
    assert_eq!(std::fs::read(out.join(NAME)).unwrap(), body);
    assert_eq!(report.sources[0].reached, Some("relayed"));

    let seen = tap.lock().unwrap().clone();
    assert!(
        seen.len() > body.len(),
        "the file went through the volunteer: {} bytes forwarded",
        seen.len()
    );
    let contains = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(NAME.as_bytes()),
        "the volunteer saw the file's name"
    );
    assert!(
        !contains(b"that a relay must never see"),
        "the volunteer saw the contents"
    );
    assert!(
        !contains(found.files[0].content_id.as_bytes()),
        "the volunteer saw the content id"
    );
    assert!(crate::metrics::node().bytes_relayed.get() - before >= seen.len() as u64);
    assert_eq!(
        metrics.metrics().relay_bytes.get(),
        0,
        "the index relayed nothing"
    );
    share.shutdown().await;
    volunteer.shutdown().await;
    stop.cancel();
}
