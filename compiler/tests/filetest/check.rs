//! FileCheck-style expectations: `; check:`, `; nextln:` and `; not:`
//! comment lines, matched in order against a stage's output, line by line.
//!
//! - `check: P` — some line at or after the current position contains `P`;
//!   the position moves past that line.
//! - `nextln: P` — the line right after the previous match contains `P`.
//! - `not: P` — no line between the previous match and the next `check:`
//!   match (or the end of the output) contains `P`.
//!
//! A pattern is literal text, trimmed at both ends, with two exceptions:
//! `$(name)` matches a word (a run of characters other than whitespace and
//! `,;()[]{}`) and binds it to `name`; `$name` matches the text bound
//! earlier. So `@ $(conv_out)` on one line and `@ $conv_out` on a later one
//! say that two buffers share an offset, without writing the number down.
//! `$$` is a literal `$`.

use std::collections::HashMap;

/// The kind of an expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directive {
    /// `check:`
    Check,
    /// `nextln:`
    NextLine,
    /// `not:`
    Not,
}

impl Directive {
    fn keyword(self) -> &'static str {
        match self {
            Directive::Check => "check",
            Directive::NextLine => "nextln",
            Directive::Not => "not",
        }
    }
}

/// A piece of a pattern.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// Text matched as written.
    Literal(String),
    /// `$(name)`: a word, bound to `name`.
    Bind(String),
    /// `$name`: the word bound earlier.
    Use(String),
}

/// One expectation line of a filetest.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    /// What kind of match.
    pub directive: Directive,
    /// The pattern as written (for reports).
    pub text: String,
    /// The pattern.
    pub pieces: Vec<Piece>,
    /// 1-based line in the filetest.
    pub line: usize,
}

/// Collects the expectations of a filetest. A comment `; word: ...` whose
/// word is close to a directive's is an error, so that a misspelt
/// `; chekc:` cannot pass silently.
pub fn parse_expectations(file: &str) -> Result<Vec<Expectation>, String> {
    let mut out = Vec::new();
    for (index, line) in file.lines().enumerate() {
        let line_no = index + 1;
        let Some(comment) = line.trim_start().strip_prefix(';') else { continue };
        let Some((word, rest)) = comment.trim_start().split_once(':') else { continue };
        let directive = match word {
            "check" => Directive::Check,
            "nextln" => Directive::NextLine,
            "not" => Directive::Not,
            other if looks_like_directive(other) => {
                return Err(format!("line {line_no}: unknown directive `{other}:` (expected check:, nextln: or not:)"));
            }
            _ => continue,
        };
        let text = rest.trim().to_string();
        if text.is_empty() {
            return Err(format!("line {line_no}: `{word}:` needs a pattern"));
        }
        let pieces = parse_pattern(&text).map_err(|e| format!("line {line_no}: {e}"))?;
        out.push(Expectation { directive, text, pieces, line: line_no });
    }
    for pair in out.windows(2) {
        if pair[0].directive == Directive::Not && pair[1].directive == Directive::NextLine {
            return Err(format!("line {}: `not:` right before `nextln:` has no lines to look at", pair[0].line));
        }
    }
    if let Some(first) = out.first()
        && first.directive == Directive::NextLine
    {
        return Err(format!("line {}: `nextln:` needs an earlier `check:` to follow", first.line));
    }
    Ok(out)
}

/// Whether a comment's first word, followed by a colon, is probably a
/// misspelt directive (`chekc:`, `check-next:`, `nextline:`, `nto:`)
/// rather than prose (`it:`, `note:`).
fn looks_like_directive(word: &str) -> bool {
    word.starts_with("check")
        || word.starts_with("next")
        || edit_distance(word, "check") <= 2
        || edit_distance(word, "nextln") <= 2
        || (edit_distance(word, "not") == 1 && word != "note")
}

/// Levenshtein distance (insertions, deletions, substitutions).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !",;()[]{}".contains(c)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn parse_pattern(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            literal.push('$');
            rest = after;
            continue;
        }
        let (piece, after) = if let Some(inner) = rest.strip_prefix('(') {
            let close = inner.find(')').ok_or_else(|| format!("`$(` without `)` in `{text}`"))?;
            (Piece::Bind(inner[..close].to_string()), &inner[close + 1..])
        } else {
            let end = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
            (Piece::Use(rest[..end].to_string()), &rest[end..])
        };
        let (Piece::Bind(name) | Piece::Use(name)) = &piece else { unreachable!() };
        if name.is_empty() || !name.chars().all(is_name_char) {
            return Err(format!("bad variable name `{name}` in `{text}` (letters, digits and `_`)"));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(piece);
        rest = after;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

/// Variables bound so far, by name.
pub type Bindings = HashMap<String, String>;

/// Whether `line` contains the pattern, trying every start position;
/// returns the words the pattern binds. A `$(name)` takes the longest word
/// there (no backtracking), which is what a word followed by punctuation or
/// the end of the line needs.
fn match_line(pieces: &[Piece], line: &str, bound: &Bindings) -> Result<Option<Bindings>, String> {
    let mut resolved = Vec::with_capacity(pieces.len());
    for piece in pieces {
        resolved.push(match piece {
            Piece::Use(name) => Piece::Literal(
                bound.get(name).cloned().ok_or_else(|| format!("`${name}` is used before `$({name})` binds it"))?,
            ),
            other => other.clone(),
        });
    }
    'start: for (start, _) in line.char_indices() {
        let mut at = start;
        let mut binds = Bindings::new();
        for piece in &resolved {
            match piece {
                Piece::Literal(text) => {
                    if !line[at..].starts_with(text.as_str()) {
                        continue 'start;
                    }
                    at += text.len();
                }
                Piece::Bind(name) => {
                    let len = line[at..].find(|c: char| !is_word_char(c)).unwrap_or(line.len() - at);
                    if len == 0 {
                        continue 'start;
                    }
                    binds.insert(name.clone(), line[at..at + len].to_string());
                    at += len;
                }
                Piece::Use(_) => unreachable!("resolved above"),
            }
        }
        return Ok(Some(binds));
    }
    Ok(None)
}

