//! The store contract, written once and run against both backends.
//!
//! DESIGN.md, decision 2: "Two stores, one contract ... Both pass one shared test suite." Every
//! check below is a generic async function over a [`Harness`], which opens a `dyn Store` of either
//! kind: the embedded store in a fresh temp dir, or the Redis store against a fresh
//! `redis-server` started by [`RedisServer`] (never the shared one on port 6379). The
//! `contract!` macro instantiates each check once per backend, as `embedded::<check>` and
//! `redis::<check>`. A few backend-specific checks (key layout, outage, reopening rules) follow.
//!
//! The concurrency checks run on a multi-threaded runtime and are what exercise the embedded
//! store's group commit (many requests, some failing, in one transaction) and the Redis store's
//! conditional script (racing writers on one case).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::sync::Barrier;
use yuntiao_server::store::embedded::EmbeddedStore;
use yuntiao_server::store::redis::RedisStore;
use yuntiao_server::store::{Store, StoreError, StoredEvent};
use yuntiao_tests::redis_server::RedisServer;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Where a backend keeps its data between opens.
enum Harness {
    Embedded { dir: TempDir },
    Redis { server: RedisServer, prefix: String },
}

impl Harness {
    fn embedded() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("yuntiao-store-")
            .tempdir()
            .expect("temp dir");
        Harness::Embedded { dir }
    }

    fn redis() -> Self {
        Harness::Redis {
            server: RedisServer::start().expect("start redis-server"),
            prefix: "yt:".to_owned(),
        }
    }

    /// Opens a store on this harness's data (a new handle each time).
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Harness::Embedded { dir } => {
                // A nested path that does not exist yet: `open` creates it.
                Arc::new(EmbeddedStore::open(&dir.path().join("data")).expect("open embedded"))
            }
            Harness::Redis { server, prefix } => Arc::new(
                RedisStore::connect(&server.url, prefix)
                    .await
                    .expect("connect redis"),
            ),
        }
    }
}

fn ev(seq: u64, data: impl Into<Vec<u8>>) -> StoredEvent {
    StoredEvent {
        seq,
        data: data.into(),
    }
}

/// Events `from..=to` of `case`, with JSON payloads naming case and seq.
fn events(case: &str, from: u64, to: u64) -> Vec<StoredEvent> {
    (from..=to)
        .map(|seq| {
            ev(
                seq,
                format!(r#"{{"case":"{case}","seq":{seq},"kind":"note"}}"#),
            )
        })
        .collect()
}

fn seqs(log: &[StoredEvent]) -> Vec<u64> {
    log.iter().map(|e| e.seq).collect()
}

#[track_caller]
fn assert_conflict(result: Result<(), StoreError>, expected: u64, found: u64) {
    match result {
        Err(StoreError::Conflict {
            expected: e,
            found: f,
        }) => assert_eq!((e, f), (expected, found), "conflict details"),
        other => {
            panic!("expected Conflict {{ expected: {expected}, found: {found} }}, got {other:?}")
        }
    }
}

#[track_caller]
fn assert_invalid(result: Result<(), StoreError>) {
    assert!(
        matches!(result, Err(StoreError::InvalidBatch(_))),
        "expected InvalidBatch, got {result:?}"
    );
}

/// Instantiates every listed check once per backend.
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(&super::Harness::embedded()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(&super::Harness::redis()).await;
                }
            )*
        }
    };
}

contract!(
    unknown_case_reads_empty,
    append_then_read_all_and_after,
    long_log_reads_completely,
    conflict_when_stale_or_ahead_writes_nothing,
    invalid_batch_writes_nothing,
    failing_appends_do_not_disturb_others,
    many_cases_concurrently,
    racing_writers_exactly_one_wins_each_seq,
    racing_writers_with_retries_keep_log_gapless,
    list_cases_sorted_and_only_with_events,
    data_survives_reopening,
    payloads_are_binary_safe,
    ping_and_kind,
);

// ---------------------------------------------------------------------------------------------
// The shared contract
// ---------------------------------------------------------------------------------------------

