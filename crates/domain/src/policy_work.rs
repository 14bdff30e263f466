//! A static bound on the work a policy `when` can do, as a function of the size of the item it
//! looks at, computed once per rule at compile time and checked before each evaluation.
//!
//! CEL cannot loop forever, but its macros (`all`, `exists`, `exists_one`, `map`, `filter`) loop
//! over lists and maps taken from the item, they nest, and some functions multiply sizes:
//! `items.all(x, items.all(y, x == y))` is quadratic in the item and `s.replace('', s)` builds a
//! string quadratic in `s`. Expression length and nesting are already limited at parse time; this
//! module bounds what is left, the dependence on the item's data.
//!
//! The bound is a polynomial in `N`, the item's size (see [`item_size`]): every value counts 1,
//! plus the bytes of its strings and map keys. For each node the analysis bounds the size of the
//! value it yields and the work of computing it (values touched, bytes compared or copied), in
//! terms of `N` and of the sizes of the loop variables in scope. A loop's work is the sum of its
//! body's work over the elements; since the elements' sizes add up to at most the range's size,
//! a body linear in its element (`x.price < 100`) sums to a linear loop, while a body that reads
//! something of the item's size on every turn (`items.all(y, x == y)`, `big.contains(x)`) sums to
//! a quadratic one. The bound is an over-estimate by design: it never lets a rule run whose true
//! work is above it.

use cel::common::ast::{operators, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue};

use crate::policy::PolicyInput;

/// Most work units a rule may spend on one item. A unit is about one value visited or a few bytes
/// compared; an optimised build does about 40 million a second on a linear loop (the bound of a
/// nested loop over-estimates it by far more), so this caps one rule at about a second.
pub const MAX_RULE_WORK: f64 = 50_000_000.0;

/// Most work units all the rules evaluated for one item may spend together, so that a policy of
/// many costly rules is bounded too.
pub const MAX_ITEM_WORK: f64 = 4.0 * MAX_RULE_WORK;

/// The item size every rule must be able to evaluate: a rule whose bound is over
/// [`MAX_RULE_WORK`] even for an item this small is rejected when the policy is parsed, since it
/// would send nearly everything to review.
pub const MIN_EVALUABLE_ITEM: f64 = 512.0;

/// Terms kept in one polynomial before like-shaped terms are merged into one upper bound.
const MAX_TERMS: usize = 24;

/// Output of rendering functions (`string`, `format`, `strings.quote`) per unit of input: quotes,
/// escapes and number digits.
const RENDER_FACTOR: f64 = 10.0;

/// The largest output of one `format` clause (`%.100f` of 1e308), per character of the format.
const FORMAT_CLAUSE_CHARS: f64 = 512.0;

/// The work bound of one compiled `when`, closed over everything but the item's size.
#[derive(Debug, Clone)]
pub(crate) struct WorkBound {
    work: Poly,
}

impl WorkBound {
    /// Analyses a compiled expression.
    pub(crate) fn of(expr: &IdedExpr) -> WorkBound {
        let mut analysis = Analysis {
            scopes: Vec::new(),
            next_var: 0,
        };
        WorkBound {
            work: analysis.expr(expr).work,
        }
    }

    /// The bound for an item of `item_size` units. May be infinite; never NaN for a finite size.
    pub(crate) fn at(&self, item_size: f64) -> f64 {
        self.work.at(item_size.max(1.0))
    }

    /// Whether a rule with this bound may run on an item of `item_size` units.
    pub(crate) fn allows(&self, item_size: f64) -> bool {
        // Written so that NaN refuses.
        self.at(item_size) <= MAX_RULE_WORK
    }
}

/// The size of an item in the units of [`WorkBound`]: its strings' bytes and its JSON values.
pub(crate) fn item_size(input: &PolicyInput<'_>) -> f64 {
    let strings = input.action_name.len()
        + input.message_text.len()
        + input.agent.len()
        + input.conversation_state.len();
    // The fixed variables (`action`, `message`, `conversation`, `confidence`...) and their keys.
    let fixed = 64;
    (strings + fixed) as f64 + json_size(input.arguments) + json_size(input.context)
}

