// Builds the Followup AAR: the uniffi-generated Kotlin bindings, the idiomatic Kotlin layer and
// the Rust core compiled for arm64-v8a, armeabi-v7a and x86_64 with cargo-ndk.
//
//   ./gradlew assembleRelease          -> build/outputs/aar/followup-android-release.aar
//   ./gradlew publishToMavenLocal      -> org.followup:followup-android:<version>
//
// Needs: Android SDK (ANDROID_HOME) with NDK r26+ (ANDROID_NDK_HOME), Rust with the Android
// targets and cargo-ndk; see README.md.

import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.2.21" // same Kotlin as the JVM tests' kotlinc
    `maven-publish`
}

group = "org.followup"
version = "0.1.0"

/** Repository root: the Cargo workspace. */
val rustRoot: File = rootDir.parentFile
val rustAbis = listOf("arm64-v8a", "armeabi-v7a", "x86_64")
val minSdkVersion = 24
val rustJniLibs = layout.buildDirectory.dir("rustJniLibs")

android {
    namespace = "org.followup"
    compileSdk = 35

    defaultConfig {
        minSdk = minSdkVersion
        consumerProguardFiles("consumer-rules.pro")
        ndk { abiFilters += rustAbis }
    }

    sourceSets["main"].apply {
        // src/main/kotlin: generated bindings + the layer that also compiles on the JVM (tested by
        // android/jvm-test/run.sh). src/android/kotlin: pieces that need Android classes.
        java.srcDirs("src/main/kotlin", "src/android/kotlin")
        jniLibs.srcDir(rustJniLibs)
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    publishing {
        singleVariant("release") { withSourcesJar() }
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
        allWarningsAsErrors.set(true)
    }
}

dependencies {
    // uniffi's Kotlin bindings call the native library through JNA; the @aar ships JNA's own
    // libjnidispatch.so for every Android ABI (the plain jar only has desktop ones).
    implementation("net.java.dev.jna:jna:5.17.0@aar")
    // Suspend functions and Flow are part of the public API.
    api("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.8.0")
}

/** Cross-compiles followup-ffi for every ABI into build/rustJniLibs/<abi>/libfollowup_ffi.so. */
val cargoNdk by tasks.registering(Exec::class) {
    group = "build"
    description = "Builds libfollowup_ffi.so for ${rustAbis.joinToString()} with cargo-ndk"
    workingDir = rustRoot
    val args = mutableListOf("cargo", "ndk")
    rustAbis.forEach { args += listOf("-t", it) }
    args += listOf(
        "--platform", minSdkVersion.toString(),
        "-o", rustJniLibs.get().asFile.absolutePath,
        "build", "--release", "-p", "followup-ffi", "--lib",
    )
    commandLine(args)
    inputs.files(fileTree(rustRoot) {
        include("Cargo.toml", "Cargo.lock", "domain/**", "device/**", "bindings/**")
        exclude("**/target/**")
    })
    outputs.dir(rustJniLibs)
}

/** Fails when the committed generated Kotlin is stale (needs a host Rust toolchain). */
val checkBindings by tasks.registering(Exec::class) {
    group = "verification"
    description = "Checks src/main/kotlin/org/followup/ffi/followup_ffi.kt matches bindings/src"
    workingDir = rustRoot
    commandLine("scripts/bindings-gen.sh", "--check")
}

tasks.named("preBuild") { dependsOn(cargoNdk) }

publishing {
    publications {
        register<MavenPublication>("release") {
            artifactId = "followup-android"
            afterEvaluate { from(components["release"]) }
        }
    }
}
