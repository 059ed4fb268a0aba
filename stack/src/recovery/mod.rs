//! Loss recovery and congestion control as Linux runs them, added to an unmodified smoltcp: a
//! layer in the packet path with its own state per connection.
//!
//! smoltcp's sender waits at least a second before it resends anything but the first missing
//! segment, ignores the peer's SACK blocks, and after a timeout sends everything again. This
//! layer takes the sending side over:
//!
//! - **Scoreboard** (`scoreboard`): every segment smoltcp sends is recorded, payload and all,
//!   until the peer acknowledges it (a segment that fills its buffer left where smoltcp wrote
//!   it, the buffer shared with the device's queue: `crate::shared_packet`); the peer's SACK
//!   blocks mark what it holds (RFC 6675).
//!   Blocks that are reversed, out of the window or beyond what was sent are ignored and
//!   counted; SACKed data is kept until cumulatively acknowledged (a peer may renege).
//! - **Loss detection**: RACK (RFC 8985 §6) by time and order, with the reordering window that
//!   grows when the peer reports reordering (D-SACK); without SACK, three duplicate ACKs and
//!   NewReno's partial acknowledgements (RFC 6582). Lost segments are sent again at once, each
//!   exactly as it first left, never one the peer SACKed; what smoltcp sends again on its own
//!   (its one-second timer, its fast retransmit) is dropped on the way out.
//! - **Tail loss probe** (RFC 8985 §7): two round trips after the last segment, if nothing
//!   came back, the last segment goes again, so losing the end of a burst costs about two round
//!   trips instead of a timeout.
//! - **Retransmission timeout** (RFC 6298 with Linux's 200 ms floor), with backoff.
//! - **Congestion control** (`cc`): CUBIC or Reno, Proportional Rate Reduction during
//!   recovery (RFC 6937), slow start from one segment after a timeout and from the initial
//!   window after an idle period; or BBR (`bbr`), on delivery rate estimation (`rate`), which
//!   every connection runs. Per connection (`TCP_CONGESTION`). smoltcp's own is off; the layer
//!   tells smoltcp how far it may send through the window of the acknowledgements it lets
//!   smoltcp see (never more than the peer offered).
//! - **As a receiver**: out-of-order segments are held by the layer (`reassembly`), not by
//!   smoltcp's reassembler and its fixed number of holes, and go to smoltcp in order; up to
//!   four SACK blocks per acknowledgement (`sack_out`; smoltcp sends one).
//! - **Receive window moderation** (`rcv_window`): the window we advertise follows what the
//!   application reads, as Linux sizes its receive buffer, instead of smoltcp's whole free
//!   buffer, so that a peer keeps in flight what the application takes.
//!
//! The layer sees segments as they are on the wire (after the Fast Open layer's translation
//! and a SYN cookie's shift on the way out, before them on the way in), and it acts on an
//! arriving segment only once its checksum is known good.

pub(crate) mod bbr;
pub(crate) mod cc;
pub(crate) mod rate;
pub(crate) mod rcv_window;
pub(crate) mod reassembly;
pub(crate) mod receive;
pub(crate) mod rtt;
pub(crate) mod sack_out;
pub(crate) mod scoreboard;

use smoltcp::time::{Duration, Instant};

use crate::config::CongestionControl;
use crate::ids::Tuple;
use crate::shard::WireSeq;
use crate::shared_packet::{PacketPool, SharedPacket};
use crate::wire::{self, Tcp, ACK, FIN, PSH, RST, SYN};
use cc::{Congestion, Phase};
use rate::Rate;
use rcv_window::RcvWindow;
use rtt::Rtt;
use sack_out::SackOut;
use scoreboard::{before, before_eq, Delivered, Scoreboard, Sent};

/// RFC 8985's `DupThresh`.
const DUP_THRESH: u32 = 3;
/// RFC 8985 §7.2's `WCDelAckT`: a peer may hold the acknowledgement of a lone segment this
/// long (Linux's `TCP_RTO_MIN` serves).
const MAX_ACK_DELAY: Duration = Duration::from_millis(200);
/// Added to two round trips for the probe timeout (Linux's `TCP_TIMEOUT_MIN`, 2 ms).
const PTO_SLACK: Duration = Duration::from_millis(2);
/// Most probes in a row during recovery before the retransmission timeout.
const MAX_RECOVERY_PROBES: u32 = 3;
/// How long a drained flight keeps a large payload buffer.
const RELEASE_AFTER: Duration = Duration::from_secs(1);
/// A timeout scheduled after reneging: soon, not a whole RTO.
const RENEGE_DELAY: Duration = Duration::from_millis(10);
/// A segment with at least this much payload (a super-packet, with segmentation offload), or
/// whose payload fills at least half its buffer (a wire-sized segment without offload), is
/// held where smoltcp wrote it instead of copied ([`crate::shared_packet`]); the others (small
/// segments in 64 KB buffers) are copied, several to a chunk, which costs less memory.
const SHARE_FROM: usize = 16 * 1024;
/// Most SACK blocks a segment carries (40 option bytes).
const MAX_SACK_BLOCKS: usize = 4;

/// The recovery layer's counters, stack-wide, with Linux's names (`nstat`'s `Tcp*`/`TcpExt*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(non_snake_case)]
#[non_exhaustive]
pub struct RecoveryCounters {
    /// Segments sent again (Linux's `Tcp: RetransSegs`): by loss detection, probes, timeouts.
    pub TcpRetransSegs: u64,
    /// Retransmissions found lost again (RACK).
    pub TCPLostRetransmit: u64,
    /// Fast recoveries entered on SACK information.
    pub TCPSackRecovery: u64,
    /// Fast recoveries entered on duplicate ACKs (a peer without SACK).
    pub TCPRenoRecovery: u64,
    /// Segments sent again during fast recovery.
    pub TCPFastRetrans: u64,
    /// Segments sent again after a timeout.
    pub TCPSlowStartRetrans: u64,
    /// Loss probes sent: at the tail of a flight (RFC 8985 §7), and, unlike Linux, also during
    /// fast recovery when nothing came back for two round trips.
    pub TCPLossProbes: u64,
    /// Losses repaired by a tail loss probe alone.
    pub TCPLossProbeRecovery: u64,
    /// Retransmission timeouts.
    pub TCPTimeouts: u64,
    /// Acknowledgements that showed the network reordered segments.
    pub TCPSACKReorder: u64,
    /// SACK blocks ignored: reversed, out of the window, or beyond what was sent.
    pub TCPSACKDiscard: u64,
    /// D-SACK blocks received (a segment arrived twice).
    pub TCPDSACKRecv: u64,
    /// Receivers that dropped data they had SACKed.
    pub TCPSACKReneging: u64,
    /// Fast recoveries undone: every segment sent again was reported arriving twice (D-SACK),
    /// so nothing had been lost; the window is put back.
    pub TCPDSACKUndo: u64,
    /// Retransmission timeouts undone the same way.
    pub TCPLossUndo: u64,
    /// Segments smoltcp sent again on its own that the layer did not let out (already in
    /// flight, SACKed, or sent again by the layer). Not a Linux counter.
    pub RecoveryRedundantDropped: u64,
}

