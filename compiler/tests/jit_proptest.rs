//! Property tests: random valid DAGs (convolutions, pooling, resizing,
//! activations, softmax, batch normalisation, residual sums, concatenations,
//! linear heads) compiled by the JIT agree with the interpreter, forward and
//! for a whole training step. 250 + 250 cases.

mod jit_support;

use jit_support::differential;
use jit_support::random_net::random_net;
use kiln_compiler::autodiff::derive_training;
use kiln_compiler::ops::{Loss, Sgd};
use proptest::prelude::{ProptestConfig, any, proptest};
use proptest::test_runner::RngSeed;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 250,
        failure_persistence: None,
        // A fixed seed: the same 500 graphs on every run, so CI is repeatable.
        rng_seed: RngSeed::Fixed(0x6b69_6c6e),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_dag_forward_matches_interpreter(seed in any::<u64>(), batch in 1usize..4) {
        differential(&random_net(seed), batch, seed ^ 0x5eed, 1e-5);
    }

    #[test]
    fn random_dag_training_step_matches_interpreter(seed in any::<u64>(), batch in 1usize..4, mse in any::<bool>()) {
        let loss = if mse { Loss::Mse } else { Loss::CrossEntropy };
        let sgd = Sgd { lr: 0.05, momentum: 0.9, nesterov: false, weight_decay: 0.01 };
        let g = derive_training(&random_net(seed), loss, sgd).expect("autodiff");
        differential(&g, batch, seed ^ 0x7ea1, 1e-5);
    }
}

/// The generator makes every op kind it claims, so the property tests above
/// do run them: over 300 seeds, each appears in some graph.
#[test]
fn the_generator_reaches_every_op_kind() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..300u64 {
        let g = random_net(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for id in g.node_ids() {
            seen.insert(g.node(id).op.mnemonic());
        }
    }
    for want in ["conv2d", "batch_norm", "softmax", "log_softmax", "gelu", "gelu_tanh", "silu", "concat", "linear"] {
        assert!(seen.contains(want), "no random graph has {want}: {seen:?}");
    }
}
