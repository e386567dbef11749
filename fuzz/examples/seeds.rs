//! Writes the seed corpus: `fuzz/corpus/<target>/seed-<name>` for every target, replacing
//! the previous seeds and leaving other files (inputs kept from crashes) alone.
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for name in peerlab_fuzz::TARGETS {
        let dir = root.join(name);
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("seed-"))
            {
                fs::remove_file(path)?;
            }
        }
        let seeds = peerlab_fuzz::seeds::seeds(name);
        let bytes: usize = seeds.iter().map(|(_, b)| b.len()).sum();
        for (seed, data) in &seeds {
            fs::write(dir.join(format!("seed-{seed}")), data)?;
        }
        println!("{name}: {} seeds, {bytes} bytes", seeds.len());
    }
    Ok(())
}
