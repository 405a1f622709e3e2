//! Filetests in Cranelift's style: each `compiler/filetests/**/*.kir` file
//! names a stage on its `test` line(s), holds a kernel IR program in the
//! text form, and ends with `; check:` / `; nextln:` / `; not:` lines
//! matched in order against the stage's output (see `filetest/check.rs` for
//! the matching rules and `filetest/stage.rs` for the stages).
//!
//! ```text
//! test schedule threads=2
//!
//! program threads 1 arena 0
//! ...
//! ; check: for v1000000 in 0..2 parallel {
//! ; nextln: gemm m 64 n 32 k 256 {
//! ```
//!
//! Run with `FILETEST_OUTPUT_DIR=DIR` to get each stage's output in DIR.
//! Every failure is reported, with the file, the line of the failing
//! expectation and the output around the place it was looked for.
//! `every_expectation_can_fail` edits each expectation in turn and checks
//! that the file then fails, so no expectation is vacuous.

mod filetest {
    pub mod check;
    pub mod dump;
    pub mod stage;
}

use filetest::check::{Directive, Expectation, parse_expectations, run_expectations};
use filetest::stage::{run_stage, split_file};
use kiln_compiler::kernel::parse_program;
use std::path::{Path, PathBuf};

fn filetests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("filetests")
}

/// Every `.kir` file under `dir`, sorted.
fn kir_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot read {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "kir") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs one filetest with the given expectations; returns one report per
/// failure (empty when the file passes).
fn run_with(name: &str, text: &str, expectations: &[Expectation]) -> Vec<String> {
    let parts = match split_file(text) {
        Ok(p) => p,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    if expectations.is_empty() {
        return vec![format!("{name}: no `; check:` lines: a filetest must expect something of its output")];
    }
    let program = match parse_program(&parts.program_text) {
        Ok(p) => p,
        Err(e) => {
            let line = text.lines().nth(e.line.saturating_sub(1)).unwrap_or("");
            return vec![format!(
                "{name}:{}:{}: the program does not parse: {}\n    | {line}",
                e.line,
                e.column,
                e.message()
            )];
        }
    };
    let mut reports = Vec::new();
    for command in &parts.commands {
        let output = match run_stage(command, program.clone(), &parts) {
            Ok(o) => o,
            Err(e) => {
                reports.push(format!("{name}: {e}"));
                continue;
            }
        };
        save_output(name, &command.stage, &output);
        match run_expectations(expectations, &output) {
            Ok(failures) => reports.extend(failures.into_iter().map(|f| {
                format!(
                    "{name}:{}: `{}` failed on the output of `{}`: {}",
                    f.expectation.line,
                    f.expectation.describe(),
                    command.describe(),
                    f.message
                )
            })),
            Err(e) => reports.push(format!("{name}: {e}")),
        }
    }
    reports
}

/// With `FILETEST_OUTPUT_DIR` set, writes each stage's output there as
/// `FILE.STAGE.out`: what a new filetest's expectations are written against.
fn save_output(name: &str, stage: &str, output: &str) {
    let Ok(dir) = std::env::var("FILETEST_OUTPUT_DIR") else { return };
    let stem = Path::new(name).file_stem().map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned());
    let path = Path::new(&dir).join(format!("{stem}.{stage}.out"));
    std::fs::write(&path, output).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn run_file(name: &str, text: &str) -> Vec<String> {
    match parse_expectations(text) {
        Ok(expectations) => run_with(name, text, &expectations),
        Err(e) => vec![format!("{name}: {e}")],
    }
}

fn read(path: &Path) -> (String, String) {
    let name = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).display().to_string();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
    (name, text)
}

#[test]
fn filetests_pass() {
    let files = kir_files(&filetests_dir());
    let mut reports = Vec::new();
    for path in &files {
        let (name, text) = read(path);
        reports.extend(run_file(&name, &text));
    }
    assert!(files.len() >= 8, "expected at least 8 filetests in {}, found {}", filetests_dir().display(), files.len());
    assert!(reports.is_empty(), "{} filetest failure(s):\n\n{}", reports.len(), reports.join("\n"));
}

/// `text` with the first number of `line`'s pattern changed (a number not
/// part of a name such as `v0` or `$h1`), or the pattern extended when it
/// has none.
fn edit_pattern(text: &str, line: usize) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let original = &lines[line - 1];
    let colon = original.find(':').expect("a directive line has a colon") + 1;
    let (head, pattern) = original.split_at(colon);
    let bytes = pattern.as_bytes();
    let start = (0..bytes.len()).find(|&i| {
        bytes[i].is_ascii_digit() && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
    });
    let edited = match start {
        Some(s) => {
            let end = (s..bytes.len()).find(|&i| !bytes[i].is_ascii_digit()).unwrap_or(bytes.len());
            let n: u64 = pattern[s..end].parse().expect("digits");
            format!("{}{}{}", &pattern[..s], n + 1, &pattern[end..])
        }
        None => format!("{pattern} (edited)"),
    };
    lines[line - 1] = format!("{head}{edited}");
    lines.join("\n") + "\n"
}

