//! A native WebTransport client speaking the browser-session protocol, for
//! tests and benchmarks (the browser client speaks the same protocol).
//!
//! [`Client::connect`] opens the session, says Hello and returns the verified
//! Welcome. A reader task (ended when the client is dropped) reads the control
//! stream and every delivery stream, verifies each segment against the
//! stream's key, and queues [`ClientEvent`]s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshcast_proto::pb;
use meshcast_proto::session::{
    self, ControlReader, Delivered, DeliveryError, DeliveryReader, GatewayAddr, ServerEvent,
    SessionError,
};
use meshcast_proto::{SegmentId, StreamId, StreamKey, VerifiedDescriptor, VerifiedHeader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the gateway refused: {code:?}: {message}")]
    Refused {
        code: pb::ErrorCode,
        message: String,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the session ended")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What the session reports.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A requested segment arrived and verified.
    Delivered {
        request_id: u64,
        header: VerifiedHeader,
        body: Bytes,
        /// When the delivery's first byte arrived, and when its last did.
        first_byte: Instant,
        at: Instant,
    },
    /// A new segment exists at the live edge (verified header).
    Announced(VerifiedHeader),
    /// The gateway could not serve a request (or the session).
    Error {
        code: pb::ErrorCode,
        message: String,
        request_id: u64,
    },
    /// A delivery failed verification: the gateway sent bad data.
    Rejected { request_id: u64, reason: String },
    /// The gateway's current list of other gateways (records verified).
    Gateways(Vec<GatewayAddr>),
}

pub struct Client {
    connection: Connection,
    send: SendStream,
    key: StreamKey,
    descriptor: VerifiedDescriptor,
    live_edge: Vec<VerifiedHeader>,
    recent: Vec<VerifiedHeader>,
    gateways: Vec<GatewayAddr>,
    events: mpsc::Receiver<ClientEvent>,
    next_request: u64,
    /// What each request in flight asked for, so that a delivery of another
    /// (validly signed) segment is rejected.
    asked: Asked,
    reader: JoinHandle<()>,
    _endpoint: ClientEndpoint,
}

type Asked = Arc<Mutex<HashMap<u64, SegmentId>>>;

fn lock(asked: &Asked) -> std::sync::MutexGuard<'_, HashMap<u64, SegmentId>> {
    asked.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client-side WebTransport endpoint; cheap to clone (it is shared).
pub type ClientEndpoint = Endpoint<wtransport::endpoint::endpoint_side::Client>;

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects, says Hello for `stream` and waits for Welcome.
    pub async fn connect(
        url: &str,
        cert_hashes: &[Sha256Digest],
        stream: StreamId,
        token: &str,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let endpoint = Self::endpoint(cert_hashes).map_err(|reason| ClientError::Connect {
            url: url.to_string(),
            reason,
        })?;
        Self::connect_with(endpoint, url, stream, token, timeout).await
    }

    /// A client endpoint (one UDP socket) that accepts the given certificates.
    /// Many sessions may share one, through [`Client::connect_with`].
    pub fn endpoint(cert_hashes: &[Sha256Digest]) -> Result<ClientEndpoint, String> {
        Self::endpoint_at(None, cert_hashes)
    }

    /// Like [`Client::endpoint`], its socket bound to `bind` when given (a
    /// benchmark or test playing viewers from several addresses).
    pub fn endpoint_at(
        bind: Option<std::net::SocketAddr>,
        cert_hashes: &[Sha256Digest],
    ) -> Result<ClientEndpoint, String> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let builder = ClientConfig::builder();
        let builder = match bind {
            Some(bind) => builder.with_bind_address(bind),
            None => builder.with_bind_default(),
        };
        let config = builder
            .with_server_certificate_hashes(cert_hashes.iter().cloned())
            .keep_alive_interval(Some(Duration::from_secs(5)))
            .build();
        Endpoint::client(config).map_err(|e| e.to_string())
    }

    /// Like [`Client::connect`], over an existing endpoint.
    pub async fn connect_with(
        endpoint: ClientEndpoint,
        url: &str,
        stream: StreamId,
        token: &str,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let fail = |reason: String| ClientError::Connect {
            url: url.to_string(),
            reason,
        };
        let connection = tokio::time::timeout(timeout, endpoint.connect(url))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|e| fail(e.to_string()))?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(e.to_string()))?;
        let hello = session::hello(
            &stream,
            token,
            &format!("meshcast-native/{}", env!("CARGO_PKG_VERSION")),
        );
        write_frame(&mut send, &hello).await?;
        let mut control = ControlReader::default();
        let first = tokio::time::timeout(timeout, next_control(&mut recv, &mut control))
            .await
            .map_err(|_| ClientError::Timeout(timeout))??
            .ok_or(ClientError::Closed)?;
        let welcome = session::welcome(first, &stream, meshcast_node::unix_now_us()).map_err(
            |e| match e {
                SessionError::Refused { code, message } => ClientError::Refused { code, message },
                e => ClientError::Protocol(e.to_string()),
            },
        )?;
        let descriptor = welcome.descriptor;
        let key = welcome.key;
        let live_edge = welcome.live_edge;
        let recent = welcome.recent;
        let gateways = welcome.gateways;
        let (tx, events) = mpsc::channel(1024);
        let asked = Asked::default();
        let reader = tokio::spawn(read_session(
            connection.clone(),
            recv,
            control,
            key,
            asked.clone(),
            tx,
        ));
        Ok(Client {
            connection,
            send,
            key,
            descriptor,
            live_edge,
            recent,
            gateways,
            events,
            next_request: 1,
            asked,
            reader,
            _endpoint: endpoint,
        })
    }

    pub fn descriptor(&self) -> &VerifiedDescriptor {
        &self.descriptor
    }

    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// The newest header of each rendition when the session opened.
    pub fn live_edge(&self) -> &[VerifiedHeader] {
        &self.live_edge
    }

    /// Each rendition's newest init and last media headers when the session
    /// opened (`meshcast_proto::session::WELCOME_RECENT`).
    pub fn recent(&self) -> &[VerifiedHeader] {
        &self.recent
    }

    /// Other gateways Welcome named, to spread requests over.
    pub fn gateways(&self) -> &[GatewayAddr] {
        &self.gateways
    }

    /// Asks for a segment; its answer comes as an event with the returned id.
    pub async fn request(
        &mut self,
        id: SegmentId,
        priority: u32,
        deadline: Duration,
    ) -> Result<u64, ClientError> {
        let request_id = self.next_request;
        self.next_request += 1;
        let deadline_ms = u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX);
        let msg = session::request(request_id, id, priority, deadline_ms);
        lock(&self.asked).insert(request_id, id);
        write_frame(&mut self.send, &msg).await?;
        Ok(request_id)
    }

    pub async fn cancel(&mut self, request_id: u64) -> Result<(), ClientError> {
        lock(&self.asked).remove(&request_id);
        write_frame(&mut self.send, &session::cancel(request_id)).await
    }

    /// Sends raw bytes on the control stream (tests of bad input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// The next event, `Closed` when the session has ended.
    pub async fn next_event(&mut self) -> Result<ClientEvent, ClientError> {
        self.events.recv().await.ok_or(ClientError::Closed)
    }

    /// Requests one segment and waits for it, skipping other events.
    pub async fn fetch(
        &mut self,
        id: SegmentId,
        deadline: Duration,
    ) -> Result<(VerifiedHeader, Bytes), ClientError> {
        let wanted = self.request(id, 0, deadline).await?;
        let limit = deadline + Duration::from_secs(5);
        tokio::time::timeout(limit, async {
            loop {
                match self.next_event().await? {
                    ClientEvent::Delivered {
                        request_id,
                        header,
                        body,
                        ..
                    } if request_id == wanted => {
                        return Ok((header, body));
                    }
                    ClientEvent::Error {
                        code,
                        message,
                        request_id,
                    } if request_id == wanted || request_id == 0 => {
                        return Err(ClientError::Refused { code, message });
                    }
                    ClientEvent::Rejected { request_id, reason } if request_id == wanted => {
                        return Err(ClientError::Protocol(reason));
                    }
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(limit))?
    }

    /// Closes the session.
    pub fn close(&self) {
        self.connection
            .close(wtransport::VarInt::from_u32(0), b"bye");
    }
}

async fn write_frame(send: &mut SendStream, msg: &pb::ClientMessage) -> Result<(), ClientError> {
    let bytes = session::encode(msg).map_err(|e| ClientError::Protocol(e.to_string()))?;
    send.write_all(&bytes)
        .await
        .map_err(|_| ClientError::Closed)
}

/// Reads the control stream until a whole message is in; `None` at its end.
async fn next_control(
    recv: &mut RecvStream,
    control: &mut ControlReader,
) -> Result<Option<pb::ServerMessage>, ClientError> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(msg) = control
            .next_message()
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            return Ok(Some(msg));
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => control.feed(&buf[..n]),
            Ok(None) => {
                control
                    .finish()
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                return Ok(None);
            }
            Err(_) => return Err(ClientError::Closed),
        }
    }
}

