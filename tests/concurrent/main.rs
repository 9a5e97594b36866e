//! The concurrent operators, through the public API.

mod smoke;
