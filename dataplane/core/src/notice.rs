//! Exception actions a worker took on single flows, handed to the main thread for the log.
//!
//! Workers never log themselves: formatting and writing a line costs microseconds, and a
//! flood of new flows at a full proxy would turn into a flood of lines. Each worker keeps a
//! short list between two publications of its counters and counts what did not fit; the
//! main thread logs the list and says how many more there were. The counters stay the exact
//! record, the log names the flows.

use crate::flow::FlowKey;

/// What happened to one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The proxy could not take a new flow (`condition`, e.g. `proxy.max_flows`), and its
    /// exception action (`action`: `bypass` or `reset`) applied.
    NotProxied {
        condition: &'static str,
        action: &'static str,
    },
    /// A new flow met one of its rule's connection limits (`limit`, e.g. `conn-max`), and the
    /// rule's `on-limit` action (`bypass` or `reset`) applied.
    OverLimit {
        rule: u32,
        limit: &'static str,
        action: &'static str,
    },
    /// A peer left a hole the proxy could not fill; the rule's `on-stall` action applied.
    Stalled { action: &'static str },
    /// Its first payload showed IPsec over TCP in this framing: handed over to pass-through.
    Detected { framing: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    pub key: FlowKey,
    pub kind: NoticeKind,
}

/// A bounded list of notices and the count of those that did not fit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notices {
    list: Vec<Notice>,
    /// Notices not kept because the list was full.
    pub suppressed: u64,
}

impl Notices {
    /// Per worker and per publication (a few milliseconds): enough for every exception
    /// action of ordinary operation, few enough that a flood costs the log nothing.
    pub const CAPACITY: usize = 64;

    pub fn push(&mut self, notice: Notice) {
        if self.list.len() < Self::CAPACITY {
            self.list.push(notice);
        } else {
            self.suppressed += 1;
        }
    }

    /// Moves everything into `into`, within its capacity; the rest is counted there.
    pub fn move_into(&mut self, into: &mut Notices) {
        into.suppressed += self.suppressed;
        for notice in self.list.drain(..) {
            into.push(notice);
        }
        self.suppressed = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.suppressed == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Notice> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(port: u16) -> Notice {
        Notice {
            key: FlowKey::from_packet([198, 18, 0, 1].into(), [198, 18, 0, 2].into(), 6, port, 80)
                .0,
            kind: NoticeKind::Stalled { action: "wait" },
        }
    }

    #[test]
    fn a_full_list_counts_what_it_does_not_keep() {
        let mut worker = Notices::default();
        for p in 0..(Notices::CAPACITY as u16 + 5) {
            worker.push(notice(p));
        }
        assert_eq!(worker.iter().count(), Notices::CAPACITY);
        assert_eq!(worker.suppressed, 5);
        let mut published = Notices::default();
        published.push(notice(1));
        worker.move_into(&mut published);
        assert!(worker.is_empty());
        assert_eq!(published.iter().count(), Notices::CAPACITY);
        assert_eq!(published.suppressed, 5 + 1);
    }
}
