//! The loop-level kernel IR between the graph and a code generator.
//!
//! A [`Program`] is a list of [`Kernel`]s run in order over a set of
//! [`Buffer`]s. Each kernel is a loop nest ([`Stmt`]) over buffers with every
//! loop bound a constant (shapes are static). Scheduling decisions live here,
//! as data: which loop is split across threads ([`LoopMode::Parallel`]),
//! which is vectorised ([`LoopMode::Vector`]) and how a matrix product is
//! register-tiled ([`GemmTile`]), and how each is written out
//! ([`LoopLowering`], [`DotSteps`], [`Emission`]). A code generator only emits instructions
//! for what the IR says; nothing in this module is specific to Cranelift or
//! to x86, so another backend can lower the same IR.
//!
//! Index arithmetic ([`Idx`]) is on signed 64-bit integers; values ([`Val`])
//! are `f32`. Buffers are flat arrays addressed by element index.

mod build;
pub mod eval;
pub(crate) mod lowering;
mod print;
pub mod text;
mod verify;

pub use build::{BuildError, build_program};
pub(crate) use build::{activation_expr, activation_grad_expr};
pub use eval::{EvalError, Fault, KernelInterpreter};
pub use lowering::{DotSteps, Emission, LoopLowering, MAX_WRITTEN_OUT, Unroll, VectorTail};
pub use verify::{
    AfterPass, GemmRule, LoweringRule, Problem, READ_SLACK, VectorRule, VerifyError, VerifyErrors, verify,
};

use crate::graph::NodeId;
use crate::ops::Activation;
pub use crate::target::{ProductIsa, Target, TileSource};
use std::ops::{Add, Div, Mul, Rem, Sub};

/// Identifies a buffer of a [`Program`] (an index into [`Program::buffers`]).
pub type BufId = usize;
/// Identifies a loop variable within one kernel.
pub type VarId = u32;
/// Identifies a scalar accumulator (a mutable `f32` local) within one kernel.
pub type AccId = u32;

/// What a buffer holds and how long it lives.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// A leaf of the graph (input, parameter, labels, target, optimizer
    /// state): written by the caller, kept for the executable's lifetime.
    Leaf(NodeId),
    /// The value of a graph node computed by a kernel.
    Value(NodeId),
    /// Temporary storage of one kernel (packed panels, partial sums).
    Scratch,
    /// Constant `f32` data fixed at compile time (interpolation weights).
    ConstF32(Vec<f32>),
    /// Constant `i32` data fixed at compile time (gather index tables).
    ConstI32(Vec<i32>),
}

/// A flat array of 32-bit elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// A readable name for dumps.
    pub name: String,
    /// Number of elements (per thread when `per_thread`).
    pub len: usize,
    /// What the buffer holds.
    pub kind: BufferKind,
    /// Whether every thread gets its own copy (scratch used inside a
    /// parallel loop); kernels address the copy of the thread running them.
    pub per_thread: bool,
}

/// An integer index expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Idx {
    /// A constant.
    Const(i64),
    /// The current value of a loop variable.
    Var(VarId),
    /// Sum.
    Add(Box<Idx>, Box<Idx>),
    /// Product with a constant.
    Mul(Box<Idx>, i64),
    /// Floor division by a positive constant (operands are non-negative).
    Div(Box<Idx>, i64),
    /// Remainder by a positive constant (operands are non-negative).
    Rem(Box<Idx>, i64),
    /// Minimum.
    Min(Box<Idx>, Box<Idx>),
    /// Maximum.
    Max(Box<Idx>, Box<Idx>),
    /// Bitwise exclusive or of two non-negative values (a hash's mixing step).
    Xor(Box<Idx>, Box<Idx>),
    /// Element of a [`BufferKind::ConstI32`] table.
    Table(BufId, Box<Idx>),
    /// An `f32` element of a buffer, truncated to an integer (indices
    /// recorded by an earlier kernel, such as a max-pool's argmax).
    FloatTable(BufId, Box<Idx>),
}

impl Idx {
    /// The loop variable `v`.
    pub fn var(v: VarId) -> Idx {
        Idx::Var(v)
    }

