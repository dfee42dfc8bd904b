//! Tollgate's log: `tracing` events on standard error, at the level and in the format the
//! configuration names (`[log]`).
//!
//! The text format keeps the shape operators grep for, `tollgate: [warning: ]message
//! key=value ...`, without a timestamp: under systemd the journal stamps each line, and the
//! lab's log file is read next to the counters it names. The JSON format carries the time,
//! the level and every field, for log shippers.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use tollgate_control::StatsSnapshot;

use crate::config::{LogConfig, LogFormat, LogLevel};
use tollgate_core::notice::{NoticeKind, Notices};

impl LogLevel {
    fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// `tollgate: ` then the level where it is not plain information, then the message and the
/// event's other fields as `key=value`.
struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("tollgate: ")?;
        writer.write_str(match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::INFO => "",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
        })?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn text_subscriber<W>(level: LogLevel, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(level.filter())
        .with_ansi(false)
        .event_format(TextLine)
        .finish()
}

/// Installs the process's log subscriber. Call once, before the first event; a second call
/// leaves the first subscriber in place.
pub fn init(config: &LogConfig) {
    let _ = match config.format {
        LogFormat::Text => {
            tracing::subscriber::set_global_default(text_subscriber(config.level, std::io::stderr))
                .map_err(|e| e.to_string())
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(config.level.filter())
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
            .map_err(|e| e.to_string()),
    };
}

/// Logs the exception actions one worker took on single flows.
pub fn notices(worker: usize, notices: &Notices) {
    for notice in notices.iter() {
        let flow = &notice.key;
        match notice.kind {
            NoticeKind::NotProxied { condition, action } => tracing::warn!(
                worker,
                %flow,
                condition,
                action,
                "new flow not proxied"
            ),
            NoticeKind::OverLimit {
                rule,
                limit,
                action,
            } => tracing::warn!(
                worker,
                %flow,
                rule,
                limit,
                action,
                "new flow past its rule's connection limit"
            ),
            NoticeKind::Stalled { action } => {
                tracing::warn!(worker, %flow, action, "proxied flow stalled on a hole its sender never filled")
            }
            NoticeKind::Detected { framing } => tracing::info!(
                worker,
                %flow,
                framing,
                "IPsec over TCP detected: handed over to pass-through"
            ),
        }
    }
    if notices.suppressed > 0 {
        tracing::warn!(
            worker,
            suppressed = notices.suppressed,
            "more exception actions than the log takes one by one; the counters have them all"
        );
    }
}

/// Logs what moved between two snapshots of the counters that mean frames lost or flows
/// handled by an exception action; one line per counter, none when all is well.
pub fn counter_changes(before: &StatsSnapshot, after: &StatsSnapshot) {
    let secs = after.uptime_secs.saturating_sub(before.uptime_secs).max(1);
    for (reason, &n) in &after.drops {
        let delta = n.saturating_sub(before.drops.get(reason).copied().unwrap_or(0));
        if delta > 0 {
            tracing::warn!(
                reason = reason.as_str(),
                frames = delta,
                secs,
                "frames dropped"
            );
        }
    }
    let table_full = after
        .totals
        .flows_table_full
        .saturating_sub(before.totals.flows_table_full);
    if table_full > 0 {
        tracing::warn!(
            new_flows = table_full,
            secs,
            "flow table full: new flows handled by flows.on_full"
        );
    }
    for (port, now) in &after.ports {
        let Some(was) = before.ports.get(port) else {
            continue;
        };
        for (counter, n, m) in [
            ("imissed", was.imissed, now.imissed),
            ("rx_nombuf", was.rx_nombuf, now.rx_nombuf),
            ("ierrors", was.ierrors, now.ierrors),
            ("oerrors", was.oerrors, now.oerrors),
        ] {
            if m > n {
                tracing::warn!(
                    port = port.as_str(),
                    counter,
                    frames = m - n,
                    secs,
                    "port lost frames"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use tollgate_core::flow::FlowKey;
    use tollgate_core::notice::Notice;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    fn logged(level: LogLevel, emit: impl FnOnce()) -> Vec<String> {
        let out = Captured::default();
        tracing::subscriber::with_default(text_subscriber(level, out.clone()), emit);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn flow(port: u16) -> FlowKey {
        FlowKey::from_packet(
            [198, 18, 0, 1].into(),
            [198, 18, 0, 2].into(),
            6,
            port,
            10000,
        )
        .0
    }

    #[test]
    fn text_lines_keep_the_daemon_prefix_and_name_the_level_when_it_is_not_info() {
        let lines = logged(LogLevel::Info, || {
            tracing::info!("drained: every proxied connection has finished");
            tracing::warn!(uid = 0, "control: something");
            tracing::debug!("not shown at info");
        });
        assert_eq!(
            lines,
            [
                "tollgate: drained: every proxied connection has finished",
                "tollgate: warning: control: something uid=0",
            ]
        );
        assert!(logged(LogLevel::Error, || tracing::warn!("hidden")).is_empty());
    }

    #[test]
    fn each_exception_action_on_a_flow_is_a_line_naming_the_flow_and_the_action() {
        let mut notices = Notices::default();
        notices.push(Notice {
            key: flow(40000),
            kind: NoticeKind::NotProxied {
                condition: "proxy.max_flows",
                action: "bypass",
            },
        });
        notices.push(Notice {
            key: flow(40001),
            kind: NoticeKind::Stalled { action: "bypass" },
        });
        notices.push(Notice {
            key: flow(40002),
            kind: NoticeKind::Detected {
                framing: "ctcp-ike",
            },
        });
        notices.push(Notice {
            key: flow(40003),
            kind: NoticeKind::OverLimit {
                rule: 3,
                limit: "conn-max",
                action: "reset",
            },
        });
        let lines = logged(LogLevel::Info, || super::notices(1, &notices));
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(
            lines[3],
            "tollgate: warning: new flow past its rule's connection limit worker=1 flow=tcp 198.18.0.1:40003 <-> 198.18.0.2:10000 rule=3 limit=\"conn-max\" action=\"reset\""
        );
        assert_eq!(
            lines[0],
            "tollgate: warning: new flow not proxied worker=1 flow=tcp 198.18.0.1:40000 <-> 198.18.0.2:10000 condition=\"proxy.max_flows\" action=\"bypass\""
        );
        assert!(
            lines[1].contains("stalled")
                && lines[1].contains(":40001 ")
                && lines[1].ends_with("action=\"bypass\""),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("tollgate: IPsec over TCP detected")
                && lines[2].contains("framing=\"ctcp-ike\""),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn what_did_not_fit_is_one_line_with_its_count() {
        let mut notices = Notices::default();
        for p in 0..(Notices::CAPACITY as u16 + 3) {
            notices.push(Notice {
                key: flow(p),
                kind: NoticeKind::NotProxied {
                    condition: "proxy.memory_budget_mib",
                    action: "reset",
                },
            });
        }
        let lines = logged(LogLevel::Info, || super::notices(0, &notices));
        assert_eq!(lines.len(), Notices::CAPACITY + 1);
        assert!(lines.last().unwrap().contains("suppressed=3"), "{lines:?}");
    }

    #[test]
    fn counters_that_moved_are_logged_and_quiet_ones_are_not() {
        let before = StatsSnapshot::default();
        let mut after = before.clone();
        after.uptime_secs = 1;
        after.drops.insert("tx_full".into(), 7);
        after.drops.insert("table_full".into(), 0);
        after.totals.flows_table_full = 12;
        let lines = logged(LogLevel::Info, || counter_changes(&before, &after));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("frames dropped") && lines[0].contains("frames=7"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("flow table full") && lines[1].contains("new_flows=12"),
            "{}",
            lines[1]
        );
        assert!(logged(LogLevel::Info, || counter_changes(&after, &after)).is_empty());
    }
}
