//! How a convolution is cut into blocks: its [`Geometry`] (sizes, stride, padding), the blocks
//! of output positions whose column matrix fits in a core's L2 cache, and the [`Plan`] that
//! assigns them to threads.

use candle_core::{Result, Tensor};

use crate::window::window_out_len;

/// Target size, in elements, of one block's column matrix: about half of a core's L2 cache in
/// f32, so the columns, the block's products and the packed operands stay cached.
pub(crate) const BLOCK_FLOATS: usize = 1 << 16;

/// The fewest output positions a block holds when the column matrix is tall (deep layers with
/// many input channels): below this, `gemm` spends more time packing the weights than
/// multiplying.
pub(crate) const MIN_BLOCK_COLS: usize = 128;

/// The kernel gradient `∂W += ∂Y·colsᵀ` reads and writes all of `∂W` (o × c·kh·kw) once per
/// block, so the backward's blocks hold at least `o·c·kh·kw / DW_REUSE` columns: on ResNet-18
/// at 224 pixels, batch 32, the last stage's blocks of 2 images (98 columns) made its backward
/// run at half the forward's speed, re-reading a 9 MB `∂W` 8 times per thread; at this bound
/// (whole 16-image runs there, 2-image blocks in the stage before) the training step ran 9%
/// faster (3 rounds each; Part 4's net at 128 pixels unchanged).
pub(crate) const DW_REUSE: usize = 1024;

/// Output positions per Winograd block: 256 tiles of 2×2, so each of the 16 products is
/// (o × c)·(c × 256), large enough to amortise `gemm`'s packing and call overhead, while one
/// product's operands stay in L2.
pub(crate) const WINOGRAD_BLOCK_COLS: usize = 1024;

/// Target size, in elements, of the transformed input tiles that one block of a Winograd
/// kernel gradient multiplies by its transformed output gradient: half a megabyte in f32, so
/// both stay in a core's L2 across the 16 products. Measured on a 2-core machine (1 MiB L2
/// per core; docs/benchmarks.md), Part 4's deconv net at batch 16: the 64×32×32 stage's backward ran 5–10%
/// faster than with the forward's 1024-pixel blocks, and 4096-pixel blocks 20–30% slower.
pub(crate) const WINOGRAD_GRAD_FLOATS: usize = 1 << 17;

/// Sizes of one convolution: input (n, c, h, w), square-or-not kernel (kh, kw), stride,
/// zero padding, output (ho, wo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
}

impl Geometry {
    pub(crate) fn new(
        x: &Tensor,
        weight: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Result<(Self, usize)> {
        let (n, c, h, w) = x.dims4()?;
        let (o, ci, kh, kw) = weight.dims4()?;
        if n == 0 {
            candle_core::bail!("conv2d: the batch {:?} is empty", x.dims());
        }
        if ci != c {
            candle_core::bail!(
                "conv2d: the input has {c} channels but the kernel {:?} expects {ci}",
                weight.dims()
            );
        }
        if stride == 0 {
            candle_core::bail!("conv2d: the stride must be at least 1");
        }
        let (Some(ho), Some(wo)) = (
            window_out_len(h, kh, stride, padding),
            window_out_len(w, kw, stride, padding),
        ) else {
            candle_core::bail!(
                "conv2d: a {kh}×{kw} kernel (stride {stride}, padding {padding}) does not fit a {h}×{w} input"
            );
        };
        Ok((
            Self {
                n,
                c,
                h,
                w,
                kh,
                kw,
                stride,
                padding,
                ho,
                wo,
            },
            o,
        ))
    }

    /// Rows of the column matrix: c·kh·kw.
    pub(crate) fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output positions per image: ho·wo.
    pub(crate) fn l(&self) -> usize {
        self.ho * self.wo
    }

    /// `c×h×w → o, kh×kw/stride[, epilogue]`, for the op profile.
    pub(crate) fn label(&self, o: usize, epilogue: Epilogue) -> String {
        let tail = match epilogue {
            Epilogue::None => "",
            Epilogue::Relu => ", relu",
            Epilogue::ReluPool => ", relu, pool",
        };
        format!(
            "{}×{}×{} → {o}, {}×{}/{}{tail}",
            self.c, self.h, self.w, self.kh, self.kw, self.stride
        )
    }
}

/// One block of output positions: images `b0..b0 + nb`, output rows `oy0..oy1` of each (all
/// rows when `nb > 1`). Its column matrix has `nb·(oy1 − oy0)·wo` columns, image-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) b0: usize,
    pub(crate) nb: usize,
    pub(crate) oy0: usize,
    pub(crate) oy1: usize,
}

impl Block {
    /// Output positions per image in this block.
    pub(crate) fn span(&self, g: &Geometry) -> usize {
        (self.oy1 - self.oy0) * g.wo
    }

    /// Columns of the block's column matrix.
    pub(crate) fn cols(&self, g: &Geometry) -> usize {
        self.nb * self.span(g)
    }
}

/// A contiguous run of images `b0..b1` that one thread processes, block by block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) b0: usize,
    pub(crate) b1: usize,
    pub(crate) blocks: Vec<Block>,
}

/// What a plan's blocks are sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sizing {
    /// An im2col column matrix that stays in L2 ([`BLOCK_FLOATS`]).
    Im2col,
    /// [`winograd::block`]'s 16 products ([`WINOGRAD_BLOCK_COLS`]).
    Winograd,
    /// [`winograd::kernel_grad_block`]: the block's 16 transformed input tiles (16·c floats
    /// per 4 output pixels) hold [`WINOGRAD_GRAD_FLOATS`], and at least [`MIN_BLOCK_COLS`]
    /// pixels.
    WinogradGrad,
    /// The backward with a kernel gradient of `o` output channels: as `Im2col`, and at least
    /// `o·c·kh·kw / DW_REUSE` columns.
    KernelGradient { o: usize },
}

