//! Errors of the kernel IR text parser: where they point, what they say,
//! and that hostile input (truncated, mutated, deeply nested, overflowing)
//! gives an error instead of a panic.

use super::*;

/// A small program using a loop, a condition, a store and a product.
const SMALL: &str = r#"program threads 2 arena 40

%0 = leaf n0 "x" len 16 @ 0
%1 = value n1 "y" len 16 @ 16
%2 = const_i32 "rows" len 2 @ 32 [0, 4]

value n1 -> %1

kernel 0 "k" threads 2 flops 32 {
  nodes [n1]
  reads [%0, %2]
  writes [%1]
  in_place [%0 -> %1]
  for v0 in 0..2 parallel {
    for v1 in 0..8 vector {
      if icmp v1 < 7 && fcmp %0[v0 * 8 + v1] > -0.5 {
        %1[v0 * 8 + v1] = relu(%0[v0 * 8 + v1]) * 2.0
      }
    }
    gemm m 2 n 4 k 2 {
      tile outer rows 2 vectors 1 unroll 2
      a %0[0] stride 2 1
      b %0[v0 * 4] stride 4 1
      b_rows %2
      c %1[v0 * 8] stride 4 1
      accumulate
      activation leaky_relu(0.01)
    }
  }
}
"#;

fn error(text: &str) -> ParseError {
    match parse_program(text) {
        Ok(p) => panic!("parsed, expected an error:\n{}", write_program(&p)),
        Err(e) => e,
    }
}

/// `SMALL` with `from` replaced by `to` (which must occur exactly once).
fn small_with(from: &str, to: &str) -> String {
    assert_eq!(SMALL.matches(from).count(), 1, "`{from}` is not unique in SMALL");
    SMALL.replace(from, to)
}

#[test]
fn small_program_is_canonical() {
    let p = parse_program(SMALL).expect("SMALL parses");
    assert_eq!(write_program(&p), SMALL);
}

#[test]
fn errors_carry_line_column_and_what_was_expected() {
    let e = error(&small_with("reads [%0, %2]", "reads [%0 %2]"));
    assert_eq!((e.line, e.column), (11, 13));
    assert_eq!(e.kind, ParseErrorKind::Expected { expected: "`,` or `]`".to_string(), found: "`%2`".to_string() });
    assert_eq!(e.to_string(), "11:13: expected `,` or `]`, found `%2`");
    assert_eq!(e.message(), "expected `,` or `]`, found `%2`");
}

#[test]
fn unknown_buffer_is_named_where_it_is_used() {
    let e = error(&small_with("relu(%0[v0 * 8 + v1])", "relu(%3[v0 * 8 + v1])"));
    assert_eq!(e.kind, ParseErrorKind::UnknownBuffer { id: 3, count: 3 });
    assert_eq!((e.line, e.column), (17, 32));
    let e = error(&small_with("value n1 -> %1", "value n1 -> %99999999999999999999"));
    assert!(matches!(e.kind, ParseErrorKind::IntegerOverflow { .. }), "{e}");
}

#[test]
fn truncated_text_ends_in_an_error_at_the_end() {
    let cut = SMALL.find("for v1").expect("SMALL has an inner loop");
    let e = error(&SMALL[..cut]);
    assert_eq!(
        e.kind.to_string(),
        "expected a statement (`for`, `let`, `if`, `gemm`, `%N[...]` or `aN`) or `}`, found end of input"
    );
    assert_eq!((e.line, e.column), (15, 5));
    // Every prefix parses or fails; none panics. Only the whole text and
    // the prefixes cut right after a complete top-level item parse.
    for (i, _) in SMALL.char_indices() {
        if let Ok(p) = parse_program(&SMALL[..i]) {
            assert!(p.kernels.is_empty() || i >= SMALL.len() - 1, "prefix {i} parsed with a kernel");
        }
    }
}

#[test]
fn order_and_fields_are_checked() {
    let e = error(&small_with("%1 = value", "%7 = value"));
    assert_eq!(e.kind, ParseErrorKind::OutOfOrder { what: "buffer", expected: 1, found: 7 });
    let e = error(&small_with("kernel 0", "kernel 1"));
    assert_eq!(e.to_string(), "9:8: expected kernel 0, found kernel 1");
    let e = error(&small_with("      accumulate\n", "      accumulate\n      a %0[0] stride 2 1\n"));
    assert_eq!(e.kind, ParseErrorKind::DuplicateField("a"));
    assert_eq!((e.line, e.column), (27, 7));
    let e = error(&small_with("      a %0[0] stride 2 1\n", ""));
    assert_eq!(e.kind, ParseErrorKind::MissingField("a"));
    let e = error(&small_with("      accumulate\n", "      accumulate\n      b_cols %2\n"));
    assert!(e.to_string().starts_with("27:7: expected a gemm field"), "{e}");
    let e = error(&small_with(" @ 16\n", "\n"));
    assert!(matches!(e.kind, ParseErrorKind::InconsistentOffsets(_)), "{e}");
    assert_eq!(e.line, 4);
}

