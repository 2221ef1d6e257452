//! Architecture summaries: a per-layer table of output shapes and parameter counts (what
//! `torchsummary` prints for the PyTorch peer), for the write-up and for checking that fkd's
//! nets have exactly the peer's size.

use candle_core::Tensor;

use crate::error::Result;

/// One row of an architecture summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// The layer's name; for layers with weights, the var-name prefix (`conv1`, `layer2.0`).
    pub name: String,
    /// The layer's output shape for one sample, without the batch dimension (C, H, W or F).
    pub output_shape: Vec<usize>,
    /// Number of trainable parameters of the layer (batch-norm running statistics excluded).
    pub params: usize,
}

/// A network that can describe itself layer by layer.
pub trait Summarize {
    /// The per-layer table, obtained by running a batch of one zero image of the network's
    /// configured input size through it (in inference mode: nothing is updated).
    fn summary(&self) -> Result<Vec<LayerInfo>>;

    /// Total number of trainable parameters, counted from the weights without a forward pass.
    /// Equals the sum of the `params` column of [`Summarize::summary`].
    fn num_params(&self) -> usize;
}

/// Collects [`LayerInfo`] rows during a forward pass when a summary is wanted, and costs
/// nothing otherwise.
pub(crate) struct Trace<'a>(pub(crate) Option<&'a mut Vec<LayerInfo>>);

impl Trace<'_> {
    /// Records `t` as the output of the layer `name()` with `params` parameters.
    pub(crate) fn record(&mut self, name: impl FnOnce() -> String, t: &Tensor, params: usize) {
        self.record_dims(name, t.dims(), params);
    }

    /// Records a layer whose output (`dims`, batch first) a fused node never materialises.
    pub(crate) fn record_dims(
        &mut self,
        name: impl FnOnce() -> String,
        dims: &[usize],
        params: usize,
    ) {
        if let Some(rows) = self.0.as_deref_mut() {
            rows.push(LayerInfo {
                name: name(),
                output_shape: dims.iter().skip(1).copied().collect(),
                params,
            });
        }
    }
}

/// Parameters of a conv layer: weight and bias.
pub(crate) fn conv_params(c: &candle_nn::Conv2d) -> usize {
    c.weight().elem_count() + c.bias().map_or(0, Tensor::elem_count)
}

/// Parameters of a batch norm: γ and β (the running statistics are not trained).
pub(crate) fn bn_params(b: &candle_nn::BatchNorm) -> usize {
    b.weight_and_bias()
        .map_or(0, |(w, b)| w.elem_count() + b.elem_count())
}

/// The summary of a net whose `run` records its layers into a [`Trace`]: one forward pass of a
/// zero image of `(channels, height, width)`, in inference mode, on `like`'s device and dtype.
pub(crate) fn traced_summary(
    like: &Tensor,
    (channels, height, width): (usize, usize, usize),
    run: impl FnOnce(&Tensor, Trace<'_>) -> candle_core::Result<Tensor>,
) -> crate::Result<Vec<LayerInfo>> {
    let x = Tensor::zeros((1, channels, height, width), like.dtype(), like.device())?;
    let mut rows = Vec::new();
    run(&x, Trace(Some(&mut rows)))?;
    Ok(rows)
}

/// Formats `n` with a comma every three digits (`598226` → `598,226`).
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A plain-text table of `layers` (name, output shape as `C x H x W`, parameters) followed by
/// the total parameter count.
pub fn format_summary(layers: &[LayerInfo]) -> String {
    let shape = |s: &[usize]| {
        s.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" x ")
    };
    let rows: Vec<[String; 3]> = layers
        .iter()
        .map(|l| [l.name.clone(), shape(&l.output_shape), thousands(l.params)])
        .collect();
    let header = ["Layer", "Output shape", "Params"].map(String::from);
    let mut width = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |r: &[String; 3]| {
        format!(
            "{:<w0$}  {:<w1$}  {:>w2$}\n",
            r[0],
            r[1],
            r[2],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2]
        )
    };
    let rule = "-".repeat(width.iter().sum::<usize>() + 4) + "\n";
    let mut out = line(&header);
    out.push_str(&rule);
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&rule);
    let total: usize = layers.iter().map(|l| l.params).sum();
    out.push_str(&format!("Total params: {}\n", thousands(total)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(11_240_008), "11,240,008");
    }

    #[test]
    fn table_is_aligned_with_total() {
        let layers = [
            LayerInfo {
                name: "conv1".into(),
                output_shape: vec![12, 60, 80],
                params: 600,
            },
            LayerInfo {
                name: "flatten".into(),
                output_shape: vec![2240],
                params: 0,
            },
            LayerInfo {
                name: "fc1".into(),
                output_shape: vec![256],
                params: 573_696,
            },
        ];
        let want = "\
Layer    Output shape   Params
------------------------------
conv1    12 x 60 x 80      600
flatten  2240                0
fc1      256           573,696
------------------------------
Total params: 574,296
";
        assert_eq!(format_summary(&layers), want);
    }
}
