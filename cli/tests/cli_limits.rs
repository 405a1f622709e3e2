//! Hostile and oversized declarations end in a clear error and exit status 1,
//! never a stack overflow or an allocator abort; large but reasonable ones go
//! through.

use std::path::Path;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("kiln runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write(dir: &Path, name: &str, source: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    path.display().to_string()
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let depth = 20_000;
    let source = format!(
        "struct P {{ fc: Linear(16, 16), }}\nfn forward(x: [N, 16]) -> [N, 16] {{\n    {}x{}\n}}\n",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    let net = write(tmp.path(), "nested.net", &source);
    let o = kiln(&["inspect", &net, "--batch", "4", "--emit", "shapes"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("nested deeper than 64 levels"), "{out}");
    assert!(out.contains("nested.net:3:"), "the error is located: {out}");
    // The excerpt of the 40,000-character line stays short.
    assert!(out.len() < 2_000, "{} bytes of error output", out.len());
}

#[test]
fn a_model_too_big_for_memory_is_refused_with_the_bytes_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let source = "struct Huge { fc: Linear(100000000, 100000000), }\n\
                  fn forward(x: [N, 100000000]) -> [N, 100000000] {\n    fc(x)\n}\n";
    let net = write(tmp.path(), "huge.net", source);
    for command in ["bench", "train"] {
        let o = kiln(&[command, &net, "--batch", "4"]);
        assert_eq!(o.status.code(), Some(1), "{command}: {}", text(&o));
        let out = text(&o);
        assert!(out.contains("needs 35.5 PiB (40000000400000000 bytes)"), "{command}: {out}");
        assert!(out.contains("`fc.weight` (parameter) 35.5 PiB"), "{command}: {out}");
    }
}

#[test]
fn absurd_lengths_are_declaration_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let source =
        "struct Wide { fc: Linear(16, 99999999999), }\nfn forward(x: [N, 16]) -> [N, 99999999999] {\n    fc(x)\n}\n";
    let net = write(tmp.path(), "wide.net", source);
    let o = kiln(&["inspect", &net, "--batch", "1", "--emit", "shapes"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("must be at most 2147483647"), "{}", text(&o));
}

#[test]
fn ten_thousand_chained_lets_lower_and_differentiate() {
    let tmp = tempfile::tempdir().unwrap();
    let body = "    let x = x + x;\n".repeat(10_000);
    let source = format!(
        "struct Chain {{ fc: Linear(4, 4), }}\nfn forward(x: [N, 4]) -> [N, 4] {{\n    let x = fc(x);\n{body}    x\n}}\n"
    );
    let net = write(tmp.path(), "chain.net", &source);
    let o = kiln(&["inspect", &net, "--batch", "2", "--train", "--emit", "shapes"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // Every `let` is its own node, named uniquely: x, x_1, ..., x_10000.
    assert!(out.contains("x_10000 "), "{}", &out[..out.len().min(2000)]);
    assert!(!out.contains("x_10001 "));
}
