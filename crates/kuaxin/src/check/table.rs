//! The report as text: one row per device, the fusion check (fused against unfused) when it
//! ran, then the first diverging node of each failing device and the kernel it ran in.
use super::bisect::NodeTrace;
use super::{CheckReport, DeviceReport, Verdict};

fn sci(x: f64) -> String {
    if x.is_infinite() {
        "inf".into()
    } else if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.2e}")
    }
}

fn pct(x: f64) -> String {
    format!("{:.3}%", x * 100.0)
}

fn row(d: &DeviceReport) -> Vec<String> {
    let m = &d.summary;
    let compared = d.verdict != Verdict::Error && d.outputs.iter().any(|o| o.metrics.is_some());
    let metric = |f: &dyn Fn() -> String| if compared { f() } else { "-".into() };
    vec![
        d.device.clone(),
        d.verdict.name().into(),
        metric(&|| sci(m.max_abs)),
        metric(&|| sci(m.max_rel)),
        metric(&|| sci(m.nmse)),
        metric(&|| format!("{:.9}", m.cosine)),
        metric(&|| pct(m.beyond_1e3)),
        metric(&|| pct(m.beyond_5e3)),
        d.latency
            .as_ref()
            .map(|l| format!("{:.3}", l.median_ms))
            .unwrap_or_else(|| "-".into()),
        d.speedup
            .map(|s| format!("{s:.2}x"))
            .unwrap_or_else(|| "-".into()),
    ]
}

fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut s = line(header.iter().map(|h| h.to_string()).collect());
    s.push('\n');
    s += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    s.push('\n');
    for r in rows {
        s += &line(r.clone());
        s.push('\n');
    }
    s
}

/// The device table with a header naming the model, reference and inputs.
pub fn device_table(r: &CheckReport) -> String {
    let mut s = format!(
        "model      {}\nreference  {}\ninputs     {}\n",
        r.model,
        r.reference,
        r.inputs.join(", ")
    );
    if let Some(p) = &r.perturbed {
        s += &format!(
            "perturbed  node '{p}' (planted fault: output * {} + {})\n",
            super::perturb::SCALE,
            super::perturb::SHIFT
        );
    }
    if let Some(l) = &r.reference_latency {
        s += &format!("reference latency  {:.3} ms (median)\n", l.median_ms);
    }
    s.push('\n');
    let speed = format!("vs {}", r.baseline.as_deref().unwrap_or("-"));
    let header = [
        "device",
        "verdict",
        "max abs",
        "max rel",
        "NMSE",
        "cosine",
        ">1e-3 rel",
        ">5e-3 rel",
        "median ms",
        &speed,
    ];
    let rows: Vec<Vec<String>> = r.devices.iter().map(row).collect();
    s += &render(&header, &rows);
    if let Some(d) = r.closest_to_f64() {
        s += &format!(
            "\nclosest to f64: {} (NMSE {})\n",
            d.device,
            sci(d.summary.nmse)
        );
    }
    s
}

