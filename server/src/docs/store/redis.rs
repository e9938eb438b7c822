//! The Redis document store, next to the Redis case log and hash-tagged the same way.
//!
//! # Layout
//!
//! * `{prefix}{<case>}:doc:<name>` — a stream of the document's updates, entry ID `<seq>-0`,
//!   one field `u` with the update bytes;
//! * `{prefix}{<case>}:docsnap:<name>` — a hash: `upto` (seq of the last update the snapshot
//!   includes), `state` (the encoded document), `head` (seq of the last update ever appended,
//!   kept here because compaction trims the stream);
//! * `{prefix}{<case>}:docs` — a set of the case's document names.
//!
//! Every key of a case carries the case id in braces, so on Redis Cluster all of them share one
//! slot and each script below may touch several of them. Appends and snapshots are Lua scripts
//! for the same reason as the case log's append (see `store::redis`): conditional and atomic in
//! one round trip. Durability is Redis's own (AOF, `appendfsync always` in production).

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{RedisError, Script, Value};

use super::{DocStore, StoredDoc};
use crate::store::StoreError;

/// KEYS: stream, snapshot hash, name set. ARGV[1]: expected head; ARGV[2]: document name;
/// ARGV[3..]: pairs of entry ID and update bytes. Returns `{'ok'}` or `{'conflict', head}`.
const APPEND_SCRIPT: &str = r"
local head = redis.call('HGET', KEYS[2], 'head') or '0'
if head ~= ARGV[1] then
  return {'conflict', head}
end
local last = ARGV[1]
for i = 3, #ARGV, 2 do
  redis.call('XADD', KEYS[1], ARGV[i], 'u', ARGV[i + 1])
  last = string.match(ARGV[i], '^(%d+)%-')
end
redis.call('HSET', KEYS[2], 'head', last)
redis.call('SADD', KEYS[3], ARGV[2])
return {'ok'}
";

/// KEYS: stream, snapshot hash. ARGV[1]: upto; ARGV[2]: state. Returns `{'ok'}`, `{'old'}` (a
/// newer snapshot is stored; nothing done) or `{'ahead', head}`.
const SNAPSHOT_SCRIPT: &str = r"
local head = tonumber(redis.call('HGET', KEYS[2], 'head') or '0')
local current = tonumber(redis.call('HGET', KEYS[2], 'upto') or '0')
local upto = tonumber(ARGV[1])
if upto > head then
  return {'ahead', tostring(head)}
end
if upto <= current then
  return {'old'}
end
redis.call('HSET', KEYS[2], 'upto', ARGV[1], 'state', ARGV[2])
redis.call('XTRIM', KEYS[1], 'MINID', tostring(upto + 1) .. '-0')
return {'ok'}
";

/// KEYS: stream, snapshot hash. Returns `{upto, state, entries}` read atomically.
const LOAD_SCRIPT: &str = r"
local snap = redis.call('HMGET', KEYS[2], 'upto', 'state')
local upto = snap[1] or '0'
local entries = redis.call('XRANGE', KEYS[1], '(' .. upto .. '-0', '+')
return {upto, snap[2] or '', entries}
";

/// The Redis backend of [`DocStore`]. Cheap to share.
#[derive(Clone)]
pub struct RedisDocStore {
    con: ConnectionManager,
    prefix: String,
    append: Script,
    snapshot: Script,
    load: Script,
}

impl std::fmt::Debug for RedisDocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDocStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis document store: {e}"))
}

fn bad_reply(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis document store: unexpected reply to {what}"))
}

fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => std::str::from_utf8(as_bytes(other)?).ok()?.parse().ok(),
    }
}

/// `<seq>-0` → seq.
fn entry_seq(id: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(id).ok()?;
    s.split('-').next()?.parse().ok()
}

