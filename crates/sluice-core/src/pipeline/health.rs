//! A running consumer's health, for an orchestrator's probes: alive (the process answers) and
//! ready (its queue, lake and catalog answered recently, and it is not stopping).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a consumer depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The queue it receives from.
    Queue,
    /// The lake its table is in (the Delta log, re-read every few seconds).
    Lake,
    /// The catalog its table is registered in.
    Catalog,
}

impl Dependency {
    const ALL: [Dependency; 3] = [Dependency::Queue, Dependency::Lake, Dependency::Catalog];

    fn name(self) -> &'static str {
        match self {
            Dependency::Queue => "queue",
            Dependency::Lake => "lake",
            Dependency::Catalog => "catalog",
        }
    }
}

/// When each dependency last answered, and whether the consumer is stopping. Shared between the
/// consumer, which records, and whoever serves the probes.
#[derive(Debug)]
pub struct Health {
    /// A dependency that has not answered for this long makes the consumer not ready.
    pub window: Duration,
    answered: Mutex<[Option<Instant>; 3]>,
    stopping: AtomicBool,
}

/// How long a dependency may go unanswered before the consumer is not ready: an idle consumer
/// polls its queue at least every 50 s (a 30 s pause, then a 20 s long poll).
pub const READY_WINDOW: Duration = Duration::from_secs(120);

impl Default for Health {
    fn default() -> Self {
        Health::new(READY_WINDOW)
    }
}

impl Health {
    /// Health with the readiness window `window`.
    pub fn new(window: Duration) -> Self {
        Health {
            window,
            answered: Mutex::new([None; 3]),
            stopping: AtomicBool::new(false),
        }
    }

    /// Records that `d` answered a request now.
    pub fn answered(&self, d: Dependency) {
        let i = Dependency::ALL.iter().position(|x| *x == d).unwrap_or(0);
        if let Ok(mut a) = self.answered.lock() {
            a[i] = Some(Instant::now());
        }
    }

    /// Records that the consumer is stopping: it is not ready from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// `Ok` when ready; else why not, for people.
    pub fn ready(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err("stopping".into());
        }
        let answered = self.answered.lock().map(|a| *a).unwrap_or([None; 3]);
        let late: Vec<String> = Dependency::ALL
            .iter()
            .zip(answered)
            .filter_map(|(d, at)| match at {
                None => Some(format!("the {} has not answered yet", d.name())),
                Some(t) if t.elapsed() > self.window => Some(format!(
                    "the {} has not answered for {} s",
                    d.name(),
                    t.elapsed().as_secs()
                )),
                Some(_) => None,
            })
            .collect();
        if late.is_empty() {
            Ok(())
        } else {
            Err(late.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_everything_answered_and_until_it_stops() {
        let h = Health::new(Duration::from_millis(200));
        assert!(
            h.ready()
                .unwrap_err()
                .contains("queue has not answered yet")
        );
        h.answered(Dependency::Queue);
        h.answered(Dependency::Lake);
        let e = h.ready().unwrap_err();
        assert!(e.contains("catalog") && !e.contains("queue"), "{e}");
        h.answered(Dependency::Catalog);
        assert_eq!(h.ready(), Ok(()));
        std::thread::sleep(Duration::from_millis(250));
        h.answered(Dependency::Queue);
        h.answered(Dependency::Catalog);
        let e = h.ready().unwrap_err();
        assert!(e.contains("the lake has not answered for"), "{e}");
        h.answered(Dependency::Lake);
        assert_eq!(h.ready(), Ok(()));
        h.stopping();
        assert_eq!(h.ready(), Err("stopping".into()));
    }
}
