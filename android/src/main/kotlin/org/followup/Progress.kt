package org.followup

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.launch
import org.followup.ffi.CancellationHandle
import org.followup.ffi.SyncProgress
import org.followup.ffi.SyncProgressListener

/** What a long operation run through [progressFlow] emits: progress reports, then its result. */
sealed interface OperationEvent<out T> {
    data class Progress(val progress: SyncProgress) : OperationEvent<Nothing>
    data class Done<T>(val result: T) : OperationEvent<T>
}

/**
 * Runs a long Followup operation (sync, key derivation, opening a large store) as a cold [Flow]:
 * every progress report Rust makes is emitted as [OperationEvent.Progress], then the result as
 * [OperationEvent.Done], and the flow completes. A [org.followup.ffi.FollowupException] from the
 * operation is thrown to the collector. Cancelling the collector (leaving the screen, `take(n)`,
 * `first {}`) cancels the Rust operation through its [CancellationHandle].
 *
 * ```
 * device.syncFlow().collect { event -> when (event) { is Progress -> bar.update(event.progress); is Done -> show(event.result) } }
 * ```
 */
fun <T> progressFlow(
    operation: suspend (listener: SyncProgressListener, cancel: CancellationHandle) -> T,
): Flow<OperationEvent<T>> = callbackFlow {
    val handle = CancellationHandle()
    val listener = object : SyncProgressListener {
        // Called on a Rust thread; trySend never blocks it. The buffer is unlimited, so no report
        // is lost, and reports arrive before the result because Rust makes them before returning.
        override fun onProgress(progress: SyncProgress) {
            trySend(OperationEvent.Progress(progress))
        }
    }
    launch {
        try {
            val result = operation(listener, handle)
            send(OperationEvent.Done(result))
            close()
        } catch (e: Throwable) {
            close(e)
        }
    }
    awaitClose {
        handle.cancel()
        handle.close()
    }
}.buffer(Channel.UNLIMITED)

/**
 * Runs [operation] with a fresh [CancellationHandle] that is cancelled when the calling coroutine
 * is cancelled, so the Rust side stops at its next safe point instead of finishing unobserved.
 */
suspend fun <T> withCancellation(operation: suspend (cancel: CancellationHandle) -> T): T =
    CancellationHandle().use { handle ->
        try {
            operation(handle)
        } catch (e: kotlinx.coroutines.CancellationException) {
            handle.cancel()
            throw e
        }
    }

/** Adapts a Kotlin lambda to the [SyncProgressListener] callback interface. */
fun progressListener(onProgress: (SyncProgress) -> Unit): SyncProgressListener =
    object : SyncProgressListener {
        override fun onProgress(progress: SyncProgress) = onProgress(progress)
    }
