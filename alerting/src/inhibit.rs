//! Inhibition: a firing alert at a wider scope holds back the narrower alerts under it.
//!
//! An alert under a firing wider one (a tenant in a firing region, anything while the global
//! alert fires) is *inhibited*: still recorded as firing, but not notified on its own; the
//! wider alert's notification lists it. Which rules inhibit which: a failure alert inhibits
//! the narrower alerts of every rule, a burn-rate alert the narrower burn-rate alerts, and a
//! runtime alert (tenant-wide) nothing ([`inhibited_rules`], [`inhibitors`]).
//!
//! The decisions, over the alerts firing at the moment (the store's rows live, a replay's
//! alerts in memory):
//! - an alert that fires is inhibited by the first of its possible inhibitors that fires, the
//!   global scope before the region, a failure alert before a burn-rate one ([`inhibitor`]);
//! - a wider alert that fires inhibits from then on the firing narrower alerts under it that
//!   nothing inhibits yet ([`newly_inhibited`]);
//! - when an alert resolves, each firing alert it inhibited is inhibited by another wider
//!   alert that still fires, or freed: notified on its own from then on ([`freed`]).
//!
//! Nothing here reads a clock or a store; ids are whatever the caller names alerts by.

use std::collections::BTreeMap;

use crate::rule::{GLOBAL, RuleKind, Scope};

/// The rules whose wider alerts inhibit an alert of `rule`, in the order they are looked for.
pub fn inhibitors(rule: RuleKind) -> &'static [RuleKind] {
    match rule {
        RuleKind::BurnRate => &[RuleKind::Failures, RuleKind::BurnRate],
        RuleKind::Failures | RuleKind::Runtime => &[RuleKind::Failures],
    }
}

/// The rules whose narrower alerts an alert of `rule` inhibits (the converse of [`inhibitors`]).
pub fn inhibited_rules(rule: RuleKind) -> &'static [RuleKind] {
    match rule {
        RuleKind::Failures => &[RuleKind::Failures, RuleKind::BurnRate, RuleKind::Runtime],
        RuleKind::BurnRate => &[RuleKind::BurnRate],
        RuleKind::Runtime => &[],
    }
}

/// An alert as inhibition sees it: its rule, scope, key and labels (a tenant's alert names its
/// region in the `region` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// What raised it.
    pub rule: RuleKind,
    /// Its scope.
    pub scope: Scope,
    /// Its scope key: `global`, a region, a tenant (or `tenant/segment` for runtime).
    pub key: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// A firing alert, named by `id`, and the alert that inhibits it, if one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firing<'a, Id> {
    /// How the caller names it.
    pub id: Id,
    /// The alert.
    pub alert: Subject<'a>,
    /// The wider alert that inhibits it.
    pub inhibited_by: Option<Id>,
}

/// Where an inhibitor of `alert` may fire, in the order they are looked for: (rule, scope,
/// key), the global scope before the region, a failure alert before a burn-rate one.
pub fn inhibitor_candidates(alert: Subject<'_>) -> Vec<(RuleKind, Scope, String)> {
    let mut out = Vec::new();
    for scope in alert.scope.wider() {
        let key = match scope {
            Scope::Global => GLOBAL.to_string(),
            Scope::Region => match alert.labels.get("region") {
                Some(region) => region.clone(),
                None => continue,
            },
            Scope::Tenant => continue,
        };
        for rule in inhibitors(alert.rule) {
            out.push((*rule, *scope, key.clone()));
        }
    }
    out
}

/// Whether `wider`, firing, inhibits `narrow`: its rule inhibits `narrow`'s, its scope is wider,
/// and `narrow` is under it (everything is under the global scope; a region's alerts are under
/// the region's).
pub fn inhibits(wider: Subject<'_>, narrow: Subject<'_>) -> bool {
    if !inhibited_rules(wider.rule).contains(&narrow.rule) || narrow.scope <= wider.scope {
        return false;
    }
    match wider.scope {
        Scope::Global => true,
        Scope::Region => narrow.labels.get("region").map(String::as_str) == Some(wider.key),
        Scope::Tenant => false,
    }
}

/// The alert among `firing` that inhibits `alert` when it fires, if any: the first of
/// [`inhibitor_candidates`] that fires.
pub fn inhibitor<Id: Copy>(alert: Subject<'_>, firing: &[Firing<'_, Id>]) -> Option<Id> {
    inhibitor_candidates(alert)
        .into_iter()
        .find_map(|(rule, scope, key)| firing.iter().find(|f| f.alert.rule == rule && f.alert.scope == scope && f.alert.key == key).map(|f| f.id))
}

/// The alerts among `firing` that `alert`, firing now, inhibits from now on: those under it
/// that nothing inhibits yet.
pub fn newly_inhibited<Id: Copy>(alert: Subject<'_>, firing: &[Firing<'_, Id>]) -> Vec<Id> {
    firing.iter().filter(|f| f.inhibited_by.is_none() && inhibits(alert, f.alert)).map(|f| f.id).collect()
}

