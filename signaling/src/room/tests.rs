//! Unit tests of the room state machine.
//!
//! Every test drives a [`Room`] the way the server does: a request (or an admin command, or a
//! join) gives drafts, the drafts are sealed with a time given by the test, then applied. Nothing
//! reads a clock, so every test is deterministic. The fixture is one consumer dispute: a consumer,
//! a merchant, a mediator and a judge, invited by token and (for the parties) admitted from the
//! lobby; `VISITOR` is an extra person from the merchant's side used where someone must be waiting.

use super::*;

use sha2::{Digest, Sha256};

use crate::document::DocAccess;
use crate::protocol::REQUEST_TYPES;

const CASE: &str = "case-2024-0731";
const TITLE: &str = "张某诉某电器店退货纠纷";
const CONSUMER: &str = "consumer-1";
const MERCHANT: &str = "merchant-1";
const MEDIATOR: &str = "mediator-1";
const JUDGE: &str = "judge-1";
/// A second person from the merchant's side, invited later; waits in the lobby where needed.
const VISITOR: &str = "merchant-2";
const EVERYONE: [&str; 4] = [CONSUMER, MERCHANT, MEDIATOR, JUDGE];
const T0: i64 = 1_767_000_000_000;
const TERMS: &str = "商家于三日内退还货款人民币1299元，消费者退回电视机一台。";

fn role_of(id: &str) -> Role {
    match id {
        CONSUMER => Role::Consumer,
        MERCHANT | VISITOR => Role::Merchant,
        MEDIATOR => Role::Mediator,
        JUDGE => Role::Judge,
        other => panic!("no role for {other}"),
    }
}

fn id_of(role: Role) -> &'static str {
    match role {
        Role::Consumer => CONSUMER,
        Role::Merchant => MERCHANT,
        Role::Mediator => MEDIATOR,
        Role::Judge => JUDGE,
    }
}

fn name_of(id: &str) -> &'static str {
    match id {
        CONSUMER => "张三",
        MERCHANT => "某电器店",
        VISITOR => "某电器店店员",
        MEDIATOR => "李调解员",
        JUDGE => "王法官",
        other => panic!("no name for {other}"),
    }
}

fn jti(id: &str) -> String {
    format!("jti-{id}")
}

fn claims(id: &str) -> InviteClaims {
    InviteClaims {
        iss: "yuntiao".into(),
        aud: "https://tiao.example.cn".into(),
        sub: id.into(),
        case: CASE.into(),
        role: role_of(id).as_str().into(),
        name: name_of(id).into(),
        exp: T0 / 1000 + 86_400,
        nbf: T0 / 1000 - 60,
        iat: T0 / 1000 - 60,
        jti: jti(id),
    }
}

// ----- request shorthands ---------------------------------------------------------------------

fn chat(text: &str) -> Request {
    Request::Chat { text: text.into() }
}

fn admit(p: &str) -> Request {
    Request::Admit {
        participant: p.into(),
    }
}

fn deny(p: &str, reason: Option<&str>) -> Request {
    Request::Deny {
        participant: p.into(),
        reason: reason.map(Into::into),
    }
}

fn remove(p: &str, reason: Option<&str>) -> Request {
    Request::Remove {
        participant: p.into(),
        reason: reason.map(Into::into),
    }
}

fn leave() -> Request {
    Request::Leave {}
}

fn caucus_start(members: &[&str]) -> Request {
    Request::CaucusStart {
        members: members.iter().map(|m| m.to_string()).collect(),
    }
}

fn caucus_end(caucus: &str) -> Request {
    Request::CaucusEnd {
        caucus: caucus.into(),
    }
}

fn note(text: &str, scope: NoteScope) -> Request {
    Request::Note {
        text: text.into(),
        scope,
    }
}

fn propose(text: &str) -> Request {
    Request::ProposeTerms {
        text: text.into(),
        document: None,
        version: None,
    }
}

fn accept(terms: &str) -> Request {
    Request::AcceptTerms {
        terms: terms.into(),
        text_hash: None,
    }
}

fn reject(terms: &str, reason: Option<&str>) -> Request {
    Request::RejectTerms {
        terms: terms.into(),
        reason: reason.map(Into::into),
    }
}

fn confirm(terms: &str) -> Request {
    Request::ConfirmTerms {
        terms: terms.into(),
    }
}

fn outcome(outcome: Outcome, reason: Option<&str>) -> Request {
    Request::RecordOutcome {
        outcome,
        reason: reason.map(Into::into),
    }
}

fn consent(kind: ConsentKind, given: bool) -> Request {
    Request::Consent { kind, given }
}

fn doc_permission(doc: &str, participant: &str, write: bool) -> Request {
    Request::DocPermission {
        doc: doc.into(),
        participant: participant.into(),
        write,
    }
}

// ----- event helpers --------------------------------------------------------------------------

fn only(events: &[Event]) -> Event {
    assert_eq!(events.len(), 1, "expected exactly one event: {events:?}");
    events[0].clone()
}

fn caucus_id(e: &Event) -> String {
    match &e.body {
        EventBody::CaucusStarted { caucus, .. } => caucus.clone(),
        other => panic!("not a caucus_started event: {other:?}"),
    }
}

fn terms_id(e: &Event) -> String {
    match &e.body {
        EventBody::TermsProposed { terms, .. } => terms.clone(),
        other => panic!("not a terms_proposed event: {other:?}"),
    }
}

fn seqs<'a>(events: impl Iterator<Item = Cow<'a, Event>>) -> Vec<u64> {
    events.map(|e| e.seq).collect()
}

/// The whole state of a room, for "nothing changed" comparisons.
fn snapshot(room: &Room) -> String {
    format!("{room:?}")
}

