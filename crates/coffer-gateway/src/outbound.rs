//! The outbound-request policy: where Coffer may send the requests merchants ask for.
//!
//! Merchants name URLs that Coffer calls later: their webhook endpoint, an order's
//! `webhook_url`, a GatePay order's `callbackUrl`. Left unchecked, anyone with an API key could
//! point Coffer at the network it runs in (`http://127.0.0.1:5432`, the cloud metadata service
//! at `169.254.169.254`, `http://10.0.0.7/admin`) and read the delivery log as a port scanner.
//!
//! By default the policy refuses every address that is not publicly routable ([`classify`]):
//! loopback, private (RFC 1918), link-local, shared (CGNAT), multicast, unspecified and "this
//! network", broadcast, reserved, documentation and benchmarking ranges, IPv6 unique-local,
//! every IPv6 address outside global unicast (`2000::/3`), and the IPv4-mapped,
//! IPv4-compatible, NAT64 and 6to4 forms of the refused IPv4 addresses. `localhost` and
//! `*.localhost` name this machine and are judged as `127.0.0.1`, never looked up. URLs must be
//! `http` or `https`, carry no user name or password, and be at most [`MAX_URL_LEN`] long.
//! The operator can allow host names ([`OutboundPolicy::with_allow_lists`], config
//! `[outbound] allow_hosts`, exact or `*.suffix`; an allowed name is called whatever it resolves
//! to) and networks (`allow_networks`, CIDR); `coffer dev` allows loopback
//! ([`OutboundPolicy::allowing_loopback`]).
//!
//! The policy is applied twice:
//!
//! - **When a URL is set** ([`OutboundPolicy::check_url`]): an IP-literal or localhost host is
//!   judged as written; a host name is resolved (bounded by [`CHECK_RESOLVE_TIMEOUT`]) and
//!   refused if any of its addresses is refused. A name that does not resolve (yet) is
//!   accepted: it cannot be connected to, and delivery judges it again.
//! - **When a request is sent** ([`OutboundPolicy::http_client`] and [`OutboundPolicy::admit`]):
//!   the HTTP client resolves names only through the policy, which refuses the connection if
//!   any resolved address is refused and otherwise hands the client exactly the addresses it
//!   checked, so a name that resolved to a public address at creation and to a private one now
//!   (DNS rebinding) is never connected to. IP-literal hosts never reach a resolver, so
//!   [`OutboundPolicy::admit`] judges them before a request is built. Redirects are not
//!   followed, and proxies from the environment are not used (a proxy would connect to an
//!   address Coffer never checked).
//!
//! A refusal at delivery is reported as [`Refused`] and nothing else: the delivery log says
//! "refused by the outbound policy" with no status code, whether the port behind it is open,
//! closed or filtered, since Coffer never connected.
//!
//! Paywall upstreams and chain RPC URLs are operator configuration, not merchant input, and
//! are not subject to this policy.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use url::{Host, Url};

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// How long checking a URL waits for its host name to resolve.
pub const CHECK_RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a delivery waits for its host name to resolve.
pub const DELIVERY_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an address is not publicly routable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// `0.0.0.0/8` ("this network") or `::`.
    Unspecified,
    /// `127.0.0.0/8` or `::1`: this machine.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT.
    SharedAddressSpace,
    /// `169.254.0.0/16` (cloud metadata services live here) or `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `fc00::/7`, IPv6 unique-local.
    UniqueLocal,
    /// Reserved or special-purpose: `240.0.0.0/4`, `192.0.0.0/24`, `198.18.0.0/15`,
    /// `192.88.99.0/24`, `2001::/23`, and IPv6 outside global unicast.
    Reserved,
}

