package org.followup

import kotlinx.coroutines.flow.Flow
import org.followup.ffi.AnswerValue
import org.followup.ffi.FollowupStore
import org.followup.ffi.SyncProgress
import org.followup.ffi.SyncReport

/**
 * Syncs as a cold [Flow]: [OperationEvent.Progress] for each report, then [OperationEvent.Done]
 * with the [SyncReport]. Leaving the flow early cancels the sync; a failure is thrown to the
 * collector as a [org.followup.ffi.FollowupException].
 *
 * ```
 * store.syncFlow().collect { e -> when (e) { is OperationEvent.Progress -> bar(e.progress); is OperationEvent.Done -> toast(e.result) } }
 * ```
 */
fun FollowupStore.syncFlow(): Flow<OperationEvent<SyncReport>> =
    progressFlow { listener, cancel -> sync(listener, cancel) }

/**
 * Syncs, calling [onProgress] (on a Rust thread) for each report. Cancelling the calling
 * coroutine cancels the sync.
 */
suspend fun FollowupStore.syncNow(onProgress: (SyncProgress) -> Unit = {}): SyncReport =
    withCancellation { cancel -> sync(progressListener(onProgress), cancel) }

/**
 * Renders questionnaires and validation messages in the device's language
 * ([java.util.Locale.getDefault], e.g. `pt-BR`; a text missing in it falls back to `pt`, then to
 * the form's own language). Call it after opening the store, and again when the user changes the
 * system language (`Intent.ACTION_LOCALE_CHANGED`).
 */
fun FollowupStore.useDeviceLocale() = setLocale(java.util.Locale.getDefault().toLanguageTag())

/**
 * Builds the answer map the store takes from plain Kotlin values: `Boolean`, `Int`/`Long`,
 * `Double`/`Float`, `String` (text, a date `YYYY-MM-DD` or a single choice's code) and
 * `List<String>` (a multiple choice). An [AnswerValue] passes through.
 *
 * ```
 * store.saveAnswers(id, answersOf("symptom_pain" to 2, "hospitalised" to false, "visit_mode" to "in_person"))
 * ```
 */
fun answersOf(vararg answers: Pair<String, Any>): Map<String, AnswerValue> =
    answers.associate { (item, value) -> item to answerValue(value) }

/** One plain Kotlin value as an [AnswerValue]; see [answersOf]. */
fun answerValue(value: Any): AnswerValue = when (value) {
    is AnswerValue -> value
    is Boolean -> AnswerValue.Bool(value)
    is Int -> AnswerValue.Int(value.toLong())
    is Long -> AnswerValue.Int(value)
    is Double -> AnswerValue.Decimal(value)
    is Float -> AnswerValue.Decimal(value.toDouble())
    is String -> AnswerValue.Text(value)
    is List<*> -> AnswerValue.Choices(value.map { it as? String ?: throw IllegalArgumentException("choice codes are strings, got $it") })
    else -> throw IllegalArgumentException("no answer type for ${value::class.simpleName}")
}

/** The answer as a plain Kotlin value (the inverse of [answerValue]). */
val AnswerValue.plain: Any
    get() = when (this) {
        is AnswerValue.Bool -> value
        is AnswerValue.Int -> value
        is AnswerValue.Decimal -> value
        is AnswerValue.Text -> value
        is AnswerValue.Choices -> value
    }
