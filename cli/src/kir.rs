//! `kiln kir`: reads a kernel-IR program in its text form, checks it and
//! prints it back. A program printed by `kiln inspect --emit kir` comes back
//! byte for byte, so the text is a complete record of what the compiler built.

use crate::model::CliError;
use kiln::compiler::kernel::{parse_program, write_program};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct KirArgs {
    /// The kernel-IR text (`-` or `/dev/stdin` reads standard input).
    file: PathBuf,
}

pub fn run(args: KirArgs) -> Result<(), CliError> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|source| CliError::Read { path: args.file.clone(), source })?
    } else {
        std::fs::read_to_string(&args.file).map_err(|source| CliError::Read { path: args.file.clone(), source })?
    };
    let program = parse_program(&text).map_err(|e| CliError::Kir { path: args.file.clone(), message: e.to_string() })?;
    out!("{}", write_program(&program));
    Ok(())
}