    /// `self` clamped to `[lo, hi]`.
    pub fn clamp(self, lo: i64, hi: i64) -> Idx {
        Idx::Min(Box::new(Idx::Max(Box::new(self), Box::new(Idx::Const(lo)))), Box::new(Idx::Const(hi)))
    }

    /// Whether the expression reads loop variable `v`.
    pub fn uses(&self, v: VarId) -> bool {
        match self {
            Idx::Const(_) => false,
            Idx::Var(w) => *w == v,
            Idx::Mul(a, _) | Idx::Div(a, _) | Idx::Rem(a, _) | Idx::Table(_, a) | Idx::FloatTable(_, a) => a.uses(v),
            Idx::Add(a, b) | Idx::Min(a, b) | Idx::Max(a, b) | Idx::Xor(a, b) => a.uses(v) || b.uses(v),
        }
    }

    /// `Some(c)` when the expression is `c * v + (terms without v)`.
    pub fn coefficient(&self, v: VarId) -> Option<i64> {
        if !self.uses(v) {
            return Some(0);
        }
        match self {
            Idx::Var(_) => Some(1),
            Idx::Add(a, b) => Some(a.coefficient(v)? + b.coefficient(v)?),
            Idx::Mul(a, k) => Some(a.coefficient(v)? * k),
            _ => None,
        }
    }
}

/// What is known of an index across the lanes of a vector loop: lane `l`
/// equals lane 0 plus `offsets[l]`, and lane 0 is congruent to `residue`
/// modulo `modulus` (a modulus of 1 knows nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
struct LaneForm {
    offsets: Vec<i64>,
    modulus: i64,
    residue: i64,
}

/// A modulus every constant is known exactly modulo (lcm of 1..=16), so
/// constants keep divisibility facts through `Div` and `Rem` (wider than
/// 16 lanes, some facts are lost: the analysis stays correct, only less
/// precise).
const CONST_MODULUS: i64 = 720_720;

