package org.followup.test

import java.util.Collections
import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertNotNull
import kotlin.test.assertTrue
import kotlinx.coroutines.flow.toList
import org.followup.OperationEvent
import org.followup.answersOf
import org.followup.itemProblems
import org.followup.plain
import org.followup.syncFlow
import org.followup.syncNow
import org.followup.userMessage
import org.followup.ffi.AdjudicationDecision
import org.followup.ffi.AdjudicationStatus
import org.followup.ffi.AdverseEvent
import org.followup.ffi.AeOutcome
import org.followup.ffi.CaseState
import org.followup.ffi.Verdict
import org.followup.ffi.AnswerValue
import org.followup.ffi.CancellationHandle
import org.followup.ffi.CompletedBy
import org.followup.ffi.DeviceRole
import org.followup.ffi.FollowupException
import org.followup.ffi.Relatedness
import org.followup.ffi.Reporter
import org.followup.ffi.ResponseStatus
import org.followup.ffi.SyncProgress
import org.followup.ffi.SyncStage
import org.followup.ffi.VisitState
import org.followup.ffi.defaultSyncSettings

// A field day against a real registry server (TestServer) on 127.0.0.1.
object ScenarioTests {
    val tests = listOf(
        test("enrol, capture with validation errors, sync with a progress Flow, a second tablet pulls it all") {
            val server = TestServer.ensureStarted()
            val clinic = server.createClinic("Bangkok Regenerative Clinic")

            // Morning: the nurse sets up the tablet.
            val tablet = newStore("tablet-a")
            val enrolled = tablet.enrol(server.url, server.clinicDeviceCode(clinic), "Tablet A, ward 2")
            assertEquals(DeviceRole.CLINIC_DEVICE, enrolled.role)
            assertEquals(clinic, enrolled.clinicId)
            assertEquals(enrolled, tablet.enrolment())
            assertFailsWith<FollowupException.AlreadyEnrolled> {
                tablet.enrol(server.url, server.clinicDeviceCode(clinic), "again")
            }

            // A patient, a procedure a week ago: the day-7 visit is due today.
            val patient = tablet.enrolPatient(newPatient("BKK-001"))
            val procedure = tablet.recordProcedure(patient, kneeInjection(today.minusDays(7)))
            assertEquals("knee osteoarthritis", tablet.getProcedure(procedure).condition)
            val due = tablet.clinicVisits(today.toString(), listOf(VisitState.DUE))
            val d7 = due.single { it.patientId == patient && it.visitId == "d7" }
            assertEquals("clinician-followup", d7.questionnaireId)

            // The follow-up, typed with mistakes: save keeps the draft and lists the problems.
            val response = tablet.startResponse(patient, d7.questionnaireId, procedure, d7.visitId)
            val typos = validFollowup() + answersOf("symptom_pain" to 14, "ecog" to "9")
            val problems = tablet.saveAnswers(response, typos)
            assertEquals(setOf("symptom_pain" to "above_max", "ecog" to "unknown_choice"), problems.map { it.itemId to it.code }.toSet())
            // Submitting is a Kotlin exception carrying the item problems.
            val e = assertFailsWith<FollowupException.ValidationFailed> { tablet.submitResponse(response) }
            assertEquals(setOf("symptom_pain", "ecog"), e.itemProblems.keys)
            assertContains(e.userMessage, "2 answers need attention")
            // A required answer missing is a problem at submission only.
            tablet.saveAnswers(response, answersOf("symptom_pain" to 2, "ecog" to "1"))
            tablet.clearAnswer(response, "hospitalised")
            val missing = assertFailsWith<FollowupException.ValidationFailed> { tablet.submitResponse(response) }
            assertEquals("required", missing.problems.single { it.itemId == "hospitalised" }.code)
            assertEquals(emptyList(), tablet.saveAnswers(response, answersOf("hospitalised" to false)))
            tablet.submitResponse(response)
            val saved = tablet.getResponse(response)
            assertEquals(ResponseStatus.SUBMITTED, saved.status)
            assertEquals(CompletedBy.NURSE, saved.completedBy)
            assertEquals(2L, saved.answers.getValue("symptom_pain").plain)
            assertNotNull(saved.submittedAt)
            assertEquals(VisitState.DONE, tablet.patientVisits(patient, today.toString()).single { it.visitId == "d7" }.state)

            // An adverse event and the clinic's adjudication.
            val ae = tablet.reportAdverseEvent(
                patient,
                AdverseEvent(Reporter.CLINIC, "infection", today.minusDays(1).toString(), 3, listOf("hospitalisation"),
                    AeOutcome.RECOVERING, "redness at the injection site", procedure, emptyMap()),
            )
            assertEquals(ae, tablet.adjudicationQueue(today.toString()).single().adverseEventId)
            val adj = tablet.adjudicate(ae, AdjudicationDecision(Relatedness.PROBABLE, "antibiotics", "treatment at no cost", AdjudicationStatus.RESPONDED))
            val queued = tablet.adjudicationQueue(today.toString()).single()
            assertEquals(adj, queued.adjudicationId)
            assertEquals(AdjudicationStatus.RESPONDED, queued.status)
            // The deadline is the registry's: none until the registry has the event.
            assertEquals(null, queued.deadline)
            assertEquals(1u, tablet.listPatients().single().procedures)

            // Evening: sync, watching the progress Flow.
            val events = tablet.syncFlow().toList()
            val progress = events.filterIsInstance<OperationEvent.Progress>().map { it.progress }
            val report = assertIs<OperationEvent.Done<*>>(events.last()).result as org.followup.ffi.SyncReport
            assertTrue(progress.isNotEmpty(), "progress was reported")
            assertTrue(progress.any { it.stage == SyncStage.Sending }, progress.toString())
            assertEquals(SyncStage.Done, progress.last().stage)
            assertTrue(progress.zipWithNext().all { (a, b) -> b.bytesSent >= a.bytesSent }, "bytes sent only grow")
            assertEquals(5uL, report.pushed, "patient, procedure, response, adverse event, adjudication")
            assertEquals(emptyList(), report.rejected)
            assertTrue(report.bytesUp > 0uL && report.roundTrips >= 1u, report.toString())
            assertEquals(0uL, tablet.syncNow().pushed, "nothing new to push")
            val case = assertNotNull(tablet.adverseEvent(ae).case, "the registry's case came back")
            assertEquals(today.plusDays(7).toString(), case.deadline, "serious: 7 days from the registry's acceptance")
            assertEquals(CaseState.RESPONDED, case.state)
            assertEquals(case.deadline, tablet.adjudicationQueue(today.toString()).single().deadline)

            // A second tablet of the same clinic pulls everything.
            // Enrolment syncs once (the registry's forms and the clinic's records come with it),
            // so the next sync has nothing left to pull.
            val tabletB = clinicTablet("tablet-b", clinic)
            val pulled = tabletB.syncNow()
            assertEquals(0uL, pulled.pulled, pulled.toString())
            val p = tabletB.listPatients().single()
            assertEquals(patient, p.id)
            assertEquals("BKK-001", p.studyCode)
            assertEquals(1u to 1u, p.procedures to p.responses)
            val onB = tabletB.getResponse(response)
            assertEquals(saved.answers, onB.answers)
            assertEquals(ResponseStatus.SUBMITTED, onB.status)
            assertEquals(AdjudicationStatus.RESPONDED, tabletB.adjudicationQueue(today.toString()).single().status)
            tablet.close()
            tabletB.close()
        },
        test("concurrent edits on two tablets merge, and the conflict shows both values") {
            val server = TestServer.ensureStarted()
            val clinic = server.createClinic("Chiang Mai Cell Clinic")
            val a = clinicTablet("conflict-a", clinic)
            val b = clinicTablet("conflict-b", clinic)
            val patient = a.enrolPatient(newPatient("CM-7"))
            val proc = a.recordProcedure(patient, kneeInjection(today.minusDays(7)))
            val r = a.startResponse(patient, "clinician-followup", proc, "d7")
            a.syncNow()
            b.syncNow()
            // Offline, both nurses answer: the same item differently, and different items.
            a.saveAnswers(r, answersOf("symptom_pain" to 3, "visit_mode" to "in_person"))
            b.saveAnswers(r, answersOf("symptom_pain" to 5, "ecog" to "2"))
            a.syncNow(); b.syncNow(); a.syncNow()
            val merged = a.getResponse(r).answers
            assertEquals("in_person", merged.getValue("visit_mode").plain)
            assertEquals("2", merged.getValue("ecog").plain)
            assertEquals(b.getResponse(r).answers, merged, "both tablets converge")
            val conflict = a.conflicts(r).single { it.path == "answers.symptom_pain" }
            assertEquals(setOf("3", "5"), conflict.values.map { it.valueJson }.toSet())
            assertEquals(1, conflict.values.count { it.winner })
            assertEquals(setOf(a.enrolment()!!.deviceId, b.enrolment()!!.deviceId), conflict.values.map { it.deviceId }.toSet())
            assertEquals(merged.getValue("symptom_pain"), AnswerValue.Int(conflict.values.single { it.winner }.valueJson.toLong()))
            // The nurse settles it on tablet A; once synced, neither tablet shows a conflict.
            a.resolveAnswer(r, "symptom_pain", AnswerValue.Int(4))
            a.syncNow(); b.syncNow()
            assertEquals(emptyList(), a.conflicts(r))
            assertEquals(emptyList(), b.conflicts(r))
            assertEquals(AnswerValue.Int(4), b.getResponse(r).answers["symptom_pain"])
            a.close(); b.close()
        },
        test("a patient's phone enrols for its patient and answers its own survey") {
            val server = TestServer.ensureStarted()
            val clinic = server.createClinic("Phuket Stem Cell Centre")
            val tablet = clinicTablet("clinic-for-phone", clinic)
            val patient = tablet.enrolPatient(newPatient("PK-3"))
            tablet.recordProcedure(patient, kneeInjection(today.minusDays(30)))
            tablet.syncNow()
            val phone = newStore("phone")
            val enrolled = phone.enrol(server.url, server.patientDeviceCode(patient), "Patient phone")
            assertEquals(DeviceRole.PATIENT_DEVICE, enrolled.role)
            assertEquals(patient, enrolled.patientId)
            phone.syncNow()
            // The phone may not do clinic work...
            assertFailsWith<FollowupException.NotPermitted> { phone.enrolPatient(newPatient("X")) }
            // ...but reports its own complications (always as the patient).
            val ae = phone.reportAdverseEvent(
                patient,
                AdverseEvent(Reporter.CLINIC, "other", today.toString(), 2, emptyList(), AeOutcome.RECOVERING, "swelling", null, emptyMap()),
            )
            val survey = phone.startResponse(patient, "patient-outcome-survey", null, null)
            assertEquals(CompletedBy.PATIENT, phone.getResponse(survey).completedBy)
            assertFailsWith<FollowupException.NotPermitted> {
                phone.adjudicate(ae, AdjudicationDecision(null, "", "", AdjudicationStatus.OPEN))
            }
            assertEquals(2uL, phone.syncNow().pushed)
            tablet.syncNow()
            assertEquals(ae, tablet.adjudicationQueue(today.toString()).single().adverseEventId)
            phone.close(); tablet.close()
        },
        test("the registry's case: escalation reaches the tablet, the patient reads the remedy and disputes") {
            val server = TestServer.ensureStarted()
            val clinic = server.createClinic("Pattaya Cell Therapy")
            val tablet = clinicTablet("case-tablet", clinic)
            val patient = tablet.enrolPatient(newPatient("PT-9"))
            tablet.recordProcedure(patient, kneeInjection(today.minusDays(20)))
            tablet.syncNow()
            val phone = newStore("case-phone")
            phone.enrol(server.url, server.patientDeviceCode(patient), "Patient phone")
            val ae = phone.reportAdverseEvent(
                patient,
                AdverseEvent(Reporter.PATIENT, "infection", today.minusDays(2).toString(), 2, emptyList(),
                    AeOutcome.RECOVERING, "knee hot and swollen", null, emptyMap()),
            )
            phone.syncNow()
            tablet.syncNow()
            val opened = assertNotNull(tablet.adverseEvent(ae).case)
            assertEquals(30, opened.days)
            assertEquals(CaseState.OPEN, opened.state)
            // The registry escalates; the note reaches the tablet.
            assertEquals("escalated", server.escalate(ae, "Answer the patient within 48 hours"))
            tablet.syncNow()
            val escalated = assertNotNull(tablet.adverseEvent(ae).case)
            assertEquals(CaseState.ESCALATED, escalated.state)
            assertEquals("Answer the patient within 48 hours", escalated.escalations.single().note)
            // The clinic answers; the phone reads the remedy.
            tablet.adjudicate(ae, AdjudicationDecision(Relatedness.POSSIBLE, "antibiotics", "antibiotics paid by the clinic", AdjudicationStatus.RESPONDED))
            tablet.syncNow()
            phone.syncNow()
            val seen = phone.adverseEvent(ae)
            assertEquals("antibiotics paid by the clinic", seen.adjudication?.remedy)
            assertEquals(CaseState.RESPONDED, seen.case?.state)
            // Only the patient replies; a dispute says why, and reaches the registry.
            assertFailsWith<FollowupException.NotPermitted> { tablet.replyToAdjudication(ae, Verdict.ACCEPTED, "") }
            assertFailsWith<FollowupException.ValidationFailed> { phone.replyToAdjudication(ae, Verdict.DISPUTED, "") }
            phone.replyToAdjudication(ae, Verdict.DISPUTED, "I paid for the antibiotics myself")
            phone.syncNow()
            assertEquals(CaseState.DISPUTED, phone.adverseEvent(ae).case?.state)
            assertContains(server.casesJson("disputed"), "I paid for the antibiotics myself")
            tablet.syncNow()
            assertEquals(CaseState.DISPUTED, tablet.adverseEvents(patient).single().case?.state)
            phone.close(); tablet.close()
        },
        test("sync cancelled through its handle is Cancelled; progress listener errors are ignored") {
            val server = TestServer.ensureStarted()
            val tablet = clinicTablet("cancel", server.createClinic("Cancel Clinic"))
            tablet.enrolPatient(newPatient("C-1"))
            val handle = CancellationHandle()
            handle.cancel()
            val e = assertFailsWith<FollowupException.Cancelled> { tablet.sync(null, handle) }
            assertContains(e.userMessage, "cancelled")
            val seen = Collections.synchronizedList(mutableListOf<SyncProgress>())
            val report = tablet.sync(org.followup.progressListener { seen += it; error("listener bug") }, null)
            assertEquals(1uL, report.pushed)
            assertTrue(seen.isNotEmpty())
            handle.close(); tablet.close()
        },
        test("server unreachable and revoked devices are distinct exceptions that say what to do") {
            val server = TestServer.ensureStarted()
            val clinic = server.createClinic("Revoked Clinic")
            val offline = newStore("offline")
            offline.setSyncSettings(defaultSyncSettings().copy(maxAttempts = 1u, timeoutSecs = 5u))
            val free = java.net.ServerSocket(0).use { it.localPort }
            val e = assertFailsWith<FollowupException.ServerUnreachable> {
                offline.enrol("http://127.0.0.1:$free", "ABCD-EFGH", "offline tablet")
            }
            assertContains(e.userMessage, "connection")
            assertFailsWith<FollowupException.InvalidInput> { offline.enrol(server.url, "WRONG-CODE", "x") }
            assertFailsWith<FollowupException.InvalidInput> {
                offline.setSyncSettings(defaultSyncSettings().copy(pinnedCertSha256 = ByteArray(3)))
            }

            val tablet = clinicTablet("revoked", clinic)
            tablet.syncNow()
            server.revoke(tablet.enrolment()!!.deviceId)
            val r = assertFailsWith<FollowupException.Revoked> { tablet.syncNow() }
            assertContains(r.userMessage, "revoked")
            offline.close(); tablet.close()
        },
    )
}
