//! `kiln inspect --emit kir` and `kiln kir`: the printed kernel-IR program of
//! every net of the suite parses, verifies and prints back byte for byte; a
//! malformed or invalid file is a located error with exit status 1.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn nets() -> Vec<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut nets = vec![format!("{root}/examples/lenet.net")];
    for name in ["lenet", "vgg16c", "resnet_ish", "mlp", "wide5"] {
        nets.push(format!("{root}/bench/nets/{name}.net"));
    }
    nets
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `kiln kir -` with `input` on standard input.
fn kir_stdin(input: &[u8]) -> Output {
    let mut child = Command::new(KILN)
        .args(["kir", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn every_suite_net_round_trips_through_kiln_kir() {
    for net in nets() {
        for train in [false, true] {
            let mut args = vec!["inspect", net.as_str(), "--batch", "4", "--threads", "2", "--emit", "kir"];
            if train {
                args.push("--train");
            }
            let printed = Command::new(KILN).args(&args).output().unwrap();
            assert!(printed.status.success(), "{net}: {}", text(&printed));
            assert!(printed.stdout.starts_with(b"program threads 2 arena "), "{net}");
            let back = kir_stdin(&printed.stdout);
            assert!(back.status.success(), "{net} (train {train}): {}", text(&back));
            assert!(back.stdout == printed.stdout, "{net} (train {train}): the text changed on the way back");
        }
    }
}

#[test]
fn a_bad_kir_file_is_a_located_error() {
    let truncated = kir_stdin(b"program threads 1 arena 64\n\n%0 = leaf n0 \"x\" len 4 @");
    assert_eq!(truncated.status.code(), Some(1), "{}", text(&truncated));
    assert!(text(&truncated).contains("-:3:"), "{}", text(&truncated));

    // Well-formed but out of bounds: the verifier names kernel, buffer and reach.
    let lenet = &nets()[0];
    // The 128-bit path, which splats conv1's weights in a kernel of their own.
    let args = ["--isa", "v128", "inspect", lenet, "--batch", "4", "--emit", "kir"];
    let printed = Command::new(KILN).args(args).output().unwrap();
    let source = String::from_utf8(printed.stdout).unwrap();
    assert!(source.contains("for v0 in 0..450 {"), "LeNet's first kernel copies conv1's 450 weights");
    let broken = source.replacen("for v0 in 0..450 {", "for v0 in 0..451 {", 1);
    let o = kir_stdin(broken.as_bytes());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("load of %0 'conv1.weight' index reaches 450, buffer has 450 elements"), "{}", text(&o));
}

#[test]
fn isa_flag_and_variable_are_checked() {
    let lenet = &nets()[0];
    let bad = Command::new(KILN).args(["--isa", "avx9000", "inspect", lenet, "--emit", "kir"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("expected v128, avx2 or avx512"), "{}", text(&bad));
    let bad_env =
        Command::new(KILN).env("KILN_MAX_ISA", "sse9").args(["inspect", lenet, "--emit", "kir"]).output().unwrap();
    assert_eq!(bad_env.status.code(), Some(1), "{}", text(&bad_env));
    assert!(text(&bad_env).contains("KILN_MAX_ISA=sse9"), "{}", text(&bad_env));
    // v128 names no product ISA in the program; the environment caps too.
    for v128 in [
        Command::new(KILN).args(["--isa", "v128", "inspect", lenet, "--emit", "kir"]).output().unwrap(),
        Command::new(KILN).env("KILN_MAX_ISA", "v128").args(["inspect", lenet, "--emit", "kir"]).output().unwrap(),
    ] {
        assert!(v128.status.success(), "{}", text(&v128));
        assert!(!String::from_utf8_lossy(&v128.stdout).contains("tile micro"));
    }
}
