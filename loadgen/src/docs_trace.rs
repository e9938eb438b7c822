//! The editing trace of the shared-document benchmark (`docs-trace`): a long, deterministic,
//! real-world-like sequence of single-character edits, and the y-websocket messages a `yrs`
//! editor sends for it.
//!
//! No public trace of Chinese/ASCII agreement editing was at hand, so one is generated from a
//! seeded RNG (`rand::rngs::StdRng`, the same seed gives the same trace on every machine). The
//! generator models one person drafting a mediation agreement:
//!
//! * **typing runs** at a moving cursor: run lengths are geometric (mean ≈ 24 characters), the
//!   characters come from a content stream of sentences mixing Chinese phrases of the trade
//!   (消费者, 退款, 本协议自双方签字之日起生效, ...) with ASCII words and numbers (order numbers,
//!   dates, amounts, `iPhone`, `SKU`), full-width punctuation, and a newline after about one
//!   sentence in four; a run may stop mid-word and the next one goes on with the same stream;
//! * **backspace runs**: mostly short (mean ≈ 5: a typo, a word), one in eight long (mean ≈ 40:
//!   a sentence rewritten); each backspace deletes the character before the cursor;
//! * **cursor jumps** between runs (one run in ten): to a uniformly random position (60 %), to
//!   the end of the document (25 %), or a few dozen characters away (15 %).
//!
//! Whether the next run types or deletes is chosen so that the document grows steadily towards
//! `target_bytes` of UTF-8 at the last edit: while the document is larger than its share of
//! the target for the progress so far, a run deletes with probability 0.6, otherwise 0.2 (never
//! at offset 0). With the defaults (260,000 edits, 160 KiB) about a third of the edits are
//! backspaces, like the well-known automerge-paper trace (260k edits, 30 % deletions).
//!
//! Every character is in the Basic Multilingual Plane, so an offset in characters is also the
//! UTF-16 offset that Yjs uses; the simulated text is a gap buffer (two stacks around the
//! cursor), so the generation is linear in the cursor's movements.
//!
//! [`encode`] then replays the trace in a `yrs` document (UTF-16 offsets, a fixed client id),
//! one transaction per edit, and keeps each transaction's update wrapped as the y-websocket
//! `Update` message the browser provider would send for that keystroke. The replayed text is
//! checked against the simulated one.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yrs::sync::protocol::SyncMessage;
use yrs::sync::Message;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, OffsetKind, Options, Text, Transact};

/// The name of the shared text in every Yuntiao document.
pub const TEXT: &str = "text";

/// One single-character edit; offsets in UTF-16 code units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Insert `ch` at this offset.
    Insert(u32, char),
    /// Delete the character at this offset.
    Delete(u32),
}

