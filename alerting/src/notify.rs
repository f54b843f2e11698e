//! Notifications: an alert's labels, the Alertmanager webhook payload, Standard Webhooks
//! signatures, and the retry schedule of one delivery (backoff with jitter, `Retry-After`).
//! Receivers choose alerts with the [`Matcher`]s of [`crate::silence`]; when a notification is
//! due and what is sent again is [`crate::dispatch`].

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::replay::format_time;
use crate::rule::{RuleKind, Scope};
pub use crate::silence::{Matcher, all_match};

/// The labels of an alert of `rule` at `scope` and `key`: `alertname` and `severity` (of the
/// rule), `scope`, and `region` / `tenant` as the scope has them (a tenant's alert carries its
/// tenant's region, `tenant_region`; the key of a region alert is its region).
pub fn alert_labels(rule: RuleKind, scope: Scope, key: &str, tenant_region: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_string(), rule.alertname().to_string());
    labels.insert("scope".to_string(), scope.as_str().to_string());
    labels.insert("severity".to_string(), rule.severity().to_string());
    match scope {
        Scope::Global => {}
        Scope::Region => {
            labels.insert("region".to_string(), key.to_string());
        }
        Scope::Tenant => {
            labels.insert("tenant".to_string(), key.to_string());
            labels.insert("region".to_string(), tenant_region.to_string());
        }
    }
    labels
}

/// An alert as a notification carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What identifies it (`alertname`, `scope`, `tenant`, `region`, ...).
    pub labels: BTreeMap<String, String>,
    /// What describes it for people (`summary`, links).
    pub annotations: BTreeMap<String, String>,
    /// Milliseconds since the epoch.
    pub starts_at: i64,
    /// When it resolved, if it has.
    pub ends_at: Option<i64>,
    /// The path, under the service's external URL, of what raised it (`/v1/alerts/{id}`):
    /// its `generatorURL`.
    pub link: String,
}

impl Alert {
    /// Alertmanager's fingerprint: a hash of the sorted label set (hex, 16 digits).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.labels)
    }
}

/// A stable hash of a label set.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    for (k, v) in labels {
        hash.update(k.as_bytes());
        hash.update([0xff]);
        hash.update(v.as_bytes());
        hash.update([0xff]);
    }
    let digest = hash.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The Alertmanager webhook payload (`"version": "4"`) for one group of alerts.
pub fn payload(receiver: &str, external_url: &str, alerts: &[Alert]) -> serde_json::Value {
    let firing = alerts.iter().any(|a| a.ends_at.is_none());
    let common = |pick: fn(&Alert) -> &BTreeMap<String, String>| -> BTreeMap<String, String> {
        let mut iter = alerts.iter();
        let Some(first) = iter.next() else { return BTreeMap::new() };
        let mut common = pick(first).clone();
        for a in iter {
            common.retain(|k, v| pick(a).get(k) == Some(v));
        }
        common
    };
    let common_labels = common(|a| &a.labels);
    let group_labels: BTreeMap<String, String> =
        common_labels.iter().filter(|(k, _)| k.as_str() == "alertname" || k.as_str() == "scope").map(|(k, v)| (k.clone(), v.clone())).collect();
    let group_key = format!("{{}}:{{{}}}", group_labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(", "));
    let items: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            serde_json::json!({
                "status": if a.ends_at.is_none() { "firing" } else { "resolved" },
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": format_time(a.starts_at),
                "endsAt": a.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), format_time),
                "generatorURL": format!("{}{}", external_url.trim_end_matches('/'), a.link),
                "fingerprint": a.fingerprint(),
            })
        })
        .collect();
    serde_json::json!({
        "version": "4",
        "receiver": receiver,
        "status": if firing { "firing" } else { "resolved" },
        "alerts": items,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common(|a| &a.annotations),
        "externalURL": external_url,
        "groupKey": group_key,
        "truncatedAlerts": 0,
    })
}

/// The key bytes of a Standard Webhooks secret: `whsec_<base64>` decoded, anything else as is.
pub fn secret_key(secret: &str) -> Vec<u8> {
    secret.strip_prefix("whsec_").and_then(|b| B64.decode(b).ok()).unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// `webhook-signature` for a delivery: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret_key(secret)).unwrap_or_else(|_| {
        // HMAC takes keys of any length; this branch cannot be reached.
        <Hmac<Sha256> as Mac>::new_from_slice(b"").expect("empty HMAC key")
    });
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Checks a `webhook-signature` header (space-separated `v1,<sig>` entries) as a receiver does.
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let want = sign(secret, id, timestamp, body);
    header.split(' ').any(|s| s == want)
}

/// A `Retry-After` header: delay seconds or an HTTP date (relative to `now_ms`).
pub fn retry_after(header: &str, now_ms: i64) -> Option<Duration> {
    let header = header.trim();
    if let Ok(seconds) = header.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(header).ok()?.timestamp_millis();
    Some(Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &format!("v1,other {sig}")));
        assert!(!verify(secret, "msg_other", 1614265330, body, &sig));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("7", 0), Some(Duration::from_secs(7)));
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").map(|t| t.timestamp_millis()).unwrap_or(0);
        assert_eq!(retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("soon", now), None);
    }
}
