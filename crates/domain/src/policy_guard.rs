//! Guards: what a rule's `when` says plainly about the item, read off its expression once at
//! compile time, so most non-matching rules are passed over without running the CEL interpreter.
//!
//! Most rules of a real policy start with a comparison of a plain variable with a constant:
//! `action.name == "issue_refund" && ...`, `agent == "legacy-bot"`, `confidence < 0.6`. When
//! such a comparison, joined to the rest by `&&`, is false for the item, the whole `when` is false,
//! whatever the rest would have given: CEL's `&&` is false as soon as either side is false, even
//! if the other side is an error. So a guard that fails means "no match", exactly as the
//! interpreter would have said, at the cost of a string comparison instead of an evaluation
//! (about half a microsecond each, see docs/performance.md). A guard that holds proves nothing,
//! and the interpreter decides as before. A `when` that is the literal `true` needs no
//! interpreter at all.
//!
//! Only the comparisons that open the chain of `&&` are read: a variable (`action.name`, `agent`,
//! `confidence`, `conversation.turns`, a field of `action.arguments` or `context`...) against a
//! string or number literal. They are settled for an item only when the value is there and of
//! the literal's type, as the policy context gives it to CEL (a string with a string, an integer
//! with an int, a double with a double); anything else (`confidence < 1`, an int literal; a
//! missing field; a comparison inside `||`) is left to the interpreter.

use crate::policy::PolicyInput;
use cel::common::ast::{operators, EntryExpr, Expr, IdedExpr, LiteralValue};

/// The plainly readable part of one rule's `when`: every test must hold for the rule to match.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    tests: Vec<Test>,
    /// The `when` is the literal `true` (or `false`): its value needs no evaluation.
    constant: Option<bool>,
}

/// `variable cmp literal`.
#[derive(Debug, Clone)]
struct Test {
    var: Var,
    cmp: Compare,
    literal: Literal,
}

/// A variable of the policy context.
#[derive(Debug, Clone)]
enum Var {
    ActionName,
    Agent,
    ConversationState,
    MessageText,
    Confidence,
    ConversationTurns,
    /// A field path into `action.arguments` (JSON: it may be missing or of any type).
    Argument(Vec<String>),
    /// A field path into `context`.
    Context(Vec<String>),
}

#[derive(Debug, Clone)]
enum Literal {
    Text(String),
    Int(i64),
    Double(f64),
}

/// A variable's value for one item, typed as the policy context gives it to CEL.
enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Double(f64),
}

#[derive(Debug, Clone, Copy)]
enum Compare {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// What the guard says about an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The `when` is false for this item: no need to evaluate it.
    NoMatch,
    /// The `when` is true for this item whatever it holds (the literal `true`).
    Match,
    /// Only the interpreter can tell.
    Evaluate,
}

impl Guard {
    /// Reads the guard of a compiled `when`.
    pub(crate) fn of(expression: &IdedExpr) -> Guard {
        if let Expr::Literal(LiteralValue::Boolean(b)) = &expression.expr {
            return Guard {
                tests: Vec::new(),
                constant: Some(*b.inner()),
            };
        }
        let mut tests = Vec::new();
        conjuncts(expression, &mut tests);
        Guard {
            tests,
            constant: None,
        }
    }

    pub(crate) fn verdict(&self, input: &PolicyInput<'_>) -> Verdict {
        match self.constant {
            Some(true) => return Verdict::Match,
            Some(false) => return Verdict::NoMatch,
            None => {}
        }
        // In order: past a test that cannot be settled for this item (a missing JSON field, a
        // value of another type), the interpreter may stop at an error there, so later tests
        // prove nothing.
        for test in &self.tests {
            match test.holds(input) {
                Some(true) => {}
                Some(false) => return Verdict::NoMatch,
                None => break,
            }
        }
        Verdict::Evaluate
    }
}

