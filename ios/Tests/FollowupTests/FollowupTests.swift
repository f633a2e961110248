import CryptoKit
import Foundation
import XCTest
import Followup
import FollowupFFI

// Mirrors android/src/jvmTest: StoreTests, LayerTests and ScenarioTests (a field day against a
// real followup-server on 127.0.0.1). The scenario needs to start a process, so it runs on macOS
// (`swift test`, with FOLLOWUP_SERVER set to target/debug/followup-server; see
// .github/workflows/ios.yml) and is skipped on the iOS simulator.

// MARK: - Fixtures

private func tempDir() -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("followup-\(UUID().uuidString)")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

private func newKeys(_ name: String) -> AESGCMKeyProvider {
    AESGCMKeyProvider(key: SymmetricKey(size: .bits256), keyId: "alias-\(name)")
}

private func newStore(_ name: String) async throws -> FollowupStore {
    try await FollowupStore.createWithKeyProvider(path: tempDir().appendingPathComponent("\(name).db").path, provider: newKeys(name))
}

private func isoDay(_ offset: Int) -> String {
    let f = DateFormatter()
    f.calendar = Calendar(identifier: .gregorian)
    f.locale = Locale(identifier: "en_US_POSIX")
    f.dateFormat = "yyyy-MM-dd"
    return f.string(from: Date().addingTimeInterval(TimeInterval(offset * 86_400)))
}

private var today: String { isoDay(0) }

private func newPatient(_ code: String) -> NewPatient {
    NewPatient(studyCode: code,
               consent: Consent(formVersion: "2.1", date: isoDay(-8), scope: ["registry"]),
               birthYear: 1961, sex: .female, enrolledOn: isoDay(-8))
}

private func kneeInjection(daysAgo: Int) -> Procedure {
    Procedure(date: isoDay(-daysAgo), condition: "knee osteoarthritis", procedureType: "cell injection",
              route: .intraArticular, cellType: .mesenchymal, sourceTissue: .adipose, origin: .autologous,
              manipulation: .minimal, regulatoryStatus: .unregulated, trialRegistration: nil,
              promisedBenefits: [PromisedBenefit(benefit: "less pain", measure: "pain 0-10")],
              cost: Cost(amountMinor: 850_000, currency: "USD"))
}

private func validFollowup() -> [String: AnswerValue] {
    answers(["visit_date": today, "visit_mode": "in_person", "condition_status": "improved",
             "symptom_primary": 3, "symptom_pain": 2, "symptom_fatigue": 4, "ecog": "1",
             "complications_any": false, "hospitalised": false, "further_cell_therapy": false])
}

