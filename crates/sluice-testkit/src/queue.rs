//! The queue conformance suite.
//!
//! Each function takes a fresh, empty queue. Time-based checks use short timeouts (1 to 3 s)
//! and only assert what SQS guarantees.

use std::time::{Duration, Instant};

use sluice_core::Error;
use sluice_core::queue::{MAX_BATCH, Queue, QueueExt, ReceiveOptions};

fn now_opts(max: usize, vt: Option<Duration>) -> ReceiveOptions {
    ReceiveOptions {
        max_messages: max,
        wait: Duration::from_millis(0),
        visibility_timeout: vt,
    }
}

/// Receives until `n` messages arrived or `deadline` passed.
async fn receive_n(
    q: &dyn Queue,
    n: usize,
    vt: Duration,
    deadline: Duration,
) -> Vec<sluice_core::queue::ReceivedMessage> {
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < end {
        let opts = ReceiveOptions {
            max_messages: MAX_BATCH,
            wait: Duration::from_secs(1),
            visibility_timeout: Some(vt),
        };
        got.extend(q.receive(opts).await.expect("receive"));
    }
    got
}

/// Send, receive, delete: bodies arrive intact, counts start at 1, deleted messages are gone.
pub async fn send_receive_delete(q: &dyn Queue) {
    let bodies: Vec<String> = (0..7)
        .map(|i| format!("body {i} ✓ {}", "x".repeat(i * 100)))
        .collect();
    let ids = q.send_batch(bodies.clone()).await.expect("send");
    assert_eq!(ids.len(), 7);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7, "message ids are unique");
    let got = receive_n(q, 7, Duration::from_secs(30), Duration::from_secs(10)).await;
    assert_eq!(got.len(), 7);
    let mut got_bodies: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
    got_bodies.sort();
    let mut want = bodies.clone();
    want.sort();
    assert_eq!(got_bodies, want);
    assert!(got.iter().all(|m| m.receive_count == 1));
    assert!(got.iter().all(|m| ids.contains(&m.message_id)));
    let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
    let failed = q.delete_all(&receipts).await.expect("delete");
    assert!(failed.is_empty(), "{failed:?}");
    // Deleting again is idempotent.
    let failed = q.delete_all(&receipts).await.expect("delete again");
    assert!(failed.is_empty(), "{failed:?}");
    let s = q.stats().await.expect("stats");
    assert_eq!((s.visible, s.in_flight), (0, 0));
}

