//! Log lines a client can cause, bounded: a client that repeats what earns a warning (a flood
//! of bad frames, thousands of connections that each break a rule) must not fill Envoy's log,
//! nor hide everyone else's lines in it.
//!
//! Each connection gets [`PER_CONNECTION`] lines at their own level, and the worker (one VM,
//! one thread) [`PER_WORKER_PER_SECOND`] lines a second over all its connections; the rest are
//! written at debug level and counted, reported as `kafka.log_lines_suppressed` (see
//! [`take_suppressed`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

/// Lines one connection may write above debug level.
pub const PER_CONNECTION: u32 = 5;
/// Lines all connections of one worker may write above debug level in one second.
pub const PER_WORKER_PER_SECOND: u32 = 50;
/// Request-log and audit lines one worker may write to Envoy's log in one second: they are
/// one per request by design, so their bound is far higher (their HTTP collector has its own).
pub const RECORDS_PER_WORKER_PER_SECOND: u32 = 2000;

const SECOND_NS: u64 = 1_000_000_000;

struct Gate {
    /// Lines written per live connection (an entry only once one was written).
    written: HashMap<u32, u32>,
    window_start_ns: u64,
    in_window: u32,
    records_in_window: u32,
    suppressed: u64,
    clock: fn() -> u64,
}

impl Gate {
    /// Start a new one-second window if the last one is over.
    fn roll(&mut self) {
        let now = (self.clock)();
        if now.saturating_sub(self.window_start_ns) >= SECOND_NS {
            self.window_start_ns = now;
            self.in_window = 0;
            self.records_in_window = 0;
        }
    }
}

thread_local! {
    static GATE: RefCell<Gate> = RefCell::new(Gate {
        written: HashMap::new(),
        window_start_ns: 0,
        in_window: 0,
        records_in_window: 0,
        suppressed: 0,
        clock: monotonic_ns,
    });
}

fn monotonic_ns() -> u64 {
    thread_local! {
        static START: std::time::Instant = std::time::Instant::now();
    }
    START.with(|s| u64::try_from(s.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// The host's clock for the per-second bound (read only when a line is about to be written).
pub fn set_clock(clock: fn() -> u64) {
    GATE.with(|g| g.borrow_mut().clock = clock);
}

/// Whether connection `conn` may write one more line above debug level (and count it).
fn admit(conn: u32) -> bool {
    GATE.with(|g| {
        let mut g = g.borrow_mut();
        let written = g.written.get(&conn).copied().unwrap_or(0);
        if written >= PER_CONNECTION {
            g.suppressed += 1;
            return false;
        }
        g.roll();
        if g.in_window >= PER_WORKER_PER_SECOND {
            g.suppressed += 1;
            return false;
        }
        g.in_window += 1;
        g.written.insert(conn, written + 1);
        true
    })
}

/// A warning a client caused on connection `conn`.
pub fn warn(conn: u32, line: fmt::Arguments<'_>) {
    if admit(conn) {
        log::warn!("{line}");
    } else {
        log::debug!("{line}");
    }
}

/// A line at info level a client caused on connection `conn`.
pub fn info(conn: u32, line: fmt::Arguments<'_>) {
    if admit(conn) {
        log::info!("{line}");
    } else {
        log::debug!("{line}");
    }
}

/// An error the host reported while serving connection `conn` (bounded like a client's lines:
/// a host that fails for every chunk must not flood the log either).
pub fn error(conn: u32, line: fmt::Arguments<'_>) {
    if admit(conn) {
        log::error!("{line}");
    } else {
        log::debug!("{line}");
    }
}

/// A request-log or audit line for Envoy's log (info level), within the worker's bound.
pub fn record(line: fmt::Arguments<'_>) {
    let admitted = GATE.with(|g| {
        let mut g = g.borrow_mut();
        g.roll();
        if g.records_in_window >= RECORDS_PER_WORKER_PER_SECOND {
            g.suppressed += 1;
            return false;
        }
        g.records_in_window += 1;
        true
    });
    if admitted {
        log::info!("{line}");
    }
}

/// The connection has ended: its count goes.
pub fn forget(conn: u32) {
    GATE.with(|g| {
        g.borrow_mut().written.remove(&conn);
    });
}

/// Lines written at debug level instead since the last call (for the suppressed counter).
pub fn take_suppressed() -> u64 {
    GATE.with(|g| std::mem::take(&mut g.borrow_mut().suppressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static NOW: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn fake_now() -> u64 {
        NOW.with(|n| n.get())
    }

    #[test]
    fn per_connection_then_per_worker_per_second() {
        set_clock(fake_now);
        NOW.with(|n| n.set(10 * SECOND_NS));
        take_suppressed();
        let admitted = (0..20).filter(|_| admit(1)).count() as u32;
        assert_eq!(admitted, PER_CONNECTION);
        assert_eq!(take_suppressed(), u64::from(20 - PER_CONNECTION));
        // Many connections, one line each: the worker's bound for this second.
        let admitted = (100..1100).filter(|&c| admit(c)).count() as u32;
        assert_eq!(admitted, PER_WORKER_PER_SECOND - PER_CONNECTION);
        // The next second has room again; a connection that ended starts over.
        NOW.with(|n| n.set(11 * SECOND_NS));
        forget(1);
        assert!(admit(1));
        assert!(admit(2000));
        for c in 100..1100 {
            forget(c);
        }
        forget(1);
        forget(2000);
    }
}
