//! What a training run is: [`TrainConfig`], with its [`Loss`] and learning-rate [`Schedule`].
//!
//! The configuration is saved in every checkpoint, so a resumed run can refuse to continue
//! under settings that would make it a different run.

use crate::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Default Wing width `w` in normalised coordinates. Feng et al. use `w = 10` pixels for faces
/// of a few hundred pixels; fkd's targets are fractions of the crop, and 0.05 of a 224-pixel
/// crop is 11 pixels, so the log region covers the same few-pixel errors.
pub const WING_W: f64 = 0.05;
/// Default Wing curvature `eps` in normalised coordinates (Feng et al.: 2 pixels, about 0.01
/// of a 224-pixel crop).
pub const WING_EPS: f64 = 0.01;

/// The regression loss, averaged over every element of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Loss {
    /// Mean squared error.
    Mse,
    /// Mean absolute error.
    L1,
    /// Wing loss (Feng et al., CVPR 2018): `w·ln(1 + |x|/eps)` below `w`, `|x| − C` above,
    /// with `C` making it continuous. Amplifies small and medium errors relative to L2.
    Wing {
        /// Width of the logarithmic region, in target units (default [`WING_W`]).
        #[serde(default = "default_wing_w")]
        w: f64,
        /// Curvature of the logarithmic region, in target units (default [`WING_EPS`]).
        #[serde(default = "default_wing_eps")]
        eps: f64,
    },
    /// MSE with the squared error of every target element above `threshold` counted
    /// `1 + weight` times: for heatmaps, whose few pixels near each point would otherwise weigh
    /// as much as the background that fills the rest of the map (the weight map of Wang et
    /// al.'s Adaptive Wing loss, 2019, there with w = 10 above 0.2 of the peak). A weight of
    /// 0 is plain MSE.
    ForegroundMse {
        /// Extra weight of a foreground element (≥ 0).
        weight: f64,
        /// Targets above this are foreground.
        #[serde(default = "default_foreground_threshold")]
        threshold: f64,
    },
    /// Adaptive Wing loss on heatmaps (Wang et al., ICCV 2019), for targets in [0, 1]: with
    /// `a = |pred − target|` and `p = alpha − target`, `omega·ln(1 + (a/eps)^p)` below `theta`,
    /// linear above (continuous, with a continuous slope), each pixel counted `1 + weight`
    /// times where its target is above `threshold` (the paper's weight map, without its
    /// dilation). Near the foreground (`p` ≈ 1.1) it acts like L1 on small errors, so the peak
    /// is fitted closely; on the background (`p` ≈ 2.1) like L2, so tiny errors there are not
    /// chased. [`Loss::adaptive_wing`] gives the paper's settings.
    AdaptiveWing(AdaptiveWing),
}

/// [`Loss::AdaptiveWing`]'s parameters ([`Loss::adaptive_wing`] gives the paper's).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveWing {
    /// Scale of the logarithmic part (14).
    pub omega: f64,
    /// Where the logarithm gives way to the line, in target units (0.5).
    pub theta: f64,
    /// Curvature of the logarithmic part (1).
    pub eps: f64,
    /// The exponent is `alpha − target` (2.1): L2-like on the background, L1-like at peaks.
    pub alpha: f64,
    /// Extra weight of a foreground pixel (≥ 0).
    pub weight: f64,
    /// Targets above this are foreground.
    pub threshold: f64,
}

impl AdaptiveWing {
    /// Whether every parameter is usable: positive ω, θ, ε, α > 1, a weight ≥ 0.
    fn is_valid(&self) -> bool {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        positive(self.omega)
            && positive(self.theta)
            && positive(self.eps)
            && self.alpha.is_finite()
            && self.alpha > 1.0
            && self.weight.is_finite()
            && self.weight >= 0.0
            && self.threshold.is_finite()
    }
}

/// Default foreground threshold of [`Loss::ForegroundMse`]: a fifth of a Gaussian map's peak.
pub const FOREGROUND_THRESHOLD: f64 = 0.2;

fn default_foreground_threshold() -> f64 {
    FOREGROUND_THRESHOLD
}

fn default_wing_w() -> f64 {
    WING_W
}

fn default_wing_eps() -> f64 {
    WING_EPS
}