impl RecoveryCounters {
    /// (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("TcpRetransSegs", self.TcpRetransSegs),
            ("TCPLostRetransmit", self.TCPLostRetransmit),
            ("TCPSackRecovery", self.TCPSackRecovery),
            ("TCPRenoRecovery", self.TCPRenoRecovery),
            ("TCPFastRetrans", self.TCPFastRetrans),
            ("TCPSlowStartRetrans", self.TCPSlowStartRetrans),
            ("TCPLossProbes", self.TCPLossProbes),
            ("TCPLossProbeRecovery", self.TCPLossProbeRecovery),
            ("TCPTimeouts", self.TCPTimeouts),
            ("TCPSACKReorder", self.TCPSACKReorder),
            ("TCPSACKDiscard", self.TCPSACKDiscard),
            ("TCPDSACKRecv", self.TCPDSACKRecv),
            ("TCPSACKReneging", self.TCPSACKReneging),
            ("TCPDSACKUndo", self.TCPDSACKUndo),
            ("TCPLossUndo", self.TCPLossUndo),
            ("RecoveryRedundantDropped", self.RecoveryRedundantDropped),
        ]
        .into_iter()
    }

    fn add(&mut self, o: &RecoveryCounters) {
        self.TcpRetransSegs += o.TcpRetransSegs;
        self.TCPLostRetransmit += o.TCPLostRetransmit;
        self.TCPSackRecovery += o.TCPSackRecovery;
        self.TCPRenoRecovery += o.TCPRenoRecovery;
        self.TCPFastRetrans += o.TCPFastRetrans;
        self.TCPSlowStartRetrans += o.TCPSlowStartRetrans;
        self.TCPLossProbes += o.TCPLossProbes;
        self.TCPLossProbeRecovery += o.TCPLossProbeRecovery;
        self.TCPTimeouts += o.TCPTimeouts;
        self.TCPSACKReorder += o.TCPSACKReorder;
        self.TCPSACKDiscard += o.TCPSACKDiscard;
        self.TCPDSACKRecv += o.TCPDSACKRecv;
        self.TCPSACKReneging += o.TCPSACKReneging;
        self.TCPDSACKUndo += o.TCPDSACKUndo;
        self.TCPLossUndo += o.TCPLossUndo;
        self.RecoveryRedundantDropped += o.RecoveryRedundantDropped;
    }
}

/// Where a connection's sender stands (Linux's `tcpi_ca_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryState {
    /// Nothing known lost.
    #[default]
    Open,
    /// Fast recovery (losses found by SACK, RACK or duplicate ACKs).
    Recovery,
    /// After a retransmission timeout.
    Loss,
}

/// One connection's sender, as the recovery layer sees it (the fields of Linux's `tcp_info`
/// that concern it). All zero before the connection sent data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryInfo {
    /// Open, in fast recovery, or after a timeout.
    pub state: RecoveryState,
    /// Smoothed round-trip time, in microseconds.
    pub srtt_us: u64,
    /// Its variation, in microseconds.
    pub rttvar_us: u64,
    /// The least round trip seen (over 300 s), in microseconds.
    pub min_rtt_us: u64,
    /// The retransmission timeout now, in microseconds.
    pub rto_us: u64,
    /// Congestion window in bytes (`u32::MAX`: no congestion control).
    pub cwnd: u32,
    /// Slow start threshold in bytes (`u32::MAX` until the first loss).
    pub ssthresh: u32,
    /// Bytes sent and not cumulatively acknowledged.
    pub unacked: u32,
    /// Of those, bytes the peer SACKed.
    pub sacked: u32,
    /// Of those, bytes known lost and not yet sent again.
    pub lost: u32,
    /// The peer reported reordering.
    pub reordering_seen: bool,
    /// The most our window advertises now (receive window moderation, as Linux sizes its
    /// receive buffer): 64 KiB until the application reads, then what its reads call for;
    /// `u32::MAX` when the whole buffer is advertised (no round trip measured, or the layer
    /// off).
    pub rcv_window: u32,
    /// The last delivery rate measured, in bytes per second (Linux's `tcpi_delivery_rate`): the
    /// bytes delivered over the round trip of the most recently sent segment acknowledged.
    pub delivery_rate: u64,
    /// BBR's model, when the connection runs BBR (Linux's `tcp_bbr_info`).
    pub bbr: Option<BbrInfo>,
    /// This connection's share of the stack's counters.
    pub counters: RecoveryCounters,
}

/// BBR's model of a connection's path (Linux's `tcp_bbr_info`, with the mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BbrInfo {
    /// STARTUP, DRAIN, PROBE_BW or PROBE_RTT.
    pub mode: BbrMode,
    /// The bottleneck bandwidth estimate, bytes per second.
    pub bw: u64,
    /// The propagation delay estimate (least round trip over 10 s), microseconds.
    pub min_rtt_us: u64,
    /// The rate Linux would pace at, bytes per second (this stack does not pace).
    pub pacing_rate: u64,
}

/// BBR's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BbrMode {
    /// Doubling the window each round until the bandwidth stops growing.
    Startup,
    /// Letting the queue STARTUP built go.
    Drain,
    /// Cycling the gain around the bandwidth estimate.
    ProbeBw,
    /// Holding four segments in flight to measure the round trip again.
    ProbeRtt,
}

/// What the layer knows of a connection from the peer's SYN (or SYN-ACK), kept inline; the
/// rest comes with the first data sent.
#[derive(Debug, Default)]
pub(crate) struct Conn {
    /// Largest segment payload: the peer's MSS option within our MTU.
    mss: u32,
    /// The peer's window scale (0 without the option).
    scale: u8,
    /// The peer may send SACK blocks (it said so in its SYN).
    sack: bool,
    /// Our sequence numbers on the wire minus smoltcp's (Fast Open's offset, a SYN cookie's
    /// shift), to relate the acknowledgements smoltcp sees to the wire's.
    delta: u32,
    /// Whether the peer's SYN had the window scale option, and the scale our SYN offered:
    /// our window is scaled by it when both did (RFC 7323 §2.2).
    peer_scales: bool,
    our_scale: Option<u8>,
    /// A segment of the peer's that arrived a second time (its duplicate part): the next
    /// acknowledgement reports it as a D-SACK block.
    duplicate: Option<(u32, u32)>,
    /// The sequence number of a FIN that arrived past a hole (wire numbers): smoltcp takes it
    /// once the hole is filled ([`receive::fin_beyond_hole`]).
    pub(crate) held_fin: Option<u32>,
    /// Timing the handshake.
    handshake: Handshake,
    /// Its round trip, until the state that keeps round trips exists.
    first_rtt: Option<Duration>,
    /// Bytes the application has read (wrapping), for the window's moderation.
    read: u32,
    /// The congestion control set on the connection's socket (`None`: the stack's).
    algorithm: Option<CongestionControl>,
    state: Option<Box<State>>,
    /// The peer's initial sequence number plus one: where its data starts (its numbers are
    /// smoltcp's too).
    peer_data_start: Option<u32>,
    /// Out-of-order segments held for smoltcp, while there are any ([`reassembly`]).
    pub(crate) ooo: Option<Box<reassembly::Reassembly>>,
    /// The newest acknowledgement number smoltcp was given (its numbers), with its window.
    newest_ack: Option<(u32, u16)>,
    /// Where the last segment that went to smoltcp ended: the next one that starts there is
    /// in order (a hint that spares the count of [`Conn::in_order`] for most segments).
    pub(crate) next_hint: Option<u32>,
}

impl Conn {
    /// A data segment of the peer's arrived (as on the wire, checksum checked by the caller)
    /// whose first bytes our acknowledgements had already covered (`rcv_nxt`): remember the
    /// duplicate part for a D-SACK block.
    pub(crate) fn arrived(&mut self, t: &Tcp, rcv_nxt: Option<u32>) {
        let (Some(rcv_nxt), len) = (rcv_nxt, t.payload_len() as u32) else {
            return;
        };
        if len == 0 || t.has(SYN) || !before(t.seq, rcv_nxt) {
            return;
        }
        let end = t.seq.wrapping_add(len);
        self.duplicate = Some((t.seq, if before(end, rcv_nxt) { end } else { rcv_nxt }));
    }

    /// A segment the layer holds out of order arrived again (`seq..end`): the acknowledgement
    /// that answers it reports it first, as a D-SACK block.
    pub(crate) fn held_twice(&mut self, seq: u32, end: u32) {
        self.duplicate = Some((seq, end));
    }

    /// Where the next segment smoltcp takes in order starts (its `RCV.NXT`, before any FIN):
    /// the start of the peer's data, plus what the application read, plus what waits in
    /// smoltcp's buffer (`queued`). `None` before the peer's SYN, or if that would be behind
    /// what our acknowledgements said (`rcv_nxt`), which would mean the count is off.
    pub(crate) fn in_order(&self, queued: usize, rcv_nxt: Option<u32>) -> Option<u32> {
        let nxt = self
            .peer_data_start?
            .wrapping_add(self.read)
            .wrapping_add(queued as u32);
        rcv_nxt.is_none_or(|r| before_eq(r, nxt)).then_some(nxt)
    }