async fn read_session(
    connection: Connection,
    mut recv: RecvStream,
    mut control: ControlReader,
    key: StreamKey,
    asked: Asked,
    events: mpsc::Sender<ClientEvent>,
) {
    let mut deliveries = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            msg = next_control(&mut recv, &mut control) => {
                let now = meshcast_node::unix_now_us();
                let event = match msg.map(|m| m.map(|m| session::server_event(m, &key, now))) {
                    Ok(Some(Ok(Some(ServerEvent::Announced(headers))))) => {
                        for header in headers {
                            let _ = events.send(ClientEvent::Announced(header)).await;
                        }
                        continue;
                    }
                    Ok(Some(Ok(Some(ServerEvent::Gateways(list))))) => ClientEvent::Gateways(list),
                    Ok(Some(Ok(Some(ServerEvent::Error { code, message, request_id })))) => {
                        lock(&asked).remove(&request_id);
                        ClientEvent::Error { code, message, request_id }
                    }
                    Ok(Some(Ok(None))) => continue,
                    Ok(Some(Err(e))) => ClientEvent::Rejected { request_id: 0, reason: e.to_string() },
                    Ok(None) | Err(_) => break,
                };
                if events.send(event).await.is_err() {
                    break;
                }
            }
            stream = connection.accept_uni() => {
                let Ok(stream) = stream else { break };
                let events = events.clone();
                let asked = asked.clone();
                deliveries.spawn(async move {
                    let read = read_delivery(stream, key).await.and_then(|(d, first_byte)| {
                        let wanted = lock(&asked).remove(&d.request_id);
                        match wanted.map(|w| d.answers(&w)) {
                            Some(Err(error)) => Err(DeliveryError { request_id: Some(d.request_id), error }),
                            // Not in flight: the late answer to a cancelled request.
                            _ => Ok((d, first_byte, wanted.is_some())),
                        }
                    });
                    let event = match read {
                        Ok((_, _, false)) => return,
                        Ok((d, first_byte, true)) => ClientEvent::Delivered {
                            request_id: d.request_id,
                            header: d.header,
                            body: d.body,
                            first_byte,
                            at: Instant::now(),
                        },
                        Err(e) => ClientEvent::Rejected {
                            request_id: e.request_id.unwrap_or(0),
                            reason: e.error.to_string(),
                        },
                    };
                    let _ = events.send(event).await;
                });
            }
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
        }
    }
}

