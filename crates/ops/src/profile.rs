//! An opt-in timer for the fused CPU ops: while it is [`enable`]d, each op adds its wall time
//! to a table keyed by what ran (op, direction, sizes); [`take`] empties the table. `cargo xtask
//! bench-child --phases` prints it per training step, which is how the per-layer comparisons
//! with PyTorch's profiler in the README were made. Off (the default), an op pays one relaxed
//! atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The time spent in one kind of op call since the last [`take`].
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// What ran, e.g. `conv bwd 64×32×32 → 64, 3×3/1, relu, ∂x`.
    pub name: String,
    /// Wall time summed over the calls.
    pub seconds: f64,
    /// Number of calls.
    pub calls: usize,
}

/// Turns the timer on or off (process-wide).
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// The table gathered so far, longest first, and an empty one in its place.
pub fn take() -> Vec<Entry> {
    let mut table = std::mem::take(&mut *TABLE.lock().unwrap_or_else(|e| e.into_inner()));
    table.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    table
}

/// Runs `f`, adding its wall time under `name()` while the timer is on.
pub(crate) fn time<R>(name: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let started = Instant::now();
    let out = f();
    add(name(), started.elapsed().as_secs_f64());
    out
}

/// Adds `seconds` under `name`.
fn add(name: String, seconds: f64) {
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    match table.iter_mut().find(|e| e.name == name) {
        Some(e) => {
            e.seconds += seconds;
            e.calls += 1;
        }
        None => table.push(Entry {
            name,
            seconds,
            calls: 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One test changes the process-wide switch, so every check lives here.
    #[test]
    fn records_only_while_enabled() {
        time(|| "off".into(), || ());
        enable(true);
        for _ in 0..3 {
            time(
                || "on".into(),
                || std::thread::sleep(std::time::Duration::from_millis(1)),
            );
        }
        enable(false);
        time(|| "off".into(), || ());
        // Other tests' ops may have been timed meanwhile: look only at these names.
        let table = take();
        assert!(!table.iter().any(|e| e.name == "off"), "{table:?}");
        let on = table.iter().find(|e| e.name == "on").unwrap();
        assert_eq!(on.calls, 3);
        assert!(on.seconds >= 0.003);
        assert!(!take().iter().any(|e| e.name == "on"));
    }
}
