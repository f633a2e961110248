//! Registry-authored definitions — questionnaires, follow-up schedules, the adjudication policy —
//! as published records: the envelope every definition file carries, strict (publish) and
//! lenient (device) parsing, the record document a version becomes, and the [`Catalogue`] a
//! device or the server builds from those records. The format and the rules are in
//! `docs/definitions.md`.
//!
//! * The registry validates what it publishes **strictly** ([`Definition::parse_strict`]):
//!   unknown fields or features, a format above [`FORMAT`], a broken translation are refused.
//! * A device reads **leniently** ([`Definition::parse_lenient`]): unknown fields are ignored; a
//!   definition it cannot use (newer format, unknown feature or type, content that does not
//!   parse) is kept as [`Usability::NeedsUpdate`], so only that form is disabled.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use automerge::Automerge;
use autosurgeon::{Hydrate, Reconcile};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::ids::RecordId;
use crate::model::{self, Author, RecordBody, RecordKind};
use crate::policy::AdjudicationPolicy;
use crate::questionnaire::Questionnaire;
use crate::schedule::Schedule;

/// The definition format this code reads and writes.
pub const FORMAT: u32 = 1;

/// Features (named in a definition's `requires`) this code implements beyond [`FORMAT`]. None
/// yet: the list grows when a feature is added without a format change.
pub const KNOWN_FEATURES: &[&str] = &[];

/// The `clinic` of every definition record: the registry itself, in no clinic. Every device's
/// read scope includes it.
pub const REGISTRY_SCOPE: RecordId = RecordId([0xff; 16]);

/// The chain of language tags tried for a locale, most specific first, normalized (lower case,
/// `-`): `pt_BR` → `["pt-br", "pt"]`. Empty for an empty locale.
pub fn fallback_chain(locale: &str) -> Vec<String> {
    let tag = crate::questionnaire::normalize_tag(locale);
    let mut out = Vec::new();
    let mut cur = tag.as_str();
    while !cur.is_empty() {
        out.push(cur.to_string());
        match cur.rfind('-') {
            Some(i) => cur = &cur[..i],
            None => break,
        }
    }
    out
}

/// What a definition defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefinitionType {
    Questionnaire,
    Schedule,
    AdjudicationPolicy,
}

impl DefinitionType {
    pub const ALL: [DefinitionType; 3] = [
        DefinitionType::Questionnaire,
        DefinitionType::Schedule,
        DefinitionType::AdjudicationPolicy,
    ];

    /// The code in files and records.
    pub fn code(self) -> &'static str {
        match self {
            DefinitionType::Questionnaire => "questionnaire",
            DefinitionType::Schedule => "schedule",
            DefinitionType::AdjudicationPolicy => "adjudication_policy",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }
}

impl fmt::Display for DefinitionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Where a version is in its life. Only `state` ever changes in a definition record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefinitionState {
    /// Uploaded, not yet in use: stays on the registry.
    Draft,
    /// In use: new responses use the newest published version.
    Published,
    /// No longer offered for new responses; responses started with it still use it.
    Retired,
}

