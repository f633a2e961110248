package org.followup

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import org.followup.ffi.ChangeListener
import org.followup.ffi.FollowupStore
import org.followup.ffi.RecordBody
import org.followup.ffi.RecordChange
import org.followup.ffi.RecordKind

/**
 * The records that change, as a hot-while-collected [Flow]: one list after every local save and
 * one at the end of every sync that brought, rolled back or removed records. Collect it on a
 * screen to refresh itself (a due list, a patient's page); leaving the screen cancels the
 * collection, which stops the listener.
 *
 * ```
 * store.changes().filter { batch -> batch.any { it.patientId == patientId } }.collect { reload() }
 * ```
 */
fun FollowupStore.changes(): Flow<List<RecordChange>> = callbackFlow {
    val subscription = observeChanges(object : ChangeListener {
        // Called on the thread that saved or synced; trySend never blocks it (unlimited buffer).
        override fun onChanges(changes: List<RecordChange>) {
            trySend(changes)
        }
    })
    awaitClose {
        subscription.cancel()
        subscription.close()
    }
}.buffer(Channel.UNLIMITED)

/** Only the changes to records of [kind] (batches without one are skipped). */
fun Flow<List<RecordChange>>.ofKind(kind: RecordKind): Flow<List<RecordChange>> =
    kotlinx.coroutines.flow.flow {
        collect { batch -> batch.filter { it.kind == kind }.takeIf { it.isNotEmpty() }?.let { emit(it) } }
    }

/** The body of a [RecordBody.ResponseBody], or `null` for another kind. */
val RecordBody.asResponse: RecordBody.ResponseBody? get() = this as? RecordBody.ResponseBody

/** The body of a [RecordBody.ProcedureBody], or `null` for another kind. */
val RecordBody.asProcedure: RecordBody.ProcedureBody? get() = this as? RecordBody.ProcedureBody
