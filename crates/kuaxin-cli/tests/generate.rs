//! `kuaxin generate` end to end: the streamed text of a tiny fixture is the decoded greedy
//! continuation transformers computed; bad folders are clear errors.
use std::path::Path;
use std::process::Command;

fn kuaxin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kuaxin"))
}

#[test]
fn generate_streams_the_reference_continuation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/llm/qwen2");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let greedy: Vec<u32> = r["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let tok = kuaxin_llm::HfModel::open(&dir)
        .unwrap()
        .tokenizer()
        .unwrap();
    let want = tok.decode(&greedy).unwrap();
    let out = kuaxin()
        .args(["generate", "--model"])
        .arg(&dir)
        .args(["--prompt", r["prompt"].as_str().unwrap()])
        .args(["-n", &greedy.len().to_string(), "--ignore-eos"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim_end_matches('\n'), want);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("generated 12 tokens"),
        "statistics go to stderr: {err}"
    );
}

#[test]
fn missing_and_broken_models_are_clear_errors() {
    let tmp = std::env::temp_dir().join(format!("kuaxin-gen-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let run = |dir: &Path| {
        let out = kuaxin()
            .args(["generate", "--model"])
            .arg(dir)
            .args(["--prompt", "hi"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run(&tmp.join("nope")).contains("is not a folder"));
    assert!(run(&tmp).contains("config.json"));
    std::fs::write(
        tmp.join("config.json"),
        r#"{"architectures": ["GPTBigCodeForCausalLM"]}"#,
    )
    .unwrap();
    assert!(run(&tmp).contains("architecture 'GPTBigCodeForCausalLM' is not supported"));
    // A known architecture whose weights do not fit its config names the tensor.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/llm/llama");
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture.join(f), tmp.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap())
            .unwrap();
    cfg["intermediate_size"] = 100.into();
    std::fs::write(tmp.join("config.json"), cfg.to_string()).unwrap();
    let err = run(&tmp);
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight") && err.contains("shape"),
        "{err}"
    );
    std::fs::write(
        tmp.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json}    ",
    )
    .unwrap();
    assert!(run(&tmp).contains("not a valid safetensors file"));
    std::fs::remove_dir_all(&tmp).ok();
}
