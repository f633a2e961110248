package org.followup

import org.followup.ffi.FollowupException
import org.followup.ffi.ItemProblem

/**
 * The whole sentence Rust wrote for this error: what happened and what to do. Use it in the UI
 * and in logs. (`message` on the generated classes is uniffi's `reason=...` rendering.)
 */
val FollowupException.userMessage: String
    get() = when (this) {
        is FollowupException.WrongKey -> reason
        is FollowupException.NotEnrolled -> reason
        is FollowupException.ServerUnreachable -> reason
        is FollowupException.ValidationFailed -> reason
        is FollowupException.Tampered -> reason
        is FollowupException.Storage -> reason
        is FollowupException.Rejected -> reason
        is FollowupException.NotPermitted -> reason
        is FollowupException.AlreadyEnrolled -> reason
        is FollowupException.Revoked -> reason
        is FollowupException.ClockWrong -> reason
        is FollowupException.UpdateRequired -> reason
        is FollowupException.ServerFailed -> reason
        is FollowupException.Closed -> reason
        is FollowupException.Cancelled -> reason
        is FollowupException.InvalidInput -> reason
        is FollowupException.AlreadyRecorded -> reason
        is FollowupException.KeyProviderFailed -> reason
        is FollowupException.Internal -> reason
        is FollowupException.Locked -> reason
        is FollowupException.WrongPin -> reason
        is FollowupException.TryLater -> reason
        is FollowupException.UserLocked -> reason
        is FollowupException.WeakPin -> reason
    }

/** `true` when the shared tablet must show its sign-in screen before this call can succeed. */
val FollowupException.needsSignIn: Boolean
    get() = this is FollowupException.Locked

/** The item problems of a [FollowupException.ValidationFailed], keyed by item id; empty otherwise. */
val FollowupException.itemProblems: Map<String, List<ItemProblem>>
    get() = (this as? FollowupException.ValidationFailed)?.problems?.groupBy { it.itemId } ?: emptyMap()

/** `true` when retrying later may succeed without the user doing anything (offline, server down). */
val FollowupException.isTransient: Boolean
    get() = this is FollowupException.ServerUnreachable
