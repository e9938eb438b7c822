//! The Redis store: one Redis stream per case, for production and for several nodes.
//!
//! DESIGN.md, decisions 2 and 6: several server nodes share one Redis (standalone, Sentinel or
//! Cluster), and the case log in Redis is what lets any node rebuild a room.
//!
//! # Layout
//!
//! * `{prefix}{<case>}:log` — a stream holding the case's log. Each event is one entry with the
//!   explicit ID `<seq>-0` and one field `d` holding the event bytes. The case id in braces is the
//!   Redis Cluster hash tag, so every key of a case (this one, and any per-case key added later
//!   with the same `{<case>}` tag) lands on one slot. With prefix `yt:` and case `c_ab12` the key
//!   is `yt:{c_ab12}:log`.
//! * `{prefix}cases` — a set of case ids, the index behind `list_cases`.
//!
//! # Why a script
//!
//! The append must be conditional ("only if the last seq is still the one I built on") and atomic
//! (the whole batch or nothing). A Lua script gives both in one round trip: Redis runs it without
//! interleaving any other command, so the read of the last entry ID (`XREVRANGE .. COUNT 1`) and
//! the `XADD`s cannot be separated by another writer. Its `KEYS` holds only the case's stream, so
//! it is valid on Redis Cluster. It is sent with `EVALSHA`, and loaded automatically on a
//! `NOSCRIPT` reply (after a Redis restart or failover), by `redis::Script`.
//!
//! The `XADD`s cannot fail once the check passed: the IDs are consecutive and above the last
//! entry. (That assumes the stream is append-only: entries removed with `XDEL`/`XTRIM` from its
//! top would make Redis refuse the IDs and a Lua error does not roll back the `XADD`s before it.
//! Nothing in Yuntiao trims a log; retention deletes a case's key as a whole.)
//!
//! # The case index is an index; the streams are the truth
//!
//! `{prefix}cases` lives on another slot than the case, so it cannot be updated by the single-key
//! script. It is updated with a separate `SADD` *before* the script runs, for batches starting at
//! seq 1 (the only ones that can create a log). So a case with events is always in the set (if
//! the `SADD` fails, the append fails before anything is written). The set may hold a few extra
//! ids, of first appends that then lost a race or failed; `list_cases` drops those by checking
//! that the stream exists. Nothing removes them: a concurrent first append could be in flight, and
//! an extra id costs one `EXISTS` per listing.
//!
//! # Outcome of a failed round trip
//!
//! When the connection drops or the response times out after the script was sent, Redis may have
//! run it. Before reporting [`StoreError::Unavailable`], `append` reads the batch's range back:
//! if exactly this batch is there, the append is reported as done. If it is not there (yet) the
//! error is returned; a retry of the same batch is safe because the append is conditional (it
//! lands once, or reports a conflict, after which the caller rereads the log).
//!
//! Durability is Redis's: with AOF and `appendfsync always` (the compose file, and the test
//! harness) a reply means the entry was fsynced.
//!
//! Case ids are used verbatim inside the braces; callers pass ids without `{` or `}` (Yuntiao's
//! ids are `c_…`). One containing a brace still works (every command here is single-key) but
//! would not get the intended hash tag.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};

use super::embedded::check_batch;
use super::{Store, StoreError, StoredEvent};

/// The conditional append. KEYS[1]: the case's stream. ARGV[1]: the expected last seq, in
/// decimal. ARGV[2..]: pairs of entry ID (`<seq>-0`) and event bytes.
///
/// Returns `{'ok'}`, or `{'conflict', <found last seq>}` having written nothing. Seqs are compared
/// as decimal strings, not Lua numbers (doubles), so every u64 is exact.
const APPEND_SCRIPT: &str = r"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local found = '0'
if last[1] then
  found = string.match(last[1][1], '^(%d+)%-')
end
if found ~= ARGV[1] then
  return {'conflict', found}
end
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[1], ARGV[i], 'd', ARGV[i + 1])
end
return {'ok'}
";

