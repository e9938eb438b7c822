//! The web client's protocol types, generated from this crate's definitions with `ts-rs`, so
//! the browser cannot drift from the server (DESIGN.md, "Shape").
//!
//! The generated file is `web-client/src/generated/protocol.ts`, committed so that building the
//! client needs no Rust toolchain. The test below regenerates it in memory and fails when the
//! committed file differs; `UPDATE_TS=1 cargo test -p yuntiao-signaling typescript` rewrites it.
//! (The derives are test-only: the server binary carries no TypeScript machinery.)

#[cfg(test)]
mod tests {
    use ts_rs::{Config, TS};

    use crate::document::DocAccess;
    use crate::event::{
        CaseParticipant, ConsentKind, Event, EventBody, JoinedAs, NoteScope, Outcome, Visibility,
    };
    use crate::protocol::{
        CaucusView, ClientMessage, DocVersion, DownlinkVideo, ErrorCode, IceServer, LayerQuality,
        MediaKind, ProtocolError, Request, RosterEntry, ServerMessage, TrackInfo, Welcome,
    };
    use crate::role::Role;
    use crate::room::ParticipantStatus;

    const HEADER: &str =
        "// Generated from the Rust definitions in signaling/src by ts-rs; do not edit.\n\
// Regenerate: UPDATE_TS=1 cargo test -p yuntiao-signaling typescript\n\n";

    fn generate() -> String {
        // Sequence numbers and times are JSON numbers well below 2^53.
        let cfg = Config::new().with_large_int("number");
        let decls = [
            Role::decl(&cfg),
            ErrorCode::decl(&cfg),
            ProtocolError::decl(&cfg),
            MediaKind::decl(&cfg),
            LayerQuality::decl(&cfg),
            DownlinkVideo::decl(&cfg),
            NoteScope::decl(&cfg),
            Outcome::decl(&cfg),
            ConsentKind::decl(&cfg),
            JoinedAs::decl(&cfg),
            ParticipantStatus::decl(&cfg),
            Visibility::decl(&cfg),
            CaseParticipant::decl(&cfg),
            DocAccess::decl(&cfg),
            DocVersion::decl(&cfg),
            Request::decl(&cfg),
            ClientMessage::decl(&cfg),
            RosterEntry::decl(&cfg),
            CaucusView::decl(&cfg),
            IceServer::decl(&cfg),
            Welcome::decl(&cfg),
            TrackInfo::decl(&cfg),
            EventBody::decl(&cfg),
            Event::decl(&cfg),
            ServerMessage::decl(&cfg),
        ];
        let mut out = String::from(HEADER);
        for d in decls {
            out.push_str("export ");
            out.push_str(&d);
            out.push_str("\n\n");
        }
        out
    }

    #[test]
    fn typescript_types_are_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../web-client/src/generated/protocol.ts");
        let want = generate();
        if std::env::var("UPDATE_TS").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is out of date: run `UPDATE_TS=1 cargo test -p yuntiao-signaling typescript`",
            path.display()
        );
    }
}