/// Large bodies (a backend may keep them apart, as the embedded queue does in files) arrive
/// whole, multi-byte characters included, and deleting them leaves the queue empty.
pub async fn large_bodies(q: &dyn Queue) {
    let max = q.max_message_bytes();
    let body = |n: usize, seed: usize| -> String {
        let mut s = String::with_capacity(n);
        let mut i = seed;
        while s.len() + 4 <= n {
            s.push(['a', 'é', '€', '😀', '\n', ','][i % 6]);
            i = i.wrapping_mul(31).wrapping_add(7);
        }
        s
    };
    let bodies = [body(70_000.min(max), 1), body(max.min(300_000), 2)];
    for b in &bodies {
        q.send_batch(vec![b.clone()]).await.expect("send");
    }
    let got = receive_n(q, 2, Duration::from_secs(30), Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    let mut lens: Vec<usize> = got.iter().map(|m| m.body.len()).collect();
    lens.sort();
    let mut want: Vec<usize> = bodies.iter().map(String::len).collect();
    want.sort();
    assert_eq!(lens, want);
    for m in &got {
        assert!(
            bodies.contains(&m.body),
            "a body of {} bytes changed",
            m.body.len()
        );
    }
    let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
    assert!(q.delete_all(&receipts).await.expect("delete").is_empty());
    let s = q.stats().await.expect("stats");
    assert_eq!((s.visible, s.in_flight), (0, 0));
}

/// Batch limits: 0 and 11 entries fail, as does a batch over the size limit.
pub async fn batch_limits(q: &dyn Queue) {
    assert!(q.send_batch(Vec::new()).await.is_err());
    let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
    assert!(q.send_batch(eleven).await.is_err());
    let big = "x".repeat(q.max_message_bytes() + 1);
    assert!(matches!(
        q.send_batch(vec![big]).await,
        Err(Error::MessageTooLarge { .. })
    ));
    // A batch over the total limit fails whole. (A layer whose total limit is ten full
    // messages, as claim-check's, cannot be sent such a batch.)
    let total = q.max_batch_bytes();
    if total < 2 * q.max_message_bytes() {
        let half = "y".repeat(total / 2 + 1);
        assert!(matches!(
            q.send_batch(vec![half.clone(), half]).await,
            Err(Error::MessageTooLarge { .. })
        ));
    }
    let s = q.stats().await.expect("stats");
    assert_eq!(s.visible + s.in_flight, 0, "a failed batch sends nothing");
    let exact = "z".repeat(q.max_message_bytes());
    q.send_batch(vec![exact.clone()])
        .await
        .expect("a message of exactly the limit is accepted");
    let got = receive_n(q, 1, Duration::from_secs(30), Duration::from_secs(10)).await;
    assert_eq!(got[0].body, exact);
    q.delete_all(&[got[0].receipt.clone()])
        .await
        .expect("delete");
}

/// Visibility timeout: an unacknowledged message comes back with a higher receive count and
/// a new receipt; the old receipt can no longer change its visibility.
pub async fn visibility_timeout_redelivers(q: &dyn Queue) {
    q.send_batch(vec!["once".to_string()]).await.expect("send");
    let first = receive_n(q, 1, Duration::from_secs(1), Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1);
    assert!(
        q.receive(now_opts(10, None))
            .await
            .expect("receive")
            .is_empty(),
        "invisible while in flight"
    );
    let s = q.stats().await.expect("stats");
    assert_eq!(s.in_flight, 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = receive_n(q, 1, Duration::from_secs(30), Duration::from_secs(10)).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt, first[0].receipt);
    let failed = q
        .change_visibility_batch(&[(first[0].receipt.clone(), Duration::from_secs(5))])
        .await
        .expect("call");
    // SQS accepts an old receipt for some operations; the embedded queue refuses it. Either way
    // the current receipt must work:
    let _ = failed;
    let ok = q
        .change_visibility_batch(&[(second[0].receipt.clone(), Duration::from_secs(30))])
        .await
        .expect("call");
    assert!(ok.is_empty(), "{ok:?}");
    q.delete_all(&[second[0].receipt.clone()])
        .await
        .expect("delete");
    let s = q.stats().await.expect("stats");
    assert_eq!((s.visible, s.in_flight), (0, 0));
}

/// change_visibility: extending keeps a message hidden; zero makes it visible at once; a deleted
/// message's receipt fails its entry.
pub async fn change_visibility(q: &dyn Queue) {
    q.send_batch(vec!["a".to_string(), "b".to_string()])
        .await
        .expect("send");
    let got = receive_n(q, 2, Duration::from_secs(1), Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2);
    let entries: Vec<_> = got
        .iter()
        .map(|m| (m.receipt.clone(), Duration::from_secs(30)))
        .collect();
    assert!(
        q.change_visibility_batch(&entries)
            .await
            .expect("extend")
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        q.receive(now_opts(10, None))
            .await
            .expect("receive")
            .is_empty(),
        "extended messages stay hidden"
    );
    let release = [(got[0].receipt.clone(), Duration::ZERO)];
    assert!(
        q.change_visibility_batch(&release)
            .await
            .expect("release")
            .is_empty()
    );
    let again = receive_n(q, 1, Duration::from_secs(30), Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, got[0].body);
    q.delete_all(&[again[0].receipt.clone(), got[1].receipt.clone()])
        .await
        .expect("delete");
    let failed = q
        .change_visibility_batch(&[(got[1].receipt.clone(), Duration::from_secs(10))])
        .await
        .expect("call");
    assert_eq!(failed.len(), 1, "a deleted message cannot be changed");
    assert_eq!(failed[0].index, 0);
}

/// Long polling returns as soon as a message is sent, and empty at the end of the wait.
pub async fn long_poll(q: &dyn Queue) {
    let t = Instant::now();
    let got = q
        .receive(ReceiveOptions {
            max_messages: 10,
            wait: Duration::from_secs(2),
            visibility_timeout: None,
        })
        .await
        .expect("receive");
    assert!(got.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "waited {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let (got, _) = tokio::join!(
        q.receive(ReceiveOptions {
            max_messages: 10,
            wait: Duration::from_secs(10),
            visibility_timeout: None
        }),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            q.send_batch(vec!["late".to_string()]).await.expect("send");
        }
    );
    let got = got.expect("receive");
    assert_eq!(got.len(), 1);
    assert!(
        t.elapsed() < Duration::from_secs(9),
        "returned when the message came, not at the end of the wait"
    );
    q.delete_all(&[got[0].receipt.clone()])
        .await
        .expect("delete");
}

