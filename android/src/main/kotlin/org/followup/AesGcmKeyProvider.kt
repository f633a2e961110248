package org.followup

import java.nio.ByteBuffer
import java.security.GeneralSecurityException
import javax.crypto.AEADBadTagException
import javax.crypto.Cipher
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec
import org.followup.ffi.FollowupException
import org.followup.ffi.KeyProvider

/**
 * A [KeyProvider] that wraps the store's data key with AES-256-GCM under [key].
 *
 * On Android, pass a non-extractable Android Keystore key (see
 * `org.followup.android.AndroidKeystoreKeyProvider`); the key never leaves secure hardware and the
 * Keystore chooses each IV. On the JVM (tests, desktop tools) any `SecretKey` works.
 *
 * Wrapped format: `0x01 || iv (12 bytes) || ciphertext+tag`; the associated data binds it to
 * [keyId], so a blob wrapped under another alias fails with `WrongKey`.
 */
open class AesGcmKeyProvider(
    private val key: SecretKey,
    private val keyId: String,
) : KeyProvider {
    override fun wrap(dataKey: ByteArray): ByteArray {
        try {
            val cipher = Cipher.getInstance(TRANSFORMATION)
            cipher.init(Cipher.ENCRYPT_MODE, key) // provider picks a fresh random IV
            cipher.updateAAD(aad())
            val sealed = cipher.doFinal(dataKey)
            val iv = cipher.iv
            if (iv.size != IV_LEN) throw GeneralSecurityException("unexpected IV length ${iv.size}")
            return ByteBuffer.allocate(1 + IV_LEN + sealed.size).put(VERSION).put(iv).put(sealed).array()
        } catch (e: GeneralSecurityException) {
            throw FollowupException.KeyProviderFailed(
                "Could not wrap the data key with platform key '$keyId' ($e). Check the device's keystore.",
            )
        }
    }

    override fun unwrap(wrapped: ByteArray): ByteArray {
        if (wrapped.size < 1 + IV_LEN + TAG_BITS / 8 || wrapped[0] != VERSION) {
            throw FollowupException.Tampered(
                "The stored data key is malformed. Restore the store from the registry by syncing on a new install.",
            )
        }
        try {
            val cipher = Cipher.getInstance(TRANSFORMATION)
            cipher.init(Cipher.DECRYPT_MODE, key, GCMParameterSpec(TAG_BITS, wrapped, 1, IV_LEN))
            cipher.updateAAD(aad())
            return cipher.doFinal(wrapped, 1 + IV_LEN, wrapped.size - 1 - IV_LEN)
        } catch (e: AEADBadTagException) {
            throw FollowupException.WrongKey(
                "Platform key '$keyId' does not open this store's data key. Use the key the store was created with.",
            )
        } catch (e: GeneralSecurityException) {
            throw FollowupException.KeyProviderFailed(
                "Could not unwrap the data key with platform key '$keyId' ($e). Check the device's keystore.",
            )
        }
    }

    override fun keyId(): String = keyId

    private fun aad() = "followup-data-key-v1:$keyId".toByteArray(Charsets.UTF_8)

    private companion object {
        const val TRANSFORMATION = "AES/GCM/NoPadding"
        const val VERSION: Byte = 1
        const val IV_LEN = 12
        const val TAG_BITS = 128
    }
}