#[test]
fn literals_out_of_range_are_errors() {
    let e = error(&small_with("len 16 @ 0", "len 18446744073709551616 @ 0"));
    assert_eq!(e.kind, ParseErrorKind::IntegerOverflow { text: "18446744073709551616".to_string(), ty: "usize" });
    let e = error(&small_with("v0 * 8 + v1] > -0.5", "v0 * -9223372036854775809 + v1] > -0.5"));
    assert_eq!(e.kind, ParseErrorKind::IntegerOverflow { text: "-9223372036854775809".to_string(), ty: "i64" });
    let e = error(&small_with("[0, 4]", "[0, 2147483648]"));
    assert_eq!(e.kind, ParseErrorKind::IntegerOverflow { text: "2147483648".to_string(), ty: "i32" });
    let e = error(&small_with("for v1 in", "for v4294967296 in"));
    assert_eq!(e.kind, ParseErrorKind::IntegerOverflow { text: "4294967296".to_string(), ty: "u32" });
    let e = error(&small_with("> -0.5", "> 1e39"));
    assert_eq!(e.kind, ParseErrorKind::BadFloat("1e39".to_string()));
    let e = error(&small_with("leaky_relu(0.01)", "leaky_relu(nan(0x3f800000))"));
    assert!(e.to_string().contains("expected the bits of a NaN"), "{e}");
    let e = error(&small_with("v0 * 8]", "v0 / 0]"));
    assert_eq!(e.to_string(), "25:17: expected a positive divisor, found 0");
}

#[test]
fn strings_and_characters_are_checked() {
    let e = error(&small_with("\"rows\"", "\"rows"));
    assert!(matches!(e.kind, ParseErrorKind::Expected { .. } | ParseErrorKind::UnterminatedString), "{e}");
    let e = error("program threads 1 arena 0\n%0 = scratch \"open");
    assert_eq!((e.line, e.column, e.kind), (2, 14, ParseErrorKind::UnterminatedString));
    let e = error(&small_with("\"rows\"", "\"ro\\qws\""));
    assert_eq!(e.kind, ParseErrorKind::BadEscape("\\q".to_string()));
    let e = error(&small_with("\"rows\"", "\"\\u{d800}\""));
    assert!(matches!(e.kind, ParseErrorKind::BadEscape(_)), "{e}");
    let e = error(&small_with("flops 32", "flops $32"));
    assert_eq!((e.line, e.column, e.kind), (9, 30, ParseErrorKind::BadChar('$')));
}

/// A loop nest `depth` deep around one store.
fn nested_loops(depth: usize) -> String {
    let mut text = String::from(
        "program threads 1 arena 0\n%0 = scratch \"s\" len 1\noffsets []\nkernel 0 \"k\" threads 1 flops 0 {\n\
         nodes [] reads [] writes [] in_place []\n",
    );
    text.push_str(&"for v0 in 0..1 {\n".repeat(depth));
    text.push_str("%0[0] = 1.0\n");
    text.push_str(&"}\n".repeat(depth + 1));
    text
}

fn with_store(value: &str) -> String {
    nested_loops(1).replace("%0[0] = 1.0", &format!("%0[0] = {value}"))
}

#[test]
fn nesting_is_limited_without_overflowing_the_stack() {
    assert!(parse_program(&nested_loops(MAX_NESTING - 2)).is_ok());
    let too_deep = ParseErrorKind::TooDeep(MAX_NESTING);
    assert_eq!(error(&nested_loops(100_000)).kind, too_deep);
    // Parentheses, calls and operator chains all count.
    let parens = format!("{}1.0{}", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(error(&with_store(&parens)).kind, too_deep);
    let calls = format!("{}1.0{}", "neg(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(error(&with_store(&calls)).kind, too_deep);
    let chain = vec!["1.0"; 100_000].join(" + ");
    assert_eq!(error(&with_store(&chain)).kind, too_deep);
    let index_chain = format!("%0[{}]", vec!["v0 * 2"; 100_000].join(" + "));
    assert_eq!(error(&with_store(&index_chain)).kind, too_deep);
    let products = format!("float(v0{})", " * 2".repeat(100_000));
    assert_eq!(error(&with_store(&products)).kind, too_deep);
    let conds = format!("select({}, 1.0, 0.0)", vec!["isnan(1.0)"; 100_000].join(" && "));
    assert_eq!(error(&with_store(&conds)).kind, too_deep);
    let selects = format!("{}1.0{}", "select(isnan(".repeat(10_000), "), 1.0, 1.0)".repeat(10_000));
    assert_eq!(error(&with_store(&selects)).kind, too_deep);
    let tables = format!("float({}0{})", "int(%0[%0[".repeat(10_000), "]])".repeat(10_000));
    assert_eq!(error(&with_store(&tables)).kind, too_deep);
    let conds = format!("select({}isnan(1.0){}, 1.0, 0.0)", "(fcmp 1.0 < 2.0 || ".repeat(10_000), ")".repeat(10_000));
    assert_eq!(error(&with_store(&conds)).kind, too_deep);
    // Below the limit the tree is built and prints back the same.
    let ok = with_store(&vec!["1.0"; 60].join(" + "));
    assert_eq!(write_program(&parse_program(&ok).expect("60 terms")).matches(" + ").count(), 59);
}

#[test]
fn mutated_text_never_panics() {
    // A fixed linear congruential generator: the same mutations every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % n
    };
    let alphabet: Vec<char> = "%[](){}=+-*/<>&|,.;@\"\\0123456789avnex_ \n".chars().collect();
    let original: Vec<char> = SMALL.chars().collect();
    let mut failures = 0;
    for _ in 0..3000 {
        let mut text = original.clone();
        for _ in 0..1 + random(3) {
            let at = random(text.len());
            match random(3) {
                0 => text[at] = alphabet[random(alphabet.len())],
                1 => text.insert(at, alphabet[random(alphabet.len())]),
                _ => {
                    text.remove(at);
                }
            }
        }
        let text: String = text.into_iter().collect();
        match parse_program(&text) {
            Ok(p) => assert_eq!(parse_program(&write_program(&p)), Ok(p.clone()), "{text}"),
            Err(e) => {
                failures += 1;
                assert!(e.line >= 1 && e.column >= 1 && e.line <= text.lines().count() + 1, "{e} in\n{text}");
            }
        }
    }
    assert!(failures > 1000, "only {failures} mutations failed to parse");
}