impl LaneForm {
    fn uniform(lanes: usize, modulus: i64, residue: i64) -> LaneForm {
        LaneForm { offsets: vec![0; lanes], modulus, residue: residue.rem_euclid(modulus) }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

impl Idx {
    /// The lane pattern of this index in a vector loop over `v` with
    /// `lanes` lanes: `Some(o)` when lane `l` (the iteration `v + l`, with
    /// `v` a multiple of `lanes`, as in every vector loop) is lane 0 plus
    /// `o[l]`. With 4 lanes, `[0, 1, 2, 3]` is a contiguous access, `[0; 4]`
    /// a uniform one, `[0, 2, 4, 6]` a stride-2 one and `[0, 0, 1, 1]` the
    /// index of a 2x upsampling. `None` when the lanes do not differ by
    /// constants (a table lookup, a clamp of the loop variable).
    pub fn lane_offsets(&self, v: VarId, lanes: usize) -> Option<Vec<i64>> {
        self.lane_form(v, lanes).map(|f| f.offsets)
    }

    fn lane_form(&self, v: VarId, lanes: usize) -> Option<LaneForm> {
        // An expression that does not move with `v` is uniform even where
        // its residue is unknown.
        let uniform = || (!self.uses(v)).then(|| LaneForm::uniform(lanes, 1, 0));
        match self {
            Idx::Const(c) => Some(LaneForm::uniform(lanes, CONST_MODULUS, *c)),
            Idx::Var(w) if *w == v => {
                Some(LaneForm { offsets: (0..lanes as i64).collect(), modulus: lanes as i64, residue: 0 })
            }
            Idx::Var(_) => uniform(),
            Idx::Add(a, b) => {
                let (a, b) = (a.lane_form(v, lanes)?, b.lane_form(v, lanes)?);
                let modulus = gcd(a.modulus, b.modulus).max(1);
                Some(LaneForm {
                    offsets: a.offsets.iter().zip(&b.offsets).map(|(x, y)| x + y).collect(),
                    modulus,
                    residue: (a.residue + b.residue).rem_euclid(modulus),
                })
            }
            Idx::Mul(a, k) => {
                let a = a.lane_form(v, lanes)?;
                if *k == 0 {
                    return Some(LaneForm::uniform(lanes, CONST_MODULUS, 0));
                }
                // An overflowing modulus only forgets what is known.
                let modulus = a.modulus.checked_mul(k.abs()).unwrap_or(1);
                Some(LaneForm {
                    offsets: a.offsets.iter().map(|o| o * k).collect(),
                    modulus,
                    residue: (a.residue * k).rem_euclid(modulus),
                })
            }
            // Lane 0 is `k * q + r` with `r` known, so lane `l` divides to
            // `q + (r + o[l]) / k` (operands are non-negative).
            Idx::Div(a, k) => {
                let a = a.lane_form(v, lanes)?;
                if a.modulus % k != 0 || a.offsets.iter().any(|&o| a.residue % k + o < 0) {
                    return uniform();
                }
                let r = a.residue % k;
                let modulus = (a.modulus / k).max(1);
                Some(LaneForm {
                    offsets: a.offsets.iter().map(|o| (r + o) / k).collect(),
                    modulus,
                    residue: ((a.residue - r) / k).rem_euclid(modulus),
                })
            }
            Idx::Rem(a, k) => {
                let a = a.lane_form(v, lanes)?;
                if a.modulus % k != 0 {
                    return uniform();
                }
                let r = a.residue % k;
                if a.offsets.iter().any(|&o| r + o < 0 || r + o >= *k) {
                    return uniform();
                }
                Some(LaneForm { offsets: a.offsets, modulus: *k, residue: r })
            }
            Idx::Min(..) | Idx::Max(..) | Idx::Xor(..) | Idx::Table(..) | Idx::FloatTable(..) => uniform(),
        }
    }
}

impl From<i64> for Idx {
    fn from(c: i64) -> Idx {
        Idx::Const(c)
    }
}

impl From<usize> for Idx {
    fn from(c: usize) -> Idx {
        Idx::Const(c as i64)
    }
}

impl Add for Idx {
    type Output = Idx;
    fn add(self, rhs: Idx) -> Idx {
        match (self, rhs) {
            (Idx::Const(0), x) | (x, Idx::Const(0)) => x,
            (Idx::Const(a), Idx::Const(b)) => Idx::Const(a + b),
            (a, b) => Idx::Add(Box::new(a), Box::new(b)),
        }
    }
}

impl Add<i64> for Idx {
    type Output = Idx;
    fn add(self, rhs: i64) -> Idx {
        self + Idx::Const(rhs)
    }
}

impl Add<usize> for Idx {
    type Output = Idx;
    fn add(self, rhs: usize) -> Idx {
        self + Idx::Const(rhs as i64)
    }
}

impl Sub<i64> for Idx {
    type Output = Idx;
    fn sub(self, rhs: i64) -> Idx {
        self + Idx::Const(-rhs)
    }
}

impl Mul<i64> for Idx {
    type Output = Idx;
    fn mul(self, k: i64) -> Idx {
        match (self, k) {
            (_, 0) => Idx::Const(0),
            (x, 1) => x,
            (Idx::Const(a), k) => Idx::Const(a * k),
            (x, k) => Idx::Mul(Box::new(x), k),
        }
    }
}

impl Div<i64> for Idx {
    type Output = Idx;
    /// Floor division by a positive constant.
    fn div(self, d: i64) -> Idx {
        if d == 1 { self } else { Idx::Div(Box::new(self), d) }
    }
}

impl Rem<i64> for Idx {
    type Output = Idx;
    /// Remainder by a positive constant.
    fn rem(self, d: i64) -> Idx {
        Idx::Rem(Box::new(self), d)
    }
}

impl Mul<usize> for Idx {
    type Output = Idx;
    fn mul(self, k: usize) -> Idx {
        self * (k as i64)
    }
}

/// A unary function on `f32`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnOp {
    /// `-x`.
    Neg,
    /// `e^x` (the same function as Rust's `f32::exp`).
    Exp,
    /// `ln x` (Rust's `f32::ln`).
    Ln,
    /// `tanh x` (Rust's `f32::tanh`).
    Tanh,
    /// `x <= 0 ? 0 : x` (a NaN stays NaN, as in PyTorch).
    Relu,
    /// The error function `erf x` (libm's `erff`; the JIT's is within a few
    /// ulp of it).
    Erf,
    /// `sqrt x` (correctly rounded everywhere).
    Sqrt,
}

/// A binary function on `f32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `==`.
    Eq,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// A boolean condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// Integer comparison.
    Index(Cmp, Idx, Idx),
    /// Float comparison (ordered: false when either side is NaN).
    Value(Cmp, Box<Val>, Box<Val>),
    /// The value is a NaN.
    IsNan(Box<Val>),
    /// Both hold.
    And(Box<Cond>, Box<Cond>),
    /// Either holds.
    Or(Box<Cond>, Box<Cond>),
}