/// A questionnaire the registry publishes after the tablets exist.
private let phoneCheckV1 = #"""
{ "format": 1, "definition": "questionnaire", "id": "phone-check", "version": "1.0.0",
  "title": "Phone check", "kind": "clinician_followup", "language": "en",
  "items": [
    { "id": "reached", "text": "Was the patient reached?", "type": "boolean", "required": true },
    { "id": "pain_now", "text": "Pain now", "type": "integer", "min": 0, "max": 10, "required": true }
  ],
  "translations": { "es": { "title": "Control telefónico",
    "items": { "reached": { "text": "¿Se contactó al paciente?" }, "pain_now": { "text": "Dolor ahora" } } } }
}
"""#

/// Asserts `body` throws a `FollowupError` matching `matches`; returns it.
@discardableResult
private func assertThrowsFollowup<T>(_ body: () async throws -> T, _ matches: (FollowupError) -> Bool,
                                     file: StaticString = #filePath, line: UInt = #line) async -> FollowupError? {
    do {
        _ = try await body()
        XCTFail("expected a FollowupError", file: file, line: line)
    } catch let e as FollowupError {
        XCTAssertTrue(matches(e), "unexpected \(e)", file: file, line: line)
        return e
    } catch {
        XCTFail("expected a FollowupError, got \(error)", file: file, line: line)
    }
    return nil
}

private final class CountingKeyProvider: KeyProvider, @unchecked Sendable {
    let inner: KeyProvider
    private let lock = NSLock()
    private var w = 0, u = 0
    var wraps: Int { lock.lock(); defer { lock.unlock() }; return w }
    var unwraps: Int { lock.lock(); defer { lock.unlock() }; return u }
    init(_ inner: KeyProvider) { self.inner = inner }
    func wrap(dataKey: Data) throws -> Data { lock.lock(); w += 1; lock.unlock(); return try inner.wrap(dataKey: dataKey) }
    func unwrap(wrapped: Data) throws -> Data { lock.lock(); u += 1; lock.unlock(); return try inner.unwrap(wrapped: wrapped) }
    func keyId() -> String { inner.keyId() }
}

private struct KeystoreLocked: Error {}

private final class BrokenKeyProvider: KeyProvider, @unchecked Sendable {
    func wrap(dataKey: Data) throws -> Data { throw KeystoreLocked() }
    func unwrap(wrapped: Data) throws -> Data { wrapped }
    func keyId() -> String { "broken" }
}

// MARK: - The store without a server

final class StoreTests: XCTestCase {
    func testCoreVersion() {
        XCTAssertFalse(coreVersion().isEmpty)
    }

    func testSwiftKeyProviderOpensTheStoreItCreatedAndAnotherKeyIsWrongKey() async throws {
        let path = tempDir().appendingPathComponent("tablet.db").path
        let keys = CountingKeyProvider(newKeys("tablet"))
        let store = try await FollowupStore.createWithKeyProvider(path: path, provider: keys)
        XCTAssertNil(try store.enrolment())
        store.closeStore()
        XCTAssertEqual(keys.wraps, 1)
        let unwrapsAtCreate = keys.unwraps
        _ = try await FollowupStore.openWithKeyProvider(path: path, provider: keys)
        XCTAssertEqual(keys.unwraps, unwrapsAtCreate + 1)
        let e = await assertThrowsFollowup({ try await FollowupStore.openWithKeyProvider(path: path, provider: newKeys("tablet")) }) {
            if case .WrongKey = $0 { return true } else { return false }
        }
        XCTAssertTrue(e?.userMessage.contains("does not open this store") ?? false)
    }

    func testUnexpectedSwiftErrorArrivesAsKeyProviderFailed() async {
        await assertThrowsFollowup({
            try await FollowupStore.createWithKeyProvider(path: tempDir().appendingPathComponent("x.db").path, provider: BrokenKeyProvider())
        }) { if case .KeyProviderFailed = $0 { return true } else { return false } }
    }

    func testRotateToPassphraseAndWrongPassphrase() async throws {
        let path = tempDir().appendingPathComponent("phone.db").path
        let keys = newKeys("k")
        let store = try await FollowupStore.createWithKeyProvider(path: path, provider: keys)
        try await store.rotateKeyToPassphrase(passphrase: "correct horse battery")
        store.closeStore()
        await assertThrowsFollowup({ try await FollowupStore.openWithKeyProvider(path: path, provider: keys) }) {
            if case .WrongKey = $0 { return true } else { return false }
        }
        await assertThrowsFollowup({ try await FollowupStore.openWithPassphrase(path: path, passphrase: "wrong horse") }) {
            if case .WrongKey = $0 { return true } else { return false }
        }
        let reopened = try await FollowupStore.openWithPassphrase(path: path, passphrase: "correct horse battery")
        XCTAssertTrue(reopened.isOpen())
    }

    func testCaptureNeedsEnrolment() async throws {
        let store = try await newStore("fresh")
        await assertThrowsFollowup({ try store.enrolPatient(patient: newPatient("P-1")) }) {
            if case .NotEnrolled = $0 { return true } else { return false }
        }
    }

    func testCaseRepliesNeedEnrolmentAndIdsAreChecked() async throws {
        let store = try await newStore("replies")
        await assertThrowsFollowup({
            try store.replyToAdjudication(adverseEventId: String(repeating: "0", count: 32), verdict: .disputed, comment: "no remedy")
        }) {
            if case .NotEnrolled = $0 { return true } else { return false }
        }
        let invalid: (FollowupError) -> Bool = { if case .InvalidInput = $0 { return true } else { return false } }
        await assertThrowsFollowup({ try store.adverseEvent(adverseEventId: "not-an-id") }, invalid)
        XCTAssertEqual(try store.duplicateStudyCodes(), [])
    }

    func testMalformedIdsAndDatesAreInvalidInput() async throws {
        let store = try await newStore("ids")
        let invalid: (FollowupError) -> Bool = { if case .InvalidInput = $0 { return true } else { return false } }
        await assertThrowsFollowup({ try store.getResponse(responseId: "not-an-id") }, invalid)
        await assertThrowsFollowup({ try store.patientVisits(patientId: String(repeating: "0", count: 32), asOf: "12/01/2026") }, invalid)
        await assertThrowsFollowup({ try store.questionnaire(questionnaireId: "no-such-form") }, invalid)
    }

    func testClosedStoreIsClosedError() async throws {
        let store = try await newStore("closing")
        store.closeStore()
        store.closeStore()
        XCTAssertFalse(store.isOpen())
        await assertThrowsFollowup({ try store.listPatients() }) { if case .Closed = $0 { return true } else { return false } }
        await assertThrowsFollowup({ try await store.sync(listener: nil, cancel: nil) }) { if case .Closed = $0 { return true } else { return false } }
    }
}

// MARK: - The idiomatic layer

final class LayerTests: XCTestCase {
    func testProgressStreamYieldsProgressThenResult() async throws {
        var seen: [UInt64] = []
        var result: String?
        for try await event in progressStream({ l, _ in
            try l.onProgress(progress: SyncProgress(stage: .sending, docsDone: 1, docsTotal: 2, bytesSent: 0, bytesReceived: 0))
            try l.onProgress(progress: SyncProgress(stage: .done, docsDone: 2, docsTotal: 2, bytesSent: 0, bytesReceived: 0))
            return "report"
        }) {
            switch event {
            case let .progress(p): seen.append(p.docsDone)
            case let .done(r): result = r
            }
        }
        XCTAssertEqual(seen, [1, 2])
        XCTAssertEqual(result, "report")
    }

    func testProgressStreamRethrows() async {
        do {
            for try await _ in progressStream({ _, _ -> Int in throw FollowupError.Cancelled(reason: "stop") }) {}
            XCTFail("expected an error")
        } catch FollowupError.Cancelled {
        } catch { XCTFail("\(error)") }
    }

    func testAnswersFromPlainSwiftValues() {
        let a = answers(["b": true, "i": 3, "d": 1.5, "t": "x", "c": ["p", "q"]])
        XCTAssertEqual(a["b"], .bool(value: true))
        XCTAssertEqual(a["i"], .int(value: 3))
        XCTAssertEqual(a["d"], .decimal(value: 1.5))
        XCTAssertEqual(a["t"], .text(value: "x"))
        XCTAssertEqual(a["c"], .choices(value: ["p", "q"]))
    }

    func testAESGCMKeyProviderRejectsOtherKeyIdAndTampering() throws {
        let key = SymmetricKey(size: .bits256)
        let a = AESGCMKeyProvider(key: key, keyId: "alias-a")
        let data = Data((0..<32).map { UInt8($0) })
        var wrapped = try a.wrap(dataKey: data)
        XCTAssertEqual(wrapped.count, 1 + 12 + 32 + 16)
        XCTAssertEqual(try a.unwrap(wrapped: wrapped), data)
        XCTAssertThrowsError(try AESGCMKeyProvider(key: key, keyId: "alias-b").unwrap(wrapped: wrapped))
        wrapped[20] ^= 1
        XCTAssertThrowsError(try a.unwrap(wrapped: wrapped)) { error in
            guard case .WrongKey? = error as? FollowupError else { return XCTFail("\(error)") }
        }
    }

    func testKeychainKeyProviderOpensAStore() async throws {
        let account = "followup.test.\(UUID().uuidString)"
        let keys: KeychainKeyProvider
        do {
            keys = try KeychainKeyProvider.getOrCreate(account: account)
        } catch {
            throw XCTSkip("no usable keychain in this test environment: \(error)")
        }
        defer { try? KeychainKeyProvider.delete(account: account) }
        let path = tempDir().appendingPathComponent("keychain.db").path
        try await FollowupStore.createWithKeyProvider(path: path, provider: keys).closeStore()
        let again = try await FollowupStore.openWithKeyProvider(path: path, provider: try KeychainKeyProvider.getOrCreate(account: account))
        XCTAssertTrue(again.isOpen())
    }
}

// MARK: - A field day against a real server

#if os(macOS)
/// `followup-server` (path in FOLLOWUP_SERVER) on 127.0.0.1 with a fresh data directory; stopped
/// in tearDown. Every wait is bounded.
private final class TestServer {
    static let adminToken = "xctest-admin-token-0123456789"
    let process = Process()
    let url: String
    let dataDir = tempDir()

    init() throws {
        guard let bin = ProcessInfo.processInfo.environment["FOLLOWUP_SERVER"] else {
            throw XCTSkip("set FOLLOWUP_SERVER to target/debug/followup-server to run the scenario")
        }
        let port = 20_000 + Int.random(in: 0..<20_000)
        url = "http://127.0.0.1:\(port)"
        process.executableURL = URL(fileURLWithPath: bin)
        process.arguments = ["--listen", "127.0.0.1:\(port)", "--data-dir", dataDir.path, "--admin-token", Self.adminToken]
        // Every test client is 127.0.0.1: the per-address rate limits are tested by the server.
        var env = ProcessInfo.processInfo.environment
        env["FOLLOWUP_ENROL_PER_MINUTE"] = "100000"
        env["FOLLOWUP_ADMIN_PER_MINUTE"] = "100000"
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while true {
            let health = URL(string: url + "/health")!
            if let reply = try? awaitSync({ try await URLSession.shared.data(from: health) }),
               (reply.1 as? HTTPURLResponse)?.statusCode == 200 { break }
            guard process.isRunning, Date() < deadline else { stop(); throw XCTSkip("followup-server did not start") }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    func stop() {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        try? FileManager.default.removeItem(at: dataDir)
    }

    private func admin(_ path: String, _ json: String?) async throws -> [String: Any] {
        var req = URLRequest(url: URL(string: url + path)!, timeoutInterval: 10)
        req.httpMethod = "POST"
        req.setValue("Bearer \(Self.adminToken)", forHTTPHeaderField: "Authorization")
        req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        req.httpBody = json.map { Data($0.utf8) }
        let (data, resp) = try await URLSession.shared.data(for: req)
        let status = (resp as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else { throw NSError(domain: "admin \(path) -> \(status)", code: status) }
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    func createClinic(_ name: String) async throws -> String {
        try await admin("/v1/admin/clinics", #"{"name":"\#(name)","country":"TH"}"#)["clinic"] as! String
    }

    func clinicDeviceCode(_ clinic: String) async throws -> String {
        try await admin("/v1/admin/enrolment-codes", #"{"role":"clinic_device","clinic":"\#(clinic)"}"#)["code"] as! String
    }

    func patientDeviceCode(_ patient: String) async throws -> String {
        try await admin("/v1/admin/enrolment-codes", #"{"role":"patient_device","patient":"\#(patient)"}"#)["code"] as! String
    }

    /// Publishes a definition file: devices receive it at their next sync.
    func publishDefinition(_ json: String) async throws {
        _ = try await admin("/v1/admin/definitions", json)
    }

    func revoke(_ device: String) async throws {
        _ = try await admin("/v1/admin/devices/\(device)/revoke", nil)
    }
}

/// Runs an async call to completion from synchronous code (server start-up only).
private func awaitSync<T>(_ body: @escaping () async throws -> T) throws -> T {
    let done = DispatchSemaphore(value: 0)
    var result: Result<T, Error>!
    Task {
        do { result = .success(try await body()) } catch { result = .failure(error) }
        done.signal()
    }
    guard done.wait(timeout: .now() + 5) == .success else { throw URLError(.timedOut) }
    return try result.get()
}

final class ScenarioTests: XCTestCase {
    private var server: TestServer!

    override func setUpWithError() throws { server = try TestServer() }
    override func tearDown() { server?.stop() }

    private func clinicTablet(_ name: String, _ clinic: String) async throws -> FollowupStore {
        let store = try await newStore(name)
        _ = try await store.enrol(serverUrl: server.url, code: try await server.clinicDeviceCode(clinic), label: name)
        return store
    }

    func testQuestionnaireDescribesItemsAndEnableWhen() async throws {
        // A tablet has the registry's forms once enrolled (enrolment syncs them).
        let store = try await clinicTablet("forms", try await server.createClinic("Forms Clinic"))
        let q = try store.questionnaire(questionnaireId: "clinician-followup")
        XCTAssertEqual(q.kind, .clinicianFollowup)
        let pain = try XCTUnwrap(q.items.first { $0.id == "symptom_pain" })
        XCTAssertEqual(pain.itemType, .scale0To10)
        XCTAssertEqual(pain.min, 0)
        XCTAssertEqual(pain.max, 10)
        let complications = try XCTUnwrap(q.items.first { $0.id == "complications" })
        XCTAssertTrue(complications.conditional)
        XCTAssertFalse(complications.enabled)
        XCTAssertTrue(try store.enabledItems(questionnaireId: q.id, answers: answers(["complications_any": true])).contains("complications"))
    }

    func testCheckAnswersAsTheUserTypes() async throws {
        let store = try await clinicTablet("typing", try await server.createClinic("Typing Clinic"))
        XCTAssertEqual(try store.checkAnswers(questionnaireId: "clinician-followup", answers: answers(["symptom_pain": 4])), [])
        let problems = try store.checkAnswers(questionnaireId: "clinician-followup",
                                              answers: answers(["symptom_pain": 14, "ecog": "9", "visit_date": "2026-02-30"]))
        let byItem = Dictionary(uniqueKeysWithValues: problems.map { ($0.itemId, $0.code) })
        XCTAssertEqual(byItem, ["symptom_pain": "above_max", "ecog": "unknown_choice", "visit_date": "invalid_date"])
    }

    // Forms are registry data delivered by sync (docs/definitions.md): mirrors DefinitionsTests.kt.

    func testTextsAndMessagesFollowTheStoresLocaleWithFallback() async throws {
        let tablet = try await clinicTablet("locale", try await server.createClinic("Locale Clinic"))
        XCTAssertEqual(tablet.locale(), "en")
        let en = try tablet.questionnaire(questionnaireId: "patient-outcome-survey")
        XCTAssertEqual(en.title, "Your health since the procedure")
        try tablet.setLocale(locale: "es-MX") // no es-MX texts: falls back to es
        let es = try tablet.questionnaire(questionnaireId: "patient-outcome-survey")
        XCTAssertEqual(es.title, "Su salud desde el procedimiento")
        XCTAssertEqual(es.items.first { $0.id == "completed_date" }?.text, "Fecha de hoy")
        XCTAssertEqual(es.items.map(\.id), en.items.map(\.id))
        try tablet.setLocale(locale: "pt_BR") // Locale.identifier's form
        XCTAssertEqual(tablet.locale(), "pt-BR")
        XCTAssertEqual(try tablet.questionnaire(questionnaireId: "patient-outcome-survey").title, "Sua saúde desde o procedimento")
        try tablet.setLocale(locale: "es")
        var bad = validFollowup(); bad["symptom_pain"] = .int(value: 14)
        let problems = try tablet.checkAnswers(questionnaireId: "clinician-followup", answers: bad)
        XCTAssertEqual(problems.map(\.itemId), ["symptom_pain"])
        XCTAssertTrue(problems.first?.message.contains("máximo") ?? false)
        await assertThrowsFollowup({ try tablet.setLocale(locale: "es;drop table") }) {
            if case .InvalidInput = $0 { return true } else { return false }
        }
        XCTAssertEqual(tablet.locale(), "es")
        try tablet.useDeviceLocale()
        XCTAssertTrue(tablet.locale().hasPrefix(String(Locale.current.identifier.prefix(2))))
    }

    func testAFormPublishedAfterTheStoreWasCreatedArrivesBySyncAndCanBeFilled() async throws {
        let tablet = try await clinicTablet("late-form", try await server.createClinic("Late Form Clinic"))
        XCTAssertFalse(try tablet.definitions().contains { $0.id == "phone-check" })
        let patient = try tablet.enrolPatient(patient: newPatient("LF-1"))
        let filled = answers(["reached": true, "pain_now": 3])
        await assertThrowsFollowup({ try tablet.captureResponse(patientId: patient, questionnaireId: "phone-check", procedureId: nil, visitId: nil, answers: filled, submit: true) }) { _ in true }
        try await server.publishDefinition(phoneCheckV1)
        _ = try await tablet.syncNow()
        let listed = try XCTUnwrap(try tablet.definitions().first { $0.id == "phone-check" })
        XCTAssertEqual(listed.definitionType, "questionnaire")
        XCTAssertEqual(listed.version, "1.0.0")
        XCTAssertEqual(listed.state, .published)
        XCTAssertEqual(listed.languages, ["en", "es"])
        XCTAssertTrue(listed.usable)
        try tablet.setLocale(locale: "es")
        XCTAssertEqual(try tablet.questionnaire(questionnaireId: "phone-check").title, "Control telefónico")
        let r = try tablet.captureResponse(patientId: patient, questionnaireId: "phone-check", procedureId: nil, visitId: nil, answers: filled, submit: true)
        XCTAssertEqual(try tablet.getResponse(responseId: r).status, .submitted)
        XCTAssertEqual(try tablet.responseQuestionnaire(responseId: r).version, "1.0.0")
        let report = try await tablet.syncNow()
        XCTAssertTrue(report.rejected.isEmpty)
    }

    func testEnrolCaptureValidateSyncAndASecondTabletPulls() async throws {
        let clinic = try await server.createClinic("Bangkok Regenerative Clinic")
        let tablet = try await newStore("tablet-a")
        let enrolled = try await tablet.enrol(serverUrl: server.url, code: try await server.clinicDeviceCode(clinic), label: "Tablet A")
        XCTAssertEqual(enrolled.role, .clinicDevice)
        XCTAssertEqual(enrolled.clinicId, clinic)

        let patient = try tablet.enrolPatient(patient: newPatient("BKK-001"))
        let procedure = try tablet.recordProcedure(patientId: patient, procedure: kneeInjection(daysAgo: 7))
        let d7 = try XCTUnwrap(try tablet.clinicVisits(asOf: today, states: [.due]).first { $0.patientId == patient && $0.visitId == "d7" })

        let response = try tablet.startResponse(patientId: patient, questionnaireId: d7.questionnaireId, procedureId: procedure, visitId: d7.visitId)
        var typos = validFollowup()
        typos["symptom_pain"] = .int(value: 14)
        typos["ecog"] = .text(value: "9")
        let problems = try tablet.saveAnswers(responseId: response, answers: typos)
        XCTAssertEqual(Set(problems.map { $0.itemId }), ["symptom_pain", "ecog"])
        do {
            try tablet.submitResponse(responseId: response)
            XCTFail("expected ValidationFailed")
        } catch let e as FollowupError {
            XCTAssertEqual(Set(e.itemProblems.keys), ["symptom_pain", "ecog"])
        }
        XCTAssertEqual(try tablet.saveAnswers(responseId: response, answers: validFollowup()), [])
        try tablet.submitResponse(responseId: response)
        XCTAssertEqual(try tablet.getResponse(responseId: response).status, .submitted)

        let ae = try tablet.reportAdverseEvent(patientId: patient, event: AdverseEvent(
            reporter: .clinic, category: "infection", onset: isoDay(-1), severity: 3, seriousness: ["hospitalisation"],
            outcome: .recovering, description: "redness at the injection site", procedureId: procedure, answers: [:]))
        _ = try tablet.adjudicate(adverseEventId: ae, decision: AdjudicationDecision(
            relatedness: .probable, action: "antibiotics", remedy: "treatment at no cost", status: .responded))

        var stages: [SyncStage] = []
        var report: SyncReport?
        for try await event in tablet.syncStream() {
            switch event {
            case let .progress(p): stages.append(p.stage)
            case let .done(r): report = r
            }
        }
        XCTAssertTrue(stages.contains(.sending))
        XCTAssertEqual(stages.last, .done)
        XCTAssertEqual(report?.pushed, 5)
        XCTAssertEqual(report?.rejected, [])

        let tabletB = try await clinicTablet("tablet-b", clinic)
        // Enrolment syncs once (the registry's forms and the clinic's records come with it), so
        // the next sync has nothing left to pull.
        let pulled = try await tabletB.syncNow()
        XCTAssertEqual(pulled.pulled, 0)
        XCTAssertEqual(try tabletB.listPatients().map { $0.studyCode }, ["BKK-001"])
        XCTAssertEqual(try tabletB.getResponse(responseId: response).answers, try tablet.getResponse(responseId: response).answers)
    }

    func testConcurrentEditsMergeAndShowTheConflict() async throws {
        let clinic = try await server.createClinic("Chiang Mai Cell Clinic")
        let a = try await clinicTablet("conflict-a", clinic)
        let b = try await clinicTablet("conflict-b", clinic)
        let patient = try a.enrolPatient(patient: newPatient("CM-7"))
        let proc = try a.recordProcedure(patientId: patient, procedure: kneeInjection(daysAgo: 7))
        let r = try a.startResponse(patientId: patient, questionnaireId: "clinician-followup", procedureId: proc, visitId: "d7")
        _ = try await a.syncNow(); _ = try await b.syncNow()
        _ = try a.saveAnswers(responseId: r, answers: answers(["symptom_pain": 3, "visit_mode": "in_person"]))
        _ = try b.saveAnswers(responseId: r, answers: answers(["symptom_pain": 5, "ecog": "2"]))
        _ = try await a.syncNow(); _ = try await b.syncNow(); _ = try await a.syncNow()
        let merged = try a.getResponse(responseId: r).answers
        XCTAssertEqual(merged["visit_mode"], .text(value: "in_person"))
        XCTAssertEqual(merged["ecog"], .text(value: "2"))
        let conflict = try XCTUnwrap(try a.conflicts(recordId: r).first { $0.path == "answers.symptom_pain" })
        XCTAssertEqual(Set(conflict.values.map { $0.valueJson }), ["3", "5"])
        XCTAssertEqual(conflict.values.filter { $0.winner }.count, 1)
        try a.resolveAnswer(responseId: r, itemId: "symptom_pain", value: .int(value: 4))
        _ = try await a.syncNow(); _ = try await b.syncNow()
        XCTAssertEqual(try a.conflicts(recordId: r), [])
        XCTAssertEqual(try b.conflicts(recordId: r), [])
        XCTAssertEqual(try b.getResponse(responseId: r).answers["symptom_pain"], .int(value: 4))
    }

    func testPatientPhoneAnswersItsOwnSurvey() async throws {
        let clinic = try await server.createClinic("Phuket Stem Cell Centre")
        let tablet = try await clinicTablet("clinic-for-phone", clinic)
        let patient = try tablet.enrolPatient(patient: newPatient("PK-3"))
        _ = try await tablet.syncNow()
        let phone = try await newStore("phone")
        let enrolled = try await phone.enrol(serverUrl: server.url, code: try await server.patientDeviceCode(patient), label: "Patient phone")
        XCTAssertEqual(enrolled.role, .patientDevice)
        await assertThrowsFollowup({ try phone.enrolPatient(patient: newPatient("X")) }) {
            if case .NotPermitted = $0 { return true } else { return false }
        }
        let survey = try phone.startResponse(patientId: patient, questionnaireId: "patient-outcome-survey", procedureId: nil, visitId: nil)
        XCTAssertEqual(try phone.getResponse(responseId: survey).completedBy, .patient)
        let pushed = try await phone.syncNow().pushed
        XCTAssertEqual(pushed, 1)
    }

    func testCancelledUnreachableAndRevoked() async throws {
        let clinic = try await server.createClinic("Edge Clinic")
        let tablet = try await clinicTablet("edge", clinic)
        _ = try tablet.enrolPatient(patient: newPatient("E-1"))
        let handle = CancellationHandle()
        handle.cancel()
        await assertThrowsFollowup({ try await tablet.sync(listener: nil, cancel: handle) }) {
            if case .Cancelled = $0 { return true } else { return false }
        }
        let retried = try await tablet.syncNow().pushed
        XCTAssertEqual(retried, 1)

        let offline = try await newStore("offline")
        var settings = defaultSyncSettings()
        settings.maxAttempts = 1
        try offline.setSyncSettings(settings: settings)
        await assertThrowsFollowup({ try await offline.enrol(serverUrl: "http://127.0.0.1:9", code: "ABCD-EFGH", label: "x") }) {
            if case .ServerUnreachable = $0 { return true } else { return false }
        }

        try await server.revoke(try XCTUnwrap(try tablet.enrolment()).deviceId)
        await assertThrowsFollowup({ try await tablet.syncNow() }) {
            if case .Revoked = $0 { return true } else { return false }
        }
    }
}

// MARK: - The app API (mirrors android/src/jvmTest/.../AppApiTests.kt)

final class AppApiTests: XCTestCase {
    private var server: TestServer!

    override func setUpWithError() throws { server = try TestServer() }
    override func tearDown() { server?.stop() }

    private func clinicTablet(_ name: String, _ clinic: String) async throws -> FollowupStore {
        let store = try await newStore(name)
        _ = try await store.enrol(serverUrl: server.url, code: try await server.clinicDeviceCode(clinic), label: name)
        return store
    }

    func testCaptureResponseIsOneCallAndRefusesASecondForTheVisit() async throws {
        let tablet = try await clinicTablet("capture", try await server.createClinic("Capture Clinic"))
        let patient = try tablet.enrolPatient(patient: newPatient("CAP-1"))
        let procedure = try tablet.recordProcedure(patientId: patient, procedure: kneeInjection(daysAgo: 7))
        var bad = validFollowup(); bad["symptom_pain"] = .int(value: 14)
        await assertThrowsFollowup({ try tablet.captureResponse(patientId: patient, questionnaireId: "clinician-followup", procedureId: procedure, visitId: "d7", answers: bad, submit: true) }) {
            if case .ValidationFailed = $0 { return true } else { return false }
        }
        XCTAssertEqual(try tablet.listPatients().first?.responses, 0)
        let r = try tablet.captureResponse(patientId: patient, questionnaireId: "clinician-followup", procedureId: procedure, visitId: "d7", answers: validFollowup(), submit: true)
        XCTAssertEqual(try tablet.getResponse(responseId: r).status, .submitted)
        XCTAssertTrue(try tablet.drafts(patientId: nil).isEmpty)
        await assertThrowsFollowup({ try tablet.captureResponse(patientId: patient, questionnaireId: "clinician-followup", procedureId: procedure, visitId: "d7", answers: validFollowup(), submit: true) }) {
            if case let .AlreadyRecorded(_, recordId) = $0 { return recordId == r } else { return false }
        }
    }

    func testDraftsAreListedResumedAndDiscarded() async throws {
        let tablet = try await clinicTablet("drafts", try await server.createClinic("Draft Clinic"))
        let p = try tablet.enrolPatient(patient: newPatient("DR-1"))
        let d1 = try tablet.startResponse(patientId: p, questionnaireId: "clinician-followup", procedureId: nil, visitId: nil)
        XCTAssertEqual(try tablet.drafts(patientId: p).map { $0.responseId }, [d1])
        XCTAssertEqual(try tablet.discardDraft(responseId: d1), .deleted)
        let d2 = try tablet.startResponse(patientId: p, questionnaireId: "clinician-followup", procedureId: nil, visitId: nil)
        _ = try await tablet.syncNow()
        XCTAssertEqual(try tablet.discardDraft(responseId: d2), .markedDiscarded)
        XCTAssertTrue(try tablet.drafts(patientId: nil).isEmpty)
    }

    func testGetRecordReadsEveryKindAndUpdateProcedure() async throws {
        let tablet = try await clinicTablet("records", try await server.createClinic("Record Clinic"))
        let patient = try tablet.enrolPatient(patient: newPatient("REC-1"))
        let procedure = try tablet.recordProcedure(patientId: patient, procedure: kneeInjection(daysAgo: 7))
        let r = try tablet.captureResponse(patientId: patient, questionnaireId: "clinician-followup", procedureId: procedure, visitId: "d7", answers: validFollowup(), submit: true)
        XCTAssertEqual(try tablet.getRecord(recordId: patient).kind, .enrolment)
        XCTAssertEqual(try tablet.getRecord(recordId: procedure).body.procedure?.condition, "knee osteoarthritis")
        let scores = try XCTUnwrap(try tablet.getRecord(recordId: r).body.response).1
        XCTAssertEqual(scores["symptom_burden"] ?? nil, 3.0)
        var fixed = kneeInjection(daysAgo: 6); fixed.condition = "both knees"
        try tablet.updateProcedure(procedureId: procedure, procedure: fixed)
        XCTAssertEqual(try tablet.getProcedure(procedureId: procedure), fixed)
    }

    func testChangesStreamYieldsAfterALocalSaveAndAfterASync() async throws {
        let clinic = try await server.createClinic("Observe Clinic")
        let a = try await clinicTablet("observe-a", clinic)
        let b = try await clinicTablet("observe-b", clinic)
        var changes = try b.changes().makeAsyncIterator()
        let mine = try b.enrolPatient(patient: newPatient("OB-B"))
        XCTAssertEqual(await changes.next()?.map { $0.recordId }, [mine])
        let theirs = try a.enrolPatient(patient: newPatient("OB-A"))
        _ = try await a.syncNow()
        _ = try await b.syncNow()
        var seen = false
        while let batch = await changes.next() {
            if batch.contains(where: { $0.recordId == theirs }) { seen = true; break }
        }
        XCTAssertTrue(seen)
    }

    func testPatientPhoneListsItsDueSurveys() async throws {
        let clinic = try await server.createClinic("Survey Clinic")
        let tablet = try await clinicTablet("survey-clinic", clinic)
        let patient = try tablet.enrolPatient(patient: newPatient("SV-1"))
        _ = try tablet.recordProcedure(patientId: patient, procedure: kneeInjection(daysAgo: 30))
        _ = try await tablet.syncNow()
        let phone = try await newStore("survey-phone")
        _ = try await phone.enrol(serverUrl: server.url, code: try await server.patientDeviceCode(patient), label: "Patient phone")
        _ = try await phone.syncNow()
        let surveys = try phone.dueSurveys(patientId: nil, asOf: today)
        XCTAssertEqual(surveys.first?.visitId, "m1-survey")
        XCTAssertEqual(surveys.first?.state, .due)
    }
}
#endif
