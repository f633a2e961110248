import FollowupFFI

/// Adapts a Swift closure to the `ChangeListener` callback (called on the thread that saved or
/// synced: only enqueue).
public final class ClosureChangeListener: ChangeListener, @unchecked Sendable {
    private let body: ([RecordChange]) -> Void
    public init(_ body: @escaping ([RecordChange]) -> Void) { self.body = body }
    public func onChanges(changes: [RecordChange]) { body(changes) }
}

extension FollowupStore {
    /// The records that change: one batch after every local save and one at the end of every
    /// sync that brought, rolled back or removed records. Iterate it in a view's `.task` to
    /// refresh a due list or a patient screen; ending the iteration (or cancelling the `Task`)
    /// stops the listener.
    ///
    ///     for await batch in store.changes() where batch.contains(where: { $0.patientId == id }) { reload() }
    public func changes() throws -> AsyncStream<[RecordChange]> {
        var subscription: ChangeSubscription?
        var continuation: AsyncStream<[RecordChange]>.Continuation!
        let stream = AsyncStream<[RecordChange]>(bufferingPolicy: .unbounded) { continuation = $0 }
        subscription = try observeChanges(listener: ClosureChangeListener { continuation.yield($0) })
        continuation.onTermination = { _ in subscription?.cancel(); subscription = nil }
        return stream
    }
}

extension RecordBody {
    /// The response and its scores, or `nil` for another kind.
    public var response: (Response, [String: Double?])? {
        if case let .responseBody(response, scores) = self { return (response, scores) }
        return nil
    }

    /// The procedure, or `nil` for another kind.
    public var procedure: Procedure? {
        if case let .procedureBody(procedure) = self { return procedure }
        return nil
    }
}

extension FollowupStore {
    /// Only the changes to records of `kind` (batches without one are skipped), like Kotlin's
    /// `changes().ofKind(kind)`. Ending the iteration stops the listener.
    ///
    ///     for await batch in try store.changes(ofKind: .adverseEvent) { reloadQueue() }
    public func changes(ofKind kind: RecordKind) throws -> AsyncStream<[RecordChange]> {
        let all = try changes()
        return AsyncStream(bufferingPolicy: .unbounded) { continuation in
            let task = Task {
                for await batch in all {
                    let matching = batch.filter { $0.kind == kind }
                    if !matching.isEmpty { continuation.yield(matching) }
                }
                continuation.finish()
            }
            // Cancelling the task ends the loop over `all`, whose own termination cancels the
            // Rust subscription.
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
