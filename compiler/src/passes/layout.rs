//! Data-layout decisions: how each convolution's three products read their
//! operands, chosen from the shapes and the target.
//!
//! The kernel builder asks these functions and builds what they answer;
//! the choice is then visible in the kernel IR (row tables, wrapped
//! columns, scattered rows, splatted weights, packing scratch). Keeping the
//! policy here, apart from the builder, puts every layout rule in one place
//! where it reads the [`Target`] and can be tested on shapes alone.
//!
//! The forms, fastest first:
//! - in place: the product reads the input through a table of row offsets
//!   (implicit im2col), with its columns wrapping from input row to input
//!   row when output rows are not whole vectors; the weights are splatted
//!   to one vector per element once per run, so the tile loads vectors;
//! - in place on a padded copy: the forward product of a padded
//!   convolution reads a copy of each image with its border written out;
//! - gathered (unit-stride input gradients on the micro-kernels): the
//!   forward convolution of the output gradient, in place as above;
//! - packed: an explicit im2col (or column matrix) in per-thread scratch,
//!   for what the in-place forms cannot address (strided columns; padding,
//!   for the gradients).

use crate::kernel::{ColumnWrap, KSplit};
use crate::ops::{Conv2d, PaddingMode};
use crate::target::{ProductIsa, Target};

/// How a convolution's forward product reads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardLayout {
    /// In place through a row table: one product per output row, or with
    /// `wrap`, one per image whose columns wrap across input rows. The
    /// weights are splatted to vectors in a pre-kernel (`Gemm::a_splat`):
    /// an outer tile then loads one vector per weight instead of
    /// broadcasting a scalar.
    InPlace {
        /// Columns wrapping from input row to input row.
        wrap: Option<ColumnWrap>,
        /// The product reads a copy of each image with its padding written
        /// out (zeros, or the replicated border) instead of the input
        /// itself: one pass over the image, where an im2col writes every
        /// element once per kernel tap.
        pad_copy: bool,
        /// The weights are splatted to the backend's vectors (128-bit outer
        /// tiles); wide micro-kernels broadcast them from the weights.
        splat: bool,
        /// The copy splits each padded image into its stride phases
        /// ([`PhasePlanes`], space to depth), so every tap of a strided
        /// convolution reads adjacent columns, whole vectors in place,
        /// where strided columns had to be gathered into panels.
        phased: bool,
    },
    /// An explicit im2col of each image.
    Packed,
}

/// How a convolution's input gradient is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputGradLayout {
    /// Each tap's product row added straight into the image through a tap
    /// table and wrapped columns (col2im fused), with the weights transposed
    /// to tap-major order and splatted in a pre-kernel.
    Scattered {
        /// The image's rows as wrapped columns of the product.
        wrap: ColumnWrap,
        /// Scatter into a zeroed padded image, then copy its interior out
        /// (zero padding: the border's gradient is dropped).
        padded: bool,
        /// For the target's micro-kernels: any stride, weights transposed
        /// but not splatted.
        micro: bool,
        /// Strided: scatter into the stride phases of the padded image
        /// ([`ScatterPhases`]), where each tap's row is contiguous, then
        /// copy them back into the image's order.
        phased: bool,
    },
    /// A column matrix in scratch, then a col2im pass.
    PackedColumns,
    /// The forward convolution `conv` of the output gradient, read in
    /// place by the micro-kernels as [`ForwardLayout::InPlace`] with
    /// `wrap` and `pad_copy`: unit stride only, `conv` having the
    /// kernel flipped, the channels swapped and padding `d (k - 1) - p`.
    /// Every element of the gradient is stored once, where scattering adds
    /// each tap's row into the image (overlapping read-modify-writes).
    Gathered {
        /// The equivalent convolution, from the output gradient's channels
        /// to the input's.
        conv: Conv2d,
        /// Its columns wrapping across the padded gradient's rows.
        wrap: ColumnWrap,
        /// It reads a zero-padded copy of each image of the gradient.
        pad_copy: bool,
    },
}

