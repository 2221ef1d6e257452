//! Depthwise 3×3 convolution for inference (YuNet's blocks): each channel filtered by its own
//! 3×3 kernel, stride 1, zero padding 1, plus a bias. Candle's CPU conv runs `groups = c` as c
//! separate convs; this is one parallel pass over the (image, channel) planes. Forward only:
//! the result carries no gradient (the detector is not trained here).

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

/// `x` `(n, c, h, w)` ⊛ `weight` `(c, 1, 3, 3)` + `bias` `(c)`, padding 1, then a ReLU when
/// `relu`. On the CPU in f32 this module's kernel (no gradient); elsewhere Candle's grouped
/// conv.
pub fn depthwise_conv3x3(x: &Tensor, weight: &Tensor, bias: &Tensor, relu: bool) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if weight.dims() != [c, 1, 3, 3] || bias.dims() != [c] {
        candle_core::bail!(
            "depthwise conv: weights {:?} and bias {:?} do not fit {c} channels",
            weight.dims(),
            bias.dims()
        );
    }
    let cpu_f32 = matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32;
    if !cpu_f32 || h == 0 || w == 0 {
        let y = x
            .conv2d(weight, 1, 1, 1, c)?
            .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
        return if relu { y.relu() } else { Ok(y) };
    }
    let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let ws = weight.flatten_all()?.to_vec1::<f32>()?;
    let bs = bias.to_vec1::<f32>()?;
    let plane = h * w;
    let mut out = vec![0f32; n * c * plane];
    out.par_chunks_mut(plane)
        .zip(xs.par_chunks(plane))
        .enumerate()
        .for_each(|(p, (dst, src))| {
            let ch = p % c;
            let k: &[f32] = &ws[9 * ch..9 * ch + 9];
            filter_plane(src, dst, h, w, k, bs[ch]);
            if relu {
                dst.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        });
    Tensor::from_vec(out, (n, c, h, w), x.device())
}

/// One plane: `dst[y][x] = b + Σ k[dy][dx]·src[y+dy−1][x+dx−1]`, outside the plane 0. Each
/// kernel tap is a whole-row multiply-add (the left and right taps shifted by one pixel), so
/// the loops vectorise.
fn filter_plane(src: &[f32], dst: &mut [f32], h: usize, w: usize, k: &[f32], b: f32) {
    dst.fill(b);
    for y in 0..h {
        let out = &mut dst[y * w..(y + 1) * w];
        for dy in 0..3 {
            // Input row y + dy − 1, when it lies in the plane.
            let Some(yy) = (y + dy).checked_sub(1).filter(|&v| v < h) else {
                continue;
            };
            let line = &src[yy * w..(yy + 1) * w];
            let (k0, k1, k2) = (k[3 * dy], k[3 * dy + 1], k[3 * dy + 2]);
            for (o, &v) in out.iter_mut().zip(line) {
                *o += k1 * v;
            }
            for (o, &v) in out[1..].iter_mut().zip(line) {
                *o += k0 * v;
            }
            for (o, &v) in out.iter_mut().zip(&line[1..]) {
                *o += k2 * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Equal to Candle's grouped conv (plus bias, then ReLU) on odd sizes, several images and
    /// channels.
    #[test]
    fn equals_candles_grouped_conv() {
        for (n, c, h, w) in [(1, 1, 1, 1), (2, 3, 5, 7), (1, 16, 9, 4)] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &Device::Cpu).unwrap();
            let k = Tensor::randn(0f32, 1.0, (c, 1, 3, 3), &Device::Cpu).unwrap();
            let b = Tensor::randn(0f32, 1.0, c, &Device::Cpu).unwrap();
            let ours = depthwise_conv3x3(&x, &k, &b, true).unwrap();
            let theirs = x
                .conv2d(&k, 1, 1, 1, c)
                .unwrap()
                .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap();
            let d = (ours - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-5, "{n}×{c}×{h}×{w}: {d}");
        }
    }
}
