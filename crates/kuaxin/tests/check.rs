//! `kuaxin::check` on the in-memory transformer block: agreement, the f64 reference, a planted
//! fault named exactly by both bisection modes (with the fused kernel it ran in), bundles, the
//! reports, and fused against unfused.
use kuaxin::check::bisect::{BisectMode, NodeStatus};
use kuaxin::check::promote::promote_to_f64;
use kuaxin::check::reference::Reference;
use kuaxin::check::{
    json, reference_bundle, report_html, run_check, table, CheckOptions, CheckReport, Verdict,
};
use kuaxin::demo::{transformer_block, BlockConfig};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{DType, HostValue};
use kuaxin_core::graph::{Attr, Model, Node};

fn model() -> Model {
    transformer_block(
        &BlockConfig {
            hidden: 32,
            heads: 2,
            ffn: 64,
        },
        DType::F32,
        3,
    )
}

fn inputs() -> Vec<(String, HostValue)> {
    vec![(
        "x".into(),
        HostValue::Tensor(random_tensor(&mut Rng::new(9), DType::F32, vec![1, 6, 32])),
    )]
}

fn opts(reference: Reference) -> CheckOptions {
    let mut o = CheckOptions::new(vec!["cpu".into()], reference);
    o.iters = 1;
    o.threads = Some(1);
    o
}

fn node_named(m: &Model, op: &str) -> String {
    m.graph
        .nodes
        .iter()
        .find(|n| n.op_type == op)
        .map(|n| n.name.clone())
        .expect("op in the demo block")
}

#[test]
fn same_device_agrees_exactly_and_exits_0() {
    let r = run_check(&model(), &inputs(), &opts(Reference::Device("cpu".into()))).unwrap();
    assert_eq!(r.exit_code(), 0);
    let d = &r.devices[0];
    assert_eq!(d.verdict, Verdict::Pass);
    assert_eq!(
        (d.summary.max_abs, d.summary.nmse, d.summary.cosine),
        (0.0, 0.0, 1.0)
    );
    assert!(d.latency.is_some() && d.speedup.is_some() && r.baseline.as_deref() == Some("cpu"));
    assert!(d.nodes.is_none(), "no bisection when everything passes");
    let text = table::device_table(&r);
    for col in [
        "device",
        "verdict",
        "max abs",
        "max rel",
        "NMSE",
        "cosine",
        ">1e-3 rel",
        ">5e-3 rel",
        "median ms",
        "vs cpu",
    ] {
        assert!(text.contains(col), "{col} missing from\n{text}");
    }
}

#[test]
fn f64_reference_is_close_but_not_identical() {
    let mut o = opts(Reference::F64);
    o.node_trace_always = true;
    let r = run_check(&model(), &inputs(), &o).unwrap();
    let d = &r.devices[0];
    assert_eq!(d.verdict, Verdict::Pass, "{}", table::failures(&r, false));
    // f32 rounding shows against f64, within tolerance.
    assert!(
        d.summary.max_abs > 0.0 && d.summary.nmse < 1e-10,
        "{:?}",
        d.summary
    );
    assert_eq!(r.closest_to_f64().map(|d| d.device.as_str()), Some("cpu"));
    let t = d.nodes.as_ref().unwrap();
    assert!(t.first_divergence.is_none());
    assert!(
        t.nodes.iter().all(|n| n.status == NodeStatus::Pass),
        "{}",
        table::failures(&r, false)
    );
}