impl DefinitionState {
    pub fn code(self) -> &'static str {
        match self {
            DefinitionState::Draft => "draft",
            DefinitionState::Published => "published",
            DefinitionState::Retired => "retired",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [
            DefinitionState::Draft,
            DefinitionState::Published,
            DefinitionState::Retired,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }
}

impl fmt::Display for DefinitionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A `MAJOR.MINOR.PATCH` version, ordered numerically (1.10.0 > 1.9.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::str::FromStr for Version {
    type Err = DefinitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DefinitionError::Envelope(format!("version {s:?} is not MAJOR.MINOR.PATCH"));
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, DefinitionError> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = Version(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Why a definition was refused (publish) or could not be read at all (device).
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("the definition is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the definition's envelope is invalid: {0}")]
    Envelope(String),
    #[error("unknown field {path}")]
    UnknownField { path: String },
    #[error("format {found} is newer than this version reads ({FORMAT}); update the registry")]
    NewerFormat { found: u32 },
    #[error("unknown feature(s) {0:?}; update the registry")]
    UnknownFeatures(Vec<String>),
    #[error("{0}")]
    Questionnaire(#[from] crate::questionnaire::DefinitionError),
    #[error("{0}")]
    Schedule(#[from] crate::schedule::ScheduleError),
    #[error("adjudication policy: {0}")]
    Policy(String),
}

/// Why a device cannot use a definition it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usability {
    Usable,
    /// The form needs a newer app; the reason says why (for support, not for the user).
    NeedsUpdate(String),
}

impl Usability {
    pub fn is_usable(&self) -> bool {
        matches!(self, Usability::Usable)
    }
}

/// The common fields of every definition file.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub format: u32,
    /// The type code as written (an unknown one makes the definition unusable, not unreadable).
    pub definition: String,
    pub requires: Vec<String>,
    pub id: String,
    pub version: Version,
    pub language: String,
    /// The default language then every translation's tag.
    pub languages: Vec<String>,
    /// Schedules: the first procedure date this version applies to.
    pub effective_from: Option<NaiveDate>,
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(default = "format_one")]
    format: u32,
    #[serde(default = "questionnaire_code")]
    definition: String,
    #[serde(default)]
    requires: Vec<String>,
    id: String,
    version: String,
    #[serde(default = "english")]
    language: String,
    #[serde(default)]
    translations: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    effective_from: Option<String>,
}

fn format_one() -> u32 {
    1
}
fn questionnaire_code() -> String {
    "questionnaire".into()
}
fn english() -> String {
    "en".into()
}

impl Envelope {
    /// Read the envelope (never the content) of a definition file.
    pub fn parse(json: &str) -> Result<Envelope, DefinitionError> {
        let raw: RawEnvelope = serde_json::from_str(json)?;
        if raw.id.trim().is_empty() {
            return Err(DefinitionError::Envelope("the id is empty".into()));
        }
        let version: Version = raw.version.parse()?;
        let effective_from = match raw.effective_from {
            None => None,
            Some(s) => Some(NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|_| {
                DefinitionError::Envelope(format!("effective_from {s:?} is not YYYY-MM-DD"))
            })?),
        };
        let mut languages = vec![raw.language.clone()];
        languages.extend(raw.translations.keys().cloned());
        Ok(Envelope {
            format: raw.format,
            definition: raw.definition,
            requires: raw.requires,
            id: raw.id,
            version,
            language: raw.language,
            languages,
            effective_from,
        })
    }

    /// The definition type, if this code knows it.
    pub fn definition_type(&self) -> Option<DefinitionType> {
        DefinitionType::from_code(&self.definition)
    }

    /// Whether this code can use a definition with this envelope.
    pub fn usability(&self) -> Usability {
        if self.format > FORMAT {
            return Usability::NeedsUpdate(format!(
                "format {} (this app reads {FORMAT})",
                self.format
            ));
        }
        let unknown: Vec<&String> = self
            .requires
            .iter()
            .filter(|f| !KNOWN_FEATURES.contains(&f.as_str()))
            .collect();
        if !unknown.is_empty() {
            return Usability::NeedsUpdate(format!("unknown feature(s) {unknown:?}"));
        }
        if self.definition_type().is_none() {
            return Usability::NeedsUpdate(format!(
                "unknown definition type {:?}",
                self.definition
            ));
        }
        Usability::Usable
    }
}

/// The parsed content of a usable definition.
#[derive(Debug, Clone)]
pub enum Content {
    Questionnaire(Arc<Questionnaire>),
    Schedule(Arc<Schedule>),
    /// The adjudication policy (the deadlines the registry sets; `crate::policy`).
    AdjudicationPolicy(Arc<AdjudicationPolicy>),
}

/// A definition file, read.
#[derive(Debug, Clone)]
pub struct Definition {
    pub envelope: Envelope,
    /// `Err` with the reason when this code cannot use it.
    pub content: Result<Content, String>,
    /// The file as published.
    pub json: String,
}

