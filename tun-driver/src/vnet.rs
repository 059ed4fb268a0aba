//! The virtio-net header (`struct virtio_net_hdr`, virtio 1.x §5.1.6) that a TUN device set up
//! with `IFF_VNET_HDR` puts before every packet: how the kernel tells a reader that a packet is
//! a segmentation-offload "super-packet" or has its checksum left to fill, and how a writer
//! asks the kernel to cut one into segments.
//!
//! This crate only carries the header; what it means for a TCP or UDP packet is the stack's
//! business.

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum is partial. The transport checksum field at
/// `csum_start + csum_offset` holds the pseudo-header sum; the sum from `csum_start` to the end
/// is still to be added.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the kernel has checked the checksum.
pub const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_NONE`: a packet of its own.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`: TCP over IPv4, to be cut into `gso_size`-byte segments.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP`: UDP fragmentation offload (not used here).
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`: UDP segmentation offload (not used here).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: ORed into the GSO type when the segments carry ECN's CWR.
pub const GSO_ECN: u8 = 0x80;

/// One virtio-net header, in host byte order (the legacy header's order, which the TUN device
/// uses unless told otherwise with `TUNSETVNETLE`/`TUNSETVNETBE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHeader {
    /// [`F_NEEDS_CSUM`], [`F_DATA_VALID`].
    pub flags: u8,
    /// `GSO_*`, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (IP and transport) of each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed part starts (the transport header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum field is.
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Size of the header on the wire (`sizeof(struct virtio_net_hdr)`).
    pub const LEN: usize = 10;

    /// Reads a header from the first [`LEN`](Self::LEN) bytes of `b`.
    pub fn decode(b: &[u8; Self::LEN]) -> VnetHeader {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// The header as bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [
            (2, self.hdr_len),
            (4, self.gso_size),
            (6, self.csum_start),
            (8, self.csum_offset),
        ] {
            b[i..i + 2].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_as_written() {
        let h = VnetHeader {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6 | GSO_ECN,
            hdr_len: 72,
            gso_size: 1428,
            csum_start: 40,
            csum_offset: 16,
        };
        let b = h.encode();
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 0x84);
        assert_eq!(VnetHeader::decode(&b), h);
        assert_eq!(VnetHeader::decode(&[0; 10]), VnetHeader::default());
    }
}