impl AddressClass {
    /// "a loopback address", "a private address", …
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::SharedAddressSpace => "a carrier-grade NAT address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Documentation => "a documentation address",
            AddressClass::UniqueLocal => "a unique-local address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// IPv4 ranges that are not public, first match wins (the broadcast address before `240/4`).
const V4_RANGES: [(u32, u8, AddressClass); 16] = [
    (0x0000_0000, 8, AddressClass::Unspecified),
    (0x0A00_0000, 8, AddressClass::Private),
    (0x6440_0000, 10, AddressClass::SharedAddressSpace),
    (0x7F00_0000, 8, AddressClass::Loopback),
    (0xA9FE_0000, 16, AddressClass::LinkLocal),
    (0xAC10_0000, 12, AddressClass::Private),
    (0xC000_0000, 24, AddressClass::Reserved),
    (0xC000_0200, 24, AddressClass::Documentation),
    (0xC058_6300, 24, AddressClass::Reserved),
    (0xC0A8_0000, 16, AddressClass::Private),
    (0xC612_0000, 15, AddressClass::Reserved),
    (0xC633_6400, 24, AddressClass::Documentation),
    (0xCB00_7100, 24, AddressClass::Documentation),
    (0xE000_0000, 4, AddressClass::Multicast),
    (0xFFFF_FFFF, 32, AddressClass::Broadcast),
    (0xF000_0000, 4, AddressClass::Reserved),
];

/// IPv6 ranges that are not public (embedded IPv4 forms are handled before these).
const V6_RANGES: [(u128, u8, AddressClass); 6] = [
    (0xfe80 << 112, 10, AddressClass::LinkLocal),
    (0xfc00 << 112, 7, AddressClass::UniqueLocal),
    (0xff00 << 112, 8, AddressClass::Multicast),
    (0x2001_0db8 << 96, 32, AddressClass::Documentation),
    (0x3fff << 112, 20, AddressClass::Documentation),
    (0x2001 << 112, 23, AddressClass::Reserved),
];

fn in_v4(bits: u32, network: u32, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    bits & mask == network & mask
}

fn in_v6(bits: u128, network: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    bits & mask == network & mask
}

/// How an IPv6 address carries an IPv4 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedding {
    /// `::ffff:a.b.c.d`: a socket connects to the IPv4 address itself.
    Mapped,
    /// `64:ff9b::a.b.c.d` (NAT64) and `2002:aabb:ccdd::/48` (6to4): routed to the IPv4 address.
    Translated,
    /// `::a.b.c.d` (IPv4-compatible, deprecated) and `::ffff:0:a.b.c.d` (SIIT): not routable.
    Unroutable,
}

/// The IPv4 address inside an IPv6 one, with how it is carried.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, Embedding)> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from(u32::try_from(bits & 0xffff_ffff).ok()?);
    if in_v6(bits, 0xffff << 32, 96) {
        Some((low, Embedding::Mapped))
    } else if in_v6(bits, 0x0064_ff9b << 96, 96) {
        Some((low, Embedding::Translated))
    } else if in_v6(bits, 0x2002 << 112, 16) {
        let six_to_four = u32::try_from((bits >> 80) & 0xffff_ffff).ok()?;
        Some((Ipv4Addr::from(six_to_four), Embedding::Translated))
    } else if in_v6(bits, 0xffff << 48, 96) || (in_v6(bits, 0, 96) && bits > 1) {
        Some((low, Embedding::Unroutable))
    } else {
        None
    }
}

/// The class of an address that is not publicly routable; `None` for a public one.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let bits = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|(network, prefix, _)| in_v4(bits, *network, *prefix))
        .map(|(_, _, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    if ip == Ipv6Addr::UNSPECIFIED {
        return Some(AddressClass::Unspecified);
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Some(AddressClass::Loopback);
    }
    if let Some((v4, embedding)) = embedded_ipv4(ip) {
        return match (classify_v4(v4), embedding) {
            (Some(class), _) => Some(class),
            (None, Embedding::Unroutable) => Some(AddressClass::Reserved),
            (None, Embedding::Mapped | Embedding::Translated) => None,
        };
    }
    let bits = u128::from(ip);
    if let Some((_, _, class)) = V6_RANGES
        .iter()
        .find(|(network, prefix, _)| in_v6(bits, *network, *prefix))
    {
        return Some(*class);
    }
    // Only 2000::/3 is allocated for global unicast.
    (!in_v6(bits, 0x2000 << 112, 3)).then_some(AddressClass::Reserved)
}

/// Whether a host name is `localhost` or under it (RFC 6761); `name` is lowercase.
fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name == "localhost" || name.ends_with(".localhost")
}

/// The address a localhost name stands for.
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Looks host names up. The system resolver by default; tests stage answers with
/// [`StaticResolver`].
pub trait HostResolver: Send + Sync {
    /// Every address `host` resolves to.
    ///
    /// # Errors
    /// The lookup's I/O error (no such name, no answer, …).
    fn lookup(&self, host: &str) -> Lookup;
}

/// A pending lookup.
pub type Lookup = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// The operating system's resolver (`getaddrinfo`, through Tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl HostResolver for SystemResolver {
    fn lookup(&self, host: &str) -> Lookup {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|address| address.ip())
                .collect())
        })
    }
}

/// Answers from a fixed table: each name has a list of answers, handed out in turn, the last
/// one repeating. Names not in the table do not resolve. For tests, which stage DNS answers
/// (including ones that change between lookups) without a DNS server.
#[derive(Debug, Default)]
pub struct StaticResolver {
    answers: Mutex<HashMap<String, VecDeque<Vec<IpAddr>>>>,
    lookups: Mutex<HashMap<String, usize>>,
}

impl StaticResolver {
    /// A resolver that knows no names.
    pub fn new() -> Self {
        Self::default()
    }