    /// A segment with acknowledgement number `ack` and window `window` (smoltcp's numbers)
    /// goes to smoltcp.
    fn ack_to_smoltcp(&mut self, ack: u32, window: u16) {
        if self.newest_ack.is_none_or(|(a, _)| before_eq(a, ack)) {
            self.newest_ack = Some((ack, window));
        }
    }

    pub(crate) fn newest_ack(&self) -> Option<(u32, u16)> {
        self.newest_ack
    }

    /// The scale of the window we advertise.
    pub(crate) fn our_scale(&self) -> u8 {
        match (self.peer_scales, self.our_scale) {
            (true, Some(s)) => s,
            _ => 0,
        }
    }

    /// The sending side's state, made on first use.
    fn state(&mut self, algorithm: CongestionControl, now: Instant) -> &mut State {
        let (mss, read) = (self.mss, self.read);
        let first_rtt = &mut self.first_rtt;
        self.state.get_or_insert_with(|| {
            Box::new(State::new(algorithm, mss, first_rtt.take(), read, now))
        })
    }

    /// The application read `n` bytes.
    pub(crate) fn read(&mut self, n: usize) {
        self.read = self.read.wrapping_add(n as u32);
    }

    /// smoltcp wrote `smoltcp_seq` where the wire carries `wire_seq` (the Fast Open layer's
    /// offset, a SYN cookie's shift): acknowledgements relate to smoltcp's numbers by as much.
    pub(crate) fn translated(&mut self, smoltcp_seq: u32, wire_seq: u32) {
        self.delta = wire_seq.wrapping_sub(smoltcp_seq);
    }
}

/// Timing our SYN (or SYN-ACK) to the peer's answer (Linux takes its first RTT sample there).
#[derive(Debug, Clone, Copy, Default)]
enum Handshake {
    #[default]
    Idle,
    /// Our SYN left then (once: a retransmitted SYN makes the answer ambiguous, Karn).
    Sent(Instant),
    Ambiguous,
    Measured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// RACK's reordering window runs out for a segment.
    Reorder,
    /// Tail loss probe.
    Probe,
    /// Retransmission timeout.
    Retransmit,
    /// The flight drained a while ago: the payload buffer goes.
    Release,
    /// The flight drained a retransmission timeout ago: the window restarts (RFC 5681 §4.1).
    Idle,
}

/// RACK (RFC 8985 §6).
#[derive(Debug, Clone, Copy)]
struct Rack {
    /// The most recently sent segment known delivered: when it left, its end.
    xmit: Option<(Instant, u32)>,
    rtt: Duration,
    reordering_seen: bool,
    reo_wnd_mult: u32,
    reo_wnd_persist: u32,
    dsack_round: Option<u32>,
}

impl Default for Rack {
    fn default() -> Self {
        Rack {
            xmit: None,
            rtt: Duration::ZERO,
            reordering_seen: false,
            reo_wnd_mult: 1,
            reo_wnd_persist: 0,
            dsack_round: None,
        }
    }
}

/// Most retransmissions of one loss episode that D-SACKs can undo (more: no undo).
const UNDO_MAX: usize = 16;

/// A loss episode: the window before it was cut, and the segments it sent again that no D-SACK
/// has reported arriving twice yet. When none is left, nothing was lost. It outlives the
/// recovery (the D-SACKs of a reordered network come after the acknowledgements that end it,
/// and Linux undoes then too) until the next episode.
#[derive(Debug, Clone, Copy)]
struct Episode {
    before: cc::Snapshot,
    /// Sequence numbers of the retransmissions still unreported.
    pending: [u32; UNDO_MAX],
    n_pending: usize,
    /// Some retransmission could not be recorded, or was not a segment's first: no undo.
    unsure: bool,
    /// Retransmissions recorded in all.
    rexmits: u32,
}

impl Episode {
    fn new(before: cc::Snapshot) -> Episode {
        Episode {
            before,
            pending: [0; UNDO_MAX],
            n_pending: 0,
            unsure: false,
            rexmits: 0,
        }
    }

    fn resent(&mut self, seq: u32) {
        self.rexmits += 1;
        if self.pending[..self.n_pending].contains(&seq) {
            // Sent twice in the episode: one D-SACK cannot tell which copy was needless.
            self.unsure = true;
        } else if self.n_pending < UNDO_MAX {
            self.pending[self.n_pending] = seq;
            self.n_pending += 1;
        } else {
            self.unsure = true;
        }
    }

    /// A D-SACK block `(l, r)`: the retransmissions it covers arrived twice. Returns whether
    /// every retransmission of the episode is now known needless.
    fn reported(&mut self, l: u32, r: u32) -> bool {
        let mut i = 0;
        while i < self.n_pending {
            let seq = self.pending[i];
            if before_eq(l, seq) && before(seq, r) {
                self.n_pending -= 1;
                self.pending[i] = self.pending[self.n_pending];
            } else {
                i += 1;
            }
        }
        self.rexmits > 0 && self.n_pending == 0 && !self.unsure
    }
}

/// A tail loss probe out (RFC 8985 §7.3's `TLP.end_seq`).
#[derive(Debug, Clone, Copy)]
struct Probe {
    end: u32,
}

/// The sending side of one connection, from its first data on.
#[derive(Debug)]
struct State {
    sb: Scoreboard,
    rtt: Rtt,
    cc: Congestion,
    /// Delivery rate estimation.
    rate: Rate,
    /// After the receiver reneged, SACKed bytes count as delivered a second time when they
    /// are acknowledged: no rate sample until `SND.UNA` passes this (Linux's `is_sack_reneg`).
    rate_invalid_until: Option<u32>,
    rack: Rack,
    probe: Option<Probe>,
    timer: Option<(Instant, Timer)>,
    /// When the retransmission timer expires while data is out.
    rto_at: Option<Instant>,
    /// The peer acknowledged only up to data it had SACKed.
    reneged: bool,
    /// The loss episode under way (fast recovery or after a timeout), for undoing it.
    episode: Option<Episode>,
    /// Probes sent during recovery since the last progress.
    recovery_probes: u32,
    /// Duplicate ACKs in a row (a peer without SACK), and the window they carried.
    dupacks: u32,
    last_window: Option<u16>,
    /// When data last left.
    last_send: Option<Instant>,
    /// The largest payload smoltcp sent in one segment: more than the MSS only when the device
    /// cuts super-packets (segmentation offload); what a retransmission may carry at most.
    largest: u32,
    /// The most in flight since the last acknowledgement, and in the round before (RFC 7661).
    peak_pipe: u32,
    sack_out: SackOut,
    /// The receive window's moderation.
    rcv: RcvWindow,
    counters: RecoveryCounters,
}

impl State {
    fn new(
        algorithm: CongestionControl,
        mss: u32,
        rtt: Option<Duration>,
        read: u32,
        now: Instant,
    ) -> State {
        let mut estimator = Rtt::default();
        if let Some(rtt) = rtt {
            estimator.sample(rtt, now);
        }
        State {
            sb: Scoreboard::default(),
            rtt: estimator,
            cc: Congestion::new(algorithm, mss, now),
            rate: Rate::default(),
            rate_invalid_until: None,
            rack: Rack::default(),
            probe: None,
            timer: None,
            rto_at: None,
            reneged: false,
            episode: None,
            recovery_probes: 0,
            dupacks: 0,
            last_window: None,
            last_send: None,
            largest: 0,
            peak_pipe: 0,
            sack_out: SackOut::default(),
            rcv: RcvWindow::new(read, now),
            counters: RecoveryCounters::default(),
        }
    }
}

/// What the layer needs of the connection to build its own segments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// (local, remote).
    pub(crate) tuple: Tuple,
    /// What the wire saw of our side of the connection (the acknowledgement and window the
    /// layer's segments carry).
    pub(crate) wire: &'a WireSeq,
    /// The peer's sequence numbers are smoltcp's (no Fast Open layer translates them), so the
    /// layer can build a segment of the peer's for smoltcp.
    pub(crate) peer_numbers_plain: bool,
}

