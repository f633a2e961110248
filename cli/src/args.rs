//! The command line's grammar (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Followup: offline-first follow-up of cell-therapy procedures.
#[derive(Debug, Parser)]
#[command(name = "followup", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Play a stretch of clinic life against an in-process registry: two tablets, a patient's
    /// phone, offline capture, a conflict, an adverse event, a bad link, and a final sync.
    Demo(DemoArgs),
    /// Run the registry sync server, or (with a subcommand) act as registry staff on one.
    Server(ServerArgs),
    /// Act as a device on an encrypted store (the passphrase comes from FOLLOWUP_PASSPHRASE or a
    /// prompt, never from a flag).
    Device(DeviceArgs),
    /// Measure sync (bytes, round trips, time) and capture on the generated benchmark workload.
    Bench(BenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Keep every device store and the server's database in this directory (it must be empty
    /// or not exist); by default a temporary directory is used and removed.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Print one JSON summary on stdout instead of the narrative.
    #[arg(long)]
    pub json: bool,
    /// A smaller backlog for the bad-link sync (for tests and slow machines).
    #[arg(long)]
    pub quick: bool,
    /// Keep the registry server running at the end (until Ctrl-C), so that the staff console
    /// can be opened on the demo's data.
    #[arg(long)]
    pub serve: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    /// Options passed to the server as `followup-server` takes them (one definition,
    /// `followup_server::Config`; every other option is read from its FOLLOWUP_* environment
    /// variable, e.g. FOLLOWUP_MAX_CONNECTIONS).
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory holding the SQLite database (alias --data).
    #[arg(long, visible_alias = "data")]
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL URL instead of SQLite (prefer FOLLOWUP_DATABASE_URL: it keeps the password
    /// out of the process list).
    #[arg(long)]
    pub database: Option<String>,
    /// Admin API bearer token (prefer FOLLOWUP_ADMIN_TOKEN).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// TLS certificate chain (PEM).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The audit anchor key file.
    #[arg(long)]
    pub anchor_key: Option<PathBuf>,
    #[command(subcommand)]
    pub staff: Option<StaffCommand>,
}

/// Where the registry is and the admin token to use.
#[derive(Debug, Clone, Args)]
pub struct StaffConn {
    /// The registry server's base URL.
    #[arg(
        long,
        env = "FOLLOWUP_SERVER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The admin token (prefer the environment variable FOLLOWUP_ADMIN_TOKEN).
    #[arg(long, env = "FOLLOWUP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A CA certificate (PEM) to trust for the registry's https address, e.g. its private CA.
    #[arg(long, env = "FOLLOWUP_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Print the server's JSON answer instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// The registry staff's commands, against a running server.
#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Create a staff account for the console (works on the database directly, so it also creates
    /// the first admin); prints a password, or a set-password link, once.
    AddStaff {
        /// The registry's data directory (SQLite).
        #[arg(long, env = "FOLLOWUP_DATA_DIR", default_value = "./followup-data")]
        data: PathBuf,
        /// A PostgreSQL URL instead of the data directory.
        #[arg(long, env = "FOLLOWUP_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// The person's email (their sign-in name).
        #[arg(long)]
        email: String,
        /// admin, monitor or coordinator.
        #[arg(long)]
        role: String,
        /// The clinic id (coordinators only).
        #[arg(long)]
        clinic: Option<String>,
        /// Print a set-password link on this base URL (e.g. https://registry.example.org)
        /// instead of a password.
        #[arg(long, value_name = "BASE_URL")]
        link: Option<String>,
        /// Also set up an authenticator (TOTP) second factor; prints its secret once.
        #[arg(long)]
        totp: bool,
    },
    /// Register a clinic; prints its id.
    CreateClinic {
        #[command(flatten)]
        conn: StaffConn,
        /// The clinic's name.
        #[arg(long)]
        name: String,
        /// ISO 3166-1 alpha-2 country code.
        #[arg(long)]
        country: String,
    },
    /// Issue a one-time enrolment code for a clinic tablet (--clinic) or a patient's phone
    /// (--patient, the patient's enrolment record id).
    IssueCode {
        #[command(flatten)]
        conn: StaffConn,
        /// Clinic id: the code enrols a clinic device.
        #[arg(long, conflicts_with = "patient", required_unless_present = "patient")]
        clinic: Option<String>,
        /// Patient (enrolment record) id: the code enrols that patient's phone.
        #[arg(long)]
        patient: Option<String>,
        /// Lifetime of the code in hours (default 24, at most 720).
        #[arg(long)]
        hours: Option<u64>,
    },
    /// Create a clinic user (a nurse who signs in on the clinic's tablets); prints their id
    /// and a one-time activation code (valid 7 days) to give them.
    CreateUser {
        #[command(flatten)]
        conn: StaffConn,
        /// The clinic id.
        #[arg(long)]
        clinic: String,
        /// The name tablets show on their sign-in screen.
        #[arg(long)]
        name: String,
    },
    /// List a clinic's users and the devices each was activated on.
    Users {
        #[command(flatten)]
        conn: StaffConn,
        /// The clinic id.
        #[arg(long)]
        clinic: String,
    },
    /// Remove a clinic user: their changes are refused from now on, and every tablet deletes
    /// their key slot at its next sync.
    RemoveUser {
        #[command(flatten)]
        conn: StaffConn,
        /// The user's id.
        #[arg(long)]
        user: String,
    },
    /// Revoke a device: its syncs are refused from now on.
    RevokeDevice {
        #[command(flatten)]
        conn: StaffConn,
        /// The device id.
        device: String,
    },
    /// Verify the hash chain of the audit log.
    VerifyAudit {
        #[command(flatten)]
        conn: StaffConn,
    },
    /// Documents, devices, audit entries and rejections on the server.
    Stats {
        #[command(flatten)]
        conn: StaffConn,
    },
    /// Publish a definition file (questionnaire, schedule or adjudication policy; see
    /// docs/definitions.md). The registry validates it first; devices receive it at their next
    /// sync. A published version is immutable: publish changes as a new version.
    Publish {
        #[command(flatten)]
        conn: StaffConn,
        /// The definition file (JSON).
        file: PathBuf,
        /// Upload as a draft that no device receives.
        #[arg(long)]
        draft: bool,
    },
    /// List the definitions the registry holds (drafts included).
    Definitions {
        #[command(flatten)]
        conn: StaffConn,
    },
    /// Retire a published definition version: devices stop offering it for new responses
    /// (responses already started with it keep using it).
    Retire {
        #[command(flatten)]
        conn: StaffConn,
        /// The definition's id, e.g. patient-outcome-survey.
        id: String,
        /// The version, e.g. 1.0.0.
        version: String,
        /// questionnaire, schedule or adjudication_policy.
        #[arg(long, default_value = "questionnaire")]
        definition: String,
    },
    /// Study codes enrolled twice in one clinic (two tablets offline): conflicts for the clinic
    /// to resolve.
    Duplicates {
        #[command(flatten)]
        conn: StaffConn,
        /// Only this clinic (clinic id).
        #[arg(long)]
        clinic: Option<String>,
    },
    /// Adjudication cases at the registry's clock, earliest deadline first.
    Cases {
        #[command(flatten)]
        conn: StaffConn,
        /// Only this clinic's cases (clinic id).
        #[arg(long)]
        clinic: Option<String>,
        /// Only cases in this state: open, responded, overdue, escalated, disputed, closed.
        #[arg(long)]
        state: Option<String>,
    },
    /// Escalate a case with a note the clinic reads on its tablet after its next sync.
    Escalate {
        #[command(flatten)]
        conn: StaffConn,
        /// The case's id or its adverse event's id.
        id: String,
        /// What the clinic must do, e.g. "respond within 48 hours".
        #[arg(long)]
        note: String,
    },
    /// Close a case (a remedy agreed outside the app, a report withdrawn), saying why.
    CloseCase {
        #[command(flatten)]
        conn: StaffConn,
        /// The case's id or its adverse event's id.
        id: String,
        #[arg(long)]
        note: String,
    },
    /// Re-derive the read model (the console's and exports' tables) from the stored documents.
    /// Works on the database directly (no running server needed; running ones wait for it).
    RebuildReadModel {
        /// Directory holding the registry's SQLite database.
        #[arg(long, env = "FOLLOWUP_DATA_DIR", default_value = "./followup-data")]
        data: PathBuf,
        /// A PostgreSQL URL to use instead (postgres://user:password@host:port/db).
        #[arg(long, env = "FOLLOWUP_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export the registry for analysis (CSV with a data dictionary) or interoperability (FHIR
    /// R4 NDJSON), de-identified unless --identified; recorded in the audit log. See
    /// docs/export.md.
    Export {
        #[command(flatten)]
        conn: StaffConn,
        /// csv or fhir.
        #[arg(long, value_parser = ["csv", "fhir"])]
        format: String,
        /// Only this clinic (its id); by default the whole registry.
        #[arg(long)]
        clinic: Option<String>,
        /// Only responses and adverse events accepted or changed on or after this day
        /// (YYYY-MM-DD, UTC); clinics, patients and procedures are always complete.
        #[arg(long)]
        since: Option<String>,
        /// The directory to write the files into (must be empty or not exist).
        #[arg(long, default_value = "followup-export")]
        out: PathBuf,
        /// Keep exact dates, free text and the registry's ids (registry administrators only;
        /// audited). Handle the result as identifiable health information.
        #[arg(long)]
        identified: bool,
    },
}

#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// The device's encrypted store file.
    #[arg(long, env = "FOLLOWUP_STORE", default_value = "followup-device.db")]
    pub store: PathBuf,
    /// On a shared tablet (a device with users): the user signing in, by name or id. The PIN
    /// comes from FOLLOWUP_PIN or a prompt, never from a flag.
    #[arg(long, env = "FOLLOWUP_USER", global = true)]
    pub user: Option<String>,
    #[command(subcommand)]
    pub command: DeviceCommand,
}

/// `followup device user ...`: the nurses who sign in on a shared clinic tablet.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user with the activation code registry staff gave them (needs the registry; the
    /// new user's PIN comes from FOLLOWUP_NEW_PIN or is asked twice). The first user makes the
    /// device a shared tablet: from then on every command needs --user and a PIN.
    Add {
        /// The user's id (from `followup server create-user`).
        #[arg(long)]
        id: String,
        /// The one-time activation code.
        #[arg(long)]
        code: String,
    },
    /// List the users set up on this device (no sign-in needed).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a user from this device (not the last one); registry staff remove a user from
    /// every tablet with `followup server remove-user`.
    Remove {
        /// The user's name or id.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Create a new encrypted store (asks for a passphrase twice unless FOLLOWUP_PASSPHRASE is set).
    Init,
    /// The users who sign in on this device (a shared clinic tablet).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Enrol this device with a registry using a one-time code from the registry staff.
    Enrol {
        /// The registry server's base URL.
        #[arg(long, env = "FOLLOWUP_SERVER_URL")]
        server: String,
        /// The one-time enrolment code.
        #[arg(long)]
        code: String,
        /// A label for operators ("tablet 2, ward B"); no patient identifiers.
        #[arg(long, default_value = "followup cli")]
        label: String,
        /// Attempts before giving up when the server cannot be reached (default 6).
        #[arg(long)]
        attempts: Option<u32>,
    },
    /// Show the store and its enrolment.
    Status,
    /// Enrol a patient at this device's clinic (clinic devices only).
    AddPatient {
        /// The clinic's study code for the patient (not a name).
        #[arg(long)]
        study_code: String,
        #[arg(long)]
        birth_year: i64,
        /// female, male, intersex or unknown.
        #[arg(long, default_value = "unknown")]
        sex: String,
        /// Date the consent was signed (YYYY-MM-DD; default today).
        #[arg(long)]
        consent_date: Option<String>,
        /// Version of the consent form.
        #[arg(long, default_value = "1.0")]
        consent_version: String,
    },
    /// Record a procedure for a patient from a JSON file (the fields of a Procedure record).
    AddProcedure {
        /// Study code or patient id.
        #[arg(long, required_unless_present = "format")]
        patient: Option<String>,
        /// JSON file describing the procedure (see --format).
        #[arg(long, required_unless_present = "format")]
        file: Option<PathBuf>,
        /// Print the file format (every field and the codes allowed) and exit.
        #[arg(long)]
        format: bool,
    },
    /// List the patients this device holds.
    Patients {
        #[arg(long)]
        json: bool,
    },
    /// List overdue and due visits (or every visit with --all).
    Due {
        /// The date to compute states for (YYYY-MM-DD; default today).
        #[arg(long)]
        as_of: Option<String>,
        /// Include upcoming, missed and done visits.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Fill a questionnaire from a JSON file of answers ({"item_id": value, ...}) and submit it.
    Fill {
        /// Study code or patient id (a patient's phone: its own patient by default).
        #[arg(long)]
        patient: Option<String>,
        /// Questionnaire id (clinician-followup, patient-outcome-survey, ...).
        #[arg(long, required_unless_present = "resume")]
        questionnaire: Option<String>,
        /// JSON file of answers (see --format).
        #[arg(long, required_unless_present = "format")]
        answers: Option<PathBuf>,
        /// The procedure followed up (id); default the patient's only or latest procedure when
        /// a visit is given.
        #[arg(long)]
        procedure: Option<String>,
        /// The schedule visit answered (d7, m1, m3, m1-survey, ...).
        #[arg(long)]
        visit: Option<String>,
        /// Save as a draft without submitting (missing required answers allowed).
        #[arg(long)]
        draft: bool,
        /// Language of the problem messages (a locale tag: es, pt-BR, ...; falls back to the
        /// language, then English).
        #[arg(long, env = "FOLLOWUP_LANG", default_value = "en")]
        lang: String,
        /// Go on with a draft (see `followup device drafts`): add the answers and submit it
        /// (or keep it a draft with --draft), in one change.
        #[arg(long, value_name = "DRAFT", conflicts_with_all = ["questionnaire", "patient", "procedure", "visit"])]
        resume: Option<String>,
        /// Print the answers file format of --questionnaire (items, types, choices) and exit.
        #[arg(long)]
        format: bool,
    },
    /// List the questionnaires (and other definitions) this device holds: id, version, state,
    /// languages, and whether this app can use each.
    Questionnaires {
        /// Every definition type, not only questionnaires.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Report an adverse event for a patient.
    ReportAe {
        /// Study code or patient id (a patient's phone: its own patient by default).
        #[arg(long)]
        patient: Option<String>,
        /// Category code (infection, immune_reaction, tumour, administration, ...).
        #[arg(long)]
        category: String,
        /// Onset date (YYYY-MM-DD).
        #[arg(long)]
        onset: String,
        /// Severity grade 1-5 (CTCAE-style).
        #[arg(long)]
        severity: i64,
        /// What happened.
        #[arg(long)]
        description: String,
        /// Seriousness criteria met (repeatable): hospitalisation, life_threatening, disability, death.
        #[arg(long)]
        seriousness: Vec<String>,
        /// recovered, recovering, not_recovered, recovered_with_sequelae, fatal, unknown.
        #[arg(long, default_value = "unknown")]
        outcome: String,
    },
    /// Adverse events awaiting the clinic's adjudication.
    Queue {
        #[arg(long)]
        json: bool,
    },
    /// Adverse events with category, severity, onset and the registry's deadline and state,
    /// the clinic's answer and the patient's replies.
    Events {
        /// Study code or patient id (default: every patient the device holds).
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Record the clinic's adjudication of an adverse event (clinic devices only).
    Adjudicate {
        /// The adverse event's id.
        event: String,
        /// not_related, unlikely, possible, probable or definite.
        #[arg(long)]
        relatedness: Option<String>,
        /// Action taken, e.g. "antibiotics", "none".
        #[arg(long)]
        action: Option<String>,
        /// The remedy offered to the patient.
        #[arg(long)]
        remedy: Option<String>,
        /// open, responded or resolved (default: responded).
        #[arg(long, default_value = "responded")]
        status: String,
    },
    /// Accept or dispute the clinic's adjudication of one of the patient's adverse events
    /// (patient's phone only).
    Reply {
        /// The adverse event's id.
        event: String,
        /// Accept the clinic's answer.
        #[arg(long, conflicts_with = "dispute", required_unless_present = "dispute")]
        accept: bool,
        /// Dispute it (say why with --comment).
        #[arg(long)]
        dispute: bool,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Sync with the registry (push what changed, pull what is new), with a progress bar.
    Sync {
        /// Print the sync report as JSON.
        #[arg(long)]
        json: bool,
        /// Consecutive failed attempts before giving up (default 6, with growing pauses).
        #[arg(long)]
        attempts: Option<u32>,
    },
    /// Show the conflicts of a record (every conflicted record when no id is given).
    Conflicts {
        /// The record id.
        record: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one record: a patient's enrolment, a procedure, a response with its scores, an
    /// adverse event, an adjudication.
    Show {
        /// The record id.
        record: String,
        #[arg(long)]
        json: bool,
    },
    /// List the drafts on this device (resume one with `fill --resume`, drop it with `discard`).
    Drafts {
        /// Only this patient's (study code or id).
        #[arg(long)]
        patient: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Discard a draft (deleted if the registry never had it, else marked discarded).
    Discard {
        /// The draft's record id.
        record: String,
    },
    /// Resolve a conflicted answer by choosing its value (see `followup device conflicts`).
    Resolve {
        /// The response's record id.
        record: String,
        /// The item id, e.g. symptom_pain.
        item: String,
        /// The value: JSON (3, true, "text", ["a","b"]) or plain text (improved).
        value: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Number of new 50-answer responses pushed.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub n: usize,
    /// Number of those responses changed (3 answers each) and pushed again.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub k: usize,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also push the N new responses, saved through the public path, through a TCP link shaper
    /// (64 kbit/s each way, 500 ms round trip, connection set-up charged): once on a steady link,
    /// then this many times with the link reset every 5 s (0 to skip; each run takes ~20-40 s).
    #[arg(long, default_value_t = 1)]
    pub link_runs: u32,
    /// Also push through the resetting link the way protocol version 2 does (one `POST` per
    /// exchange, restarted from zero after a reset), as many times: the figures without resume.
    #[arg(long)]
    pub compare_one_shot: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}
