//! Generation: prefill the prompts, then decode one token per step with the KV cache kept on
//! the device. Every decode step has the same input types, so it replays one compiled program.
use crate::arch::{BuildOptions, Logits, INPUT_IDS, LOGITS, LOGITS_ROWS, POSITIONS};
use crate::hf::HfModel;
use crate::sampler::{Rng, Sampling};
use kuaxin::{Session, SessionOptions};
use kuaxin_core::{Backend, DType, DeviceTensor, Error, HostValue, Result, Tensor};
use std::sync::Arc;
use std::time::Instant;

impl BuildOptions {
    /// Options for generation: logits of each row's last token only.
    pub fn generation(dtype: DType, context: usize) -> BuildOptions {
        BuildOptions {
            dtype,
            context,
            logits: Logits::Rows,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Stop a row when its generated text contains one of these.
    pub stop_strings: Vec<String>,
    /// Keep going through end-of-sequence tokens (benchmarks, reference checks).
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 32,
            sampling: Sampling::default(),
            stop_strings: Vec::new(),
            ignore_eos: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Generated tokens per prompt (without the prompt).
    pub tokens: Vec<Vec<u32>>,
    pub prompt_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    /// Decode steps run (each produces one token per unfinished row).
    pub decode_steps: usize,
    /// Whether the decode steps replayed the compiled program (no recompilation).
    pub decode_reused_program: bool,
}

pub struct Generator {
    session: Session,
    device: Arc<dyn Backend>,
    caches: Vec<(String, [usize; 3])>,
    context: usize,
    dtype: DType,
    vocab: usize,
    eos: Vec<u32>,
    /// Bytes of weights a forward pass reads.
    pub weight_bytes: u64,
    tokenizer: Option<crate::TextTokenizer>,
}

fn i64_tensor(shape: Vec<usize>, v: Vec<i64>) -> Result<Tensor> {
    Tensor::from_vec(shape, v)
}

impl Generator {
    pub fn new(model: &HfModel, device: Arc<dyn Backend>, opts: &BuildOptions) -> Result<Self> {
        let mut opts = opts.clone();
        opts.logits = Logits::Rows;
        let g = model.build(&opts)?;
        let mut eos = model.config.eos_token_ids.clone();
        let tokenizer = model.tokenizer().ok();
        if let Some(id) = tokenizer.as_ref().and_then(|t| t.eos_id()) {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let session = Session::with_options(g.model, device.clone(), SessionOptions::default())?;
        Ok(Generator {
            session,
            device,
            caches: g
                .caches
                .iter()
                .map(|c| (c.name.clone(), [c.heads, g.context, c.dim]))
                .collect(),
            context: g.context,
            dtype: g.dtype,
            vocab: model.config.vocab,
            eos,
            weight_bytes: g.weight_bytes,
            tokenizer,
        })
    }

    pub fn context(&self) -> usize {
        self.context
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    fn empty_caches(&self, batch: usize) -> Result<Vec<(String, DeviceTensor)>> {
        self.caches
            .iter()
            .map(|(n, [h, c, d])| {
                let t = Tensor::zeros(self.dtype, vec![batch, *h, *c, *d]);
                Ok((n.clone(), self.device.upload(&t)?))
            })
            .collect()
    }

    /// One forward pass: returns `[batch, vocab]` logits (f32) and the updated caches.
    fn step(
        &self,
        ids: Tensor,
        positions: Tensor,
        rows: Tensor,
        caches: Vec<(String, DeviceTensor)>,
    ) -> Result<(Vec<f32>, Vec<(String, DeviceTensor)>)> {
        let mut inputs = vec![
            (INPUT_IDS.to_string(), self.device.upload(&ids)?),
            (POSITIONS.to_string(), self.device.upload(&positions)?),
            (LOGITS_ROWS.to_string(), self.device.upload(&rows)?),
        ];
        inputs.extend(caches);
        let outs = self.session.run_device(&inputs)?;
        let mut logits = None;
        let mut next = Vec::new();
        for (name, t) in outs {
            if name == LOGITS {
                logits = Some(self.device.download(&t)?);
            } else if let Some(cache) = name.strip_suffix(".out") {
                next.push((cache.to_string(), t));
            }
        }
        let logits = logits.ok_or_else(|| Error::backend("the model produced no logits"))?;
        let v: Vec<f32> = logits.to_f64_vec().into_iter().map(|x| x as f32).collect();
        Ok((v, next))
    }

    /// Generates continuations of `prompts` (token ids), calling `on_token(row, id)` for each
    /// new token as it comes.
    pub fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Generated> {
        let b = prompts.len();
        if b == 0 || prompts.iter().any(|p| p.is_empty()) {
            return Err(Error::invalid("every prompt needs at least one token"));
        }
        if let Some(bad) = prompts
            .iter()
            .flatten()
            .find(|&&t| t as usize >= self.vocab)
        {
            return Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.vocab
            )));
        }
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        if longest + opts.max_tokens > self.context {
            return Err(Error::invalid(format!(
                "the prompt ({longest} tokens) plus {} new tokens exceed the context of {} positions; raise the context",
                opts.max_tokens, self.context
            )));
        }
        let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
        let mut out = Generated {
            tokens: vec![Vec::new(); b],
            prompt_tokens: prompts.iter().map(|p| p.len()).sum(),
            ..Default::default()
        };
        if opts.max_tokens == 0 {
            return Ok(out);
        }
        let mut rng = Rng::new(opts.sampling.seed);
        let mut done = vec![false; b];
        let mut texts = vec![String::new(); b];

        // Prefill: prompts right-padded to the longest; each row's logits at its last token.
        let t0 = Instant::now();
        let mut ids = Vec::with_capacity(b * longest);
        let mut pos = Vec::with_capacity(b * longest);
        for p in prompts {
            for i in 0..longest {
                ids.push(p.get(i).copied().unwrap_or(0) as i64);
                pos.push(i as i64);
            }
        }
        let rows: Vec<i64> = prompts
            .iter()
            .enumerate()
            .map(|(r, p)| (r * longest + p.len() - 1) as i64)
            .collect();
        let (mut logits, mut caches) = self.step(
            i64_tensor(vec![b, longest], ids)?,
            i64_tensor(vec![b, longest], pos)?,
            i64_tensor(vec![b], rows)?,
            self.empty_caches(b)?,
        )?;
        out.prefill_secs = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut reused = true;
        for step in 0..opts.max_tokens {
            let mut next_ids = Vec::with_capacity(b);
            for r in 0..b {
                if done[r] {
                    next_ids.push(0);
                    continue;
                }
                let row = &logits[r * self.vocab..(r + 1) * self.vocab];
                let t = opts.sampling.pick(row, &seqs[r], &mut rng);
                seqs[r].push(t);
                out.tokens[r].push(t);
                on_token(r, t);
                if !opts.ignore_eos && self.eos.contains(&t) {
                    done[r] = true;
                }
                if !opts.stop_strings.is_empty() {
                    if let Some(tok) = &self.tokenizer {
                        texts[r] = tok.decode(&out.tokens[r])?;
                        if opts
                            .stop_strings
                            .iter()
                            .any(|s| texts[r].contains(s.as_str()))
                        {
                            done[r] = true;
                        }
                    }
                }
                next_ids.push(t as i64);
            }
            if step + 1 == opts.max_tokens || done.iter().all(|&d| d) {
                break;
            }
            let positions: Vec<i64> = seqs.iter().map(|s| s.len() as i64 - 1).collect();
            let rows: Vec<i64> = (0..b as i64).collect();
            let (l, c) = self.step(
                i64_tensor(vec![b, 1], next_ids)?,
                i64_tensor(vec![b, 1], positions)?,
                i64_tensor(vec![b], rows)?,
                caches,
            )?;
            if step > 0 {
                reused &= !self.session.last_stats().compiled;
            }
            logits = l;
            caches = c;
            out.decode_steps += 1;
        }
        out.decode_secs = t1.elapsed().as_secs_f64();
        out.decode_reused_program = reused;
        Ok(out)
    }
}

/// Logits `[seq, vocab]` (f32) of every position of one prompt: a graph with all-position
/// logits and a cache just long enough. For reference checks.
pub fn prompt_logits(
    model: &HfModel,
    device: Arc<dyn Backend>,
    dtype: DType,
    ids: &[u32],
) -> Result<Tensor> {
    let g = model.build(&BuildOptions {
        dtype,
        context: ids.len(),
        logits: Logits::All,
    })?;
    let n = ids.len();
    let mut inputs: Vec<(String, HostValue)> = vec![
        (
            INPUT_IDS.into(),
            HostValue::Tensor(i64_tensor(
                vec![1, n],
                ids.iter().map(|&i| i as i64).collect(),
            )?),
        ),
        (
            POSITIONS.into(),
            HostValue::Tensor(i64_tensor(vec![1, n], (0..n as i64).collect())?),
        ),
    ];
    for c in &g.caches {
        inputs.push((
            c.name.clone(),
            HostValue::Tensor(Tensor::zeros(dtype, vec![1, c.heads, n, c.dim])),
        ));
    }
    let session = Session::new(g.model, device)?;
    let outs = session.run(&inputs)?;
    let logits = outs
        .into_iter()
        .find(|(n, _)| n == LOGITS)
        .and_then(|(_, v)| v.as_tensor().cloned())
        .ok_or_else(|| Error::backend("the model produced no logits"))?;
    let v: Vec<f32> = logits.to_f64_vec().into_iter().map(|x| x as f32).collect();
    Tensor::from_vec(vec![n, logits.shape[2]], v)
}