/// How a convolution's weight gradient reads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightGradLayout {
    /// A dot tile over the input in place, its reduction split along output
    /// rows.
    InPlace {
        /// The output rows as reduction segments.
        split: KSplit,
        /// The product reads a padded copy of each image (see
        /// [`ForwardLayout::InPlace`]).
        pad_copy: bool,
        /// It runs transposed on the target's micro-kernels (see
        /// [`gathered_panels_pay`]), which step through an output row by
        /// the convolution's column stride.
        micro: bool,
    },
    /// An explicit im2col of each image.
    Packed,
}

/// Input `[n, c, h, w]` and output `[n, o, oh, ow]` of a convolution.
fn rows(input: &[usize], output: &[usize]) -> (usize, usize, usize) {
    (output[3], output[2] * output[3], input[3])
}

/// The forward product's layout. In place needs unit column stride (a row
/// table addresses rows, the columns must be contiguous); a padded
/// convolution reads a padded copy of each image, since a padded tap has
/// no input row to point at.
pub fn forward_layout(c: &Conv2d, input: &[usize], output: &[usize], target: &Target) -> ForwardLayout {
    let lanes = target.vector_lanes;
    let pad_copy = c.padding != [0, 0];
    let (ow, p, w_in) = rows(input, output);
    let w_read = w_in + 2 * c.padding[1];
    let wrap = ColumnWrap { row: ow, stride: (c.stride[0] * w_read) as i64 };
    let strided = c.stride[1] != 1;
    if target.products != ProductIsa::Vector128 && strided {
        // One product per image on the micro-kernels over the stride
        // phases of a copy of each image: the copy is one pass over the
        // image, as a padded copy is, and the product reads whole vectors.
        let planes = PhasePlanes::of(c, output);
        let wrap = ColumnWrap { row: ow, stride: planes.width as i64 };
        return ForwardLayout::InPlace { wrap: Some(wrap), pad_copy, splat: false, phased: true };
    }
    if target.products != ProductIsa::Vector128 {
        // One product per image on the micro-kernels, the weights read as
        // they are and every block of B in place: blocks of whole rows,
        // and rows that are not whole vectors cut into blocks of their
        // own, the last vector of each partial (LeNet's 28- and 10-wide
        // rows: 28 of 32 and 10 of 16 lanes used).
        return ForwardLayout::InPlace { wrap: Some(wrap), pad_copy, splat: false, phased: false };
    }
    if c.stride[1] != 1 {
        return ForwardLayout::Packed;
    }
    // Output rows that are not whole vectors waste lanes at each row's end
    // unless the columns wrap.
    let wrap = (!ow.is_multiple_of(lanes) && wrap.fits(p, lanes)).then_some(wrap);
    ForwardLayout::InPlace { wrap, pad_copy, splat: true, phased: false }
}

/// Reduction steps a micro-kernel tile's setup costs besides its steps:
/// loading and storing its sums and finding its operands' rows, about 150
/// cycles of the driver's (`perf`, a 32-channel 3x3 convolution) where a
/// step of a 5x2 AVX2 tile takes 5.
const TILE_SETUP_STEPS: usize = 32;

/// The output rows per group when `c` (input `[n, c, h, w]`, output `[n,
/// o, oh, ow]`) runs as Winograd's F(m, 3) down the columns
/// (`kernel::build::conv_winograd`), m = 4 or 2; `None` to run it
/// directly. It needs the micro-kernels, unit stride, three undilated
/// kernel rows and output rows a multiple of `m`, and must take fewer tile
/// steps: each row tile of a group of `m` output rows takes `m (3 t + s)`
/// steps directly and `(m + 2) (t + s)` transformed (`t` the taps of a
/// kernel row, `s` [`TILE_SETUP_STEPS`]). The transforms are a few vector
/// operations per element where the products take `t` multiply-adds per
/// element, so the steps saved must be at least a fifth of the direct
/// form's. The larger group saves more (half the multiply-adds, against
/// two thirds) and transforms fewer rows.
pub fn winograd_rows(c: &Conv2d, input: &[usize], output: &[usize], target: &Target) -> Option<usize> {
    let t = input[1] * c.kernel[1];
    winograd_groups(c, output, target, |m| (m * (3 * t + TILE_SETUP_STEPS), (m + 2) * (t + TILE_SETUP_STEPS)))
}

