//! Integration tests of fkd-landmarker: checkpoints and cards written the way every fkd run
//! writes them load back, and predictions land in the photo's pixels.

#![allow(clippy::unwrap_used)]

mod cards;