impl Loss {
    /// Adaptive Wing with the paper's settings: ω 14, θ 0.5, ε 1, α 2.1, foreground weight 10
    /// above 0.2 of the peak.
    pub fn adaptive_wing() -> Self {
        Loss::AdaptiveWing(AdaptiveWing {
            omega: 14.0,
            theta: 0.5,
            eps: 1.0,
            alpha: 2.1,
            weight: 10.0,
            threshold: FOREGROUND_THRESHOLD,
        })
    }

    /// Wing loss with the defaults for normalised coordinates.
    pub fn wing() -> Self {
        Loss::Wing {
            w: WING_W,
            eps: WING_EPS,
        }
    }
}

/// How the learning rate changes from epoch to epoch (epochs count from 0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// The base rate times `gamma` every `every` epochs: `lr · gamma^⌊epoch / every⌋`.
    Step {
        /// Epochs between decays (at least 1).
        every: usize,
        /// Factor applied at each decay.
        gamma: f64,
    },
    /// Cosine annealing from the base rate at epoch 0 towards `min_lr` at epoch `epochs`:
    /// `min_lr + (lr − min_lr)·(1 + cos(π·epoch/epochs))/2`.
    Cosine {
        /// The floor the rate anneals towards.
        min_lr: f64,
    },
    /// A linear warm-up over the first `warmup` epochs, step by step, from `lr/(warmup·n)` to
    /// `lr` (`n` batches per epoch), then cosine annealing, also step by step, towards `min_lr`
    /// at the end of the run. Large batch-normalised nets trained with AdamW from scratch
    /// need the warm-up: full-rate steps on random weights blow the moments up.
    WarmupCosine {
        /// Warm-up length in epochs.
        warmup: usize,
        /// The floor the rate anneals towards.
        min_lr: f64,
    },
    /// PyTorch's `OneCycleLR` with its defaults (Smith & Topin's "super-convergence" schedule),
    /// step by step: over the first `pct_start` of the run's steps the rate rises from
    /// `lr/div` to `lr` along a half cosine while Adam's β1 falls from 0.95 to 0.85; over the
    /// rest the rate falls to `lr/(div·final_div)` and β1 rises back to 0.95.
    OneCycle {
        /// Fraction of the steps spent rising (PyTorch's default 0.3; its peers often use 0.1).
        pct_start: f64,
        /// The starting rate is `lr/div` (PyTorch: 25).
        div: f64,
        /// The final rate is the starting rate over `final_div` (PyTorch: 1e4).
        final_div: f64,
    },
}

/// β1 at the peak rate and at the ends of a [`Schedule::OneCycle`] run (PyTorch's
/// `base_momentum` and `max_momentum`).
pub const ONE_CYCLE_BETA1: (f64, f64) = (0.85, 0.95);

/// `end + (start − end)·(1 + cos(π·pct))/2`: from `start` at `pct` 0 to `end` at 1.
fn cos_anneal(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) * (1.0 + (std::f64::consts::PI * pct).cos()) / 2.0
}

impl Schedule {
    /// The learning rate of `epoch` in a run of `epochs` epochs with base rate `base_lr`.
    pub fn lr_at(&self, base_lr: f64, epoch: usize, epochs: usize) -> f64 {
        match *self {
            Schedule::Constant => base_lr,
            Schedule::Step { every, gamma } => {
                let decays = epoch / every.max(1);
                base_lr * gamma.powi(i32::try_from(decays).unwrap_or(i32::MAX))
            }
            Schedule::Cosine { min_lr } => {
                if epochs == 0 {
                    return base_lr;
                }
                let phase = std::f64::consts::PI * epoch as f64 / epochs as f64;
                min_lr + (base_lr - min_lr) * (1.0 + phase.cos()) / 2.0
            }
            // Without the batch count, each epoch counts as one step.
            Schedule::WarmupCosine { .. } | Schedule::OneCycle { .. } => {
                self.lr_at_step(base_lr, epoch, 0, 1, epochs)
            }
        }
    }

    /// Where step `batch` of `epoch` falls in a [`Schedule::OneCycle`] run: `(rising, pct)`,
    /// the phase and how far into it (PyTorch's phase ends: step `pct_start·T − 1` and
    /// `T − 1`).
    fn one_cycle_phase(
        pct_start: f64,
        epoch: usize,
        batch: usize,
        n_batches: usize,
        epochs: usize,
    ) -> (bool, f64) {
        let n = n_batches.max(1) as f64;
        let step = epoch as f64 * n + batch as f64;
        let total = epochs as f64 * n;
        let end_up = pct_start * total - 1.0;
        let end = total - 1.0;
        if step <= end_up {
            (true, if end_up > 0.0 { step / end_up } else { 1.0 })
        } else {
            let span = end - end_up;
            (
                false,
                if span > 0.0 {
                    ((step - end_up) / span).min(1.0)
                } else {
                    1.0
                },
            )
        }
    }

