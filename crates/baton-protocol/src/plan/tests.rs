//! Plan validation tests: every rejection names what is wrong.

use serde_json::json;

use super::*;

fn plan(value: Value) -> Result<Plan, Error> {
    Plan::from_value(value, &Limits::default())
}

fn chain(ids: &[(&str, &[&str])]) -> Value {
    let steps: Vec<Value> = ids
        .iter()
        .map(|(id, needs)| json!({"id": id, "agent": "sim", "needs": needs}))
        .collect();
    json!({ "steps": steps })
}

#[test]
fn diamond_has_one_root_and_one_sink() {
    let p = plan(chain(&[
        ("a", &[]),
        ("b", &["a"]),
        ("c", &["a"]),
        ("d", &["b", "c"]),
    ]))
    .unwrap();
    assert_eq!(p.roots().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(p.sinks().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["d"]);
    let mut deps: Vec<_> = p.dependents("a").map(|s| s.id.as_str()).collect();
    deps.sort();
    assert_eq!(deps, ["b", "c"]);
    assert_eq!(p.step("d").unwrap().retry, RetryPolicy::default());
    assert_eq!(p.step("d").unwrap().timeout_ms, DEFAULT_TIMEOUT_MS);
}

fn specs(value: Value) -> Vec<StepSpec> {
    serde_json::from_value(value).unwrap()
}

#[test]
fn a_plan_grows_by_a_revision_and_keeps_its_steps() {
    let base = plan(chain(&[("a", &[]), ("b", &["a"])])).unwrap();
    assert_eq!(base.revision(), 1);
    let grown = base
        .grow(
            specs(json!([
                {"id": "c", "agent": "sim", "needs": ["a"]},
                {"id": "d", "agent": "sim", "needs": ["b", "c"]}
            ])),
            &Limits::default(),
        )
        .unwrap();
    assert_eq!(grown.revision(), 2);
    assert_eq!(&grown.steps()[..2], base.steps());
    let added: Vec<_> = grown
        .added_since(&base)
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(added, ["c", "d"]);
    assert_eq!(
        grown.sinks().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["d"]
    );
    // Stored and read back, it is the same plan once told its revision.
    let stored = serde_json::to_string(grown.spec()).unwrap();
    let back = Plan::from_stored(&stored, &Limits::default()).unwrap();
    assert_eq!(back.at_revision(2), grown);
}

#[test]
fn growing_is_validated_like_submitting() {
    let base = plan(chain(&[("a", &[])])).unwrap();
    let limits = Limits::default();
    let grow = |value| base.grow(specs(value), &limits).unwrap_err();
    assert_eq!(
        grow(json!([{"id": "a", "agent": "sim"}])),
        Error::DuplicateStep("a".into())
    );
    assert_eq!(
        grow(json!([{"id": "b", "agent": "sim", "needs": ["zz"]}])),
        Error::UnknownNeed {
            step: "b".into(),
            need: "zz".into()
        }
    );
    assert!(matches!(
        grow(json!([
            {"id": "b", "agent": "sim", "needs": ["c"]},
            {"id": "c", "agent": "sim", "needs": ["b"]}
        ])),
        Error::Cycle(_)
    ));
    assert_eq!(grow(json!([])), Error::Empty);
}

#[test]
fn self_loop_is_named() {
    let error = plan(chain(&[("a", &["a"])])).unwrap_err();
    assert_eq!(error, Error::Cycle(vec!["a".into(), "a".into()]));
    assert_eq!(error.to_string(), "plan has a cycle: a -> a");
}

#[test]
fn three_cycle_is_named() {
    let error = plan(chain(&[
        ("x", &[]),
        ("a", &["c", "x"]),
        ("b", &["a"]),
        ("c", &["b"]),
    ]))
    .unwrap_err();
    let Error::Cycle(cycle) = &error else {
        panic!("{error}")
    };
    assert_eq!(cycle.len(), 4, "{error}");
    assert_eq!(cycle.first(), cycle.last());
    for id in ["a", "b", "c"] {
        assert!(cycle.iter().any(|s| s == id), "{error}");
    }
    assert!(!cycle.iter().any(|s| s == "x"), "{error}");
    assert_eq!(error.code(), "plan_cycle");
}

#[test]
fn long_cycle_does_not_overflow_the_stack() {
    let n = 500;
    let steps: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("s{i}"), "agent": "sim", "needs": [format!("s{}", (i + 1) % n)]}))
        .collect();
    let error = plan(json!({ "steps": steps })).unwrap_err();
    let Error::Cycle(cycle) = error else { panic!() };
    assert_eq!(cycle.len(), n + 1);
}

