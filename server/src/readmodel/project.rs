//! The projection: one accepted record document → its rows in the read-model tables. A pure
//! function of the document (and the registry's schedule), so that re-deriving the tables from the
//! stored documents gives the same rows as projecting each push as it was accepted.
//!
//! Conflicts: a body field that devices set concurrently to different values is never projected
//! as one of them. Its column is NULL, its path is listed in the row's `conflicts` column, and
//! each of its values (with the device that wrote it, the change's time and whether it is the one
//! Automerge shows) is a row of `rm_conflicts`. A conflicted answer is an `rm_answers` row with
//! `conflicted = 1` and no value.

use std::collections::BTreeSet;

use automerge::{Automerge, ReadDoc, ROOT};
use chrono::NaiveDate;
use followup_domain::ids::RecordId;
use followup_domain::model::{
    self, Adjudication, AdjudicationCase, AdverseEvent, CaseReply, Clinic, DocHeader, Enrolment,
    FollowupResponse, Procedure, RecordKind,
};
use followup_domain::questionnaire::AnswerValue;
use followup_domain::schedule::Schedule;

use super::schema::{self, Table};
use super::Val;

/// What one document contributes to the read model.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub header: DocHeader,
    /// When the record was created on the device (unix seconds of its first change).
    pub created_at_s: Option<i64>,
    /// How many body fields are conflicted.
    pub conflicts: i64,
    /// Why the body could not be projected (the record is still listed in `rm_records`).
    pub problem: Option<String>,
    /// `(index in schema::ALL, row)`, `rm_records` excluded (it needs the write's meta).
    pub rows: Vec<(usize, Vec<Val>)>,
    /// The procedures whose visits' done state may depend on this record.
    pub procedures: Vec<RecordId>,
}

impl Projection {
    /// A record whose document cannot be read: listed, with the reason, and nothing else.
    pub fn unreadable(header: &DocHeader, problem: String) -> Projection {
        Projection {
            header: header.clone(),
            created_at_s: None,
            conflicts: 0,
            problem: Some(problem),
            rows: Vec::new(),
            procedures: Vec::new(),
        }
    }
}

/// Days since 1970-01-01.
pub fn day_number(d: NaiveDate) -> i64 {
    d.signed_duration_since(NaiveDate::default()).num_days()
}

/// The date of a day number.
pub fn date_of_day(n: i64) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(chrono::Duration::try_days(n)?)
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

/// Days the treating clinic has to adjudicate an adverse event, from when the registry first
/// accepted it: 7 for a serious event or grade 3 and above, 30 otherwise.
pub fn adjudication_policy_days(severity: Option<i64>, serious: Option<bool>) -> i64 {
    // An unknown (conflicted) severity or seriousness gets the stricter deadline.
    match (severity, serious) {
        (_, Some(true)) | (_, None) | (None, _) => 7,
        (Some(s), Some(false)) if s >= 3 => 7,
        _ => 30,
    }
}

/// The set of conflicted paths, for column-by-column checks.
struct Conflicted(BTreeSet<String>);

impl Conflicted {
    /// Whether the column built from `path` is affected: the field itself, a parent object or a
    /// field inside it is conflicted.
    fn hit(&self, path: &str) -> bool {
        self.0.iter().any(|c| {
            c == path
                || (path.starts_with(c.as_str()) && path.as_bytes().get(c.len()) == Some(&b'.'))
                || (c.starts_with(path) && c.as_bytes().get(path.len()) == Some(&b'.'))
        })
    }
    fn val(&self, path: &str, v: Val) -> Val {
        if self.hit(path) {
            Val::Null
        } else {
            v
        }
    }
    fn list(&self) -> Val {
        if self.0.is_empty() {
            Val::Null
        } else {
            Val::Text(self.0.iter().cloned().collect::<Vec<_>>().join(" "))
        }
    }
}

fn text(s: &str) -> Val {
    Val::Text(s.to_string())
}
fn opt_text(s: &Option<String>) -> Val {
    s.as_deref().map_or(Val::Null, text)
}
fn id_val(id: RecordId) -> Val {
    Val::Blob(id.0.to_vec())
}
fn opt_id(id: Option<RecordId>) -> Val {
    id.map_or(Val::Null, id_val)
}
fn day_val(s: &str) -> Val {
    parse_date(s).map_or(Val::Null, |d| Val::Int(day_number(d)))
}
fn ref_id(s: &Option<String>) -> Option<RecordId> {
    s.as_deref().and_then(|s| s.parse().ok())
}
fn json(v: &impl serde::Serialize) -> Val {
    serde_json::to_string(v).map_or(Val::Null, Val::Text)
}

