package org.followup.test

import kotlin.system.exitProcess
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout

/**
 * A minimal test runner (no JUnit download is possible here): each suite lists named suspend
 * tests; each runs under a timeout; the run ends with `N passed, N failed` and exits non-zero on
 * any failure. Pass test-name substrings as arguments to run only matching tests.
 */
class Test(val name: String, val body: suspend () -> Unit)

fun test(name: String, body: suspend () -> Unit) = Test(name, body)

fun main(args: Array<String>) {
    val all = StoreTests.tests + LayerTests.tests + ScenarioTests.tests + AppApiTests.tests + UsersTests.tests + DefinitionsTests.tests
    val selected = if (args.isEmpty()) all else all.filter { t -> args.any { t.name.contains(it) } }
    var passed = 0
    var failed = 0
    val clock = TimeSource.Monotonic
    Runtime.getRuntime().addShutdownHook(Thread { TestServer.stop() })
    for (t in selected) {
        val start = clock.markNow()
        val error = try {
            runBlocking { withTimeout(60.seconds) { t.body() } }
            null
        } catch (e: Throwable) {
            e
        }
        val ms = start.elapsedNow().inWholeMilliseconds
        if (error == null) {
            passed++
            println("PASS  ${t.name} (${ms} ms)")
        } else {
            failed++
            println("FAIL  ${t.name} (${ms} ms)")
            error.printStackTrace(System.out)
        }
    }
    TestServer.stop()
    if (failed > 0 && TestServer.log.length() > 0) {
        println("---- followup-server log (last 4 kB) ----")
        println(TestServer.log.readText().takeLast(4096))
    }
    println("$passed passed, $failed failed")
    exitProcess(if (failed == 0 && selected.isNotEmpty()) 0 else 1)
}
