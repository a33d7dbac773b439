//! Caller identity, and the policy that decides whether a caller may sign.
//!
//! A signing service is a signing oracle: anyone who can reach it can make
//! signatures that verify. The caller's identity therefore comes from the
//! transport, never from the request: a Unix socket's peer credentials
//! (`SO_PEERCRED`), or a TCP peer address. A [`Policy`] maps identities to
//! the key names each caller may use and to an optional rate limit.

mod rate;
mod tls;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use tonic::Request;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo, UdsConnectInfo};

pub use rate::{RateLimit, TokenBucket};
pub use tls::{CertificateNames, certificate_names};

use crate::keys::KeyName;

/// Metric label for callers that match no configured entry.
pub const UNKNOWN_CALLER: &str = "unknown";
/// Metric label for local callers admitted by the default policy.
pub const LOCAL_CALLER: &str = "local";

/// A caller's identity, as the transport established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A process on this host, from the Unix socket's peer credentials.
    Unix {
        /// The peer's effective user ID.
        uid: u32,
        /// The peer's effective group ID.
        gid: u32,
    },
    /// A TCP peer without TLS.
    Tcp {
        /// The peer's address.
        addr: SocketAddr,
    },
    /// A TCP peer that presented a client certificate from the configured
    /// CA.
    Tls {
        /// The peer's address, when known.
        addr: Option<SocketAddr>,
        /// The names in the client certificate.
        names: CertificateNames,
    },
    /// The transport gave no identity.
    Unknown,
}

impl Identity {
    /// Reads the identity that the transport attached to a request.
    pub fn of<T>(request: &Request<T>) -> Self {
        if let Some(info) = request.extensions().get::<UdsConnectInfo>() {
            return match info.peer_cred {
                Some(cred) => Self::Unix {
                    uid: cred.uid(),
                    gid: cred.gid(),
                },
                None => Self::Unknown,
            };
        }
        if let Some(info) = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>() {
            // rustls verified the chain; the first certificate is the
            // client's own.
            let names = info
                .peer_certs()
                .and_then(|certs| certs.first().map(|cert| certificate_names(cert)))
                .unwrap_or_default();
            return Self::Tls {
                addr: info.get_ref().remote_addr(),
                names,
            };
        }
        match request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
        {
            Some(addr) => Self::Tcp { addr },
            None => Self::Unknown,
        }
    }

    /// Returns whether the caller runs on this host: a Unix socket peer or
    /// a loopback TCP peer.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Unix { .. } => true,
            Self::Tcp { addr } => addr.ip().is_loopback(),
            Self::Tls { addr, .. } => addr.is_some_and(|a| a.ip().is_loopback()),
            Self::Unknown => false,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix { uid, gid } => write!(f, "uid={uid} gid={gid}"),
            Self::Tcp { addr } => write!(f, "tcp={addr}"),
            Self::Tls { addr, names } => {
                f.write_str("tls")?;
                if let Some(addr) = addr {
                    write!(f, "={addr}")?;
                }
                if let Some(id) = &names.spiffe_id {
                    write!(f, " spiffe_id={id}")?;
                }
                if let Some(cn) = &names.common_name {
                    write!(f, " cn={cn:?}")?;
                }
                Ok(())
            }
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// The key names a caller may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyScope {
    /// Every configured key name, written `["*"]`.
    All,
    /// The listed names.
    Names(BTreeSet<KeyName>),
}

impl KeyScope {
    fn allows(&self, key: &KeyName) -> bool {
        match self {
            Self::All => true,
            Self::Names(names) => names.contains(key),
        }
    }
}

/// The identity that selects a configured caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// A Unix socket peer with this user ID.
    Uid(u32),
    /// A TLS client whose certificate has this SPIFFE ID.
    SpiffeId(String),
    /// A TLS client whose certificate has no SPIFFE ID and this subject
    /// common name.
    CommonName(String),
}

/// One configured caller: how to recognize it and what it may do.
#[derive(Clone, Debug, PartialEq)]
pub struct CallerRule {
    /// The caller's name, used in metrics and logs.
    pub name: String,
    /// The identity that selects the caller.
    pub selector: Selector,
    /// The key names the caller may use.
    pub keys: KeyScope,
    /// The caller's request rate limit, if any.
    pub rate: Option<RateLimit>,
}