impl Definition {
    /// Read a definition as the registry does before publishing it: every field known, every
    /// feature known, the format readable, the content valid.
    pub fn parse_strict(json: &str) -> Result<Definition, DefinitionError> {
        let envelope = Envelope::parse(json)?;
        if envelope.format > FORMAT {
            return Err(DefinitionError::NewerFormat {
                found: envelope.format,
            });
        }
        let unknown: Vec<String> = envelope
            .requires
            .iter()
            .filter(|f| !KNOWN_FEATURES.contains(&f.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(DefinitionError::UnknownFeatures(unknown));
        }
        let Some(t) = envelope.definition_type() else {
            return Err(DefinitionError::Envelope(format!(
                "unknown definition type {:?} (questionnaire, schedule or adjudication_policy)",
                envelope.definition
            )));
        };
        let value: serde_json::Value = serde_json::from_str(json)?;
        strict::check(t, &value)?;
        let content = parse_content(t, json)?;
        Ok(Definition {
            envelope,
            content: Ok(content),
            json: json.to_string(),
        })
    }

    /// Read a definition as a device does: unknown fields ignored; one it cannot use is kept,
    /// with the reason, as long as its envelope (id, version) is readable.
    pub fn parse_lenient(json: &str) -> Result<Definition, DefinitionError> {
        let envelope = Envelope::parse(json)?;
        let content = match (envelope.usability(), envelope.definition_type()) {
            (Usability::Usable, Some(t)) => parse_content(t, json).map_err(|e| e.to_string()),
            (Usability::NeedsUpdate(why), _) => Err(why),
            (Usability::Usable, None) => Err("unknown definition type".into()),
        };
        Ok(Definition {
            envelope,
            content,
            json: json.to_string(),
        })
    }

    pub fn definition_type(&self) -> Option<DefinitionType> {
        self.envelope.definition_type()
    }

    /// The questionnaire, if this is a usable one.
    pub fn questionnaire(&self) -> Option<&Arc<Questionnaire>> {
        match &self.content {
            Ok(Content::Questionnaire(q)) => Some(q),
            _ => None,
        }
    }

    /// The adjudication policy, if this is a usable one.
    pub fn policy(&self) -> Option<&Arc<AdjudicationPolicy>> {
        match &self.content {
            Ok(Content::AdjudicationPolicy(p)) => Some(p),
            _ => None,
        }
    }

    /// The schedule, if this is a usable one.
    pub fn schedule(&self) -> Option<&Arc<Schedule>> {
        match &self.content {
            Ok(Content::Schedule(s)) => Some(s),
            _ => None,
        }
    }

    /// The record id of this version.
    pub fn record_id(&self) -> RecordId {
        record_id(
            &self.envelope.definition,
            &self.envelope.id,
            self.envelope.version,
        )
    }
}

fn parse_content(t: DefinitionType, json: &str) -> Result<Content, DefinitionError> {
    Ok(match t {
        DefinitionType::Questionnaire => {
            Content::Questionnaire(Arc::new(Questionnaire::from_json(json)?))
        }
        DefinitionType::Schedule => Content::Schedule(Arc::new(Schedule::from_json(json)?)),
        // Unknown fields were refused by the strict check at publish; a device ignores them.
        DefinitionType::AdjudicationPolicy => Content::AdjudicationPolicy(Arc::new(
            AdjudicationPolicy::from_json_lenient(json)
                .map_err(|e| DefinitionError::Policy(e.to_string()))?,
        )),
    })
}

/// The record id of a definition version: the first 16 bytes of SHA-256 over type, id and
/// version, so a version has one record everywhere.
pub fn record_id(definition: &str, id: &str, version: Version) -> RecordId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in ["followup-definition", definition, id, &version.to_string()] {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    let d = ctx.finish();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    RecordId(out)
}

/// The lower-case hex SHA-256 of a definition's text.
pub fn content_hash(json: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, json.as_bytes()))
}

/// The body of a definition record (kind `definition`).
#[derive(Debug, Clone, PartialEq, Reconcile, Hydrate, Serialize, Deserialize)]
pub struct DefinitionBody {
    /// The type code.
    pub definition: String,
    pub def_id: String,
    pub version: String,
    pub format: u32,
    /// Comma-separated feature names.
    pub requires: String,
    /// Comma-separated language tags, the default first.
    pub languages: String,
    /// `draft`, `published` or `retired`: the only field that changes.
    pub state: String,
    /// The definition file, verbatim.
    pub content: String,
    /// Hex SHA-256 of `content`.
    pub sha256: String,
}

impl RecordBody for DefinitionBody {
    const KIND: RecordKind = RecordKind::Definition;
}

impl DefinitionBody {
    /// The body of a version of `def` in `state`.
    pub fn new(def: &Definition, state: DefinitionState) -> DefinitionBody {
        let e = &def.envelope;
        DefinitionBody {
            definition: e.definition.clone(),
            def_id: e.id.clone(),
            version: e.version.to_string(),
            format: e.format,
            requires: e.requires.join(","),
            languages: e.languages.join(","),
            state: state.code().to_string(),
            content: def.json.clone(),
            sha256: content_hash(&def.json),
        }
    }

    /// The state, if known (a newer state name reads as retired: not offered for new use).
    pub fn state(&self) -> DefinitionState {
        DefinitionState::from_code(&self.state).unwrap_or(DefinitionState::Retired)
    }
}

/// The record document of a definition version, built deterministically (the registry's actor,
/// time 0): the same file gives the same bytes wherever it is built. Its state is `published`
/// when `state` is, so that a published version's first change is the same on every registry.
pub fn new_definition_doc(
    def: &Definition,
    state: DefinitionState,
) -> Result<Automerge, crate::error::Error> {
    let body = DefinitionBody::new(def, state);
    model::new_record(
        Author {
            device: None,
            user: None,
            time: 0,
        },
        def.record_id(),
        REGISTRY_SCOPE,
        None,
        &body,
    )
}