impl Test {
    /// `None` when the comparison cannot be settled here for this item.
    fn holds(&self, input: &PolicyInput<'_>) -> Option<bool> {
        let value = match &self.var {
            Var::ActionName => Value::Text(input.action_name),
            Var::Agent => Value::Text(input.agent),
            Var::ConversationState => Value::Text(input.conversation_state),
            Var::MessageText => Value::Text(input.message_text),
            // The policy context binds an absent confidence as -1.0.
            Var::Confidence => Value::Double(input.confidence.unwrap_or(-1.0)),
            Var::ConversationTurns => Value::Int(input.conversation_turns),
            Var::Argument(path) => json_value(input.arguments, path)?,
            Var::Context(path) => json_value(input.context, path)?,
        };
        let ordering = match (&value, &self.literal) {
            (Value::Text(v), Literal::Text(l)) => {
                return match self.cmp {
                    Compare::Eq => Some(v == l),
                    Compare::Ne => Some(v != l),
                    // Ordering strings is left to the interpreter.
                    _ => None,
                };
            }
            (Value::Int(v), Literal::Int(l)) => v.cmp(l),
            (Value::Double(v), Literal::Double(l)) => v.partial_cmp(l)?,
            // Mixed types: whatever CEL makes of them, the interpreter says it.
            _ => return None,
        };
        Some(self.cmp.ordering_holds(ordering))
    }
}

/// The value at `path` in a JSON object, typed as `policy::json_to_cel` types it; `None` when it
/// is missing or neither a string nor a number.
fn json_value<'a>(root: &'a serde_json::Value, path: &[String]) -> Option<Value<'a>> {
    let mut value = root;
    for field in path {
        value = value.as_object()?.get(field)?;
    }
    match value {
        serde_json::Value::String(s) => Some(Value::Text(s)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Some(Value::Int(i)),
            None => n.as_f64().map(Value::Double),
        },
        _ => None,
    }
}

impl Compare {
    fn of(func: &str) -> Option<Compare> {
        Some(match func {
            operators::EQUALS => Compare::Eq,
            operators::NOT_EQUALS => Compare::Ne,
            operators::LESS => Compare::Lt,
            operators::LESS_EQUALS => Compare::Le,
            operators::GREATER => Compare::Gt,
            operators::GREATER_EQUALS => Compare::Ge,
            _ => return None,
        })
    }

    /// `literal OP variable` is `variable FLIPPED literal`.
    fn flipped(self) -> Compare {
        match self {
            Compare::Eq => Compare::Eq,
            Compare::Ne => Compare::Ne,
            Compare::Lt => Compare::Gt,
            Compare::Le => Compare::Ge,
            Compare::Gt => Compare::Lt,
            Compare::Ge => Compare::Le,
        }
    }

    fn ordering_holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Compare::Eq => o == Equal,
            Compare::Ne => o != Equal,
            Compare::Lt => o == Less,
            Compare::Le => o != Greater,
            Compare::Gt => o == Greater,
            Compare::Ge => o != Less,
        }
    }
}

/// The readable comparisons that open `e`'s chain of `&&` operands, in order, up to the first
/// operand that is not one. Only that prefix is used: the interpreter may evaluate `&&` from
/// left to right and stop at an error, so a false comparison after an operand that errs would
/// not make the whole false. Comparisons in the prefix never err (their variables are always
/// bound, with the literal's type), so the first false one among them decides, on any reading
/// of `&&`.
fn conjuncts(e: &IdedExpr, tests: &mut Vec<Test>) {
    let mut operands = Vec::new();
    and_operands(e, &mut operands);
    for operand in operands {
        match readable(operand) {
            Some(test) => tests.push(test),
            None => break,
        }
    }
}

/// The operands of a chain of `&&`, in source order, however the parser nested them.
fn and_operands<'e>(e: &'e IdedExpr, out: &mut Vec<&'e IdedExpr>) {
    if let Expr::Call(call) = &e.expr {
        if call.func_name == operators::LOGICAL_AND && call.target.is_none() && call.args.len() == 2
        {
            and_operands(&call.args[0], out);
            and_operands(&call.args[1], out);
            return;
        }
    }
    out.push(e);
}

