use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const T: Duration = Duration::from_secs(5);

fn tls(seed: u8) -> Tls {
    Tls::new(&Identity::from_secret([seed; 32])).unwrap()
}

/// A listener whose first connection is accepted by `server`; the accept's result comes back.
async fn serve_one(
    server: Tls,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<Secured, TlsError>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        server.accept(s, T, b"plain text refused").await
    });
    (addr, task)
}

#[tokio::test]
async fn both_ends_learn_each_others_key_and_talk_encrypted() {
    let (server, client) = (tls(1), tls(2));
    let (addr, task) = serve_one(server.clone()).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut c = client
        .connect(tcp, Some(server.public_key()), T)
        .await
        .unwrap();
    let mut s = task.await.unwrap().unwrap();
    assert_eq!(c.remote_key, server.public_key());
    assert_eq!(s.remote_key, client.public_key());
    assert_eq!(c.cipher_suite(), "TLS13_AES_128_GCM_SHA256");
    c.stream.write_all(b"hello").await.unwrap();
    c.stream.flush().await.unwrap();
    let mut buf = [0u8; 5];
    s.stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
}

#[tokio::test]
async fn a_server_with_another_key_is_refused_and_named() {
    let (server, client, expected) = (tls(1), tls(2), tls(3));
    let (addr, task) = serve_one(server.clone()).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let err = client
        .connect(tcp, Some(expected.public_key()), T)
        .await
        .err()
        .unwrap();
    match &err {
        TlsError::WrongKey { expected: e, found } => {
            assert_eq!(e.0, expected.public_key());
            assert_eq!(found.0, server.public_key());
        }
        other => panic!("{other}"),
    }
    assert!(!err.to_string().contains('\n'));
    // The server sees the client give up; it never learns a client key.
    assert!(task.await.unwrap().is_err());
}

#[tokio::test]
async fn a_plaintext_client_is_told_and_closed() {
    let (addr, task) = serve_one(tls(1)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0, 0, 0, 2, 1, 0x80]).await.unwrap();
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"plain text refused");
    assert!(matches!(task.await.unwrap(), Err(TlsError::Plaintext)));
}

#[tokio::test]
async fn garbage_and_silence_fail_the_handshake_without_panicking() {
    let (addr, task) = serve_one(tls(1)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    assert!(matches!(task.await.unwrap(), Err(TlsError::Handshake(_))));

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tls(1);
    let task = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        server.accept(s, Duration::from_millis(200), b"").await
    });
    let _silent = TcpStream::connect(addr).await.unwrap();
    assert!(matches!(task.await.unwrap(), Err(TlsError::TimedOut(200))));
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let (addr, task) = serve_one(tls(1)).await;
    let provider = Arc::new(provider());
    let verifier = Arc::new(verify::ServerKey {
        expected: None,
        seen: Mutex::new(None),
        algs: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    // TLS 1.3: the client finishes first; the refusal arrives on its first read.
    let _ = s.write_all(b"x").await;
    let mut buf = [0u8; 1];
    assert!(s.read(&mut buf).await.is_err() || buf == [0]);
    assert!(matches!(task.await.unwrap(), Err(TlsError::Handshake(_))));
}
