//! Notifications: the Alertmanager webhook payload, Standard Webhooks signatures, receiver
//! matchers, and the delivery schedule (backoff with jitter, `Retry-After`).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::replay::format_time;

/// An alert as a notification carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
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

/// A label matcher: `name=value` or `name!=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    pub label: String,
    pub value: String,
    /// `true` for `!=`.
    #[serde(default)]
    pub negate: bool,
}

impl Matcher {
    /// Reads `name=value` or `name!=value`.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let (label, value, negate) = if let Some((l, v)) = text.split_once("!=") {
            (l, v, true)
        } else if let Some((l, v)) = text.split_once('=') {
            (l, v, false)
        } else {
            return Err(format!("matcher {text:?} is not label=value or label!=value"));
        };
        let label = label.trim();
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("matcher {text:?}: label names are letters, digits and _"));
        }
        Ok(Matcher { label: label.to_string(), value: value.trim().trim_matches('"').to_string(), negate })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.label).map_or("", String::as_str);
        (value == self.value) != self.negate
    }
}

/// Whether every matcher holds.
pub fn all_match(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// The wait before retry number `attempt` (1 = the first retry): `base × 2^(attempt-1)`
/// capped at `max`, the upper half jittered by `jitter` in `[0, 1)`.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
    let capped = exp.min(max.as_secs_f64());
    Duration::from_secs_f64(capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
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

    #[test]
    fn matchers_select_labels() {
        let labels: BTreeMap<String, String> = [("scope".to_string(), "tenant".to_string()), ("tenant".to_string(), "acme".to_string())].into();
        assert!(Matcher::parse("tenant=acme").is_ok_and(|m| m.matches(&labels)));
        assert!(Matcher::parse("region!=eu").is_ok_and(|m| m.matches(&labels)));
        assert!(Matcher::parse("scope!=tenant").is_ok_and(|m| !m.matches(&labels)));
        assert!(Matcher::parse("nothing").is_err());
    }

    #[test]
    fn backoff_doubles_within_its_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(20, base, max, 0.0), Duration::from_secs(30));
    }
}