async fn unknown_case_reads_empty(h: &Harness) {
    let store = h.open().await;
    assert!(store.read("c_nobody", 0).await.unwrap().is_empty());
    assert!(store.read("c_nobody", 7).await.unwrap().is_empty());
    assert!(store.read("c_nobody", u64::MAX).await.unwrap().is_empty());
    assert!(store.list_cases().await.unwrap().is_empty());
}

async fn append_then_read_all_and_after(h: &Harness) {
    let store = h.open().await;
    let case = "c_basic";
    let all = events(case, 1, 10);
    store.append(case, &all[0..1]).await.unwrap();
    store.append(case, &all[1..4]).await.unwrap();
    store.append(case, &all[4..10]).await.unwrap();

    assert_eq!(store.read(case, 0).await.unwrap(), all);
    for k in 0..=12u64 {
        let expected: Vec<StoredEvent> = all.iter().filter(|e| e.seq > k).cloned().collect();
        assert_eq!(
            store.read(case, k).await.unwrap(),
            expected,
            "read after {k}"
        );
    }
    assert!(store.read(case, u64::MAX).await.unwrap().is_empty());
    // Another case is unaffected.
    assert!(store.read("c_other", 0).await.unwrap().is_empty());
}

/// Longer than one page of the Redis reader (1000), with a read starting mid-page.
async fn long_log_reads_completely(h: &Harness) {
    let store = h.open().await;
    let case = "c_long";
    let all = events(case, 1, 2_500);
    for chunk in all.chunks(250) {
        store.append(case, chunk).await.unwrap();
    }
    let log = store.read(case, 0).await.unwrap();
    assert_eq!(log.len(), 2_500);
    assert_eq!(log, all);
    let tail = store.read(case, 999).await.unwrap();
    assert_eq!(seqs(&tail), (1_000..=2_500).collect::<Vec<_>>());
    let tail = store.read(case, 2_000).await.unwrap();
    assert_eq!(tail, all[2_000..]);
}

async fn conflict_when_stale_or_ahead_writes_nothing(h: &Harness) {
    let store = h.open().await;
    let case = "c_conflict";

    // Ahead on an empty log.
    assert_conflict(store.append(case, &events(case, 2, 3)).await, 1, 0);
    assert!(store.read(case, 0).await.unwrap().is_empty());
    assert!(store.list_cases().await.unwrap().is_empty());

    let first = events(case, 1, 3);
    store.append(case, &first).await.unwrap();

    // Stale: someone already wrote 1..=3 and this writer still thinks the log ends at 1 or 0.
    let mut stale = vec![ev(2, "stale-2"), ev(3, "stale-3"), ev(4, "stale-4")];
    assert_conflict(store.append(case, &stale).await, 1, 3);
    stale.insert(0, ev(1, "stale-1"));
    assert_conflict(store.append(case, &stale).await, 0, 3);
    // Stale by exactly the last event.
    assert_conflict(store.append(case, &[ev(3, "again")]).await, 2, 3);
    // Ahead.
    assert_conflict(store.append(case, &events(case, 5, 6)).await, 4, 3);
    assert_conflict(store.append(case, &events(case, 100, 100)).await, 99, 3);

    assert_eq!(store.read(case, 0).await.unwrap(), first, "nothing written");

    // The right expectation still works afterwards.
    let next = events(case, 4, 5);
    store.append(case, &next).await.unwrap();
    assert_eq!(
        seqs(&store.read(case, 0).await.unwrap()),
        vec![1, 2, 3, 4, 5]
    );
}

async fn invalid_batch_writes_nothing(h: &Harness) {
    let store = h.open().await;
    let case = "c_invalid";

    assert_invalid(store.append(case, &[]).await);
    assert_invalid(store.append(case, &[ev(1, "a"), ev(3, "c")]).await);
    assert_invalid(store.append(case, &[ev(2, "b"), ev(1, "a")]).await);
    assert_invalid(store.append(case, &[ev(1, "a"), ev(1, "a")]).await);
    assert_invalid(store.append(case, &[ev(0, "zero")]).await);
    assert_invalid(
        store
            .append(case, &[ev(u64::MAX, "max"), ev(0, "wrapped")])
            .await,
    );
    assert!(store.read(case, 0).await.unwrap().is_empty());
    assert!(store.list_cases().await.unwrap().is_empty());

    // On a non-empty log, an invalid batch whose first seq would fit is still refused whole.
    store.append(case, &events(case, 1, 2)).await.unwrap();
    assert_invalid(store.append(case, &[ev(3, "c"), ev(5, "e")]).await);
    assert_eq!(seqs(&store.read(case, 0).await.unwrap()), vec![1, 2]);
    // Invalid beats conflict: the batch is judged before the log.
    assert_invalid(store.append(case, &[ev(7, "g"), ev(9, "i")]).await);
}