/// The recovery layer of one stack.
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) counters: RecoveryCounters,
    /// Switched off by [`StackConfig::loss_recovery`](crate::StackConfig::loss_recovery).
    pub(crate) disabled: bool,
    algorithm: CongestionControl,
    pub(crate) scratch: Vec<u8>,
    /// The buffers of acknowledged segments (the scoreboard gives them back), to write the
    /// next ones in.
    pool: PacketPool,
    /// The segment [`Layer::egress`] just recorded, if it shared its buffer instead of copying
    /// its payload: it leaves from here ([`Layer::take_shared`]).
    shared: Option<SharedPacket>,
}

impl Layer {
    pub(crate) fn new(disabled: bool, algorithm: CongestionControl) -> Layer {
        Layer {
            counters: RecoveryCounters::default(),
            disabled,
            algorithm,
            scratch: Vec::new(),
            pool: PacketPool::default(),
            shared: None,
        }
    }

    /// Buffers the layer's pool has made so far ([`crate::sim`]'s tests).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn buffers_made(&self) -> u64 {
        self.pool.made
    }

    /// The segment the last [`Layer::egress`] let through, if the layer shares its buffer: it
    /// is this packet that goes to the device (the buffer given to `egress` was replaced by
    /// another to write the next segment in).
    pub(crate) fn take_shared(&mut self) -> Option<SharedPacket> {
        self.shared.take()
    }

    /// The state of a new connection whose segments carry at most `mss` bytes (our MTU),
    /// running `algorithm` (`None`: the stack's).
    pub(crate) fn conn(&self, mss: u32, algorithm: Option<CongestionControl>) -> Conn {
        Conn {
            mss,
            algorithm,
            ..Conn::default()
        }
    }

    /// The congestion control a connection runs.
    fn algorithm(&self, conn: &Conn) -> CongestionControl {
        conn.algorithm.unwrap_or(self.algorithm)
    }

    /// Switch a connection to `algorithm` (`TCP_CONGESTION` on a connected socket): the window
    /// and what is in flight carry over; the new algorithm's own state starts afresh.
    pub(crate) fn set_congestion_control(
        &self,
        conn: &mut Conn,
        algorithm: CongestionControl,
        now: Instant,
    ) {
        conn.algorithm = Some(algorithm);
        if let Some(s) = conn.state.as_deref_mut() {
            let (delivered, min_rtt) = (s.rate.delivered(), s.rtt.min_rtt());
            s.cc.switch_to(algorithm, now, delivered, min_rtt);
        }
    }

    /// A segment about to be handed to a connection's smoltcp socket (after the translations
    /// of the Fast Open layer and of SYN cookies): learn the peer's options from a SYN, and
    /// set the window smoltcp sees to what the congestion window allows.
    ///
    /// `parsed`: the segment's header, if the caller has it (parsed from `pkt` as it is now).
    pub(crate) fn to_smoltcp(&self, conn: &mut Conn, pkt: &mut [u8], parsed: Option<Tcp>) {
        if self.disabled {
            return;
        }
        let Some(t) = parsed.or_else(|| wire::parse(pkt)) else {
            return;
        };
        if t.has(RST) {
            return;
        }
        if t.has(ACK) {
            conn.ack_to_smoltcp(t.ack, t.window);
        }
        let opts = t.options(pkt);
        if t.has(SYN) {
            let peer_mss = wire::mss(opts).map_or(536, u32::from);
            conn.mss = conn.mss.min(peer_mss).max(64);
            let scale =
                wire::find_option(opts, wire::OPT_WINDOW_SCALE).and_then(|b| b.first().copied());
            conn.scale = scale.map_or(0, |s| s.min(14));
            conn.peer_scales = scale.is_some();
            conn.sack = wire::find_option(opts, wire::OPT_SACK_PERMITTED).is_some();
            conn.peer_data_start = Some(t.seq.wrapping_add(1));
        }
        if !t.has(ACK) || t.window == 0 || self.algorithm(conn) == CongestionControl::None {
            return;
        }
        let wire_ack = t.ack.wrapping_add(conn.delta);
        let len = match conn.state.as_deref().and_then(|s| s.right_edge()) {
            Some(edge) => {
                let len = edge.wrapping_sub(wire_ack);
                // A right edge behind the acknowledgement (a segment older than the state).
                if (len as i32) < 0 {
                    0
                } else {
                    len
                }
            }
            None => cc::INITIAL_SEGMENTS * conn.mss,
        };
        let scale = if t.has(SYN) { 0 } else { conn.scale };
        let field = len.div_ceil(1 << scale).clamp(1, u32::from(u16::MAX)) as u16;
        if field < t.window {
            wire::set_window(pkt, &t, field);
        }
    }

    /// A segment arrived for a connection (as on the wire, checksum not yet checked). Segments
    /// the layer sends in answer (retransmissions) go to `out`.
    pub(crate) fn ingress(
        &mut self,
        conn: &mut Conn,
        t: &Tcp,
        pkt: &[u8],
        ctx: Ctx<'_>,
        now: Instant,
        out: &mut Vec<Vec<u8>>,
    ) {
        if self.disabled || !t.has(ACK) || t.has(RST) {
            return;
        }
        if let Handshake::Sent(at) = conn.handshake {
            // The peer's answer to our SYN (its SYN-ACK) or SYN-ACK (its ACK).
            if wire::tcp_checksum_ok(pkt, t) {
                conn.handshake = Handshake::Measured;
                let rtt = elapsed(now, at);
                if let Some(s) = conn.state.as_deref_mut() {
                    s.rtt.sample(rtt, now);
                } else {
                    conn.first_rtt = Some(rtt);
                }
            }
        }
        if t.has(SYN) {
            return;
        }
        let Some(s) = conn.state.as_deref_mut() else {
            return;
        };
        let Some(nxt) = s.sb.nxt() else { return };
        let una = s.sb.una().unwrap_or(nxt);
        if s.sb.is_empty() && t.ack == una {
            // Nothing outstanding, nothing new: the common case of a receiving connection.
            s.last_window = Some(t.window);
            return;
        }
        // Only an acknowledgement of something sent, not older than the last, is looked at;
        // and only a sound one.
        if before(nxt, t.ack) || before(t.ack, una) {
            return;
        }
        if !wire::tcp_checksum_ok(pkt, t) {
            return;
        }
        let blocks = sack_blocks(t.options(pkt));
        let mut d = Delivered::default();
        let mut c = RecoveryCounters::default();
        let prior_pipe = s.sb.pipe();
        s.sb.on_ack(t.ack, &mut d, &mut self.pool);
        let mut dsack = false;
        let mut dsack_block = None;
        let mut accepted = [(0u32, 0u32); MAX_SACK_BLOCKS];
        let mut n_accepted = 0;
        for (i, &(l, r)) in blocks.iter().enumerate() {
            if !before(l, r) || r.wrapping_sub(l) > nxt.wrapping_sub(una) {
                c.TCPSACKDiscard += 1;
                continue;
            }
            // RFC 2883: a first block below the acknowledgement, or within the second, reports
            // a segment that arrived twice.
            let within_second = blocks
                .get(1)
                .is_some_and(|&(l2, r2)| before_eq(l2, l) && before_eq(r, r2));
            if i == 0 && (before_eq(r, t.ack) || within_second) {
                dsack = true;
                dsack_block = Some((l, r));
                c.TCPDSACKRecv += 1;
                continue;
            }
            // Beyond what was sent, below the acknowledgement, or over a block already read
            // from this segment: not what a receiver says.
            let overlaps = accepted[..n_accepted]
                .iter()
                .any(|&(pl, pr)| before(l, pr) && before(pl, r));
            if before(l, t.ack) || before(nxt, r) || overlaps {
                c.TCPSACKDiscard += 1;
                continue;
            }
            accepted[n_accepted] = (l, r);
            n_accepted += 1;
            s.sb.on_sack(l, r, &mut d);
        }
        s.sb.sacks_read(&accepted[..n_accepted]);
        s.on_delivered(&d, dsack, now, &mut c);
        if s.rate_invalid_until.is_some_and(|end| !before(t.ack, end)) {
            s.rate_invalid_until = None;
        }
        let newest = d.rate_from.filter(|_| s.rate_invalid_until.is_none());
        let sample = s.rate.on_ack(now, d.bytes, newest, s.rtt.min_rtt());
        if let Some((l, r)) = dsack_block {
            s.dsack_undo(l, r, &mut c);
        }
        if d.acked > 0 {
            s.dupacks = 0;
            s.reneged = false;
            s.rto_at = (!s.sb.is_empty()).then(|| now + s.rtt.rto());
        }
        if s.sb.head_sacked() && !s.reneged {
            // RFC 2018 §8: the receiver threw away data it had SACKed. Time out soon, and
            // then send everything again.
            s.reneged = true;
            c.TCPSACKReneging += 1;
            let soon = s
                .rtt
                .srtt()
                .map_or(RENEGE_DELAY, |r| (r / 2).max(RENEGE_DELAY));
            s.rto_at = Some(now + soon);
        }
        // The end of a recovery.
        match s.cc.phase() {
            Phase::Recovery { point } | Phase::Loss { point } if !before(t.ack, point) => {
                s.cc.exit_recovery();
                s.rack.reo_wnd_persist = s.rack.reo_wnd_persist.saturating_sub(1);
                if s.rack.reo_wnd_persist == 0 {
                    s.rack.reo_wnd_mult = 1;
                }
            }
            _ => {}
        }
        s.tlp_ack(t.ack, dsack, &d, &mut c);
        if d.bytes > 0 {
            // Progress: the next silence in recovery may be probed again.
            s.recovery_probes = 0;
        }
        // Loss detection.
        let lost_before = s.sb.lost_bytes();
        let mut reorder_wait = None;
        if conn.sack {
            reorder_wait = s.rack_detect(now, &mut c);
        } else {
            let dup = d.acked == 0
                && t.payload_len() == 0
                && !t.has(FIN)
                && !s.sb.is_empty()
                && s.last_window == Some(t.window);
            if dup {
                s.dupacks += 1;
                if s.dupacks == DUP_THRESH {
                    s.sb.mark_head_lost();
                }
            } else if d.acked > 0 && matches!(s.cc.phase(), Phase::Recovery { .. }) {
                // NewReno (RFC 6582 §3.2): a partial acknowledgement; the next hole is lost.
                s.sb.mark_head_lost();
            }
        }
        s.last_window = Some(t.window);
        let losses = s.sb.lost_bytes().saturating_sub(lost_before);
        let pipe_after = s.sb.pipe();
        let before = s.cc.snapshot();
        if s.sb.lost_bytes() > 0 && s.cc.enter_recovery(nxt, pipe_after) {
            s.episode = Some(Episode::new(before));
            if conn.sack {
                c.TCPSackRecovery += 1;
            } else {
                c.TCPRenoRecovery += 1;
            }
            // PRR counts what this acknowledgement delivered too (as Linux does: without it the
            // retransmission goes alone, and if it is lost nothing sent after it can show it),
            // and the first lost segment goes at once (RFC 6675 §5 step 4.3).
            s.cc.prr_ack(d.bytes, pipe_after);
            s.cc.grant(conn.mss);
        } else if matches!(s.cc.phase(), Phase::Recovery { .. }) {
            s.cc.prr_ack(d.bytes, pipe_after);
        } else {
            let limited = s.peak_pipe.saturating_add(3 * conn.mss) >= s.cc.cwnd()
                || s.peak_pipe.saturating_mul(2) >= s.cc.cwnd() && s.cc.cwnd() < s.cc.ssthresh();
            let rwnd = u32::from(t.window) << conn.scale;
            if s.peak_pipe.saturating_add(3 * conn.mss) < s.cc.cwnd().min(rwnd) {
                // Neither window bounded the flight: what leaves now measures the application,
                // not the path.
                s.rate.app_limited(pipe_after);
            }
            let srtt = s.rtt.srtt().unwrap_or(Duration::ZERO);
            s.cc.on_ack(now, d.acked, limited, srtt);
        }
        let model = bbr::Ack {
            now,
            sample,
            delivered: s.rate.delivered(),
            acked: d.bytes,
            losses,
            prior_pipe,
            pipe: pipe_after,
            rtt: d.rtt_from.map(|sent| elapsed(now, sent)),
            phase: s.cc.phase(),
        };
        if s.cc.on_model_ack(&model, s.rtt.srtt()) {
            s.rate.app_limited(pipe_after);
        }
        s.peak_pipe = s.sb.pipe();
        s.send_lost(conn.mss, ctx, now, &mut c, &mut self.scratch, out);
        s.arm(conn.sack, conn.mss, reorder_wait, now);
        s.counters.add(&c);
        self.counters.add(&c);
    }

    /// A segment the connection's smoltcp socket sends, in `buf[..len]` (`buf` is MTU-sized),
    /// as it will be on the wire, `t` its header. Returns its new length (0: it does not
    /// leave); `t` then describes the segment as it leaves (the caller need not parse it
    /// again). A segment that fills its buffer may leave in that buffer, kept by the layer too
    /// ([`Layer::take_shared`]), `buf` replaced by another of the same length.
    pub(crate) fn egress(
        &mut self,
        conn: &mut Conn,
        t: &mut Tcp,
        buf: &mut Vec<u8>,
        len: usize,
        wire: &WireSeq,
        now: Instant,
    ) -> usize {
        self.shared = None;
        if self.disabled || t.has(RST) {
            return len;
        }
        if t.has(SYN) {
            if let Some(pkt) = buf.get(..len) {
                conn.our_scale = wire::find_option(t.options(pkt), wire::OPT_WINDOW_SCALE)
                    .and_then(|b| b.first().copied())
                    .map(|s| s.min(14));
            }
            conn.handshake = match conn.handshake {
                Handshake::Idle => Handshake::Sent(now),
                Handshake::Sent(_) | Handshake::Ambiguous => Handshake::Ambiguous,
                Handshake::Measured => Handshake::Measured,
            };
            return len;
        }
        let algorithm = self.algorithm(conn);
        moderate_window(conn, t, buf, len, algorithm, now);
        if buf.get(..len).is_none() {
            return len;
        }
        let fin = t.has(FIN);
        let range = t.payload_range();
        if range.is_empty() && !fin {
            return self.pure_ack(conn, t, buf, len, now);
        }
        let (mss, sack) = (conn.mss, conn.sack);
        let s = conn.state(algorithm, now);
        // Segments are stamped in the order they leave, even if a caller's clock ran behind
        // another's (RACK orders them by these stamps).
        let now = s.last_send.map_or(now, |l| now.max(l));
        let was_idle = s.sb.is_empty();
        let before_nxt = s.sb.nxt();
        // A super-packet (segmentation offload) leaves the device as segments of the MSS less
        // this segment's options: the scoreboard records those.
        let cut = mss.saturating_sub(t.hdr_len as u32 - 20);
        if was_idle {
            // Nothing was in flight: the application, not the network, was the limit.
            s.rate.app_limited(0);
        }
        s.sb.next_stamp = s.rate.stamp(now, was_idle);
        let payload_len = range.len();
        let end = t.seq.wrapping_add(payload_len as u32);
        // A segment with new data that fills its buffer stays where smoltcp wrote it: the
        // buffer is shared with the device's queue ([`Layer::take_shared`]) and `buf` gets
        // another to write in.
        let news = s.sb.nxt().is_none_or(|nxt| before(nxt, end));
        let fills = payload_len >= SHARE_FROM || 2 * payload_len >= buf.len();
        let shared = (fills && news).then(|| self.pool.share(buf));
        let recorded = match &shared {
            Some(packet) => s.sb.on_send_shared(
                t.seq,
                packet,
                (range.start, payload_len),
                fin,
                t.has(PSH),
                now,
                cut,
            ),
            None => {
                let payload = buf.get(range.clone()).unwrap_or(&[]);
                s.sb.on_send(t.seq, payload, fin, t.has(PSH), now, cut)
            }
        };
        match recorded {
            Sent::New => {
                self.shared = shared;
                s.largest = s.largest.max(payload_len as u32);
                let fresh =
                    s.sb.nxt()
                        .zip(before_nxt)
                        .map_or(t.seq_len(), |(a, b)| a.wrapping_sub(b));
                if was_idle {
                    let long = s.last_send.is_some_and(|l| now >= l + s.rtt.rto());
                    s.cc.on_send_after_idle(now, long);
                    s.rto_at = Some(now + s.rtt.rto());
                }
                s.cc.on_sent(fresh);
                s.last_send = Some(now);
                s.peak_pipe = s.peak_pipe.max(s.sb.pipe());
                s.arm(sack, mss, None, now);
                len
            }
            Sent::Other => {
                self.shared = shared;
                len
            }
            Sent::Redundant => {
                self.counters.RecoveryRedundantDropped += 1;
                s.counters.RecoveryRedundantDropped += 1;
                // What it said of our receiving side must still get out, if it is news.
                let news = t.has(ACK) && wire.last_ack != Some((t.ack, t.window));
                let n = match (news, wire.snd_nxt) {
                    (true, Some(snd_nxt)) => {
                        wire::build(t.src, t.dst, snd_nxt, t.ack, ACK, t.window, &[], buf)
                            .unwrap_or(0)
                    }
                    _ => 0,
                };
                reparse(t, buf, n);
                n
            }
        }
    }

    /// A segment of ours without data: give its SACK option the blocks of RFC 2018 §4.
    fn pure_ack(
        &mut self,
        conn: &mut Conn,
        t: &mut Tcp,
        buf: &mut [u8],
        len: usize,
        now: Instant,
    ) -> usize {
        if !t.has(ACK) {
            return len;
        }
        let Some(pkt) = buf.get(..len) else {
            return len;
        };
        let opts = t.options(pkt);
        // smoltcp holds no out-of-order data while the layer does: the blocks are the layer's.
        let held = conn
            .ooo
            .as_deref()
            .filter(|_| conn.sack)
            .and_then(|r| r.first_block());
        let first = held.or_else(|| sack_blocks(opts).first().copied());
        // RFC 2883: a segment that arrived twice is reported first, as a D-SACK block, in the
        // acknowledgement that answers it (a Linux sender undoes a needless retransmission and
        // widens its reordering window on it).
        // Below the acknowledgement, or (held out of order) inside the first block, which
        // follows it (RFC 2883 §4.2.1, as Linux's `tcp_check_dsack` reads it).
        let dsack = conn.duplicate.take().filter(|&(l, r)| {
            before_eq(r, t.ack) || held.is_some_and(|(hl, hr)| before_eq(hl, l) && before_eq(r, hr))
        });
        if first.is_none() && dsack.is_none() && conn.state.is_none() {
            return len;
        }
        let algorithm = self.algorithm(conn);
        let s = conn.state(algorithm, now);
        let mut blocks: Vec<(u32, u32)> = dsack.into_iter().collect();
        blocks.extend_from_slice(s.sack_out.on_ack(t.ack, first));
        if blocks.len() < 2 && dsack.is_none() && held.is_none() {
            // smoltcp's own block says it all.
            return len;
        }
        let mut new_opts = Vec::with_capacity(40);
        for (kind, body) in wire::options(opts).filter(|(k, _)| *k != wire::OPT_SACK) {
            new_opts.push(kind);
            new_opts.push(body.len() as u8 + 2);
            new_opts.extend_from_slice(body);
        }
        // 40 option bytes: the others, NOP, NOP, kind, length, 8 per block.
        let room = 40usize.saturating_sub(new_opts.len() + 4) / 8;
        let n = blocks.len().min(room).min(MAX_SACK_BLOCKS);
        if n == 0 {
            return len;
        }
        new_opts.extend_from_slice(&[wire::OPT_NOP, wire::OPT_NOP, wire::OPT_SACK]);
        new_opts.push(2 + 8 * n as u8);
        for &(l, r) in &blocks[..n] {
            new_opts.extend_from_slice(&l.to_be_bytes());
            new_opts.extend_from_slice(&r.to_be_bytes());
        }
        self.scratch.resize(buf.len(), 0);
        match wire::rebuild(pkt, t, &new_opts, &[], &mut self.scratch) {
            Some(n) => {
                buf[..n].copy_from_slice(&self.scratch[..n]);
                reparse(t, buf, n);
                n
            }
            None => len,
        }
    }

    /// The connection's timer came due: RACK's reordering window, a tail loss probe, or a
    /// retransmission timeout. Segments to send go to `out`.
    ///
    /// Returns a segment for smoltcp, as if from the peer, when the window restarts after an
    /// idle period: smoltcp would otherwise send the old window's worth at once when data
    /// comes (it keeps the last window an acknowledgement let it see); this acknowledgement,
    /// a duplicate of the peer's last but for its window, which [`Layer::to_smoltcp`] clamps
    /// to the restarted congestion window, takes that back.
    pub(crate) fn on_timer(
        &mut self,
        conn: &mut Conn,
        ctx: Ctx<'_>,
        now: Instant,
        out: &mut Vec<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        if self.disabled {
            return None;
        }
        let delta = conn.delta;
        let s = conn.state.as_deref_mut()?;
        let (at, which) = s.timer?;
        if now < at {
            return None;
        }
        s.timer = None;
        if s.sb.is_empty() {
            s.rto_at = None;
            match which {
                Timer::Release => s.sb.release(),
                Timer::Idle => {
                    s.cc.restart_after_idle();
                    s.timer =
                        s.sb.holds_idle_memory()
                            .then_some((now + RELEASE_AFTER, Timer::Release));
                    return idle_window_update(s, ctx, delta);
                }
                _ => {}
            }
            return None;
        }
        let mut c = RecoveryCounters::default();
        let mut reorder_wait = None;
        match which {
            Timer::Reorder => {
                reorder_wait = s.rack_detect(now, &mut c);
                let pipe = s.sb.pipe();
                if s.sb.lost_bytes() > 0 {
                    if let Some(nxt) = s.sb.nxt() {
                        let before = s.cc.snapshot();
                        if s.cc.enter_recovery(nxt, pipe) {
                            s.episode = Some(Episode::new(before));
                            c.TCPSackRecovery += 1;
                            s.cc.prr_ack(0, pipe);
                            s.cc.grant(conn.mss);
                        }
                    }
                }
                s.send_lost(conn.mss, ctx, now, &mut c, &mut self.scratch, out);
            }
            Timer::Probe => {
                // RFC 8985 §7.3: send the last segment again (smoltcp holds any new data, and
                // only an acknowledgement lets it send more). During recovery, the first segment
                // not SACKed: most likely the lost one, whose acknowledgement unblocks the rest.
                let recovering = s.cc.in_recovery();
                let seg = if recovering {
                    s.sb.first_unsacked()
                } else {
                    s.sb.last_in_flight()
                };
                if let Some(seg) = seg {
                    // The last packet as it left: a whole super-packet with offload, so that a
                    // tail lost whole is repaired by the probe (RACK cannot tell the loss of
                    // the rest of it from a probe acknowledged this fast).
                    let from = if recovering {
                        seg.seq
                    } else {
                        s.sb.sent_with(&seg, s.largest)
                    };
                    if let Some((p, count)) =
                        s.resend(from, seg.end(), recovering, ctx, now, &mut self.scratch)
                    {
                        out.push(p);
                        c.TcpRetransSegs += count;
                        c.TCPLossProbes += 1;
                        if recovering {
                            s.recovery_probes += 1;
                        } else {
                            s.probe = s.sb.nxt().map(|end| Probe { end });
                        }
                    }
                }
                s.rto_at = Some(now + s.rtt.rto());
            }
            Timer::Retransmit => {
                c.TCPTimeouts += 1;
                let repeated = s.rtt.backoff() > 0;
                let was_recovering = !matches!(s.cc.phase(), Phase::Open);
                if s.reneged {
                    s.rate_invalid_until = s.sb.nxt();
                }
                s.sb.mark_all_lost(s.reneged);
                s.reneged = false;
                s.probe = None;
                let before = s.cc.snapshot();
                if let Some(nxt) = s.sb.nxt() {
                    s.cc.on_timeout(nxt, repeated);
                }
                // A timeout on top of a recovery keeps that recovery's window to go back to.
                let kept = s.episode.filter(|_| was_recovering).map(|e| e.before);
                s.episode = Some(Episode::new(kept.unwrap_or(before)));
                s.rtt.back_off();
                s.rto_at = Some(now + s.rtt.rto());
                s.send_lost(conn.mss, ctx, now, &mut c, &mut self.scratch, out);
            }
            // Data left since: the timers of a flight take over.
            Timer::Release | Timer::Idle => {}
        }
        s.arm(conn.sack, conn.mss, reorder_wait, now);
        s.counters.add(&c);
        self.counters.add(&c);
        None
    }

    /// The accounting holds together (the fuzz target asks after every step).
    #[cfg(feature = "fuzz")]
    pub(crate) fn check(conn: &Conn) {
        if let Some(s) = conn.state.as_deref() {
            s.sb.check();
            let (sacked, lost, unacked) =
                (s.sb.sacked_bytes(), s.sb.lost_bytes(), s.sb.outstanding());
            assert!(
                sacked.saturating_add(lost) <= unacked,
                "sacked {sacked} lost {lost} unacked {unacked}"
            );
        }
    }

    /// When the connection's timer is due, if it has one.
    pub(crate) fn next_timer(conn: &Conn) -> Option<Instant> {
        conn.state
            .as_deref()
            .and_then(|s| s.timer)
            .map(|(at, _)| at)
    }

    /// The connection's sender, for `RecoveryInfo`.
    pub(crate) fn info(&self, conn: &Conn) -> RecoveryInfo {
        let Some(s) = conn.state.as_deref() else {
            return RecoveryInfo {
                rcv_window: if self.disabled {
                    u32::MAX
                } else {
                    rcv_window::INITIAL
                },
                ..RecoveryInfo::default()
            };
        };
        RecoveryInfo {
            state: match s.cc.phase() {
                Phase::Open => RecoveryState::Open,
                Phase::Recovery { .. } => RecoveryState::Recovery,
                Phase::Loss { .. } => RecoveryState::Loss,
            },
            srtt_us: s.rtt.srtt().map_or(0, |d| d.total_micros()),
            rttvar_us: s.rtt.rttvar().total_micros(),
            min_rtt_us: s.rtt.min_rtt().map_or(0, |d| d.total_micros()),
            rto_us: s.rtt.rto().total_micros(),
            cwnd: s.cc.cwnd(),
            ssthresh: s.cc.ssthresh(),
            unacked: s.sb.outstanding(),
            sacked: s.sb.sacked_bytes(),
            lost: s.sb.lost_bytes(),
            reordering_seen: s.rack.reordering_seen,
            rcv_window: s.rcv.cap(),
            delivery_rate: s.rate.last_rate(),
            bbr: s.cc.bbr().map(|b| BbrInfo {
                mode: match b.mode() {
                    bbr::Mode::Startup => BbrMode::Startup,
                    bbr::Mode::Drain => BbrMode::Drain,
                    bbr::Mode::ProbeBw => BbrMode::ProbeBw,
                    bbr::Mode::ProbeRtt => BbrMode::ProbeRtt,
                },
                bw: b.bw(),
                min_rtt_us: b.min_rtt().map_or(0, |d| d.total_micros()),
                pacing_rate: b.pacing_rate(),
            }),
            counters: s.counters,
        }
    }
}