/// The outcome of a policy check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed.
    Allowed {
        /// The caller's metric label.
        caller: String,
    },
    /// The caller may not use the key, or is not known at all.
    Denied {
        /// The caller's metric label.
        caller: String,
    },
    /// The caller is over its rate limit.
    RateLimited {
        /// The caller's metric label.
        caller: String,
    },
}

impl Decision {
    /// Returns the caller's metric label.
    pub fn caller(&self) -> &str {
        match self {
            Self::Allowed { caller } | Self::Denied { caller } | Self::RateLimited { caller } => {
                caller
            }
        }
    }

    /// Returns the outcome as a metric label value.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Allowed { .. } => "allowed",
            Self::Denied { .. } => "denied",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

/// The signing policy: which callers may use which keys, and how fast.
///
/// With no rules, every local caller (a Unix socket peer or a loopback TCP
/// peer) may use every key, and every other caller is denied. With rules,
/// only callers that match one may sign, and only with its keys.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<CallerRule>,
    buckets: HashMap<String, Mutex<TokenBucket>>,
}

impl Policy {
    /// Builds a policy from the configured rules.
    pub fn new(rules: Vec<CallerRule>) -> Self {
        let now = Instant::now();
        let buckets = rules
            .iter()
            .filter_map(|rule| {
                let limit = rule.rate?;
                Some((rule.name.clone(), Mutex::new(TokenBucket::new(limit, now))))
            })
            .collect();
        Self { rules, buckets }
    }

    /// Decides whether `identity` may sign with `key` at `now`.
    pub fn check(&self, identity: &Identity, key: &KeyName, now: Instant) -> Decision {
        self.check_many(identity, key, 1, now)
    }

    /// Decides whether `identity` may sign `count` digests with `key` at
    /// `now`. Each digest counts against the caller's rate, and a batch is
    /// admitted whole or not at all.
    pub fn check_many(
        &self,
        identity: &Identity,
        key: &KeyName,
        count: u32,
        now: Instant,
    ) -> Decision {
        if self.rules.is_empty() {
            return if identity.is_local() {
                Decision::Allowed {
                    caller: LOCAL_CALLER.to_owned(),
                }
            } else {
                Decision::Denied {
                    caller: UNKNOWN_CALLER.to_owned(),
                }
            };
        }
        let Some(rule) = self.rules.iter().find(|rule| rule.matches(identity)) else {
            return Decision::Denied {
                caller: UNKNOWN_CALLER.to_owned(),
            };
        };
        let caller = rule.name.clone();
        if !rule.keys.allows(key) {
            return Decision::Denied { caller };
        }
        let within_rate = self.buckets.get(&rule.name).is_none_or(|bucket| {
            bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .try_take_many(count, now)
        });
        if within_rate {
            Decision::Allowed { caller }
        } else {
            Decision::RateLimited { caller }
        }
    }

    /// Returns the metric labels that decisions can carry, so that every
    /// series exists from the start.
    pub fn caller_labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self.rules.iter().map(|r| r.name.clone()).collect();
        labels.push(UNKNOWN_CALLER.to_owned());
        if self.rules.is_empty() {
            labels.push(LOCAL_CALLER.to_owned());
        }
        labels
    }
}

