package org.followup.test

import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import kotlinx.coroutines.async
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.yield
import org.followup.answersOf
import org.followup.asProcedure
import org.followup.asResponse
import org.followup.changes
import org.followup.ofKind
import org.followup.syncNow
import org.followup.ffi.AdjudicationDecision
import org.followup.ffi.AdjudicationStatus
import org.followup.ffi.AdverseEvent
import org.followup.ffi.AeOutcome
import org.followup.ffi.AnswerValue
import org.followup.ffi.DiscardOutcome
import org.followup.ffi.FollowupException
import org.followup.ffi.RecordBody
import org.followup.ffi.RecordKind
import org.followup.ffi.Relatedness
import org.followup.ffi.Reporter
import org.followup.ffi.ResponseStatus
import org.followup.ffi.VisitState

/** Lets the collectors started just before (on this single-threaded test loop) subscribe. */
private suspend fun subscribed() = repeat(10) { yield() }

// The app API a nurse app and a patient app need beyond capture (docs/app-api.md): one-call
// capture, drafts, reading every record kind, editing a procedure, observing changes, due surveys.
object AppApiTests {
    val tests = listOf(
        test("captureResponse saves a whole response at once, refuses a second for the visit, writes nothing when invalid") {
            val server = TestServer.ensureStarted()
            val tablet = clinicTablet("capture", server.createClinic("Capture Clinic"))
            val patient = tablet.enrolPatient(newPatient("CAP-1"))
            val procedure = tablet.recordProcedure(patient, kneeInjection(today.minusDays(7)))

            val bad = validFollowup() + answersOf("symptom_pain" to 14)
            val e = assertFailsWith<FollowupException.ValidationFailed> {
                tablet.captureResponse(patient, "clinician-followup", procedure, "d7", bad, true)
            }
            assertEquals(listOf("symptom_pain"), e.problems.map { it.itemId })
            assertEquals(0u, tablet.listPatients().single().responses, "nothing was written")

            val r = tablet.captureResponse(patient, "clinician-followup", procedure, "d7", validFollowup(), true)
            val saved = tablet.getResponse(r)
            assertEquals(ResponseStatus.SUBMITTED, saved.status)
            assertEquals(validFollowup(), saved.answers)
            assertNotNull(saved.submittedAt)
            assertTrue(tablet.drafts(null).isEmpty(), "no draft on the way")
            assertTrue(tablet.clinicVisits(today.toString(), listOf(VisitState.DUE)).none { it.patientId == patient && it.visitId == "d7" })

            val again = assertFailsWith<FollowupException.AlreadyRecorded> {
                tablet.captureResponse(patient, "clinician-followup", procedure, "d7", validFollowup(), true)
            }
            assertEquals(r, again.recordId)
            assertEquals(1u, tablet.listPatients().single().responses)
            tablet.close()
        },
        test("drafts are listed, resumed and discarded: deleted before the registry has them, marked after") {
            val server = TestServer.ensureStarted()
            val tablet = clinicTablet("drafts", server.createClinic("Draft Clinic"))
            val p1 = tablet.enrolPatient(newPatient("DR-1"))
            val p2 = tablet.enrolPatient(newPatient("DR-2"))
            val pr1 = tablet.recordProcedure(p1, kneeInjection(today.minusDays(7)))
            val d1 = tablet.captureResponse(p1, "clinician-followup", pr1, "d7", answersOf("visit_mode" to "in_person", "symptom_pain" to 3), false)
            val d2 = tablet.startResponse(p2, "clinician-followup", null, null)

            val all = tablet.drafts(null)
            assertEquals(setOf(d1, d2), all.map { it.responseId }.toSet())
            val first = tablet.drafts(p1).single()
            assertEquals(d1, first.responseId)
            assertEquals("d7", first.visitId)
            assertEquals(pr1, first.procedureId)
            assertEquals(2u, first.answered)
            assertNotNull(first.lastSaved)

            // Resume the first and submit it: it leaves the list.
            tablet.saveAnswers(d1, validFollowup())
            tablet.submitResponse(d1)
            assertEquals(listOf(d2), tablet.drafts(null).map { it.responseId })
            assertFailsWith<FollowupException.InvalidInput> { tablet.discardDraft(d1) }

            // Never synced: gone.
            assertEquals(DiscardOutcome.DELETED, tablet.discardDraft(d2))
            assertTrue(tablet.drafts(null).isEmpty())
            assertFailsWith<FollowupException.InvalidInput> { tablet.getResponse(d2) }

            // Synced: marked discarded, which syncs; no longer listed.
            val d3 = tablet.startResponse(p2, "clinician-followup", null, null)
            tablet.syncNow()
            assertEquals(DiscardOutcome.MARKED_DISCARDED, tablet.discardDraft(d3))
            assertEquals(ResponseStatus.DISCARDED, tablet.getResponse(d3).status)
            assertTrue(tablet.drafts(null).isEmpty())
            assertEquals(1uL, tablet.syncNow().pushed)
            tablet.close()
        },
        test("getRecord reads every kind: enrolment, procedure, response with scores, adverse event, adjudication") {
            val server = TestServer.ensureStarted()
            val tablet = clinicTablet("records", server.createClinic("Record Clinic"))
            val patient = tablet.enrolPatient(newPatient("REC-1"))
            val procedure = tablet.recordProcedure(patient, kneeInjection(today.minusDays(7)))
            val r = tablet.captureResponse(patient, "clinician-followup", procedure, "d7", validFollowup(), true)
            val ae = tablet.reportAdverseEvent(
                patient,
                AdverseEvent(Reporter.CLINIC, "infection", today.toString(), 2, emptyList(), AeOutcome.RECOVERING, "redness", procedure, emptyMap()),
            )
            val adj = tablet.adjudicate(ae, AdjudicationDecision(Relatedness.PROBABLE, "antibiotics", "free care", AdjudicationStatus.RESPONDED))

            val enrolment = tablet.getRecord(patient)
            assertEquals(RecordKind.ENROLMENT, enrolment.kind)
            assertEquals("REC-1", assertIs<RecordBody.EnrolmentBody>(enrolment.body).patient.studyCode)
            assertEquals(tablet.enrolment()!!.deviceId, enrolment.createdByDevice)

            val proc = tablet.getRecord(procedure)
            assertEquals(patient, proc.patientId)
            assertEquals("knee osteoarthritis", proc.body.asProcedure!!.procedure.condition)

            val response = tablet.getRecord(r).body.asResponse!!
            assertEquals(ResponseStatus.SUBMITTED, response.response.status)
            assertEquals(3.0, response.scores["symptom_burden"]!!, 1e-9)
            assertEquals(response.scores, tablet.responseScores(r))

            val event = assertIs<RecordBody.AdverseEventBody>(tablet.getRecord(ae).body).event
            assertEquals("infection", event.category)
            assertEquals(procedure, event.procedureId)

            val decision = assertIs<RecordBody.AdjudicationBody>(tablet.getRecord(adj).body).adjudication
            assertEquals(ae, decision.adverseEventId)
            assertEquals(Relatedness.PROBABLE, decision.relatedness)
            assertEquals(AdjudicationStatus.RESPONDED, decision.status)

            assertFailsWith<FollowupException.InvalidInput> { tablet.responseScores(procedure) }
            assertFailsWith<FollowupException.InvalidInput> { tablet.getRecord("not-an-id") }
            tablet.close()
        },
        test("updateProcedure edits a procedure, and its schedule follows the new date") {
            val server = TestServer.ensureStarted()
            val tablet = clinicTablet("edit-procedure", server.createClinic("Edit Clinic"))
            val patient = tablet.enrolPatient(newPatient("ED-1"))
            val procedure = tablet.recordProcedure(patient, kneeInjection(today.minusDays(60)))
            assertTrue(tablet.patientVisits(patient, today.toString()).none { it.visitId == "d7" && it.state == VisitState.DUE })
            val fixed = kneeInjection(today.minusDays(7)).copy(condition = "knee osteoarthritis, both knees")
            tablet.updateProcedure(procedure, fixed)
            assertEquals(fixed, tablet.getProcedure(procedure))
            assertTrue(tablet.patientVisits(patient, today.toString()).any { it.visitId == "d7" && it.state == VisitState.DUE })
            assertFailsWith<FollowupException.InvalidInput> { tablet.updateProcedure(procedure, fixed.copy(date = "yesterday")) }
            assertFailsWith<FollowupException.InvalidInput> { tablet.updateProcedure(patient, fixed) }
            assertEquals(2uL, tablet.syncNow().pushed, "the enrolment and the edited procedure")
            tablet.close()
        },
        test("changes() emits after a local save and after a sync brings a record") {
            val server = TestServer.ensureStarted()
            val clinic = server.createClinic("Observe Clinic")
            val a = clinicTablet("observe-a", clinic)
            val b = clinicTablet("observe-b", clinic)
            coroutineScope {
                // A local save on b: its own change is reported.
                val local = async { b.changes().first() }
                subscribed()
                val mine = b.enrolPatient(newPatient("OB-B"))
                val batch = local.await()
                assertEquals(listOf(mine), batch.map { it.recordId })
                assertEquals(RecordKind.ENROLMENT, batch.single().kind)
                assertEquals(mine, batch.single().patientId)

                // a records a patient and syncs; b's sync brings it, and b's flow says so.
                val patient = a.enrolPatient(newPatient("OB-A"))
                a.syncNow()
                val pulled = async { b.changes().ofKind(RecordKind.ENROLMENT).first { c -> c.any { it.recordId == patient } } }
                // Make sure the collector is subscribed: a save of b's is seen first.
                val ready = async { b.changes().first() }
                subscribed()
                b.recordProcedure(mine, kneeInjection(today))
                ready.await()
                b.syncNow()
                val got = pulled.await().single { it.recordId == patient }
                assertEquals(false, got.removed)
            }
            a.close(); b.close()
        },
        test("a patient's phone lists its next due surveys with their windows") {
            val server = TestServer.ensureStarted()
            val clinic = server.createClinic("Survey Clinic")
            val tablet = clinicTablet("survey-clinic", clinic)
            val patient = tablet.enrolPatient(newPatient("SV-1"))
            tablet.recordProcedure(patient, kneeInjection(today.minusDays(30)))
            tablet.syncNow()
            val phone = newStore("survey-phone")
            phone.enrol(server.url, server.patientDeviceCode(patient), "Patient phone")
            phone.syncNow()
            val surveys = phone.dueSurveys(null, today.toString())
            assertTrue(surveys.isNotEmpty())
            assertTrue(surveys.all { it.questionnaireId == "patient-outcome-survey" && it.patientId == patient })
            val next = surveys.first()
            assertEquals("m1-survey", next.visitId)
            assertEquals(VisitState.DUE, next.state)
            assertTrue(next.windowStart <= today.toString() && today.toString() <= next.windowEnd)
            assertEquals(surveys.sortedBy { it.windowStart }, surveys)
            assertTrue(surveys.none { it.state == VisitState.DONE || it.state == VisitState.MISSED })
            assertFailsWith<FollowupException.NotPermitted> { phone.dueSurveys(tablet.enrolPatient(newPatient("SV-2")), today.toString()) }
            // A clinic tablet names the patient.
            assertEquals(surveys.map { it.visitId }, tablet.dueSurveys(patient, today.toString()).map { it.visitId })
            phone.close(); tablet.close()
        },
    )
}
