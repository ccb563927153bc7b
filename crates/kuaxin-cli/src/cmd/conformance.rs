use crate::progress::bar;
use anyhow::{anyhow, Context, Result};
use kuaxin::conformance::{list_cases, run_cases, CaseResult, Status};
use std::collections::BTreeSet;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Folder holding one folder per test (model.onnx + test_data_set_N).
    #[arg(long)]
    pub suite: PathBuf,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Several devices: a comma-separated list or `all` (every device found); overrides --device.
    #[arg(long, value_name = "LIST|all")]
    pub devices: Option<String>,
    /// Print the op x device coverage matrix (pass, fail, unsupported, host) after the results.
    #[arg(long)]
    pub matrix: bool,
    /// Only tests whose name matches this regular expression.
    #[arg(long)]
    pub filter: Option<String>,
    /// Write per-test results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Tests that must pass: any listed test that does not pass fails the run.
    #[arg(long, value_name = "FILE")]
    pub pass_list: Option<PathBuf>,
    /// Rewrite the pass list with the tests that pass now (keeps it sorted).
    #[arg(long, requires = "pass_list")]
    pub update_pass_list: bool,
    /// Tests run concurrently (default: number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print passing tests too.
    #[arg(long)]
    pub verbose: bool,
    /// Run primitives one by one, without kernel fusion (to compare against the fused path).
    #[arg(long)]
    pub no_fuse: bool,
}

fn read_list(p: &PathBuf) -> Result<BTreeSet<String>> {
    if !p.exists() {
        return Ok(BTreeSet::new());
    }
    let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(s.lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

pub fn main(a: Args) -> Result<i32> {
    let re = match &a.filter {
        Some(f) => Some(regex::Regex::new(f).map_err(|e| anyhow!("--filter: {e}"))?),
        None => None,
    };
    let mut cases = list_cases(&a.suite)?;
    if cases.is_empty() {
        return Err(anyhow!(
            "{}: no tests found (folders with model.onnx)",
            a.suite.display()
        ));
    }
    if let Some(re) = &re {
        cases.retain(|c| {
            c.file_name()
                .is_some_and(|n| re.is_match(&n.to_string_lossy()))
        });
    }
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let devices: Vec<String> = match a.devices.as_deref() {
        None => vec![a.device.clone()],
        Some("all") => kuaxin::list_devices().into_iter().map(|d| d.name).collect(),
        Some(list) => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if devices.is_empty() {
        return Err(anyhow!("--devices: no device named"));
    }
    if devices.len() > 1 && a.pass_list.is_some() {
        return Err(anyhow!(
            "--pass-list applies to one device; use --device (or --devices with one name)"
        ));
    }
    let mut per_device = Vec::new();
    for name in &devices {
        // One thread per job inside the back end: tests are small, parallelism comes from jobs.
        let device = kuaxin::open_device(name, Some(1))?;
        // A panicking test is reported as a failure; keep the default hook from printing it.
        std::panic::set_hook(Box::new(|_| {}));
        let pb = bar(cases.len() as u64, &format!("conformance {name}"));
        let results = run_cases(&cases, device, !a.no_fuse, jobs, &|_r: &CaseResult| {
            pb.inc(1)
        });
        pb.finish_and_clear();
        let _ = std::panic::take_hook();
        per_device.push((name.clone(), results));
    }
    let multi = devices.len() > 1;
    let mut code = 0;
    for (name, results) in &per_device {
        let prefix = if multi {
            format!("[{name}] ")
        } else {
            String::new()
        };
        code = code.max(report(&a, results, &prefix, re.is_some())?);
    }
    if let Some(path) = &a.json {
        let arr: Vec<serde_json::Value> = per_device
            .iter()
            .flat_map(|(d, results)| {
                results.iter().map(move |r| serde_json::json!({"name": r.name, "device": d, "status": format!("{:?}", r.status).to_lowercase(), "reason": r.reason, "millis": r.millis, "ops": r.ops, "host_ops": r.host_ops}))
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&arr)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if a.matrix {
        let cov = kuaxin::conformance::coverage(&per_device);
        println!(
            "\nop x device coverage ({} ops; cells: status passed/tests)",
            cov.ops.len()
        );
        print!("{}", cov.to_text());
    }
    Ok(code)
}

/// Prints one device's results and checks its pass list; returns the exit code.
fn report(a: &Args, results: &[CaseResult], prefix: &str, filtered: bool) -> Result<i32> {
    for (name, atol) in kuaxin::conformance::ROUNDED_REFERENCES {
        if results.iter().any(|r| r.name == *name) {
            println!("NOTE {name}: its expected values are rounded to 4 decimals in the ONNX test generator; compared with atol {atol:e}");
        }
    }
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for r in results {
        match r.status {
            Status::Pass => {
                pass += 1;
                if a.verbose {
                    println!("{prefix}PASS {}", r.name);
                }
            }
            Status::Fail => {
                fail += 1;
                println!(
                    "{prefix}FAIL {}: {}",
                    r.name,
                    r.reason.lines().next().unwrap_or("")
                );
            }
            Status::Skip => {
                skip += 1;
                println!(
                    "{prefix}SKIP {}: {}",
                    r.name,
                    r.reason.lines().next().unwrap_or("")
                );
            }
        }
    }
    let mut code = 0;
    if let Some(list) = &a.pass_list {
        let expected = read_list(list)?;
        let passing: BTreeSet<String> = results
            .iter()
            .filter(|r| r.status == Status::Pass)
            .map(|r| r.name.clone())
            .collect();
        let ran: BTreeSet<String> = results.iter().map(|r| r.name.clone()).collect();
        let regressions: Vec<&String> = expected
            .iter()
            .filter(|t| ran.contains(*t) && !passing.contains(*t))
            .collect();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|t| !ran.contains(*t) && !filtered)
            .collect();
        let new: Vec<&String> = passing.iter().filter(|t| !expected.contains(*t)).collect();
        for t in &regressions {
            println!(
                "REGRESSION {t}: listed in {} but did not pass",
                list.display()
            );
        }
        for t in &missing {
            println!(
                "MISSING {t}: listed in {} but not in the suite",
                list.display()
            );
        }
        if a.update_pass_list {
            let mut all: BTreeSet<String> = if filtered {
                expected.clone()
            } else {
                BTreeSet::new()
            };
            all.extend(passing.iter().cloned());
            let body: String = all.iter().map(|t| format!("{t}\n")).collect();
            std::fs::write(list, body).with_context(|| format!("writing {}", list.display()))?;
            println!("pass list {}: {} tests", list.display(), all.len());
        } else {
            if !new.is_empty() {
                println!(
                    "{} tests pass that are not in {} (add them with --update-pass-list)",
                    new.len(),
                    list.display()
                );
            }
            if !regressions.is_empty() || !missing.is_empty() {
                code = 1;
            }
        }
    }
    println!("{prefix}{pass} passed, {fail} failed, {skip} skipped");
    Ok(code)
}
