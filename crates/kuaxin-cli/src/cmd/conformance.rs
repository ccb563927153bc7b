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
}

fn read_list(p: &PathBuf) -> Result<BTreeSet<String>> {
    if !p.exists() {
        return Ok(BTreeSet::new());
    }
    let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(s.lines().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
}

pub fn main(a: Args) -> Result<i32> {
    let re = match &a.filter {
        Some(f) => Some(regex::Regex::new(f).map_err(|e| anyhow!("--filter: {e}"))?),
        None => None,
    };
    let mut cases = list_cases(&a.suite)?;
    if cases.is_empty() {
        return Err(anyhow!("{}: no tests found (folders with model.onnx)", a.suite.display()));
    }
    if let Some(re) = &re {
        cases.retain(|c| c.file_name().is_some_and(|n| re.is_match(&n.to_string_lossy())));
    }
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    // One thread per job inside the back end: tests are small, parallelism comes from jobs.
    let device = kuaxin::open_device(&a.device, Some(1))?;
    // A panicking test is reported as a failure; keep the default hook from printing it.
    std::panic::set_hook(Box::new(|_| {}));
    let pb = bar(cases.len() as u64, "conformance");
    let results = run_cases(&cases, device, jobs, &|_r: &CaseResult| pb.inc(1));
    pb.finish_and_clear();
    let _ = std::panic::take_hook();
    for (name, atol) in kuaxin::conformance::ROUNDED_REFERENCES {
        if results.iter().any(|r| r.name == *name) {
            println!("NOTE {name}: its expected values are rounded to 4 decimals in the ONNX test generator; compared with atol {atol:e}");
        }
    }
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for r in &results {
        match r.status {
            Status::Pass => {
                pass += 1;
                if a.verbose {
                    println!("PASS {}", r.name);
                }
            }
            Status::Fail => {
                fail += 1;
                println!("FAIL {}: {}", r.name, r.reason.lines().next().unwrap_or(""));
            }
            Status::Skip => {
                skip += 1;
                println!("SKIP {}: {}", r.name, r.reason.lines().next().unwrap_or(""));
            }
        }
    }
    if let Some(path) = &a.json {
        let arr: Vec<serde_json::Value> = results
            .iter()
            .map(|r| serde_json::json!({"name": r.name, "status": format!("{:?}", r.status).to_lowercase(), "reason": r.reason, "millis": r.millis}))
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&arr)?).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut code = 0;
    if let Some(list) = &a.pass_list {
        let expected = read_list(list)?;
        let passing: BTreeSet<String> = results.iter().filter(|r| r.status == Status::Pass).map(|r| r.name.clone()).collect();
        let ran: BTreeSet<String> = results.iter().map(|r| r.name.clone()).collect();
        let regressions: Vec<&String> = expected.iter().filter(|t| ran.contains(*t) && !passing.contains(*t)).collect();
        let missing: Vec<&String> = expected.iter().filter(|t| !ran.contains(*t) && re.is_none()).collect();
        let new: Vec<&String> = passing.iter().filter(|t| !expected.contains(*t)).collect();
        for t in &regressions {
            println!("REGRESSION {t}: listed in {} but did not pass", list.display());
        }
        for t in &missing {
            println!("MISSING {t}: listed in {} but not in the suite", list.display());
        }
        if a.update_pass_list {
            let mut all: BTreeSet<String> = if re.is_some() { expected.clone() } else { BTreeSet::new() };
            all.extend(passing.iter().cloned());
            let body: String = all.iter().map(|t| format!("{t}\n")).collect();
            std::fs::write(list, body).with_context(|| format!("writing {}", list.display()))?;
            println!("pass list {}: {} tests", list.display(), all.len());
        } else {
            if !new.is_empty() {
                println!("{} tests pass that are not in {} (add them with --update-pass-list)", new.len(), list.display());
            }
            if !regressions.is_empty() || !missing.is_empty() {
                code = 1;
            }
        }
    }
    println!("{pass} passed, {fail} failed, {skip} skipped");
    Ok(code)
}
