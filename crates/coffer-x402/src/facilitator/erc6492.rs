//! ERC-6492: signatures of smart wallets that are not deployed yet.
//!
//! A counterfactual wallet signs before it exists; its signature is wrapped as
//! `abi.encode(factory, factoryCalldata, innerSignature) ++ 0x6492…6492` (32 bytes of magic).
//! The facilitator unwraps it offline, and proves it on chain in one deployless `eth_call`
//! of [`Erc6492Check`] (Coffer's contract in `contracts/src/Erc6492Check.sol`, never deployed):
//! its constructor runs the factory call, requires code at the payer's address, asks the new
//! wallet (ERC-1271) about the inner signature, then runs the token's
//! `transferWithAuthorization` with it — so the inner signature is always checked, and nonce
//! and balance are proved by the same call. Nothing it does is kept.

#![allow(missing_docs, clippy::too_many_arguments)]

use alloy::primitives::{Address, B256, Bytes, U256, b256};
use alloy::sol;
use alloy::sol_types::SolValue;

/// The 32 bytes an ERC-6492 signature ends with.
pub const MAGIC: B256 = b256!("0x6492649264926492649264926492649264926492649264926492649264926492");

sol!(
    /// The deployless counterfactual check (see the module docs).
    Erc6492Check,
    "../../contracts/artifacts/Erc6492Check.json"
);

/// What an ERC-6492 signature says: how to deploy the wallet, and what it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erc6492Signature {
    /// The contract that deploys the wallet.
    pub factory: Address,
    /// The call to `factory` that deploys it.
    pub factory_calldata: Bytes,
    /// The wallet's own (ERC-1271) signature.
    pub inner: Bytes,
}

/// Unwraps `signature` when it ends with the ERC-6492 magic; `None` when it does not.
///
/// # Errors
/// A message when the magic is there but the rest is not `(address, bytes, bytes)`.
pub fn unwrap(signature: &[u8]) -> Option<Result<Erc6492Signature, String>> {
    let body = signature.strip_suffix(MAGIC.as_slice())?;
    Some(
        <(Address, Bytes, Bytes)>::abi_decode_params(body)
            .map_err(|error| format!("the ERC-6492 wrapper does not decode: {error}"))
            .and_then(|(factory, factory_calldata, inner)| {
                if inner.is_empty() {
                    return Err("the ERC-6492 wrapper holds no inner signature".to_owned());
                }
                Ok(Erc6492Signature {
                    factory,
                    factory_calldata,
                    inner,
                })
            }),
    )
}

/// Wraps an inner signature (for tests and clients).
pub fn wrap(factory: Address, factory_calldata: Bytes, inner: Bytes) -> Bytes {
    let mut wrapped = (factory, factory_calldata, inner).abi_encode_params();
    wrapped.extend_from_slice(MAGIC.as_slice());
    wrapped.into()
}

/// The outcome of the deployless check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Deployed, vouched for, transferred.
    Valid,
    /// The factory call reverted (its revert data).
    FactoryFailed(Bytes),
    /// The factory call left no code at the payer's address.
    NotDeployed,
    /// The wallet did not vouch for the inner signature.
    SignatureRejected,
    /// `transferWithAuthorization` reverted (its revert data).
    TransferFailed(Bytes),
}

/// The creation code of the deployless check for one payment.
pub fn check_code(
    wallet: Address,
    signature: &Erc6492Signature,
    digest: B256,
    token: Address,
    transfer_calldata: Bytes,
) -> Bytes {
    let arguments = (
        wallet,
        signature.factory,
        signature.factory_calldata.clone(),
        digest,
        signature.inner.clone(),
        token,
        transfer_calldata,
    )
        .abi_encode_params();
    [Erc6492Check::BYTECODE.as_ref(), arguments.as_slice()]
        .concat()
        .into()
}