/// Valid, conflicting and malformed appends issued at the same moment, across and within cases:
/// each gets its own verdict, and the failures write nothing (the embedded store commits such a
/// mix in one group transaction).
async fn failing_appends_do_not_disturb_others(h: &Harness) {
    let store = h.open().await;
    let base = "c_base";
    store.append(base, &events(base, 1, 5)).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..4 {
        for i in 0..10 {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let ok_case = format!("c_ok_{round}_{i}");
                let ahead_case = format!("c_ahead_{round}_{i}");
                let bad_case = format!("c_bad_{round}_{i}");
                let ok_batch = events(&ok_case, 1, 3);
                let stale_batch = [ev(3, "stale")];
                let ahead_batch = [ev(2, "ahead")];
                let bad_batch = [ev(1, "a"), ev(3, "c")];
                let (ok, stale, ahead, bad) = tokio::join!(
                    store.append(&ok_case, &ok_batch),
                    store.append(base, &stale_batch),
                    store.append(&ahead_case, &ahead_batch),
                    store.append(&bad_case, &bad_batch),
                );
                ok.unwrap();
                assert!(
                    matches!(stale, Err(StoreError::Conflict { expected: 2, .. })),
                    "{stale:?}"
                );
                assert_conflict(ahead, 1, 0);
                assert_invalid(bad);
            });
        }
    }
    // One valid append on the same case the stale writers hit.
    store.append(base, &events(base, 6, 7)).await.unwrap();
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }

    assert_eq!(store.read(base, 0).await.unwrap(), events(base, 1, 7));
    let cases = store.list_cases().await.unwrap();
    for round in 0..4 {
        for i in 0..10 {
            let ok_case = format!("c_ok_{round}_{i}");
            assert_eq!(
                store.read(&ok_case, 0).await.unwrap(),
                events(&ok_case, 1, 3)
            );
            for failed in [format!("c_ahead_{round}_{i}"), format!("c_bad_{round}_{i}")] {
                assert!(store.read(&failed, 0).await.unwrap().is_empty());
                assert!(!cases.contains(&failed), "{failed} listed");
            }
        }
    }
    assert_eq!(cases.len(), 1 + 40);
}

/// Many rooms at once: 50 cases, each written by its own task in 20 batches of 1 to 3 events.
async fn many_cases_concurrently(h: &Harness) {
    const CASES: usize = 50;
    const BATCHES: u64 = 20;
    let store = h.open().await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..CASES {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let case = format!("c_room_{t:02}");
            let mut last = 0;
            for b in 0..BATCHES {
                let len = 1 + (b + t as u64) % 3;
                store
                    .append(&case, &events(&case, last + 1, last + len))
                    .await
                    .unwrap();
                last += len;
            }
            (case, last)
        });
    }
    let mut expected = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (case, last) = joined.unwrap();
        expected.insert(case, last);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{}: {} appends over {CASES} cases in {elapsed:?}",
        store.kind(),
        CASES as u64 * BATCHES
    );

    for (case, last) in &expected {
        assert_eq!(
            store.read(case, 0).await.unwrap(),
            events(case, 1, *last),
            "{case}"
        );
    }
    let listed = store.list_cases().await.unwrap();
    assert_eq!(listed, expected.keys().cloned().collect::<Vec<_>>());
}

