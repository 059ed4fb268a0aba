//! The protocol core of the connectx stack: interfaces, routing, source address selection, TCP
//! and UDP, on top of an unmodified smoltcp.
//!
//! ```text
//!   connectx-api (descriptors, errno, the runtime thread: the only clock reader)
//!        │ Stack::socket/connect/send/recv…            Stack::poll(now, &mut io)
//!        ▼                                                        │
//!   ┌─ stack ──────────────────────────────────────────────────────▼─────────┐
//!   │ socket table ─ routing table (longest prefix) ─ source selection (6724) │
//!   │ per interface: smoltcp Interface + its own SocketSet                    │
//!   └──────────────────────────────────────────────▲─────────────────────────┘
//!                                                   │ PacketIo::recv / send
//!                     tun-driver Device, a socketpair, or the in-memory `sim` link
//! ```
//!
//! What it does not do: no threads, no clock reads, no file descriptors. Time is passed to
//! [`Stack::poll`]; packets move through the caller's [`PacketIo`]. Every operation returns
//! its own error enum; `connectx-api` maps each variant to an errno.
//!
//! Nothing that arrives from the network panics the stack: packets go to smoltcp's parsers,
//! which check lengths before reading (`new_checked`), and the stack's own code never indexes
//! a packet.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod capture;
pub mod config;
mod demux;
mod engine;
pub mod error;
pub mod fastopen;
mod icmp;
mod ids;
mod iface;
pub mod impair;
mod ports;
pub mod route;
mod shard;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod socket;
mod source;
mod stack;
mod syncookie;
mod tcp;
mod udp;
pub(crate) mod wire;

pub use addr::{Cidr, CidrError};
pub use capture::Capture;
pub use config::{CongestionControl, InterfaceConfig, StackConfig};
pub use error::{
    AcceptError, BindError, ConnectError, ConnectionError, InterfaceError, ListenError, RecvError,
    RouteError, SendError, ShutdownError,
};
pub use fastopen::{
    CookieEntry, CookieKey, Counters as FastOpenCounters, Fallback, FastOpenInfo, KeyUsed,
    Mode as FastOpenMode, ServerConfig as FastOpenServerConfig, ServerInfo as FastOpenServerInfo,
};
pub use ids::{Family, IfaceId, SocketId};
pub use iface::{InterfaceInfo, PacketIo};
pub use impair::{ImpairStats, Impaired, Impairment, ImpairmentError};
pub use smoltcp::time::{Duration as SmolDuration, Instant};
pub use socket::{Readiness, Shutdown, SocketType};
pub use source::select_source;
pub use stack::{PollOutcome, Stack, TcpCounters, MAX_ADDRESSES_PER_INTERFACE};
pub use tcp::{ConnectOptions, ConnectStatus, SOMAXCONN};