/// 1 per value, plus the bytes of strings and keys; iterative, so any depth is fine.
fn json_size(value: &serde_json::Value) -> f64 {
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        total += 1;
        match value {
            serde_json::Value::String(s) => total += s.len(),
            serde_json::Value::Array(items) => stack.extend(items.iter()),
            serde_json::Value::Object(fields) => {
                for (key, value) in fields {
                    total += 1 + key.len();
                    stack.push(value);
                }
            }
            serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
            }
        }
    }
    total as f64
}

// ---------------------------------------------------------------------------------------------
// Polynomials with non-negative coefficients in N and the loop variables' sizes

/// `coef · N^n · Π var^exp`. Every size is at least 1, so a term with larger exponents bounds one
/// with smaller: that is what lets [`Poly::normalize`] merge terms into an upper bound.
#[derive(Debug, Clone, PartialEq)]
struct Term {
    coef: f64,
    n: u32,
    /// (variable id, exponent ≥ 1), sorted by id.
    vars: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Poly(Vec<Term>);

impl Poly {
    fn constant(c: f64) -> Poly {
        Poly(vec![Term {
            coef: c,
            n: 0,
            vars: Vec::new(),
        }])
    }

    fn item() -> Poly {
        Poly(vec![Term {
            coef: 1.0,
            n: 1,
            vars: Vec::new(),
        }])
    }

    fn var(id: u32) -> Poly {
        Poly(vec![Term {
            coef: 1.0,
            n: 0,
            vars: vec![(id, 1)],
        }])
    }

    fn infinite() -> Poly {
        Poly::constant(f64::INFINITY)
    }

    fn add(&self, other: &Poly) -> Poly {
        let mut terms = self.0.clone();
        terms.extend(other.0.iter().cloned());
        Poly::normalize(terms)
    }

    fn plus(&self, c: f64) -> Poly {
        self.add(&Poly::constant(c))
    }

    fn scale(&self, c: f64) -> Poly {
        Poly(
            self.0
                .iter()
                .map(|t| Term {
                    coef: t.coef * c,
                    ..t.clone()
                })
                .collect(),
        )
    }

    fn mul(&self, other: &Poly) -> Poly {
        let mut terms = Vec::with_capacity(self.0.len() * other.0.len());
        for a in &self.0 {
            for b in &other.0 {
                terms.push(Term {
                    coef: a.coef * b.coef,
                    n: a.n.saturating_add(b.n),
                    vars: merge_vars(&a.vars, &b.vars),
                });
            }
        }
        Poly::normalize(terms)
    }

    fn pow(&self, k: u32) -> Poly {
        let mut result = Poly::constant(1.0);
        for _ in 0..k {
            result = result.mul(self);
        }
        result
    }

    /// Σ over the elements of a range of size `range` of this polynomial, where `var` is the
    /// element's size: the elements' sizes add up to at most `range`, and there are at most
    /// `range` of them. So `var^k` (k ≥ 1) sums to at most `range^k`, and a term without `var`
    /// is paid once per element.
    fn sum_over(&self, var: u32, range: &Poly) -> Poly {
        let mut total = Poly::default();
        for term in &self.0 {
            let (rest, k) = term.without(var);
            let factor = if k == 0 { range.clone() } else { range.pow(k) };
            total = total.add(&Poly(vec![rest]).mul(&factor));
        }
        total
    }

    /// This polynomial with `var` bounded by `bound`.
    fn substitute(&self, var: u32, bound: &Poly) -> Poly {
        let mut total = Poly::default();
        for term in &self.0 {
            let (rest, k) = term.without(var);
            total = total.add(&Poly(vec![rest]).mul(&bound.pow(k)));
        }
        total
    }