#[test]
fn dangling_need_and_duplicates_are_rejected() {
    let error = plan(chain(&[("a", &["ghost"])])).unwrap_err();
    assert_eq!(error.code(), "unknown_need");
    assert!(error.to_string().contains("ghost"));
    let error = plan(chain(&[("a", &[]), ("a", &[])])).unwrap_err();
    assert_eq!(error, Error::DuplicateStep("a".into()));
    let error = plan(chain(&[("a", &[]), ("b", &["a", "a"])])).unwrap_err();
    assert_eq!(error.code(), "repeated_need");
}

#[test]
fn bad_agent_names_are_rejected_with_the_name() {
    for bad in ["a.>", "*", "a b", "", "UPPER"] {
        let error = plan(json!({"steps": [{"id": "s", "agent": bad}]})).unwrap_err();
        assert_eq!(error.code(), "invalid_name", "{bad}");
        assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
    }
    let huge = "a".repeat(10_000);
    let error = plan(json!({"steps": [{"id": "s", "agent": huge}]})).unwrap_err();
    assert!(error.to_string().len() < 300);
}

#[test]
fn limits_are_enforced() {
    let steps: Vec<Value> = (0..501)
        .map(|i| json!({"id": format!("s{i}"), "agent": "sim"}))
        .collect();
    assert_eq!(
        plan(json!({ "steps": steps })).unwrap_err().code(),
        "plan_too_large"
    );
    let mut steps: Vec<Value> = vec![json!({"id": "root", "agent": "sim"})];
    steps.extend(
        (0..201).map(|i| json!({"id": format!("s{i}"), "agent": "sim", "needs": ["root"]})),
    );
    assert_eq!(
        plan(json!({ "steps": steps })).unwrap_err().code(),
        "fan_out_too_wide"
    );
    assert_eq!(plan(json!({ "steps": [] })).unwrap_err(), Error::Empty);
}

#[test]
fn unknown_keys_and_wrong_types_are_syntax_errors() {
    let error = plan(json!({"steps": [{"id": "a", "agent": "sim", "need": ["b"]}]})).unwrap_err();
    assert_eq!(error.code(), "invalid_plan_syntax");
    assert!(error.to_string().contains("need"), "{error}");
    let error = plan(json!({"steps": [{"id": "a", "agent": 7}]})).unwrap_err();
    assert_eq!(error.code(), "invalid_plan_syntax");
}

#[test]
fn policies_are_checked() {
    let bad = [
        json!({"max_attempts": 0}),
        json!({"initial_backoff_ms": 100, "max_backoff_ms": 10}),
        json!({"jitter": 2.0}),
    ];
    for retry in bad {
        let error = plan(json!({"steps": [{"id": "a", "agent": "sim", "retry": retry}]}));
        assert_eq!(error.unwrap_err().code(), "invalid_policy");
    }
    let error = plan(json!({"steps": [{"id": "a", "agent": "sim", "timeout_ms": 0}]}));
    assert_eq!(error.unwrap_err().code(), "invalid_policy");
}

#[test]
fn yaml_plans_parse() {
    let text = "name: demo\nsteps:\n  - id: a\n    agent: nlu\n  - id: b\n    agent: sql\n    needs: [a]\n    retry: {max_attempts: 5}\n";
    let p = Plan::from_text(text, &Limits::default()).unwrap();
    assert_eq!(p.name(), Some("demo"));
    assert_eq!(p.step("b").unwrap().retry.max_attempts, 5);
    assert_eq!(
        p.step("b").unwrap().retry.initial_backoff_ms,
        DEFAULT_INITIAL_BACKOFF_MS
    );
}