/// One definition version a catalogue holds.
#[derive(Debug, Clone)]
pub struct Entry {
    pub definition: Definition,
    pub state: DefinitionState,
    pub record: RecordId,
}

impl Entry {
    pub fn usability(&self) -> Usability {
        match &self.definition.content {
            Ok(_) => Usability::Usable,
            Err(why) => Usability::NeedsUpdate(why.clone()),
        }
    }
}

/// The definitions a device (or the server) holds, by type, id and version.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    entries: BTreeMap<(String, String), BTreeMap<Version, Entry>>,
}

impl Catalogue {
    /// Add (or replace) a version from its record body. A body whose content is not even a
    /// readable envelope is skipped and reported.
    pub fn insert_body(
        &mut self,
        record: RecordId,
        body: &DefinitionBody,
    ) -> Result<(), DefinitionError> {
        let def = Definition::parse_lenient(&body.content)?;
        self.insert(record, def, body.state());
        Ok(())
    }

    /// Add (or replace) a version.
    pub fn insert(&mut self, record: RecordId, definition: Definition, state: DefinitionState) {
        let key = (
            definition.envelope.definition.clone(),
            definition.envelope.id.clone(),
        );
        let version = definition.envelope.version;
        self.entries.entry(key).or_default().insert(
            version,
            Entry {
                definition,
                state,
                record,
            },
        );
    }

    /// Every version, by type, id, then version.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().flat_map(|v| v.values())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The exact version of a definition, whatever its state and usability.
    pub fn get(&self, t: DefinitionType, id: &str, version: &str) -> Option<&Entry> {
        let v: Version = version.parse().ok()?;
        self.entries
            .get(&(t.code().to_string(), id.to_string()))?
            .get(&v)
    }

    /// The exact version of a questionnaire, if the catalogue holds it and it is usable.
    pub fn questionnaire(&self, id: &str, version: &str) -> Option<&Arc<Questionnaire>> {
        self.get(DefinitionType::Questionnaire, id, version)?
            .definition
            .questionnaire()
    }

    /// The newest published version of a definition (usable or not: the caller tells the user
    /// it needs an update rather than silently using an older one).
    pub fn latest_published(&self, t: DefinitionType, id: &str) -> Option<&Entry> {
        self.entries
            .get(&(t.code().to_string(), id.to_string()))?
            .values()
            .rev()
            .find(|e| e.state == DefinitionState::Published)
    }

    /// The schedule in force for a procedure on `date`: among published and retired versions of
    /// every usable schedule, the newest whose `effective_from` is on or before `date` (absent:
    /// always). With several schedule ids, the one with the newest such version wins.
    pub fn schedule_for(&self, date: NaiveDate) -> Option<&Arc<Schedule>> {
        let mut best: Option<(&Entry, Version)> = None;
        for e in self.entries() {
            if e.definition.definition_type() != Some(DefinitionType::Schedule)
                || e.state == DefinitionState::Draft
            {
                continue;
            }
            if e.definition
                .envelope
                .effective_from
                .is_some_and(|f| f > date)
            {
                continue;
            }
            if e.definition.schedule().is_none() {
                continue;
            }
            let v = e.definition.envelope.version;
            let newer = match best {
                None => true,
                Some((b, bv)) => {
                    let (bf, ef) = (
                        b.definition.envelope.effective_from,
                        e.definition.envelope.effective_from,
                    );
                    (ef, v) > (bf, bv)
                }
            };
            if newer {
                best = Some((e, v));
            }
        }
        best.and_then(|(e, _)| e.definition.schedule())
    }

    /// The adjudication policy in force: the newest published, usable version (by version;
    /// a registry keeps one policy id, and with several the highest version wins, then the
    /// greatest id). `None` when the catalogue holds none.
    pub fn adjudication_policy(&self) -> Option<&Arc<AdjudicationPolicy>> {
        self.entries()
            .filter(|e| e.state == DefinitionState::Published)
            .filter_map(|e| {
                let p = e.definition.policy()?;
                Some((
                    (e.definition.envelope.version, &e.definition.envelope.id),
                    p,
                ))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, p)| p)
    }

    /// Every distinct usable schedule (for code that needs them all, e.g. visit ids).
    pub fn schedules(&self) -> Vec<&Arc<Schedule>> {
        self.entries()
            .filter(|e| e.state != DefinitionState::Draft)
            .filter_map(|e| e.definition.schedule())
            .collect()
    }

    /// Ids of the definitions of a type.
    pub fn ids(&self, t: DefinitionType) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.entries
            .keys()
            .filter(|(ty, _)| ty == t.code())
            .map(|(_, id)| id.as_str())
            .filter(|id| seen.insert(*id))
            .collect()
    }
}

