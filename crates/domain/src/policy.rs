//! Policy: an ordered list of TOML rules whose CEL conditions route each action and AI message to
//! approve/deliver, review, block or escalate; parsed and compiled once, evaluated per item.
//!
//! Guarantees callers rely on:
//! - [`Policy::parse`] reports every problem it can find, each with a 1-based line and column in
//!   the file, so `loopgate policy check` and `PUT /v1/policy` can point at the offending text.
//! - [`Policy::evaluate`] never fails: an expression that errors at run time, or does not return a
//!   bool, routes the item to review (fail safe), as does a policy where no rule matches.
//! - Hostile input cannot overflow the stack: expressions are length- and nesting-limited, and the
//!   compiled expression tree is depth-limited so that evaluation fits in a small (2 MiB) stack.
//! - Hostile input cannot run for long: each rule's work is bounded at compile time as a function
//!   of the item's size (`policy_work`); a rule over [`MAX_RULE_WORK`] for an item is not run and
//!   the item goes to review naming the rule, and a rule over it even for a small item
//!   ([`MIN_EVALUABLE_ITEM`]) is rejected by [`Policy::parse`].
//!
//! CEL values: JSON integers that fit an `i64` become CEL `int`, every other number a `double`. The
//! `cel` crate compares `int` with `double` (`action.arguments.amount > 500` holds for 650 and
//! 650.5 alike, and `1 == 1.0`), so the faithful conversion keeps the natural rules working;
//! arithmetic across the two types (`amount * 1.5` with an integer amount) is a run-time error, as
//! the CEL specification says, and so routes to review.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::policy_guard::{Guard, Variables, Verdict};
use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::objects::{Key, Map};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::policy_work::{item_size, WorkBound};
pub use crate::policy_work::{MAX_ITEM_WORK, MAX_RULE_WORK, MIN_EVALUABLE_ITEM};

/// Longest `when` accepted, in characters. Policies are written by people; anything longer is a
/// mistake or an attack, and the limit bounds the work the parser does.
pub const MAX_WHEN_CHARS: usize = 4096;

/// Deepest bracket nesting (`(`, `[`, `{`) accepted in a `when`, checked on the text before the
/// CEL parser sees it: the parser recurses once per level.
pub const MAX_WHEN_NESTING: usize = 64;

/// Deepest compiled expression tree accepted. The `cel` interpreter recurses once per tree level
/// and, in unoptimised builds, needs roughly 40 KiB of stack per level; 32 levels keep evaluation
/// well inside the 2 MiB stack of a tokio worker thread while allowing any rule a person would
/// write (`a || b || c ...` is a balanced tree, so even long disjunctions stay shallow).
pub const MAX_EXPRESSION_DEPTH: usize = 32;

/// Longest queue name accepted.
pub const MAX_QUEUE_CHARS: usize = 64;

/// Longest rule name accepted.
pub const MAX_NAME_CHARS: usize = 200;

/// Most distinct approvers a rule may require.
pub const MAX_APPROVALS: u32 = 10;

/// Longest review timeout accepted: far enough out for any real process, near enough that adding
/// it to a timestamp cannot overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// Stack given to the thread that parses and compiles a policy. The TOML and CEL parsers recurse
/// per nesting level with large frames in unoptimised builds (about 180 KiB per parenthesis for
/// the CEL parser); the nesting limits above keep the need well under this. Only touched pages
/// are ever committed, so the size costs address space, not memory.
const COMPILER_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Length of a `when` quoted in a routing reason before it is cut short.
const REASON_WHEN_CHARS: usize = 200;

const DEFAULT_QUEUE: &str = "default";

const RULE_KEYS: &str = "name, applies_to, when, then, queue, priority, approvals, timeout, \
                         on_timeout, sample, threshold, target_accuracy, min, max";

/// A compiled policy. Cheap to clone (the rules are shared) and safe to share across threads.
#[derive(Clone)]
pub struct Policy {
    rules: Arc<[Rule]>,
}

/// One rule of a policy, as written in the file, plus its compiled condition.
#[derive(Clone)]
pub struct Rule {
    pub name: String,
    pub applies_to: AppliesTo,
    /// The CEL source of the condition.
    pub when: String,
    pub then: Outcome,
    pub queue: String,
    pub priority: i64,
    pub approvals: u32,
    pub timeout: Option<Duration>,
    pub on_timeout: OnTimeout,
    /// Share (0..=1) of approve/deliver outcomes also queued for QA review.
    pub sample: f64,
    /// A confidence floor: the rule matches only items whose confidence is at least this.
    pub threshold: Option<Threshold>,
    program: Arc<cel::Program>,
    /// How much work the condition may do, by the item's size; checked before each evaluation.
    work: WorkBound,
    /// The comparisons of the condition that can be checked without the interpreter.
    guard: Guard,
    /// The policy variables the condition reads.
    variables: Variables,
}

/// A rule's confidence floor (`threshold = 0.8`, or `threshold = "auto"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Fixed(f64),
    /// Progressive autonomy: the server recomputes `current` from evidence (see
    /// `crate::learning::tune`), keeping it within `min..=max`. A policy fresh from its file
    /// starts at `max`, the cautious end, until the server says otherwise.
    Auto {
        target_accuracy: f64,
        min: f64,
        max: f64,
        current: f64,
    },
}

impl Threshold {
    /// The floor in force now.
    pub fn value(&self) -> f64 {
        match *self {
            Threshold::Fixed(v) => v,
            Threshold::Auto { current, .. } => current,
        }
    }
}

/// Which subjects a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliesTo {
    Action,
    Message,
    Both,
}

/// What a rule decides. For messages, `Approve` means "deliver".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    #[serde(alias = "deliver")]
    Approve,
    Review,
    Block,
    Escalate,
}

/// What happens to a review nobody decided in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    Approve,
    Reject,
    Escalate,
}

/// What is being routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Action,
    Message,
}

/// Everything a rule's condition may look at.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub kind: SubjectKind,
    /// `""` for messages.
    pub action_name: &'a str,
    /// A JSON object; `{}` for messages.
    pub arguments: &'a serde_json::Value,
    /// `""` for actions.
    pub message_text: &'a str,
    /// `None` makes the CEL variable `confidence` -1.0.
    pub confidence: Option<f64>,
    /// A JSON object.
    pub context: &'a serde_json::Value,
    pub agent: &'a str,
    /// `""` when there is no conversation.
    pub conversation_state: &'a str,
    /// 0 when there is no conversation.
    pub conversation_turns: i64,
}

/// The policy's verdict on one item, with everything needed to open a review.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub outcome: Outcome,
    /// The deciding rule; `None` when no rule matched.
    pub rule: Option<String>,
    /// Why, for people: shown to reviewers and recorded in the audit log.
    pub reason: String,
    pub queue: String,
    pub priority: i64,
    pub approvals: u32,
    pub timeout: Option<Duration>,
    pub on_timeout: OnTimeout,
    pub sample: f64,
}

/// A problem in a policy file, at a 1-based line and column (counted in characters).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct PolicyError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approve => "approve",
            Outcome::Review => "review",
            Outcome::Block => "block",
            Outcome::Escalate => "escalate",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Approve => "approve",
            OnTimeout::Reject => "reject",
            OnTimeout::Escalate => "escalate",
        }
    }
}

