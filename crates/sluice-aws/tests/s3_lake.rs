//! The lake on S3 over the wire: conditional creates (the ledger's and the data files'
//! guarantee), multipart uploads, listing under the prefix.

mod common;

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use sluice_aws::s3::{check_lake, probe_lake, s3_lake};

async fn bucket() -> String {
    let name = common::unique("s3test");
    let n = name.clone();
    tokio::task::spawn_blocking(move || sluice_testkit::wire::create_bucket(&n))
        .await
        .unwrap();
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_lake_creates_once_uploads_multipart_and_lists() {
    let aws = common::aws().await;
    let b = bucket().await;
    let lake = s3_lake(&aws, &format!("s3://{b}/raw")).unwrap();
    assert_eq!(lake.url.as_str(), format!("s3://{b}/raw/"));
    check_lake(&lake).await.unwrap();
    probe_lake(&lake).await.unwrap();

    // Create-if-absent: the second writer of the same ledger version loses.
    let p = lake.path("t/_sluice/log/00000000000000000001.json");
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    lake.store
        .put_opts(&p, PutPayload::from_static(b"first"), create.clone())
        .await
        .unwrap();
    let e = lake
        .store
        .put_opts(&p, PutPayload::from_static(b"second"), create)
        .await
        .unwrap_err();
    assert!(
        matches!(e, object_store::Error::AlreadyExists { .. }),
        "{e:?}"
    );
    let got = lake.store.get(&p).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"first");

    // Multipart: three 5 MiB parts and a tail, read back byte for byte.
    let data: Vec<u8> = (0..(16 * 1024 * 1024 + 12_345))
        .map(|i| (i % 251) as u8)
        .collect();
    let big = lake.path("t/year=2024/part-big.parquet");
    let upload = lake.store.put_multipart(&big).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    w.write(&data);
    w.finish().await.unwrap();
    let back = lake.store.get(&big).await.unwrap().bytes().await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back[..] == data[..]);

    let listed: Vec<_> = lake
        .store
        .list(Some(&lake.path("t")))
        .try_collect()
        .await
        .unwrap();
    let mut names: Vec<String> = listed.iter().map(|o| o.location.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "raw/t/_sluice/log/00000000000000000001.json".to_string(),
            "raw/t/year=2024/part-big.parquet".to_string()
        ]
    );

    // A bucket that does not exist is a clear configuration error.
    let missing = s3_lake(&aws, &format!("s3://{}/x", common::unique("nobucket"))).unwrap();
    let e = check_lake(&missing).await.unwrap_err();
    assert!(e.to_string().contains("not usable"), "{e}");
}
