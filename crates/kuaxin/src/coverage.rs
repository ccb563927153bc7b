//! The op x device coverage matrix: for each op type and device, how many tests (or nodes)
//! passed, failed, were unsupported, or passed with part of the work on the host.
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Unsupported,
    /// Passed, with part of the op run on the host (data-dependent host ops).
    Host,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    pub pass: usize,
    pub fail: usize,
    pub unsupported: usize,
    pub host: usize,
}

impl Cell {
    pub fn total(&self) -> usize {
        self.pass + self.fail + self.unsupported + self.host
    }

    /// One word: `fail` if anything failed, else `unsupported` if nothing ran, else `host` if
    /// anything ran on the host, else `partial` when some were unsupported, else `pass`; `-`
    /// when the op was never seen on this device.
    pub fn status(&self) -> &'static str {
        if self.total() == 0 {
            "-"
        } else if self.fail > 0 {
            "fail"
        } else if self.pass + self.host == 0 {
            "unsupported"
        } else if self.host > 0 {
            "host"
        } else if self.unsupported > 0 {
            "partial"
        } else {
            "pass"
        }
    }

    /// `pass 12/12`, `fail 3/5`: the status and how many of the cases passed.
    pub fn label(&self) -> String {
        if self.total() == 0 {
            return "-".into();
        }
        format!(
            "{} {}/{}",
            self.status(),
            self.pass + self.host,
            self.total()
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Coverage {
    pub devices: Vec<String>,
    pub ops: BTreeMap<String, Vec<Cell>>,
}

impl Coverage {
    pub fn new(devices: Vec<String>) -> Coverage {
        Coverage {
            devices,
            ops: BTreeMap::new(),
        }
    }

    /// Makes `op` a row even when nothing was recorded for it.
    pub fn add_op(&mut self, op: &str) {
        let n = self.devices.len();
        self.ops
            .entry(op.to_string())
            .or_insert_with(|| vec![Cell::default(); n]);
    }

    pub fn record(&mut self, op: &str, device: usize, outcome: Outcome) {
        self.add_op(op);
        if let Some(c) = self.ops.get_mut(op).and_then(|row| row.get_mut(device)) {
            match outcome {
                Outcome::Pass => c.pass += 1,
                Outcome::Fail => c.fail += 1,
                Outcome::Unsupported => c.unsupported += 1,
                Outcome::Host => c.host += 1,
            }
        }
    }

    /// A fixed-width text table, one row per op.
    pub fn to_text(&self) -> String {
        let w0 = self.ops.keys().map(|k| k.len()).max().unwrap_or(2).max(2);
        let cols: Vec<usize> = (0..self.devices.len())
            .map(|d| {
                self.ops
                    .values()
                    .map(|row| row[d].label().len())
                    .max()
                    .unwrap_or(1)
                    .max(self.devices[d].len())
            })
            .collect();
        let mut s = format!("{:<w0$}", "op");
        for (d, w) in self.devices.iter().zip(&cols) {
            s += &format!("  {d:<w$}");
        }
        s = s.trim_end().to_string();
        s.push('\n');
        for (op, row) in &self.ops {
            let mut line = format!("{op:<w0$}");
            for (c, w) in row.iter().zip(&cols) {
                line += &format!("  {:<w$}", c.label());
            }
            s += line.trim_end();
            s.push('\n');
        }
        s
    }

    /// Rows with counts, for JSON and HTML reports.
    pub fn to_json(&self) -> serde_json::Value {
        let ops: Vec<serde_json::Value> = self
            .ops
            .iter()
            .map(|(op, row)| {
                let cells: Vec<serde_json::Value> = row
                    .iter()
                    .map(|c| serde_json::json!({"status": c.status(), "pass": c.pass, "fail": c.fail, "unsupported": c.unsupported, "host": c.host}))
                    .collect();
                serde_json::json!({"op": op, "cells": cells})
            })
            .collect();
        serde_json::json!({"devices": self.devices, "ops": ops})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_follow_precedence() {
        let mut c = Coverage::new(vec!["cpu".into(), "wgpu".into()]);
        c.record("Add", 0, Outcome::Pass);
        c.record("Add", 0, Outcome::Unsupported);
        c.record("Add", 1, Outcome::Fail);
        c.record("NonZero", 0, Outcome::Host);
        c.add_op("Foo");
        assert_eq!(c.ops["Add"][0].label(), "partial 1/2");
        assert_eq!(c.ops["Add"][1].status(), "fail");
        assert_eq!(c.ops["NonZero"][0].status(), "host");
        assert_eq!(c.ops["Foo"][0].status(), "-");
        let text = c.to_text();
        assert!(text.lines().count() == 4 && text.contains("wgpu"), "{text}");
    }
}
