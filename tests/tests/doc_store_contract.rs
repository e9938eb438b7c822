//! The document store contract (`server/src/docs/store.rs`), one suite run against both
//! backends: the embedded redb file and a real `redis-server` started by the harness.
//!
//! The server-level behaviour (stored before broadcast, rebuilt after kill -9) is in
//! `documents.rs`; this suite pins the store's own promises: conditional, atomic appends;
//! snapshots that drop what they cover and never go backwards; loads that return the latest
//! snapshot plus exactly the updates after it.

use std::sync::Arc;

use yuntiao_server::docs::store::embedded::EmbeddedDocStore;
use yuntiao_server::docs::store::redis::RedisDocStore;
use yuntiao_server::docs::store::{DocStore, StoredDoc};
use yuntiao_server::store::StoreError;
use yuntiao_tests::RedisServer;

const CASE: &str = "c_doc_contract";

fn updates(range: std::ops::RangeInclusive<u8>) -> Vec<Vec<u8>> {
    range.map(|i| vec![i; 3 + i as usize]).collect()
}

fn numbered(first: u64, items: &[Vec<u8>]) -> Vec<(u64, Vec<u8>)> {
    items
        .iter()
        .enumerate()
        .map(|(i, u)| (first + i as u64, u.clone()))
        .collect()
}

/// Runs every check against one backend.
async fn contract(store: Arc<dyn DocStore>) {
    // An unknown document is empty.
    let empty = store.load(CASE, "agreement").await.unwrap();
    assert_eq!(empty, StoredDoc::default());
    assert_eq!(empty.head(), 0);
    assert!(store.list(CASE).await.unwrap().is_empty());

    // Appends are conditional on the head and atomic.
    let first = updates(1..=3);
    store.append(CASE, "agreement", 1, &first).await.unwrap();
    match store.append(CASE, "agreement", 2, &updates(9..=9)).await {
        Err(StoreError::Conflict { expected, found }) => assert_eq!((expected, found), (1, 3)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.append(CASE, "agreement", 9, &updates(9..=9)).await {
        Err(StoreError::Conflict { found, .. }) => assert_eq!(found, 3),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        store.append(CASE, "agreement", 4, &[]).await,
        Err(StoreError::InvalidBatch(_))
    ));
    assert!(matches!(
        store.append(CASE, "agreement", 0, &updates(1..=1)).await,
        Err(StoreError::InvalidBatch(_))
    ));
    let second = updates(4..=6);
    store.append(CASE, "agreement", 4, &second).await.unwrap();
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    let loaded = store.load(CASE, "agreement").await.unwrap();
    assert_eq!(loaded.snapshot, None);
    assert_eq!(loaded.updates, numbered(1, &all));
    assert_eq!(loaded.head(), 6);

    // Documents are separate, and so are cases.
    store
        .append(CASE, "caucus-k7", 1, &updates(50..=50))
        .await
        .unwrap();
    assert_eq!(store.load(CASE, "caucus-k7").await.unwrap().head(), 1);
    assert_eq!(
        store.load("c_other_case", "agreement").await.unwrap(),
        StoredDoc::default()
    );
    assert_eq!(
        store.list(CASE).await.unwrap(),
        vec!["agreement".to_owned(), "caucus-k7".to_owned()]
    );

    // A snapshot drops what it covers; the load is snapshot + the rest.
    store
        .snapshot(CASE, "agreement", 4, b"state-up-to-4")
        .await
        .unwrap();
    let loaded = store.load(CASE, "agreement").await.unwrap();
    assert_eq!(loaded.snapshot, Some((4, b"state-up-to-4".to_vec())));
    assert_eq!(loaded.updates, numbered(5, &all[4..]));
    assert_eq!(loaded.head(), 6);
    // The head survives compaction: appends go on from 7, not from the snapshot.
    assert!(matches!(
        store.append(CASE, "agreement", 5, &updates(9..=9)).await,
        Err(StoreError::Conflict { found: 6, .. })
    ));
    store
        .append(CASE, "agreement", 7, &updates(7..=7))
        .await
        .unwrap();
    // An older snapshot is ignored; one beyond the head is refused.
    store
        .snapshot(CASE, "agreement", 2, b"older")
        .await
        .unwrap();
    assert!(matches!(
        store.snapshot(CASE, "agreement", 99, b"future").await,
        Err(StoreError::InvalidBatch(_))
    ));
    let loaded = store.load(CASE, "agreement").await.unwrap();
    assert_eq!(loaded.snapshot, Some((4, b"state-up-to-4".to_vec())));
    assert_eq!(loaded.updates.len(), 3);
    assert_eq!(loaded.head(), 7);
    // A snapshot of everything leaves no updates behind.
    store
        .snapshot(CASE, "agreement", 7, b"everything")
        .await
        .unwrap();
    let loaded = store.load(CASE, "agreement").await.unwrap();
    assert_eq!(loaded.snapshot, Some((7, b"everything".to_vec())));
    assert!(loaded.updates.is_empty());
    assert_eq!(loaded.head(), 7);
    store
        .append(CASE, "agreement", 8, &updates(8..=8))
        .await
        .unwrap();
    assert_eq!(store.load(CASE, "agreement").await.unwrap().head(), 8);
}

/// Two writers racing on one document: exactly one append of each seq wins.
async fn racing_writers(store: Arc<dyn DocStore>) {
    let mut tasks = Vec::new();
    for w in 0..8u8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store.append(CASE, "race", 1, &[vec![w]]).await.is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(store.load(CASE, "race").await.unwrap().updates.len(), 1);
}

#[tokio::test]
async fn embedded_doc_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn DocStore> = Arc::new(EmbeddedDocStore::open(dir.path()).unwrap());
    contract(Arc::clone(&store)).await;
    racing_writers(Arc::clone(&store)).await;
    // Everything is still there after reopening the file.
    drop(store);
    let store = EmbeddedDocStore::open(dir.path()).unwrap();
    assert_eq!(store.load(CASE, "agreement").await.unwrap().head(), 8);
}