/// Entries fetched per `XRANGE` when reading a log.
const READ_PAGE: usize = 1000;

/// How long a command may wait for its reply. Generous, because with `appendfsync always` a reply
/// waits for an fsync and a read may return a page of large events.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis backend. Cheap to share: the connection manager multiplexes every call over one
/// connection and reconnects after a failure.
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    prefix: String,
    append_script: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is not kept: it may hold a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis store: {e}"))
}

/// A reply that does not have the expected shape. The message never includes the reply itself,
/// which could hold event data.
fn bad_reply(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis store: unexpected reply to {what}"))
}

/// A connection manager to `url` with the timeouts and retries every Redis user in the server
/// shares (the case log here, the shared documents in `docs::store::redis`), after checking that
/// `prefix` cannot hijack the hash tag. `who` names the user in error messages.
pub(crate) async fn connection(
    url: &str,
    prefix: &str,
    who: &str,
) -> Result<ConnectionManager, StoreError> {
    if prefix.contains(['{', '}']) {
        return Err(StoreError::Unavailable(format!(
            "{who}: key prefix must not contain '{{' or '}}'"
        )));
    }
    let failed = |e: RedisError| StoreError::Unavailable(format!("{who}: {e}"));
    let client = redis::Client::open(url).map_err(failed)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1));
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(failed)
}

