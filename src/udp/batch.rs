//! Batches of datagrams moved with one `recvmmsg(2)` or `sendmmsg(2)` each, made
//! non-blocking on the executor thread once the driver reports the socket ready.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::ptr;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams received or sent per system call.
pub const BATCH: usize = 8;

/// Room for the control messages of one datagram: the packet-info message that tells which
/// local address a datagram was sent to, or sets the one a reply leaves from.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Buffers for [`BATCH`] datagrams of up to `size` bytes each, and what the last receive put
/// in them.
///
/// The message headers point into the batch's own heap buffers, which never move or grow, so
/// the batch can be moved freely; it is used by one thread only.
pub struct Batch {
    size: usize,
    buffers: Box<[u8]>,
    received_iovecs: Box<[libc::iovec]>,
    addresses: Box<[libc::sockaddr_storage]>,
    received_controls: Box<[Control]>,
    received: Box<[libc::mmsghdr]>,
    count: usize,
    sent_iovecs: Box<[libc::iovec]>,
    sent_controls: Box<[Control]>,
    sent: Box<[libc::mmsghdr]>,
}

/// One datagram of a received batch.
pub enum Datagram {
    /// It fitted the buffer and can be forwarded.
    Whole,
    /// It did not fit: its real size. Nothing of it is forwarded.
    Oversize(usize),
}

