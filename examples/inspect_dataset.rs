//! Inspects a landmark data set with fkd-data alone: a dlib/iBUG XML (photos, face boxes, 68
//! points each) or the IMM folder (`.asf` files, 58 points). Prints the photos, faces, points
//! per face, and the spread of image and box sizes.
//!
//! `cargo run -p fkd-examples --example inspect_dataset -- fixtures/faces/faces.xml`

use fkd_core::Layout;
use fkd_data::dataset::{DataSet, LoadPolicy};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: inspect_dataset XML|IMM_DIR");
        return ExitCode::FAILURE;
    };
    // Skip: a bad face is reported and left out instead of stopping the inspection.
    let set = if path.is_dir() {
        DataSet::imm(&path, LoadPolicy::Skip)
    } else {
        DataSet::dlib_xml(&path, Layout::IBUG68, LoadPolicy::Skip)
    };
    let set = match set {
        Ok(set) => set,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let photos: BTreeSet<&PathBuf> = set.samples.iter().map(|s| &s.image).collect();
    let annotated = set.samples.iter().filter(|s| s.is_annotated()).count();
    println!("{}: {}", set.name, path.display());
    println!(
        "{} photos, {} faces ({annotated} with points), {} left out",
        photos.len(),
        set.len(),
        set.skipped.len()
    );
    let points: BTreeSet<usize> = set.samples.iter().map(|s| s.points.len()).collect();
    println!("points per face: {points:?}");
    let sizes: BTreeSet<(u32, u32)> = set
        .samples
        .iter()
        .map(|s| (s.size.width, s.size.height))
        .collect();
    println!("image sizes (w×h): {sizes:?}");
    let sides: Vec<f32> = set
        .samples
        .iter()
        .filter_map(|s| s.bbox)
        .map(|b| b.width.max(b.height))
        .collect();
    if let (Some(lo), Some(hi)) = (
        sides.iter().copied().reduce(f32::min),
        sides.iter().copied().reduce(f32::max),
    ) {
        println!("face boxes: {} with sides {lo}–{hi} px", sides.len());
    }
    for skipped in &set.skipped {
        println!("left out: {skipped}");
    }
    ExitCode::SUCCESS
}
