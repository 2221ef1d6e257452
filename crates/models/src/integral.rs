//! Integral regression (Sun et al., "Integral Human Pose Regression", 2018): a heatmap net's
//! maps read as coordinates by a soft-argmax, so the net trains on the points themselves (an
//! L1 loss, as Part 3's regression) while keeping its fully convolutional, spatial output.
//! Each map is turned into a probability over its pixels (a softmax), and the point is the
//! expected pixel position under it: differentiable, and sub-pixel by construction.

use candle_core::{D, Result, Tensor};

/// `(B, K, H, W)` maps → `(B, 2K)` points `x0, y0, x1, y1, …`, each the expected position
/// under the softmax of its map, in map pixels (pixel centres at integers, as
/// `fkd_heatmap::encode` places them) divided by the map's width and height: the normalised
/// coordinates of fkd-data's regression targets, since an input pixel `u` lies at map pixel
/// `u · W / W_input`.
pub fn soft_argmax(maps: &Tensor) -> Result<Tensor> {
    let (b, k, h, w) = maps.dims4()?;
    if h * w == 0 {
        candle_core::bail!("soft-argmax over empty maps {:?}", maps.dims());
    }
    let flat = maps.reshape((b * k, h * w))?;
    // Subtracting each row's maximum leaves the softmax unchanged and keeps exp finite.
    let max = flat.max_keepdim(D::Minus1)?.detach();
    let e = flat.broadcast_sub(&max)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    let grid: Vec<f32> = (0..h * w)
        .flat_map(|i| [(i % w) as f32 / w as f32, (i / w) as f32 / h as f32])
        .collect();
    let grid = Tensor::from_vec(grid, (h * w, 2), maps.device())?.to_dtype(maps.dtype())?;
    p.matmul(&grid)?.reshape((b, k * 2))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device, Var};

    /// A sharp peak reads as its pixel; two equal peaks as their midpoint; a flat map as the
    /// centre of the pixel grid.
    #[test]
    fn reads_peaks_and_their_mixtures() {
        let (h, w) = (4usize, 5usize);
        let mut maps = vec![0.0f32; 3 * h * w];
        maps[2 * w + 3] = 40.0; // map 0: peak at (3, 2)
        maps[h * w + w + 1] = 40.0; // map 1: peaks at (1, 1) and (3, 3)
        maps[h * w + 3 * w + 3] = 40.0;
        let t = Tensor::from_vec(maps, (1, 3, h, w), &Device::Cpu).unwrap();
        let xy = soft_argmax(&t).unwrap().to_vec2::<f32>().unwrap()[0].clone();
        let want = [
            3.0 / 5.0,
            2.0 / 4.0,
            2.0 / 5.0,
            2.0 / 4.0,
            2.0 / 5.0,
            1.5 / 4.0,
        ];
        for (g, w) in xy.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{xy:?}");
        }
    }

    /// The gradient of a coordinate with respect to the maps matches finite differences (f64).
    #[test]
    fn gradient_matches_finite_differences() {
        let vals: Vec<f64> = (0..2 * 3 * 4)
            .map(|i| ((i * 37 % 11) as f64) * 0.3)
            .collect();
        let x = Var::from_vec(vals.clone(), (1, 2, 3, 4), &Device::Cpu).unwrap();
        let weights = Tensor::new(&[[0.3f64, -1.2, 0.7, 2.0]], &Device::Cpu).unwrap();
        let objective = |t: &Tensor| -> Tensor {
            soft_argmax(t)
                .unwrap()
                .mul(&weights)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grads = objective(x.as_tensor()).backward().unwrap();
        let g = grads
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for i in 0..vals.len() {
            let at = |d: f64| {
                let mut v = vals.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, (1, 2, 3, 4), &Device::Cpu).unwrap();
                objective(&t).to_scalar::<f64>().unwrap()
            };
            let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!((fd - g[i]).abs() < 1e-7, "element {i}: {fd} vs {}", g[i]);
        }
        assert_eq!(
            soft_argmax(&x.as_tensor().to_dtype(DType::F32).unwrap())
                .unwrap()
                .dims(),
            [1, 4]
        );
        let empty = Tensor::zeros((1, 1, 0, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(soft_argmax(&empty).is_err());
    }
}
