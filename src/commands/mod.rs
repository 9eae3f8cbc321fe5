//! One file per subcommand: glue between the parsed CLI and the library.

pub mod cache;
pub mod calibrate;
pub mod check;
pub mod export;
pub mod gpus;
pub mod plan;
pub mod profile;
pub mod report;
pub mod run;
pub mod store;
pub mod to_fp16;

/// How a command ended, mapped to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything passed: exit 0.
    Ok,
    /// A cell or gate failed: exit 1.
    Failed,
}