impl Batch {
    /// Buffers for datagrams of up to `size` bytes.
    pub fn new(size: usize) -> Batch {
        let mut buffers = vec![0u8; size * BATCH].into_boxed_slice();
        let received_iovecs: Box<[libc::iovec]> = buffers
            .chunks_mut(size)
            .map(|chunk| libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: chunk.len(),
            })
            .collect();
        // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which all zeroes is a
        // valid (empty) value.
        let addresses = vec![unsafe { mem::zeroed::<libc::sockaddr_storage>() }; BATCH];
        // SAFETY: as above.
        let headers = vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; BATCH];
        let mut batch = Batch {
            size,
            buffers,
            received_iovecs,
            addresses: addresses.into_boxed_slice(),
            received_controls: vec![Control([0; 64]); BATCH].into_boxed_slice(),
            received: headers.clone().into_boxed_slice(),
            count: 0,
            sent_iovecs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ]
            .into_boxed_slice(),
            sent_controls: vec![Control([0; 64]); BATCH].into_boxed_slice(),
            sent: headers.into_boxed_slice(),
        };
        for index in 0..BATCH {
            let header = &mut batch.received[index].msg_hdr;
            header.msg_iov = &mut batch.received_iovecs[index];
            header.msg_iovlen = 1;
            header.msg_name = (&mut batch.addresses[index] as *mut libc::sockaddr_storage).cast();
            batch.sent[index].msg_hdr.msg_iov = &mut batch.sent_iovecs[index];
            batch.sent[index].msg_hdr.msg_iovlen = 1;
        }
        batch
    }

    /// Receives up to [`BATCH`] datagrams without waiting; returns how many, or WouldBlock
    /// when none is queued.
    ///
    /// MSG_TRUNC makes the kernel report a datagram's real size even when it did not fit, so
    /// an oversize datagram is recognised and dropped instead of forwarded cut short.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        for (header, control) in self
            .received
            .iter_mut()
            .zip(self.received_controls.iter_mut())
        {
            header.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            // Filled only on a socket with packet info turned on (a wildcard service address).
            header.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            header.msg_hdr.msg_controllen = control.0.len() as _;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        let count = loop {
            // SAFETY: every header points at this batch's own iovec, buffer, address storage
            // and control buffer, valid for writes for the whole call; the kernel writes at
            // most msg_namelen bytes of address, msg_controllen bytes of control messages
            // and iov_len bytes of payload into each.
            let count = unsafe {
                libc::recvmmsg(
                    fd,
                    self.received.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    ptr::null_mut(),
                )
            };
            if count >= 0 {
                break count as usize;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        };
        self.count = count;
        Ok(count)
    }

    /// The number of datagrams the last receive returned.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Datagram `index` of the last receive.
    pub fn datagram(&self, index: usize) -> Datagram {
        let header = &self.received[index];
        let len = header.msg_len as usize;
        if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > self.size {
            Datagram::Oversize(len)
        } else {
            Datagram::Whole
        }
    }

    /// Where datagram `index` of the last receive came from.
    pub fn source(&self, index: usize) -> Option<SocketAddr> {
        let header = &self.received[index].msg_hdr;
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: SockAddrStorage is a sockaddr_storage, and the kernel filled this one with
        // an address of msg_namelen bytes.
        let address = unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = self.addresses[index];
            SockAddr::new(storage, header.msg_namelen)
        };
        address.as_socket()
    }

    /// The local address datagram `index` of the last receive was sent to, when the socket
    /// reports it (packet info is on for services on a wildcard address).
    pub fn local_address(&self, index: usize) -> Option<IpAddr> {
        let header = &self.received[index].msg_hdr;
        // SAFETY: the header's control buffer holds msg_controllen bytes of control messages
        // the kernel wrote in the last receive; CMSG_FIRSTHDR and CMSG_NXTHDR stay within it,
        // and each message's data is read unaligned at its declared type.
        unsafe {
            let mut message = libc::CMSG_FIRSTHDR(header);
            while !message.is_null() {
                let data = libc::CMSG_DATA(message);
                match ((*message).cmsg_level, (*message).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info = ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                        let octets = info.ipi_spec_dst.s_addr.to_ne_bytes();
                        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let info = ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                        return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    }
                    _ => message = libc::CMSG_NXTHDR(header, message),
                }
            }
        }
        None
    }

    /// Sends the received datagrams `indices` (at most [`BATCH`]), in order, to `destination`
    /// or, when it is `None`, to the peer the socket is connected to, and from local address
    /// `source` when given (else the kernel picks it by route). Never waits: what the socket
    /// cannot take now is left unsent, as a router drops what it cannot queue.
    pub fn send(
        &mut self,
        fd: RawFd,
        destination: Option<&SockAddr>,
        source: Option<IpAddr>,
        indices: impl Iterator<Item = usize>,
    ) -> Sent {
        let mut attempted = 0;
        for index in indices.take(BATCH) {
            let len = self.received[index].msg_len as usize;
            self.sent_iovecs[attempted].iov_base =
                self.buffers[index * self.size..].as_mut_ptr().cast();
            self.sent_iovecs[attempted].iov_len = len;
            let header = &mut self.sent[attempted].msg_hdr;
            (header.msg_name, header.msg_namelen) = match destination {
                Some(address) => (address.as_ptr() as *mut libc::c_void, address.len()),
                None => (ptr::null_mut(), 0),
            };
            let control = &mut self.sent_controls[attempted];
            (header.msg_control, header.msg_controllen) = match source {
                Some(source) => (control.0.as_mut_ptr().cast(), source_info(control, source)),
                None => (ptr::null_mut(), 0),
            };
            attempted += 1;
        }
        let mut sent = 0;
        let mut refused_once = false;
        while sent < attempted {
            // SAFETY: headers `sent..attempted` point at iovecs over this batch's buffers and
            // at `destination`, which outlives the call; the kernel only reads them.
            let result = unsafe {
                libc::sendmmsg(
                    fd,
                    self.sent[sent..].as_mut_ptr(),
                    (attempted - sent) as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if result > 0 {
                sent += result as usize;
                continue;
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                // A connected socket reports an earlier ICMP "port unreachable" on the next
                // send, which is then not made; the report clears the error, so one retry
                // sends this datagram if the target is back.
                Some(libc::ECONNREFUSED) if !refused_once => refused_once = true,
                _ => {
                    return Sent {
                        attempted,
                        sent,
                        error: Some(error),
                    };
                }
            }
        }
        Sent {
            attempted,
            sent,
            error: None,
        }
    }
}

/// Writes into `control` the packet-info message that sends a datagram from `source`;
/// returns its length.
fn source_info(control: &mut Control, source: IpAddr) -> usize {
    let (level, kind, data_len) = match source {
        IpAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            mem::size_of::<libc::in_pktinfo>(),
        ),
        IpAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            mem::size_of::<libc::in6_pktinfo>(),
        ),
    };
    // SAFETY: a header over `control`, whose 64 bytes hold CMSG_SPACE of either packet-info
    // struct (32 and 40 bytes); CMSG_FIRSTHDR is then non-null and the data written lies
    // within the buffer.
    unsafe {
        // SAFETY: an all-zero msghdr is valid; only its control fields are used.
        let mut header: libc::msghdr = mem::zeroed();
        header.msg_control = control.0.as_mut_ptr().cast();
        header.msg_controllen = control.0.len() as _;
        let message = libc::CMSG_FIRSTHDR(&header);
        (*message).cmsg_level = level;
        (*message).cmsg_type = kind;
        (*message).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
        let data = libc::CMSG_DATA(message);
        match source {
            IpAddr::V4(address) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(address.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                ptr::write_unaligned(data.cast(), info);
            }
            IpAddr::V6(address) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: address.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                ptr::write_unaligned(data.cast(), info);
            }
        }
        libc::CMSG_SPACE(data_len as u32) as usize
    }
}

/// What one [`Batch::send`] did.
pub struct Sent {
    /// Datagrams it was asked to send.
    pub attempted: usize,
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Why the others were not sent.
    pub error: Option<io::Error>,
}