    /// Merges terms of the same shape; past [`MAX_TERMS`], bounds them all by one term with the
    /// largest exponents seen (sound because every size is at least 1).
    fn normalize(terms: Vec<Term>) -> Poly {
        let mut merged: Vec<Term> = Vec::with_capacity(terms.len());
        for term in terms {
            match merged
                .iter_mut()
                .find(|m| m.n == term.n && m.vars == term.vars)
            {
                Some(m) => m.coef += term.coef,
                None => merged.push(term),
            }
        }
        if merged.len() <= MAX_TERMS {
            return Poly(merged);
        }
        let mut bound = Term {
            coef: 0.0,
            n: 0,
            vars: Vec::new(),
        };
        for term in merged {
            bound.coef += term.coef;
            bound.n = bound.n.max(term.n);
            for (id, exp) in term.vars {
                match bound.vars.iter_mut().find(|(v, _)| *v == id) {
                    Some((_, e)) => *e = (*e).max(exp),
                    None => bound.vars.push((id, exp)),
                }
            }
        }
        bound.vars.sort_unstable();
        Poly(vec![bound])
    }

    /// The value for an item of size `n`, with any loop variable left (none is, at the top)
    /// bounded by `n` too.
    fn at(&self, n: f64) -> f64 {
        self.0
            .iter()
            .map(|t| {
                let degree = t.n + t.vars.iter().map(|(_, e)| e).sum::<u32>();
                t.coef * n.powi(i32::try_from(degree).unwrap_or(i32::MAX))
            })
            .sum()
    }

    /// How fast this grows, to pick the smaller of two bounds: the degree in N, then in all.
    fn rank(&self) -> (u32, u32, u64) {
        let n = self.0.iter().map(|t| t.n).max().unwrap_or(0);
        let all = self
            .0
            .iter()
            .map(|t| t.n + t.vars.iter().map(|(_, e)| e).sum::<u32>())
            .max()
            .unwrap_or(0);
        let coefs: f64 = self.0.iter().map(|t| t.coef).sum();
        (n, all, coefs.min(u64::MAX as f64) as u64)
    }

    /// One of the two, as a bound on their minimum: the one that grows slower.
    fn min_bound(a: &Poly, b: &Poly) -> Poly {
        if a.rank() <= b.rank() {
            a.clone()
        } else {
            b.clone()
        }
    }
}

impl Term {
    fn without(&self, var: u32) -> (Term, u32) {
        let mut rest = self.clone();
        let mut k = 0;
        rest.vars.retain(|(id, exp)| {
            if *id == var {
                k = *exp;
                false
            } else {
                true
            }
        });
        (rest, k)
    }
}

fn merge_vars(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = a.to_vec();
    for &(id, exp) in b {
        match out.iter_mut().find(|(v, _)| *v == id) {
            Some((_, e)) => *e = e.saturating_add(exp),
            None => out.push((id, exp)),
        }
    }
    out.sort_unstable();
    out
}

// ---------------------------------------------------------------------------------------------
// The analysis

/// Bounds for one node: the size of its value and the work to compute it (its children's
/// included).
struct Cost {
    size: Poly,
    work: Poly,
}

impl Cost {
    fn scalar(work: Poly) -> Cost {
        Cost {
            size: Poly::constant(1.0),
            work,
        }
    }
}

struct Analysis {
    /// Names bound by enclosing loops (iteration variables, accumulators), innermost last.
    scopes: Vec<(String, Poly)>,
    next_var: u32,
}

impl Analysis {
    fn expr(&mut self, e: &IdedExpr) -> Cost {
        match &e.expr {
            Expr::Unspecified => Cost::scalar(Poly::constant(1.0)),
            Expr::Literal(literal) => {
                let bytes = match literal {
                    LiteralValue::String(s) => s.len(),
                    LiteralValue::Bytes(b) => b.len(),
                    _ => 0,
                };
                Cost {
                    size: Poly::constant(1.0 + bytes as f64),
                    work: Poly::constant(1.0),
                }
            }
            Expr::Ident(name) => {
                // A loop's name shadows a variable; anything else is one of the item's variables
                // (or an unknown name, an error at run time), at most the whole item.
                let size = self
                    .scopes
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map_or_else(Poly::item, |(_, size)| size.clone());
                Cost {
                    size,
                    work: Poly::constant(1.0),
                }
            }
            Expr::Select(select) => {
                let operand = self.expr(&select.operand);
                let size = if select.test {
                    Poly::constant(1.0)
                } else {
                    operand.size
                };
                Cost {
                    size,
                    work: operand.work.plus(1.0),
                }
            }
            Expr::List(list) => self.collection(list.elements.iter()),
            Expr::Map(map) => self.collection(entries(&map.entries)),
            Expr::Struct(s) => self.collection(entries(&s.entries)),
            Expr::Call(call) => {
                let parts: Vec<Cost> = call
                    .target
                    .iter()
                    .map(|t| &**t)
                    .chain(call.args.iter())
                    .map(|a| self.expr(a))
                    .collect();
                call_cost(&call.func_name, call.target.is_some(), parts)
            }
            Expr::Comprehension(c) => self.comprehension(c),
        }
    }