/// Whether Redis may have executed a command whose reply we did not get.
fn outcome_unknown(e: &RedisError) -> bool {
    e.is_timeout() || e.is_io_error() || e.is_connection_dropped()
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[:password@]host:port[/db]`), keeping keys under
    /// `prefix` (e.g. `yt:`). Fails with [`StoreError::Unavailable`] if Redis cannot be reached,
    /// the URL does not parse, or the prefix holds a brace (it would hijack the hash tag).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let con = connection(url, prefix, "redis store").await?;
        Ok(Self {
            con,
            prefix: prefix.to_owned(),
            append_script: Script::new(APPEND_SCRIPT),
        })
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream key of `case`'s log: `{prefix}{<case>}:log`.
    pub fn log_key(&self, case: &str) -> String {
        format!("{}{{{}}}:log", self.prefix, case)
    }

    /// The key of the set of case ids: `{prefix}cases`.
    pub fn cases_key(&self) -> String {
        format!("{}cases", self.prefix)
    }

    /// Reads the entries of `key` with IDs from `start` to `end` (inclusive, `<seq>-0` form or
    /// `+`), at most `count`.
    async fn xrange(
        &self,
        key: &str,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut con = self.con.clone();
        let reply: Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        parse_entries(reply)
    }

    /// After an append whose reply was lost: is exactly this batch in the log?
    async fn batch_is_stored(&self, key: &str, events: &[StoredEvent]) -> bool {
        let first = events[0].seq;
        let last = events[events.len() - 1].seq;
        match self
            .xrange(
                key,
                &format!("{first}-0"),
                &format!("{last}-0"),
                events.len(),
            )
            .await
        {
            Ok(found) => found == events,
            Err(_) => false,
        }
    }
}

/// Parses an `XRANGE` reply: `[[id, [field, value, ...]], ...]`.
fn parse_entries(reply: Value) -> Result<Vec<StoredEvent>, StoreError> {
    let Value::Array(entries) = reply else {
        return Err(bad_reply("XRANGE"));
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            return Err(bad_reply("XRANGE (entry)"));
        };
        if parts.len() != 2 {
            return Err(bad_reply("XRANGE (entry)"));
        }
        let fields = parts.pop().unwrap_or_default();
        let id = parts.pop().unwrap_or_default();
        let seq = match &id {
            Value::BulkString(b) => parse_seq(b),
            Value::SimpleString(s) => parse_seq(s.as_bytes()),
            _ => None,
        }
        .ok_or_else(|| bad_reply("XRANGE (entry id)"))?;
        let pairs: Vec<(Value, Value)> = match fields {
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            Value::Map(pairs) => pairs,
            _ => return Err(bad_reply("XRANGE (entry fields)")),
        };
        let data = pairs
            .into_iter()
            .find_map(|(k, v)| match (k, v) {
                (Value::BulkString(k), Value::BulkString(v)) if k == b"d" => Some(v),
                _ => None,
            })
            .ok_or_else(|| bad_reply("XRANGE (missing field d)"))?;
        out.push(StoredEvent { seq, data });
    }
    Ok(out)
}

/// `<seq>-0` to `seq`.
fn parse_seq(id: &[u8]) -> Option<u64> {
    let id = std::str::from_utf8(id).ok()?;
    let (seq, sub) = id.split_once('-')?;
    if sub != "0" {
        return None;
    }
    seq.parse().ok()
}

#[async_trait]
impl Store for RedisStore {
    async fn append(&self, case: &str, events: &[StoredEvent]) -> Result<(), StoreError> {
        check_batch(events)?;
        let key = self.log_key(case);
        let first = events[0].seq;
        let expected = first - 1;
        let mut con = self.con.clone();

        if first == 1 {
            // Index first (see the module docs): a case with events is always listed.
            redis::cmd("SADD")
                .arg(self.cases_key())
                .arg(case)
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| unavailable(&e))?;
        }

        let mut invocation = self.append_script.key(&key);
        invocation.arg(expected.to_string());
        for event in events {
            invocation
                .arg(format!("{}-0", event.seq))
                .arg(event.data.as_slice());
        }
        let reply: Vec<String> = match invocation.invoke_async(&mut con).await {
            Ok(reply) => reply,
            Err(e) if outcome_unknown(&e) => {
                if self.batch_is_stored(&key, events).await {
                    tracing::warn!(case, "redis append reply lost, but the batch is stored");
                    return Ok(());
                }
                return Err(unavailable(&e));
            }
            Err(e) => return Err(unavailable(&e)),
        };
        match reply.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            [conflict, found] if conflict == "conflict" => {
                let found = found.parse().map_err(|_| bad_reply("append script"))?;
                Err(StoreError::Conflict { expected, found })
            }
            _ => Err(bad_reply("append script")),
        }
    }

    async fn read(&self, case: &str, after: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let key = self.log_key(case);
        let mut out = Vec::new();
        let mut next = after.checked_add(1);
        while let Some(start) = next {
            let page = self
                .xrange(&key, &format!("{start}-0"), "+", READ_PAGE)
                .await?;
            let full = page.len() == READ_PAGE;
            next = match page.last() {
                Some(last) if full => last.seq.checked_add(1),
                _ => None,
            };
            out.extend(page);
        }
        Ok(out)
    }

    async fn list_cases(&self) -> Result<Vec<String>, StoreError> {
        let mut con = self.con.clone();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.cases_key())
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        if members.is_empty() {
            return Ok(members);
        }
        // Drop ids whose log does not exist (a first append that lost or failed after the SADD).
        let mut pipe = redis::pipe();
        for case in &members {
            pipe.cmd("EXISTS").arg(self.log_key(case));
        }
        let exists: Vec<bool> = pipe
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        let mut cases: Vec<String> = members
            .into_iter()
            .zip(exists)
            .filter_map(|(case, exists)| exists.then_some(case))
            .collect();
        cases.sort();
        Ok(cases)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let pong: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(bad_reply("PING"))
        }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entry_ids() {
        assert_eq!(parse_seq(b"1-0"), Some(1));
        assert_eq!(parse_seq(b"18446744073709551615-0"), Some(u64::MAX));
        assert_eq!(parse_seq(b"1-1"), None);
        assert_eq!(parse_seq(b"x-0"), None);
        assert_eq!(parse_seq(b"17"), None);
    }

    #[test]
    fn parses_xrange_replies() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"7-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"d".to_vec()),
                Value::BulkString(vec![0, 255, b'\n']),
            ]),
        ])]);
        assert_eq!(
            parse_entries(reply).unwrap(),
            vec![StoredEvent {
                seq: 7,
                data: vec![0, 255, b'\n']
            }]
        );
        assert!(parse_entries(Value::Nil).is_err());
    }
}