impl fmt::Display for OnTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AppliesTo {
    pub fn as_str(self) -> &'static str {
        match self {
            AppliesTo::Action => "action",
            AppliesTo::Message => "message",
            AppliesTo::Both => "both",
        }
    }

    /// Whether a rule with this scope looks at a subject of this kind.
    pub fn fits(self, kind: SubjectKind) -> bool {
        matches!(
            (self, kind),
            (AppliesTo::Both, _)
                | (AppliesTo::Action, SubjectKind::Action)
                | (AppliesTo::Message, SubjectKind::Message)
        )
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rules)
            .finish()
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The compiled program is left out: it is the `when` again, as a tree.
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("applies_to", &self.applies_to)
            .field("when", &self.when)
            .field("then", &self.then)
            .field("queue", &self.queue)
            .field("priority", &self.priority)
            .field("approvals", &self.approvals)
            .field("timeout", &self.timeout)
            .field("on_timeout", &self.on_timeout)
            .field("sample", &self.sample)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Parse and compile a policy file. All problems found, each with 1-based line and column in
    /// `text`, in file order.
    pub fn parse(text: &str) -> Result<Policy, Vec<PolicyError>> {
        // The parsers recurse per nesting level; a dedicated thread gives them a stack large
        // enough for the nesting we accept, whatever stack the caller runs on. The thread only
        // lends its stack: no I/O happens on it.
        let outcome = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("loopgate-policy".into())
                .stack_size(COMPILER_STACK_BYTES)
                .spawn_scoped(scope, || catch_unwind(|| parse_policy(text)))
                .map(|handle| handle.join())
        });
        match outcome {
            Ok(Ok(Ok(result))) => result,
            Ok(_) => Err(vec![PolicyError {
                line: 1,
                column: 1,
                message: "internal error while compiling the policy".into(),
            }]),
            Err(e) => Err(vec![PolicyError {
                line: 1,
                column: 1,
                message: format!("could not start the policy compiler: {e}"),
            }]),
        }
    }

    /// The policy with no rules: everything goes to review (fail safe).
    pub fn empty() -> Policy {
        Policy {
            rules: Arc::from(Vec::new()),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether any rule's threshold is `"auto"` (the server then keeps it tuned).
    pub fn has_auto_thresholds(&self) -> bool {
        self.auto_thresholds().next().is_some()
    }

    /// The rules with `threshold = "auto"`, each with its settings:
    /// `(rule, target_accuracy, min, max, current)`.
    pub fn auto_thresholds(&self) -> impl Iterator<Item = (&Rule, f64, f64, f64, f64)> {
        self.rules.iter().filter_map(|r| match r.threshold {
            Some(Threshold::Auto {
                target_accuracy,
                min,
                max,
                current,
            }) => Some((r, target_accuracy, min, max, current)),
            _ => None,
        })
    }

    /// This policy with the server's current values for its `"auto"` thresholds (by rule
    /// name), each clamped to the rule's `min..=max`. Rules without a value keep theirs.
    pub fn with_auto_thresholds(&self, values: &HashMap<String, f64>) -> Policy {
        let rules: Vec<Rule> = self
            .rules
            .iter()
            .map(|rule| {
                let mut rule = rule.clone();
                if let Some(Threshold::Auto {
                    target_accuracy,
                    min,
                    max,
                    ..
                }) = rule.threshold
                {
                    if let Some(v) = values.get(&rule.name).filter(|v| v.is_finite()) {
                        rule.threshold = Some(Threshold::Auto {
                            target_accuracy,
                            min,
                            max,
                            current: v.clamp(min, max),
                        });
                    }
                }
                rule
            })
            .collect();
        Policy {
            rules: Arc::from(rules),
        }
    }

    /// Whether `rule`'s condition (its `when`, ignoring any threshold) holds for `input`.
    /// Errors count as not matching. Used to find the evidence a rule's threshold is tuned on.
    pub fn condition_holds(&self, rule: &Rule, input: &PolicyInput<'_>) -> bool {
        if !rule.applies_to.fits(input.kind) {
            return false;
        }
        // A condition too costly for this item is not run here either.
        if !within(rule.work.at(item_size(input)), MAX_RULE_WORK) {
            return false;
        }
        if rule.guard.verdict(input) == Verdict::NoMatch {
            return false;
        }
        // Only the variables this condition reads: tuning runs it over every item of a window.
        let mut context = cel::Context::with_env(cel_env());
        if add_variables(&mut context, input, rule.variables).is_err() {
            return false;
        }
        matches!(
            catch_unwind(AssertUnwindSafe(|| rule.program.execute(&context))),
            Ok(Ok(cel::Value::Bool(true)))
        )
    }

    /// Each rule's bound on its work (in the units of [`MAX_RULE_WORK`]) for this item, in file
    /// order, whether or not it applies: for diagnostics and for the fuzz tests, which check
    /// that evaluation time stays proportional to it.
    pub fn work_bounds(&self, input: &PolicyInput<'_>) -> Vec<(String, f64)> {
        let size = item_size(input);
        self.rules
            .iter()
            .map(|r| (r.name.clone(), r.work.at(size)))
            .collect()
    }

    /// First rule (in file order) whose `applies_to` fits and whose `when` holds decides.
    pub fn evaluate(&self, input: &PolicyInput<'_>) -> Routing {
        let mut applicable = self
            .rules
            .iter()
            .filter(|r| r.applies_to.fits(input.kind))
            .peekable();
        if applicable.peek().is_none() {
            return no_rule_matched();
        }
        // Built once per item, and only when a rule needs the interpreter, with the variables
        // the rules run so far read.
        let mut context = None;
        let mut bound = Variables::NONE;
        let size = item_size(input);
        let mut spent = 0.0;
        for rule in applicable {
            // Below its confidence floor a rule does not match (absent confidence is -1).
            if let Some(threshold) = &rule.threshold {
                if input.confidence.unwrap_or(-1.0) < threshold.value() {
                    continue;
                }
            }
            // Checked before running: a rule too costly for this item, or past what the rules
            // before it left of the item's budget, is not run, and the item goes to review
            // (never on to a later rule that could approve it).
            let work = rule.work.at(size);
            if !within(work, MAX_RULE_WORK) {
                return work_refused(rule, size, "it could take", work, MAX_RULE_WORK);
            }
            spent += work;
            if !within(spent, MAX_ITEM_WORK) {
                return work_refused(
                    rule,
                    size,
                    "with the rules before it, it could take",
                    spent,
                    MAX_ITEM_WORK,
                );
            }
            // Most rules are settled by a plain comparison; only the rest need the interpreter.
            match rule.guard.verdict(input) {
                Verdict::NoMatch => continue,
                Verdict::Match => return rule.routing(),
                Verdict::Evaluate => {}
            }
            let missing = rule.variables.without(bound);
            let context: &cel::Context<'static, 'static> = match &mut context {
                Some(c) if missing.is_empty() => c,
                slot => {
                    let c = slot.get_or_insert_with(|| cel::Context::with_env(cel_env()));
                    if let Err(e) = add_variables(c, input, missing) {
                        return evaluation_failed(rule, &e);
                    }
                    bound = bound.with(missing);
                    c
                }
            };
            // A panic inside the interpreter is a bug there, but must not take the caller
            // down with it: treat it like any other evaluation error.
            let result = catch_unwind(AssertUnwindSafe(|| rule.program.execute(context)));
            match result {
                Ok(Ok(cel::Value::Bool(true))) => return rule.routing(),
                Ok(Ok(cel::Value::Bool(false))) => {}
                Ok(Ok(other)) => {
                    let msg = format!("returned {}, not a bool", other.type_of());
                    return evaluation_failed(rule, &msg);
                }
                Ok(Err(e)) => return evaluation_failed(rule, &e.to_string()),
                Err(_) => return evaluation_failed(rule, "the interpreter panicked"),
            }
        }
        no_rule_matched()
    }
}

impl Rule {
    /// The interpreter's answer alone, without the guard: what the guard must agree with.
    #[cfg(test)]
    pub(crate) fn interpreted(&self, input: &PolicyInput<'_>) -> Result<bool, String> {
        let context = build_context(input)?;
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("returned {}", other.type_of())),
            Err(e) => Err(e.to_string()),
        }
    }

    #[cfg(test)]
    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    fn routing(&self) -> Routing {
        Routing {
            outcome: self.then,
            rule: Some(self.name.clone()),
            reason: format!(
                "rule \"{}\" matched: {}",
                self.name,
                shorten(&self.when, REASON_WHEN_CHARS)
            ),
            queue: self.queue.clone(),
            priority: self.priority,
            approvals: self.approvals,
            timeout: self.timeout,
            on_timeout: self.on_timeout,
            sample: self.sample,
        }
    }
}

/// The routing settings used whenever no rule decides normally.
fn fail_safe_defaults() -> Routing {
    Routing {
        outcome: Outcome::Review,
        rule: None,
        reason: String::new(),
        queue: DEFAULT_QUEUE.into(),
        priority: 0,
        approvals: 1,
        timeout: None,
        on_timeout: OnTimeout::Reject,
        sample: 0.0,
    }
}

fn no_rule_matched() -> Routing {
    Routing {
        reason: "no rule matched; sent to review (fail safe)".into(),
        ..fail_safe_defaults()
    }
}

fn evaluation_failed(rule: &Rule, error: &str) -> Routing {
    Routing {
        rule: Some(rule.name.clone()),
        reason: format!(
            "rule \"{}\" could not be evaluated ({}); sent to review (fail safe)",
            rule.name, error
        ),
        ..fail_safe_defaults()
    }
}

/// `value <= limit`, false for NaN.
fn within(value: f64, limit: f64) -> bool {
    value <= limit
}

fn work_refused(rule: &Rule, size: f64, what: &str, work: f64, limit: f64) -> Routing {
    Routing {
        rule: Some(rule.name.clone()),
        reason: format!(
            "rule \"{}\" was not evaluated: {what} about {work:.1e} steps on this item's data \
             ({size} units), more than the limit of {limit:.0e}; sent to review (fail safe)",
            rule.name,
        ),
        ..fail_safe_defaults()
    }
}

/// `text` on one line, whitespace runs collapsed, cut to `max` characters.
fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// Reproducible QA sampling: true when the item with this id falls in the sampled share `rate`
/// (0..=1). The SHA-256 of the id's bytes, its first 8 bytes read as a big-endian u64, is compared
/// with `rate` as a fraction of 2^64, so every node makes the same choice for the same item.
pub fn sampled(id: &uuid::Uuid, rate: f64) -> bool {
    // NaN falls here too: it is neither above nor below zero.
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let digest = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let x = u64::from_be_bytes(first);
    // 2^64 as f64 is exact; x as f64 rounds, which can only matter within 2^-53 of `rate`.
    (x as f64) / 18_446_744_073_709_551_616.0 < rate
}

// ---------------------------------------------------------------------------------------------
// Evaluation context

/// The CEL environment: the standard library plus the strings extension (`lowerAscii`, `trim`,
/// ...), which message rules want. Built once; compiling and running must use the same one.
fn cel_env() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        if env.add_extension(cel::extensions::strings).is_err() {
            // Cannot happen with the crate's own extension; the standard library alone still
            // evaluates every rule that does not call the extension's functions.
            env = cel::Env::stdlib();
        }
        Arc::new(env)
    })
    .clone()
}

/// All variables are always defined, with empty defaults, so a rule that mentions `message.text`
/// evaluates (to false, usually) on an action instead of failing.
/// A context with every variable bound: what the guard tests compare the lazy one against.
#[cfg(test)]
fn build_context(input: &PolicyInput<'_>) -> Result<cel::Context<'static, 'static>, String> {
    let mut ctx = cel::Context::with_env(cel_env());
    add_variables(&mut ctx, input, Variables::ALL)?;
    Ok(ctx)
}

