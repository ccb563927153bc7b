//! Choosing the next token from logits: repetition penalty, then greedy (temperature 0) or
//! temperature, top-k and top-p sampling with a seeded generator.

#[derive(Debug, Clone)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no limit.
    pub top_k: usize,
    /// 1 means no limit.
    pub top_p: f32,
    /// 1 means none; >1 discourages tokens already in the context (as transformers does).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// splitmix64: small, seedable, good enough for sampling.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Index of the largest value (the first on ties, like argmax in PyTorch).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

impl Sampling {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Picks a token from `logits` given the tokens so far (`context`, for the penalty).
    pub fn pick(&self, logits: &[f32], context: &[u32], rng: &mut Rng) -> u32 {
        let mut l = logits.to_vec();
        if self.repetition_penalty != 1.0 {
            for &t in context {
                if let Some(x) = l.get_mut(t as usize) {
                    *x = if *x > 0.0 {
                        *x / self.repetition_penalty
                    } else {
                        *x * self.repetition_penalty
                    };
                }
            }
        }
        if self.is_greedy() {
            return argmax(&l) as u32;
        }
        let mut idx: Vec<usize> = (0..l.len()).filter(|&i| l[i].is_finite()).collect();
        if idx.is_empty() {
            return argmax(&l) as u32;
        }
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        if self.top_k > 0 {
            idx.truncate(self.top_k);
        }
        let m = l[idx[0]];
        let mut p: Vec<f64> = idx
            .iter()
            .map(|&i| (((l[i] - m) / self.temperature) as f64).exp())
            .collect();
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= total);
        if self.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p (at least one token).
            let mut acc = 0.0;
            let mut keep = p.len();
            for (i, x) in p.iter().enumerate() {
                acc += x;
                if acc >= self.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            idx.truncate(keep);
            p.truncate(keep);
            let t: f64 = p.iter().sum();
            p.iter_mut().for_each(|x| *x /= t);
        }
        let r = rng.next_f64();
        let mut acc = 0.0;
        for (i, x) in p.iter().enumerate() {
            acc += x;
            if r < acc {
                return idx[i] as u32;
            }
        }
        idx[idx.len() - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_and_the_penalty_can_change_it() {
        let s = Sampling::default();
        let mut rng = Rng::new(1);
        assert_eq!(s.pick(&[0.1, 2.0, 1.5], &[], &mut rng), 1);
        let p = Sampling {
            repetition_penalty: 2.0,
            ..Sampling::default()
        };
        assert_eq!(p.pick(&[0.1, 2.0, 1.5], &[1], &mut rng), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_sampling_follows_the_distribution() {
        let mut rng = Rng::new(7);
        let k1 = Sampling {
            temperature: 1.0,
            top_k: 1,
            ..Sampling::default()
        };
        for _ in 0..20 {
            assert_eq!(k1.pick(&[0.0, 3.0, 1.0], &[], &mut rng), 1);
        }
        let s = Sampling {
            temperature: 1.0,
            ..Sampling::default()
        };
        // p = softmax([0, ln 3]) = [0.25, 0.75].
        let n = 4000;
        let ones = (0..n)
            .filter(|_| s.pick(&[0.0, 3f32.ln()], &[], &mut rng) == 1)
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.03, "sampled {frac}");
    }

    #[test]
    fn top_p_cuts_the_tail() {
        let mut rng = Rng::new(3);
        let s = Sampling {
            temperature: 1.0,
            top_p: 0.5,
            ..Sampling::default()
        };
        // The best token alone holds ~0.84 of the mass: top_p 0.5 keeps only it.
        for _ in 0..50 {
            assert_eq!(s.pick(&[5.0, 3.0, 1.0], &[], &mut rng), 0);
        }
    }
}
