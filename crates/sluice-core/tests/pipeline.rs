//! End-to-end on the embedded default: produce, consume, and count what the ledger committed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array};
use sluice_core::delta::log::{FileKind, Ledger};
use sluice_core::home::{EmbeddedBackends, Home};
use sluice_core::pipeline::consumer::{Consumer, ConsumerOptions, ConsumerStats};
use sluice_core::pipeline::producer::{Producer, ProducerOptions};
use sluice_core::pipeline::setup::TableSettings;
use sluice_core::queue::Queue;
use sluice_core::schema::partition::PartitionSpec;

async fn produce(
    b: &EmbeddedBackends,
    table: &str,
    spec: &str,
    files: &[&Path],
) -> sluice_core::Result<sluice_core::pipeline::producer::ProduceStats> {
    let opts = ProducerOptions::new(TableSettings::new(
        table,
        PartitionSpec::parse(spec).unwrap(),
        b.table_location(table),
    ));
    Producer::new(b.queue.clone(), b.catalog.clone(), opts)?
        .produce(files, None)
        .await
}

async fn consume(
    home: &Home,
    b: &EmbeddedBackends,
    table: &str,
    tweak: impl FnOnce(&mut ConsumerOptions),
) -> ConsumerStats {
    let spool = home.claim_spool(&sluice_core::writer_id()).unwrap();
    let mut o = ConsumerOptions::new(table, spool.path().to_path_buf());
    o.once = true;
    o.visibility_timeout = Some(Duration::from_secs(30));
    tweak(&mut o);
    let c = Consumer::new(o, b.queue.clone(), b.catalog.clone(), b.lake.clone())
        .await
        .unwrap();
    c.run(std::future::pending()).await.unwrap()
}

/// A home under `dir` whose queue `t` takes messages of 16 KiB: many chunks from little data.
async fn small_messages(dir: &Path) -> (Home, EmbeddedBackends) {
    let home = Home::new(dir.join("home"));
    let settings = sluice_core::queue::QueueSettings {
        max_message_bytes: 16 * 1024,
        ..Default::default()
    };
    let b = home.open_with("t", None, &settings).await.unwrap();
    (home, b)
}