/// One operand as a test, if it is a comparison of a plain variable with a literal.
fn readable(e: &IdedExpr) -> Option<Test> {
    let Expr::Call(call) = &e.expr else {
        return None;
    };
    if call.target.is_some() || call.args.len() != 2 {
        return None;
    }
    let cmp = Compare::of(&call.func_name)?;
    let (lhs, rhs) = (&call.args[0], &call.args[1]);
    comparison(lhs, cmp, rhs).or_else(|| comparison(rhs, cmp.flipped(), lhs))
}

/// `variable cmp literal`, when the variable is one the guard knows and the literal a string
/// or a number.
fn comparison(variable: &IdedExpr, cmp: Compare, literal: &IdedExpr) -> Option<Test> {
    let Expr::Literal(value) = &literal.expr else {
        return None;
    };
    let literal = match value {
        LiteralValue::String(s) => Literal::Text(s.inner().to_owned()),
        LiteralValue::Int(i) => Literal::Int(*i.inner()),
        LiteralValue::Double(d) => Literal::Double(*d.inner()),
        _ => return None,
    };
    let mut path = Vec::new();
    let root = variable_path(variable, &mut path)?;
    let fields: Vec<&str> = path.iter().map(String::as_str).collect();
    let var = match (root, fields.as_slice()) {
        ("action", ["name"]) => Var::ActionName,
        ("action", ["arguments", _, ..]) => Var::Argument(path[1..].to_vec()),
        ("agent", []) => Var::Agent,
        ("message", ["text"]) => Var::MessageText,
        ("confidence", []) => Var::Confidence,
        ("conversation", ["state"]) => Var::ConversationState,
        ("conversation", ["turns"]) => Var::ConversationTurns,
        ("context", [_, ..]) => Var::Context(path),
        _ => return None,
    };
    Some(Test { var, cmp, literal })
}

/// `name.field.field...` (plain field selections, not `has()` tests): the name, and the fields
/// in `path`.
fn variable_path<'e>(e: &'e IdedExpr, path: &mut Vec<String>) -> Option<&'e str> {
    match &e.expr {
        Expr::Ident(name) => Some(name.as_str()),
        Expr::Select(select) if !select.test => {
            let root = variable_path(&select.operand, path)?;
            path.push(select.field.clone());
            Some(root)
        }
        _ => None,
    }
}

/// A set of the policy context's variables (`action`, `message`, `conversation`, `confidence`,
/// `context`, `agent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Variables(u8);