/// Build a row for `t` from `(column, value)` pairs; columns not named are NULL.
fn row(t: &Table, values: Vec<(&str, Val)>) -> (usize, Vec<Val>) {
    let mut out = vec![Val::Null; t.cols.len()];
    for (c, v) in values {
        let i = t.col(c);
        if let Some(slot) = out.get_mut(i) {
            *slot = v;
        } else {
            debug_assert!(false, "no column {c} in {}", t.name);
        }
    }
    (schema::table_index(t), out)
}

/// The unix time of the change that wrote the record's header, i.e. when it was created.
fn created_at(doc: &Automerge) -> Option<i64> {
    let (_, id) = doc.get(ROOT, "id").ok()??;
    let hash = doc.hash_for_opid(&id)?;
    doc.get_change_meta_by_hash(&hash).map(|m| m.timestamp)
}

/// Whether every change of the document follows the one before it: a single head and no change
/// with more than one dependency (so no change was made without seeing every earlier one). Only
/// concurrent changes make conflicts (Automerge keeps one value per field for a causally ordered
/// history), so such a document has none. Reads the change graph's metadata only.
pub fn linear_history(doc: &Automerge) -> bool {
    doc.get_heads().len() <= 1 && doc.get_changes_meta(&[]).iter().all(|m| m.deps.len() <= 1)
}

/// Project one document. Never fails: a body that does not read as its kind is reported in
/// `problem` and contributes no entity row.
pub fn project(doc: &Automerge, header: &DocHeader, schedule: &Schedule) -> Projection {
    let mut p = Projection {
        header: header.clone(),
        created_at_s: created_at(doc),
        conflicts: 0,
        problem: None,
        rows: Vec::new(),
        procedures: Vec::new(),
    };
    // A document whose changes form one chain has no concurrent writes, so no field can hold
    // two values: the walk over every field (most of a projection's cost) is skipped.
    let found = if linear_history(doc) {
        Ok(Vec::new())
    } else {
        model::conflicts(doc)
    };
    let conflicts = match found {
        Ok(c) => c,
        Err(e) => {
            p.problem = Some(format!("cannot read the record's conflicts: {e}"));
            return p;
        }
    };
    p.conflicts = i64::try_from(conflicts.len()).unwrap_or(i64::MAX);
    let set = Conflicted(conflicts.iter().map(|c| c.path.clone()).collect());
    for c in &conflicts {
        for (n, v) in c.values.iter().enumerate() {
            p.rows.push(row(
                &schema::CONFLICTS,
                vec![
                    ("record", id_val(header.id)),
                    ("path", text(&c.path)),
                    ("n", Val::Int(n as i64)),
                    ("clinic", id_val(header.clinic)),
                    ("value", Val::Text(v.value.to_string())),
                    (
                        "device",
                        v.device.map_or(Val::Null, |d| Val::Blob(d.0.to_vec())),
                    ),
                    ("time_s", v.time.map_or(Val::Null, Val::Int)),
                    ("winner", Val::Int(i64::from(v.winner))),
                ],
            ));
        }
    }
    // `header` was read from this document (the sync handler's authorization, or the stored
    // header): its kind picks the body type, so the body is read without the header again.
    let result = match header.kind {
        RecordKind::Clinic => model::read_body_as::<Clinic>(doc).map(|b| clinic(&mut p, &set, &b)),
        RecordKind::Enrolment => {
            model::read_body_as::<Enrolment>(doc).map(|b| enrolment(&mut p, &set, &b))
        }
        RecordKind::Procedure => {
            model::read_body_as::<Procedure>(doc).map(|b| procedure(&mut p, &set, &b, schedule))
        }
        RecordKind::Response => {
            model::read_body_as::<FollowupResponse>(doc).map(|b| response(&mut p, &set, &b))
        }
        RecordKind::AdverseEvent => {
            model::read_body_as::<AdverseEvent>(doc).map(|b| adverse_event(&mut p, &set, &b))
        }
        RecordKind::Adjudication => {
            model::read_body_as::<Adjudication>(doc).map(|b| adjudication(&mut p, &set, &b))
        }
        RecordKind::AdjudicationCase => {
            model::read_body_as::<AdjudicationCase>(doc).map(|b| case(&mut p, &set, &b))
        }
        RecordKind::CaseReply => {
            model::read_body_as::<CaseReply>(doc).map(|b| case_reply(&mut p, &set, &b))
        }
        // Definitions are read from their records (`definitions::list`), not projected.
        RecordKind::Definition => Ok(()),
    };
    if let Err(e) = result {
        p.problem = Some(format!(
            "the {} body does not read: {e}",
            header.kind.code()
        ));
    }
    p
}

