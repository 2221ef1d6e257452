//! fkd-augment: data augmentation that moves an image and its landmarks together.
//!
//! Will own (issue "Parts 1 and 2"): seeded random rotation, shift, scale, horizontal/vertical
//! stretch, brightness/contrast jitter, and horizontal flip with the layout's left/right point
//! permutation from `fkd-core`. Every transform maps landmarks with the same matrix that warps
//! the pixels, so a landmark stays on the feature it marks.