impl Variables {
    pub(crate) const NONE: Variables = Variables(0);
    pub(crate) const ACTION: Variables = Variables(1);
    pub(crate) const MESSAGE: Variables = Variables(2);
    pub(crate) const CONVERSATION: Variables = Variables(4);
    pub(crate) const CONFIDENCE: Variables = Variables(8);
    pub(crate) const CONTEXT: Variables = Variables(16);
    pub(crate) const AGENT: Variables = Variables(32);
    #[cfg(test)]
    pub(crate) const ALL: Variables = Variables(0b11_1111);
    /// Each variable's CEL name.
    pub(crate) const NAMES: [(&'static str, Variables); 6] = [
        ("action", Variables::ACTION),
        ("message", Variables::MESSAGE),
        ("conversation", Variables::CONVERSATION),
        ("confidence", Variables::CONFIDENCE),
        ("context", Variables::CONTEXT),
        ("agent", Variables::AGENT),
    ];

    /// The variables an expression names anywhere. A comprehension's own variable that shadows
    /// one of them only makes the set larger than needed, never smaller.
    pub(crate) fn read_by(e: &IdedExpr) -> Variables {
        let mut found = Variables::NONE;
        idents(e, &mut |name| {
            if let Some((_, variable)) = Variables::NAMES.iter().find(|(n, _)| *n == name) {
                found = found.with(*variable);
            }
        });
        found
    }

    pub(crate) fn has(self, other: Variables) -> bool {
        self.0 & other.0 != 0
    }

    pub(crate) fn without(self, other: Variables) -> Variables {
        Variables(self.0 & !other.0)
    }

    pub(crate) fn with(self, other: Variables) -> Variables {
        Variables(self.0 | other.0)
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Calls `f` with every identifier in `e`.
fn idents(e: &IdedExpr, f: &mut impl FnMut(&str)) {
    match &e.expr {
        Expr::Ident(name) => f(name),
        Expr::Select(select) => idents(&select.operand, f),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                idents(target, f);
            }
            for arg in &call.args {
                idents(arg, f);
            }
        }
        Expr::List(list) => {
            for element in &list.elements {
                idents(element, f);
            }
        }
        Expr::Map(map) => entry_idents(&map.entries, f),
        Expr::Struct(s) => entry_idents(&s.entries, f),
        Expr::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                idents(part, f);
            }
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entry_idents(entries: &[cel::common::ast::IdedEntryExpr], f: &mut impl FnMut(&str)) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::MapEntry(e) => {
                idents(&e.key, f);
                idents(&e.value, f);
            }
            EntryExpr::StructField(field) => idents(&field.value, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, SubjectKind};
    use serde_json::json;

    /// Conditions of every shape the guard reads, and some it must leave alone.
    const CONDITIONS: &[&str] = &[
        r#"true"#,
        r#"false"#,
        r#"action.name == "issue_refund""#,
        r#""issue_refund" == action.name"#,
        r#"action.name != "issue_refund""#,
        r#"action.name == "issue_refund" && action.arguments.amount > 500"#,
        r#"action.arguments.amount > 500 && action.name == "issue_refund""#,
        r#"action.arguments.missing > 5 && action.name == "nothing""#,
        r#"action.name == "nothing" && action.arguments.missing > 5"#,
        r#"agent == "legacy-bot" && confidence < 0.95"#,
        r#"confidence >= 0.0 && confidence < 0.3"#,
        r#"0.5 < confidence"#,
        r#"confidence < 1"#,
        r#"confidence == -1.0"#,
        r#"conversation.state == "human""#,
        r#"conversation.turns > 3 && conversation.turns <= 40"#,
        r#"conversation.turns > 3.5"#,
        r#"action.name == "issue_refund" || agent == "legacy-bot""#,
        r#"!(action.name == "issue_refund")"#,
        r#"(action.name == "issue_refund" && agent == "a") && (confidence > 0.2 && message.text == "hi")"#,
        r#"action.name < "m""#,
        r#"has(action.name) && action.name == "issue_refund""#,
        r#"context.tier == "gold" && action.name == "issue_refund""#,
        r#"context.tier == "silver" && action.name == "issue_refund""#,
        r#"context.tier != "silver" || action.name == "issue_refund""#,
        r#"context.missing == "x" && action.name == "nothing""#,
        r#"context.level > 2 && action.name == "issue_refund""#,
        r#"context.level > 2.0 && action.name == "issue_refund""#,
        r#"context.score >= 0.5 && agent == "a""#,
        r#"context.nested.deep == "yes" && agent != "a""#,
        r#"action.arguments.amount > 500 && action.name != "nothing""#,
        r#"action.arguments.amount == "x""#,
        r#"message.text == "hi" && conversation.state == "ai""#,
        r#"action.arguments.amount > 500.5"#,
    ];

    /// An item to try every condition on: kind, action name, confidence, agent, conversation
    /// state and turns, arguments.
    struct Case(
        SubjectKind,
        &'static str,
        Option<f64>,
        &'static str,
        &'static str,
        i64,
        serde_json::Value,
    );

    fn inputs() -> Vec<Case> {
        vec![
            Case(
                SubjectKind::Action,
                "issue_refund",
                Some(0.9),
                "support-bot",
                "",
                0,
                json!({"amount": 900}),
            ),
            Case(
                SubjectKind::Action,
                "issue_refund",
                Some(0.1),
                "legacy-bot",
                "",
                0,
                json!({"amount": 100}),
            ),
            Case(
                SubjectKind::Action,
                "send_email",
                None,
                "legacy-bot",
                "",
                0,
                json!({}),
            ),
            Case(
                SubjectKind::Action,
                "delete_account",
                Some(0.5),
                "a",
                "",
                0,
                json!({"amount": "x"}),
            ),
            Case(
                SubjectKind::Message,
                "",
                Some(0.25),
                "support-bot",
                "human",
                41,
                json!({}),
            ),
            Case(
                SubjectKind::Message,
                "",
                Some(0.95),
                "support-bot",
                "ai",
                4,
                json!({}),
            ),
        ]
    }

    #[test]
    fn a_guard_never_disagrees_with_the_interpreter() {
        let mut settled = 0;
        for when in CONDITIONS {
            let text = format!("[[rule]]\nname = \"r\"\nwhen = '{when}'\nthen = \"review\"\n");
            let policy = Policy::parse(&text).unwrap_or_else(|e| panic!("{when}: {e:?}"));
            let rule = &policy.rules()[0];
            for Case(kind, name, confidence, agent, state, turns, arguments) in inputs() {
                let context =
                    json!({"tier": "silver", "level": 3, "score": 0.75, "nested": {"deep": "yes"}});
                let input = PolicyInput {
                    kind,
                    action_name: name,
                    arguments: &arguments,
                    message_text: "hi",
                    confidence,
                    context: &context,
                    agent,
                    conversation_state: state,
                    conversation_turns: turns,
                };
                let interpreted = rule.interpreted(&input);
                // And the policy as a whole (guards, and a context with only the variables
                // the rule reads) says what the interpreter with every variable says.
                let routing = policy.evaluate(&input);
                let expected = match &interpreted {
                    Ok(true) => "rule \"r\" matched:",
                    Ok(false) => "no rule matched",
                    Err(_) => "could not be evaluated",
                };
                assert!(
                    routing.reason.contains(expected),
                    "`{when}` on {name}/{agent}: {} but the interpreter: {interpreted:?}",
                    routing.reason
                );
                match rule.guard().verdict(&input) {
                    Verdict::NoMatch => {
                        settled += 1;
                        assert_eq!(interpreted, Ok(false), "`{when}` on {name}/{agent}");
                    }
                    Verdict::Match => {
                        settled += 1;
                        assert_eq!(interpreted, Ok(true), "`{when}` on {name}/{agent}");
                    }
                    Verdict::Evaluate => {}
                }
            }
        }
        // The guard does settle most of these: it is not vacuously right.
        assert!(settled > 40, "only {settled} settled by guards");
    }

    #[test]
    fn only_the_opening_comparisons_of_an_and_chain_are_read() {
        let guard = |when: &str| {
            let text = format!("[[rule]]\nname = \"r\"\nwhen = '{when}'\nthen = \"review\"\n");
            let policy = Policy::parse(&text).unwrap_or_else(|e| panic!("{when}: {e:?}"));
            policy.rules()[0].guard().tests.len()
        };
        assert_eq!(
            guard(r#"action.name == "a" && agent == "b" && confidence < 0.5"#),
            3
        );
        assert_eq!(
            guard(r#"action.arguments.x.size() > 1 && action.name == "a""#),
            0
        );
        assert_eq!(
            guard(r#"action.name == "a" && action.arguments.x.size() > 1 && agent == "b""#),
            1
        );
        assert_eq!(
            guard(r#"context.tier == "gold" && action.arguments.n.m < 3"#),
            2
        );
        assert_eq!(guard(r#"action.name == "a" || agent == "b""#), 0);
    }
}
