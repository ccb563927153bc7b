//! Every fixture in tests/llm (tiny random-weight checkpoints made by
//! scripts/make-llm-fixtures.py) against the logits and greedy tokens transformers computed.
//! Runs on the CPU and on every other back end named in KUAXIN_TEST_DEVICES (comma-separated).
use kuaxin::compare::{metrics, OpClass, Tolerance};
use kuaxin_core::{DType, Tensor};
use kuaxin_llm::arch::BuildOptions;
use kuaxin_llm::generate::prompt_logits;
use kuaxin_llm::{GenerateOptions, Generator, HfModel};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// tests/llm, or the folder in KUAXIN_LLM_FIXTURES (fixtures made by the same script with
/// other configurations).
fn fixtures() -> Vec<PathBuf> {
    let root = match std::env::var("KUAXIN_LLM_FIXTURES") {
        Ok(d) => PathBuf::from(d),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/llm"),
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("reference.json").exists())
        .collect();
    v.sort();
    assert!(
        !v.is_empty(),
        "no fixtures (reference.json) under {}",
        root.display()
    );
    v
}

fn devices() -> Vec<String> {
    let mut d = vec!["cpu".to_string()];
    if let Ok(extra) = std::env::var("KUAXIN_TEST_DEVICES") {
        d.extend(
            extra
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    d
}

struct Reference {
    prompt: String,
    ids: Vec<u32>,
    logits: Tensor,
    greedy: Vec<u32>,
    min_gap: f64,
}

fn reference(dir: &Path) -> Reference {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ids = |k: &str| -> Vec<u32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let shape: Vec<usize> = v["logits_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    Reference {
        prompt: v["prompt"].as_str().unwrap().to_string(),
        ids: ids("prompt_ids"),
        logits: Tensor::from_vec(shape, data).unwrap(),
        greedy: ids("greedy"),
        min_gap: v["min_greedy_gap"].as_f64().unwrap(),
    }
}

/// The accumulating-op tolerance at the model's longest dot product, scaled by the logits'
/// magnitude. (A DeepSeek latent norm with the config's epsilon instead of its own 1e-6 was
/// off by up to 6e-5 here, and fails this.)
fn model_tolerance(m: &HfModel, want: &Tensor) -> Tolerance {
    let c = &m.config;
    let longest = c.hidden.max(c.intermediate).max(c.heads * c.head_dim);
    let scale = want.to_f64_vec().iter().fold(0f64, |a, x| a.max(x.abs()));
    Tolerance::for_class(OpClass::Accumulating, DType::F32, longest, scale)
}

#[test]
fn tokenizer_matches_the_python_library() {
    let dirs = fixtures();
    if std::env::var("KUAXIN_LLM_FIXTURES").is_err() {
        assert!(
            dirs.len() >= 7,
            "expected the 7 architecture fixtures, found {}",
            dirs.len()
        );
    }
    for dir in dirs {
        let r = reference(&dir);
        let m = HfModel::open(&dir).unwrap();
        let prompt = r.prompt.as_str();
        assert_eq!(
            m.tokenizer().unwrap().encode(prompt).unwrap(),
            r.ids,
            "{}",
            dir.display()
        );
    }
}

#[test]
fn logits_match_transformers_on_every_device() {
    for device in devices() {
        for dir in fixtures() {
            let r = reference(&dir);
            let m = HfModel::open(&dir).unwrap();
            let dev = kuaxin::open_device(&device, None).unwrap();
            let got = prompt_logits(&m, dev, DType::F32, &r.ids)
                .unwrap_or_else(|e| panic!("{} on {device}: {e}", dir.display()));
            let tol = model_tolerance(&m, &r.logits);
            let mt = metrics(&got, &r.logits, tol);
            eprintln!(
                "{:<12} {device:<6} max_abs {:.2e} max_rel {:.2e} (atol {:.1e}, rtol {:.1e})",
                dir.file_name().unwrap().to_string_lossy(),
                mt.max_abs,
                mt.max_rel,
                tol.atol,
                tol.rtol
            );
            assert_eq!(
                mt.mismatches,
                0,
                "{} on {device}: {} logits outside tolerance, first {:?}",
                dir.display(),
                mt.mismatches,
                mt.first_mismatch
            );
        }
    }
}

#[test]
fn greedy_tokens_match_transformers_and_batching_changes_nothing() {
    for device in devices() {
        for dir in fixtures() {
            let r = reference(&dir);
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            let m = HfModel::open(&dir).unwrap();
            let dev = kuaxin::open_device(&device, None).unwrap();
            let mut g = Generator::new(&m, dev, &BuildOptions::generation(DType::F32, 64)).unwrap();
            let opts = GenerateOptions {
                max_tokens: r.greedy.len(),
                ignore_eos: true,
                ..Default::default()
            };
            let one = g.generate(&[r.ids.clone()], &opts, &mut |_, _| {}).unwrap();
            assert_eq!(
                one.tokens[0], r.greedy,
                "{name} on {device}: greedy tokens differ (smallest top-2 logit gap in the reference {:.4})",
                r.min_gap
            );
            assert!(one.decode_reused_program, "{name}: decode steps recompiled");
            // A shorter second prompt padded in the same batch: both rows as when alone.
            let short: Vec<u32> = r.ids[..r.ids.len() / 2].to_vec();
            let alone = g.generate(&[short.clone()], &opts, &mut |_, _| {}).unwrap();
            let both = g
                .generate(&[r.ids.clone(), short], &opts, &mut |_, _| {})
                .unwrap();
            assert_eq!(
                both.tokens[0], r.greedy,
                "{name} on {device}: batched row 0"
            );
            assert_eq!(
                both.tokens[1], alone.tokens[0],
                "{name} on {device}: batched row 1"
            );
        }
    }
}
