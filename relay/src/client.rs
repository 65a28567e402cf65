//! A native WebTransport client speaking the browser-session protocol, for
//! tests and benchmarks (the browser client speaks the same protocol).
//!
//! [`Client::connect`] opens the session, says Hello and returns the verified
//! Welcome. A reader task (ended when the client is dropped) reads the control
//! stream and every delivery stream, verifies each segment against the
//! stream's key, and queues [`ClientEvent`]s.

use std::time::{Duration, Instant};

use bytes::Bytes;
use meshcast_node::exchange::{ExchangeError, Framed, verify_header};
use meshcast_proto::frame::{self, Limits};
use meshcast_proto::pb::{self, client_message, server_message};
use meshcast_proto::{
    SegmentId, SignedDescriptor, StreamId, StreamKey, VerifiedDescriptor, VerifiedHeader,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::compat::TokioAsyncReadCompatExt;
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Connection, Endpoint, SendStream};

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
}

pub struct Client {
    connection: Connection,
    send: SendStream,
    key: StreamKey,
    descriptor: VerifiedDescriptor,
    live_edge: Vec<VerifiedHeader>,
    gateways: Vec<pb::Gateway>,
    events: mpsc::Receiver<ClientEvent>,
    next_request: u64,
    reader: JoinHandle<()>,
    _endpoint: ClientEndpoint,
}

/// A client-side WebTransport endpoint; cheap to clone (it is shared).
pub type ClientEndpoint = Endpoint<wtransport::endpoint::endpoint_side::Client>;

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Frames the gateway sends are bounded by the protocol maximum.
const SERVER_LIMITS: Limits = Limits {
    max_frame: Limits::DEFAULT_MAX_FRAME,
    max_segment: Limits::DEFAULT_MAX_SEGMENT,
};

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
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = ClientConfig::builder()
            .with_bind_default()
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
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| fail(e.to_string()))?
            .await
            .map_err(|e| fail(e.to_string()))?;
        let hello = pb::ClientMessage {
            body: Some(client_message::Body::Hello(pb::Hello {
                stream_id: stream.as_bytes().to_vec().into(),
                token: token.to_string(),
                client: format!("meshcast-native/{}", env!("CARGO_PKG_VERSION")),
            })),
        };
        write_frame(&mut send, &hello).await?;
        let mut control = Framed::new(recv.compat(), SERVER_LIMITS, timeout);
        let welcome = match control.read_frame::<pb::ServerMessage>().await {
            Ok(Some(pb::ServerMessage {
                body: Some(server_message::Body::Welcome(w)),
            })) => w,
            Ok(Some(pb::ServerMessage {
                body: Some(server_message::Body::Error(e)),
            })) => {
                return Err(refused(&e));
            }
            Ok(_) => return Err(ClientError::Protocol("expected Welcome".into())),
            Err(ExchangeError::Timeout(t)) => return Err(ClientError::Timeout(t)),
            Err(e) => return Err(ClientError::Protocol(e.to_string())),
        };
        let signed = welcome
            .descriptor
            .as_ref()
            .ok_or_else(|| ClientError::Protocol("Welcome without a descriptor".into()))
            .and_then(|d| {
                SignedDescriptor::from_pb(d).map_err(|e| ClientError::Protocol(e.to_string()))
            })?;
        let descriptor = signed
            .verify_for(&stream)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let key = descriptor.stream_key();
        let live_edge = welcome
            .live_edge
            .into_iter()
            .map(|h| verify_header(Some(h), &key).map_err(|e| ClientError::Protocol(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let gateways = welcome.gateways;
        let (tx, events) = mpsc::channel(1024);
        let reader = tokio::spawn(read_session(connection.clone(), control, key, tx));
        Ok(Client {
            connection,
            send,
            key,
            descriptor,
            live_edge,
            gateways,
            events,
            next_request: 1,
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

    /// Other gateways Welcome named, to spread requests over.
    pub fn gateways(&self) -> &[pb::Gateway] {
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
        let msg = pb::ClientMessage {
            body: Some(client_message::Body::Request(pb::Request {
                request_id,
                id: Some(id.to_pb()),
                priority,
                deadline_ms: u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX),
            })),
        };
        write_frame(&mut self.send, &msg).await?;
        Ok(request_id)
    }

    pub async fn cancel(&mut self, request_id: u64) -> Result<(), ClientError> {
        let msg = pb::ClientMessage {
            body: Some(client_message::Body::Cancel(pb::CancelRequest {
                request_id,
            })),
        };
        write_frame(&mut self.send, &msg).await
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

fn refused(e: &pb::Error) -> ClientError {
    ClientError::Refused {
        code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
        message: e.message.clone(),
    }
}

async fn write_frame(send: &mut SendStream, msg: &pb::ClientMessage) -> Result<(), ClientError> {
    let bytes =
        frame::encode(msg, &SERVER_LIMITS).map_err(|e| ClientError::Protocol(e.to_string()))?;
    send.write_all(&bytes)
        .await
        .map_err(|_| ClientError::Closed)
}

type Control = Framed<tokio_util::compat::Compat<wtransport::RecvStream>>;

async fn read_session(
    connection: Connection,
    mut control: Control,
    key: StreamKey,
    events: mpsc::Sender<ClientEvent>,
) {
    let mut deliveries = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            frame = control.read_frame::<pb::ServerMessage>() => {
                let event = match frame {
                    Ok(Some(pb::ServerMessage { body: Some(server_message::Body::Announce(a)) })) => {
                        for header in a.headers {
                            if let Ok(header) = verify_header(Some(header), &key) {
                                let _ = events.send(ClientEvent::Announced(header)).await;
                            }
                        }
                        continue;
                    }
                    Ok(Some(pb::ServerMessage { body: Some(server_message::Body::Error(e)) })) => ClientEvent::Error {
                        code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
                        message: e.message,
                        request_id: e.request_id,
                    },
                    Ok(Some(_)) => continue,
                    Err(ExchangeError::Timeout(_)) => continue,
                    Ok(None) | Err(_) => break,
                };
                if events.send(event).await.is_err() {
                    break;
                }
            }
            stream = connection.accept_uni() => {
                let Ok(stream) = stream else { break };
                let events = events.clone();
                deliveries.spawn(async move {
                    let mut framed = Framed::new(stream.compat(), SERVER_LIMITS, Duration::from_secs(30));
                    let event = match read_delivery(&mut framed, &key).await {
                        Ok((request_id, header, body)) => ClientEvent::Delivered { request_id, header, body, at: Instant::now() },
                        Err((request_id, reason)) => ClientEvent::Rejected { request_id, reason },
                    };
                    let _ = events.send(event).await;
                });
            }
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
        }
    }
}

async fn read_delivery(
    framed: &mut Framed<tokio_util::compat::Compat<wtransport::RecvStream>>,
    key: &StreamKey,
) -> Result<(u64, VerifiedHeader, Bytes), (u64, String)> {
    let delivery = match framed.read_frame::<pb::Delivery>().await {
        Ok(Some(d)) => d,
        Ok(None) => return Err((0, "empty delivery stream".into())),
        Err(e) => return Err((0, e.to_string())),
    };
    let request_id = delivery.request_id;
    let header = verify_header(delivery.header, key).map_err(|e| (request_id, e.to_string()))?;
    let body = framed
        .read_body(&header)
        .await
        .map_err(|e| (request_id, e.to_string()))?;
    Ok((request_id, header, body))
}