impl State {
    /// RACK and the RTT estimator learn from what an acknowledgement delivered (RFC 8985
    /// §6.2 steps 1–4).
    fn on_delivered(&mut self, d: &Delivered, dsack: bool, now: Instant, c: &mut RecoveryCounters) {
        if let Some(sent) = d.rtt_from {
            self.rtt.sample(elapsed(now, sent), now);
        }
        if let Some((sent, end, resent)) = d.newest {
            let rtt = elapsed(now, sent);
            // A retransmission acknowledged sooner than a round trip could be the original's
            // acknowledgement: not a measurement (step 2).
            let ambiguous = resent && self.rtt.min_rtt().is_some_and(|m| rtt < m);
            let newer = self
                .rack
                .xmit
                .is_none_or(|(t, e)| sent > t || (sent == t && before(e, end)));
            if !ambiguous && newer {
                self.rack.xmit = Some((sent, end));
                self.rack.rtt = rtt;
            }
        }
        if d.reordered {
            self.rack.reordering_seen = true;
            c.TCPSACKReorder += 1;
        }
        // Step 4: D-SACKs widen the reordering window, for 16 recoveries.
        let una = self.sb.una();
        if let (Some(round), Some(una)) = (self.rack.dsack_round, una) {
            if !before(una, round) {
                self.rack.dsack_round = None;
            }
        }
        if dsack && self.rack.dsack_round.is_none() {
            self.rack.dsack_round = self.sb.nxt();
            self.rack.reo_wnd_mult = self.rack.reo_wnd_mult.saturating_add(1).min(64);
            self.rack.reo_wnd_persist = 16;
        }
    }

