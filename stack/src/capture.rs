//! A packet-path decorator that records every packet to a classic libpcap file.
//!
//! ```text
//!   Stack::poll ── recv/send ──> Capture ── recv/send ──> inner PacketIo (TUN, sim, …)
//!                                   │ each packet, stamped with the poll's time
//!                                   ▼
//!                          pcap file (LINKTYPE_RAW)
//! ```
//!
//! The file is the classic format read by tcpdump, tshark and Wireshark: a 24-byte global
//! header (magic `0xa1b2c3d4` in the writer's native byte order, version 2.4, snaplen 65535,
//! link type 101 `LINKTYPE_RAW`: each record is a bare IPv4 or IPv6 packet), then one 16-byte
//! record header (seconds, microseconds, captured length, original length) before each packet.
//! Packets of all interfaces go to the same file; the IP addresses tell them apart.
//!
//! The stack never reads a clock, so neither does this: the caller says which wall-clock time
//! stack [`Instant::ZERO`] stands for, and each record is stamped with that plus the time of
//! the last [`PacketIo::advance`] (the current poll).
//!
//! Records are buffered in memory and written out in [`PacketIo::flush`], which
//! [`Stack::poll`](crate::Stack::poll) calls at the end of every poll, so a process that dies
//! loses at most the current poll's packets. A write error never panics and never stops the
//! packets: the first error is kept ([`Capture::error`]) and capturing stops.

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use smoltcp::time::Instant;

use crate::ids::IfaceId;
use crate::iface::PacketIo;

/// The pcap magic number; written in native byte order, a reader detects the order from it.
const MAGIC: u32 = 0xa1b2_c3d4;
/// Largest number of bytes of one packet that goes into the file.
const SNAPLEN: u32 = 65_535;
/// `LINKTYPE_RAW`: the packet begins with an IPv4 or IPv6 header.
const LINKTYPE_RAW: u32 = 101;
/// Buffered bytes beyond which records are written out before the poll ends, to bound memory.
const EARLY_WRITE: usize = 256 * 1024;

/// A [`PacketIo`] that forwards to `inner` and records every packet it carries to a pcap file.
///
/// Received packets are recorded as `inner.recv` returns them, sent packets just before they go
/// to `inner.send`. [`Capture::off`] makes one that records nothing, at the cost of one branch
/// per packet, so a program can use the same type whether capturing or not.
///
/// Dropping a `Capture` (or calling [`Capture::into_inner`]) writes out what is buffered.
pub struct Capture<P> {
    inner: P,
    /// `None` when off, or after a write error.
    sink: Option<Sink>,
    /// The time of the last `advance`.
    now: Instant,
    packets: u64,
    error: Option<io::Error>,
}

/// Where the records go.
struct Sink {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    /// Wall-clock time (since the UNIX epoch) of stack `Instant::ZERO`.
    epoch_unix: Duration,
}

impl<P: PacketIo> Capture<P> {
    /// Capture the packets of `inner` to `out`, stamping them with `epoch_unix` (the wall-clock
    /// time since the UNIX epoch that stack [`Instant::ZERO`] corresponds to) plus the stack
    /// time of the current poll. Writes the pcap global header at once.
    ///
    /// # Errors
    ///
    /// The error of writing the global header to `out`.
    pub fn new(inner: P, out: Box<dyn Write + Send>, epoch_unix: Duration) -> io::Result<Self> {
        let mut sink = Sink {
            out,
            buf: Vec::with_capacity(4096),
            epoch_unix,
        };
        sink.buf.extend_from_slice(&global_header());
        sink.write_out()?;
        Ok(Capture {
            inner,
            sink: Some(sink),
            now: Instant::ZERO,
            packets: 0,
            error: None,
        })
    }

    /// A capture that records nothing: `recv` and `send` forward to `inner` after one branch.
    pub fn off(inner: P) -> Self {
        Capture {
            inner,
            sink: None,
            now: Instant::ZERO,
            packets: 0,
            error: None,
        }
    }
}

impl<P> Capture<P> {
    /// Whether packets are being recorded: false when made with [`Capture::off`] or after a
    /// write error.
    pub fn is_on(&self) -> bool {
        self.sink.is_some()
    }