/// Fused against unfused, one row per device (empty when the fusion check did not run): kernels
/// in the fused program, instructions fused/unfused, the largest differences, latencies.
pub fn fusion_table(r: &CheckReport) -> String {
    let checked: Vec<(&DeviceReport, &super::FusionCheck)> = r
        .devices
        .iter()
        .filter_map(|d| d.fusion.as_ref().map(|f| (d, f)))
        .collect();
    if checked.is_empty() {
        return String::new();
    }
    let mut s =
        String::from("\nfusion check: fused against unfused on each device (same inputs)\n");
    let header = [
        "device",
        "verdict",
        "kernels",
        "instrs fused/unfused",
        "max abs",
        "max rel",
        "NMSE",
        "fused ms",
        "unfused ms",
        "fusion speed-up",
    ];
    let ms = |l: Option<&super::measure::Latency>| {
        l.map(|l| format!("{:.3}", l.median_ms))
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<Vec<String>> = checked
        .iter()
        .map(|(d, f)| {
            let compared =
                f.verdict != Verdict::Error && f.outputs.iter().any(|o| o.metrics.is_some());
            let metric = |x: f64| if compared { sci(x) } else { "-".into() };
            let speedup = match (&d.latency, &f.unfused_latency) {
                (Some(a), Some(b)) => format!("{:.2}x", b.median_ms / a.median_ms.max(1e-9)),
                _ => "-".into(),
            };
            let instrs = if f.verdict == Verdict::Error {
                "-".into()
            } else {
                format!("{}/{}", f.fused_instructions, f.unfused_instructions)
            };
            vec![
                d.device.clone(),
                f.verdict.name().into(),
                if f.verdict == Verdict::Error {
                    "-".into()
                } else {
                    f.kernels.to_string()
                },
                instrs,
                metric(f.summary.max_abs),
                metric(f.summary.max_rel),
                metric(f.summary.nmse),
                ms(d.latency.as_ref()),
                ms(f.unfused_latency.as_ref()),
                speedup,
            ]
        })
        .collect();
    s += &render(&header, &rows);
    for (d, f) in &checked {
        if let Some(e) = &f.error {
            s += &format!("  {}: {e}\n", d.device);
        } else if f.kernels == 0 {
            s += &format!("  {}: fusion made no kernels on this device, so fused and unfused ran the same program\n", d.device);
        }
        for o in f.outputs.iter().filter(|o| !o.passed()) {
            match (&o.problem, &o.metrics) {
                (Some(p), _) => s += &format!("  {}: output '{}' ({}): {p}\n", d.device, o.name, o.ty),
                (None, Some(m)) => s += &format!("  {}: output '{}' ({}): fused differs from unfused in {} of {} elements, max abs {}\n", d.device, o.name, o.ty, m.mismatches, o.numel, sci(m.max_abs)),
                _ => {}
            }
        }
    }
    s
}

/// Why each failing device failed (problems with outputs, the run error) and the node-by-node
/// comparison of every device that has one (the first diverging node).
pub fn failures(r: &CheckReport, show_kernel: bool) -> String {
    let mut s = String::new();
    for d in r
        .devices
        .iter()
        .filter(|d| d.verdict != Verdict::Pass || d.nodes.is_some())
    {
        s += &format!("\n{}: {}\n", d.device, d.verdict.name());
        if let Some(e) = &d.error {
            s += &format!("  error: {e}\n");
        }
        for o in d.outputs.iter().filter(|o| !o.passed()) {
            match (&o.problem, &o.metrics) {
                (Some(p), _) => s += &format!("  output '{}' ({}): {p}\n", o.name, o.ty),
                (None, Some(m)) => {
                    s += &format!(
                        "  output '{}' ({}): {} of {} elements outside tolerance, max abs {}\n",
                        o.name,
                        o.ty,
                        m.mismatches,
                        o.numel,
                        sci(m.max_abs)
                    )
                }
                _ => {}
            }
        }
        if let Some(t) = &d.nodes {
            s += &node_summary(t, show_kernel);
        }
    }
    s
}

fn node_summary(t: &NodeTrace, show_kernel: bool) -> String {
    let mut s = String::new();
    if let Some(n) = &t.note {
        s += &format!("  note: {n}\n");
    }
    let compared = t
        .nodes
        .iter()
        .filter(|n| n.metrics.is_some() || n.status.diverges())
        .count();
    let diverging = t.nodes.iter().filter(|n| n.status.diverges()).count();
    s += &format!(
        "  bisection ({}): {compared} nodes compared, {diverging} diverge\n",
        t.mode.name()
    );
    let Some(i) = t.first_divergence else {
        s += "  no node diverges\n";
        return s;
    };
    let n = &t.nodes[i];
    s += &format!(
        "  first diverging node: '{}' ({}), #{} in graph order: {}\n",
        n.name,
        n.op_type,
        n.index,
        n.status.name()
    );
    for input in &n.inputs {
        s += &format!("    input  {input}\n");
    }
    s += &format!("    {}\n", n.message);
    s += &format!("    kernel: {}\n", n.kernel_names());
    for k in &n.fused {
        let own = format!("node '{}' ({})", n.name, n.op_type);
        let others: Vec<&str> = k
            .origins
            .iter()
            .map(|o| o.as_str())
            .filter(|o| *o != own)
            .collect();
        if !others.is_empty() {
            s += &format!("      {} also holds: {}\n", k.name, others.join(", "));
        }
    }
    if show_kernel {
        if n.fused.is_empty() {
            // Unfused: the primitive instructions it lowered to.
            for k in &n.kernel {
                s += &format!("      {k}\n");
            }
        }
        for k in &n.fused {
            for line in k.to_string().lines() {
                s += &format!("      {line}\n");
            }
        }
    }
    s
}