    /// A D-SACK block `(l, r)`: once it and the ones before it have reported every
    /// retransmission of the last loss episode arriving twice, nothing was lost (the network
    /// reordered or delayed, or an acknowledgement was lost): the window goes back to what it
    /// was, during the recovery or after it (Linux's `tcp_try_undo_dsack`).
    fn dsack_undo(&mut self, l: u32, r: u32, c: &mut RecoveryCounters) {
        let Some(e) = self.episode.as_mut() else {
            return;
        };
        if !e.reported(l, r) {
            return;
        }
        let before = e.before;
        match self.cc.phase() {
            Phase::Loss { .. } => c.TCPLossUndo += 1,
            Phase::Recovery { .. } | Phase::Open => c.TCPDSACKUndo += 1,
        }
        self.cc.undo(before);
        self.episode = None;
        // The segments taken for lost had arrived: the network reorders.
        self.rack.reordering_seen = true;
    }

    /// RACK's reordering window (RFC 8985 §6.2 step 4).
    fn reo_wnd(&self) -> Duration {
        if !self.rack.reordering_seen
            && (self.cc.in_recovery() || self.sb.sacked_segs() >= DUP_THRESH)
        {
            return Duration::ZERO;
        }
        let min = self.rtt.min_rtt().unwrap_or(Duration::ZERO);
        let wnd = min / 4 * self.rack.reo_wnd_mult;
        self.rtt.srtt().map_or(wnd, |s| wnd.min(s))
    }