/// [`winograd_rows`] for `c`'s weight gradient, whose products reduce over
/// an image's output positions (`p` of them): per tile, `3 (p + s)` steps
/// directly (one product with three kernel rows' taps as its columns) and
/// `(m + 2) (p / m + s)` transformed; short reductions (small images) leave
/// the transform little to save. Each product is laid out for the
/// transposed micro tile, as the direct form's is, so a kernel row's taps
/// must be enough for the schedule to keep that tile
/// ([`transposed_panels_pay`]); with fewer (a 3-channel stem's 9) it falls
/// back to a 128-bit outer tile that cannot read this layout (the
/// verifier after scheduling says so).
pub fn winograd_rows_weight_grad(c: &Conv2d, input: &[usize], output: &[usize], target: &Target) -> Option<usize> {
    let taps = input[1] * c.kernel[1];
    if !transposed_panels_pay(taps, target) || output[1] < target.products.lanes() {
        return None;
    }
    let p = output[2] * output[3];
    winograd_groups(c, output, target, |m| (3 * (p + TILE_SETUP_STEPS), (m + 2) * (p / m + TILE_SETUP_STEPS)))
}

/// The first group size, 4 then 2, that `c` and its output rows allow and
/// whose tile steps, `(direct, transformed)` from `steps`, save at least a
/// fifth.
fn winograd_groups(
    c: &Conv2d,
    output: &[usize],
    target: &Target,
    steps: impl Fn(usize) -> (usize, usize),
) -> Option<usize> {
    if target.products == ProductIsa::Vector128 || c.stride != [1, 1] || c.kernel[0] != 3 || c.dilation[0] != 1 {
        return None;
    }
    [4, 2].into_iter().find(|&m| {
        let (direct, transformed) = steps(m);
        output[2].is_multiple_of(m) && 5 * transformed <= 4 * direct
    })
}

/// The stride phases of a convolution's padded input (space to depth):
/// plane `(ci, ry, cx)` holds the padded image's element `(ry + sy i, cx +
/// sx j)` at `(i, j)`. Tap `(ky, kx)` reads the plane of phases `(ky dy %
/// sy, kx dx % sx)` from `(ky dy / sy, kx dx / sx)` on, output position
/// `(oy, ox)` at `(oy, ox)` further: unit strides. Only the phases some tap
/// reads are planes (one of four for a 1x1 stride-2 projection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhasePlanes {
    /// Row phases a tap reads, ascending.
    pub rows: Vec<usize>,
    /// Column phases a tap reads, ascending.
    pub cols: Vec<usize>,
    /// Rows of each plane: the output's and the kernel's reach in phase rows.
    pub height: usize,
    /// Columns of each plane.
    pub width: usize,
}

impl PhasePlanes {
    /// The planes of `c` producing `output` (`[n, o, oh, ow]`).
    pub fn of(c: &Conv2d, output: &[usize]) -> PhasePlanes {
        let axis = |a: usize| {
            let (s, d, k) = (c.stride[a].max(1), c.dilation[a], c.kernel[a].max(1));
            let mut phases: Vec<usize> = (0..k).map(|t| t * d % s).collect();
            phases.sort_unstable();
            phases.dedup();
            (phases, output[2 + a] + (k - 1) * d / s)
        };
        let ((rows, height), (cols, width)) = (axis(0), axis(1));
        PhasePlanes { rows, cols, height, width }
    }