/// Reads the deployless check's output.
///
/// # Errors
/// A message when the output is not `(uint256, bytes)` with a known outcome.
pub fn read_outcome(output: &[u8]) -> Result<CheckOutcome, String> {
    let (code, data) = <(U256, Bytes)>::abi_decode_params(output)
        .map_err(|error| format!("unexpected output of the ERC-6492 check: {error}"))?;
    match u64::try_from(code).unwrap_or(u64::MAX) {
        0 => Ok(CheckOutcome::Valid),
        1 => Ok(CheckOutcome::FactoryFailed(data)),
        2 => Ok(CheckOutcome::NotDeployed),
        3 => Ok(CheckOutcome::SignatureRejected),
        4 => Ok(CheckOutcome::TransferFailed(data)),
        other => Err(format!("unknown outcome {other} of the ERC-6492 check")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_wrapped_signature_unwraps_to_its_parts_and_others_are_not_wrapped() {
        let factory = Address::repeat_byte(0xfa);
        let wrapped = wrap(
            factory,
            Bytes::from(vec![1, 2, 3]),
            Bytes::from(vec![7; 65]),
        );
        assert!(wrapped.ends_with(MAGIC.as_slice()));
        assert_eq!(
            unwrap(&wrapped).unwrap().unwrap(),
            Erc6492Signature {
                factory,
                factory_calldata: Bytes::from(vec![1, 2, 3]),
                inner: Bytes::from(vec![7; 65]),
            }
        );
        assert_eq!(unwrap(&[7; 65]), None);
        assert_eq!(unwrap(&[]), None);
    }

    #[test]
    fn a_magic_suffix_on_garbage_is_an_error_not_a_signature() {
        assert!(unwrap(MAGIC.as_slice()).unwrap().is_err());
        let mut garbage = vec![0xab; 40];
        garbage.extend_from_slice(MAGIC.as_slice());
        assert!(unwrap(&garbage).unwrap().is_err());
        let empty_inner = wrap(Address::ZERO, Bytes::new(), Bytes::new());
        assert!(unwrap(&empty_inner).unwrap().is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(any::<u8>(), 0..max)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_with_or_without_the_magic_never_panic(
                body in bytes(600),
                words in prop::collection::vec(any::<[u8; 32]>(), 0..8),
            ) {
                prop_assert_eq!(unwrap(&body).is_some(), body.ends_with(MAGIC.as_slice()));
                let mut wrapped = body.clone();
                wrapped.extend_from_slice(MAGIC.as_slice());
                prop_assert!(unwrap(&wrapped).is_some());
                // ABI words with hostile offsets and lengths (u64::MAX, past the end, …).
                let mut words: Vec<u8> = words.concat();
                words.extend_from_slice(MAGIC.as_slice());
                let _ = unwrap(&words);
                let _ = read_outcome(&body);
            }

            #[test]
            fn a_wrapped_signature_unwraps_to_its_parts(
                factory in any::<[u8; 20]>(),
                calldata in bytes(300),
                inner in prop::collection::vec(any::<u8>(), 1..300),
            ) {
                let factory = Address::from(factory);
                let wrapped = wrap(factory, calldata.clone().into(), inner.clone().into());
                prop_assert_eq!(
                    unwrap(&wrapped),
                    Some(Ok(Erc6492Signature {
                        factory,
                        factory_calldata: calldata.into(),
                        inner: inner.into(),
                    }))
                );
            }

            #[test]
            fn a_wrapped_signature_with_one_byte_changed_never_unwraps_to_the_original(
                calldata in bytes(100),
                inner in prop::collection::vec(any::<u8>(), 1..100),
                position in any::<prop::sample::Index>(),
                flip in 1u8..=255,
            ) {
                let original = Erc6492Signature {
                    factory: Address::repeat_byte(0xfa),
                    factory_calldata: calldata.into(),
                    inner: inner.into(),
                };
                let wrapped = wrap(
                    original.factory,
                    original.factory_calldata.clone(),
                    original.inner.clone(),
                );
                let mut mutated = wrapped.to_vec();
                let at = position.index(mutated.len());
                mutated[at] ^= flip;
                if unwrap(&mutated) == Some(Ok(original.clone())) {
                    // The same parts: only a byte the ABI decoder ignores changed (an
                    // address word's upper bytes, the zero padding after a `bytes`); the
                    // wallet's signature inside is untouched, and only it is ever checked.
                    let padded = |len: usize| len.div_ceil(32) * 32;
                    let calldata = original.factory_calldata.len();
                    let inner = original.inner.len();
                    let inner_data = 96 + 32 + padded(calldata) + 32;
                    let ignored = at < 12
                        || (128 + calldata..128 + padded(calldata)).contains(&at)
                        || (inner_data + inner..inner_data + padded(inner)).contains(&at);
                    prop_assert!(ignored, "byte {} of {}", at, mutated.len());
                }
            }
        }
    }
}