    /// RACK's loss detection; returns the wait for the reordering timer, if any.
    fn rack_detect(&mut self, now: Instant, c: &mut RecoveryCounters) -> Option<Duration> {
        let (xmit, end) = self.rack.xmit?;
        let wait = self.rack.rtt + self.reo_wnd();
        self.sb
            .detect_loss(xmit, end, wait, now, &mut c.TCPLostRetransmit)
    }

    /// RFC 8985 §7.4.2, as Linux decides it: what became of a tail loss probe. A D-SACK says
    /// both copies arrived (no loss); an acknowledgement beyond the probe without one says the
    /// probe repaired a loss (the window is reduced as for one); a pure duplicate ACK at the
    /// probe's end says both arrived too. An acknowledgement of exactly the probe's end waits
    /// for what follows (a D-SACK may be on its way).
    fn tlp_ack(&mut self, ack: u32, dsack: bool, d: &Delivered, c: &mut RecoveryCounters) {
        let Some(p) = self.probe else { return };
        if before(ack, p.end) {
            return;
        }
        if dsack {
            self.probe = None;
        } else if before(p.end, ack) {
            self.probe = None;
            if !self.cc.in_recovery() {
                self.cc.on_probe_repaired();
                c.TCPLossProbeRecovery += 1;
            }
        } else if d.bytes == 0 {
            self.probe = None;
        }
    }