impl CallerRule {
    /// Returns whether the rule selects `identity`. A SPIFFE ID, when the
    /// certificate has one, is the identity. The common name counts only
    /// without it, so that a certificate cannot
    /// claim one workload by its SPIFFE ID and another by its CN.
    fn matches(&self, identity: &Identity) -> bool {
        match (&self.selector, identity) {
            (Selector::Uid(want), Identity::Unix { uid, .. }) => uid == want,
            (Selector::SpiffeId(want), Identity::Tls { names, .. }) => {
                names.spiffe_id.as_ref() == Some(want)
            }
            (Selector::CommonName(want), Identity::Tls { names, .. }) => {
                names.spiffe_id.is_none() && names.common_name.as_ref() == Some(want)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(name: &str) -> KeyName {
        KeyName::parse(name).expect("valid key name")
    }

    fn unix(uid: u32) -> Identity {
        Identity::Unix { uid, gid: uid }
    }

    fn tcp(addr: &str) -> Identity {
        Identity::Tcp {
            addr: addr.parse().expect("valid address"),
        }
    }

    #[test]
    fn default_policy_allows_local_callers_only() {
        let policy = Policy::new(Vec::new());
        let now = Instant::now();
        let allowed = Decision::Allowed {
            caller: "local".into(),
        };
        let denied = Decision::Denied {
            caller: "unknown".into(),
        };
        assert_eq!(policy.check(&unix(1000), &key("default"), now), allowed);
        assert_eq!(
            policy.check(&tcp("127.0.0.1:4000"), &key("default"), now),
            allowed
        );
        assert_eq!(
            policy.check(&tcp("[::1]:4000"), &key("default"), now),
            allowed
        );
        assert_eq!(
            policy.check(&tcp("10.0.0.7:4000"), &key("default"), now),
            denied
        );
        assert_eq!(
            policy.check(&Identity::Unknown, &key("default"), now),
            denied
        );
    }

    #[test]
    fn rules_select_callers_and_keys() {
        let policy = Policy::new(vec![CallerRule {
            name: "fraud-model".into(),
            selector: Selector::Uid(1000),
            keys: KeyScope::Names([key("fraud")].into()),
            rate: None,
        }]);
        let now = Instant::now();
        assert_eq!(
            policy.check(&unix(1000), &key("fraud"), now),
            Decision::Allowed {
                caller: "fraud-model".into()
            }
        );
        assert_eq!(
            policy.check(&unix(1000), &key("default"), now),
            Decision::Denied {
                caller: "fraud-model".into()
            }
        );
        assert_eq!(
            policy.check(&unix(1001), &key("fraud"), now),
            Decision::Denied {
                caller: "unknown".into()
            }
        );
        // With rules, a loopback TCP peer has no identity to match.
        assert_eq!(
            policy.check(&tcp("127.0.0.1:4000"), &key("fraud"), now),
            Decision::Denied {
                caller: "unknown".into()
            }
        );
    }

    #[test]
    fn certificates_match_by_spiffe_id_before_common_name() {
        let tls = |spiffe_id: Option<&str>, cn: Option<&str>| Identity::Tls {
            addr: None,
            names: CertificateNames {
                spiffe_id: spiffe_id.map(str::to_owned),
                common_name: cn.map(str::to_owned),
            },
        };
        let rule = |name: &str, selector: Selector| CallerRule {
            name: name.into(),
            selector,
            keys: KeyScope::All,
            rate: None,
        };
        let policy = Policy::new(vec![
            rule(
                "scorer",
                Selector::SpiffeId("spiffe://example.org/scorer".into()),
            ),
            rule("batch", Selector::CommonName("batch-job".into())),
        ]);
        let now = Instant::now();
        let caller = |identity: &Identity| {
            let decision = policy.check(identity, &key("default"), now);
            (decision.caller().to_owned(), decision.outcome())
        };
        let scorer = tls(Some("spiffe://example.org/scorer"), Some("batch-job"));
        assert_eq!(caller(&scorer), ("scorer".into(), "allowed"));
        assert_eq!(
            caller(&tls(None, Some("batch-job"))),
            ("batch".into(), "allowed")
        );
        // A SPIFFE ID that matches no rule hides the common name.
        let other = tls(Some("spiffe://example.org/other"), Some("batch-job"));
        assert_eq!(caller(&other), ("unknown".into(), "denied"));
        assert_eq!(caller(&tls(None, None)), ("unknown".into(), "denied"));
        // A uid rule never matches a certificate, nor the reverse.
        assert_eq!(caller(&unix(0)), ("unknown".into(), "denied"));
    }

    #[test]
    fn rate_limits_apply_per_caller() {
        let policy = Policy::new(vec![CallerRule {
            name: "batch".into(),
            selector: Selector::Uid(7),
            keys: KeyScope::All,
            rate: Some(RateLimit {
                per_second: 2.0,
                burst: 2,
            }),
        }]);
        let start = Instant::now();
        let outcomes: Vec<&str> = (0..3)
            .map(|_| policy.check(&unix(7), &key("default"), start).outcome())
            .collect();
        assert_eq!(outcomes, ["allowed", "allowed", "rate_limited"]);
        // Half a second later one token has been refilled.
        let later = start + Duration::from_millis(500);
        assert_eq!(
            policy.check(&unix(7), &key("default"), later).outcome(),
            "allowed"
        );
        assert_eq!(
            policy.check(&unix(7), &key("default"), later).outcome(),
            "rate_limited"
        );
    }
}