    /// `host` always resolves to `addresses`.
    #[must_use]
    pub fn with(self, host: &str, addresses: &[IpAddr]) -> Self {
        self.with_answers(host, vec![addresses.to_vec()])
    }

    /// `host` resolves to each of `answers` in turn, then to the last one forever.
    #[must_use]
    pub fn with_answers(self, host: &str, answers: Vec<Vec<IpAddr>>) -> Self {
        lock(&self.answers).insert(host.to_ascii_lowercase(), answers.into());
        self
    }

    /// How many times `host` was looked up.
    pub fn lookups(&self, host: &str) -> usize {
        lock(&self.lookups)
            .get(&host.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl HostResolver for StaticResolver {
    fn lookup(&self, host: &str) -> Lookup {
        let host = host.to_ascii_lowercase();
        *lock(&self.lookups).entry(host.clone()).or_default() += 1;
        let answer = {
            let mut answers = lock(&self.answers);
            answers.get_mut(&host).and_then(|queue| {
                if queue.len() > 1 {
                    queue.pop_front()
                } else {
                    queue.front().cloned()
                }
            })
        };
        Box::pin(std::future::ready(answer.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")
        })))
    }
}

/// A host name the operator allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// This name only.
    Exact(String),
    /// Any name under this one (`*.hooks.internal`), not the name itself.
    Under(String),
}

impl HostPattern {
    fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        match self {
            HostPattern::Exact(host) => name == host,
            HostPattern::Under(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// An allow-list entry that does not parse, named by its list and position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{list}[{index}]: {reason}")]
pub struct AllowListError {
    /// `allow_hosts` or `allow_networks`.
    pub list: &'static str,
    /// The entry's position.
    pub index: usize,
    /// Why it does not parse.
    pub reason: String,
}

/// Why a URL may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// Longer than [`MAX_URL_LEN`].
    #[error("must be at most {MAX_URL_LEN} characters")]
    TooLong,
    /// Not a URL, or one with spaces or control characters.
    #[error("is not a valid URL")]
    Malformed,
    /// Not `http` or `https`.
    #[error("must be an http:// or https:// URL")]
    Scheme,
    /// Has a user name or password.
    #[error("must not contain a user name or password")]
    Credentials,
    /// Has no host.
    #[error("must name a host")]
    NoHost,
    /// The host is an address (or `localhost`) the policy refuses.
    #[error(
        "{host} is {class}; Coffer does not send requests to private networks unless the \
         operator allows them ([outbound] allow_hosts or allow_networks)"
    )]
    Address {
        /// The host as written.
        host: String,
        /// Why it is refused.
        class: AddressClass,
    },
    /// The host name resolves to an address the policy refuses.
    #[error(
        "{host} resolves to an address that is not public; Coffer does not send requests to \
         private networks unless the operator allows them ([outbound] allow_hosts or \
         allow_networks)"
    )]
    ResolvesPrivately {
        /// The host name.
        host: String,
    },
}

impl UrlRefusal {
    /// Whether the URL is well formed but goes where the policy forbids (as opposed to a
    /// malformed URL): `URL_NOT_ALLOWED` rather than `VALIDATION_ERROR`.
    pub fn is_forbidden_destination(&self) -> bool {
        matches!(
            self,
            UrlRefusal::Address { .. } | UrlRefusal::ResolvesPrivately { .. }
        )
    }
}

/// A request the policy refused to send. Deliberately says nothing more: the delivery log of a
/// refused target must read the same whatever is (or is not) listening there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("refused by the outbound policy")]
pub struct Refused;

impl Refused {
    /// Whether `error`, or anything in its chain of causes, is a policy refusal.
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(error) = next {
            if error.is::<Refused>() {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// What a URL's host is.
enum Target {
    Literal(IpAddr),
    Localhost(String),
    Name(String),
}

/// Where Coffer may send requests that merchants asked for. See the module documentation.
#[derive(Clone)]
pub struct OutboundPolicy {
    allow_loopback: bool,
    allow_hosts: Vec<HostPattern>,
    allow_networks: Vec<IpNet>,
    resolver: Arc<dyn HostResolver>,
}

impl std::fmt::Debug for OutboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundPolicy")
            .field("allow_loopback", &self.allow_loopback)
            .field("allow_hosts", &self.allow_hosts)
            .field("allow_networks", &self.allow_networks)
            .finish_non_exhaustive()
    }
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        Self::strict()
    }
}

impl OutboundPolicy {
    /// Public addresses only, names looked up by the system resolver.
    pub fn strict() -> Self {
        OutboundPolicy {
            allow_loopback: false,
            allow_hosts: Vec::new(),
            allow_networks: Vec::new(),
            resolver: Arc::new(SystemResolver),
        }
    }

