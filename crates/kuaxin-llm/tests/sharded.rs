//! A checkpoint split into shards with model.safetensors.index.json loads to the same model as
//! the single file, and a shard missing from the folder is an error naming it.
use kuaxin_core::DType;
use kuaxin_llm::generate::prompt_logits;
use kuaxin_llm::HfModel;
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::path::Path;

#[test]
fn sharded_checkpoint_matches_the_single_file() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/llm/qwen3");
    let dst = std::env::temp_dir().join(format!("kuaxin-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json", "generation_config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(3)).enumerate() {
        let file = format!("model-{:05}-of-00003.safetensors", i + 1);
        let views: Vec<(String, TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dst.join(&file)).unwrap();
        for n in part {
            map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dst.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let ids: Vec<u32> = (1..12).collect();
    let cpu = || kuaxin::open_device("cpu", None).unwrap();
    let one = prompt_logits(&HfModel::open(&src).unwrap(), cpu(), DType::F32, &ids).unwrap();
    let sharded = prompt_logits(&HfModel::open(&dst).unwrap(), cpu(), DType::F32, &ids).unwrap();
    assert_eq!(one.to_f64_vec(), sharded.to_f64_vec());

    std::fs::remove_file(dst.join("model-00002-of-00003.safetensors")).unwrap();
    let err = HfModel::open(&dst)
        .err()
        .expect("a missing shard is an error")
        .to_string();
    assert!(err.contains("model-00002-of-00003.safetensors"), "{err}");
    std::fs::remove_dir_all(&dst).ok();
}