/// A generated trace and what it produces.
pub struct Trace {
    pub edits: Vec<Edit>,
    pub final_text: String,
    pub stats: TraceStats,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TraceStats {
    pub seed: u64,
    pub edits: usize,
    pub inserts: usize,
    pub deletes: usize,
    pub typing_runs: usize,
    pub backspace_runs: usize,
    pub jumps: usize,
    pub final_chars: usize,
    pub final_utf8_bytes: usize,
    pub final_utf16_units: usize,
    pub final_newlines: usize,
    /// Characters of the final text outside ASCII (Chinese characters and punctuation).
    pub final_non_ascii_chars: usize,
}

const ZH: &[&str] = &[
    "消费者",
    "商家",
    "调解员",
    "双方",
    "同意",
    "退款",
    "退货",
    "换货",
    "赔偿",
    "协议",
    "订单",
    "商品",
    "存在质量问题",
    "七日内",
    "发货",
    "收到",
    "申请",
    "金额",
    "人民币",
    "元",
    "支付",
    "确认",
    "根据",
    "《中华人民共和国消费者权益保护法》",
    "第二十四条",
    "约定",
    "履行",
    "争议",
    "解决",
    "本协议",
    "签字",
    "之日起生效",
    "快递单号",
    "客服",
    "维修",
    "三包",
    "凭证",
    "一次性",
    "不再",
    "追究",
    "责任",
    "如",
    "未按期",
    "可向人民法院申请司法确认",
    "经调解",
    "自愿达成如下协议",
    "甲方",
    "乙方",
    "承担",
    "运费",
    "的",
    "在",
    "并",
    "已",
    "和",
];

const ASCII: &[&str] = &[
    "iPhone 15",
    "SKU",
    "No.",
    "JD",
    "Taobao",
    "WeChat Pay",
    "Alipay",
    "OK",
    "ID",
    "App",
    "PDF",
    "SF Express",
    "email",
    "v2",
    "refund",
];

const PUNCT_MID: &[&str] = &["，", "、", "；", "："];

/// The stream of characters the author types: sentences of Chinese phrases, ASCII words and
/// numbers, full-width punctuation, newlines.
struct Content {
    buf: Vec<char>,
    pos: usize,
}

impl Content {
    fn new() -> Content {
        Content {
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn next(&mut self, rng: &mut StdRng) -> char {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            sentence(rng, &mut self.buf);
        }
        let c = self.buf[self.pos];
        self.pos += 1;
        c
    }
}

fn sentence(rng: &mut StdRng, out: &mut Vec<char>) {
    let tokens = rng.random_range(4..16);
    let mut s = String::new();
    for t in 0..tokens {
        let r: f64 = rng.random();
        if r < 0.70 {
            s.push_str(ZH[rng.random_range(0..ZH.len())]);
        } else if r < 0.85 {
            s.push(' ');
            s.push_str(ASCII[rng.random_range(0..ASCII.len())]);
            s.push(' ');
        } else {
            // A number: an order number, an amount, a date.
            match rng.random_range(0..3) {
                0 => s.push_str(&format!(
                    " {} ",
                    rng.random_range(100_000_000u64..999_999_999)
                )),
                1 => s.push_str(&format!(
                    "{}.{:02}",
                    rng.random_range(1..5000),
                    rng.random_range(0..100)
                )),
                _ => s.push_str(&format!(
                    "2024-{:02}-{:02}",
                    rng.random_range(1..13),
                    rng.random_range(1..29)
                )),
            }
        }
        if t + 1 < tokens && rng.random_bool(0.25) {
            s.push_str(PUNCT_MID[rng.random_range(0..PUNCT_MID.len())]);
        }
    }
    s.push('。');
    if rng.random_bool(0.25) {
        s.push('\n');
    }
    out.extend(s.chars());
}

/// A geometric run length with mean `mean` (at least 1).
fn geometric(rng: &mut StdRng, mean: f64) -> usize {
    let p = 1.0 / mean;
    let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    1 + (u.ln() / (1.0 - p).ln()).floor() as usize
}

/// The simulated text: characters left of the cursor, and right of it in reverse order.
struct GapText {
    left: Vec<char>,
    right: Vec<char>,
    bytes: usize,
}

impl GapText {
    fn len(&self) -> usize {
        self.left.len() + self.right.len()
    }

    fn move_to(&mut self, pos: usize) {
        while self.left.len() > pos {
            let c = self.left.pop().expect("non-empty");
            self.right.push(c);
        }
        while self.left.len() < pos {
            let Some(c) = self.right.pop() else { break };
            self.left.push(c);
        }
    }

