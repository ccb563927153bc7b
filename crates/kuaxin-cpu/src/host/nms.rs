//! NonMaxSuppression (ONNX reference semantics). Inputs: boxes `[B, N, 4]`, scores
//! `[B, C, N]`, max_output_boxes_per_class (i64), iou_threshold, score_threshold (scalars;
//! an empty tensor means "not given"). Per batch and class: boxes scoring above the score
//! threshold, by descending score (ties: lower index first), each kept unless its IoU with an
//! already kept box exceeds the IoU threshold, at most max_output_boxes_per_class of them.
//! Output: i64 `[selected, 3]` rows of (batch, class, box).
use crate::limits;
use crate::scalar::total_cmp;
use kuaxin_core::{DType, Data, Error, Result, Tensor};

pub fn nms(inputs: &[&Tensor], center_point_box: bool) -> Result<Vec<Tensor>> {
    let (boxes, scores) = (inputs[0], inputs[1]);
    let bad = || {
        Error::invalid(format!(
            "NonMaxSuppression: boxes {} / scores {} do not fit",
            boxes.type_string(),
            scores.type_string()
        ))
    };
    if boxes.shape.len() != 3 || boxes.shape[2] != 4 || scores.shape.len() != 3 {
        return Err(bad());
    }
    let (nb, nbox, nc) = (boxes.shape[0], boxes.shape[1], scores.shape[1]);
    if scores.shape[0] != nb || scores.shape[2] != nbox {
        return Err(bad());
    }
    if !boxes.dtype().is_float() || !scores.dtype().is_float() {
        return Err(Error::invalid(
            "NonMaxSuppression: boxes and scores must be float",
        ));
    }
    let max_out = match &inputs[2].data {
        d if d.dtype().is_int() => d.to_i64_vec().first().copied().unwrap_or(0).max(0) as u64,
        d => {
            return Err(Error::invalid(format!(
                "NonMaxSuppression: max_output_boxes_per_class must be an integer, got {}",
                d.dtype()
            )))
        }
    };
    let first_f32 = |t: &Tensor| t.data.to_f64_vec().first().map(|&x| x as f32);
    let iou_threshold = first_f32(inputs[3]).unwrap_or(0.0);
    let score_threshold = first_f32(inputs[4]);

    let bx: Vec<f32> = boxes
        .data
        .to_f64_vec()
        .into_iter()
        .map(|x| x as f32)
        .collect();
    let sc: Vec<f32> = scores
        .data
        .to_f64_vec()
        .into_iter()
        .map(|x| x as f32)
        .collect();
    let mut out: Vec<i64> = vec![];
    let mut cand: Vec<(f32, usize)> = Vec::with_capacity(nbox);
    let mut kept: Vec<usize> = vec![];
    for b in 0..nb {
        let bb = &bx[b * nbox * 4..(b + 1) * nbox * 4];
        for c in 0..nc {
            let s = &sc[(b * nc + c) * nbox..(b * nc + c + 1) * nbox];
            cand.clear();
            cand.extend(
                s.iter()
                    .enumerate()
                    .filter(|(_, &v)| score_threshold.is_none_or(|t| v > t))
                    .map(|(i, &v)| (v, i)),
            );
            cand.sort_by(|x, y| total_cmp(&y.0, &x.0).then(x.1.cmp(&y.1)));
            kept.clear();
            for &(_, i) in &cand {
                if kept.len() as u64 >= max_out {
                    break;
                }
                let bi = &bb[i * 4..i * 4 + 4];
                if kept
                    .iter()
                    .all(|&j| !suppress(bi, &bb[j * 4..j * 4 + 4], center_point_box, iou_threshold))
                {
                    kept.push(i);
                    out.extend([b as i64, c as i64, i as i64]);
                }
            }
        }
    }
    limits::check_alloc(DType::I64, out.len())?;
    let rows = out.len() / 3;
    Ok(vec![Tensor::new(vec![rows, 3], Data::I64(out))?])
}

/// (min, max) of two coordinates.
fn ordered(a: f32, b: f32) -> (f32, f32) {
    if a >= b {
        (b, a)
    } else {
        (a, b)
    }
}

/// The box as (x_min, x_max, y_min, y_max).
fn extent(b: &[f32], center: bool) -> (f32, f32, f32, f32) {
    if center {
        let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
        (b[0] - hw, b[0] + hw, b[1] - hh, b[1] + hh)
    } else {
        let (x0, x1) = ordered(b[1], b[3]);
        let (y0, y1) = ordered(b[0], b[2]);
        (x0, x1, y0, y1)
    }
}

/// Whether boxes `a` and `b` overlap by more than `threshold` IoU.
fn suppress(a: &[f32], b: &[f32], center: bool, threshold: f32) -> bool {
    let (ax0, ax1, ay0, ay1) = extent(a, center);
    let (bx0, bx1, by0, by1) = extent(b, center);
    let (ix0, ix1) = (ax0.max(bx0), ax1.min(bx1));
    if ix1 <= ix0 {
        return false;
    }
    let (iy0, iy1) = (ay0.max(by0), ay1.min(by1));
    if iy1 <= iy0 {
        return false;
    }
    let inter = (ix1 - ix0) * (iy1 - iy0);
    if inter <= 0.0 {
        return false;
    }
    let area_a = (ax1 - ax0) * (ay1 - ay0);
    let area_b = (bx1 - bx0) * (by1 - by0);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > threshold
}
