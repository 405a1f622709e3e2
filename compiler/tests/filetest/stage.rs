//! A filetest's `test` lines and the stages they name.
//!
//! ```text
//! test schedule threads=2
//! test plan_memory keep=%3,%5
//! test roundtrip
//! test lowering
//! test verify after=plan_memory
//! ```
//!
//! Each `test` line runs its stage on the program the file holds and
//! produces the text the file's expectations are matched against: the
//! program printed with `write_program` after the pass. A new stage is one
//! arm of [`run_stage`] (and its name in [`STAGES`]).

use kiln_compiler::kernel::{AfterPass, BufId, Program, verify, write_program};
use kiln_compiler::passes::{choose_lowering, plan_memory, schedule};
use std::collections::HashSet;

/// Stage names [`run_stage`] knows.
pub const STAGES: &[&str] = &["roundtrip", "schedule", "plan_memory", "lowering", "verify"];

/// One `test STAGE key=value ...` line.
#[derive(Clone, Debug)]
pub struct TestCommand {
    /// 1-based line in the filetest.
    pub line: usize,
    /// The stage to run.
    pub stage: String,
    /// `key=value` options, in order.
    pub options: Vec<(String, String)>,
}

impl TestCommand {
    /// The line as written (for reports).
    pub fn describe(&self) -> String {
        let mut text = format!("test {}", self.stage);
        for (key, value) in &self.options {
            text.push_str(&format!(" {key}={value}"));
        }
        text
    }
}

/// A filetest split into its parts.
#[derive(Debug)]
pub struct Parts {
    /// The `test` lines.
    pub commands: Vec<TestCommand>,
    /// The file with its `test` lines blanked, so the kernel IR parser
    /// (which skips `;` comments) reports positions in the file's lines.
    pub program_text: String,
    /// The program as written: every line after the `test` lines that is
    /// not a comment, with its 1-based file line, leading and trailing
    /// blank lines dropped (what `test roundtrip` compares with).
    pub program_lines: Vec<(usize, String)>,
}

/// Splits off the `test` lines, which come before the `program` line.
pub fn split_file(file: &str) -> Result<Parts, String> {
    let mut commands = Vec::new();
    let mut program_text = String::with_capacity(file.len());
    let mut program_lines = Vec::new();
    let mut in_header = true;
    for (index, line) in file.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        if in_header && trimmed.starts_with("program") {
            in_header = false;
        }
        if in_header && (trimmed == "test" || trimmed.starts_with("test ")) {
            commands.push(parse_command(trimmed, line_no)?);
            program_text.push('\n');
            continue;
        }
        program_text.push_str(line);
        program_text.push('\n');
        if !in_header && !trimmed.starts_with(';') {
            program_lines.push((line_no, line.to_string()));
        }
    }
    if commands.is_empty() {
        return Err(format!("no `test` line before the program (expected one of: test {})", STAGES.join(", test ")));
    }
    while program_lines.last().is_some_and(|(_, l)| l.trim().is_empty()) {
        program_lines.pop();
    }
    Ok(Parts { commands, program_text, program_lines })
}

fn parse_command(text: &str, line: usize) -> Result<TestCommand, String> {
    let mut words = text.split_whitespace().skip(1);
    let stage = words.next().ok_or_else(|| format!("line {line}: `test` needs a stage name"))?.to_string();
    let mut options = Vec::new();
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("line {line}: option `{word}` of `test {stage}` is not of the form key=value"))?;
        options.push((key.to_string(), value.to_string()));
    }
    Ok(TestCommand { line, stage, options })
}

/// The options of one command, each to be taken once by its stage.
struct Options<'a> {
    command: &'a TestCommand,
    taken: Vec<bool>,
}

impl<'a> Options<'a> {
    fn new(command: &'a TestCommand) -> Options<'a> {
        Options { command, taken: vec![false; command.options.len()] }
    }

    fn take(&mut self, key: &str) -> Option<&'a str> {
        let at = self.command.options.iter().position(|(k, _)| k == key)?;
        self.taken[at] = true;
        Some(self.command.options[at].1.as_str())
    }

    fn error(&self, message: String) -> String {
        format!("line {}: `{}`: {message}", self.command.line, self.command.describe())
    }

