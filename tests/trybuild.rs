//! Compile tests of `kiln::net!`: every declaration error is a rustc error at
//! the offending tokens (checked-in `.stderr` files), and valid declarations
//! (the lecture's LeNet, a DAG) compile and run.

#[test]
fn net_macro_ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
