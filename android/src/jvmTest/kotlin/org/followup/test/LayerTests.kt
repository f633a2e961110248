package org.followup.test

import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertTrue
import javax.crypto.KeyGenerator
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.NonCancellable
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.yield
import org.followup.AesGcmKeyProvider
import org.followup.OperationEvent
import org.followup.answerValue
import org.followup.answersOf
import org.followup.plain
import org.followup.progressFlow
import org.followup.withCancellation
import org.followup.ffi.AnswerValue
import org.followup.ffi.CancellationHandle
import org.followup.ffi.FollowupException
import org.followup.ffi.SyncProgress
import org.followup.ffi.SyncStage

// Tests of the idiomatic Kotlin layer (android/src/main/kotlin/org/followup) on the JVM. The
// operations here are Kotlin stand-ins; the real sync runs through the same adapters in
// ScenarioTests.

private fun progress(done: Long, stage: SyncStage = SyncStage.Sending) =
    SyncProgress(stage, done.toULong(), 10uL, 0uL, 0uL)

object LayerTests {
    val tests = listOf(
        test("progressFlow emits progress then the result") {
            val events = progressFlow { listener, _ ->
                listener.onProgress(progress(1))
                listener.onProgress(progress(2, SyncStage.Done))
                "report"
            }.toList()
            val done = events.filterIsInstance<OperationEvent.Progress>().map { it.progress.docsDone }
            assertEquals(listOf(1uL, 2uL), done)
            assertEquals("report", assertIs<OperationEvent.Done<String>>(events.last()).result)
        },
        test("progressFlow rethrows the operation's FollowupException") {
            assertFailsWith<FollowupException.Cancelled> {
                progressFlow<Unit> { _, _ -> throw FollowupException.Cancelled("stop") }.toList()
            }
        },
        test("leaving a progressFlow early cancels the operation's handle") {
            // The stand-in behaves like a Rust operation: it ignores coroutine cancellation and
            // polls its handle. The adapter cancels the handle, then closes it (a closed handle
            // throws IllegalStateException to Kotlin; Rust keeps its own reference).
            val stopped = CompletableDeferred<String>()
            val first = progressFlow { l, c ->
                withContext(NonCancellable + Dispatchers.IO) {
                    var n = 0L
                    while (true) {
                        val cancelled = try { c.isCancelled() } catch (e: IllegalStateException) { stopped.complete("closed"); break }
                        if (cancelled) { stopped.complete("cancelled"); break }
                        l.onProgress(progress(++n))
                        Thread.sleep(2)
                    }
                }
            }.filterIsInstance<OperationEvent.Progress>().first { it.progress.docsDone >= 3uL }
            assertEquals(3uL, first.progress.docsDone)
            val how = withTimeout(5_000) { stopped.await() }
            assertTrue(how == "cancelled" || how == "closed", how)
        },
        test("withCancellation hands out a live handle and closes it") {
            var seen: CancellationHandle? = null
            val out = withCancellation { c -> seen = c; yield(); c.isCancelled() }
            assertEquals(false, out)
            assertFailsWith<IllegalStateException> { seen!!.isCancelled() }
        },
        test("answersOf maps plain Kotlin values onto AnswerValue and back") {
            val a = answersOf("b" to true, "i" to 3, "l" to 4L, "d" to 1.5, "t" to "x", "c" to listOf("p", "q"))
            assertEquals(AnswerValue.Bool(true), a["b"])
            assertEquals(AnswerValue.Int(3), a["i"])
            assertEquals(AnswerValue.Int(4), a["l"])
            assertEquals(AnswerValue.Decimal(1.5), a["d"])
            assertEquals(AnswerValue.Text("x"), a["t"])
            assertEquals(AnswerValue.Choices(listOf("p", "q")), a["c"])
            assertEquals(listOf("p", "q"), a.getValue("c").plain)
            assertFailsWith<IllegalArgumentException> { answerValue(Any()) }
        },
        test("AesGcmKeyProvider round-trips and rejects a blob from another key id") {
            val key = KeyGenerator.getInstance("AES").apply { init(256) }.generateKey()
            val a = AesGcmKeyProvider(key, "alias-a")
            val data = ByteArray(32) { it.toByte() }
            val wrapped = a.wrap(data)
            assertEquals(1 + 12 + 32 + 16, wrapped.size)
            assertContentEquals(data, a.unwrap(wrapped))
            assertFailsWith<FollowupException.WrongKey> { AesGcmKeyProvider(key, "alias-b").unwrap(wrapped) }
            wrapped[20] = (wrapped[20].toInt() xor 1).toByte()
            assertFailsWith<FollowupException.WrongKey> { a.unwrap(wrapped) }
            assertFailsWith<FollowupException.Tampered> { a.unwrap(ByteArray(3)) }
        },
        test("objects are AutoCloseable and refuse use after close") {
            val h = CancellationHandle()
            h.use { it.cancel() }
            assertFailsWith<IllegalStateException> { h.isCancelled() }
        },
    )
}