impl Cond {
    /// `a cmp b` on indices.
    pub fn idx(cmp: Cmp, a: impl Into<Idx>, b: impl Into<Idx>) -> Cond {
        Cond::Index(cmp, a.into(), b.into())
    }

    /// `a cmp b` on values.
    pub fn val(cmp: Cmp, a: Val, b: Val) -> Cond {
        Cond::Value(cmp, Box::new(a), Box::new(b))
    }

    /// Both conditions.
    pub fn and(self, other: Cond) -> Cond {
        Cond::And(Box::new(self), Box::new(other))
    }

    /// `lo <= i < hi`.
    pub fn in_range(i: Idx, lo: i64, hi: i64) -> Cond {
        Cond::idx(Cmp::Ge, i.clone(), lo).and(Cond::idx(Cmp::Lt, i, hi))
    }
}

/// An `f32` value expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// A constant.
    Const(f32),
    /// `buffer[index]`.
    Load(BufId, Idx),
    /// The current value of an accumulator.
    Acc(AccId),
    /// A unary function.
    Un(UnOp, Box<Val>),
    /// A binary function.
    Bin(BinOp, Box<Val>, Box<Val>),
    /// `cond ? a : b`.
    Select(Box<Cond>, Box<Val>, Box<Val>),
    /// An index converted to `f32`.
    FromIdx(Idx),
}

impl Val {
    /// `buffer[index]`.
    pub fn load(buf: BufId, idx: Idx) -> Val {
        Val::Load(buf, idx)
    }

    /// A unary function of `self`.
    pub fn un(self, op: UnOp) -> Val {
        Val::Un(op, Box::new(self))
    }

    /// A binary function.
    pub fn bin(op: BinOp, a: Val, b: Val) -> Val {
        Val::Bin(op, Box::new(a), Box::new(b))
    }

    /// `cond ? a : b`.
    pub fn select(cond: Cond, a: Val, b: Val) -> Val {
        Val::Select(Box::new(cond), Box::new(a), Box::new(b))
    }

