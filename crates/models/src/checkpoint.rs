//! Weight files: a `VarMap` saved as safetensors, written atomically, and read back either
//! strictly ([`load_weights`]: a checkpoint of this very network) or by matching names
//! ([`load_matching`]: initialising a network from torchvision's weights, `--init FILE`).
//!
//! Candle's own `VarMap::save` writes in place (a crash mid-write leaves a truncated file where
//! the last good checkpoint was) and `VarMap::load` reports a missing or mis-shaped tensor
//! without saying which file, so fkd uses these instead. Both loads check every tensor before
//! changing any var, so a failed load leaves the network as it was, and their errors name the
//! file and the tensor.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{ModelError, Result};

/// The vars of `varmap` by name, sorted by name (so errors report the first in name order).
fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    // A poisoned lock only means another thread panicked while holding it; the map of vars is
    // still whole.
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Every tensor of the safetensors file `path`, on the CPU.
fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|source| read_error(path, source))
}

fn read_error(path: &Path, source: candle_core::Error) -> ModelError {
    ModelError::ReadCheckpoint {
        path: path.to_path_buf(),
        source,
    }
}

fn mismatch(path: &Path, name: &str, var: &Var, found: &Tensor) -> ModelError {
    ModelError::TensorMismatch {
        path: path.to_path_buf(),
        name: name.to_owned(),
        expected: var.dims().to_vec(),
        found: found.dims().to_vec(),
        expected_dtype: var.dtype(),
        found_dtype: found.dtype(),
    }
}

/// Writes every var of `varmap` to `path` as safetensors, atomically (see
/// [`fkd_core::io::write_atomic`]): `path` always holds either the previous file or the complete
/// new one. The folder must exist.
pub fn save_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = named_vars(varmap)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    fkd_core::io::write_atomic(path, |tmp| {
        candle_core::safetensors::save(&tensors, tmp).map_err(|source| {
            ModelError::WriteCheckpoint {
                path: path.to_path_buf(),
                source,
            }
        })
    })
}

/// Loads a checkpoint written by [`save_weights`] for the same network into `varmap`, strictly:
/// the file must hold exactly the vars of `varmap`, each with its shape and dtype. Otherwise
/// nothing is changed and the error names the file and the first difference in name order:
/// [`ModelError::MissingTensor`], [`ModelError::TensorMismatch`], then
/// [`ModelError::UnexpectedTensors`]. Extra tensors are refused too, because a file with more
/// tensors than the network is a checkpoint of another network (a resume into the wrong model
/// would otherwise go unnoticed); to initialise from a file of another network, such as
/// torchvision's, use [`load_matching`].
pub fn load_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    let mut file = read(path)?;
    let vars = named_vars(varmap);
    let mut values = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        let t = file.remove(name).ok_or_else(|| ModelError::MissingTensor {
            path: path.to_path_buf(),
            name: name.clone(),
        })?;
        if t.dims() != var.dims() || t.dtype() != var.dtype() {
            return Err(mismatch(path, name, var, &t));
        }
        values.push(t.to_device(var.device()).map_err(|e| read_error(path, e))?);
    }
    if !file.is_empty() {
        let mut names: Vec<String> = file.into_keys().collect();
        names.sort();
        return Err(ModelError::UnexpectedTensors {
            path: path.to_path_buf(),
            names,
        });
    }
    for ((_, var), value) in vars.iter().zip(values) {
        var.set(&value)?;
    }
    Ok(())
}

/// What [`load_matching`] did, each list sorted by name. Every var is in exactly one of
/// `loaded` and `missing`; every tensor of the file in exactly one of `loaded` and `skipped`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Vars set from the file's tensor of the same name (including `converted` ones).
    pub loaded: Vec<String>,
    /// Of `loaded`, those converted on the way: an RGB `conv1.weight` summed to one channel.
    pub converted: Vec<String>,
    /// Tensors of the file that were not loaded: no var has their name (torchvision's
    /// `num_batches_tracked`), or they are an `fc.*` head with another number of outputs.
    pub skipped: Vec<String>,
    /// Vars the file did not set, which keep their initial values: the file has no tensor of
    /// their name, or its `fc.*` tensor was skipped.
    pub missing: Vec<String>,
}

