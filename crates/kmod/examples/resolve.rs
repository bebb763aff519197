//! Loads a modules directory and resolves queries like modprobe, with timings.
//!
//! `cargo run --release -p fleetgate-kmod --example resolve -- /lib/modules/$(uname -r) virtio:d00000002v00001AF4`

use std::time::Instant;

use fleetgate_kmod::ModuleIndex;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: resolve <modules dir> [query...]")?;
    let start = Instant::now();
    let index = ModuleIndex::load(&dir)?;
    println!("loaded {} modules, {} aliases in {:?}", index.module_count(), index.alias_count(), start.elapsed());
    for query in args {
        let start = Instant::now();
        let want = index.requirement(&query);
        let elapsed = start.elapsed();
        println!("{query} ({:?}, {elapsed:?}):", want.source);
        for c in &want.candidates {
            println!("  {} {:?}", c.module, c.provider);
            for step in &c.load_plan {
                println!("    {step}");
            }
        }
    }
    Ok(())
}