impl RedisDocStore {
    /// Connects to the Redis at `url`, keeping keys under `prefix` (as the case log does).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let con = crate::store::redis::connection(url, prefix, "redis document store").await?;
        Ok(Self {
            con,
            prefix: prefix.to_owned(),
            append: Script::new(APPEND_SCRIPT),
            snapshot: Script::new(SNAPSHOT_SCRIPT),
            load: Script::new(LOAD_SCRIPT),
        })
    }

    fn keys(&self, case: &str, doc: &str) -> [String; 3] {
        [
            format!("{}{{{case}}}:doc:{doc}", self.prefix),
            format!("{}{{{case}}}:docsnap:{doc}", self.prefix),
            format!("{}{{{case}}}:docs", self.prefix),
        ]
    }
}

#[async_trait]
impl DocStore for RedisDocStore {
    async fn load(&self, case: &str, doc: &str) -> Result<StoredDoc, StoreError> {
        let [log, snap, _] = self.keys(case, doc);
        let mut con = self.con.clone();
        let reply: Value = self
            .load
            .key(&log)
            .key(&snap)
            .invoke_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        let Value::Array(parts) = reply else {
            return Err(bad_reply("load"));
        };
        let [upto, state, entries] = parts.as_slice() else {
            return Err(bad_reply("load"));
        };
        let upto = as_u64(upto).ok_or_else(|| bad_reply("load"))?;
        let snapshot = if upto > 0 {
            Some((
                upto,
                as_bytes(state).ok_or_else(|| bad_reply("load"))?.to_vec(),
            ))
        } else {
            None
        };
        let Value::Array(entries) = entries else {
            return Err(bad_reply("load"));
        };
        let mut updates = Vec::with_capacity(entries.len());
        for e in entries {
            // [id, [field, value]]
            let Value::Array(pair) = e else {
                return Err(bad_reply("load"));
            };
            let [id, Value::Array(fields)] = pair.as_slice() else {
                return Err(bad_reply("load"));
            };
            let seq = as_bytes(id)
                .and_then(entry_seq)
                .ok_or_else(|| bad_reply("load"))?;
            let data = fields
                .get(1)
                .and_then(as_bytes)
                .ok_or_else(|| bad_reply("load"))?;
            updates.push((seq, data.to_vec()));
        }
        Ok(StoredDoc { snapshot, updates })
    }

    async fn append(
        &self,
        case: &str,
        doc: &str,
        first: u64,
        updates: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        if updates.is_empty() || first == 0 {
            return Err(StoreError::InvalidBatch(
                "an append needs updates, numbered from 1",
            ));
        }
        let [log, snap, names] = self.keys(case, doc);
        let mut inv = self.append.key(&log);
        inv.key(&snap).key(&names).arg(first - 1).arg(doc);
        for (i, u) in updates.iter().enumerate() {
            inv.arg(format!("{}-0", first + i as u64)).arg(u.as_slice());
        }
        let mut con = self.con.clone();
        let reply: Value = inv
            .invoke_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        match reply {
            Value::Array(parts) => match parts.first().and_then(as_bytes) {
                Some(b"ok") => Ok(()),
                Some(b"conflict") => Err(StoreError::Conflict {
                    expected: first - 1,
                    found: parts.get(1).and_then(as_u64).unwrap_or(0),
                }),
                _ => Err(bad_reply("append")),
            },
            _ => Err(bad_reply("append")),
        }
    }

    async fn snapshot(
        &self,
        case: &str,
        doc: &str,
        upto: u64,
        state: &[u8],
    ) -> Result<(), StoreError> {
        let [log, snap, _] = self.keys(case, doc);
        let mut con = self.con.clone();
        let reply: Value = self
            .snapshot
            .key(&log)
            .key(&snap)
            .arg(upto)
            .arg(state)
            .invoke_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        match reply {
            Value::Array(parts) => match parts.first().and_then(as_bytes) {
                Some(b"ok") | Some(b"old") => Ok(()),
                Some(b"ahead") => Err(StoreError::InvalidBatch(
                    "a snapshot cannot include updates that were never stored",
                )),
                _ => Err(bad_reply("snapshot")),
            },
            _ => Err(bad_reply("snapshot")),
        }
    }

    async fn list(&self, case: &str) -> Result<Vec<String>, StoreError> {
        let [_, _, names] = self.keys(case, "");
        let mut con = self.con.clone();
        let mut docs: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&names)
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        docs.sort();
        Ok(docs)
    }
}