    /// Public addresses and this machine (`127.0.0.0/8`, `::1`, `localhost`): `coffer dev`,
    /// whose webhook inbox is local, and tests with local endpoints.
    pub fn allowing_loopback() -> Self {
        Self::strict().with_loopback_allowed()
    }

    /// This policy, also allowing this machine.
    #[must_use]
    pub fn with_loopback_allowed(mut self) -> Self {
        self.allow_loopback = true;
        self
    }

    /// This policy, looking names up with `resolver`.
    #[must_use]
    pub fn with_resolver(mut self, resolver: Arc<dyn HostResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// This policy, also allowing the listed hosts and networks. A host is a name
    /// (`hooks.internal`, called whatever it resolves to), `*.` and a name (any name under it),
    /// or an IP address (the same as that address in `networks`). A network is CIDR
    /// (`10.1.0.0/16`, `fd00:1::/64`) or a single address.
    ///
    /// # Errors
    /// [`AllowListError`] naming the first entry that does not parse.
    pub fn with_allow_lists(
        mut self,
        hosts: &[String],
        networks: &[String],
    ) -> Result<Self, AllowListError> {
        for (index, entry) in hosts.iter().enumerate() {
            let invalid = |reason: &str| AllowListError {
                list: "allow_hosts",
                index,
                reason: format!("{entry:?} {reason}"),
            };
            let text = entry.trim().to_ascii_lowercase();
            let text = text.strip_suffix('.').unwrap_or(&text);
            let (under, name) = match text.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, text),
            };
            let bare = name.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>() {
                if under {
                    return Err(invalid("puts a wildcard on an IP address"));
                }
                self.allow_networks.push(IpNet::from(ip));
                continue;
            }
            match Host::parse(name) {
                Ok(Host::Domain(domain)) if !domain.is_empty() && !domain.contains('*') => {
                    self.allow_hosts.push(if under {
                        HostPattern::Under(domain)
                    } else {
                        HostPattern::Exact(domain)
                    });
                }
                Ok(Host::Ipv4(ip)) if !under => {
                    self.allow_networks.push(IpNet::from(IpAddr::V4(ip)))
                }
                _ => {
                    return Err(invalid("is not a host name, *.name or IP address"));
                }
            }
        }
        for (index, entry) in networks.iter().enumerate() {
            let text = entry.trim();
            let network = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| AllowListError {
                    list: "allow_networks",
                    index,
                    reason: format!("{entry:?} is not a network such as 10.1.0.0/16"),
                })?;
            self.allow_networks.push(network.trunc());
        }
        Ok(self)
    }

    /// Whether the policy allows connecting to `ip`; else why not.
    ///
    /// # Errors
    /// The [`AddressClass`] of a refused address.
    pub fn judge(&self, ip: IpAddr) -> Result<(), AddressClass> {
        let Some(class) = classify(ip) else {
            return Ok(());
        };
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(|(v4, _)| IpAddr::V4(v4)),
            IpAddr::V4(_) => None,
        };
        let listed = [Some(ip), embedded].into_iter().flatten().any(|candidate| {
            self.allow_networks
                .iter()
                .any(|net| net.contains(&candidate))
        });
        if listed || (self.allow_loopback && class == AddressClass::Loopback) {
            Ok(())
        } else {
            Err(class)
        }
    }

    fn allows_host(&self, name: &str) -> bool {
        self.allow_hosts.iter().any(|pattern| pattern.matches(name))
    }

    /// Parses `text` and checks everything that needs no lookup.
    fn parse(&self, text: &str) -> Result<(Url, Target), UrlRefusal> {
        if text.len() > MAX_URL_LEN {
            return Err(UrlRefusal::TooLong);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlRefusal::Malformed);
        }
        let url = Url::parse(text).map_err(|_| UrlRefusal::Malformed)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlRefusal::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::Credentials);
        }
        let target = match url.host() {
            None => return Err(UrlRefusal::NoHost),
            Some(Host::Ipv4(ip)) => Target::Literal(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Target::Literal(IpAddr::V6(ip)),
            Some(Host::Domain(name)) if is_localhost(name) => Target::Localhost(name.to_owned()),
            Some(Host::Domain(name)) => Target::Name(name.to_owned()),
        };
        Ok((url, target))
    }

    /// Judges a host that needs no lookup: an IP literal or a localhost name. `None` for a
    /// name that must be looked up.
    fn judge_without_lookup(&self, target: &Target) -> Option<Result<(), UrlRefusal>> {
        match target {
            Target::Literal(ip) => Some(self.judge(*ip).map_err(|class| UrlRefusal::Address {
                host: ip.to_string(),
                class,
            })),
            Target::Localhost(name) if self.allows_host(name) => Some(Ok(())),
            Target::Localhost(name) => {
                Some(self.judge(LOCALHOST).map_err(|class| UrlRefusal::Address {
                    host: name.clone(),
                    class,
                }))
            }
            Target::Name(_) => None,
        }
    }

    /// Checks a URL a merchant sets for Coffer to call later: well formed, `http(s)`, no
    /// credentials, and a host the policy allows. A host name is resolved (within
    /// [`CHECK_RESOLVE_TIMEOUT`]) and refused if any of its addresses is refused; a name that
    /// does not resolve is accepted, since delivery judges it again.
    ///
    /// # Errors
    /// [`UrlRefusal`] saying why.
    pub async fn check_url(&self, text: &str) -> Result<(), UrlRefusal> {
        let (_, target) = self.parse(text)?;
        if let Some(verdict) = self.judge_without_lookup(&target) {
            return verdict;
        }
        let Target::Name(name) = target else {
            return Ok(());
        };
        if self.allows_host(&name) {
            return Ok(());
        }
        match tokio::time::timeout(CHECK_RESOLVE_TIMEOUT, self.resolver.lookup(&name)).await {
            Ok(Ok(addresses)) if addresses.iter().any(|ip| self.judge(*ip).is_err()) => {
                Err(UrlRefusal::ResolvesPrivately { host: name })
            }
            _ => Ok(()),
        }
    }

    /// [`OutboundPolicy::check_url`] without the lookup: host names pass (they are judged when
    /// looked up later). For refusing what can be refused before anything is written.
    ///
    /// # Errors
    /// [`UrlRefusal`] saying why.
    pub fn check_url_without_lookup(&self, text: &str) -> Result<(), UrlRefusal> {
        let (_, target) = self.parse(text)?;
        self.judge_without_lookup(&target).unwrap_or(Ok(()))
    }

    /// Parses a stored URL for sending and judges an IP-literal or localhost host (which the
    /// client's resolver never sees). Host names are judged by the client's resolver when it
    /// connects ([`OutboundPolicy::http_client`]).
    ///
    /// # Errors
    /// [`Refused`] for a URL the policy does not allow (malformed ones included).
    pub fn admit(&self, text: &str) -> Result<Url, Refused> {
        let (url, target) = self.parse(text).map_err(|_| Refused)?;
        match self.judge_without_lookup(&target) {
            Some(Err(_)) => Err(Refused),
            _ => Ok(url),
        }
    }

    /// The addresses a client may connect to for `name`: all of them when every one is
    /// allowed (or the name is an allowed host); a refusal when any one is refused.
    async fn resolve_for_connection(
        &self,
        name: &str,
    ) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let name = name.to_ascii_lowercase();
        let allowed_host = self.allows_host(&name);
        if is_localhost(&name) {
            return if allowed_host || self.judge(LOCALHOST).is_ok() {
                Ok(vec![LOCALHOST])
            } else {
                Err(Box::new(Refused))
            };
        }
        let addresses = tokio::time::timeout(DELIVERY_RESOLVE_TIMEOUT, self.resolver.lookup(&name))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "name lookup timed out")
            })??;
        if addresses.is_empty() {
            return Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name has no addresses",
            )));
        }
        if !allowed_host && addresses.iter().any(|ip| self.judge(*ip).is_err()) {
            return Err(Box::new(Refused));
        }
        Ok(addresses)
    }

    /// A client builder that connects only where this policy allows: names resolve through
    /// the policy (every address checked, only checked addresses connected to), redirects are
    /// not followed, and no proxy is used. Requests must go through
    /// [`OutboundPolicy::admit`] first, which judges IP-literal hosts.
    pub fn http_client(self: &Arc<Self>) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(PolicyResolver(self.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
    }
}

