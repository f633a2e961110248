package org.followup.test

import java.io.File
import java.nio.file.Files
import java.time.LocalDate
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import org.followup.AesGcmKeyProvider
import org.followup.answersOf
import org.followup.ffi.AnswerValue
import org.followup.ffi.CellType
import org.followup.ffi.Consent
import org.followup.ffi.Cost
import org.followup.ffi.FollowupStore
import org.followup.ffi.Manipulation
import org.followup.ffi.NewPatient
import org.followup.ffi.Origin
import org.followup.ffi.Procedure
import org.followup.ffi.PromisedBenefit
import org.followup.ffi.RegulatoryStatus
import org.followup.ffi.Route
import org.followup.ffi.Sex
import org.followup.ffi.SourceTissue

fun aesKey(): SecretKey = KeyGenerator.getInstance("AES").apply { init(256) }.generateKey()

/** A fresh directory for stores, deleted at exit. */
fun tempDir(): File = Files.createTempDirectory("followup-jvm").toFile().apply { deleteOnExit() }

/** A new store in a fresh directory, its data key wrapped by a Kotlin [AesGcmKeyProvider]. */
suspend fun newStore(name: String, key: SecretKey = aesKey()): FollowupStore =
    FollowupStore.createWithKeyProvider(File(tempDir(), "$name.db").path, AesGcmKeyProvider(key, "alias-$name"))

/** A new store enrolled as a clinic device of [clinicId] on the test server. */
suspend fun clinicTablet(name: String, clinicId: String): FollowupStore {
    val store = newStore(name)
    store.enrol(TestServer.url, TestServer.clinicDeviceCode(clinicId), "$name (JVM test)")
    return store
}

val today: LocalDate get() = LocalDate.now()

fun newPatient(code: String) = NewPatient(
    studyCode = code,
    consent = Consent(formVersion = "2.1", date = today.minusDays(8).toString(), scope = listOf("registry")),
    birthYear = 1961,
    sex = Sex.FEMALE,
    enrolledOn = today.minusDays(8).toString(),
)

fun kneeInjection(date: LocalDate) = Procedure(
    date = date.toString(),
    condition = "knee osteoarthritis",
    procedureType = "cell injection",
    route = Route.INTRA_ARTICULAR,
    cellType = CellType.MESENCHYMAL,
    sourceTissue = SourceTissue.ADIPOSE,
    origin = Origin.AUTOLOGOUS,
    manipulation = Manipulation.MINIMAL,
    regulatoryStatus = RegulatoryStatus.UNREGULATED,
    trialRegistration = null,
    promisedBenefits = listOf(PromisedBenefit("less pain", "pain 0-10")),
    cost = Cost(850_000, "USD"),
)

/** A complete, valid day-7 clinician follow-up. */
fun validFollowup(): Map<String, AnswerValue> = answersOf(
    "visit_date" to today.toString(),
    "visit_mode" to "in_person",
    "condition_status" to "improved",
    "symptom_primary" to 3,
    "symptom_pain" to 2,
    "symptom_fatigue" to 4,
    "ecog" to "1",
    "complications_any" to false,
    "hospitalised" to false,
    "further_cell_therapy" to false,
)