/// What the resolution of `resolved` frees: each alert among `firing` it inhibited, with the
/// other firing alert that inhibits it from now on (`None`: it is notified on its own now).
pub fn freed<Id: Copy + PartialEq>(resolved: Id, firing: &[Firing<'_, Id>]) -> Vec<(Id, Option<Id>)> {
    let others: Vec<Firing<'_, Id>> = firing.iter().filter(|f| f.id != resolved).copied().collect();
    firing.iter().filter(|f| f.inhibited_by == Some(resolved) && f.id != resolved).map(|f| (f.id, inhibitor(f.alert, &others))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::alert_labels;

    struct Alert {
        rule: RuleKind,
        scope: Scope,
        key: String,
        labels: BTreeMap<String, String>,
    }

    fn alert(rule: RuleKind, scope: Scope, key: &str, region: &str) -> Alert {
        let labels = alert_labels(rule, scope, key, region);
        Alert { rule, scope, key: key.to_string(), labels }
    }

    impl Alert {
        fn subject(&self) -> Subject<'_> {
            Subject { rule: self.rule, scope: self.scope, key: &self.key, labels: &self.labels }
        }
    }

    fn firing<'a>(alerts: &'a [Alert], inhibited_by: &[Option<usize>]) -> Vec<Firing<'a, usize>> {
        alerts.iter().enumerate().map(|(id, a)| Firing { id, alert: a.subject(), inhibited_by: inhibited_by.get(id).copied().flatten() }).collect()
    }

    #[test]
    fn the_tables_are_each_others_converse() {
        for wider in RuleKind::ALL {
            for narrow in RuleKind::ALL {
                assert_eq!(inhibited_rules(wider).contains(&narrow), inhibitors(narrow).contains(&wider), "{wider} over {narrow}");
            }
        }
    }

    #[test]
    fn a_tenant_is_inhibited_by_its_region_and_by_everything_but_not_by_another_region() {
        let tenant = alert(RuleKind::Failures, Scope::Tenant, "acme", "us-east");
        assert!(inhibits(alert(RuleKind::Failures, Scope::Region, "us-east", "").subject(), tenant.subject()));
        assert!(!inhibits(alert(RuleKind::Failures, Scope::Region, "eu-west", "").subject(), tenant.subject()));
        assert!(inhibits(alert(RuleKind::Failures, Scope::Global, GLOBAL, "").subject(), tenant.subject()));
        // Not by a narrower or equal scope, and a runtime alert inhibits nothing.
        assert!(!inhibits(tenant.subject(), alert(RuleKind::Failures, Scope::Region, "us-east", "").subject()));
        assert!(!inhibits(alert(RuleKind::Failures, Scope::Tenant, "zed", "us-east").subject(), tenant.subject()));
        assert!(!inhibits(alert(RuleKind::Runtime, Scope::Tenant, "acme", "us-east").subject(), tenant.subject()));
        // A burn-rate alert inhibits burn-rate alerts only.
        let burn = alert(RuleKind::BurnRate, Scope::Tenant, "acme", "us-east");
        assert!(inhibits(alert(RuleKind::BurnRate, Scope::Global, GLOBAL, "").subject(), burn.subject()));
        assert!(!inhibits(alert(RuleKind::BurnRate, Scope::Global, GLOBAL, "").subject(), tenant.subject()));
    }

    #[test]
    fn the_inhibitor_is_the_widest_firing_one_a_failure_alert_first() {
        let burn = alert(RuleKind::BurnRate, Scope::Tenant, "acme", "us-east");
        let wider = [
            alert(RuleKind::BurnRate, Scope::Region, "us-east", ""),
            alert(RuleKind::Failures, Scope::Region, "us-east", ""),
            alert(RuleKind::BurnRate, Scope::Global, GLOBAL, ""),
        ];
        let all = firing(&wider, &[]);
        assert_eq!(inhibitor(burn.subject(), &all), Some(2), "global first");
        assert_eq!(inhibitor(burn.subject(), &all[..2]), Some(1), "then the region's failure alert");
        assert_eq!(inhibitor(burn.subject(), &all[..1]), Some(0));
        assert_eq!(inhibitor(burn.subject(), &all[..0]), None);
        // Every candidate it may find inhibits it.
        for (rule, scope, key) in inhibitor_candidates(burn.subject()) {
            let w = alert(rule, scope, &key, "");
            assert!(inhibits(w.subject(), burn.subject()), "{rule} {scope} {key}");
        }
    }

    #[test]
    fn a_wider_alert_inhibits_only_what_nothing_inhibits_yet() {
        let alerts = [
            alert(RuleKind::Failures, Scope::Tenant, "acme", "us-east"),
            alert(RuleKind::Runtime, Scope::Tenant, "bee/lapsed", "us-east"),
            alert(RuleKind::Failures, Scope::Tenant, "zed", "eu-west"),
            alert(RuleKind::Failures, Scope::Tenant, "old", "us-east"),
            alert(RuleKind::Failures, Scope::Global, GLOBAL, ""),
        ];
        let all = firing(&alerts, &[None, None, None, Some(4), None]);
        let region = alert(RuleKind::Failures, Scope::Region, "us-east", "");
        assert_eq!(newly_inhibited(region.subject(), &all), [0, 1]);
        let burn = alert(RuleKind::BurnRate, Scope::Region, "us-east", "");
        assert!(newly_inhibited(burn.subject(), &all).is_empty(), "a burn-rate alert holds back burn-rate alerts only");
    }

    #[test]
    fn a_resolution_frees_what_it_inhibited_unless_another_wider_alert_fires() {
        let alerts = [
            alert(RuleKind::Failures, Scope::Global, GLOBAL, ""),
            alert(RuleKind::Failures, Scope::Region, "us-east", ""),
            alert(RuleKind::Failures, Scope::Tenant, "acme", "us-east"),
            alert(RuleKind::Failures, Scope::Tenant, "zed", "eu-west"),
        ];
        let all = firing(&alerts, &[None, Some(0), Some(0), Some(0)]);
        // Everything resolves: acme is under the region still, zed is free.
        assert_eq!(freed(0, &all), [(1, None), (2, Some(1)), (3, None)]);
        assert!(freed(1, &all).is_empty(), "the region inhibited nothing");
    }
}
