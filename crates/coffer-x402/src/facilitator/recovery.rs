//! Recovery of EOA signers with libsecp256k1.
//!
//! Recovering the public key is most of the offline cost of a verification. alloy's default
//! backend (k256, pure Rust) recovers about 4,200 signatures per second per core on Coffer's
//! reference machine; libsecp256k1, through the `secp256k1` crate, about 20,000. Coffer uses the
//! latter. The results are the same as alloy's for every input — valid, high-s, out of range,
//! unrecoverable — which a test checks against k256 on random signatures.

use alloy::primitives::{Address, B256, Signature};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, SECP256K1};

/// The address whose key made `signature` over `hash`, or `None` when it recovers to no key.
///
/// Like alloy's `Signature::recover_address_from_prehash`, a high-s signature recovers as its
/// low-s twin; the facilitator refuses high-s signatures before it gets here.
pub fn recover_signer(hash: &B256, signature: &Signature) -> Option<Address> {
    let signature = signature.normalized_s();
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&signature.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&signature.s().to_be_bytes::<32>());
    let recovery_id = if signature.v() {
        RecoveryId::One
    } else {
        RecoveryId::Zero
    };
    let recoverable = RecoverableSignature::from_compact(&compact, recovery_id).ok()?;
    let key = SECP256K1
        .recover_ecdsa(Message::from_digest(hash.0), &recoverable)
        .ok()?;
    Some(Address::from_raw_public_key(
        &key.serialize_uncompressed()[1..],
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use alloy::primitives::U256;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;

    use super::*;

    /// secp256k1's group order.
    const N: U256 = U256::from_limbs([
        0xBFD2_5E8C_D036_4141,
        0xBAAE_DCE6_AF48_A03B,
        0xFFFF_FFFF_FFFF_FFFE,
        0xFFFF_FFFF_FFFF_FFFF,
    ]);

    fn k256(hash: &B256, signature: &Signature) -> Option<Address> {
        signature.recover_address_from_prehash(hash).ok()
    }

    fn random_u256() -> U256 {
        U256::from_be_bytes(rand::random::<[u8; 32]>())
    }

    fn high_s_twin(signature: &Signature) -> Signature {
        Signature::new(signature.r(), N - signature.s(), !signature.v())
    }

    #[test]
    fn libsecp256k1_recovers_what_k256_recovers_for_valid_signatures_and_their_high_s_twins() {
        for _ in 0..200 {
            let key = PrivateKeySigner::random();
            let hash = B256::from(rand::random::<[u8; 32]>());
            let signature = key.sign_hash_sync(&hash).unwrap();
            assert_eq!(recover_signer(&hash, &signature), Some(key.address()));
            assert_eq!(recover_signer(&hash, &signature), k256(&hash, &signature));
            let twin = high_s_twin(&signature);
            assert!(twin.normalize_s().is_some(), "the twin is high-s");
            assert_eq!(recover_signer(&hash, &twin), k256(&hash, &twin));
            let other = B256::from(rand::random::<[u8; 32]>());
            assert_eq!(recover_signer(&other, &signature), k256(&other, &signature));
            assert_ne!(recover_signer(&other, &signature), Some(key.address()));
        }
    }

    #[test]
    fn libsecp256k1_agrees_with_k256_on_random_and_invalid_signatures() {
        let hash = B256::from(rand::random::<[u8; 32]>());
        let mut recovered = 0;
        for _ in 0..500 {
            let signature = Signature::new(random_u256(), random_u256(), rand::random());
            let ours = recover_signer(&hash, &signature);
            recovered += usize::from(ours.is_some());
            assert_eq!(ours, k256(&hash, &signature), "{signature:?}");
        }
        assert!(recovered > 0, "some random (r, s) pairs are recoverable");
        let edge = [
            U256::ZERO,
            U256::from(1),
            N - U256::from(1),
            N,
            N + U256::from(1),
            U256::MAX,
        ];
        for r in edge {
            for s in edge {
                for parity in [false, true] {
                    let signature = Signature::new(r, s, parity);
                    assert_eq!(
                        recover_signer(&hash, &signature),
                        k256(&hash, &signature),
                        "r={r} s={s} parity={parity}"
                    );
                }
            }
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic_parsing_or_recovery(
                hash in any::<[u8; 32]>(),
                bytes in prop::collection::vec(any::<u8>(), 0..80),
                r in any::<[u8; 32]>(),
                s in any::<[u8; 32]>(),
                parity in any::<bool>(),
            ) {
                let hash = B256::from(hash);
                if let Ok(signature) = Signature::try_from(&bytes[..]) {
                    prop_assert_eq!(recover_signer(&hash, &signature), k256(&hash, &signature));
                }
                let signature = Signature::new(U256::from_be_bytes(r), U256::from_be_bytes(s), parity);
                prop_assert_eq!(recover_signer(&hash, &signature), k256(&hash, &signature));
            }

            #[test]
            fn a_signature_or_hash_with_one_byte_changed_never_recovers_to_the_signer(
                hash in any::<[u8; 32]>(),
                position in 0usize..97,
                flip in 1u8..=255,
            ) {
                let key = PrivateKeySigner::random();
                let hash = B256::from(hash);
                let signature = key.sign_hash_sync(&hash).unwrap();
                let mut bytes = signature.as_bytes().to_vec();
                bytes.extend_from_slice(hash.as_slice());
                bytes[position] ^= flip;
                let mutated_hash = B256::from_slice(&bytes[65..]);
                match Signature::try_from(&bytes[..65]) {
                    // `v` has aliases (27 and 0 are the same parity): the same signature.
                    Ok(mutated) if mutated == signature && mutated_hash == hash => {}
                    Ok(mutated) => {
                        prop_assert_ne!(recover_signer(&mutated_hash, &mutated), Some(key.address()));
                    }
                    Err(_) => {}
                }
            }
        }
    }
}
