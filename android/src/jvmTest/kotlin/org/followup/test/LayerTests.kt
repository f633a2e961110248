package org.followup.test

import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertTrue
import java.util.concurrent.atomic.AtomicLong
import javax.crypto.KeyGenerator
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.filterIsInstance
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import org.followup.AesGcmKeyProvider
import org.followup.OperationEvent
import org.followup.progressFlow
import org.followup.progressListener
import org.followup.withCancellation
import org.followup.ffi.CancellationHandle
import org.followup.ffi.FollowupException
import org.followup.ffi.previewDeriveCheck

// Tests of the idiomatic Kotlin layer (android/src/main/kotlin/org/followup) on the JVM.

object LayerTests {
    val tests = listOf(
        test("progressFlow emits progress then the result") {
            val events = progressFlow { listener, cancel -> previewDeriveCheck("pw", 20_000u, listener, cancel) }.toList()
            val progress = events.filterIsInstance<OperationEvent.Progress>().map { it.progress.done }
            assertEquals(listOf(0uL, 10_000uL, 20_000uL, 20_000uL), progress)
            val done = assertIs<OperationEvent.Done<String>>(events.last())
            assertEquals(64, done.result.length)
        },
        test("progressFlow rethrows the operation's FollowupException") {
            assertFailsWith<FollowupException.InvalidInput> {
                progressFlow { l, c -> previewDeriveCheck("", 1u, l, c) }.toList()
            }
        },
        test("leaving a progressFlow early cancels the Rust operation") {
            val reports = AtomicLong()
            val first = progressFlow { l, c ->
                val counting = progressListener { reports.incrementAndGet(); l.onProgress(it) }
                previewDeriveCheck("pw", 2_000_000_000u, counting, c) // minutes of work unless cancelled
            }.filterIsInstance<OperationEvent.Progress>().first { it.progress.done > 0uL }
            assertTrue(first.progress.done > 0uL)
            delay(200) // let the Rust thread reach its next safe point
            val settled = reports.get()
            delay(300)
            assertEquals(settled, reports.get(), "Rust kept reporting progress after the flow was left")
        },
        test("withCancellation hands out a live handle and closes it") {
            val out = withCancellation { c -> previewDeriveCheck("pw", 5u, null, c) }
            assertEquals(64, out.length)
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
