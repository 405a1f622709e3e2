//! `kiln kir`: reads a kernel-IR program in its text form, checks it and
//! prints it back. A program printed by `kiln inspect --emit kir` comes back
//! byte for byte, so the text is a complete record of what the compiler built.

use crate::model::CliError;
use kiln::compiler::kernel::{AfterPass, parse_program, verify, write_program};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct KirArgs {
    /// The kernel-IR text (`-` or `/dev/stdin` reads standard input).
    file: PathBuf,
    /// The last pass the program went through, which sets what the verifier
    /// checks (`inspect --emit kir` prints programs after lowering).
    #[arg(long, value_enum, default_value = "lowering")]
    after: PassArg,
}

/// The passes a program can be verified after.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PassArg {
    /// Kernels built, nothing scheduled.
    Build,
    /// Threads, vector loops and tiles chosen.
    Schedule,
    /// Arena offsets assigned.
    PlanMemory,
    /// Unrolling, vector tails, reduction chains and emission order chosen.
    Lowering,
}

pub fn run(args: KirArgs) -> Result<(), CliError> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|source| CliError::Read { path: args.file.clone(), source })?
    } else {
        std::fs::read_to_string(&args.file).map_err(|source| CliError::Read { path: args.file.clone(), source })?
    };
    let program =
        parse_program(&text).map_err(|e| CliError::Kir { path: args.file.clone(), message: e.to_string() })?;
    let pass = match args.after {
        PassArg::Build => AfterPass::Build,
        PassArg::Schedule => AfterPass::Schedule,
        PassArg::PlanMemory => AfterPass::PlanMemory,
        PassArg::Lowering => AfterPass::Lowering,
    };
    verify(&program, pass).map_err(|e| CliError::Kir { path: args.file.clone(), message: format!(" {e}") })?;
    out!("{}", write_program(&program));
    Ok(())
}
