package org.followup.test

import java.io.File
import java.net.ServerSocket
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.file.Files
import java.time.Duration
import java.util.concurrent.TimeUnit

/**
 * A real registry server (`target/debug/followup-server`, path in the `followup.server` system
 * property) started as a subprocess on 127.0.0.1 with a fresh data directory, and a small client
 * of its admin API (java.net.http, JSON by hand: no JSON library on the classpath).
 *
 * Started on first use, shared by the tests, and always stopped: by [stop] (the runner calls it in
 * `finally`) or by a JVM shutdown hook. Every wait is bounded.
 */
object TestServer {
    private const val ADMIN_TOKEN = "jvm-test-admin-token-0123456789"
    private var process: Process? = null
    private var dataDir: File? = null
    private val http: HttpClient = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build()

    lateinit var url: String
        private set

    /** The server's log (stdout + stderr), printed when a test fails. */
    val log: File by lazy { File.createTempFile("followup-server", ".log").apply { deleteOnExit() } }

    @Synchronized
    fun ensureStarted(): TestServer {
        if (process?.isAlive == true) return this
        val bin = System.getProperty("followup.server")
            ?: error("system property followup.server (path of the followup-server binary) is not set")
        check(File(bin).canExecute()) { "$bin is not an executable: build it with cargo build -p followup-server" }
        val port = ServerSocket(0).use { it.localPort }
        val dir = Files.createTempDirectory("followup-server").toFile()
        dataDir = dir
        url = "http://127.0.0.1:$port"
        val p = ProcessBuilder(bin, "--listen", "127.0.0.1:$port", "--data-dir", dir.path, "--admin-token", ADMIN_TOKEN)
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.appendTo(log))
            .apply {
                environment()["RUST_LOG"] = "warn"
                // Every test client is 127.0.0.1: the per-address rate limits are tested in the
                // server's own tests, not here.
                environment()["FOLLOWUP_ENROL_PER_MINUTE"] = "100000"
                environment()["FOLLOWUP_ADMIN_PER_MINUTE"] = "100000"
            }
            .start()
        process = p
        Runtime.getRuntime().addShutdownHook(Thread { p.destroyForcibly() })
        // Wait (at most 20 s) for /health.
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20)
        while (true) {
            check(p.isAlive) { "followup-server exited with ${p.exitValue()}: ${log.readText().takeLast(2000)}" }
            val ok = runCatching { get("/health").statusCode() == 200 }.getOrDefault(false)
            if (ok) break
            check(System.nanoTime() < deadline) { "followup-server did not answer /health within 20 s" }
            Thread.sleep(50)
        }
        return this
    }

    @Synchronized
    fun stop() {
        process?.let { p ->
            p.destroy()
            if (!p.waitFor(5, TimeUnit.SECONDS)) p.destroyForcibly().waitFor(5, TimeUnit.SECONDS)
        }
        process = null
        dataDir?.deleteRecursively()
        dataDir = null
    }

    private fun get(path: String): HttpResponse<String> = http.send(
        HttpRequest.newBuilder(URI.create(url + path)).timeout(Duration.ofSeconds(5)).GET().build(),
        HttpResponse.BodyHandlers.ofString(),
    )

    private fun admin(method: String, path: String, json: String?): String {
        val req = HttpRequest.newBuilder(URI.create(url + path))
            .timeout(Duration.ofSeconds(10))
            .header("Authorization", "Bearer $ADMIN_TOKEN")
            .header("Content-Type", "application/json")
            .method(method, json?.let { HttpRequest.BodyPublishers.ofString(it) } ?: HttpRequest.BodyPublishers.noBody())
            .build()
        val resp = http.send(req, HttpResponse.BodyHandlers.ofString())
        check(resp.statusCode() in 200..299) { "$method $path -> ${resp.statusCode()}: ${resp.body()}" }
        return resp.body()
    }

    private fun field(json: String, name: String): String =
        Regex("\"$name\"\\s*:\\s*\"([^\"]*)\"").find(json)?.groupValues?.get(1)
            ?: error("no \"$name\" in $json")

    /** Creates a clinic; returns its id. */
    fun createClinic(name: String, country: String = "TH"): String =
        field(admin("POST", "/v1/admin/clinics", """{"name":"$name","country":"$country"}"""), "clinic")

    /** A one-time code enrolling a device of [clinicId]. */
    fun clinicDeviceCode(clinicId: String): String =
        field(admin("POST", "/v1/admin/enrolment-codes", """{"role":"clinic_device","clinic":"$clinicId"}"""), "code")

    /** A one-time code enrolling the phone of patient [patientId] (the registry must hold the patient). */
    fun patientDeviceCode(patientId: String): String =
        field(admin("POST", "/v1/admin/enrolment-codes", """{"role":"patient_device","patient":"$patientId"}"""), "code")

    /** Creates a user of [clinicId] (a nurse on the clinic's tablets); returns (user id, activation code). */
    fun createUser(clinicId: String, name: String): Pair<String, String> {
        val json = admin("POST", "/v1/admin/clinic-users", """{"clinic":"$clinicId","name":"$name"}""")
        return field(json, "user") to field(json, "activation_code")
    }

    /** Removes a clinic user: tablets drop them at their next sync. */
    fun removeUser(userId: String) {
        admin("POST", "/v1/admin/clinic-users/$userId/remove", null)
    }

    /** Revokes a device. */
    fun revoke(deviceId: String) {
        admin("POST", "/v1/admin/devices/$deviceId/revoke", null)
    }

    /** Registry staff escalate the case of [adverseEventId] with [note]; returns the case's state. */
    fun escalate(adverseEventId: String, note: String): String =
        field(admin("POST", "/v1/admin/cases/$adverseEventId/escalate", "{\"note\":\"$note\"}"), "state")

    /** Publishes a definition file (JSON) at the registry: devices receive it at their next sync. */
    fun publishDefinition(json: String) {
        admin("POST", "/v1/admin/definitions", json)
    }

    /** The registry's cases in [state], as the raw JSON answer. */
    fun casesJson(state: String): String = admin("GET", "/v1/admin/cases?state=$state", null)
}
