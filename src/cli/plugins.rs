//! `reft plugins`.

use reft_core::hooks::HookKind;
use reft_core::intervention;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> anyhow::Result<()> {
    let all = intervention::registered();
    let width = all.iter().map(|f| f.name.len()).max().unwrap_or(4);
    println!("{:width$}  {:8}  {:14}  description", "kind", "version", "hooks");
    for f in all {
        let hooks = match f.hook_kind {
            HookKind::Representation => "representation",
            HookKind::Linear => "linear module",
        };
        println!("{:width$}  {:8}  {:14}  {}", f.name, f.version, hooks, f.description);
    }
    Ok(())
}
