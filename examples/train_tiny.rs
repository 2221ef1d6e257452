//! Trains a small net on a dlib/iBUG XML with fkd's crates, end to end: a Part 3 style
//! ResNet-18 on 48-pixel face crops, 40 epochs of AdamW on the L1 loss with fkd-train's loop
//! (atomic checkpoints in OUT_DIR), then the saved run is loaded back with fkd-landmarker and
//! scored (NME before and after training).
//!
//! `cargo run -p fkd-examples --example train_tiny -- fixtures/faces/faces.xml runs/tiny`

use candle_core::{DType, Device};
use candle_nn::VarMap;
use fkd_augment::AugmentedCrop;
use fkd_core::Layout;
use fkd_data::batch::Loader;
use fkd_data::dataset::{DataSet, LoadPolicy};
use fkd_landmarker::{Landmarker, MODEL_CARD, ModelCard, Net};
use fkd_train::{Loss, Schedule, TrainConfig};
use std::path::PathBuf;

/// The crop side: small enough to train in seconds on a CPU.
const SIDE: u32 = 48;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(xml), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: train_tiny XML OUT_DIR".into());
    };
    let set = DataSet::dlib_xml(&xml, Layout::IBUG68, LoadPolicy::Strict)?;
    // What identifies the model: fkd-landmarker rebuilds the net from this card.
    let card = ModelCard {
        part: "part3".into(),
        arch: "resnet18".into(),
        input: [SIDE, SIDE],
        points: Layout::IBUG68.n_points,
        enlarge: Some(1.25),
        flip_test: false,
        heatmap: None,
        select: None,
        annotation_offset: None,
    };
    let device = Device::Cpu;
    let vars = VarMap::new();
    let net = Net::build(
        &card,
        fkd_models::seeded_var_builder(&vars, 0, DType::F32, &device),
    )?;
    let untrained = Landmarker::new(card.clone(), net.clone(), vars.clone(), device.clone());
    let before = fkd_landmarker::evaluate(&untrained, &set.samples)?.summary;

    // Face crops as the loader prepares them; the faces are also the validation set here.
    let step = || AugmentedCrop::new(1.25, SIDE, None);
    let train = Loader::new(set.samples.clone(), step(), 7).shuffled(0);
    let valid = Loader::new(set.samples.clone(), step(), 16);
    std::fs::create_dir_all(&out)?;
    let cfg = TrainConfig {
        epochs: 40,
        batch_size: 7,
        lr: 3e-3,
        loss: Loss::L1,
        schedule: Schedule::Cosine { min_lr: 0.0 },
        out_dir: out.clone(),
        ..TrainConfig::default()
    };
    let history = fkd_train::fit(&net, &vars, &train, &valid, &cfg, &mut ())?;
    card.write(&out.join(MODEL_CARD))?;

    // The run folder is now a checkpoint any fkd tool loads.
    let trained = Landmarker::load(out.join("best.safetensors"), &device)?;
    let after = fkd_landmarker::evaluate(&trained, &set.samples)?.summary;
    let pct = |s: &fkd_metrics::Summary| 100.0 * s.nme_mean.unwrap_or(f32::NAN);
    println!(
        "{} faces, {} epochs (best {}): NME {:.1} % untrained, {:.1} % trained; {}",
        set.len(),
        history.epochs.len(),
        history.best_epoch.map_or(0, |e| e + 1),
        pct(&before),
        pct(&after),
        out.join("best.safetensors").display()
    );
    Ok(())
}
