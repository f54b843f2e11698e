//! Where webhooks may go. A receiver's URL is the admin's to choose, but the service must not
//! become a way into the network it runs in: link-local and cloud metadata addresses are
//! always refused, private and loopback ranges only when the configuration allows them, and
//! the check is made on the address actually connected to (a name that resolved to a public
//! address when the receiver was saved may resolve elsewhere later). Redirects are not
//! followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Which address ranges webhooks may reach besides public ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 (`webhook_allow_private`).
    pub allow_private: bool,
    /// 127/8 and ::1 (`webhook_allow_loopback`).
    pub allow_loopback: bool,
}

impl EgressPolicy {
    /// Why `ip` may not be reached, or `None` when it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => self.refuses_v4(v4),
            IpAddr::V6(v6) => self.refuses_v6(v6),
        }
    }

    fn refuses_v4(&self, ip: Ipv4Addr) -> Option<&'static str> {
        let [a, b, ..] = ip.octets();
        if ip.is_link_local() {
            return Some("a link-local address (169.254.0.0/16, where cloud metadata services answer)");
        }
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 {
            return Some("not a unicast host address");
        }
        if ip.is_loopback() {
            return (!self.allow_loopback).then_some("a loopback address (allow with webhook_allow_loopback)");
        }
        let shared = a == 100 && (64..128).contains(&b);
        if ip.is_private() || shared {
            return (!self.allow_private).then_some("a private address (allow with webhook_allow_private)");
        }
        None
    }

    fn refuses_v6(&self, ip: Ipv6Addr) -> Option<&'static str> {
        let first = ip.segments()[0];
        if first & 0xffc0 == 0xfe80 {
            return Some("a link-local address (fe80::/10)");
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return Some("not a unicast host address");
        }
        if ip.is_loopback() {
            return (!self.allow_loopback).then_some("a loopback address (allow with webhook_allow_loopback)");
        }
        // Unique local addresses, among them the fd00:ec2::254 metadata service of one cloud.
        if first & 0xfe00 == 0xfc00 {
            if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
                return Some("a cloud metadata address");
            }
            return (!self.allow_private).then_some("a private address (allow with webhook_allow_private)");
        }
        None
    }

    /// Checks a URL whose host is an address literal (names are checked when connecting).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        let Some(host) = url.host_str() else {
            return Err("the URL has no host".into());
        };
        let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else {
            return Ok(());
        };
        match self.refuses(ip) {
            Some(why) => Err(format!("{ip} is {why}")),
            None => Ok(()),
        }
    }

    /// An HTTP client for webhooks under this policy: no redirects, and names resolved through
    /// [`GuardedResolver`], so every address connected to is checked.
    pub fn client(&self, timeout: std::time::Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver { policy: *self }))
            .build()
            .unwrap_or_default()
    }
}

/// Resolves names with the system resolver and keeps only the addresses the policy allows;
/// a name with none left fails to resolve, naming what it resolved to.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: EgressPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => found.collect(),
                Err(e) => return Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            };
            let mut refused = Vec::new();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.refuses(a.ip()) {
                    Some(why) => {
                        refused.push(format!("{} is {why}", a.ip()));
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why = if refused.is_empty() { format!("{host} resolved to no address") } else { format!("{host}: {}", refused.join("; ")) };
                return Err(Box::new(Refused(why)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok::<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>>(Box::new(allowed.into_iter()))
        })
    }
}

/// A webhook address the policy refuses.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "webhook address refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn link_local_and_metadata_are_always_refused() {
        let open = EgressPolicy { allow_private: true, allow_loopback: true };
        for text in ["169.254.169.254", "169.254.0.1", "fe80::1", "::ffff:169.254.169.254", "fd00:ec2::254", "0.0.0.0", "::", "224.0.0.1"] {
            assert!(open.refuses(ip(text)).is_some(), "{text} should be refused");
        }
    }

    #[test]
    fn private_and_loopback_only_when_allowed() {
        let closed = EgressPolicy::default();
        let open = EgressPolicy { allow_private: true, allow_loopback: true };
        for text in ["127.0.0.1", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd12::1", "::ffff:10.0.0.1"] {
            assert!(closed.refuses(ip(text)).is_some(), "{text} should be refused by default");
            assert!(open.refuses(ip(text)).is_none(), "{text} should be allowed when configured");
        }
        let loopback_only = EgressPolicy { allow_private: false, allow_loopback: true };
        assert!(loopback_only.refuses(ip("127.0.0.1")).is_none());
        assert!(loopback_only.refuses(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn public_addresses_are_allowed() {
        let closed = EgressPolicy::default();
        for text in ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "172.32.0.1", "100.128.0.1"] {
            assert!(closed.refuses(ip(text)).is_none(), "{text} should be allowed");
        }
    }
}
