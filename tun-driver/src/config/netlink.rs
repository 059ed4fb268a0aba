//! Just enough rtnetlink to add an address: build one `RTM_NEWADDR` request, read its ACK.
//!
//! Messages are built and parsed as bytes in native byte order, which is what netlink uses.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::sys;

/// `sizeof(struct nlmsghdr)`.
const HEADER_LEN: usize = 16;
/// How long to wait for the kernel's acknowledgement before giving up.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds `addr/prefix_len` to interface `index`; the kernel's error, if any, as an OS error.
pub(super) fn add_address(index: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
    static SEQUENCE: AtomicU32 = AtomicU32::new(1);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);

    let socket = sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    sys::set_receive_timeout(socket.as_fd(), ACK_TIMEOUT)?;
    let request = new_address_request(seq, index, addr, prefix_len);
    sys::retry_eintr(|| sys::send(socket.as_fd(), &request, 0))?;

    let mut buf = vec![0; 8192];
    loop {
        let (len, sender) = sys::retry_eintr(|| sys::recv_netlink(socket.as_fd(), &mut buf))?;
        if sender != 0 {
            continue; // Not from the kernel.
        }
        if let Some(errno) = find_ack(&buf[..len.min(buf.len())], seq) {
            return match errno {
                0 => Ok(()),
                errno => Err(io::Error::from_raw_os_error(errno)),
            };
        }
    }
}

/// An `RTM_NEWADDR` request with `IFA_LOCAL` and `IFA_ADDRESS` set to `addr`, and for IPv6
/// `IFA_F_NODAD` both in the header and as an `IFA_FLAGS` attribute.
fn new_address_request(seq: u32, index: u32, addr: IpAddr, prefix_len: u8) -> Vec<u8> {
    let (family, bytes, flags) = match addr {
        IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec(), 0),
        IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec(), libc::IFA_F_NODAD),
    };
    let message_flags =
        libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;

    let mut msg = Vec::with_capacity(64);
    // struct nlmsghdr; the length is patched in at the end.
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWADDR.to_ne_bytes());
    msg.extend_from_slice(&(message_flags as u16).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // Port id: let the kernel fill it in.
                                                // struct ifaddrmsg
    msg.push(family as u8);
    msg.push(prefix_len);
    msg.push(flags as u8); // ifa_flags only has room for the low 8 bits.
    msg.push(libc::RT_SCOPE_UNIVERSE);
    msg.extend_from_slice(&index.to_ne_bytes());
    // Attributes
    push_attribute(&mut msg, libc::IFA_LOCAL, &bytes);
    push_attribute(&mut msg, libc::IFA_ADDRESS, &bytes);
    if flags != 0 {
        push_attribute(&mut msg, libc::IFA_FLAGS, &flags.to_ne_bytes());
    }

    let len = u32::try_from(msg.len()).expect("a short message");
    msg[..4].copy_from_slice(&len.to_ne_bytes());
    msg
}

/// Appends a `struct rtattr` with its payload, padded to 4 bytes.
fn push_attribute(msg: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).expect("a short attribute");
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(payload);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

/// Looks through the messages in `buf` for the acknowledgement (`NLMSG_ERROR`) of request
/// `seq`: its errno, 0 for success.
fn find_ack(mut buf: &[u8], seq: u32) -> Option<i32> {
    while buf.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().ok()?);
        let msg_seq = u32::from_ne_bytes(buf[8..12].try_into().ok()?);
        if len < HEADER_LEN || len > buf.len() {
            return None; // Malformed; the kernel does not send such things.
        }
        if libc::c_int::from(kind) == libc::NLMSG_ERROR && msg_seq == seq && len >= HEADER_LEN + 4 {
            let error = i32::from_ne_bytes(buf[HEADER_LEN..HEADER_LEN + 4].try_into().ok()?);
            return Some(-error);
        }
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_requests_carry_nodad() {
        let msg = new_address_request(7, 3, "2001:db8::1".parse().unwrap(), 64);
        assert_eq!(msg.len(), 16 + 8 + 2 * (4 + 16) + (4 + 4));
        assert_eq!(
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(msg[16], libc::AF_INET6 as u8);
        assert_eq!(msg[17], 64);
        assert_eq!(u32::from(msg[18]), libc::IFA_F_NODAD);
        assert_eq!(u32::from_ne_bytes(msg[20..24].try_into().unwrap()), 3);
        let flags_attr = &msg[msg.len() - 8..];
        assert_eq!(
            u16::from_ne_bytes(flags_attr[2..4].try_into().unwrap()),
            libc::IFA_FLAGS
        );
        assert_eq!(
            u32::from_ne_bytes(flags_attr[4..].try_into().unwrap()),
            libc::IFA_F_NODAD
        );
    }

    #[test]
    fn ipv4_requests_have_two_attributes() {
        let msg = new_address_request(1, 3, "192.0.2.1".parse().unwrap(), 24);
        assert_eq!(msg.len(), 16 + 8 + 2 * (4 + 4));
        assert_eq!(&msg[28..32], &[192, 0, 2, 1]);
    }

    #[test]
    fn acks_are_matched_by_sequence_number() {
        let ack = |seq: u32, error: i32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
            m.extend_from_slice(&0u16.to_ne_bytes());
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&error.to_ne_bytes());
            m.extend_from_slice(&[0; 16]); // The echoed request header.
            m
        };
        let mut both = ack(4, -libc::EEXIST);
        both.extend(ack(5, 0));
        assert_eq!(find_ack(&both, 4), Some(libc::EEXIST));
        assert_eq!(find_ack(&both, 5), Some(0));
        assert_eq!(find_ack(&both, 6), None);
        assert_eq!(find_ack(&both[..10], 4), None);
    }
}