    /// Packets recorded so far (those whose records were lost to a write error included).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// The first write error, after which capturing stopped; `None` while all is well.
    pub fn error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    /// The wrapped packet path.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped packet path, mutably.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Write out what is buffered (ignoring a write error) and return the wrapped packet path.
    pub fn into_inner(self) -> P {
        // Dropping the sink writes out its buffer.
        self.inner
    }

    /// Append one record; on the first write error, keep it and stop capturing.
    fn record(&mut self, packet: &[u8]) {
        if let Some(sink) = &mut self.sink {
            self.packets += 1;
            sink.append(self.now, packet);
            if sink.buf.len() >= EARLY_WRITE {
                self.write_out();
            }
        }
    }

    /// Hand the buffered records to the writer and flush it.
    fn write_out(&mut self) {
        if let Some(sink) = &mut self.sink {
            if let Err(e) = sink.write_out() {
                self.error.get_or_insert(e);
                self.sink = None;
            }
        }
    }
}

impl<P: PacketIo> PacketIo for Capture<P> {
    fn recv(&mut self, iface: IfaceId, buf: &mut [u8]) -> Option<usize> {
        let n = self.inner.recv(iface, buf)?;
        if self.sink.is_some() {
            // An inner path may report the length of a packet it truncated to fit `buf`.
            let len = n.min(buf.len());
            self.record(&buf[..len]);
        }
        Some(n)
    }

    fn send(&mut self, iface: IfaceId, packet: &[u8]) {
        if self.sink.is_some() {
            self.record(packet);
        }
        self.inner.send(iface, packet);
    }

    fn advance(&mut self, now: Instant) {
        self.now = now;
        self.inner.advance(now);
    }

    fn next_due(&self) -> Option<Instant> {
        self.inner.next_due()
    }

    fn flush(&mut self) {
        self.write_out();
        self.inner.flush();
    }
}

impl<P: fmt::Debug> fmt::Debug for Capture<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture")
            .field("inner", &self.inner)
            .field("on", &self.sink.is_some())
            .field("now", &self.now)
            .field("packets", &self.packets)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Append the record header and (up to [`SNAPLEN`] bytes of) the packet.
    fn append(&mut self, now: Instant, packet: &[u8]) {
        let since_zero = now.total_micros();
        let stamp = if since_zero >= 0 {
            self.epoch_unix
                .saturating_add(Duration::from_micros(since_zero.unsigned_abs()))
        } else {
            self.epoch_unix
                .saturating_sub(Duration::from_micros(since_zero.unsigned_abs()))
        };
        // Classic pcap has 32-bit seconds: good until 2106.
        let ts_sec = u32::try_from(stamp.as_secs()).unwrap_or(u32::MAX);
        let ts_usec = stamp.subsec_micros();
        let orig_len = u32::try_from(packet.len()).unwrap_or(u32::MAX);
        let incl_len = orig_len.min(SNAPLEN);
        let data = packet.get(..incl_len as usize).unwrap_or(packet);
        self.buf.reserve(16 + data.len());
        for field in [ts_sec, ts_usec, incl_len, orig_len] {
            self.buf.extend_from_slice(&field.to_ne_bytes());
        }
        self.buf.extend_from_slice(data);
    }

    /// Write the buffer to the writer and flush it. The buffer is emptied either way, so that
    /// a failing writer is not fed the same bytes again.
    fn write_out(&mut self) -> io::Result<()> {
        let written = self.out.write_all(&self.buf);
        self.buf.clear();
        written?;
        self.out.flush()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.write_out();
        }
    }
}

