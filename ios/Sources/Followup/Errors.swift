import FollowupFFI

extension FollowupError {
    /// The whole sentence Rust wrote for this error: what happened and what to do.
    public var userMessage: String {
        switch self {
        case let .WrongKey(reason),
             let .NotEnrolled(reason),
             let .ServerUnreachable(reason),
             let .ValidationFailed(reason, _),
             let .Tampered(reason),
             let .Storage(reason),
             let .Rejected(reason),
             let .NotPermitted(reason),
             let .AlreadyEnrolled(reason),
             let .Revoked(reason),
             let .ClockWrong(reason),
             let .UpdateRequired(reason),
             let .ServerFailed(reason),
             let .Closed(reason),
             let .Cancelled(reason),
             let .InvalidInput(reason),
             let .AlreadyRecorded(reason, _),
             let .KeyProviderFailed(reason),
             let .Internal(reason),
             let .Locked(reason),
             let .WrongPin(reason, _),
             let .TryLater(reason, _),
             let .UserLocked(reason),
             let .WeakPin(reason):
            return reason
        }
    }

    /// `true` when the shared tablet must show its sign-in screen before this call can succeed.
    public var needsSignIn: Bool {
        if case .Locked = self { return true }
        return false
    }

    /// The item problems of a `.ValidationFailed`, keyed by item id; empty otherwise.
    public var itemProblems: [String: [ItemProblem]] {
        guard case let .ValidationFailed(_, problems) = self else { return [:] }
        return Dictionary(grouping: problems, by: { $0.itemId })
    }

    /// `true` when retrying later may succeed without the user doing anything.
    public var isTransient: Bool {
        if case .ServerUnreachable = self { return true }
        return false
    }
}
