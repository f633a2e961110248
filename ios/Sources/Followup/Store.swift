import Foundation
import FollowupFFI

extension FollowupStore {
    /// Syncs as an `AsyncThrowingStream`: `.progress` for each report, then `.done(report)`.
    /// Breaking out of the loop or cancelling the consuming `Task` cancels the sync.
    ///
    ///     for try await event in store.syncStream() {
    ///         switch event { case .progress(let p): bar.update(p); case .done(let report): show(report) }
    ///     }
    public func syncStream() -> AsyncThrowingStream<OperationEvent<SyncReport>, Error> {
        progressStream { listener, cancel in try await self.sync(listener: listener, cancel: cancel) }
    }

    /// Syncs, calling `onProgress` (on a Rust thread) for each report. Cancelling the calling
    /// `Task` cancels the sync.
    public func syncNow(onProgress: @escaping (SyncProgress) -> Void = { _ in }) async throws -> SyncReport {
        try await withCancellation { cancel in
            try await self.sync(listener: ClosureProgressListener(onProgress), cancel: cancel)
        }
    }
}

extension FollowupStore {
    /// Renders questionnaires and validation messages in the device's language
    /// (`Locale.current`, e.g. `pt_BR`; a text missing in it falls back to `pt`, then to the
    /// form's own language). Call it after opening the store and when
    /// `NSLocale.currentLocaleDidChangeNotification` fires.
    public func useDeviceLocale() throws {
        try setLocale(locale: Locale.current.identifier)
    }
}

extension AdverseEventView {
    /// The registry's case state, `nil` until the registry has accepted the event and the
    /// device has synced since.
    public var caseState: CaseState? { `case`?.state }

    /// Whether the clinic has stated a decision the patient can accept or dispute.
    public var hasDecision: Bool {
        guard let a = adjudication else { return false }
        return a.status == .responded || a.status == .resolved
    }
}

/// Plain Swift values usable as answers: `Bool`, `Int`, `Double`, `String` (text, a date
/// `YYYY-MM-DD` or a single choice's code) and `[String]` (a multiple choice).
public protocol AnswerConvertible {
    var answerValue: AnswerValue { get }
}

extension Bool: AnswerConvertible { public var answerValue: AnswerValue { .bool(value: self) } }
extension Int: AnswerConvertible { public var answerValue: AnswerValue { .int(value: Int64(self)) } }
extension Int64: AnswerConvertible { public var answerValue: AnswerValue { .int(value: self) } }
extension Double: AnswerConvertible { public var answerValue: AnswerValue { .decimal(value: self) } }
extension String: AnswerConvertible { public var answerValue: AnswerValue { .text(value: self) } }
extension Array: AnswerConvertible where Element == String {
    public var answerValue: AnswerValue { .choices(value: self) }
}
extension AnswerValue: AnswerConvertible { public var answerValue: AnswerValue { self } }

/// Builds the answer map the store takes:
///
///     try store.saveAnswers(responseId: id, answers: answers(["symptom_pain": 2, "hospitalised": false]))
public func answers(_ values: [String: AnswerConvertible]) -> [String: AnswerValue] {
    values.mapValues { $0.answerValue }
}
