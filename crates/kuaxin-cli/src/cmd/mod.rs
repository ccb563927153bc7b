pub mod bench;
pub mod bench_llm;
pub mod check;
pub mod conformance;
pub mod demo;
pub mod devices;
pub mod generate;
pub mod info;
pub mod inputs;
pub mod llm_args;
pub mod run;

use anyhow::{anyhow, Result};
use std::collections::HashMap;

/// Parses `NAME=VALUE` pairs.
pub fn split_pair(s: &str, what: &str) -> Result<(String, String)> {
    s.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| anyhow!("{what} '{s}' should look like NAME=VALUE"))
}

pub fn parse_dims(dims: &[String]) -> Result<HashMap<String, usize>> {
    dims.iter()
        .map(|d| {
            let (k, v) = split_pair(d, "--dim")?;
            let n: usize = v
                .parse()
                .map_err(|_| anyhow!("--dim {k}={v}: not a non-negative integer"))?;
            Ok((k, n))
        })
        .collect()
}