#[test]
fn backoff_doubles_up_to_the_ceiling_and_jitter_only_shortens() {
    let policy = RetryPolicy {
        max_attempts: 10,
        initial_backoff_ms: 200,
        max_backoff_ms: 1000,
        jitter: 0.2,
    };
    assert_eq!(policy.delay_ms(1, 0.0), 200);
    assert_eq!(policy.delay_ms(2, 0.0), 400);
    assert_eq!(policy.delay_ms(3, 0.0), 800);
    assert_eq!(policy.delay_ms(4, 0.0), 1000);
    assert_eq!(policy.delay_ms(60, 0.0), 1000);
    assert_eq!(policy.delay_ms(1, 0.999_999), 160);
}

#[test]
fn input_templates_render_references() {
    let p = plan(json!({"steps": [
        {"id": "a", "agent": "sim"},
        {"id": "b", "agent": "sim", "needs": ["a"],
         "input": {"q": "$input/question", "all": "$input", "from_a": "$needs/a/x", "whole": "$needs/a", "lit": "$$5", "missing": "$input/nope"}}
    ]}))
    .unwrap();
    let template = p.step("b").unwrap().input.clone().unwrap();
    let needs = BTreeMap::from([("a".to_owned(), json!({"x": [1, 2]}))]);
    let rendered = template.render(&json!({"question": "why?"}), &needs);
    assert_eq!(
        rendered,
        json!({"q": "why?", "all": {"question": "why?"}, "from_a": [1, 2], "whole": {"x": [1, 2]}, "lit": "$5", "missing": null})
    );
    let error = plan(
        json!({"steps": [{"id": "a", "agent": "sim"}, {"id": "b", "agent": "sim", "input": "$needs/a"}]}),
    );
    assert_eq!(error.unwrap_err().code(), "invalid_input_mapping");
}

#[test]
fn output_schemas_are_compiled_and_checked() {
    let p = plan(json!({"steps": [{"id": "a", "agent": "sim",
        "output_schema": {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}}]}))
    .unwrap();
    let schema = p.step("a").unwrap().output_schema.clone().unwrap();
    assert_eq!(schema.check(&json!({"answer": "42"})), Ok(()));
    let error = schema.check(&json!({"answer": 42})).unwrap_err();
    assert!(error.contains("/answer"), "{error}");
    assert!(schema.check(&json!("just text")).is_err());
    let error = plan(
        json!({"steps": [{"id": "a", "agent": "sim", "output_schema": {"type": "nonsense"}}]}),
    );
    assert_eq!(error.unwrap_err().code(), "invalid_output_schema");
}

/// Regression: MessagePack was decoded down to 1024 levels, so a submission could carry a
/// step input template far deeper than JSON or YAML can read back; the stored plan (which
/// any replica re-reads with `Plan::from_text`) was then unreadable and the job stuck. Every
/// plan either encoding accepts must read back from its stored form.
#[test]
fn plans_accepted_at_the_decoders_depth_limit_read_back_from_storage() {
    use crate::Encoding;
    use crate::messages::SubmitRequest;

    let limits = Limits::default();
    let mut stored_limits = limits;
    stored_limits.max_steps = 100_000;
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let mut accepted = 0;
        for levels in [1, 60, 100, 120, 123, 124, 125, 126, 127, 128, 200, 1000] {
            let mut template = json!("$input");
            for _ in 0..levels {
                template = json!([template]);
            }
            let request =
                json!({"plan": {"steps": [{"id": "a", "agent": "sim", "input": template}]}});
            let bytes = encoding.encode(&request).unwrap();
            let Ok(request) = encoding.decode::<SubmitRequest>(&bytes, 1 << 20) else {
                continue;
            };
            let Ok(plan) = Plan::from_value(request.plan, &limits) else {
                continue;
            };
            accepted += 1;
            let stored = serde_json::to_string(plan.spec()).unwrap();
            let reread = Plan::from_stored(&stored, &stored_limits);
            assert!(reread.is_ok(), "{encoding:?}, {levels} levels: {reread:?}");
        }
        assert!(accepted >= 4, "{encoding:?}: only {accepted} accepted");
    }
}