    /// A positive integer option.
    fn count(&mut self, key: &str) -> Result<Option<usize>, String> {
        let Some(text) = self.take(key) else { return Ok(None) };
        match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(self.error(format!("{key}={text}: expected a positive integer"))),
        }
    }

    /// A list of buffers `%3,%5`, each declared by `program`.
    fn buffers(&mut self, key: &str, program: &Program) -> Result<Option<HashSet<BufId>>, String> {
        let Some(text) = self.take(key) else { return Ok(None) };
        let mut set = HashSet::new();
        for item in text.split(',') {
            let id = item.strip_prefix('%').and_then(|n| n.parse::<BufId>().ok());
            match id {
                Some(id) if id < program.buffers.len() => {
                    set.insert(id);
                }
                Some(id) => {
                    return Err(self.error(format!(
                        "{key}: buffer %{id} is not declared (the program has {})",
                        program.buffers.len()
                    )));
                }
                None => return Err(self.error(format!("{key}: expected buffers like %3,%5, found `{item}`"))),
            }
        }
        Ok(Some(set))
    }

    /// Fails on an option no stage took (a typo must not be ignored).
    fn finish(self) -> Result<(), String> {
        let unused: Vec<&str> = self
            .command
            .options
            .iter()
            .zip(&self.taken)
            .filter(|(_, taken)| !**taken)
            .map(|((k, _), _)| k.as_str())
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(self.error(format!("unknown option(s) {} for stage `{}`", unused.join(", "), self.command.stage)))
        }
    }
}

/// Runs `command`'s stage on `program`; returns the text its expectations
/// are matched against, or an error naming the line and what is wrong.
pub fn run_stage(command: &TestCommand, program: Program, parts: &Parts) -> Result<String, String> {
    let mut options = Options::new(command);
    let output = match command.stage.as_str() {
        // Parse then print must give back the program as written.
        "roundtrip" => {
            let printed = write_program(&program);
            compare_round_trip(&printed, &parts.program_lines).map_err(|e| options.error(e))?;
            printed
        }
        "schedule" => {
            let threads = options.count("threads")?.ok_or_else(|| options.error("needs threads=N".into()))?;
            write_program(&schedule(program, threads))
        }
        "plan_memory" => {
            let keep = options.buffers("keep", &program)?.unwrap_or_default();
            write_program(&plan_memory(program, &keep))
        }
        "lowering" => write_program(&choose_lowering(program)),
        // `verify after=build|schedule|plan_memory|lowering`: `ok`, or the
        // verifier's report (matched by `; check:` lines naming problems).
        "verify" => {
            let after = match options.take("after").unwrap_or("lowering") {
                "build" => AfterPass::Build,
                "schedule" => AfterPass::Schedule,
                "plan_memory" => AfterPass::PlanMemory,
                "lowering" => AfterPass::Lowering,
                other => {
                    return Err(
                        options.error(format!("after={other}: expected build, schedule, plan_memory or lowering"))
                    );
                }
            };
            match verify(&program, after) {
                Ok(()) => "ok\n".to_string(),
                Err(errors) => format!("{errors}\n"),
            }
        }
        other => {
            return Err(options.error(format!("unknown stage `{other}` (known: {})", STAGES.join(", "))));
        }
    };
    options.finish()?;
    Ok(output)
}

/// The first line where `printed` differs from the program as written.
fn compare_round_trip(printed: &str, written: &[(usize, String)]) -> Result<(), String> {
    let printed: Vec<&str> = printed.lines().collect();
    for (i, printed_line) in printed.iter().enumerate() {
        match written.get(i) {
            Some((line, text)) if text != printed_line => {
                return Err(format!(
                    "printing the parsed program changes line {line}:\n    written: {text}\n    printed: {printed_line}"
                ));
            }
            Some(_) => {}
            None => {
                return Err(format!(
                    "the printed program goes on after the file's program ends:\n    printed: {printed_line}"
                ));
            }
        }
    }
    if let Some((line, text)) = written.get(printed.len()) {
        return Err(format!("the printed program ends before line {line}:\n    written: {text}"));
    }
    Ok(())
}
