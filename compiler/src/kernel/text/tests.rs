//! Unit tests of the kernel IR text form.
