//! The one retry helper: every step sluice repeats after a transient failure (an upload, a
//! commit, a receive, a delete, opening a table's logs) goes through [`retry`], with exponential
//! back-off and jitter, so that writers that failed together do not retry in lockstep.

use std::ops::ControlFlow;
use std::time::Duration;

use tracing::warn;

use crate::error::{Error, Result};

/// When to try again: `retries` times at most, after waits that double from `base` up to
/// `max`, each drawn at random from its upper half ("equal jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait, before doubling.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
}

impl Backoff {
    /// `retries` retries after waits doubling from `base` (uncapped below a minute).
    pub const fn new(base: Duration, retries: u32) -> Self {
        Backoff {
            base,
            max: Duration::from_secs(60),
            retries,
        }
    }

    /// What a failed step of writing gets (an upload, a commit, a delete): 6 retries after
    /// 0.1–0.2 s, …, 3.2–6.4 s with the default `base` of 100 ms.
    pub const fn steps(base: Duration) -> Self {
        Backoff::new(base, 6)
    }

    /// The wait before retry `attempt` (1 for the first): `base · 2^attempt`, capped at `max`,
    /// of which a random part of the lower half is left out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let half = full / 2;
        let nanos = half.as_nanos() as u64;
        let jitter = if nanos == 0 {
            0
        } else {
            getrandom::u64().unwrap_or(0) % nanos
        };
        half + Duration::from_nanos(jitter)
    }
}

/// Whether a failed step is worth repeating: retryable, and not a conflict (a conflict needs a
/// decision, not a repeat).
pub fn transient(e: &Error) -> bool {
    e.is_retryable() && !matches!(e, Error::Conflict(_))
}

/// Runs `step` until it succeeds, fails with an error `repeat` refuses, or has been retried
/// `backoff.retries` times. An error after at least one retry comes back as
/// [`Error::RetriesExhausted`] naming `what` (a [`Error::Conflict`] as it is: its caller decides
/// what a conflict means); an error on the first attempt as it is.
pub async fn retry<T, F, Fut>(
    what: &str,
    backoff: Backoff,
    repeat: impl Fn(&Error) -> bool,
    mut step: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempts = Attempts::new(what, backoff, repeat);
    loop {
        if let ControlFlow::Break(r) = attempts.judge(step().await).await {
            return r;
        }
    }
}

/// [`retry`] for a loop the caller writes itself, where a step borrows what a closure could not
/// lend it again (`&mut` state): `judge` each outcome; `Continue` means try again (it has
/// waited), `Break` carries the result.
#[derive(Debug)]
pub struct Attempts<'a, R> {
    what: &'a str,
    backoff: Backoff,
    repeat: R,
    retried: u32,
}

impl<'a, R: Fn(&Error) -> bool> Attempts<'a, R> {
    /// Attempts at `what`, waiting as `backoff` says, retrying the errors `repeat` accepts.
    pub fn new(what: &'a str, backoff: Backoff, repeat: R) -> Self {
        Attempts {
            what,
            backoff,
            repeat,
            retried: 0,
        }
    }

    /// What to do after an attempt ended with `outcome`.
    pub async fn judge<T>(&mut self, outcome: Result<T>) -> ControlFlow<Result<T>> {
        match outcome {
            Err(e) if (self.repeat)(&e) && self.retried < self.backoff.retries => {
                self.retried += 1;
                warn!(error = %e, attempt = self.retried, "{} failed, retrying", self.what);
                tokio::time::sleep(self.backoff.delay(self.retried)).await;
                ControlFlow::Continue(())
            }
            Err(e) if self.retried > 0 && !matches!(e, Error::Conflict(_)) => {
                ControlFlow::Break(Err(Error::RetriesExhausted {
                    what: self.what.to_string(),
                    attempts: self.retried + 1,
                    source: Box::new(e),
                }))
            }
            other => ControlFlow::Break(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_upper_half_and_stop_at_max() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            retries: 6,
        };
        for attempt in 1..=6 {
            let full = (Duration::from_millis(100) * (1 << attempt)).min(Duration::from_secs(1));
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        let ds: std::collections::HashSet<_> = (0..50).map(|_| b.delay(3)).collect();
        assert!(ds.len() > 1, "no jitter: {ds:?}");
    }

    #[tokio::test]
    async fn retries_transient_failures_then_gives_up_naming_the_step() {
        let b = Backoff::new(Duration::from_millis(1), 3);
        let mut calls = 0;
        let r: Result<()> = retry("upload", b, transient, || {
            calls += 1;
            async {
                Err(Error::Io {
                    path: "x".into(),
                    source: std::io::ErrorKind::TimedOut.into(),
                })
            }
        })
        .await;
        assert_eq!(calls, 4);
        match r {
            Err(Error::RetriesExhausted { what, attempts, .. }) => {
                assert_eq!((what.as_str(), attempts), ("upload", 4));
            }
            other => panic!("{other:?}"),
        }
        let mut calls = 0;
        let r = retry("commit", b, transient, || {
            calls += 1;
            let r = if calls < 3 {
                Err(Error::Io {
                    path: "x".into(),
                    source: std::io::ErrorKind::TimedOut.into(),
                })
            } else {
                Ok(calls)
            };
            async move { r }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        // Not retryable: returned at once, as it is.
        let mut calls = 0;
        let r: Result<()> = retry("commit", b, transient, || {
            calls += 1;
            async { Err(Error::Conflict("lost".into())) }
        })
        .await;
        assert!(matches!(r, Err(Error::Conflict(_))));
        assert_eq!(calls, 1);
    }
}