/// The strict (publish-time) check for unknown fields.
mod strict {
    use serde_json::Value;

    use super::{DefinitionError, DefinitionType};

    const ENVELOPE: &[&str] = &[
        "format",
        "definition",
        "requires",
        "id",
        "version",
        "language",
        "translations",
    ];
    const QUESTIONNAIRE: &[&str] = &["title", "description", "kind", "items", "scores"];
    const ITEM: &[&str] = &[
        "id",
        "text",
        "type",
        "required",
        "help",
        "unit",
        "min",
        "max",
        "decimals",
        "max_length",
        "choices",
        "enable_when",
        "enable_behavior",
    ];
    const CHOICE: &[&str] = &["code", "label", "score", "exclusive"];
    const CONDITION: &[&str] = &["item", "operator", "value"];
    const SCORE: &[&str] = &["id", "label", "items", "method", "min_answered"];
    const Q_TRANSLATION: &[&str] = &["title", "description", "items", "scores"];
    const ITEM_TRANSLATION: &[&str] = &["text", "help", "unit", "choices"];
    const SCHEDULE: &[&str] = &["description", "grace_days", "visits", "effective_from"];
    const VISIT: &[&str] = &[
        "id",
        "label",
        "offset_days",
        "window_before_days",
        "window_after_days",
        "questionnaire",
        "grace_days",
    ];
    const S_TRANSLATION: &[&str] = &["description", "visits"];
    const POLICY: &[&str] = &["description", "rules", "default_days"];
    const RULE: &[&str] = &["label", "serious", "min_severity", "days"];

    fn keys(v: &Value, path: &str, allowed: &[&[&str]]) -> Result<(), DefinitionError> {
        if let Value::Object(m) = v {
            for k in m.keys() {
                if !allowed.iter().any(|a| a.contains(&k.as_str())) {
                    return Err(DefinitionError::UnknownField {
                        path: format!("{path}.{k}"),
                    });
                }
            }
        }
        Ok(())
    }