    fn collection<'e>(&mut self, parts: impl Iterator<Item = &'e IdedExpr>) -> Cost {
        let mut size = Poly::constant(1.0);
        let mut work = Poly::constant(1.0);
        for part in parts {
            let cost = self.expr(part);
            size = size.add(&cost.size);
            work = work.add(&cost.work).plus(1.0);
        }
        Cost { size, work }
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> Cost {
        let range = self.expr(&c.iter_range);
        let init = self.expr(&c.accu_init);
        let var = self.next_var;
        self.next_var += 1;
        let depth = self.scopes.len();
        // The accumulator is bound outside the loop variables: the result sees it too.
        self.scopes.push((c.accu_var.clone(), Poly::constant(1.0)));
        self.scopes.push((c.iter_var.clone(), Poly::var(var)));
        if let Some(second) = &c.iter_var2 {
            // Key and value (or index and element) each fit in the entry.
            self.scopes.push((second.clone(), Poly::var(var)));
        }

        let cost = if let Some((guard, items)) = append_step(c) {
            // `map` / `filter`: the interpreter appends to one list in place.
            let guard = guard.map(|g| self.expr(g).work).unwrap_or_default();
            let items = self.expr(items);
            let turn = guard.add(&items.work).add(&items.size).plus(2.0);
            Cost {
                size: items.size.sum_over(var, &range.size).plus(1.0),
                work: turn.sum_over(var, &range.size),
            }
        } else if scalar_literal(&c.accu_init) {
            // `all`, `exists`, `exists_one`: a bool or int accumulator.
            let cond = self.expr(&c.loop_cond);
            let step = self.expr(&c.loop_step);
            let result = self.expr(&c.result);
            let turn = cond.work.add(&step.work).plus(1.0);
            Cost {
                size: result.size.substitute(var, &range.size),
                work: turn
                    .sum_over(var, &range.size)
                    .add(&result.work.substitute(var, &range.size)),
            }
        } else {
            // The standard macros make no other shape; anything else is not bounded.
            Cost {
                size: Poly::infinite(),
                work: Poly::infinite(),
            }
        };
        self.scopes.truncate(depth);
        Cost {
            size: cost.size,
            work: cost.work.add(&range.work).add(&init.work).plus(1.0),
        }
    }
}

fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> impl Iterator<Item = &IdedExpr> {
    entries.iter().flat_map(|entry| match &entry.expr {
        EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
        EntryExpr::StructField(f) => vec![&f.value],
    })
}

/// The guard and the appended list of a `map` / `filter` step, as the interpreter recognises
/// them: `@result + [e]` or `g ? @result + [e] : @result`, with `@result` as the result.
fn append_step(c: &ComprehensionExpr) -> Option<(Option<&IdedExpr>, &IdedExpr)> {
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    fn appended<'e>(e: &'e IdedExpr, is_accu: &dyn Fn(&IdedExpr) -> bool) -> Option<&'e IdedExpr> {
        match &e.expr {
            Expr::Call(call) if call.func_name == operators::ADD && call.target.is_none() => {
                match call.args.as_slice() {
                    [lhs, rhs] if is_accu(lhs) && matches!(rhs.expr, Expr::List(_)) => Some(rhs),
                    _ => None,
                }
            }
            _ => None,
        }
    }
    if !is_accu(&c.result) || !matches!(c.accu_init.expr, Expr::List(_)) {
        return None;
    }
    match &c.loop_step.expr {
        Expr::Call(call) if call.func_name == operators::CONDITIONAL && call.target.is_none() => {
            match call.args.as_slice() {
                [guard, step, otherwise] if is_accu(otherwise) => {
                    Some((Some(guard), appended(step, &is_accu)?))
                }
                _ => None,
            }
        }
        _ => Some((None, appended(&c.loop_step, &is_accu)?)),
    }
}