    /// Visits every sub-expression index, value and condition (pre-order).
    pub fn visit(&self, f: &mut dyn FnMut(Node<'_>)) {
        f(Node::Val(self));
        match self {
            Val::Const(_) | Val::Acc(_) => {}
            Val::Load(_, i) | Val::FromIdx(i) => f(Node::Idx(i)),
            Val::Un(_, a) => a.visit(f),
            Val::Bin(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Val::Select(c, a, b) => {
                c.visit(f);
                a.visit(f);
                b.visit(f);
            }
        }
    }
}

impl Cond {
    /// Visits every sub-expression (pre-order).
    pub fn visit(&self, f: &mut dyn FnMut(Node<'_>)) {
        f(Node::Cond(self));
        match self {
            Cond::Index(_, a, b) => {
                f(Node::Idx(a));
                f(Node::Idx(b));
            }
            Cond::Value(_, a, b) => {
                a.visit(f);
                b.visit(f);
            }
            Cond::IsNan(a) => a.visit(f),
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.visit(f);
                b.visit(f);
            }
        }
    }
}

impl Add for Val {
    type Output = Val;
    fn add(self, b: Val) -> Val {
        Val::bin(BinOp::Add, self, b)
    }
}

impl Sub for Val {
    type Output = Val;
    fn sub(self, b: Val) -> Val {
        Val::bin(BinOp::Sub, self, b)
    }
}

impl Mul for Val {
    type Output = Val;
    fn mul(self, b: Val) -> Val {
        Val::bin(BinOp::Mul, self, b)
    }
}

impl Div for Val {
    type Output = Val;
    fn div(self, b: Val) -> Val {
        Val::bin(BinOp::Div, self, b)
    }
}

/// A reference to one expression node, for [`Val::visit`].
#[derive(Clone, Copy, Debug)]
pub enum Node<'a> {
    /// A value.
    Val(&'a Val),
    /// A top-level index (sub-indices are not visited separately).
    Idx(&'a Idx),
    /// A condition.
    Cond(&'a Cond),
}

/// A reduction operator of [`Stmt::Reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedOp {
    /// `acc + v`.
    Add,
    /// `v > acc || v is NaN ? v : acc` (PyTorch's max: a NaN wins).
    Max,
}

/// How a loop is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopMode {
    /// One iteration after another.
    Serial,
    /// [`Target::vector_lanes`] iterations at a time in one vector, with a
    /// tail for the rest.
    Vector,
    /// Iterations split into contiguous ranges, one per thread. Only the
    /// outermost statement of a kernel may be a parallel loop.
    Parallel,
}

/// A counted loop `for var in 0..extent`.
#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    /// The loop variable.
    pub var: VarId,
    /// The constant trip count.
    pub extent: usize,
    /// How iterations run.
    pub mode: LoopMode,
    /// The loop body.
    pub body: Vec<Stmt>,
    /// How the backend writes the loop out (unrolling, vector tail,
    /// reduction chains), decided by `passes::lowering`.
    pub lowering: LoopLowering,
}

/// A strided view of a matrix inside a buffer:
/// element `(i, j)` is at `offset + i * row_stride + j * col_stride`.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixRef {
    /// The buffer.
    pub buf: BufId,
    /// Element index of `(0, 0)`.
    pub offset: Idx,
    /// Distance between rows.
    pub row_stride: i64,
    /// Distance between columns.
    pub col_stride: i64,
}

/// Where a matrix product's bias comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Bias {
    /// `bias[offset + i]` added to row `i` (a conv's output channel).
    PerRow(BufId, Idx),
    /// `bias[offset + j]` added to column `j` (a linear layer's output unit).
    PerColumn(BufId, Idx),
}

/// What happens to each result of a matrix product before it is stored.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Epilogue {
    /// Add the previous contents of `C` (accumulate into `C`).
    pub accumulate: bool,
    /// Add a bias.
    pub bias: Option<Bias>,
    /// Apply an activation (a fused forward epilogue).
    pub activation: Option<Activation>,
    /// Also store the value before the activation here (same layout as
    /// `C`), for a backward pass that needs it.
    pub pre_activation: Option<MatrixRef>,
    /// Multiply by the activation's derivative at the matching element of
    /// this matrix (a fused activation backward); same layout as `C`.
    pub grad_mask: Option<(Activation, MatrixRef)>,
}

/// Register tiling of a matrix product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmTile {
    /// Outer-product form, vectorised along `j`: a tile of `rows` rows by
    /// `vectors` `f32x4` columns is kept in registers while `p` runs, the
    /// `p` loop unrolled `unroll` times. Needs `B` and `C` with unit column
    /// stride.
    Outer {
        /// Rows of the register tile.
        rows: usize,
        /// `f32x4` vectors across the tile.
        vectors: usize,
        /// Unroll factor of the `p` loop.
        unroll: usize,
    },
    /// Dot form, vectorised along `p`: `rows x cols` vector accumulators
    /// reduced horizontally at the end. Needs `A` and `B^T` with unit
    /// stride along `p` (that is, `A.col_stride == 1 && B.row_stride == 1`).
    Dot {
        /// Rows of the tile.
        rows: usize,
        /// Columns of the tile.
        cols: usize,
        /// How the vector steps along `p` are walked (decided by
        /// `passes::lowering`).
        steps: DotSteps,
    },
    /// A call to `isa`'s micro-kernel driver (`codegen::micro`): register
    /// tiles of `rows` rows by `vectors` of the ISA's vectors, the
    /// reduction in blocks of `codegen::micro::KC`; the epilogue past
    /// `accumulate` (bias, activation, stored pre-activation, mask) is a
    /// pass over C afterwards. Needs C and the epilogue's matrices with unit
    /// column stride and C overlapping neither A nor B; B's columns may
    /// wrap (with any column stride), and a C that only takes sums may be
    /// scattered (`c_rows`, `c_wrap`).
    ///
    /// `transposed` runs the product as `C^T = B^T A^T` (the driver's rows
    /// are C's columns): how a dot-form product with `k_split` (a
    /// convolution's weight gradient, reading its input in place through
    /// `b_rows` as a column table) reaches the driver, which then
    /// broadcasts the input and gathers the output gradient into panels.
    Micro {
        /// The ISA whose driver runs the product.
        isa: ProductIsa,
        /// Rows of the register tile.
        rows: usize,
        /// The ISA's vectors across the register tile.
        vectors: usize,
        /// Run as `C^T = B^T A^T`.
        transposed: bool,
    },
}

