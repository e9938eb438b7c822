//! Batched UDP sends for the media socket: the datagrams one engine wake-up produces go out
//! with `sendmmsg(2)` (one system call for up to [`BATCH`] datagrams, each to its own address)
//! instead of one `sendto(2)` each.
//!
//! Why `sendmmsg` and not UDP GSO (`quinn-udp`'s fast path): GSO sends one buffer cut into
//! equal segments to *one* destination, while an SFU's output is mostly one packet to each of
//! several receivers, so GSO would batch almost nothing here. `quinn-udp` (0.6) sends one
//! `sendmsg` per transmit and has no batch of several destinations, so it would not save the
//! system calls either. `libc::sendmmsg` behind the small wrapper below is all that is needed; the
//! socket stays a tokio socket (non-blocking, readiness kept by `try_io`).

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per `sendmmsg` call.
pub(crate) const BATCH: usize = 64;

/// Datagrams waiting to be sent, in order.
#[derive(Default)]
pub(crate) struct SendQueue {
    items: Vec<(SocketAddr, Vec<u8>)>,
    /// The destinations of one `sendmmsg` call in the kernel's form, kept between calls so
    /// that a call allocates nothing.
    addrs: Vec<socket2::SockAddr>,
}

impl SendQueue {
    pub(crate) fn push(&mut self, to: SocketAddr, data: Vec<u8>) {
        self.items.push((to, data));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sends everything queued; returns how many datagrams could not be sent (send buffer
    /// full, or an error for that datagram), which are dropped, as a plain `try_send_to` would.
    pub(crate) fn flush(&mut self, socket: &UdpSocket) -> usize {
        let mut dropped = 0;
        let mut done = 0;
        while done < self.items.len() {
            let end = (done + BATCH).min(self.items.len());
            match send_some(socket, &self.items[done..end], &mut self.addrs) {
                Ok(n) if n > 0 => done += n,
                // The first datagram of the chunk failed: drop it and go on with the next (an
                // error can be that datagram's own, e.g. an unreachable address).
                _ => {
                    dropped += 1;
                    done += 1;
                }
            }
        }
        self.items.clear();
        dropped
    }
}

/// One `sendmmsg` of `items` (at most [`BATCH`]); the number the kernel took.
fn send_some(
    socket: &UdpSocket,
    items: &[(SocketAddr, Vec<u8>)],
    addrs: &mut Vec<socket2::SockAddr>,
) -> io::Result<usize> {
    debug_assert!(items.len() <= BATCH);
    socket.try_io(Interest::WRITABLE, || sendmmsg(socket, items, addrs))
}

/// One message header for `sendmmsg`/`recvmmsg`: one buffer, one address, no control data.
#[cfg(target_os = "linux")]
fn mmsghdr(
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
    iov: &mut libc::iovec,
) -> libc::mmsghdr {
    // SAFETY: an all-zero msghdr is valid (no control data, no flags).
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = name;
    hdr.msg_namelen = namelen;
    hdr.msg_iov = iov as *mut libc::iovec;
    hdr.msg_iovlen = 1;
    libc::mmsghdr {
        msg_hdr: hdr,
        msg_len: 0,
    }
}

#[cfg(target_os = "linux")]
fn sendmmsg(
    socket: &UdpSocket,
    items: &[(SocketAddr, Vec<u8>)],
    addrs: &mut Vec<socket2::SockAddr>,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;

    addrs.clear();
    addrs.extend(items.iter().map(|(a, _)| socket2::SockAddr::from(*a)));
    // The buffer and message headers live on the stack: a call allocates nothing.
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; BATCH];
    for (iov, (_, d)) in iovs.iter_mut().zip(items) {
        iov.iov_base = d.as_ptr() as *mut libc::c_void;
        iov.iov_len = d.len();
    }
    // SAFETY: an all-zero mmsghdr is valid (no name, no buffers, no control data).
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for ((m, a), iov) in msgs.iter_mut().zip(addrs.iter()).zip(iovs.iter_mut()) {
        *m = mmsghdr(a.as_ptr() as *mut libc::c_void, a.len(), iov);
    }
    let count = items.len().min(BATCH);
    // SAFETY: the first `count` entries of `msgs` point into `addrs`, `iovs` and `items`,
    // which outlive the call and are not moved during it; the kernel only reads the addresses
    // and buffers and writes `msg_len`.
    let n = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            count as libc::c_uint,
            0,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Elsewhere: one `sendto` per datagram, stopping at the first that fails.
#[cfg(not(target_os = "linux"))]
fn sendmmsg(
    socket: &UdpSocket,
    items: &[(SocketAddr, Vec<u8>)],
    _addrs: &mut Vec<socket2::SockAddr>,
) -> io::Result<usize> {
    let sock = socket2::SockRef::from(socket);
    for (i, (to, data)) in items.iter().enumerate() {
        if let Err(e) = sock.send_to(data, &socket2::SockAddr::from(*to)) {
            return if i == 0 { Err(e) } else { Ok(i) };
        }
    }
    Ok(items.len())
}

/// Datagrams per `recvmmsg` call, and the size of each buffer (larger datagrams are cut, as
/// with the single-datagram buffer before).
pub(crate) const RECV_BATCH: usize = 32;
const RECV_SIZE: usize = 2048;

/// Buffers for [`recv_batch`], allocated once.
pub(crate) struct RecvBufs {
    data: Vec<u8>,
    got: Vec<(usize, SocketAddr)>,
    /// The sources the kernel writes, one per buffer.
    #[cfg(target_os = "linux")]
    addrs: Vec<libc::sockaddr_storage>,
}

impl Default for RecvBufs {
    fn default() -> Self {
        RecvBufs {
            data: vec![0; RECV_BATCH * RECV_SIZE],
            got: Vec::with_capacity(RECV_BATCH),
            // SAFETY: all-zero sockaddr_storage values are valid (family AF_UNSPEC).
            #[cfg(target_os = "linux")]
            addrs: (0..RECV_BATCH)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
        }
    }
}

impl RecvBufs {
    /// The datagrams of the last [`recv_batch`]: (source, contents).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.got
            .iter()
            .enumerate()
            .map(|(i, (len, from))| (*from, &self.data[i * RECV_SIZE..i * RECV_SIZE + len]))
    }
}

/// Waits until the socket is readable, then takes every datagram waiting (up to
/// [`RECV_BATCH`]) with one `recvmmsg(2)`.
///
/// A call that returns fewer datagrams than it had room for has emptied the socket's queue,
/// so the socket's readiness is cleared then and there (the closure reports `WouldBlock` to
/// `try_io` and the datagrams stay in `bufs`). Otherwise the next wait would return at once
/// and cost one more `recvmmsg` only to find the queue empty. Nothing is missed: a datagram
/// that arrives after the call is a new readiness event, which tokio does not let an older
/// clear erase.
pub(crate) async fn recv_batch(socket: &UdpSocket, bufs: &mut RecvBufs) -> io::Result<usize> {
    bufs.got.clear();
    loop {
        socket.readable().await?;
        let r = socket.try_io(Interest::READABLE, || match recvmmsg(socket, bufs)? {
            (_, true) => Err(io::ErrorKind::WouldBlock.into()),
            (n, false) => Ok(n),
        });
        match r {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !bufs.got.is_empty() {
                    return Ok(bufs.got.len());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// One `recvmmsg` into `bufs`: how many datagrams it kept, and whether the call returned
/// fewer than it had room for (the queue is empty now).
#[cfg(target_os = "linux")]
fn recvmmsg(socket: &UdpSocket, bufs: &mut RecvBufs) -> io::Result<(usize, bool)> {
    use std::os::fd::AsRawFd;

    let RecvBufs { data, got, addrs } = bufs;
    // The buffer and message headers live on the stack: a call allocates nothing.
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; RECV_BATCH];
    for (iov, c) in iovs.iter_mut().zip(data.chunks_exact_mut(RECV_SIZE)) {
        iov.iov_base = c.as_mut_ptr() as *mut libc::c_void;
        iov.iov_len = c.len();
    }
    // SAFETY: an all-zero mmsghdr is valid (no name, no buffers, no control data).
    let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
    for ((m, a), iov) in msgs.iter_mut().zip(addrs.iter_mut()).zip(iovs.iter_mut()) {
        *m = mmsghdr(
            a as *mut libc::sockaddr_storage as *mut libc::c_void,
            std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
            iov,
        );
    }
    // SAFETY: every pointer in `msgs` points into `addrs`, `iovs` and `data`, which outlive
    // the call and are not moved during it; the kernel writes at most `iov_len` bytes into
    // each buffer and at most `msg_namelen` into each address (and sets its family).
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            RECV_BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for (m, a) in msgs[..n].iter().zip(addrs.iter()) {
        if let Some(from) = to_socket_addr(a) {
            got.push((m.msg_len as usize, from));
        }
    }
    // Datagrams without an IP source (cannot happen on a UDP/IP socket) are skipped; the data
    // of the others must stay at their own index.
    if got.len() != n {
        got.clear();
        for (i, (m, a)) in msgs[..n].iter().zip(addrs.iter()).enumerate() {
            if let Some(from) = to_socket_addr(a) {
                let len = m.msg_len as usize;
                data.copy_within(i * RECV_SIZE..i * RECV_SIZE + len, got.len() * RECV_SIZE);
                got.push((len, from));
            }
        }
    }
    Ok((got.len(), n < RECV_BATCH))
}

#[cfg(target_os = "linux")]
fn to_socket_addr(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match a.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Elsewhere: one datagram per call.
#[cfg(not(target_os = "linux"))]
fn recvmmsg(socket: &UdpSocket, bufs: &mut RecvBufs) -> io::Result<(usize, bool)> {
    let (len, from) = socket.try_recv_from(&mut bufs.data[..RECV_SIZE])?;
    bufs.got.push((len, from));
    // One datagram says nothing of what else is waiting.
    Ok((1, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every datagram reaches its own destination, in order, across more than one batch.
    #[tokio::test]
    async fn batches_reach_each_destination() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut q = SendQueue::default();
        let n = BATCH + 10;
        for i in 0..n {
            let to = if i % 2 == 0 { &a } else { &b };
            q.push(to.local_addr().unwrap(), format!("packet {i}").into_bytes());
        }
        // As the engine's socket, which the runtime has seen writable long before.
        tx.writable().await.unwrap();
        assert_eq!(q.flush(&tx), 0);
        assert!(q.is_empty());
        let mut buf = [0u8; 64];
        for i in 0..n {
            let from = if i % 2 == 0 { &a } else { &b };
            let (len, src) =
                tokio::time::timeout(std::time::Duration::from_secs(5), from.recv_from(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(src, tx.local_addr().unwrap());
            assert_eq!(&buf[..len], format!("packet {i}").as_bytes());
        }
    }
    /// Datagrams waiting on the socket come out of one call with their sources, in order.
    #[tokio::test]
    async fn recv_batch_takes_what_is_waiting() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("[::1]:0").await;
        let to = rx.local_addr().unwrap();
        for i in 0..5 {
            a.send_to(format!("a{i}").as_bytes(), to).await.unwrap();
        }
        let mut bufs = RecvBufs::default();
        let mut got = Vec::new();
        while got.len() < 5 {
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                recv_batch(&rx, &mut bufs),
            )
            .await
            .unwrap()
            .unwrap();
            assert!(n > 0);
            got.extend(bufs.iter().map(|(from, d)| (from, d.to_vec())));
        }
        let want: Vec<_> = (0..5)
            .map(|i| (a.local_addr().unwrap(), format!("a{i}").into_bytes()))
            .collect();
        assert_eq!(got, want);
        // IPv6 sources, where the machine has IPv6.
        if let (Ok(b), Ok(rx6)) = (b, UdpSocket::bind("[::1]:0").await) {
            b.send_to(b"six", rx6.local_addr().unwrap()).await.unwrap();
            recv_batch(&rx6, &mut bufs).await.unwrap();
            let got: Vec<_> = bufs.iter().map(|(f, d)| (f, d.to_vec())).collect();
            assert_eq!(got, vec![(b.local_addr().unwrap(), b"six".to_vec())]);
        }
    }

    /// A partial batch clears the socket's readiness without another call; a datagram that
    /// arrives afterwards still wakes the next wait. A full batch leaves the rest for the next
    /// call.
    #[tokio::test]
    async fn readiness_cleared_by_a_partial_batch_misses_nothing() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let mut bufs = RecvBufs::default();
        let wait = std::time::Duration::from_secs(5);
        fn take(bufs: &RecvBufs) -> Vec<Vec<u8>> {
            bufs.iter().map(|(_, d)| d.to_vec()).collect()
        }
        for i in 0..3 {
            tx.send_to(format!("p{i}").as_bytes(), to).await.unwrap();
        }
        // Loopback delivers at once, but the first wait may see only some of them.
        let mut got = Vec::new();
        while got.len() < 3 {
            tokio::time::timeout(wait, recv_batch(&rx, &mut bufs))
                .await
                .unwrap()
                .unwrap();
            got.extend(take(&bufs));
        }
        assert_eq!(got, vec![b"p0".to_vec(), b"p1".to_vec(), b"p2".to_vec()]);
        // The queue is empty and the readiness cleared: a later datagram must still wake us.
        tx.send_to(b"late", to).await.unwrap();
        let n = tokio::time::timeout(wait, recv_batch(&rx, &mut bufs))
            .await
            .expect("a datagram after a partial batch wakes the wait")
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(take(&bufs), vec![b"late".to_vec()]);
        // More than a batch waiting: a full batch, then the rest.
        let many = RECV_BATCH + 5;
        for i in 0..many {
            tx.send_to(format!("m{i}").as_bytes(), to).await.unwrap();
        }
        let mut got = Vec::new();
        while got.len() < many {
            tokio::time::timeout(wait, recv_batch(&rx, &mut bufs))
                .await
                .unwrap()
                .unwrap();
            got.extend(take(&bufs));
        }
        let want: Vec<Vec<u8>> = (0..many).map(|i| format!("m{i}").into_bytes()).collect();
        assert_eq!(got, want);
    }
}