fn common(p: &Projection) -> Vec<(&'static str, Val)> {
    vec![
        ("clinic", id_val(p.header.clinic)),
        (
            "created_by",
            p.header
                .created_by
                .map_or(Val::Null, |d| Val::Blob(d.0.to_vec())),
        ),
        ("created_at_s", p.created_at_s.map_or(Val::Null, Val::Int)),
    ]
}

fn clinic(p: &mut Projection, c: &Conflicted, b: &Clinic) {
    let r = row(
        &schema::CLINICS,
        vec![
            ("id", id_val(p.header.id)),
            ("name", c.val("name", text(&b.name))),
            ("country", c.val("country", text(&b.country))),
            (
                "participation",
                c.val("participation", text(b.participation.code())),
            ),
            (
                "accreditations",
                c.val("accreditations", json(&b.accreditations)),
            ),
            ("conflicts", c.list()),
        ],
    );
    p.rows.push(r);
}

fn enrolment(p: &mut Projection, c: &Conflicted, b: &Enrolment) {
    let mut v = common(p);
    v.extend([
        ("id", id_val(p.header.id)),
        ("study_code", c.val("study_code", text(&b.study_code))),
        ("birth_year", c.val("birth_year", Val::Int(b.birth_year))),
        ("sex", c.val("sex", text(b.sex.code()))),
        ("enrolled_on", c.val("enrolled_on", text(&b.enrolled_on))),
        (
            "consent_form_version",
            c.val("consent.form_version", text(&b.consent.form_version)),
        ),
        ("consent_date", c.val("consent.date", text(&b.consent.date))),
        (
            "consent_scope",
            c.val("consent.scope", Val::Text(b.consent.scope.join(","))),
        ),
        ("conflicts", c.list()),
    ]);
    let r = row(&schema::ENROLMENTS, v);
    p.rows.push(r);
}

fn procedure(p: &mut Projection, c: &Conflicted, b: &Procedure, schedule: &Schedule) {
    let date = if c.hit("date") {
        None
    } else {
        parse_date(&b.date)
    };
    let mut v = common(p);
    v.extend([
        ("id", id_val(p.header.id)),
        ("patient", opt_id(p.header.patient)),
        ("date", c.val("date", text(&b.date))),
        (
            "date_day",
            date.map_or(Val::Null, |d| Val::Int(day_number(d))),
        ),
        ("condition", c.val("condition", text(&b.condition))),
        (
            "procedure_type",
            c.val("procedure_type", text(&b.procedure_type)),
        ),
        ("route", c.val("route", text(b.route.code()))),
        ("cell_type", c.val("cell_type", text(b.cell_type.code()))),
        (
            "source_tissue",
            c.val("source_tissue", text(b.source_tissue.code())),
        ),
        ("origin", c.val("origin", text(b.origin.code()))),
        (
            "manipulation",
            c.val("manipulation", text(b.manipulation.code())),
        ),
        (
            "regulatory_status",
            c.val("regulatory_status", text(b.regulatory_status.code())),
        ),
        (
            "trial_registration",
            c.val("trial_registration", opt_text(&b.trial_registration)),
        ),
        (
            "cost_minor",
            c.val(
                "cost.amount_minor",
                b.cost
                    .as_ref()
                    .map_or(Val::Null, |x| Val::Int(x.amount_minor)),
            ),
        ),
        (
            "cost_currency",
            c.val(
                "cost.currency",
                b.cost.as_ref().map_or(Val::Null, |x| text(&x.currency)),
            ),
        ),
        (
            "promised_benefits",
            c.val("promised_benefits", json(&b.promised_benefits)),
        ),
        ("conflicts", c.list()),
    ]);
    let r = row(&schema::PROCEDURES, v);
    p.rows.push(r);
    p.procedures.push(p.header.id);
    // Without a date there is no schedule: the procedure is listed (date NULL, conflicted or
    // unreadable) and has no visits until the date is settled.
    let Some(date) = date else { return };
    let none: BTreeSet<String> = BTreeSet::new();
    for (i, s) in schedule.visits_for(date, &none, date).iter().enumerate() {
        let r = row(
            &schema::VISITS,
            vec![
                ("procedure", id_val(p.header.id)),
                ("visit", text(s.visit_id)),
                ("clinic", id_val(p.header.clinic)),
                ("patient", opt_id(p.header.patient)),
                ("questionnaire", text(s.questionnaire)),
                ("label", text(s.label)),
                ("seq", Val::Int(i as i64)),
                ("target_day", Val::Int(day_number(s.target))),
                ("window_start_day", Val::Int(day_number(s.window_start))),
                ("window_end_day", Val::Int(day_number(s.window_end))),
                ("grace_end_day", Val::Int(day_number(s.grace_end))),
                ("done_count", Val::Int(0)),
            ],
        );
        p.rows.push(r);
    }
}