/// How a dot tile's reduction is split into strided segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KSplit {
    /// Number of segments.
    pub outer: usize,
    /// Element distance between segments in A.
    pub a_stride: i64,
    /// Element distance between segments in B.
    pub b_stride: i64,
}

/// Columns of `B` that run along rows of `row` elements placed `stride`
/// elements apart (a convolution's output positions read from its input,
/// whose rows are wider): column `j` is at `(j / row) * stride + step *
/// (j % row)`, `step` being the matrix's column stride (a strided
/// convolution's; 1 for outer tiles, which need unit columns).
/// `C` stays dense. The 128-bit backend walks blocks of `lcm(lanes, row)`
/// columns, each a fixed pattern of vectors, and assembles a vector that
/// straddles two rows from two loads; the micro-kernels gather such blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnWrap {
    /// Columns per row.
    pub row: usize,
    /// Element distance between rows in `B`.
    pub stride: i64,
}

impl ColumnWrap {
    /// Columns per block (`lcm(lanes, row)`).
    pub fn block(&self, lanes: usize) -> usize {
        let g = gcd(lanes as i64, self.row as i64) as usize;
        lanes / g * self.row
    }

    /// Whether `n` columns are whole blocks of at most 8 vectors of `lanes`
    /// (so each block is written out).
    pub fn fits(&self, n: usize, lanes: usize) -> bool {
        self.row >= lanes && n.is_multiple_of(self.block(lanes)) && self.block(lanes) / lanes <= 8
    }
}

/// Vector steps of `p` a wrapped split dot tile writes out, at most.
pub const MAX_WRAPPED_STEPS: usize = 64;

impl KSplit {
    /// Whether a dot tile over these segments (`k` elements in all) runs
    /// its vector steps across segment boundaries: segments of at least a
    /// vector that are not whole vectors, `A` dense across them, `k` whole
    /// vectors and at most [`MAX_WRAPPED_STEPS`] of them. The backend then
    /// writes every step out, taking a straddling step's lanes of `B` from
    /// two places.
    pub fn wraps(&self, k: usize, lanes: usize) -> bool {
        let inner = k / self.outer.max(1);
        inner >= lanes
            && !inner.is_multiple_of(lanes)
            && self.a_stride == inner as i64
            && k.is_multiple_of(lanes)
            && k / lanes <= MAX_WRAPPED_STEPS
    }
}

/// `C[i, j] = epilogue(sum_p A[i, p] * B[p, j])` for `i < m`, `j < n`, `p < k`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// The reduction length.
    pub k: usize,
    /// `A`, `m x k`.
    pub a: MatrixRef,
    /// `B`, `k x n`.
    pub b: MatrixRef,
    /// When set, row `p` of `B` starts at `b.offset + table[p]` (a
    /// [`BufferKind::ConstI32`] table) instead of `b.offset + p *
    /// b.row_stride`: an implicit im2col that reads a convolution's input in
    /// place (outer-product tiles only).
    pub b_rows: Option<BufId>,
    /// Dot tiles only: the reduction runs as `outer` segments of
    /// `k / outer` contiguous elements, segment `s` starting `s * a_stride`
    /// into A's rows and `s * b_stride` into B's columns (a convolution's
    /// output rows, read in place). With `b_rows`, column `j` of B starts at
    /// `b.offset + table[j]`.
    pub k_split: Option<KSplit>,
    /// Columns of `B` laid out in rows with gaps between them (outer form
    /// with a row table only): see [`ColumnWrap`].
    pub b_wrap: Option<ColumnWrap>,
    /// `C` scattered: row `i` of `C` starts at element `table[i]` from `C`'s
    /// offset (a [`BufferKind::ConstI32`] table), its columns placed by
    /// `c_wrap`. With `epilogue.accumulate`, a convolution's input gradient
    /// adds each product row straight into the image (col2im fused).
    pub c_rows: Option<BufId>,
    /// Column layout of a scattered `C` (see [`ColumnWrap`]).
    pub c_wrap: Option<ColumnWrap>,
    /// Outer tiles only: A holds every element once per vector lane in a
    /// row (a splat of the program's target width, laid out by `a`'s
    /// strides in elements), so the tile loads vectors instead of
    /// broadcasting scalars.
    pub a_splat: bool,
    /// `C`, `m x n`.
    pub c: MatrixRef,
    /// What is applied before storing.
    pub epilogue: Epilogue,
    /// The register tiling.
    pub tile: GemmTile,
}

