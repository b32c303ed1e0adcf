//! A chain's RPC endpoints, tried in order with failover.

use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use coffer_core::Chain;

use crate::EvmError;

/// One endpoint: its provider and a printable URL.
#[derive(Debug, Clone)]
struct Endpoint {
    printable: String,
    provider: DynProvider,
}

/// The RPC endpoints configured for one chain.
#[derive(Debug, Clone)]
pub struct ChainRpc {
    chain: String,
    chain_id: u64,
    endpoints: Vec<Endpoint>,
}

/// What a readiness probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The endpoint that answered (credentials removed).
    pub endpoint: String,
    /// Its latest block number.
    pub block_number: u64,
}

impl ChainRpc {
    /// Builds providers for every configured URL of `chain`.
    ///
    /// # Errors
    /// [`EvmError::InvalidUrl`] for a URL that does not parse.
    pub fn new(chain: &Chain) -> Result<Self, EvmError> {
        let endpoints = chain
            .rpc_urls
            .iter()
            .map(|url| {
                let parsed = url
                    .parse()
                    .map_err(|_| EvmError::InvalidUrl(printable_url(url)))?;
                Ok(Endpoint {
                    printable: printable_url(url),
                    provider: ProviderBuilder::new().connect_http(parsed).erased(),
                })
            })
            .collect::<Result<_, EvmError>>()?;
        Ok(ChainRpc {
            chain: chain.key().to_owned(),
            chain_id: chain.chain_id,
            endpoints,
        })
    }

    /// The chain's key.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// How many endpoints there are.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Endpoint `index` (modulo the count) as `(printable URL, provider)`, for callers that
    /// rotate through endpoints on failure.
    pub fn endpoint(&self, index: usize) -> Option<(&str, &DynProvider)> {
        let count = self.endpoints.len();
        (count > 0).then(|| {
            let endpoint = &self.endpoints[index % count];
            (endpoint.printable.as_str(), &endpoint.provider)
        })
    }

    /// Asks each endpoint in turn for its chain id and latest block, returning the first that
    /// answers for the right chain within `timeout`.
    ///
    /// # Errors
    /// [`EvmError::WrongChain`] when an endpoint serves another chain (and none serves this
    /// one), [`EvmError::Unreachable`] when none answers.
    pub async fn probe(&self, timeout: Duration) -> Result<Probe, EvmError> {
        let mut last = EvmError::Unreachable {
            chain: self.chain.clone(),
            last: "no RPC URL configured".to_owned(),
        };
        for endpoint in &self.endpoints {
            let attempt = async {
                let chain_id = endpoint.provider.get_chain_id().await?;
                let block_number = endpoint.provider.get_block_number().await?;
                Ok::<_, EvmError>((chain_id, block_number))
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok((chain_id, block_number))) if chain_id == self.chain_id => {
                    return Ok(Probe {
                        endpoint: endpoint.printable.clone(),
                        block_number,
                    });
                }
                Ok(Ok((actual, _))) => {
                    last = EvmError::WrongChain {
                        chain: self.chain.clone(),
                        url: endpoint.printable.clone(),
                        expected: self.chain_id,
                        actual,
                    };
                }
                Ok(Err(error)) => {
                    tracing::warn!(chain = %self.chain, endpoint = %endpoint.printable, %error, "RPC endpoint failed");
                    last = EvmError::Unreachable {
                        chain: self.chain.clone(),
                        last: error.to_string(),
                    };
                }
                Err(_) => {
                    tracing::warn!(chain = %self.chain, endpoint = %endpoint.printable, "RPC endpoint timed out");
                    last = EvmError::Unreachable {
                        chain: self.chain.clone(),
                        last: format!("{} timed out after {timeout:?}", endpoint.printable),
                    };
                }
            }
        }
        Err(last)
    }
}

/// An RPC URL safe to log: scheme, host and port only, since providers put API keys in paths,
/// query strings and user info.
pub fn printable_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid url>".to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let hidden = rest.len() > authority.len() || authority.contains('@');
    format!("{scheme}://{host}{}", if hidden { "/…" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::printable_url;

    #[test]
    fn printable_urls_hide_keys_in_paths_and_user_info() {
        assert_eq!(
            printable_url("https://base-mainnet.g.alchemy.com/v2/SECRET"),
            "https://base-mainnet.g.alchemy.com/…"
        );
        assert_eq!(
            printable_url("https://user:pw@rpc.example:8545"),
            "https://rpc.example:8545/…"
        );
        assert_eq!(
            printable_url("http://127.0.0.1:8545"),
            "http://127.0.0.1:8545"
        );
        assert_eq!(printable_url("nonsense"), "<invalid url>");
    }
}