fn response(p: &mut Projection, c: &Conflicted, b: &FollowupResponse) {
    let procedure = if c.hit("procedure") {
        None
    } else {
        ref_id(&b.procedure)
    };
    let mut v = common(p);
    v.extend([
        ("id", id_val(p.header.id)),
        ("patient", opt_id(p.header.patient)),
        ("procedure", opt_id(procedure)),
        ("visit", c.val("visit", opt_text(&b.visit))),
        (
            "questionnaire",
            c.val("questionnaire", text(&b.questionnaire)),
        ),
        (
            "questionnaire_version",
            c.val("questionnaire_version", text(&b.questionnaire_version)),
        ),
        (
            "completed_by",
            c.val("completed_by", text(b.completed_by.code())),
        ),
        ("status", c.val("status", text(b.status.code()))),
        (
            "submitted_at",
            c.val("submitted_at", opt_text(&b.submitted_at)),
        ),
        (
            "submitted_day",
            c.val(
                "submitted_at",
                b.submitted_at.as_deref().map_or(Val::Null, day_val),
            ),
        ),
        ("answer_count", Val::Int(b.answers.len() as i64)),
        ("conflicts", c.list()),
    ]);
    let r = row(&schema::RESPONSES, v);
    p.rows.push(r);
    answers(p, c, "answers", p.header.id, &b.answers);
    // Only a submitted response for a visit can complete one: others leave every visit's done
    // count as it was (a response that stops counting is found from its old row, see `apply`).
    let counts = !c.hit("visit")
        && !c.hit("status")
        && b.visit.is_some()
        && b.status == followup_domain::model::ResponseStatus::Submitted;
    if counts {
        p.procedures.extend(procedure);
    }
}

fn answers(
    p: &mut Projection,
    c: &Conflicted,
    prefix: &str,
    record: RecordId,
    answers: &followup_domain::questionnaire::Answers,
) {
    for (item, value) in answers {
        let path = format!("{prefix}.{item}");
        let (ty, int, real, txt, conflicted) = if c.hit(&path) {
            ("conflict", Val::Null, Val::Null, Val::Null, 1)
        } else {
            match value {
                AnswerValue::Bool(b) => ("bool", Val::Int(i64::from(*b)), Val::Null, Val::Null, 0),
                AnswerValue::Int(i) => ("int", Val::Int(*i), Val::Null, Val::Null, 0),
                AnswerValue::Decimal(d) => ("decimal", Val::Null, Val::Real(*d), Val::Null, 0),
                AnswerValue::Text(s) => ("text", Val::Null, Val::Null, text(s), 0),
                AnswerValue::Choices(cs) => ("choices", Val::Null, Val::Null, json(cs), 0),
            }
        };
        let r = row(
            &schema::ANSWERS,
            vec![
                ("response", id_val(record)),
                ("item", text(item)),
                ("clinic", id_val(p.header.clinic)),
                ("value_type", text(ty)),
                ("value_int", int),
                ("value_real", real),
                ("value_text", txt),
                ("conflicted", Val::Int(conflicted)),
            ],
        );
        p.rows.push(r);
    }
}

