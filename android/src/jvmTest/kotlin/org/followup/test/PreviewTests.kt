package org.followup.test

import java.security.MessageDigest
import java.util.Collections
import java.util.concurrent.atomic.AtomicInteger
import javax.crypto.KeyGenerator
import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import org.followup.AesGcmKeyProvider
import org.followup.itemProblems
import org.followup.progressListener
import org.followup.userMessage
import org.followup.ffi.CancellationHandle
import org.followup.ffi.FollowupException
import org.followup.ffi.KeyProvider
import org.followup.ffi.SyncProgress
import org.followup.ffi.SyncStage
import org.followup.ffi.coreVersion
import org.followup.ffi.previewDeriveCheck
import org.followup.ffi.previewKeyProviderRoundtrip
import org.followup.ffi.previewValidate

// PHASE 1: these drive the preview surface (bindings/src/preview.rs); phase 2 replaces them with the
// field-day scenario against `Device` and a real server.

private fun aesKey() = KeyGenerator.getInstance("AES").apply { init(256) }.generateKey()

/** The same stretching as Rust's preview_derive_check, computed independently in Kotlin. */
private fun expectedDigest(passphrase: String, iterations: Int): String {
    val md = MessageDigest.getInstance("SHA-256")
    var h = md.digest(passphrase.toByteArray())
    repeat(iterations) { h = md.digest(h) }
    return h.joinToString("") { "%02x".format(it) }
}

/** Counts calls, so a test can prove Rust called into Kotlin. */
private class CountingKeyProvider(private val inner: KeyProvider) : KeyProvider {
    val wraps = AtomicInteger()
    val unwraps = AtomicInteger()
    override fun wrap(dataKey: ByteArray): ByteArray = inner.wrap(dataKey).also { wraps.incrementAndGet() }
    override fun unwrap(wrapped: ByteArray): ByteArray = inner.unwrap(wrapped).also { unwraps.incrementAndGet() }
    override fun keyId(): String = inner.keyId()
}

object PreviewTests {
    val tests = listOf(
        test("core version is reported") {
            assertTrue(Regex("""\d+\.\d+\.\d+.*""").matches(coreVersion()), coreVersion())
        },
        test("suspend call runs on tokio and returns the right digest") {
            val out = previewDeriveCheck("correct horse", 25_000u, null, null)
            assertEquals(expectedDigest("correct horse", 25_000), out)
        },
        test("progress callbacks arrive in order and finish") {
            val seen = Collections.synchronizedList(mutableListOf<SyncProgress>())
            previewDeriveCheck("pw", 35_000u, progressListener { seen += it }, null)
            assertEquals(listOf(0uL, 10_000uL, 20_000uL, 30_000uL, 35_000uL, 35_000uL), seen.map { it.done })
            assertTrue(seen.dropLast(1).all { it.stage == SyncStage.PREPARING && it.total == 35_000uL })
            assertEquals(SyncStage.FINISHED, seen.last().stage)
        },
        test("a listener that throws does not break the operation") {
            val out = previewDeriveCheck("pw", 10u, progressListener { error("listener bug") }, null)
            assertEquals(expectedDigest("pw", 10), out)
        },
        test("cancellation handle stops the operation with Cancelled") {
            CancellationHandle().use { handle ->
                val e = assertFailsWith<FollowupException.Cancelled> {
                    previewDeriveCheck("pw", 50_000_000u, progressListener { if (it.done >= 20_000uL) handle.cancel() }, handle)
                }
                assertContains(e.userMessage, "cancelled")
            }
        },
        test("an error from a suspend function is a Kotlin exception with its variant") {
            val e = assertFailsWith<FollowupException.InvalidInput> { previewDeriveCheck("", 1u, null, null) }
            assertEquals("The passphrase is empty. Fix the argument and call again.", e.reason)
            assertEquals("The passphrase is empty. Fix the argument and call again.", e.userMessage)
        },
        test("a KeyProvider implemented in Kotlin is called from Rust") {
            val keys = CountingKeyProvider(AesGcmKeyProvider(aesKey(), "test-key-1"))
            assertEquals("test-key-1", previewKeyProviderRoundtrip(keys))
            assertEquals(1, keys.wraps.get())
            assertEquals(1, keys.unwraps.get())
        },
        test("wrong key thrown in Kotlin crosses Rust and back as WrongKey") {
            val a = AesGcmKeyProvider(aesKey(), "k")
            val b = AesGcmKeyProvider(aesKey(), "k")
            val mixed = object : KeyProvider {
                override fun wrap(dataKey: ByteArray) = a.wrap(dataKey)
                override fun unwrap(wrapped: ByteArray) = b.unwrap(wrapped)
                override fun keyId() = "k"
            }
            val e = assertFailsWith<FollowupException.WrongKey> { previewKeyProviderRoundtrip(mixed) }
            assertContains(e.userMessage, "does not open")
        },
        test("a provider returning the wrong key is detected by Rust as WrongKey") {
            val liar = object : KeyProvider {
                override fun wrap(dataKey: ByteArray) = dataKey.reversedArray() + 1
                override fun unwrap(wrapped: ByteArray) = ByteArray(32)
                override fun keyId() = "liar"
            }
            val e = assertFailsWith<FollowupException.WrongKey> { previewKeyProviderRoundtrip(liar) }
            assertContains(e.userMessage, "passphrase or key does not open this store")
        },
        test("an unexpected Kotlin exception in a provider arrives as KeyProviderFailed") {
            val broken = object : KeyProvider {
                override fun wrap(dataKey: ByteArray): ByteArray = throw IllegalStateException("keystore locked")
                override fun unwrap(wrapped: ByteArray) = wrapped
                override fun keyId() = "broken"
            }
            val e = assertFailsWith<FollowupException.KeyProviderFailed> { previewKeyProviderRoundtrip(broken) }
            assertContains(e.userMessage, "keystore locked")
        },
        test("validation error carries item problems") {
            val e = assertFailsWith<FollowupException.ValidationFailed> {
                previewValidate(mapOf("pain" to "12", "fever" to "maybe"))
            }
            assertEquals(listOf("pain" to "out_of_range", "fever" to "wrong_type"), e.problems.map { it.itemId to it.code })
            assertEquals("must be between 0 and 10", e.itemProblems.getValue("pain").single().message)
            assertContains(e.userMessage, "2 answers need attention")
            previewValidate(mapOf("pain" to "3", "fever" to "false")) // valid: no exception
        },
    )
}