    /// Planes per channel.
    pub fn per_channel(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// Where tap `(ci, ky, kx)` of `c` starts reading, from the first plane.
    pub fn tap(&self, c: &Conv2d, [ci, ky, kx]: [usize; 3]) -> usize {
        let (y, x) = (ky * c.dilation[0], kx * c.dilation[1]);
        let (sy, sx) = (c.stride[0].max(1), c.stride[1].max(1));
        let phase_y = self.rows.iter().position(|&r| r == y % sy).unwrap_or(0);
        let phase_x = self.cols.iter().position(|&r| r == x % sx).unwrap_or(0);
        let plane = (ci * self.rows.len() + phase_y) * self.cols.len() + phase_x;
        (plane * self.height + y / sy) * self.width + x / sx
    }
}

/// The stride phases of a strided convolution's padded input gradient,
/// all `sy * sx` of them per channel: plane `(ci, ry, cx)` holds the padded
/// image's element `(ry + sy i, cx + sx j)` at `(i, j)`. Tap `(ky, kx)`
/// adds output position `(oy, ox)` into plane `(ky dy % sy, kx dx % sx)`
/// at `(oy + ky dy / sy, ox + kx dx / sx)`: a tap's output row is a
/// contiguous run of a plane row, where in the image its elements are a
/// stride apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScatterPhases {
    /// Rows of each plane: as many as the taps reach or the image needs.
    pub height: usize,
    /// Columns of each plane.
    pub width: usize,
}

impl ScatterPhases {
    /// The phases of `c`'s input `[n, c, h, w]` producing `output`.
    pub fn of(c: &Conv2d, input: &[usize], output: &[usize]) -> ScatterPhases {
        let axis = |a: usize| {
            let (s, d, k) = (c.stride[a].max(1), c.dilation[a], c.kernel[a].max(1));
            let reached = output[2 + a] + (k - 1) * d / s;
            let image = (input[2 + a] + c.padding[a]).div_ceil(s);
            reached.max(image)
        };
        ScatterPhases { height: axis(0), width: axis(1) }
    }

    /// Planes per channel.
    pub fn per_channel(c: &Conv2d) -> usize {
        c.stride[0].max(1) * c.stride[1].max(1)
    }

    /// Where tap `(ci, ky, kx)` of `c` adds output position `(0, 0)`.
    pub fn tap(&self, c: &Conv2d, [ci, ky, kx]: [usize; 3]) -> usize {
        let (y, x) = (ky * c.dilation[0], kx * c.dilation[1]);
        let (sy, sx) = (c.stride[0].max(1), c.stride[1].max(1));
        let plane = (ci * sy + y % sy) * sx + x % sx;
        (plane * self.height + y / sy) * self.width + x / sx
    }
}

/// The input gradient's layout. Scattering needs unit strides (each tap's
/// row lands on whole image rows) and rows that block into whole vectors;
/// with zero padding it scatters into a padded image and keeps the
/// interior. Replicate padding would add the border's gradient back onto
/// the edge, which the scatter does not do: it packs.
pub fn input_grad_layout(c: &Conv2d, input: &[usize], output: &[usize], target: &Target) -> InputGradLayout {
    if let Some(gathered) = gathered_input_grad(c, input, output, target) {
        return gathered;
    }
    let (ow, p, w_in) = rows(input, output);
    let padded = c.padding != [0, 0];
    let wrap = ColumnWrap { row: ow, stride: (c.stride[0] * (w_in + 2 * c.padding[1])) as i64 };
    let zeros = !padded || c.padding_mode == PaddingMode::Zeros;
    let outer_scatters = c.stride == [1, 1] && wrap.fits(p, target.vector_lanes);
    if zeros && target.products != ProductIsa::Vector128 && (ow >= target.products.lanes() || !outer_scatters) {
        // The micro-kernels store C's rows one after another, run by run:
        // every stride and row length scatters; rows shorter than a vector
        // cost a masked store per run, so the 128-bit tiles keep those they
        // can take. A strided one scatters into the image's stride phases,
        // where a tap's row is a contiguous run, not every other element.
        if c.stride != [1, 1] {
            let phases = ScatterPhases::of(c, input, output);
            let wrap = ColumnWrap { row: ow, stride: phases.width as i64 };
            return InputGradLayout::Scattered { wrap, padded, micro: true, phased: true };
        }
        return InputGradLayout::Scattered { wrap, padded, micro: true, phased: false };
    }
    if c.stride == [1, 1] && zeros && wrap.fits(p, target.vector_lanes) {
        InputGradLayout::Scattered { wrap, padded, micro: false, phased: false }
    } else {
        InputGradLayout::PackedColumns
    }
}

