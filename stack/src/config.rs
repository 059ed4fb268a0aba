//! Tunables of the stack and of its interfaces.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::addr::Cidr;

/// The most a `listen` backlog can be (Linux's `net.core.somaxconn`).
pub const SOMAXCONN: usize = 4096;

/// Congestion control for TCP connections. The recovery layer
/// ([`StackConfig::loss_recovery`]) runs them; with it off, smoltcp's own Reno or CUBIC does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CongestionControl {
    /// None: send as far as the peer's window allows.
    None,
    /// RFC 5681 Reno.
    Reno,
    /// RFC 9438 CUBIC, Linux's built-in default.
    #[default]
    Cubic,
    /// BBR (version 1, as Linux's `tcp_bbr`): the window follows a model of the path's
    /// bandwidth and round trip, and random loss does not shrink it. Without pacing (see the
    /// README). Needs the recovery layer; with it off, smoltcp's CUBIC stands in.
    Bbr,
}

impl CongestionControl {
    /// Linux's name for it (`net.ipv4.tcp_congestion_control`, `TCP_CONGESTION`).
    pub fn name(self) -> &'static str {
        match self {
            CongestionControl::None => "none",
            CongestionControl::Reno => "reno",
            CongestionControl::Cubic => "cubic",
            CongestionControl::Bbr => "bbr",
        }
    }
}

impl std::str::FromStr for CongestionControl {
    type Err = String;

    /// Linux's names: `reno`, `cubic`, `bbr`, and `none`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(CongestionControl::None),
            "reno" => Ok(CongestionControl::Reno),
            "cubic" => Ok(CongestionControl::Cubic),
            "bbr" => Ok(CongestionControl::Bbr),
            _ => Err(format!(
                "unknown congestion control {s:?} (reno, cubic, bbr or none)"
            )),
        }
    }
}

/// Stack-wide settings. `StackConfig::default()` suits a TUN device at MTU 1500 and a kernel peer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StackConfig {
    /// Seed of every random choice (ISNs, ephemeral ports). The default comes from the OS; tests
    /// set it to replay a run.
    pub random_seed: u64,
    /// TCP receive buffer per connection, in bytes. It bounds the window the stack advertises;
    /// the window scale option is chosen from it (RFC 7323), so anything above 64 KiB is used.
    /// Memory is committed only as data arrives.
    pub tcp_rx_buffer: usize,
    /// TCP send buffer per connection, in bytes.
    pub tcp_tx_buffer: usize,
    /// UDP receive buffer per socket and interface, in bytes of payload.
    pub udp_rx_buffer: usize,
    /// UDP send buffer per socket and interface, in bytes of payload.
    pub udp_tx_buffer: usize,
    /// Datagrams each UDP buffer holds at most.
    pub udp_packets: usize,
    /// How long a connection attempt waits for the handshake before `ETIMEDOUT` (Darwin: 75 s).
    pub connect_timeout: Duration,
    /// Nagle's algorithm (RFC 896) on new TCP connections.
    pub nagle: bool,
    /// Delayed ACK timeout; `None` acknowledges every segment at once.
    pub ack_delay: Option<Duration>,
    /// Congestion control of new TCP connections.
    pub congestion_control: CongestionControl,
    /// Ephemeral ports (Linux's default range; RFC 6056 algorithm 1 picks at random in it).
    pub ephemeral_ports: RangeInclusive<u16>,
    /// The largest `listen` backlog (Linux's `net.core.somaxconn`, 4096): a larger one is cut
    /// to it. The backlog bounds both the accept queue and the handshakes under way per
    /// listener.
    pub max_backlog: usize,
    /// Most handshakes peers may have half open at once, all listeners together; past it (or
    /// past a listener's backlog) SYNs get SYN cookies, or are dropped without them, so a flood
    /// of SYNs holds bounded memory.
    pub max_half_open: usize,
    /// SYN cookies (RFC 4987), on by default as Linux's `tcp_syncookies = 1`: a SYN that finds
    /// the half-open handshakes at their bound is answered statelessly, and the connection made
    /// when the client's ACK brings the cookie back (without window scaling or SACK, as
    /// Linux's cookies without timestamps). Off, such SYNs are dropped (`TCPReqQFullDrop`).
    pub syn_cookies: bool,
    /// How long a handshake a peer started may stay unfinished before it is dropped (Linux
    /// gives up after 5 SYN-ACK retransmissions, about 63 s).
    pub handshake_timeout: Duration,
    /// How long a connection closed by the application may linger (FIN-WAIT-2, or unacked data)
    /// before it is aborted — Linux's `tcp_fin_timeout`.
    pub orphan_timeout: Duration,
    /// How long a connection that closed first on this side stays in TIME-WAIT (a compact
    /// entry; its socket and buffers are freed at once): Linux's 60 s (`TCP_TIMEWAIT_LEN`).
    pub time_wait: Duration,
    /// Most connections in TIME-WAIT at once (Linux's `tcp_max_tw_buckets`); past it a
    /// connection closes without the wait (`TCPTimeWaitOverflow`).
    pub max_time_wait: usize,
    /// Closed TCP sockets kept to serve new connections, buffers and all: a connection that
    /// finds one allocates nothing (a new socket allocates, and the allocator clears, both its
    /// buffers). Each may keep the pages its buffers touched resident, so keep it small.
    pub spare_sockets: usize,
    /// Most packets read from one interface in one round before the stack sends what is queued.
    pub rx_burst: usize,
    /// Run the TCP Fast Open layer (default). Off, segments pass between the devices and
    /// smoltcp untouched: no option 34 is sent or understood, Fast Open requests on sockets
    /// are plain connections. For measuring what the layer costs.
    pub fast_open_layer: bool,
    /// Run the loss recovery layer (default): SACK scoreboard, RACK-TLP, PRR, CUBIC or Reno
    /// (see [`recovery`](crate::recovery)). Off, smoltcp recovers on its own (one fast
    /// retransmit per three duplicate ACKs, a timeout of at least a second, its own congestion
    /// control). For measuring what the layer does.
    pub loss_recovery: bool,
    /// Most bytes of socket buffers the stack commits at once: each TCP connection (and each
    /// socket a listener keeps ready) takes `tcp_rx_buffer + tcp_tx_buffer`, each UDP socket
    /// `udp_rx_buffer + udp_tx_buffer` per interface it lives on. A connection that would go
    /// past it fails with `ENOBUFS`; a listener keeps fewer sockets ready. Closed connections
    /// hold theirs until they have finished closing (or reached TIME-WAIT). Default: no limit.
    pub buffer_limit: usize,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            random_seed: rand::random(),
            tcp_rx_buffer: 1 << 20,
            tcp_tx_buffer: 1 << 20,
            udp_rx_buffer: 256 << 10,
            udp_tx_buffer: 256 << 10,
            udp_packets: 256,
            connect_timeout: Duration::from_secs(75),
            nagle: true,
            ack_delay: Some(Duration::from_millis(10)),
            congestion_control: CongestionControl::default(),
            ephemeral_ports: 32768..=60999,
            max_backlog: crate::SOMAXCONN,
            max_half_open: 16384,
            syn_cookies: true,
            handshake_timeout: Duration::from_secs(63),
            orphan_timeout: Duration::from_secs(60),
            time_wait: Duration::from_secs(60),
            max_time_wait: 262_144,
            spare_sockets: 16,
            rx_burst: 64,
            fast_open_layer: true,
            loss_recovery: true,
            buffer_limit: usize::MAX,
        }
    }
}