/// How long a delivery stream may stay silent.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and verifies one delivery; returns it with the time its first byte came.
async fn read_delivery(
    mut stream: RecvStream,
    key: StreamKey,
) -> Result<(Delivered, Instant), DeliveryError> {
    let mut reader = DeliveryReader::new(key);
    let mut buf = vec![0u8; 64 * 1024];
    let mut first_byte = None;
    loop {
        let fail = |reader: &DeliveryReader, why: String| DeliveryError {
            request_id: reader.request_id(),
            error: SessionError::Protocol(why),
        };
        match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(Some(n))) => {
                first_byte.get_or_insert_with(Instant::now);
                reader.feed(&buf[..n])?
            }
            Ok(Ok(None)) => {
                let delivered = reader.finish()?;
                return Ok((delivered, first_byte.unwrap_or_else(Instant::now)));
            }
            Ok(Err(e)) => return Err(fail(&reader, e.to_string())),
            Err(_) => return Err(fail(&reader, format!("silent for {READ_TIMEOUT:?}"))),
        }
    }
}

/// A TLS 1.3 client configuration (no ALPN set) that accepts only the
/// certificate whose SHA-256 is `hash`, as WebTransport's
/// `serverCertificateHashes` does: for raw QUIC clients in tests and benches
/// (attack clients that stop before the HTTP/3 CONNECT, raw-quinn baselines).
pub fn pinned_tls(hash: [u8; 32]) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(Pinned { hash, provider }))
            .with_no_client_auth(),
    )
}

/// Accepts the one certificate whose SHA-256 was printed by the peer (as
/// WebTransport's `serverCertificateHashes`), and checks the handshake
/// signatures with it.
#[derive(Debug)]
struct Pinned {
    hash: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let cert = wtransport::tls::Certificate::from_der(end_entity.to_vec()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if cert.hash().as_ref() == &self.hash {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
