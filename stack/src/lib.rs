//! The protocol core of the connectx stack: interfaces, routing, source address selection, TCP
//! and UDP, on top of an unmodified smoltcp, with the layers smoltcp lacks.
//!
//! ```text
//!   connectx-api (descriptors, errno, waiters; reads the clock for every call that needs it)
//!        │ Stack::socket/connect(now)/send/recv/close(now)…   Stack::poll(now, &mut io)
//!        ▼                                                              │ events ▲
//!   ┌─ stack (the table of contents) ──────────────────────────────────▼────────┴──┐
//!   │ sockets · ports · routing (longest prefix) · source selection (RFC 6724)     │
//!   │ engine: wire (one parser) ─► demux (tuple → shard, TIME-WAIT, listeners)     │
//!   │         ─► layers: loss recovery · Fast Open · SYN cookies · ICMP ─► shard   │
//!   │ shards: one smoltcp socket per SocketSet, one timer heap, a work list        │
//!   │ per interface: one smoltcp Interface, polled with one shard at a time        │
//!   └─────────────────────────────────────────────────────────────▲────────────────┘
//!                                                                  │ PacketIo::recv / send
//!       capture · impairment · tun-driver Device, a socketpair, or the in-memory `sim` link
//! ```
//!
//! Module layers, each depending only on those before it: `ids`, `addr`, `error`, `wire` ·
//! `fastopen`, `recovery`, `syncookie`, `icmp`, `ports`, `route`, `source`, `config` · `shard`, `demux`,
//! `iface` · `stack` (and its parts `tcp`, `udp`, `engine`, `socket`) · `sim` (tests only, the
//! `sim` feature).
//!
//! What it does not do: no threads, no clock reads, no file descriptors. Every entry point
//! that sets a deadline takes `now`, and the core keeps no time of its own; packets move
//! through the caller's [`PacketIo`]. A poll does work in proportion to the packets, calls and
//! timers of the round, not to how many sockets exist. Every operation returns its own error
//! enum; `connectx-api` maps each variant to an errno.
//!
//! Nothing that arrives from the network panics the stack: packets are read through `wire`,
//! which checks every length before reading, and smoltcp's own parsers (`new_checked`); the
//! stack checks the checksum of any segment it acts on itself (a SYN that creates state, a
//! segment a TIME-WAIT entry or a SYN cookie answers) before acting.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod capture;
pub mod config;
mod demux;
pub mod error;
pub mod fastopen;
mod fragment;
#[cfg(feature = "fuzz")]
pub mod fuzzing;
mod icmp;
mod ids;
mod iface;
pub mod impair;
pub mod offload;
mod ports;
pub mod recovery;
pub mod route;
mod shard;
mod shared_packet;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod source;
mod stack;
mod syncookie;
pub(crate) mod wire;

pub use addr::{Cidr, CidrError};
pub use capture::Capture;
pub use config::SOMAXCONN;
pub use config::{CongestionControl, InterfaceConfig, StackConfig};
pub use error::{
    AcceptError, BindError, ConnectError, ConnectionError, InterfaceError, ListenError, RecvError,
    RouteError, SendError, ShutdownError, SocketOptionError,
};
pub use fastopen::{
    CookieEntry, CookieKey, Counters as FastOpenCounters, Fallback, FastOpenInfo, KeyUsed,
    Mode as FastOpenMode, ServerConfig as FastOpenServerConfig, ServerInfo as FastOpenServerInfo,
};
pub use ids::{Family, IfaceId, SocketId};
pub use iface::{InterfaceInfo, PacketIo};
pub use impair::{ImpairStats, Impaired, Impairment, ImpairmentError};
pub use recovery::{BbrInfo, BbrMode, RecoveryCounters, RecoveryInfo, RecoveryState};
pub use shared_packet::SharedPacket;
pub use smoltcp::time::{Duration as SmolDuration, Instant};
pub use source::select_source;
pub use stack::socket::{Readiness, Shutdown, SocketType};
pub use stack::tcp::{ConnectOptions, ConnectStatus};
pub use stack::{PollOutcome, Stack, TableSizes, TcpCounters, MAX_ADDRESSES_PER_INTERFACE};
