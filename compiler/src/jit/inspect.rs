//! What `kiln inspect --emit kernels|memory|kir|clif|asm` prints of an
//! [`Executable`].

use super::{Emit, Executable};
use crate::kernel::{describe_kernels, describe_memory, write_program};
use std::fmt::Write;

impl Executable {
    /// Text for `kiln inspect --emit ...`.
    pub fn inspect(&self, what: Emit) -> String {
        match what {
            Emit::Kernels => describe_kernels(&self.program, &self.graph),
            Emit::Memory => describe_memory(&self.program),
            Emit::Kir => write_program(&self.program),
            Emit::Clif => {
                let mut out = String::new();
                if self.code.ir_text.is_empty() {
                    out.push_str("; compile with JitOptions::inspect to keep Cranelift IR\n");
                }
                for (k, text) in self.program.kernels.iter().zip(&self.code.ir_text) {
                    let _ = writeln!(out, "; kernel `{}`\n{text}", k.name);
                }
                out
            }
            Emit::Asm => {
                let mut out = String::new();
                if self.code.machine_code.is_empty() {
                    out.push_str("; compile with JitOptions::inspect to keep machine code\n");
                }
                for (k, bytes) in self.program.kernels.iter().zip(&self.code.machine_code) {
                    let _ = writeln!(out, "; kernel `{}`: {} bytes", k.name, bytes.len());
                    out.push_str(&disassemble(bytes));
                    out.push('\n');
                }
                out
            }
        }
    }
}

/// x86-64 machine code as Intel-syntax text (iced-x86: a pure-Rust decoder,
/// no C toolchain needed, unlike capstone).
#[cfg(feature = "disasm")]
fn disassemble(bytes: &[u8]) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut decoder = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut out = String::new();
    let mut text = String::new();
    for instr in &mut decoder {
        text.clear();
        formatter.format(&instr, &mut text);
        let _ = writeln!(out, "  {:6x}  {text}", instr.ip());
    }
    out
}

/// Without the disassembler (the `disasm` feature, which the CLI enables),
/// the machine code as hex bytes.
#[cfg(not(feature = "disasm"))]
fn disassemble(bytes: &[u8]) -> String {
    let mut out = String::from("  ; built without the `disasm` feature: raw bytes\n");
    for (i, row) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(out, "  {:6x}  {}", i * 16, hex.join(" "));
    }
    out
}