/// A unit-stride input gradient with zero padding as the forward
/// convolution `dx = conv(dy, W')` with padding `d (k - 1) - p` (the padding
/// is at most the kernel's reach) and the kernel flipped, channels swapped:
/// `W'[ci][co][ky][kx] = W[co][ci][kh-1-ky][kw-1-kx]`; when that
/// convolution runs in place on the micro-kernels.
fn gathered_input_grad(c: &Conv2d, input: &[usize], output: &[usize], target: &Target) -> Option<InputGradLayout> {
    let zeros = c.padding == [0, 0] || c.padding_mode == PaddingMode::Zeros;
    if target.products == ProductIsa::Vector128 || c.stride != [1, 1] || !zeros {
        return None;
    }
    let reach = |axis: usize| (c.dilation[axis] * c.kernel[axis].saturating_sub(1)).checked_sub(c.padding[axis]);
    let conv = Conv2d { padding: [reach(0)?, reach(1)?], padding_mode: PaddingMode::Zeros, ..*c };
    match forward_layout(&conv, output, input, target) {
        ForwardLayout::InPlace { wrap: Some(wrap), pad_copy, splat: false, phased: false } => {
            Some(InputGradLayout::Gathered { conv, wrap, pad_copy })
        }
        _ => None,
    }
}

/// The weight gradient's layout: in place when output rows are whole
/// vectors, or when the dot tile can run its vector steps across rows (see
/// [`KSplit::wraps`]); otherwise a scalar tail per row costs more than
/// packing.
pub fn weight_grad_layout(c: &Conv2d, input: &[usize], output: &[usize], target: &Target) -> WeightGradLayout {
    let lanes = target.vector_lanes;
    let (ow, p, w_in) = rows(input, output);
    let w_read = w_in + 2 * c.padding[1];
    let split = KSplit { outer: output[2], a_stride: ow as i64, b_stride: (c.stride[0] * w_read) as i64 };
    let taps = input[1] * c.kernel[0] * c.kernel[1];
    if transposed_panels_pay(taps, target) && output[1] >= target.products.lanes() {
        // The transposed micro tile steps through each output row by the
        // column stride (B's row stride): every stride reads in place.
        return WeightGradLayout::InPlace { split, pad_copy: c.padding != [0, 0], micro: true };
    }
    if c.stride[1] == 1 && (ow.is_multiple_of(lanes) || split.wraps(p, lanes)) {
        WeightGradLayout::InPlace { split, pad_copy: c.padding != [0, 0], micro: false }
    } else {
        WeightGradLayout::Packed
    }
}

/// Whether a panel the micro-kernels gather is shared by enough rows of
/// the product (`rows`: a forward product's output channels, a weight
/// gradient's kernel taps): each gathered element (a load and a store)
/// feeds one multiply-add per row, `rows / lanes` vector instructions;
/// with fewer than 4 vectors of rows the gather outweighs half the
/// arithmetic, and a packed matrix (vectorised copies) or the 128-bit
/// tiles, which gather nothing, win (measured: a 1x1 stride-2 projection
/// to 32 channels ran at 31 GFLOP/s gathered, 51 packed).
pub fn gathered_panels_pay(rows: usize, target: &Target) -> bool {
    target.products != ProductIsa::Vector128 && rows >= 4 * target.products.lanes()
}

