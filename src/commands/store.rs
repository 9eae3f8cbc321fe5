//! `calibench store gc`: remove old engines from the engine store.

use anyhow::Context;
use calibench::runner::engine_store::EngineStore;

use super::Outcome;
use crate::cli::StoreGcArgs;

pub fn gc(args: &StoreGcArgs) -> anyhow::Result<Outcome> {
    let (files, bytes) = EngineStore::new(&args.store)
        .gc(args.older_than)
        .with_context(|| format!("cannot clean the engine store {}", args.store.display()))?;
    eprintln!(
        "removed {files} engine file(s), {bytes} bytes, from {}",
        args.store.display()
    );
    Ok(Outcome::Ok)
}
