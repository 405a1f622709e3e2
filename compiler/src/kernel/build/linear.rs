//! Linear layers as matrix products: the forward pass with its bias and
//! activation epilogue, and the input and weight gradients.

use super::{Builder, Finish, KernelBody, UNSCHEDULED_DOT, UNSCHEDULED_OUTER};
use crate::graph::NodeId;
use crate::kernel::*;

impl Builder<'_> {
    /// Rows and features of a `[.., features]` tensor.
    fn rows_cols(&self, id: NodeId) -> (usize, usize) {
        let d = self.dims(id);
        let cols = d.last().copied().unwrap_or(1);
        (d.iter().product::<usize>() / cols.max(1), cols)
    }

    pub(super) fn linear(&mut self, id: NodeId, ins: &[NodeId], finish: &Finish) -> Result<KernelBody, BuildError> {
        let (rows, inf) = self.rows_cols(ins[0]);
        let (_, outf) = self.rows_cols(id);
        let (x, w) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let bias = ins.get(2).map(|&b| self.buf(b)).transpose()?;
        let cm = MatrixRef { buf: finish.out, offset: Idx::Const(0), row_stride: outf as i64, col_stride: 1 };
        let epilogue = self.forward_epilogue(finish, &cm, bias.map(|b| Bias::PerColumn(b, Idx::Const(0))));
        let g = Gemm {
            m: rows,
            n: outf,
            k: inf,
            a: MatrixRef { buf: x, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 },
            b: MatrixRef { buf: w, offset: Idx::Const(0), row_stride: 1, col_stride: inf as i64 },
            c: cm,
            epilogue,
            b_rows: None,
            k_split: None,
            b_wrap: None,
            c_rows: None,
            c_wrap: None,
            a_splat: false,
            tile: UNSCHEDULED_DOT,
        };
        Ok((vec![Stmt::Gemm(Box::new(g))], 2 * (rows * inf * outf) as u64))
    }

    pub(super) fn linear_grad_input(
        &mut self,
        id: NodeId,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (rows, outf) = self.rows_cols(ins[0]);
        let (_, inf) = self.rows_cols(id);
        let (dy, w) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let cm = MatrixRef { buf: finish.out, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 };
        let g = Gemm {
            m: rows,
            n: inf,
            k: outf,
            a: MatrixRef { buf: dy, offset: Idx::Const(0), row_stride: outf as i64, col_stride: 1 },
            b: MatrixRef { buf: w, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 },
            c: cm.clone(),
            epilogue: Epilogue {
                grad_mask: finish.mask.map(|(a, x)| (a, MatrixRef { buf: x, ..cm })),
                ..Epilogue::default()
            },
            b_rows: None,
            k_split: None,
            b_wrap: None,
            c_rows: None,
            c_wrap: None,
            a_splat: false,
            tile: UNSCHEDULED_OUTER,
        };
        Ok((vec![Stmt::Gemm(Box::new(g))], 2 * (rows * inf * outf) as u64))
    }

    pub(super) fn linear_grad_weight(
        &mut self,
        _id: NodeId,
        ins: &[NodeId],
        finish: &Finish,
    ) -> Result<KernelBody, BuildError> {
        let (rows, inf) = self.rows_cols(ins[0]);
        let (_, outf) = self.rows_cols(ins[1]);
        let (x, dy) = (self.buf(ins[0])?, self.buf(ins[1])?);
        let g = Gemm {
            m: outf,
            n: inf,
            k: rows,
            a: MatrixRef { buf: dy, offset: Idx::Const(0), row_stride: 1, col_stride: outf as i64 },
            b: MatrixRef { buf: x, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 },
            c: MatrixRef { buf: finish.out, offset: Idx::Const(0), row_stride: inf as i64, col_stride: 1 },
            epilogue: Epilogue::default(),
            b_rows: None,
            k_split: None,
            b_wrap: None,
            c_rows: None,
            c_wrap: None,
            a_splat: false,
            tile: UNSCHEDULED_OUTER,
        };
        Ok((vec![Stmt::Gemm(Box::new(g))], 2 * (rows * inf * outf) as u64))
    }
}
