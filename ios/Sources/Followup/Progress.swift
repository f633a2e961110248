import FollowupFFI

/// What a long operation run through `progressStream` yields: progress reports, then its result.
public enum OperationEvent<T> {
    case progress(SyncProgress)
    case done(T)
}

/// Adapts a Swift closure to the `SyncProgressListener` callback (called on a Rust thread).
public final class ClosureProgressListener: SyncProgressListener, @unchecked Sendable {
    private let body: (SyncProgress) -> Void
    public init(_ body: @escaping (SyncProgress) -> Void) { self.body = body }
    public func onProgress(progress: SyncProgress) { body(progress) }
}

/// Runs a long Followup operation (a sync) as an
/// `AsyncThrowingStream`: each progress report, then `.done(result)`, then the stream finishes;
/// a `FollowupError` finishes it with that error. Cancelling the consuming `Task` (or breaking out
/// of the `for try await` loop) cancels the Rust operation through its `CancellationHandle`.
///
///     for try await event in progressStream({ l, c in try await store.sync(listener: l, cancel: c) }) {
///         switch event { case .progress(let p): bar.update(p); case .done(let report): show(report) }
///     }
public func progressStream<T>(
    _ operation: @escaping (SyncProgressListener, CancellationHandle) async throws -> T
) -> AsyncThrowingStream<OperationEvent<T>, Error> {
    AsyncThrowingStream(bufferingPolicy: .unbounded) { continuation in
        let handle = CancellationHandle()
        let listener = ClosureProgressListener { continuation.yield(.progress($0)) }
        let task = Task {
            do {
                let result = try await operation(listener, handle)
                continuation.yield(.done(result))
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in
            handle.cancel()
            task.cancel()
        }
    }
}

/// Runs `operation` with a fresh `CancellationHandle` that is cancelled when the calling `Task` is
/// cancelled, so the Rust side stops at its next safe point.
public func withCancellation<T>(_ operation: (CancellationHandle) async throws -> T) async throws -> T {
    let handle = CancellationHandle()
    return try await withTaskCancellationHandler {
        try await operation(handle)
    } onCancel: {
        handle.cancel()
    }
}