fn adverse_event(p: &mut Projection, c: &Conflicted, b: &AdverseEvent) {
    let severity = (!c.hit("severity")).then_some(b.severity);
    let serious = (!c.hit("seriousness")).then_some(!b.seriousness.is_empty());
    let mut v = common(p);
    v.extend([
        ("id", id_val(p.header.id)),
        ("patient", opt_id(p.header.patient)),
        (
            "procedure",
            if c.hit("procedure") {
                Val::Null
            } else {
                opt_id(ref_id(&b.procedure))
            },
        ),
        ("reporter", c.val("reporter", text(b.reporter.code()))),
        ("category", c.val("category", text(&b.category))),
        ("onset", c.val("onset", text(&b.onset))),
        ("onset_day", c.val("onset", day_val(&b.onset))),
        ("severity", severity.map_or(Val::Null, Val::Int)),
        (
            "serious",
            serious.map_or(Val::Null, |s| Val::Int(i64::from(s))),
        ),
        (
            "seriousness",
            c.val("seriousness", Val::Text(b.seriousness.join(","))),
        ),
        ("outcome", c.val("outcome", text(b.outcome.code()))),
        ("description", c.val("description", text(&b.description))),
        (
            "policy_days",
            Val::Int(adjudication_policy_days(severity, serious)),
        ),
        ("conflicts", c.list()),
    ]);
    let r = row(&schema::ADVERSE_EVENTS, v);
    p.rows.push(r);
    // The adverse-event instrument's answers, when reported through it, in the answers table too.
    if !b.answers.is_empty() {
        answers(p, c, "answers", p.header.id, &b.answers);
    }
}

fn adjudication(p: &mut Projection, c: &Conflicted, b: &Adjudication) {
    let mut v = common(p);
    v.extend([
        ("id", id_val(p.header.id)),
        ("patient", opt_id(p.header.patient)),
        (
            "adverse_event",
            if c.hit("adverse_event") {
                Val::Null
            } else {
                opt_id(b.adverse_event.parse().ok())
            },
        ),
        (
            "relatedness",
            c.val(
                "relatedness",
                b.relatedness.map_or(Val::Null, |r| text(r.code())),
            ),
        ),
        ("action", c.val("action", text(&b.action))),
        ("remedy", c.val("remedy", text(&b.remedy))),
        ("status", c.val("status", text(b.status.code()))),
        ("deadline", c.val("deadline", text(&b.deadline))),
        ("deadline_day", c.val("deadline", day_val(&b.deadline))),
        ("decided_at", c.val("decided_at", opt_text(&b.decided_at))),
        ("conflicts", c.list()),
    ]);
    let r = row(&schema::ADJUDICATIONS, v);
    p.rows.push(r);
}

fn case(p: &mut Projection, c: &Conflicted, b: &AdjudicationCase) {
    let escalated = c.hit("escalations");
    let replied = c.hit("replies");
    let v = vec![
        ("id", id_val(p.header.id)),
        ("clinic", id_val(p.header.clinic)),
        ("patient", opt_id(p.header.patient)),
        (
            "adverse_event",
            if c.hit("adverse_event") {
                Val::Null
            } else {
                opt_id(b.adverse_event.parse().ok())
            },
        ),
        ("policy", c.val("policy", text(&b.policy))),
        ("rule", c.val("rule", text(&b.rule))),
        ("opened_at", c.val("opened_at", text(&b.opened_at))),
        ("days", c.val("days", Val::Int(b.days))),
        ("deadline", c.val("deadline", text(&b.deadline))),
        ("deadline_day", c.val("deadline", day_val(&b.deadline))),
        ("state", c.val("state", text(b.state.code()))),
        (
            "adjudication",
            c.val("adjudication", opt_id(ref_id(&b.adjudication))),
        ),
        (
            "responded_at",
            c.val("responded_at", opt_text(&b.responded_at)),
        ),
        (
            "escalations",
            c.val("escalations", Val::Int(b.escalations.len() as i64)),
        ),
        (
            "replies",
            c.val("replies", Val::Int(b.replies.len() as i64)),
        ),
        (
            "last_verdict",
            c.val(
                "replies",
                b.replies
                    .last()
                    .map_or(Val::Null, |r| text(r.verdict.code())),
            ),
        ),
        ("closed_at", c.val("closed_at", opt_text(&b.closed_at))),
        (
            "closed_note",
            c.val("closed_note", opt_text(&b.closed_note)),
        ),
        ("conflicts", c.list()),
    ];
    let r = row(&schema::CASES, v);
    p.rows.push(r);
    // A conflicted list has no trustworthy order: its values are in `rm_conflicts` instead.
    if !escalated {
        for (n, e) in b.escalations.iter().enumerate() {
            let r = row(
                &schema::CASE_ENTRIES,
                vec![
                    ("record", id_val(p.header.id)),
                    ("kind", text("escalation")),
                    ("n", Val::Int(n as i64)),
                    ("clinic", id_val(p.header.clinic)),
                    ("at", text(&e.at)),
                    ("text", text(&e.note)),
                ],
            );
            p.rows.push(r);
        }
    }
    if !replied {
        for (n, e) in b.replies.iter().enumerate() {
            let r = row(
                &schema::CASE_ENTRIES,
                vec![
                    ("record", id_val(p.header.id)),
                    ("kind", text("reply")),
                    ("n", Val::Int(n as i64)),
                    ("clinic", id_val(p.header.clinic)),
                    ("at", text(&e.at)),
                    ("verdict", text(e.verdict.code())),
                    ("text", text(&e.comment)),
                    ("reply", opt_id(e.reply.parse().ok())),
                ],
            );
            p.rows.push(r);
        }
    }
}

