//! Layer constructors initialised the way PyTorch initialises them, so that fkd's nets start
//! from the same distribution as the PyTorch peer.
//!
//! Candle's `conv2d`/`linear` do *not* match PyTorch: they draw weights from a Kaiming *normal*
//! with ReLU gain (std √(2/fan_in)) and conv biases from ±1/√in_channels. PyTorch's default
//! (`reset_parameters` of `nn.Conv2d`/`nn.Linear`) is `kaiming_uniform_(a=√5)`, which works out
//! to U(−1/√fan_in, 1/√fan_in), with the same bound for the bias, where fan_in = in·k·k.

use candle_nn::{Conv2d, Conv2dConfig, Init, Linear, VarBuilder, init};

/// PyTorch's default initialisation for a weight and bias with this fan-in:
/// U(−1/√fan_in, 1/√fan_in).
pub fn torch_default_uniform(fan_in: usize) -> Init {
    // fan_in is at least 1 for every layer we build; max() keeps the bound finite regardless.
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A biased square conv with PyTorch's default initialisation; vars `weight` (out, in, k, k)
/// and `bias` (out).
pub fn conv2d_torch(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder<'_>,
) -> candle_core::Result<Conv2d> {
    let init = torch_default_uniform(in_channels * kernel * kernel);
    let w = vb.get_with_hints((out_channels, in_channels, kernel, kernel), "weight", init)?;
    let b = vb.get_with_hints(out_channels, "bias", init)?;
    Ok(Conv2d::new(w, Some(b), cfg))
}

/// A bias-free square conv initialised as torchvision's ResNet does
/// (`kaiming_normal_(mode="fan_out", nonlinearity="relu")`: N(0, 2/(out·k·k))).
pub fn conv2d_resnet(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder<'_>,
) -> candle_core::Result<Conv2d> {
    let init = Init::Kaiming {
        dist: init::NormalOrUniform::Normal,
        fan: init::FanInOut::FanOut,
        non_linearity: init::NonLinearity::ReLU,
    };
    let w = vb.get_with_hints((out_channels, in_channels, kernel, kernel), "weight", init)?;
    Ok(Conv2d::new(w, None, cfg))
}

/// A biased linear layer with PyTorch's default initialisation; vars `weight` (out, in) and
/// `bias` (out).
pub fn linear_torch(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder<'_>,
) -> candle_core::Result<Linear> {
    let init = torch_default_uniform(in_dim);
    let w = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
    let b = vb.get_with_hints(out_dim, "bias", init)?;
    Ok(Linear::new(w, Some(b)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Module, VarMap};

    fn bounds(t: &candle_core::Tensor) -> (f32, f32) {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (lo, hi)
    }

    #[test]
    fn conv_and_linear_draw_from_torch_default_bounds() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        // fan_in = 4·3·3 = 36 → bound 1/6 for weight and bias alike.
        let conv = conv2d_torch(4, 64, 3, Conv2dConfig::default(), vb.pp("c")).unwrap();
        let bound = 1.0 / 6.0 + 1e-6;
        let (lo, hi) = bounds(conv.weight());
        assert!(lo >= -bound && hi <= bound, "{lo} {hi}");
        // 2304 draws from U(±1/6) reach beyond ±0.15 on both sides with overwhelming probability,
        // which a Kaiming-normal std √(2/36) or a ±1/√4 bias bound would not respect above.
        assert!(lo < -0.15 && hi > 0.15, "{lo} {hi}");
        let (lo, hi) = bounds(conv.bias().unwrap());
        assert!(lo >= -bound && hi <= bound, "{lo} {hi}");

        let lin = linear_torch(100, 50, vb.pp("l")).unwrap();
        let (lo, hi) = bounds(lin.weight());
        assert!(lo >= -0.1 - 1e-6 && hi <= 0.1 + 1e-6, "{lo} {hi}");
        let x = candle_core::Tensor::zeros((2, 100), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(lin.forward(&x).unwrap().dims(), &[2, 50]);
        let names: Vec<String> = {
            let mut n: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
            n.sort();
            n
        };
        assert_eq!(names, ["c.bias", "c.weight", "l.bias", "l.weight"]);
    }

    #[test]
    fn resnet_conv_is_bias_free_with_fan_out_std() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let conv = conv2d_resnet(8, 32, 3, Conv2dConfig::default(), vb).unwrap();
        assert!(conv.bias().is_none());
        // std = √(2 / (32·9)) ≈ 0.0833; the sample std of 2304 draws is within 10 % of it.
        let v = conv
            .weight()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let n = v.len() as f32;
        let mean = v.iter().sum::<f32>() / n;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
        let want = (2.0f32 / 288.0).sqrt();
        assert!((std - want).abs() < 0.1 * want, "{std} vs {want}");
    }
}
