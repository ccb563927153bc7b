//! The HTML report renders in a real browser: headless Chromium loads it (no network), the
//! inline script draws every plot without errors. Skips, saying why, when Chromium is absent
//! (`.ci/run` installs Debian's chromium package).
use kuaxin::check::reference::Reference;
use kuaxin::check::{report_html, run_check, CheckOptions};
use kuaxin::demo::{transformer_block, BlockConfig};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{DType, HostValue};
use std::process::Command;

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .map(String::from)
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        eprintln!("SKIP html_report_renders_in_headless_chromium: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let model = transformer_block(
        &BlockConfig {
            hidden: 32,
            heads: 2,
            ffn: 64,
        },
        DType::F32,
        3,
    );
    let target = model
        .graph
        .nodes
        .iter()
        .find(|n| n.op_type == "Softmax")
        .unwrap()
        .name
        .clone();
    let x = random_tensor(&mut Rng::new(9), DType::F32, vec![1, 6, 32]);
    let mut o = CheckOptions::new(vec!["cpu".into()], Reference::F64);
    o.iters = 2;
    o.node_trace_always = true;
    o.perturb = Some(target);
    let r = run_check(&model, &[("x".into(), HostValue::Tensor(x))], &o).unwrap();
    let dir = std::env::temp_dir().join(format!("kuaxin-check-html-{}", std::process::id()));
    let profile = dir.join("profile");
    std::fs::create_dir_all(&profile).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, report_html::to_html(&r, true)).unwrap();
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "chromium failed: {log}");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );
    assert!(
        !dom.contains("data-error=\""),
        "script error: {}",
        dom.split("data-error=\"")
            .nth(1)
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>()
    );
    assert!(
        dom.contains("data-rendered=\"ok\""),
        "the script did not finish drawing"
    );
    let nodes = r.devices[0].nodes.as_ref().unwrap().nodes.len();
    let count = |class: &str| dom.matches(&format!("class=\"{class}\"")).count();
    assert_eq!(count("node-point"), nodes, "one point per node");
    assert_eq!(count("node-line"), 1);
    assert_eq!(
        count("lat-bar"),
        1,
        "one latency bar per timed device (the f64 reference is not timed)"
    );
    assert_eq!(count("cov-cell"), r.coverage().ops.len());
    // The planted fault is drawn as a failing point.
    assert!(
        dom.contains("FAIL"),
        "the failing node is in the plot's titles"
    );
}