/// Why an expectation failed.
#[derive(Debug)]
pub struct Failure {
    /// The expectation (its line in the filetest, its text).
    pub expectation: Expectation,
    /// What went wrong, with the relevant output lines.
    pub message: String,
}

/// Output lines `from..to` (0-based) numbered from 1, at most `limit` of them.
fn excerpt(lines: &[&str], from: usize, to: usize, limit: usize) -> String {
    let mut out = String::new();
    let end = to.min(lines.len());
    for (i, line) in lines.iter().enumerate().take(end.min(from + limit)).skip(from) {
        out.push_str(&format!("    {:>4} | {line}\n", i + 1));
    }
    if end > from + limit {
        out.push_str(&format!("    ... {} more lines\n", end - from - limit));
    }
    if from >= end {
        out.push_str("    (no lines)\n");
    }
    out
}

/// Matches `expectations` in order against `output`; returns every failure
/// (a failed `check:` or `nextln:` ends the run, since later expectations
/// have no position to start from; a failed `not:` does not).
pub fn run_expectations(expectations: &[Expectation], output: &str) -> Result<Vec<Failure>, String> {
    const CONTEXT: usize = 40;
    let lines: Vec<&str> = output.lines().collect();
    let mut bound = Bindings::new();
    let mut failures = Vec::new();
    // The first line a `check:` may match, and the line a `nextln:` must.
    let mut cursor = 0;
    let mut pending_not: Vec<&Expectation> = Vec::new();
    let check_nots =
        |pending: &mut Vec<&Expectation>, from: usize, to: usize, bound: &Bindings, failures: &mut Vec<Failure>| {
            for not in pending.drain(..) {
                for (i, line) in lines.iter().enumerate().take(to).skip(from) {
                    if match_line(&not.pieces, line, bound)?.is_some() {
                        failures.push(Failure {
                            expectation: not.clone(),
                            message: format!("found on output line {}:\n{}", i + 1, excerpt(&lines, i, i + 1, 1)),
                        });
                        break;
                    }
                }
            }
            Ok::<(), String>(())
        };
    for e in expectations {
        match e.directive {
            Directive::Not => pending_not.push(e),
            Directive::Check => {
                let mut found = None;
                for (i, line) in lines.iter().enumerate().skip(cursor) {
                    if let Some(binds) = match_line(&e.pieces, line, &bound)? {
                        found = Some((i, binds));
                        break;
                    }
                }
                let Some((i, binds)) = found else {
                    let after =
                        if cursor == 0 { "anywhere".to_string() } else { format!("after output line {cursor}") };
                    failures.push(Failure {
                        expectation: e.clone(),
                        message: format!(
                            "not found {after}; the output from there:\n{}",
                            excerpt(&lines, cursor, lines.len(), CONTEXT)
                        ),
                    });
                    return Ok(failures);
                };
                check_nots(&mut pending_not, cursor, i, &bound, &mut failures)?;
                bound.extend(binds);
                cursor = i + 1;
            }
            Directive::NextLine => {
                let matched = match lines.get(cursor) {
                    Some(line) => match_line(&e.pieces, line, &bound)?,
                    None => None,
                };
                let Some(binds) = matched else {
                    failures.push(Failure {
                        expectation: e.clone(),
                        message: format!(
                            "not on the line after the previous match (output line {}):\n{}",
                            cursor + 1,
                            excerpt(&lines, cursor.saturating_sub(1), cursor + 1, 2)
                        ),
                    });
                    return Ok(failures);
                };
                bound.extend(binds);
                cursor += 1;
            }
        }
    }
    check_nots(&mut pending_not, cursor, lines.len(), &bound, &mut failures)?;
    Ok(failures)
}

impl Expectation {
    /// The directive as written, for reports (`check: tile dot`).
    pub fn describe(&self) -> String {
        format!("{}: {}", self.directive.keyword(), self.text)
    }
}