    /// Send again the lost segments the congestion window allows, lowest first. Lost segments
    /// that follow each other go in one packet, up to the largest segment smoltcp sent on this
    /// connection: a super-packet lost whole (segmentation offload) goes again as one, and the
    /// device cuts it as before. Without offload that is one segment per packet, as sent.
    fn send_lost(
        &mut self,
        mss: u32,
        ctx: Ctx<'_>,
        now: Instant,
        c: &mut RecoveryCounters,
        scratch: &mut Vec<u8>,
        out: &mut Vec<Vec<u8>>,
    ) {
        while let Some(first) = self.sb.next_lost() {
            let room = self.cc.allowance(self.sb.pipe());
            if room < first.len.min(mss) {
                break;
            }
            let end = self.sb.lost_run(&first, self.largest.min(room));
            let Some((p, count)) = self.resend(first.seq, end, true, ctx, now, scratch) else {
                break;
            };
            out.push(p);
            self.cc.on_sent(end.wrapping_sub(first.seq));
            c.TcpRetransSegs += count;
            match self.cc.phase() {
                Phase::Loss { .. } => c.TCPSlowStartRetrans += count,
                _ => c.TCPFastRetrans += count,
            }
        }
    }

    /// The segments from `from` to `to` as they first left, in one packet, with our
    /// acknowledgement and window now; and how many segments it carries. `in_episode`: they
    /// count as sent again in the loss episode under way (for undoing it).
    fn resend(
        &mut self,
        from: u32,
        to: u32,
        in_episode: bool,
        ctx: Ctx<'_>,
        now: Instant,
        scratch: &mut Vec<u8>,
    ) -> Option<(Vec<u8>, u64)> {
        let (ack, window) = ctx.wire.last_ack?;
        let now = self.last_send.map_or(now, |l| now.max(l));
        self.sb.next_stamp = self.rate.stamp(now, false);
        scratch.clear();
        let (mut seq, mut flags, mut count) = (from, ACK, 0);
        while before(seq, to) {
            let (s, a, b) = self.sb.resent(seq, now)?;
            scratch.extend_from_slice(a);
            scratch.extend_from_slice(b);
            if let Some(e) = self.episode.as_mut().filter(|_| in_episode) {
                e.resent(s.seq);
            }
            flags = ACK | if s.fin { FIN } else { 0 } | if s.psh { PSH } else { 0 };
            (seq, count) = (s.end(), count + 1);
        }
        let mut p = vec![0u8; 60 + scratch.len()];
        let n = wire::build(
            ctx.tuple.0,
            ctx.tuple.1,
            from,
            ack,
            flags,
            window,
            scratch,
            &mut p,
        )?;
        p.truncate(n);
        self.last_send = Some(now);
        self.peak_pipe = self.peak_pipe.max(self.sb.pipe());
        Some((p, count))
    }

    /// Set the timer: RACK's reordering timer if a segment waits on it; else a tail loss probe
    /// if one may go (RFC 8985 §7.2); else the retransmission timeout.
    fn arm(&mut self, sack: bool, mss: u32, reorder_wait: Option<Duration>, now: Instant) {
        if self.sb.is_empty() {
            self.timer = if self.cc.restarts_after_idle() {
                Some((now + self.rtt.rto(), Timer::Idle))
            } else {
                self.sb
                    .holds_idle_memory()
                    .then_some((now + RELEASE_AFTER, Timer::Release))
            };
            self.rto_at = None;
            self.probe = None;
            return;
        }
        let rto_at = *self.rto_at.get_or_insert(now + self.rtt.rto());
        if let Some(w) = reorder_wait {
            self.timer = Some(((now + w).min(rto_at), Timer::Reorder));
            return;
        }
        // Linux probes only outside recovery (RFC 8985 §7.2); this layer also probes during
        // fast recovery, as QUIC does (RFC 9002 §6.2): a Linux receiver acknowledges in
        // batches, and when the one acknowledgement of a small flight is lost, only a timeout
        // (200 ms, then the window from one segment) would follow.
        // In recovery the probes back off (twice the wait each time, QUIC's rule), a few at
        // most before the timeout; progress starts the count again.
        let probing = match self.cc.phase() {
            Phase::Open => self.probe.is_none(),
            Phase::Recovery { .. } => self.recovery_probes < MAX_RECOVERY_PROBES,
            Phase::Loss { .. } => false,
        };
        if sack && probing && !self.reneged {
            let pto = match self.rtt.srtt() {
                Some(srtt) => {
                    let mut pto = srtt * 2 + PTO_SLACK;
                    if self.sb.outstanding() <= mss {
                        pto += MAX_ACK_DELAY;
                    }
                    pto * (1 << self.recovery_probes)
                }
                None => rtt::INITIAL_RTO,
            };
            // RFC 8985 §7.2: never later than the timeout would be; when they coincide the
            // probe goes, not the timeout (which would collapse the window).
            self.timer = Some(((now + pto).min(rto_at), Timer::Probe));
            return;
        }
        self.timer = Some((rto_at, Timer::Retransmit));
    }

    /// How far smoltcp may send (on the wire): the lost segments go first, then new data
    /// within what the congestion window leaves.
    fn right_edge(&self) -> Option<u32> {
        let nxt = self.sb.nxt()?;
        let room = self
            .cc
            .allowance(self.sb.pipe())
            .saturating_sub(self.sb.lost_bytes());
        Some(nxt.wrapping_add(room.min(i32::MAX as u32)))
    }
}

/// `t` again from the segment the layer rebuilt in `buf[..len]` (nothing if it does not leave).
fn reparse(t: &mut Tcp, buf: &[u8], len: usize) {
    if let Some(nt) = buf
        .get(..len)
        .filter(|p| !p.is_empty())
        .and_then(wire::parse)
    {
        *t = nt;
    }
}

/// Clamp the window an outgoing segment advertises to the moderated one ([`rcv_window`]):
/// [`rcv_window::INITIAL`] until the application reads, then what its reads allow; and one
/// unit of the scale below smoltcp's own ([`receive::edge_margin`]).
fn moderate_window(
    conn: &mut Conn,
    t: &mut Tcp,
    buf: &mut [u8],
    len: usize,
    algorithm: CongestionControl,
    now: Instant,
) {
    if !t.has(ACK) {
        return;
    }
    let scale = conn.our_scale();
    let cap = if conn.state.is_some() || conn.read != 0 {
        let (read, mss) = (conn.read, conn.mss);
        let s = conn.state(algorithm, now);
        let min_rtt = s.rtt.min_rtt();
        s.rcv.on_send(read, now, min_rtt, mss);
        s.rcv.cap()
    } else {
        rcv_window::INITIAL
    };
    let base = receive::edge_margin(t.window, scale);
    let field = rcv_window::clamped(base, scale, cap).unwrap_or(base);
    if let (true, Some(pkt)) = (field != t.window, buf.get_mut(..len)) {
        wire::set_window(pkt, t, field);
        t.window = field;
    }
}

/// The peer's last acknowledgement again, in smoltcp's numbers, for smoltcp to take the
/// restarted window from (see [`Layer::on_timer`]); `None` when the layer cannot build it
/// exactly: the peer's numbers translated, or something outstanding it did not record.
fn idle_window_update(s: &State, ctx: Ctx<'_>, delta: u32) -> Option<Vec<u8>> {
    let (snd_nxt, rcv_nxt) = (ctx.wire.snd_nxt?, ctx.wire.rcv_nxt?);
    if !ctx.peer_numbers_plain || s.sb.nxt() != Some(snd_nxt) {
        return None;
    }
    let mut p = vec![0u8; 60];
    let (local, remote) = ctx.tuple;
    // The window field is the most it can say; the layer clamps it on the way to smoltcp.
    let n = wire::build(
        remote,
        local,
        rcv_nxt,
        snd_nxt.wrapping_sub(delta),
        ACK,
        u16::MAX,
        &[],
        &mut p,
    )?;
    p.truncate(n);
    Some(p)
}

/// Time from `since` to `now`; zero if `now` is earlier (a caller's clock behind another's).
fn elapsed(now: Instant, since: Instant) -> Duration {
    if now > since {
        now - since
    } else {
        Duration::ZERO
    }
}

/// The SACK blocks of a segment's options (at most four).
fn sack_blocks(opts: &[u8]) -> Vec<(u32, u32)> {
    let Some(body) = wire::find_option(opts, wire::OPT_SACK) else {
        return Vec::new();
    };
    body.chunks_exact(8)
        .take(MAX_SACK_BLOCKS)
        .map(|c| {
            (
                u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect()
}