fn sha256_of(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

// ----- the fixture ----------------------------------------------------------------------------

/// A room plus the clock the test feeds it.
struct Fx {
    room: Room,
    now: i64,
}

impl Fx {
    /// The case is created and the four participants are invited; nobody has joined.
    fn invited() -> Fx {
        let mut fx = Fx {
            room: Room::new(),
            now: T0,
        };
        let participants = [CONSUMER, MERCHANT, MEDIATOR, JUDGE]
            .into_iter()
            .map(|id| CaseParticipant {
                participant: id.into(),
                role: role_of(id),
                name: name_of(id).into(),
            })
            .collect();
        let drafts = fx.room.create_case(CASE, TITLE, participants).unwrap();
        fx.commit(drafts);
        for id in EVERYONE {
            fx.invite(id);
        }
        fx
    }

    /// Everyone joined: staff are in the room, the parties wait in the lobby.
    fn joined() -> Fx {
        let mut fx = Fx::invited();
        for id in [MEDIATOR, JUDGE, CONSUMER, MERCHANT] {
            fx.join(id);
        }
        fx
    }

    /// All four participants are in the room.
    fn admitted() -> Fx {
        let mut fx = Fx::joined();
        fx.act(MEDIATOR, admit(CONSUMER));
        fx.act(MEDIATOR, admit(MERCHANT));
        for id in EVERYONE {
            assert_eq!(fx.status(id), ParticipantStatus::Admitted);
        }
        fx
    }

    /// Adds `VISITOR`, invited and waiting in the lobby.
    fn with_visitor_in_lobby(mut self) -> Fx {
        self.invite(VISITOR);
        self.join(VISITOR);
        assert_eq!(self.status(VISITOR), ParticipantStatus::Lobby);
        self
    }

    /// Seals drafts at the next instant and applies them, as the server does once stored.
    fn commit(&mut self, drafts: Vec<Draft>) -> Vec<Event> {
        self.now += 1_000;
        let events = self.room.seal(drafts, self.now);
        for e in &events {
            self.room.apply(e.clone());
        }
        events
    }

    /// handle → seal → apply; the request must succeed.
    fn act(&mut self, actor: &str, request: Request) -> Vec<Event> {
        let drafts = self
            .room
            .handle(actor, &request)
            .unwrap_or_else(|e| panic!("{actor} {}: {e}", request.type_name()));
        self.commit(drafts)
    }

    /// The request must fail with `code`, and the room must be exactly as before.
    fn refuse(&self, actor: &str, request: Request, code: ErrorCode) -> ProtocolError {
        let before = snapshot(&self.room);
        let (seq, hash) = (self.room.head_seq(), self.room.head_hash().to_owned());
        let e = match self.room.handle(actor, &request) {
            Ok(drafts) => panic!(
                "{actor} {}: expected {code:?}, got drafts {drafts:?}",
                request.type_name()
            ),
            Err(e) => e,
        };
        assert_eq!(
            e.code,
            code,
            "{actor} {}: {}",
            request.type_name(),
            e.message
        );
        assert!(!e.message.is_empty());
        assert_eq!(self.room.head_seq(), seq);
        assert_eq!(self.room.head_hash(), hash);
        assert_eq!(snapshot(&self.room), before);
        e
    }

    fn invite(&mut self, id: &str) -> Vec<Event> {
        let drafts = self
            .room
            .issue_invite(&jti(id), id, role_of(id), name_of(id), T0 / 1000 + 86_400)
            .unwrap();
        self.commit(drafts)
    }

    fn join(&mut self, id: &str) -> Vec<Event> {
        let drafts = self
            .room
            .join(&claims(id))
            .unwrap_or_else(|e| panic!("join {id}: {e}"));
        self.commit(drafts)
    }

    /// The join must fail with `code`, and the room must be exactly as before.
    fn refuse_join(&self, claims: &InviteClaims, code: ErrorCode) {
        let before = snapshot(&self.room);
        match self.room.join(claims) {
            Ok(drafts) => panic!("join {}: expected {code:?}, got {drafts:?}", claims.sub),
            Err(e) => assert_eq!(e.code, code, "join {}: {}", claims.sub, e.message),
        }
        assert_eq!(snapshot(&self.room), before);
    }

    fn status(&self, id: &str) -> ParticipantStatus {
        self.room.participant(id).expect("known participant").status
    }

    /// Who of the four may see `e`, in the order consumer, merchant, mediator, judge.
    fn seen_by(&self, e: &Event) -> [bool; 4] {
        EVERYONE.map(|id| self.room.can_see(id, e))
    }

    /// Proposes terms and has both parties accept them; returns the terms id.
    fn accepted_terms(&mut self) -> String {
        let t = terms_id(&only(&self.act(MEDIATOR, propose(TERMS))));
        self.act(CONSUMER, accept(&t));
        self.act(MERCHANT, accept(&t));
        t
    }
}

// ----- 1. the permission matrix, per message type and role ------------------------------------

/// One row of the matrix test: a room in which `request` would succeed for a permitted role, and
/// the roles DESIGN.md lets send it.
struct MatrixCase {
    fx: Fx,
    request: Request,
    design: &'static [Role],
}

const ALL_ROLES: &[Role] = &Role::ALL;
const STAFF: &[Role] = &[Role::Mediator, Role::Judge];
const PARTIES: &[Role] = &[Role::Consumer, Role::Merchant];
const JUDGE_ONLY: &[Role] = &[Role::Judge];
const MEDIATOR_ONLY: &[Role] = &[Role::Mediator];

/// Every request the room handles (all but `join` and `ping`), some in several forms.
fn matrix_templates() -> Vec<Request> {
    vec![
        chat("大家好"),
        admit(VISITOR),
        deny(VISITOR, Some("非本案当事人")),
        remove(CONSUMER, None),
        leave(),
        caucus_start(&[CONSUMER]),
        caucus_end("set by matrix_case"),
        note("核对发票", NoteScope::Shared),
        note("商家态度强硬", NoteScope::Staff),
        note("提醒自己核对保修条款", NoteScope::Private),
        propose(TERMS),
        accept("set by matrix_case"),
        reject("set by matrix_case", Some("金额太低")),
        confirm("set by matrix_case"),
        outcome(Outcome::Settled, None),
        outcome(Outcome::PartiallySettled, None),
        outcome(Outcome::Failed, Some("双方分歧过大")),
        outcome(Outcome::Withdrawn, None),
        outcome(Outcome::ReferredToCourt, None),
        consent(ConsentKind::OnlineMediation, true),
        consent(ConsentKind::Recording, false),
        doc_permission("agreement", CONSUMER, true),
        Request::MediaOffer { sdp: "v=0".into() },
        Request::MediaAnswer { sdp: "v=0".into() },
        Request::IceCandidate {
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
        },
        Request::Mute {
            kind: crate::protocol::MediaKind::Audio,
            muted: true,
        },
        Request::MediaLayer {
            mid: "1".into(),
            quality: crate::protocol::LayerQuality::Low,
        },
    ]
}

/// Builds the state in which `template` is valid. The `match` is exhaustive on purpose: a new
/// `Request` variant does not compile until it has a row here.
fn matrix_case(template: &Request) -> MatrixCase {
    let (fx, request, design) = match template {
        Request::Join { .. } | Request::Ping {} => {
            unreachable!("join and ping are answered by the server")
        }
        Request::Chat { .. } => (Fx::admitted(), template.clone(), ALL_ROLES),
        Request::Admit { .. } | Request::Deny { .. } => (
            Fx::admitted().with_visitor_in_lobby(),
            template.clone(),
            STAFF,
        ),
        Request::Remove { .. } => (Fx::admitted(), template.clone(), STAFF),
        Request::Leave {} => (Fx::admitted(), template.clone(), ALL_ROLES),
        Request::CaucusStart { .. } => (Fx::admitted(), template.clone(), STAFF),
        Request::CaucusEnd { .. } => {
            let mut fx = Fx::admitted();
            // Both staff are members, so either may end it.
            let k = caucus_id(&only(&fx.act(MEDIATOR, caucus_start(&[JUDGE, CONSUMER]))));
            (fx, caucus_end(&k), STAFF)
        }
        Request::Note { .. } => (Fx::admitted(), template.clone(), STAFF),
        Request::ProposeTerms { .. } => (Fx::admitted(), template.clone(), STAFF),
        Request::AcceptTerms { .. } => {
            let mut fx = Fx::admitted();
            let t = terms_id(&only(&fx.act(MEDIATOR, propose(TERMS))));
            (fx, accept(&t), PARTIES)
        }
        Request::RejectTerms { reason, .. } => {
            let mut fx = Fx::admitted();
            let t = terms_id(&only(&fx.act(MEDIATOR, propose(TERMS))));
            (fx, reject(&t, reason.as_deref()), PARTIES)
        }
        Request::ConfirmTerms { .. } => {
            let mut fx = Fx::admitted();
            let t = fx.accepted_terms();
            (fx, confirm(&t), JUDGE_ONLY)
        }
        Request::RecordOutcome { outcome, .. } => {
            let mut fx = Fx::admitted();
            if *outcome == Outcome::Settled {
                fx.accepted_terms();
            }
            (fx, template.clone(), STAFF)
        }
        Request::Consent { .. } => (Fx::admitted(), template.clone(), ALL_ROLES),
        Request::DocPermission { .. } => (Fx::admitted(), template.clone(), MEDIATOR_ONLY),
        // Audio, video and chat share one row of the matrix.
        Request::MediaOffer { .. }
        | Request::MediaAnswer { .. }
        | Request::IceCandidate { .. }
        | Request::Mute { .. }
        | Request::MediaLayer { .. } => (Fx::admitted(), template.clone(), ALL_ROLES),
    };
    MatrixCase {
        fx,
        request,
        design,
    }
}

#[test]
fn matrix_templates_cover_every_request_type() {
    let covered: BTreeSet<&str> = matrix_templates().iter().map(|r| r.type_name()).collect();
    let expected: BTreeSet<&str> = REQUEST_TYPES
        .into_iter()
        .filter(|t| !matches!(*t, "join" | "ping"))
        .collect();
    assert_eq!(covered, expected);
}

#[test]
fn permission_matrix_every_request_every_role() {
    let mut allowed_cells = 0;
    let mut forbidden_cells = 0;
    for template in matrix_templates() {
        for role in Role::ALL {
            let MatrixCase {
                mut fx,
                request,
                design,
            } = matrix_case(&template);
            let actor = id_of(role);
            let ty = request.type_name();
            let by_matrix = request.action().is_none_or(|a| allowed(role, a));
            assert_eq!(
                by_matrix,
                design.contains(&role),
                "role::allowed disagrees with DESIGN.md: {role} {ty}"
            );
            if by_matrix {
                let drafts = fx
                    .room
                    .handle(actor, &request)
                    .unwrap_or_else(|e| panic!("{role} {ty}: expected success, got {e}"));
                if request.is_media() {
                    // Media requests are carried out by the media plane, not the case log.
                    assert!(
                        drafts.is_empty(),
                        "{role} {ty}: media must not touch the log"
                    );
                } else {
                    assert!(!drafts.is_empty(), "{role} {ty}: no drafts");
                    let head = fx.room.head_seq();
                    let events = fx.commit(drafts);
                    assert_eq!(events[0].seq, head + 1);
                }
                allowed_cells += 1;
            } else {
                fx.refuse(actor, request, ErrorCode::Forbidden);
                forbidden_cells += 1;
            }
        }
    }
    let total = matrix_templates().len() * Role::ALL.len();
    assert_eq!(allowed_cells + forbidden_cells, total);
    assert!(allowed_cells > 0 && forbidden_cells > 0);
}

#[test]
fn forbidden_comes_before_lobby_and_state_checks() {
    // A party in the lobby asking for a staff action learns it is forbidden, not "wait".
    let fx = Fx::joined();
    fx.refuse(CONSUMER, admit(MERCHANT), ErrorCode::Forbidden);
    fx.refuse(CONSUMER, propose(TERMS), ErrorCode::Forbidden);
    // A staff member deciding on terms that do not exist: forbidden, not not_found.
    fx.refuse(MEDIATOR, accept("t999"), ErrorCode::Forbidden);
    fx.refuse(MEDIATOR, confirm("t999"), ErrorCode::Forbidden);
}

// ----- 2. lobby -------------------------------------------------------------------------------

#[test]
fn parties_wait_in_the_lobby_and_staff_enter_directly() {
    let mut fx = Fx::invited();
    for id in EVERYONE {
        assert_eq!(fx.status(id), ParticipantStatus::Invited);
    }

    let mediator = only(&fx.join(MEDIATOR));
    assert_eq!(mediator.visibility, Visibility::Everyone);
    assert_eq!(
        mediator.body,
        EventBody::ParticipantJoined {
            participant: MEDIATOR.into(),
            role: Role::Mediator,
            name: name_of(MEDIATOR).into(),
            joined_as: JoinedAs::Admitted,
        }
    );
    assert_eq!(fx.status(MEDIATOR), ParticipantStatus::Admitted);

    let judge = only(&fx.join(JUDGE));
    assert_eq!(judge.visibility, Visibility::Everyone);
    assert!(matches!(
        judge.body,
        EventBody::ParticipantJoined {
            joined_as: JoinedAs::Admitted,
            ..
        }
    ));
    assert_eq!(fx.status(JUDGE), ParticipantStatus::Admitted);

    for id in [CONSUMER, MERCHANT] {
        let e = only(&fx.join(id));
        assert_eq!(e.visibility, Visibility::Staff, "{id}");
        assert_eq!(
            e.body,
            EventBody::ParticipantJoined {
                participant: id.into(),
                role: role_of(id),
                name: name_of(id).into(),
                joined_as: JoinedAs::Lobby,
            }
        );
        assert_eq!(fx.status(id), ParticipantStatus::Lobby);
        // Staff see who waits; nobody in the lobby sees anything.
        assert_eq!(fx.seen_by(&e), [false, false, true, true], "{id}");
        assert!(fx.room.effects(&e).is_empty());
    }
}

#[test]
fn a_party_in_the_lobby_may_only_leave_or_consent() {
    let mut fx = Fx::joined();
    let t = terms_id(&only(&fx.act(MEDIATOR, propose(TERMS))));
    fx.refuse(CONSUMER, chat("请问还要等多久？"), ErrorCode::NotAdmitted);
    fx.refuse(CONSUMER, accept(&t), ErrorCode::NotAdmitted);
    fx.refuse(CONSUMER, reject(&t, None), ErrorCode::NotAdmitted);

    let given = only(&fx.act(CONSUMER, consent(ConsentKind::OnlineMediation, true)));
    assert_eq!(
        given.body,
        EventBody::ConsentGiven {
            participant: CONSUMER.into(),
            consent: ConsentKind::OnlineMediation,
            given: true,
        }
    );
    fx.act(CONSUMER, consent(ConsentKind::Recording, true));
    fx.act(CONSUMER, consent(ConsentKind::Recording, false));
    let consents = &fx.room.participant(CONSUMER).unwrap().consents;
    assert_eq!(consents.get("online_mediation"), Some(&true));
    assert_eq!(consents.get("recording"), Some(&false));
    assert_eq!(fx.status(CONSUMER), ParticipantStatus::Lobby);

    let left = only(&fx.act(CONSUMER, leave()));
    assert_eq!(left.visibility, Visibility::Staff);
    assert_eq!(
        left.body,
        EventBody::Left {
            participant: CONSUMER.into()
        }
    );
    assert_eq!(fx.status(CONSUMER), ParticipantStatus::Left);
    assert_eq!(fx.seen_by(&left), [false, false, true, true]);
    assert_eq!(
        fx.room.effects(&left),
        vec![Effect::Close {
            participant: CONSUMER.into(),
            code: None,
            message: "you left the session".into(),
        }]
    );
}

#[test]
fn staff_admit_and_deny_from_the_lobby() {
    let mut fx = Fx::joined();

    let admitted = only(&fx.act(MEDIATOR, admit(CONSUMER)));
    assert_eq!(admitted.visibility, Visibility::Everyone);
    assert_eq!(
        admitted.body,
        EventBody::Admitted {
            participant: CONSUMER.into(),
            by: MEDIATOR.into(),
            role: Some(Role::Consumer),
            name: Some(name_of(CONSUMER).into()),
        }
    );
    assert_eq!(fx.status(CONSUMER), ParticipantStatus::Admitted);
    assert_eq!(
        fx.room.effects(&admitted),
        vec![Effect::CatchUp {
            participant: CONSUMER.into()
        }]
    );
    // The newly admitted party receives its own admission; the one still waiting does not.
    assert_eq!(fx.seen_by(&admitted), [true, false, true, true]);

    fx.refuse(JUDGE, admit(CONSUMER), ErrorCode::Conflict);
    fx.refuse(JUDGE, deny(CONSUMER, None), ErrorCode::Conflict);
    fx.refuse(JUDGE, admit("stranger"), ErrorCode::NotFound);
    fx.refuse(JUDGE, deny("stranger", None), ErrorCode::NotFound);

    let denied = only(&fx.act(JUDGE, deny(MERCHANT, Some("身份未核实"))));
    assert_eq!(denied.visibility, Visibility::Staff);
    assert_eq!(
        denied.body,
        EventBody::Denied {
            participant: MERCHANT.into(),
            by: JUDGE.into(),
            reason: Some("身份未核实".into()),
        }
    );
    assert_eq!(fx.status(MERCHANT), ParticipantStatus::Denied);
    assert_eq!(
        fx.room.effects(&denied),
        vec![Effect::Close {
            participant: MERCHANT.into(),
            code: Some(ErrorCode::Denied),
            message: "身份未核实".into(),
        }]
    );
    assert_eq!(fx.seen_by(&denied), [false, false, true, true]);

    // A denied participant cannot come back, nor act, nor be admitted or denied again.
    fx.refuse_join(&claims(MERCHANT), ErrorCode::Denied);
    fx.refuse(MERCHANT, chat("让我进去"), ErrorCode::NotJoined);
    fx.refuse(MEDIATOR, admit(MERCHANT), ErrorCode::Conflict);
    fx.refuse(MEDIATOR, deny(MERCHANT, None), ErrorCode::Conflict);
}

#[test]
fn deny_without_a_reason_still_tells_why() {
    let mut fx = Fx::joined();
    let denied = only(&fx.act(MEDIATOR, deny(CONSUMER, None)));
    match fx.room.effects(&denied).as_slice() {
        [Effect::Close {
            participant,
            code: Some(ErrorCode::Denied),
            message,
        }] => {
            assert_eq!(participant, CONSUMER);
            assert!(!message.is_empty());
        }
        other => panic!("unexpected effects {other:?}"),
    }
}

#[test]
fn removed_participant_is_closed_and_cannot_rejoin() {
    let mut fx = Fx::admitted();
    let removed = only(&fx.act(MEDIATOR, remove(MERCHANT, Some("扰乱调解秩序"))));
    assert_eq!(removed.visibility, Visibility::Everyone);
    assert_eq!(
        removed.body,
        EventBody::Removed {
            participant: MERCHANT.into(),
            by: MEDIATOR.into(),
            reason: Some("扰乱调解秩序".into()),
        }
    );
    assert_eq!(fx.status(MERCHANT), ParticipantStatus::Removed);
    assert_eq!(
        fx.room.effects(&removed),
        vec![Effect::Close {
            participant: MERCHANT.into(),
            code: Some(ErrorCode::Removed),
            message: "扰乱调解秩序".into(),
        }]
    );
    // The others learn of it; the removed one no longer receives anything.
    assert_eq!(fx.seen_by(&removed), [true, false, true, true]);

    fx.refuse_join(&claims(MERCHANT), ErrorCode::Removed);
    fx.refuse(MERCHANT, chat("我还有话说"), ErrorCode::NotJoined);
    fx.refuse(MEDIATOR, remove(MERCHANT, None), ErrorCode::Conflict);
    fx.refuse(MEDIATOR, admit(MERCHANT), ErrorCode::Conflict);
    fx.refuse(MEDIATOR, remove(MEDIATOR, None), ErrorCode::Conflict);
    fx.refuse(MEDIATOR, remove("stranger", None), ErrorCode::NotFound);

    // Removing from the lobby works too (and closes the waiting connection).
    let mut fx = Fx::joined();
    let e = only(&fx.act(JUDGE, remove(CONSUMER, None)));
    assert_eq!(fx.status(CONSUMER), ParticipantStatus::Removed);
    assert!(matches!(
        fx.room.effects(&e).as_slice(),
        [Effect::Close {
            code: Some(ErrorCode::Removed),
            ..
        }]
    ));
    fx.refuse_join(&claims(CONSUMER), ErrorCode::Removed);

    // Someone who never joined is not in the session.
    let mut fx = Fx::invited();
    fx.join(MEDIATOR);
    fx.refuse(MEDIATOR, remove(CONSUMER, None), ErrorCode::Conflict);
}

#[test]
fn a_party_who_left_rejoins_through_the_lobby() {
    let mut fx = Fx::admitted();
    let left = only(&fx.act(CONSUMER, leave()));
    assert_eq!(left.visibility, Visibility::Everyone);
    assert_eq!(fx.status(CONSUMER), ParticipantStatus::Left);
    assert!(matches!(
        fx.room.effects(&left).as_slice(),
        [Effect::Close { code: None, .. }]
    ));
    fx.refuse(CONSUMER, chat("还在吗"), ErrorCode::NotJoined);
    fx.refuse(CONSUMER, leave(), ErrorCode::NotJoined);

    let back = only(&fx.join(CONSUMER));
    assert_eq!(back.visibility, Visibility::Staff);
    assert!(matches!(
        back.body,
        EventBody::ParticipantJoined {
            joined_as: JoinedAs::Lobby,
            ..
        }
    ));
    assert_eq!(fx.status(CONSUMER), ParticipantStatus::Lobby);
    fx.refuse(CONSUMER, chat("我回来了"), ErrorCode::NotAdmitted);
    fx.act(MEDIATOR, admit(CONSUMER));
    assert_eq!(fx.status(CONSUMER), ParticipantStatus::Admitted);

    // Staff who left come straight back in.
    fx.act(JUDGE, leave());
    assert_eq!(fx.status(JUDGE), ParticipantStatus::Left);
    let back = only(&fx.join(JUDGE));
    assert_eq!(back.visibility, Visibility::Everyone);
    assert_eq!(fx.status(JUDGE), ParticipantStatus::Admitted);
}

#[test]
fn reconnecting_produces_no_events() {
    let mut fx = Fx::joined();
    for id in EVERYONE {
        let before = snapshot(&fx.room);
        assert_eq!(fx.room.join(&claims(id)), Ok(vec![]), "{id}");
        assert_eq!(snapshot(&fx.room), before);
    }
    fx.act(MEDIATOR, admit(CONSUMER));
    assert_eq!(fx.room.join(&claims(CONSUMER)), Ok(vec![]));
    assert_eq!(fx.status(CONSUMER), ParticipantStatus::Admitted);
    assert_eq!(fx.status(MERCHANT), ParticipantStatus::Lobby);
}

#[test]
fn revoking_an_invite_closes_its_connections_and_refuses_it() {
    let mut fx = Fx::admitted();
    let drafts = fx.room.revoke_invite(&jti(MERCHANT)).unwrap();
    let revoked = only(&fx.commit(drafts));
    assert_eq!(revoked.visibility, Visibility::Staff);
    assert_eq!(
        revoked.body,
        EventBody::InviteRevoked { jti: jti(MERCHANT) }
    );
    assert_eq!(
        fx.room.effects(&revoked),
        vec![Effect::CloseInvite { jti: jti(MERCHANT) }]
    );
    assert!(fx.room.invite(&jti(MERCHANT)).unwrap().revoked);
    assert!(!fx.room.invite(&jti(CONSUMER)).unwrap().revoked);
    fx.refuse_join(&claims(MERCHANT), ErrorCode::TokenRevoked);

    assert_eq!(
        fx.room.revoke_invite(&jti(MERCHANT)).unwrap_err().code,
        ErrorCode::Conflict
    );
    assert_eq!(
        fx.room.revoke_invite("jti-nope").unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        Room::new().revoke_invite("jti-nope").unwrap_err().code,
        ErrorCode::CaseNotFound
    );

    // A fresh invite for the same participant works (a reconnect: no new events).
    let drafts = fx
        .room
        .issue_invite("jti-merchant-new", MERCHANT, Role::Merchant, "某电器店", 0)
        .unwrap();
    fx.commit(drafts);
    let mut fresh = claims(MERCHANT);
    fresh.jti = "jti-merchant-new".into();
    assert_eq!(fx.room.join(&fresh), Ok(vec![]));
}

#[test]
fn effects_of_ordinary_events_are_empty() {
    let mut fx = Fx::admitted();
    let mut events = fx.act(CONSUMER, chat("你好"));
    events.extend(fx.act(MEDIATOR, note("记录", NoteScope::Staff)));
    events.extend(fx.act(MEDIATOR, caucus_start(&[MERCHANT])));
    events.extend(fx.act(CONSUMER, consent(ConsentKind::Recording, true)));
    for e in &events {
        assert_eq!(fx.room.effects(e), vec![], "{:?}", e.body);
    }
}

// ----- 3. tokens and the case record ----------------------------------------------------------

#[test]
fn join_checks_the_token_against_the_case_record() {
    let mut fx = Fx::invited();
    let drafts = fx.room.revoke_invite(&jti(JUDGE)).unwrap();
    fx.commit(drafts);

    let mut c = claims(CONSUMER);
    c.case = "case-other".into();
    fx.refuse_join(&c, ErrorCode::CaseNotFound);
    assert_eq!(
        Room::new().join(&claims(CONSUMER)).unwrap_err().code,
        ErrorCode::CaseNotFound
    );

    for role in ["admin", "Consumer", "", "调解员"] {
        let mut c = claims(CONSUMER);
        c.role = role.into();
        fx.refuse_join(&c, ErrorCode::TokenRole);
    }

    let mut c = claims(CONSUMER);
    c.jti = "jti-forged".into();
    fx.refuse_join(&c, ErrorCode::TokenUnknown);

    // The consumer's invite presented for the merchant.
    let mut c = claims(CONSUMER);
    c.sub = MERCHANT.into();
    fx.refuse_join(&c, ErrorCode::TokenUnknown);
    let mut c = claims(MERCHANT);
    c.jti = jti(CONSUMER);
    fx.refuse_join(&c, ErrorCode::TokenUnknown);

    // A party's invite with a staff role written in: no escalation.
    for role in [Role::Mediator, Role::Judge, Role::Merchant] {
        let mut c = claims(CONSUMER);
        c.role = role.as_str().into();
        fx.refuse_join(&c, ErrorCode::TokenUnknown);
    }

    fx.refuse_join(&claims(JUDGE), ErrorCode::TokenRevoked);

    // Nobody has joined through any of this.
    for id in EVERYONE {
        assert_eq!(fx.status(id), ParticipantStatus::Invited);
    }
}

#[test]
fn join_shows_the_name_from_the_case_record() {
    let mut fx = Fx::invited();
    let mut c = claims(CONSUMER);
    c.name = "王法官".into();
    let drafts = fx.room.join(&c).unwrap();
    let e = only(&fx.commit(drafts));
    assert!(matches!(
        &e.body,
        EventBody::ParticipantJoined { name, .. } if name == name_of(CONSUMER)
    ));
    // Someone known only from an invite gets the invite's name.
    let mut fx = fx.with_visitor_in_lobby();
    fx.join(MEDIATOR);
    let roster = fx.room.roster_for(MEDIATOR, |_| false);
    let visitor = roster.iter().find(|r| r.participant == VISITOR).unwrap();
    assert_eq!(visitor.name, name_of(VISITOR));
    assert_eq!(visitor.role, Role::Merchant);
}

#[test]
fn case_creation_and_invites_validate_input() {
    let fx = Fx::invited();
    assert_eq!(fx.room.case_id(), CASE);
    assert_eq!(fx.room.title(), TITLE);
    assert_eq!(
        fx.room.create_case(CASE, TITLE, vec![]).unwrap_err().code,
        ErrorCode::Conflict
    );
    let room = Room::new();
    assert!(!room.exists());
    assert_eq!(
        room.create_case(CASE, "  ", vec![]).unwrap_err().code,
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        room.create_case(CASE, &"题".repeat(MAX_SHORT_CHARS + 1), vec![])
            .unwrap_err()
            .code,
        ErrorCode::InvalidMessage
    );
    let p = |id: &str, name: &str| CaseParticipant {
        participant: id.into(),
        role: Role::Consumer,
        name: name.into(),
    };
    assert_eq!(
        room.create_case(CASE, TITLE, vec![p("a", "甲"), p("a", "乙")])
            .unwrap_err()
            .code,
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        room.create_case(CASE, TITLE, vec![p("a", "")])
            .unwrap_err()
            .code,
        ErrorCode::InvalidMessage
    );
    let created = room.create_case(CASE, TITLE, vec![p("a", "甲")]).unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].visibility, Visibility::Staff);

    assert_eq!(
        room.issue_invite("j", "a", Role::Consumer, "甲", 0)
            .unwrap_err()
            .code,
        ErrorCode::CaseNotFound
    );
    assert_eq!(
        fx.room
            .issue_invite("jti-x", CONSUMER, Role::Mediator, "张三", 0)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    assert_eq!(
        fx.room
            .issue_invite(&jti(CONSUMER), CONSUMER, Role::Consumer, "张三", 0)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    assert_eq!(
        fx.room
            .issue_invite("jti-x", CONSUMER, Role::Consumer, " ", 0)
            .unwrap_err()
            .code,
        ErrorCode::InvalidMessage
    );
    assert_eq!(
        fx.room.find_participant(Role::Merchant, name_of(MERCHANT)),
        Some(MERCHANT)
    );
    assert_eq!(
        fx.room.find_participant(Role::Judge, name_of(MERCHANT)),
        None
    );
    let invite = fx.room.invite(&jti(JUDGE)).unwrap();
    assert_eq!(invite.participant, JUDGE);
    assert_eq!(invite.role, Role::Judge);
    assert!(!invite.revoked);
}

// ----- 4. caucus ------------------------------------------------------------------------------

#[test]
fn caucus_keeps_what_is_said_inside() {
    let mut fx = Fx::admitted();
    let started = only(&fx.act(MEDIATOR, caucus_start(&[CONSUMER])));
    let k = caucus_id(&started);
    assert_eq!(k, format!("k{}", started.seq));
    assert_eq!(started.visibility, Visibility::Everyone);
    assert_eq!(
        started.body,
        EventBody::CaucusStarted {
            caucus: k.clone(),
            by: Some(MEDIATOR.into()),
            members: vec![CONSUMER.into(), MEDIATOR.into()],
        }
    );
    let c = fx.room.caucus(&k).unwrap();
    assert!(c.active);
    assert_eq!(c.started_by, MEDIATOR);
    assert_eq!(
        c.members,
        BTreeSet::from([CONSUMER.to_string(), MEDIATOR.to_string()])
    );
    assert_eq!(
        fx.room.participant(CONSUMER).unwrap().caucus.as_deref(),
        Some(k.as_str())
    );
    assert_eq!(fx.room.participant(MERCHANT).unwrap().caucus, None);

    // Members see the whole event; the other side only learns that a caucus started.
    assert!(matches!(
        fx.room.view_for(CONSUMER, &started),
        Some(Cow::Borrowed(e)) if *e == started
    ));
    let merchant_view = fx.room.view_for(MERCHANT, &started).unwrap().into_owned();
    assert_eq!(
        merchant_view.body,
        EventBody::CaucusStarted {
            caucus: k.clone(),
            by: None,
            members: vec![],
        }
    );
    let json = serde_json::to_value(&merchant_view).unwrap();
    assert!(json.get("members").is_none() && json.get("by").is_none());
    assert!(!serde_json::to_string(&merchant_view)
        .unwrap()
        .contains(CONSUMER));
    assert!(fx.room.view_for(JUDGE, &started).is_some());

    // What the members say goes to the caucus only.
    let caucus_vis = Visibility::Caucus { caucus: k.clone() };
    let said = only(&fx.act(CONSUMER, chat("其实退一半我也能接受")));
    assert_eq!(said.visibility, caucus_vis);
    let shared = only(&fx.act(MEDIATOR, note("消费者底线：退一半", NoteScope::Shared)));
    assert_eq!(shared.visibility, caucus_vis);
    let mediator_said = only(&fx.act(MEDIATOR, chat("好的，我去和商家谈")));
    assert_eq!(mediator_said.visibility, caucus_vis);
    for e in [&said, &shared, &mediator_said] {
        assert_eq!(fx.seen_by(e), [true, false, true, false], "{:?}", e.body);
        assert!(fx.room.view_for(MERCHANT, e).is_none());
        assert!(fx.room.view_for(JUDGE, e).is_none());
    }

    // The others still talk in the main room, and members still hear them.
    let outside = only(&fx.act(MERCHANT, chat("还要等多久？")));
    assert_eq!(outside.visibility, Visibility::Everyone);
    assert_eq!(fx.seen_by(&outside), [true, true, true, true]);
    let judge_said = only(&fx.act(JUDGE, chat("请稍候")));
    assert_eq!(judge_said.visibility, Visibility::Everyone);

    // Resume gives the same answer as live delivery.
    for viewer in [MERCHANT, JUDGE] {
        assert!(
            fx.room
                .replay_for(viewer, 0)
                .all(|e| !matches!(e.visibility, Visibility::Caucus { .. })),
            "{viewer}"
        );
    }
    let consumer_replay = seqs(fx.room.replay_for(CONSUMER, 0));
    for e in [&said, &shared, &mediator_said, &outside] {
        assert!(consumer_replay.contains(&e.seq));
    }

    // The welcome lists the caucus, with its members only to members.
    let w = fx.room.welcome_for(MERCHANT, |_| true).unwrap();
    assert_eq!(
        w.caucuses,
        vec![CaucusView {
            caucus: k.clone(),
            members: vec![]
        }]
    );
    let w = fx.room.welcome_for(CONSUMER, |_| true).unwrap();
    assert_eq!(
        w.caucuses,
        vec![CaucusView {
            caucus: k.clone(),
            members: vec![CONSUMER.into(), MEDIATOR.into()]
        }]
    );

    // Only a member with the caucus permission may end it.
    fx.refuse(CONSUMER, caucus_end(&k), ErrorCode::Forbidden);
    fx.refuse(JUDGE, caucus_end(&k), ErrorCode::Forbidden);
    let ended = only(&fx.act(MEDIATOR, caucus_end(&k)));
    assert_eq!(ended.visibility, Visibility::Everyone);
    assert_eq!(
        ended.body,
        EventBody::CaucusEnded {
            caucus: k.clone(),
            by: Some(MEDIATOR.into()),
        }
    );
    assert_eq!(
        fx.room.view_for(MERCHANT, &ended).unwrap().body,
        EventBody::CaucusEnded {
            caucus: k.clone(),
            by: None
        }
    );
    assert_eq!(fx.room.view_for(CONSUMER, &ended).unwrap().body, ended.body);
    assert!(!fx.room.caucus(&k).unwrap().active);
    for id in EVERYONE {
        assert_eq!(fx.room.participant(id).unwrap().caucus, None, "{id}");
    }
    assert!(fx
        .room
        .welcome_for(MERCHANT, |_| true)
        .unwrap()
        .caucuses
        .is_empty());

    // Back in the main room everyone hears the consumer; the caucus stays closed for good.
    let after = only(&fx.act(CONSUMER, chat("我们继续吧")));
    assert_eq!(after.visibility, Visibility::Everyone);
    assert_eq!(fx.seen_by(&after), [true, true, true, true]);
    for e in [&said, &shared, &mediator_said] {
        assert_eq!(fx.seen_by(e), [true, false, true, false]);
    }
    fx.refuse(MEDIATOR, caucus_end(&k), ErrorCode::Conflict);
}

#[test]
fn two_caucuses_at_once_do_not_hear_each_other() {
    let mut fx = Fx::admitted();
    let k1 = caucus_id(&only(&fx.act(MEDIATOR, caucus_start(&[CONSUMER]))));
    let k2 = caucus_id(&only(&fx.act(JUDGE, caucus_start(&[MERCHANT]))));
    assert_ne!(k1, k2);
    let a = only(&fx.act(CONSUMER, chat("甲方底线")));
    let b = only(&fx.act(MERCHANT, chat("乙方底线")));
    assert_eq!(a.visibility, Visibility::Caucus { caucus: k1.clone() });
    assert_eq!(b.visibility, Visibility::Caucus { caucus: k2.clone() });
    assert_eq!(fx.seen_by(&a), [true, false, true, false]);
    assert_eq!(fx.seen_by(&b), [false, true, false, true]);
    fx.refuse(MEDIATOR, caucus_end(&k2), ErrorCode::Forbidden);
    fx.act(JUDGE, caucus_end(&k2));
    fx.act(MEDIATOR, caucus_end(&k1));
    assert!(!fx.room.caucus(&k1).unwrap().active && !fx.room.caucus(&k2).unwrap().active);
}

#[test]
fn invalid_caucus_requests_are_refused() {
    // A member still in the lobby, or never joined.
    let mut fx = Fx::joined();
    fx.refuse(MEDIATOR, caucus_start(&[CONSUMER]), ErrorCode::Conflict);
    let mut fresh = Fx::invited();
    fresh.join(MEDIATOR);
    fresh.refuse(MEDIATOR, caucus_start(&[CONSUMER]), ErrorCode::Conflict);

    fx.act(MEDIATOR, admit(CONSUMER));
    fx.act(MEDIATOR, admit(MERCHANT));
    // Unknown participant, no other member.
    fx.refuse(MEDIATOR, caucus_start(&["stranger"]), ErrorCode::NotFound);
    fx.refuse(
        MEDIATOR,
        caucus_start(&[CONSUMER, "stranger"]),
        ErrorCode::NotFound,
    );
    fx.refuse(MEDIATOR, caucus_start(&[]), ErrorCode::InvalidMessage);
    fx.refuse(
        MEDIATOR,
        caucus_start(&[MEDIATOR]),
        ErrorCode::InvalidMessage,
    );

    let k = caucus_id(&only(
        &fx.act(MEDIATOR, caucus_start(&[CONSUMER, CONSUMER])),
    ));
    assert_eq!(fx.room.caucus(&k).unwrap().members.len(), 2);
    // A member already in a caucus; the sender already in a caucus.
    fx.refuse(JUDGE, caucus_start(&[CONSUMER]), ErrorCode::Conflict);
    fx.refuse(
        JUDGE,
        caucus_start(&[MERCHANT, MEDIATOR]),
        ErrorCode::Conflict,
    );
    fx.refuse(MEDIATOR, caucus_start(&[MERCHANT]), ErrorCode::Conflict);
    // Ending: unknown, not a member, twice.
    fx.refuse(MEDIATOR, caucus_end("k999"), ErrorCode::NotFound);
    fx.refuse(JUDGE, caucus_end(&k), ErrorCode::Forbidden);
    fx.act(MEDIATOR, caucus_end(&k));
    fx.refuse(MEDIATOR, caucus_end(&k), ErrorCode::Conflict);
    // Once it ended, its members are free for another one.
    fx.act(JUDGE, caucus_start(&[CONSUMER]));
}

// ----- 5. notes -------------------------------------------------------------------------------

#[test]
fn notes_reach_only_their_scope() {
    let mut fx = Fx::admitted();
    let shared = only(&fx.act(MEDIATOR, note("双方同意先核对发票", NoteScope::Shared)));
    let staff = only(&fx.act(MEDIATOR, note("商家态度强硬，可引导", NoteScope::Staff)));
    let private = only(&fx.act(MEDIATOR, note("提醒自己核对保修条款", NoteScope::Private)));
    let judge_private = only(&fx.act(JUDGE, note("考虑司法确认", NoteScope::Private)));

    assert_eq!(shared.visibility, Visibility::Everyone);
    assert_eq!(staff.visibility, Visibility::Staff);
    assert_eq!(
        private.visibility,
        Visibility::Participant {
            participant: MEDIATOR.into()
        }
    );
    assert_eq!(
        private.body,
        EventBody::NoteAdded {
            author: MEDIATOR.into(),
            scope: NoteScope::Private,
            text: "提醒自己核对保修条款".into(),
        }
    );
    assert_eq!(fx.seen_by(&shared), [true, true, true, true]);
    assert_eq!(fx.seen_by(&staff), [false, false, true, true]);
    assert_eq!(fx.seen_by(&private), [false, false, true, false]);
    assert_eq!(fx.seen_by(&judge_private), [false, false, false, true]);

    // Resume gives parties the shared note and nothing addressed to staff or to one person.
    for party in [CONSUMER, MERCHANT] {
        let replay: Vec<Event> = fx.room.replay_for(party, 0).map(Cow::into_owned).collect();
        assert!(replay.iter().any(|e| e.seq == shared.seq), "{party}");
        assert!(
            replay.iter().all(|e| e.visibility == Visibility::Everyone),
            "{party} received {replay:?}"
        );
        let from_shared = seqs(fx.room.replay_for(party, shared.seq - 1));
        assert_eq!(from_shared, vec![shared.seq]);
    }
    let judge = seqs(fx.room.replay_for(JUDGE, 0));
    assert!(judge.contains(&staff.seq) && judge.contains(&judge_private.seq));
    assert!(!judge.contains(&private.seq));
    let mediator = seqs(fx.room.replay_for(MEDIATOR, 0));
    assert!(mediator.contains(&staff.seq) && mediator.contains(&private.seq));
    assert!(!mediator.contains(&judge_private.seq));
}

#[test]
fn nobody_outside_the_room_sees_anything() {
    let mut fx = Fx::joined();
    fx.act(MEDIATOR, chat("请稍候"));
    fx.act(MEDIATOR, note("等待双方", NoteScope::Shared));
    for party in [CONSUMER, MERCHANT] {
        assert_eq!(fx.room.replay_for(party, 0).count(), 0, "{party}");
    }
    assert_eq!(fx.room.replay_for("stranger", 0).count(), 0);

    // Once admitted, the catch-up covers everything addressed to everyone, from the start, but
    // not who else waited in the lobby.
    fx.act(MEDIATOR, admit(CONSUMER));
    let replay: Vec<Event> = fx
        .room
        .replay_for(CONSUMER, 0)
        .map(Cow::into_owned)
        .collect();
    assert!(!replay.is_empty());
    assert!(replay.iter().all(|e| e.visibility == Visibility::Everyone));
    assert!(!replay.iter().any(|e| matches!(
        &e.body,
        EventBody::ParticipantJoined { participant, .. } if participant == MERCHANT
    )));

    // Leaving ends delivery.
    fx.act(CONSUMER, leave());
    let later = only(&fx.act(MEDIATOR, chat("消费者离开了")));
    assert!(!fx.room.can_see(CONSUMER, &later));
    assert!(fx.room.view_for(CONSUMER, &later).is_none());
}

// ----- 6. terms and outcome -------------------------------------------------------------------

#[test]
fn decision_flow_to_a_confirmed_settlement() {
    let mut fx = Fx::admitted();
    let proposed = only(&fx.act(MEDIATOR, propose(TERMS)));
    let t = terms_id(&proposed);
    assert_eq!(t, format!("t{}", proposed.seq));
    assert_eq!(proposed.visibility, Visibility::Everyone);
    assert_eq!(
        proposed.body,
        EventBody::TermsProposed {
            terms: t.clone(),
            by: MEDIATOR.into(),
            text: TERMS.into(),
            text_hash: sha256_of(TERMS),
            document: None,
            doc_state: None,
        }
    );
    assert_eq!(fx.room.current_terms(), Some(t.as_str()));

    fx.refuse(JUDGE, confirm(&t), ErrorCode::Conflict);
    fx.refuse(
        MEDIATOR,
        outcome(Outcome::Settled, None),
        ErrorCode::Conflict,
    );

    let a = only(&fx.act(CONSUMER, accept(&t)));
    assert_eq!(
        a.body,
        EventBody::TermsAccepted {
            terms: t.clone(),
            by: CONSUMER.into(),
            text_hash: sha256_of(TERMS),
        }
    );
    fx.refuse(CONSUMER, accept(&t), ErrorCode::Conflict);
    fx.refuse(CONSUMER, reject(&t, None), ErrorCode::Conflict);
    fx.refuse(JUDGE, confirm(&t), ErrorCode::Conflict);
    fx.refuse(
        MEDIATOR,
        outcome(Outcome::Settled, None),
        ErrorCode::Conflict,
    );

    fx.act(MERCHANT, accept(&t));
    let terms = fx.room.terms(&t).unwrap();
    assert_eq!(terms.text, TERMS);
    assert_eq!(terms.text_hash, sha256_of(TERMS));
    assert_eq!(terms.proposed_by, MEDIATOR);
    assert_eq!(
        terms.decisions,
        BTreeMap::from([
            (CONSUMER.to_string(), Decision::Accepted),
            (MERCHANT.to_string(), Decision::Accepted),
        ])
    );
    fx.refuse(MERCHANT, accept(&t), ErrorCode::Conflict);

    let confirmed = only(&fx.act(JUDGE, confirm(&t)));
    assert_eq!(
        confirmed.body,
        EventBody::TermsConfirmed {
            terms: t.clone(),
            by: JUDGE.into(),
            text_hash: sha256_of(TERMS),
        }
    );
    assert_eq!(
        fx.room.terms(&t).unwrap().confirmed_by.as_deref(),
        Some(JUDGE)
    );
    fx.refuse(JUDGE, confirm(&t), ErrorCode::Conflict);

    let settled = only(&fx.act(MEDIATOR, outcome(Outcome::Settled, None)));
    assert_eq!(
        settled.body,
        EventBody::OutcomeRecorded {
            outcome: Outcome::Settled,
            by: MEDIATOR.into(),
            reason: None,
            terms: Some(t.clone()),
        }
    );
    assert_eq!(settled.visibility, Visibility::Everyone);
    assert_eq!(fx.room.outcome(), Some(Outcome::Settled));

    // The case is closed for terms and outcome.
    fx.refuse(MEDIATOR, propose("新条款"), ErrorCode::CaseClosed);
    fx.refuse(CONSUMER, accept(&t), ErrorCode::CaseClosed);
    fx.refuse(MERCHANT, reject(&t, None), ErrorCode::CaseClosed);
    fx.refuse(
        JUDGE,
        outcome(Outcome::Withdrawn, None),
        ErrorCode::CaseClosed,
    );
    // Talking goes on.
    fx.act(CONSUMER, chat("谢谢调解员"));
}

#[test]
fn superseded_terms_cannot_be_decided() {
    let mut fx = Fx::admitted();
    let t1 = fx.accepted_terms();
    let t2 = terms_id(&only(&fx.act(JUDGE, propose("商家退款1000元"))));
    assert_ne!(t1, t2);
    assert_eq!(fx.room.current_terms(), Some(t2.as_str()));
    // The old terms keep their record, but nothing more can happen to them.
    assert_eq!(fx.room.terms(&t1).unwrap().decisions.len(), 2);
    fx.refuse(CONSUMER, accept(&t1), ErrorCode::Conflict);
    fx.refuse(MERCHANT, reject(&t1, None), ErrorCode::Conflict);
    fx.refuse(JUDGE, confirm(&t1), ErrorCode::Conflict);
    fx.refuse(CONSUMER, accept("t999"), ErrorCode::NotFound);
    fx.refuse(JUDGE, confirm("t999"), ErrorCode::NotFound);
    // A settlement needs the *current* terms accepted.
    fx.refuse(
        MEDIATOR,
        outcome(Outcome::Settled, None),
        ErrorCode::Conflict,
    );
    fx.act(CONSUMER, accept(&t2));
    fx.act(MERCHANT, accept(&t2));
    let settled = only(&fx.act(MEDIATOR, outcome(Outcome::Settled, None)));
    assert!(matches!(
        &settled.body,
        EventBody::OutcomeRecorded { terms: Some(t), .. } if *t == t2
    ));
}

#[test]
fn a_rejection_blocks_confirmation_and_settlement() {
    let mut fx = Fx::admitted();
    let t = terms_id(&only(&fx.act(MEDIATOR, propose(TERMS))));
    let r = only(&fx.act(CONSUMER, reject(&t, Some("金额太低"))));
    assert_eq!(
        r.body,
        EventBody::TermsRejected {
            terms: t.clone(),
            by: CONSUMER.into(),
            reason: Some("金额太低".into()),
        }
    );
    assert_eq!(
        fx.room.terms(&t).unwrap().decisions.get(CONSUMER),
        Some(&Decision::Rejected)
    );
    fx.refuse(CONSUMER, accept(&t), ErrorCode::Conflict);
    fx.act(MERCHANT, accept(&t));
    fx.refuse(JUDGE, confirm(&t), ErrorCode::Conflict);
    fx.refuse(
        MEDIATOR,
        outcome(Outcome::Settled, None),
        ErrorCode::Conflict,
    );
}

#[test]
fn settlement_needs_every_party_still_in_the_case() {
    // No terms at all.
    let fx = Fx::admitted();
    fx.refuse(
        MEDIATOR,
        outcome(Outcome::Settled, None),
        ErrorCode::Conflict,
    );

    // A party named in the case who never joined must still accept.
    let mut fx = Fx::invited();
    fx.join(MEDIATOR);
    fx.join(JUDGE);
    fx.join(CONSUMER);
    fx.act(MEDIATOR, admit(CONSUMER));
    let t = terms_id(&only(&fx.act(MEDIATOR, propose(TERMS))));
    fx.act(CONSUMER, accept(&t));
    fx.refuse(JUDGE, confirm(&t), ErrorCode::Conflict);
    fx.refuse(
        MEDIATOR,
        outcome(Outcome::Settled, None),
        ErrorCode::Conflict,
    );

    // A party removed from the case no longer counts.
    let mut fx = Fx::admitted();
    let t = terms_id(&only(&fx.act(MEDIATOR, propose(TERMS))));
    fx.act(CONSUMER, accept(&t));
    fx.act(MEDIATOR, remove(MERCHANT, Some("拒不配合")));
    fx.act(JUDGE, confirm(&t));
    fx.act(MEDIATOR, outcome(Outcome::Settled, None));
    assert_eq!(fx.room.outcome(), Some(Outcome::Settled));
}

#[test]
fn a_failed_mediation_needs_a_reason() {
    let fx = Fx::admitted();
    fx.refuse(
        MEDIATOR,
        outcome(Outcome::Failed, None),
        ErrorCode::InvalidMessage,
    );
    fx.refuse(
        MEDIATOR,
        outcome(Outcome::Failed, Some(" \n ")),
        ErrorCode::InvalidMessage,
    );
    let mut fx = fx;
    let failed = only(&fx.act(JUDGE, outcome(Outcome::Failed, Some("双方分歧过大"))));
    assert_eq!(
        failed.body,
        EventBody::OutcomeRecorded {
            outcome: Outcome::Failed,
            by: JUDGE.into(),
            reason: Some("双方分歧过大".into()),
            terms: None,
        }
    );
    assert_eq!(fx.room.outcome(), Some(Outcome::Failed));

    // Other outcomes need neither reason nor terms.
    for o in [
        Outcome::Withdrawn,
        Outcome::PartiallySettled,
        Outcome::ReferredToCourt,
    ] {
        let mut fx = Fx::admitted();
        fx.act(MEDIATOR, outcome(o, None));
        assert_eq!(fx.room.outcome(), Some(o));
    }
}

// ----- 7. bad input ---------------------------------------------------------------------------

#[test]
fn bad_text_is_refused_and_changes_nothing() {
    let mut fx = Fx::admitted().with_visitor_in_lobby();
    let t = terms_id(&only(&fx.act(MEDIATOR, propose(TERMS))));
    let too_long_chat = "调".repeat(MAX_CHAT_CHARS + 1);
    let too_long_text = "x".repeat(MAX_TEXT_CHARS + 1);
    let bad = ErrorCode::InvalidMessage;

    fx.refuse(CONSUMER, chat(""), bad);
    fx.refuse(CONSUMER, chat(" \n\t "), bad);
    fx.refuse(CONSUMER, chat(&too_long_chat), bad);
    fx.refuse(MEDIATOR, note("", NoteScope::Shared), bad);
    fx.refuse(MEDIATOR, note(&too_long_text, NoteScope::Private), bad);
    fx.refuse(MEDIATOR, propose("   "), bad);
    fx.refuse(MEDIATOR, propose(&too_long_text), bad);
    fx.refuse(CONSUMER, reject(&t, Some(too_long_text.as_str())), bad);
    fx.refuse(MEDIATOR, deny(VISITOR, Some(too_long_text.as_str())), bad);
    fx.refuse(
        MEDIATOR,
        remove(MERCHANT, Some(too_long_text.as_str())),
        bad,
    );
    fx.refuse(
        MEDIATOR,
        outcome(Outcome::Withdrawn, Some(too_long_text.as_str())),
        bad,
    );

    // The limits count characters, not bytes.
    let longest = "调".repeat(MAX_CHAT_CHARS);
    let e = only(&fx.act(CONSUMER, chat(&longest)));
    assert!(matches!(&e.body, EventBody::Chat { text, .. } if *text == longest));
}

#[test]
fn requests_from_outside_the_session_are_refused() {
    let fx = Fx::admitted();
    fx.refuse("stranger", chat("hi"), ErrorCode::NotJoined);
    fx.refuse("stranger", leave(), ErrorCode::NotJoined);
    fx.refuse(
        CONSUMER,
        Request::Join {
            token: "t".into(),
            resume_from: None,
        },
        ErrorCode::AlreadyJoined,
    );
    assert_eq!(fx.room.handle(CONSUMER, &Request::Ping {}), Ok(vec![]));

    // Invited but never joined.
    let mut fx = Fx::invited();
    fx.join(MEDIATOR);
    fx.refuse(CONSUMER, chat("hi"), ErrorCode::NotJoined);
    fx.refuse(
        CONSUMER,
        consent(ConsentKind::Recording, true),
        ErrorCode::NotJoined,
    );
}

// ----- 8. the log -----------------------------------------------------------------------------

/// A session with a bit of everything: lobby, denial, caucus (still running), notes of every
/// scope, superseded and decided terms, consents, a revoked invite.
fn eventful() -> Fx {
    let mut fx = Fx::admitted().with_visitor_in_lobby();
    fx.act(CONSUMER, consent(ConsentKind::OnlineMediation, true));
    fx.act(MERCHANT, consent(ConsentKind::Recording, false));
    fx.act(MEDIATOR, deny(VISITOR, Some("非本案当事人")));
    fx.act(CONSUMER, chat("开始吧"));
    fx.act(MEDIATOR, note("核对发票", NoteScope::Shared));
    fx.act(MEDIATOR, note("商家态度强硬", NoteScope::Staff));
    fx.act(JUDGE, note("考虑司法确认", NoteScope::Private));
    let t1 = terms_id(&only(&fx.act(MEDIATOR, propose("退款800元"))));
    fx.act(MERCHANT, accept(&t1));
    fx.act(CONSUMER, reject(&t1, Some("太低")));
    let k = caucus_id(&only(&fx.act(MEDIATOR, caucus_start(&[CONSUMER]))));
    fx.act(CONSUMER, chat("1000元可以"));
    fx.act(MEDIATOR, caucus_end(&k));
    fx.act(JUDGE, caucus_start(&[MERCHANT]));
    fx.act(MERCHANT, chat("最多1100"));
    let t2 = terms_id(&only(&fx.act(MEDIATOR, propose(TERMS))));
    fx.act(CONSUMER, accept(&t2));
    let drafts = fx.room.revoke_invite(&jti(VISITOR)).unwrap();
    fx.commit(drafts);
    fx
}

#[test]
fn from_events_rebuilds_the_same_room() {
    let fx = eventful();
    let log = fx.room.events().to_vec();
    assert_eq!(
        crate::event::verify_chain(&log).unwrap(),
        fx.room.head_hash()
    );
    let rebuilt = Room::from_events(log.clone()).unwrap();

    assert_eq!(snapshot(&rebuilt), snapshot(&fx.room));
    assert_eq!(rebuilt.head_seq(), fx.room.head_seq());
    assert_eq!(rebuilt.head_hash(), fx.room.head_hash());
    assert_eq!(rebuilt.participants(), fx.room.participants());
    assert_eq!(rebuilt.current_terms(), fx.room.current_terms());
    assert_eq!(rebuilt.outcome(), fx.room.outcome());
    for e in &log {
        match &e.body {
            EventBody::TermsProposed { terms, .. } => {
                assert_eq!(rebuilt.terms(terms), fx.room.terms(terms));
                assert!(rebuilt.terms(terms).is_some());
            }
            EventBody::CaucusStarted { caucus, .. } => {
                assert_eq!(rebuilt.caucus(caucus), fx.room.caucus(caucus));
                assert!(rebuilt.caucus(caucus).is_some());
            }
            EventBody::InviteIssued { jti, .. } => {
                assert_eq!(rebuilt.invite(jti), fx.room.invite(jti));
            }
            _ => {}
        }
    }
    for viewer in [CONSUMER, MERCHANT, MEDIATOR, JUDGE, VISITOR] {
        assert_eq!(
            rebuilt.roster_for(viewer, |_| false),
            fx.room.roster_for(viewer, |_| false)
        );
        assert_eq!(
            rebuilt.replay_for(viewer, 0).collect::<Vec<_>>(),
            fx.room.replay_for(viewer, 0).collect::<Vec<_>>()
        );
        assert_eq!(
            rebuilt.welcome_for(viewer, |_| true),
            fx.room.welcome_for(viewer, |_| true)
        );
    }
    // And it decides the next request the same way (ids derive from the seq).
    let next = caucus_start(&[CONSUMER]);
    assert_eq!(
        rebuilt.handle(MEDIATOR, &next),
        fx.room.handle(MEDIATOR, &next)
    );

    // The same through the stored JSON form.
    let stored: Vec<Event> = log
        .iter()
        .map(|e| Event::from_json(&e.to_json()).unwrap())
        .collect();
    let from_store = Room::from_events(stored).unwrap();
    assert_eq!(snapshot(&from_store), snapshot(&fx.room));

    // A prefix of the log is the room as it was then.
    let prefix = Room::from_events(log[..5].to_vec()).unwrap();
    assert_eq!(prefix.head_seq(), 5);
    assert_eq!(prefix.head_hash(), log[4].hash);
}

#[test]
fn from_events_rejects_a_tampered_log() {
    let fx = eventful();
    let log = fx.room.events().to_vec();
    let caucus_chat = log
        .iter()
        .position(|e| matches!(e.visibility, Visibility::Caucus { .. }))
        .unwrap();

    // Changing what was said.
    let mut bad = log.clone();
    if let EventBody::Chat { text, .. } = &mut bad[caucus_chat].body {
        text.push_str("（改）");
    }
    let seq = bad[caucus_chat].seq;
    assert_eq!(
        Room::from_events(bad).unwrap_err(),
        ChainError::BadHash { seq }
    );

    // Making a caucus remark public.
    let mut bad = log.clone();
    bad[caucus_chat].visibility = Visibility::Everyone;
    assert_eq!(
        Room::from_events(bad).unwrap_err(),
        ChainError::BadHash { seq }
    );

    // Rewriting it and its hash breaks the next link.
    let mut bad = log.clone();
    bad[caucus_chat].visibility = Visibility::Everyone;
    bad[caucus_chat].hash = bad[caucus_chat].recompute_hash();
    assert_eq!(
        Room::from_events(bad).unwrap_err(),
        ChainError::BrokenLink { seq: seq + 1 }
    );

    // Dropping an event.
    let mut bad = log.clone();
    bad.remove(3);
    assert_eq!(
        Room::from_events(bad).unwrap_err(),
        ChainError::SequenceGap {
            seq: 5,
            expected: 4
        }
    );

    // Changing who accepted.
    let mut bad = log.clone();
    let i = bad
        .iter()
        .position(|e| matches!(e.body, EventBody::TermsAccepted { .. }))
        .unwrap();
    if let EventBody::TermsAccepted { by, .. } = &mut bad[i].body {
        *by = CONSUMER.into();
    }
    assert!(matches!(
        Room::from_events(bad),
        Err(ChainError::BadHash { .. })
    ));
}

#[test]
fn replay_for_returns_only_events_after_the_given_seq() {
    let fx = eventful();
    let head = fx.room.head_seq();
    for viewer in [CONSUMER, MERCHANT, MEDIATOR, JUDGE, VISITOR] {
        for after in 0..=head + 2 {
            let got = seqs(fx.room.replay_for(viewer, after));
            let expected: Vec<u64> = fx
                .room
                .events()
                .iter()
                .filter(|e| e.seq > after && fx.room.can_see(viewer, e))
                .map(|e| e.seq)
                .collect();
            assert_eq!(got, expected, "{viewer} after {after}");
            assert!(got.iter().all(|s| *s > after));
        }
        assert_eq!(fx.room.replay_for(viewer, head).count(), 0);
    }
    // The mediator sees everything but the judge's private note and the judge's caucus.
    let mediator = fx.room.replay_for(MEDIATOR, 0).count();
    assert_eq!(mediator, fx.room.events().len() - 2);
}

#[test]
fn sealing_is_deterministic_and_time_is_an_input() {
    let mut fx = Fx::admitted();
    let drafts = fx.room.handle(CONSUMER, &chat("你好")).unwrap();
    assert_eq!(drafts, fx.room.handle(CONSUMER, &chat("你好")).unwrap());
    let head = (fx.room.head_seq(), fx.room.head_hash().to_owned());
    let a = fx.room.seal(drafts.clone(), 42);
    let b = fx.room.seal(drafts.clone(), 42);
    assert_eq!(a, b);
    assert_eq!(a[0].ts, 42);
    assert_eq!(a[0].seq, head.0 + 1);
    assert_eq!(a[0].prev_hash, head.1);
    assert_ne!(fx.room.seal(drafts.clone(), 43)[0].hash, a[0].hash);
    // Sealing does not apply.
    assert_eq!((fx.room.head_seq(), fx.room.head_hash().to_owned()), head);

    let now = fx.now;
    let events = fx.commit(drafts);
    assert_eq!(events[0].ts, now + 1_000);
    // Every event of the fixture carries the time the test gave it.
    assert!(fx
        .room
        .events()
        .windows(2)
        .all(|w| w[0].ts < w[1].ts && w[1].prev_hash == w[0].hash));
    assert_eq!(fx.room.events()[0].ts, T0 + 1_000);
}

// ----- 9. roster --------------------------------------------------------------------------------

#[test]
fn roster_hides_the_lobby_from_parties() {
    let mut fx = Fx::joined();
    fx.invite(VISITOR); // invited, never joined
    fx.act(MEDIATOR, admit(CONSUMER));
    let online = |id: &str| id == MEDIATOR || id == CONSUMER;
    let ids = |roster: Vec<RosterEntry>| -> Vec<String> {
        roster.into_iter().map(|r| r.participant).collect()
    };

    // The admitted consumer sees who is in the room, not the merchant waiting, nor the invited.
    assert_eq!(
        ids(fx.room.roster_for(CONSUMER, online)),
        vec![CONSUMER, JUDGE, MEDIATOR]
    );
    // The merchant in the lobby sees only itself.
    let merchant = fx.room.roster_for(MERCHANT, online);
    assert_eq!(
        merchant,
        vec![RosterEntry {
            participant: MERCHANT.into(),
            role: Role::Merchant,
            name: name_of(MERCHANT).into(),
            status: ParticipantStatus::Lobby,
            online: false,
        }]
    );
    // Staff see everyone known to the case, with status and presence.
    let staff = fx.room.roster_for(JUDGE, online);
    assert_eq!(
        ids(staff.clone()),
        vec![CONSUMER, JUDGE, MEDIATOR, MERCHANT, VISITOR]
    );
    let status: BTreeMap<String, (ParticipantStatus, bool)> = staff
        .into_iter()
        .map(|r| (r.participant, (r.status, r.online)))
        .collect();
    assert_eq!(
        status[MERCHANT],
        (ParticipantStatus::Lobby, false),
        "{status:?}"
    );
    assert_eq!(status[VISITOR], (ParticipantStatus::Invited, false));
    assert_eq!(status[MEDIATOR], (ParticipantStatus::Admitted, true));
    assert_eq!(status[CONSUMER], (ParticipantStatus::Admitted, true));

    assert!(!fx.room.can_see_participant(CONSUMER, MERCHANT));
    assert!(!fx.room.can_see_participant(MERCHANT, CONSUMER));
    assert!(fx.room.can_see_participant(MERCHANT, MERCHANT));
    assert!(fx.room.can_see_participant(MEDIATOR, MERCHANT));
    assert!(!fx.room.can_see_participant("stranger", MEDIATOR));
    assert!(!fx.room.can_see_participant(MEDIATOR, "stranger"));

    // A lobby participant's welcome shows no one else and no caucus.
    fx.act(MEDIATOR, caucus_start(&[CONSUMER]));
    let w = fx.room.welcome_for(MERCHANT, online).unwrap();
    assert_eq!(w.status, ParticipantStatus::Lobby);
    assert_eq!(w.role, Role::Merchant);
    assert_eq!(w.case, CASE);
    assert_eq!(w.title, TITLE);
    assert_eq!(w.head_seq, fx.room.head_seq());
    assert_eq!(w.roster.len(), 1);
    assert!(w.caucuses.is_empty());
    assert!(fx.room.welcome_for("stranger", online).is_none());

    // Once admitted the merchant appears to the consumer; once denied or removed, disappears.
    fx.act(MEDIATOR, admit(MERCHANT));
    assert!(fx.room.can_see_participant(CONSUMER, MERCHANT));
    fx.act(MEDIATOR, remove(MERCHANT, None));
    assert!(!fx.room.can_see_participant(CONSUMER, MERCHANT));
    assert!(fx.room.can_see_participant(MEDIATOR, MERCHANT));
}

// ----- lobby privacy: events about someone in the lobby --------------------------------------

/// Parties must not learn who waits in the lobby: a lobby participant's join and leave are
/// staff-only, and `can_see_participant` hides them. Removing someone from the lobby must not
/// tell the parties either (the reason may even name them).
#[test]
fn removing_a_lobby_participant_is_not_announced_to_parties() {
    let mut fx = Fx::admitted().with_visitor_in_lobby();
    assert!(!fx.room.can_see_participant(CONSUMER, VISITOR));
    let removed = only(&fx.act(MEDIATOR, remove(VISITOR, Some("非本案当事人"))));
    assert_eq!(
        fx.seen_by(&removed),
        [false, false, true, true],
        "a lobby participant's removal reaches the parties ({:?})",
        removed.visibility
    );
}

/// The same for consent given while waiting in the lobby (the usual moment to give it).
#[test]
fn consent_given_in_the_lobby_is_not_announced_to_parties() {
    let mut fx = Fx::admitted().with_visitor_in_lobby();
    let given = only(&fx.act(VISITOR, consent(ConsentKind::OnlineMediation, true)));
    assert_eq!(
        fx.seen_by(&given),
        [false, false, true, true],
        "a lobby participant's consent reaches the parties ({:?})",
        given.visibility
    );
}

// ----- fixes after review --------------------------------------------------------------------

#[test]
fn no_confirmation_after_a_failed_or_withdrawn_mediation() {
    for (o, reason) in [
        (Outcome::Failed, Some("商家拒绝履行")),
        (Outcome::Withdrawn, None),
        (Outcome::ReferredToCourt, None),
    ] {
        let mut fx = Fx::admitted();
        let t = fx.accepted_terms();
        fx.act(MEDIATOR, outcome(o, reason));
        let before = snapshot(&fx.room);
        fx.refuse(JUDGE, confirm(&t), ErrorCode::CaseClosed);
        assert_eq!(snapshot(&fx.room), before);
    }
    // After a settlement the judge still confirms.
    let mut fx = Fx::admitted();
    let t = fx.accepted_terms();
    fx.act(MEDIATOR, outcome(Outcome::Settled, None));
    let confirmed = only(&fx.act(JUDGE, confirm(&t)));
    assert!(matches!(confirmed.body, EventBody::TermsConfirmed { .. }));
}

// ----- media visibility ------------------------------------------------------------------------

#[test]
fn media_plan_follows_lobby_and_caucus() {
    let mut fx = Fx::joined();
    // Parties in the lobby: staff receive each other only.
    let plan = fx.room.media_plan();
    assert_eq!(
        plan.len(),
        2,
        "only admitted participants are in the plan: {plan:?}"
    );
    assert!(plan[MEDIATOR].contains(JUDGE) && !plan[MEDIATOR].contains(CONSUMER));
    assert!(!fx.room.media_allowed(CONSUMER, MEDIATOR));
    assert!(!fx.room.media_allowed(MEDIATOR, CONSUMER));
    fx.act(MEDIATOR, admit(CONSUMER));
    assert!(fx.room.media_allowed(CONSUMER, MEDIATOR));
    fx.act(MEDIATOR, admit(MERCHANT));
    // Everyone admitted: everyone receives everyone else, never themselves.
    for r in EVERYONE {
        let senders = &fx.room.media_plan()[r];
        assert_eq!(senders.len(), 3, "{r}: {senders:?}");
        assert!(!senders.contains(r));
    }
    // Caucus of mediator and consumer: they receive only each other; merchant and judge only
    // each other.
    let k = caucus_id(&only(&fx.act(MEDIATOR, caucus_start(&[CONSUMER]))));
    let plan = fx.room.media_plan();
    assert_eq!(plan[CONSUMER], BTreeSet::from([MEDIATOR.to_owned()]));
    assert_eq!(plan[MEDIATOR], BTreeSet::from([CONSUMER.to_owned()]));
    assert_eq!(plan[MERCHANT], BTreeSet::from([JUDGE.to_owned()]));
    assert_eq!(plan[JUDGE], BTreeSet::from([MERCHANT.to_owned()]));
    fx.act(MEDIATOR, caucus_end(&k));
    assert_eq!(fx.room.media_plan()[MERCHANT].len(), 3);
    // Removed: out of the plan entirely.
    fx.act(MEDIATOR, remove(MERCHANT, None));
    let plan = fx.room.media_plan();
    assert!(!plan.contains_key(MERCHANT));
    assert!(plan.values().all(|s| !s.contains(MERCHANT)));
}

#[test]
fn media_requests_need_admission_and_change_nothing() {
    let fx = Fx::joined();
    let offer = Request::MediaOffer { sdp: "v=0".into() };
    fx.refuse(CONSUMER, offer.clone(), ErrorCode::NotAdmitted);
    let before = snapshot(&fx.room);
    assert!(fx.room.handle(MEDIATOR, &offer).unwrap().is_empty());
    assert_eq!(snapshot(&fx.room), before);
    let huge = Request::MediaOffer {
        sdp: "a".repeat(MAX_SDP_BYTES + 1),
    };
    fx.refuse(MEDIATOR, huge, ErrorCode::InvalidMessage);
}

// ----- shared documents ----------------------------------------------------------------------

fn access(fx: &Fx, who: &str, doc: &str) -> DocAccess {
    fx.room
        .doc_policy()
        .access(who, &DocName::parse(doc).expect("a document name"))
}

/// Access of consumer, merchant, mediator, judge to `doc`.
fn access_all(fx: &Fx, doc: &str) -> [DocAccess; 4] {
    EVERYONE.map(|id| access(fx, id, doc))
}

#[test]
fn agreement_is_read_by_everyone_admitted_and_written_by_the_mediator() {
    use DocAccess::{None as No, Read, Write};
    let fx = Fx::invited();
    assert_eq!(access_all(&fx, "agreement"), [No, No, No, No]);
    // Parties in the lobby get nothing; staff enter directly.
    let fx = Fx::joined();
    assert_eq!(access_all(&fx, "agreement"), [No, No, Write, Read]);
    let mut fx = Fx::admitted();
    assert_eq!(access_all(&fx, "agreement"), [Read, Read, Write, Read]);
    // Removed or departed participants lose access at once.
    fx.act(MEDIATOR, remove(MERCHANT, None));
    fx.act(CONSUMER, leave());
    assert_eq!(access_all(&fx, "agreement"), [No, No, Write, Read]);
    // A participant the case never heard of has none.
    assert_eq!(access(&fx, "stranger", "agreement"), No);
}

#[test]
fn the_mediator_grants_and_withdraws_write_access_live() {
    use DocAccess::{Read, Write};
    let mut fx = Fx::admitted();
    let e = only(&fx.act(MEDIATOR, doc_permission("agreement", CONSUMER, true)));
    assert_eq!(e.visibility, Visibility::Everyone);
    assert!(matches!(
        &e.body,
        EventBody::DocPermission { doc, participant, write: true, by }
            if doc == "agreement" && participant == CONSUMER && by == MEDIATOR
    ));
    assert_eq!(access_all(&fx, "agreement"), [Write, Read, Write, Read]);
    fx.act(MEDIATOR, doc_permission("agreement", JUDGE, true));
    assert_eq!(access_all(&fx, "agreement"), [Write, Read, Write, Write]);
    fx.act(MEDIATOR, doc_permission("agreement", CONSUMER, false));
    assert_eq!(access_all(&fx, "agreement"), [Read, Read, Write, Write]);
    // The grant is part of the record: a room rebuilt from the log has the same policy.
    let rebuilt = Room::from_events(fx.room.events().to_vec()).unwrap();
    assert_eq!(rebuilt.doc_policy(), fx.room.doc_policy());
}

#[test]
fn doc_permission_refusals_change_nothing() {
    let mut fx = Fx::admitted();
    fx.refuse(
        MEDIATOR,
        doc_permission("agreement", CONSUMER, false),
        ErrorCode::Conflict,
    );
    fx.act(MEDIATOR, doc_permission("agreement", CONSUMER, true));
    fx.refuse(
        MEDIATOR,
        doc_permission("agreement", CONSUMER, true),
        ErrorCode::Conflict,
    );
    fx.refuse(
        MEDIATOR,
        doc_permission("agreement", MEDIATOR, false),
        ErrorCode::Conflict,
    );
    fx.refuse(
        MEDIATOR,
        doc_permission("agreement", "nobody", true),
        ErrorCode::NotFound,
    );
    fx.refuse(
        MEDIATOR,
        doc_permission("minutes", CONSUMER, true),
        ErrorCode::NotFound,
    );
    let k = caucus_id(&only(&fx.act(MEDIATOR, caucus_start(&[CONSUMER]))));
    fx.refuse(
        MEDIATOR,
        doc_permission(&format!("caucus-{k}"), MERCHANT, true),
        ErrorCode::InvalidMessage,
    );
    fx.refuse(
        JUDGE,
        doc_permission("agreement", MERCHANT, true),
        ErrorCode::Forbidden,
    );
}

#[test]
fn a_caucus_document_is_open_only_to_that_caucus_members() {
    use DocAccess::{None as No, Write};
    let mut fx = Fx::admitted();
    // No caucus yet: the name is not a document of this case.
    let policy = fx.room.doc_policy();
    assert_eq!(
        policy
            .check_exists(&DocName::Caucus("k99".into()))
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    let k = caucus_id(&only(&fx.act(MEDIATOR, caucus_start(&[CONSUMER]))));
    let doc = format!("caucus-{k}");
    assert_eq!(access_all(&fx, &doc), [Write, No, Write, No]);
    fx.act(MEDIATOR, caucus_end(&k));
    // The notes stay with the caucus's members after it ends.
    assert_eq!(access_all(&fx, &doc), [Write, No, Write, No]);
    // The other side's caucus has its own document, closed to the consumer.
    let k2 = caucus_id(&only(&fx.act(JUDGE, caucus_start(&[MERCHANT]))));
    let doc2 = format!("caucus-{k2}");
    assert_ne!(doc, doc2);
    assert_eq!(access_all(&fx, &doc2), [No, Write, No, Write]);
    assert_eq!(access_all(&fx, &doc), [Write, No, Write, No]);
}

#[test]
fn the_policy_checks_invites_like_join() {
    let mut fx = Fx::admitted();
    assert!(!fx.room.doc_policy().is_revoked(&jti(CONSUMER)));
    let drafts = fx.room.revoke_invite(&jti(CONSUMER)).unwrap();
    fx.commit(drafts);
    let policy = fx.room.doc_policy();
    assert!(policy.is_revoked(&jti(CONSUMER)));
    assert!(!policy.is_revoked(&jti(MERCHANT)));
    let code = |jti: &str, who: &str| policy.check_invite(jti, who).err().map(|e| e.code);
    assert_eq!(
        code(&jti(CONSUMER), CONSUMER),
        Some(ErrorCode::TokenRevoked)
    );
    assert_eq!(code(&jti(MERCHANT), MERCHANT), None);
    assert_eq!(
        code(&jti(MERCHANT), CONSUMER),
        Some(ErrorCode::TokenUnknown)
    );
    assert_eq!(code("j-unknown", MERCHANT), Some(ErrorCode::TokenUnknown));
}

// ----- terms taken from the agreement document ------------------------------------------------

fn propose_from_agreement(version: Option<(&str, &str)>) -> Request {
    Request::ProposeTerms {
        text: String::new(),
        document: Some("agreement".into()),
        version: version.map(|(text, sv)| crate::protocol::DocVersion {
            text: text.into(),
            state_vector: sv.into(),
        }),
    }
}

#[test]
fn terms_from_the_agreement_bind_its_text_and_state_vector() {
    let mut fx = Fx::admitted();
    let e = only(&fx.act(MEDIATOR, propose_from_agreement(Some((TERMS, "AQKz")))));
    match &e.body {
        EventBody::TermsProposed {
            text,
            text_hash,
            document,
            doc_state,
            ..
        } => {
            assert_eq!(text, TERMS);
            assert_eq!(*text_hash, sha256_of(TERMS));
            assert_eq!(document.as_deref(), Some("agreement"));
            assert_eq!(doc_state.as_deref(), Some("AQKz"));
        }
        other => panic!("{other:?}"),
    }
    // Rebuilt from the log, the room has the same terms.
    let rebuilt = Room::from_events(fx.room.events().to_vec()).unwrap();
    let t = terms_id(&e);
    assert_eq!(rebuilt.terms(&t), fx.room.terms(&t));
}

#[test]
fn terms_from_a_document_are_checked() {
    let fx = Fx::admitted();
    let mut both = propose_from_agreement(Some((TERMS, "AQKz")));
    if let Request::ProposeTerms { text, .. } = &mut both {
        *text = "另一段文字".into();
    }
    fx.refuse(MEDIATOR, both, ErrorCode::InvalidMessage);
    let other = Request::ProposeTerms {
        text: String::new(),
        document: Some("caucus-k3".into()),
        version: None,
    };
    fx.refuse(MEDIATOR, other, ErrorCode::NotFound);
    // The server did not read the document: refused, nothing changes.
    fx.refuse(MEDIATOR, propose_from_agreement(None), ErrorCode::Internal);
    // An empty agreement cannot be put to the parties.
    fx.refuse(
        MEDIATOR,
        propose_from_agreement(Some(("  ", "AA=="))),
        ErrorCode::InvalidMessage,
    );
    // Clients cannot supply the version themselves.
    let msg = crate::protocol::parse_client_message(
        r#"{"type":"propose_terms","document":"agreement","version":{"text":"伪造","state_vector":"AA=="}}"#,
    )
    .unwrap();
    assert_eq!(msg.request, propose_from_agreement(None));
}

#[test]
fn a_party_signs_exactly_the_text_on_screen() {
    let mut fx = Fx::admitted();
    let t = terms_id(&only(&fx.act(MEDIATOR, propose(TERMS))));
    let stale = Request::AcceptTerms {
        terms: t.clone(),
        text_hash: Some(sha256_of("商家于三日内退还货款人民币999元")),
    };
    fx.refuse(CONSUMER, stale, ErrorCode::Conflict);
    // A hash that is not a SHA-256 in lowercase hex is malformed, not a different text.
    let upper = sha256_of(TERMS).to_uppercase();
    for bad in ["", "abc", upper.as_str(), &format!("{}0", sha256_of(TERMS))] {
        let malformed = Request::AcceptTerms {
            terms: t.clone(),
            text_hash: Some(bad.to_owned()),
        };
        fx.refuse(CONSUMER, malformed, ErrorCode::InvalidMessage);
    }
    let e = only(&fx.act(
        CONSUMER,
        Request::AcceptTerms {
            terms: t.clone(),
            text_hash: Some(sha256_of(TERMS)),
        },
    ));
    assert!(matches!(
        &e.body,
        EventBody::TermsAccepted { text_hash, .. } if *text_hash == sha256_of(TERMS)
    ));
    // Without a client hash the server binds the signature to the hash of the terms' text
    // all the same: the text every party was shown.
    let e = only(&fx.act(
        MERCHANT,
        Request::AcceptTerms {
            terms: t.clone(),
            text_hash: None,
        },
    ));
    assert!(matches!(
        &e.body,
        EventBody::TermsAccepted { text_hash, .. } if *text_hash == sha256_of(TERMS)
    ));
}

/// What `is_record_only` promises the server's batching: applying such an event changes nothing
/// but the log, has no effect, and every other event kind is not one.
#[test]
fn record_only_events_change_nothing_but_the_log() {
    let mut fx = Fx::admitted();
    let k = caucus_id(&only(&fx.act(MEDIATOR, caucus_start(&[CONSUMER]))));
    let records = [
        (MEDIATOR, chat("hello")),
        (CONSUMER, chat("in the caucus")),
        (MEDIATOR, note("shared", NoteScope::Shared)),
        (MEDIATOR, note("staff", NoteScope::Staff)),
        (JUDGE, note("private", NoteScope::Private)),
    ];
    for (actor, request) in records {
        let drafts = fx.room.handle(actor, &request).unwrap();
        let before = fx.room.clone();
        let events = fx.commit(drafts);
        for e in &events {
            assert!(Room::is_record_only(e), "{:?}", e.body);
            assert!(fx.room.effects(e).is_empty());
        }
        let mut without = fx.room.clone();
        without.events.truncate(before.events.len());
        assert_eq!(snapshot(&without), snapshot(&before));
    }
    // They can be taken back exactly; a state change cannot.
    let before = snapshot(&fx.room);
    let len = fx.room.events().len();
    fx.act(MEDIATOR, chat("taken back"));
    fx.act(JUDGE, note("taken back", NoteScope::Staff));
    assert!(!fx.room.unapply_records(len + 3));
    assert!(fx.room.unapply_records(len));
    assert_eq!(snapshot(&fx.room), before);
    // Everything else changes the state (or has effects), so it must not be batched ahead.
    let others = [
        fx.act(MEDIATOR, caucus_end(&k)),
        fx.act(MEDIATOR, propose("terms")),
        fx.act(CONSUMER, consent(ConsentKind::Recording, true)),
        fx.act(MERCHANT, leave()),
    ];
    for e in others.iter().flatten() {
        assert!(!Room::is_record_only(e), "{:?}", e.body);
    }
    let before = snapshot(&fx.room);
    assert!(!fx.room.unapply_records(len));
    assert_eq!(snapshot(&fx.room), before);
}