#[test]
fn promotion_makes_every_float_f64() {
    let mut m = model();
    let attrs = |v: Vec<(&str, Attr)>| v.into_iter().map(|(k, a)| (k.to_string(), a)).collect();
    let node = |name: &str, op: &str, ins: Vec<&str>, a| Node {
        name: name.into(),
        op_type: op.into(),
        domain: String::new(),
        inputs: ins.into_iter().map(String::from).collect(),
        outputs: vec![format!("{name}_out")],
        attrs: a,
    };
    m.graph.nodes.push(node(
        "c",
        "Constant",
        vec![],
        attrs(vec![("value_float", Attr::Float(0.5))]),
    ));
    m.graph.nodes.push(node(
        "cast",
        "Cast",
        vec!["x"],
        attrs(vec![("to", Attr::Int(1))]),
    ));
    m.graph.nodes.push(node(
        "cast_int",
        "Cast",
        vec!["x"],
        attrs(vec![("to", Attr::Int(7))]),
    ));
    m.graph.nodes.push(node(
        "zeros",
        "ConstantOfShape",
        vec!["heads_shape"],
        attrs(vec![]),
    ));
    let p = promote_to_f64(&m);
    assert!(p
        .graph
        .initializers
        .iter()
        .all(|(_, t)| t.dtype() == DType::F64 || !t.dtype().is_float()));
    assert!(
        p.graph
            .initializers
            .iter()
            .any(|(_, t)| t.dtype() == DType::I64),
        "integer initializers stay"
    );
    assert!(p
        .graph
        .inputs
        .iter()
        .chain(&p.graph.outputs)
        .all(|vi| vi.ty.to_string().starts_with("f64")));
    let find = |n: &str| p.graph.nodes.iter().find(|x| x.name == n).unwrap().clone();
    assert!(matches!(find("c").attr("value"), Some(Attr::Tensor(t)) if t.dtype() == DType::F64));
    assert!(matches!(find("cast").attr("to"), Some(Attr::Int(11))));
    assert!(matches!(find("cast_int").attr("to"), Some(Attr::Int(7))));
    assert!(
        matches!(find("zeros").attr("value"), Some(Attr::Tensor(t)) if t.dtype() == DType::F64)
    );
}

fn perturbed(mode: BisectMode, reference: Reference) -> (CheckReport, String) {
    perturbed_op(mode, reference, "Softmax")
}

/// A check with a fault planted in the model's `op` node.
fn perturbed_op(mode: BisectMode, reference: Reference, op: &str) -> (CheckReport, String) {
    let m = model();
    let target = node_named(&m, op);
    let mut o = opts(reference);
    o.bisect_mode = mode;
    o.perturb = Some(target.clone());
    (run_check(&m, &inputs(), &o).unwrap(), target)
}

#[test]
fn planted_fault_is_named_exactly_in_both_modes() {
    for (mode, reference) in [
        (BisectMode::Isolated, Reference::Device("cpu".into())),
        (BisectMode::Cumulative, Reference::Device("cpu".into())),
        (BisectMode::Isolated, Reference::F64),
        (BisectMode::Cumulative, Reference::F64),
    ] {
        let (r, target) = perturbed(mode, reference.clone());
        assert_eq!(r.exit_code(), 1, "{mode:?} {reference:?}");
        let d = &r.devices[0];
        assert_eq!(d.verdict, Verdict::Fail);
        let t = d.nodes.as_ref().expect("a failing device is bisected");
        let first = &t.nodes[t.first_divergence.expect("a divergence")];
        assert_eq!(
            first.name,
            target,
            "{mode:?} {reference:?}: {}",
            table::failures(&r, false)
        );
        assert_eq!(first.op_type, "Softmax");
        assert!(
            first.inputs.iter().any(|i| i.contains("f32[1, 2, 6, 6]")),
            "{:?}",
            first.inputs
        );
        assert!(!first.kernel.is_empty());
        if mode == BisectMode::Isolated {
            // Fed the reference's inputs, every other node agrees.
            assert_eq!(
                t.nodes.iter().filter(|n| n.status.diverges()).count(),
                1,
                "{}",
                table::failures(&r, false)
            );
        }
        let text = table::failures(&r, true);
        assert!(
            text.contains(&format!("first diverging node: '{target}' (Softmax)")),
            "{text}"
        );
        // Softmax runs as a SoftmaxRows row primitive: named, and its instructions printed
        // with --show-kernel.
        assert_eq!(first.rows, ["SoftmaxRows"], "{text}");
        assert!(
            text.contains(&format!("kernel: {}", first.kernel_names())),
            "{text}"
        );
        assert!(
            text.contains("SoftmaxRows(f32"),
            "--show-kernel prints it: {text}"
        );
    }
}