    fn text(&self) -> String {
        self.left.iter().chain(self.right.iter().rev()).collect()
    }
}

/// The text that `edits` produce from an empty document (the simulation, without `yrs`).
pub fn replay_text(edits: &[Edit]) -> String {
    let mut t = GapText {
        left: Vec::new(),
        right: Vec::new(),
        bytes: 0,
    };
    for e in edits {
        match *e {
            Edit::Insert(pos, c) => {
                t.move_to(pos as usize);
                t.left.push(c);
            }
            Edit::Delete(pos) => {
                t.move_to(pos as usize + 1);
                t.left.pop();
            }
        }
    }
    t.text()
}

/// Generates `n` edits whose final text is about `target_bytes` of UTF-8.
pub fn generate(seed: u64, n: usize, target_bytes: usize) -> Trace {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut content = Content::new();
    let mut t = GapText {
        left: Vec::new(),
        right: Vec::new(),
        bytes: 0,
    };
    let mut edits = Vec::with_capacity(n);
    let mut stats = TraceStats {
        seed,
        ..TraceStats::default()
    };
    while edits.len() < n {
        // Between runs: maybe move the cursor.
        if t.len() > 0 && rng.random_bool(0.10) {
            stats.jumps += 1;
            let r: f64 = rng.random();
            let to = if r < 0.60 {
                rng.random_range(0..=t.len())
            } else if r < 0.85 {
                t.len()
            } else {
                let d = rng.random_range(-60i64..=60);
                (t.left.len() as i64 + d).clamp(0, t.len() as i64) as usize
            };
            t.move_to(to);
        }
        let progress = edits.len() as f64 / n as f64;
        let ahead = t.bytes as f64 > target_bytes as f64 * progress;
        let p_delete = if ahead { 0.6 } else { 0.2 };
        let left = n - edits.len();
        if !t.left.is_empty() && rng.random_bool(p_delete) {
            stats.backspace_runs += 1;
            let mean = if rng.random_bool(0.125) { 40.0 } else { 5.0 };
            let len = geometric(&mut rng, mean).min(t.left.len()).min(left);
            for _ in 0..len {
                let c = t.left.pop().expect("checked");
                t.bytes -= c.len_utf8();
                edits.push(Edit::Delete(t.left.len() as u32));
                stats.deletes += 1;
            }
        } else {
            stats.typing_runs += 1;
            let len = geometric(&mut rng, 24.0).min(left);
            for _ in 0..len {
                let c = content.next(&mut rng);
                edits.push(Edit::Insert(t.left.len() as u32, c));
                t.left.push(c);
                t.bytes += c.len_utf8();
                stats.inserts += 1;
            }
        }
    }
    let final_text = t.text();
    stats.edits = edits.len();
    stats.final_chars = final_text.chars().count();
    stats.final_utf8_bytes = final_text.len();
    stats.final_utf16_units = final_text.encode_utf16().count();
    stats.final_newlines = final_text.chars().filter(|c| *c == '\n').count();
    stats.final_non_ascii_chars = final_text.chars().filter(|c| !c.is_ascii()).count();
    debug_assert_eq!(stats.final_chars, stats.final_utf16_units);
    Trace {
        edits,
        final_text,
        stats,
    }
}

/// A new document with the offsets Yjs uses.
pub fn new_doc(client_id: u64) -> Doc {
    Doc::with_options(Options {
        client_id: yrs::ClientID::new(client_id),
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// Wraps a Yjs update in a y-websocket `Update` message.
pub fn update_message(update: Vec<u8>) -> Bytes {
    Bytes::from(Message::Sync(SyncMessage::Update(update)).encode_v1())
}

/// Replays `edits` in a fresh `yrs` document (client id `client_id`), one transaction each, and
/// returns the y-websocket message of every edit, and the document's final text.
pub fn encode(edits: &[Edit], client_id: u64) -> (Vec<Bytes>, String) {
    let doc = new_doc(client_id);
    let text = doc.get_or_insert_text(TEXT);
    let mut out = Vec::with_capacity(edits.len());
    let mut buf = [0u8; 4];
    for e in edits {
        let update = {
            let mut txn = doc.transact_mut();
            match *e {
                Edit::Insert(pos, c) => text.insert(&mut txn, pos, c.encode_utf8(&mut buf)),
                Edit::Delete(pos) => text.remove_range(&mut txn, pos, 1),
            }
            txn.encode_update_v1()
        };
        out.push(update_message(update));
    }
    let s = text.get_string(&doc.transact());
    (out, s)
}

/// [`encode`], cached in `path`: replaying 260,000 index-based edits in `yrs` takes tens of
/// seconds (each local insert walks the text's item list from its start), and the benchmark
/// script runs the same trace against three servers. The cache is keyed by everything the
/// messages depend on and is rewritten when the key differs.
pub fn encode_cached(
    trace: &Trace,
    client_id: u64,
    path: Option<&std::path::Path>,
) -> anyhow::Result<Vec<Bytes>> {
    use anyhow::Context;
    let key = format!(
        "yuntiao-docs-trace v1 seed={} edits={} bytes={} client={client_id}\n",
        trace.stats.seed, trace.stats.edits, trace.stats.final_utf8_bytes
    );
    if let Some(p) = path {
        if let Ok(data) = std::fs::read(p) {
            if let Some(msgs) = read_cache(&data, &key, trace.edits.len()) {
                return Ok(msgs);
            }
        }
    }
    let (msgs, text) = encode(&trace.edits, client_id);
    if text != trace.final_text {
        anyhow::bail!("the yrs replay of the trace differs from the simulated text");
    }
    if let Some(p) = path {
        let mut out = key.into_bytes();
        for m in &msgs {
            out.extend_from_slice(&(m.len() as u32).to_le_bytes());
            out.extend_from_slice(m);
        }
        std::fs::write(p, out).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(msgs)
}

fn read_cache(data: &[u8], key: &str, n: usize) -> Option<Vec<Bytes>> {
    let rest = data.strip_prefix(key.as_bytes())?;
    let rest = Bytes::copy_from_slice(rest);
    let mut msgs = Vec::with_capacity(n);
    let mut pos = 0;
    while pos < rest.len() {
        let len = u32::from_le_bytes(rest.get(pos..pos + 4)?.try_into().ok()?) as usize;
        pos += 4;
        msgs.push(rest.slice(pos..pos.checked_add(len).filter(|e| *e <= rest.len())?));
        pos += len;
    }
    (msgs.len() == n).then_some(msgs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_replays_to_the_simulated_text() {
        let a = generate(7, 5_000, 3_000);
        let b = generate(7, 5_000, 3_000);
        assert_eq!(a.edits, b.edits);
        assert_eq!(a.edits.len(), 5_000);
        let (msgs, text) = encode(&a.edits, 42);
        assert_eq!(msgs.len(), 5_000);
        assert_eq!(text, a.final_text);
        assert_eq!(replay_text(&a.edits), a.final_text);
        assert_eq!(
            replay_text(&a.edits[..1234]),
            encode(&a.edits[..1234], 42).1
        );
        assert!(a.stats.deletes > 0 && a.stats.jumps > 0 && a.stats.final_non_ascii_chars > 0);
    }
}
