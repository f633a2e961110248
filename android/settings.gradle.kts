// The Followup Android library as a standalone Gradle build (android/ is its root project).
// Apps either consume the AAR it publishes (./gradlew publishToMavenLocal) or include this build:
//   settings.gradle.kts of the app:  includeBuild("path/to/followup/android")
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "followup-android"