/// Binds the policy variables in `which` (the rest may follow later: converting the item's JSON
/// is most of what a context costs, so it is done for the variables a rule reads, when it does).
fn add_variables(
    ctx: &mut cel::Context<'static, 'static>,
    input: &PolicyInput<'_>,
    which: Variables,
) -> Result<(), String> {
    for (name, variable) in Variables::NAMES {
        if !which.has(variable) {
            continue;
        }
        let value = match variable {
            Variables::ACTION => map([
                ("name", cel::Value::from(input.action_name)),
                ("arguments", json_to_cel(input.arguments)),
            ]),
            Variables::MESSAGE => map([("text", cel::Value::from(input.message_text))]),
            Variables::CONVERSATION => map([
                ("state", cel::Value::from(input.conversation_state)),
                ("turns", cel::Value::Int(input.conversation_turns)),
            ]),
            Variables::CONFIDENCE => cel::Value::Float(input.confidence.unwrap_or(-1.0)),
            Variables::CONTEXT => json_to_cel(input.context),
            _ => cel::Value::from(input.agent),
        };
        let value: Box<dyn cel::common::value::Val> = value
            .try_into()
            .map_err(|e: cel::ExecutionError| e.to_string())?;
        ctx.add_variable_as_val(name, value);
    }
    Ok(())
}

fn map<const N: usize>(entries: [(&str, cel::Value); N]) -> cel::Value {
    let map: HashMap<Key, cel::Value> = entries
        .into_iter()
        .map(|(k, v)| (Key::from(k), v))
        .collect();
    cel::Value::Map(Map { map: Arc::new(map) })
}

/// JSON to CEL: integers that fit an `i64` stay integers, other numbers become doubles (see the
/// module documentation for why that keeps comparisons natural).
fn json_to_cel(value: &serde_json::Value) -> cel::Value {
    match value {
        serde_json::Value::Null => cel::Value::Null,
        serde_json::Value::Bool(b) => cel::Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => n.as_f64().map_or(cel::Value::Null, cel::Value::Float),
        },
        serde_json::Value::String(s) => cel::Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            cel::Value::List(Arc::new(items.iter().map(json_to_cel).collect()))
        }
        serde_json::Value::Object(fields) => {
            let map: HashMap<Key, cel::Value> = fields
                .iter()
                .map(|(k, v)| (Key::from(k.as_str()), json_to_cel(v)))
                .collect();
            cel::Value::Map(Map { map: Arc::new(map) })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Collects errors with byte offsets into the file; converted to lines and columns at the end.
struct Errors<'t> {
    text: &'t str,
    found: Vec<(usize, String)>,
}

impl<'t> Errors<'t> {
    fn at(&mut self, offset: usize, message: impl Into<String>) {
        self.found.push((offset, message.into()));
    }

    fn into_sorted(self) -> Vec<PolicyError> {
        let mut found = self.found;
        // Stable: errors at the same place keep the order they were found in.
        found.sort_by_key(|(offset, _)| *offset);
        found.dedup();
        found
            .into_iter()
            .map(|(offset, message)| {
                let (line, column) = line_column(self.text, offset);
                PolicyError {
                    line,
                    column,
                    message,
                }
            })
            .collect()
    }
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a
/// character are clamped to the previous character boundary.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
}

/// One rule's keys as found, before validation.
#[derive(Default)]
struct RawRule {
    name: Option<Spanned<toml::Value>>,
    applies_to: Option<Spanned<toml::Value>>,
    when: Option<Spanned<toml::Value>>,
    then: Option<Spanned<toml::Value>>,
    queue: Option<Spanned<toml::Value>>,
    priority: Option<Spanned<toml::Value>>,
    approvals: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<toml::Value>>,
    on_timeout: Option<Spanned<toml::Value>>,
    sample: Option<Spanned<toml::Value>>,
    threshold: Option<Spanned<toml::Value>>,
    target_accuracy: Option<Spanned<toml::Value>>,
    min: Option<Spanned<toml::Value>>,
    max: Option<Spanned<toml::Value>>,
}

fn parse_policy(text: &str) -> Result<Policy, Vec<PolicyError>> {
    let mut errors = Errors {
        text,
        found: Vec::new(),
    };

    // Pass one: syntax, and top-level keys with their positions.
    match toml::from_str::<BTreeMap<Spanned<String>, serde::de::IgnoredAny>>(text) {
        Ok(top) => {
            for key in top.keys().filter(|k| k.get_ref() != "rule") {
                errors.at(
                    key.span().start,
                    format!(
                        "unknown top-level key `{}`; a policy holds only [[rule]] tables",
                        key.get_ref()
                    ),
                );
            }
        }
        Err(e) => {
            errors.at(toml_error_offset(&e), toml_error_message(&e));
            return Err(errors.into_sorted());
        }
    }

    // Pass two: the rules, every key with its position.
    let file: RawFile = match toml::from_str(text) {
        Ok(file) => file,
        Err(e) => {
            errors.at(
                toml_error_offset(&e),
                format!(
                    "`rule` must be an array of tables ([[rule]]): {}",
                    e.message()
                ),
            );
            return Err(errors.into_sorted());
        }
    };

    let compiler = Compiler {
        env: cel_env(),
        text,
    };
    let mut rules = Vec::with_capacity(file.rule.len());
    let mut names: HashSet<String> = HashSet::new();
    for (index, table) in file.rule.into_iter().enumerate() {
        let rule_start = table.span().start;
        let raw = collect_keys(table.into_inner(), &mut errors);
        // Checked on the raw name so a duplicate is reported even when either rule has other
        // problems.
        if let Some(v) = &raw.name {
            if let toml::Value::String(name) = v.get_ref() {
                if !name.trim().is_empty() && !names.insert(name.clone()) {
                    errors.at(
                        v.span().start,
                        format!("duplicate rule name \"{name}\"; names must be unique"),
                    );
                }
            }
        }
        if let Some(rule) = check_rule(raw, index + 1, rule_start, &compiler, &mut errors) {
            rules.push(rule);
        }
    }

    if errors.found.is_empty() {
        Ok(Policy {
            rules: Arc::from(rules),
        })
    } else {
        Err(errors.into_sorted())
    }
}

fn toml_error_offset(e: &toml::de::Error) -> usize {
    e.span().map_or(0, |s| s.start)
}

fn toml_error_message(e: &toml::de::Error) -> String {
    // Some messages span lines; a position-prefixed error reads best on one.
    let message = e.message().trim_end().replace('\n', "; ");
    format!("invalid TOML: {message}")
}

fn collect_keys(
    table: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    errors: &mut Errors<'_>,
) -> RawRule {
    let mut raw = RawRule::default();
    for (key, value) in table {
        let slot = match key.get_ref().as_str() {
            "name" => &mut raw.name,
            "applies_to" => &mut raw.applies_to,
            "when" => &mut raw.when,
            "then" => &mut raw.then,
            "queue" => &mut raw.queue,
            "priority" => &mut raw.priority,
            "approvals" => &mut raw.approvals,
            "timeout" => &mut raw.timeout,
            "on_timeout" => &mut raw.on_timeout,
            "sample" => &mut raw.sample,
            "threshold" => &mut raw.threshold,
            "target_accuracy" => &mut raw.target_accuracy,
            "min" => &mut raw.min,
            "max" => &mut raw.max,
            other => {
                errors.at(
                    key.span().start,
                    format!("unknown key `{other}` in rule; expected one of: {RULE_KEYS}"),
                );
                continue;
            }
        };
        *slot = Some(value);
    }
    raw
}

/// A string value, or an error at the value.
fn string_value<'v>(
    value: &'v Spanned<toml::Value>,
    key: &str,
    errors: &mut Errors<'_>,
) -> Option<&'v str> {
    match value.get_ref() {
        toml::Value::String(s) => Some(s),
        other => {
            errors.at(
                value.span().start,
                format!("`{key}` must be a string, not {}", other.type_str()),
            );
            None
        }
    }
}

fn integer_value(value: &Spanned<toml::Value>, key: &str, errors: &mut Errors<'_>) -> Option<i64> {
    match value.get_ref() {
        toml::Value::Integer(i) => Some(*i),
        other => {
            errors.at(
                value.span().start,
                format!("`{key}` must be an integer, not {}", other.type_str()),
            );
            None
        }
    }
}

