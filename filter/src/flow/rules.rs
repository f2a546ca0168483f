//! Trigger rules on the request path: every decided request's events are counted (one shared
//! CAS per matching rule), and a rule that fires acts — an alert event to its sink, a block or
//! a revocation published for every worker (this one at once, the others on their next tick).

use super::*;
use crate::events::rules::{self as engine, Action as RuleAction, Effect};
use crate::events::{Event, Kind};

/// Runs the rules over a decided step's events.
pub(super) fn after(ctx: &mut Ctx, step: Step) -> Step {
    let Step::Done(mut d) = step else { return step };
    let cfg = ctx.cfg;
    if cfg.rules.rules.is_empty() || d.events.is_empty() {
        return Step::Done(d);
    }
    let store = Scoped::new(ctx.store, &cfg.rules.ns);
    let mut produced = Vec::new();
    for e in &d.events {
        for f in engine::observe(&store, &cfg.rules.rules, cfg.rules.slots, e, ctx.now_ms) {
            let Some(rule) = cfg.rules.rules.get(f.rule) else { continue };
            let mut alerts: Vec<usize> = Vec::new();
            for a in &rule.actions {
                match a {
                    RuleAction::Alert(i) => alerts.push(*i),
                    RuleAction::Block(ms) | RuleAction::Revoke(ms) => {
                        let effect = if matches!(a, RuleAction::Block(_)) { Effect::Block } else { Effect::Revoke };
                        let until = ctx.now_ms.saturating_add(*ms);
                        if let Some(set) =
                            engine::publish(ctx.store, &cfg.rules.ns, effect, rule.key, &f.key, until, ctx.now_ms)
                        {
                            // This worker enforces it at once; the others within a tick.
                            ctx.state.actions = set;
                        }
                    }
                }
            }
            let event = |to_sink: Option<usize>| {
                let mut t = Event::new(Kind::RuleTriggered, ctx.now_ms);
                t.extra = vec![
                    ("rule", serde_json::json!(rule.name)),
                    ("key_type", serde_json::json!(rule.key.name())),
                    ("key", serde_json::json!(f.key)),
                    ("count", serde_json::json!(f.count)),
                    ("window", serde_json::json!(crate::config::duration::format_ms(rule.window_ms))),
                    ("first", serde_json::json!(crate::events::rfc3339(f.first_ms))),
                    ("last", serde_json::json!(crate::events::rfc3339(f.at_ms))),
                    ("actions", serde_json::json!(rule.actions.iter().map(action_name).collect::<Vec<_>>())),
                ];
                t.to_sink = to_sink;
                t
            };
            if alerts.is_empty() {
                produced.push(event(None));
            }
            for i in alerts {
                produced.push(event(Some(i)));
            }
        }
    }
    d.events.retain(|e| !e.quiet);
    d.events.extend(produced);
    Step::Done(d)
}

fn action_name(a: &RuleAction) -> &'static str {
    match a {
        RuleAction::Alert(_) => "alert",
        RuleAction::Block(_) => "block",
        RuleAction::Revoke(_) => "revoke",
    }
}

/// The block in force on this caller's address, as a rejection (429 + the remaining seconds).
pub(super) fn blocked(ctx: &Ctx, effect: Effect, kt: engine::KeyType, key: &str) -> Option<u64> {
    if !ctx.cfg.rules.acts || ctx.state.actions.is_empty() {
        return None;
    }
    let until = ctx.state.actions.until(effect, kt, key, ctx.now_ms)?;
    Some(until.saturating_sub(ctx.now_ms).div_ceil(1000).max(1))
}

/// The address key rules use for `source`.
pub(super) fn source_key(req: &RequestView) -> Option<String> {
    let k = crate::net::client_key(req.source.get()?);
    Some(k.strip_prefix("addr:").map_or(k.clone(), str::to_string))
}