/// Rounds of writers released together, all building on the same last seq: exactly one wins
/// each round, every loser gets a conflict naming the winner's seq.
async fn racing_writers_exactly_one_wins_each_seq(h: &Harness) {
    const WRITERS: usize = 12;
    const ROUNDS: u64 = 25;
    let store = h.open().await;
    let case = "c_race";
    let mut winners = Vec::new();
    for seq in 1..=ROUNDS {
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tasks.spawn(async move {
                let data = format!(r#"{{"writer":{w},"seq":{seq}}}"#);
                barrier.wait().await;
                (w, store.append(case, &[ev(seq, data)]).await)
            });
        }
        let mut won = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (w, result) = joined.unwrap();
            match result {
                Ok(()) => won.push(w),
                other => assert_conflict(other, seq - 1, seq),
            }
        }
        assert_eq!(won.len(), 1, "round {seq}: winners {won:?}");
        winners.push(won[0]);
    }
    let log = store.read(case, 0).await.unwrap();
    assert_eq!(seqs(&log), (1..=ROUNDS).collect::<Vec<_>>());
    for (event, w) in log.iter().zip(&winners) {
        let expected = format!(r#"{{"writer":{w},"seq":{}}}"#, event.seq);
        assert_eq!(
            event.data,
            expected.as_bytes(),
            "the winner's event is stored"
        );
    }
}

/// Writers racing freely on one case, each retrying from the `found` seq of its conflicts, as
/// the room manager would: the log ends gapless, and holds exactly the events acknowledged.
async fn racing_writers_with_retries_keep_log_gapless(h: &Harness) {
    const WRITERS: usize = 8;
    const TARGET: u64 = 200;
    let store = h.open().await;
    let case = "c_contended";
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut known = 0;
            let mut acknowledged = Vec::new();
            let mut conflicts = 0u64;
            while known < TARGET {
                let seq = known + 1;
                let len = (1 + (w as u64 + seq) % 2).min(TARGET - known);
                let batch: Vec<StoredEvent> = (seq..seq + len)
                    .map(|s| ev(s, format!("w{w}:s{s}")))
                    .collect();
                match store.append(case, &batch).await {
                    Ok(()) => {
                        acknowledged.extend(batch);
                        known = seq + len - 1;
                    }
                    Err(StoreError::Conflict { expected, found }) => {
                        assert_eq!(expected, known);
                        assert!(found > known, "the log never shrinks");
                        known = found;
                        conflicts += 1;
                    }
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
            (acknowledged, conflicts)
        });
    }
    let mut acknowledged = Vec::new();
    let mut conflicts = 0;
    while let Some(joined) = tasks.join_next().await {
        let (acked, c) = joined.unwrap();
        acknowledged.extend(acked);
        conflicts += c;
    }
    acknowledged.sort_by_key(|e| e.seq);
    let log = store.read(case, 0).await.unwrap();
    assert_eq!(seqs(&log), (1..=TARGET).collect::<Vec<_>>(), "gapless");
    assert_eq!(log, acknowledged, "exactly the acknowledged events");
    eprintln!(
        "{}: {conflicts} conflicts among {WRITERS} writers",
        store.kind()
    );
}

async fn list_cases_sorted_and_only_with_events(h: &Harness) {
    let store = h.open().await;
    for case in ["c_b", "c_a", "c_c10", "c_c2"] {
        store.append(case, &events(case, 1, 1)).await.unwrap();
    }
    // Appending more does not list a case twice.
    store.append("c_a", &events("c_a", 2, 3)).await.unwrap();
    // Failed appends do not create cases.
    assert_conflict(store.append("c_x", &events("c_x", 4, 4)).await, 3, 0);
    assert_invalid(store.append("c_y", &[]).await);
    // Reads do not create cases either.
    assert!(store.read("c_z", 0).await.unwrap().is_empty());

    assert_eq!(
        store.list_cases().await.unwrap(),
        vec!["c_a", "c_b", "c_c10", "c_c2"]
    );
}

async fn data_survives_reopening(h: &Harness) {
    let (a, b) = ("c_keep_a", "c_keep_b");
    {
        let store = h.open().await;
        store.append(a, &events(a, 1, 3)).await.unwrap();
        store.append(b, &events(b, 1, 1)).await.unwrap();
        store.append(a, &events(a, 4, 5)).await.unwrap();
        // Dropped here: the embedded database is closed, the Redis connection is gone.
    }
    let store = h.open().await;
    assert_eq!(store.read(a, 0).await.unwrap(), events(a, 1, 5));
    assert_eq!(store.read(b, 0).await.unwrap(), events(b, 1, 1));
    assert_eq!(store.list_cases().await.unwrap(), vec![a, b]);
    // The conditional check picks up where the log ended.
    assert_conflict(store.append(a, &events(a, 5, 5)).await, 4, 5);
    store.append(a, &events(a, 6, 6)).await.unwrap();
    drop(store);

    let store = h.open().await;
    assert_eq!(store.read(a, 0).await.unwrap(), events(a, 1, 6));
}