/// Validates one rule, reporting every problem found in it.
fn check_rule(
    raw: RawRule,
    number: usize,
    rule_start: usize,
    compiler: &Compiler<'_>,
    errors: &mut Errors<'_>,
) -> Option<Rule> {
    let before = errors.found.len();
    let missing = |errors: &mut Errors<'_>, key: &str| {
        errors.at(
            rule_start,
            format!("rule #{number} is missing the required key `{key}`"),
        )
    };

    let name = match &raw.name {
        None => {
            missing(errors, "name");
            None
        }
        Some(v) => string_value(v, "name", errors).and_then(|s| {
            if s.trim().is_empty() {
                errors.at(v.span().start, "`name` must not be empty");
                None
            } else if s.chars().count() > MAX_NAME_CHARS {
                errors.at(
                    v.span().start,
                    format!("`name` is longer than {MAX_NAME_CHARS} characters"),
                );
                None
            } else if s.chars().any(char::is_control) {
                errors.at(v.span().start, "`name` must not contain control characters");
                None
            } else {
                Some(s.to_string())
            }
        }),
    };

    let applies_to = match &raw.applies_to {
        None => Some(AppliesTo::Both),
        Some(v) => string_value(v, "applies_to", errors).and_then(|s| match s {
            "action" => Some(AppliesTo::Action),
            "message" => Some(AppliesTo::Message),
            "both" => Some(AppliesTo::Both),
            other => {
                errors.at(
                    v.span().start,
                    format!(
                        "invalid applies_to \"{other}\"; expected \"action\" or \"message\" \
                         (leave it out for both)"
                    ),
                );
                None
            }
        }),
    };

    let program = match &raw.when {
        None => {
            missing(errors, "when");
            None
        }
        Some(v) => string_value(v, "when", errors).and_then(|s| {
            let span = v.span();
            compiler.compile(s, span.start, span.end, errors)
        }),
    };

    let then = match &raw.then {
        None => {
            missing(errors, "then");
            None
        }
        Some(v) => string_value(v, "then", errors)
            .and_then(|s| check_then(s, applies_to, v.span().start, errors)),
    };

    let queue = match &raw.queue {
        None => Some(DEFAULT_QUEUE.to_string()),
        Some(v) => string_value(v, "queue", errors).and_then(|s| {
            let valid_chars = s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if s.is_empty() || s.len() > MAX_QUEUE_CHARS || !valid_chars {
                errors.at(
                    v.span().start,
                    format!(
                        "invalid queue \"{s}\"; use 1 to {MAX_QUEUE_CHARS} of A-Z a-z 0-9 _ . -"
                    ),
                );
                None
            } else {
                Some(s.to_string())
            }
        }),
    };

    let priority = match &raw.priority {
        None => Some(0),
        Some(v) => integer_value(v, "priority", errors),
    };

    let approvals = match &raw.approvals {
        None => Some(1),
        Some(v) => integer_value(v, "approvals", errors).and_then(|n| match u32::try_from(n) {
            Ok(n) if (1..=MAX_APPROVALS).contains(&n) => Some(n),
            _ => {
                errors.at(
                    v.span().start,
                    format!("`approvals` must be between 1 and {MAX_APPROVALS}, not {n}"),
                );
                None
            }
        }),
    };

    let timeout = match &raw.timeout {
        None => Some(None),
        Some(v) => {
            string_value(v, "timeout", errors).and_then(|s| match humantime::parse_duration(s) {
                Ok(d) if d.is_zero() => {
                    errors.at(v.span().start, "`timeout` must be longer than zero");
                    None
                }
                Ok(d) if d > MAX_TIMEOUT => {
                    errors.at(v.span().start, "`timeout` must be at most 366 days");
                    None
                }
                Ok(d) => Some(Some(d)),
                Err(e) => {
                    errors.at(
                        v.span().start,
                        format!(
                            "invalid timeout \"{s}\" ({e}); write e.g. \"30m\", \"2h\", \"1d\""
                        ),
                    );
                    None
                }
            })
        }
    };

    let on_timeout = match &raw.on_timeout {
        None => Some(OnTimeout::Reject),
        Some(v) => string_value(v, "on_timeout", errors).and_then(|s| match s {
            "approve" => Some(OnTimeout::Approve),
            "reject" => Some(OnTimeout::Reject),
            "escalate" => Some(OnTimeout::Escalate),
            other => {
                errors.at(
                    v.span().start,
                    format!(
                        "invalid on_timeout \"{other}\"; expected one of: approve, reject, escalate"
                    ),
                );
                None
            }
        }),
    };

    let sample = match &raw.sample {
        None => Some(0.0),
        Some(v) => {
            let number = match v.get_ref() {
                toml::Value::Float(f) => Some(*f),
                // Only 0 and 1 pass the range check below, both exact as f64.
                toml::Value::Integer(i) => Some(*i as f64),
                other => {
                    errors.at(
                        v.span().start,
                        format!("`sample` must be a number, not {}", other.type_str()),
                    );
                    None
                }
            };
            number.and_then(|f| {
                if (0.0..=1.0).contains(&f) {
                    Some(f)
                } else {
                    errors.at(
                        v.span().start,
                        format!("`sample` must be between 0 and 1, not {f}"),
                    );
                    None
                }
            })
        }
    };

    let threshold = check_threshold(&raw, rule_start, number, errors);

    if errors.found.len() != before {
        return None;
    }
    let (when, program, work) = program?;
    Some(Rule {
        name: name?,
        applies_to: applies_to?,
        when,
        then: then?,
        queue: queue?,
        priority: priority?,
        approvals: approvals?,
        timeout: timeout?,
        on_timeout: on_timeout?,
        sample: sample?,
        threshold: threshold?,
        guard: Guard::of(program.expression()),
        variables: Variables::read_by(program.expression()),
        program: Arc::new(program),
        work,
    })
}

/// A number in 0..=1 (an integer 0 or 1 is accepted too), or an error at the value.
fn unit_number(value: &Spanned<toml::Value>, key: &str, errors: &mut Errors<'_>) -> Option<f64> {
    let number = match value.get_ref() {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        other => {
            errors.at(
                value.span().start,
                format!("`{key}` must be a number, not {}", other.type_str()),
            );
            return None;
        }
    };
    number.filter(|f| (0.0..=1.0).contains(f)).or_else(|| {
        errors.at(
            value.span().start,
            format!("`{key}` must be between 0 and 1"),
        );
        None
    })
}

/// `threshold` (a number, or "auto" with `target_accuracy` and optional `min`, `max`).
/// `Some(None)`: no threshold; `None`: an error was reported.
fn check_threshold(
    raw: &RawRule,
    rule_start: usize,
    number: usize,
    errors: &mut Errors<'_>,
) -> Option<Option<Threshold>> {
    let auto_keys = [
        ("target_accuracy", &raw.target_accuracy),
        ("min", &raw.min),
        ("max", &raw.max),
    ];
    let Some(v) = &raw.threshold else {
        for (key, value) in auto_keys {
            if let Some(value) = value {
                errors.at(
                    value.span().start,
                    format!("`{key}` belongs to threshold = \"auto\"; add that or remove `{key}`"),
                );
            }
        }
        return if auto_keys.iter().any(|(_, v)| v.is_some()) {
            None
        } else {
            Some(None)
        };
    };
    if let toml::Value::String(s) = v.get_ref() {
        if s != "auto" {
            errors.at(
                v.span().start,
                format!("invalid threshold \"{s}\"; write a number between 0 and 1, or \"auto\""),
            );
            return None;
        }
        let Some(target) = &raw.target_accuracy else {
            errors.at(
                v.span().start,
                format!("rule #{number} has threshold = \"auto\" but no `target_accuracy`"),
            );
            return None;
        };
        let target_accuracy = unit_number(target, "target_accuracy", errors)?;
        if !(0.5..1.0).contains(&target_accuracy) {
            errors.at(
                target.span().start,
                "`target_accuracy` must be at least 0.5 and below 1",
            );
            return None;
        }
        let min = match &raw.min {
            None => Some(0.0),
            Some(m) => unit_number(m, "min", errors),
        }?;
        let max = match &raw.max {
            None => Some(1.0),
            Some(m) => unit_number(m, "max", errors),
        }?;
        if min > max {
            let at = raw.min.as_ref().map_or(rule_start, |m| m.span().start);
            errors.at(at, format!("`min` ({min}) must not be above `max` ({max})"));
            return None;
        }
        return Some(Some(Threshold::Auto {
            target_accuracy,
            min,
            max,
            current: max,
        }));
    }
    let fixed = unit_number(v, "threshold", errors)?;
    for (key, value) in auto_keys {
        if let Some(value) = value {
            errors.at(
                value.span().start,
                format!("`{key}` belongs to threshold = \"auto\", not a fixed threshold"),
            );
            return None;
        }
    }
    Some(Some(Threshold::Fixed(fixed)))
}

fn check_then(
    value: &str,
    applies_to: Option<AppliesTo>,
    offset: usize,
    errors: &mut Errors<'_>,
) -> Option<Outcome> {
    let outcome = match value {
        "approve" | "deliver" => Some(Outcome::Approve),
        "review" => Some(Outcome::Review),
        "block" => Some(Outcome::Block),
        "escalate" => Some(Outcome::Escalate),
        _ => None,
    };
    // An invalid applies_to was reported already; judge `then` on its own then.
    let Some(applies_to) = applies_to else {
        if outcome.is_none() {
            errors.at(
                offset,
                format!(
                    "invalid then \"{value}\"; expected one of: approve, deliver, review, block, \
                     escalate"
                ),
            );
        }
        return outcome;
    };
    let allowed: &[&str] = match applies_to {
        AppliesTo::Action => &["approve", "review", "block"],
        AppliesTo::Message => &["deliver", "review", "escalate"],
        AppliesTo::Both => &["approve", "deliver", "review"],
    };
    if allowed.contains(&value) {
        return outcome;
    }
    let message = match (applies_to, value) {
        (AppliesTo::Both, "block") => "then = \"block\" applies only to actions; add \
                                       applies_to = \"action\" to this rule"
            .to_string(),
        (AppliesTo::Both, "escalate") => "then = \"escalate\" applies only to messages; add \
                                          applies_to = \"message\" to this rule"
            .to_string(),
        (AppliesTo::Action, "deliver") => {
            "then = \"deliver\" is for messages; an action rule says \"approve\"".to_string()
        }
        (AppliesTo::Action, "escalate") => {
            "then = \"escalate\" is for messages; an action rule says \"review\" or \"block\""
                .to_string()
        }
        (AppliesTo::Message, "approve") => {
            "then = \"approve\" is for actions; a message rule says \"deliver\"".to_string()
        }
        (AppliesTo::Message, "block") => {
            "then = \"block\" is for actions; a message rule says \"review\" or \"escalate\""
                .to_string()
        }
        _ => {
            let scope = match applies_to {
                AppliesTo::Action => "an action rule",
                AppliesTo::Message => "a message rule",
                AppliesTo::Both => "a rule for both actions and messages",
            };
            format!(
                "invalid then \"{value}\" for {scope}; expected one of: {}",
                allowed.join(", ")
            )
        }
    };
    errors.at(offset, message);
    None
}

