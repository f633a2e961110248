import CryptoKit
import Foundation
import XCTest
import Followup
import FollowupFFI

// PHASE 1: mirrors android/src/jvmTest (PreviewTests + LayerTests) over the preview surface
// (bindings/src/preview.rs). Phase 2 replaces it with the field-day scenario against `Device`.

private func expectedDigest(_ passphrase: String, _ iterations: Int) -> String {
    var h = Data(SHA256.hash(data: Data(passphrase.utf8)))
    for _ in 0..<iterations { h = Data(SHA256.hash(data: h)) }
    return h.map { String(format: "%02x", $0) }.joined()
}

private final class Collector: SyncProgressListener, @unchecked Sendable {
    private let lock = NSLock()
    private var items: [SyncProgress] = []
    var onEach: ((SyncProgress) -> Void)?
    var seen: [SyncProgress] { lock.lock(); defer { lock.unlock() }; return items }
    func onProgress(progress: SyncProgress) {
        lock.lock(); items.append(progress); lock.unlock()
        onEach?(progress)
    }
}

private struct ListenerBug: Error {}

private final class ThrowingListener: SyncProgressListener, @unchecked Sendable {
    func onProgress(progress: SyncProgress) throws { throw ListenerBug() }
}

private final class CountingKeyProvider: KeyProvider, @unchecked Sendable {
    let inner: KeyProvider
    var wraps = 0
    var unwraps = 0
    init(_ inner: KeyProvider) { self.inner = inner }
    func wrap(dataKey: Data) throws -> Data { wraps += 1; return try inner.wrap(dataKey: dataKey) }
    func unwrap(wrapped: Data) throws -> Data { unwraps += 1; return try inner.unwrap(wrapped: wrapped) }
    func keyId() -> String { inner.keyId() }
}

private final class MixedKeyProvider: KeyProvider, @unchecked Sendable {
    let a = AESGCMKeyProvider(key: SymmetricKey(size: .bits256), keyId: "k")
    let b = AESGCMKeyProvider(key: SymmetricKey(size: .bits256), keyId: "k")
    func wrap(dataKey: Data) throws -> Data { try a.wrap(dataKey: dataKey) }
    func unwrap(wrapped: Data) throws -> Data { try b.unwrap(wrapped: wrapped) }
    func keyId() -> String { "k" }
}

private struct KeystoreLocked: Error {}

private final class BrokenKeyProvider: KeyProvider, @unchecked Sendable {
    func wrap(dataKey: Data) throws -> Data { throw KeystoreLocked() }
    func unwrap(wrapped: Data) throws -> Data { wrapped }
    func keyId() -> String { "broken" }
}