/// (rows, sum of `col`) over the committed data files, read with the parquet crate.
async fn committed(b: &EmbeddedBackends, table: &str, col: &str) -> (u64, i64, usize) {
    let ledger = Ledger::open(&b.lake, table, "test").await.unwrap();
    let (mut rows, mut sum, mut files) = (0u64, 0i64, 0usize);
    let root = b.lake.url.to_file_path().unwrap();
    for f in ledger
        .state()
        .files
        .values()
        .filter(|f| f.kind == FileKind::Data)
    {
        files += 1;
        let file = std::fs::File::open(root.join(&f.path)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            rows += batch.num_rows() as u64;
            let a = batch
                .column_by_name(col)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            sum += (0..a.len())
                .filter(|i| a.is_valid(*i))
                .map(|i| a.value(i))
                .sum::<i64>();
        }
    }
    (rows, sum, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_exactly_once_with_reproduce() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let b = home.open("events").await.unwrap();
    let (csv, want_sum) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "events.csv", 20_000, 1);
    let p = produce(&b, "events", "year(day)", &[&csv]).await.unwrap();
    assert_eq!(p.rows, 20_000);
    let c = consume(&home, &b, "events", |_| {}).await;
    assert_eq!(c.write.rows_written, 20_000);
    assert_eq!(c.write.rows_quarantined, 0);
    let (rows, sum, files) = committed(&b, "events", "amount_cents").await;
    assert_eq!((rows, sum), (20_000, want_sum));
    assert_eq!(files, 6, "one file per year 2019..=2024");
    // The queue is empty: everything was deleted after its commit.
    let s = b.queue.stats().await.unwrap();
    assert_eq!((s.visible, s.in_flight), (0, 0));
    // Producing the same file again sends the same chunk ids: nothing is added.
    produce(&b, "events", "year(day)", &[&csv]).await.unwrap();
    let c2 = consume(&home, &b, "events", |_| {}).await;
    assert_eq!(c2.write.rows_written, 0);
    assert_eq!(c2.write.rows_duplicate, 20_000);
    assert_eq!(committed(&b, "events", "amount_cents").await.0, 20_000);
    // The log knows the partitions, with their totals.
    let parts = Ledger::open(&b.lake, "events", "test")
        .await
        .unwrap()
        .state()
        .partitions();
    assert_eq!(parts.len(), 6);
    let total: u64 = parts.iter().map(|p| p.rows).sum();
    assert_eq!(total, 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_chunk_and_small_rotation_never_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    // Small messages: many chunks, each spanning every year.
    let settings = sluice_core::queue::QueueSettings {
        max_message_bytes: 16 * 1024,
        ..Default::default()
    };
    let b = home.open_with("events", None, &settings).await.unwrap();
    let (csv, want_sum) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "events.csv", 5_000, 1);
    let p = produce(&b, "events", "year(day)", &[&csv]).await.unwrap();
    assert!(p.chunks >= 5, "{p:?}");
    // Deliver three messages twice, as a standard SQS queue may.
    let got = b
        .queue
        .receive(sluice_core::queue::ReceiveOptions {
            wait: Duration::ZERO,
            max_messages: 3,
            visibility_timeout: Some(Duration::from_secs(60)),
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    let bodies: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
    for body in &bodies {
        b.queue.send_batch(vec![body.clone()]).await.unwrap();
    }
    let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
    use sluice_core::queue::QueueExt;
    assert!(
        b.queue
            .change_visibility_all(&receipts, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    // Rotate every 200 rows: many commits, each message spanning several.
    let c = consume(&home, &b, "events", |o| o.write.rotate_rows = 200).await;
    assert!(c.write.commits >= 3, "{c:?}");
    assert!(c.write.rows_duplicate > 0, "{c:?}");
    assert_eq!(c.messages, p.chunks + 3, "{c:?}");
    let (rows, sum, _) = committed(&b, "events", "amount_cents").await;
    assert_eq!((rows, sum), (5_000, want_sum));
    let s = b.queue.stats().await.unwrap();
    assert_eq!((s.visible, s.in_flight), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_quarantined_and_bad_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let b = home.open("t").await.unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(
        &good,
        "id,d,x\n1,2020-01-01,1.5\n2,2021-06-30,2\n3,,3\n4,garbage,4\n",
    )
    .unwrap();
    produce(&b, "t", "year(d)", &[&good]).await.unwrap();
    let bad = dir.path().join("bad.csv");
    let content = b"id,d,x\n5,2020-02-02,5\n6,2020-02-02,not-a-number\n7,2020-02-02,7,extra\n8,2020-02-02,\xff\xfe\n9,2022-01-01,9\n".to_vec();
    std::fs::write(&bad, &content).unwrap();
    produce(&b, "t", "year(d)", &[&bad]).await.unwrap();
    // A file whose last record never ends fails as a whole: nothing of it is sent, not even
    // the good records before the quote.
    let cut = dir.path().join("cut.csv");
    std::fs::write(
        &cut,
        "id,d,x\n20,2022-01-01,20\n21,2022-01-01,\"unterminated\n22,2022-01-01,22\n",
    )
    .unwrap();
    let err = produce(&b, "t", "year(d)", &[&cut]).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cut.csv:3: unterminated quoted field"),
        "{msg}"
    );
    let c = consume(&home, &b, "t", |_| {}).await;
    // Rows 1-5 and 9 are taken (3 and 4 in the default partition); 6, 7, 8 quarantined.
    assert_eq!(c.write.rows_written, 6, "{c:?}");
    assert_eq!(c.write.rows_quarantined, 3, "{c:?}");
    let ledger = Ledger::open(&b.lake, "t", "test").await.unwrap();
    let parts: std::collections::BTreeSet<_> = ledger
        .state()
        .files
        .values()
        .map(|f| f.partition.clone())
        .collect();
    assert!(
        parts.contains("year=__HIVE_DEFAULT_PARTITION__"),
        "{parts:?}"
    );
    let quarantine = Ledger::open_quarantine(&b.lake, "t", "test").await.unwrap();
    assert!(
        quarantine
            .state()
            .files
            .values()
            .any(|f| f.kind == FileKind::Quarantine && f.rows == 3)
    );
    // A header without the partition column is refused before anything is sent.
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "id,when,x\n1,2020-01-01,1\n").unwrap();
    let err = produce(&b, "t", "year(d)", &[&other]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("other.csv:1: the header lacks d, which table t is partitioned by"),
        "{err}"
    );
    // A missing file is named.
    let err = produce(&b, "t", "year(d)", &[&dir.path().join("nope.csv")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope.csv"), "{err}");
    let s = b.queue.stats().await.unwrap();
    assert_eq!(s.visible, 0);
}

/// The embedded queue takes chunks as text. What text cannot carry goes as before: a chunk
/// that is not UTF-8, and a record larger than a message, compressed (and rejected with its
/// line if even that does not fit). Every row arrives once either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_chunks_fall_back_to_compression_where_text_cannot_go() {
    let dir = tempfile::tempdir().unwrap();
    let (home, b) = small_messages(dir.path()).await;
    let mut csv = b"id,d,s\n".to_vec();
    let mut seed = 7u64;
    for i in 1..=3000u64 {
        let s: Vec<u8> = match i {
            2001 => b"caf\xe9".to_vec(),
            // Larger than a message, but compresses to a fraction of it.
            2002 => vec![b'x'; 40_000],
            // Larger than a message even compressed.
            2003 => (0..40_000)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                        [(seed >> 33) as usize % 62]
                })
                .collect(),
            _ => format!("text ✓ {i}").into_bytes(),
        };
        csv.extend_from_slice(format!("{i},2020-01-01,").as_bytes());
        csv.extend_from_slice(&s);
        csv.push(b'\n');
    }
    let file = dir.path().join("mixed.csv");
    std::fs::write(&file, &csv).unwrap();
    let p = produce(&b, "t", "year(d)", &[&file]).await.unwrap();
    assert_eq!((p.rows, p.rejected_rows), (3000, 1), "{p:?}");

    let mut received = Vec::new();
    loop {
        let got = b
            .queue
            .receive(sluice_core::queue::ReceiveOptions {
                wait: Duration::ZERO,
                visibility_timeout: Some(Duration::from_secs(60)),
                ..Default::default()
            })
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        received.extend(got);
    }
    use sluice_core::chunk::Codec;
    let mut rows_by_codec = std::collections::BTreeMap::<String, u64>::new();
    let mut rejects = Vec::new();
    for m in &received {
        assert!(
            m.body.len() <= 16 * 1024,
            "a message of {} bytes",
            m.body.len()
        );
        let (h, raw) = sluice_core::chunk::decode(&m.body).unwrap();
        *rows_by_codec.entry(format!("{:?}", h.codec)).or_default() += h.rows;
        if h.codec == Codec::Zstd && h.rows == 1 {
            assert_eq!(
                (h.first_line, raw.len()),
                (2003, 40_000 + 15),
                "the large record"
            );
        }
        rejects.extend(h.rejects.iter().map(|r| r.line));
    }
    assert_eq!(
        rejects,
        [2004],
        "the record too large even compressed, by line"
    );
    // Text for all but the chunk holding the Latin-1 record and the large record.
    let text = rows_by_codec.get("Text").copied().unwrap_or(0);
    let zstd = rows_by_codec.get("Zstd").copied().unwrap_or(0);
    assert_eq!(text + zstd, 2999, "{rows_by_codec:?}");
    assert!(zstd >= 2 && text > 2500, "{rows_by_codec:?}");

    use sluice_core::queue::QueueExt;
    let receipts: Vec<String> = received.iter().map(|m| m.receipt.clone()).collect();
    b.queue
        .change_visibility_all(&receipts, Duration::ZERO)
        .await
        .unwrap();
    let c = consume(&home, &b, "t", |_| {}).await;
    // Quarantined: the rejected record (from its chunk's header) and the Latin-1 one.
    assert_eq!(
        (c.write.rows_written, c.write.rows_quarantined),
        (2998, 2),
        "{c:?}"
    );
    let (rows, sum, _) = committed(&b, "t", "id").await;
    assert_eq!((rows, sum), (2998, (1..=3000).sum::<i64>() - 2001 - 2003));
}

/// With `max_backlog` (as `run` sets it), the producer waits while the queue holds that many
/// visible messages, and goes on as they are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_backlog_holds_the_producer_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_home, b) = small_messages(dir.path()).await;
    let file = dir.path().join("many.csv");
    let mut csv = String::from("id,d\n");
    for i in 0..20_000 {
        csv.push_str(&format!("{i},2020-01-01\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let mut opts = ProducerOptions::new(TableSettings::new(
        "t",
        PartitionSpec::parse("year(d)").unwrap(),
        b.table_location("t"),
    ));
    opts.max_backlog = Some(3);
    let producer = Producer::new(b.queue.clone(), b.catalog.clone(), opts).unwrap();
    let task = tokio::spawn(async move { producer.produce(&[file], None).await });
    let mut most = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        most = most.max(b.queue.stats().await.unwrap().visible);
    }
    assert!(
        !task.is_finished(),
        "the producer went on with nobody taking messages"
    );
    // Three, and the sends already in flight when it checked (four of one message each).
    assert!((3..=7).contains(&most), "{most} messages waited");
    let mut taken = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !task.is_finished() || b.queue.stats().await.unwrap().visible > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the producer never finished"
        );
        let got = b
            .queue
            .receive(sluice_core::queue::ReceiveOptions {
                wait: Duration::from_millis(50),
                max_messages: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        taken += got.len() as u64;
        let receipts: Vec<String> = got.into_iter().map(|m| m.receipt).collect();
        if !receipts.is_empty() {
            b.queue.delete_batch(&receipts).await.unwrap();
        }
    }
    let p = task.await.unwrap().unwrap();
    assert_eq!((p.rows, taken), (20_000, p.chunks));
    assert!(p.chunks > 20, "{p:?}");
}

/// A consumer commits every open file once the bodies it holds uncommitted pass
/// `max_uncommitted_bytes`, and deletes their messages: the queue never keeps more than that
/// (and what one message more adds) for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_messages_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (home, b) = small_messages(dir.path()).await;
    let file = dir.path().join("many.csv");
    let mut csv = String::from("id,d\n");
    for i in 0..20_000 {
        csv.push_str(&format!("{i},20{:02}-01-01\n", i % 7 + 20));
    }
    std::fs::write(&file, csv).unwrap();
    let p = produce(&b, "t", "year(d)", &[&file]).await.unwrap();
    let c = consume(&home, &b, "t", |o| o.max_uncommitted_bytes = 64 * 1024).await;
    assert!(
        c.write.commits >= p.message_bytes / (64 * 1024 + 16 * 1024),
        "{c:?} {p:?}"
    );
    assert_eq!(c.deleted, p.chunks);
    let (rows, sum, _) = committed(&b, "t", "id").await;
    assert_eq!((rows, sum), (20_000, (0..20_000).sum::<i64>()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_json_and_csv_messages_are_landed() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let b = home.open("t").await.unwrap();
    let seed = dir.path().join("seed.csv");
    std::fs::write(&seed, "id,d,x\n1,2020-01-01,1.5\n").unwrap();
    produce(&b, "t", "year(d)", &[&seed]).await.unwrap();
    let q: Arc<dyn Queue> = b.queue.clone();
    q.send_batch(vec![
        r#"{"id": 2, "d": "2021-05-05", "x": 2.5}"#.to_string(),
        "{\"id\": 3, \"d\": \"2022-05-05\"}\n{\"id\": 4, \"d\": \"2022-06-06\", \"x\": null}\n[1,2]".to_string(),
        "5,2023-01-01,5\n6,2023-01-02,6\n".to_string(),
    ])
    .await
    .unwrap();
    let c = consume(&home, &b, "t", |_| {}).await;
    assert_eq!(c.write.rows_written, 6, "{c:?}");
    assert_eq!(c.write.rows_quarantined, 1, "{c:?}");
    assert_eq!(committed(&b, "t", "id").await.1, 1 + 2 + 3 + 4 + 5 + 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let settings = sluice_core::queue::QueueSettings {
        max_receive_count: 2,
        visibility_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let b = home.open_with("t", None, &settings).await.unwrap();
    let seed = dir.path().join("seed.csv");
    std::fs::write(&seed, "id,d\n1,2020-01-01\n").unwrap();
    produce(&b, "t", "year(d)", &[&seed]).await.unwrap();
    // A good chunk, re-addressed to another table, and with columns the table does not have.
    let good = b
        .queue
        .receive(sluice_core::queue::ReceiveOptions {
            wait: Duration::ZERO,
            ..Default::default()
        })
        .await
        .unwrap();
    let (mut header, raw) = sluice_core::chunk::decode(&good[0].body).unwrap();
    // The embedded queue's chunks are text.
    assert_eq!(header.codec, sluice_core::chunk::Codec::Text);
    let text = String::from_utf8(raw).unwrap();
    header.table = "other".into();
    let wrong_table = sluice_core::chunk::encode_text(&header, &text);
    header.table = "t".into();
    header.columns = vec!["id".into(), "when".into()];
    let wrong_columns = sluice_core::chunk::encode_text(&header, &text);
    use sluice_core::queue::QueueExt;
    b.queue
        .change_visibility_all(&[good[0].receipt.clone()], Duration::ZERO)
        .await
        .unwrap();
    let ids = b
        .queue
        .send_batch(vec![
            "sluice.chunk.v1 {not json\nAAAA".to_string(),
            wrong_table,
            wrong_columns,
        ])
        .await
        .unwrap();
    let log = dir.path().join("failures.jsonl");
    // An hour's visibility timeout: a poison message is released at once, not left to time out.
    let c = tokio::time::timeout(
        Duration::from_secs(120),
        consume(&home, &b, "t", |o| {
            o.visibility_timeout = Some(Duration::from_secs(3600));
            o.dead_letter_log = Some(log.clone());
        }),
    )
    .await
    .expect("the poison messages are dead-lettered without waiting out their visibility");
    assert_eq!(c.write.rows_written, 1, "{c:?}");
    assert_eq!(
        c.undecodable_messages, 6,
        "3 poison messages, 2 deliveries each: {c:?}"
    );
    let dlq = b.queues.queue("t_dlq").await.unwrap();
    assert_eq!(dlq.stats().await.unwrap().visible, 3);
    let failures = sluice_core::queue::failures::read_failures(&log);
    assert!(
        failures[&ids[0]]
            .reason
            .contains("chunk header is not valid"),
        "{failures:?}"
    );
    assert!(
        failures[&ids[1]].reason.contains("is for table \"other\""),
        "{failures:?}"
    );
    assert!(
        failures[&ids[2]]
            .reason
            .contains("the header lacks d, which table t is partitioned by"),
        "{failures:?}"
    );
    assert_eq!(failures[&ids[2]].receive_count, 2);
    // Once fixed, redrive moves them back.
    assert_eq!(b.queues.redrive("t_dlq", "t").await.unwrap(), 3);
    assert_eq!(b.queue.stats().await.unwrap().visible, 3);
}

/// Puts a fault-injecting store under the backends' lake.
fn faulty_lake(b: &mut EmbeddedBackends) -> Arc<sluice_testkit::faults::FaultyStore> {
    let faulty = Arc::new(sluice_testkit::faults::FaultyStore::new(
        b.lake.store.clone(),
    ));
    b.lake =
        sluice_core::lake::Lake::from_url_with_store(b.lake.url.clone(), faulty.clone()).unwrap();
    faulty
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_faults_are_retried_or_stop_cleanly() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let mut b = home.open("events").await.unwrap();
    let faulty = faulty_lake(&mut b);
    let (csv1, sum1) = sluice_testkit::fixtures::write_events_csv(dir.path(), "a.csv", 3_000, 1);
    produce(&b, "events", "year(day)", &[&csv1]).await.unwrap();
    // Transient failures (throttling, 5xx) are retried with back-off.
    faulty.fail_next.store(3, Ordering::SeqCst);
    let c = consume(&home, &b, "events", |o| {
        o.write.retry_base = Duration::from_millis(1)
    })
    .await;
    assert_eq!(c.write.rows_written, 3_000);
    assert_eq!(faulty.failed.load(Ordering::SeqCst), 3);
    assert_eq!(committed(&b, "events", "amount_cents").await.1, sum1);
    // A persistent failure (outage, disk full) stops the consumer with a clear error, and
    // nothing uncommitted is deleted from the queue.
    let (csv2, sum2) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "b.csv", 3_000, 10_001);
    let p = produce(&b, "events", "year(day)", &[&csv2]).await.unwrap();
    faulty.fail_all.store(true, Ordering::SeqCst);
    let spool = home.claim_spool(&sluice_core::writer_id()).unwrap();
    let mut o = ConsumerOptions::new("events", spool.path().to_path_buf());
    o.once = true;
    o.write.retry_base = Duration::from_millis(1);
    let err = Consumer::new(o, b.queue.clone(), b.catalog.clone(), b.lake.clone())
        .await
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        // The upload's lease is written before the upload, and fails first.
        msg.contains("upload lease failed after 7 attempts") && msg.contains("injected failure"),
        "{msg}"
    );
    let s = b.queue.stats().await.unwrap();
    assert_eq!(s.visible, p.chunks, "released for redelivery, not deleted");
    assert_eq!(committed(&b, "events", "amount_cents").await.0, 3_000);
    drop(spool);
    // Once the store is back, everything lands exactly once.
    faulty.fail_all.store(false, Ordering::SeqCst);
    consume(&home, &b, "events", |_| {}).await;
    let (rows, sum, _) = committed(&b, "events", "amount_cents").await;
    assert_eq!((rows, sum), (6_000, sum1 + sum2));
}

/// A commit that lands but whose reply is lost: the consumer retries it with the same commit id,
/// finds its own version, and neither commits again nor removes its files; the messages are
/// deleted once, every row is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_reply_is_recognised_as_our_commit() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let mut b = home.open("events").await.unwrap();
    let faulty = faulty_lake(&mut b);
    let (csv, sum) = sluice_testkit::fixtures::write_events_csv(dir.path(), "a.csv", 3_000, 1);
    produce(&b, "events", "year(day)", &[&csv]).await.unwrap();
    // Create the table's logs first, so that the lost replies hit data commits.
    consume(&home, &b, "events", |o| o.write.rotate_rows = u64::MAX).await;
    faulty.lose_log_replies.store(1, Ordering::SeqCst);
    let (csv2, sum2) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "b.csv", 3_000, 10_001);
    produce(&b, "events", "year(day)", &[&csv2]).await.unwrap();
    let c = consume(&home, &b, "events", |o| {
        o.write.retry_base = Duration::from_millis(1)
    })
    .await;
    assert_eq!(
        faulty.lose_log_replies.load(Ordering::SeqCst),
        0,
        "the reply was lost"
    );
    assert_eq!(c.write.rows_written, 3_000, "{c:?}");
    assert_eq!(
        c.write.conflicts, 0,
        "a lost reply is not a conflict: {c:?}"
    );
    let (rows, s, files) = committed(&b, "events", "amount_cents").await;
    assert_eq!((rows, s), (6_000, sum + sum2));
    // Every committed file is on disk: none was removed as if its commit had failed.
    let on_disk = walk_parquet(&b.lake.url.to_file_path().unwrap().join("events"));
    assert_eq!(on_disk, files);
    let q = b.queue.stats().await.unwrap();
    assert_eq!((q.visible, q.in_flight), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_faults_are_retried() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let mut b = home.open("events").await.unwrap();
    let (csv, sum) = sluice_testkit::fixtures::write_events_csv(dir.path(), "a.csv", 3_000, 1);
    produce(&b, "events", "year(day)", &[&csv]).await.unwrap();
    let faulty = Arc::new(sluice_testkit::faults::FaultyQueue::new(b.queue.clone()));
    faulty.fail_receives.store(3, Ordering::SeqCst);
    faulty.fail_deletes.store(2, Ordering::SeqCst);
    b.queue = faulty.clone();
    let c = consume(&home, &b, "events", |o| {
        o.write.retry_base = Duration::from_millis(1)
    })
    .await;
    assert_eq!(faulty.failed.load(Ordering::SeqCst), 5);
    assert_eq!(c.write.rows_written, 3_000);
    assert_eq!(committed(&b, "events", "amount_cents").await.1, sum);
    let s = b.queue.stats().await.unwrap();
    assert_eq!(
        (s.visible, s.in_flight),
        (0, 0),
        "deleted after the retried delete"
    );
}

/// A consumer whose heartbeats are lost keeps writing after its messages' visibility expired;
/// another consumer takes and commits them first. The late commit conflicts, is discarded, and
/// no row is duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_expiry_while_writing_never_duplicates() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let settings = sluice_core::queue::QueueSettings {
        visibility_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let b = home.open_with("events", None, &settings).await.unwrap();
    let (csv, sum) = sluice_testkit::fixtures::write_events_csv(dir.path(), "a.csv", 3_000, 1);
    produce(&b, "events", "year(day)", &[&csv]).await.unwrap();
    // Consumer A: heartbeats lost, files open until it is told to stop.
    let faulty = Arc::new(sluice_testkit::faults::FaultyQueue::new(b.queue.clone()));
    faulty.lose_heartbeats.store(true, Ordering::SeqCst);
    let spool_a = home.claim_spool("consumer-a").unwrap();
    let mut oa = ConsumerOptions::new("events", spool_a.path().to_path_buf());
    oa.visibility_timeout = Some(Duration::from_secs(1));
    let a = Consumer::new(oa, faulty.clone(), b.catalog.clone(), b.lake.clone())
        .await
        .unwrap();
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let task_a = tokio::spawn(a.run(async {
        let _ = stopped_a.await;
    }));
    // Wait (bounded) until A holds the message, then past its visibility timeout.
    let mut held = false;
    for _ in 0..100 {
        if b.queue.stats().await.unwrap().in_flight == 1 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Consumer B takes the same message and commits it.
    let c = consume(&home, &b, "events", |o| {
        o.visibility_timeout = Some(Duration::from_secs(5))
    })
    .await;
    assert_eq!(c.write.rows_written, 3_000);
    // A commits late: conflict, discarded.
    stop_a.send(()).unwrap();
    let sa = task_a.await.unwrap().unwrap();
    assert_eq!(sa.write.conflicts, 1, "{sa:?}");
    assert_eq!(sa.write.commits, 0, "{sa:?}");
    let (rows, s, _) = committed(&b, "events", "amount_cents").await;
    assert_eq!((rows, s), (3_000, sum));
    // A removed the files it uploaded for the failed commit: only B's are in the table.
    let ledger = Ledger::open(&b.lake, "events", "test").await.unwrap();
    let on_disk = walk_parquet(&b.lake.url.to_file_path().unwrap().join("events"));
    assert_eq!(
        on_disk,
        ledger
            .state()
            .files
            .values()
            .filter(|f| f.kind == FileKind::Data)
            .count()
    );
}

fn walk_parquet(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += walk_parquet(&p);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_consumer_backs_off_on_an_idle_queue() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let b = home.open("events").await.unwrap();
    let (csv, _) = sluice_testkit::fixtures::write_events_csv(dir.path(), "e.csv", 100, 1);
    produce(&b, "events", "year(day)", &[&csv]).await.unwrap();
    assert_eq!(
        consume(&home, &b, "events", |_| {})
            .await
            .write
            .rows_written,
        100
    );
    // The queue is empty now; a following consumer polls it with 100 ms waits for 4 s.
    let meter = sluice_core::metrics::Meter::new();
    let q: Arc<dyn Queue> = Arc::new(sluice_core::queue::MeteredQueue::new(
        b.queue.clone(),
        meter.clone(),
    ));
    let spool = home.claim_spool(&sluice_core::writer_id()).unwrap();
    let mut o = ConsumerOptions::new("events", spool.path().to_path_buf());
    o.once = false;
    o.wait = Duration::from_millis(100);
    o.visibility_timeout = Some(Duration::from_secs(30));
    let c = Consumer::new(o, q, b.catalog.clone(), b.lake.clone())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let stats = c
        .run(tokio::time::sleep(Duration::from_secs(4)))
        .await
        .unwrap();
    let s = meter.snapshot();
    // Without back-off: about 40 empty polls. With it: 3 at once, then pauses of 2 s and 4 s.
    assert_eq!(stats.messages, 0);
    assert!(
        (3..=8).contains(&s.queue_receive_calls),
        "{} receives in {:?}",
        s.queue_receive_calls,
        started.elapsed()
    );
    assert_eq!(s.queue_empty_receives, s.queue_receive_calls);
    // Shutting down does not wait for the pause to end.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

/// Where a stop finds the consumer.
#[derive(Debug, Clone, Copy)]
enum Step {
    Receive,
    Upload,
    Commit,
}

/// A stop asked for while the consumer is in each step (held there by a slow queue or store)
/// ends cleanly: what it holds is committed or given back, never lost or doubled. A stop cut
/// short while a commit hangs gives the held messages back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_in_any_step_commits_or_gives_back_and_loses_nothing() {
    use sluice_testkit::faults::FaultyQueue;
    use std::sync::atomic::Ordering;
    for (step, cut_short) in [
        (Step::Receive, false),
        (Step::Upload, false),
        (Step::Commit, false),
        (Step::Commit, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (home, mut b) = small_messages(dir.path()).await;
        let (csv, want_sum) =
            sluice_testkit::fixtures::write_events_csv(dir.path(), "e.csv", 3_000, 1);
        produce(&b, "t", "year(day)", &[&csv]).await.unwrap();
        let store = faulty_lake(&mut b);
        let queue = Arc::new(FaultyQueue::new(b.queue.clone()));
        let delay = if cut_short { 20_000 } else { 1_500 };
        let (started, counter) = match step {
            Step::Receive => (&queue.receive_delay_ms, &queue.receives_started),
            Step::Upload => (&store.data_write_delay_ms, &store.data_writes_started),
            Step::Commit => (&store.log_write_delay_ms, &store.log_writes_started),
        };
        let spool = home.claim_spool(&sluice_core::writer_id()).unwrap();
        let mut o = ConsumerOptions::new("t", spool.path().to_path_buf());
        o.visibility_timeout = Some(Duration::from_secs(60));
        o.write.rotate_rows = 500;
        o.rotate_age = Duration::from_millis(200);
        let health = Arc::new(sluice_core::pipeline::health::Health::default());
        o.health = Some(health.clone());
        let consumer = Consumer::new(o, queue.clone(), b.catalog.clone(), b.lake.clone())
            .await
            .unwrap();
        // Slow from now on (opening the logs above was not).
        let before = counter.load(Ordering::SeqCst);
        started.store(delay, Ordering::SeqCst);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (cut_tx, cut_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(consumer.run_until(
            async {
                let _ = stop_rx.await;
            },
            async {
                if cut_rx.await.is_err() {
                    std::future::pending::<()>().await
                }
            },
        ));
        // Into the step, then the stop.
        let t0 = std::time::Instant::now();
        while counter.load(Ordering::SeqCst) == before {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{step:?} never reached"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Step::Receive = step {
            // Its first receive has not answered: not ready.
            let why = health.ready().unwrap_err();
            assert!(why.contains("the queue has not answered yet"), "{why}");
        }
        stop_tx.send(()).unwrap();
        if let Step::Receive = step {
            // Waiting for the queue, it takes the stop at once: not ready from then on.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(health.ready(), Err("stopping".to_string()));
        }
        if cut_short {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cut_tx.send(()).unwrap();
        } else {
            drop(cut_tx);
        }
        let stats = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap_or_else(|_| panic!("{step:?}: the stop did not end the consumer"))
            .unwrap()
            .unwrap();
        if cut_short {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "a cut-short stop waited for the hanging commit"
            );
            assert!(stats.released_unfinished > 0, "{stats:?}");
        } else {
            assert_eq!(stats.released_unfinished, 0, "{step:?}: {stats:?}");
        }
        // No more delays: a draining consumer lands the rest, each row once.
        started.store(0, Ordering::SeqCst);
        drop(spool);
        consume(&home, &b, "t", |_| {}).await;
        let (rows, sum, _) = committed(&b, "t", "amount_cents").await;
        assert_eq!(
            (rows, sum),
            (3_000, want_sum),
            "{step:?}, cut short: {cut_short}"
        );
    }
}