fn scalar_literal(e: &IdedExpr) -> bool {
    matches!(
        &e.expr,
        Expr::Literal(
            LiteralValue::Boolean(_)
                | LiteralValue::Int(_)
                | LiteralValue::UInt(_)
                | LiteralValue::Double(_)
                | LiteralValue::Null
        )
    )
}

/// The cost of a call from its operands' costs (the receiver first, when there is one).
fn call_cost(name: &str, has_target: bool, parts: Vec<Cost>) -> Cost {
    let one = || Poly::constant(1.0);
    let size = |i: usize| parts.get(i).map_or_else(one, |p| p.size.clone());
    let all_sizes = parts
        .iter()
        .fold(Poly::default(), |acc, p| acc.add(&p.size));
    let children = parts
        .iter()
        .fold(Poly::constant(1.0), |acc, p| acc.add(&p.work));
    let rendered = all_sizes.scale(RENDER_FACTOR).plus(32.0);

    // (size of the result, work of the call itself)
    let (out, own) = match name {
        operators::LOGICAL_AND
        | operators::LOGICAL_OR
        | operators::LOGICAL_NOT
        | operators::NOT_STRICTLY_FALSE
        | operators::SUBSTRACT
        | operators::MULTIPLY
        | operators::DIVIDE
        | operators::MODULO
        | operators::NEGATE => (one(), one()),
        operators::CONDITIONAL => (size(1).add(&size(2)), one()),
        // Strings and lists are copied into the result.
        operators::ADD => (all_sizes.clone(), all_sizes.clone()),
        // Comparisons stop at the shorter operand.
        operators::EQUALS
        | operators::NOT_EQUALS
        | operators::LESS
        | operators::LESS_EQUALS
        | operators::GREATER
        | operators::GREATER_EQUALS => (one(), Poly::min_bound(&size(0), &size(1)).plus(1.0)),
        // A list is scanned (each comparison stops at the shorter side); a map hashes the key.
        operators::IN => (one(), all_sizes.clone()),
        operators::INDEX | operators::OPT_INDEX => (size(0), size(1).plus(1.0)),
        operators::OPT_SELECT => (size(0), one()),
        "size" | "int" | "uint" | "double" | "bool" | "type" | "duration" | "timestamp"
        | "contains" | "isNaN" | "isInf" | "isFinite" => (one(), all_sizes.plus(1.0)),
        "startsWith" | "endsWith" => (one(), Poly::min_bound(&size(0), &size(1)).plus(1.0)),
        // Naive searches over code points, and regex matching: product of the two.
        "indexOf" | "lastIndexOf" | "matches" => (
            one(),
            size(0)
                .mul(&size(1))
                .add(&size(1).scale(64.0))
                .add(&size(0)),
        ),
        "lowerAscii" | "upperAscii" | "trim" | "reverse" | "substring" | "charAt" if has_target => {
            (size(0), all_sizes.clone())
        }
        "split" if has_target => {
            let pieces = size(0).scale(2.0).plus(2.0);
            (pieces.clone(), pieces.add(&size(1)))
        }
        // An empty pattern inserts the replacement between every two characters.
        "replace" if has_target => {
            let out = size(0).plus(1.0).mul(&size(2).plus(1.0));
            (out.clone(), out.add(&size(0)).add(&size(1)))
        }
        "join" if has_target => {
            let out = size(0).mul(&size(1).plus(1.0));
            (out.clone(), out)
        }
        "format" if has_target => {
            let out = size(0)
                .scale(FORMAT_CLAUSE_CHARS)
                .add(&size(1).scale(RENDER_FACTOR))
                .plus(32.0);
            (out.clone(), out)
        }
        // `string`, `bytes`, `dyn`, `strings.quote`, timestamp getters, optionals, anything
        // else: at most a rendering of the operands.
        _ => (rendered.clone(), rendered),
    };
    Cost {
        size: out,
        work: children.add(&own),
    }
}