    /// Adam's β1 for step `batch` of `epoch` where the schedule sets it ([`Schedule::OneCycle`]
    /// cycles it against the rate); `None` leaves the configured β1.
    pub fn beta1_at_step(
        &self,
        epoch: usize,
        batch: usize,
        n_batches: usize,
        epochs: usize,
    ) -> Option<f64> {
        let Schedule::OneCycle { pct_start, .. } = *self else {
            return None;
        };
        let (low, high) = ONE_CYCLE_BETA1;
        let (rising, pct) = Self::one_cycle_phase(pct_start, epoch, batch, n_batches, epochs);
        Some(if rising {
            cos_anneal(high, low, pct)
        } else {
            cos_anneal(low, high, pct)
        })
    }

    /// The learning rate of batch `batch` (of `n_batches`) in `epoch`. Only
    /// [`Schedule::WarmupCosine`] and [`Schedule::OneCycle`] change within an epoch; the others
    /// give [`Schedule::lr_at`].
    pub fn lr_at_step(
        &self,
        base_lr: f64,
        epoch: usize,
        batch: usize,
        n_batches: usize,
        epochs: usize,
    ) -> f64 {
        if let Schedule::OneCycle {
            pct_start,
            div,
            final_div,
        } = *self
        {
            let start = base_lr / div;
            let (rising, pct) = Self::one_cycle_phase(pct_start, epoch, batch, n_batches, epochs);
            return if rising {
                cos_anneal(start, base_lr, pct)
            } else {
                cos_anneal(base_lr, start / final_div, pct)
            };
        }
        let Schedule::WarmupCosine { warmup, min_lr } = *self else {
            return self.lr_at(base_lr, epoch, epochs);
        };
        let n = n_batches.max(1) as f64;
        let step = epoch as f64 * n + batch as f64;
        let (warm_steps, total) = (warmup as f64 * n, epochs as f64 * n);
        if step < warm_steps {
            return base_lr * (step + 1.0) / warm_steps;
        }
        if total <= warm_steps {
            return base_lr;
        }
        let phase = std::f64::consts::PI * (step - warm_steps) / (total - warm_steps);
        min_lr + (base_lr - min_lr) * (1.0 + phase.cos()) / 2.0
    }
}

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs to train (a resumed run may raise this to train longer).
    pub epochs: usize,
    /// Samples per batch. `fit` does not build loaders: build the training loader with this
    /// size; it is recorded so a resume with another size is refused.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Decoupled (AdamW) weight decay; 0 gives plain Adam.
    pub weight_decay: f64,
    /// Adam's `β1, β2`.
    pub betas: [f64; 2],
    /// Adam's `ε`.
    pub eps: f64,
    /// The loss.
    pub loss: Loss,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// The run's seed. `fit` does not draw random numbers itself: pass it to the training
    /// loader's `shuffled` and to the model's initialisation; it is recorded for resume.
    pub seed: u64,
    /// Where history and checkpoints go.
    pub out_dir: PathBuf,
    /// Stop when a loss exceeds this factor times its reference (see [`crate::fit()`]).
    pub diverge_factor: f64,
    /// Continue the run saved in `out_dir` instead of starting a new one.
    pub resume: bool,
    /// Validate after every `valid_every`-th epoch (counted from 1) and after the last; the
    /// epochs between train only, and only validated epochs can become the best checkpoint.
    /// 1 (the default) validates every epoch.
    pub valid_every: usize,
    /// Evaluate, select and save an exponential moving average of the weights with this decay
    /// per step (see [`crate::ema`]) instead of the weights themselves; `None` (the default)
    /// turns it off. Typical: 0.998–0.9999, about `1 / (1 − decay)` steps averaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 16,
            lr: 1e-3,
            weight_decay: 0.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            loss: Loss::Mse,
            schedule: Schedule::Constant,
            seed: 0,
            out_dir: PathBuf::from("runs"),
            diverge_factor: 1e3,
            resume: false,
            valid_every: 1,
            ema: None,
        }
    }
}

impl TrainConfig {
    /// Whether `epoch` (counted from 0) ends with a validation: every `valid_every`-th epoch,
    /// and the last one.
    pub fn validates(&self, epoch: usize) -> bool {
        (epoch + 1).is_multiple_of(self.valid_every) || epoch + 1 >= self.epochs
    }

