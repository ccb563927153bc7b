//! The report as JSON (also the data the HTML report draws from). Non-finite numbers become
//! strings ("inf", "nan") so the document stays valid JSON.
use super::bisect::NodeTrace;
use super::measure::Latency;
use super::{CheckReport, DeviceReport, FusionCheck};
use crate::compare::Metrics;
use serde_json::{json, Value};

fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else if x.is_nan() {
        json!("nan")
    } else if x > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

fn metrics(m: &Metrics) -> Value {
    json!({
        "max_abs": num(m.max_abs), "max_rel": num(m.max_rel), "nmse": num(m.nmse), "cosine": num(m.cosine),
        "beyond_1e-3": num(m.beyond_1e3), "beyond_5e-3": num(m.beyond_5e3), "mismatches": m.mismatches,
    })
}

fn latency(l: &Option<Latency>) -> Value {
    match l {
        Some(l) => {
            json!({"first_ms": num(l.first_ms), "median_ms": num(l.median_ms), "samples_ms": l.samples.iter().map(|&x| num(x)).collect::<Vec<_>>()})
        }
        None => Value::Null,
    }
}

fn nodes(t: &NodeTrace) -> Value {
    let list: Vec<Value> = t
        .nodes
        .iter()
        .map(|n| {
            json!({
                "index": n.index, "name": n.name, "op": n.op_type, "status": n.status.name(), "message": n.message,
                "inputs": n.inputs, "on_host": n.on_host, "kernel": n.kernel_names(), "row_ops": n.rows, "instructions": n.kernel,
                "fused_kernels": n.fused.iter().map(|k| json!({"name": k.name, "origins": k.origins, "source": k.to_string()})).collect::<Vec<_>>(),
                "metrics": n.metrics.as_ref().map(metrics),
            })
        })
        .collect();
    json!({"mode": t.mode.name(), "note": t.note, "first_divergence": t.first_divergence.map(|i| t.nodes[i].name.clone()), "nodes": list})
}

fn fusion(f: &FusionCheck) -> Value {
    let outputs: Vec<Value> = f.outputs.iter().map(|o| json!({"name": o.name, "type": o.ty, "passed": o.passed(), "problem": o.problem, "metrics": o.metrics.as_ref().map(metrics)})).collect();
    json!({
        "verdict": f.verdict.name(), "error": f.error, "kernels": f.kernels, "fused_instructions": f.fused_instructions,
        "unfused_instructions": f.unfused_instructions, "summary": metrics(&f.summary), "unfused_latency": latency(&f.unfused_latency),
        "outputs": outputs,
    })
}

fn device(d: &DeviceReport) -> Value {
    let outputs: Vec<Value> = d
        .outputs
        .iter()
        .map(|o| json!({"name": o.name, "type": o.ty, "passed": o.passed(), "problem": o.problem, "metrics": o.metrics.as_ref().map(metrics),
            "tolerance": o.tol.map(|t| json!({"rtol": num(t.rtol), "atol": num(t.atol)}))}))
        .collect();
    json!({
        "device": d.device, "verdict": d.verdict.name(), "error": d.error, "summary": metrics(&d.summary),
        "latency": latency(&d.latency), "speedup": d.speedup.map(num), "instructions": d.instructions,
        "host_ops": d.host_ops, "kernels": d.kernels.len(), "outputs": outputs, "nodes": d.nodes.as_ref().map(nodes),
        "fusion": d.fusion.as_ref().map(fusion),
    })
}

pub fn to_json(r: &CheckReport) -> Value {
    json!({
        "model": r.model, "reference": r.reference, "baseline": r.baseline, "reference_latency": latency(&r.reference_latency),
        "inputs": r.inputs, "perturbed": r.perturbed, "exit_code": r.exit_code(),
        "closest_to_f64": r.closest_to_f64().map(|d| d.device.clone()),
        "devices": r.devices.iter().map(device).collect::<Vec<_>>(),
        "coverage": r.coverage().to_json(),
    })
}