/// The 24-byte pcap global header, in native byte order.
fn global_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes()); // version_major
    h[6..8].copy_from_slice(&4u16.to_ne_bytes()); // version_minor
    h[8..12].copy_from_slice(&0i32.to_ne_bytes()); // thiszone: timestamps are UTC
    h[12..16].copy_from_slice(&0u32.to_ne_bytes()); // sigfigs
    h[16..20].copy_from_slice(&SNAPLEN.to_ne_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_RAW.to_ne_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes the test can look at after handing it to the capture.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
    }

    /// A writer that takes `ok` bytes, then fails every call.
    struct Failing {
        ok: usize,
        calls_after_failure: Arc<Mutex<usize>>,
    }

    impl Write for Failing {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.ok == 0 {
                *self.calls_after_failure.lock().unwrap() += 1;
                return Err(io::Error::other("disk full"));
            }
            let n = data.len().min(self.ok);
            self.ok -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An inner path: a queue of packets to receive and a list of what was sent.
    #[derive(Debug, Default)]
    struct Fake {
        incoming: VecDeque<Vec<u8>>,
        sent: Vec<Vec<u8>>,
        flushed: usize,
    }

    impl PacketIo for Fake {
        fn recv(&mut self, _: IfaceId, buf: &mut [u8]) -> Option<usize> {
            let p = self.incoming.pop_front()?;
            buf[..p.len()].copy_from_slice(&p);
            Some(p.len())
        }
        fn send(&mut self, _: IfaceId, packet: &[u8]) {
            self.sent.push(packet.to_vec());
        }
        fn flush(&mut self) {
            self.flushed += 1;
        }
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
    }

    #[test]
    fn header_bytes() {
        let out = Shared::default();
        let _cap = Capture::new(Fake::default(), Box::new(out.clone()), Duration::ZERO).unwrap();
        let b = out.bytes();
        assert_eq!(b.len(), 24, "the global header is written at once");
        assert_eq!(u32_at(&b, 0), 0xa1b2_c3d4);
        assert_eq!(u16_at(&b, 4), 2);
        assert_eq!(u16_at(&b, 6), 4);
        assert_eq!(u32_at(&b, 8), 0);
        assert_eq!(u32_at(&b, 12), 0);
        assert_eq!(u32_at(&b, 16), 65_535);
        assert_eq!(u32_at(&b, 20), 101);
        #[cfg(target_endian = "little")]
        assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    }

    #[test]
    fn record_layout_and_forwarding() {
        let out = Shared::default();
        let mut fake = Fake::default();
        fake.incoming.push_back(vec![0x45, 1, 2, 3, 4]);
        let mut cap = Capture::new(fake, Box::new(out.clone()), Duration::ZERO).unwrap();
        cap.send(IfaceId(0), &[0x60, 9, 8]);
        let mut buf = [0u8; 64];
        assert_eq!(cap.recv(IfaceId(0), &mut buf), Some(5));
        assert_eq!(&buf[..5], &[0x45, 1, 2, 3, 4]);
        assert_eq!(cap.recv(IfaceId(0), &mut buf), None);
        assert_eq!(out.bytes().len(), 24, "records stay buffered until flush");
        cap.flush();
        assert_eq!(cap.inner().flushed, 1, "flush is forwarded");
        assert_eq!(cap.inner().sent, vec![vec![0x60, 9, 8]]);
        assert_eq!(cap.packets(), 2);

        let b = out.bytes();
        assert_eq!(b.len(), 24 + 16 + 3 + 16 + 5);
        let r = &b[24..];
        assert_eq!((u32_at(r, 0), u32_at(r, 4)), (0, 0));
        assert_eq!((u32_at(r, 8), u32_at(r, 12)), (3, 3));
        assert_eq!(&r[16..19], &[0x60, 9, 8]);
        let r = &r[19..];
        assert_eq!((u32_at(r, 8), u32_at(r, 12)), (5, 5));
        assert_eq!(&r[16..21], &[0x45, 1, 2, 3, 4]);
    }

    #[test]
    fn oversized_packet_is_cut_at_snaplen() {
        let out = Shared::default();
        let mut cap = Capture::new(Fake::default(), Box::new(out.clone()), Duration::ZERO).unwrap();
        cap.send(IfaceId(0), &vec![7u8; 70_000]);
        cap.flush();
        let b = out.bytes();
        assert_eq!(u32_at(&b, 24 + 8), 65_535);
        assert_eq!(u32_at(&b, 24 + 12), 70_000);
        assert_eq!(b.len(), 24 + 16 + 65_535);
        assert_eq!(
            cap.inner().sent[0].len(),
            70_000,
            "the packet itself is not cut"
        );
    }

    #[test]
    fn timestamps_come_from_epoch_plus_advance() {
        let out = Shared::default();
        let epoch = Duration::new(1_700_000_000, 600_000_000);
        let mut cap = Capture::new(Fake::default(), Box::new(out.clone()), epoch).unwrap();
        cap.advance(Instant::from_micros(1_500_123));
        cap.send(IfaceId(0), &[0x45]);
        cap.advance(Instant::from_secs(10));
        cap.send(IfaceId(1), &[0x45]);
        drop(cap);
        let b = out.bytes();
        let r1 = &b[24..];
        // 1_700_000_000.6 + 1.500123 = 1_700_000_002.100123
        assert_eq!((u32_at(r1, 0), u32_at(r1, 4)), (1_700_000_002, 100_123));
        let r2 = &r1[17..];
        assert_eq!((u32_at(r2, 0), u32_at(r2, 4)), (1_700_000_010, 600_000));
    }

    #[test]
    fn write_error_is_remembered_and_capture_stops() {
        let calls = Arc::new(Mutex::new(0));
        let out = Failing {
            ok: 30,
            calls_after_failure: calls.clone(),
        };
        let mut cap = Capture::new(Fake::default(), Box::new(out), Duration::ZERO).unwrap();
        assert!(cap.error().is_none());
        cap.send(IfaceId(0), &[0x45; 20]);
        cap.flush();
        let err = cap.error().expect("the write error is kept");
        assert_eq!(err.to_string(), "disk full");
        assert!(!cap.is_on());
        assert_eq!(
            cap.inner().flushed,
            1,
            "the inner path is flushed regardless"
        );
        let calls_then = *calls.lock().unwrap();
        // Packets keep flowing; nothing more is written.
        cap.send(IfaceId(0), &[0x45; 20]);
        cap.flush();
        assert_eq!(cap.inner().sent.len(), 2);
        assert_eq!(cap.packets(), 1);
        assert_eq!(*calls.lock().unwrap(), calls_then);
        assert_eq!(cap.into_inner().sent.len(), 2);
    }

    #[test]
    fn header_write_error_is_returned() {
        let out = Failing {
            ok: 10,
            calls_after_failure: Arc::default(),
        };
        let err = Capture::new(Fake::default(), Box::new(out), Duration::ZERO).unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }

    #[test]
    fn off_forwards_and_records_nothing() {
        let mut fake = Fake::default();
        fake.incoming.push_back(vec![0x45, 0]);
        let mut cap = Capture::off(fake);
        assert!(!cap.is_on());
        cap.send(IfaceId(0), &[0x45, 1]);
        let mut buf = [0u8; 8];
        assert_eq!(cap.recv(IfaceId(0), &mut buf), Some(2));
        cap.flush();
        assert_eq!(cap.packets(), 0);
        assert!(cap.error().is_none());
        cap.inner_mut().sent.clear();
        assert!(cap.into_inner().sent.is_empty());
    }

    #[test]
    fn drop_writes_out_the_buffer() {
        let out = Shared::default();
        let mut cap = Capture::new(Fake::default(), Box::new(out.clone()), Duration::ZERO).unwrap();
        cap.send(IfaceId(0), &[0x45, 2]);
        assert_eq!(out.bytes().len(), 24);
        drop(cap);
        assert_eq!(out.bytes().len(), 24 + 16 + 2);
    }

    // ---- A tiny synthetic exchange, read back by tcpdump and tshark --------------------------

    fn checksum(chunks: &[&[u8]]) -> u16 {
        let mut sum = 0u32;
        for chunk in chunks {
            for pair in chunk.chunks(2) {
                let hi = u32::from(pair[0]) << 8;
                let lo = pair.get(1).copied().map_or(0, u32::from);
                sum += hi | lo;
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// An IPv4 TCP segment with correct checksums.
    #[allow(clippy::too_many_arguments)]
    fn tcp4(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        options: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let tcp_len = 20 + options.len() + payload.len();
        let mut tcp = Vec::with_capacity(tcp_len);
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.push((((20 + options.len()) / 4) as u8) << 4);
        tcp.push(flags);
        tcp.extend_from_slice(&64_240u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        tcp.extend_from_slice(options);
        tcp.extend_from_slice(payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        let c = checksum(&[&pseudo, &tcp]);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());

        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let c = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&tcp);
        ip
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const COOKIE: [u8; 8] = [0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04];

    /// Client SYN with an 8-byte TFO cookie and data, the server's SYN-ACK, the client's ACK.
    fn write_exchange(path: &Path) {
        let client = [10, 0, 0, 2];
        let server = [10, 0, 0, 1];
        // MSS 1460; Fast Open (kind 34, length 10) with the cookie; two NOPs to pad.
        let mut syn_opts = vec![2, 4, 0x05, 0xb4, 34, 10];
        syn_opts.extend_from_slice(&COOKIE);
        syn_opts.extend_from_slice(&[1, 1]);
        let syn = tcp4(
            client, server, 40_000, 80, 1000, 0, SYN, &syn_opts, b"GET /",
        );
        let syn_ack = tcp4(
            server,
            client,
            80,
            40_000,
            5000,
            1006,
            SYN | ACK,
            &[2, 4, 0x05, 0xb4],
            &[],
        );
        let ack = tcp4(client, server, 40_000, 80, 1006, 5001, ACK, &[], &[]);

        let mut fake = Fake::default();
        fake.incoming.push_back(syn_ack);
        let file = std::fs::File::create(path).unwrap();
        let epoch = Duration::from_secs(1_700_000_000);
        let mut cap = Capture::new(fake, Box::new(file), epoch).unwrap();
        cap.advance(Instant::from_millis(1));
        cap.send(IfaceId(0), &syn);
        cap.advance(Instant::from_millis(21));
        let mut buf = [0u8; 1500];
        assert!(cap.recv(IfaceId(0), &mut buf).is_some());
        cap.send(IfaceId(0), &ack);
        cap.flush();
        assert!(cap.error().is_none());
        assert_eq!(cap.packets(), 3);
    }

    fn temp_file(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "connectx-capture-{}-{name}.pcap",
            std::process::id()
        ))
    }

    fn on_path(tool: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    }

    /// The tool's path; `None` (after saying so) when it is missing and that is allowed.
    fn tool_or_skip(tool: &str, test: &str) -> Option<PathBuf> {
        if let Some(p) = on_path(tool) {
            return Some(p);
        }
        if std::env::var("CONNECTX_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
            panic!("{test}: `{tool}` is not on PATH and CONNECTX_REQUIRE_ROOT_TESTS=1");
        }
        println!("{test}: skipped: `{tool}` is not on PATH");
        None
    }

    #[test]
    fn tcpdump_reads_the_capture() {
        let Some(tcpdump) = tool_or_skip("tcpdump", "tcpdump_reads_the_capture") else {
            return;
        };
        let path = temp_file("tcpdump");
        write_exchange(&path);
        let out = Command::new(tcpdump)
            .args(["-nn", "-v", "-r"])
            .arg(&path)
            .output()
            .expect("tcpdump runs");
        let _ = std::fs::remove_file(&path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "tcpdump failed: {stderr}\n{stdout}");
        assert!(stderr.contains("RAW"), "link type not RAW: {stderr}");
        assert_eq!(
            stdout.matches("10.0.0.2.40000 > 10.0.0.1.80").count(),
            2,
            "{stdout}"
        );
        assert_eq!(
            stdout.matches("10.0.0.1.80 > 10.0.0.2.40000").count(),
            1,
            "{stdout}"
        );
        assert!(stdout.contains("Flags [S]"), "{stdout}");
        assert!(stdout.contains("Flags [S.]"), "{stdout}");
        assert!(stdout.contains("tfo"), "no TFO option decoded: {stdout}");
        assert!(
            !stdout.contains("incorrect") && !stdout.contains("bad cksum"),
            "bad checksum: {stdout}"
        );
    }

    #[test]
    fn tshark_decodes_fast_open() {
        let Some(tshark) = tool_or_skip("tshark", "tshark_decodes_fast_open") else {
            return;
        };
        let path = temp_file("tshark");
        write_exchange(&path);
        let out = Command::new(tshark)
            .args(["-n", "-V", "-o", "tcp.check_checksum:TRUE", "-r"])
            .arg(&path)
            .output()
            .expect("tshark runs");
        let _ = std::fs::remove_file(&path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "tshark failed: {stderr}\n{stdout}");
        assert!(stdout.contains("Raw IP"), "link type not Raw IP: {stdout}");
        assert!(
            stdout.contains("Fast Open") || stdout.contains("TFO"),
            "no TFO option decoded: {stdout}"
        );
        assert!(
            stdout.contains("deadbeef01020304") || stdout.contains("de:ad:be:ef:01:02:03:04"),
            "cookie not shown: {stdout}"
        );
        assert_eq!(stdout.matches("Frame 3:").count(), 1, "{stdout}");
        assert!(
            !stdout.contains("[Checksum Status: Bad]"),
            "bad checksum: {stdout}"
        );
    }
}
