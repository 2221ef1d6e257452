//! Predicts the landmarks of one face with any fkd checkpoint: loads the checkpoint and the
//! `model.json` beside it with fkd-landmarker, reads the photo, predicts the points of the face
//! in the box (the whole photo for Parts 1–2's models), prints them in the photo's pixels and
//! draws them with fkd-viz.
//!
//! `cargo run -p fkd-examples --example predict_photo -- runs/part4/best.safetensors photo.jpg
//! 120,80,200,220 drawn.png`

use fkd_landmarker::{Device, FaceBox, Landmarker, load_gray};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [checkpoint, photo, bbox, rest @ ..] = args.as_slice() else {
        return Err("usage: predict_photo CHECKPOINT PHOTO X,Y,W,H [OUT.png]".into());
    };
    let b: Vec<f32> = bbox
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("box {bbox:?}: {e}"))?;
    let &[x, y, w, h] = b.as_slice() else {
        return Err(format!("box {bbox:?}: need left,top,width,height").into());
    };

    let landmarker = Landmarker::load(checkpoint, &Device::Cpu)?;
    let image = load_gray(photo)?;
    let faces = landmarker.predict(&image, &[FaceBox::new(x, y, w, h)])?;
    let card = landmarker.card();
    println!(
        "{photo}: {} points of a {} {} model (flip test {})",
        faces[0].points.len(),
        card.part,
        card.arch,
        if landmarker.flip_test() { "on" } else { "off" }
    );
    for (i, p) in faces[0].points.iter().enumerate() {
        println!("{i:2} {:7.1} {:7.1}", p.x, p.y);
    }
    if let Some(out) = rest.first().map(PathBuf::from) {
        let layout = card.whole_face().then(|| card.layout());
        let drawn = fkd_viz::draw_landmarks(
            &image,
            &[(&faces[0].points[..], fkd_viz::PREDICTION)],
            layout.as_ref(),
            2,
        );
        fkd_viz::save_png(&drawn, &out)?;
        println!("drawn: {}", out.display());
    }
    Ok(())
}
