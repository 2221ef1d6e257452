//! Checkpoints: a `VarMap` saved as safetensors, written atomically, and loaded back with a
//! check that names the file and the tensor when something does not fit.
//!
//! Candle's own `VarMap::save` writes in place (a crash mid-write leaves a truncated file where
//! the last good checkpoint was) and `VarMap::load` reports a missing or mis-shaped tensor
//! without saying which file, so training runs use these instead.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::error::{ModelError, Result};

/// The temporary file a checkpoint is written to before it replaces `path`: the same name with
/// `.tmp` appended, in the same folder (so the final rename never crosses file systems).
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes every var of `varmap` to `path` as safetensors, atomically: the data goes to
/// `path.tmp`, is flushed to disk, and only then renamed over `path`, so `path` always holds
/// either the previous checkpoint or the complete new one.
pub fn save_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = {
        // A poisoned lock only means another thread panicked while holding it; the map of
        // vars is still whole, so save what it holds.
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    let tmp = tmp_path(path);
    let written = candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|source| ModelError::WriteCheckpoint {
            path: tmp.clone(),
            source,
        })
        .and_then(|()| {
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&tmp))
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io_err(path)));
    if let Err(e) = written {
        // Best effort: do not leave a half-written temporary file behind; the original error
        // is the one worth reporting.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable. Directories cannot be opened as files on Windows.
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// Sets every var of `varmap` to the tensor of the same name in the safetensors file `path`,
/// converted to the var's dtype and device. Checks everything before changing anything: a var
/// missing from the file is [`ModelError::MissingTensor`], a shape difference is
/// [`ModelError::ShapeMismatch`], both naming the file and the tensor (the first in name
/// order), and the varmap is then left untouched. Tensors in the file that the varmap does not
/// have (e.g. torchvision's `num_batches_tracked`) are ignored.
pub fn load_varmap(varmap: &mut VarMap, path: &Path) -> Result<()> {
    let file = candle_core::safetensors::load(path, &Device::Cpu).map_err(|source| {
        ModelError::ReadCheckpoint {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut updates = Vec::with_capacity(names.len());
    for name in names {
        let var = &data[name];
        let Some(t) = file.get(name) else {
            return Err(ModelError::MissingTensor {
                path: path.to_path_buf(),
                name: name.clone(),
            });
        };
        if t.dims() != var.dims() {
            return Err(ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                name: name.clone(),
                expected: var.dims().to_vec(),
                found: t.dims().to_vec(),
            });
        }
        updates.push((var, t.to_dtype(var.dtype())?.to_device(var.device())?));
    }
    for (var, t) in updates {
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::conv_regressor::tests::tiny;
    use crate::{ConvRegressor, ResNet18, ResNet18Config};
    use candle_core::{DType, Module, ModuleT};
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

    #[test]
    fn save_then_load_gives_identical_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.safetensors");
        let (vm_a, a) = build();
        save_varmap(&vm_a, &path).unwrap();
        assert!(!tmp_path(&path).exists());
        let (mut vm_b, b) = build();
        let x = input();
        assert_ne!(
            values(&a.forward(&x).unwrap()),
            values(&b.forward(&x).unwrap())
        );
        load_varmap(&mut vm_b, &path).unwrap();
        assert_eq!(
            values(&a.forward(&x).unwrap()),
            values(&b.forward(&x).unwrap())
        );
    }

    #[test]
    fn save_replaces_an_existing_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.safetensors");
        std::fs::write(&path, b"old").unwrap();
        let (vm, _) = build();
        save_varmap(&vm, &path).unwrap();
        let back = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.len(), 8);
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn save_into_a_missing_folder_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/net.safetensors");
        let (vm, _) = build();
        match save_varmap(&vm, &path).unwrap_err() {
            ModelError::WriteCheckpoint { path: p, .. } => assert_eq!(p, tmp_path(&path)),
            e => panic!("unexpected {e}"),
        }
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
        let (mut vm_b, b) = build();
        let x = input();
        let before = values(&b.forward(&x).unwrap());
        let err = load_varmap(&mut vm_b, &path).unwrap_err();
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
    fn wrong_shape_is_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let (vm_a, _) = build();
        write_edited(&vm_a, &path, |ts| {
            ts.insert(
                "fc1.weight".into(),
                Tensor::zeros((16, 99), DType::F32, &Device::Cpu).unwrap(),
            );
        });
        let (mut vm_b, _) = build();
        match load_varmap(&mut vm_b, &path).unwrap_err() {
            ModelError::ShapeMismatch {
                path: p,
                name,
                expected,
                found,
            } => {
                assert_eq!(p, path);
                assert_eq!(name, "fc1.weight");
                // 8 channels × 6 × 8 after one pool of 12×16.
                assert_eq!(expected, vec![16, 384]);
                assert_eq!(found, vec![16, 99]);
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn unreadable_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.safetensors");
        std::fs::write(&path, b"not safetensors").unwrap();
        let (mut vm, _) = build();
        match load_varmap(&mut vm, &path).unwrap_err() {
            ModelError::ReadCheckpoint { path: p, .. } => assert_eq!(p, path),
            e => panic!("unexpected {e}"),
        }
        let missing = dir.path().join("absent.safetensors");
        match load_varmap(&mut vm, &missing).unwrap_err() {
            ModelError::ReadCheckpoint { path: p, .. } => assert_eq!(p, missing),
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn resnet_round_trip_keeps_running_statistics() {
        let cfg = ResNet18Config {
            in_channels: 1,
            out: 6,
            input: (32, 32),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resnet.safetensors");
        let vm_a = VarMap::new();
        let a = ResNet18::new(
            &cfg,
            VarBuilder::from_varmap(&vm_a, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu).unwrap();
        // One training-mode pass moves the running statistics away from their 0/1 start.
        a.forward_t(&x, true).unwrap();
        save_varmap(&vm_a, &path).unwrap();
        let mut vm_b = VarMap::new();
        let b = ResNet18::new(
            &cfg,
            VarBuilder::from_varmap(&vm_b, DType::F32, &Device::Cpu),
        )
        .unwrap();
        load_varmap(&mut vm_b, &path).unwrap();
        let ya = values(&a.forward_t(&x, false).unwrap());
        assert_eq!(ya, values(&b.forward_t(&x, false).unwrap()));
        let rm = |vm: &VarMap| {
            vm.data().lock().unwrap()["bn1.running_mean"]
                .as_tensor()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(rm(&vm_a), rm(&vm_b));
        assert!(rm(&vm_b).iter().any(|&v| v != 0.0));
    }
}