#[test]
fn unknown_perturb_node_and_unknown_device_are_errors() {
    let mut o = opts(Reference::Device("cpu".into()));
    o.perturb = Some("no_such_node".into());
    let e = run_check(&model(), &inputs(), &o).unwrap_err().to_string();
    assert!(e.contains("no_such_node"), "{e}");
    let mut o = opts(Reference::Device("cpu".into()));
    o.devices = vec!["tpu".into()];
    let e = run_check(&model(), &inputs(), &o).unwrap_err().to_string();
    assert!(e.contains("'tpu'"), "{e}");
}

#[test]
fn saved_bundle_is_a_reference_with_intermediates() {
    let m = model();
    let arrays = reference_bundle(&m, &inputs(), &Reference::F64, Some(1)).unwrap();
    assert!(arrays.len() > m.graph.nodes.len() / 2);
    let dir = std::env::temp_dir().join(format!("kuaxin-check-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ref.npz");
    kuaxin_npy::write_npz(&path, &arrays).unwrap();
    let reference = Reference::parse(path.to_str().unwrap()).unwrap();
    assert_eq!(
        reference.bundle_inputs(&m).len(),
        1,
        "the bundle carries the input"
    );
    let r = run_check(&m, &inputs(), &opts(reference.clone())).unwrap();
    assert_eq!(r.exit_code(), 0, "{}", table::failures(&r, false));
    let target = node_named(&m, "Erf");
    let mut o = opts(reference);
    o.perturb = Some(target.clone());
    let r = run_check(&m, &inputs(), &o).unwrap();
    let t = r.devices[0].nodes.as_ref().unwrap();
    assert_eq!(t.nodes[t.first_divergence.unwrap()].name, target);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn reports_carry_plots_data_and_coverage() {
    let (r, target) = perturbed(BisectMode::Isolated, Reference::Device("cpu".into()));
    let j = json::to_json(&r);
    assert_eq!(j["exit_code"], 1);
    assert_eq!(
        j["devices"][0]["nodes"]["first_divergence"],
        target.as_str()
    );
    let cov = r.coverage();
    let mut ops: Vec<String> = model()
        .graph
        .nodes
        .iter()
        .map(|n| n.op_type.clone())
        .collect();
    ops.sort();
    ops.dedup();
    assert_eq!(cov.ops.keys().cloned().collect::<Vec<_>>(), ops);
    assert_eq!(cov.ops["Softmax"][0].status(), "fail");
    assert_eq!(cov.ops["MatMul"][0].status(), "pass");
    let html = report_html::to_html(&r, false);
    for id in [
        "id=\"node-error\"",
        "id=\"latency\"",
        "id=\"coverage\"",
        "id=\"report-data\"",
    ] {
        assert!(html.contains(id), "{id}");
    }
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no network resources"
    );
    // The embedded data cannot close its script element.
    let data = html
        .split("id=\"report-data\">")
        .nth(1)
        .unwrap()
        .split("</script>")
        .next()
        .unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(data).is_ok());
}