// ---------------------------------------------------------------------------------------------
// CEL compilation

struct Compiler<'t> {
    env: Arc<cel::Env>,
    text: &'t str,
}

impl Compiler<'_> {
    /// Compiles the `when` whose TOML string spans `start..end` of the file. Returns the source
    /// and program, or reports errors at their place in the file.
    fn compile(
        &self,
        source: &str,
        start: usize,
        end: usize,
        errors: &mut Errors<'_>,
    ) -> Option<(String, cel::Program, WorkBound)> {
        let locate = Locator::new(self.text, start, end, source);

        if source.trim().is_empty() {
            errors.at(
                start,
                "`when` must not be empty; write \"true\" to match everything",
            );
            return None;
        }
        if source.chars().count() > MAX_WHEN_CHARS {
            errors.at(
                start,
                format!("`when` is longer than {MAX_WHEN_CHARS} characters"),
            );
            return None;
        }
        if let Some(at) = too_deep(source) {
            errors.at(
                locate.byte(at),
                format!("`when` nests brackets deeper than {MAX_WHEN_NESTING} levels"),
            );
            return None;
        }

        let program = match self.env.compile(source) {
            Ok(program) => program,
            Err(parse_errors) => {
                // Past the parser's recursion limit, the errors after the first are echoes of
                // it ("No `ConditionalAndContextAll`!"); report the first alone.
                let too_deep = parse_errors
                    .errors
                    .iter()
                    .find(|e| is_recursion_limit(&e.msg));
                let reported = match too_deep {
                    Some(e) => std::slice::from_ref(e),
                    None => &parse_errors.errors[..],
                };
                for e in reported {
                    let offset = match (usize::try_from(e.pos.0), usize::try_from(e.pos.1)) {
                        (Ok(line), Ok(column)) if line >= 1 && column >= 1 => {
                            locate.line_column(line, column)
                        }
                        _ => start,
                    };
                    errors.at(offset, format!("invalid `when`: {}", cel_message(&e.msg)));
                }
                if parse_errors.errors.is_empty() {
                    errors.at(start, "invalid `when`");
                }
                return None;
            }
        };

        if let Some(id) = too_deep_tree(program.expression()) {
            let offset = program
                .source_info()
                .offset_for(id)
                .and_then(|(s, _)| usize::try_from(s).ok())
                .map_or(start, |s| locate.byte(s));
            errors.at(
                offset,
                format!(
                    "`when` is nested too deeply (more than {MAX_EXPRESSION_DEPTH} levels) to \
                     evaluate safely; split it into simpler rules"
                ),
            );
            return None;
        }

        let work = WorkBound::of(program.expression());
        if !work.allows(MIN_EVALUABLE_ITEM) {
            errors.at(
                start,
                format!(
                    "`when` could do too much work: about {:.1e} steps even for a small item \
                     ({MIN_EVALUABLE_ITEM} units of data), over the limit of {MAX_RULE_WORK:.0e}; \
                     avoid nested loops over the item's lists and functions that multiply sizes",
                    work.at(MIN_EVALUABLE_ITEM)
                ),
            );
            return None;
        }
        Some((source.to_string(), program, work))
    }
}

fn is_recursion_limit(msg: &str) -> bool {
    msg.contains("Recursion limit")
}

/// The parser's messages, made readable where it wraps them in debug output.
fn cel_message(msg: &str) -> String {
    if is_recursion_limit(msg) {
        "expression is nested too deeply".to_string()
    } else {
        msg.to_string()
    }
}

/// Maps positions inside a `when` string to byte offsets in the file.
struct Locator<'s> {
    /// Where the string's content begins in the file, when the content is the value verbatim
    /// (no escapes); otherwise positions fall back to `start`, the opening quote.
    content: Option<usize>,
    start: usize,
    source: &'s str,
}

impl<'s> Locator<'s> {
    fn new(text: &str, start: usize, end: usize, source: &'s str) -> Self {
        let raw = text.get(start..end).unwrap_or("");
        let content = ["'''", "\"\"\"", "'", "\""].iter().find_map(|quote| {
            let inner = raw.strip_prefix(quote)?.strip_suffix(quote)?;
            let mut skip = quote.len();
            // A newline right after a multi-line string's opening quotes is not part of it.
            let inner = if quote.len() == 3 {
                if let Some(rest) = inner.strip_prefix("\r\n") {
                    skip += 2;
                    rest
                } else if let Some(rest) = inner.strip_prefix('\n') {
                    skip += 1;
                    rest
                } else {
                    inner
                }
            } else {
                inner
            };
            (inner == source).then_some(start + skip)
        });
        Locator {
            content,
            start,
            source,
        }
    }

    /// The file offset of a byte offset in the source.
    fn byte(&self, offset: usize) -> usize {
        match self.content {
            Some(content) if offset <= self.source.len() => content + offset,
            _ => self.start,
        }
    }

    /// The file offset of a 1-based line and column (in characters) of the source.
    fn line_column(&self, line: usize, column: usize) -> usize {
        let Some(content) = self.content else {
            return self.start;
        };
        let mut line_start = 0;
        for _ in 1..line {
            match self.source[line_start..].find('\n') {
                Some(i) => line_start += i + 1,
                None => return self.start,
            }
        }
        let line_text = &self.source[line_start..];
        let line_text = &line_text[..line_text.find('\n').unwrap_or(line_text.len())];
        // A column one past the end (an error at end of input) lands just after the text.
        let within = line_text
            .char_indices()
            .nth(column - 1)
            .map_or(line_text.len(), |(i, _)| i);
        content + line_start + within
    }
}

