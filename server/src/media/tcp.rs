//! ICE-TCP: the media plane on a TCP port, for networks that block UDP (RFC 6544).
//!
//! The server offers one *passive* TCP host candidate (`--media-tcp-listen`) next to its UDP
//! one; a client that cannot use UDP connects to it and sends its ICE, DTLS, RTP and RTCP
//! packets over that connection, each framed with a two-byte length (RFC 4571). This module only
//! moves frames: an acceptor task takes connections, a reader per connection turns frames into
//! [`TcpEvent::Frame`]s for the engine, and a writer per connection frames what the engine sends
//! back to that client's address. Everything else (which peer a packet belongs to, ICE, DTLS) is
//! str0m's job in the engine, exactly as for UDP.
//!
//! Limits, because anyone can open a TCP connection: at most [`MAX_CONNECTIONS`] at once; a frame
//! larger than [`MAX_FRAME`] or a connection whose first frame no peer accepts is closed; a
//! connection idle for [`IDLE`] is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

/// Open ICE-TCP connections at most.
pub const MAX_CONNECTIONS: usize = 4096;
/// Largest frame accepted (a media packet is ~1,200 bytes; DTLS flights are split below MTU).
pub const MAX_FRAME: usize = 4096;
/// A connection that carries nothing for this long is closed (consent freshness runs every few
/// seconds on a live one).
pub const IDLE: Duration = Duration::from_secs(30);
/// Frames queued to one connection's writer.
const WRITE_QUEUE: usize = 1024;

/// What the acceptor and readers tell the engine.
pub enum TcpEvent {
    /// A connection from `remote` opened; frames for it go to `writer`.
    Opened {
        remote: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
    /// One frame from `remote`.
    Frame { remote: SocketAddr, data: Bytes },
    /// The connection from `remote` closed.
    Closed { remote: SocketAddr },
}

/// Accepts connections until the engine goes away.
pub async fn accept_loop(listener: TcpListener, events: mpsc::Sender<TcpEvent>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "ice-tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if events.is_closed() {
            return;
        }
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            debug!("ice-tcp connection refused: too many open");
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.fetch_add(1, Ordering::Relaxed);
        let (events, open) = (events.clone(), Arc::clone(&open));
        tokio::spawn(async move {
            serve(stream, remote, &events).await;
            let _ = events.send(TcpEvent::Closed { remote }).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Frames a packet: two bytes of length, big-endian, then the packet.
pub fn frame(packet: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = Vec::with_capacity(packet.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Some(Bytes::from(out))
}

async fn serve(stream: TcpStream, remote: SocketAddr, events: &mpsc::Sender<TcpEvent>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    if events
        .send(TcpEvent::Opened { remote, writer: tx })
        .await
        .is_err()
    {
        return;
    }
    // The writer ends when the engine forgets this connection (drops the sender); the reader
    // then stops too, which closes the connection.
    let mut writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let len = tokio::select! {
            r = tokio::time::timeout(IDLE, read_frame(&mut rd, &mut buf)) => match r {
                Ok(Ok(len)) => len,
                _ => break,
            },
            _ = &mut writer => break,
        };
        let data = Bytes::copy_from_slice(&buf[..len]);
        if events.send(TcpEvent::Frame { remote, data }).await.is_err() {
            break;
        }
    }
    writer.abort();
}

/// Reads one RFC 4571 frame into `buf`; returns its length.
async fn read_frame(rd: &mut OwnedReadHalf, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = [0u8; 2];
    rd.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 || len > buf.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "ice-tcp frame out of bounds",
        ));
    }
    rd.read_exact(&mut buf[..len]).await?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_big_endian_length() {
        assert_eq!(&frame(&[7, 8, 9]).unwrap()[..], &[0, 3, 7, 8, 9]);
        assert!(frame(&vec![0; 70_000]).is_none());
    }
}
