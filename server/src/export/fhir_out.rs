//! The FHIR export: NDJSON per resource type, as a FHIR Bulk Data export lays it out.
//!
//! Types are `fhir-model`'s (its R4B module: the seven resources written here have the same
//! structure in R4 4.0.1 and R4B, and no R4B-only element is used). Registry-specific codes use
//! code systems under [`FHIR_BASE`]`/CodeSystem/…`, and registry-specific elements extensions
//! under [`FHIR_BASE`]`/StructureDefinition/…`; `docs/export.md` lists them.

use fhir_model::r4b::codes::{
    AdministrativeGender, AdverseEventActuality, EventStatus, QuestionnaireResponseStatus,
    ResearchStudyStatus, ResearchSubjectStatus,
};
use fhir_model::r4b::resources::{
    AdverseEvent, AdverseEventSuspectEntity, AdverseEventSuspectEntityCausality, Organization,
    Patient, Procedure, ProcedurePerformed, ProcedurePerformer, QuestionnaireResponse,
    QuestionnaireResponseItem, QuestionnaireResponseItemAnswer,
    QuestionnaireResponseItemAnswerValue, ResearchStudy, ResearchSubject,
};
use fhir_model::r4b::types::{
    Address, CodeableConcept, Coding, Extension, ExtensionValue, Identifier, Money, Period,
    Reference,
};
use fhir_model::{BuilderError, Date, DateTime};
use followup_domain::model::{Reporter, ResponseStatus, Sex};
use followup_domain::questionnaire::{AnswerValue, ItemType};
use serde::Serialize;

use super::deid::{
    age, birth_year_withheld, export_date, is_code, is_currency, is_slug, is_token_with_digit,
    procedure_type_code, ExportDate, IdKind,
};
use super::sink::{Sink, Spool};
use super::source::{Body, SourceRecord};
use super::{AdjudicationRec, Ctx, ExportError, FormatWriter};

/// The base of the registry's code systems, extensions and questionnaire canonicals. `.invalid`
/// is reserved (RFC 2606): a registry that publishes these definitions replaces it with its own.
pub const FHIR_BASE: &str = "https://registry.followup.invalid/fhir";

/// The ResearchStudy every subject belongs to.
pub const STUDY_ID: &str = "registry";

const HL7_AE_SERIOUSNESS: &str = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness";
const HL7_AE_SEVERITY: &str = "http://terminology.hl7.org/CodeSystem/adverse-event-severity";
const HL7_AE_OUTCOME: &str = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome";
const HL7_AE_CAUSALITY: &str =
    "http://terminology.hl7.org/CodeSystem/adverse-event-causality-assess";

/// The resource types written, in file order.
pub const RESOURCE_TYPES: [&str; 7] = [
    "ResearchStudy",
    "Organization",
    "Patient",
    "ResearchSubject",
    "Procedure",
    "QuestionnaireResponse",
    "AdverseEvent",
];

pub fn code_system(name: &str) -> String {
    format!("{FHIR_BASE}/CodeSystem/{name}")
}

pub fn extension_url(name: &str) -> String {
    format!("{FHIR_BASE}/StructureDefinition/{name}")
}

/// The canonical of a questionnaire version: `{base}/Questionnaire/{id}|{version}`.
pub fn questionnaire_canonical(id: &str, version: &str) -> String {
    format!("{FHIR_BASE}/Questionnaire/{id}|{version}")
}

fn b(e: BuilderError) -> ExportError {
    ExportError::Internal(format!("FHIR resource: {e}"))
}

fn reference(s: String) -> Result<Reference, ExportError> {
    Reference::builder().reference(s).build().map_err(b)
}

fn coding(system: &str, code: &str, display: Option<&str>) -> Result<Coding, ExportError> {
    let mut c = Coding::builder()
        .system(system.to_string())
        .code(code.to_string());
    if let Some(d) = display {
        c = c.display(d.to_string());
    }
    c.build().map_err(b)
}

fn concept(codings: Vec<Coding>, text: Option<String>) -> Result<CodeableConcept, ExportError> {
    let mut c = CodeableConcept::builder().coding(codings.into_iter().map(Some).collect());
    if let Some(t) = text {
        c = c.text(t);
    }
    c.build().map_err(b)
}