#[tokio::test]
async fn redis_doc_store_keeps_the_contract() {
    let redis = RedisServer::start().unwrap();
    let store: Arc<dyn DocStore> =
        Arc::new(RedisDocStore::connect(&redis.url, "yt:").await.unwrap());
    contract(Arc::clone(&store)).await;
    racing_writers(Arc::clone(&store)).await;
    // Keys are hash-tagged by case under the prefix.
    let mut con = redis.client().unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        assert!(k.starts_with("yt:{"), "{k}");
    }
}

/// Killed before the update log's checkpoint: what was acknowledged is replayed from the
/// write-ahead log, and the updates a snapshot covered while they were still only in the log do
/// not come back.
#[tokio::test]
async fn embedded_doc_store_replays_its_log_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedDocStore::open(dir.path()).unwrap();
    store
        .append(CASE, "agreement", 1, &updates(1..=5))
        .await
        .unwrap();
    store
        .snapshot(CASE, "agreement", 3, b"state-3")
        .await
        .unwrap();
    store
        .append(CASE, "agreement", 6, &updates(6..=7))
        .await
        .unwrap();
    store
        .append(CASE, "caucus-a", 1, &updates(1..=2))
        .await
        .unwrap();
    store.close_without_checkpoint();

    let store = EmbeddedDocStore::open(dir.path()).unwrap();
    let doc = store.load(CASE, "agreement").await.unwrap();
    assert_eq!(doc.snapshot, Some((3, b"state-3".to_vec())));
    let all = updates(1..=7);
    assert_eq!(doc.updates, numbered(4, &all[3..]));
    assert_eq!(
        store.load(CASE, "caucus-a").await.unwrap().updates,
        numbered(1, &updates(1..=2))
    );
    // Appends continue after the head, and only there.
    assert!(matches!(
        store.append(CASE, "agreement", 7, &updates(9..=9)).await,
        Err(StoreError::Conflict { found: 7, .. })
    ));
    store
        .append(CASE, "agreement", 8, &updates(8..=8))
        .await
        .unwrap();
    assert_eq!(
        store.list(CASE).await.unwrap(),
        vec!["agreement".to_owned(), "caucus-a".to_owned()]
    );
}
