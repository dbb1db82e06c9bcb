//! The embedded catalog runs the shared catalog conformance suite.

use sluice_core::catalog::{Catalog, SqliteCatalog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_catalog_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    sluice_testkit::catalog::run_all("", || {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = dir.path().join(format!("c{i}.db"));
        async move { Box::new(SqliteCatalog::open(path).unwrap()) as Box<dyn Catalog> }
    })
    .await;
}
