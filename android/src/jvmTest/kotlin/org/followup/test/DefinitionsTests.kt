package org.followup.test

import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNotEquals
import kotlin.test.assertTrue
import org.followup.answersOf
import org.followup.syncNow
import org.followup.useDeviceLocale
import org.followup.ffi.DefinitionState
import org.followup.ffi.FollowupException
import org.followup.ffi.ResponseStatus

/** A questionnaire the registry publishes after the tablets exist (docs/definitions.md). */
private const val PHONE_CHECK_V1 = """
{ "format": 1, "definition": "questionnaire", "id": "phone-check", "version": "1.0.0",
  "title": "Phone check", "kind": "clinician_followup", "language": "en",
  "items": [
    { "id": "reached", "text": "Was the patient reached?", "type": "boolean", "required": true },
    { "id": "pain_now", "text": "Pain now", "type": "integer", "min": 0, "max": 10, "required": true }
  ],
  "translations": { "es": { "title": "Control telefónico",
    "items": { "reached": { "text": "¿Se contactó al paciente?" }, "pain_now": { "text": "Dolor ahora" } } } }
}
"""

// Forms are registry data delivered by sync (docs/definitions.md): the app lists them from its
// store, renders them in the device's language, and captures with a form published after the
// store was created.
object DefinitionsTests {
    val tests = listOf(
        test("texts and validation messages follow the store's locale, with fallback") {
            val server = TestServer.ensureStarted()
            val tablet = clinicTablet("locale", server.createClinic("Locale Clinic"))
            assertEquals("en", tablet.locale())
            val en = tablet.questionnaire("patient-outcome-survey")
            assertEquals("Your health since the procedure", en.title)

            tablet.setLocale("es-MX") // no es-MX texts: falls back to es
            val es = tablet.questionnaire("patient-outcome-survey")
            assertEquals("Su salud desde el procedimiento", es.title)
            assertEquals("Fecha de hoy", es.items.first { it.id == "completed_date" }.text)
            assertEquals(en.items.map { it.id }, es.items.map { it.id }, "same items, translated")
            assertNotEquals(en.items.first { it.choices.isNotEmpty() }.choices.map { it.label },
                es.items.first { it.choices.isNotEmpty() }.choices.map { it.label }, "choice labels are translated too")

            tablet.setLocale("pt_BR") // Swift's form of the tag
            assertEquals("pt-BR", tablet.locale())
            assertEquals("Sua saúde desde o procedimento", tablet.questionnaire("patient-outcome-survey").title)

            tablet.setLocale("es")
            val problems = tablet.checkAnswers("clinician-followup", validFollowup() + answersOf("symptom_pain" to 14))
            assertEquals(listOf("symptom_pain"), problems.map { it.itemId })
            assertTrue("máximo" in problems.single().message, problems.single().message)

            assertFailsWith<FollowupException.InvalidInput> { tablet.setLocale("es;drop table") }
            assertEquals("es", tablet.locale(), "a refused tag changes nothing")

            tablet.useDeviceLocale()
            assertEquals(java.util.Locale.getDefault().toLanguageTag(), tablet.locale())
            tablet.close()
        },
        test("a form published after the store was created arrives by sync and can be filled") {
            val server = TestServer.ensureStarted()
            val tablet = clinicTablet("late-form", server.createClinic("Late Form Clinic"))
            assertTrue(tablet.definitions().none { it.id == "phone-check" })
            val patient = tablet.enrolPatient(newPatient("LF-1"))
            assertFailsWith<FollowupException> {
                tablet.captureResponse(patient, "phone-check", null, null, answersOf("reached" to true, "pain_now" to 3), true)
            }

            server.publishDefinition(PHONE_CHECK_V1)
            tablet.syncNow()
            val listed = tablet.definitions().single { it.id == "phone-check" }
            assertEquals("questionnaire", listed.definitionType)
            assertEquals("1.0.0", listed.version)
            assertEquals(DefinitionState.PUBLISHED, listed.state)
            assertEquals(listOf("en", "es"), listed.languages)
            assertTrue(listed.usable)
            assertEquals(null, listed.needsUpdateReason)
            // The built-in forms came with enrolment, as registry data too.
            assertTrue(tablet.definitions().any { it.id == "patient-outcome-survey" && it.languages.containsAll(listOf("en", "es", "pt")) })

            tablet.setLocale("es")
            assertEquals("Control telefónico", tablet.questionnaire("phone-check").title)
            val r = tablet.captureResponse(patient, "phone-check", null, null, answersOf("reached" to true, "pain_now" to 3), true)
            assertEquals(ResponseStatus.SUBMITTED, tablet.getResponse(r).status)
            assertEquals("1.0.0", tablet.responseQuestionnaire(r).version)
            assertEquals("¿Se contactó al paciente?", tablet.responseQuestionnaire(r).items.first().text)
            val report = tablet.syncNow()
            assertTrue(report.rejected.isEmpty(), "the registry accepts a response to its newly published form: ${report.rejected}")
            tablet.close()
        },
    )
}