/// How a batch is split: one group per thread, and how many threads each `gemm` call may use
/// (more than one only when there are fewer groups than threads, e.g. a single image).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) groups: Vec<Group>,
    pub(crate) gemm_threads: usize,
}

/// Where a block's rows may start and end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Anywhere.
    Any,
    /// On even rows (Winograd's 2×2 tiles); the last block may end on an odd height.
    Pairs,
    /// On even rows, and the last row of an odd height, which the 2×2 floor-mode pool that
    /// follows drops, is not computed.
    Pooled,
}

impl Rows {
    /// The step a block's rows start on, and the output rows computed, for the conv `g`.
    fn span(self, g: &Geometry) -> (usize, usize) {
        match self {
            Rows::Any => (1, g.ho),
            Rows::Pairs => (2, g.ho),
            Rows::Pooled => (2, g.ho / 2 * 2),
        }
    }
}

impl Plan {
    pub(crate) fn new(g: &Geometry, threads: usize, rows: Rows, sizing: Sizing) -> Self {
        let threads = threads.max(1);
        let im2col = (BLOCK_FLOATS / g.k().max(1)).max(MIN_BLOCK_COLS);
        let target = match sizing {
            Sizing::Im2col => im2col,
            Sizing::Winograd => WINOGRAD_BLOCK_COLS,
            Sizing::WinogradGrad => {
                (WINOGRAD_GRAD_FLOATS * 4 / (16 * g.c.max(1))).max(MIN_BLOCK_COLS)
            }
            Sizing::KernelGradient { o } => im2col.max(o * g.k() / DW_REUSE),
        };
        let (step, ho) = rows.span(g);
        // Units of work: one image cut into row blocks, or a few whole images as one block.
        let units: Vec<Group> = if g.l() > target {
            let rows = (target / g.wo / step).max(1) * step;
            (0..g.n)
                .map(|b| Group {
                    b0: b,
                    b1: b + 1,
                    blocks: (0..ho)
                        .step_by(rows)
                        .map(|oy0| Block {
                            b0: b,
                            nb: 1,
                            oy0,
                            oy1: (oy0 + rows).min(ho),
                        })
                        .collect(),
                })
                .collect()
        } else {
            let per = (target / g.l()).clamp(1, g.n.div_ceil(threads));
            (0..g.n)
                .step_by(per)
                .map(|b0| {
                    let nb = per.min(g.n - b0);
                    Group {
                        b0,
                        b1: b0 + nb,
                        blocks: vec![Block {
                            b0,
                            nb,
                            oy0: 0,
                            oy1: ho,
                        }],
                    }
                })
                .collect()
        };
        let gemm_threads = if units.len() < threads { threads } else { 1 };
        if units.len() <= threads {
            return Self {
                groups: units,
                gemm_threads,
            };
        }
        // Deal the units out to the threads in contiguous runs of near-equal length.
        let total = units.len();
        let mut units = units.into_iter();
        let groups = (0..threads)
            .map(|t| {
                let take = (t + 1) * total / threads - t * total / threads;
                let run: Vec<Group> = units.by_ref().take(take).collect();
                Group {
                    b0: run[0].b0,
                    b1: run[run.len() - 1].b1,
                    blocks: run.into_iter().flat_map(|u| u.blocks).collect(),
                }
            })
            .collect();
        Self {
            groups,
            gemm_threads,
        }
    }

    /// For a batch with fewer units of work than threads (a single face at inference): the
    /// blocks of every image, each to run on one thread, cut so there are at least as many as
    /// threads (a multiple of them for one image, so the threads finish together). `None` when
    /// every thread already has a unit. Dealing an image's rows to the threads is what makes batch 1
    /// parallel: left to parallelise each product itself, `gemm` ran ResNet-18 at 224 pixels
    /// hardly faster on two threads than on one.
    pub(crate) fn row_blocks(&self, g: &Geometry, rows: Rows) -> Option<Vec<Block>> {
        let threads = self.gemm_threads;
        if threads <= 1 {
            return None;
        }
        let (step, ho) = rows.span(g);
        // As many blocks per image as the plan cut (one when its units are several images).
        let have = self.groups.first().map_or(1, |grp| grp.blocks.len()).max(1);
        let mut want = have.max(threads.div_ceil(g.n.max(1)));
        if g.n == 1 {
            want = want.next_multiple_of(threads);
        }
        // `want` near-equal runs of row pairs (rows for `Rows::Any`), as many as there are.
        let steps = ho.div_ceil(step);
        let want = want.min(steps);
        Some(
            (0..g.n)
                .flat_map(|b| {
                    (0..want).map(move |t| Block {
                        b0: b,
                        nb: 1,
                        oy0: t * steps / want * step,
                        oy1: ((t + 1) * steps / want * step).min(ho),
                    })
                })
                .collect(),
        )
    }

    /// `data` (per_image elements per image) cut into each group's images.
    pub(crate) fn split<'a, T>(&self, mut data: &'a mut [T], per_image: usize) -> Vec<&'a mut [T]> {
        let mut parts = Vec::with_capacity(self.groups.len());
        for grp in &self.groups {
            let (head, tail) =
                std::mem::take(&mut data).split_at_mut((grp.b1 - grp.b0) * per_image);
            parts.push(head);
            data = tail;
        }
        parts
    }
}

/// What follows the product in the same node: nothing, a ReLU, or a ReLU and a 2×2, stride-2
/// max-pool (floor mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Epilogue {
    None,
    Relu,
    ReluPool,
}