/// The byte offset of the first bracket nested deeper than [`MAX_WHEN_NESTING`], skipping string
/// literals (brackets inside them are text, not nesting).
fn too_deep(source: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_WHEN_NESTING {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            quote @ (b'\'' | b'"') => {
                let raw = i > 0 && matches!(bytes[i - 1], b'r' | b'R');
                let triple = bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]);
                let delimiter_len = if triple { 3 } else { 1 };
                i += delimiter_len;
                while i < bytes.len() {
                    if !raw && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == quote
                        && (!triple || bytes.get(i..i + 3) == Some(&[quote, quote, quote][..]))
                    {
                        i += delimiter_len - 1;
                        break;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The id of the first node deeper than [`MAX_EXPRESSION_DEPTH`], found without recursion.
fn too_deep_tree(root: &IdedExpr) -> Option<u64> {
    let mut stack: Vec<(&IdedExpr, usize)> = vec![(root, 1)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_EXPRESSION_DEPTH {
            return Some(node.id);
        }
        let next = depth + 1;
        match &node.expr {
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    stack.push((target, next));
                }
                stack.extend(call.args.iter().map(|a| (a, next)));
            }
            Expr::Comprehension(c) => {
                for child in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    stack.push((child, next));
                }
            }
            Expr::List(list) => stack.extend(list.elements.iter().map(|e| (e, next))),
            Expr::Map(m) => push_entries(&mut stack, &m.entries, next),
            Expr::Struct(s) => push_entries(&mut stack, &s.entries, next),
            Expr::Select(select) => stack.push((&select.operand, next)),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
    None
}

fn push_entries<'e>(
    stack: &mut Vec<(&'e IdedExpr, usize)>,
    entries: &'e [cel::common::ast::IdedEntryExpr],
    depth: usize,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::MapEntry(e) => {
                stack.push((&e.key, depth));
                stack.push((&e.value, depth));
            }
            EntryExpr::StructField(f) => stack.push((&f.value, depth)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = r#"[[rule]]
name = "large refunds need two approvers"
applies_to = "action"
when = 'action.name == "issue_refund" && action.arguments.amount > 500'
then = "review"
queue = "finance"
approvals = 2
timeout = "2h"
on_timeout = "reject"

[[rule]]
name = "unsure answers escalate"
applies_to = "message"
when = "confidence >= 0.0 && confidence < 0.6"
then = "escalate"

[[rule]]
name = "everything else runs, 5% sampled"
when = "true"
then = "approve"
sample = 0.05
"#;

    /// Owns the JSON an input borrows.
    struct Subject {
        kind: SubjectKind,
        name: String,
        arguments: serde_json::Value,
        text: String,
        confidence: Option<f64>,
        context: serde_json::Value,
    }

    impl Subject {
        fn input(&self) -> PolicyInput<'_> {
            PolicyInput {
                kind: self.kind,
                action_name: &self.name,
                arguments: &self.arguments,
                message_text: &self.text,
                confidence: self.confidence,
                context: &self.context,
                agent: "support-bot",
                conversation_state: "",
                conversation_turns: 0,
            }
        }
    }

    fn action(name: &str, arguments: serde_json::Value) -> Subject {
        Subject {
            kind: SubjectKind::Action,
            name: name.into(),
            arguments,
            text: String::new(),
            confidence: None,
            context: json!({}),
        }
    }

    fn message(text: &str, confidence: Option<f64>) -> Subject {
        Subject {
            kind: SubjectKind::Message,
            name: String::new(),
            arguments: json!({}),
            text: text.into(),
            confidence,
            context: json!({}),
        }
    }

    fn policy(text: &str) -> Policy {
        match Policy::parse(text) {
            Ok(p) => p,
            Err(errors) => panic!("policy should parse: {errors:?}"),
        }
    }

    fn errors(text: &str) -> Vec<PolicyError> {
        match Policy::parse(text) {
            Ok(_) => panic!("policy should not parse:\n{text}"),
            Err(errors) => errors,
        }
    }

    /// The single error of `text`, as (line, column, message).
    fn one_error(text: &str) -> (usize, usize, String) {
        let found = errors(text);
        assert_eq!(found.len(), 1, "expected one error, got {found:?}");
        let e = &found[0];
        (e.line, e.column, e.message.clone())
    }

    fn rule(body: &str) -> String {
        format!("[[rule]]\nname = \"r\"\n{body}")
    }

    #[test]
    fn policy_is_send_sync_and_cheap_to_clone() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Policy>();
        shareable::<Rule>();
    }

    #[test]
    fn example_policy_parses() {
        let p = policy(EXAMPLE);
        let rules = p.rules();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].name, "large refunds need two approvers");
        assert_eq!(rules[0].applies_to, AppliesTo::Action);
        assert_eq!(rules[0].then, Outcome::Review);
        assert_eq!(rules[0].queue, "finance");
        assert_eq!(rules[0].approvals, 2);
        assert_eq!(rules[0].timeout, Some(Duration::from_secs(7200)));
        assert_eq!(rules[0].on_timeout, OnTimeout::Reject);
        assert_eq!(rules[1].applies_to, AppliesTo::Message);
        assert_eq!(rules[1].then, Outcome::Escalate);
        assert_eq!(rules[2].applies_to, AppliesTo::Both);
        assert_eq!(rules[2].then, Outcome::Approve);
        assert_eq!(rules[2].queue, "default");
        assert_eq!(rules[2].priority, 0);
        assert_eq!(rules[2].approvals, 1);
        assert_eq!(rules[2].timeout, None);
        assert_eq!(rules[2].sample, 0.05);
    }

    #[test]
    fn large_refund_goes_to_finance_with_two_approvers() {
        let p = policy(EXAMPLE);
        for amount in [json!(650), json!(650.5), json!(1e9), json!(u64::MAX)] {
            let r = p.evaluate(&action("issue_refund", json!({ "amount": amount })).input());
            assert_eq!(r.outcome, Outcome::Review, "amount {amount}");
            assert_eq!(r.rule.as_deref(), Some("large refunds need two approvers"));
            assert_eq!(r.queue, "finance");
            assert_eq!(r.approvals, 2);
            assert_eq!(r.timeout, Some(Duration::from_secs(2 * 3600)));
            assert_eq!(r.on_timeout, OnTimeout::Reject);
            assert_eq!(r.sample, 0.0);
            assert!(
                r.reason.starts_with(
                    "rule \"large refunds need two approvers\" matched: action.name == \"issue_refund\""
                ),
                "{}",
                r.reason
            );
        }
    }

    #[test]
    fn small_refund_is_approved_and_sampled() {
        let p = policy(EXAMPLE);
        for amount in [json!(20), json!(500), json!(499.99)] {
            let r = p.evaluate(&action("issue_refund", json!({ "amount": amount })).input());
            assert_eq!(r.outcome, Outcome::Approve, "amount {amount}");
            assert_eq!(r.rule.as_deref(), Some("everything else runs, 5% sampled"));
            assert_eq!(r.sample, 0.05);
            assert_eq!(r.queue, "default");
            assert_eq!(r.approvals, 1);
        }
    }

    #[test]
    fn low_confidence_message_escalates() {
        let p = policy(EXAMPLE);
        let r = p.evaluate(&message("I think so?", Some(0.4)).input());
        assert_eq!(r.outcome, Outcome::Escalate);
        assert_eq!(r.rule.as_deref(), Some("unsure answers escalate"));
        let r = p.evaluate(&message("Sure.", Some(0.9)).input());
        assert_eq!(r.outcome, Outcome::Approve);
    }

    #[test]
    fn absent_confidence_is_minus_one_so_the_escalate_rule_does_not_fire() {
        let p = policy(EXAMPLE);
        let r = p.evaluate(&message("Hello", None).input());
        assert_eq!(r.outcome, Outcome::Approve);
        assert_eq!(r.rule.as_deref(), Some("everything else runs, 5% sampled"));
        let p = policy(&rule("when = \"confidence == -1.0\"\nthen = \"review\""));
        let r = p.evaluate(&message("Hello", None).input());
        assert_eq!(r.rule.as_deref(), Some("r"));
    }

    #[test]
    fn message_rules_do_not_see_actions() {
        let p = policy(EXAMPLE);
        let mut low = action("send_email", json!({}));
        low.confidence = Some(0.1);
        let r = p.evaluate(&low.input());
        assert_eq!(r.outcome, Outcome::Approve);
        assert_eq!(r.rule.as_deref(), Some("everything else runs, 5% sampled"));
    }

    #[test]
    fn first_match_wins() {
        let p = policy(
            r#"
[[rule]]
name = "first"
when = "true"
then = "review"
queue = "one"

[[rule]]
name = "second"
when = "true"
then = "approve"
"#,
        );
        let r = p.evaluate(&action("x", json!({})).input());
        assert_eq!(r.rule.as_deref(), Some("first"));
        assert_eq!(r.queue, "one");
        assert_eq!(r.outcome, Outcome::Review);
    }

    #[test]
    fn no_match_goes_to_review() {
        let p = policy(&rule(
            "when = \"action.name == 'nope'\"\nthen = \"approve\"",
        ));
        let expected = Routing {
            outcome: Outcome::Review,
            rule: None,
            reason: "no rule matched; sent to review (fail safe)".into(),
            queue: "default".into(),
            priority: 0,
            approvals: 1,
            timeout: None,
            on_timeout: OnTimeout::Reject,
            sample: 0.0,
        };
        assert_eq!(p.evaluate(&action("x", json!({})).input()), expected);
        assert_eq!(
            Policy::empty().evaluate(&message("hi", None).input()),
            expected
        );
    }

    #[test]
    fn empty_files_are_empty_policies() {
        for text in ["", "\n\n", "# nothing yet\n"] {
            let p = policy(text);
            assert!(p.rules().is_empty());
            assert_eq!(
                p.evaluate(&action("x", json!({})).input()).outcome,
                Outcome::Review
            );
        }
    }

    #[test]
    fn runtime_error_goes_to_review_naming_the_rule() {
        let p = policy(
            r#"
[[rule]]
name = "needs amount"
priority = 5
queue = "finance"
approvals = 2
timeout = "1h"
sample = 0.5
when = "action.arguments.amount > 100"
then = "approve"

[[rule]]
name = "never reached"
when = "true"
then = "approve"
"#,
        );
        let r = p.evaluate(&action("x", json!({ "other": 1 })).input());
        assert_eq!(r.outcome, Outcome::Review);
        assert_eq!(r.rule.as_deref(), Some("needs amount"));
        assert_eq!(
            r.reason,
            "rule \"needs amount\" could not be evaluated (No such key: amount); \
             sent to review (fail safe)"
        );
        assert_eq!(r.queue, "default");
        assert_eq!(r.priority, 0);
        assert_eq!(r.approvals, 1);
        assert_eq!(r.timeout, None);
        assert_eq!(r.sample, 0.0);

        // A type error is a runtime error too.
        let r = p.evaluate(&action("x", json!({ "amount": "lots" })).input());
        assert_eq!(r.rule.as_deref(), Some("needs amount"));
        assert_eq!(r.outcome, Outcome::Review);
    }

    #[test]
    fn non_bool_result_goes_to_review() {
        let p = policy(&rule("when = \"action.name\"\nthen = \"approve\""));
        let r = p.evaluate(&action("x", json!({})).input());
        assert_eq!(r.outcome, Outcome::Review);
        assert_eq!(r.rule.as_deref(), Some("r"));
        assert_eq!(
            r.reason,
            "rule \"r\" could not be evaluated (returned string, not a bool); \
             sent to review (fail safe)"
        );
    }

    #[test]
    fn applies_to_filters_rules() {
        let p = policy(
            r#"
[[rule]]
name = "actions blocked"
applies_to = "action"
when = "true"
then = "block"

[[rule]]
name = "messages held"
applies_to = "message"
when = "true"
then = "review"
"#,
        );
        let r = p.evaluate(&action("x", json!({})).input());
        assert_eq!(
            (r.outcome, r.rule.as_deref()),
            (Outcome::Block, Some("actions blocked"))
        );
        let r = p.evaluate(&message("hi", Some(0.9)).input());
        assert_eq!(
            (r.outcome, r.rule.as_deref()),
            (Outcome::Review, Some("messages held"))
        );
    }

    #[test]
    fn every_variable_is_defined_for_every_subject() {
        let p = policy(
            r#"
[[rule]]
name = "touches everything"
when = '''
message.text.contains("refund") || action.name == "x" && size(action.arguments) == 0
  || agent == "nobody" || conversation.state == "waiting" || conversation.turns > 10
  || context.size() < 0
'''
then = "review"

[[rule]]
name = "fallthrough"
when = "true"
then = "deliver"
"#,
        );
        let r = p.evaluate(&action("y", json!({})).input());
        assert_eq!(r.rule.as_deref(), Some("fallthrough"));
        let r = p.evaluate(&message("hello", None).input());
        assert_eq!(r.rule.as_deref(), Some("fallthrough"));
        let r = p.evaluate(&message("about my refund", None).input());
        assert_eq!(r.rule.as_deref(), Some("touches everything"));
    }

    #[test]
    fn variables_carry_the_input() {
        let p = policy(
            r#"
[[rule]]
name = "all of it"
when = '''
action.name == "pay" && action.arguments.to.iban.startsWith("DE")
  && action.arguments.lines[1] == 2.5 && action.arguments.flag
  && action.arguments.none == null && confidence == 0.75
  && context.tier == "gold" && context.limit == 1000.0
  && agent == "support-bot"
  && conversation.state == "open" && conversation.turns == 3
'''
then = "review"
"#,
        );
        let arguments =
            json!({ "to": { "iban": "DE89" }, "lines": [1, 2.5], "flag": true, "none": null });
        let context = json!({ "tier": "gold", "limit": 1000 });
        let input = PolicyInput {
            kind: SubjectKind::Action,
            action_name: "pay",
            arguments: &arguments,
            message_text: "",
            confidence: Some(0.75),
            context: &context,
            agent: "support-bot",
            conversation_state: "open",
            conversation_turns: 3,
        };
        assert_eq!(p.evaluate(&input).rule.as_deref(), Some("all of it"));
        assert_eq!(p.evaluate(&input).outcome, Outcome::Review);
    }

    #[test]
    fn strings_extension_is_available() {
        let p = policy(
            "[[rule]]\nname = \"shouting\"\napplies_to = \"message\"\n\
             when = \"message.text.lowerAscii().contains('refund')\"\nthen = \"review\"\n",
        );
        let r = p.evaluate(&message("I WANT A REFUND", None).input());
        assert_eq!(r.rule.as_deref(), Some("shouting"));
    }

    #[test]
    fn then_values_per_scope() {
        let ok = |applies: &str, then: &str, expected: Outcome| {
            let applies = if applies.is_empty() {
                String::new()
            } else {
                format!("applies_to = \"{applies}\"\n")
            };
            let p = policy(&rule(&format!(
                "{applies}when = \"true\"\nthen = \"{then}\"\n"
            )));
            assert_eq!(p.rules()[0].then, expected, "{applies} {then}");
        };
        ok("action", "approve", Outcome::Approve);
        ok("action", "review", Outcome::Review);
        ok("action", "block", Outcome::Block);
        ok("message", "deliver", Outcome::Approve);
        ok("message", "review", Outcome::Review);
        ok("message", "escalate", Outcome::Escalate);
        ok("", "approve", Outcome::Approve);
        ok("", "deliver", Outcome::Approve);
        ok("", "review", Outcome::Review);
    }

    #[test]
    fn error_toml_syntax() {
        let (line, column, message) = one_error("[[rule]]\nname = \"a\nwhen = \"true\"\n");
        assert_eq!((line, column), (2, 10));
        assert!(message.starts_with("invalid TOML"), "{message}");
        let (line, column, _) = one_error("[[rule]]\nname = a\n");
        assert_eq!((line, column), (2, 8));
    }

    #[test]
    fn error_unknown_key() {
        let text = rule("when = \"true\"\nthen = \"review\"\n  fooo = 1\n");
        let (line, column, message) = one_error(&text);
        assert_eq!((line, column), (5, 3));
        assert!(message.contains("unknown key `fooo`"), "{message}");
        let (line, column, message) =
            one_error("version = 2\n[[rule]]\nname = \"r\"\nwhen = \"true\"\nthen = \"review\"\n");
        assert_eq!((line, column), (1, 1));
        assert!(
            message.contains("unknown top-level key `version`"),
            "{message}"
        );
    }

    #[test]
    fn error_bad_then() {
        let (line, column, message) = one_error(&rule("when = \"true\"\nthen = \"maybe\"\n"));
        assert_eq!((line, column), (4, 8));
        assert_eq!(
            message,
            "invalid then \"maybe\" for a rule for both actions and messages; \
             expected one of: approve, deliver, review"
        );
        let (_, _, message) = one_error(&rule(
            "applies_to = \"action\"\nwhen = \"true\"\nthen = \"maybe\"\n",
        ));
        assert!(
            message.ends_with("expected one of: approve, review, block"),
            "{message}"
        );
        let (_, _, message) = one_error(&rule(
            "applies_to = \"message\"\nwhen = \"true\"\nthen = \"block\"\n",
        ));
        assert!(message.contains("is for actions"), "{message}");
        let (line, column, message) = one_error(&rule("when = \"true\"\nthen = 3\n"));
        assert_eq!((line, column), (4, 8));
        assert!(message.contains("must be a string"), "{message}");
    }

    #[test]
    fn error_block_or_escalate_on_a_rule_for_both() {
        let (line, column, message) = one_error(&rule("when = \"true\"\nthen = \"block\"\n"));
        assert_eq!((line, column), (4, 8));
        assert!(message.contains("applies_to = \"action\""), "{message}");
        let (line, column, message) =
            one_error(&rule("when = \"true\"\nthen   =   \"escalate\"\n"));
        assert_eq!((line, column), (4, 12));
        assert!(message.contains("applies_to = \"message\""), "{message}");
    }

    #[test]
    fn error_sample_out_of_range() {
        let (line, column, message) =
            one_error(&rule("when = \"true\"\nthen = \"approve\"\nsample = 1.5\n"));
        assert_eq!((line, column), (5, 10));
        assert_eq!(message, "`sample` must be between 0 and 1, not 1.5");
        one_error(&rule(
            "when = \"true\"\nthen = \"approve\"\nsample = -0.1\n",
        ));
        one_error(&rule("when = \"true\"\nthen = \"approve\"\nsample = nan\n"));
        one_error(&rule(
            "when = \"true\"\nthen = \"approve\"\nsample = \"5%\"\n",
        ));
        let p = policy(&rule("when = \"true\"\nthen = \"approve\"\nsample = 1\n"));
        assert_eq!(p.rules()[0].sample, 1.0);
    }

    #[test]
    fn error_other_values() {
        let cases = [
            ("queue = \"has space\"", "invalid queue"),
            ("queue = \"\"", "invalid queue"),
            ("approvals = 0", "`approvals` must be between 1 and 10"),
            ("approvals = 11", "`approvals` must be between 1 and 10"),
            ("approvals = 1.5", "`approvals` must be an integer"),
            ("priority = \"high\"", "`priority` must be an integer"),
            ("timeout = \"soon\"", "invalid timeout"),
            ("timeout = \"0s\"", "longer than zero"),
            ("timeout = \"400days\"", "at most 366 days"),
            ("on_timeout = \"ignore\"", "invalid on_timeout"),
            ("applies_to = \"users\"", "invalid applies_to"),
        ];
        for (line_text, expected) in cases {
            let text = rule(&format!(
                "when = \"true\"\nthen = \"review\"\n{line_text}\n"
            ));
            let (line, column, message) = one_error(&text);
            let value_column = line_text.find(" = ").map_or(0, |i| i + 4);
            assert_eq!((line, column), (5, value_column), "{line_text}");
            assert!(message.contains(expected), "{line_text}: {message}");
        }
        let p = policy(&rule(
            "when = \"true\"\nthen = \"review\"\nqueue = \"tier-2.eu_west\"\npriority = -3\n\
             timeout = \"1h 30m\"\non_timeout = \"escalate\"\n",
        ));
        let r = &p.rules()[0];
        assert_eq!(r.queue, "tier-2.eu_west");
        assert_eq!(r.priority, -3);
        assert_eq!(r.timeout, Some(Duration::from_secs(5400)));
        assert_eq!(r.on_timeout, OnTimeout::Escalate);
    }

    #[test]
    fn error_duplicate_name() {
        let text = "[[rule]]\nname = \"same\"\nwhen = \"true\"\nthen = \"review\"\n\n\
                    [[rule]]\nname   = \"same\"\nwhen = \"true\"\nthen = \"review\"\n";
        let (line, column, message) = one_error(text);
        assert_eq!((line, column), (7, 10));
        assert!(
            message.contains("duplicate rule name \"same\""),
            "{message}"
        );
    }

    #[test]
    fn error_cel_syntax_at_its_column() {
        // The error is at the third `&`: column 12 of the expression, which starts at column 9.
        let (line, column, message) =
            one_error(&rule("when = \"a == 'x' &&& b\"\nthen = \"review\"\n"));
        assert_eq!((line, column), (3, 20));
        assert!(message.starts_with("invalid `when`: "), "{message}");

        // At the end of input: the closing quote.
        let (line, column, _) = one_error(&rule("when = 'action.name == '\nthen = \"review\"\n"));
        assert_eq!((line, column), (3, 24));

        // Inside a multi-line literal string, on its second line.
        let text = rule("when = '''\naction.name == \"é\" &&\n   )'''\nthen = \"review\"\n");
        let (line, column, _) = one_error(&text);
        assert_eq!((line, column), (5, 4));

        // With escapes the offset inside the value is not the offset in the file: the start of
        // the string is reported instead.
        let (line, column, _) = one_error(&rule(
            "when = \"a == \\\"x\\\" &&& b\"\nthen = \"review\"\n",
        ));
        assert_eq!((line, column), (3, 8));

        // Characters before the error are counted as characters, not bytes.
        let (line, column, _) = one_error(&rule("when = \"'héllo' == )\"\nthen = \"review\"\n"));
        assert_eq!((line, column), (3, 20));
    }

    #[test]
    fn error_missing_required_keys() {
        let text = "# policy\n\n[[rule]]\nqueue = \"q\"\n";
        let found = errors(text);
        let got: Vec<_> = found
            .iter()
            .map(|e| (e.line, e.column, e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, 1, "rule #1 is missing the required key `name`"),
                (3, 1, "rule #1 is missing the required key `when`"),
                (3, 1, "rule #1 is missing the required key `then`"),
            ]
        );
        let (line, column, message) =
            one_error("[[rule]]\nname = \"  \"\nwhen = \"true\"\nthen = \"review\"\n");
        assert_eq!((line, column), (2, 8));
        assert!(message.contains("must not be empty"), "{message}");
        let (_, _, message) = one_error(&rule("when = \" \"\nthen = \"review\"\n"));
        assert!(message.contains("must not be empty"), "{message}");
    }

    #[test]
    fn collects_every_error_in_file_order() {
        let text = r#"[[rule]]
name = "one"
when = "action.name =="
then = "review"

[[rule]]
name = "two"
when = "true"
then = "approve"
sample = 2

[[rule]]
name = "three"
when = "(((a)"
then = "nope"
"#;
        let found = errors(text);
        let positions: Vec<_> = found.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(
            positions,
            vec![(3, 23), (10, 10), (14, 14), (15, 8)],
            "{found:#?}"
        );
        assert_eq!(found[0].to_string(), format!("3:23: {}", found[0].message));
    }

    #[test]
    fn error_display_is_line_colon_column() {
        let e = PolicyError {
            line: 4,
            column: 7,
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "4:7: bad");
    }

    #[test]
    fn overlong_when_is_rejected() {
        let long = format!("{}true", "true && ".repeat(600));
        let (line, column, message) =
            one_error(&rule(&format!("when = \"{long}\"\nthen = \"review\"\n")));
        assert_eq!((line, column), (3, 8));
        assert!(message.contains("longer than 4096"), "{message}");
    }

    #[test]
    fn deep_nesting_is_rejected_without_crashing() {
        for when in [
            format!("{}true{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}true{}", "[".repeat(65), "]".repeat(65)),
            format!("{}1{}", "{1: ".repeat(65), "}".repeat(65)),
            format!("{}true{}", "size(".repeat(200), ")".repeat(200)),
        ] {
            let text = rule(&format!("when = \"{when}\"\nthen = \"review\"\n"));
            let (line, _, message) = one_error(&text);
            assert_eq!(line, 3);
            assert!(
                message.contains("deeper") || message.contains("longer"),
                "{message}"
            );
        }
        // The offending bracket is pointed at.
        let when = format!("{}true{}", "(".repeat(70), ")".repeat(70));
        let (_, column, _) = one_error(&rule(&format!("when = \"{when}\"\nthen = \"review\"\n")));
        assert_eq!(column, 9 + MAX_WHEN_NESTING);
        // Brackets inside string literals are text.
        let when = format!("action.name == '{}'", "(".repeat(100));
        policy(&rule(&format!("when = \"{when}\"\nthen = \"review\"\n")));
        // Deep trees without brackets: long chains and ternaries.
        for when in [
            format!("1{} > 0", " + 1".repeat(200)),
            format!("true{}", " ? true : true".repeat(200)),
        ] {
            let text = rule(&format!("when = \"{when}\"\nthen = \"review\"\n"));
            let (line, _, message) = one_error(&text);
            assert_eq!(line, 3);
            assert!(message.contains("deep"), "{message}");
        }
        // Repeated unary operators fold into a shallow tree: accepted, and harmless.
        let p = policy(&rule(&format!(
            "when = \"{}true\"\nthen = \"review\"\n",
            "!".repeat(3000)
        )));
        let evaluated = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || p.evaluate(&action("x", json!({})).input()).rule)
            .map(|h| h.join());
        assert!(matches!(evaluated, Ok(Ok(Some(_)))), "{evaluated:?}");
        // Deep TOML is the TOML parser's to refuse.
        let text = format!("x = {}{}\n", "[".repeat(1000), "]".repeat(1000));
        let (_, _, message) = one_error(&text);
        assert!(message.starts_with("invalid TOML"), "{message}");
    }

    /// Whatever passes the depth limits evaluates within a tokio worker's 2 MiB stack.
    #[test]
    fn accepted_expressions_evaluate_on_a_small_stack() {
        let shapes: [fn(usize) -> String; 4] = [
            |k| format!("{}1{} != []", "[".repeat(k), "]".repeat(k)),
            |k| format!("1{} > 0", " + 1".repeat(k)),
            |k| format!("{}'a'{} == 'a'", "string(".repeat(k), ")".repeat(k)),
            |k| format!("{}true{}", "[1].all(x, ".repeat(k), ")".repeat(k)),
        ];
        for shape in shapes {
            // The deepest accepted instance of this shape.
            let mut deepest = None;
            for k in 1..=MAX_EXPRESSION_DEPTH {
                match Policy::parse(&rule(&format!(
                    "when = \"{}\"\nthen = \"review\"\n",
                    shape(k)
                ))) {
                    Ok(p) => deepest = Some(p),
                    Err(_) => break,
                }
            }
            let Some(p) = deepest else {
                panic!("no instance of {} parses", shape(1))
            };
            let routing = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || p.evaluate(&action("x", json!({})).input()))
                .and_then(|h| h.join().map_err(|_| std::io::Error::other("panicked")));
            let routing = match routing {
                Ok(r) => r,
                Err(e) => panic!("evaluation failed: {e}"),
            };
            assert_eq!(routing.rule.as_deref(), Some("r"), "{}", routing.reason);
        }
    }

    #[test]
    fn parses_on_a_small_stack() {
        // Callers run on tokio workers; parsing must not depend on their stack.
        let text = rule(&format!(
            "when = \"{}true{}\"\nthen = \"review\"\n",
            "(".repeat(MAX_WHEN_NESTING),
            ")".repeat(MAX_WHEN_NESTING)
        ));
        let parsed = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || Policy::parse(&text).map(|p| p.rules().len()))
            .map(|h| h.join());
        assert!(matches!(parsed, Ok(Ok(Ok(1)))), "{parsed:?}");
    }

    #[test]
    fn sampled_is_deterministic_with_the_right_rate() {
        let ids: Vec<uuid::Uuid> = (0..10_000u128).map(uuid::Uuid::from_u128).collect();
        for id in ids.iter().take(100) {
            assert_eq!(sampled(id, 0.3), sampled(id, 0.3));
            assert!(!sampled(id, 0.0));
            assert!(sampled(id, 1.0));
            assert!(!sampled(id, f64::NAN));
        }
        for (rate, low, high) in [(0.05, 400, 600), (0.5, 4800, 5200), (0.9, 8850, 9150)] {
            let hits = ids.iter().filter(|id| sampled(id, rate)).count();
            assert!((low..=high).contains(&hits), "rate {rate}: {hits} of 10000");
        }
        // Monotone in the rate: an item sampled at 5% is sampled at 10%.
        assert!(ids
            .iter()
            .filter(|id| sampled(id, 0.05))
            .all(|id| sampled(id, 0.10)));
    }

    #[test]
    fn sampled_uses_the_first_eight_bytes_of_sha256() {
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let digest = Sha256::digest(id.as_bytes());
        let x = u64::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ]);
        let share = x as f64 / 2f64.powi(64);
        assert!(sampled(&id, (share + 0.001).min(1.0)) || share > 0.999);
        assert!(!sampled(&id, share) || share == 0.0);
    }

    #[test]
    fn enums_serialize_lowercase() {
        assert_eq!(
            serde_json::to_string(&Outcome::Approve).ok().as_deref(),
            Some("\"approve\"")
        );
        assert_eq!(
            serde_json::to_string(&Outcome::Escalate).ok().as_deref(),
            Some("\"escalate\"")
        );
        assert_eq!(
            serde_json::to_string(&OnTimeout::Reject).ok().as_deref(),
            Some("\"reject\"")
        );
        assert_eq!(
            serde_json::from_str::<Outcome>("\"block\"").ok(),
            Some(Outcome::Block)
        );
        assert_eq!(
            serde_json::from_str::<Outcome>("\"deliver\"").ok(),
            Some(Outcome::Approve)
        );
        assert_eq!(
            serde_json::from_str::<OnTimeout>("\"escalate\"").ok(),
            Some(OnTimeout::Escalate)
        );
        for o in [
            Outcome::Approve,
            Outcome::Review,
            Outcome::Block,
            Outcome::Escalate,
        ] {
            assert_eq!(serde_json::to_value(o).ok(), Some(json!(o.as_str())));
        }
        for o in [OnTimeout::Approve, OnTimeout::Reject, OnTimeout::Escalate] {
            assert_eq!(serde_json::to_value(o).ok(), Some(json!(o.as_str())));
        }
    }

    #[test]
    fn reasons_quote_long_conditions_on_one_line() {
        let when = format!(
            "true ||\n  {}",
            "action.name == 'x' || ".repeat(20) + "false"
        );
        let p = policy(&rule(&format!("when = '''{when}'''\nthen = \"review\"\n")));
        let r = p.evaluate(&action("y", json!({})).input());
        assert!(
            r.reason
                .starts_with("rule \"r\" matched: true || action.name"),
            "{}",
            r.reason
        );
        assert!(r.reason.ends_with('…'));
        assert!(!r.reason.contains('\n'));
    }
}