fn ext(name: &str, value: ExtensionValue) -> Result<Extension, ExportError> {
    Extension::builder()
        .url(extension_url(name))
        .value(value)
        .build()
        .map_err(b)
}

/// One `conflicted-field` extension per field two devices set to different values (the
/// resource carries the value the registry shows).
fn conflict_exts(paths: &[String]) -> Result<Vec<Extension>, ExportError> {
    paths
        .iter()
        .map(|p| ext("conflicted-field", ExtensionValue::String(p.clone())))
        .collect()
}

fn ext_code(name: &str, system: &str, code: &str) -> Result<Extension, ExportError> {
    ext(
        name,
        ExtensionValue::Coding(coding(&code_system(system), code, None)?),
    )
}

fn ext_complex(name: &str, parts: Vec<Extension>) -> Result<Extension, ExportError> {
    Extension::builder()
        .url(extension_url(name))
        .extension(parts)
        .build()
        .map_err(b)
}

/// A sub-extension of a complex extension (relative url).
fn part(name: &str, value: ExtensionValue) -> Result<Extension, ExportError> {
    Extension::builder()
        .url(name.to_string())
        .value(value)
        .build()
        .map_err(b)
}

/// `days-from-procedure`: the day offset of a date element whose value was reduced to a year.
fn day_offset(element: &str, d: &ExportDate) -> Result<Option<Extension>, ExportError> {
    let Some(days) = d.day.and_then(|x| i32::try_from(x).ok()) else {
        return Ok(None);
    };
    Ok(Some(ext_complex(
        "days-from-procedure",
        vec![
            part("element", ExtensionValue::String(element.to_string()))?,
            part("days", ExtensionValue::Integer(days))?,
        ],
    )?))
}

/// The FHIR `date` of an exported date: exact when identified, else the year.
fn fhir_date(d: &ExportDate) -> Option<Date> {
    match &d.exact {
        Some(x) => x.get(..10).and_then(|s| s.parse::<Date>().ok()),
        None => (1000..10000)
            .contains(&d.year)
            .then_some(Date::Year(d.year)),
    }
}

/// The FHIR `dateTime` of an exported date or date-time.
fn fhir_datetime(d: &ExportDate) -> Option<DateTime> {
    match &d.exact {
        Some(x) => x
            .parse::<DateTime>()
            .ok()
            .or_else(|| fhir_date(d).map(DateTime::Date)),
        None => fhir_date(d).map(DateTime::Date),
    }
}

/// A resource type's NDJSON file being filled.
struct Ndjson {
    out: Spool,
    count: u64,
}

impl Ndjson {
    fn write<T: Serialize>(&mut self, resource: &T) -> Result<(), ExportError> {
        serde_json::to_writer(&mut self.out, resource)
            .map_err(|e| ExportError::Internal(format!("FHIR JSON: {e}")))?;
        std::io::Write::write_all(&mut self.out, b"\n")?;
        self.count += 1;
        Ok(())
    }
}

/// The FHIR format.
pub struct FhirWriter {
    files: Vec<(&'static str, Ndjson)>,
}

impl FhirWriter {
    pub fn new(ctx: &Ctx<'_>) -> Result<Self, ExportError> {
        let mut files = Vec::new();
        for t in RESOURCE_TYPES {
            files.push((
                t,
                Ndjson {
                    out: Spool::new()?,
                    count: 0,
                },
            ));
        }
        let mut w = FhirWriter { files };
        let study = ResearchStudy::builder()
            .id(STUDY_ID.to_string())
            .title("Followup: long-term outcomes of cell-based therapies".to_string())
            .status(ResearchStudyStatus::Active)
            .description(format!(
                "Patient-outcome registry export ({}).",
                if ctx.identified {
                    "identified"
                } else {
                    "de-identified, HIPAA Safe Harbor"
                }
            ))
            .build()
            .map_err(b)?;
        w.file("ResearchStudy")?.write(&study)?;
        Ok(w)
    }

