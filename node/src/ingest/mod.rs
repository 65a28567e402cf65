//! HLS ingest: how the publisher takes a stream from its origin.
//!
//! The publisher reads the origin's entry playlist ([`source::Source`], an
//! HTTP(S) URL or a local folder). A master playlist lists the renditions; a
//! media playlist given directly is the stream's only rendition. For each
//! rendition it then polls the media playlist at the pace RFC 8216 asks of
//! players (the target duration after a change, half of it otherwise), and a
//! [`playlist::Tracker`] tells which init and media segments are new since the
//! previous poll. Those are downloaded with bounded concurrency, each fetch
//! bounded in time and size, then hashed, signed and injected into the mesh
//! by the publisher (not in this module). A VOD playlist is read once.
//!
//! - [`playlist`]: sans-I/O parsing and checking of playlists, and the tracker.
//! - [`parts`]: the low-latency HLS tags (parts, preload hint, blocking
//!   reload) that `m3u8-rs` leaves unread.
//! - [`source`]: fetching playlists and segments over HTTP or from a folder,
//!   and [`source::fetch_url`], also used by the origin fallback.

pub mod dash;
pub mod parts;
pub mod playlist;
pub mod source;