/// Each expectation is live: editing a `check:` or `nextln:` pattern (a
/// number changed) makes its file fail, and a `not:` made to match any
/// line fails too (its region of the output is not empty).
#[test]
fn every_expectation_can_fail() {
    let mut survivors = Vec::new();
    for path in kir_files(&filetests_dir()) {
        let (name, text) = read(&path);
        let expectations = parse_expectations(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (index, e) in expectations.iter().enumerate() {
            let reports = match e.directive {
                Directive::Check | Directive::NextLine => run_file(&name, &edit_pattern(&text, e.line)),
                Directive::Not => {
                    let mut edited = expectations.clone();
                    // No pieces: matches every non-empty line.
                    edited[index].pieces = Vec::new();
                    run_with(&name, &text, &edited)
                }
            };
            if reports.is_empty() {
                survivors.push(format!("{name}:{}: `{}`", e.line, e.describe()));
            }
        }
    }
    assert!(survivors.is_empty(), "these expectations still pass when edited:\n{}", survivors.join("\n"));
}

/// The matcher itself, on small outputs.
mod matching {
    use super::filetest::check::{parse_expectations, run_expectations};

    fn failures(checks: &str, output: &str) -> Vec<usize> {
        let expectations = parse_expectations(checks).expect("expectations parse");
        run_expectations(&expectations, output).expect("runs").iter().map(|f| f.expectation.line).collect()
    }

    const OUTPUT: &str = "kernel 0 \"a\"\n  tile outer\n  c %3[0] @ 16\nkernel 1 \"b\"\n  tile dot\n  c %4[0] @ 16\n";

    #[test]
    fn checks_match_in_order() {
        assert!(failures("; check: kernel 0\n; check: tile dot\n", OUTPUT).is_empty());
        // `tile outer` comes before `kernel 1`, so it is not found after it.
        assert_eq!(failures("; check: kernel 1\n; check: tile outer\n", OUTPUT), [2]);
        // A failed check ends the run: line 3 is not reported.
        assert_eq!(failures("; check: missing\n; check: kernel 1\n; check: also missing\n", OUTPUT), [1]);
    }

    #[test]
    fn nextln_wants_the_very_next_line() {
        assert!(failures("; check: kernel 1\n; nextln: tile dot\n", OUTPUT).is_empty());
        assert_eq!(failures("; check: kernel 0\n; nextln: c %3\n", OUTPUT), [2]);
        assert!(parse_expectations("; nextln: kernel 0\n").is_err(), "nextln: first has nothing to follow");
    }

    #[test]
    fn not_looks_between_its_neighbours() {
        assert!(failures("; check: kernel 0\n; not: tile dot\n; check: kernel 1\n", OUTPUT).is_empty());
        assert_eq!(failures("; check: kernel 1\n; not: tile dot\n", OUTPUT), [2]);
        // A failed `not:` does not stop the run.
        assert_eq!(failures("; not: tile\n; check: kernel 1\n; check: missing\n", OUTPUT), [1, 3]);
    }

    #[test]
    fn variables_bind_words_and_match_them_again() {
        assert!(failures("; check: %3[0] @ $(off)\n; check: %4[0] @ $off\n", OUTPUT).is_empty());
        assert_eq!(failures("; check: kernel $(k) \"a\"\n; check: kernel $k \"b\"\n", OUTPUT), [2]);
        let use_before_bind = parse_expectations("; check: @ $never\n").expect("parses");
        assert!(run_expectations(&use_before_bind, OUTPUT).is_err());
    }

    #[test]
    fn misspelt_directives_are_errors() {
        let e = parse_expectations("; chekc: kernel 0\n").expect_err("unknown directive");
        assert!(e.contains("line 1") && e.contains("chekc"), "{e}");
        for typo in ["check-next", "nextline", "chek", "nott"] {
            assert!(parse_expectations(&format!("; {typo}: x\n")).is_err(), "`{typo}:` is taken for prose");
        }
        assert!(parse_expectations("; check:\n").is_err(), "empty pattern");
        // Ordinary comments are not directives.
        for prose in ["; the conv's product, Outer: 8 rows\n", "; it: every tile\n", "; note: slow path\n"] {
            assert!(parse_expectations(prose).expect("a comment").is_empty(), "{prose}");
        }
    }
}

/// Errors of the file itself (the program as written, the `test` line)
/// name the line and what was expected.
mod file_errors {
    use super::run_file;

    const PROGRAM: &str = "program threads 1 arena 0\n";

    fn report(header: &str, program: &str) -> String {
        let reports = run_file("t.kir", &format!("{header}\n\n{program}; check: program\n"));
        assert_eq!(reports.len(), 1, "{reports:?}");
        reports[0].clone()
    }

    #[test]
    fn roundtrip_names_the_line_that_prints_differently() {
        assert!(run_file("t.kir", &format!("test roundtrip\n\n{PROGRAM}; check: program\n")).is_empty());
        let r = report("test roundtrip", "program threads 1  arena 0\n");
        assert!(r.contains("line 3") && r.contains("printed: program threads 1 arena 0"), "{r}");
    }

    #[test]
    fn test_lines_are_checked() {
        let r = report("test schedule", PROGRAM);
        assert!(r.contains("line 1") && r.contains("needs threads=N"), "{r}");
        let r = report("test schedule threads=2 thread=3", PROGRAM);
        assert!(r.contains("unknown option(s) thread"), "{r}");
        let r = report("test plan_memory keep=%0", PROGRAM);
        assert!(r.contains("buffer %0 is not declared"), "{r}");
        let r = report("test frobnicate", PROGRAM);
        assert!(r.contains("unknown stage `frobnicate`"), "{r}");
        let r = report("; no test line", PROGRAM);
        assert!(r.contains("no `test` line"), "{r}");
    }

    #[test]
    fn parse_errors_point_into_the_file() {
        let r = report("test roundtrip", "program threads 1 arena 0\n%1 = leaf n0 \"x\" len 4\n");
        assert!(r.starts_with("t.kir:4:1: ") && r.contains("expected buffer 0, found buffer 1"), "{r}");
    }
}