    fn file(&mut self, t: &str) -> Result<&mut Ndjson, ExportError> {
        self.files
            .iter_mut()
            .find(|(name, _)| *name == t)
            .map(|(_, f)| f)
            .ok_or_else(|| ExportError::Internal(format!("no NDJSON file for {t}")))
    }
}

fn free_text(ctx: &mut Ctx<'_>, s: &str, reason: &str) -> Option<String> {
    if s.trim().is_empty() {
        return None;
    }
    if ctx.identified {
        Some(s.to_string())
    } else {
        ctx.withhold(reason);
        None
    }
}

fn code_or_withhold(
    ctx: &mut Ctx<'_>,
    s: &str,
    ok: fn(&str) -> bool,
    reason: &str,
) -> Option<String> {
    if s.trim().is_empty() {
        None
    } else if ctx.identified || ok(s) {
        Some(s.to_string())
    } else {
        ctx.withhold(reason);
        None
    }
}

fn registry_identifier(system: &str, value: String) -> Result<Identifier, ExportError> {
    Identifier::builder()
        .system(format!("{FHIR_BASE}/{system}"))
        .value(value)
        .build()
        .map_err(b)
}

impl FormatWriter for FhirWriter {
    fn clinic(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError> {
        let Body::Clinic(cl) = &rec.body else {
            return Ok(());
        };
        let mut extension = vec![ext_code(
            "participation",
            "participation",
            cl.participation.code(),
        )?];
        for a in &cl.accreditations {
            let mut period = Period::builder();
            if let Ok(d) = a.since.parse::<DateTime>() {
                period = period.start(d);
            }
            if let Some(Ok(d)) = a.until.as_deref().map(str::parse::<DateTime>) {
                period = period.end(d);
            }
            extension.push(ext_complex(
                "accreditation",
                vec![
                    part("body", ExtensionValue::String(a.body.clone()))?,
                    part("period", ExtensionValue::Period(period.build().map_err(b)?))?,
                ],
            )?);
        }
        let org = Organization::builder()
            .id(ctx.pseudo.id(IdKind::Clinic, rec.header.id))
            .name(cl.name.clone())
            .active(cl.participation == followup_domain::model::Participation::Participating)
            .address(vec![Some(
                Address::builder()
                    .country(cl.country.clone())
                    .build()
                    .map_err(b)?,
            )])
            .extension(extension)
            .build()
            .map_err(b)?;
        self.file("Organization")?.write(&org)
    }

    fn patient(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError> {
        let Body::Enrolment(e) = &rec.body else {
            return Ok(());
        };
        let id = rec.header.id;
        let pid = ctx.pseudo.id(IdKind::Patient, id);
        let clinic_ref = format!(
            "Organization/{}",
            ctx.pseudo.id(IdKind::Clinic, rec.header.clinic)
        );
        let anchor = ctx.anchors.index_date(id);
        let over = birth_year_withheld(e.birth_year, ctx.now_year);
        let mut patient = Patient::builder()
            .id(pid.clone())
            .gender(match e.sex {
                Sex::Female => AdministrativeGender::Female,
                Sex::Male => AdministrativeGender::Male,
                Sex::Intersex => AdministrativeGender::Other,
                Sex::Unknown => AdministrativeGender::Unknown,
            })
            .managing_organization(reference(clinic_ref)?);
        let mut extension = Vec::new();
        if over && !ctx.identified {
            ctx.withhold("birth year of a patient aged 90 or over");
            extension.push(ext("age-90-or-over", ExtensionValue::Boolean(true))?);
        } else if let Ok(y) = i32::try_from(e.birth_year) {
            if (1000..10000).contains(&y) {
                patient = patient.birth_date(Date::Year(y));
            }
        }
        let age_at = if over && !ctx.identified {
            None
        } else {
            anchor.and_then(|a| age(e.birth_year, chrono::Datelike::year(&a)))
        };
        if let Some(a) = age_at {
            extension.push(ext("age-at-first-procedure", ExtensionValue::String(a))?);
        }
        if ctx.identified {
            patient = patient.identifier(vec![Some(registry_identifier(
                &format!("study-code/{}", rec.header.clinic.to_hex()),
                e.study_code.clone(),
            )?)]);
        }
        extension.extend(conflict_exts(&rec.conflicted)?);
        let patient = patient.extension(extension).build().map_err(b)?;
        self.file("Patient")?.write(&patient)?;

        // The subject's enrolment and consent.
        let enrolled = export_date(Some(&e.enrolled_on), anchor, ctx.identified);
        let consent = export_date(Some(&e.consent.date), anchor, ctx.identified);
        let mut consent_parts = Vec::new();
        if let Some(v) = code_or_withhold(
            ctx,
            &e.consent.form_version,
            |s| is_token_with_digit(s) || is_code(s),
            "consent form version (not a version token)",
        ) {
            consent_parts.push(part("formVersion", ExtensionValue::String(v))?);
        }
        for s in &e.consent.scope {
            if let Some(s) = code_or_withhold(ctx, s, is_code, "consent scope (not a code)") {
                consent_parts.push(part(
                    "scope",
                    ExtensionValue::Coding(coding(&code_system("consent-scope"), &s, None)?),
                )?);
            }
        }
        let mut sub_ext = Vec::new();
        if let Some(c) = &consent {
            if let Some(d) = fhir_date(c) {
                consent_parts.push(part("date", ExtensionValue::Date(d))?);
            }
            if let Some(x) = day_offset("consent.date", c)? {
                sub_ext.push(x);
            }
        }
        sub_ext.push(ext_complex("consent", consent_parts)?);
        let mut subject = ResearchSubject::builder()
            .id(format!("subj-{}", pid.trim_start_matches("pat-")))
            .status(ResearchSubjectStatus::OnStudy)
            .study(reference(format!("ResearchStudy/{STUDY_ID}"))?)
            .individual(reference(format!("Patient/{pid}"))?);
        if let Some(en) = &enrolled {
            if let Some(start) = fhir_datetime(en) {
                subject = subject.period(Period::builder().start(start).build().map_err(b)?);
            }
            if let Some(x) = day_offset("period.start", en)? {
                sub_ext.push(x);
            }
        }
        let subject = subject.extension(sub_ext).build().map_err(b)?;
        self.file("ResearchSubject")?.write(&subject)
    }

    fn procedure(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError> {
        let (Body::Procedure(p), Some(patient)) = (&rec.body, rec.header.patient) else {
            return Ok(());
        };
        let anchor = ctx.anchors.index_date(patient);
        let clinic = ctx.pseudo.id(IdKind::Clinic, rec.header.clinic);
        let mut extension = vec![
            ext_code("route", "route", p.route.code())?,
            ext_code("cell-type", "cell-type", p.cell_type.code())?,
            ext_code("source-tissue", "source-tissue", p.source_tissue.code())?,
            ext_code("origin", "origin", p.origin.code())?,
            ext_code("manipulation", "manipulation", p.manipulation.code())?,
            ext_code(
                "regulatory-status",
                "regulatory-status",
                p.regulatory_status.code(),
            )?,
        ];
        if let Some(t) = p.trial_registration.as_deref().and_then(|t| {
            code_or_withhold(
                ctx,
                t,
                is_token_with_digit,
                "trial registration (not a registration token)",
            )
        }) {
            extension.push(ext("trial-registration", ExtensionValue::String(t))?);
        }
        if let Some(cost) = &p.cost {
            let mut money = Money::builder().value(cost.amount_minor as f64 / 100.0);
            if let Some(cur) = code_or_withhold(
                ctx,
                &cost.currency,
                is_currency,
                "cost currency (not ISO 4217)",
            ) {
                money = money.currency(cur);
            }
            extension.push(ext(
                "cost",
                ExtensionValue::Money(money.build().map_err(b)?),
            )?);
        }
        let benefits = p
            .promised_benefits
            .iter()
            .map(|x| format!("{} => {}", x.benefit, x.measure))
            .collect::<Vec<_>>()
            .join("; ");
        if let Some(t) = free_text(ctx, &benefits, "promised benefits (free text)") {
            extension.push(ext("promised-benefits", ExtensionValue::String(t))?);
        }
        let type_code = procedure_type_code(&p.procedure_type);
        if type_code.is_none() {
            ctx.withhold("procedure type (free text)");
        }
        let type_text = ctx.identified.then(|| p.procedure_type.clone());
        let mut codings = Vec::new();
        if let Some(code) = type_code {
            codings.push(coding(&code_system("procedure-type"), code, None)?);
        }
        let mut proc = Procedure::builder()
            .id(ctx.pseudo.id(IdKind::Procedure, rec.header.id))
            .status(EventStatus::Completed)
            .subject(reference(format!(
                "Patient/{}",
                ctx.pseudo.id(IdKind::Patient, patient)
            ))?)
            .code(concept(codings, type_text)?)
            .performer(vec![Some(
                ProcedurePerformer::builder()
                    .actor(reference(format!("Organization/{clinic}"))?)
                    .build()
                    .map_err(b)?,
            )]);
        if let Some(c) = free_text(ctx, &p.condition, "procedure condition (free text)") {
            proc = proc.reason_code(vec![Some(concept(vec![], Some(c))?)]);
        }
        if let Some(d) = export_date(Some(&p.date), anchor, ctx.identified) {
            if let Some(dt) = fhir_datetime(&d) {
                proc = proc.performed(ProcedurePerformed::DateTime(dt));
            }
            if let Some(x) = day_offset("performedDateTime", &d)? {
                extension.push(x);
            }
        }
        extension.extend(conflict_exts(&rec.conflicted)?);
        let proc = proc.extension(extension).build().map_err(b)?;
        self.file("Procedure")?.write(&proc)
    }

    fn response(&mut self, ctx: &mut Ctx<'_>, rec: &SourceRecord) -> Result<(), ExportError> {
        let (Body::Response(r), Some(patient)) = (&rec.body, rec.header.patient) else {
            return Ok(());
        };
        let identified = ctx.identified;
        let anchor = ctx.anchors.anchor(patient, r.procedure.as_deref());
        let pat_ref = format!("Patient/{}", ctx.pseudo.id(IdKind::Patient, patient));
        let ids_ok = is_slug(&r.questionnaire) && is_slug(&r.questionnaire_version);
        if !(identified || ids_ok) {
            // The canonical would carry whatever the device wrote there.
            ctx.withhold("response to a questionnaire whose id or version is not an id");
            return Ok(());
        }
        let def = ctx.definition(&r.questionnaire, &r.questionnaire_version);
        let mut items = Vec::new();
        let mut withheld: Vec<&'static str> = Vec::new();
        let answer = |v: QuestionnaireResponseItemAnswerValue| {
            QuestionnaireResponseItemAnswer::builder()
                .value(v)
                .build()
                .map_err(b)
        };
        for (key, value) in &r.answers {
            let item_def = def.as_ref().and_then(|q| q.item(key));
            let mut item_ext = Vec::new();
            let answers: Vec<QuestionnaireResponseItemAnswer> =
                match (item_def.map(|i| i.item_type), value) {
                    (_, AnswerValue::Bool(x)) => {
                        vec![answer(QuestionnaireResponseItemAnswerValue::Boolean(*x))?]
                    }
                    (Some(ItemType::Decimal), AnswerValue::Int(i)) => {
                        vec![answer(QuestionnaireResponseItemAnswerValue::Decimal(
                            *i as f64,
                        ))?]
                    }
                    (_, AnswerValue::Int(i)) => match i32::try_from(*i) {
                        Ok(i) => vec![answer(QuestionnaireResponseItemAnswerValue::Integer(i))?],
                        Err(_) => vec![answer(QuestionnaireResponseItemAnswerValue::Decimal(
                            *i as f64,
                        ))?],
                    },
                    (_, AnswerValue::Decimal(x)) if x.is_finite() => {
                        vec![answer(QuestionnaireResponseItemAnswerValue::Decimal(*x))?]
                    }
                    (Some(ItemType::Date), AnswerValue::Text(t)) => {
                        match export_date(Some(t), anchor, identified) {
                            Some(d) => {
                                if let Some(x) = day_offset("answer.valueDate", &d)? {
                                    item_ext.push(x);
                                }
                                fhir_date(&d)
                                    .map(|fd| {
                                        answer(QuestionnaireResponseItemAnswerValue::Date(fd))
                                    })
                                    .transpose()?
                                    .into_iter()
                                    .collect()
                            }
                            None => {
                                withheld.push("answer that does not fit its item");
                                vec![]
                            }
                        }
                    }
                    (Some(ItemType::SingleChoice), AnswerValue::Text(code)) => {
                        let item = item_def.ok_or_else(|| ExportError::Internal("item".into()))?;
                        match item.choice(code) {
                            Some(ch) => {
                                vec![answer(QuestionnaireResponseItemAnswerValue::Coding(
                                    Coding::builder()
                                        .code(ch.code.clone())
                                        .display(ch.label.clone())
                                        .build()
                                        .map_err(b)?,
                                ))?]
                            }
                            None if identified => vec![answer(
                                QuestionnaireResponseItemAnswerValue::String(code.clone()),
                            )?],
                            None => {
                                withheld.push("answer that does not fit its item");
                                vec![]
                            }
                        }
                    }
                    (Some(ItemType::MultipleChoice), AnswerValue::Choices(codes)) => {
                        let item = item_def.ok_or_else(|| ExportError::Internal("item".into()))?;
                        let mut out = Vec::new();
                        for code in codes {
                            match item.choice(code) {
                                Some(ch) => {
                                    out.push(answer(QuestionnaireResponseItemAnswerValue::Coding(
                                        Coding::builder()
                                            .code(ch.code.clone())
                                            .display(ch.label.clone())
                                            .build()
                                            .map_err(b)?,
                                    ))?)
                                }
                                None if identified => out.push(answer(
                                    QuestionnaireResponseItemAnswerValue::String(code.clone()),
                                )?),
                                None => withheld.push("answer that does not fit its item"),
                            }
                        }
                        out
                    }
                    (_, AnswerValue::Text(t)) if identified => {
                        vec![answer(QuestionnaireResponseItemAnswerValue::String(
                            t.clone(),
                        ))?]
                    }
                    (_, AnswerValue::Choices(c)) if identified => c
                        .iter()
                        .map(|x| answer(QuestionnaireResponseItemAnswerValue::String(x.clone())))
                        .collect::<Result<_, _>>()?,
                    (Some(ItemType::Text), _) => {
                        withheld.push("free-text answer");
                        vec![]
                    }
                    _ => {
                        withheld.push(if def.is_none() {
                            "answers of a response whose questionnaire version is unknown"
                        } else {
                            "answer that does not fit its item"
                        });
                        vec![]
                    }
                };
            if answers.is_empty() {
                continue;
            }
            let mut item = QuestionnaireResponseItem::builder()
                .link_id(key.clone())
                .answer(answers.into_iter().map(Some).collect())
                .extension(item_ext);
            if let Some(d) = item_def {
                item = item.text(d.text.clone());
            }
            items.push(Some(item.build().map_err(b)?));
        }
        for w in withheld {
            ctx.withhold(w);
        }
        let mut extension = Vec::new();
        if let Some(v) = r.visit.as_deref() {
            if let Some(v) = code_or_withhold(ctx, v, is_code, "visit (not a code)") {
                extension.push(ext_code("visit", "visit", &v)?);
            }
        }
        extension.push(ext_code(
            "completed-by",
            "completed-by",
            r.completed_by.code(),
        )?);
        let author = match r.completed_by {
            followup_domain::model::CompletedBy::Patient => pat_ref.clone(),
            followup_domain::model::CompletedBy::Nurse => format!(
                "Organization/{}",
                ctx.pseudo.id(IdKind::Clinic, rec.header.clinic)
            ),
        };
        let mut qr = QuestionnaireResponse::builder()
            .id(ctx.pseudo.id(IdKind::Response, rec.header.id))
            .questionnaire(questionnaire_canonical(
                &r.questionnaire,
                &r.questionnaire_version,
            ))
            .status(match r.status {
                ResponseStatus::Draft => QuestionnaireResponseStatus::InProgress,
                ResponseStatus::Submitted => QuestionnaireResponseStatus::Completed,
                ResponseStatus::Discarded => QuestionnaireResponseStatus::EnteredInError,
            })
            .subject(reference(pat_ref)?)
            .author(reference(author)?)
            .item(items);
        if let Some(p) = r.procedure.as_deref() {
            if let Ok(pid) = p.parse::<followup_domain::ids::RecordId>() {
                // Only a procedure of this patient in this export is referenced.
                if ctx.anchors.anchor(patient, Some(p)).is_some()
                    && ctx.anchors.owner(pid) == Some(patient)
                {
                    qr = qr.part_of(vec![Some(reference(format!(
                        "Procedure/{}",
                        ctx.pseudo.id(IdKind::Procedure, pid)
                    ))?)]);
                }
            }
        }
        if let Some(d) = export_date(r.submitted_at.as_deref(), anchor, identified) {
            if let Some(dt) = fhir_datetime(&d) {
                qr = qr.authored(dt);
            }
            if let Some(x) = day_offset("authored", &d)? {
                extension.push(x);
            }
        }
        extension.extend(conflict_exts(&rec.conflicted)?);
        let qr = qr.extension(extension).build().map_err(b)?;
        self.file("QuestionnaireResponse")?.write(&qr)
    }

    fn adverse_event(
        &mut self,
        ctx: &mut Ctx<'_>,
        rec: &SourceRecord,
        adjudications: &[AdjudicationRec],
    ) -> Result<(), ExportError> {
        let (Body::AdverseEvent(ae), Some(patient)) = (&rec.body, rec.header.patient) else {
            return Ok(());
        };
        let identified = ctx.identified;
        let anchor = ctx.anchors.anchor(patient, ae.procedure.as_deref());
        let pat_ref = format!("Patient/{}", ctx.pseudo.id(IdKind::Patient, patient));
        let clinic_ref = format!(
            "Organization/{}",
            ctx.pseudo.id(IdKind::Clinic, rec.header.clinic)
        );
        let mut extension = Vec::new();
        let category = code_or_withhold(
            ctx,
            &ae.category,
            is_code,
            "adverse-event category (not a code)",
        );
        let description = free_text(
            ctx,
            &ae.description,
            "adverse-event description (free text)",
        );
        let mut event_codings = Vec::new();
        if let Some(c) = &category {
            event_codings.push(coding(&code_system("adverse-event-category"), c, None)?);
        }
        let serious = ae.seriousness.iter().any(|s| s != "none");
        for s in &ae.seriousness {
            if let Some(s) = code_or_withhold(ctx, s, is_code, "seriousness criterion (not a code)")
            {
                extension.push(ext_code(
                    "seriousness-criterion",
                    "seriousness-criterion",
                    &s,
                )?);
            }
        }
        let severity_word = match ae.severity {
            i64::MIN..=1 => "mild",
            2 => "moderate",
            _ => "severe",
        };
        extension.push(ext(
            "ctcae-grade",
            ExtensionValue::Integer(i32::try_from(ae.severity).unwrap_or(0)),
        )?);
        extension.push(ext_code("reporter", "reporter", ae.reporter.code())?);
        let outcome = match ae.outcome {
            followup_domain::model::AeOutcome::Recovered => "resolved",
            followup_domain::model::AeOutcome::Recovering => "recovering",
            followup_domain::model::AeOutcome::NotRecovered => "ongoing",
            followup_domain::model::AeOutcome::RecoveredWithSequelae => "resolvedWithSequelae",
            followup_domain::model::AeOutcome::Fatal => "fatal",
            followup_domain::model::AeOutcome::Unknown => "unknown",
        };
        if !ae.answers.is_empty() {
            ctx.withhold("adverse-event report answers (carried by the coded elements)");
        }
        let mut event = AdverseEvent::builder()
            .id(ctx.pseudo.id(IdKind::AdverseEvent, rec.header.id))
            .actuality(AdverseEventActuality::Actual)
            .subject(reference(pat_ref.clone())?)
            .event(concept(event_codings.clone(), description)?)
            .category(vec![Some(concept(event_codings, None)?)])
            .seriousness(concept(
                vec![coding(
                    HL7_AE_SERIOUSNESS,
                    if serious { "serious" } else { "non-serious" },
                    None,
                )?],
                None,
            )?)
            .severity(concept(
                vec![coding(HL7_AE_SEVERITY, severity_word, None)?],
                None,
            )?)
            .outcome(concept(vec![coding(HL7_AE_OUTCOME, outcome, None)?], None)?)
            .recorder(reference(match ae.reporter {
                Reporter::Patient => pat_ref,
                Reporter::Clinic => clinic_ref.clone(),
            })?)
            .study(vec![Some(reference(format!("ResearchStudy/{STUDY_ID}"))?)]);
        if let Some(d) = export_date(Some(&ae.onset), anchor, identified) {
            if let Some(dt) = fhir_datetime(&d) {
                event = event.date(dt);
            }
            if let Some(x) = day_offset("date", &d)? {
                extension.push(x);
            }
        }
        // The clinic's adjudications: the causality assessment of the suspect procedure, and the
        // adjudication's course in an extension.
        let mut causality = Vec::new();
        for adj in adjudications {
            let a = &adj.body;
            let mut parts = vec![part(
                "status",
                ExtensionValue::Coding(coding(
                    &code_system("adjudication-status"),
                    a.status.code(),
                    None,
                )?),
            )?];
            parts.push(part(
                "id",
                ExtensionValue::String(ctx.pseudo.id(IdKind::Adjudication, adj.id)),
            )?);
            if let Some(d) = export_date(Some(&a.deadline), anchor, identified) {
                if let Some(fd) = fhir_date(&d) {
                    parts.push(part("deadline", ExtensionValue::Date(fd))?);
                }
                if let Some(x) = d.day.and_then(|x| i32::try_from(x).ok()) {
                    parts.push(part("deadlineDays", ExtensionValue::Integer(x))?);
                }
            }
            if let Some(d) = export_date(a.decided_at.as_deref(), anchor, identified) {
                if let Some(fd) = fhir_datetime(&d) {
                    parts.push(part("decided", ExtensionValue::DateTime(fd))?);
                }
                if let Some(x) = d.day.and_then(|x| i32::try_from(x).ok()) {
                    parts.push(part("decidedDays", ExtensionValue::Integer(x))?);
                }
            }
            if let Some(t) = free_text(ctx, &a.action, "adjudication action (free text)") {
                parts.push(part("action", ExtensionValue::String(t))?);
            }
            if let Some(t) = free_text(ctx, &a.remedy, "adjudication remedy (free text)") {
                parts.push(part("remedy", ExtensionValue::String(t))?);
            }
            if let Some(r) = a.relatedness {
                parts.push(part(
                    "relatedness",
                    ExtensionValue::Coding(coding(&code_system("relatedness"), r.code(), None)?),
                )?);
                let mut codings = vec![coding(&code_system("relatedness"), r.code(), None)?];
                use followup_domain::model::Relatedness as R;
                let who = match r {
                    R::Definite => Some("Certain"),
                    R::Probable => Some("Probably-Likely"),
                    R::Possible => Some("Possible"),
                    R::Unlikely => Some("Unlikely"),
                    R::NotRelated => None,
                };
                if let Some(w) = who {
                    codings.push(coding(HL7_AE_CAUSALITY, w, None)?);
                }
                causality.push(Some(
                    AdverseEventSuspectEntityCausality::builder()
                        .assessment(concept(codings, None)?)
                        .author(reference(clinic_ref.clone())?)
                        .build()
                        .map_err(b)?,
                ));
            }
            for path in &adj.conflicted {
                parts.push(part(
                    "conflictedField",
                    ExtensionValue::String(path.clone()),
                )?);
            }
            extension.push(ext_complex("adjudication", parts)?);
        }
        if let Some(p) = ae.procedure.as_deref() {
            if let Ok(pid) = p.parse::<followup_domain::ids::RecordId>() {
                if ctx.anchors.owner(pid) == Some(patient) {
                    event = event.suspect_entity(vec![Some(
                        AdverseEventSuspectEntity::builder()
                            .instance(reference(format!(
                                "Procedure/{}",
                                ctx.pseudo.id(IdKind::Procedure, pid)
                            ))?)
                            .causality(causality)
                            .build()
                            .map_err(b)?,
                    )]);
                }
            }
        }
        extension.extend(conflict_exts(&rec.conflicted)?);
        let event = event.extension(extension).build().map_err(b)?;
        self.file("AdverseEvent")?.write(&event)
    }

    fn finish(self: Box<Self>, ctx: &mut Ctx<'_>, sink: &mut dyn Sink) -> Result<(), ExportError> {
        for (t, f) in self.files {
            let name = format!("{t}.ndjson");
            ctx.summary.files.insert(name.clone(), f.count);
            f.out.into_sink(&name, sink)?;
        }
        super::readme::write(ctx, sink)
    }
}