async fn payloads_are_binary_safe(h: &Harness) {
    let store = h.open().await;
    let mut big = Vec::with_capacity(1 << 20);
    let mut x: u32 = 0x9e37_79b9;
    while big.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        big.extend_from_slice(&x.to_le_bytes());
    }
    let payloads: Vec<Vec<u8>> = vec![
        r#"{"type":"note","text":"调解协议：商家同意在七日内退款 ¥1,299，消费者撤回投诉。"}"#
            .as_bytes()
            .to_vec(),
        "背对背调解（caucus）——不得外传 🙏".as_bytes().to_vec(),
        (0..=255u8).collect(),
        Vec::new(),
        b"\0\r\n-0\r\n*1\r\n$3\r\nd\r\n\0".to_vec(),
        vec![0xff, 0xfe, 0xc3, 0x28],
        big,
    ];
    for case in ["c_bin", "c_调解_01"] {
        let batch: Vec<StoredEvent> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| ev(i as u64 + 1, p.clone()))
            .collect();
        store.append(case, &batch[..3]).await.unwrap();
        store.append(case, &batch[3..]).await.unwrap();
        assert_eq!(store.read(case, 0).await.unwrap(), batch, "{case}");
        assert_eq!(store.read(case, 3).await.unwrap(), batch[3..], "{case}");
    }
    assert_eq!(
        store.list_cases().await.unwrap(),
        vec!["c_bin", "c_调解_01"]
    );
}

async fn ping_and_kind(h: &Harness) {
    let store = h.open().await;
    store.ping().await.unwrap();
    let expected = match h {
        Harness::Embedded { .. } => "embedded",
        Harness::Redis { .. } => "redis",
    };
    assert_eq!(store.kind(), expected);
}

// ---------------------------------------------------------------------------------------------
// Embedded only
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn embedded_open_creates_dir_and_file() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("a").join("b");
    let store = EmbeddedStore::open(&dir).unwrap();
    assert!(dir.join("yuntiao.redb").is_file());
    assert_eq!(store.path(), dir.join("yuntiao.redb"));
    store.append("c_1", &events("c_1", 1, 1)).await.unwrap();
}

#[tokio::test]
async fn embedded_second_open_of_same_dir_is_refused() {
    let tmp = TempDir::new().unwrap();
    let store = EmbeddedStore::open(tmp.path()).unwrap();
    let second = EmbeddedStore::open(tmp.path());
    assert!(
        matches!(second, Err(StoreError::Unavailable(_))),
        "{second:?}"
    );
    drop(store);
    EmbeddedStore::open(tmp.path()).expect("reopens once the first is closed");
}

/// Group commit is real: concurrent appends across many cases share commits (fsyncs), and every
/// acknowledged append was counted in a commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_group_commit_shares_fsyncs() {
    const CASES: usize = 100;
    const BATCHES: u64 = 10;
    let tmp = TempDir::new().unwrap();
    let store = Arc::new(EmbeddedStore::open(tmp.path()).unwrap());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..CASES {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let case = format!("c_group_{t}");
            for seq in 1..=BATCHES {
                store.append(&case, &events(&case, seq, seq)).await.unwrap();
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    let stats = store.writer_stats();
    eprintln!(
        "embedded: {} appends in {} commits, {:?}",
        stats.appends,
        stats.commits,
        started.elapsed()
    );
    assert_eq!(stats.appends, CASES as u64 * BATCHES);
    assert!(
        stats.commits < stats.appends / 2,
        "appends were not grouped: {stats:?}"
    );
}

/// The write-ahead log's segments in an embedded data directory.
fn wal_segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    out.sort();
    out
}