/// The HTTP client's resolver: the policy's lookup, filtered.
struct PolicyResolver(Arc<OutboundPolicy>);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = policy.resolve_for_connection(&name).await?;
            let addresses: reqwest::dns::Addrs = Box::new(
                addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| panic!("{text}"))
    }

    fn policy(hosts: &[&str], networks: &[&str]) -> OutboundPolicy {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        OutboundPolicy::strict()
            .with_allow_lists(&owned(hosts), &owned(networks))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn host_of(url: &str) -> String {
        Url::parse(url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn every_class_of_ipv4_address_is_recognised() {
        use AddressClass::*;
        for (address, class) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("169.254.169.254", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
            ("192.0.0.8", Reserved),
            ("198.18.0.1", Reserved),
            ("198.19.255.255", Reserved),
            ("192.88.99.1", Reserved),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
        ] {
            assert_eq!(classify(ip(address)), Some(class), "{address}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "9.255.255.255",
            "11.0.0.0",
            "126.255.255.255",
            "128.0.0.0",
        ] {
            assert_eq!(classify(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn every_class_of_ipv6_address_is_recognised() {
        use AddressClass::*;
        for (address, class) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf:ffff::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd00::1", UniqueLocal),
            ("fdff:ffff::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("ff0e::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001::1", Reserved),
            ("2001:1ff::1", Reserved),
            ("fec0::1", Reserved),
            ("100::1", Reserved),
            ("64:ff9b:1::1", Reserved),
            ("4000::1", Reserved),
            ("1::1", Reserved),
        ] {
            assert_eq!(classify(ip(address)), Some(class), "{address}");
        }
        for public in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
            "2001:200::1",
        ] {
            assert_eq!(classify(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn ipv4_addresses_carried_in_ipv6_are_judged_as_the_ipv4_address() {
        use AddressClass::*;
        for (address, class) in [
            // IPv4-mapped
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:7f00:1", Loopback),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:100.64.0.1", SharedAddressSpace),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:224.0.0.1", Multicast),
            ("::ffff:255.255.255.255", Broadcast),
            // IPv4-compatible (deprecated): refused even for a public address
            ("::127.0.0.1", Loopback),
            ("::10.0.0.1", Private),
            ("::8.8.8.8", Reserved),
            // SIIT IPv4-translated
            ("::ffff:0:127.0.0.1", Loopback),
            ("::ffff:0:8.8.8.8", Reserved),
            // NAT64
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("64:ff9b::192.168.0.1", Private),
            // 6to4
            ("2002:7f00:1::1", Loopback),
            ("2002:a00:1::", Private),
            ("2002:a9fe:a9fe::1", LinkLocal),
            ("2002:c0a8:101::1", Private),
        ] {
            assert_eq!(classify(ip(address)), Some(class), "{address}");
        }
        for public in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"] {
            assert_eq!(classify(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn odd_ipv4_spellings_are_normalised_by_the_url_parser_and_refused() {
        for (url, normalised) in [
            ("http://2130706433/", "127.0.0.1"),
            ("http://0x7f000001/", "127.0.0.1"),
            ("http://0x7f.1/", "127.0.0.1"),
            ("http://127.1/", "127.0.0.1"),
            ("http://127.0.1/", "127.0.0.1"),
            ("http://0177.0.0.1/", "127.0.0.1"),
            ("http://017700000001/", "127.0.0.1"),
            ("http://127.0.0.1./", "127.0.0.1"),
            ("http://127.0.0.%31/", "127.0.0.1"),
            ("http://%31%32%37.0.0.1/", "127.0.0.1"),
            ("http://１２７.０.０.１/", "127.0.0.1"),
            ("http://0/", "0.0.0.0"),
            ("http://0x0/", "0.0.0.0"),
            ("http://169.254.43518/", "169.254.169.254"),
            ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
            ("http://2852039166/", "169.254.169.254"),
            ("http://10.1/", "10.0.0.1"),
            ("http://012.0.0.1/", "10.0.0.1"),
            ("http://[::ffff:127.0.0.1]/", "[::ffff:7f00:1]"),
            ("http://[0:0:0:0:0:ffff:7f00:1]/", "[::ffff:7f00:1]"),
            ("http://[::1]/", "[::1]"),
            ("http://[0000::1]/", "[::1]"),
            ("http://[::]/", "[::]"),
        ] {
            assert_eq!(host_of(url), normalised, "{url}");
            assert!(
                matches!(
                    OutboundPolicy::strict().parse(url),
                    Ok((_, Target::Literal(_)))
                ),
                "{url} is an address literal"
            );
            let refusal = OutboundPolicy::strict().admit(url);
            assert_eq!(refusal, Err(Refused), "{url}");
        }
    }

    #[tokio::test]
    async fn every_refused_form_is_refused_when_set() {
        let strict = OutboundPolicy::strict();
        for (url, class) in [
            ("http://127.0.0.1:8080/hook", AddressClass::Loopback),
            ("http://[::1]:8080/", AddressClass::Loopback),
            (
                "http://169.254.169.254/latest/meta-data",
                AddressClass::LinkLocal,
            ),
            ("http://10.0.0.1", AddressClass::Private),
            ("https://172.16.5.4/", AddressClass::Private),
            ("http://192.168.0.10/", AddressClass::Private),
            ("http://[::ffff:127.0.0.1]", AddressClass::Loopback),
            ("http://2130706433", AddressClass::Loopback),
            ("http://0x7f.1/", AddressClass::Loopback),
            ("http://127.1/", AddressClass::Loopback),
            ("http://localhost", AddressClass::Loopback),
            ("http://LOCALHOST:3000/", AddressClass::Loopback),
            ("http://localhost./", AddressClass::Loopback),
            ("http://api.localhost/", AddressClass::Loopback),
            ("http://100.64.0.1", AddressClass::SharedAddressSpace),
            ("http://[fd00::1]", AddressClass::UniqueLocal),
            ("http://[fe80::1]/", AddressClass::LinkLocal),
            ("http://224.0.0.1/", AddressClass::Multicast),
            ("http://[ff02::1]/", AddressClass::Multicast),
            ("http://0.0.0.0/", AddressClass::Unspecified),
            ("http://[::]/", AddressClass::Unspecified),
            ("http://255.255.255.255/", AddressClass::Broadcast),
            ("http://240.0.0.1/", AddressClass::Reserved),
            ("http://[64:ff9b::7f00:1]/", AddressClass::Loopback),
            ("http://[2002:a9fe:a9fe::]/", AddressClass::LinkLocal),
            ("http://[::10.0.0.1]/", AddressClass::Private),
        ] {
            match strict.check_url(url).await {
                Err(UrlRefusal::Address { class: refused, .. }) => {
                    assert_eq!(refused, class, "{url}");
                }
                other => panic!("{url}: {other:?}"),
            }
            assert_eq!(strict.admit(url), Err(Refused), "{url}");
        }
    }

    #[tokio::test]
    async fn malformed_urls_are_refused_for_what_they_are() {
        let strict = OutboundPolicy::strict();
        let long = format!("https://shop.example/{}", "a".repeat(MAX_URL_LEN));
        for (url, refusal) in [
            ("ftp://shop.example/", UrlRefusal::Scheme),
            ("file:///etc/passwd", UrlRefusal::Scheme),
            ("gopher://127.0.0.1:6379/_INFO", UrlRefusal::Scheme),
            ("javascript:alert(1)", UrlRefusal::Scheme),
            ("https://user:pass@shop.example/", UrlRefusal::Credentials),
            ("https://user@shop.example/", UrlRefusal::Credentials),
            ("https://shop.example/ hook", UrlRefusal::Malformed),
            ("https://shop.example/\nhook", UrlRefusal::Malformed),
            ("http://127.0.0.1\t/", UrlRefusal::Malformed),
            ("not a url", UrlRefusal::Malformed),
            ("http://", UrlRefusal::Malformed),
            ("http://1.2.3.4.5/", UrlRefusal::Malformed),
            (long.as_str(), UrlRefusal::TooLong),
        ] {
            assert_eq!(strict.check_url(url).await, Err(refusal), "{url}");
            assert_eq!(strict.admit(url), Err(Refused), "{url}");
        }
    }

    #[tokio::test]
    async fn public_addresses_and_names_that_do_not_resolve_are_accepted_when_set() {
        let strict = OutboundPolicy::strict().with_resolver(Arc::new(StaticResolver::new()));
        for url in [
            "https://8.8.8.8/hook",
            "http://[2606:4700:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
            "https://shop.example/hooks",
            "https://shop.example:8443/hooks?x=1",
        ] {
            assert_eq!(strict.check_url(url).await, Ok(()), "{url}");
            assert!(strict.admit(url).is_ok(), "{url}");
        }
    }

    #[tokio::test]
    async fn a_name_is_refused_when_any_of_its_addresses_is_refused() {
        let resolver = StaticResolver::new()
            .with("public.example", &[ip("93.184.216.34"), ip("2606:2800::1")])
            .with("mixed.example", &[ip("93.184.216.34"), ip("10.0.0.5")])
            .with("metadata.example", &[ip("169.254.169.254")])
            .with("mapped.example", &[ip("::ffff:127.0.0.1")]);
        let strict = OutboundPolicy::strict().with_resolver(Arc::new(resolver));
        assert_eq!(strict.check_url("https://public.example/").await, Ok(()));
        for host in ["mixed.example", "metadata.example", "mapped.example"] {
            assert_eq!(
                strict.check_url(&format!("https://{host}/hook")).await,
                Err(UrlRefusal::ResolvesPrivately {
                    host: host.to_owned()
                }),
                "{host}"
            );
            assert!(
                Refused::caused(
                    &*strict
                        .resolve_for_connection(host)
                        .await
                        .expect_err("refused at connection")
                ),
                "{host}"
            );
        }
        assert_eq!(
            strict
                .resolve_for_connection("public.example")
                .await
                .expect("public"),
            [ip("93.184.216.34"), ip("2606:2800::1")]
        );
    }

    #[tokio::test]
    async fn localhost_names_are_never_looked_up() {
        let resolver = Arc::new(StaticResolver::new().with("evil.localhost", &[ip("8.8.8.8")]));
        let strict = OutboundPolicy::strict().with_resolver(resolver.clone());
        assert!(strict.check_url("http://evil.localhost/").await.is_err());
        assert!(
            strict
                .resolve_for_connection("evil.localhost")
                .await
                .is_err()
        );
        let local = OutboundPolicy::allowing_loopback().with_resolver(resolver.clone());
        assert_eq!(
            local
                .resolve_for_connection("evil.localhost")
                .await
                .expect("loopback allowed"),
            [LOCALHOST]
        );
        assert_eq!(resolver.lookups("evil.localhost"), 0);
    }

    #[tokio::test]
    async fn allowing_loopback_allows_this_machine_and_nothing_else() {
        let local = OutboundPolicy::allowing_loopback();
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://127.8.9.10/",
            "http://[::1]:9000/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:9000/",
            "http://2130706433/",
        ] {
            assert_eq!(local.check_url(url).await, Ok(()), "{url}");
            assert!(local.admit(url).is_ok(), "{url}");
        }
        for url in [
            "http://10.0.0.1/",
            "http://169.254.169.254/",
            "http://[fd00::1]/",
            "http://0.0.0.0/",
        ] {
            assert!(local.check_url(url).await.is_err(), "{url}");
            assert_eq!(local.admit(url), Err(Refused), "{url}");
        }
    }

    #[tokio::test]
    async fn an_allowed_network_admits_exactly_its_addresses() {
        let policy = policy(&[], &["10.1.0.0/16", "fd00:1::/64", "192.168.7.7"]);
        for url in [
            "http://10.1.0.1/",
            "http://10.1.255.255:8080/",
            "http://[::ffff:10.1.2.3]/",
            "http://[fd00:1::5]/",
            "http://192.168.7.7/",
        ] {
            assert_eq!(policy.check_url(url).await, Ok(()), "{url}");
            assert!(policy.admit(url).is_ok(), "{url}");
        }
        for url in [
            "http://10.2.0.1/",
            "http://10.0.255.255/",
            "http://[fd00:2::5]/",
            "http://192.168.7.8/",
            "http://127.0.0.1/",
            "http://localhost/",
        ] {
            assert!(policy.check_url(url).await.is_err(), "{url}");
            assert_eq!(policy.admit(url), Err(Refused), "{url}");
        }
    }

    #[tokio::test]
    async fn an_allowed_host_is_called_whatever_it_resolves_to_and_its_neighbours_are_not() {
        let resolver = StaticResolver::new()
            .with("hooks.internal", &[ip("10.9.9.9")])
            .with("other.internal", &[ip("10.9.9.9")])
            .with("a.svc.internal", &[ip("10.8.8.8")])
            .with("svc.internal", &[ip("10.8.8.8")]);
        let policy = policy(&["Hooks.Internal.", "*.svc.internal", "10.7.7.7"], &[])
            .with_resolver(Arc::new(resolver));
        for url in [
            "http://hooks.internal:8080/",
            "http://hooks.internal./",
            "http://a.svc.internal/",
            "http://10.7.7.7/",
        ] {
            assert_eq!(policy.check_url(url).await, Ok(()), "{url}");
        }
        for url in [
            "http://other.internal/",
            "http://svc.internal/",
            "http://10.7.7.8/",
        ] {
            assert!(policy.check_url(url).await.is_err(), "{url}");
        }
        assert_eq!(
            policy
                .resolve_for_connection("hooks.internal")
                .await
                .expect("allowed"),
            [ip("10.9.9.9")]
        );
        assert!(
            policy
                .resolve_for_connection("other.internal")
                .await
                .is_err()
        );
    }

    #[test]
    fn a_bad_allow_list_entry_is_named() {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let error = |hosts: &[&str], networks: &[&str]| {
            OutboundPolicy::strict()
                .with_allow_lists(&owned(hosts), &owned(networks))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(error(&[], &["10.0.0.0/8", "10.1/16"]).starts_with("allow_networks[1]: "));
        assert!(error(&[], &["10.0.0.0/33"]).starts_with("allow_networks[0]: "));
        assert!(error(&["ok.example", "bad host"], &[]).starts_with("allow_hosts[1]: "));
        assert!(error(&["*.10.0.0.1"], &[]).starts_with("allow_hosts[0]: "));
        assert!(error(&["*"], &[]).starts_with("allow_hosts[0]: "));
        assert!(error(&[""], &[]).starts_with("allow_hosts[0]: "));
        assert_eq!(error(&["[::1]", "*.internal"], &["::1", "10.0.0.1/8"]), "");
    }

    #[tokio::test]
    async fn the_static_resolver_answers_in_turn_then_repeats_the_last() {
        let resolver = StaticResolver::new().with_answers(
            "rebind.example",
            vec![vec![ip("93.184.216.34")], vec![ip("127.0.0.1")]],
        );
        assert_eq!(
            resolver.lookup("rebind.example").await.expect("first"),
            [ip("93.184.216.34")]
        );
        for _ in 0..2 {
            assert_eq!(
                resolver.lookup("REBIND.example").await.expect("later"),
                [ip("127.0.0.1")]
            );
        }
        assert_eq!(resolver.lookups("rebind.example"), 3);
        assert!(resolver.lookup("unknown.example").await.is_err());
    }
}