/// A statement of a kernel.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// A counted loop.
    Loop(Loop),
    /// `buffer[index] = value` (or `+= value` when `accumulate`).
    Store {
        /// Destination buffer.
        buf: BufId,
        /// Element index.
        idx: Idx,
        /// Stored value.
        val: Val,
        /// Add to the previous contents instead of overwriting.
        accumulate: bool,
    },
    /// Declares accumulator `acc` and sets it to `init`.
    Let {
        /// The accumulator.
        acc: AccId,
        /// Its initial value.
        init: Val,
    },
    /// `acc = acc op value`. Inside a vectorised loop whose body does not
    /// declare `acc`, lanes keep partial results combined in lane order
    /// when the loop ends.
    Reduce {
        /// The accumulator.
        acc: AccId,
        /// The reduction.
        op: RedOp,
        /// The value folded in.
        val: Val,
    },
    /// `acc = value`. Inside a vectorised loop only for accumulators
    /// declared in that loop's body.
    Set {
        /// The accumulator.
        acc: AccId,
        /// Its new value.
        val: Val,
    },
    /// A conditional.
    If {
        /// The condition.
        cond: Cond,
        /// Run when it holds.
        then: Vec<Stmt>,
        /// Run otherwise.
        otherwise: Vec<Stmt>,
    },
    /// A register-tiled matrix product.
    Gemm(Box<Gemm>),
}

impl Stmt {
    /// A loop statement.
    pub fn lp(var: VarId, extent: usize, mode: LoopMode, body: Vec<Stmt>) -> Stmt {
        Stmt::Loop(Loop { var, extent, mode, body, lowering: LoopLowering::default() })
    }

    /// `buf[idx] = val`.
    pub fn store(buf: BufId, idx: Idx, val: Val) -> Stmt {
        Stmt::Store { buf, idx, val, accumulate: false }
    }

    /// `buf[idx] += val`.
    pub fn store_add(buf: BufId, idx: Idx, val: Val) -> Stmt {
        Stmt::Store { buf, idx, val, accumulate: true }
    }
}

/// One compiled unit of work: a loop nest over buffers, with the graph nodes
/// it computes.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// A readable name (`conv1+relu`).
    pub name: String,
    /// The graph nodes whose values this kernel computes (its fused group).
    pub nodes: Vec<NodeId>,
    /// The loop nest. When a parallel loop is present it is the only
    /// top-level statement.
    pub body: Vec<Stmt>,
    /// Buffers read.
    pub reads: Vec<BufId>,
    /// Buffers written.
    pub writes: Vec<BufId>,
    /// `(input, output)` pairs that may share storage: every element of the
    /// output is written only after the same element of the input was read
    /// for the last time, by the same iteration.
    pub in_place: Vec<(BufId, BufId)>,
    /// Floating-point operations per run (for scheduling and reports).
    pub flops: u64,
    /// How many threads run the parallel loop (set by scheduling; 1 when
    /// the kernel has none).
    pub threads: usize,
    /// Whether the backend may reorder the emitted instructions (decided
    /// by `passes::lowering`).
    pub emission: Emission,
}

