//! Policy evaluation, 20 rules with the last one matching: `cargo bench -p bench --bench policy`.

use bench::policy_eval::{compiled, Input};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn evaluate(c: &mut Criterion) {
    let policy = compiled();
    let input = Input::new();
    c.bench_function("policy evaluate, 20 rules", |b| {
        b.iter(|| policy.evaluate(black_box(&input.get())))
    });
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