#[test]
fn fusion_check_passes_on_the_demo_block_and_counts_kernels() {
    let mut o = opts(Reference::Device("cpu".into()));
    o.fusion_check = true;
    let r = run_check(&model(), &inputs(), &o).unwrap();
    assert_eq!(r.exit_code(), 0, "{}", table::fusion_table(&r));
    let d = &r.devices[0];
    let f = d.fusion.as_ref().expect("the fusion check ran");
    assert_eq!(f.verdict, Verdict::Pass, "{}", table::fusion_table(&r));
    assert!(
        f.kernels >= 1,
        "the demo block fuses: {}",
        table::fusion_table(&r)
    );
    assert_eq!(f.kernels, d.kernels.len());
    assert!(
        f.unfused_instructions > f.fused_instructions,
        "{}",
        table::fusion_table(&r)
    );
    assert!(f.outputs.iter().all(|o| o.passed()) && !f.outputs.is_empty());
    let text = table::fusion_table(&r);
    for col in [
        "fusion check",
        "device",
        "verdict",
        "kernels",
        "max abs",
        "max rel",
        "unfused ms",
    ] {
        assert!(text.contains(col), "{col} missing from\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("cpu ") && l.contains("PASS")),
        "{text}"
    );
    assert_eq!(json::to_json(&r)["devices"][0]["fusion"]["verdict"], "PASS");
    // Without the option there is no fusion table.
    let r = run_check(&model(), &inputs(), &opts(Reference::Device("cpu".into()))).unwrap();
    assert!(r.devices[0].fusion.is_none() && table::fusion_table(&r).is_empty());
}

#[test]
fn bisection_names_the_fused_kernel_a_node_ran_in() {
    let m = model();
    let mut o = opts(Reference::Device("cpu".into()));
    o.node_trace_always = true;
    let r = run_check(&m, &inputs(), &o).unwrap();
    let d = &r.devices[0];
    let t = d.nodes.as_ref().unwrap();
    // The normalisations run as row primitives, named as such.
    for (op, row) in [
        ("LayerNormalization", "LayerNormRows"),
        ("Softmax", "SoftmaxRows"),
    ] {
        let name = node_named(&m, op);
        let n = t.nodes.iter().find(|n| n.name == name).unwrap();
        assert_eq!(n.rows, [row], "{op}");
        assert_eq!(n.kernel_names(), row, "{op}");
    }
    for op in ["Erf"] {
        let name = node_named(&m, op);
        let n = t.nodes.iter().find(|n| n.name == name).unwrap();
        assert!(!n.fused.is_empty(), "{op} runs in a fused kernel");
        for k in &n.fused {
            assert!(
                k.origins.contains(&format!("node '{name}' ({op})")),
                "{:?}",
                k.origins
            );
            assert!(
                d.kernels.iter().any(|dk| std::sync::Arc::ptr_eq(dk, k)),
                "a kernel of the device's program"
            );
        }
        assert_eq!(
            n.kernel_names(),
            n.fused
                .iter()
                .map(|k| k.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // A MatMul followed by its bias runs with the bias as its epilogue, whose kernel names the
    // product first; one whose output goes elsewhere (the attention's products) is reported
    // unfused.
    let (mut finished, mut bare) = (0, 0);
    for node in m.graph.nodes.iter().filter(|n| n.op_type == "MatMul") {
        let n = t.nodes.iter().find(|n| n.name == node.name).unwrap();
        if n.fused.is_empty() {
            assert_eq!(n.kernel_names(), "(unfused)");
            bare += 1;
        } else {
            for k in &n.fused {
                assert_eq!(k.origins.first(), Some(&node.describe()), "{:?}", k.origins);
            }
            finished += 1;
        }
    }
    assert!(
        finished >= 4 && bare >= 2,
        "{finished} MatMuls with an epilogue, {bare} without"
    );

    // A planted fault inside a fused kernel: the report names that kernel and prints its text.
    let (r, target) = perturbed_op(BisectMode::Isolated, Reference::Device("cpu".into()), "Erf");
    let t = r.devices[0].nodes.as_ref().unwrap();
    let first = &t.nodes[t.first_divergence.unwrap()];
    assert_eq!(first.name, target);
    assert!(!first.fused.is_empty(), "Erf fuses");
    let names = first.kernel_names();
    let text = table::failures(&r, false);
    assert!(
        text.contains(&format!("kernel: {names}")) && !text.contains("kernel: (unfused)"),
        "{text}"
    );
    let shown = table::failures(&r, true);
    for k in &first.fused {
        assert!(
            shown.contains(&format!("kernel {} domain", k.name)),
            "--show-kernel prints the kernel's text: {shown}"
        );
    }
    assert!(shown.contains("Erf(v"), "{shown}");
    assert_eq!(
        json::to_json(&r)["devices"][0]["nodes"]["nodes"][first.index]["kernel"],
        names.as_str()
    );
}
