//! The printable case record: one self-contained HTML page (no scripts, no external fonts,
//! styles or images) with the case, its participants, the agreement as signed, who signed which
//! version, the judicial confirmation, the outcome, the whole timeline, and whether the hash
//! chain verifies and the agreement document still matches the signed text.
//!
//! Served by `GET /admin/cases/{case}/export`. Chinese and English labels side by side; the
//! page declares UTF-8 and `lang="zh-CN"` and names CJK fonts commonly installed on Windows,
//! macOS, Android and Linux, falling back to the system's sans-serif, so both scripts render and
//! print. Every value from the record is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use yuntiao_signaling::event::{sha256_hex, ConsentKind, EventBody, NoteScope, Outcome};
use yuntiao_signaling::protocol::RosterEntry;
use yuntiao_signaling::{Event, Role, Visibility};

use crate::docs::task::DocSnapshot;

/// Everything the page shows.
pub struct ExportInput<'a> {
    pub case: &'a str,
    pub title: &'a str,
    pub events: &'a [Event],
    pub roster: &'a [RosterEntry],
    /// `Ok(head hash)` when the stored chain verifies, or why not.
    pub chain: Result<String, String>,
    /// The agreement document now, if it could be read.
    pub agreement: Option<DocSnapshot>,
    /// When the export was made, ms since the epoch.
    pub generated_ms: i64,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn role_label(r: Role) -> &'static str {
    match r {
        Role::Consumer => "消费者 Consumer",
        Role::Merchant => "商家 Merchant",
        Role::Mediator => "调解员 Mediator",
        Role::Judge => "法官 Judge",
    }
}

fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Settled => "调解成功 Settled",
        Outcome::PartiallySettled => "部分达成 Partially settled",
        Outcome::Failed => "调解不成 Failed",
        Outcome::Withdrawn => "撤回 Withdrawn",
        Outcome::ReferredToCourt => "转诉讼 Referred to court",
    }
}

fn scope_label(s: NoteScope) -> &'static str {
    match s {
        NoteScope::Shared => "共享 shared",
        NoteScope::Staff => "仅工作人员 staff only",
        NoteScope::Private => "个人 private",
    }
}

fn visibility_label(v: &Visibility) -> String {
    match v {
        Visibility::Everyone => "全体 everyone".into(),
        Visibility::Staff => "工作人员 staff".into(),
        Visibility::Caucus { caucus } => format!("背对背 caucus {}", escape(caucus)),
        Visibility::Participant { participant } => {
            format!("个人 participant {}", escape(participant))
        }
    }
}

const STYLE: &str = "
body{font-family:'Noto Sans CJK SC','Source Han Sans SC','PingFang SC','Microsoft YaHei',\
'WenQuanYi Micro Hei',sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#111;\
line-height:1.5}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #999;margin-top:1.6em}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #bbb;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#eee}
.agreement{white-space:pre-wrap;border:2px solid #333;padding:1em;font-size:1.05em}
.hash{font-family:monospace;font-size:.85em;word-break:break-all}
.ok{color:#064}.bad{color:#a00;font-weight:bold}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}tr{break-inside:avoid}}
";

/// Renders the page.
pub fn render(input: &ExportInput<'_>) -> String {
    let names: BTreeMap<&str, (&str, Role)> = input
        .roster
        .iter()
        .map(|r| (r.participant.as_str(), (r.name.as_str(), r.role)))
        .collect();
    let who = |id: &str| -> String {
        match names.get(id) {
            Some((name, role)) => format!("{}（{}）", escape(name), role_label(*role)),
            None => escape(id),
        }
    };
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>调解记录 Mediation record — {title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>调解记录 Mediation record</h1>\n<p><strong>{title}</strong></p>\n",
        title = escape(input.title),
    );

    // The case.
    let _ = write!(
        h,
        "<h2>案件 Case</h2>\n<table>\n<tr><th>案件编号 Case id</th><td>{}</td></tr>\n\
         <tr><th>导出时间 Exported</th><td>{}</td></tr>\n<tr><th>记录条数 Events</th><td>{}</td></tr>\n",
        escape(input.case),
        time(input.generated_ms),
        input.events.len()
    );
    match &input.chain {
        Ok(head) => {
            let _ = write!(
                h,
                "<tr><th>完整性 Integrity</th><td class=\"ok\">哈希链校验通过 hash chain verified\
                 </td></tr>\n<tr><th>末条哈希 Head hash</th><td class=\"hash\">{}</td></tr>\n",
                escape(head)
            );
        }
        Err(why) => {
            let _ = writeln!(
                h,
                "<tr><th>完整性 Integrity</th><td class=\"bad\">哈希链校验失败 hash chain \
                 verification FAILED: {}</td></tr>",
                escape(why)
            );
        }
    }
    h.push_str("</table>\n");

    // Participants.
    h.push_str(
        "<h2>参与人 Participants</h2>\n<table>\n<tr><th>姓名 Name</th><th>身份 Role</th>\
         <th>状态 Status</th></tr>\n",
    );
    for r in input.roster {
        let status = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.name),
            role_label(r.role),
            escape(&status)
        );
    }
    h.push_str("</table>\n");

    agreement_section(&mut h, input, &who);
    timeline_section(&mut h, input, &who);
    h.push_str("</body>\n</html>\n");
    h
}

