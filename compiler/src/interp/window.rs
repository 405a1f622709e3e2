//! NCHW indexing and sliding windows, shared by convolution and pooling:
//! the input pixel each tap of each window reads (or `None` in zero
//! padding), tabulated once per op, and the check that a window's output
//! shape matches the input's.

use super::{Fault, ensure};
use crate::ops::{Conv2d, PaddingMode, Pool2d};
use crate::shape::window_output_len;

/// The lengths of an NCHW tensor.
#[derive(Clone, Copy, Debug)]
pub(super) struct Nchw {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
}

impl Nchw {
    pub(super) fn of(shape: &[usize], what: &str) -> Result<Nchw, Fault> {
        match *shape {
            [n, c, h, w] => Ok(Nchw { n, c, h, w }),
            _ => Err(Fault::Malformed(format!("{what} must be NCHW (rank 4) but has shape {shape:?}"))),
        }
    }

    /// Flat row-major offset of element `[n, c, y, x]`.
    pub(super) fn at(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.c + c) * self.h + y) * self.w + x
    }

    pub(super) fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
}

/// The input index that tap `tap` of the window at output position `pos`
/// reads along one axis, or `None` when it falls in zero padding. With
/// `replicate` a position outside the input reads the nearest border element.
fn window_source(
    pos: usize,
    tap: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    len: usize,
    replicate: bool,
) -> Option<usize> {
    let i = (pos * stride + tap * dilation) as isize - padding as isize;
    if len == 0 {
        None
    } else if (0..len as isize).contains(&i) {
        Some(i as usize)
    } else if replicate {
        Some(i.clamp(0, len as isize - 1) as usize)
    } else {
        None
    }
}

/// Checks that `y` is the output of sliding a `kernel` window over `x` per axis.
pub(super) fn check_window(
    x: Nchw,
    y: Nchw,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Result<(), Fault> {
    let oh = window_output_len(x.h, kernel[0], stride[0], padding[0], dilation[0]);
    let ow = window_output_len(x.w, kernel[1], stride[1], padding[1], dilation[1]);
    ensure(oh == Some(y.h) && ow == Some(y.w), || {
        format!(
            "a {kernel:?} window (stride {stride:?}, padding {padding:?}, dilation {dilation:?}) over \
             {}x{} gives {oh:?}x{ow:?}, not {}x{}",
            x.h, x.w, y.h, y.w
        )
    })
}

/// The input pixels the taps of a sliding window read, tabulated per axis.
pub(super) struct Taps {
    /// `rows[oy * kh + ky]`: the input row tap `ky` of output row `oy` reads.
    rows: Vec<Option<usize>>,
    /// `cols[ox * kw + kx]`: likewise for columns.
    cols: Vec<Option<usize>>,
    pub(super) kh: usize,
    pub(super) kw: usize,
}

impl Taps {
    fn new(
        x: Nchw,
        y: Nchw,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        replicate: bool,
    ) -> Taps {
        let axis = |out_len: usize, in_len: usize, a: usize| -> Vec<Option<usize>> {
            (0..out_len)
                .flat_map(|o| {
                    (0..kernel[a])
                        .map(move |k| window_source(o, k, stride[a], padding[a], dilation[a], in_len, replicate))
                })
                .collect()
        };
        Taps { rows: axis(y.h, x.h, 0), cols: axis(y.w, x.w, 1), kh: kernel[0], kw: kernel[1] }
    }

    pub(super) fn conv(c: &Conv2d, x: Nchw, y: Nchw) -> Taps {
        Taps::new(x, y, c.kernel, c.stride, c.padding, c.dilation, c.padding_mode == PaddingMode::Replicate)
    }

    pub(super) fn pool(p: &Pool2d, x: Nchw, y: Nchw) -> Taps {
        Taps::new(x, y, p.kernel, p.stride, p.padding, p.dilation, false)
    }

    /// The input pixel `(iy, ix)` that tap `(ky, kx)` of output pixel
    /// `(oy, ox)` reads, or `None` when it falls in zero padding.
    pub(super) fn source(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        Some((self.rows[oy * self.kh + ky]?, self.cols[ox * self.kw + kx]?))
    }
}
