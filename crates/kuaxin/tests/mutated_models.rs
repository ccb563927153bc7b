//! Hostile input beyond the checked-in corpus: thousands of seeded mutations of a small valid
//! model (tests/models/fuzz_seed.onnx). Each must load and run to a result or a clean error:
//! never a panic, never a runaway allocation (the tensor limit is lowered to 64 MiB here).
use kuaxin::random::Rng;
use kuaxin::{open_device, random_inputs, Session};
use std::panic::{catch_unwind, AssertUnwindSafe};

const SEED_MODEL: &[u8] = include_bytes!("../../../tests/models/fuzz_seed.onnx");

fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let edits = 1 + rng.next_u64() % 4;
    for _ in 0..edits {
        let i = (rng.next_u64() % b.len() as u64) as usize;
        match rng.next_u64() % 4 {
            0 => b[i] = (rng.next_u64() & 0xff) as u8,
            1 => b[i] ^= 1 << (rng.next_u64() % 8),
            2 => b[i] = 0xff,
            _ => {
                let n = (rng.next_u64() % 8) as usize;
                b.truncate((i + n).min(b.len()));
            }
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

/// Loads and runs one candidate; Ok(true) when it ran, Ok(false) when it was refused.
fn try_model(bytes: &[u8]) -> Result<bool, String> {
    let model = match kuaxin_onnx::load_model_bytes(bytes, "mutant.onnx", None) {
        Ok(m) => m,
        Err(e) => {
            if !e.message.contains("mutant.onnx") {
                return Err(format!("load error does not name the file: {}", e.message));
            }
            return Ok(false);
        }
    };
    let Ok(inputs) = random_inputs(&model, &Default::default(), 1) else {
        return Ok(false);
    };
    let device = open_device("cpu", Some(1)).map_err(|e| e.to_string())?;
    let session = Session::new(model, device).map_err(|e| e.to_string())?;
    Ok(session.run(&inputs).is_ok())
}

#[test]
fn mutated_models_never_panic() {
    // SAFETY of the test process: set before any thread reads it.
    std::env::set_var("KUAXIN_MAX_TENSOR_BYTES", (64u64 << 20).to_string());
    assert!(
        try_model(SEED_MODEL).expect("seed model"),
        "the seed model itself must run"
    );
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng::new(20261129);
    let (mut ran, mut refused, mut panics) = (0, 0, Vec::new());
    for case in 0..1500 {
        let bytes = mutate(&mut rng, SEED_MODEL);
        match catch_unwind(AssertUnwindSafe(|| try_model(&bytes))) {
            Ok(Ok(true)) => ran += 1,
            Ok(Ok(false)) => refused += 1,
            Ok(Err(msg)) => panics.push(format!("case {case}: {msg}")),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panics.push(format!("case {case}: panic: {msg}"));
            }
        }
    }
    std::panic::set_hook(prev);
    println!(
        "{ran} mutants ran, {refused} were refused cleanly, {} misbehaved",
        panics.len()
    );
    assert!(panics.is_empty(), "{}", panics.join("\n"));
    assert!(
        ran > 0 && refused > 0,
        "the mutations should produce both runnable and broken models"
    );
}
