//! Model check: the embedded queue against a simple in-memory model of SQS semantics
//! (visibility timeouts, redelivery, receive counts, dead-letter queue), under a fake clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use sluice_core::queue::sqlite::{Clock, FILE_BODY_BYTES};
use sluice_core::queue::{EmbeddedQueues, Queue, QueueSettings, ReceiveOptions};

#[derive(Debug, Default)]
struct FakeClock(AtomicI64);
impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send(u8),
    Receive { max: usize, vt_ms: u64 },
    Delete(usize),
    ChangeVisibility { pick: usize, ms: u64 },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..4).prop_map(Op::Send),
        (1usize..=10, 0u64..3000).prop_map(|(max, vt_ms)| Op::Receive { max, vt_ms }),
        (0usize..64).prop_map(Op::Delete),
        (0usize..64, 0u64..3000).prop_map(|(pick, ms)| Op::ChangeVisibility { pick, ms }),
        (0u64..4000).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone)]
struct M {
    body: String,
    visible_at: i64,
    count: u32,
    receipt: Option<String>,
    seq: u64,
    dead: bool,
}

const MAX_RC: u32 = 3;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn queue_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(FakeClock(AtomicI64::new(1_000_000)));
            let qs = EmbeddedQueues::open_with_clock(dir.path().join("q.db"), clock.clone()).unwrap();
            let s = QueueSettings { visibility_timeout: Duration::from_millis(1000), max_receive_count: MAX_RC, dead_letter_queue: Some("dlq".into()), ..Default::default() };
            qs.create_queue("dlq", &QueueSettings::default()).await.unwrap();
            qs.create_queue("q", &s).await.unwrap();
            let q = qs.queue("q").await.unwrap();
            let dlq = qs.queue("dlq").await.unwrap();
            let mut model: Vec<M> = Vec::new();
            let mut receipts: Vec<String> = Vec::new();
            let mut next = 0u64;
            for op in ops {
                let now = clock.now_ms();
                match op {
                    Op::Send(n) => {
                        // Every third body is large enough to be kept in a file.
                        let bodies: Vec<String> = (0..n).map(|_| {
                            next += 1;
                            let pad = if next.is_multiple_of(3) { FILE_BODY_BYTES } else { 0 };
                            format!("m{next} {}", "x".repeat(pad))
                        }).collect();
                        q.send_batch(bodies.clone()).await.unwrap();
                        for b in bodies {
                            let seq = b[1..].split(' ').next().unwrap().parse().unwrap();
                            model.push(M { body: b, visible_at: now, count: 0, receipt: None, seq, dead: false });
                        }
                    }
                    Op::Receive { max, vt_ms } => {
                        let got = q.receive(ReceiveOptions { max_messages: max, wait: Duration::ZERO, visibility_timeout: Some(Duration::from_millis(vt_ms)) }).await.unwrap();
                        // Model: visible, in (visible_at, seq) order; dead-letter those at MAX_RC.
                        let mut cands: Vec<usize> = (0..model.len()).filter(|&i| !model[i].dead && model[i].visible_at <= now).collect();
                        cands.sort_by_key(|&i| (model[i].visible_at, model[i].seq));
                        let mut want = Vec::new();
                        for i in cands {
                            if want.len() == max { break; }
                            if model[i].count >= MAX_RC { model[i].dead = true; continue; }
                            want.push(i);
                        }
                        let got_bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
                        let want_bodies: Vec<&str> = want.iter().map(|&i| model[i].body.as_str()).collect();
                        let short = |b: &[&str]| b.iter().map(|s| (s.len(), s[..s.len().min(8)].to_string())).collect::<Vec<_>>();
                        assert!(got_bodies == want_bodies, "{:?} != {:?}", short(&got_bodies), short(&want_bodies));
                        for (m, &i) in got.iter().zip(&want) {
                            model[i].count += 1;
                            model[i].visible_at = now + vt_ms as i64;
                            model[i].receipt = Some(m.receipt.clone());
                            assert_eq!(m.receive_count, model[i].count);
                            receipts.push(m.receipt.clone());
                        }
                    }
                    Op::Delete(pick) => {
                        if receipts.is_empty() { continue; }
                        let r = receipts[pick % receipts.len()].clone();
                        let failed = q.delete_batch(std::slice::from_ref(&r)).await.unwrap();
                        assert!(failed.is_empty());
                        if let Some(i) = model.iter().position(|m| !m.dead && m.receipt.as_deref() == Some(r.as_str())) {
                            model.remove(i);
                        }
                    }
                    Op::ChangeVisibility { pick, ms } => {
                        if receipts.is_empty() { continue; }
                        let r = receipts[pick % receipts.len()].clone();
                        let failed = q.change_visibility_batch(&[(r.clone(), Duration::from_millis(ms))]).await.unwrap();
                        let held = model.iter().position(|m| !m.dead && m.receipt.as_deref() == Some(r.as_str()) && m.visible_at > now);
                        match held {
                            Some(i) => { assert!(failed.is_empty()); model[i].visible_at = now + ms as i64; }
                            None => assert_eq!(failed.len(), 1),
                        }
                    }
                    Op::Advance(ms) => { clock.0.fetch_add(ms as i64, Ordering::SeqCst); }
                }
                let now = clock.now_ms();
                let st = q.stats().await.unwrap();
                let live: Vec<&M> = model.iter().filter(|m| !m.dead).collect();
                assert_eq!(st.visible, live.iter().filter(|m| m.visible_at <= now).count() as u64, "visible");
                assert_eq!(st.in_flight, live.iter().filter(|m| m.visible_at > now).count() as u64, "in flight");
                let ds = dlq.stats().await.unwrap();
                assert_eq!(ds.visible + ds.in_flight, model.iter().filter(|m| m.dead).count() as u64, "dead letters");
                // A large body's file lives exactly as long as its message, dead letters too.
                let files = std::fs::read_dir(qs.bodies_dir()).map(|d| d.count()).unwrap_or(0);
                assert_eq!(files, model.iter().filter(|m| m.body.len() >= FILE_BODY_BYTES).count(), "body files");
            }
        });
    }
}

/// Found by the model (a receive of 2 after a send of 1, with a visibility timeout of 0, gave
/// the message twice): one receive returns a message at most once.
#[tokio::test]
async fn a_receive_returns_a_message_once_even_with_no_visibility_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock(AtomicI64::new(1_000_000)));
    let qs = EmbeddedQueues::open_with_clock(dir.path().join("q.db"), clock).unwrap();
    qs.create_queue("q", &QueueSettings::default())
        .await
        .unwrap();
    let q = qs.queue("q").await.unwrap();
    q.send_batch(vec!["m1".to_string()]).await.unwrap();
    let got = q
        .receive(ReceiveOptions {
            max_messages: 2,
            wait: Duration::ZERO,
            visibility_timeout: Some(Duration::ZERO),
        })
        .await
        .unwrap();
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m1"]);
}