    /// The learning rate of `epoch` under this configuration's schedule.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.schedule.lr_at(self.lr, epoch, self.epochs)
    }

    /// The learning rate of batch `batch` of `n_batches` in `epoch` ([`Schedule::lr_at_step`]).
    pub fn lr_at_step(&self, epoch: usize, batch: usize, n_batches: usize) -> f64 {
        self.schedule
            .lr_at_step(self.lr, epoch, batch, n_batches, self.epochs)
    }

    /// Adam's `β1, β2` for batch `batch` of `n_batches` in `epoch`: the configured pair, with
    /// β1 replaced where the schedule cycles it ([`Schedule::beta1_at_step`]).
    pub fn betas_at_step(&self, epoch: usize, batch: usize, n_batches: usize) -> [f64; 2] {
        let [b1, b2] = self.betas;
        let b1 = self
            .schedule
            .beta1_at_step(epoch, batch, n_batches, self.epochs)
            .unwrap_or(b1);
        [b1, b2]
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(TrainError::Config(what));
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.valid_every == 0 {
            return bad("valid_every must be at least 1".into());
        }
        if !positive(self.lr) {
            return bad(format!("lr must be a positive number, not {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be 0 or more, not {}",
                self.weight_decay
            ));
        }
        for (name, beta) in [("betas[0]", self.betas[0]), ("betas[1]", self.betas[1])] {
            if !(0.0..1.0).contains(&beta) {
                return bad(format!("{name} must lie in [0, 1), not {beta}"));
            }
        }
        if !positive(self.eps) {
            return bad(format!("eps must be a positive number, not {}", self.eps));
        }
        if let Some(decay) = self.ema
            && !(decay > 0.0 && decay < 1.0)
        {
            return bad(format!("the EMA decay must lie in (0, 1), not {decay}"));
        }
        if !(self.diverge_factor.is_finite() && self.diverge_factor > 1.0) {
            return bad(format!(
                "diverge_factor must be a number above 1, not {}",
                self.diverge_factor
            ));
        }
        if let Loss::Wing { w, eps } = self.loss
            && (!positive(w) || !positive(eps))
        {
            return bad(format!(
                "wing loss needs positive w and eps, not w={w}, eps={eps}"
            ));
        }
        if let Loss::ForegroundMse { weight, threshold } = self.loss
            && !(weight.is_finite() && weight >= 0.0 && threshold.is_finite())
        {
            return bad(format!(
                "foreground-weighted MSE needs a weight ≥ 0 and a finite threshold, not weight={weight}, threshold={threshold}"
            ));
        }
        if let Loss::AdaptiveWing(aw) = self.loss
            && !aw.is_valid()
        {
            return bad(format!(
                "adaptive wing needs positive omega, theta, eps, alpha > 1 and a weight ≥ 0, not {aw:?}"
            ));
        }
        match self.schedule {
            Schedule::Constant => {}
            Schedule::Step { every, gamma } => {
                if every == 0 || !positive(gamma) {
                    return bad(format!(
                        "step schedule needs every ≥ 1 and a positive gamma, not every={every}, gamma={gamma}"
                    ));
                }
            }
            Schedule::Cosine { min_lr } | Schedule::WarmupCosine { min_lr, .. } => {
                if !(min_lr.is_finite() && (0.0..=self.lr).contains(&min_lr)) {
                    return bad(format!(
                        "cosine min_lr must lie in [0, lr={}], not {min_lr}",
                        self.lr
                    ));
                }
            }
            Schedule::OneCycle {
                pct_start,
                div,
                final_div,
            } => {
                let finite_at_least_1 = |x: f64| x.is_finite() && x >= 1.0;
                let ok = pct_start > 0.0
                    && pct_start < 1.0
                    && finite_at_least_1(div)
                    && finite_at_least_1(final_div);
                if !ok {
                    return bad(format!(
                        "one-cycle schedule needs 0 < pct_start < 1 and finite div, final_div ≥ 1, not pct_start={pct_start}, div={div}, final_div={final_div}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The settings in which `self` differs from `saved` that make resuming `saved` under
    /// `self` a different run (everything but `out_dir`, `resume`, `diverge_factor`,
    /// `valid_every`, and
    /// `epochs` unless the cosine schedule depends on it), each as `name: saved → now`.
    pub fn resume_mismatches(&self, saved: &TrainConfig) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name}: {a} → {b}"));
            }
        };
        check(
            "batch_size",
            saved.batch_size.to_string(),
            self.batch_size.to_string(),
        );
        check("lr", saved.lr.to_string(), self.lr.to_string());
        check(
            "weight_decay",
            saved.weight_decay.to_string(),
            self.weight_decay.to_string(),
        );
        check(
            "betas",
            format!("{:?}", saved.betas),
            format!("{:?}", self.betas),
        );
        check("eps", saved.eps.to_string(), self.eps.to_string());
        check(
            "loss",
            format!("{:?}", saved.loss),
            format!("{:?}", self.loss),
        );
        check(
            "schedule",
            format!("{:?}", saved.schedule),
            format!("{:?}", self.schedule),
        );
        check("seed", saved.seed.to_string(), self.seed.to_string());
        check("ema", format!("{:?}", saved.ema), format!("{:?}", self.ema));
        if matches!(
            self.schedule,
            Schedule::Cosine { .. } | Schedule::WarmupCosine { .. } | Schedule::OneCycle { .. }
        ) {
            check(
                "epochs (the cosine schedule depends on it)",
                saved.epochs.to_string(),
                self.epochs.to_string(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_cycle_matches_pytorch_one_cycle_lr() {
        // torch.optim.lr_scheduler.OneCycleLR(Adam(lr=1e-3), max_lr=1e-3, total_steps=20,
        // pct_start=0.1): (step, lr, β1) read from PyTorch 2.15.
        let torch = [
            (0, 4e-5, 0.95),
            (1, 1e-3, 0.85),
            (2, 0.000992403906890598, 0.8507596123493896),
            (3, 0.0009698464310077126, 0.8530153689607045),
            (10, 0.0005000019999999999, 0.9),
            (19, 4e-9, 0.95),
        ];
        let cfg = TrainConfig {
            epochs: 4,
            lr: 1e-3,
            schedule: Schedule::OneCycle {
                pct_start: 0.1,
                div: 25.0,
                final_div: 1e4,
            },
            ..TrainConfig::default()
        };
        cfg.validate().unwrap();
        for (step, lr, b1) in torch {
            let (epoch, batch) = (step / 5, step % 5);
            let ours = cfg.lr_at_step(epoch, batch, 5);
            assert!((ours - lr).abs() < 1e-12, "step {step}: lr {ours} vs {lr}");
            let [beta1, beta2] = cfg.betas_at_step(epoch, batch, 5);
            assert!(
                (beta1 - b1).abs() < 1e-12,
                "step {step}: β1 {beta1} vs {b1}"
            );
            assert_eq!(beta2, 0.999);
        }
        // Schedules without a β1 cycle leave the configured pair alone.
        let plain = TrainConfig::default();
        assert_eq!(plain.betas_at_step(1, 2, 5), plain.betas);
        let bad = TrainConfig {
            schedule: Schedule::OneCycle {
                pct_start: 1.0,
                div: 25.0,
                final_div: 1e4,
            },
            ..TrainConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn schedules_give_the_expected_rates() {
        let step = Schedule::Step {
            every: 2,
            gamma: 0.5,
        };
        let lrs: Vec<f64> = (0..5).map(|e| step.lr_at(0.1, e, 5)).collect();
        assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025]);
        assert_eq!(Schedule::Constant.lr_at(0.3, 7, 10), 0.3);
        let cos = Schedule::Cosine { min_lr: 0.0 };
        assert_eq!(cos.lr_at(1.0, 0, 4), 1.0);
        assert!((cos.lr_at(1.0, 2, 4) - 0.5).abs() < 1e-15);
        // (1 + cos(3π/4))/2 = (1 − √2/2)/2
        assert!((cos.lr_at(1.0, 3, 4) - (1.0 - 0.5f64.sqrt()) / 2.0).abs() < 1e-15);
        let floor = Schedule::Cosine { min_lr: 0.2 };
        assert!((floor.lr_at(1.0, 2, 4) - 0.6).abs() < 1e-15);
        // Per-epoch schedules ignore the batch.
        assert_eq!(cos.lr_at_step(1.0, 2, 7, 10, 4), cos.lr_at(1.0, 2, 4));
        // Warm-up over 2 epochs of 4 batches: 1/8, 2/8, … 8/8 of the rate, then a cosine over
        // the remaining 2 epochs (8 steps): halfway (step 12) it is at the midpoint.
        let wc = Schedule::WarmupCosine {
            warmup: 2,
            min_lr: 0.0,
        };
        let warm: Vec<f64> = (0..8)
            .map(|s| wc.lr_at_step(0.8, s / 4, s % 4, 4, 4))
            .collect();
        let want = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8];
        for (a, b) in warm.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{warm:?}");
        }
        assert!((wc.lr_at_step(0.8, 2, 0, 4, 4) - 0.8).abs() < 1e-12);
        assert!((wc.lr_at_step(0.8, 3, 0, 4, 4) - 0.4).abs() < 1e-12);
        assert!(wc.lr_at_step(0.8, 3, 3, 4, 4) < 0.05);
        // Per epoch, the warm-up counts each epoch as one step.
        assert_eq!(wc.lr_at(0.8, 0, 4), wc.lr_at_step(0.8, 0, 0, 1, 4));
    }

    #[test]
    fn json_round_trip_with_defaults() {
        let cfg: TrainConfig =
            serde_json::from_str(r#"{"epochs": 3, "loss": {"kind": "wing"}, "schedule": {"kind": "step", "every": 5, "gamma": 0.1}}"#)
                .unwrap();
        assert_eq!(cfg.epochs, 3);
        assert_eq!(
            cfg.loss,
            Loss::Wing {
                w: WING_W,
                eps: WING_EPS
            }
        );
        assert_eq!(
            cfg.schedule,
            Schedule::Step {
                every: 5,
                gamma: 0.1
            }
        );
        assert_eq!(cfg.betas, [0.9, 0.999]);
        assert_eq!(cfg.diverge_factor, 1e3);
        let back: TrainConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert!(
            serde_json::from_str::<TrainConfig>(r#"{"epoch": 3}"#).is_err(),
            "typos are refused"
        );
        // Adaptive Wing and the weight average round-trip, their fields beside the tag; a
        // bad parameter or decay is refused by validation.
        let cfg = TrainConfig {
            loss: Loss::adaptive_wing(),
            ema: Some(0.999),
            ..TrainConfig::default()
        };
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(
            text.contains(r#""kind":"adaptive_wing","omega":14.0"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).unwrap(), cfg);
        assert!(serde_json::from_str::<TrainConfig>(&text.replace("omega", "omgea")).is_err());
        cfg.validate().unwrap();
        let Loss::AdaptiveWing(aw) = cfg.loss else {
            unreachable!()
        };
        for bad in [
            TrainConfig {
                loss: Loss::AdaptiveWing(AdaptiveWing { alpha: 1.0, ..aw }),
                ..cfg.clone()
            },
            TrainConfig {
                ema: Some(1.0),
                ..cfg.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn validation_names_the_bad_field() {
        let msg = |cfg: TrainConfig| cfg.validate().unwrap_err().to_string();
        assert!(TrainConfig::default().validate().is_ok());
        assert!(
            msg(TrainConfig {
                lr: -1.0,
                ..Default::default()
            })
            .contains("lr must")
        );
        assert!(
            msg(TrainConfig {
                betas: [0.9, 1.0],
                ..Default::default()
            })
            .contains("betas[1]")
        );
        assert!(
            msg(TrainConfig {
                diverge_factor: f64::NAN,
                ..Default::default()
            })
            .contains("diverge_factor")
        );
        let step = Schedule::Step {
            every: 0,
            gamma: 0.5,
        };
        assert!(
            msg(TrainConfig {
                schedule: step,
                ..Default::default()
            })
            .contains("every")
        );
    }

    #[test]
    fn resume_mismatches_list_what_changed() {
        let saved = TrainConfig::default();
        let longer = TrainConfig {
            epochs: 50,
            out_dir: "elsewhere".into(),
            resume: true,
            ..saved.clone()
        };
        assert!(longer.resume_mismatches(&saved).is_empty());
        let other = TrainConfig {
            batch_size: 8,
            seed: 3,
            ..saved.clone()
        };
        assert_eq!(
            other.resume_mismatches(&saved),
            ["batch_size: 16 → 8", "seed: 0 → 3"]
        );
        let cos = TrainConfig {
            schedule: Schedule::Cosine { min_lr: 0.0 },
            ..saved.clone()
        };
        let cos_longer = TrainConfig {
            epochs: 20,
            ..cos.clone()
        };
        assert_eq!(cos_longer.resume_mismatches(&cos).len(), 1);
    }
}