/// Purge removes everything; stats count visible and in-flight messages.
pub async fn stats_and_purge(q: &dyn Queue) {
    let bodies: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    q.send_batch(bodies).await.expect("send");
    let got = receive_n(q, 2, Duration::from_secs(60), Duration::from_secs(10)).await;
    let held = got.len().min(5) as u64;
    let s = q.stats().await.expect("stats");
    assert_eq!(s.visible + s.in_flight, 5);
    assert_eq!(s.in_flight, held);
    q.purge().await.expect("purge");
    let s = q.stats().await.expect("stats");
    assert_eq!((s.visible, s.in_flight), (0, 0));
}

/// A message received `max_receive_count` times moves to the dead-letter queue. `q` must have
/// `max_receive_count` 2 and `dlq` as its dead-letter queue.
pub async fn dead_letter(q: &dyn Queue, dlq: &dyn Queue) {
    q.send_batch(vec!["poison".to_string()])
        .await
        .expect("send");
    for n in 1..=2 {
        let got = receive_n(q, 1, Duration::from_secs(1), Duration::from_secs(10)).await;
        assert_eq!(got.len(), 1, "delivery {n}");
        assert_eq!(got[0].receive_count, n);
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    // The third receive moves it instead of delivering it.
    let got = q
        .receive(ReceiveOptions {
            max_messages: 10,
            wait: Duration::from_secs(1),
            visibility_timeout: None,
        })
        .await
        .expect("receive");
    assert!(
        got.is_empty(),
        "moved to the dead-letter queue, not delivered: {got:?}"
    );
    let dead = receive_n(dlq, 1, Duration::from_secs(30), Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    dlq.delete_all(&[dead[0].receipt.clone()])
        .await
        .expect("delete");
}

/// Declares one `#[tokio::test]` per case of the suite (a failure names its case), each on a
/// fresh queue from `$make`: an `async fn(&'static str) -> (G, Box<dyn Queue>)` given the
/// case's name, whose `G` (a temporary directory, a lake, …) lives as long as the test.
///
/// ```ignore
/// async fn make(name: &'static str) -> (tempfile::TempDir, Box<dyn Queue>) { … }
/// sluice_testkit::queue_conformance_tests!(make);
/// ```
#[macro_export]
macro_rules! queue_conformance_tests {
    ($make:path) => {
        $crate::queue_conformance_tests!(@case $make, send_receive_delete);
        $crate::queue_conformance_tests!(@case $make, large_bodies);
        $crate::queue_conformance_tests!(@case $make, batch_limits);
        $crate::queue_conformance_tests!(@case $make, visibility_timeout_redelivers);
        $crate::queue_conformance_tests!(@case $make, change_visibility);
        $crate::queue_conformance_tests!(@case $make, long_poll);
        $crate::queue_conformance_tests!(@case $make, stats_and_purge);
    };
    (@case $make:path, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (_guard, q) = $make(stringify!($case)).await;
            $crate::queue::$case(&*q).await;
        }
    };
}
