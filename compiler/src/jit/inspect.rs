//! What `kiln inspect --emit kernels|memory|kir|clif|asm` prints of an
//! [`Executable`].

use super::{Emit, Executable};
use crate::codegen::micro;
use crate::kernel::{GemmTile, describe_kernels, describe_memory, write_program};
use crate::target::ProductIsa;
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
                out.push_str(&self.micro_kernel_listing());
                out
            }
        }
    }
}

impl Executable {
    /// The wide micro-kernels' reduction loops this program's products
    /// call, once per ISA and register tile, with the kernels calling each:
    /// where the 256- and 512-bit multiply-adds are (the Cranelift kernels
    /// above only call them).
    fn micro_kernel_listing(&self) -> String {
        // Each (ISA, rows, vectors) tile with the kernels calling it.
        type Tile = (ProductIsa, usize, usize);
        let mut tiles: Vec<(Tile, Vec<&str>)> = Vec::new();
        for kernel in &self.program.kernels {
            for gemm in kernel.gemms() {
                if let GemmTile::Micro { isa, rows, vectors, .. } = gemm.tile {
                    let callers = match tiles.iter_mut().find(|(tile, _)| *tile == (isa, rows, vectors)) {
                        Some((_, callers)) => callers,
                        None => {
                            tiles.push(((isa, rows, vectors), Vec::new()));
                            &mut tiles.last_mut().expect("just pushed").1
                        }
                    };
                    if !callers.contains(&kernel.name.as_str()) {
                        callers.push(&kernel.name);
                    }
                }
            }
        }
        let mut out = String::new();
        for ((isa, rows, vectors), callers) in tiles {
            let callers = callers.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
            let Some(entries) = micro::reduction_entries(isa, rows, vectors) else {
                let _ = writeln!(out, "; micro-kernel `{isa}` {rows}x{vectors} tile: no such tile\n");
                continue;
            };
            for (form, entry) in entries {
                let text = disassemble_function(entry);
                let _ = writeln!(
                    out,
                    "; micro-kernel `{isa}` reduction of a {rows}x{vectors} tile, {form} (called by {callers})\n{text}"
                );
            }
        }
        out
    }
}

/// The code of the function at `entry` as Intel-syntax text, then that
/// of the functions it calls directly, and they in turn (an unoptimised
/// build calls the ISA's `fma` and `load`, and they the intrinsics,
/// rather than inlining them), each from offset 0.
#[cfg(all(feature = "disasm", target_os = "linux", target_arch = "x86_64"))]
fn disassemble_function(entry: *const u8) -> String {
    let Some((body, callees)) = decode_function(entry) else {
        return "  ; the code is not in a readable mapping\n".to_string();
    };
    let list = |instructions: &[iced_x86::Instruction], out: &mut String| {
        let bytes: usize = instructions.iter().map(|i| i.len()).sum();
        let _ = writeln!(out, "  ; {bytes} bytes");
        out.push_str(&intel_text(instructions));
    };
    let mut out = String::new();
    list(&body, &mut out);
    // Breadth first, each function once, at most `MAX_CALLEES` of them.
    const MAX_CALLEES: usize = 48;
    let mut queue = std::collections::VecDeque::from(callees);
    let mut seen: Vec<usize> = queue.iter().copied().collect();
    while let Some(callee) = queue.pop_front() {
        let _ = writeln!(out, "  ; called, at {:+#x}:", callee.wrapping_sub(entry as usize) as isize);
        let Some((instructions, calls)) = decode_function(callee as *const u8) else {
            out.push_str("  ; not in a readable mapping\n");
            continue;
        };
        list(&instructions, &mut out);
        for call in calls {
            if !seen.contains(&call) && seen.len() < MAX_CALLEES {
                seen.push(call);
                queue.push_back(call);
            }
        }
    }
    out
}

/// Every instruction reachable from `entry` without leaving the function
/// through a return, in address order (ip 0 at `entry`), and the
/// addresses the function calls directly: the extent of a compiled Rust
/// function is not recorded anywhere a running program can read, short
/// of its symbol table, which a release build may strip.
#[cfg(all(feature = "disasm", target_os = "linux", target_arch = "x86_64"))]
fn decode_function(entry: *const u8) -> Option<(Vec<iced_x86::Instruction>, Vec<usize>)> {
    use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};
    let code = code_at(entry)?;
    let mut found: std::collections::BTreeMap<u64, Instruction> = Default::default();
    let mut callees = Vec::new();
    let mut pending = vec![0u64];
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    while let Some(start) = pending.pop() {
        let mut at = start;
        while !found.contains_key(&at) && (at as usize) < code.len() {
            decoder.set_ip(at);
            if decoder.set_position(at as usize).is_err() {
                break;
            }
            let instruction = decoder.decode();
            if instruction.is_invalid() {
                break;
            }
            found.insert(at, instruction);
            at = instruction.next_ip();
            let direct = instruction.op_count() == 1 && instruction.op0_kind() == OpKind::NearBranch64;
            let target = instruction.near_branch_target();
            match instruction.mnemonic() {
                Mnemonic::Call if direct => {
                    let callee = (entry as usize).wrapping_add(target as usize);
                    if !callees.contains(&callee) {
                        callees.push(callee);
                    }
                }
                Mnemonic::Call => {}
                Mnemonic::Jmp if direct => {
                    pending.push(target);
                    break;
                }
                Mnemonic::Jmp | Mnemonic::Ret | Mnemonic::Ud2 | Mnemonic::Int3 => break,
                _ if direct => pending.push(target),
                _ => {}
            }
        }
    }
    Some((found.into_values().collect(), callees))
}

#[cfg(not(all(feature = "disasm", target_os = "linux", target_arch = "x86_64")))]
fn disassemble_function(_entry: *const u8) -> String {
    "  ; built without the `disasm` feature, or not on x86-64 Linux: not shown\n".to_string()
}

/// The bytes from `entry` to the end of the readable mapping holding it
/// (at most 64 KiB), from `/proc/self/maps`.
#[cfg(all(feature = "disasm", target_os = "linux", target_arch = "x86_64"))]
fn code_at(entry: *const u8) -> Option<&'static [u8]> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let at = entry as usize;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let readable = fields.next()?.starts_with('r');
        let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
        if !(readable && (start..end).contains(&at)) {
            return None;
        }
        // SAFETY: the bytes lie inside one readable mapping of this
        // process: the executable's own compiled code, which is never
        // unmapped or written while it runs.
        Some(unsafe { std::slice::from_raw_parts(entry, (end - at).min(1 << 16)) })
    })
}

/// x86-64 machine code as Intel-syntax text (iced-x86: a pure-Rust decoder,
/// no C toolchain needed, unlike capstone).
#[cfg(feature = "disasm")]
fn disassemble(bytes: &[u8]) -> String {
    use iced_x86::{Decoder, DecoderOptions};
    let instructions: Vec<_> = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).into_iter().collect();
    intel_text(&instructions)
}

/// Instructions as Intel-syntax lines, each after its offset.
#[cfg(feature = "disasm")]
fn intel_text(instructions: &[iced_x86::Instruction]) -> String {
    use iced_x86::{Formatter, IntelFormatter};
    let mut formatter = IntelFormatter::new();
    let mut out = String::new();
    let mut text = String::new();
    for instruction in instructions {
        text.clear();
        formatter.format(instruction, &mut text);
        let _ = writeln!(out, "  {:6x}  {text}", instruction.ip());
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
