//! Splits kernel IR text into tokens with their positions.

use super::{ParseError, ParseErrorKind, Pos};

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// A word: keyword, `v3`, `a0`, `n12`, `inf`.
    Ident(String),
    /// Decimal digits only.
    Int(String),
    /// A decimal with a fraction or an exponent (`1.5`, `1e-7`).
    Float(String),
    /// `0x` and hex digits (the digits only).
    Hex(String),
    /// `%` directly followed by digits: a buffer.
    Buf(String),
    /// A quoted string, unescaped.
    Str(String),
    /// Punctuation.
    Punct(&'static str),
    /// The end of the text.
    Eof,
}

impl Tok {
    /// The token as an error message names it.
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Int(s) | Tok::Float(s) => format!("number {s}"),
            Tok::Hex(s) => format!("number 0x{s}"),
            Tok::Buf(s) => format!("`%{s}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Punct(p) => format!("`{p}`"),
            Tok::Eof => "end of input".to_string(),
        }
    }
}

/// Punctuation, longest first so that `<=` wins over `<`.
const PUNCTS: [&str; 24] = [
    "+=", "<=", ">=", "==", "&&", "||", "->", "..", "%", "[", "]", "(", ")", "{", "}", ",", "=", "+", "-", "*", "/",
    "<", ">", "@",
];

/// The tokens of `text`, ending with [`Tok::Eof`].
pub(super) fn tokenize(text: &str) -> Result<Vec<(Tok, Pos)>, ParseError> {
    let mut lexer = Lexer { chars: text.chars().collect(), at: 0, pos: Pos { line: 1, column: 1 } };
    let mut out = Vec::new();
    loop {
        lexer.skip_blank();
        let start = lexer.pos;
        let Some(c) = lexer.peek(0) else {
            out.push((Tok::Eof, start));
            return Ok(out);
        };
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            Tok::Ident(lexer.take_while(|c| c.is_ascii_alphanumeric() || c == '_'))
        } else if c == '0' && lexer.peek(1) == Some('x') {
            lexer.bump();
            lexer.bump();
            let digits = lexer.take_while(|c| c.is_ascii_hexdigit());
            if digits.is_empty() {
                return Err(ParseError::new(start, ParseErrorKind::BadChar('x')));
            }
            Tok::Hex(digits)
        } else if c.is_ascii_digit() {
            lexer.number()
        } else if c == '%' && lexer.peek(1).is_some_and(|d| d.is_ascii_digit()) {
            lexer.bump();
            Tok::Buf(lexer.take_while(|c| c.is_ascii_digit()))
        } else if c == '"' {
            lexer.string(start)?
        } else if let Some(p) = PUNCTS.iter().find(|p| lexer.starts_with(p)) {
            for _ in 0..p.len() {
                lexer.bump();
            }
            Tok::Punct(p)
        } else {
            return Err(ParseError::new(start, ParseErrorKind::BadChar(c)));
        };
        out.push((tok, start));
    }
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    pos: Pos,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.at += 1;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(i, c)| self.peek(i) == Some(c))
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek(0).filter(|&c| keep(c)) {
            s.push(c);
            self.bump();
        }
        s
    }

    /// Whitespace and `;` comments.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek(0) {
            if c == ';' {
                while self.peek(0).is_some_and(|c| c != '\n') {
                    self.bump();
                }
            } else if c.is_whitespace() {
                self.bump();
            } else {
                return;
            }
        }
    }

    /// Digits, then a fraction only when a digit follows the dot (so `0..8`
    /// stays a range), then an exponent only when digits follow it.
    fn number(&mut self) -> Tok {
        let mut s = self.take_while(|c| c.is_ascii_digit());
        let mut float = false;
        if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            s.push('.');
            s.push_str(&self.take_while(|c| c.is_ascii_digit()));
            float = true;
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            let signed = matches!(self.peek(1), Some('+' | '-'));
            let first_digit = if signed { 2 } else { 1 };
            if self.peek(first_digit).is_some_and(|c| c.is_ascii_digit()) {
                for _ in 0..first_digit {
                    s.extend(self.bump());
                }
                s.push_str(&self.take_while(|c| c.is_ascii_digit()));
                float = true;
            }
        }
        if float { Tok::Float(s) } else { Tok::Int(s) }
    }

    fn string(&mut self, start: Pos) -> Result<Tok, ParseError> {
        self.bump();
        let mut s = String::new();
        loop {
            let escape_at = self.pos;
            match self.bump() {
                None => return Err(ParseError::new(start, ParseErrorKind::UnterminatedString)),
                Some('"') => return Ok(Tok::Str(s)),
                Some('\\') => s.push(self.escape(escape_at)?),
                Some(c) => s.push(c),
            }
        }
    }

    fn escape(&mut self, at: Pos) -> Result<char, ParseError> {
        let bad = |text: String| ParseError::new(at, ParseErrorKind::BadEscape(text));
        match self.bump() {
            Some('\\') => Ok('\\'),
            Some('"') => Ok('"'),
            Some('n') => Ok('\n'),
            Some('r') => Ok('\r'),
            Some('t') => Ok('\t'),
            Some('u') if self.peek(0) == Some('{') => {
                self.bump();
                let hex = self.take_while(|c| c.is_ascii_hexdigit());
                if self.bump() != Some('}') || hex.is_empty() || hex.len() > 6 {
                    return Err(bad(format!("\\u{{{hex}")));
                }
                u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).ok_or_else(|| bad(format!("\\u{{{hex}}}")))
            }
            Some(c) => Err(bad(format!("\\{c}"))),
            None => Err(ParseError::new(at, ParseErrorKind::UnterminatedString)),
        }
    }
}

/// `s` quoted so that [`tokenize`] reads it back unchanged.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
