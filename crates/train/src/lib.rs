//! fkd-train: one training loop for every part.
//!
//! Will own (issue "Parts 1 and 2"): Adam/AdamW, MSE/L1/Wing losses, lr schedules, seeded epochs,
//! per-epoch train/validation loss, history as JSON and CSV, atomic last/best checkpoints,
//! resume, and a clear stop when the loss turns NaN or explodes.