impl Kernel {
    /// The kernel's matrix products, in program order.
    pub fn gemms(&self) -> Vec<&Gemm> {
        fn walk<'k>(body: &'k [Stmt], out: &mut Vec<&'k Gemm>) {
            for s in body {
                match s {
                    Stmt::Loop(l) => walk(&l.body, out),
                    Stmt::If { then, otherwise, .. } => {
                        walk(then, out);
                        walk(otherwise, out);
                    }
                    Stmt::Gemm(g) => out.push(g),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.body, &mut out);
        out
    }

    /// The wide ISA the kernel's products call, if any.
    pub fn product_isa(&self) -> Option<ProductIsa> {
        self.gemms().into_iter().find_map(|g| match g.tile {
            GemmTile::Micro { isa, .. } => Some(isa),
            _ => None,
        })
    }

    /// The trip count of the kernel's parallel loop, if it has one.
    pub fn parallel_extent(&self) -> Option<usize> {
        match self.body.as_slice() {
            [Stmt::Loop(l)] if l.mode == LoopMode::Parallel => Some(l.extent),
            _ => None,
        }
    }
}

/// A whole compiled graph: kernels run in order over buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Every buffer a kernel touches.
    pub buffers: Vec<Buffer>,
    /// Kernels in execution order.
    pub kernels: Vec<Kernel>,
    /// The buffer holding each materialised graph node's value.
    pub values: Vec<(NodeId, BufId)>,
    /// `(leaf buffer, new value buffer)` copied after a step unless they are
    /// the same buffer (an in-place update).
    pub updates: Vec<(BufId, BufId)>,
    /// Where each buffer starts in the arena (element offsets; filled by
    /// memory planning).
    pub offsets: Vec<usize>,
    /// Arena length in elements (filled by memory planning).
    pub arena_len: usize,
    /// Threads the program was scheduled for.
    pub threads: usize,
    /// The machine it is scheduled for (vector lanes, registers, caches).
    pub target: Target,
}

impl Program {
    /// The buffer holding `node`'s value, if it is materialised.
    pub fn value_buffer(&self, node: NodeId) -> Option<BufId> {
        self.values.iter().find(|(n, _)| *n == node).map(|&(_, b)| b)
    }

    /// Adds a buffer and returns its id.
    pub fn add_buffer(&mut self, name: impl Into<String>, len: usize, kind: BufferKind) -> BufId {
        self.buffers.push(Buffer { name: name.into(), len, kind, per_thread: false });
        self.buffers.len() - 1
    }
}

pub use print::{describe_kernels, describe_memory};
pub use text::{ParseError, parse_program, write_program};

#[cfg(test)]
mod tests {
    use super::Idx;

    #[test]
    fn lane_offsets_follow_divisibility() {
        let (v, w) = (Idx::var(0), Idx::var(1));
        assert_eq!(v.lane_offsets(0, 4), Some(vec![0, 1, 2, 3]));
        assert_eq!(w.lane_offsets(0, 4), Some(vec![0, 0, 0, 0]));
        assert_eq!((v.clone() * 2i64 + 1i64).lane_offsets(0, 4), Some(vec![0, 2, 4, 6]));
        assert_eq!((v.clone() / 2).lane_offsets(0, 4), Some(vec![0, 0, 1, 1]));
        assert_eq!(((v.clone() + 1i64) / 2).lane_offsets(0, 4), Some(vec![0, 1, 1, 2]));
        assert_eq!((v.clone() * 3i64 / 2).lane_offsets(0, 4), Some(vec![0, 1, 3, 4]));
        assert_eq!(((w.clone() * 28i64 + v.clone()) / 2).lane_offsets(0, 4), Some(vec![0, 0, 1, 1]));
        // Unknown residues: w + v may be odd, v is not a multiple of 3.
        assert_eq!(((w.clone() + v.clone()) / 2).lane_offsets(0, 4), None);
        assert_eq!((v.clone() / 3).lane_offsets(0, 4), None);
        // Lanes wrap around the remainder.
        assert_eq!((v.clone() % 2).lane_offsets(0, 4), None);
        assert_eq!((v.clone() % 4).lane_offsets(0, 4), Some(vec![0, 1, 2, 3]));
        assert_eq!(v.clamp(0, 9).lane_offsets(0, 4), None);
    }
}