/// [`gathered_panels_pay`] for a weight gradient's output gradient, whose
/// panel the driver gathers 8x8 transposed in registers (two loads and a
/// store per element's worth of vectors, not a load and a store per
/// element): it pays from 2 vectors of rows (a 3-channel stem's 27 taps).
pub fn transposed_panels_pay(rows: usize, target: &Target) -> bool {
    target.products != ProductIsa::Vector128 && rows >= 2 * target.products.lanes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(k: usize, stride: usize, padding: usize) -> Conv2d {
        Conv2d {
            kernel: [k, k],
            stride: [stride, stride],
            padding: [padding, padding],
            dilation: [1, 1],
            padding_mode: PaddingMode::Zeros,
        }
    }

    #[test]
    fn lenet_convolutions_stay_in_place() {
        let t = Target::baseline();
        // conv1: 32x32 -> 28x28, rows of 28 are whole 4-lane vectors.
        let (x1, y1) = ([4, 3, 32, 32], [4, 6, 28, 28]);
        assert_eq!(
            forward_layout(&conv(5, 1, 0), &x1, &y1, &t),
            ForwardLayout::InPlace { wrap: None, pad_copy: false, splat: true, phased: false }
        );
        // conv2: 14x14 -> 10x10, rows of 10 wrap in blocks of 20 columns.
        let (x2, y2) = ([4, 6, 14, 14], [4, 16, 10, 10]);
        let wrap = ColumnWrap { row: 10, stride: 14 };
        assert_eq!(
            forward_layout(&conv(5, 1, 0), &x2, &y2, &t),
            ForwardLayout::InPlace { wrap: Some(wrap), pad_copy: false, splat: true, phased: false }
        );
        assert_eq!(
            input_grad_layout(&conv(5, 1, 0), &x2, &y2, &t),
            InputGradLayout::Scattered { wrap, padded: false, micro: false, phased: false }
        );
        assert!(matches!(weight_grad_layout(&conv(5, 1, 0), &x2, &y2, &t), WeightGradLayout::InPlace { .. }));
    }

    #[test]
    fn padding_and_strided_columns_pack() {
        let t = Target::baseline();
        let (x, y) = ([4, 32, 16, 16], [4, 32, 16, 16]);
        // The forward product reads a padded copy in place.
        assert_eq!(
            forward_layout(&conv(3, 1, 1), &x, &y, &t),
            ForwardLayout::InPlace { wrap: None, pad_copy: true, splat: true, phased: false }
        );
        // Zero padding scatters into a padded image; replicate packs.
        assert_eq!(
            input_grad_layout(&conv(3, 1, 1), &x, &y, &t),
            InputGradLayout::Scattered {
                wrap: ColumnWrap { row: 16, stride: 18 },
                padded: true,
                micro: false,
                phased: false
            }
        );
        let replicate = Conv2d { padding_mode: PaddingMode::Replicate, ..conv(3, 1, 1) };
        assert_eq!(input_grad_layout(&replicate, &x, &y, &t), InputGradLayout::PackedColumns);
        // Rows of 16 are whole vectors: the weight gradient reads a padded copy.
        assert_eq!(
            weight_grad_layout(&conv(3, 1, 1), &x, &y, &t),
            WeightGradLayout::InPlace {
                split: KSplit { outer: 16, a_stride: 16, b_stride: 18 },
                pad_copy: true,
                micro: false
            }
        );
        let (x, y) = ([4, 16, 16, 16], [4, 32, 8, 8]);
        assert_eq!(forward_layout(&conv(1, 2, 0), &x, &y, &t), ForwardLayout::Packed);
    }

    #[test]
    fn wide_products_wrap_every_forward_and_read_the_weights_unsplatted() {
        let t = Target::baseline().with_products(ProductIsa::Avx512);
        // Rows of 16, padded to 18: one product per image, whatever the row.
        let (x, y) = ([4, 32, 16, 16], [4, 32, 16, 16]);
        assert_eq!(
            forward_layout(&conv(3, 1, 1), &x, &y, &t),
            ForwardLayout::InPlace {
                wrap: Some(ColumnWrap { row: 16, stride: 18 }),
                pad_copy: true,
                splat: false,
                phased: false
            }
        );
        // Stride 2 reads the padded image's four stride phases, planes of
        // 6x6 (5 outputs and the kernel's reach of one phase row).
        let (x, y) = ([4, 3, 9, 9], [4, 64, 5, 5]);
        assert_eq!(
            forward_layout(&conv(3, 2, 1), &x, &y, &t),
            ForwardLayout::InPlace {
                wrap: Some(ColumnWrap { row: 5, stride: 6 }),
                pad_copy: true,
                splat: false,
                phased: true
            }
        );
        let planes = PhasePlanes::of(&conv(3, 2, 1), &y);
        assert_eq!(planes, PhasePlanes { rows: vec![0, 1], cols: vec![0, 1], height: 6, width: 6 });
        // Tap (ci 1, ky 2, kx 1): channel 1's plane of phases (0, 1), from
        // its row 1.
        assert_eq!(planes.tap(&conv(3, 2, 1), [1, 2, 1]), ((4 + 1) * 6 + 1) * 6);
        // A 1x1 projection with stride 2 reads one phase: every other
        // element of every other row.
        let (x, y) = ([4, 16, 16, 16], [4, 64, 8, 8]);
        assert_eq!(
            forward_layout(&conv(1, 2, 0), &x, &y, &t),
            ForwardLayout::InPlace {
                wrap: Some(ColumnWrap { row: 8, stride: 8 }),
                pad_copy: false,
                splat: false,
                phased: true
            }
        );
        assert_eq!(PhasePlanes::of(&conv(1, 2, 0), &y).per_channel(), 1);
        // Dilation 2 with stride 2: every tap in phase 0.
        let dilated = Conv2d { dilation: [2, 2], ..conv(3, 2, 2) };
        let planes = PhasePlanes::of(&dilated, &[4, 8, 8, 8]);
        assert_eq!((planes.per_channel(), planes.height, planes.width), (1, 10, 10));
        // LeNet's conv1 (6 channels, rows of 28 = 1.75 vectors) too: the
        // driver cuts such rows into blocks of their own, in place.
        let (x, y) = ([4, 3, 32, 32], [4, 6, 28, 28]);
        assert_eq!(
            forward_layout(&conv(5, 1, 0), &x, &y, &t),
            ForwardLayout::InPlace {
                wrap: Some(ColumnWrap { row: 28, stride: 32 }),
                pad_copy: false,
                splat: false,
                phased: false
            }
        );
        let (x, y) = ([4, 16, 16, 16], [4, 32, 8, 8]);
        // Its input gradient scatters into the stride phases (and its 3x3
        // stride-2 sibling's too): 8 of each plane's 8 columns.
        assert_eq!(
            input_grad_layout(&conv(1, 2, 0), &x, &y, &t),
            InputGradLayout::Scattered {
                wrap: ColumnWrap { row: 8, stride: 8 },
                padded: false,
                micro: true,
                phased: true
            }
        );
        assert_eq!(ScatterPhases::of(&conv(1, 2, 0), &x, &y), ScatterPhases { height: 8, width: 8 });
        // The 3x3 one's taps reach a row and column further; the padded
        // image (18 wide) has 9 of each phase.
        assert_eq!(ScatterPhases::of(&conv(3, 2, 1), &x, &y), ScatterPhases { height: 9, width: 9 });
        // Tap (ci 1, ky 2, kx 1): plane 5 (channel 1, phases (0, 1)), one row down.
        assert_eq!(ScatterPhases { height: 9, width: 9 }.tap(&conv(3, 2, 1), [1, 2, 1]), (5 * 9 + 1) * 9);
        // Its weight gradient has 16 taps: too few to pay for gathering the
        // output gradient, so it packs; a 3x3 stride-2 one over 16 channels
        // (144 taps) reads the padded input in place.
        assert_eq!(weight_grad_layout(&conv(1, 2, 0), &x, &y, &t), WeightGradLayout::Packed);
        assert_eq!(
            weight_grad_layout(&conv(3, 2, 1), &x, &y, &t),
            WeightGradLayout::InPlace {
                split: KSplit { outer: 8, a_stride: 8, b_stride: 36 },
                pad_copy: true,
                micro: true
            }
        );
    }

    /// A unit-stride input gradient runs as the forward convolution of the
    /// output gradient (flipped kernel, padding `d (k - 1) - p`) where that
    /// one runs in place on the micro-kernels; strided ones scatter.
    #[test]
    fn unit_stride_input_gradients_gather() {
        let t = Target::baseline().with_products(ProductIsa::Avx512);
        // 16x16 padded 3x3: the gradient's rows are whole vectors.
        let (x, y) = ([4, 32, 16, 16], [4, 32, 16, 16]);
        let equivalent = Conv2d { padding: [1, 1], ..conv(3, 1, 1) };
        assert_eq!(
            input_grad_layout(&conv(3, 1, 1), &x, &y, &t),
            InputGradLayout::Gathered { conv: equivalent, wrap: ColumnWrap { row: 16, stride: 18 }, pad_copy: true }
        );
        // Unpadded 3x3, dilation 2: padding 4 around the 12x12 gradient.
        let dilated = Conv2d { dilation: [2, 2], ..conv(3, 1, 0) };
        let (x, y) = ([4, 64, 16, 16], [4, 8, 12, 12]);
        assert_eq!(
            input_grad_layout(&dilated, &x, &y, &t),
            InputGradLayout::Gathered {
                conv: Conv2d { padding: [4, 4], ..dilated },
                wrap: ColumnWrap { row: 16, stride: 20 },
                pad_copy: true
            }
        );
        // 8x8 rows of 64 channels.
        let (x, y) = ([4, 64, 8, 8], [4, 64, 8, 8]);
        assert!(matches!(input_grad_layout(&conv(3, 1, 1), &x, &y, &t), InputGradLayout::Gathered { .. }));
        // 8x8 rows of 32 channels (half vectors) gather too, a block per
        // row; stride 2 scatters.
        let (x, y) = ([4, 32, 8, 8], [4, 32, 8, 8]);
        assert!(matches!(input_grad_layout(&conv(3, 1, 1), &x, &y, &t), InputGradLayout::Gathered { .. }));
        let (x, y) = ([4, 16, 16, 16], [4, 32, 8, 8]);
        assert!(matches!(input_grad_layout(&conv(3, 2, 1), &x, &y, &t), InputGradLayout::Scattered { .. }));
        // Padding beyond the kernel's reach has no equivalent convolution.
        let (x, y) = ([4, 32, 16, 16], [4, 32, 18, 18]);
        assert!(!matches!(input_grad_layout(&conv(1, 1, 1), &x, &y, &t), InputGradLayout::Gathered { .. }));
    }

    #[test]
    fn the_vector_width_decides_which_rows_wrap() {
        // Rows of 12 are whole 4-lane vectors but not whole 8-lane ones.
        let (x, y) = ([2, 3, 16, 16], [2, 4, 12, 12]);
        let narrow = Target::baseline();
        let wide = narrow.with_lanes(8);
        assert_eq!(
            forward_layout(&conv(5, 1, 0), &x, &y, &narrow),
            ForwardLayout::InPlace { wrap: None, pad_copy: false, splat: true, phased: false }
        );
        assert_eq!(
            forward_layout(&conv(5, 1, 0), &x, &y, &wide),
            ForwardLayout::InPlace {
                wrap: Some(ColumnWrap { row: 12, stride: 16 }),
                pad_copy: false,
                splat: true,
                phased: false
            }
        );
    }
}
