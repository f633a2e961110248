package org.followup.test

import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlinx.coroutines.delay
import org.followup.needsSignIn
import org.followup.syncNow
import org.followup.ffi.FollowupException

// Nurses on a shared clinic tablet, against a real registry server (TestServer) on 127.0.0.1.
object UsersTests {
    val tests = listOf(
        test("shared tablet: add nurses with activation codes, sign in, wrong PIN, sign out, idle lock, removal at sync") {
            val server = TestServer.ensureStarted()
            val clinic = server.createClinic("Chiang Mai Cell Clinic")
            val tablet = clinicTablet("shared-tablet", clinic)
            assertFalse(tablet.hasUsers())
            assertFalse(tablet.isLocked())
            assertTrue(tablet.deviceUsers().isEmpty())

            val (ana, anaCode) = server.createUser(clinic, "Ana")
            val (rui, ruiCode) = server.createUser(clinic, "Rui")
            // A weak PIN and a wrong code are refused.
            assertFailsWith<FollowupException.WeakPin> { tablet.addUser(ana, anaCode, "111111") }
            assertFailsWith<FollowupException.InvalidInput> { tablet.addUser(ana, "AAAA-BBBB-CCCC", "482916") }
            // The first user makes it a shared tablet and is signed in; she adds Rui.
            assertEquals("Ana", tablet.addUser(ana, anaCode, "482916"))
            assertTrue(tablet.hasUsers())
            assertEquals(ana, tablet.signedInUser())
            assertEquals("Rui", tablet.addUser(rui, ruiCode, "correct horse"))
            assertEquals(listOf("Ana", "Rui"), tablet.deviceUsers().map { it.name })
            val patient = tablet.enrolPatient(newPatient("CNX-001"))

            // Signed out: every record call says to sign in.
            tablet.signOut()
            assertTrue(tablet.isLocked())
            assertNull(tablet.signedInUser())
            val locked = assertFailsWith<FollowupException.Locked> { tablet.listPatients() }
            assertTrue(locked.needsSignIn)
            // A wrong PIN counts down; the right one opens the same records.
            val wrong = assertFailsWith<FollowupException.WrongPin> { tablet.signIn(rui, "000111") }
            assertEquals(9u, wrong.attemptsLeft)
            assertEquals(1u, tablet.deviceUsers().single { it.userId == rui }.failures)
            tablet.signIn(rui, "correct horse")
            assertEquals(patient, tablet.listPatients().single().id)
            assertEquals(0u, tablet.deviceUsers().single { it.userId == rui }.failures)

            // Idle lock: after the timeout the tablet locks itself.
            assertEquals(300uL, tablet.idleTimeoutSeconds())
            tablet.setIdleTimeoutSeconds(1uL)
            delay(1_600)
            assertTrue(tablet.isLocked())
            assertFailsWith<FollowupException.Locked> { tablet.listPatients() }

            // Staff remove Rui; at Ana's next sync the tablet forgets him.
            tablet.signIn(ana, "482916")
            server.removeUser(rui)
            tablet.syncNow()
            assertEquals(listOf("Ana"), tablet.deviceUsers().map { it.name })
            tablet.signOut()
            assertFailsWith<FollowupException.InvalidInput> { tablet.signIn(rui, "correct horse") }

            // Removing a user on the tablet: Rui is already gone; Ana, the last user, cannot be.
            assertFailsWith<FollowupException.Locked> { tablet.removeUser(rui) }
            tablet.signIn(ana, "482916")
            tablet.setIdleTimeoutSeconds(300uL)
            assertFalse(tablet.removeUser(rui))
            assertFailsWith<FollowupException.NotPermitted> { tablet.removeUser(ana) }
            assertEquals(listOf("Ana"), tablet.deviceUsers().map { it.name })
            tablet.close()
        },
    )
}