/// Where a segment's records end: its length without the zeros of a zero-filled segment that
/// were not written over yet (the events of these tests end in `}`, never in a zero byte).
fn records_end(segment: &std::path::Path) -> usize {
    let bytes = std::fs::read(segment).unwrap();
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

/// The segment holding the log's last record, and where its records end. The store moves to a
/// zero-filled segment when one is ready, so which segment that is depends on timing; segments
/// after it are spares not written to yet.
fn last_records(dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    wal_segments(dir)
        .into_iter()
        .rev()
        .map(|p| {
            let end = records_end(&p);
            (p, end)
        })
        .find(|(_, end)| *end > 0)
        .expect("the log holds no record")
}

/// Damages the log's last record as a crash in the middle of writing it can: `damage` edits the
/// bytes of the segment holding it. The store moves to a new segment only after a record is
/// durable, so when the crash hit that record, no later segment existed yet: empty ones made
/// since are removed too.
fn crash_in_last_record(dir: &std::path::Path, damage: impl FnOnce(&mut Vec<u8>)) {
    let (segment, _) = last_records(dir);
    for later in wal_segments(dir).into_iter().filter(|p| *p > segment) {
        std::fs::remove_file(later).unwrap();
    }
    let mut bytes = std::fs::read(&segment).unwrap();
    damage(&mut bytes);
    std::fs::write(&segment, &bytes).unwrap();
}

/// Crash after the log's fsync, before any checkpoint copied the appends into redb: the appends
/// were acknowledged, so reopening must replay them from the log, in order, with the
/// conditional check picking up where the log ended.
#[tokio::test]
async fn embedded_replays_the_log_after_a_crash_before_the_checkpoint() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    let (a, b) = ("c_wal_a", "c_wal_b");
    {
        // One checkpointed append first, so the replay continues a non-empty redb.
        let store = EmbeddedStore::open(&dir).unwrap();
        store.append(a, &events(a, 1, 2)).await.unwrap();
    }
    let store = EmbeddedStore::open(&dir).unwrap();
    store.append(a, &events(a, 3, 4)).await.unwrap();
    store.append(b, &events(b, 1, 1)).await.unwrap();
    store.append(a, &events(a, 5, 5)).await.unwrap();
    let stats = store.writer_stats();
    store.close_without_checkpoint();
    assert_eq!(
        stats.checkpoints, 0,
        "a checkpoint ran too early: {stats:?}"
    );

    let store = EmbeddedStore::open(&dir).unwrap();
    assert_eq!(store.read(a, 0).await.unwrap(), events(a, 1, 5));
    assert_eq!(store.read(a, 3).await.unwrap(), events(a, 4, 5));
    assert_eq!(store.read(b, 0).await.unwrap(), events(b, 1, 1));
    assert_eq!(store.list_cases().await.unwrap(), vec![a, b]);
    assert_conflict(store.append(a, &events(a, 5, 5)).await, 4, 5);
    store.append(a, &events(a, 6, 6)).await.unwrap();
    // The replay itself was checkpointed: a second crash loses nothing either.
    store.close_without_checkpoint();
    let store = EmbeddedStore::open(&dir).unwrap();
    assert_eq!(store.read(a, 0).await.unwrap(), events(a, 1, 6));
}