/// The stem convolution, the one var [`load_matching`] converts.
const STEM: &str = "conv1.weight";

/// Whether a stem of shape `found` is `want` with three (RGB) input channels for one.
fn rgb_stem_for_grey(found: &[usize], want: &[usize]) -> bool {
    matches!((found, want), ([o, 3, kh, kw], [o2, 1, kh2, kw2]) if (o, kh, kw) == (o2, kh2, kw2))
}

/// Whether a head tensor of shape `found` differs from `want` only in its output count (the
/// first dimension): torchvision's 1000 classes for fkd's coordinates.
fn other_head(found: &[usize], want: &[usize]) -> bool {
    found.len() == want.len() && !found.is_empty() && found[1..] == want[1..]
}

/// Initialises `varmap` from a safetensors file of another network under the same names, such
/// as torchvision's ImageNet weights for [`crate::ResNet`] (`--init FILE`): every var whose name
/// and shape match a tensor of the file is set to it, converted to the var's dtype and device,
/// and the rest keep their values (see [`LoadReport`]).
///
/// A name that matches with another shape is an error naming the file and the tensor
/// ([`ModelError::TensorMismatch`]), with two documented allowances:
/// - `conv1.weight` of shape `[o, 3, k, k]` into a `[o, 1, k, k]` var is summed over its RGB
///   input channels: a grey image fed to the RGB network as three equal channels gives exactly
///   this stem's output, the standard way to make an ImageNet stem grayscale;
/// - `fc.*` whose output count differs (ImageNet's 1000 classes) is skipped: the regression head
///   is trained from its initial values.
///
/// A file that sets no var at all is [`ModelError::NothingMatches`]: training from scratch by
/// mistake should not look like a fine-tuning run. As with [`load_weights`], nothing is changed
/// on error.
pub fn load_matching(varmap: &VarMap, path: &Path) -> Result<LoadReport> {
    let file = read(path)?;
    let vars = named_vars(varmap);
    let mut report = LoadReport::default();
    let mut values = Vec::new();
    for (name, var) in &vars {
        let Some(t) = file.get(name) else {
            report.missing.push(name.clone());
            continue;
        };
        let value = if t.dims() == var.dims() {
            t.to_dtype(var.dtype())
        } else if name == STEM && rgb_stem_for_grey(t.dims(), var.dims()) {
            report.converted.push(name.clone());
            t.to_dtype(var.dtype()).and_then(|t| t.sum_keepdim(1))
        } else if name.starts_with("fc.") && other_head(t.dims(), var.dims()) {
            report.skipped.push(name.clone());
            report.missing.push(name.clone());
            continue;
        } else {
            return Err(mismatch(path, name, var, t));
        };
        let value = value
            .and_then(|v| v.to_device(var.device()))
            .map_err(|e| read_error(path, e))?;
        values.push((var, value));
        report.loaded.push(name.clone());
    }
    if values.is_empty() {
        return Err(ModelError::NothingMatches {
            path: path.to_path_buf(),
        });
    }
    let known: HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    report
        .skipped
        .extend(file.keys().filter(|k| !known.contains(k.as_str())).cloned());
    report.skipped.sort();
    for (var, value) in values {
        var.set(&value)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::conv_regressor::tests::tiny;
    use crate::{ConvRegressor, ResNet, ResNetConfig};
    use candle_core::{DType, IndexOp, Module, ModuleT};
    use candle_nn::VarBuilder;

    fn build() -> (VarMap, ConvRegressor) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = ConvRegressor::new(&tiny(), vb).unwrap();
        (vm, net)
    }

    fn input() -> Tensor {
        Tensor::randn(0f32, 1.0, (2, 1, 12, 16), &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The var `name` of `vm` as a flat vector.
    fn flat(vm: &VarMap, name: &str) -> Vec<f32> {
        vm.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn save_then_load_gives_identical_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.safetensors");
        let (vm_a, a) = build();
        save_weights(&vm_a, &path).unwrap();
        assert_eq!(names(dir.path()), ["net.safetensors"]);
        let (vm_b, b) = build();
        let x = input();
        assert_ne!(
            values(&a.forward(&x).unwrap()),
            values(&b.forward(&x).unwrap())
        );
        load_weights(&vm_b, &path).unwrap();
        assert_eq!(
            values(&a.forward(&x).unwrap()),
            values(&b.forward(&x).unwrap())
        );
    }

    /// A checkpoint gets the permissions of a plainly created file (safetensors writes through
    /// a private temporary file of its own; the atomic writer gives it the umask's mode).
    #[cfg(unix)]
    #[test]
    fn checkpoints_get_a_plain_files_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let (vm, _) = build();
        let path = dir.path().join("best.safetensors");
        save_weights(&vm, &path).unwrap();
        assert_eq!(mode(&path), mode(&plain));
    }

    #[test]
    fn save_replaces_an_existing_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.safetensors");
        std::fs::write(&path, b"old").unwrap();
        let (vm, _) = build();
        save_weights(&vm, &path).unwrap();
        let back = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.len(), 8);
        assert_eq!(names(dir.path()), ["net.safetensors"]);
    }

    #[test]
    fn save_into_a_missing_folder_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/net.safetensors");
        let (vm, _) = build();
        let err = save_weights(&vm, &path).unwrap_err();
        match &err {
            ModelError::WriteCheckpoint { path: p, .. } => assert_eq!(p, &path),
            e => panic!("unexpected {e}"),
        }
        assert!(err.to_string().starts_with(&path.display().to_string()));
    }

    #[test]
    fn save_over_a_folder_names_the_file_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.safetensors");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), b"x").unwrap();
        let (vm, _) = build();
        match save_weights(&vm, &path).unwrap_err() {
            ModelError::Write(e) => {
                assert_eq!(e.path, path);
                assert_eq!(e.step, fkd_core::WriteStep::Rename);
            }
            e => panic!("unexpected {e}"),
        }
        assert_eq!(names(dir.path()), ["net.safetensors"]);
    }

    /// Writes the varmap's tensors to `path` after `edit` changes the map.
    fn write_edited(vm: &VarMap, path: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
        let mut ts: HashMap<String, Tensor> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        edit(&mut ts);
        candle_core::safetensors::save(&ts, path).unwrap();
    }

    #[test]
    fn missing_tensor_is_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial.safetensors");
        let (vm_a, _) = build();
        write_edited(&vm_a, &path, |ts| {
            ts.remove("fc2.bias");
        });
        let (vm_b, b) = build();
        let x = input();
        let before = values(&b.forward(&x).unwrap());
        let err = load_weights(&vm_b, &path).unwrap_err();
        match &err {
            ModelError::MissingTensor { path: p, name } => {
                assert_eq!(p, &path);
                assert_eq!(name, "fc2.bias");
            }
            e => panic!("unexpected {e}"),
        }
        assert!(
            err.to_string().contains("partial.safetensors") && err.to_string().contains("fc2.bias")
        );
        // Nothing was loaded: the check happens before any var changes.
        assert_eq!(values(&b.forward(&x).unwrap()), before);
    }

    #[test]
    fn wrong_shape_or_dtype_is_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let (vm_a, _) = build();
        write_edited(&vm_a, &path, |ts| {
            ts.insert(
                "fc1.weight".into(),
                Tensor::zeros((16, 99), DType::F32, &Device::Cpu).unwrap(),
            );
        });
        let (vm_b, _) = build();
        let err = load_weights(&vm_b, &path).unwrap_err();
        match &err {
            ModelError::TensorMismatch {
                path: p,
                name,
                expected,
                found,
                ..
            } => {
                assert_eq!(p, &path);
                assert_eq!(name, "fc1.weight");
                // 8 channels × 6 × 8 after one pool of 12×16.
                assert_eq!(expected, &[16, 384]);
                assert_eq!(found, &[16, 99]);
            }
            e => panic!("unexpected {e}"),
        }
        let msg = err.to_string();
        assert!(
            msg.starts_with(&path.display().to_string())
                && msg.contains(
                    "fc1.weight is F32 [16, 99] in the checkpoint but F32 [16, 384] in the model"
                ),
            "{msg}"
        );

        write_edited(&vm_a, &path, |ts| {
            let b = ts["fc2.bias"].to_dtype(DType::F64).unwrap();
            ts.insert("fc2.bias".into(), b);
        });
        let msg = load_weights(&vm_b, &path).unwrap_err().to_string();
        assert!(
            msg.contains("fc2.bias is F64 [4] in the checkpoint but F32 [4] in the model"),
            "{msg}"
        );
    }

    #[test]
    fn extra_tensors_are_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bigger.safetensors");
        let (vm_a, _) = build();
        write_edited(&vm_a, &path, |ts| {
            ts.insert("fc3.weight".into(), ts["fc2.weight"].clone());
        });
        let (vm_b, b) = build();
        let x = input();
        let before = values(&b.forward(&x).unwrap());
        match load_weights(&vm_b, &path).unwrap_err() {
            ModelError::UnexpectedTensors { path: p, names } => {
                assert_eq!(p, path);
                assert_eq!(names, ["fc3.weight"]);
            }
            e => panic!("unexpected {e}"),
        }
        assert_eq!(values(&b.forward(&x).unwrap()), before);
    }

    #[test]
    fn unreadable_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.safetensors");
        std::fs::write(&path, b"not safetensors").unwrap();
        let (vm, _) = build();
        for p in [path, dir.path().join("absent.safetensors")] {
            match load_weights(&vm, &p).unwrap_err() {
                ModelError::ReadCheckpoint { path, .. } => assert_eq!(path, p),
                e => panic!("unexpected {e}"),
            }
            match load_matching(&vm, &p).unwrap_err() {
                ModelError::ReadCheckpoint { path, .. } => assert_eq!(path, p),
                e => panic!("unexpected {e}"),
            }
        }
    }

    fn resnet(cfg: &ResNetConfig) -> (VarMap, ResNet) {
        let vm = VarMap::new();
        let net = ResNet::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        (vm, net)
    }

    #[test]
    fn resnet_round_trip_keeps_running_statistics() {
        let cfg = ResNetConfig::resnet18(1, 6, (32, 32));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resnet.safetensors");
        let (vm_a, a) = resnet(&cfg);
        let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu).unwrap();
        // One training-mode pass moves the running statistics away from their 0/1 start.
        a.forward_t(&x, true).unwrap();
        save_weights(&vm_a, &path).unwrap();
        let (vm_b, b) = resnet(&cfg);
        load_weights(&vm_b, &path).unwrap();
        let ya = values(&a.forward_t(&x, false).unwrap());
        assert_eq!(ya, values(&b.forward_t(&x, false).unwrap()));
        assert_eq!(
            flat(&vm_a, "bn1.running_mean"),
            flat(&vm_b, "bn1.running_mean")
        );
        assert!(flat(&vm_b, "bn1.running_mean").iter().any(|&v| v != 0.0));
    }

    /// A torchvision-style file: an RGB ResNet-18 with 10 outputs, plus the
    /// `num_batches_tracked` counters torchvision's state dicts carry.
    fn torchvision_like(path: &Path) -> VarMap {
        let (vm, _) = resnet(&ResNetConfig::resnet18(3, 10, (32, 32)));
        write_edited(&vm, path, |ts| {
            for bn in ["bn1", "layer1.0.bn1", "layer4.1.bn2"] {
                let count = Tensor::new(&[7i64], &Device::Cpu).unwrap();
                ts.insert(format!("{bn}.num_batches_tracked"), count);
            }
        });
        vm
    }

    #[test]
    fn matching_load_converts_the_stem_and_skips_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resnet18-rgb.safetensors");
        let rgb = torchvision_like(&path);
        let (grey, net) = resnet(&ResNetConfig::resnet18(1, 4, (32, 32)));
        let fc_before = flat(&grey, "fc.weight");

        let report = load_matching(&grey, &path).unwrap();
        let n_vars = grey.data().lock().unwrap().len();
        assert_eq!(n_vars, 102);
        assert_eq!(report.loaded.len(), 100);
        assert_eq!(report.converted, ["conv1.weight"]);
        assert_eq!(report.missing, ["fc.bias", "fc.weight"]);
        assert_eq!(
            report.skipped,
            [
                "bn1.num_batches_tracked",
                "fc.bias",
                "fc.weight",
                "layer1.0.bn1.num_batches_tracked",
                "layer4.1.bn2.num_batches_tracked",
            ]
        );
        assert!(report.loaded.iter().all(|n| !n.starts_with("fc.")));
        // 100 + 2 vars; 100 + 5 of the file's 102 + 3 tensors.
        assert_eq!(report.loaded.len() + report.skipped.len(), 105);

        // The stem is the RGB stem summed over its input channels.
        let stem = rgb.data().lock().unwrap()["conv1.weight"]
            .as_tensor()
            .clone();
        let summed = (stem.i((.., 0..1)).unwrap()
            + stem.i((.., 1..2)).unwrap()
            + stem.i((.., 2..3)).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        let got = flat(&grey, "conv1.weight");
        assert_eq!(got.len(), 64 * 49);
        for (g, s) in got.iter().zip(&summed) {
            assert!((g - s).abs() <= 1e-6 * s.abs().max(1.0), "{g} vs {s}");
        }
        for name in ["layer3.1.conv2.weight", "layer2.0.downsample.0.weight"] {
            assert_eq!(flat(&grey, name), flat(&rgb, name), "{name}");
        }
        // The head keeps its initial values.
        assert_eq!(flat(&grey, "fc.weight"), fc_before);

        let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[2, 4]);
    }

    #[test]
    fn a_grey_image_gives_what_the_rgb_net_gives_three_equal_channels() {
        // Same head size, so the whole network can be compared.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rgb.safetensors");
        let (rgb_vm, rgb) = resnet(&ResNetConfig::resnet18(3, 5, (32, 32)));
        save_weights(&rgb_vm, &path).unwrap();
        let (grey_vm, grey) = resnet(&ResNetConfig::resnet18(1, 5, (32, 32)));
        let report = load_matching(&grey_vm, &path).unwrap();
        assert!(report.missing.is_empty() && report.skipped.is_empty());
        let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu).unwrap();
        let x3 = Tensor::cat(&[&x, &x, &x], 1).unwrap();
        let a = values(&grey.forward_t(&x, false).unwrap());
        let b = values(&rgb.forward_t(&x3, false).unwrap());
        for (ra, rb) in a.iter().zip(&b) {
            for (va, vb) in ra.iter().zip(rb) {
                assert!((va - vb).abs() < 1e-4 * vb.abs().max(1.0), "{va} vs {vb}");
            }
        }
    }

    #[test]
    fn matching_load_refuses_a_wrong_shape_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resnet18-rgb.safetensors");
        let rgb = torchvision_like(&path);
        write_edited(&rgb, &path, |ts| {
            let w = ts["layer3.1.conv2.weight"].i((.., 0..128)).unwrap();
            ts.insert("layer3.1.conv2.weight".into(), w);
        });
        let (grey, _) = resnet(&ResNetConfig::resnet18(1, 4, (32, 32)));
        let stem_before = flat(&grey, "conv1.weight");
        let err = load_matching(&grey, &path).unwrap_err();
        match &err {
            ModelError::TensorMismatch {
                path: p,
                name,
                expected,
                found,
                ..
            } => {
                assert_eq!(p, &path);
                assert_eq!(name, "layer3.1.conv2.weight");
                assert_eq!(expected, &[256, 256, 3, 3]);
                assert_eq!(found, &[256, 128, 3, 3]);
            }
            e => panic!("unexpected {e}"),
        }
        assert!(err.to_string().contains("resnet18-rgb.safetensors"));
        assert_eq!(flat(&grey, "conv1.weight"), stem_before);

        // The allowances are for the stem and the head only: an fc with other inputs, or a
        // 2-channel stem, is an error.
        for (name, shape) in [
            ("fc.weight", vec![4, 100]),
            ("conv1.weight", vec![64, 2, 7, 7]),
        ] {
            write_edited(&grey, &path, |ts| {
                let t = Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu).unwrap();
                ts.insert(name.into(), t);
            });
            match load_matching(&grey, &path).unwrap_err() {
                ModelError::TensorMismatch { name: n, .. } => assert_eq!(n, name),
                e => panic!("unexpected {e}"),
            }
        }
    }

    #[test]
    fn a_file_of_another_network_matches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.safetensors");
        let head = Tensor::zeros((4, 512), DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("classifier.weight", head)]), &path)
            .unwrap();
        let (grey, _) = resnet(&ResNetConfig::resnet18(1, 4, (32, 32)));
        match load_matching(&grey, &path).unwrap_err() {
            ModelError::NothingMatches { path: p } => assert_eq!(p, path),
            e => panic!("unexpected {e}"),
        }
    }
}