    fn each<'a>(v: &'a Value, key: &str) -> Vec<(String, &'a Value)> {
        match v.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let name = x
                        .get("id")
                        .or_else(|| x.get("code"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("#{}", i + 1));
                    (name, x)
                })
                .collect(),
            Some(Value::Object(m)) => m.iter().map(|(k, x)| (k.clone(), x)).collect(),
            Some(x) => vec![(String::new(), x)],
            None => Vec::new(),
        }
    }

    pub(super) fn check(t: DefinitionType, v: &Value) -> Result<(), DefinitionError> {
        match t {
            DefinitionType::Questionnaire => {
                keys(v, "", &[ENVELOPE, QUESTIONNAIRE])?;
                for (id, item) in each(v, "items") {
                    let p = format!("items[{id}]");
                    keys(item, &p, &[ITEM])?;
                    for (code, c) in each(item, "choices") {
                        keys(c, &format!("{p}.choices[{code}]"), &[CHOICE])?;
                    }
                    for (_, c) in each(item, "enable_when") {
                        keys(c, &format!("{p}.enable_when"), &[CONDITION])?;
                    }
                }
                for (id, s) in each(v, "scores") {
                    keys(s, &format!("scores[{id}]"), &[SCORE])?;
                }
                for (lang, tr) in each(v, "translations") {
                    let p = format!("translations.{lang}");
                    keys(tr, &p, &[Q_TRANSLATION])?;
                    for (id, it) in each(tr, "items") {
                        keys(it, &format!("{p}.items.{id}"), &[ITEM_TRANSLATION])?;
                    }
                }
            }
            DefinitionType::Schedule => {
                keys(v, "", &[ENVELOPE, SCHEDULE])?;
                for (id, visit) in each(v, "visits") {
                    keys(visit, &format!("visits[{id}]"), &[VISIT])?;
                }
                for (lang, tr) in each(v, "translations") {
                    keys(tr, &format!("translations.{lang}"), &[S_TRANSLATION])?;
                }
            }
            DefinitionType::AdjudicationPolicy => {
                keys(v, "", &[ENVELOPE, POLICY])?;
                for (label, rule) in each(v, "rules") {
                    keys(rule, &format!("rules[{label}]"), &[RULE])?;
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Admin API types (JSON) and the built-in definitions.

/// What a publish (or retire) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishOutcome {
    /// A new version is published.
    Published,
    /// Stored as a draft (devices do not see it).
    Drafted,
    /// This exact version and content was already there: nothing changed.
    Unchanged,
    /// The version is retired.
    Retired,
}

/// `POST /v1/admin/definitions` and `…/retire` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResponse {
    pub record: RecordId,
    pub definition: String,
    pub id: String,
    pub version: String,
    pub state: String,
    pub outcome: PublishOutcome,
}

/// One version as `GET /v1/admin/definitions` and `followup device questionnaires` list it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionSummary {
    pub record: RecordId,
    pub definition: String,
    pub id: String,
    pub version: String,
    pub state: String,
    /// Language tags, the default first.
    pub languages: Vec<String>,
    pub format: u32,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

impl DefinitionSummary {
    pub fn from_body(record: RecordId, b: &DefinitionBody) -> Self {
        DefinitionSummary {
            record,
            definition: b.definition.clone(),
            id: b.def_id.clone(),
            version: b.version.clone(),
            state: b.state.clone(),
            languages: b
                .languages
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            format: b.format,
            sha256: b.sha256.clone(),
        }
    }

    /// The version for sorting (unparsable versions first).
    pub fn sort_version(&self) -> Option<Version> {
        self.version.parse().ok()
    }
}

const BUILTIN: [&str; 6] = [
    include_str!("../instruments/baseline-procedure.json"),
    include_str!("../instruments/clinician-followup.json"),
    include_str!("../instruments/patient-outcome-survey.json"),
    include_str!("../instruments/adverse-event-report.json"),
    include_str!("../schedules/default.json"),
    include_str!("../policies/adjudication-default.json"),
];

/// The definition files a new registry publishes at its first start (questionnaires before the
/// schedule that refers to them). Not what a device uses: a device uses what it received.
pub const fn builtin_definitions() -> &'static [&'static str] {
    &BUILTIN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::questionnaire::{AnswerValue, Answers, ProblemCode};

    fn survey() -> &'static str {
        BUILTIN[2]
    }

    #[test]
    fn locale_fallback_chain() {
        assert_eq!(fallback_chain("pt-BR"), ["pt-br", "pt"]);
        assert_eq!(fallback_chain("pt_br"), ["pt-br", "pt"]);
        assert_eq!(
            fallback_chain("zh-Hant-TW"),
            ["zh-hant-tw", "zh-hant", "zh"]
        );
        assert_eq!(fallback_chain("es"), ["es"]);
        assert!(fallback_chain("").is_empty());
    }

    /// The policy is strict at publish and lenient on a device, like every definition; the
    /// catalogue's policy in force is the newest published usable version.
    #[test]
    fn the_adjudication_policy_is_a_definition() {
        let policy = BUILTIN[5];
        let d = Definition::parse_strict(policy).unwrap();
        assert_eq!(
            d.definition_type(),
            Some(DefinitionType::AdjudicationPolicy)
        );
        assert_eq!(d.policy().unwrap().decide(2, false).days, 30);
        let newer = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_str(policy).unwrap();
            f(&mut v);
            v.to_string()
        };
        let hinted = newer(&|v| {
            v["version"] = "1.1.0".into();
            v["default_days"] = 14.into();
            v["rules"][0]["colour"] = "red".into();
        });
        assert!(matches!(
            Definition::parse_strict(&hinted),
            Err(DefinitionError::UnknownField { .. })
        ));
        let lenient = Definition::parse_lenient(&hinted).unwrap();
        assert_eq!(lenient.policy().unwrap().decide(2, false).days, 14);
        let zero = newer(&|v| v["default_days"] = 0.into());
        assert!(matches!(
            Definition::parse_strict(&zero),
            Err(DefinitionError::Policy(_))
        ));

        let mut cat = Catalogue::default();
        cat.insert(d.record_id(), d, DefinitionState::Published);
        let draft = newer(&|v| {
            v["version"] = "2.0.0".into();
            v["default_days"] = 3.into();
        });
        let draft = Definition::parse_strict(&draft).unwrap();
        cat.insert(draft.record_id(), draft, DefinitionState::Draft);
        assert_eq!(cat.adjudication_policy().unwrap().version, "1.0.0");
        cat.insert(lenient.record_id(), lenient, DefinitionState::Published);
        assert_eq!(cat.adjudication_policy().unwrap().version, "1.1.0");
    }

    #[test]
    fn every_builtin_definition_is_publishable() {
        for json in builtin_definitions() {
            let d = Definition::parse_strict(json).unwrap_or_else(|e| panic!("{e}"));
            assert!(d.content.is_ok());
            assert_eq!(d.envelope.format, FORMAT);
        }
    }

    #[test]
    fn default_instruments_are_complete_in_spanish_and_the_survey_in_portuguese() {
        for json in &BUILTIN[..4] {
            let d = Definition::parse_strict(json).unwrap();
            let q = d.questionnaire().unwrap();
            let mut langs = vec!["es"];
            if q.id() == "patient-outcome-survey" {
                langs.push("pt");
            }
            for lang in langs {
                let t = q
                    .translations()
                    .get(lang)
                    .unwrap_or_else(|| panic!("{} {lang}", q.id()));
                assert!(
                    t.title.is_some() && t.description.is_some(),
                    "{} {lang}",
                    q.id()
                );
                for item in q.items() {
                    let it = t
                        .items
                        .get(&item.id)
                        .unwrap_or_else(|| panic!("{} {lang} {}", q.id(), item.id));
                    assert!(it.text.is_some(), "{} {lang} {}", q.id(), item.id);
                    assert_eq!(
                        item.help.is_some(),
                        it.help.is_some(),
                        "{} {lang} {} help",
                        q.id(),
                        item.id
                    );
                    assert_eq!(
                        item.unit.is_some(),
                        it.unit.is_some(),
                        "{} {lang} {} unit",
                        q.id(),
                        item.id
                    );
                    for c in &item.choices {
                        assert!(
                            it.choices.contains_key(&c.code),
                            "{} {lang} {} {}",
                            q.id(),
                            item.id,
                            c.code
                        );
                    }
                }
                for s in q.score_definitions() {
                    assert!(
                        t.scores.contains_key(&s.id),
                        "{} {lang} score {}",
                        q.id(),
                        s.id
                    );
                }
            }
        }
    }

    #[test]
    fn texts_follow_the_locale_with_fallback() {
        let d = Definition::parse_strict(survey()).unwrap();
        let q = d.questionnaire().unwrap();
        assert_eq!(q.languages(), ["en", "es", "pt"]);
        let es = q.localized("es-MX");
        assert_eq!(es.title(), "Su salud desde el procedimiento");
        assert_eq!(es.item("walking").unwrap().text, "Caminar");
        assert_eq!(
            es.item("walking").unwrap().choice("aid").unwrap().label,
            "Camino con bastón o andador"
        );
        let pt = q.localized("pt-BR");
        assert_eq!(pt.item("completed_date").unwrap().text, "Data de hoje");
        // No German: the definition's own language.
        assert_eq!(q.localized("de-DE").title(), q.title());
        // Structure and codes do not change.
        assert_eq!(es.items().len(), q.items().len());
        assert_eq!(es.item("walking").unwrap().choices[1].code, "aid");
    }

    #[test]
    fn validation_messages_follow_the_locale() {
        let d = Definition::parse_strict(survey()).unwrap();
        let q = d.questionnaire().unwrap();
        let mut a = Answers::new();
        a.insert("symptom_pain".into(), AnswerValue::Int(11));
        let en = q.validate_in(&a, "en");
        let es = q.validate_in(&a, "es-AR");
        let pt = q.validate_in(&a, "pt-BR");
        let de = q.validate_in(&a, "de");
        assert_eq!(en.len(), es.len());
        let above = |ps: &[crate::questionnaire::Problem]| {
            ps.iter()
                .find(|p| p.code == ProblemCode::AboveMax)
                .map(|p| p.message.clone())
                .unwrap()
        };
        assert_eq!(above(&en), "symptom_pain: 11 is above the maximum of 10");
        assert_eq!(above(&es), "symptom_pain: 11 es mayor que el máximo de 10");
        assert_eq!(above(&pt), "symptom_pain: 11 é maior que o máximo de 10");
        assert_eq!(above(&de), above(&en));
        assert!(es.iter().any(|p| p.code == ProblemCode::Required
            && p.message.ends_with("la respuesta es obligatoria")));
        // Same problems, same codes, whatever the language.
        let codes = |ps: &[crate::questionnaire::Problem]| {
            ps.iter()
                .map(|p| (p.item.clone(), p.code))
                .collect::<Vec<_>>()
        };
        assert_eq!(codes(&en), codes(&es));
    }

    fn with(json: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn strict_refuses_what_lenient_keeps_as_needing_an_update() {
        let newer = with(survey(), |v| v["format"] = 2.into());
        assert!(matches!(
            Definition::parse_strict(&newer),
            Err(DefinitionError::NewerFormat { found: 2 })
        ));
        let d = Definition::parse_lenient(&newer).unwrap();
        assert!(d.content.is_err());
        assert_eq!(d.envelope.id, "patient-outcome-survey");

        let feature = with(survey(), |v| {
            v["requires"] = serde_json::json!(["calculated_items"])
        });
        assert!(matches!(
            Definition::parse_strict(&feature),
            Err(DefinitionError::UnknownFeatures(_))
        ));
        assert!(!Envelope::parse(&feature).unwrap().usability().is_usable());
        assert!(Definition::parse_lenient(&feature)
            .unwrap()
            .content
            .is_err());

        // An unknown presentation hint: refused at publish, ignored by a device.
        let hint = with(survey(), |v| v["items"][0]["hint"] = "calendar".into());
        assert!(matches!(
            Definition::parse_strict(&hint),
            Err(DefinitionError::UnknownField { .. })
        ));
        let d = Definition::parse_lenient(&hint).unwrap();
        assert!(d.questionnaire().is_some());

        // An item type this app does not know: the form is unusable, not unreadable.
        let new_type = with(survey(), |v| v["items"][0]["type"] = "photo".into());
        let d = Definition::parse_lenient(&new_type).unwrap();
        assert!(d.content.as_ref().unwrap_err().contains("photo"));

        // A translation of an item that does not exist.
        let bad = with(survey(), |v| {
            v["translations"]["es"]["items"]["nope"] = serde_json::json!({"text": "x"})
        });
        assert!(Definition::parse_strict(&bad).is_err());
        // No envelope: nothing to keep.
        assert!(Definition::parse_lenient("{\"title\": 1}").is_err());
    }

    #[test]
    fn records_are_deterministic_and_the_catalogue_picks_versions() {
        let v1 = Definition::parse_strict(survey()).unwrap();
        let a = new_definition_doc(&v1, DefinitionState::Published).unwrap();
        let b = new_definition_doc(&v1, DefinitionState::Published).unwrap();
        assert_eq!(a.get_heads(), b.get_heads());
        assert_eq!(a.save(), b.save());
        let h = model::read_header(&a).unwrap();
        assert_eq!(
            (h.kind, h.clinic, h.patient, h.created_by),
            (RecordKind::Definition, REGISTRY_SCOPE, None, None)
        );
        let body: DefinitionBody = model::read_body(&a).unwrap();
        assert_eq!(body.languages, "en,es,pt");

        let v2json = with(survey(), |v| {
            v["version"] = "1.10.0".into();
            v["title"] = "Your health now".into();
        });
        let v2 = Definition::parse_strict(&v2json).unwrap();
        assert_ne!(v1.record_id(), v2.record_id());
        let v9 =
            Definition::parse_strict(&with(survey(), |v| v["version"] = "1.9.0".into())).unwrap();
        let mut cat = Catalogue::default();
        cat.insert(v1.record_id(), v1, DefinitionState::Published);
        cat.insert(v9.record_id(), v9, DefinitionState::Published);
        cat.insert(v2.record_id(), v2, DefinitionState::Retired);
        // 1.10.0 is retired: the newest published is 1.9.0 (numeric order, not text).
        let latest = cat
            .latest_published(DefinitionType::Questionnaire, "patient-outcome-survey")
            .unwrap();
        assert_eq!(latest.definition.envelope.version, Version(1, 9, 0));
        // Exact versions stay reachable whatever their state.
        assert_eq!(
            cat.questionnaire("patient-outcome-survey", "1.10.0")
                .unwrap()
                .title(),
            "Your health now"
        );
        assert!(cat
            .questionnaire("patient-outcome-survey", "2.0.0")
            .is_none());
    }

    #[test]
    fn the_schedule_in_force_depends_on_the_procedure_date() {
        let s1 = Definition::parse_strict(BUILTIN[4]).unwrap();
        let s2json = with(BUILTIN[4], |v| {
            v["version"] = "1.1.0".into();
            v["effective_from"] = "2026-01-01".into();
            v["visits"][0]["offset_days"] = 10.into();
            v["visits"][0]["window_before_days"] = 3.into();
        });
        let s2 = Definition::parse_strict(&s2json).unwrap();
        let mut cat = Catalogue::default();
        cat.insert(s1.record_id(), s1, DefinitionState::Published);
        cat.insert(s2.record_id(), s2, DefinitionState::Published);
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            cat.schedule_for(d("2025-12-31")).unwrap().version(),
            "1.0.0"
        );
        assert_eq!(
            cat.schedule_for(d("2026-01-01")).unwrap().version(),
            "1.1.0"
        );
        let es = cat.schedule_for(d("2025-06-01")).unwrap();
        assert_eq!(
            es.visit_label("d7", "es").unwrap(),
            "Día 7: seguimiento clínico"
        );
        assert_eq!(
            es.visit_label("d7", "de").unwrap(),
            "Day 7 clinician follow-up"
        );
    }

    #[test]
    fn versions_order_numerically() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(v("1.10.0") > v("1.9.9"));
        assert!("1.0".parse::<Version>().is_err());
        assert!("1.0.0.0".parse::<Version>().is_err());
        assert!("a.b.c".parse::<Version>().is_err());
        assert_eq!(v("2.0.1").to_string(), "2.0.1");
    }
}
