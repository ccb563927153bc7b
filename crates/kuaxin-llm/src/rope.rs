//! Rotary position tables: inverse frequencies with the configs' scaling rules (as the
//! transformers library computes them, in f32), and the cos/sin caches the graph gathers from.
use crate::config::{Rope, RopeScaling};
use kuaxin_core::{Result, Tensor};
use std::f64::consts::PI;

/// Inverse frequencies for `dim` rotary dims, and the factor cos and sin are multiplied by.
pub fn inv_freq(rope: &Rope, dim: usize, context: usize) -> (Vec<f32>, f64) {
    let half = dim / 2;
    let base_at = |theta: f64| -> Vec<f32> {
        (0..half)
            .map(|i| {
                let e = (2 * i) as f32 / dim as f32;
                1.0 / (theta as f32).powf(e)
            })
            .collect()
    };
    match &rope.scaling {
        RopeScaling::Default => (base_at(rope.theta), 1.0),
        RopeScaling::Linear { factor } => (
            base_at(rope.theta)
                .into_iter()
                .map(|f| f / *factor as f32)
                .collect(),
            1.0,
        ),
        RopeScaling::Dynamic {
            factor,
            original_max,
        } => {
            // Frequencies for the longest context this graph serves (transformers recomputes
            // them as the sequence grows; identical up to the original length).
            let len = context.max(*original_max) as f64;
            let theta = if len > *original_max as f64 {
                let d = dim as f64;
                rope.theta
                    * ((factor * len / *original_max as f64) - (factor - 1.0)).powf(d / (d - 2.0))
            } else {
                rope.theta
            };
            (base_at(theta), 1.0)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max,
        } => {
            let old = *original_max as f64;
            let (low_wl, high_wl) = (old / low_freq_factor, old / high_freq_factor);
            let v = base_at(rope.theta)
                .into_iter()
                .map(|f| {
                    let f = f as f64;
                    let wl = 2.0 * PI / f;
                    let scaled = if wl > low_wl { f / factor } else { f };
                    let smooth =
                        (old / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    let medium = !(wl < high_wl) && !(wl > low_wl);
                    if medium {
                        ((1.0 - smooth) * scaled / factor + smooth * scaled) as f32
                    } else {
                        scaled as f32
                    }
                })
                .collect();
            (v, 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_max,
            beta_fast,
            beta_slow,
            mscale,
            mscale_all_dim,
            attention_factor,
            truncate,
        } => {
            let get_mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let att = match (attention_factor, mscale, mscale_all_dim) {
                (Some(a), _, _) => *a,
                (None, Some(m), Some(ma)) if *m != 0.0 && *ma != 0.0 => {
                    get_mscale(*factor, *m) / get_mscale(*factor, *ma)
                }
                _ => get_mscale(*factor, 1.0),
            };
            let d = dim as f64;
            let corr = |rot: f64| {
                d * ((*original_max as f64) / (rot * 2.0 * PI)).ln() / (2.0 * rope.theta.ln())
            };
            let (mut low, mut high) = (corr(*beta_fast), corr(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let high = high.min(d - 1.0);
            let high = if low == high { high + 0.001 } else { high };
            let v = (0..half)
                .map(|i| {
                    let pos = (rope.theta as f32).powf((2 * i) as f32 / dim as f32);
                    let extra = 1.0 / pos;
                    let inter = 1.0 / (*factor as f32 * pos);
                    let ramp = (((i as f64 - low) / (high - low)).clamp(0.0, 1.0)) as f32;
                    let extra_factor = 1.0 - ramp;
                    inter * (1.0 - extra_factor) + extra * extra_factor
                })
                .collect();
            (v, att)
        }
    }
}

/// `[context, dim / 2]` cos and sin tables for positions `0..context`, in f32.
pub fn tables(rope: &Rope, dim: usize, context: usize) -> Result<(Tensor, Tensor)> {
    let (inv, scale) = inv_freq(rope, dim, context);
    let half = inv.len();
    let mut cos = Vec::with_capacity(context * half);
    let mut sin = Vec::with_capacity(context * half);
    for p in 0..context {
        for &f in &inv {
            // Product in f32 like the reference; cos/sin of that value in f64.
            let a = (p as f32 * f) as f64;
            cos.push((a.cos() * scale) as f32);
            sin.push((a.sin() * scale) as f32);
        }
    }
    Ok((
        Tensor::from_vec(vec![context, half], cos)?,
        Tensor::from_vec(vec![context, half], sin)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling) -> Rope {
        Rope {
            theta: 10000.0,
            scaling,
            partial: 1.0,
        }
    }

    #[test]
    fn default_frequencies_follow_the_formula() {
        let (f, s) = inv_freq(&rope(RopeScaling::Default), 8, 16);
        assert_eq!(s, 1.0);
        for (i, v) in f.iter().enumerate() {
            let want = 1.0 / 10000f64.powf(2.0 * i as f64 / 8.0);
            assert!(
                (*v as f64 - want).abs() < 1e-7 * want.max(1e-3),
                "{i}: {v} vs {want}"
            );
        }
    }

    #[test]
    fn linear_scaling_divides_every_frequency() {
        let (a, _) = inv_freq(&rope(RopeScaling::Default), 16, 16);
        let (b, _) = inv_freq(&rope(RopeScaling::Linear { factor: 4.0 }), 16, 16);
        for (x, y) in a.iter().zip(&b) {
            assert!((x / 4.0 - y).abs() <= 1e-7 * x);
        }
    }
}