/// The terms as proposed and decided: the confirmed terms if any, else the latest proposed.
fn agreement_section(h: &mut String, input: &ExportInput<'_>, who: &dyn Fn(&str) -> String) {
    h.push_str("<h2>协议 Agreement</h2>\n");
    let mut proposals: Vec<&Event> = input
        .events
        .iter()
        .filter(|e| matches!(e.body, EventBody::TermsProposed { .. }))
        .collect();
    let confirmed: Option<&str> = input.events.iter().rev().find_map(|e| match &e.body {
        EventBody::TermsConfirmed { terms, .. } => Some(terms.as_str()),
        _ => None,
    });
    let chosen = match confirmed {
        Some(c) => proposals
            .iter()
            .copied()
            .find(|e| matches!(&e.body, EventBody::TermsProposed { terms, .. } if terms == c)),
        None => proposals.pop(),
    };
    let Some(proposal) = chosen else {
        h.push_str("<p>尚未提出协议条款。No terms were proposed.</p>\n");
        return;
    };
    let EventBody::TermsProposed {
        terms,
        by,
        text,
        text_hash,
        document,
        doc_state,
    } = &proposal.body
    else {
        return;
    };
    let _ = write!(
        h,
        "<p>条款 Terms <strong>{}</strong>，由 proposed by {} 于 at {} 提出。</p>\n\
         <div class=\"agreement\">{}</div>\n<table>\n\
         <tr><th>文本哈希 Text hash (SHA-256)</th><td class=\"hash\">{}</td></tr>\n",
        escape(terms),
        who(by),
        time(proposal.ts),
        escape(text),
        escape(text_hash)
    );
    if let Some(d) = document {
        let _ = write!(
            h,
            "<tr><th>来源文档 From document</th><td>{}</td></tr>\n\
             <tr><th>文档版本 Document state vector</th><td class=\"hash\">{}</td></tr>\n",
            escape(d),
            escape(doc_state.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>\n");

    // Decisions and confirmation on these terms.
    h.push_str(
        "<h3>签署 Signatures</h3>\n<table>\n<tr><th>当事人 Party</th><th>决定 Decision</th>\
         <th>时间 Time</th><th>所签文本哈希 Signed text hash</th></tr>\n",
    );
    let mut any = false;
    for e in input.events {
        let row = match &e.body {
            EventBody::TermsAccepted {
                terms: t,
                by,
                text_hash,
            } if t == terms => Some((by, "接受并签署 Accepted and signed", text_hash.as_str())),
            EventBody::TermsRejected { terms: t, by, .. } if t == terms => {
                Some((by, "拒绝 Rejected", ""))
            }
            EventBody::TermsConfirmed {
                terms: t,
                by,
                text_hash,
            } if t == terms => Some((by, "司法确认 Judicial confirmation", text_hash.as_str())),
            _ => None,
        };
        if let Some((by, what, hash)) = row {
            any = true;
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"hash\">{}</td></tr>",
                who(by),
                what,
                time(e.ts),
                escape(hash)
            );
        }
    }
    if !any {
        h.push_str("<tr><td colspan=\"4\">尚无决定 No decisions yet</td></tr>\n");
    }
    h.push_str("</table>\n");

    // Does the agreement document still say what was signed?
    if document.is_some() {
        match &input.agreement {
            Some(now) => {
                let now_hash = sha256_hex(now.text.as_bytes());
                if now_hash == *text_hash {
                    let _ = writeln!(
                        h,
                        "<p class=\"ok\">协议文档当前内容与签署版本一致。The agreement document \
                         still matches the signed text (SHA-256 {}).</p>",
                        escape(&now_hash)
                    );
                } else {
                    let _ = write!(
                        h,
                        "<p class=\"bad\">协议文档在签署后已被修改，当前内容与签署版本不同。The \
                         agreement document was edited after signing: its current text differs \
                         from the signed text (current SHA-256 {}).</p>\n\
                         <h3>协议文档当前内容 Current agreement document</h3>\n\
                         <div class=\"agreement\">{}</div>\n",
                        escape(&now_hash),
                        escape(&now.text)
                    );
                }
            }
            None => h.push_str(
                "<p class=\"bad\">协议文档无法读取。The agreement document could not be read.</p>\n",
            ),
        }
    }

    if let Some((outcome, by, reason, ts)) = input.events.iter().rev().find_map(|e| match &e.body {
        EventBody::OutcomeRecorded {
            outcome,
            by,
            reason,
            ..
        } => Some((*outcome, by, reason, e.ts)),
        _ => None,
    }) {
        let _ = write!(
            h,
            "<h3>结果 Outcome</h3>\n<p><strong>{}</strong> — {}，{}</p>\n",
            outcome_label(outcome),
            who(by),
            time(ts)
        );
        if let Some(r) = reason {
            let _ = writeln!(h, "<p>原因 Reason: {}</p>", escape(r));
        }
    }
}

/// One line per event.
fn timeline_section(h: &mut String, input: &ExportInput<'_>, who: &dyn Fn(&str) -> String) {
    h.push_str(
        "<h2>时间线 Timeline</h2>\n<table>\n<tr><th>#</th><th>时间 Time</th>\
         <th>范围 Visible to</th><th>事件 Event</th></tr>\n",
    );
    for e in input.events {
        let what = match &e.body {
            EventBody::CaseCreated { title, .. } => format!("立案 Case created: {}", escape(title)),
            EventBody::InviteIssued { participant, .. } => {
                format!("发出邀请 Invite issued to {}", who(participant))
            }
            EventBody::InviteRevoked { jti } => {
                format!("撤销邀请 Invite revoked ({})", escape(jti))
            }
            EventBody::ParticipantJoined { participant, .. } => {
                format!("加入 Joined: {}", who(participant))
            }
            EventBody::Admitted {
                participant, by, ..
            } => {
                format!("准入 Admitted: {} (by {})", who(participant), who(by))
            }
            EventBody::Denied {
                participant,
                by,
                reason,
            } => format!(
                "拒绝入场 Denied: {} (by {}) {}",
                who(participant),
                who(by),
                escape(reason.as_deref().unwrap_or(""))
            ),
            EventBody::Left { participant } => format!("离开 Left: {}", who(participant)),
            EventBody::Removed {
                participant,
                by,
                reason,
            } => format!(
                "移出 Removed: {} (by {}) {}",
                who(participant),
                who(by),
                escape(reason.as_deref().unwrap_or(""))
            ),
            EventBody::Chat { from, text } => format!("{}: {}", who(from), escape(text)),
            EventBody::CaucusStarted {
                caucus, members, ..
            } => format!(
                "背对背开始 Caucus {} started: {}",
                escape(caucus),
                members
                    .iter()
                    .map(|m| who(m))
                    .collect::<Vec<_>>()
                    .join("、")
            ),
            EventBody::CaucusEnded { caucus, .. } => {
                format!("背对背结束 Caucus {} ended", escape(caucus))
            }
            EventBody::NoteAdded {
                author,
                scope,
                text,
            } => format!(
                "笔录 Note ({}) — {}: {}",
                scope_label(*scope),
                who(author),
                escape(text)
            ),
            EventBody::TermsProposed {
                terms, by, text, ..
            } => format!(
                "提出条款 Terms {} proposed by {}: {}",
                escape(terms),
                who(by),
                escape(text)
            ),
            EventBody::TermsAccepted { terms, by, .. } => {
                format!("接受 Terms {} accepted by {}", escape(terms), who(by))
            }
            EventBody::TermsRejected { terms, by, reason } => format!(
                "拒绝 Terms {} rejected by {} {}",
                escape(terms),
                who(by),
                escape(reason.as_deref().unwrap_or(""))
            ),
            EventBody::TermsConfirmed { terms, by, .. } => {
                format!("司法确认 Terms {} confirmed by {}", escape(terms), who(by))
            }
            EventBody::OutcomeRecorded {
                outcome,
                by,
                reason,
                ..
            } => format!(
                "结果 Outcome: {} (by {}) {}",
                outcome_label(*outcome),
                who(by),
                escape(reason.as_deref().unwrap_or(""))
            ),
            EventBody::ConsentGiven {
                participant,
                consent,
                given,
            } => format!(
                "{} {}: {}",
                match consent {
                    ConsentKind::OnlineMediation => "同意在线调解 Consent to online mediation",
                    ConsentKind::Recording => "同意录制 Consent to recording",
                },
                if *given { "是 yes" } else { "否 no" },
                who(participant)
            ),
            EventBody::DocPermission {
                doc,
                participant,
                write,
                by,
            } => format!(
                "文档权限 {} {} {} (by {})",
                escape(doc),
                if *write {
                    "可编辑 may edit:"
                } else {
                    "只读 read only:"
                },
                who(participant),
                who(by)
            ),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.seq,
            time(e.ts),
            visibility_label(&e.visibility),
            what
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<b>\"退款\" & 'x'</b>"),
            "&lt;b&gt;&quot;退款&quot; &amp; &#39;x&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
    }
}
