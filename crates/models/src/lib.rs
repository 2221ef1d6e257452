//! fkd-models: the Candle networks of the four parts.
//!
//! Will own (issues "Parts 1 and 2" and later): `NoseNet` (4 conv + 2 FC, 1×60×80 in, 2 out),
//! `FaceNet` (6 conv + 2 FC, 1×120×160 in, 116 out), a 1-channel ResNet-18 with 136 outputs,
//! and a fully convolutional heatmap net; architecture summaries; safetensors save/load; and
//! fast conv/pool ops with their backward passes.
