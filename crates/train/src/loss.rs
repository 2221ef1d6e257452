//! Regression losses on `(prediction, target)` tensors of one shape, each averaged over every
//! element to a scalar tensor that can be back-propagated.

use crate::config::Loss;
use candle_core::{Result, Tensor};

impl Loss {
    /// This loss of `pred` against `target` (same shape), as a scalar tensor.
    pub fn compute(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        match *self {
            Loss::Mse => mse(pred, target),
            Loss::L1 => l1(pred, target),
            Loss::Wing { w, eps } => wing(pred, target, w, eps),
            Loss::ForegroundMse { weight, threshold } => {
                foreground_mse(pred, target, weight, threshold)
            }
        }
    }
}

/// Mean squared error.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    difference(pred, target)?.sqr()?.mean_all()
}

/// Mean absolute error.
pub fn l1(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    difference(pred, target)?.abs()?.mean_all()
}

/// Mean Wing loss (Feng et al. 2018) with width `w` and curvature `eps`:
/// `w·ln(1 + |x|/eps)` for `|x| < w`, else `|x| − C` with `C = w − w·ln(1 + w/eps)`.
pub fn wing(pred: &Tensor, target: &Tensor, w: f64, eps: f64) -> Result<Tensor> {
    let a = difference(pred, target)?.abs()?;
    let c = w - w * (1.0 + w / eps).ln();
    let log_part = a.affine(1.0 / eps, 1.0)?.log()?.affine(w, 0.0)?;
    let linear_part = a.affine(1.0, -c)?;
    a.lt(w)?.where_cond(&log_part, &linear_part)?.mean_all()
}

/// Mean of the squared errors, each element whose target is above `threshold` weighted
/// `1 + weight` (the others 1): see [`Loss::ForegroundMse`].
pub fn foreground_mse(
    pred: &Tensor,
    target: &Tensor,
    weight: f64,
    threshold: f64,
) -> Result<Tensor> {
    let squared = difference(pred, target)?.sqr()?;
    let weights = target
        .gt(threshold)?
        .to_dtype(squared.dtype())?
        .affine(weight, 1.0)?;
    (squared * weights)?.mean_all()
}

/// `pred − target`. A prediction with the targets' batch size and element count is read in
/// the targets' shape (a heatmap net's `(B, K, H, W)` against flattened `(B, K·H·W)` targets);
/// anything else is refused rather than broadcast, since a model whose output does not match
/// the targets is a bug that broadcasting would hide.
fn difference(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    if pred.dims() == target.dims() {
        return pred - target;
    }
    let same_batch = pred.dims().first() == target.dims().first();
    if !same_batch || pred.elem_count() != target.elem_count() {
        candle_core::bail!(
            "the model predicts shape {:?} but the targets have shape {:?}",
            pred.dims(),
            target.dims()
        );
    }
    pred.reshape(target.shape())? - target
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{Device, Var};

    fn pair() -> (Tensor, Tensor) {
        let pred = Tensor::new(&[[1.0f32, 2.0], [3.0, -1.0]], &Device::Cpu).unwrap();
        let target = Tensor::new(&[[0.0f32, 4.0], [3.0, 2.0]], &Device::Cpu).unwrap();
        (pred, target)
    }

    fn value(t: Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn mse_and_l1_by_hand() {
        let (p, t) = pair();
        // differences 1, -2, 0, -3
        assert_eq!(value(mse(&p, &t).unwrap()), (1.0 + 4.0 + 0.0 + 9.0) / 4.0);
        assert_eq!(value(l1(&p, &t).unwrap()), (1.0 + 2.0 + 0.0 + 3.0) / 4.0);
        assert_eq!(value(Loss::Mse.compute(&p, &t).unwrap()), 3.5);
    }

    #[test]
    fn wing_by_hand() {
        let (p, t) = pair();
        // w = 2, eps = 1: |x| < 2 → 2·ln(1 + |x|); else |x| − (2 − 2·ln 3).
        // |x| = 1 → 2 ln 2; |x| = 2 → 2 ln 3 (the linear side, continuous); 0 → 0; 3 → 1 + 2 ln 3.
        let expected = (2.0 * 2f64.ln() + 2.0 * 3f64.ln() + 0.0 + 1.0 + 2.0 * 3f64.ln()) / 4.0;
        let got = value(wing(&p, &t, 2.0, 1.0).unwrap());
        assert!(
            (f64::from(got) - expected).abs() < 1e-6,
            "{got} vs {expected}"
        );
        // The defaults on normalised errors 0.02 and 0.1: 0.05·ln 3 and 0.1 − 0.05 + 0.05·ln 6.
        let p = Tensor::new(&[0.52f32, 0.4], &Device::Cpu).unwrap();
        let t = Tensor::new(&[0.5f32, 0.5], &Device::Cpu).unwrap();
        let expected = (0.05 * 3f64.ln() + 0.05 + 0.05 * 6f64.ln()) / 2.0;
        let got = value(Loss::wing().compute(&p, &t).unwrap());
        assert!(
            (f64::from(got) - expected).abs() < 1e-6,
            "{got} vs {expected}"
        );
    }

    #[test]
    fn foreground_mse_by_hand() {
        // Squared errors 1, 4, 0, 9 against targets 0, 4, 3, 2: above 2.5 are 4 and 3, so the
        // errors 4 and 0 weigh 1 + 10 = 11.
        let (p, t) = pair();
        let got = value(foreground_mse(&p, &t, 10.0, 2.5).unwrap());
        assert_eq!(got, (1.0 + 44.0 + 0.0 + 9.0) / 4.0);
        // Weight 0 is MSE; the loss enum dispatches to it; heatmap-shaped predictions are read
        // in the targets' shape.
        assert_eq!(value(foreground_mse(&p, &t, 0.0, 2.5).unwrap()), 3.5);
        let loss = Loss::ForegroundMse {
            weight: 10.0,
            threshold: 2.5,
        };
        assert_eq!(value(loss.compute(&p, &t).unwrap()), got);
        let maps = Tensor::new(&[[[1.0f32, 2.0]], [[3.0, -1.0]]], &Device::Cpu).unwrap();
        assert_eq!(value(loss.compute(&maps, &t).unwrap()), got);
    }

    #[test]
    fn wing_gradient_is_finite_and_steeper_for_small_errors() {
        let p = Var::new(&[0.01f32, 1.0], &Device::Cpu).unwrap();
        let t = Tensor::new(&[0.0f32, 0.0], &Device::Cpu).unwrap();
        let loss = wing(p.as_tensor(), &t, 0.05, 0.01).unwrap();
        let g = loss
            .backward()
            .unwrap()
            .get(p.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // d/dx of w·ln(1 + x/eps) = w/(eps + x) = 0.05/0.02 = 2.5, halved by the mean;
        // the linear region has slope 1, halved.
        assert!((g[0] - 1.25).abs() < 1e-5, "{g:?}");
        assert!((g[1] - 0.5).abs() < 1e-6, "{g:?}");
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let (p, _) = pair();
        let t = Tensor::zeros((2, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = mse(&p, &t).unwrap_err().to_string();
        assert!(err.contains("predicts shape [2, 2]"), "{err}");
        // Same batch and element count: read in the targets' shape (heatmaps vs flat targets).
        let maps = Tensor::new(&[[[1.0f32, 2.0]], [[3.0, -1.0]]], &Device::Cpu).unwrap();
        let (_, t) = pair();
        assert_eq!(value(mse(&maps, &t).unwrap()), 3.5);
        let t4 = Tensor::zeros((1, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(mse(&p, &t4).is_err(), "another batch size is refused");
    }
}