/// Regression (found by the `submit_msgpack` fuzz target): a plan with DEL, a C1 control or
/// U+FFFE in any string was accepted, but its stored JSON carries those characters raw and
/// YAML rejects them, so reading the stored plan back failed ("stored plan is unreadable")
/// and every result, status request and timer of the job failed with it.
#[test]
fn plans_with_characters_yaml_forbids_read_back_from_storage() {
    let limits = Limits::default();
    for text in ["a\u{7f}b", "\u{80}", "\u{9f}", "\u{fffe}", "nul\u{0}"] {
        let spec = json!({
            "name": text,
            "steps": [{
                "id": "a", "agent": "sim",
                "input": {"k": text, text: [text]},
                "output_schema": {"properties": {text: {"type": "string"}}}
            }]
        });
        let plan = Plan::from_value(spec, &limits).unwrap();
        let stored = serde_json::to_string(plan.spec()).unwrap();
        let reread = Plan::from_stored(&stored, &limits).unwrap();
        assert_eq!(reread, plan, "{text:?}");
    }
}

#[test]
fn routes_pick_branches_and_fall_back_to_the_default() {
    let plan = plan(json!({"steps": [
        {"id": "r", "agent": "sim", "routes": {"a": ["x"], "b": ["y"], "_default": ["z"]}},
        {"id": "x", "agent": "sim", "needs": ["r"]},
        {"id": "y", "agent": "sim", "needs": ["r"]},
        {"id": "z", "agent": "sim", "needs": ["r"]},
    ]}))
    .unwrap();
    let routes = plan.step("r").unwrap().routes.as_ref().unwrap();
    let pick = |route: Value| {
        routes
            .pick(&json!({"route": route}))
            .map(|set| set.into_iter().collect::<Vec<_>>())
    };
    assert_eq!(pick(json!("a")).unwrap(), ["x"]);
    assert_eq!(pick(json!(["a", "b"])).unwrap(), ["x", "y"]);
    assert_eq!(pick(json!("nope")).unwrap(), ["z"]);
    assert_eq!(pick(json!(["a", "nope"])).unwrap(), ["x", "z"]);
    assert!(pick(json!(3)).is_err());
    assert!(routes.pick(&json!({"other": 1})).is_err());
    let strict = plan_routes_without_default();
    assert!(
        strict
            .pick(&json!({"route": "nope"}))
            .unwrap_err()
            .contains("nope")
    );
}

fn plan_routes_without_default() -> crate::plan::Routes {
    let plan = plan(json!({"steps": [
        {"id": "r", "agent": "sim", "routes": {"a": ["x"]}},
        {"id": "x", "agent": "sim", "needs": ["r"]},
    ]}))
    .unwrap();
    plan.step("r").unwrap().routes.clone().unwrap()
}

#[test]
fn conditions_compile_check_their_names_and_evaluate() {
    let ok = plan(json!({"steps": [
        {"id": "a", "agent": "sim"},
        {"id": "b", "agent": "sim", "needs": ["a"],
         "when": "needs.a.items.exists(i, i.score > input.min) && size(needs.a.items) < 3"},
    ]}))
    .unwrap();
    let when = ok.step("b").unwrap().when.as_ref().unwrap();
    let needs = |items: Value| {
        let mut map = std::collections::BTreeMap::new();
        map.insert("a", json!({"items": items}));
        map
    };
    let input = json!({"min": 2});
    assert_eq!(when.eval(&input, &needs(json!([{"score": 3}]))), Ok(true));
    assert_eq!(when.eval(&input, &needs(json!([{"score": 1}]))), Ok(false));
    assert!(when.eval(&input, &needs(json!(5))).is_err());
    for (when, mention) in [
        ("needs.z.ok", "needs.z"),
        ("other.x", "other"),
        ("1 +", "when"),
    ] {
        let error = plan(json!({"steps": [
            {"id": "a", "agent": "sim"},
            {"id": "b", "agent": "sim", "needs": ["a"], "when": when},
        ]}))
        .unwrap_err();
        assert_eq!(error.code(), crate::ErrorCode::InvalidPlan, "{when}");
        let text = error.to_string();
        assert!(text.contains("\"b\"") && text.contains(mention), "{text}");
    }
}

#[test]
fn plans_with_conditions_are_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Plan>();
}
