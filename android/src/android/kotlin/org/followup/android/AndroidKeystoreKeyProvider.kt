package org.followup.android

import android.os.Build
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import java.security.KeyStore
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import org.followup.AesGcmKeyProvider

/**
 * A `KeyProvider` backed by the Android Keystore: an AES-256-GCM key under [alias] that is created
 * on first use, never leaves the Keystore (hardware-backed, StrongBox when asked and available) and
 * wraps the store's data key. Compiled only by the Gradle build (needs Android classes).
 *
 * ```
 * val keys = AndroidKeystoreKeyProvider.getOrCreate("followup.store.v1")
 * ```
 *
 * Losing the Keystore key (app data cleared, device reset) makes the store unreadable by design:
 * the registry holds the synced records, so a new install enrols again and pulls them.
 */
class AndroidKeystoreKeyProvider private constructor(key: SecretKey, alias: String) :
    AesGcmKeyProvider(key, alias) {

    companion object {
        private const val KEYSTORE = "AndroidKeyStore"

        /**
         * Loads the key under [alias], creating it if missing. [strongBox] asks for a StrongBox
         * secure element (API 28+); set [requireUnlockedDevice] so the key is usable only while the
         * device is unlocked (API 28+).
         */
        @JvmStatic
        @JvmOverloads
        fun getOrCreate(
            alias: String,
            strongBox: Boolean = false,
            requireUnlockedDevice: Boolean = false,
        ): AndroidKeystoreKeyProvider {
            val ks = KeyStore.getInstance(KEYSTORE).apply { load(null) }
            val existing = (ks.getEntry(alias, null) as? KeyStore.SecretKeyEntry)?.secretKey
            val key = existing ?: generate(alias, strongBox, requireUnlockedDevice)
            return AndroidKeystoreKeyProvider(key, alias)
        }

        /** Deletes the key under [alias]: every store it wraps becomes unreadable. */
        @JvmStatic
        fun delete(alias: String) {
            KeyStore.getInstance(KEYSTORE).apply { load(null) }.deleteEntry(alias)
        }

        private fun generate(alias: String, strongBox: Boolean, requireUnlocked: Boolean): SecretKey {
            val spec = KeyGenParameterSpec.Builder(
                alias,
                KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT,
            )
                .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                .setKeySize(256)
                // The Keystore generates every IV itself (AesGcmKeyProvider never supplies one).
                .setRandomizedEncryptionRequired(true)
                .apply {
                    if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
                        setIsStrongBoxBacked(strongBox)
                        setUnlockedDeviceRequired(requireUnlocked)
                    }
                }
                .build()
            return KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, KEYSTORE)
                .apply { init(spec) }
                .generateKey()
        }
    }
}