fn case_reply(p: &mut Projection, c: &Conflicted, b: &CaseReply) {
    let mut v = common(p);
    v.extend([
        ("id", id_val(p.header.id)),
        ("patient", opt_id(p.header.patient)),
        (
            "adverse_event",
            if c.hit("adverse_event") {
                Val::Null
            } else {
                opt_id(b.adverse_event.parse().ok())
            },
        ),
        ("verdict", c.val("verdict", text(b.verdict.code()))),
        ("comment", c.val("comment", text(&b.comment))),
        ("replied_at", c.val("replied_at", text(&b.replied_at))),
        ("conflicts", c.list()),
    ]);
    let r = row(&schema::CASE_REPLIES, v);
    p.rows.push(r);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn conflicted_paths_cover_parents_and_children() {
        let c = Conflicted(["consent".to_string(), "answers.q03".to_string()].into());
        assert!(c.hit("consent.date"));
        assert!(c.hit("answers.q03"));
        assert!(!c.hit("answers.q030"));
        assert!(!c.hit("answers.q04"));
        assert!(c.hit("answers"));
        assert!(!c.hit("cons"));
    }

    fn put(doc: &mut Automerge, key: &str, v: i64) {
        use automerge::transaction::Transactable;
        let mut tx = doc.transaction();
        tx.put(ROOT, key, v).unwrap();
        tx.commit();
    }

    #[test]
    fn only_a_linear_history_skips_the_conflict_walk() {
        use automerge::ActorId;
        let mut a = Automerge::new().with_actor(ActorId::from(&[1u8; 16][..]));
        put(&mut a, "x", 1);
        // Another device continuing on top of the first: still one chain, and no conflicts.
        let mut b = a.fork().with_actor(ActorId::from(&[2u8; 16][..]));
        put(&mut b, "x", 2);
        assert!(linear_history(&b));
        assert_eq!(b.get_all(ROOT, "x").unwrap().len(), 1);
        // Concurrent edits, merged: two heads.
        put(&mut a, "x", 3);
        a.merge(&mut b).unwrap();
        assert!(!linear_history(&a));
        assert_eq!(a.get_all(ROOT, "x").unwrap().len(), 2);
        // A later change on top of both heads leaves one head; the conflict stays, and so must
        // the walk (that change has two dependencies).
        put(&mut a, "y", 1);
        assert_eq!(a.get_heads().len(), 1);
        assert!(!linear_history(&a));
        assert_eq!(a.get_all(ROOT, "x").unwrap().len(), 2);
    }

    #[test]
    fn policy_is_stricter_for_serious_or_unknown() {
        assert_eq!(adjudication_policy_days(Some(2), Some(false)), 30);
        assert_eq!(adjudication_policy_days(Some(3), Some(false)), 7);
        assert_eq!(adjudication_policy_days(Some(1), Some(true)), 7);
        assert_eq!(adjudication_policy_days(None, Some(false)), 7);
    }

    #[test]
    fn day_numbers_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 14).unwrap();
        assert_eq!(date_of_day(day_number(d)), Some(d));
        assert_eq!(day_number(NaiveDate::default()), 0);
    }
}
