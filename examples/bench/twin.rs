//! Stacks side by side in one namespace, alike but for one setting: what a layer costs
//! (`fastopen`, `recovery`). Each stack has a TUN device and a /24 of its own, the kernel at
//! its `.1`, and a listener; the sections drive them through the same calls, in turn.
//!
//! Both sections run three kinds of run ([`Role`]): with the layer (the variant), without it
//! (the baseline), and without it again (the control, which shows what two alike runs differ by
//! on this machine). Each run starts a stack of its own in the slot of its place in the round:
//! two alike stacks kept for a whole section differed by up to 15% here, one way for the
//! section's length (where their devices and threads fell on the machine), which no number of
//! rounds would take out.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use connectx_api::{Impairment, Net, StackConfig, TcpListener};

use crate::bulk::{measure, Sample};
use crate::conn::{
    kernel_accept, kernel_connect, kernel_listener, stack_accept, stack_connect, LISTEN_PORT,
};
use crate::netns::{start_stack_with, Netns, KERNEL_ADDR, STACK_ADDR, TUN};
use crate::paired::Paired;
use crate::report::json_num;

/// Where each stack lives: its TUN device, its address, the kernel's.
const SLOTS: [(&str, Ipv4Addr, Ipv4Addr); 3] = [
    (TUN, STACK_ADDR, KERNEL_ADDR),
    (
        "cxb1",
        Ipv4Addr::new(203, 0, 113, 2),
        Ipv4Addr::new(203, 0, 113, 1),
    ),
    (
        "cxb2",
        Ipv4Addr::new(198, 51, 100, 2),
        Ipv4Addr::new(198, 51, 100, 1),
    ),
];

/// One of the stacks.
pub struct Twin {
    /// Whether it runs the layer being measured.
    pub layer: bool,
    pub net: Net,
    /// The kernel's address on the stack's device.
    pub kernel: Ipv4Addr,
    pub listener: Arc<TcpListener>,
    /// Where `listener` listens.
    pub at: SocketAddrV4,
}

/// How a section opens a twin's listener (plain, or with Fast Open).
pub type Listen = fn(&Net, SocketAddr) -> Result<TcpListener, String>;

impl Twin {
    /// The stack in slot `slot` (of three), with `config` and segmentation offload
    /// on or off, listening at `LISTEN_PORT` through `listen`.
    pub fn start(
        ns: &Netns,
        slot: usize,
        layer: bool,
        config: StackConfig,
        (mtu, offload): (u32, bool),
        listen: Listen,
    ) -> Result<Twin, String> {
        let (tun, stack, kernel) = SLOTS[slot];
        let net = start_stack_with(
            ns,
            tun,
            (stack, kernel),
            mtu,
            config,
            Impairment::default(),
            offload,
        )?;
        let at = SocketAddrV4::new(stack, LISTEN_PORT);
        let listener = listen(&net, at.into())?;
        Ok(Twin {
            layer,
            net,
            kernel,
            listener: Arc::new(listener),
            at,
        })
    }

    /// A bulk run from the stack to a kernel listener on its device (`crate::bulk::measure`).
    pub fn stack_to_kernel(&self, ns: &Netns, window: Duration) -> Result<Sample, String> {
        let listener = kernel_listener(ns, SocketAddr::from((self.kernel, 0)))?;
        let to = listener.local_addr().map_err(|e| e.to_string())?;
        measure(
            window,
            move || kernel_accept(&listener),
            || stack_connect(&self.net, to),
        )
    }

    /// A bulk run from a kernel client to the stack's listener.
    pub fn kernel_to_stack(&self, ns: &Netns, window: Duration) -> Result<Sample, String> {
        let listener = Arc::clone(&self.listener);
        measure(
            window,
            move || stack_accept(&listener),
            || kernel_connect(ns, self.at.into()),
        )
    }
}

/// The order the twins run in, round by round: as given, turned by one place each round, so
/// that over as many rounds as there are twins each runs in each place of a round as often
/// (the machine's state drifts within a round too, and a run can slow the next).
pub fn order<T>(twins: &[T], round: usize) -> Vec<&T> {
    let mut order: Vec<&T> = twins.iter().collect();
    if !order.is_empty() {
        let n = order.len();
        order.rotate_left(round % n);
    }
    order
}

/// What a run stands for in a layer's comparison.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// With the layer: the variant.
    On,
    /// Without it: the baseline.
    Off,
    /// Without it too: the control.
    Control,
}

/// One direction's Gbit/s: with the layer (the variant, with the bytes its SYNs carried, for
/// Fast Open) against without (the baseline), and the control against the same baseline.
#[derive(Default)]
pub struct Compared {
    pub layer: Paired,
    pub control: Paired,
}

impl Compared {
    /// A run's figure, by what the run stood for.
    pub fn push(&mut self, role: Role, gbps: f64, syn_data: usize) {
        match role {
            Role::On => self.layer.push(true, gbps, syn_data),
            Role::Off => {
                self.layer.push(false, gbps, 0);
                self.control.push(false, gbps, 0);
            }
            Role::Control => self.control.push(true, gbps, 0),
        }
    }
}

/// The by-round ratios' median and quartiles, as the tables show them.
pub fn by_round(p: &Paired) -> String {
    p.paired_ratios().map_or_else(
        || "-".to_owned(),
        |(median, lo, hi)| format!("{median:.3} ({lo:.3}-{hi:.3})"),
    )
}

/// The by-round ratios' median and quartiles as a JSON object.
pub fn quartiles_json(p: &Paired) -> String {
    let q = p.paired_ratios();
    format!(
        "{{\"median\":{},\"lower_quartile\":{},\"upper_quartile\":{}}}",
        json_num(q.map(|q| q.0), 4),
        json_num(q.map(|q| q.1), 4),
        json_num(q.map(|q| q.2), 4)
    )
}