/// One interface of the stack.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InterfaceConfig {
    /// Name, for messages and for `sae_srcif` lookups by name (the TUN device's name).
    pub name: String,
    /// The kernel's interface index of the device (`if_nametoindex`), which callers pass as
    /// `sae_srcif`; `None` for a descriptor with no kernel interface (a socketpair).
    pub kernel_index: Option<u32>,
    /// Largest IP packet the device carries.
    pub mtu: usize,
    /// The stack's own addresses on this interface.
    pub addresses: Vec<Cidr>,
    /// The device takes TCP packets of up to 64 KB and cuts them into segments of the MTU
    /// itself, and may hand over such packets (segmentation offload: a TUN device with a
    /// virtio-net header, whose metadata the caller handles with [`crate::offload`]). smoltcp
    /// then writes segments as large as the window allows to peers that take full-sized ones.
    ///
    /// On such an interface the TCP checksums of arriving packets are not checked again: hand
    /// over only packets that passed [`offload::accept`](crate::offload::accept), which fills in
    /// partial checksums and checks the rest once. Off by default.
    pub offload: bool,
}

impl InterfaceConfig {
    /// An interface with a name and MTU 1500, no addresses yet.
    pub fn new(name: impl Into<String>) -> InterfaceConfig {
        InterfaceConfig {
            name: name.into(),
            kernel_index: None,
            mtu: 1500,
            addresses: Vec::new(),
            offload: false,
        }
    }

    /// Set the kernel's interface index.
    pub fn kernel_index(mut self, index: Option<u32>) -> Self {
        self.kernel_index = index;
        self
    }

    /// Set the MTU.
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// Turn segmentation offload on or off (see [`offload`](InterfaceConfig::offload)).
    pub fn offload(mut self, on: bool) -> Self {
        self.offload = on;
        self
    }

    /// Add an address.
    pub fn address(mut self, cidr: Cidr) -> Self {
        self.addresses.push(cidr);
        self
    }
}