/// A crash in the middle of writing a record leaves a torn tail: that record was never
/// acknowledged, so it is dropped (whatever is cut off: part of its header, of its payload, or a
/// damaged byte), everything before it is kept, and new appends continue after the good part.
#[tokio::test]
async fn embedded_drops_a_torn_tail_and_keeps_everything_before_it() {
    for cut in [1usize, 7, 20, 25, 60] {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("data");
        let case = "c_torn";
        let store = EmbeddedStore::open(&dir).unwrap();
        store.append(case, &events(case, 1, 2)).await.unwrap();
        let (first, first_end) = last_records(&dir);
        store.append(case, &events(case, 3, 4)).await.unwrap();
        store.close_without_checkpoint();

        // Tear the last record: keep only its first `cut` bytes.
        let (segment, end) = last_records(&dir);
        let good = if segment == first { first_end } else { 0 };
        assert!(end > good + cut);
        // The rest reads as zeros (a zero-filled segment keeps its length).
        crash_in_last_record(&dir, |bytes| bytes[good + cut..].fill(0));

        let store = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(
            store.read(case, 0).await.unwrap(),
            events(case, 1, 2),
            "cut {cut}"
        );
        assert_conflict(store.append(case, &events(case, 4, 4)).await, 3, 2);
        store.append(case, &events(case, 3, 3)).await.unwrap();
        store.close_without_checkpoint();
        let store = EmbeddedStore::open(&dir).unwrap();
        assert_eq!(
            store.read(case, 0).await.unwrap(),
            events(case, 1, 3),
            "cut {cut}"
        );
    }
    // A damaged byte inside the last record (its bytes reached the disk out of order).
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    let store = EmbeddedStore::open(&dir).unwrap();
    store
        .append("c_flip", &events("c_flip", 1, 1))
        .await
        .unwrap();
    store
        .append("c_flip", &events("c_flip", 2, 2))
        .await
        .unwrap();
    store.close_without_checkpoint();
    let (_, end) = last_records(&dir);
    crash_in_last_record(&dir, |bytes| bytes[end - 3] ^= 0x01);
    let store = EmbeddedStore::open(&dir).unwrap();
    assert_eq!(
        store.read("c_flip", 0).await.unwrap(),
        events("c_flip", 1, 1)
    );
}

/// Damage before the end of the log is not a torn tail: those records were acknowledged, so the
/// store refuses to open rather than silently drop them.
#[tokio::test]
async fn embedded_refuses_to_open_a_log_damaged_before_its_end() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    let store = EmbeddedStore::open(&dir).unwrap();
    store.append("c_dmg", &events("c_dmg", 1, 1)).await.unwrap();
    store.append("c_dmg", &events("c_dmg", 2, 2)).await.unwrap();
    store.close_without_checkpoint();
    // The segment holding the first record (the store may have moved on to a zero-filled one).
    let segment = wal_segments(&dir)
        .into_iter()
        .find(|p| records_end(p) > 0)
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[30] ^= 0x01; // inside the first record's payload
    std::fs::write(&segment, &bytes).unwrap();
    // A later segment makes the damaged one "not the end of the log".
    let next = segment.with_file_name(format!("wal-{:020}.log", 1000));
    std::fs::write(&next, b"").unwrap();
    let opened = EmbeddedStore::open(&dir);
    assert!(
        matches!(opened, Err(StoreError::Unavailable(_))),
        "{opened:?}"
    );
}