final class PreviewTests: XCTestCase {
    func testCoreVersion() {
        XCTAssertNotNil(coreVersion().range(of: #"^\d+\.\d+\.\d+"#, options: .regularExpression))
    }

    func testAsyncCallReturnsTheRightDigest() async throws {
        let out = try await previewDeriveCheck(passphrase: "correct horse", iterations: 25_000, listener: nil, cancel: nil)
        XCTAssertEqual(out, expectedDigest("correct horse", 25_000))
    }

    func testProgressCallbacksArriveInOrder() async throws {
        let c = Collector()
        _ = try await previewDeriveCheck(passphrase: "pw", iterations: 35_000, listener: c, cancel: nil)
        XCTAssertEqual(c.seen.map(\.done), [0, 10_000, 20_000, 30_000, 35_000, 35_000])
        XCTAssertEqual(c.seen.last?.stage, .finished)
    }

    func testThrowingListenerDoesNotBreakTheOperation() async throws {
        let out = try await previewDeriveCheck(passphrase: "pw", iterations: 10, listener: ThrowingListener(), cancel: nil)
        XCTAssertEqual(out, expectedDigest("pw", 10))
    }

    func testCancellationHandleStopsTheOperation() async {
        let handle = CancellationHandle()
        let c = Collector()
        c.onEach = { if $0.done >= 20_000 { handle.cancel() } }
        do {
            _ = try await previewDeriveCheck(passphrase: "pw", iterations: 50_000_000, listener: c, cancel: handle)
            XCTFail("expected Cancelled")
        } catch let e as FollowupError {
            guard case .Cancelled = e else { return XCTFail("\(e)") }
            XCTAssertTrue(e.userMessage.contains("cancelled"))
        } catch { XCTFail("\(error)") }
    }

    func testAsyncErrorIsAFollowupError() async {
        do {
            _ = try await previewDeriveCheck(passphrase: "", iterations: 1, listener: nil, cancel: nil)
            XCTFail("expected InvalidInput")
        } catch let e as FollowupError {
            XCTAssertEqual(e, .InvalidInput(reason: "The passphrase is empty. Fix the argument and call again."))
        } catch { XCTFail("\(error)") }
    }

    func testSwiftKeyProviderIsCalledFromRust() throws {
        let keys = CountingKeyProvider(AESGCMKeyProvider(key: SymmetricKey(size: .bits256), keyId: "test-key-1"))
        XCTAssertEqual(try previewKeyProviderRoundtrip(provider: keys), "test-key-1")
        XCTAssertEqual(keys.wraps, 1)
        XCTAssertEqual(keys.unwraps, 1)
    }

    func testWrongKeyCrossesRustAndBack() {
        XCTAssertThrowsError(try previewKeyProviderRoundtrip(provider: MixedKeyProvider())) { error in
            guard case .WrongKey? = error as? FollowupError else { return XCTFail("\(error)") }
        }
    }

    func testUnexpectedSwiftErrorArrivesAsKeyProviderFailed() {
        XCTAssertThrowsError(try previewKeyProviderRoundtrip(provider: BrokenKeyProvider())) { error in
            guard case .KeyProviderFailed? = error as? FollowupError else { return XCTFail("\(error)") }
        }
    }

    func testValidationErrorCarriesItemProblems() throws {
        XCTAssertThrowsError(try previewValidate(answers: ["pain": "12", "fever": "maybe"])) { error in
            guard let e = error as? FollowupError, case let .ValidationFailed(_, problems) = e else {
                return XCTFail("\(error)")
            }
            XCTAssertEqual(problems.map(\.itemId), ["pain", "fever"])
            XCTAssertEqual(problems.map(\.code), ["out_of_range", "wrong_type"])
            XCTAssertEqual(e.itemProblems["pain"]?.first?.message, "must be between 0 and 10")
            XCTAssertTrue(e.userMessage.contains("2 answers need attention"))
        }
        try previewValidate(answers: ["pain": "3", "fever": "false"])
    }
}

final class LayerTests: XCTestCase {
    func testProgressStreamYieldsProgressThenResult() async throws {
        var done: [UInt64] = []
        var result: String?
        for try await event in progressStream({ l, c in
            try await previewDeriveCheck(passphrase: "pw", iterations: 20_000, listener: l, cancel: c)
        }) {
            switch event {
            case let .progress(p): done.append(p.done)
            case let .done(r): result = r
            }
        }
        XCTAssertEqual(done, [0, 10_000, 20_000, 20_000])
        XCTAssertEqual(result?.count, 64)
    }

    func testProgressStreamRethrows() async {
        do {
            for try await _ in progressStream({ l, c in
                try await previewDeriveCheck(passphrase: "", iterations: 1, listener: l, cancel: c)
            }) {}
            XCTFail("expected InvalidInput")
        } catch let e as FollowupError {
            guard case .InvalidInput = e else { return XCTFail("\(e)") }
        } catch { XCTFail("\(error)") }
    }

    func testAESGCMKeyProviderRejectsOtherKeyIdAndTampering() throws {
        let key = SymmetricKey(size: .bits256)
        let a = AESGCMKeyProvider(key: key, keyId: "alias-a")
        let data = Data((0..<32).map { UInt8($0) })
        var wrapped = try a.wrap(dataKey: data)
        XCTAssertEqual(wrapped.count, 1 + 12 + 32 + 16)
        XCTAssertEqual(try a.unwrap(wrapped: wrapped), data)
        XCTAssertThrowsError(try AESGCMKeyProvider(key: key, keyId: "alias-b").unwrap(wrapped: wrapped))
        wrapped[20] ^= 1
        XCTAssertThrowsError(try a.unwrap(wrapped: wrapped)) { error in
            guard case .WrongKey? = error as? FollowupError else { return XCTFail("\(error)") }
        }
    }

    func testKeychainKeyProviderRoundTrip() throws {
        let account = "followup.test.\(UUID().uuidString)"
        let keys: KeychainKeyProvider
        do {
            keys = try KeychainKeyProvider.getOrCreate(account: account)
        } catch {
            throw XCTSkip("no usable keychain in this test environment: \(error)")
        }
        defer { try? KeychainKeyProvider.delete(account: account) }
        XCTAssertEqual(try previewKeyProviderRoundtrip(provider: keys), account)
        // The same account yields the same key: a blob wrapped before still opens.
        let blob = try keys.wrap(dataKey: Data(repeating: 7, count: 32))
        XCTAssertEqual(try KeychainKeyProvider.getOrCreate(account: account).unwrap(wrapped: blob), Data(repeating: 7, count: 32))
    }
}
