//! Raw quinn for the benches that compare with it (`throughput`, `lab
//! loss`): libp2p-quic's transport settings, a pinned self-signed server,
//! and a request protocol of one line (`G` + length: send me that many
//! bytes; `P` + length: here they come).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use quinn::VarInt;

/// Largest transfer the quinn server accepts in one request.
pub(super) const MAX_REQUEST: u64 = 64 << 20;

const ALPN: &[u8] = b"meshcast-bench";

/// QUIC transport settings of libp2p-quic 0.14 (`Config::new` and its
/// conversion to quinn's), so raw quinn gets the same windows.
pub(super) fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(0u32.into());
    t.max_concurrent_bidi_streams(256u32.into());
    t.datagram_receive_buffer_size(None);
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(VarInt::from_u32(10_000).into()));
    t.allow_spin(false);
    t.stream_receive_window(VarInt::from_u32(10_000_000));
    t.receive_window(VarInt::from_u32(15_000_000));
    t.mtu_discovery_config(Some(Default::default()));
    t
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A quinn server endpoint with a fresh self-signed certificate; returns
/// the certificate's SHA-256 (hex) for the client to pin.
pub(super) fn quinn_server() -> anyhow::Result<(quinn::Endpoint, String)> {
    quinn_server_at(SocketAddr::from(([127, 0, 0, 1], 0)), transport())
}

/// [`quinn_server`] bound to `bind`, with `transport` (the sender's
/// congestion controller is the server's: it sends what is asked of it).
pub(super) fn quinn_server_at(
    bind: SocketAddr,
    transport: quinn::TransportConfig,
) -> anyhow::Result<(quinn::Endpoint, String)> {
    let identity = wtransport::Identity::self_signed(["localhost", "127.0.0.1"])
        .map_err(|e| anyhow::anyhow!("a self-signed certificate: {e}"))?;
    let cert = identity
        .certificate_chain()
        .as_slice()
        .first()
        .context("an empty certificate chain")?;
    let hash = hex::encode(cert.hash().as_ref());
    let chain = vec![rustls::pki_types::CertificateDer::from(cert.der().to_vec())];
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(identity.private_key().secret_der().to_vec())
            .map_err(|e| anyhow::anyhow!("the certificate's key: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    server.migration(false);
    let endpoint = quinn::Endpoint::server(server, bind).context("binding the quinn endpoint")?;
    Ok((endpoint, hash))
}

pub(super) fn quinn_client(hash: [u8; 32]) -> anyhow::Result<quinn::Endpoint> {
    quinn_client_at(SocketAddr::from(([127, 0, 0, 1], 0)), hash)
}

/// [`quinn_client`] bound to `bind`.
pub(super) fn quinn_client_at(bind: SocketAddr, hash: [u8; 32]) -> anyhow::Result<quinn::Endpoint> {
    let mut tls = meshcast_relay::client::pinned_tls(hash)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport()));
    let mut endpoint = quinn::Endpoint::client(bind).context("binding a quinn client endpoint")?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// One quinn request: `G` + length (send me that many bytes) or `P` +
/// length (here they come; answer with the count received).
async fn serve_quinn_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    chunk: Bytes,
) -> anyhow::Result<()> {
    let mut request = [0u8; 9];
    recv.read_exact(&mut request).await?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&request[1..]);
    let len = u64::from_be_bytes(len);
    anyhow::ensure!(len <= MAX_REQUEST, "a request for {len} bytes");
    match request[0] {
        b'G' => {
            let mut left = len as usize;
            while left > 0 {
                let n = left.min(chunk.len());
                send.write_chunk(chunk.slice(..n)).await?;
                left -= n;
            }
            send.finish()?;
        }
        b'P' => {
            let mut got = 0u64;
            while let Some(part) = recv.read_chunk(usize::MAX, true).await? {
                got += part.bytes.len() as u64;
                anyhow::ensure!(got <= len, "more bytes than announced");
            }
            send.write_all(&got.to_be_bytes()).await?;
            send.finish()?;
        }
        other => anyhow::bail!("unknown request {other}"),
    }
    Ok(())
}

pub(super) async fn serve_quinn(endpoint: quinn::Endpoint, chunk: Bytes) {
    while let Some(incoming) = endpoint.accept().await {
        let chunk = chunk.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((send, recv)) = connection.accept_bi().await {
                let chunk = chunk.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_quinn_stream(send, recv, chunk).await {
                        tracing::warn!("quinn bench stream: {e:#}");
                    }
                });
            }
        });
    }
}
