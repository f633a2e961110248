package org.followup.test

import java.io.File
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue
import org.followup.AesGcmKeyProvider
import org.followup.answersOf
import org.followup.itemProblems
import org.followup.userMessage
import org.followup.ffi.FollowupException
import org.followup.ffi.FollowupStore
import org.followup.ffi.ItemType
import org.followup.ffi.KeyProvider
import org.followup.ffi.QuestionnaireKind
import org.followup.ffi.coreVersion

/** Counts calls, so a test can prove Rust called into Kotlin. */
class CountingKeyProvider(private val inner: KeyProvider) : KeyProvider {
    val wraps = AtomicInteger()
    val unwraps = AtomicInteger()
    override fun wrap(dataKey: ByteArray): ByteArray = inner.wrap(dataKey).also { wraps.incrementAndGet() }
    override fun unwrap(wrapped: ByteArray): ByteArray = inner.unwrap(wrapped).also { unwraps.incrementAndGet() }
    override fun keyId(): String = inner.keyId()
}

// The store without a server: keys, errors, questionnaires, closing.
object StoreTests {
    val tests = listOf(
        test("core version is reported") {
            assertTrue(Regex("""\d+\.\d+\.\d+.*""").matches(coreVersion()), coreVersion())
        },
        test("a KeyProvider implemented in Kotlin opens the store it created; another key gives WrongKey") {
            val key = aesKey()
            val path = File(tempDir(), "tablet.db").path
            val provider = CountingKeyProvider(AesGcmKeyProvider(key, "tablet-key"))
            FollowupStore.createWithKeyProvider(path, provider).use { assertNull(it.enrolment()) }
            assertEquals(1, provider.wraps.get(), "Rust asked Kotlin to wrap the data key once")
            val unwrapsAtCreate = provider.unwraps.get() // core checks the wrapped key opens
            FollowupStore.openWithKeyProvider(path, provider).use { assertTrue(it.isOpen()) }
            assertEquals(unwrapsAtCreate + 1, provider.unwraps.get(), "opening unwraps once")
            val e = assertFailsWith<FollowupException.WrongKey> {
                FollowupStore.openWithKeyProvider(path, AesGcmKeyProvider(aesKey(), "tablet-key"))
            }
            assertContains(e.userMessage, "does not open this store")
        },
        test("a provider that throws something else arrives as KeyProviderFailed") {
            val broken = object : KeyProvider {
                override fun wrap(dataKey: ByteArray): ByteArray = throw IllegalStateException("keystore locked")
                override fun unwrap(wrapped: ByteArray): ByteArray = wrapped
                override fun keyId(): String = "broken"
            }
            val e = assertFailsWith<FollowupException.KeyProviderFailed> {
                FollowupStore.createWithKeyProvider(File(tempDir(), "x.db").path, broken)
            }
            assertContains(e.userMessage, "keystore locked")
        },
        test("passphrase stores: rotate from a platform key to a passphrase; a wrong passphrase is WrongKey") {
            val path = File(tempDir(), "phone.db").path
            val provider = AesGcmKeyProvider(aesKey(), "k")
            FollowupStore.createWithKeyProvider(path, provider).use { it.rotateKeyToPassphrase("correct horse battery") }
            assertFailsWith<FollowupException.WrongKey> { FollowupStore.openWithKeyProvider(path, provider) }
            assertFailsWith<FollowupException.WrongKey> { FollowupStore.openWithPassphrase(path, "wrong horse") }
            FollowupStore.openWithPassphrase(path, "correct horse battery").use { assertTrue(it.isOpen()) }
            assertFailsWith<FollowupException.InvalidInput> { FollowupStore.openWithPassphrase(path, "") }
        },
        test("opening a store that does not exist is InvalidInput; creating over one is refused") {
            val dir = tempDir()
            assertFailsWith<FollowupException.InvalidInput> {
                FollowupStore.openWithKeyProvider(File(dir, "none.db").path, AesGcmKeyProvider(aesKey(), "k"))
            }
            val path = File(dir, "one.db").path
            FollowupStore.createWithKeyProvider(path, AesGcmKeyProvider(aesKey(), "k")).close()
            assertFailsWith<FollowupException.InvalidInput> {
                FollowupStore.createWithKeyProvider(path, AesGcmKeyProvider(aesKey(), "k"))
            }
        },
        test("capture needs an enrolled device: NotEnrolled says what to do") {
            newStore("fresh").use { store ->
                val e = assertFailsWith<FollowupException.NotEnrolled> { store.enrolPatient(newPatient("P-1")) }
                assertContains(e.userMessage, "enrol")
                assertFailsWith<FollowupException.NotEnrolled> { store.sync(null, null) }
            }
        },
        test("malformed ids and dates are InvalidInput, never a crash") {
            newStore("ids").use { store ->
                assertFailsWith<FollowupException.InvalidInput> { store.getResponse("not-an-id") }
                assertFailsWith<FollowupException.InvalidInput> { store.patientVisits("0".repeat(32), "12/01/2026") }
                assertFailsWith<FollowupException.InvalidInput> { store.conflicts("0".repeat(32)) }
                assertFailsWith<FollowupException.InvalidInput> { store.questionnaire("no-such-form") }
            }
        },
        test("a questionnaire describes its items for rendering; enable-when follows the answers") {
            // A tablet has the registry's forms once enrolled (enrolment syncs them).
            val server = TestServer.ensureStarted()
            clinicTablet("forms", server.createClinic("Forms Clinic")).use { store ->
                val q = store.questionnaire("clinician-followup")
                assertEquals(QuestionnaireKind.CLINICIAN_FOLLOWUP, q.kind)
                val pain = q.items.first { it.id == "symptom_pain" }
                assertEquals(ItemType.SCALE0_TO10, pain.itemType)
                assertEquals(0.0 to 10.0, pain.min to pain.max)
                assertTrue(pain.required && pain.enabled)
                val ecog = q.items.first { it.id == "ecog" }
                assertEquals(listOf("0", "1", "2", "3", "4", "5"), ecog.choices.map { it.code })
                val complications = q.items.first { it.id == "complications" }
                assertTrue(complications.conditional)
                assertFalse(complications.enabled, "hidden until complications_any is yes")
                assertFalse("complications" in store.enabledItems(q.id, answersOf("complications_any" to false)))
                assertTrue("complications" in store.enabledItems(q.id, answersOf("complications_any" to true)))
            }
        },
        test("checkAnswers validates as the user types, with item problems") {
            val server = TestServer.ensureStarted()
            clinicTablet("typing", server.createClinic("Typing Clinic")).use { store ->
                assertEquals(emptyList(), store.checkAnswers("clinician-followup", answersOf("symptom_pain" to 4)))
                val problems = store.checkAnswers(
                    "clinician-followup",
                    answersOf("symptom_pain" to 14, "ecog" to "9", "visit_date" to "2026-02-30"),
                ).associateBy { it.itemId }
                assertEquals("above_max", problems.getValue("symptom_pain").code)
                assertEquals("unknown_choice", problems.getValue("ecog").code)
                assertEquals("invalid_date", problems.getValue("visit_date").code)
                assertContains(problems.getValue("symptom_pain").message, "14")
            }
        },
        test("closeStore: every later call is Closed; use {} frees the object") {
            val store = newStore("closing")
            store.closeStore()
            store.closeStore() // idempotent
            assertFalse(store.isOpen())
            val e = assertFailsWith<FollowupException.Closed> { store.listPatients() }
            assertContains(e.userMessage, "closed")
            assertFailsWith<FollowupException.Closed> { store.sync(null, null) }
            store.close()
            assertFailsWith<IllegalStateException> { store.isOpen() }
        },
        test("a closed store's file can be opened again") {
            val path = File(tempDir(), "again.db").path
            val provider = AesGcmKeyProvider(aesKey(), "k")
            val first = FollowupStore.createWithKeyProvider(path, provider)
            first.closeStore()
            FollowupStore.openWithKeyProvider(path, provider).use { assertTrue(it.listPatients().isEmpty()) }
            first.close()
            assertTrue(FollowupException.ValidationFailed("r", emptyList()).itemProblems.isEmpty())
        },
    )
}