/// Checkpoints copy the log into redb in the background and delete the segments they cover;
/// reads see every acknowledged append before, during and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_checkpoints_keep_reads_complete() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    let store = EmbeddedStore::open(&dir).unwrap();
    let case = "c_ckpt";
    // Checkpoints run every second; the deadline only stops a hang. (3 s was too short on a
    // 2-core machine busy with the browser test: a fresh clone's CI run missed it once.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 0;
    while store.writer_stats().checkpoints < 2 {
        assert!(Instant::now() < deadline, "no checkpoint ran");
        seq += 1;
        store.append(case, &events(case, seq, seq)).await.unwrap();
        assert_eq!(store.read(case, 0).await.unwrap().len() as u64, seq);
        assert_eq!(
            store.read(case, seq - 1).await.unwrap(),
            events(case, seq, seq)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(wal_segments(&dir).len(), 1, "covered segments are deleted");
    // The records go over a zero-filled segment (wal.rs), which does not grow as they come.
    let current = wal_segments(&dir).pop().unwrap();
    let (size, used) = (
        std::fs::metadata(&current).unwrap().len(),
        records_end(&current) as u64,
    );
    assert!(
        size >= 1 << 20 && used < size,
        "the log is not written over zeros: {used} bytes of records in a {size}-byte segment"
    );
    drop(store);
    // A clean close checkpoints everything: the log starts empty.
    let store = EmbeddedStore::open(&dir).unwrap();
    assert_eq!(store.read(case, 0).await.unwrap(), events(case, 1, seq));
    let segment = wal_segments(&dir).pop().unwrap();
    assert_eq!(std::fs::metadata(segment).unwrap().len(), 0);
}

// ---------------------------------------------------------------------------------------------
// Redis only
// ---------------------------------------------------------------------------------------------

async fn raw(server: &RedisServer) -> ::redis::aio::MultiplexedConnection {
    server
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_keys_are_hash_tagged_by_case() {
    let server = RedisServer::start().unwrap();
    let tenant = RedisStore::connect(&server.url, "tenant7:").await.unwrap();
    let yt = RedisStore::connect(&server.url, "yt:").await.unwrap();
    assert_eq!(tenant.log_key("c_ab12"), "tenant7:{c_ab12}:log");
    assert_eq!(yt.log_key("c_ab12"), "yt:{c_ab12}:log");

    tenant
        .append("c_ab12", &[ev(1, "一"), ev(2, "二")])
        .await
        .unwrap();
    yt.append("c_ab12", &[ev(1, "other tenant")]).await.unwrap();

    let mut con = raw(&server).await;
    let exists: u32 = ::redis::cmd("EXISTS")
        .arg("tenant7:{c_ab12}:log")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(exists, 1);
    let kind: String = ::redis::cmd("TYPE")
        .arg("tenant7:{c_ab12}:log")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(kind, "stream");
    let mut keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "tenant7:cases",
            "tenant7:{c_ab12}:log",
            "yt:cases",
            "yt:{c_ab12}:log"
        ]
    );
    // Entry IDs are `<seq>-0`, one field `d` with the bytes.
    type RawEntry = (String, Vec<(String, Vec<u8>)>);
    let entries: Vec<RawEntry> = ::redis::cmd("XRANGE")
        .arg("tenant7:{c_ab12}:log")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        entries,
        vec![
            (
                "1-0".to_owned(),
                vec![("d".to_owned(), "一".as_bytes().to_vec())]
            ),
            (
                "2-0".to_owned(),
                vec![("d".to_owned(), "二".as_bytes().to_vec())]
            ),
        ]
    );
    // Prefixes separate tenants.
    assert_eq!(tenant.read("c_ab12", 0).await.unwrap().len(), 2);
    assert_eq!(yt.read("c_ab12", 0).await.unwrap().len(), 1);

    assert!(matches!(
        RedisStore::connect(&server.url, "bad{").await,
        Err(StoreError::Unavailable(_))
    ));
}

/// The case set is only an index: ids without a stream are not listed.
#[tokio::test]
async fn redis_list_cases_ignores_index_entries_without_log() {
    let server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url, "yt:").await.unwrap();
    store
        .append("c_real", &events("c_real", 1, 1))
        .await
        .unwrap();
    let mut con = raw(&server).await;
    let _: () = ::redis::cmd("SADD")
        .arg("yt:cases")
        .arg("c_ghost")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(store.list_cases().await.unwrap(), vec!["c_real"]);
}

/// Acknowledged appends survive a SIGKILL of Redis (AOF with `appendfsync always`), and the
/// store reconnects by itself once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_acknowledged_appends_survive_a_crash() {
    let mut server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url, "yt:").await.unwrap();
    let case = "c_crash";
    for seq in 1..=50 {
        store.append(case, &events(case, seq, seq)).await.unwrap();
    }
    server.kill_and_restart().unwrap();
    let log = wait_until_ok(|| store.read(case, 0)).await;
    assert_eq!(log, events(case, 1, 50));
    store.append(case, &events(case, 51, 51)).await.unwrap();
}

/// An unreachable Redis gives `Unavailable` promptly, never a hang or a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable_then_recovers() {
    // Nothing listens on a port that was just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let refused = RedisStore::connect(&format!("redis://127.0.0.1:{port}/"), "yt:").await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    let mut server = RedisServer::start().unwrap();
    let store = RedisStore::connect(&server.url, "yt:").await.unwrap();
    store.append("c_o", &events("c_o", 1, 1)).await.unwrap();
    server.kill();
    let started = Instant::now();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.append("c_o", &events("c_o", 2, 2)).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.read("c_o", 0).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(30));

    server.kill_and_restart().unwrap();
    wait_until_ok(|| store.ping()).await;
    assert_eq!(store.read("c_o", 0).await.unwrap(), events("c_o", 1, 1));
}

/// Retries `op` for up to 15 s (the connection manager reconnects in the background).
async fn wait_until_ok<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still failing after 15 s: {e}"),
        }
    }
}
