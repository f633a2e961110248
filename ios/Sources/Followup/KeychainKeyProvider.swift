import CryptoKit
import Foundation
import FollowupFFI
import Security

/// A `KeyProvider` that wraps the store's data key with AES-256-GCM under `key`.
/// Wrapped format (same as Android's `AesGcmKeyProvider`): `0x01 || nonce (12) || ciphertext || tag (16)`,
/// with `"followup-data-key-v1:<keyId>"` as associated data.
public class AESGCMKeyProvider: KeyProvider, @unchecked Sendable {
    private let key: SymmetricKey
    private let id: String

    public init(key: SymmetricKey, keyId: String) {
        self.key = key
        self.id = keyId
    }

    public func wrap(dataKey: Data) throws -> Data {
        do {
            let box = try AES.GCM.seal(dataKey, using: key, authenticating: aad)
            guard let combined = box.combined else {
                throw FollowupError.KeyProviderFailed(reason: "AES-GCM produced no combined output for key '\(id)'.")
            }
            return Data([1]) + combined
        } catch let e as FollowupError {
            throw e
        } catch {
            throw FollowupError.KeyProviderFailed(
                reason: "Could not wrap the data key with platform key '\(id)' (\(error)). Check the device's keychain.")
        }
    }

    public func unwrap(wrapped: Data) throws -> Data {
        guard wrapped.count >= 1 + 12 + 16, wrapped.first == 1 else {
            throw FollowupError.Tampered(
                reason: "The stored data key is malformed. Restore the store from the registry by syncing on a new install.")
        }
        do {
            let box = try AES.GCM.SealedBox(combined: wrapped.dropFirst())
            return try AES.GCM.open(box, using: key, authenticating: aad)
        } catch CryptoKitError.authenticationFailure {
            throw FollowupError.WrongKey(
                reason: "Platform key '\(id)' does not open this store's data key. Use the key the store was created with.")
        } catch {
            throw FollowupError.KeyProviderFailed(
                reason: "Could not unwrap the data key with platform key '\(id)' (\(error)). Check the device's keychain.")
        }
    }

    public func keyId() -> String { id }

    private var aad: Data { Data("followup-data-key-v1:\(id)".utf8) }
}

/// A `KeyProvider` whose wrapping key lives in the iOS Keychain: a random 256-bit key stored as a
/// generic password under `service`/`account`, readable only on this device after first unlock
/// (never synced to iCloud, never in backups that leave the device).
///
///     let keys = try KeychainKeyProvider.getOrCreate(account: "followup.store.v1")
///
/// Deleting the item (or erasing the device) makes the store unreadable by design: a new install
/// enrols again and pulls the records from the registry.
public final class KeychainKeyProvider: AESGCMKeyProvider, @unchecked Sendable {
    public static let defaultService = "org.followup.keys"

    public static func getOrCreate(
        account: String,
        service: String = defaultService,
        accessible: CFString = kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly
    ) throws -> KeychainKeyProvider {
        if let existing = try load(account: account, service: service) {
            return KeychainKeyProvider(key: SymmetricKey(data: existing), keyId: account)
        }
        let fresh = SymmetricKey(size: .bits256)
        let bytes = fresh.withUnsafeBytes { Data($0) }
        let add: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
            kSecAttrAccessible as String: accessible,
            kSecAttrSynchronizable as String: false,
            kSecValueData as String: bytes,
        ]
        let status = SecItemAdd(add as CFDictionary, nil)
        if status == errSecDuplicateItem, let raced = try load(account: account, service: service) {
            return KeychainKeyProvider(key: SymmetricKey(data: raced), keyId: account)
        }
        guard status == errSecSuccess else { throw keychainError("store", status) }
        return KeychainKeyProvider(key: fresh, keyId: account)
    }

    /// Deletes the key: every store it wraps becomes unreadable.
    public static func delete(account: String, service: String = defaultService) throws {
        let query: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
        ]
        let status = SecItemDelete(query as CFDictionary)
        guard status == errSecSuccess || status == errSecItemNotFound else { throw keychainError("delete", status) }
    }

    private static func load(account: String, service: String) throws -> Data? {
        let query: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
            kSecReturnData as String: true,
            kSecMatchLimit as String: kSecMatchLimitOne,
        ]
        var out: CFTypeRef?
        let status = SecItemCopyMatching(query as CFDictionary, &out)
        if status == errSecItemNotFound { return nil }
        guard status == errSecSuccess, let data = out as? Data, data.count == 32 else {
            throw keychainError("read", status)
        }
        return data
    }

    private static func keychainError(_ what: String, _ status: OSStatus) -> FollowupError {
        let text = SecCopyErrorMessageString(status, nil) as String? ?? "OSStatus \(status)"
        return .KeyProviderFailed(reason: "Could not \(what) the Followup key in the keychain (\(text)). Unlock the device and try again.")
    }
}
