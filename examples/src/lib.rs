//! Runnable examples of fkd's crates, each a short program over the public API (CI runs all
//! three on `fixtures/faces/`, a small synthetic set the project generates):
//!
//! - `inspect_dataset XML|IMM_DIR`: parse a dlib/iBUG XML (or the IMM folder) with fkd-data and
//!   print what it holds: photos, faces, points, box and image sizes.
//! - `train_tiny XML OUT_DIR`: train a small ResNet-18 on the XML's faces with fkd-train, save
//!   it as an fkd run (`best.safetensors` + `model.json`) and score it with fkd-landmarker.
//! - `predict_photo CHECKPOINT PHOTO X,Y,W,H [OUT.png]`: load any fkd checkpoint, predict the
//!   points of the face in the box, print them and draw them.
//!
//! `cargo run -p fkd-examples --example NAME -- ARGS`.
